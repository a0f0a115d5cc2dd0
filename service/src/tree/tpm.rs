//! The host's TPM as a ComponentIntegrity resource: its PCR banks, as the TPM reports them now.

use super::systems::SYSTEM;
use super::{collection, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use base64::Engine;
use serde_json::{json, Value};

pub const COLLECTION: &str = "/redfish/v1/ComponentIntegrity";
pub const TPM: &str = "/redfish/v1/ComponentIntegrity/TPM";

pub fn register(t: &mut Tree) {
    t.add(Tree::route(COLLECTION, "ComponentIntegrityCollection", Some(types::COMPONENT_INTEGRITY_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/ComponentIntegrity/{ComponentIntegrityId}", "ComponentIntegrity", Some(types::COMPONENT_INTEGRITY)).get(LOGIN, member));
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
    let tcti = tpm.tcti.clone();
    // The PCRs as they are now; the start-up reading if the TPM does not answer.
    let (info, health) = match tokio::task::spawn_blocking(move || crate::tpm::read(&tcti)).await {
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
    Ok(json!({
        "Id": "TPM",
        "Name": "Trusted Platform Module",
        "Description": format!("TPM 2.0 ({}) of the host", info.manufacturer),
        "ComponentIntegrityType": "TPM",
        "ComponentIntegrityTypeVersion": "2.0",
        "ComponentIntegrityEnabled": true,
        "TargetComponentURI": SYSTEM,
        "Status": { "State": "Enabled", "Health": health },
        "TPM": { "MeasurementSet": { "Measurements": measurements } },
        "Links": { "ComponentsProtected": [super::link(SYSTEM)] },
    }))
}
