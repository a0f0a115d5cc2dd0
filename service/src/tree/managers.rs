//! The Manager: keeld itself, its network protocols and its own restart.

use super::{collection, link, Reply, Req, Tree};
use crate::messages::RfResult;
use crate::privilege::{CONFIGURE_MANAGER, LOGIN};
use crate::protocol::body::{Prop, Ty};
use crate::types::{self, KEEL_OEM_NAMESPACE, KEEL_OEM_VERSION};
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

pub const MANAGER: &str = "/redfish/v1/Managers/keel";
const RESET_TYPES: &[&str] = &["GracefulRestart", "ForceRestart"];
const RESET: &[Prop] = &[Prop::new("ResetType", Ty::Enum(RESET_TYPES), "How to restart keeld (both restart the daemon, through systemd when keeld runs as a unit; default GracefulRestart).")];

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Managers", "ManagerCollection", Some(types::MANAGER_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route(MANAGER, "Manager", Some(types::MANAGER)).get(LOGIN, manager));
    t.add(Tree::route("/redfish/v1/Managers/keel/NetworkProtocol", "ManagerNetworkProtocol", Some(types::MANAGER_NETWORK_PROTOCOL)).get(LOGIN, network));
    t.add(Tree::route("/redfish/v1/Managers/keel/Actions/Manager.Reset", "Manager", None).action(
        "Manager.Reset",
        CONFIGURE_MANAGER,
        RESET,
        "Restart keeld",
        reset,
    ));
}

async fn list(_: Req) -> RfResult<Value> {
    Ok(collection("Manager Collection", [MANAGER.to_string()]))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn manager(r: Req) -> RfResult<Value> {
    Ok(json!({
        "Id": "keel",
        "Name": "keeld",
        "Description": "The Keel management daemon serving this Redfish service",
        "ManagerType": "Service",
        "Manufacturer": "Keel",
        "Model": "keeld",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "UUID": r.keel.service_uuid,
        "ServiceEntryPointUUID": r.keel.service_uuid,
        "DateTime": rfc3339(chrono::Utc::now()),
        "DateTimeLocalOffset": "+00:00",
        "LastResetTime": rfc3339(r.keel.started),
        "PowerState": "On",
        "Status": { "State": "Enabled", "Health": "OK" },
        "NetworkProtocol": link("/redfish/v1/Managers/keel/NetworkProtocol"),
        "Links": {
            "ManagerForServers": [link(super::systems::SYSTEM)],
            "ManagerForChassis": [link(super::systems::CHASSIS)],
        },
        "Actions": {
            "#Manager.Reset": {
                "target": "/redfish/v1/Managers/keel/Actions/Manager.Reset",
                "ResetType@Redfish.AllowableValues": RESET_TYPES,
            }
        },
        "Oem": {
            "Keel": {
                "@odata.type": format!("#{KEEL_OEM_NAMESPACE}.{KEEL_OEM_VERSION}.Manager"),
                "PlatformMode": "Simulated",
                "SelfSignedCertificate": r.keel.cfg.self_signed,
            }
        },
    }))
}

async fn network(r: Req) -> RfResult<Value> {
    let host = crate::tls::hostname();
    Ok(json!({
        "Id": "NetworkProtocol",
        "Name": "Manager Network Protocol",
        "Description": "The protocols keeld serves",
        "HostName": host,
        "FQDN": host,
        "HTTPS": { "ProtocolEnabled": true, "Port": r.keel.cfg.port },
        "HTTP": { "ProtocolEnabled": false },
        "SSH": { "ProtocolEnabled": false },
        "IPMI": { "ProtocolEnabled": false },
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

async fn reset(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let kind = b.get("ResetType").and_then(Value::as_str).unwrap_or("GracefulRestart").to_string();
    log::info!("Manager.Reset ({kind}) requested by {}", r.principal().user);
    let keel = r.keel.clone();
    // Answer first, then restart: as a systemd unit, systemd restarts keeld's unit; otherwise
    // keeld re-executes itself in place.
    actix_web::rt::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if let Ok(id) = std::env::var("INVOCATION_ID") {
            let bus = keel.cfg.power_bus.clone();
            match actix_web::web::block(move || crate::power::restart_own_unit(bus.as_deref(), &id)).await {
                Ok(Ok(Some(unit))) => {
                    log::info!("Manager.Reset: systemd restarts {unit}");
                    return;
                }
                Ok(Ok(None)) => log::info!("Manager.Reset: keeld is not its unit's main process; re-executing"),
                Ok(Err(e)) => log::warn!("Manager.Reset: systemd could not restart keeld's unit ({e}); re-executing"),
                Err(e) => log::warn!("Manager.Reset: {e}; re-executing"),
            }
        }
        keel.restart.notify_one();
    });
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
