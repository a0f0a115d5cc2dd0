//! UpdateService: the A/B update of the OS (SimpleUpdate, MultipartHttpPushUri, StartUpdate, apply
//! times and maintenance windows), and the firmware and software inventories — the latter with
//! both usr slots and every UKI in the ESP.

use super::{collection, link, Reply, Req, Tree};
use crate::inventory::software::Component;
use crate::messages::{base, update as um, Message, RfError, RfResult};
use crate::privilege::{CONFIGURE_COMPONENTS, LOGIN};
use crate::protocol::body::{Prop, Ty};
use crate::slots::{SlotState, Status};
use crate::app::Keel;
use crate::tasks::{Payload, TaskHandle};
use std::sync::Arc;
use crate::types;
use crate::update::{policy, source, ApplyTime, Request, Reservation, StartError, Window, TARGET};
use actix_web::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

const US: &str = "/redfish/v1/UpdateService";
pub const PUSH_URI: &str = "/redfish/v1/UpdateService/upload";
const SIMPLE: &str = "UpdateService.SimpleUpdate";
const START: &str = "UpdateService.StartUpdate";

const APPLY_TIME_PROPS: &[Prop] = &[
    Prop::new("ApplyTime", Ty::Enum(ApplyTime::NAMES), "When a pushed image is activated (default Immediate)."),
    Prop::nullable("MaintenanceWindowStartTime", Ty::Str { min: 1, max: 64 }, "Start of the maintenance window (RFC 3339 date-time)."),
    Prop::new("MaintenanceWindowDurationInSeconds", Ty::Int { min: 1, max: 31_536_000 }, "Length of the maintenance window."),
];
const PUSH_OPTIONS: &[Prop] = &[Prop::new("HttpPushUriApplyTime", Ty::Obj(APPLY_TIME_PROPS), "Apply time of pushed images.")];
const KEEL_POLICY: &[Prop] = &[
    Prop::new("Channel", Ty::Enum(policy::CHANNELS), "The update channel followed: stable or testing."),
    Prop::new("CheckIntervalSeconds", Ty::Int { min: 0, max: 31_536_000 }, "Seconds between checks of the update index (0: never; default 21600)."),
    Prop::nullable("IndexURI", Ty::Uri, "The signed update index (http or https); null: no automatic updates."),
];
const OEM_PATCH: &[Prop] = &[Prop::new("Keel", Ty::Obj(KEEL_POLICY), "Keel's update policy.")];
const WINDOW_PROPS: &[Prop] = &[
    Prop::new("MaintenanceWindowStartTime", Ty::Str { min: 1, max: 64 }, "Start of the maintenance window (RFC 3339 date-time)."),
    Prop::new("MaintenanceWindowDurationInSeconds", Ty::Int { min: 1, max: 31_536_000 }, "Length of the maintenance window."),
];
const SERVICE_PATCH: &[Prop] = &[
    Prop::new("HttpPushUriOptions", Ty::Obj(PUSH_OPTIONS), "Options of images pushed to the MultipartHttpPushUri."),
    Prop::new("@Redfish.MaintenanceWindow", Ty::Obj(WINDOW_PROPS), "The maintenance window of updates applied AtMaintenanceWindowStart or InMaintenanceWindowOnReset."),
    Prop::new("Oem", Ty::Obj(OEM_PATCH), "Keel's update policy."),
];
const CHECK: &str = "KeelUpdateService.CheckForUpdates";
const ROLLBACK: &str = "KeelUpdateService.Rollback";

const SIMPLE_BODY: &[Prop] = &[
    Prop::required("ImageURI", Ty::Str { min: 1, max: 2048 }, "The bundle: an http(s) URI, or file:// (Administrators only)."),
    Prop::new("TransferProtocol", Ty::Enum(&["HTTP", "HTTPS"]), "The protocol, when ImageURI has no scheme."),
    Prop::new("Targets", Ty::StrList { max_items: 1 }, "The system (the only target); default: it."),
    Prop::new("ForceUpdate", Ty::Bool, "Accept a version older than the running one."),
    Prop::new("Stage", Ty::Bool, "Write the image and wait for UpdateService.StartUpdate."),
    Prop::new("@Redfish.OperationApplyTime", Ty::Enum(ApplyTime::NAMES), "When the image is activated (default Immediate)."),
];

pub fn register(t: &mut Tree) {
    t.add(Tree::route(US, "UpdateService", Some(types::UPDATE_SERVICE)).get(LOGIN, service).patch(CONFIGURE_COMPONENTS, SERVICE_PATCH, patch_service));
    t.add(Tree::route("/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", "UpdateService", None).action(SIMPLE, CONFIGURE_COMPONENTS, SIMPLE_BODY, "Pull an update bundle and apply it to the inactive slot (a Task)", simple_update));
    t.add(Tree::route("/redfish/v1/UpdateService/Actions/UpdateService.StartUpdate", "UpdateService", None).action(START, CONFIGURE_COMPONENTS, &[], "Activate the staged update and restart", start_update));
    t.add(Tree::route("/redfish/v1/UpdateService/Actions/Oem/KeelUpdateService.CheckForUpdates", "UpdateService", None).action(CHECK, CONFIGURE_COMPONENTS, &[], "Look for a newer version in the signed update index now, and stage it (a Task)", check_for_updates));
    t.add(Tree::route("/redfish/v1/UpdateService/Actions/Oem/KeelUpdateService.Rollback", "UpdateService", None).action(ROLLBACK, CONFIGURE_COMPONENTS, &[], "Make the other slot's version boot at the next reset", rollback));
    t.add(Tree::route(PUSH_URI, "UpdateService", None).post_stream(CONFIGURE_COMPONENTS, "multipart/form-data", "Push an update bundle (multipart: UpdateParameters, UpdateFile); a Task", push));
    for kind in ["FirmwareInventory", "SoftwareInventory"] {
        let (coll, one): (&'static str, &'static str) = if kind == "FirmwareInventory" {
            ("/redfish/v1/UpdateService/FirmwareInventory", "/redfish/v1/UpdateService/FirmwareInventory/{SoftwareInventoryId}")
        } else {
            ("/redfish/v1/UpdateService/SoftwareInventory", "/redfish/v1/UpdateService/SoftwareInventory/{SoftwareInventoryId}")
        };
        t.add(Tree::route(coll, "SoftwareInventoryCollection", Some(types::SOFTWARE_INVENTORY_COLLECTION)).get(LOGIN, list));
        t.add(Tree::route(one, "SoftwareInventory", Some(types::SOFTWARE_INVENTORY)).get(LOGIN, item));
    }
}

pub fn firmware_uri(id: &str) -> String {
    format!("{US}/FirmwareInventory/{id}")
}

pub fn software_uri(id: &str) -> String {
    format!("{US}/SoftwareInventory/{id}")
}

pub fn slot_id(slot: &str) -> String {
    format!("Slot_{slot}")
}

// ------------------------------------------------------------------ settings (apply time, window)

/// The apply time and maintenance window used for pushed images (and SimpleUpdate's maintenance
/// apply times), kept in `STATE/update/settings.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Settings {
    apply_time: ApplyTime,
    window_start: Option<chrono::DateTime<chrono::Utc>>,
    window_seconds: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { apply_time: ApplyTime::Immediate, window_start: None, window_seconds: 3600 }
    }
}

const SETTINGS: &str = "update/settings.json";

fn settings(r: &Req) -> Settings {
    std::fs::read(r.keel.state.path(SETTINGS)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn window(s: &Settings) -> Option<Window> {
    s.window_start.map(|start| Window { start, seconds: s.window_seconds })
}

fn apply_time_json(s: &Settings) -> Value {
    let mut v = json!({
        "ApplyTime": name(s.apply_time),
        "ApplyTime@Redfish.AllowableValues": ApplyTime::NAMES,
        "MaintenanceWindowDurationInSeconds": s.window_seconds,
    });
    if let Some(t) = s.window_start {
        v["MaintenanceWindowStartTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    v
}

fn name(a: ApplyTime) -> &'static str {
    ApplyTime::NAMES.iter().copied().find(|n| ApplyTime::parse(n) == Some(a)).unwrap_or("Immediate")
}

async fn patch_service(r: Req, body: Map<String, Value>) -> RfResult<()> {
    if let Some(k) = body.get("Oem").and_then(|o| o.get("Keel")) {
        let mut p = r.keel.updates.policy();
        if let Some(c) = k.get("Channel").and_then(Value::as_str) {
            p.channel = c.to_string();
        }
        if let Some(i) = k.get("CheckIntervalSeconds").and_then(Value::as_u64) {
            p.interval = i;
        }
        match k.get("IndexURI") {
            Some(Value::Null) => p.index_uri = None,
            Some(Value::String(u)) => p.index_uri = Some(u.clone()),
            _ => {}
        }
        r.keel.updates.set_policy(&p).map_err(RfError::internal)?;
    }
    let window = body.get("@Redfish.MaintenanceWindow");
    if body.get("HttpPushUriOptions").is_none() && window.is_none() {
        return Ok(());
    }
    let mut s = settings(&r);
    let push = body.get("HttpPushUriOptions").and_then(|o| o.get("HttpPushUriApplyTime"));
    // The standard annotation and the (deprecated) push options set the same window.
    for (at, prefix) in [(window, "@Redfish.MaintenanceWindow"), (push, "HttpPushUriOptions/HttpPushUriApplyTime")] {
        let Some(at) = at else { continue };
        if let Some(a) = at.get("ApplyTime").and_then(Value::as_str) {
            s.apply_time = ApplyTime::parse(a).expect("validated");
        }
        match at.get("MaintenanceWindowStartTime") {
            Some(Value::Null) => s.window_start = None,
            Some(Value::String(t)) => {
                let parsed = chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| RfError::bad_request(&base::PROPERTY_VALUE_FORMAT_ERROR, &[t, &format!("{prefix}/MaintenanceWindowStartTime")]))?;
                s.window_start = Some(parsed.with_timezone(&chrono::Utc));
            }
            _ => {}
        }
        if let Some(d) = at.get("MaintenanceWindowDurationInSeconds").and_then(Value::as_u64) {
            s.window_seconds = d;
        }
    }
    let bytes = serde_json::to_vec_pretty(&s).map_err(RfError::internal)?;
    crate::store::write_atomic(&r.keel.state.path(SETTINGS), &bytes, 0o600).map_err(RfError::internal)
}

// ------------------------------------------------------------------ the service

async fn service(r: Req) -> RfResult<Value> {
    let s = settings(&r);
    let u = &r.keel.updates;
    let max = max_image_size(&r.keel);
    let mut v = json!({
        "Id": "UpdateService",
        "Name": "Update Service",
        "Description": "Updates of the Keel OS to the inactive A/B slot, and the firmware and software of this host",
        "ServiceEnabled": true,
        "FirmwareInventory": link(format!("{US}/FirmwareInventory")),
        "SoftwareInventory": link(format!("{US}/SoftwareInventory")),
        "MultipartHttpPushUri": PUSH_URI,
        "HttpPushUriOptions": { "HttpPushUriApplyTime": apply_time_json(&s) },
        "Actions": {
            "#UpdateService.SimpleUpdate": {
                "target": format!("{US}/Actions/{SIMPLE}"),
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
                "@Redfish.OperationApplyTimeSupport": {
                    "@odata.type": "#Settings.v1_4_0.OperationApplyTimeSupport",
                    "SupportedValues": ApplyTime::NAMES,
                    "MaintenanceWindowStartTime": s.window_start.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    "MaintenanceWindowDurationInSeconds": s.window_seconds,
                    "MaintenanceWindowResource": link(US),
                },
            },
            "#UpdateService.StartUpdate": { "target": format!("{US}/Actions/{START}") },
            "Oem": {
                "#KeelUpdateService.CheckForUpdates": { "target": format!("{US}/Actions/Oem/{CHECK}") },
                "#KeelUpdateService.Rollback": { "target": format!("{US}/Actions/Oem/{ROLLBACK}") },
            },
        },
        "Oem": { "Keel": policy_json(&u.policy()) },
        "Status": { "State": if u.busy() { "Updating" } else { "Enabled" }, "Health": "OK" },
    });
    if v["Actions"]["#UpdateService.SimpleUpdate"]["@Redfish.OperationApplyTimeSupport"]["MaintenanceWindowStartTime"].is_null() {
        v["Actions"]["#UpdateService.SimpleUpdate"]["@Redfish.OperationApplyTimeSupport"].as_object_mut().unwrap().remove("MaintenanceWindowStartTime");
    }
    if let Some(start) = s.window_start {
        v["@Redfish.MaintenanceWindow"] = json!({
            "@odata.type": "#Settings.v1_4_0.MaintenanceWindow",
            "MaintenanceWindowStartTime": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "MaintenanceWindowDurationInSeconds": s.window_seconds,
        });
    }
    if let Some(m) = max {
        v["MaxImageSizeBytes"] = json!(m);
    }
    Ok(v)
}

fn policy_json(p: &policy::Policy) -> Value {
    let mut v = json!({
        "@odata.type": "#KeelUpdateService.v1_0_0.UpdateService",
        "Channel": p.channel,
        "CheckIntervalSeconds": p.interval,
        "IndexURI": p.index_uri,
    });
    if let Some(t) = p.last_check {
        v["LastCheckTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    super::put(&mut v, "LastCheckResult", p.last_result.clone());
    super::put(&mut v, "AvailableVersion", p.available.clone());
    v
}

/// The largest bundle accepted (`MaxImageSizeBytes`): twice a usr slot (usr plus its verity data
/// at most) and a UKI of up to 512 MiB.
fn max_image_size(keel: &Keel) -> Option<u64> {
    let st = keel.updates.slots.status().ok()?;
    st.slots.iter().find(|x| !x.booted).map(|x| x.size * 2 + (512 << 20))
}

/// Only one update at a time: the second gets 409 with Update `UpdateInProgress`.
fn busy_error() -> RfError {
    RfError::new(StatusCode::CONFLICT, Message::update(&um::UPDATE_IN_PROGRESS, &[]))
}

fn check_targets(body: &Map<String, Value>, action: &str) -> RfResult<()> {
    for t in body.get("Targets").and_then(Value::as_array).into_iter().flatten() {
        let t = t.as_str().unwrap_or_default();
        if t.trim_end_matches('/') != TARGET && t != software_uri("OS") {
            return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, &[t, "Targets", action]));
        }
    }
    Ok(())
}

fn apply_time_of(body: &Map<String, Value>, s: &Settings, action: &str, default: ApplyTime) -> RfResult<(ApplyTime, Option<Window>)> {
    let at = body.get("@Redfish.OperationApplyTime").and_then(Value::as_str).map(|a| ApplyTime::parse(a).expect("validated")).unwrap_or(default);
    let w = window(s);
    if at.needs_window() && w.is_none() {
        return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_CONFLICT, &["@Redfish.OperationApplyTime", name(at)])
            .with_resolution(&format!("Set HttpPushUriOptions/HttpPushUriApplyTime/MaintenanceWindowStartTime on {US} before asking for {} in {action}.", name(at))));
    }
    Ok((at, w))
}

async fn simple_update(r: Req, body: Map<String, Value>) -> RfResult<Reply> {
    check_targets(&body, SIMPLE)?;
    let uri = body["ImageURI"].as_str().unwrap_or_default().to_string();
    let proto = body.get("TransferProtocol").and_then(Value::as_str);
    let url = match (uri.split_once("://"), proto) {
        (Some(_), _) => uri.clone(),
        (None, Some(p)) => format!("{}://{uri}", p.to_ascii_lowercase()),
        (None, None) => return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &[&uri, "ImageURI", SIMPLE])),
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    if let Some(p) = proto {
        if !p.eq_ignore_ascii_case(&scheme) {
            return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_CONFLICT, &["TransferProtocol", p]));
        }
    }
    let file = match scheme.as_str() {
        "http" | "https" => None,
        "file" => {
            if r.principal().role.id != "Administrator" {
                return Err(RfError::forbidden());
            }
            let path = std::path::PathBuf::from(&url["file://".len()..]);
            if !path.is_absolute() || !path.is_file() {
                return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &[&uri, "ImageURI", SIMPLE]));
            }
            Some(path)
        }
        _ => return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &[&uri, "ImageURI", SIMPLE])),
    };
    let s = settings(&r);
    let staged = body.get("Stage").and_then(Value::as_bool).unwrap_or(false);
    let (apply_time, window) = apply_time_of(&body, &s, SIMPLE, if staged { ApplyTime::OnStartUpdateRequest } else { ApplyTime::Immediate })?;
    let force = body.get("ForceUpdate").and_then(Value::as_bool).unwrap_or(false);
    let image = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(&url).to_string();
    let req = Request { image, apply_time, window, force };
    let payload = Payload::new("POST", &format!("{US}/Actions/{SIMPLE}"), Some(&Value::Object(body.clone())));
    let task = start_pull(&r.keel, url, file, req, "Update by SimpleUpdate", &r.principal().user, payload)?;
    Ok(Reply::accepted(&task))
}

/// Start an update from `url` (or the local `file`) as a Task.
fn start_pull(keel: &Arc<Keel>, url: String, file: Option<std::path::PathBuf>, req: Request, name: &str, owner: &str, payload: Payload) -> RfResult<TaskHandle> {
    let Some(reservation) = keel.updates.reserve() else { return Err(busy_error()) };
    let task = keel.tasks.start(name, owner, Some(payload));
    pull(keel.clone(), url, file, req, task.clone(), reservation).map_err(RfError::internal)?;
    Ok(task)
}

/// Download (or read) and apply in the background, finishing `task`.
fn pull(keel: Arc<Keel>, url: String, file: Option<std::path::PathBuf>, req: Request, task: TaskHandle, reservation: Reservation) -> std::io::Result<()> {
    let (tx, reader) = source::channel();
    let mut reader = reader.with_limit(max_image_size(&keel).unwrap_or(u64::MAX));
    if file.is_none() {
        actix_web::rt::spawn(async move {
            let _ = source::download(url, tx).await;
        });
    }
    std::thread::Builder::new().name("update".into()).spawn(move || {
        let _held = reservation;
        match file {
            Some(p) => match std::fs::File::open(&p) {
                Ok(mut f) => keel.updates.run(&mut f, &req, &task),
                Err(e) => task.fail(Message::update(&um::TRANSFER_FAILED, &[&req.image, TARGET]).resolution(format!("Cannot read {}: {e}", p.display()))),
            },
            None => keel.updates.run(&mut reader, &req, &task),
        }
    })?;
    Ok(())
}

async fn start_update(r: Req, _: Map<String, Value>) -> RfResult<Reply> {
    let keel = r.keel.clone();
    match actix_web::web::block(move || keel.updates.start_update()).await.map_err(RfError::internal)? {
        Ok(_) => Ok(Reply::success()),
        Err(StartError::NothingStaged) => Err(RfError::new(StatusCode::CONFLICT, Message::update(&um::NO_TARGETS_DETERMINED, &["(no staged image)"]))),
        Err(StartError::Io(e)) => Err(RfError::internal(e)),
        Err(StartError::Restart(e)) => Err(RfError::internal(e)),
    }
}

async fn rollback(r: Req, _: Map<String, Value>) -> RfResult<Reply> {
    let keel = r.keel.clone();
    match actix_web::web::block(move || keel.updates.rollback()).await.map_err(RfError::internal)? {
        Ok(v) => {
            log::info!("update: {} made version {v} the default (rollback)", r.principal().user);
            Ok(Reply::success())
        }
        Err(StartError::NothingStaged) => Err(RfError::new(StatusCode::CONFLICT, Message::update(&um::NO_TARGETS_DETERMINED, &["(no other bootable slot)"]))),
        Err(StartError::Io(e)) => Err(RfError::internal(e)),
        Err(StartError::Restart(e)) => Err(RfError::internal(e)),
    }
}

async fn check_for_updates(r: Req, _: Map<String, Value>) -> RfResult<Reply> {
    if r.keel.updates.policy().index_uri.is_none() {
        return Err(RfError::new(StatusCode::CONFLICT, Message::base(&base::ACTION_PARAMETER_VALUE_CONFLICT, &["Oem/Keel/IndexURI", "null"]))
            .with_resolution("Set Oem.Keel.IndexURI on the UpdateService first."));
    }
    let Some(reservation) = r.keel.updates.reserve() else { return Err(busy_error()) };
    let task = r.keel.tasks.start("Check for updates", &r.principal().user, Some(Payload::new("POST", &format!("{US}/Actions/Oem/{CHECK}"), None)));
    actix_web::rt::spawn(check(r.keel.clone(), task.clone(), reservation));
    Ok(Reply::accepted(&task))
}

/// The periodic check (from the server's timer), when due and no update runs.
pub fn check_if_due(keel: &Arc<Keel>) {
    if !keel.updates.policy().due(chrono::Utc::now()) {
        return;
    }
    let Some(reservation) = keel.updates.reserve() else { return };
    let task = keel.tasks.start("Check for updates", "keeld", None);
    actix_web::rt::spawn(check(keel.clone(), task, reservation));
}

/// Fetch and verify the index, pick the newest version of the channel, and stage it in `task`.
async fn check(keel: Arc<Keel>, task: TaskHandle, reservation: Reservation) {
    let mut p = keel.updates.policy();
    let Some(index_uri) = p.index_uri.clone() else { return };
    let running = keel.updates.slots.running_version().unwrap_or_default();
    let found = async {
        let index = policy::fetch_small(&index_uri).await?;
        let sig = policy::fetch_small(&format!("{index_uri}.sig")).await?;
        keel.updates.verify_index(&index, &sig).map_err(|e| format!("the update index is refused: {e}"))?;
        policy::pick(&index, &p.channel, crate::slots::native_arch(), &running)
    }
    .await;
    p.last_check = Some(chrono::Utc::now());
    let outcome = match found {
        Err(e) => {
            p.last_result = Some(e.clone());
            Err(e)
        }
        Ok(None) => {
            p.last_result = Some(format!("up to date: {running} is the newest {} version", p.channel));
            p.available = None;
            Ok(None)
        }
        Ok(Some(e)) => {
            p.available = Some(e.version.clone());
            p.last_result = Some(if keel.updates.holds(&e.version) { format!("version {} is already written", e.version) } else { format!("staging version {}", e.version) });
            Ok(Some(e))
        }
    };
    if let Err(e) = keel.updates.set_policy(&p) {
        log::warn!("update: cannot save the policy: {e}");
    }
    match outcome {
        Err(e) => {
            log::warn!("update check: {e}");
            task.fail(Message::update(&um::TRANSFER_FAILED, &[&index_uri, TARGET]).resolution(e));
        }
        Ok(Some(e)) if !keel.updates.holds(&e.version) => {
            let url = policy::resolve(&index_uri, &e.uri);
            log::info!("update check: staging {} from {url}", e.version);
            let image = url.rsplit('/').next().unwrap_or(&url).to_string();
            let req = Request { image, apply_time: ApplyTime::OnStartUpdateRequest, window: None, force: false };
            if let Err(err) = pull(keel.clone(), url, None, req, task.clone(), reservation) {
                task.fail(Message::update(&um::APPLY_FAILED, &[&e.uri, TARGET]).resolution(err.to_string()));
            }
        }
        Ok(_) => task.complete(Some(Message::update(&um::NO_TARGETS_DETERMINED, &[&index_uri]).resolution(p.last_result.clone().unwrap_or_default()))),
    }
}

// ------------------------------------------------------------------ multipart push

/// Largest `UpdateParameters` part.
const MAX_PARAMS: usize = 64 << 10;

fn push_error(m: Message) -> RfError {
    RfError::new(StatusCode::BAD_REQUEST, m)
}

/// `MultipartHttpPushUri`: parts `UpdateParameters` (JSON: `Targets`, `@Redfish.OperationApplyTime`,
/// `ForceUpdate`) then `UpdateFile` (the bundle), streamed to the engine as they arrive.
async fn push(r: Req, payload: actix_web::web::Payload) -> RfResult<Reply> {
    let ct = r.header("Content-Type").unwrap_or_default().to_string();
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Err(RfError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, Message::base(&base::HEADER_INVALID, &[&format!("Content-Type: {ct}")])));
    }
    let keel = r.keel.clone();
    let limit = max_image_size(&keel).unwrap_or(u64::MAX);
    if r.header("Content-Length").and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > limit.saturating_add(MAX_PARAMS as u64 + 4096)) {
        return Err(RfError::new(StatusCode::PAYLOAD_TOO_LARGE, Message::base(&base::PAYLOAD_TOO_LARGE, &[])).with_resolution(&format!("The largest image accepted is {limit} bytes (MaxImageSizeBytes).")));
    }
    let mut mp = actix_multipart::Multipart::new(r.http.headers(), payload);
    let mut params: Map<String, Value> = Map::new();
    let s = settings(&r);
    loop {
        let Some(field) = mp.next().await else {
            return Err(push_error(Message::base(&base::ACTION_PARAMETER_MISSING, &["MultipartHttpPushUri", "UpdateFile"])));
        };
        let mut field = field.map_err(|e| push_error(Message::base(&base::UNRECOGNIZED_REQUEST_BODY, &[])).with_resolution(&format!("The multipart body cannot be read: {e}")))?;
        let part = field.name().unwrap_or_default().to_string();
        // (Each arm consumes `field` and drops it before the next part is asked for.)
        match part.as_str() {
            "UpdateParameters" => {
                let mut buf = Vec::new();
                while let Some(c) = field.next().await {
                    let c = c.map_err(|_| push_error(Message::base(&base::UNRECOGNIZED_REQUEST_BODY, &[])))?;
                    if buf.len() + c.len() > MAX_PARAMS {
                        return Err(RfError::new(StatusCode::PAYLOAD_TOO_LARGE, Message::base(&base::PAYLOAD_TOO_LARGE, &[])));
                    }
                    buf.extend_from_slice(&c);
                }
                params = crate::protocol::body::parse_object(&buf)?;
                crate::protocol::body::validate(crate::protocol::body::Use::Action("UpdateService.MultipartPush"), PUSH_PARAMS, &params)?;
                check_targets(&params, "MultipartHttpPushUri")?;
            }
            "UpdateFile" => {
                let staged = params.get("Stage").and_then(Value::as_bool).unwrap_or(false);
                let default = if staged { ApplyTime::OnStartUpdateRequest } else { s.apply_time };
                let (apply_time, window) = apply_time_of(&params, &s, "MultipartHttpPushUri", default)?;
                let force = params.get("ForceUpdate").and_then(Value::as_bool).unwrap_or(false);
                let Some(reservation) = keel.updates.reserve() else { return Err(busy_error()) };
                let image = field.content_disposition().and_then(|d| d.get_filename()).filter(|f| !f.is_empty()).unwrap_or("UpdateFile").to_string();
                let task = keel.tasks.start("Update by MultipartHttpPushUri", &r.principal().user, Some(Payload::new("POST", PUSH_URI, Some(&Value::Object(params.clone())))));
                let req = Request { image, apply_time, window, force };
                let (tx, reader) = source::channel();
                let reader = reader.with_limit(limit);
                let k = keel.clone();
                let t = task.clone();
                let worker = std::thread::Builder::new()
                    .name("update".into())
                    .spawn(move || {
                        let _held = reservation;
                        let mut reader = reader;
                        k.updates.run(&mut reader, &req, &t);
                        // Whatever the engine left unread is drained by the sender's failing sends.
                    })
                    .map_err(RfError::internal)?;
                // Feed the engine as the upload arrives; stop feeding when it stops reading.
                let mut engine_gone = false;
                while let Some(c) = field.next().await {
                    match c {
                        // Once the engine stopped (it refused the bundle) the rest is read and dropped.
                        Ok(bytes) if !engine_gone => engine_gone = tx.send(Ok(bytes)).await.is_err(),
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(format!("the upload broke off: {e}"))).await;
                            break;
                        }
                    }
                }
                drop(tx);
                // actix-multipart hands out the next part only once this one is dropped.
                drop(field);
                // The rest of the body (further parts) is read and ignored.
                while let Some(Ok(mut f)) = mp.next().await {
                    while f.next().await.is_some() {}
                }
                let _ = actix_web::web::block(move || worker.join()).await;
                return Ok(Reply::accepted(&task));
            }
            other => {
                return Err(push_error(Message::base(&base::ACTION_PARAMETER_UNKNOWN, &["MultipartHttpPushUri", other])));
            }
        }
    }
}

const PUSH_PARAMS: &[Prop] = &[
    Prop::new("Targets", Ty::StrList { max_items: 1 }, "The system (the only target); default: it."),
    Prop::new("ForceUpdate", Ty::Bool, "Accept a version older than the running one."),
    Prop::new("Stage", Ty::Bool, "Write the image and wait for UpdateService.StartUpdate."),
    Prop::new("@Redfish.OperationApplyTime", Ty::Enum(ApplyTime::NAMES), "When the image is activated (default: HttpPushUriOptions)."),
    Prop::new("Oem", Ty::Obj(&[]), "No OEM parameters."),
];

// ------------------------------------------------------------------ inventories

/// Firmware: the system firmware, every drive's, NIC's and the TPM's. Software: OS, kernel, keeld,
/// Incus.
fn components(r: &Req) -> (Vec<Component>, &'static str) {
    let inv = r.keel.inventory();
    if !r.path.starts_with("/redfish/v1/UpdateService/FirmwareInventory") {
        return (inv.software.clone(), "SoftwareInventory");
    }
    let mut fw = inv.firmware.clone();
    for d in inv.storage.iter().flat_map(|c| c.drives.iter()) {
        if let Some(rev) = &d.revision {
            fw.push(Component {
                id: format!("Drive_{}", d.id),
                name: format!("{} firmware", d.model.as_deref().unwrap_or("Drive")),
                version: rev.clone(),
                manufacturer: d.manufacturer.clone(),
                release_date: None,
                software_id: d.model.clone(),
                updateable: false,
                related: vec![format!("{}/Drives/{}", super::systems::CHASSIS, d.id)],
            });
        }
    }
    for a in inv.network.adapters.iter() {
        if let Some(v) = &a.firmware {
            fw.push(Component {
                id: super::network::nic_firmware_id(&a.id),
                name: format!("{} firmware", a.model.as_deref().unwrap_or("Network adapter")),
                version: v.clone(),
                manufacturer: a.manufacturer.clone(),
                release_date: None,
                software_id: None,
                updateable: false,
                related: vec![super::network::adapter_uri(&a.id)],
            });
        }
    }
    if let Some(t) = &r.keel.tpm {
        fw.push(Component {
            id: "TPM".into(),
            name: "TPM firmware".into(),
            version: t.info.firmware_version.clone(),
            manufacturer: Some(t.info.manufacturer.clone()),
            release_date: None,
            software_id: None,
            updateable: false,
            related: vec![format!("{}/TrustedComponents/TPM", super::systems::CHASSIS)],
        });
    }
    (fw, "FirmwareInventory")
}

fn slot_status(r: &Req) -> Option<Status> {
    r.keel.updates.slots.status().map_err(|e| log::warn!("slots: {e}")).ok()
}

fn uki_id(version: &str) -> String {
    format!("UKI_{version}")
}

async fn list(r: Req) -> RfResult<Value> {
    let (items, kind) = components(&r);
    let name = if kind == "FirmwareInventory" { "Firmware Inventory Collection" } else { "Software Inventory Collection" };
    let mut ids: Vec<String> = items.iter().map(|c| format!("{US}/{kind}/{}", c.id)).collect();
    if kind == "SoftwareInventory" {
        if let Some(st) = slot_status(&r) {
            ids.extend(st.slots.iter().map(|s| software_uri(&slot_id(&s.id))));
            ids.extend(st.entries.iter().map(|e| software_uri(&uki_id(&e.version))));
        }
    }
    Ok(collection(name, ids))
}

async fn item(r: Req) -> RfResult<Value> {
    let id = r.param(0).to_string();
    if r.path.starts_with("/redfish/v1/UpdateService/SoftwareInventory") {
        if let Some(v) = slot_item(&r, &id) {
            return Ok(v);
        }
    }
    let (items, _) = components(&r);
    let c = items.iter().find(|c| c.id == id).ok_or_else(|| RfError::resource_not_found("SoftwareInventory", &id))?;
    let mut v = json!({
        "Id": c.id,
        "Name": c.name,
        "Version": c.version,
        "Updateable": c.updateable,
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    if let Some(m) = &c.manufacturer {
        v["Manufacturer"] = json!(m);
    }
    if let Some(d) = &c.release_date {
        v["ReleaseDate"] = json!(d);
    }
    if let Some(s) = &c.software_id {
        v["SoftwareId"] = json!(s);
    }
    if !c.related.is_empty() {
        v["RelatedItem"] = Value::Array(c.related.iter().map(|u| link(u.clone())).collect());
        v["RelatedItem@odata.count"] = json!(c.related.len());
    }
    Ok(v)
}

/// A usr slot (`Slot_A`, `Slot_B`) or a UKI (`UKI_<version>`) as SoftwareInventory.
fn slot_item(r: &Req, id: &str) -> Option<Value> {
    let st = slot_status(r)?;
    if let Some(s) = st.slots.iter().find(|s| slot_id(&s.id) == id) {
        let writing = r.keel.updates.busy() && !s.booted && s.state == SlotState::Empty;
        let (state, health) = match s.state {
            _ if writing => ("Updating", Some("OK")),
            SlotState::Active => ("Enabled", Some("OK")),
            SlotState::Staged => ("StandbyOffline", Some("OK")),
            SlotState::Previous => ("StandbySpare", Some("OK")),
            SlotState::Failed => ("UnavailableOffline", Some("Critical")),
            SlotState::Empty => ("Absent", None),
        };
        let pending = r.keel.updates.pending().is_some_and(|p| Some(&p.version) == s.version.as_ref());
        let mut v = json!({
            "Id": id,
            "Name": format!("Keel OS slot {}", s.id),
            "Description": format!("usr partition {} ({}): {:?}", s.label, s.partuuid, s.state),
            "SoftwareId": s.label,
            "Version": s.version.clone().unwrap_or_default(),
            "Active": s.booted,
            "Staged": s.state == SlotState::Staged || pending,
            "WriteProtected": s.booted,
            "Updateable": !s.booted,
            "SizeBytes": s.size,
            "Status": { "State": state },
            "RelatedItem": [link(TARGET)],
            "RelatedItem@odata.count": 1,
        });
        if let Some(h) = health {
            v["Status"]["Health"] = json!(h);
        }
        if s.version.is_none() {
            v.as_object_mut().unwrap().remove("Version");
        }
        return Some(v);
    }
    let e = st.entries.iter().find(|e| uki_id(&e.version) == id)?;
    let bad = e.tries_left == Some(0);
    let mut v = json!({
        "Id": id,
        "Name": format!("Keel UKI {}", e.file),
        "Description": match (e.tries_left, e.tries_done) {
            (None, _) => "Blessed boot entry".to_string(),
            (Some(l), d) => format!("Boot entry on trial: {l} tries left, {} done", d.unwrap_or(0)),
        },
        "SoftwareId": e.file,
        "Version": e.version,
        "Active": st.booted.as_deref() == Some(e.version.as_str()),
        "Updateable": false,
        "Status": { "State": if bad { "UnavailableOffline" } else { "Enabled" }, "Health": if bad { "Critical" } else { "OK" } },
    });
    if let Some(slot) = &e.slot {
        v["RelatedItem"] = json!([link(software_uri(&slot_id(slot)))]);
        v["RelatedItem@odata.count"] = json!(1);
    }
    Some(v)
}

