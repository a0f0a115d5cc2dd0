//! The host's TPM 2.0 through tss-esapi, reached by a TCTI (`--tpm-tcti`, default the kernel's
//! resource manager `/dev/tpmrm0` when present). Every call opens its own context in a blocking
//! thread; a TPM that is absent or fails only hides the TPM resources.

use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::CapabilityData;
use tss_esapi::{Context, TctiNameConf};

/// The TCTI keeld uses: the option, else the kernel resource manager on a live machine.
pub fn default_tcti(option: Option<String>, live: bool) -> Option<String> {
    option.or_else(|| (live && std::path::Path::new("/dev/tpmrm0").exists()).then(|| "device:/dev/tpmrm0".to_string()))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pcr {
    pub index: u32,
    /// `TPM_ALG_SHA256` etc.
    pub algorithm: String,
    pub digest: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
    /// The AK certificate (PEM) and the attestation CA certificate (PEM), when the AK could be made.
    pub ak_cert: Option<String>,
    pub ca_cert: Option<String>,
}

/// Where `keeld host record` keeps what the machine's TPM answered (inside the fixture).
pub const RECORDED_FILE: &str = ".keel-tpm.json";
/// The `tcti` of a TPM replayed from a recording: nothing to open, no attestation key.
pub const RECORDED_TCTI: &str = "recorded";

impl Tpm {
    /// The TPM a recorded machine had (`RECORDED_FILE` in the fixture), served read-only: its
    /// properties and PCRs as recorded, no attestation key and so no quote.
    pub fn recorded(host: &crate::host::Host) -> Option<Tpm> {
        let data = host.read_bytes(RECORDED_FILE).ok()?;
        match serde_json::from_slice::<TpmInfo>(&data) {
            Ok(info) => Some(Tpm { tcti: RECORDED_TCTI.into(), info, ak_cert: None, ca_cert: None }),
            Err(e) => {
                log::warn!("recorded TPM {RECORDED_FILE}: {e}");
                None
            }
        }
    }

    /// Replayed from a recording: it can be shown, not used (no key can be sealed to it).
    pub fn is_recorded(&self) -> bool {
        self.tcti == RECORDED_TCTI
    }

    /// What the TPM reports now (a recorded TPM: what it reported then).
    pub fn read_now(&self) -> Result<TpmInfo, String> {
        if self.is_recorded() {
            return Ok(self.info.clone());
        }
        read(&self.tcti)
    }

    /// Probe the TPM at `tcti`; `None` (logged) when it does not answer.
    /// The attestation CA is kept at `ca_path`.
    pub fn probe(tcti: Option<String>, ca_path: &std::path::Path) -> Option<Tpm> {
        let tcti = tcti?;
        match read(&tcti) {
            Ok(info) => {
                log::info!("TPM {} firmware {} at {tcti}", info.manufacturer, info.firmware_version);
                let (ak_cert, ca_cert) = match ak_certificate(&tcti, ca_path, &info)
                    .and_then(|c| Ok((c.to_pem().map_err(|e| e.to_string())?, attestation_ca(ca_path)?.1.to_pem().map_err(|e| e.to_string())?)))
                {
                    Ok((c, ca)) => (Some(String::from_utf8_lossy(&c).into_owned()), Some(String::from_utf8_lossy(&ca).into_owned())),
                    Err(e) => {
                        log::warn!("no TPM attestation: {e}");
                        (None, None)
                    }
                };
                Some(Tpm { tcti, info, ak_cert, ca_cert })
            }
            Err(e) => {
                log::warn!("no TPM: {e}");
                None
            }
        }
    }
}

// ---- attestation: the AK, its certificate and TPM2_Quote ----

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{EccSchemeAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Data, EccPoint, EccScheme, KeyDerivationFunctionScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Public,
    PublicBuilder, PublicEccParametersBuilder, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;

/// The largest nonce TPM2_Quote takes as qualifying data (TPM2B_DATA of a SHA-256 TPM).
pub const NONCE_MAX: usize = 32;

/// The attestation key: a restricted ECC P-256 ECDSA-SHA256 signing key, primary under the owner
/// hierarchy. A primary key is derived from the hierarchy seed and this template, so every
/// creation gives the same key until the owner seed changes: no handle needs persisting.
fn ak_template() -> Result<Public, tss_esapi::Error> {
    let attrs = ObjectAttributesBuilder::new()
        .with_restricted(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_ecc_scheme(EccScheme::create(EccSchemeAlgorithm::EcDsa, Some(HashingAlgorithm::Sha256), None)?)
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_signing_key(true)
                .with_is_decryption_key(false)
                .with_restricted(true)
                .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

fn load_ak(ctx: &mut Context) -> Result<(KeyHandle, Public), tss_esapi::Error> {
    let template = ak_template()?;
    let r = ctx.execute_with_nullauth_session(|c| c.create_primary(Hierarchy::Owner, template, None, None, None, None))?;
    Ok((r.key_handle, r.out_public))
}

/// The AK's public key, as an OpenSSL key.
pub fn ak_public(tcti: &str) -> Result<PKey<openssl::pkey::Public>, String> {
    let mut ctx = open(tcti)?;
    let err = |e: tss_esapi::Error| format!("TPM attestation key: {e}");
    let (handle, public) = load_ak(&mut ctx).map_err(err)?;
    let _ = ctx.flush_context(handle.into());
    let Public::Ecc { unique, .. } = public else { return Err("TPM attestation key: not an ECC key".into()) };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
    let x = BigNum::from_slice(unique.x().value()).map_err(|e| e.to_string())?;
    let y = BigNum::from_slice(unique.y().value()).map_err(|e| e.to_string())?;
    let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(|e| e.to_string())?;
    PKey::from_ec_key(ec).map_err(|e| e.to_string())
}

/// A PCR selection (TPML_PCR_SELECTION) as its banks and PCR numbers.
pub type Selection = Vec<(u16, Vec<u32>)>;

/// Parse a marshalled TPML_PCR_SELECTION; `None` when it is not one.
pub fn parse_pcr_selection(b: &[u8]) -> Option<Selection> {
    let count = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    if count > 16 {
        return None;
    }
    let mut at = 4;
    let mut out = vec![];
    for _ in 0..count {
        let alg = u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?);
        let size = *b.get(at + 2)? as usize;
        if !(3..=4).contains(&size) {
            return None;
        }
        let bits = b.get(at + 3..at + 3 + size)?;
        at += 3 + size;
        let pcrs = (0..size * 8).filter(|i| bits[i / 8] & (1 << (i % 8)) != 0).map(|i| i as u32).collect();
        out.push((alg, pcrs));
    }
    (at == b.len()).then_some(out)
}

/// The signing scheme a TPMT_SIG_SCHEME names, if it is one the AK signs with: TPM_ALG_NULL (the
/// key's own scheme) or ECDSA with SHA-256. `Err(())` when the bytes are not a TPMT_SIG_SCHEME.
pub fn parse_scheme(b: &[u8]) -> Result<Option<SignatureScheme>, ()> {
    let alg = u16::from_be_bytes(b.get(0..2).ok_or(())?.try_into().map_err(|_| ())?);
    match (alg, b.len()) {
        (0x0010, 2) => Ok(Some(SignatureScheme::Null)),
        (_, 4) => {
            let hash = u16::from_be_bytes(b[2..4].try_into().map_err(|_| ())?);
            Ok((alg == 0x0018 && hash == 0x000b).then_some(SignatureScheme::EcDsa { hash_scheme: tss_esapi::structures::HashScheme::new(HashingAlgorithm::Sha256) }))
        }
        _ => Err(()),
    }
}

/// The hashing algorithm of a TPM_ALG_ID, when it is one.
pub fn hash_alg(id: u16) -> Option<HashingAlgorithm> {
    HashingAlgorithm::try_from(id).ok().filter(|a| !matches!(a, HashingAlgorithm::Null))
}

/// TPM2_Quote: the marshalled TPMS_ATTEST followed by the marshalled TPMT_SIGNATURE.
pub fn quote(tcti: &str, nonce: &[u8], selection: &Selection, scheme: SignatureScheme) -> Result<Vec<u8>, String> {
    let err = |e: tss_esapi::Error| format!("TPM2_Quote: {e}");
    let mut list: PcrSelectionListBuilder = PcrSelectionList::builder();
    for (alg, pcrs) in selection {
        let a = hash_alg(*alg).ok_or("unknown bank")?;
        let slots: Vec<PcrSlot> = pcrs.iter().map(|i| PcrSlot::try_from(1u32 << i).map_err(err)).collect::<Result<_, _>>()?;
        list = list.with_selection(a, &slots);
    }
    let list = list.build().map_err(err)?;
    let mut ctx = open(tcti)?;
    let (handle, _) = load_ak(&mut ctx).map_err(err)?;
    let data = Data::try_from(nonce.to_vec()).map_err(err);
    let res = data.and_then(|d| ctx.execute_with_nullauth_session(|c| c.quote(handle, d, scheme, list)).map_err(err));
    let _ = ctx.flush_context(handle.into());
    let (attest, sig) = res?;
    let mut out = attest.marshall().map_err(err)?;
    out.extend(sig.marshall().map_err(err)?);
    Ok(out)
}

/// The Keel attestation CA: its key and self-signed certificate, kept in `path` (PEM key then
/// PEM certificate, mode 0600), made on first use.
pub fn attestation_ca(path: &std::path::Path) -> Result<(PKey<Private>, X509), String> {
    let e = |e: openssl::error::ErrorStack| format!("attestation CA: {e}");
    if let Ok(pem) = std::fs::read(path) {
        let key = PKey::private_key_from_pem(&pem).map_err(e)?;
        let cert = X509::from_pem(&pem).map_err(e)?;
        return Ok((key, cert));
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?;
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Keel").map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, "Keel attestation CA").map_err(e)?;
    let name = name.build();
    let mut b = new_cert(&name, &key, 3650 * 2).map_err(e)?;
    b.set_issuer_name(&name).map_err(e)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build().map_err(e)?).map_err(e)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().map_err(e)?).map_err(e)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).map_err(e)?;
    b.append_extension(ski).map_err(e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(e)?;
    let cert = b.build();
    let mut pem = key.private_key_to_pem_pkcs8().map_err(e)?;
    pem.extend(cert.to_pem().map_err(e)?);
    crate::store::write_atomic(path, &pem, 0o600).map_err(|x| format!("attestation CA {}: {x}", path.display()))?;
    Ok((key, cert))
}

fn new_cert<T: openssl::pkey::HasPublic>(subject: &openssl::x509::X509NameRef, key: &PKey<T>, days: u32) -> Result<X509Builder, openssl::error::ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    let (from, to) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&from)?;
    b.set_not_after(&to)?;
    Ok(b)
}

/// An X.509 certificate for the AK public key, issued by the attestation CA.
pub fn issue_ak_cert(ak: &PKey<openssl::pkey::Public>, ca_key: &PKey<Private>, ca: &X509, tpm: &TpmInfo) -> Result<X509, String> {
    let e = |e: openssl::error::ErrorStack| format!("AK certificate: {e}");
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Keel").map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &format!("TPM attestation key ({})", tpm.manufacturer)).map_err(e)?;
    let name = name.build();
    let mut b = new_cert(&name, ak, 3650).map_err(e)?;
    b.set_issuer_name(ca.subject_name()).map_err(e)?;
    b.append_extension(BasicConstraints::new().critical().build().map_err(e)?).map_err(e)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build().map_err(e)?).map_err(e)?;
    b.sign(ca_key, MessageDigest::sha256()).map_err(e)?;
    Ok(b.build())
}

/// The AK certificate of the TPM at `tcti`, issued by the CA kept at `ca_path`.
pub fn ak_certificate(tcti: &str, ca_path: &std::path::Path, info: &TpmInfo) -> Result<X509, String> {
    let ak = ak_public(tcti)?;
    let (ca_key, ca) = attestation_ca(ca_path)?;
    issue_ak_cert(&ak, &ca_key, &ca, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_tpm_is_replayed_read_only_and_garbage_is_no_tpm() {
        let dir = std::env::temp_dir().join(format!("keel-tpm-rec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = crate::host::Host::fixture(&dir);
        assert!(Tpm::recorded(&host).is_none(), "no recording, no TPM");
        let info = TpmInfo { manufacturer: "IBM".into(), firmware_version: "8217.4131.22.13878".into(), pcrs: vec![Pcr { index: 7, algorithm: "TPM_ALG_SHA256".into(), digest: vec![0xab; 32] }] };
        std::fs::write(dir.join(RECORDED_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
        let t = Tpm::recorded(&host).unwrap();
        assert!(t.is_recorded() && t.ak_cert.is_none() && t.ca_cert.is_none());
        assert_eq!(t.read_now().unwrap(), info);
        std::fs::write(dir.join(RECORDED_FILE), b"{not json").unwrap();
        assert!(Tpm::recorded(&host).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pcr_selection_parses_banks_and_rejects_garbage() {
        // sha256: PCRs 0, 7, 16; sha1: PCR 23.
        let b = [0, 0, 0, 2, 0, 0x0b, 3, 0x81, 0, 1, 0, 0x04, 3, 0, 0, 0x80];
        assert_eq!(parse_pcr_selection(&b), Some(vec![(0x0b, vec![0, 7, 16]), (0x04, vec![23])]));
        assert_eq!(parse_pcr_selection(&b[..b.len() - 1]), None, "short");
        assert_eq!(parse_pcr_selection(&[b.as_slice(), &[0]].concat()), None, "trailing bytes");
        assert_eq!(parse_pcr_selection(&[0, 0, 0, 1, 0, 0x0b, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "sizeofSelect");
        assert_eq!(parse_pcr_selection(&[]), None);
    }

    #[test]
    fn only_null_and_ecdsa_sha256_schemes_are_taken() {
        assert!(matches!(parse_scheme(&[0, 0x10]), Ok(Some(SignatureScheme::Null))));
        assert!(matches!(parse_scheme(&[0, 0x18, 0, 0x0b]), Ok(Some(SignatureScheme::EcDsa { .. }))));
        assert!(matches!(parse_scheme(&[0, 0x14, 0, 0x0b]), Ok(None)));
        assert!(matches!(parse_scheme(&[0, 0x18, 0, 0x0c]), Ok(None)));
        assert!(parse_scheme(&[0]).is_err());
        assert!(parse_scheme(&[0, 0x18, 0]).is_err());
    }

    #[test]
    fn attestation_ca_is_made_once_owner_only_and_certifies_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("keel-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("attestation-ca.pem");
        let (_, ca) = attestation_ca(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (ca_key, again) = attestation_ca(&path).unwrap();
        assert_eq!(ca.to_der().unwrap(), again.to_der().unwrap(), "kept, not made anew");
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ak = EcKey::generate(&group).unwrap();
        let ak_pub = PKey::from_ec_key(EcKey::from_public_key(&group, ak.public_key()).unwrap()).unwrap();
        let info = TpmInfo { manufacturer: "IBM".into(), firmware_version: "1.2.3.4".into(), pcrs: vec![] };
        let cert = issue_ak_cert(&ak_pub, &ca_key, &ca, &info).unwrap();
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
        assert!(cert.public_key().unwrap().public_eq(&ak_pub));
        assert_eq!(cert.issuer_name().to_der().unwrap(), ca.subject_name().to_der().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
