//! LogServices of the system: the systemd journal, read-only (newest first, paged, `$filter` by
//! Severity and Created). No ClearLog: the journal is the host's record, not keeld's to wipe.

use super::{collection, link, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

const LS: &str = "/redfish/v1/Systems/system/LogServices";

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/LogServices", "LogServiceCollection", Some(types::LOG_SERVICE_COLLECTION)).get(LOGIN, services));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/LogServices/{LogServiceId}", "LogService", Some(types::LOG_SERVICE)).get(LOGIN, service));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/LogServices/{LogServiceId}/Entries", "LogEntryCollection", Some(types::LOG_ENTRY_COLLECTION)).get(LOGIN, entries));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/LogServices/{LogServiceId}/Entries/{LogEntryId}", "LogEntry", Some(types::LOG_ENTRY)).get(LOGIN, entry));
}

fn check(r: &Req, with_service: bool) -> RfResult<()> {
    super::check_system(r)?;
    if with_service && r.param(1) != "Journal" {
        return Err(RfError::resource_not_found("LogService", r.param(1)));
    }
    Ok(())
}

async fn services(r: Req) -> RfResult<Value> {
    check(&r, false)?;
    Ok(collection("Log Services", [format!("{LS}/Journal")]))
}

async fn service(r: Req) -> RfResult<Value> {
    check(&r, true)?;
    Ok(json!({
        "Id": "Journal",
        "Name": "System journal",
        "Description": "The newest entries of the host's systemd journal",
        "ServiceEnabled": true,
        "MaxNumberOfRecords": crate::inventory::journal::MAX_ENTRIES,
        "OverWritePolicy": "WrapsWhenFull",
        "LogEntryType": "OEM",
        "DateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "DateTimeLocalOffset": "+00:00",
        "Entries": link(format!("{LS}/Journal/Entries")),
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

/// LogEntryCollection members are auto-expanded (OData.AutoExpand in its CSDL): whole entries.
async fn entries(r: Req) -> RfResult<Value> {
    check(&r, true)?;
    let e = r.keel.journal.entries(&r.keel.host);
    let members: Vec<Value> = e.iter().map(entry_json).collect();
    Ok(json!({ "Name": "Journal Entries", "Members@odata.count": members.len(), "Members": members }))
}

async fn entry(r: Req) -> RfResult<Value> {
    check(&r, true)?;
    let all = r.keel.journal.entries(&r.keel.host);
    let id = r.param(2);
    let e = all.iter().find(|e| e.id == id).ok_or_else(|| RfError::resource_not_found("LogEntry", id))?;
    Ok(entry_json(e))
}

fn entry_json(e: &crate::inventory::journal::Entry) -> Value {
    let mut v = json!({
        "@odata.id": format!("{LS}/Journal/Entries/{}", e.id),
        "@odata.type": types::LOG_ENTRY.odata_type(),
        "Id": e.id,
        "Name": e.source.clone().unwrap_or_else(|| "Journal entry".into()),
        "EntryType": "Oem",
        "OemRecordFormat": "systemd-journal",
        "Severity": e.severity,
        "Message": e.message,
        "Created": e.created,
    });
    if let Some(s) = &e.source {
        v["Description"] = json!(format!("From {s}, syslog priority {}", e.priority));
    }
    v
}
