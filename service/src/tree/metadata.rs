//! `$metadata`, the JsonSchemas collection, Keel's OEM schema files and the OpenAPI document.

use super::{collection, Reply, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::{Requirement::NoAuth, LOGIN};
use crate::types::{self, RfType, KEEL_OEM_SCHEMAS};
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// Keel's own OEM schemas, as committed in `schemas/`.
pub const OEM_FILES: &[(&str, &str, &str)] = &[
    ("KeelManager_v1.xml", "application/xml", include_str!("../../../schemas/KeelManager_v1.xml")),
    ("KeelManager.v1_0_0.json", "application/json", include_str!("../../../schemas/KeelManager.v1_0_0.json")),
    ("KeelComputerSystem_v1.xml", "application/xml", include_str!("../../../schemas/KeelComputerSystem_v1.xml")),
    ("KeelComputerSystem.v1_0_0.json", "application/json", include_str!("../../../schemas/KeelComputerSystem.v1_0_0.json")),
    ("KeelVolume_v1.xml", "application/xml", include_str!("../../../schemas/KeelVolume_v1.xml")),
    ("KeelVolume.v1_0_0.json", "application/json", include_str!("../../../schemas/KeelVolume.v1_0_0.json")),
    ("KeelUpdateService_v1.xml", "application/xml", include_str!("../../../schemas/KeelUpdateService_v1.xml")),
    ("KeelUpdateService.v1_0_0.json", "application/json", include_str!("../../../schemas/KeelUpdateService.v1_0_0.json")),
];

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/$metadata", "ServiceRoot", None).get_raw(NoAuth, "application/xml", metadata));
    t.add(Tree::route("/redfish/v1/openapi.yaml", "ServiceRoot", None).get_raw(NoAuth, "application/yaml", openapi));
    t.add(Tree::route("/redfish/v1/schema/{File}", "JsonSchemaFile", None).get_raw(NoAuth, "application/octet-stream", oem_file));
    t.add(Tree::route("/redfish/v1/JsonSchemas", "JsonSchemaFileCollection", Some(types::JSON_SCHEMA_FILE_COLLECTION)).get(LOGIN, schemas));
    t.add(Tree::route("/redfish/v1/JsonSchemas/{SchemaId}", "JsonSchemaFile", Some(types::JSON_SCHEMA_FILE)).get(LOGIN, schema));
}

/// Namespaces `$metadata` references besides the resource types: those their properties use.
const SUPPORT: &[(&str, &[&str])] = &[
    ("Resource", &["Resource", "Resource.v1_0_0"]),
    ("RedfishExtensions", &["RedfishExtensions.v1_0_0"]),
    ("Message", &["Message", "Message.v1_3_0"]),
    ("Privileges", &["Privileges", "Privileges.v1_0_0"]),
    // OperationApplyTimeSupport and MaintenanceWindow annotations (UpdateService).
    ("Settings", &["Settings", "Settings.v1_4_0"]),
];

pub fn metadata_xml() -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n");
    let mut reference = |uri: String, namespaces: Vec<String>| {
        x.push_str(&format!("  <edmx:Reference Uri=\"{uri}\">\n"));
        for n in namespaces {
            x.push_str(&format!("    <edmx:Include Namespace=\"{n}\"/>\n"));
        }
        x.push_str("  </edmx:Reference>\n");
    };
    for t in types::ALL {
        let mut ns = vec![t.name.to_string()];
        if let Some(v) = t.version {
            ns.push(format!("{}.{}", t.name, v));
        }
        reference(format!("http://redfish.dmtf.org/schemas/v1/{}_v1.xml", t.name), ns);
    }
    for (file, ns) in SUPPORT {
        reference(format!("http://redfish.dmtf.org/schemas/v1/{file}_v1.xml"), ns.iter().map(|s| s.to_string()).collect());
    }
    for (ns, version, _) in KEEL_OEM_SCHEMAS {
        reference(format!("/redfish/v1/schema/{ns}_v1.xml"), vec![ns.to_string(), format!("{ns}.{version}")]);
    }
    x.push_str(&format!(
        "  <edmx:DataServices>\n    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.{}.ServiceContainer\"/>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n",
        types::SERVICE_ROOT.version.unwrap()
    ));
    x
}

async fn metadata(_: Req) -> RfResult<Reply> {
    Ok(Reply::Raw(HttpResponse::Ok().content_type("application/xml").body(metadata_xml())))
}

async fn openapi(r: Req) -> RfResult<Reply> {
    let _ = r;
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| crate::openapi::yaml(super::global()));
    Ok(Reply::Raw(HttpResponse::Ok().content_type("application/yaml").body(doc.as_str())))
}

async fn oem_file(r: Req) -> RfResult<Reply> {
    let name = r.param(0);
    let (_, ct, body) = OEM_FILES.iter().find(|(n, _, _)| *n == name).ok_or_else(|| RfError::not_found(&r.path))?;
    Ok(Reply::Raw(HttpResponse::Ok().content_type(*ct).body(*body)))
}

async fn schemas(_: Req) -> RfResult<Value> {
    let mut names: Vec<String> = types::ALL.iter().map(|t| t.name.to_string()).collect();
    names.extend(KEEL_OEM_SCHEMAS.iter().map(|(ns, ..)| ns.to_string()));
    Ok(collection("JSON Schema Files", names.into_iter().map(|n| format!("/redfish/v1/JsonSchemas/{n}"))))
}

/// A JsonSchemaFile: a DMTF type, or one of Keel's OEM schemas (namespace, version, type).
fn schema_file(id: &str, t: Result<RfType, (&str, &str, &str)>) -> Value {
    let (schema, location) = match t {
        Ok(t) => (t.odata_type(), json!({ "Language": "en", "PublicationUri": t.json_schema_uri() })),
        Err((ns, version, entity)) => (
            format!("#{ns}.{version}.{entity}"),
            json!({ "Language": "en", "Uri": format!("/redfish/v1/schema/{ns}.{version}.json") }),
        ),
    };
    json!({
        "Id": id,
        "Name": format!("{id} Schema File"),
        "Description": format!("The JSON Schema of {id}"),
        "Languages": ["en"],
        "Schema": schema,
        "Location": [location],
        "Location@odata.count": 1,
    })
}

async fn schema(r: Req) -> RfResult<Value> {
    let id = r.param(0);
    if let Some(oem) = KEEL_OEM_SCHEMAS.iter().find(|(ns, ..)| *ns == id) {
        return Ok(schema_file(id, Err(*oem)));
    }
    let t = types::by_name(id).ok_or_else(|| RfError::resource_not_found("JsonSchemaFile", id))?;
    Ok(schema_file(id, Ok(t)))
}

