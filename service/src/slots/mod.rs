//! The A/B slot engine (backend `slots`): the boot disk's GPT, signed update bundles written
//! in one streaming pass to the slot that is not running, UKIs with boot counting in the ESP,
//! and (simulated platform) systemd-boot's selection rules for a reboot.
//!
//! Layout, after systemd's Discoverable Partitions and systemd-sysupdate: two slots, each a `usr`
//! partition with its `usr-verity` and `usr-verity-sig` partitions (the first usr partition in
//! the table is slot A, the second slot B; the n-th verity and verity-sig partitions belong to
//! the n-th usr partition). A filled slot's partitions are labelled `keel_<v>`, `keel_<v>_verity`
//! and `keel_<v>_verity_sig`; an unused (or being written) slot's are all `_empty`. Each version
//! boots from the UKI `EFI/Linux/keel_<v>[+LEFT-DONE].efi` in the ESP.
//!
//! Everything here blocks (disk I/O): call it from a blocking thread. `Slots` is `Send + Sync`;
//! one `apply` runs at a time (another gets `ApplyError::Busy`), and `status` answers while an
//! apply is writing.

pub mod boot;
pub mod bundle;
pub mod gpt;
pub mod platform;

use boot::Entry;
pub use bundle::{read_manifest, Manifest};
use gpt::{types, Gpt, Guid, Partition};
use platform::{Loader, SimLoader};
use serde::Serialize;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// The label of an unused slot's partitions.
pub const EMPTY: &str = "_empty";
/// Size of each write (and of each of the three buffers in flight).
const CHUNK: usize = 4 << 20;
/// The first line of a simulated UKI.
pub const SIM_UKI_MAGIC: &str = "KEEL-SIM-UKI 1";

/// Where a Keel image keeps the update CA (`--update-ca` default).
pub const DEFAULT_UPDATE_CA: &str = "/usr/lib/keel/update-ca.pem";
/// usr partition size of a new simulated disk (`--sim-usr-size` default): 64 MiB.
pub const DEFAULT_SIM_USR_SIZE: u64 = 64 << 20;
/// The version a new simulated disk runs: keeld's own.
pub const SIM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The engine `keeld serve` uses, as configured: `--platform real` acts on this machine (under
/// `--host-root` if given), `simulated` on `STATE/sim/`, `auto` is real on a Keel image and
/// simulated elsewhere.
pub fn open_configured(cfg: &crate::app::Config) -> io::Result<Slots> {
    let root = cfg.host_root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let real = match cfg.platform.as_str() {
        "real" => true,
        "simulated" => false,
        // A recorded machine (--host-root), even a recorded Keel image, is never the disk to
        // update: auto means real only on the live machine (as `--power auto` does).
        "auto" => cfg.host_root.is_none() && platform::is_keel_image(&root),
        other => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown platform {other:?} (simulated, real or auto)"))),
    };
    if real {
        Slots::open_real(&root)
    } else {
        Slots::open_simulated(&cfg.state_dir.join("sim"), SIM_VERSION, cfg.sim_usr_size)
    }
}

/// The architecture of this build in systemd's naming (`ApplyOptions::arch`).
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "arm64",
        "x86" => "x86",
        other => other,
    }
}

pub fn usr_label(version: &str) -> String {
    format!("keel_{version}")
}

/// What an apply must be told.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// The update CA (PEM) the bundle's signer must chain to.
    pub ca: PathBuf,
    /// This machine's architecture in systemd's naming, e.g. `x86-64`.
    pub arch: String,
    /// Accept a bundle older than the running version.
    pub allow_downgrade: bool,
}

/// Progress of an apply, in order: `ManifestVerified`, then for each artifact `Writing` (bytes
/// rising) and `Verifying`, then `Activating` and `Done`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Progress {
    /// The signature checked and the bundle accepted for this machine; nothing written yet.
    ManifestVerified { version: String, slot: String, total_bytes: u64 },
    /// Bytes of `artifact` written so far, and of the whole bundle.
    Writing { artifact: String, written: u64, size: u64, total_written: u64, total_bytes: u64 },
    /// `artifact` is written and fsynced; its hash is being compared.
    Verifying { artifact: String },
    /// Every artifact verified: the UKI and the slot label are being put in place.
    Activating,
    Done(Applied),
}

/// A completed apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub version: String,
    /// `A` or `B`.
    pub slot: String,
    /// The UKI's file name in `EFI/Linux/`, e.g. `keel_2.0+3.efi`.
    pub entry: String,
}

/// Why an apply refused or failed. Nothing of the running slot or its boot entry changed in any
/// case; when writing had started, the target slot is left labelled `_empty`.
#[derive(Debug)]
pub enum ApplyError {
    /// The manifest signature does not verify (or is not a CMS signature).
    BadSignature(String),
    /// The signature is valid but its certificate does not chain to the update CA.
    UntrustedSigner(String),
    WrongArchitecture { bundle: String, machine: String },
    Downgrade { bundle: String, running: String },
    /// The bundle needs at least `min_version` running.
    TooOld { min_version: String, running: String },
    SameVersion(String),
    /// The write would touch the running slot (or the running slot cannot be told apart).
    RunningSlot(String),
    NoSpace { what: String, need: u64, have: u64 },
    Mismatch { artifact: String },
    Truncated(String),
    Malformed(String),
    Io(io::Error),
    Busy,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ApplyError::*;
        match self {
            BadSignature(s) => write!(f, "bad bundle signature: {s}"),
            UntrustedSigner(s) => write!(f, "untrusted bundle signer: {s}"),
            WrongArchitecture { bundle, machine } => write!(f, "the bundle is for architecture {bundle}, this machine is {machine}"),
            Downgrade { bundle, running } => write!(f, "the bundle's version {bundle} is older than the running version {running} (downgrade not allowed)"),
            TooOld { min_version, running } => write!(f, "the bundle updates only from version {min_version} or newer; the running version is {running}"),
            SameVersion(v) => write!(f, "version {v} is already running"),
            RunningSlot(s) => write!(f, "refused to write to the running slot: {s}"),
            NoSpace { what, need: 0, .. } => write!(f, "not enough space for {what}: the file system is full"),
            NoSpace { what, need, have } => write!(f, "not enough space for {what}: {need} bytes needed, {have} available"),
            Mismatch { artifact } => write!(f, "artifact {artifact} does not match its SHA-256 in the manifest"),
            Truncated(s) => write!(f, "the bundle is truncated: {s}"),
            Malformed(s) => write!(f, "malformed bundle: {s}"),
            Io(e) => write!(f, "I/O error: {e}"),
            Busy => write!(f, "another update is being applied"),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<io::Error> for ApplyError {
    fn from(e: io::Error) -> Self {
        ApplyError::Io(e)
    }
}

/// State of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SlotState {
    /// Booted.
    Active,
    /// Filled, not booted, with a boot entry that has tries left: the next boot may pick it.
    Staged,
    /// Filled, not booted, blessed (or with no counted entry): a rollback target.
    Previous,
    /// Filled, not booted, its entry has no tries left: its boots failed.
    Failed,
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// `A` or `B`.
    pub id: String,
    /// The usr partition's label.
    pub label: String,
    pub version: Option<String>,
    /// The usr partition's unique GUID.
    pub partuuid: String,
    /// The usr partition's size in bytes.
    pub size: u64,
    pub booted: bool,
    pub state: SlotState,
    /// The file name of this slot's boot entry, if any.
    pub entry: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    pub file: String,
    pub id: String,
    pub version: String,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    pub blessed: bool,
    /// The slot holding this version, if any.
    pub slot: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextBoot {
    pub version: String,
    pub entry: String,
    pub reason: boot::Reason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `simulated` or `real`.
    pub platform: String,
    pub slots: Vec<SlotStatus>,
    /// In systemd-boot's menu order.
    pub entries: Vec<BootEntry>,
    /// The running version.
    pub booted: Option<String>,
    /// The entry systemd-boot would boot now.
    pub next_boot: Option<NextBoot>,
    pub default_entry: Option<String>,
    pub oneshot_entry: Option<String>,
}

/// One try of the simulated firmware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootAttempt {
    /// The entry's file name when it was picked (before its counter was decremented).
    pub entry: String,
    pub reason: boot::Reason,
    /// `None`: booted; else why the boot failed.
    pub failure: Option<String>,
}

/// The result of a simulated reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootOutcome {
    /// The version running now (`None`: nothing could boot).
    pub booted: Option<String>,
    pub slot: Option<String>,
    /// The entry booted (its file name after the counter was decremented).
    pub entry: Option<String>,
    /// Every try, failed ones first.
    pub attempts: Vec<BootAttempt>,
}

#[derive(Clone, Debug)]
enum Kind {
    Simulated { loader_file: PathBuf },
    /// The booted usr partition's number, from sysfs.
    Real { booted_partition: Option<u32> },
}

#[derive(Debug)]
struct Inner {
    kind: Kind,
    disk: PathBuf,
    /// The ESP's `EFI/Linux` directory.
    linux: PathBuf,
    loader: Loader,
}

/// The partitions of one slot.
#[derive(Clone, Debug)]
struct SlotParts {
    id: &'static str,
    usr: Partition,
    verity: Partition,
    sig: Partition,
}

impl SlotParts {
    fn version(&self) -> Option<String> {
        slot_version(&self.usr.name)
    }
    fn parts(&self) -> [&Partition; 3] {
        [&self.usr, &self.verity, &self.sig]
    }
}

fn slot_version(label: &str) -> Option<String> {
    label.strip_prefix("keel_").filter(|v| boot::valid_version(v)).map(str::to_string)
}

fn layout(gpt: &Gpt) -> io::Result<[SlotParts; 2]> {
    let usr: Vec<&Partition> = gpt.find_type(types::USR_X86_64).collect();
    let ver: Vec<&Partition> = gpt.find_type(types::USR_VERITY_X86_64).collect();
    let sig: Vec<&Partition> = gpt.find_type(types::USR_VERITY_SIG_X86_64).collect();
    if usr.len() != 2 || ver.len() != 2 || sig.len() != 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the disk has {} usr, {} usr-verity and {} usr-verity-sig partitions; an A/B layout needs two of each", usr.len(), ver.len(), sig.len()),
        ));
    }
    let mk = |i: usize, id| SlotParts { id, usr: usr[i].clone(), verity: ver[i].clone(), sig: sig[i].clone() };
    Ok([mk(0, "A"), mk(1, "B")])
}

/// The partitions of `gpt` whose type is one of `type_guids`; the types of the A/B slots and the
/// ESP are refused (a factory reset never removes what boots the machine).
fn matching<'a>(gpt: &'a Gpt, type_guids: &[&str]) -> io::Result<Vec<&'a Partition>> {
    for t in type_guids {
        if [types::ESP, types::USR_X86_64, types::USR_VERITY_X86_64, types::USR_VERITY_SIG_X86_64].contains(t) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("partition type {t} boots the machine and is never removed")));
        }
    }
    Ok(gpt.partitions.iter().filter(|p| type_guids.iter().any(|t| p.is_type(t))).collect())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

fn sha256_hex(data: &[u8]) -> String {
    bundle::hex(&openssl::sha::sha256(data))
}

/// The synthetic UKI of the simulated platform: it names the version and, like a real UKI's
/// `usrhash=` on the kernel command line, the usr image it may boot (SHA-256 and size, standing in
/// for the dm-verity root hash). A simulated boot succeeds only if a slot labelled with that version
/// holds exactly that usr.
pub fn sim_uki(version: &str, usr_sha256: &str, usr_size: u64) -> Vec<u8> {
    format!("{SIM_UKI_MAGIC}\nversion={version}\nusrhash={usr_sha256}\nusrsize={usr_size}\n").into_bytes()
}

/// The deterministic synthetic usr image of `version` (the simulated platform's first slot).
pub fn sim_usr(version: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 32);
    let mut block = openssl::sha::sha256(format!("keel-sim-usr:{version}").as_bytes());
    while out.len() < size {
        out.extend_from_slice(&block);
        block = openssl::sha::sha256(&block);
    }
    out.truncate(size);
    out
}

/// The A/B engine for one machine (or one simulated machine). `Send + Sync`: share it in an `Arc`.
pub struct Slots {
    inner: Mutex<Inner>,
    applying: Mutex<()>,
}

struct Plan {
    version: String,
    target: SlotParts,
    disk: PathBuf,
    linux: PathBuf,
    running: String,
}

impl Slots {
    /// The simulated platform in `dir`. The first start creates `dir/disk.img` (a sparse GPT image:
    /// ESP, usr-A + verity + verity-sig, usr-B + verity + verity-sig, root; usr partitions of
    /// `usr_size` bytes rounded up to MiB), fills slot A with the synthetic usr of
    /// `running_version`, puts its blessed UKI in `dir/esp/EFI/Linux/` and records in
    /// `dir/loader.json` that slot A is booted. Later starts use what is there (`running_version`
    /// is then ignored: the running version is what was last booted).
    pub fn open_simulated(dir: &Path, running_version: &str, usr_size: u64) -> io::Result<Slots> {
        fs::create_dir_all(dir)?;
        let loader_file = dir.join("loader.json");
        if !loader_file.exists() {
            create_sim(dir, running_version, usr_size)?;
        }
        let linux = dir.join("esp/EFI/Linux");
        fs::create_dir_all(&linux)?;
        let inner = Inner { kind: Kind::Simulated { loader_file: loader_file.clone() }, disk: dir.join("disk.img"), linux, loader: Loader::File(loader_file) };
        Slots::finish_open(inner)
    }

    /// The machine keeld runs on (a Keel image), every path under `root` (`/` in production; a
    /// fixture directory in tests): the disk holding the partition mounted at `/usr` (through
    /// `/proc/self/mountinfo` and sysfs; a dm-verity device resolves to its backing partitions),
    /// the ESP at `/efi` or `/boot`, and systemd-boot's variables in efivarfs. `reboot` is not
    /// available (the power backend reboots a real machine).
    pub fn open_real(root: &Path) -> io::Result<Slots> {
        let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo"))?;
        let dev = platform::mount_device(&mountinfo, "/usr").ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "nothing is mounted at /usr"))?;
        let parts = platform::backing_partitions(root, dev)?;
        let disk = root.join("dev").join(&parts[0].disk);
        let linux = platform::find_esp(root).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no ESP with EFI/Linux at /efi or /boot"))?.join("EFI/Linux");
        let gpt = Gpt::read(&File::open(&disk)?)?.0;
        let slots = layout(&gpt)?;
        let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
        let booted_partition = slots.iter().find(|s| s.parts().iter().any(|p| numbers.contains(&p.number()))).map(|s| s.usr.number());
        let inner = Inner { kind: Kind::Real { booted_partition }, disk, linux, loader: Loader::EfiVars(root.join("sys/firmware/efi/efivars")) };
        Slots::finish_open(inner)
    }

    /// Is the machine under `root` a Keel image (for `--platform auto`)?
    pub fn is_keel_image(root: &Path) -> bool {
        platform::is_keel_image(root)
    }

    /// Common to both platforms: repair a GPT whose two copies disagree (a relabel interrupted
    /// between them), remove leftovers of an interrupted apply (temporary UKIs; a counted entry
    /// whose version no slot holds, which an apply leaves when stopped between placing the UKI and
    /// labelling the slot).
    fn finish_open(inner: Inner) -> io::Result<Slots> {
        let f = OpenOptions::new().read(true).write(true).open(&inner.disk)?;
        let (gpt, health) = Gpt::read(&f)?;
        if !health.clean() {
            log::warn!("slots: repairing the GPT of {} ({health:?})", inner.disk.display());
            gpt.write(&f)?;
        }
        let slots = layout(&gpt)?;
        let selected = inner.loader.get(platform::ENTRY_SELECTED)?;
        let mut changed = false;
        for name in fs::read_dir(&inner.linux)?.flatten().filter_map(|e| e.file_name().into_string().ok()) {
            if name.starts_with(".keel_") && name.ends_with(".part") {
                log::warn!("slots: removing {name}, left by an interrupted update");
                fs::remove_file(inner.linux.join(&name))?;
                changed = true;
            } else if let Some(e) = boot::parse_entry(&name) {
                let held = slots.iter().any(|s| s.version().as_deref() == Some(e.version.as_str()));
                if !held && !e.blessed() && selected.as_deref() != Some(e.id.as_str()) {
                    log::warn!("slots: removing boot entry {name}: no slot holds version {}", e.version);
                    fs::remove_file(inner.linux.join(&name))?;
                    changed = true;
                }
            }
        }
        if changed {
            fsync_dir(&inner.linux)?;
        }
        Ok(Slots { inner: Mutex::new(inner), applying: Mutex::new(()) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn platform(&self) -> &'static str {
        match self.lock().kind {
            Kind::Simulated { .. } => "simulated",
            Kind::Real { .. } => "real",
        }
    }

    /// The running version (the label of the booted slot).
    pub fn running_version(&self) -> Option<String> {
        let inner = self.lock();
        inner.read().ok().and_then(|(_, slots)| inner.booted_slot(&slots).and_then(|s| s.version()))
    }

    pub fn status(&self) -> io::Result<Status> {
        self.lock().status()
    }

    /// The refusal checks of `apply` for a verified manifest, without writing anything (e.g. to
    /// answer a SimpleUpdate before its transfer starts).
    pub fn check(&self, m: &Manifest, opts: &ApplyOptions) -> Result<(), ApplyError> {
        self.lock().plan(m, opts).map(|_| ())
    }

    /// Verify and write a bundle read from `src` to the slot that is not running, in one pass.
    /// See the module documentation and `ApplyError` for what is refused.
    pub fn apply(&self, src: &mut dyn Read, opts: &ApplyOptions, progress: &mut dyn FnMut(Progress)) -> Result<Applied, ApplyError> {
        let _busy = self.writer().ok_or(ApplyError::Busy)?;
        let m = bundle::verify_manifest(&bundle::read_head(src)?, &opts.ca)?;
        let plan = self.lock().plan(&m, opts)?;
        let total = m.written_bytes();
        progress(Progress::ManifestVerified { version: m.version.clone(), slot: plan.target.id.to_string(), total_bytes: total });
        // From here on the target slot is `_empty` until everything is verified.
        self.lock().empty_slot(&plan)?;
        let tmp = plan.linux.join(format!(".keel_{}.efi.part", m.version));
        let res = write_artifacts(src, &m, &plan, &tmp, progress);
        let guids = match res {
            Ok(g) => g,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                let _ = fsync_dir(&plan.linux);
                log::warn!("slots: update to {} failed, slot {} left {EMPTY}: {e}", m.version, plan.target.id);
                return Err(e);
            }
        };
        progress(Progress::Activating);
        let applied = self.lock().activate(&plan, &tmp, guids).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        log::info!("slots: version {} written to slot {}, boot entry {}", applied.version, applied.slot, applied.entry);
        progress(Progress::Done(applied.clone()));
        Ok(applied)
    }

    /// Simulated platform only: a reboot by systemd-boot's rules. Pick `LoaderEntryOneShot`
    /// (consumed), else `LoaderEntryDefault`, else the newest entry with tries left; count the try
    /// (`+3` → `+2-1`); boot it. A boot succeeds only if a slot labelled with the entry's version
    /// holds the usr the UKI names; a failed boot is retried by the "firmware" with the next pick
    /// (counters going down) until one boots or nothing is left.
    pub fn reboot(&self) -> io::Result<BootOutcome> {
        let inner = self.lock();
        let Kind::Simulated { loader_file } = inner.kind.clone() else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "a simulated reboot needs the simulated platform"));
        };
        if matches!(self.applying.try_lock(), Err(TryLockError::WouldBlock)) {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, "an update is being written"));
        }
        inner.sim_reboot(&loader_file)
    }

    /// Mark the booted entry good (systemd-bless-boot): drop its `+LEFT-DONE` counter. Returns the
    /// new file name, or `None` when it was blessed already.
    pub fn bless(&self) -> io::Result<Option<String>> {
        self.lock().bless()
    }

    /// Make `version`'s entry the default (an explicit rollback to the other slot). The slot must
    /// hold that version; an entry without tries left gets `+3` again.
    pub fn set_default(&self, version: &str) -> io::Result<String> {
        self.lock().set_default(version)
    }

    /// Forget `LoaderEntryDefault`: the newest entry with tries left boots next.
    pub fn clear_default(&self) -> io::Result<()> {
        let inner = self.lock();
        if inner.loader.get(platform::ENTRY_DEFAULT)?.is_some() {
            inner.loader.set(platform::ENTRY_DEFAULT, None)?;
        }
        Ok(())
    }

    /// The partitions of the given types on the disk (labels), as `remove_partitions` would
    /// remove them; slot partitions never match (their types are not accepted).
    pub fn partitions_of_types(&self, type_guids: &[&str]) -> io::Result<Vec<String>> {
        let (gpt, _) = self.lock().read()?;
        Ok(matching(&gpt, type_guids)?.iter().map(|p| p.name.clone()).collect())
    }

    /// Remove the partitions of the given types from both copies of the disk's table (a factory
    /// reset: systemd-repart creates them afresh at the next boot, as on the first). Their blocks
    /// are not touched, and the running kernel keeps using them until the machine restarts (it
    /// does not re-read the table of a disk whose partitions are in use). Refused while an update
    /// is being written. Returns the labels of the partitions removed.
    pub fn remove_partitions(&self, type_guids: &[&str]) -> io::Result<Vec<String>> {
        let _busy = self.writer().ok_or_else(|| io::Error::new(io::ErrorKind::ResourceBusy, "an update is being written"))?;
        let inner = self.lock();
        let f = inner.open_disk(true)?;
        let (mut gpt, _) = Gpt::read(&f)?;
        let gone: Vec<(u32, String)> = matching(&gpt, type_guids)?.iter().map(|p| (p.index, p.name.clone())).collect();
        if gone.is_empty() {
            return Ok(vec![]);
        }
        for (i, _) in &gone {
            gpt.remove(*i)?;
        }
        gpt.write(&f)?;
        log::warn!("slots: removed {:?} from the table of {}", gone.iter().map(|g| &g.1).collect::<Vec<_>>(), inner.disk.display());
        Ok(gone.into_iter().map(|g| g.1).collect())
    }

    /// The right to write the disk's slots or table, held while an apply writes; `None` while
    /// another holds it.
    fn writer(&self) -> Option<MutexGuard<'_, ()>> {
        match self.applying.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Whether an apply is writing now.
    pub fn applying(&self) -> bool {
        matches!(self.applying.try_lock(), Err(TryLockError::WouldBlock))
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Slots>();
};

impl Inner {
    fn open_disk(&self, write: bool) -> io::Result<File> {
        OpenOptions::new().read(true).write(write).open(&self.disk)
    }

    fn read(&self) -> io::Result<(Gpt, [SlotParts; 2])> {
        let (gpt, _) = Gpt::read(&self.open_disk(false)?)?;
        let slots = layout(&gpt)?;
        Ok((gpt, slots))
    }

    fn booted_slot<'a>(&self, slots: &'a [SlotParts; 2]) -> Option<&'a SlotParts> {
        match &self.kind {
            Kind::Simulated { loader_file } => {
                let id = SimLoader::load(loader_file).ok()?.booted_slot?;
                slots.iter().find(|s| s.id == id)
            }
            // sysfs said which partition backs /usr; failing that, the version of the entry the
            // loader booted (LoaderEntrySelected).
            Kind::Real { booted_partition: Some(n) } => slots.iter().find(|s| s.usr.number() == *n),
            Kind::Real { booted_partition: None } => {
                let v = boot::parse_entry(&self.loader.get(platform::ENTRY_SELECTED).ok()??)?.version;
                slots.iter().find(|s| s.version().as_deref() == Some(v.as_str()))
            }
        }
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut v: Vec<Entry> = fs::read_dir(&self.linux)?.flatten().filter_map(|e| e.file_name().into_string().ok()).filter_map(|n| boot::parse_entry(&n)).collect();
        v.sort_by(boot::menu_order);
        Ok(v)
    }

    fn status(&self) -> io::Result<Status> {
        let (gpt, slots) = self.read()?;
        let booted = self.booted_slot(&slots).map(|s| s.id);
        let entries = self.entries()?;
        let slot_of = |v: &str| slots.iter().find(|s| s.version().as_deref() == Some(v)).map(|s| s.id.to_string());
        let default = self.loader.get(platform::ENTRY_DEFAULT)?;
        let oneshot = self.loader.get(platform::ENTRY_ONESHOT)?;
        let next_boot = boot::select(&entries, oneshot.as_deref(), default.as_deref()).map(|(e, reason)| NextBoot { version: e.version.clone(), entry: e.file.clone(), reason });
        let slot_status = slots
            .iter()
            .map(|s| {
                let version = s.version();
                let entry = version.as_ref().and_then(|v| entries.iter().find(|e| &e.version == v));
                let is_booted = booted == Some(s.id);
                let state = match (&version, entry) {
                    _ if is_booted => SlotState::Active,
                    (None, _) => SlotState::Empty,
                    (Some(_), Some(e)) if e.bad() => SlotState::Failed,
                    (Some(_), Some(e)) if !e.blessed() => SlotState::Staged,
                    _ => SlotState::Previous,
                };
                SlotStatus {
                    id: s.id.to_string(),
                    label: s.usr.name.clone(),
                    version,
                    partuuid: s.usr.unique_guid.to_string(),
                    size: s.usr.size(gpt.lba),
                    booted: is_booted,
                    state,
                    entry: entry.map(|e| e.file.clone()),
                }
            })
            .collect();
        Ok(Status {
            platform: match self.kind {
                Kind::Simulated { .. } => "simulated",
                Kind::Real { .. } => "real",
            }
            .into(),
            booted: self.booted_slot(&slots).and_then(|s| s.version()),
            slots: slot_status,
            entries: entries
                .iter()
                .map(|e| BootEntry {
                    file: e.file.clone(),
                    id: e.id.clone(),
                    version: e.version.clone(),
                    tries_left: e.tries_left,
                    tries_done: e.tries_done,
                    blessed: e.blessed(),
                    slot: slot_of(&e.version),
                })
                .collect(),
            next_boot,
            default_entry: default,
            oneshot_entry: oneshot,
        })
    }

    /// Every refusal check; the slot to write.
    fn plan(&self, m: &Manifest, opts: &ApplyOptions) -> Result<Plan, ApplyError> {
        if m.architecture != opts.arch {
            return Err(ApplyError::WrongArchitecture { bundle: m.architecture.clone(), machine: opts.arch.clone() });
        }
        let (gpt, slots) = self.read()?;
        let Some(booted) = self.booted_slot(&slots) else {
            return Err(ApplyError::RunningSlot("the running slot is not known (not booted from either slot), so neither may be written".into()));
        };
        let Some(running) = booted.version() else {
            return Err(ApplyError::RunningSlot(format!("the running slot {} has no version label ({:?})", booted.id, booted.usr.name)));
        };
        if m.version == running {
            return Err(ApplyError::SameVersion(running));
        }
        if boot::vercmp(&m.version, &running).is_lt() && !opts.allow_downgrade {
            return Err(ApplyError::Downgrade { bundle: m.version.clone(), running });
        }
        if let Some(min) = &m.min_version {
            if boot::vercmp(&running, min).is_lt() {
                return Err(ApplyError::TooOld { min_version: min.clone(), running });
            }
        }
        let target = slots.iter().find(|s| s.id != booted.id).expect("two slots").clone();
        // Never a partition of the running slot, nor one overlapping it.
        for t in target.parts() {
            for b in booted.parts() {
                if t.index == b.index || (t.first_lba <= b.last_lba && b.first_lba <= t.last_lba) {
                    return Err(ApplyError::RunningSlot(format!("partition {} of slot {} overlaps the running slot {}", t.number(), target.id, booted.id)));
                }
            }
        }
        for (name, p) in [("usr", &target.usr), ("usr-verity", &target.verity), ("usr-verity-sig", &target.sig)] {
            let a = m.artifact(name).expect("checked manifest");
            if a.written_size() > p.size(gpt.lba) {
                return Err(ApplyError::NoSpace { what: format!("artifact {name} in partition {} of slot {}", p.number(), target.id), need: a.written_size(), have: p.size(gpt.lba) });
            }
        }
        let uki = m.artifact("uki").expect("checked manifest");
        let mut have = esp_free(&self.linux)?;
        // The target's old entries are removed before the new UKI is written.
        if let Some(old) = target.version() {
            for e in self.entries()?.iter().filter(|e| e.version == old) {
                have += fs::metadata(self.linux.join(&e.file)).map(|md| md.len()).unwrap_or(0);
            }
        }
        if uki.size > have {
            return Err(ApplyError::NoSpace { what: "the UKI in the ESP".into(), need: uki.size, have });
        }
        Ok(Plan { version: m.version.clone(), target, disk: self.disk.clone(), linux: self.linux.clone(), running })
    }

    /// Label the target slot `_empty` (all three partitions, one table update), then remove its
    /// old boot entries.
    fn empty_slot(&self, plan: &Plan) -> io::Result<()> {
        let f = self.open_disk(true)?;
        let (mut gpt, _) = Gpt::read(&f)?;
        let slots = layout(&gpt)?;
        let t = slots.iter().find(|s| s.id == plan.target.id).expect("slot");
        let old = t.version();
        if t.parts().iter().any(|p| p.name != EMPTY) {
            // New random PARTUUIDs too: the initrd finds usr by the PARTUUIDs its usrhash names,
            // and a half-written slot must not be found by an old version's hash.
            for p in [&t.usr, &t.verity] {
                gpt.set_unique_guid(p.index, Guid::random())?;
            }
            gpt.relabel(&f, &[(t.usr.index, EMPTY), (t.verity.index, EMPTY), (t.sig.index, EMPTY)])?;
        }
        if let Some(old) = old.filter(|v| *v != plan.running) {
            for e in self.entries()?.iter().filter(|e| e.version == old) {
                fs::remove_file(self.linux.join(&e.file))?;
            }
            fsync_dir(&self.linux)?;
        }
        Ok(())
    }

    /// Everything verified: the UKI under its entry name, the default cleared so that the newest
    /// entry boots next, and the slot labelled with the version.
    /// `guids`: the PARTUUIDs of usr and its hash tree, from the signed root hash.
    fn activate(&self, plan: &Plan, tmp: &Path, (data_guid, hash_guid): (Guid, Guid)) -> Result<Applied, ApplyError> {
        let v = &plan.version;
        for e in self.entries()?.iter().filter(|e| &e.version == v && e.version != plan.running) {
            fs::remove_file(self.linux.join(&e.file))?;
        }
        let entry = boot::entry_file(v, Some(boot::TRIES), None);
        fs::rename(tmp, self.linux.join(&entry))?;
        fsync_dir(&self.linux)?;
        if self.loader.get(platform::ENTRY_DEFAULT)?.is_some() {
            self.loader.set(platform::ENTRY_DEFAULT, None)?;
        }
        let f = self.open_disk(true)?;
        let (mut gpt, _) = Gpt::read(&f)?;
        let slots = layout(&gpt)?;
        let t = slots.iter().find(|s| s.id == plan.target.id).expect("slot");
        gpt.set_unique_guid(t.usr.index, data_guid)?;
        gpt.set_unique_guid(t.verity.index, hash_guid)?;
        gpt.relabel(&f, &[(t.usr.index, &usr_label(v)), (t.verity.index, &format!("keel_{v}_verity")), (t.sig.index, &format!("keel_{v}_verity_sig"))])?;
        Ok(Applied { version: v.clone(), slot: plan.target.id.to_string(), entry })
    }

    fn sim_reboot(&self, loader_file: &Path) -> io::Result<BootOutcome> {
        let mut attempts = Vec::new();
        let mut state = SimLoader::load(loader_file)?;
        for _ in 0..16 {
            let entries = self.entries()?;
            let oneshot = state.vars.get(platform::ENTRY_ONESHOT).cloned();
            let default = state.vars.get(platform::ENTRY_DEFAULT).cloned();
            let Some((e, reason)) = boot::select(&entries, oneshot.as_deref(), default.as_deref()) else { break };
            let e = e.clone();
            if reason == boot::Reason::OneShot {
                state.vars.remove(platform::ENTRY_ONESHOT);
            }
            let mut file = e.file.clone();
            if let (Some(left), done) = (e.tries_left, e.tries_done) {
                if left > 0 {
                    file = boot::entry_file(&e.version, Some(left - 1), Some(done.unwrap_or(0) + 1));
                    fs::rename(self.linux.join(&e.file), self.linux.join(&file))?;
                    fsync_dir(&self.linux)?;
                }
                state.vars.insert(platform::BOOT_COUNT_PATH.into(), format!("\\EFI\\Linux\\{file}"));
            } else {
                state.vars.remove(platform::BOOT_COUNT_PATH);
            }
            state.vars.insert(platform::ENTRY_SELECTED.into(), e.id.clone());
            match self.sim_boot(&file, &e.version) {
                Ok(slot) => {
                    attempts.push(BootAttempt { entry: e.file.clone(), reason, failure: None });
                    state.booted_slot = Some(slot.to_string());
                    state.save(loader_file)?;
                    log::info!("slots: simulated boot of {file} (slot {slot})");
                    return Ok(BootOutcome { booted: Some(e.version.clone()), slot: Some(slot.to_string()), entry: Some(file), attempts });
                }
                Err(why) => {
                    log::warn!("slots: simulated boot of {file} failed: {why}");
                    attempts.push(BootAttempt { entry: e.file.clone(), reason, failure: Some(why) });
                }
            }
        }
        state.booted_slot = None;
        state.vars.remove(platform::ENTRY_SELECTED);
        state.vars.remove(platform::BOOT_COUNT_PATH);
        state.save(loader_file)?;
        Ok(BootOutcome { booted: None, slot: None, entry: None, attempts })
    }

    /// The simulated kernel: the UKI names a version and the usr it mounts; that slot must exist
    /// and hold exactly that usr (as dm-verity would refuse anything else).
    fn sim_boot(&self, file: &str, version: &str) -> Result<&'static str, String> {
        let path = self.linux.join(file);
        let md = fs::metadata(&path).map_err(|e| format!("{file}: {e}"))?;
        if md.len() > 1 << 20 {
            return Err(format!("{file} is not a simulated UKI"));
        }
        let text = fs::read_to_string(&path).map_err(|_| format!("{file} is not a simulated UKI"))?;
        let mut lines = text.lines();
        if lines.next() != Some(SIM_UKI_MAGIC) {
            return Err(format!("{file} is not a simulated UKI"));
        }
        let kv: std::collections::HashMap<&str, &str> = lines.filter_map(|l| l.split_once('=')).collect();
        if kv.get("version") != Some(&version) {
            return Err(format!("{file} carries version {:?}", kv.get("version")));
        }
        let hash = kv.get("usrhash").ok_or("no usrhash")?;
        let size: u64 = kv.get("usrsize").and_then(|s| s.parse().ok()).ok_or("no usrsize")?;
        let (gpt, slots) = self.read().map_err(|e| e.to_string())?;
        // As the initrd does: usr is the partition whose PARTUUID the root hash names.
        let (data_guid, _) = verity_partuuids(hash).ok_or("usrhash is not a root hash")?;
        let slot = slots.iter().find(|s| s.usr.unique_guid == data_guid).ok_or_else(|| format!("no usr partition with PARTUUID {data_guid} (from usrhash)"))?;
        if size > slot.usr.size(gpt.lba) {
            return Err("usr larger than its partition".into());
        }
        let f = self.open_disk(false).map_err(|e| e.to_string())?;
        let mut h = openssl::sha::Sha256::new();
        let mut buf = vec![0u8; CHUNK.min(size as usize).max(1)];
        let mut off = 0u64;
        while off < size {
            let n = buf.len().min((size - off) as usize);
            f.read_exact_at(&mut buf[..n], slot.usr.offset(gpt.lba) + off).map_err(|e| e.to_string())?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        if &bundle::hex(&h.finish()) != hash {
            return Err(format!("the usr of slot {} does not match the UKI's usrhash (verity would refuse it)", slot.id));
        }
        Ok(slot.id)
    }

    /// The booted entry: `LoaderBootCountPath` names its file while it is counted, otherwise
    /// `LoaderEntrySelected` its id.
    fn booted_entry(&self) -> io::Result<Option<Entry>> {
        let entries = self.entries()?;
        if let Some(p) = self.loader.get(platform::BOOT_COUNT_PATH)? {
            let name = p.rsplit(['\\', '/']).next().unwrap_or("");
            if let Some(e) = entries.iter().find(|e| e.file.eq_ignore_ascii_case(name)) {
                return Ok(Some(e.clone()));
            }
        }
        let sel = self.loader.get(platform::ENTRY_SELECTED)?;
        Ok(sel.and_then(|id| entries.into_iter().find(|e| e.id.eq_ignore_ascii_case(&id))))
    }

    fn bless(&self) -> io::Result<Option<String>> {
        let Some(e) = self.booted_entry()? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the booted entry is not in the ESP"));
        };
        if e.blessed() {
            return Ok(None);
        }
        fs::rename(self.linux.join(&e.file), self.linux.join(&e.id))?;
        fsync_dir(&self.linux)?;
        log::info!("slots: blessed {} -> {}", e.file, e.id);
        Ok(Some(e.id))
    }

    fn set_default(&self, version: &str) -> io::Result<String> {
        let (_, slots) = self.read()?;
        if !slots.iter().any(|s| s.version().as_deref() == Some(version)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no slot holds version {version}")));
        }
        let Some(e) = self.entries()?.into_iter().find(|e| e.version == version) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no boot entry for version {version}")));
        };
        if e.bad() {
            fs::rename(self.linux.join(&e.file), self.linux.join(boot::entry_file(version, Some(boot::TRIES), None)))?;
            fsync_dir(&self.linux)?;
        }
        self.loader.set(platform::ENTRY_DEFAULT, Some(&e.id))?;
        Ok(e.id)
    }
}

fn esp_free(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Where one artifact goes.
struct Target<'a> {
    /// Buffered descriptor: unaligned writes, the final fdatasync.
    file: &'a File,
    /// The same file opened `O_DIRECT`, if the file system allows it: aligned chunks go through it,
    /// bypassing the page cache (no copy into the cache, nothing for the cache to hold).
    direct: Option<&'a File>,
    base: u64,
    /// Bytes from `base` that may be written (the partition): the last chunk is padded with zeros
    /// to the alignment when that stays inside.
    room: u64,
}

/// Stream every artifact to its place, hashing as it goes; compare each hash once its bytes are
/// fsynced. The UKI goes to `tmp` in the ESP.
///
/// Returns the PARTUUIDs of usr and its hash tree that the root hash in the (verified)
/// usr-verity-sig artifact names; an artifact without one is refused.
fn write_artifacts(src: &mut dyn Read, m: &Manifest, plan: &Plan, tmp: &Path, progress: &mut dyn FnMut(Progress)) -> Result<(Guid, Guid), ApplyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let disk = OpenOptions::new().read(true).write(true).open(&plan.disk)?;
    let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&plan.disk).ok();
    let lba = gpt::logical_block_size(&disk);
    let total = m.written_bytes();
    let mut done = 0u64;
    let mut guids = None;
    for a in &m.artifacts {
        let owned;
        let part = |p: &Partition| Target { file: &disk, direct: direct.as_ref(), base: p.offset(lba), room: p.size(lba) };
        let target = match a.name.as_str() {
            "usr" => part(&plan.target.usr),
            "usr-verity" => part(&plan.target.verity),
            "usr-verity-sig" => part(&plan.target.sig),
            _ => {
                owned = OpenOptions::new().write(true).create(true).truncate(true).open(tmp).map_err(|e| space(e, "the UKI in the ESP"))?;
                Target { file: &owned, direct: None, base: 0, room: a.size }
            }
        };
        let hash = stream(src, &target, a, done, total, progress).map_err(|e| match e {
            ApplyError::Io(e) => space(e, &format!("artifact {}", a.name)),
            e => e,
        })?;
        progress(Progress::Verifying { artifact: a.name.clone() });
        if hash != a.sha256 {
            return Err(ApplyError::Mismatch { artifact: a.name.clone() });
        }
        done += a.size;
        if a.zeros > 0 {
            write_zeros(&target, &a.name, a.size, a.zeros, done, total, progress).map_err(|e| space(e, &format!("artifact {}", a.name)))?;
            done += a.zeros;
        }
        if a.name == "usr-verity-sig" && target.room > a.written_size() {
            // The signature is read up to the end of its partition: nothing of an older one may
            // follow it.
            write_zeros(&target, &a.name, a.written_size(), target.room - a.written_size(), done, total, &mut |_| {})?;
        }
        if a.name == "usr-verity-sig" {
            let hash = read_root_hash(&disk, target.base, target.room)?;
            guids = Some(verity_partuuids(&hash).ok_or_else(|| ApplyError::Malformed(format!("the usr-verity-sig artifact's rootHash {hash:?} is not a hex root hash of 128 bits or more")))?);
        }
    }
    let mut b = [0u8; 1];
    loop {
        match src.read(&mut b) {
            Ok(0) => return guids.ok_or_else(|| ApplyError::Malformed("no usr-verity-sig artifact".into())),
            Ok(_) => return Err(ApplyError::Malformed("data follows the last artifact".into())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ApplyError::Io(e)),
        }
    }
}

fn space(e: io::Error, what: &str) -> ApplyError {
    if is_enospc(&e) {
        ApplyError::NoSpace { what: what.to_string(), need: 0, have: 0 }
    } else {
        ApplyError::Io(e)
    }
}

/// Fill `buf` from `src`; fewer bytes only at the end of the stream.
fn fill(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Alignment of `O_DIRECT` buffers, offsets and lengths (covers 4K-sector disks).
const ALIGN: usize = 4096;

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is uniquely owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("buffer layout");
        // SAFETY: len > 0 (callers ask for at least ALIGN bytes).
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), std::alloc::Layout::from_size_align(self.len, ALIGN).unwrap()) }
    }
}

/// Write one chunk: through `O_DIRECT` when offset and (zero-padded) length are aligned and stay
/// inside the target, else buffered.
fn write_chunk(t: &Target, buf: &mut AlignedBuf, len: usize, off: u64) -> io::Result<()> {
    let at = t.base + off;
    if let Some(direct) = t.direct {
        let padded = len.div_ceil(ALIGN) * ALIGN;
        if at % ALIGN as u64 == 0 && padded <= buf.len() && off + padded as u64 <= t.room {
            buf[len..padded].fill(0);
            match direct.write_all_at(&buf[..padded], at) {
                Ok(()) => return Ok(()),
                // Some file systems refuse O_DIRECT only at write time.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    t.file.write_all_at(&buf[..len], at)
}

/// Buffers in flight per artifact: one being read, one hashed, one written, one spare.
const BUFFERS: usize = 4;

/// Write `a.size` bytes of `src` to the target and return their SHA-256 (hex). A three-stage
/// pipeline: this thread reads, a second hashes, a third writes, each chunk passing from one to the
/// next (`BUFFERS` aligned buffers of up to `CHUNK` bytes in all, whatever the artifact's size).
/// Writes go around the page cache where the file system allows (`O_DIRECT`); whatever went
/// through the cache is dropped from it after the final `fdatasync`, which makes the artifact
/// durable. Progress counts bytes written.
fn stream(src: &mut dyn Read, t: &Target, a: &bundle::Artifact, before: u64, total: u64, progress: &mut dyn FnMut(Progress)) -> Result<String, ApplyError> {
    use std::sync::mpsc::sync_channel;
    let chunk = (a.size as usize).clamp(1, CHUNK).div_ceil(ALIGN) * ALIGN;
    let (to_hasher, hasher_rx) = sync_channel::<(AlignedBuf, usize, u64)>(BUFFERS);
    let (to_writer, writer_rx) = sync_channel::<(AlignedBuf, usize, u64)>(BUFFERS);
    let (to_reader, reader_rx) = sync_channel::<(AlignedBuf, u64)>(BUFFERS);
    let mut report = |written: u64| progress(Progress::Writing { artifact: a.name.clone(), written, size: a.size, total_written: before + written, total_bytes: total });
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = openssl::sha::Sha256::new();
            for (buf, len, off) in hasher_rx {
                h.update(&buf[..len]);
                if to_writer.send((buf, len, off)).is_err() {
                    break;
                }
            }
            h.finish()
        });
        let writer = s.spawn(move || -> io::Result<()> {
            for (mut buf, len, off) in writer_rx {
                write_chunk(t, &mut buf, len, off)?;
                let _ = to_reader.send((buf, off + len as u64));
            }
            t.file.sync_data()?;
            drop_cache(t.file, t.base, a.size);
            Ok(())
        });
        let mut spare: Vec<AlignedBuf> = (0..BUFFERS).map(|_| AlignedBuf::new(chunk)).collect();
        let mut off = 0u64;
        let read_result = loop {
            if off == a.size {
                break Ok(());
            }
            let mut buf = match spare.pop() {
                Some(b) => b,
                None => match reader_rx.recv() {
                    Ok((b, written)) => {
                        report(written);
                        b
                    }
                    Err(_) => break Ok(()), // the writer stopped: its error is reported below
                },
            };
            let want = (a.size - off).min(chunk as u64) as usize;
            let n = match fill(src, &mut buf[..want]) {
                Ok(n) => n,
                Err(e) => break Err(ApplyError::Io(e)),
            };
            if n < want {
                break Err(ApplyError::Truncated(format!("the bundle ends inside artifact {} ({} of {} bytes)", a.name, off + n as u64, a.size)));
            }
            if to_hasher.send((buf, n, off)).is_err() {
                break Ok(());
            }
            off += n as u64;
        };
        drop(to_hasher);
        for (_, written) in reader_rx.iter() {
            report(written);
        }
        let hash = hasher.join().map_err(|_| io::Error::other("hasher thread panicked"))?;
        let write_result = writer.join().unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
        read_result?;
        write_result?;
        Ok::<_, ApplyError>(bundle::hex(&hash))
    })
}

/// Write the `zeros` zero bytes that follow the artifact's carried bytes, then make them durable.
fn write_zeros(t: &Target, name: &str, from: u64, count: u64, before: u64, total: u64, progress: &mut dyn FnMut(Progress)) -> io::Result<()> {
    let chunk = (count as usize).clamp(1, CHUNK).div_ceil(ALIGN) * ALIGN;
    let mut buf = AlignedBuf::new(chunk);
    let mut off = from;
    let end = from + count;
    while off < end {
        let n = (end - off).min(chunk as u64) as usize;
        write_chunk(t, &mut buf, n, off)?;
        off += n as u64;
        progress(Progress::Writing { artifact: name.to_string(), written: off, size: end, total_written: before + off - from, total_bytes: total });
    }
    t.file.sync_data()?;
    drop_cache(t.file, t.base + from, count);
    Ok(())
}

/// The PARTUUIDs of a usr partition and its hash tree as systemd derives them from a dm-verity
/// root hash (`usrhash=`): the first 128 bits name the data partition, the last 128 bits the
/// hash partition. systemd-repart sets them so, and the initrd looks usr up by them.
pub fn verity_partuuids(root_hash: &str) -> Option<(Guid, Guid)> {
    if root_hash.len() < 32 || root_hash.len() % 2 != 0 || !root_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let uuid = |hex: &str| Guid::parse(&format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]));
    Some((uuid(&root_hash[..32])?, uuid(&root_hash[root_hash.len() - 32..])?))
}

/// `rootHash` of a usr-verity-sig partition: a JSON object (systemd's format), padded with zeros.
fn read_root_hash(f: &File, offset: u64, size: u64) -> Result<String, ApplyError> {
    let mut buf = vec![0u8; size.min(64 << 10) as usize];
    f.read_exact_at(&mut buf, offset)?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let v: serde_json::Value = serde_json::from_slice(&buf[..end]).map_err(|e| ApplyError::Malformed(format!("the usr-verity-sig artifact is not systemd's JSON signature object: {e}")))?;
    v.get("rootHash").and_then(|h| h.as_str()).map(str::to_string).ok_or_else(|| ApplyError::Malformed("the usr-verity-sig artifact has no rootHash".into()))
}

fn drop_cache(file: &File, off: u64, len: u64) {
    // SAFETY: advisory syscall on a valid descriptor.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), off as i64, len as i64, libc::POSIX_FADV_DONTNEED);
    }
}

/// Lay out a new simulated machine in `dir` (see `Slots::open_simulated`). `loader.json` is
/// written last: until it exists, a new start lays everything out again.
fn create_sim(dir: &Path, version: &str, usr_size: u64) -> io::Result<()> {
    if !boot::valid_version(version) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid version {version:?}")));
    }
    const MIB: u64 = 1 << 20;
    let usr = usr_size.max(MIB).div_ceil(MIB) * MIB;
    let verity = (usr / 64).max(MIB).div_ceil(MIB) * MIB;
    let sig = MIB;
    let (esp, root) = (4 * MIB, 4 * MIB);
    let total = MIB + esp + 2 * (usr + verity + sig) + root + MIB;
    let (ver_label, sig_label) = (format!("keel_{version}_verity"), format!("keel_{version}_verity_sig"));
    let usr_l = usr_label(version);
    let parts = [
        (types::ESP, "esp", esp),
        (types::USR_X86_64, usr_l.as_str(), usr),
        (types::USR_VERITY_X86_64, ver_label.as_str(), verity),
        (types::USR_VERITY_SIG_X86_64, sig_label.as_str(), sig),
        (types::USR_X86_64, EMPTY, usr),
        (types::USR_VERITY_X86_64, EMPTY, verity),
        (types::USR_VERITY_SIG_X86_64, EMPTY, sig),
        (types::ROOT_X86_64, "root", root),
    ];
    let tmp = dir.join(".disk.img.tmp");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let gpt = Gpt::create(&f, total, &parts)?;
    let mut gpt = gpt;
    let slots = layout(&gpt)?;
    let content = sim_usr(version, usr.min(MIB) as usize);
    let usrhash = sha256_hex(&content);
    let (data_guid, hash_guid) = verity_partuuids(&usrhash).expect("a SHA-256 root hash");
    gpt.set_unique_guid(slots[0].usr.index, data_guid)?;
    gpt.set_unique_guid(slots[0].verity.index, hash_guid)?;
    gpt.write(&f)?;
    f.write_all_at(&content, slots[0].usr.offset(gpt.lba))?;
    f.write_all_at(&sim_usr(&format!("{version}-verity"), 4096), slots[0].verity.offset(gpt.lba))?;
    f.write_all_at(format!("{{\"rootHash\":\"{usrhash}\",\"signature\":\"simulated\"}}\n").as_bytes(), slots[0].sig.offset(gpt.lba))?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("disk.img"))?;
    let linux = dir.join("esp/EFI/Linux");
    fs::create_dir_all(&linux)?;
    for e in fs::read_dir(&linux)?.flatten() {
        fs::remove_file(e.path())?;
    }
    crate::store::write_atomic(&linux.join(boot::entry_id(version)), &sim_uki(version, &usrhash, content.len() as u64), 0o644)?;
    let mut state = SimLoader { booted_slot: Some("A".into()), ..Default::default() };
    state.vars.insert(platform::ENTRY_SELECTED.into(), boot::entry_id(version));
    state.save(&dir.join("loader.json"))?;
    fsync_dir(dir)
}
