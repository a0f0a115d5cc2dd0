//! TLS: the acceptor (TLS 1.2+, openssl), the self-signed certificate made on first start, and
//! mutual-TLS client certificates mapped to accounts.

use crate::app::Keel;
use crate::auth::Principal;
use actix_web::HttpRequest;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// The account name a verified client certificate carries (its subject CN).
#[derive(Clone, Debug)]
pub struct PeerIdentity(pub String);

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "keel".into())
}

/// Create a self-signed certificate and key (P-256) in `dir` unless they exist; returns the paths.
pub fn ensure_self_signed(dir: &Path) -> anyhow_like::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let host = hostname();
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, &host)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Keel")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().key_agreement().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .dns(&host)
        .ip("127.0.0.1")
        .ip("::1")
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(&key, MessageDigest::sha256())?;
    let cert = b.build();
    crate::store::write_atomic(&key_path, &key.private_key_to_pem_pkcs8()?, 0o600)?;
    crate::store::write_atomic(&cert_path, &cert.to_pem()?, 0o644)?;
    log::info!("created a self-signed TLS certificate {}", cert_path.display());
    Ok((cert_path, key_path))
}

/// Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow_like::Result<SslAcceptorBuilder> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_private_key_file(key, SslFiletype::PEM)?;
    b.set_certificate_chain_file(cert)?;
    b.check_private_key()?;
    if let Some(ca) = client_ca {
        b.set_ca_file(ca)?;
        // Ask for a certificate, but let clients without one use passwords or tokens.
        b.set_verify(SslVerifyMode::PEER);
    }
    Ok(b)
}

/// For `HttpServer::on_connect`: remember the verified client certificate's CN, and turn Nagle's
/// algorithm off: a response larger than one TLS record (16 KiB) otherwise leaves its tail waiting
/// for the client's delayed ACK (40 ms on Linux) on every request (bench/README.md, finding 5).
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::openssl::TlsStream;
    if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        let _ = tls.get_ref().set_nodelay(true);
        let ssl = tls.ssl();
        if ssl.verify_result() == openssl::x509::X509VerifyResult::OK {
            if let Some(cert) = ssl.peer_certificate() {
                if let Some(cn) = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next().and_then(|e| e.data().to_string().ok()) {
                    ext.insert(PeerIdentity(cn.to_string()));
                }
            }
        }
    }
}

/// The account a verified client certificate maps to (its CN is the UserName).
pub fn client_principal(keel: &Keel, http: &HttpRequest) -> Option<Principal> {
    let id = http.conn_data::<PeerIdentity>()?;
    let a = keel.accounts.by_name(&id.0)?;
    if !a.enabled || keel.accounts.locked_now(&a) {
        return None;
    }
    keel.accounts.principal_for(&a, None)
}

/// A tiny error type so `?` works across openssl and io.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Error>;
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl From<openssl::error::ErrorStack> for Error {
        fn from(e: openssl::error::ErrorStack) -> Self {
            Error(e.to_string())
        }
    }
    impl From<std::io::Error> for Error {
        fn from(e: std::io::Error) -> Self {
            Error(e.to_string())
        }
    }
}
