//! UEFI Secure Boot as efivarfs shows it: the state variables and the key databases (PK, KEK, db,
//! dbx) parsed as EFI_SIGNATURE_LISTs (UEFI 2.10 §32.4.1). Read through the host root, so a
//! recorded machine replays through the same code.

use crate::host::Host;
use serde::Serialize;

pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_GLOBAL_VARIABLE.
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx).
pub const SECURITY_DB_GUID: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
const CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
const CERT_SHA256: &str = "c1c41626-504c-4092-aca9-41f936934328";

/// The databases, in the order the service lists them, with their variable's vendor GUID.
pub const DATABASES: &[(&str, &str)] = &[("PK", GLOBAL_GUID), ("KEK", GLOBAL_GUID), ("db", SECURITY_DB_GUID), ("dbx", SECURITY_DB_GUID)];
/// The state variables (one value byte each).
pub const STATE_VARS: &[&str] = &["SecureBoot", "SetupMode", "AuditMode", "DeployedMode"];

pub fn var_path(name: &str, guid: &str) -> String {
    format!("{EFIVARS}/{name}-{guid}")
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Name {
    pub common_name: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub email: Option<String>,
    /// The whole name, RFC 4514-like (`CN=…, O=…`).
    pub display: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cert {
    pub owner: String,
    pub pem: String,
    pub subject: Name,
    pub issuer: Name,
    /// Colon-separated hex bytes.
    pub serial: String,
    /// RFC 3339.
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// SHA-256 of the DER, colon-separated upper-case hex (as `openssl x509 -fingerprint`).
    pub fingerprint: String,
    pub signature_algorithm: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sig {
    pub owner: String,
    /// The UEFI name of the signature type, e.g. `EFI_CERT_SHA256_GUID`.
    pub kind: String,
    /// The signature data, lower-case hex.
    pub data: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Database {
    pub id: &'static str,
    pub certificates: Vec<Cert>,
    pub signatures: Vec<Sig>,
    /// Why (part of) the variable could not be read; what came before the fault is kept.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SecureBoot {
    /// The `SecureBoot` variable: whether this boot was verified.
    pub enabled: Option<bool>,
    pub setup_mode: Option<bool>,
    pub audit_mode: Option<bool>,
    pub deployed_mode: Option<bool>,
    pub databases: Vec<Database>,
}

impl SecureBoot {
    /// The Redfish `SecureBootMode`, when the firmware says enough to tell.
    pub fn mode(&self) -> Option<&'static str> {
        if self.setup_mode == Some(true) {
            Some("SetupMode")
        } else if self.audit_mode == Some(true) {
            Some("AuditMode")
        } else if self.deployed_mode == Some(true) {
            Some("DeployedMode")
        } else if self.setup_mode == Some(false) {
            Some("UserMode")
        } else {
            None
        }
    }
}

/// The data of an efivarfs file: the 4 attribute bytes stripped.
fn var_data(host: &Host, name: &str, guid: &str) -> std::io::Result<Vec<u8>> {
    let b = host.read_bytes(&var_path(name, guid))?;
    if b.len() < 4 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "shorter than its attributes"));
    }
    Ok(b[4..].to_vec())
}

fn flag(host: &Host, name: &str) -> Option<bool> {
    var_data(host, name, GLOBAL_GUID).ok().and_then(|d| d.first().copied()).map(|v| v == 1)
}

/// Secure Boot of the host; `None` when it did not boot through UEFI.
pub fn read(host: &Host) -> Option<SecureBoot> {
    if host.read_bytes(&var_path("SecureBoot", GLOBAL_GUID)).is_err() && host.list(EFIVARS).is_empty() && host.list("/sys/firmware/efi").is_empty() {
        return None;
    }
    Some(SecureBoot {
        enabled: flag(host, "SecureBoot"),
        setup_mode: flag(host, "SetupMode"),
        audit_mode: flag(host, "AuditMode"),
        deployed_mode: flag(host, "DeployedMode"),
        databases: DATABASES
            .iter()
            .map(|(id, guid)| match var_data(host, id, guid) {
                Ok(d) => parse_database(id, &d),
                // An absent variable is an empty database (as in setup mode).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Database { id, ..Default::default() },
                Err(e) => {
                    log::warn!("Secure Boot database {id}: {e}");
                    Database { id, error: Some(e.to_string()), ..Default::default() }
                }
            })
            .collect(),
    })
}

/// An EFI_GUID (little-endian first three fields) as text.
pub fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn sig_type_name(g: &str) -> String {
    match g {
        CERT_SHA256 => "EFI_CERT_SHA256_GUID".into(),
        CERT_X509 => "EFI_CERT_X509_GUID".into(),
        "3c5766e8-269c-4e34-aa14-ed776e85b3b6" => "EFI_CERT_RSA2048_GUID".into(),
        "826ca512-cf10-4ac9-b187-be01496631bd" => "EFI_CERT_SHA1_GUID".into(),
        "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd" => "EFI_CERT_SHA224_GUID".into(),
        "ff3e5307-9fd0-48c9-85f1-8ad56c701e01" => "EFI_CERT_SHA384_GUID".into(),
        "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a" => "EFI_CERT_SHA512_GUID".into(),
        "3bd2a492-96c0-4079-b420-fcf98ef103ed" => "EFI_CERT_X509_SHA256_GUID".into(),
        "7076876e-80c2-4ee6-aad2-28b349a6865b" => "EFI_CERT_X509_SHA384_GUID".into(),
        "446dbf63-2502-4cda-bcfa-2465d2b0fe9d" => "EFI_CERT_X509_SHA512_GUID".into(),
        other => other.to_string(),
    }
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parse a database variable's data: a sequence of EFI_SIGNATURE_LISTs.
pub fn parse_database(id: &'static str, data: &[u8]) -> Database {
    let mut db = Database { id, ..Default::default() };
    let mut off = 0;
    while off < data.len() {
        // EFI_SIGNATURE_LIST: SignatureType (16), SignatureListSize, SignatureHeaderSize, SignatureSize (u32 each).
        if data.len() - off < 28 {
            db.error = Some(format!("truncated signature list at byte {off}"));
            break;
        }
        let kind = guid(&data[off..off + 16]);
        let list_size = le32(data, off + 16) as usize;
        let header_size = le32(data, off + 20) as usize;
        let sig_size = le32(data, off + 24) as usize;
        if list_size < 28 || list_size > data.len() - off || sig_size < 16 || header_size > list_size - 28 || (list_size - 28 - header_size) % sig_size != 0 {
            db.error = Some(format!("malformed signature list at byte {off}"));
            break;
        }
        let mut e = off + 28 + header_size;
        while e < off + list_size {
            let owner = guid(&data[e..e + 16]);
            let body = &data[e + 16..e + sig_size];
            if kind == CERT_X509 {
                match parse_cert(owner, body) {
                    Ok(c) => db.certificates.push(c),
                    Err(err) => {
                        log::warn!("Secure Boot database {id}: certificate at byte {e}: {err}");
                        db.error.get_or_insert(format!("unreadable certificate at byte {e}"));
                    }
                }
            } else {
                db.signatures.push(Sig { owner, kind: sig_type_name(&kind), data: hex(body) });
            }
            e += sig_size;
        }
        off += list_size;
    }
    if let Some(err) = &db.error {
        log::warn!("Secure Boot database {id}: {err}");
    }
    db
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn colon_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(":")
}

#[allow(deprecated)] // as_utf8: certificate names with NULs are truncated, which is acceptable for display
fn name(n: &openssl::x509::X509NameRef) -> Name {
    use openssl::nid::Nid;
    let get = |nid: Nid| n.entries_by_nid(nid).next().and_then(|e| e.data().as_utf8().ok()).map(|s| s.to_string());
    let display = n
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().map(str::to_string).unwrap_or_else(|_| e.object().to_string());
            let val = e.data().as_utf8().map(|s| s.to_string()).unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    Name {
        common_name: get(Nid::COMMONNAME),
        organization: get(Nid::ORGANIZATIONNAME),
        organizational_unit: get(Nid::ORGANIZATIONALUNITNAME),
        city: get(Nid::LOCALITYNAME),
        state: get(Nid::STATEORPROVINCENAME),
        country: get(Nid::COUNTRYNAME),
        email: get(Nid::PKCS9_EMAILADDRESS),
        display,
    }
}

/// OpenSSL's ASN1_TIME text ("Jan  2 03:04:05 2030 GMT") as RFC 3339.
fn asn1_time(t: &openssl::asn1::Asn1TimeRef) -> Option<String> {
    let s = t.to_string();
    let s = s.trim_end_matches(" GMT");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    chrono::NaiveDateTime::parse_from_str(&s, "%b %d %H:%M:%S %Y").ok().map(|d| d.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn parse_cert(owner: String, der: &[u8]) -> Result<Cert, openssl::error::ErrorStack> {
    let x = openssl::x509::X509::from_der(der)?;
    let pem = String::from_utf8_lossy(&x.to_pem()?).into_owned();
    let serial = x.serial_number().to_bn()?.to_vec();
    let fp = x.digest(openssl::hash::MessageDigest::sha256())?;
    Ok(Cert {
        owner,
        pem,
        subject: name(x.subject_name()),
        issuer: name(x.issuer_name()),
        serial: colon_hex(if serial.is_empty() { &[0] } else { &serial }),
        not_before: asn1_time(x.not_before()),
        not_after: asn1_time(x.not_after()),
        fingerprint: colon_hex(&fp),
        signature_algorithm: x.signature_algorithm().object().nid().long_name().ok().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guid_bytes(g: &str) -> Vec<u8> {
        let h: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&g.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap()).collect();
        let mut b = vec![h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6]];
        b.extend_from_slice(&h[8..]);
        b
    }

    fn list(kind: &str, entries: &[Vec<u8>]) -> Vec<u8> {
        let sig_size = 16 + entries[0].len();
        let mut v = guid_bytes(kind);
        v.extend(((28 + sig_size * entries.len()) as u32).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend((sig_size as u32).to_le_bytes());
        for e in entries {
            v.extend(guid_bytes("77fa9abd-0359-4d32-bd60-28f4e78f784b"));
            v.extend(e);
        }
        v
    }

    #[test]
    fn guids_round_trip() {
        assert_eq!(guid(&guid_bytes(GLOBAL_GUID)), GLOBAL_GUID);
    }

    #[test]
    fn hashes_parse_and_garbage_after_them_is_reported() {
        let mut data = list(CERT_SHA256, &[vec![0xab; 32], vec![0x01; 32]]);
        let db = parse_database("dbx", &data);
        assert_eq!(db.signatures.len(), 2);
        assert_eq!(db.signatures[0].kind, "EFI_CERT_SHA256_GUID");
        assert_eq!(db.signatures[0].owner, "77fa9abd-0359-4d32-bd60-28f4e78f784b");
        assert_eq!(db.signatures[0].data, "ab".repeat(32));
        assert_eq!(db.error, None);
        data.extend([0xff; 40]);
        let db = parse_database("dbx", &data);
        assert_eq!(db.signatures.len(), 2);
        assert!(db.error.is_some());
        assert!(parse_database("db", &[1, 2, 3]).error.is_some());
    }

    #[test]
    fn a_bad_certificate_is_skipped() {
        let db = parse_database("db", &list(CERT_X509, &[vec![0x30, 0x03, 1, 2, 3]]));
        assert!(db.certificates.is_empty());
        assert!(db.error.is_some());
    }

    #[test]
    fn asn1_times_become_rfc3339() {
        let t = openssl::asn1::Asn1Time::from_unix(1_900_000_000).unwrap();
        assert_eq!(asn1_time(&t).as_deref(), Some("2030-03-17T17:46:40Z"));
    }
}
