//! The update bundle: one file that can be verified and written in one streaming pass.
//!
//! ```text
//! "KEELBNDL"            8 bytes magic
//! format                u32 big-endian (1)
//! manifest length       u32 big-endian, then the manifest JSON
//! signature length      u32 big-endian, then a DER CMS (PKCS#7) detached signature of the
//!                       manifest bytes
//! artifacts             each exactly `size` bytes, in manifest order
//! ```
//!
//! An artifact may end in a run of zeros that the bundle does not carry: `zeros` (signed, in the
//! manifest) says how many zero bytes follow its `size` bytes in the partition, and the engine
//! writes them. A 1 GiB usr partition holding 300 MB of erofs travels as 300 MB. Its `sha256`
//! covers the `size` bytes. Bundles that use this are format 2; format 1 bundles are still read.
//!
//! The manifest names the version, the architecture (systemd's names, e.g. `x86-64`), the oldest
//! version it may update (`min_version`), and each artifact (`usr`, `usr-verity`,
//! `usr-verity-sig`, `uki`) with its size and SHA-256. The signature is checked against a CA file
//! only (never the system trust store) before anything else is read or written.

use super::ApplyError;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509PurposeId, X509};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"KEELBNDL";
pub const FORMAT: u32 = 2;
/// Trailing zeros shorter than this stay in the bundle.
const MIN_ZEROS: u64 = 1 << 20;
/// Stored sizes of trimmed artifacts are multiples of this (the engine's `O_DIRECT` alignment).
const TRIM_ALIGN: u64 = 4096;
pub const MAX_MANIFEST: u32 = 64 * 1024;
pub const MAX_SIGNATURE: u32 = 64 * 1024;
/// The artifacts every bundle carries, one each.
pub const ARTIFACTS: [&str; 4] = ["usr", "usr-verity", "usr-verity-sig", "uki"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    /// Lower-case hex, of the `size` bytes the bundle carries.
    pub sha256: String,
    /// Zero bytes that follow the `size` bytes in the partition (not carried by the bundle).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zeros: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Artifact {
    /// Bytes this artifact occupies once written: the carried bytes and the zeros after them.
    pub fn written_size(&self) -> u64 {
        self.size.saturating_add(self.zeros)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// Bytes the bundle carries after its header.
    pub fn total_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
    /// Bytes an apply writes (the carried bytes and the zeros).
    pub fn written_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.written_size()).sum()
    }
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
    /// Structural checks: a valid version, each known artifact exactly once, hex digests.
    pub fn check(&self) -> Result<(), ApplyError> {
        let m = |s: String| Err(ApplyError::Malformed(s));
        if !super::boot::valid_version(&self.version) {
            return m(format!("invalid version {:?}", self.version));
        }
        if let Some(min) = &self.min_version {
            if !super::boot::valid_version(min) {
                return m(format!("invalid min_version {min:?}"));
            }
        }
        for a in &self.artifacts {
            if !ARTIFACTS.contains(&a.name.as_str()) {
                return m(format!("unknown artifact {:?}", a.name));
            }
            if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return m(format!("artifact {} has an invalid sha256", a.name));
            }
            if a.zeros > 0 && a.name == "uki" {
                return m("the UKI cannot end in zeros the bundle does not carry".into());
            }
            if a.size.checked_add(a.zeros).is_none() {
                return m(format!("artifact {} is too large", a.name));
            }
        }
        for name in ARTIFACTS {
            let n = self.artifacts.iter().filter(|a| a.name == name).count();
            if n != 1 {
                return m(format!("artifact {name} appears {n} times (must appear once)"));
            }
        }
        Ok(())
    }
}

/// The manifest as read from a stream, not yet verified.
pub struct Head {
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
}

fn read_u32(src: &mut dyn Read) -> Result<u32, ApplyError> {
    let mut b = [0u8; 4];
    read_exact(src, &mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_exact(src: &mut dyn Read, buf: &mut [u8]) -> Result<(), ApplyError> {
    src.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ApplyError::Truncated("the bundle ends inside its header".into()),
        _ => ApplyError::Io(e),
    })
}

/// Read magic, format, manifest and signature: the part of the bundle before the artifacts.
pub fn read_head(src: &mut dyn Read) -> Result<Head, ApplyError> {
    let mut magic = [0u8; 8];
    read_exact(src, &mut magic)?;
    if &magic != MAGIC {
        return Err(ApplyError::Malformed("not a Keel update bundle (bad magic)".into()));
    }
    let format = read_u32(src)?;
    if format != 1 && format != FORMAT {
        return Err(ApplyError::Malformed(format!("unsupported bundle format {format}")));
    }
    let n = read_u32(src)?;
    if n == 0 || n > MAX_MANIFEST {
        return Err(ApplyError::Malformed(format!("manifest length {n} out of range")));
    }
    let mut manifest_bytes = vec![0u8; n as usize];
    read_exact(src, &mut manifest_bytes)?;
    let n = read_u32(src)?;
    if n == 0 || n > MAX_SIGNATURE {
        return Err(ApplyError::Malformed(format!("signature length {n} out of range")));
    }
    let mut signature = vec![0u8; n as usize];
    read_exact(src, &mut signature)?;
    Ok(Head { manifest_bytes, signature })
}

/// Check the detached CMS signature of `manifest` against the CA certificates in `ca` (PEM, one
/// or more), then parse and check the manifest. A signature that does not match the bytes is
/// `BadSignature`; a valid signature by a certificate that does not chain to the CA is
/// `UntrustedSigner`.
pub fn verify_manifest(head: &Head, ca: &Path) -> Result<Manifest, ApplyError> {
    verify_detached(&head.manifest_bytes, &head.signature, ca)?;
    let m: Manifest = serde_json::from_slice(&head.manifest_bytes).map_err(|e| ApplyError::Malformed(format!("manifest: {e}")))?;
    m.check()?;
    Ok(m)
}

/// Check a detached DER CMS `signature` of `bytes` against the CA certificates in `ca` (PEM):
/// `BadSignature` when it does not match the bytes, `UntrustedSigner` when the signer does not
/// chain to the CA. Used for bundle manifests and for the signed update index.
pub fn verify_detached(bytes: &[u8], signature: &[u8], ca: &Path) -> Result<(), ApplyError> {
    let ca_pem = std::fs::read(ca).map_err(|e| ApplyError::Io(io::Error::new(e.kind(), format!("update CA {}: {e}", ca.display()))))?;
    let cas = X509::stack_from_pem(&ca_pem).map_err(|e| ApplyError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("update CA {}: {e}", ca.display()))))?;
    if cas.is_empty() {
        return Err(ApplyError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("update CA {}: no certificate", ca.display()))));
    }
    let mut cms = CmsContentInfo::from_der(signature).map_err(|_| ApplyError::BadSignature("the signature is not a DER CMS structure".into()))?;
    // First the signature over the bytes alone (signer certificate taken from the CMS itself).
    let empty = X509StoreBuilder::new().map_err(ssl_io)?.build();
    let flags = CMSOptions::BINARY | CMSOptions::DETACHED;
    cms.verify(None, Some(&empty), Some(bytes), None, flags | CMSOptions::NO_SIGNER_CERT_VERIFY)
        .map_err(|e| ApplyError::BadSignature(format!("the signature does not verify ({})", first_reason(&e))))?;
    // Then the signer's chain, to the update CA only.
    let mut store = X509StoreBuilder::new().map_err(ssl_io)?;
    for c in cas {
        store.add_cert(c).map_err(ssl_io)?;
    }
    store.set_purpose(X509PurposeId::ANY).map_err(ssl_io)?;
    let store = store.build();
    let none: Stack<X509> = Stack::new().map_err(ssl_io)?;
    cms.verify(Some(&none), Some(&store), Some(bytes), None, flags)
        .map_err(|e| ApplyError::UntrustedSigner(format!("the signer's certificate does not chain to the update CA ({})", first_reason(&e))))?;
    Ok(())
}

fn ssl_io(e: openssl::error::ErrorStack) -> ApplyError {
    ApplyError::Io(io::Error::other(e.to_string()))
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors().iter().rev().find_map(|x| x.reason().map(str::to_string)).unwrap_or_else(|| "unknown reason".into())
}

/// Read the head and verify it: `read_head` + `verify_manifest`. After it the stream is at the
/// first artifact.
pub fn read_manifest(src: &mut dyn Read, ca: &Path) -> Result<Manifest, ApplyError> {
    verify_manifest(&read_head(src)?, ca)
}

/// Sign `manifest` bytes with `key`/`cert` (PEM): a DER CMS detached signature.
pub fn sign(manifest: &[u8], key: &Path, cert: &Path) -> io::Result<Vec<u8>> {
    let e = |what: &str, p: &Path, err: openssl::error::ErrorStack| io::Error::new(io::ErrorKind::InvalidData, format!("{what} {}: {err}", p.display()));
    let pkey = PKey::private_key_from_pem(&std::fs::read(key)?).map_err(|x| e("key", key, x))?;
    let mut chain = X509::stack_from_pem(&std::fs::read(cert)?).map_err(|x| e("certificate", cert, x))?;
    if chain.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("certificate {}: none found", cert.display())));
    }
    let signer = chain.remove(0);
    let mut extra = Stack::new().map_err(io::Error::other)?;
    for c in chain {
        extra.push(c).map_err(io::Error::other)?;
    }
    let cms = CmsContentInfo::sign(Some(&signer), Some(&pkey), Some(&extra), Some(manifest), CMSOptions::BINARY | CMSOptions::DETACHED)
        .map_err(|x| e("signing with", key, x))?;
    cms.to_der().map_err(io::Error::other)
}

/// Where the data of a file ends: its length without the trailing zeros, rounded up to
/// `TRIM_ALIGN` (and never past the end).
fn data_end(path: &Path, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut end = len;
    while end > 0 {
        let n = (end.min(buf.len() as u64)) as usize;
        let at = end - n as u64;
        f.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            let last = at + i as u64 + 1;
            return Ok(last.div_ceil(TRIM_ALIGN).saturating_mul(TRIM_ALIGN).min(len));
        }
        end = at;
    }
    Ok(0)
}

/// Size and SHA-256 of the first `limit` bytes of a file.
fn sha256_file(path: &Path, limit: u64) -> io::Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?.take(limit);
    let mut h = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(&h.finish())))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What `keeld bundle create` puts in.
pub struct CreateArgs<'a> {
    pub version: &'a str,
    pub architecture: &'a str,
    pub min_version: Option<&'a str>,
    /// (artifact name, file), in the order they go into the bundle.
    pub artifacts: Vec<(&'a str, &'a Path)>,
    pub key: &'a Path,
    pub cert: &'a Path,
}

/// Write a signed bundle to `out` (through a temporary file renamed into place).
pub fn create(args: &CreateArgs, out: &Path) -> io::Result<Manifest> {
    let mut artifacts = Vec::new();
    for (name, path) in &args.artifacts {
        let len = std::fs::metadata(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?.len();
        let keep = if *name == "uki" { len } else { data_end(path, len)? };
        let zeros = if len - keep >= MIN_ZEROS { len - keep } else { 0 };
        let (size, sha256) = sha256_file(path, len - zeros)?;
        artifacts.push(Artifact { name: name.to_string(), size, sha256, zeros });
    }
    let manifest = Manifest {
        version: args.version.to_string(),
        architecture: args.architecture.to_string(),
        min_version: args.min_version.map(str::to_string),
        artifacts,
    };
    manifest.check().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mbytes = serde_json::to_vec(&manifest)?;
    let sig = sign(&mbytes, args.key, args.cert)?;
    let tmp = out.with_file_name(format!(".{}.tmp", out.file_name().and_then(|n| n.to_str()).unwrap_or("bundle")));
    let res = (|| {
        let mut w = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT.to_be_bytes())?;
        w.write_all(&(mbytes.len() as u32).to_be_bytes())?;
        w.write_all(&mbytes)?;
        w.write_all(&(sig.len() as u32).to_be_bytes())?;
        w.write_all(&sig)?;
        for ((_, path), a) in args.artifacts.iter().zip(&manifest.artifacts) {
            let n = io::copy(&mut File::open(path)?.take(a.size), &mut w)?;
            if n != a.size {
                return Err(io::Error::other(format!("{} changed while the bundle was made", path.display())));
            }
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|_| manifest)
}

/// Verify a whole bundle without writing anything: the signature, then every artifact's size and
/// hash, and that nothing follows the last artifact.
pub fn verify(src: &mut dyn Read, ca: &Path) -> Result<Manifest, ApplyError> {
    let m = read_manifest(src, ca)?;
    let mut buf = vec![0u8; 1 << 20];
    for a in &m.artifacts {
        let mut h = openssl::sha::Sha256::new();
        let mut left = a.size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let k = src.read(&mut buf[..want]).map_err(ApplyError::Io)?;
            if k == 0 {
                return Err(ApplyError::Truncated(format!("the bundle ends inside artifact {} ({} of {} bytes)", a.name, a.size - left, a.size)));
            }
            h.update(&buf[..k]);
            left -= k as u64;
        }
        if hex(&h.finish()) != a.sha256 {
            return Err(ApplyError::Mismatch { artifact: a.name.clone() });
        }
    }
    if src.read(&mut buf[..1]).map_err(ApplyError::Io)? != 0 {
        return Err(ApplyError::Malformed("data follows the last artifact".into()));
    }
    Ok(m)
}
