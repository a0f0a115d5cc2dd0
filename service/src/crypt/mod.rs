//! The `crypt` backend: LUKS2 volumes, their key slots, TPM2 enrollment and recovery keys.
//!
//! Which volumes: on a Keel image (the live machine, `ID=keel` in os-release) the dm-crypt
//! mappings the inventory finds (root, swap, data drives); in simulated mode the LUKS2 image files
//! named by `--crypt-volume NAME=PATH` (a blank file there is a data drive that EncryptDataDrive
//! may encrypt). Discovered volumes of any other machine are shown, never changed.
//!
//! Every change goes through `systemd-cryptenroll` and `cryptsetup` (never through key handling of
//! keeld's own). To change a volume keeld unlocks it with its **service key**: a recovery key
//! systemd-cryptenroll generated for keeld alone when keeld first took charge of the volume (the
//! TPM2 slot unlocked it for that), kept in the state directory (mode 0600; on a Keel image that
//! directory lives on the TPM-bound root volume). The operator's recovery keys are other slots:
//! `Password` slots for keys the operator chose, `RecoveryKey` slots for keys GenerateRecoveryKey
//! made. A change to several volumes is all or nothing: every header is backed up first
//! (`luksHeaderBackup`) and restored if any step fails.

pub mod keys;
pub mod luks;
pub mod tools;
pub mod unlock;

use crate::host::{CmdOutput, Host};
use crate::inventory::storage::{Controller, Drive, Kind, Volume};
use crate::inventory::Inventory;
use luks::{Header, SlotKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tools::Call;
pub use unlock::UnlockedBy;

/// The Storage that holds the simulated platform's image files.
pub const SIM_STORAGE: &str = "Image0";
/// Argon2id memory of an operator's passphrase slot (KiB): 64 MiB.
const PASSWORD_KDF_MEMORY_KIB: u32 = 65536;
/// PCRs a new TPM2 binding uses when no existing one says otherwise (the Secure Boot policy).
const DEFAULT_PCRS: &[u32] = &[7];

/// One `--crypt-volume NAME=PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimDisk {
    pub name: String,
    pub path: PathBuf,
}

impl std::str::FromStr for SimDisk {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SimDisk, String> {
        let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
        if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("volume name {name:?}: 1-32 letters, digits, '-' or '_'"));
        }
        if path.is_empty() {
            return Err("empty path".into());
        }
        Ok(SimDisk { name: name.to_string(), path: PathBuf::from(path) })
    }
}

/// What keeld knows of one LUKS volume.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeState {
    /// The Volume Id (the dm-crypt name, or the simulated volume's name).
    pub id: String,
    /// The Storage Id the Volume is listed under.
    pub storage: String,
    /// The LUKS device (a partition, or the image file).
    pub device: String,
    pub simulated: bool,
    pub uuid: Option<String>,
    pub header: Option<Header>,
    /// Why the header could not be read.
    pub error: Option<String>,
    /// keeld may change it (it holds a service key for it, and the platform allows changes).
    pub managed: bool,
    pub service_slot: Option<u32>,
    pub unlocked_by: UnlockedBy,
}

/// A simulated disk image: a data drive, encrypted or not.
#[derive(Clone, Debug, Serialize)]
pub struct SimDrive {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub luks: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    pub volumes: Vec<VolumeState>,
    pub sim_drives: Vec<SimDrive>,
}

/// keeld's persistent encryption state (`crypt/state.json`, mode 0600).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The operator's recovery keys, so that a new data drive gets them too. Never shown.
    recovery_keys: Vec<StoredKey>,
    /// A recovery key has been handed to (or chosen by) an operator.
    retrieved: bool,
    /// The operator confirmed the current recovery keys are stored safely.
    confirmed: bool,
    /// LUKS UUID -> the key slot of keeld's service key.
    service: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    key: String,
    generated: bool,
}

/// The encryption part of the system's security status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub active: bool,
    pub recovery_keys: usize,
    pub retrieved: bool,
    pub confirmed: bool,
    pub boot_unlock: UnlockedBy,
    pub managed_volumes: usize,
}

/// Why an action was not carried out. Refusals change nothing.
#[derive(Debug)]
pub enum Refusal {
    /// A parameter's value breaks a rule (the text says which, without repeating secrets).
    BadValue { param: &'static str, why: String },
    /// The machine's state does not allow it now.
    State(String),
    /// The target is in use.
    InUse(String),
    NotFound { kind: &'static str, id: String },
    /// A tool failed; everything was put back as it was.
    Failed(String),
}

pub type Result<T> = std::result::Result<T, Refusal>;

pub struct Crypt {
    sim: Vec<SimDisk>,
    /// The TPM for systemd's tools (`--tpm2-device=`): keeld's `--tpm-tcti`, or `auto`.
    tpm_device: String,
    dir: PathBuf,
    /// Discovered volumes of the machine may be changed (a live Keel image).
    real_platform: bool,
    stored: Mutex<Stored>,
    view: RwLock<Arc<View>>,
    /// How this boot opened each volume: read once per volume, it does not change until reboot.
    unlocked: Mutex<HashMap<String, UnlockedBy>>,
    /// One change at a time.
    busy: Mutex<()>,
    /// The action that holds the right to change encryption now (see `claim`).
    changing: Arc<Mutex<Option<String>>>,
}

/// The right to change the machine's encryption, held by one action from its checks until its
/// work (a task's thread) ends. Dropping it lets the next action in.
pub struct Claim {
    slot: Arc<Mutex<Option<String>>>,
}

impl Claim {
    /// What holds the claim, as a second action's refusal names it (e.g. with the task's Id).
    pub fn describe(&self, what: impl Into<String>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Where a long change reports how far it got (0-100): a task's `progress`.
pub type Progress<'a> = &'a (dyn Fn(u8) + Sync);

/// For changes nobody watches.
pub fn no_progress(_: u8) {}

/// The percentage done after `done` of `total` steps, spread over 5-95.
fn step(done: usize, total: usize) -> u8 {
    (5 + 90 * done / total.max(1)).min(95) as u8
}

/// Whether the host runs a Keel image (os-release `ID=keel`).
pub fn is_keel_image(host: &Host) -> bool {
    ["/etc/os-release", "/usr/lib/os-release"].iter().filter_map(|p| host.read(p).ok()).next().is_some_and(|t| {
        t.lines().any(|l| l.trim() == "ID=keel" || l.trim() == "ID=\"keel\"")
    })
}

fn dump_args(dev: &str) -> [&str; 3] {
    ["luksDump", "--dump-json-metadata", dev]
}

/// Read a LUKS2 header through `run` (the host's runner for the machine's volumes, a live run for
/// image files): (UUID, header or why not).
fn read_header(run: &dyn Fn(&str, &[&str]) -> CmdOutput, dev: &str) -> (Option<String>, std::result::Result<Header, String>) {
    let out = run("cryptsetup", &dump_args(dev));
    if out.status != 0 {
        let why = if out.status < 0 { "cryptsetup is not available".to_string() } else { format!("cryptsetup luksDump exited with status {}", out.status) };
        return (None, Err(why));
    }
    let uuid = run("cryptsetup", &["luksUUID", dev]);
    let uuid = (uuid.status == 0).then(|| uuid.stdout.trim().to_string()).filter(|u| uuid::Uuid::parse_str(u).is_ok());
    (uuid, luks::parse(&out.stdout))
}

fn live(program: &str, args: &[&str]) -> CmdOutput {
    let o = Call::new(program, args).run();
    CmdOutput { status: o.status, stdout: o.stdout }
}

/// The block device of one of the machine's drives (a Drive Id of the inventory: the kernel name
/// of a disk, `vdb`, `sdc`, or of an NVMe controller, `nvme1`, whose one namespace is the disk),
/// under `root`.
pub fn machine_drive_device(root: &Path, drive: &str) -> Result<String> {
    let not_found = || Refusal::NotFound { kind: "Drive", id: drive.to_string() };
    if drive.is_empty() || drive.contains('/') || drive.starts_with('.') {
        return Err(not_found());
    }
    let disk = if root.join("sys/block").join(drive).exists() {
        drive.to_string()
    } else if root.join("sys/class/nvme").join(drive).exists() {
        let mut ns: Vec<String> = std::fs::read_dir(root.join("sys/class/nvme").join(drive))
            .map_err(|e| Refusal::Failed(format!("{drive}: {e}")))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.strip_prefix(drive).is_some_and(|r| r.starts_with('n') && r[1..].chars().all(|c| c.is_ascii_digit()) && r.len() > 1))
            .collect();
        ns.sort();
        match ns.as_slice() {
            [one] => one.clone(),
            [] => return Err(Refusal::State(format!("NVMe controller {drive} has no namespace to encrypt."))),
            _ => return Err(Refusal::State(format!("NVMe controller {drive} has {} namespaces ({}): keeld encrypts a drive with exactly one.", ns.len(), ns.join(", ")))),
        }
    } else {
        return Err(not_found());
    };
    if std::fs::read_dir(root.join("sys/block").join(&disk).join("holders")).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Refusal::InUse(format!("Drive {drive} ({disk}) is in use (it holds a device-mapper or RAID device).")));
    }
    Ok(format!("/dev/{disk}"))
}

/// The name a data drive's mapping gets (`/dev/mapper/NAME`, `systemd-cryptsetup@NAME.service`):
/// no character systemd would escape.
pub fn data_mapping_name(drive: &str) -> String {
    format!("keel_{}", drive.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>())
}

/// `/etc/crypttab` with one line for a data volume keeld encrypted (an earlier line of the same
/// name is replaced): unlocked by the TPM2 token at every boot, never by a prompt (`headless`),
/// and never holding the boot up (`nofail`).
pub fn crypttab_with(existing: &str, name: &str, luks_uuid: &str) -> String {
    format!("{}{name} UUID={luks_uuid} none tpm2-device=auto,headless=true,nofail,discard\n", crypttab_without(existing, name))
}

/// `/etc/crypttab` without the line of mapping `name`.
pub fn crypttab_without(existing: &str, name: &str) -> String {
    existing.lines().filter(|l| l.split_whitespace().next() != Some(name)).map(|l| format!("{l}\n")).collect()
}

/// Where systemd reads the volumes to open at boot.
pub const CRYPTTAB: &str = "/etc/crypttab";

/// A drive `encrypt_drive` encrypted.
#[derive(Debug)]
pub struct Encrypted {
    /// The simulated volume's Id (a simulated drive).
    pub volume: String,
    /// The LUKS2 device.
    pub device: String,
    /// The mapping systemd opens it as (one of the machine's drives; listed in /etc/crypttab).
    pub mapping: Option<String>,
}

/// The commands `keeld host record` captures for the machine's LUKS volumes.
pub fn commands(host: &Host) -> Vec<(String, Vec<String>)> {
    let mut v = vec![];
    for c in crate::inventory::storage::controllers(host, None) {
        for vol in c.volumes.iter().filter(|x| x.luks == "LUKS2") {
            if let Some(dev) = &vol.device {
                v.push(("cryptsetup".to_string(), dump_args(dev).iter().map(|s| s.to_string()).collect()));
                v.push(("cryptsetup".to_string(), vec!["luksUUID".to_string(), dev.clone()]));
            }
            let unit = unlock::unit(&vol.dm_name);
            v.push(("journalctl".to_string(), unlock::journal_args(&unit).iter().map(|s| s.to_string()).collect()));
        }
    }
    v
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut b).expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Crypt {
    pub fn open(state_dir: &Path, sim: Vec<SimDisk>, tcti: Option<String>, host: &Host) -> std::io::Result<Crypt> {
        let dir = state_dir.join("crypt");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let stored = match std::fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("crypt/state.json: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(e),
        };
        Ok(Crypt {
            sim,
            tpm_device: tcti.unwrap_or_else(|| "auto".into()),
            dir,
            real_platform: host.is_live() && is_keel_image(host),
            stored: Mutex::new(stored),
            view: RwLock::new(Arc::new(View::default())),
            unlocked: Mutex::new(HashMap::new()),
            busy: Mutex::new(()),
            changing: Arc::new(Mutex::new(None)),
        })
    }

    /// Take the right to change encryption for `what` (an action's name): refused (`InUse`) while
    /// another action holds it, so that one change runs at a time and a second is refused at once
    /// rather than queued behind a task.
    pub fn claim(&self, what: &str) -> Result<Claim> {
        let mut c = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = c.as_ref() {
            return Err(Refusal::InUse(format!("{other} is changing the encryption now: wait for it to end, then try again.")));
        }
        *c = Some(what.to_string());
        Ok(Claim { slot: self.changing.clone() })
    }

    /// Whether keeld manages encryption here at all (a Keel image, or simulated volumes).
    pub fn active(&self) -> bool {
        self.real_platform || !self.sim.is_empty()
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap().clone()
    }

    /// The operator's recovery keys as keeld keeps them (for a configuration backup that asks
    /// for them; never shown otherwise).
    pub fn recovery_keys(&self) -> Vec<String> {
        self.stored.lock().unwrap().recovery_keys.iter().map(|k| k.key.clone()).collect()
    }

    fn save(&self, s: &Stored) -> Result<()> {
        let data = serde_json::to_vec_pretty(s).map_err(|e| Refusal::Failed(e.to_string()))?;
        crate::store::write_atomic(&self.dir.join("state.json"), &data, 0o600).map_err(|e| Refusal::Failed(format!("writing crypt/state.json: {e}")))
    }

    fn key_path(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("service-{uuid}.key"))
    }

    fn unlocked_by(&self, host: &Host, id: &str, has_tpm2: bool) -> UnlockedBy {
        let mut c = self.unlocked.lock().unwrap();
        *c.entry(id.to_string()).or_insert_with(|| {
            let unit = unlock::unit(id);
            let out = host.run("journalctl", &unlock::journal_args(&unit));
            if out.status == 0 { unlock::classify(&out.stdout, has_tpm2) } else { UnlockedBy::Unknown }
        })
    }

    /// Read every volume again; add the simulated Storage to `inv`. Blocking.
    pub fn refresh(&self, host: &Host, inv: &mut Inventory) {
        let stored = self.stored.lock().unwrap().clone();
        let mut view = View::default();
        let host_run = |p: &str, a: &[&str]| host.run(p, a);
        let make = |id: String, storage: String, dev: String, simulated: bool, run: &dyn Fn(&str, &[&str]) -> CmdOutput| {
            let (uuid, header) = read_header(run, &dev);
            let (header, error) = match header {
                Ok(h) => (Some(h), None),
                Err(e) => (None, Some(e)),
            };
            let service_slot = uuid.as_ref().and_then(|u| stored.service.get(u).copied()).filter(|s| header.as_ref().is_some_and(|h| h.slots.iter().any(|x| x.slot == *s)));
            let may_change = simulated || self.real_platform;
            let managed = may_change && service_slot.is_some() && uuid.as_ref().is_some_and(|u| self.key_path(u).exists());
            let has_tpm2 = header.as_ref().is_some_and(|h| h.tpm2().is_some());
            let unlocked_by = if header.is_some() { self.unlocked_by(host, &id, has_tpm2) } else { UnlockedBy::Unknown };
            VolumeState { id, storage, device: dev, simulated, uuid, header, error, managed, service_slot, unlocked_by }
        };
        for c in &inv.storage {
            for v in c.volumes.iter().filter(|v| v.luks == "LUKS2") {
                if let Some(dev) = &v.device {
                    view.volumes.push(make(v.id.clone(), c.id.clone(), dev.clone(), false, &host_run));
                }
            }
        }
        let taken: Vec<String> = inv.storage.iter().flat_map(|c| c.drives.iter().map(|d| d.id.clone())).collect();
        for d in &self.sim {
            if taken.contains(&d.name) {
                log::error!("--crypt-volume {}: the machine has a drive of that name; ignored", d.name);
                continue;
            }
            let Ok(meta) = std::fs::metadata(&d.path) else {
                log::warn!("--crypt-volume {}: {} is missing", d.name, d.path.display());
                continue;
            };
            let dev = d.path.to_string_lossy().into_owned();
            let v = make(d.name.clone(), SIM_STORAGE.into(), dev, true, &live);
            let luks = v.header.is_some();
            if luks {
                view.volumes.push(v);
            }
            view.sim_drives.push(SimDrive { name: d.name.clone(), path: d.path.clone(), size: meta.len(), luks });
        }
        if !view.sim_drives.is_empty() {
            inv.storage.push(Controller {
                id: SIM_STORAGE.into(),
                kind: Kind::Image,
                driver: None,
                pci: None,
                model: None,
                serial: None,
                firmware: None,
                drives: view.sim_drives.iter().map(|d| Drive { id: d.name.clone(), capacity_bytes: Some(d.size), ..Default::default() }).collect(),
                volumes: view
                    .volumes
                    .iter()
                    .filter(|v| v.simulated)
                    .map(|v| Volume {
                        id: v.id.clone(),
                        dm_name: v.id.clone(),
                        capacity_bytes: view.sim_drives.iter().find(|d| d.name == v.id).map(|d| d.size),
                        luks: "LUKS2".into(),
                        drives: vec![v.id.clone()],
                        device: Some(v.device.clone()),
                    })
                    .collect(),
            });
        }
        *self.view.write().unwrap() = Arc::new(view);
    }

    pub fn status(&self) -> Status {
        let s = self.stored.lock().unwrap();
        let view = self.view();
        let with_record: Vec<UnlockedBy> = view.volumes.iter().map(|v| v.unlocked_by).filter(|u| *u != UnlockedBy::Unknown).collect();
        let boot_unlock = if with_record.contains(&UnlockedBy::RecoveryKey) {
            UnlockedBy::RecoveryKey
        } else if with_record.contains(&UnlockedBy::TPM) {
            UnlockedBy::TPM
        } else {
            UnlockedBy::Unknown
        };
        Status {
            active: self.active(),
            recovery_keys: s.recovery_keys.len(),
            retrieved: s.retrieved,
            confirmed: s.confirmed,
            boot_unlock,
            managed_volumes: view.volumes.iter().filter(|v| v.managed).count(),
        }
    }

    // ------------------------------------------------------------ taking charge

    /// Take charge of every volume keeld may change but holds no key for, by having the TPM unlock
    /// it and enrolling a service key (systemd-cryptenroll `--unlock-tpm2-device`, systemd 256+).
    /// Returns whether any volume was taken.
    pub fn adopt(&self) -> bool {
        let _busy = self.busy.lock().unwrap();
        let view = self.view();
        let mut any = false;
        for v in view.volumes.iter().filter(|v| (v.simulated || self.real_platform) && !v.managed) {
            let (Some(uuid), Some(h)) = (&v.uuid, &v.header) else { continue };
            if h.tpm2().is_none() {
                log::warn!("volume {}: no TPM2 slot and no service key: keeld cannot take charge of it", v.id);
                continue;
            }
            let unlock = format!("--unlock-tpm2-device={}", self.tpm_device);
            let call = Call::new("systemd-cryptenroll", &[&unlock, "--recovery-key", &v.device]);
            let out = call.run();
            let key = out.stdout.trim().to_string();
            if !out.ok() || !keys::is_systemd_recovery_key(&key) {
                log::warn!("volume {}: the TPM did not unlock it, keeld cannot take charge of it ({}: {})", v.id, call.describe(), out.stderr.trim());
                continue;
            }
            let slot = match self.new_slot(&v.device, h, SlotKind::RecoveryKey) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("volume {}: {e:?}", v.id);
                    continue;
                }
            };
            if let Err(e) = crate::store::write_atomic(&self.key_path(uuid), key.as_bytes(), 0o600) {
                log::error!("volume {}: keeping its service key: {e}", v.id);
                continue;
            }
            let mut s = self.stored.lock().unwrap();
            s.service.insert(uuid.clone(), slot);
            let snapshot = s.clone();
            drop(s);
            if let Err(e) = self.save(&snapshot) {
                log::error!("volume {}: {e:?}", v.id);
                continue;
            }
            log::info!("volume {}: keeld took charge of it (its service key is in key slot {slot})", v.id);
            any = true;
        }
        any
    }

    // ------------------------------------------------------------ helpers for changes

    /// The header of `dev` as it is now.
    fn header_now(&self, dev: &str) -> Result<Header> {
        read_header(&live, dev).1.map_err(Refusal::Failed)
    }

    /// The one slot of `kind` that `after` has and `before` had not.
    fn new_slot(&self, dev: &str, before: &Header, kind: SlotKind) -> Result<u32> {
        let after = self.header_now(dev)?;
        after
            .slots
            .iter()
            .find(|s| s.kind == kind && !before.slots.iter().any(|b| b.slot == s.slot))
            .map(|s| s.slot)
            .ok_or_else(|| Refusal::Failed(format!("{dev}: the new {} key slot is not in the header", kind.name())))
    }

    /// The managed volumes, with their headers read now. Refused when there are none.
    fn managed(&self) -> Result<Vec<(VolumeState, Header, PathBuf)>> {
        let view = self.view();
        let mut out = vec![];
        for v in view.volumes.iter().filter(|v| v.managed) {
            let h = self.header_now(&v.device)?;
            let key = self.key_path(v.uuid.as_deref().unwrap_or_default());
            out.push((v.clone(), h, key));
        }
        if out.is_empty() {
            return Err(Refusal::State(if self.view().volumes.is_empty() {
                "There is no LUKS2 volume keeld could manage on this machine.".into()
            } else {
                "keeld holds no service key for any encrypted volume: the TPM did not unlock them when keeld started.".into()
            }));
        }
        Ok(out)
    }

    fn run(&self, call: Call) -> Result<tools::Out> {
        let out = call.run();
        if out.ok() {
            Ok(out)
        } else {
            Err(Refusal::Failed(format!("{} exited with status {}: {}", call.describe(), out.status, out.stderr.trim())))
        }
    }

    /// Back up the headers of `devs`, run `f`, and put every header back if it fails.
    fn all_or_nothing<T>(&self, devs: &[String], f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut backups = vec![];
        let cleanup = |b: &[(String, PathBuf)]| {
            for (_, p) in b {
                let _ = std::fs::remove_file(p);
            }
        };
        for (i, dev) in devs.iter().enumerate() {
            let p = self.dir.join(format!("header-backup-{i}.img"));
            let _ = std::fs::remove_file(&p);
            let file = p.to_string_lossy().into_owned();
            if let Err(e) = self.run(Call::new("cryptsetup", &["luksHeaderBackup", dev, "--header-backup-file", &file])) {
                cleanup(&backups);
                return Err(e);
            }
            backups.push((dev.clone(), p));
        }
        let r = f();
        let mut not_restored = vec![];
        if r.is_err() {
            for (dev, p) in &backups {
                let file = p.to_string_lossy().into_owned();
                let out = Call::new("cryptsetup", &["luksHeaderRestore", "-q", dev, "--header-backup-file", &file]).run();
                if out.ok() {
                    log::warn!("{dev}: header restored after a failed change");
                } else {
                    log::error!("{dev}: restoring its header failed: {}", out.stderr.trim());
                    not_restored.push(dev.clone());
                }
            }
        }
        cleanup(&backups);
        // A failure says whether everything was put back (tasks show it as their resolution).
        r.map_err(|e| match e {
            Refusal::Failed(why) if not_restored.is_empty() => Refusal::Failed(format!("{why}. Every volume's header was restored: nothing was changed.")),
            Refusal::Failed(why) => Refusal::Failed(format!("{why}. Restoring the header of {} failed: see keeld's log.", not_restored.join(", "))),
            other => other,
        })
    }

    /// Enroll `key` on `dev` as a recovery key as systemd does (`systemd-recovery` token, minimal
    /// key derivation: the key carries 256 bits). Returns its slot.
    fn add_generated_key(&self, dev: &str, unlock_key: &Path, key: &str) -> Result<u32> {
        let before = self.header_now(dev)?;
        let unlock = unlock_key.to_string_lossy().into_owned();
        self.run(Call::new("cryptsetup", &["luksAddKey", "--batch-mode", "--key-file", &unlock, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha512", dev, "-"]).stdin(key.as_bytes()))?;
        let slot = self.new_slot(dev, &before, SlotKind::Password)?;
        let token = serde_json::json!({ "type": "systemd-recovery", "keyslots": [slot.to_string()] }).to_string();
        self.run(Call::new("cryptsetup", &["token", "import", dev]).stdin(token.as_bytes()))?;
        Ok(slot)
    }

    /// Enroll an operator-chosen key: a passphrase slot with Argon2id at a fixed memory cost
    /// (`PASSWORD_KDF_MEMORY_KIB`, one lane) and cryptsetup's time-based iteration count.
    /// libcryptsetup's default would size the memory to half the machine's RAM and its lanes to the
    /// CPUs, which fails inside keeld's unit (its memory is capped) with "Not compatible PBKDF
    /// options", as seen on the Keel image; an operator's 15+ character key does not need more.
    fn add_password(&self, dev: &str, unlock_key: &Path, key: &str) -> Result<()> {
        let unlock = unlock_key.to_string_lossy().into_owned();
        let memory = PASSWORD_KDF_MEMORY_KIB.to_string();
        self.run(Call::new("cryptsetup", &["luksAddKey", "--batch-mode", "--key-file", &unlock, "--pbkdf", "argon2id", "--pbkdf-memory", &memory, "--pbkdf-parallel", "1", dev, "-"]).stdin(key.as_bytes()))?;
        Ok(())
    }

    fn wipe(&self, dev: &str, unlock_key: &Path, slots: &[u32]) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let unlock = format!("--unlock-key-file={}", unlock_key.display());
        let list: Vec<String> = slots.iter().map(u32::to_string).collect();
        let wipe = format!("--wipe-slot={}", list.join(","));
        self.run(Call::new("systemd-cryptenroll", &[&unlock, &wipe, dev]))?;
        Ok(())
    }

    /// Passphrase slots (the operator's keys and anything typed) other than keeld's own.
    fn operator_slots(h: &Header, service: Option<u32>) -> Vec<u32> {
        h.slots.iter().filter(|s| s.kind.is_passphrase() && Some(s.slot) != service).map(|s| s.slot).collect()
    }

    // ------------------------------------------------------------ actions

    /// Why `new` may not become the recovery keys (the key rules only: no volume is read).
    pub fn check_recovery_keys(new: &[String]) -> Result<()> {
        if new.is_empty() {
            return Err(Refusal::BadValue { param: "RecoveryKeys", why: "At least one recovery key is needed.".into() });
        }
        if new.len() > keys::MAX_KEYS {
            return Err(Refusal::BadValue { param: "RecoveryKeys", why: format!("At most {} recovery keys.", keys::MAX_KEYS) });
        }
        for (i, k) in new.iter().enumerate() {
            keys::check(k).map_err(|why| Refusal::BadValue { param: "RecoveryKeys", why: format!("Key {}: {why}", i + 1) })?;
            if new[..i].contains(k) {
                return Err(Refusal::BadValue { param: "RecoveryKeys", why: format!("Key {} repeats an earlier one.", i + 1) });
            }
        }
        Ok(())
    }

    /// Every refusal `set_recovery_keys(new)` would give before changing anything.
    pub fn check_set_recovery_keys(&self, new: &[String]) -> Result<()> {
        let _busy = self.busy.lock().unwrap();
        Self::check_recovery_keys(new)?;
        self.managed().map(drop)
    }

    /// Replace the operator's recovery keys on every managed volume by `new`.
    pub fn set_recovery_keys(&self, new: Vec<String>, progress: Progress) -> Result<()> {
        let _busy = self.busy.lock().unwrap();
        Self::check_recovery_keys(&new)?;
        let vols = self.managed()?;
        let devs: Vec<String> = vols.iter().map(|(v, ..)| v.device.clone()).collect();
        // Each key is one slow enrollment (systemd's key derivation for typed passphrases).
        let steps = vols.len() * (new.len() + 1);
        progress(step(0, steps));
        self.all_or_nothing(&devs, || {
            let mut done = 0;
            for (v, h, key) in &vols {
                for k in &new {
                    self.add_password(&v.device, key, k)?;
                    done += 1;
                    progress(step(done, steps));
                }
                self.wipe(&v.device, key, &Self::operator_slots(h, v.service_slot))?;
                done += 1;
                progress(step(done, steps));
                log::info!("volume {}: recovery keys replaced ({} key(s))", v.id, new.len());
            }
            Ok(())
        })?;
        let mut s = self.stored.lock().unwrap();
        s.recovery_keys = new.into_iter().map(|key| StoredKey { key, generated: false }).collect();
        s.retrieved = true;
        s.confirmed = false;
        let snap = s.clone();
        drop(s);
        self.save(&snap)
    }

    /// Generate a recovery key with systemd-cryptenroll, enroll it on every managed volume (after
    /// the others, or instead of them) and return it: the only time it is shown.
    pub fn generate_recovery_key(&self, replace: bool) -> Result<String> {
        let _busy = self.busy.lock().unwrap();
        let vols = self.managed()?;
        let devs: Vec<String> = vols.iter().map(|(v, ..)| v.device.clone()).collect();
        let key = self.all_or_nothing(&devs, || {
            let mut key = String::new();
            for (i, (v, h, unlock_key)) in vols.iter().enumerate() {
                let new_slot = if i == 0 {
                    let unlock = format!("--unlock-key-file={}", unlock_key.display());
                    let out = self.run(Call::new("systemd-cryptenroll", &[&unlock, "--recovery-key", &v.device]))?;
                    key = out.stdout.trim().to_string();
                    if !keys::is_systemd_recovery_key(&key) {
                        return Err(Refusal::Failed("systemd-cryptenroll printed no recovery key".into()));
                    }
                    self.new_slot(&v.device, h, SlotKind::RecoveryKey)?
                } else {
                    self.add_generated_key(&v.device, unlock_key, &key)?
                };
                if replace {
                    let old: Vec<u32> = Self::operator_slots(h, v.service_slot).into_iter().filter(|s| *s != new_slot).collect();
                    self.wipe(&v.device, unlock_key, &old)?;
                }
                log::info!("volume {}: a generated recovery key enrolled in key slot {new_slot}{}", v.id, if replace { ", the others removed" } else { "" });
            }
            Ok(key)
        })?;
        let mut s = self.stored.lock().unwrap();
        if replace {
            s.recovery_keys.clear();
        }
        s.recovery_keys.push(StoredKey { key: key.clone(), generated: true });
        s.retrieved = true;
        s.confirmed = false;
        let snap = s.clone();
        drop(s);
        self.save(&snap)?;
        Ok(key)
    }

    /// The operator says the current recovery keys are stored safely.
    pub fn confirm_stored(&self) -> Result<()> {
        let _busy = self.busy.lock().unwrap();
        let mut s = self.stored.lock().unwrap();
        if s.recovery_keys.is_empty() {
            return Err(Refusal::State("There is no recovery key to confirm: set or generate one first.".into()));
        }
        s.confirmed = true;
        let snap = s.clone();
        drop(s);
        self.save(&snap)
    }

    /// The managed volumes a rebind changes, or why it is refused (nothing is changed).
    fn rebind_targets(&self, tpm_present: bool) -> Result<Vec<(VolumeState, Header, PathBuf)>> {
        if !tpm_present {
            return Err(Refusal::State("This machine has no TPM.".into()));
        }
        let vols = self.managed()?;
        let by: Vec<UnlockedBy> = vols.iter().map(|(v, ..)| v.unlocked_by).collect();
        if !by.contains(&UnlockedBy::RecoveryKey) {
            return Err(Refusal::State(if by.iter().all(|b| *b == UnlockedBy::TPM) {
                "The TPM unlocked every encrypted volume at this boot: its binding is current. Rebinding is only for a boot that needed a recovery key.".into()
            } else {
                "There is no record that this boot needed a recovery key (systemd-cryptsetup's journal for the volumes): refusing to trust the current PCR values.".into()
            }));
        }
        Ok(vols)
    }

    /// Every refusal `rebind_tpm` would give before changing anything.
    pub fn check_rebind_tpm(&self, tpm_present: bool) -> Result<()> {
        let _busy = self.busy.lock().unwrap();
        self.rebind_targets(tpm_present).map(drop)
    }

    /// Bind the TPM2 slot of every managed volume to the PCR values of now. Only after a boot
    /// where the TPM could not open a volume: when it opened them all, its binding is current, and
    /// rebinding would only trust whatever was measured this time.
    pub fn rebind_tpm(&self, tpm_present: bool, progress: Progress) -> Result<Vec<String>> {
        let _busy = self.busy.lock().unwrap();
        let vols = self.rebind_targets(tpm_present)?;
        let devs: Vec<String> = vols.iter().map(|(v, ..)| v.device.clone()).collect();
        progress(step(0, vols.len()));
        self.all_or_nothing(&devs, || {
            let mut done = vec![];
            for (v, h, key) in &vols {
                let pcrs: Vec<u32> = h.tpm2().map(|t| t.pcrs.clone()).filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PCRS.to_vec());
                let old: Vec<u32> = h.slots_of(SlotKind::TPM2).map(|s| s.slot).collect();
                // Wipe first, then enroll: systemd-cryptenroll would skip an enrollment whose
                // policy equals the old one, and the old sealed key may be what no longer works.
                self.wipe(&v.device, key, &old)?;
                let unlock = format!("--unlock-key-file={}", key.display());
                let dev = format!("--tpm2-device={}", self.tpm_device);
                let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
                let pcr_arg = format!("--tpm2-pcrs={}", list.join("+"));
                self.run(Call::new("systemd-cryptenroll", &[&unlock, &dev, &pcr_arg, &v.device]))?;
                log::info!("volume {}: TPM2 slot bound to the current values of PCR {}", v.id, list.join("+"));
                done.push(v.id.clone());
                progress(step(done.len(), vols.len()));
            }
            Ok(done)
        })
    }

    /// What encrypting `drive` needs (its device, the recovery keys, the PCRs to bind), or why it
    /// is refused (nothing is changed).
    fn encrypt_plan(&self, drive: &str, tpm_present: bool) -> Result<(String, Vec<StoredKey>, Vec<u32>)> {
        let view = self.view();
        let (dev, luks) = match view.sim_drives.iter().find(|d| d.name == drive) {
            Some(d) => (d.path.to_string_lossy().into_owned(), d.luks),
            None if self.real_platform => (machine_drive_device(Path::new("/"), drive)?, false),
            None => return Err(Refusal::NotFound { kind: "Drive", id: drive.to_string() }),
        };
        if luks || live("cryptsetup", &["isLuks", &dev]).status == 0 {
            return Err(Refusal::InUse(format!("Drive {drive} is already encrypted.")));
        }
        // Anything blkid recognises (a partition table, a file system, RAID metadata) is data.
        if live("blkid", &["-p", "-o", "export", &dev]).status == 0 {
            return Err(Refusal::InUse(format!("Drive {drive} holds a partition table, file system or other signature: keeld encrypts blank drives only.")));
        }
        let keys = self.stored.lock().unwrap().recovery_keys.clone();
        if keys.is_empty() {
            return Err(Refusal::State("Set or generate a recovery key first: the new volume gets the same recovery keys as the others.".into()));
        }
        if !tpm_present {
            return Err(Refusal::State("This machine has no TPM to bind the new volume to.".into()));
        }
        let pcrs: Vec<u32> = view.volumes.iter().filter(|v| v.managed).find_map(|v| v.header.as_ref()?.tpm2().map(|t| t.pcrs.clone())).filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PCRS.to_vec());
        Ok((dev, keys, pcrs))
    }

    /// Every refusal `encrypt_drive` would give before changing anything.
    pub fn check_encrypt_drive(&self, drive: &str, tpm_present: bool) -> Result<()> {
        let _busy = self.busy.lock().unwrap();
        self.encrypt_plan(drive, tpm_present).map(drop)
    }

    /// Encrypt a blank data drive: LUKS2 with keeld's service key, a TPM2 slot bound like the
    /// other volumes, and the operator's recovery keys. Returns the new volume's Id. On failure
    /// the drive is left without any signature (blank to blkid and cryptsetup) and keeld keeps
    /// no key for it.
    pub fn encrypt_drive(&self, drive: &str, tpm_present: bool, progress: Progress) -> Result<Encrypted> {
        let _busy = self.busy.lock().unwrap();
        let (dev, keys, pcrs) = self.encrypt_plan(drive, tpm_present)?;
        let machine = !self.sim.iter().any(|d| d.name == drive);
        let mut mapping = None;
        let steps = keys.len() + 3;
        progress(step(0, steps));
        let service = random_hex(32);
        let tmp_key = self.dir.join(format!("service-new-{drive}.key"));
        crate::store::write_atomic(&tmp_key, service.as_bytes(), 0o600).map_err(|e| Refusal::Failed(e.to_string()))?;
        let mut kept_key: Option<PathBuf> = None;
        let r = (|| {
            // A 256-bit random key needs no slow key derivation (systemd does the same for its
            // TPM2 and recovery key slots).
            self.run(
                Call::new("cryptsetup", &["luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha512", "--key-file", "-", &dev])
                    .stdin(service.as_bytes()),
            )?;
            progress(step(1, steps));
            let (uuid, h) = read_header(&live, &dev);
            let (uuid, h) = (uuid.ok_or_else(|| Refusal::Failed("the new volume has no UUID".into()))?, h.map_err(Refusal::Failed)?);
            let slot = h.slots.first().map(|s| s.slot).ok_or_else(|| Refusal::Failed("the new volume has no key slot".into()))?;
            let unlock = format!("--unlock-key-file={}", tmp_key.display());
            let tdev = format!("--tpm2-device={}", self.tpm_device);
            let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
            self.run(Call::new("systemd-cryptenroll", &[&unlock, &tdev, &format!("--tpm2-pcrs={}", list.join("+")), &dev]))?;
            progress(step(2, steps));
            for (i, k) in keys.iter().enumerate() {
                if k.generated {
                    self.add_generated_key(&dev, &tmp_key, &k.key)?;
                } else {
                    self.add_password(&dev, &tmp_key, &k.key)?;
                }
                progress(step(3 + i, steps));
            }
            if machine {
                // One of the machine's own drives: systemd opens it now (the caller asks) and at
                // every boot, through /etc/crypttab and the TPM2 slot.
                let name = data_mapping_name(drive);
                let tab = Path::new(CRYPTTAB);
                let existing = match std::fs::read_to_string(tab) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(Refusal::Failed(format!("{CRYPTTAB}: {e}"))),
                };
                crate::store::write_atomic(tab, crypttab_with(&existing, &name, &uuid).as_bytes(), 0o644).map_err(|e| Refusal::Failed(format!("{CRYPTTAB}: {e}")))?;
                mapping = Some(name);
            }
            let key_path = self.key_path(&uuid);
            std::fs::rename(&tmp_key, &key_path).map_err(|e| Refusal::Failed(e.to_string()))?;
            kept_key = Some(key_path);
            let mut s = self.stored.lock().unwrap();
            let mut snap = s.clone();
            snap.service.insert(uuid, slot);
            // Written first, then made current: a failed write leaves keeld's record as it was.
            self.save(&snap)?;
            *s = snap;
            Ok(())
        })();
        if let Err(e) = r {
            // Leave the drive blank again, and no key for it.
            if let Some(name) = &mapping {
                if let Ok(t) = std::fs::read_to_string(CRYPTTAB) {
                    let _ = crate::store::write_atomic(Path::new(CRYPTTAB), crypttab_without(&t, name).as_bytes(), 0o644);
                }
            }
            let wiped = Call::new("wipefs", &["-a", &dev]).run();
            let _ = std::fs::remove_file(&tmp_key);
            if let Some(p) = kept_key {
                let _ = std::fs::remove_file(p);
            }
            return Err(match (e, wiped.ok()) {
                (Refusal::Failed(why), true) => Refusal::Failed(format!("{why}. The drive was left blank again (its new LUKS2 signatures erased).")),
                (Refusal::Failed(why), false) => Refusal::Failed(format!("{why}. Erasing the drive's new signatures failed too ({}): it may hold a partial LUKS2 header.", wiped.stderr.trim())),
                (other, _) => other,
            });
        }
        log::info!("drive {drive}: encrypted (LUKS2, TPM2 PCR {}, {} recovery key(s))", pcrs.iter().map(u32::to_string).collect::<Vec<_>>().join("+"), keys.len());
        Ok(Encrypted { volume: drive.to_string(), device: dev, mapping })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_drives_resolve_to_their_disk_and_busy_or_odd_ones_are_refused() {
        let root = std::env::temp_dir().join(format!("keel-crypt-drives-{}", uuid::Uuid::new_v4()));
        for d in ["sys/block/vdb", "sys/block/vda/holders/dm-0", "sys/block/nvme0n1", "sys/class/nvme/nvme0/nvme0n1", "sys/class/nvme/nvme1/nvme1n1", "sys/class/nvme/nvme1/nvme1n2", "sys/class/nvme/nvme2/device"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        assert_eq!(machine_drive_device(&root, "vdb").unwrap(), "/dev/vdb");
        assert_eq!(machine_drive_device(&root, "nvme0").unwrap(), "/dev/nvme0n1");
        let refused = |d: &str| match machine_drive_device(&root, d) {
            Err(Refusal::InUse(w)) | Err(Refusal::State(w)) => w,
            Err(Refusal::NotFound { id, .. }) => format!("not found: {id}"),
            other => panic!("{d}: {other:?}"),
        };
        assert!(refused("vda").contains("in use"));
        assert!(refused("nvme1").contains("2 namespaces (nvme1n1, nvme1n2)"));
        assert!(refused("nvme2").contains("no namespace"));
        for odd in ["sdz", "", "../vdb", ".", "nvme0/nvme0n1"] {
            assert!(refused(odd).starts_with("not found"), "{odd}");
        }
        // A recorded guest: eight NVMe controllers, one namespace each.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qemu-nvme8");
        assert_eq!(machine_drive_device(&fixture, "nvme3").unwrap(), "/dev/nvme3n1");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn crypttab_gets_one_line_per_data_volume() {
        assert_eq!(data_mapping_name("nvme0"), "keel_nvme0");
        assert_eq!(data_mapping_name("sd-x"), "keel_sd_x");
        let t = crypttab_with("", "keel_nvme0", "u1");
        assert_eq!(t, "keel_nvme0 UUID=u1 none tpm2-device=auto,headless=true,nofail,discard\n");
        let t = crypttab_with("# comment\nhome UUID=h none\n", "keel_nvme0", "u1");
        let t = crypttab_with(&t, "keel_nvme0", "u2");
        assert_eq!(t.lines().collect::<Vec<_>>(), ["# comment", "home UUID=h none", "keel_nvme0 UUID=u2 none tpm2-device=auto,headless=true,nofail,discard"]);
        assert_eq!(crypttab_without(&t, "keel_nvme0"), "# comment\nhome UUID=h none\n");
        assert_eq!(crypttab_without("keel_nvme0 UUID=u1 none\n", "keel_nvme0"), "");
    }

    #[test]
    fn crypt_volume_flags() {
        let d: SimDisk = "root=/tmp/root.img".parse().unwrap();
        assert_eq!((d.name.as_str(), d.path.as_path()), ("root", Path::new("/tmp/root.img")));
        assert!("root".parse::<SimDisk>().is_err());
        assert!("bad/name=/x".parse::<SimDisk>().is_err());
        assert!("=/x".parse::<SimDisk>().is_err());
        assert!("a=".parse::<SimDisk>().is_err());
    }

    #[test]
    fn one_claim_at_a_time_and_progress_steps() {
        let dir = std::env::temp_dir().join(format!("keel-crypt-claim-{}", uuid::Uuid::new_v4()));
        let crypt = Crypt::open(&dir, vec![], None, &Host::fixture(&dir)).unwrap();
        let c = crypt.claim("A").unwrap();
        c.describe("A (task 4)");
        match crypt.claim("B") {
            Err(Refusal::InUse(why)) => assert!(why.starts_with("A (task 4) is changing the encryption now"), "{why}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(c);
        let c = crypt.claim("B").unwrap();
        // A claim moves to the task's thread and is let go when the thread ends, even by a panic.
        std::thread::spawn(move || {
            let _c = c;
            panic!("the work panics");
        })
        .join()
        .unwrap_err();
        assert!(crypt.claim("C").is_ok());
        assert_eq!((step(0, 4), step(2, 4), step(4, 4), step(1, 0)), (5, 50, 95, 95));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keel_image_is_told_by_os_release() {
        let dir = std::env::temp_dir().join(format!("keel-crypt-osr-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/os-release"), "NAME=Debian\nID=debian\n").unwrap();
        assert!(!is_keel_image(&Host::fixture(&dir)));
        std::fs::write(dir.join("etc/os-release"), "NAME=Keel\nID=keel\nID_LIKE=debian\n").unwrap();
        assert!(is_keel_image(&Host::fixture(&dir)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A recorded machine with a dm-crypt root on NVMe: its header and this boot's journal are
    /// replayed through the host root; shown, never managed (not a live Keel image).
    #[test]
    fn a_recorded_machine_shows_its_volumes_slots_and_unlock() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("keel-crypt-rec-{}", uuid::Uuid::new_v4()));
        let put = |p: &str, v: &str| {
            let p = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        let ln = |p: &str, t: &str| {
            let p = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(t, p).unwrap();
        };
        let nv = "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0";
        ln(&format!("{nv}/driver"), "../../../../bus/pci/drivers/nvme");
        put(&format!("{nv}/nvme/nvme0/model"), "SAMSUNG MZQL23T8HCLS-00A07\n");
        ln(&format!("{nv}/nvme/nvme0/device"), "../../../0000:41:00.0");
        put(&format!("{nv}/nvme/nvme0/nvme0n1/size"), "7501476528\n");
        put(&format!("{nv}/nvme/nvme0/nvme0n1/nvme0n1p2/size"), "7499378688\n");
        ln("/sys/class/nvme/nvme0", "../../devices/pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0");
        ln("/sys/block/nvme0n1", "../devices/pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0/nvme0n1");
        put("/sys/devices/virtual/block/dm-0/size", "7499345920\n");
        put("/sys/devices/virtual/block/dm-0/dm/name", "root\n");
        put("/sys/devices/virtual/block/dm-0/dm/uuid", "CRYPT-LUKS2-6f1d3c8e4b2a4d7f9e0c1b2a3d4e5f60-root\n");
        ln("/sys/devices/virtual/block/dm-0/slaves/nvme0n1p2", "../../../../pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0/nvme0n1/nvme0n1p2");
        ln("/sys/block/dm-0", "../devices/virtual/block/dm-0");
        put("/etc/os-release", "ID=keel\n");
        let cmd = |prog: &str, args: &[&str], out: &str| {
            let o = CmdOutput { status: 0, stdout: out.into() };
            put(&format!("/{}/{}", crate::host::COMMANDS_DIR, crate::host::command_key(prog, args)), &serde_json::to_string(&o).unwrap());
        };
        let dump = r#"{"keyslots":{"0":{"type":"luks2","kdf":{"type":"pbkdf2"}},"1":{"type":"luks2","kdf":{"type":"pbkdf2"}}},
            "tokens":{"0":{"type":"systemd-tpm2","keyslots":["0"],"tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2_pubkey_pcrs":[11]},"1":{"type":"systemd-recovery","keyslots":["1"]}},
            "segments":{"0":{"encryption":"aes-xts-plain64"}}}"#;
        cmd("cryptsetup", &dump_args("/dev/nvme0n1p2"), dump);
        cmd("cryptsetup", &["luksUUID", "/dev/nvme0n1p2"], "6f1d3c8e-4b2a-4d7f-9e0c-1b2a3d4e5f60\n");
        let journal = [r#"{"MESSAGE":"Automatically discovered security TPM2 token unlocks volume."}"#, r#"{"MESSAGE":"Finished systemd-cryptsetup@root.service - Cryptography Setup for root."}"#].join("\n");
        cmd("journalctl", &unlock::journal_args(&unlock::unit("root")), &journal);

        let host = Host::fixture(&root);
        // What `keeld host record` captures for it.
        let recorded: Vec<String> = commands(&host).into_iter().map(|(p, a)| format!("{p} {}", a.join(" "))).collect();
        assert_eq!(recorded.len(), 3, "{recorded:?}");
        let state = root.join("state");
        let crypt = Crypt::open(&state, vec![], None, &host).unwrap();
        assert!(!crypt.active(), "a recording is never a platform keeld changes");
        let mut inv = crate::inventory::Inventory::default();
        inv.storage = crate::inventory::storage::controllers(&host, None);
        crypt.refresh(&host, &mut inv);
        let view = crypt.view();
        assert_eq!(view.volumes.len(), 1);
        let v = &view.volumes[0];
        assert_eq!((v.id.as_str(), v.storage.as_str(), v.device.as_str(), v.managed), ("root", "NVMe0", "/dev/nvme0n1p2", false));
        assert_eq!(v.uuid.as_deref(), Some("6f1d3c8e-4b2a-4d7f-9e0c-1b2a3d4e5f60"));
        let h = v.header.as_ref().unwrap();
        assert_eq!(h.slots.iter().map(|s| s.kind).collect::<Vec<_>>(), [SlotKind::TPM2, SlotKind::RecoveryKey]);
        assert_eq!(h.tpm2().unwrap().pubkey_pcrs, [11]);
        assert_eq!(v.unlocked_by, UnlockedBy::TPM);
        assert_eq!(crypt.status().boot_unlock, UnlockedBy::TPM);
        assert!(!crypt.adopt(), "nothing is taken in charge on a recording");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
