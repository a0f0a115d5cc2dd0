//! Factory reset (backend of `Manager.ResetToDefaults` and `ComputerSystem.Decommission`).
//!
//! What a reset removes is a [`Scope`]. keeld's own state is wiped in the one moment nothing
//! holds it: as keeld starts, before any store loads. The reset task writes a plan
//! (`STATE/reset-pending.json`), restarts keeld, and [`apply_pending`] (called by `server::run`
//! before the TLS certificate, the stores or the first Administrator) removes what the plan names
//! and ends the task `Completed`. A crash half-way leaves the plan in place and the next start
//! does it again: every step is idempotent.
//!
//! The machine's part (`disks`, `tpm`) is done by the task before the restart:
//!
//! - on a Keel image (the real slot platform) the partitions the image's systemd-repart
//!   definitions (`/usr/lib/repart.d`) mark `FactoryReset=yes` (root and swap) are removed from
//!   both copies of the boot disk's GPT, so the next boot is a first boot again: the initrd's
//!   systemd-repart creates them afresh (new LUKS2 volumes bound to the TPM) before anything
//!   waits for root. The running kernel keeps its view of the partitions until the restart.
//!   Then every LUKS2 volume keeld manages (root, swap and data drives, which repart does not
//!   know) is crypto-erased (`cryptsetup erase`: every key slot destroyed; a volume open now keeps
//!   working from the key in memory until the reboot). The table goes first: a power cut between
//!   the two steps leaves a machine that boots clean, where the other order would leave one that
//!   stops at a recovery-key prompt. (systemd's own `FactoryReset` EFI variable is not used: with
//!   systemd 257 the initrd unlocks the old root at the same time as repart would delete it, and
//!   the boot ends in emergency mode.) The TPM clear is asked of the firmware through the TCG
//!   Physical Presence Interface (`/sys/class/tpm/tpm0/ppi/request`, operation 5, as systemd
//!   258's systemd-tpm2-clear does), which clears it at the next boot. Then the machine is
//!   restarted (GracefulRestart).
//! - on the simulated platform the same steps happen at once on its image files: the `root`
//!   partition of `STATE/sim/disk.img` is zeroed, every `--crypt-volume` image is crypto-erased
//!   (`cryptsetup erase`, `wipefs --all`) and zeroed, and the TPM is cleared (TPM2_Clear through
//!   tss-esapi) only when it is a software TPM named by `--tpm-tcti swtpm:…`/`mssim:…`; any other
//!   TPM is never touched and the clear is only recorded. What was done is appended to
//!   `STATE/sim/factory-reset.json`, and the simulated machine reboots (the A/B engine).
//!
//! keeld's state lives on the root volume of a Keel image, so wiping the disks (`UserData`) wipes
//! keeld's state with it; the scope says so on both platforms.

use crate::auth::{AccountPolicy, Accounts};
use crate::messages::{base, Message};
use crate::store::StateDir;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The plan a reset task leaves for the next start.
pub const PLAN: &str = "reset-pending.json";
/// Where the initrd's systemd-repart reads a Keel image's partition definitions (from its `/usr`).
pub const REPART_D: &str = "usr/lib/repart.d";
/// Where a real machine's TPM takes Physical Presence Interface requests.
pub const PPI_REQUEST: &str = "sys/class/tpm/tpm0/ppi/request";
/// TCG PPI operation 5: TPM2_Clear, done by the firmware at the next boot.
pub const PPI_CLEAR: &str = "5";
/// The record of what a reset did to the machine (`STATE/sim/` on the simulated platform,
/// `STATE/` on a Keel image, where the root wipe removes it with the rest).
pub const RECORD: &str = "factory-reset.json";

/// What a reset removes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scope {
    /// keeld's settings: sessions and the session timeout, event subscriptions and settings, the
    /// account policy, update settings and staged-update plans (`STATE/update/`), the simulated
    /// power record, and the task history (but the reset's own task).
    pub settings: bool,
    /// The local accounts (user names, password hashes, roles).
    pub accounts: bool,
    /// The network configuration: everything under `STATE/network/`.
    pub network: bool,
    /// Recovery keys and keeld's service keys (`STATE/crypt/`).
    pub encryption: bool,
    /// keeld's identity: service UUID, self-signed TLS certificate, attestation CA.
    pub identity: bool,
    /// Root, swap and data volumes.
    pub disks: bool,
    /// The TPM.
    pub tpm: bool,
}

/// `Manager.ResetToDefaults` ResetType values.
pub const RESET_TYPES: &[&str] = &["ResetAll", "PreserveNetwork", "PreserveNetworkAndUsers"];
/// `ComputerSystem.Decommission` DecommissionTypes keeld implements (not `BIOSConfig`: keeld
/// changes no firmware setting; not `StorageConfig`: there is no storage controller
/// configuration; not `Logs`: the journal is the host's record, which keeld does not wipe apart
/// from the root volume it lives on).
pub const DECOMMISSION_TYPES: &[&str] = &["All", "UserData", "ManagerConfig", "NetworkConfig", "TPM"];

impl Scope {
    pub fn reset_to_defaults(reset_type: &str) -> Option<Scope> {
        let base = Scope { settings: true, ..Default::default() };
        Some(match reset_type {
            "ResetAll" => Scope { accounts: true, network: true, ..base },
            "PreserveNetwork" => Scope { accounts: true, ..base },
            "PreserveNetworkAndUsers" => base,
            _ => return None,
        })
    }

    /// The union of the types (each one of `DECOMMISSION_TYPES`).
    pub fn decommission(types: &[&str]) -> Scope {
        let mut s = Scope::default();
        for t in types {
            match *t {
                "ManagerConfig" => {
                    s.settings = true;
                    s.accounts = true;
                    s.network = true;
                }
                "NetworkConfig" => s.network = true,
                // keeld's state is on the root volume.
                "UserData" => s = Scope { disks: true, settings: true, accounts: true, network: true, encryption: true, identity: true, ..s },
                "TPM" => s.tpm = true,
                "All" => s = Scope { settings: true, accounts: true, network: true, encryption: true, identity: true, disks: true, tpm: true },
                _ => {}
            }
        }
        s
    }

    /// Whether the machine itself (disks, TPM) is reset, and so restarted.
    pub fn machine(&self) -> bool {
        self.disks || self.tpm
    }

    /// Whether keeld's state directory changes at all.
    pub fn state(&self) -> bool {
        self.settings || self.accounts || self.network || self.encryption || self.identity
    }

    /// What is reset, in words (logs and task messages).
    pub fn describe(&self) -> String {
        let mut v = vec![];
        for (on, what) in [
            (self.settings, "keeld's settings"),
            (self.accounts, "the accounts"),
            (self.network, "the network configuration"),
            (self.encryption, "the recovery and service keys"),
            (self.identity, "keeld's identity (service UUID, TLS certificate)"),
            (self.disks, "the root, swap and data volumes"),
            (self.tpm, "the TPM"),
        ] {
            if on {
                v.push(what);
            }
        }
        v.join(", ")
    }
}

/// What a reset task leaves for the next start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub scope: Scope,
    /// The reset's task (kept, and ended `Completed` at start).
    pub task: String,
    /// The account that asked for it: kept (with PasswordChangeRequired) when the accounts go
    /// and no bootstrap file would recreate an Administrator.
    pub requester: String,
    /// The action, for the log.
    pub action: String,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_file(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        _ => Ok(()),
    }
}

fn remove_dir(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        _ => Ok(()),
    }
}

/// Files (not directories) directly in `dir`, if it exists.
fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| !t.is_dir())).map(|e| e.path()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// Whether a reset is waiting for keeld's next start.
pub fn pending(state: &StateDir) -> bool {
    state.path(PLAN).exists()
}

/// Leave `plan` for the next start (atomically).
pub fn write_plan(state: &StateDir, plan: &Plan) -> io::Result<()> {
    state.save(PLAN, plan)
}

/// Whether the bootstrap file would make an Administrator at the next start.
fn bootstrap_usable(file: &Path, accounts: &Accounts) -> bool {
    let Ok(text) = fs::read_to_string(file) else { return false };
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    line.split_once(':').is_some_and(|(u, p)| !u.is_empty() && accounts.check_password(u, p).is_ok())
}

/// The last step of a reset, run as keeld starts (before anything loads the state): remove what
/// the plan in `state_dir` names, end its task, remove the plan. Nothing to do without a plan.
pub fn apply_pending(state_dir: &Path, bootstrap: Option<&Path>) -> io::Result<()> {
    let state = StateDir::open(state_dir)?;
    let plan = match state.load::<Plan>(PLAN) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(()),
        // Written atomically, so this is not a torn write: someone else's file. Keep it aside
        // rather than refuse to start for ever.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            log::error!("{PLAN} is unreadable ({e}); moved aside, nothing reset");
            fs::rename(state.path(PLAN), state.path(&format!("{PLAN}.invalid")))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let s = plan.scope;
    log::warn!("{}: resetting {} (task {})", plan.action, s.describe(), plan.task);
    if s.settings {
        for f in ["sessions.json", "events.json", "power.json", "initial-admin-password"] {
            remove_file(&state.path(f))?;
        }
        for f in files_in(&state.path("update"))? {
            remove_file(&f)?;
        }
        // The task history, but the reset's own task (and the id counter: ids are never reused).
        let own = format!("{}.json", plan.task);
        for f in files_in(&state.path("tasks"))? {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name != own && name != "next-id" {
                remove_file(&f)?;
            }
        }
    }
    if s.settings || s.accounts {
        let accounts = Accounts::open(state.clone())?;
        let err = |e: crate::messages::RfError| io::Error::other(format!("accounts: {e}"));
        if s.settings {
            accounts.set_policy(AccountPolicy::default()).map_err(err)?;
        }
        if s.accounts {
            // Never leave the service without a way in: without a usable bootstrap file the
            // Administrator who asked keeps the account, to be given a new password first.
            let keep = if bootstrap.is_some_and(|f| bootstrap_usable(f, &accounts)) {
                None
            } else {
                let admins: Vec<_> = accounts.list().into_iter().filter(|a| a.role_id == "Administrator").collect();
                admins.iter().find(|a| a.id == plan.requester).or_else(|| admins.iter().find(|a| a.enabled)).map(|a| a.id.clone())
            };
            for a in accounts.list() {
                if Some(&a.id) != keep.as_ref() {
                    accounts.delete(&a.id).map_err(err)?;
                }
            }
            if let Some(id) = keep {
                let a = accounts
                    .update(&id, |a| {
                        a.enabled = true;
                        a.password_change_required = true;
                        a.locked = false;
                        a.locked_until = 0;
                        a.failures = 0;
                        Ok(())
                    })
                    .map_err(err)?;
                log::warn!("{}: no bootstrap administrator file: account {} is kept and must change its password", plan.action, a.user_name);
            }
        }
    }
    if s.network {
        remove_dir(&state.path("network"))?;
    }
    if s.encryption {
        remove_dir(&state.path("crypt"))?;
    }
    if s.identity {
        for f in ["service-uuid", "tls-cert.pem", "tls-key.pem", "attestation-ca.pem"] {
            remove_file(&state.path(f))?;
        }
    }
    sync_dir(state_dir)?;
    crate::tasks::complete_at_start(&state, &plan.task, &[Message::base(&base::SUCCESS, &[])])?;
    remove_file(&state.path(PLAN))?;
    sync_dir(state_dir)?;
    log::warn!("{}: done", plan.action);
    Ok(())
}

// ------------------------------------------------------------------ the machine

/// What the machine's part of a reset did (appended to the record).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MachineRecord {
    pub time: String,
    pub action: String,
    pub platform: String,
    /// Partitions zeroed (simulated) or removed from the table, to be re-created by
    /// systemd-repart at the next boot (real).
    #[serde(default)]
    pub partitions: Vec<String>,
    /// LUKS2 volumes crypto-erased (`cryptsetup erase`).
    #[serde(default)]
    pub erased_volumes: Vec<String>,
    /// Simulated drives zeroed.
    #[serde(default)]
    pub zeroed_drives: Vec<String>,
    /// `Cleared` (TPM2_Clear done), `Requested` (PPI clear at next boot), `Simulated` (only
    /// recorded), `NoTPM`, or absent when the TPM was not part of the reset.
    #[serde(default)]
    pub tpm: Option<String>,
}

/// The machine's record file: a JSON array of every reset's record, newest last.
pub fn record_path(state: &StateDir, simulated: bool) -> PathBuf {
    if simulated {
        state.path("sim").join(RECORD)
    } else {
        state.path(RECORD)
    }
}

fn append_record(path: &Path, rec: &MachineRecord) -> io::Result<()> {
    let mut all: Vec<MachineRecord> = match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => vec![],
    };
    all.push(rec.clone());
    crate::store::write_atomic(path, &serde_json::to_vec_pretty(&all)?, 0o600)
}

/// Zero `len` bytes of `f` from `offset`: the range is deallocated (`FALLOC_FL_PUNCH_HOLE`) where
/// the file system allows, else overwritten with zeros; then synced.
pub fn zero_range(f: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let punched = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset as libc::off_t, len as libc::off_t) } == 0;
    if !punched {
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
    }
    f.sync_all()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let c = crate::crypt::tools::Call::new(program, args);
    let o = c.run();
    if o.ok() {
        Ok(())
    } else {
        Err(format!("{} exited with status {}: {}", c.describe(), o.status, o.stderr.trim()))
    }
}

fn is_luks(path: &str) -> bool {
    crate::crypt::tools::Call::new("cryptsetup", &["isLuks", path]).run().ok()
}

/// Crypto-erase a LUKS2 volume: every key slot is destroyed, so its data is unreadable.
fn luks_erase(dev: &str) -> Result<(), String> {
    run("cryptsetup", &["erase", "--batch-mode", dev])
}

/// TPM2_Clear with the (empty) lockout authorization: a software TPM's owner hierarchy gets a new
/// seed, so nothing sealed to it unseals any more.
pub fn tpm_clear(tcti: &str) -> Result<(), String> {
    use tss_esapi::handles::AuthHandle;
    use tss_esapi::interface_types::session_handles::AuthSession;
    let mut ctx = crate::tpm::open(tcti)?;
    ctx.execute_with_session(Some(AuthSession::Password), |c| c.clear(AuthHandle::Lockout)).map_err(|e| format!("TPM2_Clear at {tcti}: {e}"))
}

/// Whether keeld may clear this TPM in simulated mode: only a software TPM it was pointed at.
pub fn software_tpm(tcti: &str) -> bool {
    tcti.starts_with("swtpm:") || tcti.starts_with("mssim:")
}

/// The simulated platform: do to its image files what the next boot of a Keel image would do.
pub fn simulated(cfg: &crate::app::Config, scope: &Scope, action: &str) -> Result<MachineRecord, String> {
    let mut rec = MachineRecord { time: now(), action: action.to_string(), platform: "simulated".into(), ..Default::default() };
    if scope.disks {
        let disk = cfg.state_dir.join("sim").join("disk.img");
        let f = OpenOptions::new().read(true).write(true).open(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
        let (gpt, _) = crate::slots::gpt::Gpt::read(&f).map_err(|e| format!("{}: {e}", disk.display()))?;
        for p in gpt.find_type(crate::slots::gpt::types::ROOT_X86_64) {
            zero_range(&f, p.offset(gpt.lba), p.size(gpt.lba)).map_err(|e| format!("{}: {e}", disk.display()))?;
            rec.partitions.push(p.name.clone());
        }
        for d in &cfg.crypt_volumes {
            let path = d.path.to_string_lossy().into_owned();
            if !d.path.exists() {
                continue;
            }
            if is_luks(&path) {
                luks_erase(&path)?;
                rec.erased_volumes.push(d.name.clone());
            }
            run("wipefs", &["--all", "--quiet", &path])?;
            let f = OpenOptions::new().write(true).open(&d.path).map_err(|e| format!("{path}: {e}"))?;
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            zero_range(&f, 0, len).map_err(|e| format!("{path}: {e}"))?;
            rec.zeroed_drives.push(d.name.clone());
        }
    }
    if scope.tpm {
        rec.tpm = Some(match cfg.tpm_tcti.as_deref() {
            Some(t) if software_tpm(t) => {
                tpm_clear(t)?;
                "Cleared".into()
            }
            _ => "Simulated".into(),
        });
    }
    let state = StateDir::open(&cfg.state_dir).map_err(|e| e.to_string())?;
    append_record(&record_path(&state, true), &rec).map_err(|e| e.to_string())?;
    Ok(rec)
}

/// The volumes a real reset crypto-erases: every LUKS2 volume keeld manages.
pub fn real_volumes(crypt: &crate::crypt::Crypt) -> Vec<(String, String)> {
    crypt.view().volumes.iter().filter(|v| v.managed && !v.simulated).map(|v| (v.id.clone(), v.device.clone())).collect()
}

/// The partition types the image's systemd-repart definitions mark `FactoryReset=yes` (the
/// `Type=` name and its GPT type GUID): what a disk wipe removes and the next boot re-creates.
pub fn factory_reset_types(root: &Path) -> Result<Vec<(String, &'static str)>, String> {
    let dir = root.join(REPART_D);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        let text = fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let (mut section, mut ty, mut reset) = (String::new(), None, false);
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
            } else if section == "[Partition]" {
                match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("Type", v)) => ty = Some(v.to_string()),
                    Some(("FactoryReset", v)) => reset = matches!(v, "yes" | "true" | "1" | "on"),
                    _ => {}
                }
            }
        }
        if reset {
            let name = ty.ok_or_else(|| format!("{}: FactoryReset=yes without Type=", f.display()))?;
            let guid = crate::slots::gpt::types::of_repart_name(&name).ok_or_else(|| format!("{}: keeld does not know partition type {name}", f.display()))?;
            out.push((name, guid));
        }
    }
    Ok(out)
}

/// What a real reset needs before it changes anything: `Err` says what is missing. For a disk
/// wipe, the partitions to remove (the types of [`factory_reset_types`]).
pub fn check_real(root: &Path, slots: &crate::slots::Slots, volumes: &[(String, String)], scope: &Scope, tpm_present: bool) -> Result<Vec<&'static str>, String> {
    if scope.tpm && tpm_present && !scope.disks && !volumes.is_empty() {
        let ids: Vec<&str> = volumes.iter().map(|(id, _)| id.as_str()).collect();
        return Err(format!("Clearing the TPM alone would leave {} unable to unlock at the next boot: their keys are sealed to this TPM. Clear it together with the disks (All, or UserData and TPM).", ids.join(", ")));
    }
    let mut types = vec![];
    if scope.disks {
        let defs = factory_reset_types(root)?;
        if !defs.iter().any(|(_, g)| *g == crate::slots::gpt::types::ROOT_X86_64) {
            return Err(format!("The image's systemd-repart definitions ({}) do not re-create the root partition: wiping it would leave a machine that cannot boot.", root.join(REPART_D).display()));
        }
        types = defs.iter().map(|(_, g)| *g).collect();
        let found = slots.partitions_of_types(&types).map_err(|e| format!("the boot disk's partition table: {e}"))?;
        if found.is_empty() {
            return Err("The boot disk holds none of the partitions a disk wipe removes (root, swap).".into());
        }
    }
    if scope.tpm && tpm_present && !root.join(PPI_REQUEST).exists() {
        return Err("The TPM offers no Physical Presence Interface: the firmware cannot be asked to clear it.".into());
    }
    Ok(types)
}

/// A Keel image: schedule the wipe for the next boot (see the module documentation).
pub fn real(root: &Path, state: &StateDir, slots: &crate::slots::Slots, volumes: &[(String, String)], scope: &Scope, tpm_present: bool, action: &str) -> Result<MachineRecord, String> {
    let types = check_real(root, slots, volumes, scope, tpm_present)?;
    let mut rec = MachineRecord { time: now(), action: action.to_string(), platform: "real".into(), ..Default::default() };
    if scope.disks {
        // Every volume is found and is LUKS2 before anything changes; device paths are resolved
        // first (udev may drop a by-partuuid link once the table no longer lists the partition).
        let mut devices = vec![];
        for (id, dev) in volumes {
            let dev = fs::canonicalize(dev).map(|p| p.to_string_lossy().into_owned()).map_err(|e| format!("volume {id} ({dev}): {e}"))?;
            if !is_luks(&dev) {
                return Err(format!("volume {id} ({dev}) is not a LUKS2 volume any more; nothing was changed"));
            }
            devices.push((id.clone(), dev));
        }
        rec.partitions = slots.remove_partitions(&types).map_err(|e| format!("removing root and swap from the boot disk's table: {e}"))?;
        for (id, dev) in devices {
            luks_erase(&dev)?;
            rec.erased_volumes.push(id);
        }
    }
    if scope.tpm {
        rec.tpm = Some(if tpm_present {
            fs::write(root.join(PPI_REQUEST), PPI_CLEAR).map_err(|e| format!("{PPI_REQUEST}: {e}"))?;
            "Requested".into()
        } else {
            "NoTPM".into()
        });
    }
    append_record(&record_path(state, false), &rec).map_err(|e| e.to_string())?;
    Ok(rec)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-reset-{name}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn scopes_of_each_type() {
        let all = Scope::decommission(&["All"]);
        assert!(all.settings && all.accounts && all.network && all.encryption && all.identity && all.disks && all.tpm);
        assert_eq!(Scope::decommission(&["ManagerConfig"]), Scope::reset_to_defaults("ResetAll").unwrap());
        assert_eq!(Scope::decommission(&["NetworkConfig"]), Scope { network: true, ..Default::default() });
        assert_eq!(Scope::decommission(&["TPM"]), Scope { tpm: true, ..Default::default() });
        let user = Scope::decommission(&["UserData"]);
        assert!(user.disks && user.state() && !user.tpm, "keeld's state is on the root volume");
        assert_eq!(Scope::decommission(&["UserData", "TPM"]), all);
        let p = Scope::reset_to_defaults("PreserveNetwork").unwrap();
        assert!(p.settings && p.accounts && !p.network && !p.machine());
        let pu = Scope::reset_to_defaults("PreserveNetworkAndUsers").unwrap();
        assert!(pu.settings && !pu.accounts && !pu.network);
        assert!(Scope::reset_to_defaults("Bogus").is_none());
    }

    fn seed(state: &StateDir) -> Accounts {
        for (f, body) in [("sessions.json", "{}"), ("events.json", "{}"), ("power.json", "{}"), ("update/settings.json", "{}"), ("update/pending.json", "null"), ("network/eth0.json", "{}"), ("crypt/state.json", "{}"), ("service-uuid", "u"), ("tls-cert.pem", "c"), ("tls-key.pem", "k"), ("tasks/3.json", "{}"), ("tasks/next-id", "9")] {
            let p = state.path(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        let a = Accounts::open(state.clone()).unwrap();
        let h = a.hash_password("Keel-Test-Pass1").unwrap();
        a.create("admin", h.clone(), "Administrator", true, false).unwrap();
        a.create("op", h, "Operator", true, false).unwrap();
        a.set_policy(AccountPolicy { min_password_length: 12, ..Default::default() }).unwrap();
        a
    }

    fn plan(state: &StateDir, scope: Scope, requester: &str) {
        write_plan(state, &Plan { scope, task: "7".into(), requester: requester.into(), action: "Test".into() }).unwrap();
    }

    #[test]
    fn preserve_network_and_users_keeps_accounts_and_network() {
        let d = tmp("pnu");
        let state = StateDir::open(&d).unwrap();
        seed(&state);
        plan(&state, Scope::reset_to_defaults("PreserveNetworkAndUsers").unwrap(), "1");
        apply_pending(&d, None).unwrap();
        let a = Accounts::open(state.clone()).unwrap();
        assert_eq!(a.list().iter().map(|x| x.user_name.as_str()).collect::<Vec<_>>(), ["admin", "op"]);
        assert!(a.list().iter().all(|x| !x.password_change_required));
        assert_eq!(a.policy().min_password_length, 8, "the account policy is a setting");
        for gone in ["sessions.json", "events.json", "power.json", "update/settings.json", "update/pending.json", "tasks/3.json", PLAN] {
            assert!(!state.path(gone).exists(), "{gone}");
        }
        for kept in ["network/eth0.json", "crypt/state.json", "service-uuid", "tls-cert.pem", "tasks/next-id"] {
            assert!(state.path(kept).exists(), "{kept}");
        }
        // Done: a second start changes nothing.
        apply_pending(&d, None).unwrap();
        assert_eq!(Accounts::open(state).unwrap().list().len(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn without_a_bootstrap_file_the_requesting_admin_stays() {
        let d = tmp("noboot");
        let state = StateDir::open(&d).unwrap();
        seed(&state);
        plan(&state, Scope::reset_to_defaults("ResetAll").unwrap(), "1");
        apply_pending(&d, Some(&d.join("missing-bootstrap"))).unwrap();
        let a = Accounts::open(state.clone()).unwrap().list();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].user_name.as_str(), a[0].password_change_required), ("admin", true));
        assert!(!state.path("network").exists());
        assert!(state.path("crypt/state.json").exists() && state.path("tls-cert.pem").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn with_a_bootstrap_file_every_account_goes_and_user_data_takes_the_identity() {
        let d = tmp("boot");
        let state = StateDir::open(&d).unwrap();
        seed(&state);
        let boot = d.join("boot");
        fs::write(&boot, "root:Another-Pass-9\n").unwrap();
        plan(&state, Scope::decommission(&["UserData"]), "1");
        apply_pending(&d, Some(&boot)).unwrap();
        assert!(Accounts::open(state.clone()).unwrap().list().is_empty());
        for gone in ["crypt", "service-uuid", "tls-cert.pem", "tls-key.pem", "network"] {
            assert!(!state.path(gone).exists(), "{gone}");
        }
        // A bootstrap file whose password the policy refuses cannot be relied on.
        let d2 = tmp("badboot");
        let state2 = StateDir::open(&d2).unwrap();
        seed(&state2);
        fs::write(&boot, "root:short\n").unwrap();
        plan(&state2, Scope::reset_to_defaults("PreserveNetwork").unwrap(), "2");
        apply_pending(&d2, Some(&boot)).unwrap();
        let a = Accounts::open(state2).unwrap().list();
        assert_eq!(a.iter().map(|x| x.user_name.as_str()).collect::<Vec<_>>(), ["admin"], "an Operator asking is not kept: the first Administrator is");
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&d2).unwrap();
    }

    fn sfdisk(disk: &Path) -> Vec<(String, String, u64)> {
        let out = std::process::Command::new("sfdisk").arg("--json").arg(disk).output().expect("sfdisk (fdisk package)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["partitiontable"]["partitions"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap_or("").into(), p["uuid"].as_str().unwrap().into(), p["start"].as_u64().unwrap())).collect()
    }

    fn luks_volume(path: &Path) {
        fs::write(path.with_extension("key"), "Volume-Key-Pass1").unwrap();
        fs::write(path, vec![0u8; 24 << 20]).unwrap();
        let key = path.with_extension("key");
        let o = std::process::Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&key)
            .arg(path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn opens(path: &Path) -> bool {
        std::process::Command::new("cryptsetup").args(["open", "--test-passphrase", "--key-file"]).arg(path.with_extension("key")).arg(path).status().unwrap().success()
    }

    #[test]
    fn real_platform_removes_what_repart_recreates_then_erases_the_volumes() {
        let root = tmp("real");
        let state = StateDir::open(&root.join("var/lib/keel")).unwrap();
        let slots = crate::slots::Slots::open_simulated(&root.join("sim"), "1.0", 1 << 20).unwrap();
        let disk = root.join("sim/disk.img");
        let vol = root.join("data.img");
        luks_volume(&vol);
        let volumes = vec![("data0".to_string(), vol.to_string_lossy().into_owned())];
        let before = sfdisk(&disk);
        assert!(before.iter().any(|p| p.0 == "root"), "{before:?}");
        let wipe = Scope::decommission(&["UserData"]);
        let refused = |why: &str| {
            let e = real(&root, &state, &slots, &volumes, &wipe, true, "Test").unwrap_err();
            assert!(e.contains(why), "{e}");
            assert_eq!(sfdisk(&disk), before);
            assert!(opens(&vol));
        };
        // Without the image's definitions keeld cannot know the next boot re-creates root.
        refused("repart.d");
        let defs = root.join(REPART_D);
        fs::create_dir_all(&defs).unwrap();
        fs::write(defs.join("50-swap.conf"), "[Partition]\nType=swap\nFactoryReset=yes\n").unwrap();
        fs::write(defs.join("60-root.conf"), "[Partition]\nType=root\nFormat=ext4\n").unwrap();
        refused("do not re-create the root partition");
        fs::write(defs.join("70-odd.conf"), "[Partition]\nType=weird\nFactoryReset=yes\n").unwrap();
        assert!(factory_reset_types(&root).unwrap_err().contains("weird"));
        fs::remove_file(defs.join("70-odd.conf")).unwrap();
        // The image's own definitions, as shipped.
        for f in fs::read_dir(&defs).unwrap().flatten() {
            fs::remove_file(f.path()).unwrap();
        }
        let image_defs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mkosi/mkosi.extra").join(REPART_D);
        for f in fs::read_dir(&image_defs).unwrap().flatten() {
            fs::copy(f.path(), defs.join(f.file_name())).unwrap();
        }
        assert_eq!(factory_reset_types(&root).unwrap(), [("swap".to_string(), crate::slots::gpt::types::SWAP), ("root".to_string(), crate::slots::gpt::types::ROOT_X86_64)]);
        // A volume that is no longer LUKS2: refused before the table changes.
        let plain = root.join("plain.img");
        fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
        let e = real(&root, &state, &slots, &[("odd".into(), plain.to_string_lossy().into_owned())], &wipe, true, "Test").unwrap_err();
        assert!(e.contains("not a LUKS2 volume"), "{e}");
        assert_eq!(sfdisk(&disk), before);

        let rec = real(&root, &state, &slots, &volumes, &wipe, true, "Test").unwrap();
        assert_eq!(rec.partitions, ["root"]);
        assert_eq!(rec.erased_volumes, ["data0"]);
        assert_eq!(rec.tpm, None);
        let after = sfdisk(&disk);
        assert_eq!(after, before.iter().filter(|p| p.0 != "root").cloned().collect::<Vec<_>>(), "only root goes; the ESP and the slots keep their places and PARTUUIDs");
        assert!(!opens(&vol), "the data volume's key slots are gone");
        assert!(is_luks(&vol.to_string_lossy()));
        // Nothing left to remove: a second wipe is refused.
        assert!(real(&root, &state, &slots, &volumes, &wipe, true, "Test").unwrap_err().contains("none of the partitions"));
        assert_eq!(slots.status().unwrap().slots.len(), 2, "the A/B layout still reads");

        // The TPM: asked of the firmware through the PPI, refused without one, and refused alone
        // while volumes are sealed to it.
        let scope = Scope::decommission(&["TPM"]);
        assert!(real(&root, &state, &slots, &volumes, &scope, true, "Test").unwrap_err().contains("sealed to this TPM"));
        assert!(real(&root, &state, &slots, &[], &scope, true, "Test").unwrap_err().contains("Physical Presence"));
        fs::create_dir_all(root.join("sys/class/tpm/tpm0/ppi")).unwrap();
        fs::write(root.join(PPI_REQUEST), "0").unwrap();
        let tpm = real(&root, &state, &slots, &[], &scope, true, "Test").unwrap();
        assert_eq!(fs::read_to_string(root.join(PPI_REQUEST)).unwrap(), "5");
        assert_eq!(tpm.tpm.as_deref(), Some("Requested"));
        let recorded: Vec<MachineRecord> = serde_json::from_slice(&fs::read(record_path(&state, false)).unwrap()).unwrap();
        assert_eq!(recorded, [rec, tpm]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unreadable_plan_is_set_aside_and_nothing_is_reset() {
        let d = tmp("badplan");
        let state = StateDir::open(&d).unwrap();
        seed(&state);
        fs::write(state.path(PLAN), "{not json").unwrap();
        apply_pending(&d, None).unwrap();
        assert!(!state.path(PLAN).exists() && state.path(&format!("{PLAN}.invalid")).exists());
        assert_eq!(Accounts::open(state.clone()).unwrap().list().len(), 2);
        assert!(state.path("events.json").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn zero_range_zeroes_exactly_the_range() {
        let d = tmp("zero");
        let p = d.join("img");
        fs::write(&p, vec![0xaau8; 3 << 20]).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        zero_range(&f, 1 << 20, 1 << 20).unwrap();
        let b = fs::read(&p).unwrap();
        assert!(b[..1 << 20].iter().all(|x| *x == 0xaa));
        assert!(b[1 << 20..2 << 20].iter().all(|x| *x == 0));
        assert!(b[2 << 20..].iter().all(|x| *x == 0xaa));
        fs::remove_dir_all(&d).unwrap();
    }
}
