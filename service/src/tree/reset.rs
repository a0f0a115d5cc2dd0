//! Factory reset and configuration backup in the resource tree: `Manager.ResetToDefaults`,
//! `ComputerSystem.Decommission` (both as tasks), and the Keel OEM actions
//! `KeelManager.ExportConfiguration` / `KeelManager.ImportConfiguration` of the Manager.
//! Backends: `crate::reset`, `crate::backup`.

use super::managers::MANAGER;
use super::systems::SYSTEM;
use super::{check_system, Reply, Req, Tree};
use crate::app::Keel;
use crate::messages::{base, Message, RfError, RfResult};
use crate::power::ResetKind;
use crate::privilege::{Privilege, CONFIGURE_COMPONENTS, CONFIGURE_MANAGER};
use crate::protocol::body::{Prop, Ty};
use crate::reset::{Plan, Scope, DECOMMISSION_TYPES, RESET_TYPES};
use crate::tasks::{Payload, TaskHandle};
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const RESET_TO_DEFAULTS: &str = "Manager.ResetToDefaults";
pub const DECOMMISSION: &str = "ComputerSystem.Decommission";
pub const EXPORT: &str = "KeelManager.ExportConfiguration";
pub const IMPORT: &str = "KeelManager.ImportConfiguration";

const RESET_BODY: &[Prop] = &[Prop::required(
    "ResetType",
    Ty::Enum(RESET_TYPES),
    "ResetAll: every setting of keeld back to its default (accounts, sessions, event subscriptions, account, session, event and update settings, the task history, the network configuration); PreserveNetwork: all but the network configuration; PreserveNetworkAndUsers: all but the network configuration and the accounts. Disks, TPM and encryption keys are not touched (ComputerSystem.Decommission is for those). Runs as a task; keeld restarts to finish it.",
)];
const DECOMMISSION_BODY: &[Prop] = &[
    Prop::required(
        "DecommissionTypes",
        Ty::EnumList(DECOMMISSION_TYPES),
        "What to remove: ManagerConfig (as Manager.ResetToDefaults ResetAll), NetworkConfig, UserData (the root, swap and data volumes, and with them keeld's state and keys: wiped at the next boot on a Keel image, at once on the simulated platform's image files), TPM (cleared), All. The machine restarts when UserData or TPM is given.",
    ),
    Prop::new("OEMDecommissionTypes", Ty::StrList { max_items: 16 }, "OEM types: none are defined, so the list must be empty."),
    Prop::new("RequireSecureErase", Ty::Bool, "Refuse (501) unless everything removed is erased at least to NIST 800-88 Clear: true only with UserData or All, whose volumes are crypto-erased (LUKS2 key slots destroyed)."),
];
const EXPORT_BODY: &[Prop] = &[Prop::new("IncludeRecoveryKeys", Ty::Bool, "Include the disk encryption recovery keys (default true).")];
const IMPORT_BODY: &[Prop] = &[
    Prop::required("Configuration", Ty::Secret { max: 2 << 20 }, "The archive ExportConfiguration returned (base64 of the tar file)."),
    Prop::new("ApplyRecoveryKeys", Ty::Bool, "Enroll the archive's recovery keys on the encrypted volumes (default true; refused when this machine has none keeld manages: set it to false to import the rest)."),
];

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Managers/keel/Actions/Manager.ResetToDefaults", "Manager", None).action(
        RESET_TO_DEFAULTS,
        CONFIGURE_MANAGER,
        RESET_BODY,
        "Reset keeld's configuration to its defaults (a task)",
        reset_to_defaults,
    ));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Actions/ComputerSystem.Decommission", "ComputerSystem", None).action(
        DECOMMISSION,
        CONFIGURE_COMPONENTS,
        DECOMMISSION_BODY,
        "Remove data from the system: configuration, disks, TPM (a task)",
        decommission,
    ));
    t.add(Tree::route("/redfish/v1/Managers/keel/Actions/Oem/KeelManager.ExportConfiguration", "Manager", None).action(
        EXPORT,
        CONFIGURE_MANAGER,
        EXPORT_BODY,
        "Export keeld's configuration (a tar archive, base64)",
        export,
    ));
    t.add(Tree::route("/redfish/v1/Managers/keel/Actions/Oem/KeelManager.ImportConfiguration", "Manager", None).action(
        IMPORT,
        CONFIGURE_MANAGER,
        IMPORT_BODY,
        "Import a configuration archive (keeld restarts)",
        import,
    ));
}

fn target(action: &str) -> String {
    if action.starts_with("KeelManager.") {
        format!("{MANAGER}/Actions/Oem/{action}")
    } else if action == DECOMMISSION {
        format!("{SYSTEM}/Actions/{action}")
    } else {
        format!("{MANAGER}/Actions/{action}")
    }
}

/// The Manager's `Actions` entries of this module.
pub fn manager_actions(v: &mut Value) {
    v["Actions"][format!("#{RESET_TO_DEFAULTS}")] = json!({
        "target": target(RESET_TO_DEFAULTS),
        "ResetType@Redfish.AllowableValues": RESET_TYPES,
    });
    v["Actions"]["Oem"] = json!({
        format!("#{EXPORT}"): { "target": target(EXPORT) },
        format!("#{IMPORT}"): { "target": target(IMPORT) },
    });
}

/// The ComputerSystem's `Actions` entry of this module.
pub fn system_actions(v: &mut Value) {
    v["Actions"][format!("#{DECOMMISSION}")] = json!({
        "target": target(DECOMMISSION),
        "title": "Decommission",
        "DecommissionTypes@Redfish.AllowableValues": DECOMMISSION_TYPES,
    });
}

/// The route's privilege is the Privilege Registry's; these actions also change what other
/// privileges guard (accounts, password hashes, recovery keys), so the caller must hold those too.
fn require(r: &Req, privs: &[Privilege]) -> RfResult<()> {
    if r.principal().privs.contains_all(privs) {
        Ok(())
    } else {
        Err(RfError::forbidden())
    }
}

fn conflict(why: impl Into<String>) -> RfError {
    RfError::new(StatusCode::CONFLICT, Message::base(&base::RESOURCE_IN_USE, &[]).resolution(why))
}

/// One factory reset or import at a time.
static BUSY: AtomicBool = AtomicBool::new(false);

struct Claim;

impl Claim {
    fn take() -> Option<Claim> {
        BUSY.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).ok().map(|_| Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::SeqCst);
    }
}

/// Nothing else may be at work while keeld's state is replaced.
fn claim(keel: &Keel) -> RfResult<Claim> {
    let c = Claim::take().ok_or_else(|| conflict("A factory reset or configuration import is already under way."))?;
    if crate::reset::pending(&keel.state) || crate::backup::staged(&keel.state) {
        return Err(conflict("A factory reset or configuration import waits for keeld's restart."));
    }
    if keel.updates.busy() {
        return Err(conflict("An update is being written: wait for its task to end."));
    }
    let active = keel.tasks.active();
    if !active.is_empty() {
        let list: Vec<String> = active.iter().map(|(id, name)| format!("{name} (task {id})")).collect();
        return Err(conflict(format!("Wait for the running tasks to end: {}.", list.join(", "))));
    }
    Ok(c)
}

fn real_platform(keel: &Keel) -> bool {
    keel.updates.slots.platform() == "real"
}

fn host_root(keel: &Keel) -> std::path::PathBuf {
    keel.cfg.host_root.clone().unwrap_or_else(|| "/".into())
}

async fn reset_to_defaults(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    require(&r, &[Privilege::ConfigureUsers])?;
    let t = b.get("ResetType").and_then(Value::as_str).unwrap_or_default();
    let scope = Scope::reset_to_defaults(t).ok_or_else(|| RfError::internal("ResetType passed validation but is unknown"))?;
    start(r, RESET_TO_DEFAULTS, scope, b)
}

fn param_error(value: &str, param: &str, why: &str) -> RfError {
    RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_ERROR, &[param, DECOMMISSION]).related(param).resolution(format!("{why} ({value})")))
}

async fn decommission(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    check_system(&r)?;
    let types: Vec<&str> = b["DecommissionTypes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if types.is_empty() {
        return Err(param_error("[]", "DecommissionTypes", "List at least one type"));
    }
    if let Some(o) = b.get("OEMDecommissionTypes").and_then(Value::as_array).and_then(|a| a.first()) {
        let v = o.as_str().unwrap_or_default();
        return Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, &[v, "OEMDecommissionTypes", DECOMMISSION]).related("OEMDecommissionTypes")));
    }
    let scope = Scope::decommission(&types);
    // Removing keeld's configuration is what Manager.ResetToDefaults does: the same privileges.
    if scope.settings || scope.accounts || scope.identity {
        require(&r, &[Privilege::ConfigureManager, Privilege::ConfigureUsers])?;
    }
    if b.get("RequireSecureErase").and_then(Value::as_bool) == Some(true) {
        let no_secure_erase = |why: &str| RfError::new(StatusCode::NOT_IMPLEMENTED, Message::base(&base::ACTION_PARAMETER_VALUE_CONFLICT, &["RequireSecureErase", "true"]).related("RequireSecureErase").resolution(why));
        if !scope.disks {
            return Err(no_secure_erase("keeld removes configuration files from the file system, which is no secure erase; only UserData and All crypto-erase whole volumes. Leave RequireSecureErase out or include UserData."));
        }
        // On a Keel image the root volume's data is gone only if it is a LUKS2 volume keeld
        // crypto-erases; the simulated platform overwrites its image files.
        if real_platform(&r.keel) && !crate::reset::real_volumes(&r.keel.crypt).iter().any(|(id, _)| id == "root") {
            return Err(no_secure_erase("The root volume is not a LUKS2 volume keeld manages: its re-creation at the next boot would not erase its data securely."));
        }
    }
    start(r, DECOMMISSION, scope, b)
}

/// Check, start the task, answer 202; the work goes on in its own thread.
fn start(r: Req, action: &'static str, scope: Scope, body: Map<String, Value>) -> RfResult<Reply> {
    let keel = r.keel.clone();
    let claim = claim(&keel)?;
    if scope.machine() && real_platform(&keel) {
        crate::reset::check_real(&host_root(&keel), &keel.updates.slots, &crate::reset::real_volumes(&keel.crypt), &scope, keel.tpm.is_some()).map_err(|why| RfError::new(StatusCode::CONFLICT, Message::base(&base::GENERAL_ERROR, &[]).resolution(why)))?;
    }
    let user = r.principal().user.clone();
    log::warn!("{action} requested by {user}: {}", scope.describe());
    let task = keel.tasks.start(action, &user, Some(Payload::new("POST", &r.path, Some(&Value::Object(body)))));
    let reply = Reply::accepted(&task);
    let requester = r.principal().account_id.clone();
    std::thread::Builder::new()
        .name("factory-reset".into())
        .spawn(move || {
            let _claim = claim;
            work(&keel, action, scope, requester, &task);
        })
        .map_err(RfError::internal)?;
    Ok(reply)
}

fn failed(task: &TaskHandle, action: &str, why: String) {
    log::error!("{action}: {why}");
    task.fail(Message::base(&base::GENERAL_ERROR, &[]).resolution(why));
}

/// The reset itself: the machine's part, the plan, then a restart (of the machine, or of keeld).
fn work(keel: &Arc<Keel>, action: &str, scope: Scope, requester: String, task: &TaskHandle) {
    let real = real_platform(keel);
    if scope.machine() {
        task.progress(10);
        let done = if real {
            let volumes = crate::reset::real_volumes(&keel.crypt);
            crate::reset::real(&host_root(keel), &keel.state, &keel.updates.slots, &volumes, &scope, keel.tpm.is_some(), action)
        } else {
            crate::reset::simulated(&keel.cfg, &scope, action)
        };
        match done {
            Ok(rec) => log::warn!("{action}: machine: {rec:?}"),
            Err(why) => return failed(task, action, why),
        }
        task.progress(60);
    }
    if let Err(e) = crate::reset::write_plan(&keel.state, &Plan { scope, task: task.id().to_string(), requester, action: action.to_string() }) {
        return failed(task, action, format!("cannot write the reset plan: {e}"));
    }
    task.progress(80);
    // From here on the task ends at keeld's next start (or with the machine's reboot).
    task.clone().leave_running();
    if scope.machine() {
        match keel.power.reset(ResetKind::GracefulRestart) {
            // The machine goes down; its next boot wipes the disks and keeld finishes the task.
            Ok(()) if keel.power.is_real() => {
                log::warn!("{action}: the machine restarts");
                return;
            }
            Ok(()) => log::warn!("{action}: the simulated machine restarted"),
            Err(e) => {
                log::warn!("{action}: the machine could not be restarted ({e}); the reset completes at its next boot");
                task.message(Message::base(&base::RESET_REQUIRED, &[&format!("{SYSTEM}/Actions/ComputerSystem.Reset"), "GracefulRestart"]));
            }
        }
    }
    super::managers::restart_keeld(keel);
}

// ------------------------------------------------------------------ backup

async fn export(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let keys = b.get("IncludeRecoveryKeys").and_then(Value::as_bool).unwrap_or(true);
    // Password hashes go with ConfigureUsers; recovery keys with ConfigureComponents.
    require(&r, &[Privilege::ConfigureUsers])?;
    if keys {
        require(&r, &[Privilege::ConfigureComponents])?;
    }
    let keel = r.keel.clone();
    let tar = actix_web::web::block(move || crate::backup::export(&keel, keys)).await.map_err(RfError::internal)?.map_err(RfError::internal)?;
    log::info!("{EXPORT} by {}: {} bytes, recovery keys {}", r.principal().user, tar.len(), if keys { "included if any" } else { "left out" });
    use base64::Engine;
    let m = Message::base(&base::SUCCESS, &[]);
    Ok(Reply::Json {
        status: StatusCode::OK,
        body: json!({
            "Configuration": base64::engine::general_purpose::STANDARD.encode(&tar),
            "SchemaVersion": crate::backup::SCHEMA_VERSION,
            "@Message.ExtendedInfo": [m.to_json()],
        }),
        // Password hashes and keys: no cache may keep them.
        headers: vec![("Cache-Control", "no-store".into())],
    })
}

fn bad_archive(why: String) -> RfError {
    RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_ERROR, &["Configuration", IMPORT]).related("Configuration").resolution(why))
}

async fn import(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    require(&r, &[Privilege::ConfigureUsers])?;
    let text = b.get("Configuration").and_then(Value::as_str).unwrap_or_default();
    let apply_keys = b.get("ApplyRecoveryKeys").and_then(Value::as_bool).unwrap_or(true);
    // base64 of MAX_ARCHIVE bytes, and a little for line breaks.
    if text.len() > crate::backup::MAX_ARCHIVE / 3 * 4 + 8 + text.len() / 64 * 2 {
        return Err(bad_archive(format!("The archive is larger than {} bytes.", crate::backup::MAX_ARCHIVE)));
    }
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()).map_err(|_| {
        RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &["<archive>", "Configuration", IMPORT]).related("Configuration").resolution("Give the archive as base64 (RFC 4648), as ExportConfiguration returns it."))
    })?;
    let archive = actix_web::web::block(move || crate::backup::parse(&bytes)).await.map_err(RfError::internal)?.map_err(bad_archive)?;
    let keys = if apply_keys { archive.recovery_keys.clone() } else { vec![] };
    if !keys.is_empty() {
        require(&r, &[Privilege::ConfigureComponents])?;
        if r.keel.crypt.status().managed_volumes == 0 {
            return Err(RfError::new(StatusCode::CONFLICT, Message::base(&base::ACTION_PARAMETER_VALUE_CONFLICT, &["ApplyRecoveryKeys", "true"]).related("ApplyRecoveryKeys").resolution(
                "The archive holds recovery keys, and keeld manages no encrypted volume here to enroll them on. Import with ApplyRecoveryKeys false to restore the rest.",
            )));
        }
    }
    let claim = claim(&r.keel)?;
    // No encryption change (GenerateRecoveryKey…) may run while the keys are replaced.
    let crypt_claim = if keys.is_empty() { None } else { Some(r.keel.crypt.claim(IMPORT).map_err(|e| super::crypt::refused(IMPORT, e))?) };
    let user = r.principal().user.clone();
    let keel = r.keel.clone();
    let out = actix_web::rt::task::spawn_blocking(move || -> RfResult<()> {
        let _crypt_claim = crypt_claim;
        crate::backup::stage(&keel.state, &archive).map_err(|e| {
            crate::backup::discard_staging(&keel.state);
            RfError::internal(format!("staging the import: {e}"))
        })?;
        // Recovery keys go on the volumes now (all or nothing), before the import is committed.
        if !keys.is_empty() {
            let out = keel.crypt.set_recovery_keys(keys, &crate::crypt::no_progress);
            keel.refresh_inventory();
            if let Err(e) = out {
                crate::backup::discard_staging(&keel.state);
                return Err(super::crypt::refused(IMPORT, e));
            }
        }
        crate::backup::commit(&keel.state).map_err(|e| {
            crate::backup::discard_staging(&keel.state);
            RfError::internal(format!("committing the import: {e}"))
        })
    })
    .await
    .map_err(RfError::internal)?;
    out?;
    log::warn!("{IMPORT} by {user}: keeld restarts to put the configuration in place");
    let keel = r.keel.clone();
    actix_web::rt::spawn(async move {
        let _claim = claim;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = actix_web::web::block(move || super::managers::restart_keeld(&keel)).await;
    });
    Ok(Reply::success())
}
