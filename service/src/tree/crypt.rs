//! Disk encryption in the resource tree: Keel's OEM actions on the ComputerSystem (recovery keys,
//! TPM2 rebinding, encrypting a data drive), `Oem.Keel.Security` of the system and the key slots
//! of each LUKS Volume (`Oem.Keel`). See schemas/README.md for why they live there.

use super::systems::{CHASSIS, SYSTEM};
use super::{check_system, Reply, Req, Tree};
use crate::crypt::{Claim, Crypt, Refusal, VolumeState};
use crate::messages::{base, Message, RfError, RfResult};
use crate::privilege::CONFIGURE_COMPONENTS;
use crate::protocol::body::{Prop, Ty};
use crate::tasks::{Payload, TaskHandle};
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

pub const SYSTEM_OEM: &str = "KeelComputerSystem";
pub const VOLUME_OEM: &str = "KeelVolume";
pub const OEM_VERSION: &str = "v1_0_0";

const SET: &str = "KeelComputerSystem.SetRecoveryKeys";
const GENERATE: &str = "KeelComputerSystem.GenerateRecoveryKey";
const CONFIRM: &str = "KeelComputerSystem.ConfirmRecoveryKeyStored";
const REBIND: &str = "KeelComputerSystem.RebindTPM";
const ENCRYPT: &str = "KeelComputerSystem.EncryptDataDrive";
const ACTIONS: &[&str] = &[SET, GENERATE, CONFIRM, REBIND, ENCRYPT];

const SET_BODY: &[Prop] = &[Prop::required(
    "RecoveryKeys",
    Ty::SecretList { max_items: crate::crypt::keys::MAX_KEYS, max: crate::crypt::keys::MAX_LEN },
    "The recovery keys every encrypted volume will open with, replacing the current ones (1-8 keys; 15+ printable ASCII characters, a letter and a special character, 5+ different characters).",
)];
const GENERATE_BODY: &[Prop] = &[Prop::new("ReplaceExisting", Ty::Bool, "Remove every other recovery key once the new one is enrolled (default false: add it).")];
const LINK: &[Prop] = &[Prop::required("@odata.id", Ty::Str { min: 1, max: 512 }, "The URI of the drive.")];
const ENCRYPT_BODY: &[Prop] = &[Prop::required("Drive", Ty::Obj(LINK), "The blank data drive to encrypt (a link to a Drive).")];

fn target(action: &str) -> String {
    format!("{SYSTEM}/Actions/Oem/{action}")
}

fn active(k: &crate::app::Keel) -> bool {
    k.crypt.active()
}

pub fn register(t: &mut Tree) {
    // Route patterns are 'static: one literal per action.
    let routes: [(&'static str, &'static str); 5] = [
        ("/redfish/v1/Systems/{ComputerSystemId}/Actions/Oem/KeelComputerSystem.SetRecoveryKeys", SET),
        ("/redfish/v1/Systems/{ComputerSystemId}/Actions/Oem/KeelComputerSystem.GenerateRecoveryKey", GENERATE),
        ("/redfish/v1/Systems/{ComputerSystemId}/Actions/Oem/KeelComputerSystem.ConfirmRecoveryKeyStored", CONFIRM),
        ("/redfish/v1/Systems/{ComputerSystemId}/Actions/Oem/KeelComputerSystem.RebindTPM", REBIND),
        ("/redfish/v1/Systems/{ComputerSystemId}/Actions/Oem/KeelComputerSystem.EncryptDataDrive", ENCRYPT),
    ];
    t.add(Tree::route(routes[0].0, "ComputerSystem", None).action(SET, CONFIGURE_COMPONENTS, SET_BODY, "Replace the recovery keys of the encrypted volumes (a task)", set_keys).post_present(active));
    t.add(
        Tree::route(routes[1].0, "ComputerSystem", None)
            .action(GENERATE, CONFIGURE_COMPONENTS, GENERATE_BODY, "Generate a recovery key (returned only in this response)", generate)
            .post_present(active),
    );
    t.add(Tree::route(routes[2].0, "ComputerSystem", None).action(CONFIRM, CONFIGURE_COMPONENTS, &[], "Confirm the recovery keys are stored safely", confirm).post_present(active));
    t.add(Tree::route(routes[3].0, "ComputerSystem", None).action(REBIND, CONFIGURE_COMPONENTS, &[], "Bind the TPM2 slots to the current PCR values (a task)", rebind).post_present(active));
    t.add(Tree::route(routes[4].0, "ComputerSystem", None).action(ENCRYPT, CONFIGURE_COMPONENTS, ENCRYPT_BODY, "Encrypt a blank data drive (a task)", encrypt).post_present(active));
}

/// A refusal as a Redfish error (nothing was changed).
pub(super) fn refused(action: &str, r: Refusal) -> RfError {
    match r {
        Refusal::BadValue { param, why } => RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_ERROR, &[param, action]).related(param).resolution(why)),
        Refusal::State(why) => RfError::new(StatusCode::CONFLICT, Message::base(&base::GENERAL_ERROR, &[]).resolution(why)),
        Refusal::InUse(why) => RfError::new(StatusCode::CONFLICT, Message::base(&base::RESOURCE_IN_USE, &[]).resolution(why)),
        Refusal::NotFound { kind, id } => RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::RESOURCE_NOT_FOUND, &[kind, &id])),
        Refusal::Failed(why) => RfError::internal(format!("{action}: {why}")),
    }
}

/// Why a task's work failed, as the message that ends it (`Exception`): the same message a
/// refusal gives, and for a tool's failure a GeneralError whose Resolution says what failed and
/// what was put back. Tool output reaches it only with every secret cut out (`crypt::tools`).
fn task_failure(action: &str, r: Refusal) -> Message {
    match r {
        Refusal::Failed(why) => Message::base(&base::GENERAL_ERROR, &[]).resolution(why),
        other => refused(action, other).messages.into_iter().next().unwrap_or_else(|| Message::base(&base::GENERAL_ERROR, &[])),
    }
}

/// The right to change encryption (409 ResourceInUse while another action holds it), and no
/// change while a factory reset is at work on the same disks.
fn claim(r: &Req, action: &'static str) -> RfResult<Claim> {
    let resetting: Vec<String> =
        r.keel.tasks.active().into_iter().filter(|(_, name)| name == super::reset::RESET_TO_DEFAULTS || name == super::reset::DECOMMISSION).map(|(id, name)| format!("{name} (task {id})")).collect();
    if !resetting.is_empty() {
        return Err(refused(action, Refusal::InUse(format!("{} is under way: wait for it to end.", resetting.join(", ")))));
    }
    r.keel.crypt.claim(action).map_err(|e| refused(action, e))
}

/// Run a blocking step off the request threads.
async fn blocking<T: Send + 'static>(r: &Req, f: impl FnOnce(&crate::app::Keel) -> T + Send + 'static) -> RfResult<T> {
    let keel = r.keel.clone();
    actix_web::rt::task::spawn_blocking(move || f(&keel)).await.map_err(RfError::internal)
}

/// Run a change off the request threads, then read the machine again so GETs show it.
async fn change<T: Send + 'static>(r: &Req, action: &'static str, f: impl FnOnce(&crate::app::Keel) -> crate::crypt::Result<T> + Send + 'static) -> RfResult<T> {
    check_system(r)?;
    let _claim = claim(r, action)?;
    log::info!("{action} requested by {}", r.principal().user);
    let out = blocking(r, move |keel| {
        let out = f(keel);
        keel.refresh_inventory();
        out
    })
    .await?;
    out.map_err(|e| refused(action, e))
}

/// What a task's work gives back when it succeeds: the message that completes the task, and the
/// resource it created, if any.
struct Done {
    message: Message,
    created: Option<String>,
}

/// Start `action` as a task once every check passed (the caller holds `claim`): answer 202 with
/// the task monitor; `work` runs on its own thread, reporting progress, then the machine is read
/// again and the task ends `Completed` with `Done`, or `Exception` with why.
/// `payload` is what the Task shows of the request: never a secret.
fn start(r: &Req, action: &'static str, claim: Claim, payload: Option<Value>, work: impl FnOnce(&crate::app::Keel, &TaskHandle) -> crate::crypt::Result<Done> + Send + 'static) -> RfResult<Reply> {
    let keel = r.keel.clone();
    let user = r.principal().user.clone();
    let task = keel.tasks.start(action, &user, Some(Payload::new("POST", &r.path, payload.as_ref())));
    claim.describe(format!("{action} (task {})", task.id()));
    log::info!("{action} requested by {user}: task {}", task.id());
    let reply = Reply::accepted(&task);
    std::thread::Builder::new()
        .name("crypt-task".into())
        .spawn(move || {
            let out = work(&keel, &task);
            keel.refresh_inventory();
            // The next change may start once this one's effects are visible.
            drop(claim);
            match out {
                Ok(done) => {
                    if let Some(uri) = &done.created {
                        task.created(uri);
                    }
                    task.complete(Some(done.message));
                }
                Err(e) => {
                    let m = task_failure(action, e);
                    log::error!("{action} (task {}) failed: {}", task.id(), m.resolution.as_deref().unwrap_or(m.def.key));
                    task.fail(m);
                }
            }
        })
        .map_err(RfError::internal)?;
    Ok(reply)
}

fn success() -> Done {
    Done { message: Message::base(&base::SUCCESS, &[]), created: None }
}

async fn set_keys(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    check_system(&r)?;
    let keys: Vec<String> = b["RecoveryKeys"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_string)).collect();
    Crypt::check_recovery_keys(&keys).map_err(|e| refused(SET, e))?;
    let claim = claim(&r, SET)?;
    let checked = keys.clone();
    blocking(&r, move |k| k.crypt.check_set_recovery_keys(&checked)).await?.map_err(|e| refused(SET, e))?;
    // The Task shows the request without the keys (every Login user may read tasks).
    let mut shown = b.clone();
    shown.insert("RecoveryKeys".into(), Value::Null);
    start(&r, SET, claim, Some(Value::Object(shown)), move |k, task| {
        k.crypt.set_recovery_keys(keys, &|p| task.progress(p))?;
        Ok(success())
    })
}

/// Stays synchronous: the key is in this response only, and a task is readable by every user.
async fn generate(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let replace = b.get("ReplaceExisting").and_then(Value::as_bool).unwrap_or(false);
    let key = change(&r, GENERATE, move |k| k.crypt.generate_recovery_key(replace)).await?;
    let m = Message::base(&base::SUCCESS, &[]);
    Ok(Reply::Json {
        status: StatusCode::OK,
        body: json!({ "RecoveryKey": key, "@Message.ExtendedInfo": [m.to_json()] }),
        // The key is in this response only: no cache may keep it.
        headers: vec![("Cache-Control", "no-store".into())],
    })
}

async fn confirm(r: Req, _: Map<String, Value>) -> RfResult<Reply> {
    change(&r, CONFIRM, |k| k.crypt.confirm_stored()).await?;
    Ok(Reply::success())
}

async fn rebind(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    check_system(&r)?;
    // (a recorded machine's TPM can be shown, not sealed to)
    let tpm = r.keel.tpm.as_ref().is_some_and(|t| !t.is_recorded());
    let claim = claim(&r, REBIND)?;
    blocking(&r, move |k| k.crypt.check_rebind_tpm(tpm)).await?.map_err(|e| refused(REBIND, e))?;
    start(&r, REBIND, claim, Some(Value::Object(b)), move |k, task| {
        k.crypt.rebind_tpm(tpm, &|p| task.progress(p))?;
        Ok(success())
    })
}

async fn encrypt(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    check_system(&r)?;
    let uri = b["Drive"]["@odata.id"].as_str().unwrap_or_default().trim_end_matches('/').to_string();
    let prefix = format!("{CHASSIS}/Drives/");
    let Some(drive) = uri.strip_prefix(&prefix).filter(|d| !d.is_empty() && !d.contains('/')).map(str::to_string) else {
        return Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_ERROR, &["Drive", ENCRYPT]).related("Drive").resolution(format!("Give a link to a member of {CHASSIS}/Drives."))));
    };
    // (a recorded machine's TPM can be shown, not sealed to)
    let tpm = r.keel.tpm.as_ref().is_some_and(|t| !t.is_recorded());
    let claim = claim(&r, ENCRYPT)?;
    let checked = drive.clone();
    blocking(&r, move |k| k.crypt.check_encrypt_drive(&checked, tpm)).await?.map_err(|e| refused(ENCRYPT, e))?;
    start(&r, ENCRYPT, claim, Some(Value::Object(b)), move |k, task| {
        let enc = k.crypt.encrypt_drive(&drive, tpm, &|p| task.progress(p))?;
        let uri = match &enc.mapping {
            None => volume_uri(&enc.volume),
            Some(name) => {
                // One of the machine's drives: systemd opens it now, as at every boot.
                crate::power::open_crypttab_volume(k.cfg.power_bus.as_deref(), name, std::time::Duration::from_secs(120))
                    .map_err(|e| crate::crypt::Refusal::Failed(format!("Drive {drive} is encrypted and listed in {}, but systemd did not open it: {e}", crate::crypt::CRYPTTAB)))?;
                k.refresh_inventory();
                let inv = k.inventory();
                inv.storage
                    .iter()
                    .find_map(|c| c.volumes.iter().find(|v| v.device.as_deref() == Some(enc.device.as_str())).map(|v| super::storage::volume_uri(&c.id, &v.id)))
                    .ok_or_else(|| crate::crypt::Refusal::Failed(format!("Drive {drive} is encrypted and open as /dev/mapper/{name}, but the inventory shows no volume on {}", enc.device)))?
            }
        };
        // The new Volume: in the Task's Links.CreatedResources, and named by its last message.
        let message = Message::base(&base::CREATED, &[]).resolution(format!("The encrypted drive is the Volume {uri}."));
        Ok(Done { message, created: Some(uri) })
    })
}

/// The URI of a simulated LUKS volume.
pub fn volume_uri(id: &str) -> String {
    super::storage::volume_uri(crate::crypt::SIM_STORAGE, id)
}

// ---------------------------------------------------------------- GET fragments

/// `Actions.Oem` of the system, when keeld manages encryption here.
pub fn system_actions(r: &Req) -> Option<Value> {
    if !r.keel.crypt.active() {
        return None;
    }
    let mut m = Map::new();
    for a in ACTIONS {
        m.insert(format!("#{a}"), json!({ "target": target(a) }));
    }
    Some(Value::Object(m))
}

fn secure_boot(r: &Req) -> &'static str {
    match r.keel.inventory().secure_boot.as_ref().and_then(|s| s.enabled) {
        Some(true) => "Enabled",
        Some(false) => "Disabled",
        None => "Unknown",
    }
}

/// `Oem.Keel` of the system: its security status.
pub fn system_oem(r: &Req) -> Value {
    let s = r.keel.crypt.status();
    let mut sec = json!({
        "SecureBoot": secure_boot(r),
        "TPMPresent": r.keel.tpm.is_some(),
        "BootUnlockedBy": s.boot_unlock.name(),
    });
    if s.active {
        sec["EncryptionManaged"] = json!(s.managed_volumes > 0);
        sec["RecoveryKeyCount"] = json!(s.recovery_keys);
        sec["RecoveryKeyRetrieved"] = json!(s.retrieved);
        sec["RecoveryKeyStorageConfirmed"] = json!(s.confirmed);
    }
    json!({ "@odata.type": format!("#{SYSTEM_OEM}.{OEM_VERSION}.ComputerSystem"), "Security": sec })
}

/// `Oem.Keel` of a Volume: its LUKS2 key slots by kind, never key material.
pub fn volume_oem(r: &Req, storage: &str, id: &str) -> Option<Value> {
    let view = r.keel.crypt.view();
    let v: &VolumeState = view.volumes.iter().find(|v| v.storage == storage && v.id == id)?;
    let mut o = json!({
        "@odata.type": format!("#{VOLUME_OEM}.{OEM_VERSION}.Volume"),
        "ManagedByKeel": v.managed,
        "Simulated": v.simulated,
        "UnlockedBy": v.unlocked_by.name(),
    });
    if let Some(u) = &v.uuid {
        o["LUKSUUID"] = json!(u);
    }
    if let Some(h) = &v.header {
        let slots: Vec<Value> = h
            .slots
            .iter()
            .map(|s| {
                let mut x = json!({ "Slot": s.slot, "Kind": s.kind.name(), "KeelServiceKey": v.service_slot == Some(s.slot) });
                if let Some(k) = &s.kdf {
                    x["KeyDerivation"] = json!(k);
                }
                if let Some(t) = &s.tpm2 {
                    let mut b = json!({ "PCRs": t.pcrs, "SignedPolicyPCRs": t.pubkey_pcrs, "PINRequired": t.pin, "PCRLockPolicy": t.pcrlock });
                    if let Some(bank) = &t.bank {
                        b["PCRBank"] = json!(bank);
                    }
                    x["TPM2"] = b;
                }
                x
            })
            .collect();
        o["KeySlots"] = json!(slots);
        if let Some(c) = &h.cipher {
            o["Cipher"] = json!(c);
        }
    }
    if let Some(e) = &v.error {
        o["HeaderError"] = json!(e);
    }
    Some(o)
}
