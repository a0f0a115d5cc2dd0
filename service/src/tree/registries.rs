//! The Registries collection: the message registries keeld uses, at their DMTF publication URIs.

use super::{collection, Req, Tree};
use crate::messages::{RfError, RfResult, BASE_REGISTRY, RESOURCE_EVENT_REGISTRY, TASK_EVENT_REGISTRY, UPDATE_REGISTRY};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

/// (Id, full registry name with version) of every registry whose messages keeld emits; the Ids
/// are also the RegistryPrefixes the EventService offers.
pub const REGISTRIES: &[(&str, &str)] = &[
    ("Base", BASE_REGISTRY),
    ("ResourceEvent", RESOURCE_EVENT_REGISTRY),
    ("TaskEvent", TASK_EVENT_REGISTRY),
    ("Update", UPDATE_REGISTRY),
];

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Registries", "MessageRegistryFileCollection", Some(types::MESSAGE_REGISTRY_FILE_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/Registries/{RegistryId}", "MessageRegistryFile", Some(types::MESSAGE_REGISTRY_FILE)).get(LOGIN, one));
}

async fn list(_: Req) -> RfResult<Value> {
    Ok(collection("Message Registry Files", REGISTRIES.iter().map(|(id, _)| format!("/redfish/v1/Registries/{id}"))))
}

async fn one(r: Req) -> RfResult<Value> {
    let id = r.param(0);
    let (_, full) = REGISTRIES.iter().find(|(i, _)| *i == id).ok_or_else(|| RfError::resource_not_found("MessageRegistryFile", id))?;
    let version = full.trim_start_matches(id).trim_start_matches('.');
    let major_minor: Vec<&str> = version.split('.').take(2).collect();
    Ok(json!({
        "Id": id,
        "Name": format!("{id} Message Registry File"),
        "Description": format!("The {id} message registry, version {version}"),
        "Languages": ["en"],
        "Registry": format!("{id}.{}", major_minor.join(".")),
        "Location": [{ "Language": "en", "PublicationUri": format!("https://redfish.dmtf.org/registries/{full}.json") }],
        "Location@odata.count": 1,
    }))
}
