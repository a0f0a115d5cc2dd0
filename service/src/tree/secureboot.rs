//! UEFI Secure Boot of the system (read-only): state, key databases, their certificates and hashes.

use super::systems::SYSTEM;
use super::{collection, link, Req, Tree};
use crate::inventory::secureboot::{Cert, Database, Name, SecureBoot};
use crate::inventory::Inventory;
use crate::messages::{RfError, RfResult};
use crate::privilege::{CONFIGURE_COMPONENTS, LOGIN};
use crate::types;
use serde_json::{json, Map, Value};
use std::sync::Arc;

const BASE: &str = "/redfish/v1/Systems/{ComputerSystemId}/SecureBoot";

pub fn register(t: &mut Tree) {
    t.add(Tree::route(BASE, "SecureBoot", Some(types::SECURE_BOOT)).get(LOGIN, secure_boot));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases", "SecureBootDatabaseCollection", Some(types::SECURE_BOOT_DATABASE_COLLECTION)).get(LOGIN, databases));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases/{DatabaseId}", "SecureBootDatabase", Some(types::SECURE_BOOT_DATABASE)).get(LOGIN, database));
    // Certificates below a ComputerSystem: the registry's SubordinateOverride asks ConfigureComponents.
    t.add(
        Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases/{DatabaseId}/Certificates", "CertificateCollection", Some(types::CERTIFICATE_COLLECTION))
            .get(CONFIGURE_COMPONENTS, certificates),
    );
    t.add(
        Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases/{DatabaseId}/Certificates/{CertificateId}", "Certificate", Some(types::CERTIFICATE))
            .get(CONFIGURE_COMPONENTS, certificate),
    );
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases/{DatabaseId}/Signatures", "SignatureCollection", Some(types::SIGNATURE_COLLECTION)).get(LOGIN, signatures));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/SecureBoot/SecureBootDatabases/{DatabaseId}/Signatures/{SignatureId}", "Signature", Some(types::SIGNATURE)).get(LOGIN, signature));
}

pub fn uri() -> String {
    format!("{SYSTEM}/SecureBoot")
}

/// The inventory, when this system has Secure Boot to show.
fn state(r: &Req) -> RfResult<Arc<Inventory>> {
    if r.param(0) != "system" {
        return Err(RfError::resource_not_found("ComputerSystem", r.param(0)));
    }
    let inv = r.keel.inventory();
    if inv.secure_boot.is_none() {
        return Err(RfError::resource_not_found("SecureBoot", "SecureBoot"));
    }
    Ok(inv)
}

fn sb(inv: &Inventory) -> &SecureBoot {
    inv.secure_boot.as_ref().expect("checked by state()")
}

fn db<'a>(r: &Req, inv: &'a Inventory) -> RfResult<&'a Database> {
    sb(inv).databases.iter().find(|d| d.id == r.param(1)).ok_or_else(|| RfError::resource_not_found("SecureBootDatabase", r.param(1)))
}

fn db_uri(id: &str) -> String {
    format!("{SYSTEM}/SecureBoot/SecureBootDatabases/{id}")
}

/// Members are numbered from 1 in the order the variable lists them.
fn index<T>(items: &[T], id: &str, kind: &str) -> RfResult<usize> {
    id.parse::<usize>().ok().filter(|i| *i >= 1 && *i <= items.len() && id == i.to_string()).map(|i| i - 1).ok_or_else(|| RfError::resource_not_found(kind, id))
}

async fn secure_boot(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let s = sb(&inv);
    let mut v = json!({
        "Id": "SecureBoot",
        "Name": "UEFI Secure Boot",
        "Description": "UEFI Secure Boot as the firmware reports it (read-only)",
        "SecureBootDatabases": link(format!("{SYSTEM}/SecureBoot/SecureBootDatabases")),
    });
    if let Some(e) = s.enabled {
        v["SecureBootEnable"] = json!(e);
        v["SecureBootCurrentBoot"] = json!(if e { "Enabled" } else { "Disabled" });
    }
    if let Some(m) = s.mode() {
        v["SecureBootMode"] = json!(m);
    }
    Ok(v)
}

async fn databases(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    Ok(collection("UEFI Secure Boot Database Collection", sb(&inv).databases.iter().map(|d| db_uri(d.id))))
}

fn description(id: &str) -> &'static str {
    match id {
        "PK" => "UEFI Platform Key database",
        "KEK" => "UEFI Key Exchange Key database",
        "db" => "UEFI Secure Boot allowed signature database",
        "dbx" => "UEFI Secure Boot forbidden signature database",
        _ => "UEFI Secure Boot database",
    }
}

async fn database(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let d = db(&r, &inv)?;
    Ok(json!({
        "Id": d.id,
        "Name": format!("{} Database", d.id),
        "Description": description(d.id),
        "DatabaseId": d.id,
        "Certificates": link(format!("{}/Certificates", db_uri(d.id))),
        "Signatures": link(format!("{}/Signatures", db_uri(d.id))),
    }))
}

async fn certificates(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let d = db(&r, &inv)?;
    Ok(collection("Certificate Collection", (1..=d.certificates.len()).map(|i| format!("{}/Certificates/{i}", db_uri(d.id)))))
}

fn identifier(n: &Name) -> Value {
    let mut m = Map::new();
    for (k, v) in [
        ("CommonName", &n.common_name),
        ("Organization", &n.organization),
        ("OrganizationalUnit", &n.organizational_unit),
        ("City", &n.city),
        ("State", &n.state),
        ("Country", &n.country),
        ("Email", &n.email),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("DisplayString".into(), json!(n.display));
    Value::Object(m)
}

pub(super) fn cert_json(id: &str, c: &Cert) -> Value {
    let mut v = json!({
        "Id": id,
        "Name": c.subject.common_name.clone().unwrap_or_else(|| format!("Certificate {id}")),
        "CertificateString": c.pem,
        "CertificateType": "PEM",
        "Subject": identifier(&c.subject),
        "Issuer": identifier(&c.issuer),
        "SerialNumber": c.serial,
        "Fingerprint": c.fingerprint,
        "FingerprintHashAlgorithm": "TPM_ALG_SHA256",
        "UefiSignatureOwner": c.owner,
    });
    if let Some(t) = &c.not_before {
        v["ValidNotBefore"] = json!(t);
    }
    if let Some(t) = &c.not_after {
        v["ValidNotAfter"] = json!(t);
    }
    if let Some(a) = &c.signature_algorithm {
        v["SignatureAlgorithm"] = json!(a);
    }
    v
}

async fn certificate(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let d = db(&r, &inv)?;
    let i = index(&d.certificates, r.param(2), "Certificate")?;
    Ok(cert_json(r.param(2), &d.certificates[i]))
}

async fn signatures(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let d = db(&r, &inv)?;
    Ok(collection("Signature Collection", (1..=d.signatures.len()).map(|i| format!("{}/Signatures/{i}", db_uri(d.id)))))
}

async fn signature(r: Req) -> RfResult<Value> {
    let inv = state(&r)?;
    let d = db(&r, &inv)?;
    let id = r.param(2);
    let s = &d.signatures[index(&d.signatures, id, "Signature")?];
    Ok(json!({
        "Id": id,
        "Name": format!("Signature {id}"),
        "SignatureString": s.data,
        "SignatureTypeRegistry": "UEFI",
        "SignatureType": s.kind,
        "UefiSignatureOwner": s.owner,
    }))
}
