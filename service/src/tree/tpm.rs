//! The host's TPM as a ComponentIntegrity resource: its PCR banks, as the TPM reports them now,
//! and signed measurements (TPM2_Quote) by an attestation key whose certificate, issued by
//! keeld's attestation CA, is a Certificate of the TPM's TrustedComponent.

use super::systems::SYSTEM;
use super::{collection, link, Reply, Req, Tree};
use crate::messages::{base, value_arg, Message, RfError, RfResult};
use crate::privilege::{CONFIGURE_MANAGER, LOGIN};
use crate::protocol::body::{Prop, Ty};
use crate::types;
use actix_web::http::StatusCode;
use base64::Engine;
use serde_json::{json, Map, Value};

pub const COLLECTION: &str = "/redfish/v1/ComponentIntegrity";
pub const TPM: &str = "/redfish/v1/ComponentIntegrity/TPM";
pub const QUOTE_ACTION: &str = "ComponentIntegrity.TPMGetSignedMeasurements";
pub const QUOTE_TARGET: &str = "/redfish/v1/ComponentIntegrity/TPM/Actions/ComponentIntegrity.TPMGetSignedMeasurements";
pub const TRUSTED_COMPONENTS: &str = "/redfish/v1/Chassis/chassis/TrustedComponents";
pub const TRUSTED_TPM: &str = "/redfish/v1/Chassis/chassis/TrustedComponents/TPM";
pub const AK_CERT: &str = "/redfish/v1/Chassis/chassis/TrustedComponents/TPM/Certificates/AK";

const CERT_LINK: &[Prop] = &[Prop::required("@odata.id", Ty::Str { min: 1, max: 1024 }, "The AK certificate's URI.")];
const QUOTE: &[Prop] = &[
    Prop::required("Certificate", Ty::Obj(CERT_LINK), "The attestation key's certificate (a link to it)."),
    Prop::new("Nonce", Ty::Str { min: 0, max: 2 * crate::tpm::NONCE_MAX }, "Hex-encoded qualifying data (at most 32 bytes); keeld makes one if absent."),
    Prop::required("PCRSelection", Ty::Str { min: 1, max: 1024 }, "Base64 TPML_PCR_SELECTION of the PCRs to quote."),
    Prop::required("Scheme", Ty::Str { min: 1, max: 64 }, "Base64 TPMT_SIG_SCHEME: TPM_ALG_NULL or ECDSA with SHA-256."),
];

pub fn register(t: &mut Tree) {
    t.add(Tree::route(COLLECTION, "ComponentIntegrityCollection", Some(types::COMPONENT_INTEGRITY_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/ComponentIntegrity/{ComponentIntegrityId}", "ComponentIntegrity", Some(types::COMPONENT_INTEGRITY)).get(LOGIN, member));
    t.add(
        Tree::route(QUOTE_TARGET, "ComponentIntegrity", None).action(QUOTE_ACTION, CONFIGURE_MANAGER, QUOTE, "TPM2_Quote over PCRs with a nonce, signed by the attestation key", quote)
            .post_present(|k| k.tpm.as_ref().is_some_and(|t| t.ak_cert.is_some())),
    );
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/TrustedComponents", "TrustedComponentCollection", Some(types::TRUSTED_COMPONENT_COLLECTION)).get(LOGIN, trusted_list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/TrustedComponents/{TrustedComponentId}", "TrustedComponent", Some(types::TRUSTED_COMPONENT)).get(LOGIN, trusted));
    t.add(
        Tree::route("/redfish/v1/Chassis/{ChassisId}/TrustedComponents/{TrustedComponentId}/Certificates", "CertificateCollection", Some(types::CERTIFICATE_COLLECTION))
            .get(CONFIGURE_MANAGER, certificates),
    );
    t.add(
        Tree::route("/redfish/v1/Chassis/{ChassisId}/TrustedComponents/{TrustedComponentId}/Certificates/{CertificateId}", "Certificate", Some(types::CERTIFICATE))
            .get(CONFIGURE_MANAGER, certificate),
    );
}

fn tpm(r: &Req) -> Option<&crate::tpm::Tpm> {
    r.keel.tpm.as_ref()
}

fn trusted_tpm(r: &Req) -> RfResult<&crate::tpm::Tpm> {
    super::check_chassis(r)?;
    match (tpm(r), r.param(1)) {
        (Some(t), "TPM") => Ok(t),
        _ => Err(RfError::resource_not_found("TrustedComponent", r.param(1))),
    }
}

async fn trusted_list(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    Ok(collection("Trusted Component Collection", tpm(&r).iter().map(|_| TRUSTED_TPM.to_string())))
}

async fn trusted(r: Req) -> RfResult<Value> {
    let t = trusted_tpm(&r)?;
    Ok(json!({
        "Id": "TPM",
        "Name": "Trusted Platform Module",
        "TrustedComponentType": "Discrete",
        "Manufacturer": t.info.manufacturer,
        "FirmwareVersion": t.info.firmware_version,
        "Certificates": link(format!("{TRUSTED_TPM}/Certificates")),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Links": { "ComponentIntegrity": [link(TPM)], "ComponentsProtected": [link(SYSTEM)] },
    }))
}

async fn certificates(r: Req) -> RfResult<Value> {
    let t = trusted_tpm(&r)?;
    Ok(collection("Certificate Collection", t.ak_cert.iter().map(|_| AK_CERT.to_string())))
}

async fn certificate(r: Req) -> RfResult<Value> {
    let t = trusted_tpm(&r)?;
    let pem = match (&t.ak_cert, r.param(2)) {
        (Some(p), "AK") => p,
        _ => return Err(RfError::resource_not_found("Certificate", r.param(2))),
    };
    let x = openssl::x509::X509::from_pem(pem.as_bytes()).map_err(RfError::internal)?;
    let c = crate::inventory::secureboot::parse_cert(String::new(), &x.to_der().map_err(RfError::internal)?).map_err(RfError::internal)?;
    let mut v = super::secureboot::cert_json("AK", &c);
    if let Some(m) = v.as_object_mut() {
        m.remove("UefiSignatureOwner");
    }
    v["Name"] = json!("TPM attestation key certificate");
    v["Description"] = json!("The attestation key that signs TPMGetSignedMeasurements, certified by the Keel attestation CA");
    v["KeyUsage"] = json!(["DigitalSignature"]);
    v["CertificateUsageTypes"] = json!(["Device"]);
    Ok(v)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn bad(def: &'static crate::messages::MessageDef, v: &Value, param: &str) -> RfError {
    RfError::new(StatusCode::BAD_REQUEST, Message::base(def, &[&value_arg(v), param, QUOTE_ACTION]).related(param))
}

async fn quote(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let t = match tpm(&r) {
        Some(t) if t.ak_cert.is_some() => t.clone(),
        _ => return Err(RfError::not_found(&r.path)),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let cert = &b["Certificate"];
    if cert["@odata.id"].as_str().map(|s| s.trim_end_matches('/')) != Some(AK_CERT) {
        return Err(bad(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, &cert["@odata.id"], "Certificate"));
    }
    let nonce = match b.get("Nonce") {
        Some(v) => {
            let s = v.as_str().unwrap_or_default();
            match hex_decode(s) {
                Some(n) if n.len() <= crate::tpm::NONCE_MAX => n,
                _ => return Err(bad(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, v, "Nonce")),
            }
        }
        None => uuid::Uuid::new_v4().as_bytes().to_vec(),
    };
    let sel_v = &b["PCRSelection"];
    let selection = match b64.decode(sel_v.as_str().unwrap_or_default()).ok().and_then(|x| crate::tpm::parse_pcr_selection(&x)) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(bad(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, sel_v, "PCRSelection")),
    };
    for (alg, pcrs) in &selection {
        let known = crate::tpm::hash_alg(*alg).map(crate::tpm::alg_name);
        let allocated = |p: &u32| t.info.pcrs.iter().any(|x| Some(&x.algorithm) == known.as_ref() && x.index == *p);
        if known.is_none() || !pcrs.iter().all(allocated) {
            return Err(bad(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, sel_v, "PCRSelection"));
        }
    }
    let scheme_v = &b["Scheme"];
    let scheme = match b64.decode(scheme_v.as_str().unwrap_or_default()).map_err(|_| ()).and_then(|x| crate::tpm::parse_scheme(&x)) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(bad(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, scheme_v, "Scheme")),
        Err(()) => return Err(bad(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, scheme_v, "Scheme")),
    };
    let tcti = t.tcti.clone();
    let signed = tokio::task::spawn_blocking(move || crate::tpm::quote(&tcti, &nonce, &selection, scheme))
        .await
        .map_err(RfError::internal)?
        .map_err(RfError::internal)?;
    log::info!("TPM quote over PCRSelection {} requested by {}", sel_v.as_str().unwrap_or_default(), r.principal().user);
    Ok(Reply::ok(json!({ "SignedMeasurements": b64.encode(signed) })))
}

/// The ComputerSystem's `TrustedModules`: one entry per TPM keeld reaches.
pub fn trusted_modules(r: &Req) -> Option<Value> {
    let t = r.keel.tpm.as_ref()?;
    Some(json!([{
        "InterfaceType": "TPM2_0",
        "FirmwareVersion": t.info.firmware_version,
        "Status": { "State": "Enabled", "Health": "OK" },
    }]))
}

async fn list(r: Req) -> RfResult<Value> {
    Ok(collection("Component Integrity Collection", r.keel.tpm.iter().map(|_| TPM.to_string())))
}

async fn member(r: Req) -> RfResult<Value> {
    let tpm = match (&r.keel.tpm, r.param(0)) {
        (Some(t), "TPM") => t.clone(),
        _ => return Err(RfError::resource_not_found("ComponentIntegrity", r.param(0))),
    };
    let now = tpm.clone();
    // The PCRs as they are now; the start-up reading if the TPM does not answer.
    let (info, health) = match tokio::task::spawn_blocking(move || now.read_now()).await {
        Ok(Ok(i)) => (i, "OK"),
        Ok(Err(e)) => {
            log::warn!("{e}");
            (tpm.info.clone(), "Warning")
        }
        Err(_) => (tpm.info.clone(), "Warning"),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let measurements: Vec<Value> = info
        .pcrs
        .iter()
        .map(|p| json!({ "PCR": p.index, "MeasurementHashAlgorithm": p.algorithm, "Measurement": b64.encode(&p.digest) }))
        .collect();
    let mut v = json!({
        "Id": "TPM",
        "Name": "Trusted Platform Module",
        "Description": format!("TPM 2.0 ({}) of the host", info.manufacturer),
        "ComponentIntegrityType": "TPM",
        "ComponentIntegrityTypeVersion": "2.0",
        "ComponentIntegrityEnabled": true,
        "TargetComponentURI": TRUSTED_TPM,
        "Status": { "State": "Enabled", "Health": health },
        "TPM": { "MeasurementSet": { "Measurements": measurements } },
        "Links": { "ComponentsProtected": [link(SYSTEM)] },
    });
    if tpm.ak_cert.is_some() {
        v["TPM"]["NonceSizeBytesMaximum"] = json!(crate::tpm::NONCE_MAX);
        v["TPM"]["IdentityAuthentication"] = json!({ "ComponentCertificate": link(AK_CERT) });
        v["Actions"] = json!({ format!("#{QUOTE_ACTION}"): { "target": QUOTE_TARGET, "title": "TPMGetSignedMeasurements" } });
    }
    Ok(v)
}
