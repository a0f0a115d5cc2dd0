//! Updates as the Redfish UpdateService drives them: a bundle from a source (`source`), written
//! by the slot engine (`crate::slots`) on its own thread and reported through a Task, then
//! activated when its ApplyTime says:
//!
//! - `Immediate`: the machine restarts as soon as the slot is written;
//! - `OnReset`: the new entry is the newest with tries left, so the next reset boots it;
//! - `OnStartUpdateRequest` (also SimpleUpdate's `Stage`), `AtMaintenanceWindowStart`,
//!   `InMaintenanceWindowOnReset`: the running entry is pinned as systemd-boot's default
//!   (`LoaderEntryDefault`) so no reset picks the new one until `UpdateService.StartUpdate`, the
//!   window's start, or a reset inside the window unpins it.
//!
//! What is staged is kept in `STATE/update/pending.json` (atomic writes), so a restart of keeld
//! keeps the plan; the slot and boot entries themselves are the engine's truth.

pub mod policy;
pub mod source;

use crate::messages::{update as um, Message};
use crate::slots::{ApplyError, ApplyOptions, Applied, Progress, Slots};
use crate::store::StateDir;
use crate::tasks::TaskHandle;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// The resource an update targets: the OS of the one system.
pub const TARGET: &str = "/redfish/v1/Systems/system";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyTime {
    Immediate,
    OnReset,
    AtMaintenanceWindowStart,
    InMaintenanceWindowOnReset,
    OnStartUpdateRequest,
}

impl ApplyTime {
    pub const NAMES: &'static [&'static str] = &["Immediate", "OnReset", "AtMaintenanceWindowStart", "InMaintenanceWindowOnReset", "OnStartUpdateRequest"];
    pub fn parse(s: &str) -> Option<ApplyTime> {
        Some(match s {
            "Immediate" => ApplyTime::Immediate,
            "OnReset" => ApplyTime::OnReset,
            "AtMaintenanceWindowStart" => ApplyTime::AtMaintenanceWindowStart,
            "InMaintenanceWindowOnReset" => ApplyTime::InMaintenanceWindowOnReset,
            "OnStartUpdateRequest" => ApplyTime::OnStartUpdateRequest,
            _ => return None,
        })
    }
    pub fn needs_window(self) -> bool {
        matches!(self, ApplyTime::AtMaintenanceWindowStart | ApplyTime::InMaintenanceWindowOnReset)
    }
    /// Whether the written slot waits, pinned out of the boot selection, for a later trigger.
    pub fn pinned(self) -> bool {
        matches!(self, ApplyTime::AtMaintenanceWindowStart | ApplyTime::InMaintenanceWindowOnReset | ApplyTime::OnStartUpdateRequest)
    }
}

/// A maintenance window: start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub seconds: u64,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && t < self.start + chrono::Duration::seconds(self.seconds.min(i64::MAX as u64 / 2000) as i64)
    }
}

/// A written version waiting for its activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub version: String,
    pub apply_time: ApplyTime,
    pub window: Option<Window>,
    /// The task that wrote it.
    pub task: String,
}

/// One update as requested.
#[derive(Clone, Debug)]
pub struct Request {
    /// How the image is named in messages (a file name or URI).
    pub image: String,
    pub apply_time: ApplyTime,
    pub window: Option<Window>,
    /// Accept an older version (SimpleUpdate `ForceUpdate`).
    pub force: bool,
}

/// What the service does to restart the machine (`ComputerSystem.Reset` with GracefulRestart):
/// set by `Keel::open` once the power backend exists.
pub type Restart = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

pub struct Updates {
    pub slots: Slots,
    ca: std::path::PathBuf,
    state: StateDir,
    pending: Mutex<Option<Pending>>,
    restart: Mutex<Option<Restart>>,
    events: Arc<crate::events::EventBus>,
    /// Set while an update runs, from its request to its end (`reserve`).
    reserved: Arc<std::sync::atomic::AtomicBool>,
}

/// One update's claim on the engine; dropping it frees the engine for the next.
pub struct Reservation(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

const PENDING: &str = "update/pending.json";
const POLICY: &str = "update/policy.json";

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Updates {
    pub fn open(slots: Slots, ca: std::path::PathBuf, state: StateDir, events: Arc<crate::events::EventBus>) -> io::Result<Updates> {
        std::fs::create_dir_all(state.path("update"))?;
        let pending = match std::fs::read(state.path(PENDING)) {
            Ok(b) => serde_json::from_slice::<Option<Pending>>(&b).unwrap_or_else(|e| {
                log::warn!("update: ignoring unreadable {PENDING}: {e}");
                None
            }),
            Err(_) => None,
        };
        // A pending version whose slot is gone (overwritten, failed) is no longer pending.
        let pending = pending.filter(|p| slots.status().map(|s| s.slots.iter().any(|x| x.version.as_deref() == Some(p.version.as_str()) && !x.booted)).unwrap_or(false));
        Ok(Updates { slots, ca, state, pending: Mutex::new(pending), restart: Mutex::new(None), events, reserved: Default::default() })
    }

    /// Claim the engine for one update; `None` while another runs (from its request on, so two
    /// requests racing never both start).
    pub fn reserve(&self) -> Option<Reservation> {
        use std::sync::atomic::Ordering;
        self.reserved.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).ok()?;
        Some(Reservation(self.reserved.clone()))
    }

    pub fn set_restart(&self, r: Restart) {
        *self.restart.lock().unwrap() = Some(r);
    }

    pub fn pending(&self) -> Option<Pending> {
        self.pending.lock().unwrap().clone()
    }

    fn save_pending(&self, p: &Option<Pending>) -> io::Result<()> {
        crate::store::write_atomic(&self.state.path(PENDING), &serde_json::to_vec_pretty(p)?, 0o600)
    }

    fn set_pending(&self, p: Option<Pending>) -> io::Result<()> {
        let mut g = self.pending.lock().unwrap();
        self.save_pending(&p)?;
        *g = p;
        Ok(())
    }

    /// The update policy (channel, check interval, index) and the last check's outcome.
    pub fn policy(&self) -> policy::Policy {
        std::fs::read(self.state.path(POLICY)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn set_policy(&self, p: &policy::Policy) -> io::Result<()> {
        crate::store::write_atomic(&self.state.path(POLICY), &serde_json::to_vec_pretty(p)?, 0o600)
    }

    /// Make the other slot's version the default again (an explicit rollback): the next reset
    /// boots it. Returns that version.
    pub fn rollback(&self) -> Result<String, StartError> {
        let st = self.slots.status().map_err(StartError::Io)?;
        let other = st
            .slots
            .iter()
            .find(|s| !s.booted && s.version.is_some() && s.entry.is_some())
            .and_then(|s| s.version.clone())
            .ok_or(StartError::NothingStaged)?;
        self.slots.set_default(&other).map_err(StartError::Io)?;
        // A staged update waiting for its trigger is superseded by the explicit choice.
        self.set_pending(None).map_err(StartError::Io)?;
        Ok(other)
    }

    /// Verify a signed index with the update CA.
    pub fn verify_index(&self, index: &[u8], signature: &[u8]) -> Result<(), ApplyError> {
        crate::slots::bundle::verify_detached(index, signature, &self.ca)
    }

    /// Whether any slot holds `version`.
    pub fn holds(&self, version: &str) -> bool {
        self.slots.status().map(|s| s.slots.iter().any(|x| x.version.as_deref() == Some(version))).unwrap_or(false)
    }

    /// Whether an update is being written now.
    pub fn busy(&self) -> bool {
        self.reserved.load(std::sync::atomic::Ordering::SeqCst) || self.slots.applying()
    }

    /// Write the bundle read from `src` and finish `task` by the request's ApplyTime. Blocking:
    /// run it on its own thread.
    pub fn run(&self, src: &mut dyn Read, req: &Request, task: &TaskHandle) {
        let image = req.image.as_str();
        task.message(Message::update(&um::TARGET_DETERMINED, &[TARGET, image]));
        let opts = ApplyOptions { ca: self.ca.clone(), arch: crate::slots::native_arch().to_string(), allow_downgrade: req.force };
        let mut verifying = false;
        let mut progress = |p: Progress| match p {
            Progress::ManifestVerified { .. } => {
                task.message(Message::update(&um::TRANSFERRING_TO_COMPONENT, &[image, TARGET]));
                task.progress(2);
            }
            Progress::Writing { total_written, total_bytes, .. } => {
                task.progress((2 + total_written.saturating_mul(93) / total_bytes.max(1)).min(95) as u8);
            }
            Progress::Verifying { .. } if !verifying => {
                verifying = true;
                task.message(Message::update(&um::VERIFYING_AT_COMPONENT, &[image, TARGET]));
            }
            Progress::Activating => {
                task.message(Message::update(&um::APPLYING_ON_COMPONENT, &[image, TARGET]));
                task.progress(97);
            }
            _ => {}
        };
        // A failing source (a download that broke off, an upload cut short) is a failed transfer,
        // whatever the engine was doing when its read failed.
        let mut src = SourceErrors { inner: src, error: None };
        match self.slots.apply(&mut src, &opts, &mut progress) {
            Ok(applied) => self.finish(&applied, req, task),
            Err(e) => {
                log::warn!("update {}: {e}", task.id());
                match src.error {
                    Some(why) => task.fail(Message::update(&um::TRANSFER_FAILED, &[image, TARGET]).resolution(&why)),
                    None => task.fail(failure_message(&e, image)),
                }
            }
        }
    }

    fn finish(&self, applied: &Applied, req: &Request, task: &TaskHandle) {
        let image = req.image.as_str();
        let staged = if req.apply_time.pinned() {
            // Keep booting the running version until the trigger: pin it as the default.
            let pinned = self.slots.running_version().ok_or_else(|| io_other("the running version is unknown")).and_then(|v| self.slots.set_default(&v).map(|_| ()));
            let pending = Pending { version: applied.version.clone(), apply_time: req.apply_time, window: req.window, task: task.id().to_string() };
            if let Err(e) = pinned.and_then(|_| self.set_pending(Some(pending))) {
                task.fail(Message::update(&um::ACTIVATE_FAILED, &[image, TARGET]).resolution(&format!("The new version {} is written to slot {} but could not be held back for the requested apply time: {e}", applied.version, applied.slot)));
                return;
            }
            true
        } else {
            // Immediate or OnReset: nothing is pinned; a pinned default from an earlier staged
            // update would hold this one back.
            if let Err(e) = self.release(&applied.version).and_then(|_| self.set_pending(None)) {
                task.fail(Message::update(&um::ACTIVATE_FAILED, &[image, TARGET]).resolution(&e.to_string()));
                return;
            }
            req.apply_time == ApplyTime::OnReset
        };
        task.message(Message::update(&um::UPDATE_SUCCESSFUL, &[TARGET, image]));
        self.events.resource_event(&crate::messages::resource_event::RESOURCE_CHANGED, "/redfish/v1/UpdateService/SoftwareInventory", "SoftwareInventoryCollection", &[]);
        if staged {
            task.message(Message::update(&um::AWAIT_TO_ACTIVATE, &[image, TARGET]));
            task.complete(None);
            return;
        }
        task.complete(None);
        // Immediate: restart now (the task is finished and saved first).
        if let Err(e) = self.restart_now() {
            log::warn!("update {}: version {} written, the restart failed: {e}", task.id(), applied.version);
        }
    }

    /// Let the written `version` boot next: forget a pinned default, or — for a version older than
    /// the running one (a forced downgrade), which the newest-first order would never pick — make
    /// its entry the default (if it never boots, its tries run out and the newest boots again).
    fn release(&self, version: &str) -> io::Result<()> {
        let older = self.slots.running_version().is_some_and(|r| crate::slots::boot::vercmp(version, &r).is_lt());
        if older {
            self.slots.set_default(version).map(|_| ())
        } else {
            self.slots.clear_default()
        }
    }

    fn restart_now(&self) -> Result<(), String> {
        match self.restart.lock().unwrap().as_ref() {
            Some(r) => r(),
            None => Err("no restart configured".into()),
        }
    }

    /// `UpdateService.StartUpdate`: activate what was staged (any pinned apply time) and restart.
    pub fn start_update(&self) -> Result<String, StartError> {
        let Some(p) = self.pending() else { return Err(StartError::NothingStaged) };
        self.release(&p.version).map_err(StartError::Io)?;
        self.set_pending(None).map_err(StartError::Io)?;
        self.restart_now().map_err(StartError::Restart)?;
        Ok(p.version)
    }

    /// Called about once a second: a staged update whose maintenance window has started
    /// (`AtMaintenanceWindowStart`) is activated and the machine restarted.
    pub fn tick(&self, now: DateTime<Utc>) {
        let Some(p) = self.pending() else { return };
        if p.apply_time != ApplyTime::AtMaintenanceWindowStart {
            return;
        }
        let Some(w) = p.window else { return };
        if !w.contains(now) {
            return;
        }
        log::info!("update: maintenance window started, activating version {}", p.version);
        if let Err(e) = self.release(&p.version).and_then(|_| self.set_pending(None)) {
            log::warn!("update: cannot activate {}: {e}", p.version);
            return;
        }
        if let Err(e) = self.restart_now() {
            log::warn!("update: restart for version {} failed: {e}", p.version);
        }
    }

    /// A reset of the machine is about to happen: a version staged for `InMaintenanceWindowOnReset`
    /// is let through when the reset falls inside its window (and `OnReset` needs nothing).
    pub fn before_reset(&self, now: DateTime<Utc>) -> io::Result<()> {
        if let Some(p) = self.pending() {
            if p.apply_time == ApplyTime::InMaintenanceWindowOnReset && p.window.is_some_and(|w| w.contains(now)) {
                self.release(&p.version)?;
                self.set_pending(None)?;
            }
        }
        Ok(())
    }

    /// The simulated platform's reset: systemd-boot's choice, then (the new system being up) the
    /// booted entry blessed. On the real platform the machine reboots and keeld blesses at start.
    pub fn simulated_reboot(&self) -> Result<crate::slots::BootOutcome, String> {
        self.before_reset(Utc::now()).map_err(|e| e.to_string())?;
        let out = self.slots.reboot().map_err(|e| e.to_string())?;
        log::info!("simulated reboot: {:?} (tries: {:?})", out.booted, out.attempts);
        if out.booted.is_some() {
            if let Err(e) = self.slots.bless() {
                log::warn!("bless after the simulated boot: {e}");
            }
        }
        // A pending version that failed to boot or was overwritten is no longer pending.
        if let Some(p) = self.pending() {
            if out.booted.as_deref() == Some(p.version.as_str()) {
                let _ = self.set_pending(None);
            }
        }
        self.events.resource_event(&crate::messages::resource_event::RESOURCE_CHANGED, "/redfish/v1/UpdateService/SoftwareInventory", "SoftwareInventoryCollection", &[]);
        Ok(out)
    }
}

/// A source that remembers its first read error.
struct SourceErrors<'a> {
    inner: &'a mut dyn Read,
    error: Option<String>,
}

impl Read for SourceErrors<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted && self.error.is_none() {
                self.error = Some(e.to_string());
            }
        })
    }
}

#[derive(Debug)]
pub enum StartError {
    NothingStaged,
    Io(io::Error),
    Restart(String),
}

/// The Update registry message for a failed apply, with the reason as its Resolution.
pub fn failure_message(e: &ApplyError, image: &str) -> Message {
    use ApplyError::*;
    let def = match e {
        BadSignature(_) | UntrustedSigner(_) | Mismatch { .. } | Malformed(_) => &um::VERIFICATION_FAILED,
        WrongArchitecture { .. } | RunningSlot(_) => &um::UPDATE_NOT_APPLICABLE,
        Downgrade { .. } | TooOld { .. } => &um::UPDATE_SKIPPED_VERSION_TOO_LOW,
        SameVersion(_) => &um::UPDATE_SKIPPED_SAME_VERSION,
        Truncated(_) => &um::TRANSFER_FAILED,
        NoSpace { .. } | Io(_) | Busy => &um::APPLY_FAILED,
    };
    let args: [&str; 2] = if matches!(e, WrongArchitecture { .. } | RunningSlot(_)) { [image, TARGET] } else if std::ptr::eq(def, &um::UPDATE_SKIPPED_VERSION_TOO_LOW) || std::ptr::eq(def, &um::UPDATE_SKIPPED_SAME_VERSION) { [TARGET, image] } else { [image, TARGET] };
    Message::update(def, &args).resolution(&e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_apply_times() {
        let start: DateTime<Utc> = "2026-11-22T02:00:00Z".parse().unwrap();
        let w = Window { start, seconds: 3600 };
        assert!(!w.contains(start - chrono::Duration::seconds(1)));
        assert!(w.contains(start));
        assert!(w.contains(start + chrono::Duration::seconds(3599)));
        assert!(!w.contains(start + chrono::Duration::seconds(3600)));
        for n in ApplyTime::NAMES {
            assert!(ApplyTime::parse(n).is_some(), "{n}");
        }
        assert!(ApplyTime::parse("Later").is_none());
        assert!(ApplyTime::AtMaintenanceWindowStart.needs_window() && !ApplyTime::OnReset.needs_window());
        assert!(ApplyTime::OnStartUpdateRequest.pinned() && !ApplyTime::Immediate.pinned());
    }

    #[test]
    fn a_failing_source_is_remembered() {
        let (tx, mut reader) = source::channel();
        tx.blocking_send(Ok(actix_web::web::Bytes::from_static(b"KEELBNDL"))).unwrap();
        tx.blocking_send(Err("the upload broke off: eof".into())).unwrap();
        let mut src = SourceErrors { inner: &mut reader, error: None };
        let mut buf = [0u8; 64];
        assert_eq!(src.read(&mut buf).unwrap(), 8);
        assert!(src.error.is_none());
        assert!(src.read(&mut buf).is_err());
        assert_eq!(src.error.as_deref(), Some("the upload broke off: eof"));
    }

    #[test]
    fn each_failure_names_its_reason() {
        let m = failure_message(&ApplyError::BadSignature("x".into()), "b.keel").to_json();
        assert_eq!(m["MessageId"], "Update.1.3.VerificationFailed");
        assert!(m["Resolution"].as_str().unwrap().contains("bad bundle signature"));
        let m = failure_message(&ApplyError::Downgrade { bundle: "1".into(), running: "2".into() }, "b").to_json();
        assert_eq!(m["MessageId"], "Update.1.3.UpdateSkippedVersionTooLow");
        assert_eq!(m["MessageArgs"], serde_json::json!([TARGET, "b"]));
        let m = failure_message(&ApplyError::Truncated("eof".into()), "b").to_json();
        assert_eq!(m["MessageId"], "Update.1.3.TransferFailed");
    }
}
