//! `/redfish`, the service root and the OData service document.

use super::{link, Req, Tree};
use crate::messages::RfResult;
use crate::privilege::Requirement::NoAuth;
use crate::protocol::query::MAX_EXPAND_LEVELS;
use crate::types;
use serde_json::{json, Value};

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish", "ServiceRoot", None).get(NoAuth, versions));
    t.add(Tree::route("/redfish/v1", "ServiceRoot", Some(types::SERVICE_ROOT)).get(NoAuth, service_root));
    t.add(Tree::route("/redfish/v1/odata", "ServiceRoot", None).get(NoAuth, odata));
}

async fn versions(_: Req) -> RfResult<Value> {
    Ok(json!({ "v1": "/redfish/v1/" }))
}

async fn service_root(r: Req) -> RfResult<Value> {
    Ok(json!({
        "Id": "RootService",
        "Name": "Keel Redfish Service",
        "RedfishVersion": "1.22.0",
        "UUID": r.keel.service_uuid,
        "Vendor": "Keel",
        "Product": "Keel",
        "ProtocolFeaturesSupported": {
            "ExcerptQuery": false,
            "ExpandQuery": { "ExpandAll": true, "Levels": true, "Links": true, "NoLinks": true, "MaxLevels": MAX_EXPAND_LEVELS },
            "FilterQuery": true,
            "FilterQueryComparisonOperations": true,
            "FilterQueryCompoundOperations": true,
            "OnlyMemberQuery": true,
            "SelectQuery": true,
            "TopSkipQuery": true,
            "MultipleHTTPRequests": true,
            "DeepOperations": { "DeepPATCH": false, "DeepPOST": false },
        },
        "Systems": link("/redfish/v1/Systems"),
        "Chassis": link("/redfish/v1/Chassis"),
        "Managers": link("/redfish/v1/Managers"),
        "AccountService": link("/redfish/v1/AccountService"),
        "SessionService": link("/redfish/v1/SessionService"),
        "EventService": link("/redfish/v1/EventService"),
        "Registries": link("/redfish/v1/Registries"),
        "JsonSchemas": link("/redfish/v1/JsonSchemas"),
        "UpdateService": link("/redfish/v1/UpdateService"),
        "Tasks": link("/redfish/v1/TaskService"),
        "ComponentIntegrity": link(super::tpm::COLLECTION),
        "Links": { "Sessions": link("/redfish/v1/SessionService/Sessions") },
    }))
}

/// The OData service document: every top-level resource of the service root.
async fn odata(_: Req) -> RfResult<Value> {
    let sets = [
        ("Service", "/redfish/v1"),
        ("Systems", "/redfish/v1/Systems"),
        ("Chassis", "/redfish/v1/Chassis"),
        ("Managers", "/redfish/v1/Managers"),
        ("AccountService", "/redfish/v1/AccountService"),
        ("SessionService", "/redfish/v1/SessionService"),
        ("EventService", "/redfish/v1/EventService"),
        ("Registries", "/redfish/v1/Registries"),
        ("JsonSchemas", "/redfish/v1/JsonSchemas"),
        ("UpdateService", "/redfish/v1/UpdateService"),
        ("Tasks", "/redfish/v1/TaskService"),
        ("ComponentIntegrity", "/redfish/v1/ComponentIntegrity"),
        ("Sessions", "/redfish/v1/SessionService/Sessions"),
    ];
    let value: Vec<Value> = sets
        .iter()
        .map(|(n, u)| json!({ "name": n, "kind": "Singleton", "url": u }))
        .collect();
    Ok(json!({ "@odata.context": "/redfish/v1/$metadata", "value": value }))
}
