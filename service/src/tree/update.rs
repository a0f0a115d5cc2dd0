//! UpdateService: for now the firmware and software inventories (the A/B update engine and its
//! actions arrive with the update issue; no action is listed before it works).

use super::{collection, link, Req, Tree};
use crate::inventory::software::Component;
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

const US: &str = "/redfish/v1/UpdateService";

pub fn register(t: &mut Tree) {
    t.add(Tree::route(US, "UpdateService", Some(types::UPDATE_SERVICE)).get(LOGIN, service));
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

async fn service(_: Req) -> RfResult<Value> {
    Ok(json!({
        "Id": "UpdateService",
        "Name": "Update Service",
        "Description": "Firmware and software of this host",
        "ServiceEnabled": true,
        "FirmwareInventory": link(format!("{US}/FirmwareInventory")),
        "SoftwareInventory": link(format!("{US}/SoftwareInventory")),
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

pub fn firmware_uri(id: &str) -> String {
    format!("{US}/FirmwareInventory/{id}")
}

/// Firmware: the system firmware, every drive's and the TPM's. Software: OS, kernel, keeld, Incus.
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

async fn list(r: Req) -> RfResult<Value> {
    let (items, kind) = components(&r);
    let name = if kind == "FirmwareInventory" { "Firmware Inventory Collection" } else { "Software Inventory Collection" };
    Ok(collection(name, items.iter().map(|c| format!("{US}/{kind}/{}", c.id))))
}

async fn item(r: Req) -> RfResult<Value> {
    let (items, _) = components(&r);
    let id = r.param(0);
    let c = items.iter().find(|c| c.id == id).ok_or_else(|| RfError::resource_not_found("SoftwareInventory", id))?;
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
