//! What the machine boots: the UKIs in the ESP as `BootOption`s and the System's `Boot.BootOrder`
//! in the order systemd-boot would try them now (the entry it picks next first: a one-shot or
//! default entry, else the newest with tries left; entries whose tries are used up last).

use super::{collection, link, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::slots::Status;
use crate::types;
use serde_json::{json, Value};

const OPTIONS: &str = "/redfish/v1/Systems/system/BootOptions";

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/BootOptions", "BootOptionCollection", Some(types::BOOT_OPTION_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/BootOptions/{BootOptionId}", "BootOption", Some(types::BOOT_OPTION)).get(LOGIN, one));
}

/// An entry's BootOptionReference: its systemd-boot id without `.efi` (`keel_1.2.0`).
fn reference(entry_id: &str) -> String {
    entry_id.strip_suffix(".efi").unwrap_or(entry_id).to_string()
}

/// Entry ids in the order the next boot would try them.
fn order(st: &Status) -> Vec<String> {
    let mut ids: Vec<String> = st.entries.iter().map(|e| e.id.clone()).collect();
    if let Some(n) = &st.next_boot {
        if let Some(i) = ids.iter().position(|id| *id == crate::slots::boot::entry_id(&n.version)) {
            let first = ids.remove(i);
            ids.insert(0, first);
        }
    }
    ids.into_iter().map(|i| reference(&i)).collect()
}

/// The System's `Boot` object.
pub fn system_boot(r: &Req) -> Option<Value> {
    let st = r.keel.updates.slots.status().ok()?;
    Some(json!({
        "BootSourceOverrideEnabled": "Disabled",
        "BootOrder": order(&st),
        "BootOptions": link(OPTIONS),
    }))
}

async fn list(r: Req) -> RfResult<Value> {
    super::check_system(&r)?;
    let st = r.keel.updates.slots.status().map_err(RfError::internal)?;
    Ok(collection("Boot Options", st.entries.iter().map(|e| format!("{OPTIONS}/{}", reference(&e.id)))))
}

async fn one(r: Req) -> RfResult<Value> {
    super::check_system(&r)?;
    let st = r.keel.updates.slots.status().map_err(RfError::internal)?;
    let id = r.param(1);
    let e = st.entries.iter().find(|e| reference(&e.id) == id).ok_or_else(|| RfError::resource_not_found("BootOption", id))?;
    let next = st.next_boot.as_ref().is_some_and(|n| n.version == e.version);
    let tries = match (e.tries_left, e.tries_done) {
        (None, _) => "blessed".to_string(),
        (Some(l), d) => format!("{l} tries left, {} failed", d.unwrap_or(0)),
    };
    let mut v = json!({
        "Id": id,
        "Name": format!("Keel {}", e.version),
        "BootOptionReference": id,
        "DisplayName": format!("Keel {}{} ({tries}{})", e.version, e.slot.as_ref().map(|s| format!(", slot {s}")).unwrap_or_default(), if next { ", boots next" } else { "" }),
        "Description": format!("Unified kernel image EFI/Linux/{} in the ESP", e.file),
        "BootOptionEnabled": e.tries_left != Some(0),
        "RelatedItem": [link(super::update::software_uri(&format!("UKI_{}", e.version)))],
        "RelatedItem@odata.count": 1,
    });
    if let Some(s) = &e.slot {
        v["RelatedItem"].as_array_mut().unwrap().push(link(super::update::software_uri(&super::update::slot_id(s))));
        v["RelatedItem@odata.count"] = json!(2);
    }
    Ok(v)
}
