//! `ComputerSystem.Reset` and its ActionInfo; the system's `PowerState` (backend: `crate::power`).

use super::systems::SYSTEM;
use super::{check_system, Reply, Req, Tree};
use crate::messages::{base, resource_event, Message, RfError, RfResult};
use crate::power::{PowerError, PowerState, ResetKind};
use crate::privilege::{CONFIGURE_COMPONENTS, LOGIN};
use crate::protocol::body::{Prop, Ty};
use crate::types;
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

pub const RESET_ACTION: &str = "ComputerSystem.Reset";
const RESET: &[Prop] = &[Prop::required(
    "ResetType",
    Ty::Enum(ResetKind::NAMES),
    "The kind of reset: GracefulRestart, GracefulShutdown (systemd-logind, honouring block inhibitors), ForceRestart, ForceOff, PowerCycle (systemd, immediately); On powers a simulated system back on (simulated platform only). The ActionInfo lists those this host accepts.",
)];

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Actions/ComputerSystem.Reset", "ComputerSystem", None).action(
        RESET_ACTION,
        CONFIGURE_COMPONENTS,
        RESET,
        "Reset the host: restart or shut it down",
        reset,
    ));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/ResetActionInfo", "ActionInfo", Some(types::ACTION_INFO)).get(LOGIN, action_info));
}

fn action_info_uri() -> String {
    format!("{SYSTEM}/ResetActionInfo")
}

fn allowed(r: &Req) -> Vec<&'static str> {
    r.keel.power.reset_kinds().iter().map(|k| k.as_str()).collect()
}

/// The power properties of the ComputerSystem: `PowerState`, `LastResetTime` and the Reset action.
pub fn system_props(r: &Req, v: &mut Value) {
    let p = &r.keel.power;
    v["PowerState"] = json!(p.power_state().as_str());
    if let Some(t) = p.last_reset() {
        v["LastResetTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    v["Actions"] = json!({
        format!("#{RESET_ACTION}"): {
            "target": format!("{SYSTEM}/Actions/{RESET_ACTION}"),
            "title": "Reset",
            "@Redfish.ActionInfo": action_info_uri(),
            "ResetType@Redfish.AllowableValues": allowed(r),
        }
    });
}

async fn action_info(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    Ok(json!({
        "Id": "ResetActionInfo",
        "Name": "Reset Action Info",
        "Description": if r.keel.power.is_real() {
            "The reset types this host accepts (systemd-logind and systemd)"
        } else {
            "The reset types this host accepts (simulated platform: nothing on the machine is reset)"
        },
        "Parameters": [{
            "Name": "ResetType",
            "Required": true,
            "DataType": "String",
            "AllowableValues": allowed(&r),
        }],
    }))
}

fn refusal(kind: ResetKind, e: PowerError) -> RfError {
    match e {
        PowerError::Inhibited { .. } => RfError::new(StatusCode::CONFLICT, Message::base(&base::RESOURCE_IN_USE, &[])),
        PowerError::PoweredOff => RfError::new(StatusCode::CONFLICT, Message::base(&base::RESOURCE_IN_STANDBY, &[])),
        PowerError::Unsupported(_) => not_in_list(kind),
        PowerError::Failed(m) => RfError::internal(format!("{RESET_ACTION} {kind}: {m}")),
    }
}

fn not_in_list(kind: ResetKind) -> RfError {
    RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, &[kind.as_str(), "ResetType", RESET_ACTION]).related("ResetType"))
}

async fn reset(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    check_system(&r)?;
    // The body was checked against ResetKind::NAMES; this backend may offer fewer.
    let kind = b.get("ResetType").and_then(Value::as_str).and_then(ResetKind::parse).ok_or_else(|| RfError::internal("ResetType passed validation but is unknown"))?;
    if !r.keel.power.reset_kinds().contains(&kind) {
        return Err(not_in_list(kind));
    }
    let user = r.principal().user.clone();
    let before = r.keel.power.power_state();
    let keel = r.keel.clone();
    let result = actix_web::web::block(move || keel.power.reset(kind)).await.map_err(RfError::internal)?;
    let p = &r.keel.power;
    match result {
        Ok(()) => log::info!("{RESET_ACTION} {kind} by {user}: done ({})", p.name()),
        Err(e) => {
            log::warn!("{RESET_ACTION} {kind} by {user}: refused ({}): {e}", p.name());
            return Err(refusal(kind, e));
        }
    }
    let after = p.power_state();
    let event = match (p.is_real(), after) {
        (true, PowerState::PoweringOff) if before != PowerState::PoweringOff => Some(&resource_event::RESOURCE_POWERING_OFF),
        (false, PowerState::Off) if before != PowerState::Off => Some(&resource_event::RESOURCE_POWERED_OFF),
        // A simulated restart, or On from Off: the system (re)booted.
        (false, PowerState::On) if kind != ResetKind::On || before == PowerState::Off => Some(&resource_event::RESOURCE_POWERED_ON),
        _ => None,
    };
    if let Some(def) = event {
        r.keel.events.resource_event(def, SYSTEM, types::COMPUTER_SYSTEM.name, &[SYSTEM.to_string()]);
    }
    Ok(Reply::success())
}
