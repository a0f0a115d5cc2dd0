//! A first ComputerSystem and Chassis, so links resolve; the inventory issue fills them in.

use super::{collection, link, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

pub const SYSTEM: &str = "/redfish/v1/Systems/system";
pub const CHASSIS: &str = "/redfish/v1/Chassis/chassis";

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems", "ComputerSystemCollection", Some(types::COMPUTER_SYSTEM_COLLECTION)).get(LOGIN, systems));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}", "ComputerSystem", Some(types::COMPUTER_SYSTEM)).get(LOGIN, system));
    t.add(Tree::route("/redfish/v1/Chassis", "ChassisCollection", Some(types::CHASSIS_COLLECTION)).get(LOGIN, chassis_list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}", "Chassis", Some(types::CHASSIS)).get(LOGIN, chassis));
}

/// One DMI field from sysfs, if readable and meaningful.
fn dmi(field: &str) -> Option<String> {
    let v = std::fs::read_to_string(format!("/sys/class/dmi/id/{field}")).ok()?;
    let v = v.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("to be filled by o.e.m.") || v.eq_ignore_ascii_case("default string") {
        None
    } else {
        Some(v.to_string())
    }
}

async fn systems(_: Req) -> RfResult<Value> {
    Ok(collection("Computer System Collection", [SYSTEM.to_string()]))
}

async fn system(r: Req) -> RfResult<Value> {
    if r.param(0) != "system" {
        return Err(RfError::resource_not_found("ComputerSystem", r.param(0)));
    }
    let mut v = json!({
        "Id": "system",
        "Name": "Keel host",
        "SystemType": "Physical",
        "HostName": crate::tls::hostname(),
        "PowerState": "On",
        "Status": { "State": "Enabled", "Health": "OK" },
        "Links": { "Chassis": [link(CHASSIS)], "ManagedBy": [link(super::managers::MANAGER)] },
    });
    for (prop, field) in [("Manufacturer", "sys_vendor"), ("Model", "product_name"), ("SerialNumber", "product_serial"), ("BiosVersion", "bios_version")] {
        if let Some(x) = dmi(field) {
            v[prop] = json!(x);
        }
    }
    if let Some(u) = dmi("product_uuid").and_then(|u| uuid::Uuid::parse_str(&u).ok()) {
        v["UUID"] = json!(u.to_string());
    }
    Ok(v)
}

async fn chassis_list(_: Req) -> RfResult<Value> {
    Ok(collection("Chassis Collection", [CHASSIS.to_string()]))
}

/// SMBIOS chassis type numbers (DSP0134 §7.4.1) as Redfish ChassisType.
fn chassis_type() -> &'static str {
    match dmi("chassis_type").and_then(|t| t.parse::<u32>().ok()) {
        Some(3 | 4 | 5 | 6 | 7 | 15 | 16 | 24) => "StandAlone",
        Some(8 | 9 | 10 | 14 | 30 | 31 | 32) => "Other",
        Some(17 | 23 | 28) => "RackMount",
        Some(25 | 29) => "Blade",
        Some(1) | Some(2) | None | Some(_) => "Other",
    }
}

async fn chassis(r: Req) -> RfResult<Value> {
    if r.param(0) != "chassis" {
        return Err(RfError::resource_not_found("Chassis", r.param(0)));
    }
    let mut v = json!({
        "Id": "chassis",
        "Name": "Keel host chassis",
        "ChassisType": chassis_type(),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Links": { "ComputerSystems": [link(SYSTEM)], "ManagedBy": [link(super::managers::MANAGER)] },
    });
    for (prop, field) in [("Manufacturer", "chassis_vendor"), ("SerialNumber", "chassis_serial"), ("AssetTag", "chassis_asset_tag")] {
        if let Some(x) = dmi(field) {
            v[prop] = json!(x);
        }
    }
    Ok(v)
}
