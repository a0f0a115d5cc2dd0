//! PCIe devices and their functions in the chassis.

use super::{collection, link, Req, Tree};
use crate::inventory::pci::{device_class, Device};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/PCIeDevices", "PCIeDeviceCollection", Some(types::PCIE_DEVICE_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/PCIeDevices/{PCIeDeviceId}", "PCIeDevice", Some(types::PCIE_DEVICE)).get(LOGIN, device));
    t.add(
        Tree::route("/redfish/v1/Chassis/{ChassisId}/PCIeDevices/{PCIeDeviceId}/PCIeFunctions", "PCIeFunctionCollection", Some(types::PCIE_FUNCTION_COLLECTION))
            .get(LOGIN, functions),
    );
    t.add(
        Tree::route("/redfish/v1/Chassis/{ChassisId}/PCIeDevices/{PCIeDeviceId}/PCIeFunctions/{PCIeFunctionId}", "PCIeFunction", Some(types::PCIE_FUNCTION))
            .get(LOGIN, function),
    );
}

pub fn device_uri(id: &str) -> String {
    format!("{}/PCIeDevices/{id}", super::systems::CHASSIS)
}

fn find<'a>(devs: &'a [Device], id: &str) -> RfResult<&'a Device> {
    devs.iter().find(|d| d.id == id).ok_or_else(|| RfError::resource_not_found("PCIeDevice", id))
}

async fn list(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("PCIe Devices", inv.pci.iter().map(|d| device_uri(&d.id))))
}

async fn device(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let d = find(&inv.pci, r.param(1))?;
    let f0 = &d.functions[0];
    let mut v = json!({
        "Id": d.id,
        "Name": d.name.clone().unwrap_or_else(|| format!("PCIe device {:04x}:{:04x}", f0.vendor_id, f0.device_id)),
        "DeviceType": if d.functions.len() > 1 { "MultiFunction" } else { "SingleFunction" },
        "PCIeFunctions": link(format!("{}/PCIeFunctions", device_uri(&d.id))),
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    if let Some(m) = &d.vendor {
        v["Manufacturer"] = json!(m);
    }
    if let Some(n) = &d.name {
        v["Model"] = json!(n);
    }
    let mut iface = serde_json::Map::new();
    if let Some((g, w)) = d.link {
        iface.insert("PCIeType".into(), json!(g));
        iface.insert("LanesInUse".into(), json!(w));
    }
    if let Some((g, w)) = d.max_link {
        iface.insert("MaxPCIeType".into(), json!(g));
        iface.insert("MaxLanes".into(), json!(w));
    }
    if !iface.is_empty() {
        v["PCIeInterface"] = Value::Object(iface);
    }
    Ok(v)
}

async fn functions(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let d = find(&inv.pci, r.param(1))?;
    Ok(collection("PCIe Functions", d.functions.iter().map(|f| format!("{}/PCIeFunctions/{}", device_uri(&d.id), f.function))))
}

async fn function(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let d = find(&inv.pci, r.param(1))?;
    let f = d
        .functions
        .iter()
        .find(|f| f.function.to_string() == r.param(2))
        .ok_or_else(|| RfError::resource_not_found("PCIeFunction", r.param(2)))?;
    let mut v = json!({
        "Id": f.function.to_string(),
        "Name": format!("Function {} of {}", f.function, f.address),
        "FunctionId": f.function,
        "VendorId": format!("0x{:04x}", f.vendor_id),
        "DeviceId": format!("0x{:04x}", f.device_id),
        "ClassCode": format!("0x{:06x}", f.class),
        "DeviceClass": device_class(f.class),
        "FunctionType": if f.virtual_fn { "Virtual" } else { "Physical" },
        "Links": { "PCIeDevice": link(device_uri(&d.id)) },
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    if let Some(x) = f.subsystem_vendor_id {
        v["SubsystemVendorId"] = json!(format!("0x{x:04x}"));
    }
    if let Some(x) = f.subsystem_id {
        v["SubsystemId"] = json!(format!("0x{x:04x}"));
    }
    if let Some(x) = f.revision {
        v["RevisionId"] = json!(format!("0x{x:02x}"));
    }
    Ok(v)
}
