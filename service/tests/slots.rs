//! The A/B slot engine on real GPT image files: signed bundles made with a throwaway CA (the
//! `openssl` CLI), every refusal path, boot counting with the simulated systemd-boot, the real
//! platform's discovery on a sysfs/efivarfs fixture, and power loss (SIGKILL of `keeld bundle
//! apply-sim`) at many points of an update.

use keeld::slots::gpt::{types, Gpt};
use keeld::slots::{bundle, sim_uki, ApplyError, ApplyOptions, Progress, SlotState, Slots};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USR_SIZE: u64 = 4 << 20;

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("keel-slots-{tag}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a signer it certified; `name` prefixes the files.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, cakey, key, csr, cert) = (format!("{name}-ca.pem"), format!("{name}-ca.key"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &cakey, "-out", &ca, "-days", "2", "-subj", &format!("/CN={name} update CA")]);
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name} signer")]);
    openssl(dir, &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &cakey, "-CAcreateserial", "-out", &cert, "-days", "2"]);
    (dir.join(ca), dir.join(key), dir.join(cert))
}

struct Pki {
    ca: PathBuf,
    key: PathBuf,
    cert: PathBuf,
    other_ca: PathBuf,
    other_key: PathBuf,
    other_cert: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let (ca, key, cert) = make_ca(dir, "keel");
    let (other_ca, other_key, other_cert) = make_ca(dir, "other");
    Pki { ca, key, cert, other_ca, other_key, other_cert }
}

fn random(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn sha(b: &[u8]) -> String {
    bundle::hex(&openssl::sha::sha256(b))
}

/// The four artifacts of a version: random usr/verity, a small signature, and a simulated UKI
/// naming that usr.
struct Arts {
    version: String,
    usr: Vec<u8>,
    verity: Vec<u8>,
    sig: Vec<u8>,
    uki: Vec<u8>,
}

fn arts(version: &str, usr_len: usize) -> Arts {
    let usr = random(usr_len);
    let uki = sim_uki(version, &sha(&usr), usr.len() as u64);
    Arts { version: version.into(), verity: random(usr_len / 64 + 100), sig: format!("{{\"rootHash\":\"{}\"}}", sha(&usr)).into_bytes(), usr, uki }
}

struct Spec<'a> {
    arch: &'a str,
    min_version: Option<&'a str>,
    key: &'a Path,
    cert: &'a Path,
}

fn bundle_bytes(dir: &Path, a: &Arts, spec: &Spec) -> Vec<u8> {
    let d = dir.join(format!("art-{}", uuid::Uuid::new_v4()));
    fs::create_dir_all(&d).unwrap();
    let files: Vec<(&str, PathBuf, &Vec<u8>)> = vec![("usr", d.join("usr"), &a.usr), ("usr-verity", d.join("ver"), &a.verity), ("usr-verity-sig", d.join("sig"), &a.sig), ("uki", d.join("uki"), &a.uki)];
    for (_, p, data) in &files {
        fs::write(p, data).unwrap();
    }
    let args = bundle::CreateArgs {
        version: &a.version,
        architecture: spec.arch,
        min_version: spec.min_version,
        artifacts: files.iter().map(|(n, p, _)| (*n, p.as_path())).collect(),
        key: spec.key,
        cert: spec.cert,
    };
    let out = d.join("b.bundle");
    bundle::create(&args, &out).unwrap();
    let b = fs::read(&out).unwrap();
    fs::remove_dir_all(&d).unwrap();
    b
}

/// Where the artifacts start in a bundle.
fn head_len(b: &[u8]) -> usize {
    let mut c = std::io::Cursor::new(b);
    bundle::read_head(&mut c).ok().unwrap();
    c.position() as usize
}

/// A simulated machine running 1.0, with its PKI.
struct Machine {
    tmp: Tmp,
    pki: Pki,
    slots: Slots,
}

impl Machine {
    fn new(tag: &str) -> Machine {
        Machine::with_usr_size(tag, USR_SIZE)
    }
    fn with_usr_size(tag: &str, usr_size: u64) -> Machine {
        let tmp = Tmp::new(tag);
        let pki = pki(&tmp.0);
        let slots = Slots::open_simulated(&tmp.0.join("sim"), "1.0", usr_size).unwrap();
        Machine { tmp, pki, slots }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.0.join("sim")
    }
    fn disk(&self) -> PathBuf {
        self.dir().join("disk.img")
    }
    fn linux(&self) -> PathBuf {
        self.dir().join("esp/EFI/Linux")
    }
    fn opts(&self) -> ApplyOptions {
        self.opts_with(&self.pki.ca)
    }
    fn spec(&self) -> Spec<'_> {
        Spec { arch: "x86-64", min_version: None, key: &self.pki.key, cert: &self.pki.cert }
    }
    fn bundle(&self, a: &Arts) -> Vec<u8> {
        bundle_bytes(&self.tmp.0, a, &self.spec())
    }
    fn apply(&self, b: &[u8], opts: &ApplyOptions) -> (Result<keeld::slots::Applied, ApplyError>, Vec<Progress>) {
        let mut seen = Vec::new();
        let r = self.slots.apply(&mut std::io::Cursor::new(b), opts, &mut |p| seen.push(p));
        (r, seen)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.linux()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }
    /// SHA-256 of each of a slot's three partitions (whole partitions).
    fn slot_hashes(&self, slot: usize) -> Vec<String> {
        self.slot_hashes_at(&self.disk(), slot)
    }
    /// The first `len` bytes of a slot's partition of type `ty`.
    fn read_part(&self, ty: &str, slot: usize, len: usize) -> Vec<u8> {
        let f = fs::File::open(self.disk()).unwrap();
        let (gpt, _) = Gpt::read(&f).unwrap();
        let p = gpt.find_type(ty).nth(slot).unwrap();
        let mut buf = vec![0u8; len];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut buf, p.offset(gpt.lba)).unwrap();
        buf
    }
    fn labels(&self) -> Vec<String> {
        let (gpt, _) = Gpt::read(&fs::File::open(self.disk()).unwrap()).unwrap();
        gpt.partitions.iter().map(|p| p.name.clone()).collect()
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot { running: self.slot_hashes(0), entries: self.entries(), loader: fs::read(self.dir().join("loader.json")).unwrap() }
    }
    /// A refused or failed apply changed nothing that matters: the running slot byte-identical,
    /// the same boot entries and loader state, slot B `_empty`, the GPT consistent.
    fn assert_unchanged(&self, before: &Snapshot) {
        let now = self.snapshot();
        assert_eq!(now.running, before.running, "running slot changed");
        assert_eq!(now.entries, before.entries, "boot entries changed");
        assert_eq!(now.loader, before.loader, "loader variables changed");
        let st = self.slots.status().unwrap();
        assert_eq!(st.slots[1].label, "_empty");
        assert_eq!(st.slots[1].state, SlotState::Empty);
        assert_eq!(st.booted.as_deref(), Some("1.0"));
        assert_eq!(&self.labels()[4..7], &["_empty", "_empty", "_empty"]);
        sgdisk_clean(&self.disk());
    }
}

struct Snapshot {
    running: Vec<String>,
    entries: Vec<String>,
    loader: Vec<u8>,
}

fn sgdisk_clean(disk: &Path) {
    let out = Command::new("sgdisk").arg("-v").arg(disk).output().expect("sgdisk (gdisk package)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("No problems found"), "sgdisk -v: {text}");
}

/// One field (`name`, `uuid`, ...) of every partition, as sfdisk reads the table.
fn sfdisk_field(disk: &Path, field: &str) -> Vec<String> {
    let out = Command::new("sfdisk").arg("--json").arg(disk).output().expect("sfdisk (fdisk package)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["partitiontable"]["partitions"].as_array().unwrap().iter().map(|p| p[field].as_str().unwrap_or("").to_string()).collect()
}

fn sfdisk_names(disk: &Path) -> Vec<String> {
    sfdisk_field(disk, "name")
}

fn sfdisk_uuids(disk: &Path) -> Vec<String> {
    sfdisk_field(disk, "uuid")
}

fn refused(m: &Machine, b: &[u8], opts: &ApplyOptions) -> ApplyError {
    let before = m.snapshot();
    let (r, seen) = m.apply(b, opts);
    let e = r.expect_err("the apply must fail");
    assert!(!seen.iter().any(|p| matches!(p, Progress::Done(_) | Progress::Activating)), "{seen:?}");
    m.assert_unchanged(&before);
    e
}

#[test]
fn apply_then_reboot_boots_the_new_slot_and_bless_keeps_it() {
    let m = Machine::new("happy");
    let st = m.slots.status().unwrap();
    assert_eq!((st.platform.as_str(), st.booted.as_deref()), ("simulated", Some("1.0")));
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Active, SlotState::Empty));
    assert_eq!(m.entries(), ["keel_1.0.efi"]);
    assert_eq!(sfdisk_names(&m.disk()), ["esp", "keel_1.0", "keel_1.0_verity", "keel_1.0_verity_sig", "_empty", "_empty", "_empty", "root"]);
    let running = m.slot_hashes(0);

    let a = arts("2.0", 3 << 20);
    let (r, seen) = m.apply(&m.bundle(&a), &m.opts());
    let applied = r.unwrap();
    assert_eq!((applied.version.as_str(), applied.slot.as_str(), applied.entry.as_str()), ("2.0", "B", "keel_2.0+3.efi"));
    // Progress: verified manifest first, bytes rising to the total, every artifact verified, done.
    let total = (a.usr.len() + a.verity.len() + a.sig.len() + a.uki.len()) as u64;
    assert_eq!(seen[0], Progress::ManifestVerified { version: "2.0".into(), slot: "B".into(), total_bytes: total });
    let written: Vec<u64> = seen.iter().filter_map(|p| if let Progress::Writing { total_written, .. } = p { Some(*total_written) } else { None }).collect();
    assert!(written.windows(2).all(|w| w[0] < w[1]) && *written.last().unwrap() == total, "{written:?}");
    let verified: Vec<&str> = seen.iter().filter_map(|p| if let Progress::Verifying { artifact } = p { Some(artifact.as_str()) } else { None }).collect();
    assert_eq!(verified, ["usr", "usr-verity", "usr-verity-sig", "uki"]);
    assert_eq!(seen.last().unwrap(), &Progress::Done(applied.clone()));

    // The slot holds exactly the artifacts, is labelled, and the GPT is valid in both copies.
    assert_eq!(m.read_part(types::USR_X86_64, 1, a.usr.len()), a.usr);
    assert_eq!(m.read_part(types::USR_VERITY_X86_64, 1, a.verity.len()), a.verity);
    assert_eq!(m.read_part(types::USR_VERITY_SIG_X86_64, 1, a.sig.len()), a.sig);
    assert_eq!(fs::read(m.linux().join("keel_2.0+3.efi")).unwrap(), a.uki);
    assert_eq!(sfdisk_names(&m.disk()), ["esp", "keel_1.0", "keel_1.0_verity", "keel_1.0_verity_sig", "keel_2.0", "keel_2.0_verity", "keel_2.0_verity_sig", "root"]);
    // The PARTUUIDs the initrd looks usr up by: the root hash's first and last 128 bits (as
    // sfdisk shows them, so in the GPT's mixed-endian encoding).
    let h = sha(&a.usr);
    let dashed = |x: &str| format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32]).to_uppercase();
    let uuids = sfdisk_uuids(&m.disk());
    assert_eq!((&uuids[4], &uuids[5]), (&dashed(&h[..32]), &dashed(&h[32..])));
    sgdisk_clean(&m.disk());
    assert_eq!(m.slot_hashes(0), running);
    let st = m.slots.status().unwrap();
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Active, SlotState::Staged));
    assert_eq!(st.next_boot.as_ref().unwrap().version, "2.0");
    assert_eq!(st.booted.as_deref(), Some("1.0"));

    // Reboot: the new entry is tried (+3 -> +2-1) and boots; bless drops the counter.
    let out = m.slots.reboot().unwrap();
    assert_eq!((out.booted.as_deref(), out.slot.as_deref(), out.entry.as_deref()), (Some("2.0"), Some("B"), Some("keel_2.0+2-1.efi")));
    assert_eq!(m.slots.running_version().as_deref(), Some("2.0"));
    let st = m.slots.status().unwrap();
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Previous, SlotState::Active));
    assert_eq!(m.slots.bless().unwrap().as_deref(), Some("keel_2.0.efi"));
    assert_eq!(m.slots.bless().unwrap(), None);
    assert_eq!(m.entries(), ["keel_1.0.efi", "keel_2.0.efi"]);
    // Blessed entries are not counted any more.
    let out = m.slots.reboot().unwrap();
    assert_eq!((out.booted.as_deref(), out.entry.as_deref()), (Some("2.0"), Some("keel_2.0.efi")));
    // The next update goes to slot A, the one not running; it replaces 1.0 and its entry.
    let (r, _) = m.apply(&m.bundle(&arts("3.0", 1 << 20)), &m.opts());
    assert_eq!(r.unwrap().slot, "A");
    assert_eq!(m.entries(), ["keel_2.0.efi", "keel_3.0+3.efi"]);
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("3.0"));
}

#[test]
fn keeld_bundle_verify_checks_signature_and_every_hash() {
    let m = Machine::new("cli");
    let a = arts("2.0", 1 << 20);
    let keeld = env!("CARGO_BIN_EXE_keeld");
    let d = &m.tmp.0;
    for (n, data) in [("usr", &a.usr), ("ver", &a.verity), ("sig", &a.sig), ("uki", &a.uki)] {
        fs::write(d.join(n), data).unwrap();
    }
    let out = Command::new(keeld)
        .current_dir(d)
        .args(["bundle", "create", "--version", "2.0", "--usr", "usr", "--usr-verity", "ver", "--usr-verity-sig", "sig", "--uki", "uki", "--min-version", "0.5"])
        .arg("--key")
        .arg(&m.pki.key)
        .arg("--cert")
        .arg(&m.pki.cert)
        .args(["-o", "b.bundle"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verify = |ca: &Path, file: &str| Command::new(keeld).current_dir(d).args(["bundle", "verify", "--ca"]).arg(ca).arg(file).output().unwrap();
    let ok = verify(&m.pki.ca, "b.bundle");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let m2: bundle::Manifest = serde_json::from_str(String::from_utf8_lossy(&ok.stdout).split_once('\n').unwrap().1).unwrap();
    assert_eq!((m2.version.as_str(), m2.min_version.as_deref(), m2.artifacts.len()), ("2.0", Some("0.5"), 4));
    assert_eq!(m2.artifact("usr").unwrap().sha256, sha(&a.usr));

    let wrong_ca = verify(&m.pki.other_ca, "b.bundle");
    assert!(!wrong_ca.status.success());
    assert!(String::from_utf8_lossy(&wrong_ca.stderr).contains("untrusted bundle signer"), "{}", String::from_utf8_lossy(&wrong_ca.stderr));
    let mut b = fs::read(d.join("b.bundle")).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(d.join("t.bundle"), &b).unwrap();
    let tampered = verify(&m.pki.ca, "t.bundle");
    assert!(!tampered.status.success());
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("artifact uki does not match its SHA-256"), "{}", String::from_utf8_lossy(&tampered.stderr));
    fs::write(d.join("s.bundle"), &b[..b.len() - 10]).unwrap();
    let short = verify(&m.pki.ca, "s.bundle");
    assert!(!short.status.success() && String::from_utf8_lossy(&short.stderr).contains("truncated"));
}

#[test]
fn refuses_a_bad_signature() {
    let m = Machine::new("badsig");
    let b = m.bundle(&arts("2.0", 1 << 20));
    // The manifest changed after signing (version 2.0 -> 2.1): the signature no longer matches.
    let mut forged = b.clone();
    let at = head_len(&b);
    let text = String::from_utf8_lossy(&b[..at]).into_owned();
    let pos = text.find("\"version\":\"2.0\"").unwrap() + "\"version\":\"2.".len();
    forged[pos] = b'1';
    assert!(matches!(refused(&m, &forged, &m.opts()), ApplyError::BadSignature(_)));
    // Garbage where the signature belongs.
    let mlen = u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
    let mut garbage = b.clone();
    let sig_at = 16 + mlen + 4;
    for x in &mut garbage[sig_at..sig_at + 40] {
        *x = 0x5a;
    }
    let e = refused(&m, &garbage, &m.opts());
    assert!(matches!(e, ApplyError::BadSignature(_)), "{e}");
    assert!(e.to_string().starts_with("bad bundle signature"));
}

#[test]
fn refuses_a_signer_from_another_ca() {
    let m = Machine::new("wrongca");
    let spec = Spec { arch: "x86-64", min_version: None, key: &m.pki.other_key, cert: &m.pki.other_cert };
    let b = bundle_bytes(&m.tmp.0, &arts("2.0", 1 << 20), &spec);
    let e = refused(&m, &b, &m.opts());
    assert!(matches!(e, ApplyError::UntrustedSigner(_)), "{e}");
    // The same bundle verifies against its own CA: the signature itself is fine.
    let mut opts = m.opts();
    opts.ca = m.pki.other_ca.clone();
    assert!(m.apply(&b, &opts).0.is_ok());
}

#[test]
fn refuses_a_tampered_artifact_byte_and_leaves_the_slot_empty() {
    let m = Machine::new("tamper");
    let a = arts("2.0", 2 << 20);
    let b = m.bundle(&a);
    let at = head_len(&b);
    for (name, offset) in [("usr", at + a.usr.len() / 2), ("usr-verity-sig", at + a.usr.len() + a.verity.len() + 1), ("uki", b.len() - 3)] {
        let mut t = b.clone();
        t[offset] ^= 0x80;
        let e = refused(&m, &t, &m.opts());
        assert!(matches!(&e, ApplyError::Mismatch { artifact } if artifact == name), "{name}: {e}");
        assert!(!m.entries().iter().any(|f| f.contains(".part")), "temporary UKI left: {:?}", m.entries());
    }
    // A slot that held a version is emptied when a new write into it fails.
    assert!(m.apply(&b, &m.opts()).0.is_ok());
    let mut t = m.bundle(&arts("2.1", 1 << 20));
    let at = head_len(&t);
    t[at + 10] ^= 1;
    let (r, _) = m.apply(&t, &m.opts());
    assert!(matches!(r, Err(ApplyError::Mismatch { .. })));
    assert_eq!(m.slots.status().unwrap().slots[1].state, SlotState::Empty);
    assert_eq!(m.entries(), ["keel_1.0.efi"], "the emptied slot's entry is gone, the running one stays");
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("1.0"));
}

#[test]
fn refuses_a_truncated_stream() {
    let m = Machine::new("trunc");
    let b = m.bundle(&arts("2.0", 2 << 20));
    let at = head_len(&b);
    for cut in [10, at - 5, at + 1000, at + (1 << 20) + 17, b.len() - 1] {
        let e = refused(&m, &b[..cut], &m.opts());
        assert!(matches!(e, ApplyError::Truncated(_)), "cut at {cut}: {e}");
    }
    // Data after the last artifact is refused too.
    let mut long = b.clone();
    long.extend_from_slice(b"more");
    assert!(matches!(refused(&m, &long, &m.opts()), ApplyError::Malformed(_)));
    let mut magic = b.clone();
    magic[0] = b'X';
    assert!(matches!(refused(&m, &magic, &m.opts()), ApplyError::Malformed(_)));
}

#[test]
fn refuses_another_architecture() {
    let m = Machine::new("arch");
    let spec = Spec { arch: "arm64", ..m.spec() };
    let b = bundle_bytes(&m.tmp.0, &arts("2.0", 1 << 20), &spec);
    let e = refused(&m, &b, &m.opts());
    assert!(matches!(&e, ApplyError::WrongArchitecture { bundle, machine } if bundle == "arm64" && machine == "x86-64"), "{e}");
}

#[test]
fn refuses_a_downgrade_unless_allowed() {
    let m = Machine::new("down");
    let b = m.bundle(&arts("0.9", 1 << 20));
    let e = refused(&m, &b, &m.opts());
    assert!(matches!(&e, ApplyError::Downgrade { bundle, running } if bundle == "0.9" && running == "1.0"), "{e}");
    let opts = ApplyOptions { allow_downgrade: true, ..m.opts() };
    assert_eq!(m.apply(&b, &opts).0.unwrap().version, "0.9");
    // An explicitly allowed older version boots only when it is the default or newest: make it so.
    assert_eq!(m.slots.set_default("0.9").unwrap(), "keel_0.9.efi");
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("0.9"));
}

#[test]
fn refuses_a_bundle_needing_a_newer_running_version() {
    let m = Machine::new("minver");
    let spec = Spec { min_version: Some("1.5"), ..m.spec() };
    let b = bundle_bytes(&m.tmp.0, &arts("2.0", 1 << 20), &spec);
    let e = refused(&m, &b, &m.opts());
    assert!(matches!(&e, ApplyError::TooOld { min_version, running } if min_version == "1.5" && running == "1.0"), "{e}");
    let spec = Spec { min_version: Some("1.0"), ..m.spec() };
    assert!(m.apply(&bundle_bytes(&m.tmp.0, &arts("2.0", 1 << 20), &spec), &m.opts()).0.is_ok());
}

#[test]
fn refuses_to_overwrite_the_running_slot() {
    let m = Machine::new("running");
    let e = refused(&m, &m.bundle(&arts("1.0", 1 << 20)), &m.opts());
    assert!(matches!(e, ApplyError::SameVersion(ref v) if v == "1.0"), "{e}");
    // Booted from neither slot (as from an installer medium): neither may be written.
    let lf = m.dir().join("loader.json");
    let mut l: serde_json::Value = serde_json::from_slice(&fs::read(&lf).unwrap()).unwrap();
    l["booted_slot"] = serde_json::Value::Null;
    fs::write(&lf, serde_json::to_vec(&l).unwrap()).unwrap();
    let before = m.slot_hashes(1);
    let (r, _) = m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts());
    assert!(matches!(r, Err(ApplyError::RunningSlot(_))), "{r:?}");
    assert_eq!(m.slot_hashes(1), before);
    assert_eq!(m.entries(), ["keel_1.0.efi"]);
}

#[test]
fn refuses_an_artifact_larger_than_its_partition() {
    let m = Machine::new("full");
    let e = refused(&m, &m.bundle(&arts("2.0", (USR_SIZE + 4096) as usize)), &m.opts());
    assert!(matches!(&e, ApplyError::NoSpace { need, have, .. } if *need == USR_SIZE + 4096 && *have == USR_SIZE), "{e}");
}

/// A full ESP (a 256 KiB tmpfs mounted as `esp/`): the UKI does not fit. Needs root for the mount.
#[test]
fn refuses_a_uki_that_does_not_fit_the_esp() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let tmp = Tmp::new("espfull");
    let dir = tmp.0.join("sim");
    fs::create_dir_all(dir.join("esp")).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(dir.join("esp")).status().unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(dir.join("esp"));
    let m = Machine { pki: pki(&tmp.0), slots: Slots::open_simulated(&dir, "1.0", USR_SIZE).unwrap(), tmp };
    let mut a = arts("2.0", 1 << 20);
    a.uki.extend(random(300 << 10));
    let e = refused(&m, &m.bundle(&a), &m.opts());
    assert!(matches!(&e, ApplyError::NoSpace { what, .. } if what.contains("ESP")), "{e}");
    // One that fits goes through on the same ESP.
    assert!(m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.is_ok());
    drop(m);
}

/// A reader fed through a channel: the test decides when bytes arrive.
struct Feed(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>, usize);
impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.2 == self.1.len() {
            match self.0.recv() {
                Ok(v) => (self.1, self.2) = (v, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len() - self.2);
        buf[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
        self.2 += n;
        Ok(n)
    }
}

#[test]
fn a_second_concurrent_apply_is_busy() {
    let m = Machine::new("busy");
    let b = m.bundle(&arts("2.0", 2 << 20));
    let b2 = m.bundle(&arts("2.1", 1 << 20));
    let (tx, rx) = std::sync::mpsc::channel();
    let (ptx, prx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let mut feed = Feed(rx, Vec::new(), 0);
            m.slots.apply(&mut feed, &m.opts(), &mut |p| {
                let _ = ptx.send(p);
            })
        });
        let at = head_len(&b);
        tx.send(b[..at + 100_000].to_vec()).unwrap();
        assert!(matches!(prx.recv().unwrap(), Progress::ManifestVerified { .. }));
        let before = m.slot_hashes(0);
        let (r, seen) = m.apply(&b2, &m.opts());
        assert!(matches!(r, Err(ApplyError::Busy)), "{r:?}");
        assert!(seen.is_empty());
        assert_eq!(m.slots.status().unwrap().slots[1].state, SlotState::Empty, "status answers during an apply");
        assert!(m.slots.reboot().is_err(), "no simulated reboot while writing");
        tx.send(b[at + 100_000..].to_vec()).unwrap();
        drop(tx);
        assert_eq!(first.join().unwrap().unwrap().version, "2.0");
        assert_eq!(m.slot_hashes(0), before);
    });
    // Once the first is done, another apply may run.
    assert_eq!(m.apply(&b2, &m.opts()).0.unwrap().version, "2.1");
}

#[test]
fn a_new_slot_never_blessed_falls_back_after_three_tries() {
    let m = Machine::new("noblessing");
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    for (i, file) in ["keel_2.0+2-1.efi", "keel_2.0+1-2.efi", "keel_2.0+0-3.efi"].iter().enumerate() {
        let out = m.slots.reboot().unwrap();
        assert_eq!((out.booted.as_deref(), out.entry.as_deref()), (Some("2.0"), Some(*file)), "boot {}", i + 1);
    }
    let out = m.slots.reboot().unwrap();
    assert_eq!((out.booted.as_deref(), out.slot.as_deref(), out.entry.as_deref()), (Some("1.0"), Some("A"), Some("keel_1.0.efi")));
    let st = m.slots.status().unwrap();
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Active, SlotState::Failed));
    assert_eq!(st.next_boot.unwrap().version, "1.0");
    assert_eq!(m.entries(), ["keel_1.0.efi", "keel_2.0+0-3.efi"]);
    // The failed slot can be written again: its old entry is replaced by a fresh +3.
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    assert_eq!(m.entries(), ["keel_1.0.efi", "keel_2.0+3.efi"]);
}

#[test]
fn a_corrupted_slot_never_boots_and_the_firmware_falls_back() {
    let m = Machine::new("corrupt");
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    // Flip one byte of slot B's usr after it was written (bit rot, a tampered disk).
    let f = fs::OpenOptions::new().read(true).write(true).open(m.disk()).unwrap();
    let (gpt, _) = Gpt::read(&f).unwrap();
    let p = gpt.find_type(types::USR_X86_64).nth(1).unwrap();
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, p.offset(gpt.lba) + 1234).unwrap();
    f.write_all_at(&[byte[0] ^ 1], p.offset(gpt.lba) + 1234).unwrap();
    let out = m.slots.reboot().unwrap();
    assert_eq!(out.booted.as_deref(), Some("1.0"));
    let failures: Vec<&str> = out.attempts.iter().filter(|a| a.failure.is_some()).map(|a| a.entry.as_str()).collect();
    assert_eq!(failures, ["keel_2.0+3.efi", "keel_2.0+2-1.efi", "keel_2.0+1-2.efi"]);
    assert_eq!(m.slots.status().unwrap().slots[1].state, SlotState::Failed);
}

#[test]
fn set_default_rolls_back_to_the_other_slot() {
    let m = Machine::new("rollback");
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("2.0"));
    m.slots.bless().unwrap();
    assert_eq!(m.slots.set_default("1.0").unwrap(), "keel_1.0.efi");
    let st = m.slots.status().unwrap();
    assert_eq!(st.next_boot.as_ref().map(|n| (n.version.as_str(), n.reason)), Some(("1.0", keeld::slots::boot::Reason::Default)));
    assert_eq!(st.default_entry.as_deref(), Some("keel_1.0.efi"));
    let out = m.slots.reboot().unwrap();
    assert_eq!((out.booted.as_deref(), out.slot.as_deref()), (Some("1.0"), Some("A")));
    let st = m.slots.status().unwrap();
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Active, SlotState::Previous));
    assert!(m.slots.set_default("7.0").is_err());
    // A new update clears the default again, so the next boot tries it.
    m.apply(&m.bundle(&arts("3.0", 1 << 20)), &m.opts()).0.unwrap();
    assert_eq!(m.slots.status().unwrap().default_entry, None);
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("3.0"));
}

#[test]
fn a_damaged_primary_gpt_is_read_from_the_backup_and_repaired() {
    let m = Machine::new("gptrepair");
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    let names = sfdisk_names(&m.disk());
    // (no other handle writes the disk while the table is damaged)
    // Zero the primary header (LBA 1).
    let f = fs::OpenOptions::new().write(true).open(m.disk()).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 512], 512).unwrap();
    drop(f);
    let (_, health) = Gpt::read(&fs::File::open(m.disk()).unwrap()).unwrap();
    assert!(!health.primary_ok && health.backup_ok);
    let slots = Slots::open_simulated(&m.dir(), "1.0", USR_SIZE).unwrap();
    let (_, health) = Gpt::read(&fs::File::open(m.disk()).unwrap()).unwrap();
    assert!(health.clean(), "{health:?}");
    sgdisk_clean(&m.disk());
    assert_eq!(sfdisk_names(&m.disk()), names);
    assert_eq!(slots.status().unwrap().slots[1].version.as_deref(), Some("2.0"));
}

/// The real platform's discovery on a fixture host root: `/usr` is a dm-verity device backed by
/// partitions 5 and 6 of `vda` (slot B), the ESP is at `/efi`, the loader variables in efivarfs.
/// The whole real path (a booted image) is proven by the QEMU tests of the image issue.
#[test]
fn real_platform_finds_the_booted_slot_through_sysfs_and_efivars() {
    let m = Machine::new("real");
    m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.unwrap();
    let root = m.tmp.0.join("root");
    let mk = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    mk("proc/self");
    fs::write(root.join("proc/self/mountinfo"), "21 1 0:20 / / rw - ext4 /dev/mapper/root rw\n30 21 254:0 / /usr ro,relatime - erofs /dev/mapper/usr ro\n31 21 259:1 / /efi rw - vfat /dev/vda1 rw\n").unwrap();
    let blk = "sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda";
    for (n, num) in [("vda5", 5), ("vda6", 6)] {
        mk(&format!("{blk}/{n}"));
        fs::write(root.join(format!("{blk}/{n}/partition")), format!("{num}\n")).unwrap();
    }
    mk("sys/devices/virtual/block/dm-0/slaves");
    std::os::unix::fs::symlink(format!("../../../../{}/vda5", blk.trim_start_matches("sys/devices/")), root.join("sys/devices/virtual/block/dm-0/slaves/vda5")).unwrap();
    std::os::unix::fs::symlink(format!("../../../../{}/vda6", blk.trim_start_matches("sys/devices/")), root.join("sys/devices/virtual/block/dm-0/slaves/vda6")).unwrap();
    mk("sys/dev/block");
    std::os::unix::fs::symlink("../../devices/virtual/block/dm-0", root.join("sys/dev/block/254:0")).unwrap();
    mk("dev");
    fs::copy(m.disk(), root.join("dev/vda")).unwrap();
    mk("efi/EFI/Linux");
    fs::write(root.join("efi/EFI/Linux/keel_1.0.efi"), b"uki 1.0").unwrap();
    fs::write(root.join("efi/EFI/Linux/keel_2.0+2-1.efi"), b"uki 2.0").unwrap();
    mk("sys/firmware/efi/efivars");
    let var = |n: &str| root.join(format!("sys/firmware/efi/efivars/{n}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"));
    fs::write(var("LoaderEntrySelected"), keeld::slots::platform::encode_efivar_string("keel_2.0.efi")).unwrap();
    fs::write(var("LoaderBootCountPath"), keeld::slots::platform::encode_efivar_string("\\EFI\\Linux\\keel_2.0+2-1.efi")).unwrap();

    let real = Slots::open_real(&root).unwrap();
    assert_eq!(real.platform(), "real");
    assert_eq!(real.running_version().as_deref(), Some("2.0"));
    let st = real.status().unwrap();
    assert_eq!((st.slots[0].state, st.slots[1].state), (SlotState::Previous, SlotState::Active));
    assert_eq!(st.slots[1].entry.as_deref(), Some("keel_2.0+2-1.efi"));
    assert!(real.reboot().is_err(), "a real machine is rebooted by the power backend");
    assert_eq!(real.bless().unwrap().as_deref(), Some("keel_2.0.efi"));
    assert!(root.join("efi/EFI/Linux/keel_2.0.efi").exists());
    assert_eq!(real.set_default("1.0").unwrap(), "keel_1.0.efi");
    let raw = fs::read(var("LoaderEntryDefault")).unwrap();
    assert_eq!(&raw[..4], &[7, 0, 0, 0]);
    assert_eq!(keeld::slots::platform::decode_efivar_string(&raw).as_deref(), Some("keel_1.0.efi"));
    assert_eq!(real.status().unwrap().next_boot.unwrap().version, "1.0");
    // An update on the real platform writes slot A (not booted) of dev/vda.
    let (r, _) = {
        let mut seen = Vec::new();
        let b = m.bundle(&arts("3.0", 1 << 20));
        (real.apply(&mut std::io::Cursor::new(b), &m.opts(), &mut |p| seen.push(p)), seen)
    };
    assert_eq!(r.unwrap().slot, "A");
    assert_eq!(&sfdisk_names(&root.join("dev/vda"))[1..4], &["keel_3.0", "keel_3.0_verity", "keel_3.0_verity_sig"]);
    assert!(!var("LoaderEntryDefault").exists(), "the update cleared the default");
}

/// Power loss during an update: `keeld bundle apply-sim` reads the bundle from a pipe and is
/// killed with SIGKILL after a chosen number of bytes (every phase: header, each artifact, the
/// UKI, activation). After each kill the machine is reopened and rebooted: it boots 1.0, or 2.0
/// only if the apply had completed its activation (slot labelled, UKI in place) — never a
/// half-written slot. A retried apply then succeeds.
#[test]
fn power_loss_at_any_point_boots_the_old_or_the_completed_new_slot() {
    use rand::Rng;
    const CRASH_USR: u64 = 12 << 20;
    let base = Machine::with_usr_size("crash", CRASH_USR);
    let a = arts("2.0", 10 << 20);
    let b = base.bundle(&a);
    let keeld = env!("CARGO_BIN_EXE_keeld");
    let mut rng = rand::thread_rng();
    let trials = 50;
    let (mut old, mut new) = (0, 0);
    for i in 0..trials {
        let dir = base.tmp.0.join(format!("t{i}"));
        let st = Command::new("cp").args(["-a", "--sparse=always"]).arg(base.dir()).arg(&dir).status().unwrap();
        assert!(st.success());
        // Where to cut: spread over the header and every artifact; the last trials send it all
        // and kill during or after activation.
        let cut = if i < trials - 8 {
            let span = (b.len() as u64 * i as u64 / (trials - 8) as u64) as usize;
            (span + rng.gen_range(0..b.len() / trials)).min(b.len() - 1)
        } else {
            b.len()
        };
        let mut child = Command::new(keeld)
            .args(["bundle", "apply-sim", "--dir"])
            .arg(&dir)
            .arg("--ca")
            .arg(&base.pki.ca)
            .args(["--running", "1.0", "--usr-size", &CRASH_USR.to_string(), "-"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&b[..cut]);
        let _ = stdin.flush();
        if cut == b.len() {
            drop(stdin);
            if i + 1 < trials {
                std::thread::sleep(std::time::Duration::from_micros(rng.gen_range(0..40_000)));
                let _ = child.kill();
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let completed = String::from_utf8_lossy(&out.stdout).contains("applied 2.0 to slot B");

        let m = Machine { tmp: Tmp(dir.clone()), pki: pki_ref(&base.pki), slots: Slots::open_simulated(&dir, "1.0", CRASH_USR).unwrap() };
        let mdir = |p: &str| dir.join(p);
        // The sim dir is `dir` itself here (not dir/sim).
        let linux = mdir("esp/EFI/Linux");
        assert!(!fs::read_dir(&linux).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".part")), "trial {i}: temp UKI left");
        sgdisk_clean(&mdir("disk.img"));
        let outcome = m.slots.reboot().unwrap();
        let st = m.slots.status().unwrap();
        match outcome.booted.as_deref() {
            Some("2.0") => {
                new += 1;
                assert_eq!(outcome.attempts.len(), 1, "trial {i}: {outcome:?}");
                assert_eq!(st.slots[1].label, "keel_2.0");
                let disk = mdir("disk.img");
                let f = fs::File::open(&disk).unwrap();
                let (gpt, _) = Gpt::read(&f).unwrap();
                for (ty, data) in [(types::USR_X86_64, &a.usr), (types::USR_VERITY_X86_64, &a.verity), (types::USR_VERITY_SIG_X86_64, &a.sig)] {
                    let p = gpt.find_type(ty).nth(1).unwrap();
                    let mut buf = vec![0u8; data.len()];
                    use std::os::unix::fs::FileExt;
                    f.read_exact_at(&mut buf, p.offset(gpt.lba)).unwrap();
                    assert!(&buf == data, "trial {i}: slot B booted with content that differs from the bundle");
                }
            }
            Some("1.0") => {
                old += 1;
                assert!(!completed, "trial {i}: the apply completed but 1.0 booted");
                assert_eq!(outcome.attempts.len(), 1, "trial {i}: a half-written entry was tried: {outcome:?}");
                assert_eq!(st.slots[1].label, "_empty", "trial {i}");
                assert_eq!(st.entries.len(), 1, "trial {i}: {:?}", st.entries);
                // The update can be retried.
                let mut seen = Vec::new();
                let r = m.slots.apply(&mut std::io::Cursor::new(&b), &m.opts_with(&base.pki.ca), &mut |p| seen.push(p));
                assert!(r.is_ok(), "trial {i}: retry failed: {r:?}");
                assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("2.0"), "trial {i}");
            }
            other => panic!("trial {i}: booted {other:?}: {outcome:?}"),
        }
        // Slot A is never touched.
        assert_eq!(m.slot_hashes_at(&mdir("disk.img"), 0), base.slot_hashes(0), "trial {i}");
        drop(m);
    }
    eprintln!("power loss: {old} trials booted 1.0 (and retried), {new} booted the completed 2.0");
    assert!(old >= trials / 2 && new >= 1, "the kill points must cover both outcomes: old {old}, new {new}");
}

fn pki_ref(p: &Pki) -> Pki {
    Pki { ca: p.ca.clone(), key: p.key.clone(), cert: p.cert.clone(), other_ca: p.other_ca.clone(), other_key: p.other_key.clone(), other_cert: p.other_cert.clone() }
}

impl Machine {
    fn opts_with(&self, ca: &Path) -> ApplyOptions {
        ApplyOptions { ca: ca.to_path_buf(), arch: "x86-64".into(), allow_downgrade: false }
    }
    fn slot_hashes_at(&self, disk: &Path, slot: usize) -> Vec<String> {
        let f = fs::File::open(disk).unwrap();
        let (gpt, _) = Gpt::read(&f).unwrap();
        [types::USR_X86_64, types::USR_VERITY_X86_64, types::USR_VERITY_SIG_X86_64]
            .iter()
            .map(|t| {
                let p = gpt.find_type(t).nth(slot).unwrap();
                let mut buf = vec![0u8; p.size(gpt.lba) as usize];
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut buf, p.offset(gpt.lba)).unwrap();
                sha(&buf)
            })
            .collect()
    }
}

/// What an apply stopped between placing the UKI and labelling the slot leaves (an entry for a
/// version no slot holds) and a temporary UKI are removed when the engine opens; the machine
/// then boots the old slot.
#[test]
fn open_removes_leftovers_of_an_interrupted_activation() {
    let m = Machine::new("leftover");
    fs::write(m.linux().join("keel_2.0+3.efi"), sim_uki("2.0", &sha(b"x"), 1)).unwrap();
    fs::write(m.linux().join(".keel_2.0.efi.part"), b"partial").unwrap();
    // A blessed entry is never removed, even without a slot (not ours to judge).
    fs::write(m.linux().join("keel_0.5.efi"), b"old").unwrap();
    let slots = Slots::open_simulated(&m.dir(), "1.0", USR_SIZE).unwrap();
    assert_eq!(m.entries(), ["keel_0.5.efi", "keel_1.0.efi"]);
    assert_eq!(slots.reboot().unwrap().booted.as_deref(), Some("1.0"));
}

/// `keeld serve`'s configuration picks the platform: `simulated` lays out STATE/sim running
/// keeld's own version; `real` on a machine that is not a Keel image fails rather than guess.
#[test]
fn the_configured_platform_is_opened() {
    let tmp = Tmp::new("config");
    let cfg = keeld::app::Config { state_dir: tmp.0.clone(), platform: "simulated".into(), sim_usr_size: 2 << 20, ..Default::default() };
    let slots = keeld::slots::open_configured(&cfg).unwrap();
    assert_eq!(slots.platform(), "simulated");
    assert_eq!(slots.running_version().as_deref(), Some(keeld::slots::SIM_VERSION));
    assert!(tmp.0.join("sim/disk.img").exists());
    let cfg = keeld::app::Config { host_root: Some(tmp.0.join("nothing")), platform: "real".into(), ..cfg };
    assert!(keeld::slots::open_configured(&cfg).is_err());
    let cfg = keeld::app::Config { platform: "auto".into(), ..cfg };
    assert_eq!(keeld::slots::open_configured(&cfg).unwrap().platform(), "simulated", "not a Keel image: simulated");
    // A recorded Keel image (--host-root) is served, never updated: auto is simulated there too.
    let rec = tmp.0.join("recorded-keel");
    std::fs::create_dir_all(rec.join("usr/lib")).unwrap();
    std::fs::write(rec.join("usr/lib/os-release"), "NAME=\"Keel\"\nID=keel\n").unwrap();
    assert!(keeld::slots::Slots::is_keel_image(&rec));
    let cfg = keeld::app::Config { host_root: Some(rec), ..cfg };
    assert_eq!(keeld::slots::open_configured(&cfg).unwrap().platform(), "simulated", "a recording: simulated");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(keeld::slots::native_arch(), "x86-64");
    }
}

/// A usr image that ends in zeros (erofs in a fixed-size partition) travels without them: the
/// signed manifest says how many zeros follow, and the engine writes them over whatever the
/// slot held before, so the simulated UKI's hash over the whole partition matches.
#[test]
fn trailing_zeros_travel_as_a_count_and_are_written_over_the_old_slot() {
    let m = Machine::new("zeros");
    // Slot B first holds 2.0, random to its last byte.
    let full = arts("2.0", USR_SIZE as usize);
    assert!(m.apply(&m.bundle(&full), &m.opts()).0.is_ok());
    assert_eq!(m.read_part(types::USR_X86_64, 1, USR_SIZE as usize), full.usr);

    // 2.1: 1 MiB and 100 bytes of data, then zeros to the end of the partition.
    let data = (1 << 20) + 100;
    let mut a = arts("2.1", data);
    a.usr.resize(USR_SIZE as usize, 0);
    a.uki = sim_uki("2.1", &sha(&a.usr), USR_SIZE);
    a.sig = format!("{{\"rootHash\":\"{}\"}}", sha(&a.usr)).into_bytes();
    let b = m.bundle(&a);
    let manifest = bundle::read_manifest(&mut std::io::Cursor::new(&b), &m.pki.ca).unwrap();
    let usr = manifest.artifact("usr").unwrap();
    let carried = (data as u64).div_ceil(4096) * 4096;
    assert_eq!((usr.size, usr.zeros, usr.sha256.as_str()), (carried, USR_SIZE - carried, sha(&a.usr[..carried as usize]).as_str()));
    assert_eq!(manifest.artifact("uki").unwrap().zeros, 0);
    assert!(b.len() < (carried as usize) + a.verity.len() + a.sig.len() + a.uki.len() + 8192, "the bundle carries the zeros: {} bytes", b.len());
    let out = Command::new(env!("CARGO_BIN_EXE_keeld")).arg("bundle").arg("verify").arg("--ca").arg(&m.pki.ca).arg("-").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut child = out;
    child.stdin.take().unwrap().write_all(&b).unwrap();
    assert!(child.wait().unwrap().success(), "keeld bundle verify refused a trimmed bundle");

    let (r, seen) = m.apply(&b, &m.opts());
    r.unwrap();
    let total = USR_SIZE + (a.verity.len() + a.sig.len() + a.uki.len()) as u64;
    let last = seen.iter().filter_map(|p| if let Progress::Writing { total_written, total_bytes, .. } = p { Some((*total_written, *total_bytes)) } else { None }).last();
    assert_eq!(last, Some((total, total)), "progress counts the zeros written");
    assert_eq!(m.read_part(types::USR_X86_64, 1, USR_SIZE as usize), a.usr, "2.0's bytes survive behind 2.1's data");
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("2.1"));

    // Zeros are counted against the partition: a written size past its end is refused.
    let mut big = arts("2.2", 1 << 20);
    big.usr.resize((USR_SIZE + (2 << 20)) as usize, 0);
    let m2 = Machine::new("zeros-full");
    let e = refused(&m2, &m2.bundle(&big), &m2.opts());
    assert!(matches!(&e, ApplyError::NoSpace { need, have, .. } if *need == USR_SIZE + (2 << 20) && *have == USR_SIZE), "{e}");
}

/// The usr-verity-sig artifact must be systemd's signature object with a root hash: without one
/// the slot's PARTUUIDs cannot be set, so the update fails and the slot stays empty.
#[test]
fn a_signature_without_a_root_hash_is_refused_and_a_failed_slot_loses_its_partuuids() {
    let m = Machine::new("nohash");
    let before = sfdisk_uuids(&m.disk());
    for sig in [b"not json".to_vec(), br#"{"signature":"x"}"#.to_vec(), br#"{"rootHash":"abc"}"#.to_vec()] {
        let mut a = arts("2.0", 1 << 20);
        a.sig = sig;
        let e = refused(&m, &m.bundle(&a), &m.opts());
        assert!(matches!(&e, ApplyError::Malformed(why) if why.contains("rootHash") || why.contains("JSON")), "{e}");
    }
    assert_eq!(sfdisk_uuids(&m.disk()), before);
    // A slot that held 2.0 and then failed: emptied with new random PARTUUIDs, so 2.0's root
    // hash no longer finds it; slot A kept its own.
    assert!(m.apply(&m.bundle(&arts("2.0", 1 << 20)), &m.opts()).0.is_ok());
    let staged = sfdisk_uuids(&m.disk());
    let mut a = arts("2.1", 1 << 20);
    a.sig = b"{}".to_vec();
    assert!(matches!(m.apply(&m.bundle(&a), &m.opts()).0, Err(ApplyError::Malformed(_))));
    let after = sfdisk_uuids(&m.disk());
    assert_eq!(after[1..4], before[1..4]);
    assert!(after[4] != staged[4] && after[5] != staged[5], "{staged:?} -> {after:?}");
    assert_eq!(m.slots.status().unwrap().slots[1].state, SlotState::Empty);
    assert_eq!(m.slots.reboot().unwrap().booted.as_deref(), Some("1.0"));
}
