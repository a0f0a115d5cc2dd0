//! The host's TPM 2.0 through tss-esapi, reached by a TCTI (`--tpm-tcti`, default the kernel's
//! resource manager `/dev/tpmrm0` when present). Every call opens its own context in a blocking
//! thread; a TPM that is absent or fails only hides the TPM resources.

use serde::Serialize;
use std::str::FromStr;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::CapabilityData;
use tss_esapi::{Context, TctiNameConf};

/// The TCTI keeld uses: the option, else the kernel resource manager on a live machine.
pub fn default_tcti(option: Option<String>, live: bool) -> Option<String> {
    option.or_else(|| (live && std::path::Path::new("/dev/tpmrm0").exists()).then(|| "device:/dev/tpmrm0".to_string()))
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Pcr {
    pub index: u32,
    /// `TPM_ALG_SHA256` etc.
    pub algorithm: String,
    pub digest: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TpmInfo {
    /// The TPM_PT_MANUFACTURER vendor ID, as its four ASCII characters.
    pub manufacturer: String,
    /// TPM_PT_FIRMWARE_VERSION_1/2 as four 16-bit fields.
    pub firmware_version: String,
    pub pcrs: Vec<Pcr>,
}

pub fn alg_name(a: HashingAlgorithm) -> String {
    match a {
        HashingAlgorithm::Sha1 => "TPM_ALG_SHA1".into(),
        HashingAlgorithm::Sha256 => "TPM_ALG_SHA256".into(),
        HashingAlgorithm::Sha384 => "TPM_ALG_SHA384".into(),
        HashingAlgorithm::Sha512 => "TPM_ALG_SHA512".into(),
        HashingAlgorithm::Sm3_256 => "TPM_ALG_SM3_256".into(),
        other => format!("TPM_ALG_{}", format!("{other:?}").to_ascii_uppercase()),
    }
}

pub fn open(tcti: &str) -> Result<Context, String> {
    let conf = TctiNameConf::from_str(tcti).map_err(|e| format!("TCTI {tcti}: {e}"))?;
    Context::new(conf).map_err(|e| format!("TPM at {tcti}: {e}"))
}

fn ascii4(v: u32) -> String {
    v.to_be_bytes().iter().filter(|b| b.is_ascii_graphic()).map(|b| *b as char).collect()
}

/// Properties and every allocated PCR of the TPM.
pub fn read(tcti: &str) -> Result<TpmInfo, String> {
    let mut ctx = open(tcti)?;
    let err = |e: tss_esapi::Error| format!("TPM at {tcti}: {e}");
    let manufacturer = ctx.get_tpm_property(PropertyTag::Manufacturer).map_err(err)?.map(ascii4).unwrap_or_default();
    let fw1 = ctx.get_tpm_property(PropertyTag::FirmwareVersion1).map_err(err)?.unwrap_or(0);
    let fw2 = ctx.get_tpm_property(PropertyTag::FirmwareVersion2).map_err(err)?.unwrap_or(0);
    let firmware_version = format!("{}.{}.{}.{}", fw1 >> 16, fw1 & 0xffff, fw2 >> 16, fw2 & 0xffff);
    let (cap, _) = ctx.get_capability(CapabilityType::AssignedPcr, 0, 1).map_err(err)?;
    let mut pcrs = vec![];
    if let CapabilityData::AssignedPcr(sel) = cap {
        let sel_nonempty = sel.get_selections().iter().any(|s| !s.selected().is_empty());
        if sel_nonempty {
            let data = tss_esapi::abstraction::pcr::read_all(&mut ctx, sel).map_err(err)?;
            for (alg, bank) in data {
                for (slot, digest) in &bank {
                    pcrs.push(Pcr { index: u32::from(*slot).trailing_zeros(), algorithm: alg_name(alg), digest: digest.value().to_vec() });
                }
            }
        }
    }
    Ok(TpmInfo { manufacturer, firmware_version, pcrs })
}

/// The TPM keeld found at start: where it is and what it said then.
#[derive(Clone, Debug)]
pub struct Tpm {
    pub tcti: String,
    pub info: TpmInfo,
}

impl Tpm {
    /// Probe the TPM at `tcti`; `None` (logged) when it does not answer.
    pub fn probe(tcti: Option<String>) -> Option<Tpm> {
        let tcti = tcti?;
        match read(&tcti) {
            Ok(info) => {
                log::info!("TPM {} firmware {} at {tcti}", info.manufacturer, info.firmware_version);
                Some(Tpm { tcti, info })
            }
            Err(e) => {
                log::warn!("no TPM: {e}");
                None
            }
        }
    }
}
