//! Power: resetting the host (`ComputerSystem.Reset`) and restarting keeld as a systemd unit
//! (`Manager.Reset`).
//!
//! Two backends, chosen at start-up with `--power`:
//!
//! * [`Logind`] acts on the machine over the system bus (zbus):
//!   - `GracefulRestart` → `org.freedesktop.login1.Manager.RebootWithFlags(SD_LOGIND_ROOT_CHECK_INHIBITORS)`
//!   - `GracefulShutdown` → `org.freedesktop.login1.Manager.PowerOffWithFlags(SD_LOGIND_ROOT_CHECK_INHIBITORS)`
//!
//!   The graceful kinds go through logind so every service is stopped in order and block
//!   inhibitors are honoured. keeld runs as root, and logind lets root override inhibitors
//!   unless asked not to: before systemd 257 root bypassed every block inhibitor unless
//!   `SD_LOGIND_ROOT_CHECK_INHIBITORS` (1 << 0) was passed; from 257 on strong (`block`)
//!   inhibitors bind root too and the flag makes root respect `block-weak` ones as well. With
//!   the flag a graceful reset is refused by any block inhibitor on any systemd version (logind
//!   answers `org.freedesktop.login1.BlockedByInhibitorLock`, or `AccessDenied` on 257), and
//!   keeld reports that as `ResourceInUse` (409) naming nothing but logging who holds the lock.
//!   The `interactive` polkit flag is never set: there is nobody to ask.
//!   - `ForceRestart`, `PowerCycle` → `org.freedesktop.systemd1.Manager.Reboot()`
//!   - `ForceOff` → `org.freedesktop.systemd1.Manager.PowerOff()`
//!
//!   The forced kinds are Redfish's "immediate, non-graceful" resets: systemd's own Reboot() and
//!   PowerOff() skip the orderly stop of services (and thus every inhibitor) and go straight to
//!   the final stage, which still kills the remaining processes, syncs and unmounts or remounts
//!   file systems read-only and detaches LUKS volumes (`systemctl reboot --force`). That is as
//!   forced as an operating system can make it without losing data it has already written, and
//!   it does not depend on polkit (logind's `SD_LOGIND_SKIP_INHIBITORS` would ask polkit for
//!   the ignore-inhibit action even for root, and still stop every service first).
//!   A host cannot remove its own power, so `PowerCycle` is the forced reboot: the firmware
//!   re-initialises the machine, which is what a power cycle is asked for.
//!
//! * [`Simulated`] never touches the machine: it keeps the power state in the state directory
//!   (`power.json`, written atomically), and calls a [`ResetHook`] for every reset it performs.
//!   The hook is where the A/B engine's simulated reboot is connected; without one, a reset only
//!   changes the recorded state. A simulated `GracefulShutdown`/`ForceOff` leaves the system
//!   `Off` until an `On` reset, which only the simulated platform offers.
//!
//! `--power auto` (the default) picks [`Logind`] only on a Keel image booted by systemd
//! (`ID=keel` in os-release and `/run/systemd/system` present) and [`Simulated`] everywhere
//! else, so a developer box is never rebooted by keeld.

use crate::store::StateDir;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// `RebootWithFlags`/`PowerOffWithFlags`: check inhibitors for root callers too.
pub const SD_LOGIND_ROOT_CHECK_INHIBITORS: u64 = 1 << 0;

const LOGIN1: &str = "org.freedesktop.login1";
const LOGIN1_PATH: &str = "/org/freedesktop/login1";
const LOGIN1_MANAGER: &str = "org.freedesktop.login1.Manager";
const SYSTEMD1: &str = "org.freedesktop.systemd1";
const SYSTEMD1_PATH: &str = "/org/freedesktop/systemd1";
const SYSTEMD1_MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long one D-Bus call may take (logind answers at once; polkit is never asked).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redfish `ResetType`s keeld implements for the ComputerSystem.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetKind {
    /// Power on a simulated system that was shut down (simulated platform only).
    On,
    GracefulRestart,
    ForceRestart,
    GracefulShutdown,
    ForceOff,
    PowerCycle,
}

impl ResetKind {
    /// Every kind, in the order they are listed to clients.
    pub const ALL: &'static [ResetKind] = &[ResetKind::On, ResetKind::GracefulRestart, ResetKind::ForceRestart, ResetKind::GracefulShutdown, ResetKind::ForceOff, ResetKind::PowerCycle];
    /// The Redfish names of [`ResetKind::ALL`].
    pub const NAMES: &'static [&'static str] = &["On", "GracefulRestart", "ForceRestart", "GracefulShutdown", "ForceOff", "PowerCycle"];

    pub fn as_str(self) -> &'static str {
        match self {
            ResetKind::On => "On",
            ResetKind::GracefulRestart => "GracefulRestart",
            ResetKind::ForceRestart => "ForceRestart",
            ResetKind::GracefulShutdown => "GracefulShutdown",
            ResetKind::ForceOff => "ForceOff",
            ResetKind::PowerCycle => "PowerCycle",
        }
    }
    pub fn parse(s: &str) -> Option<ResetKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
    /// Whether the system ends up off.
    pub fn powers_off(self) -> bool {
        matches!(self, ResetKind::GracefulShutdown | ResetKind::ForceOff)
    }
    /// Whether the system goes through a boot (a reboot, or On).
    pub fn boots(self) -> bool {
        !self.powers_off()
    }
}

impl std::fmt::Display for ResetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Redfish `PowerState` of the system.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    On,
    Off,
    PoweringOff,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
            PowerState::PoweringOff => "PoweringOff",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerError {
    /// A block inhibitor refused a graceful reset; `holders` lists "who (why)" as logind reports them.
    Inhibited { holders: Vec<String> },
    /// The (simulated) system is off: only `On`, or another off request, can be done.
    PoweredOff,
    /// This backend does not offer that kind.
    Unsupported(ResetKind),
    /// The bus, logind or systemd could not be reached or refused for another reason.
    Failed(String),
}

impl std::fmt::Display for PowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PowerError::Inhibited { holders } if holders.is_empty() => write!(f, "refused by a block inhibitor"),
            PowerError::Inhibited { holders } => write!(f, "refused by a block inhibitor held by {}", holders.join(", ")),
            PowerError::PoweredOff => write!(f, "the system is powered off"),
            PowerError::Unsupported(k) => write!(f, "reset type {k} is not supported here"),
            PowerError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PowerError {}

/// A way to reset the host.
pub trait PowerBackend: Send + Sync {
    /// Perform `kind` now. Blocking (it may talk D-Bus or write state): call it off the request threads.
    fn reset(&self, kind: ResetKind) -> Result<(), PowerError>;
    /// "logind" or "simulated".
    fn name(&self) -> &str;
    /// Whether it acts on the machine.
    fn is_real(&self) -> bool;
    /// The kinds [`reset`](Self::reset) accepts (listed in the ActionInfo).
    fn reset_kinds(&self) -> &'static [ResetKind];
    /// The system's power state as this backend knows it (never blocks).
    fn power_state(&self) -> PowerState;
    /// When the system last came out of a reset, if known.
    fn last_reset(&self) -> Option<DateTime<Utc>>;
}

/// `--power`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum PowerMode {
    /// Logind on a Keel image booted by systemd, else simulated.
    #[default]
    Auto,
    Logind,
    Simulated,
}

impl std::str::FromStr for PowerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PowerMode::Auto),
            "logind" => Ok(PowerMode::Logind),
            "simulated" => Ok(PowerMode::Simulated),
            _ => Err(format!("'{s}': expected auto, logind or simulated")),
        }
    }
}

/// Whether this is a Keel image booted by systemd (where `--power auto` means logind).
pub fn on_keel_image() -> bool {
    let os_release = std::fs::read_to_string("/etc/os-release").or_else(|_| std::fs::read_to_string("/usr/lib/os-release")).unwrap_or_default();
    os_release_id(&os_release).as_deref() == Some("keel") && std::path::Path::new("/run/systemd/system").is_dir()
}

fn os_release_id(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("ID=")).map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
}

/// The backend `--power MODE` asks for. `live` is false when keeld serves a recorded host
/// (`--host-root`): that is never the machine to reset, so auto means simulated there. `hook`
/// is what a simulated reset does (see [`ResetHook`]; unused by logind).
pub fn select(mode: PowerMode, bus: Option<String>, state: &StateDir, live: bool, hook: ResetHook) -> std::io::Result<Box<dyn PowerBackend>> {
    let logind = match mode {
        PowerMode::Logind => true,
        PowerMode::Simulated => false,
        PowerMode::Auto => live && on_keel_image(),
    };
    Ok(if logind { Box::new(Logind::new(bus)) } else { Box::new(Simulated::open(state.clone(), hook)?) })
}

// ------------------------------------------------------------------------------------------ D-Bus

/// A connection to the system bus, or to `address` when one is given (`--power-bus`).
pub fn connect(address: Option<&str>) -> Result<zbus::blocking::Connection, PowerError> {
    let b = match address {
        Some(a) => zbus::blocking::connection::Builder::address(a),
        None => zbus::blocking::connection::Builder::system(),
    };
    b.and_then(|b| b.method_timeout(CALL_TIMEOUT).build()).map_err(|e| PowerError::Failed(format!("D-Bus {}: {e}", address.unwrap_or("system bus"))))
}

fn method_error(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

fn failed(what: &str, e: zbus::Error) -> PowerError {
    PowerError::Failed(format!("{what}: {e}"))
}

/// logind over D-Bus (see the module documentation for what each kind calls).
pub struct Logind {
    bus: Option<String>,
    /// Set once a reset was accepted: the host is on its way down.
    going_down: AtomicBool,
    booted: Option<DateTime<Utc>>,
}

impl Logind {
    pub fn new(bus: Option<String>) -> Logind {
        Logind { bus, going_down: AtomicBool::new(false), booted: kernel_boot_time() }
    }

    /// The shutdown block inhibitors logind lists, as "who (why)".
    fn shutdown_blockers(c: &zbus::blocking::Connection) -> Vec<String> {
        let reply = c.call_method(Some(LOGIN1), LOGIN1_PATH, Some(LOGIN1_MANAGER), "ListInhibitors", &());
        let list: Vec<(String, String, String, String, u32, u32)> = match reply.and_then(|m| m.body().deserialize().map_err(Into::into)) {
            Ok(l) => l,
            Err(_) => return vec![],
        };
        list.into_iter().filter(|(what, _, _, mode, _, _)| what.split(':').any(|w| w == "shutdown") && mode.starts_with("block")).map(|(_, who, why, _, _, _)| format!("{who} ({why})")).collect()
    }

    fn graceful(&self, c: &zbus::blocking::Connection, method: &str) -> Result<(), PowerError> {
        match c.call_method(Some(LOGIN1), LOGIN1_PATH, Some(LOGIN1_MANAGER), method, &(SD_LOGIND_ROOT_CHECK_INHIBITORS,)) {
            Ok(_) => Ok(()),
            Err(e) => {
                let holders = Self::shutdown_blockers(c);
                match method_error(&e) {
                    // systemd ≥ 258 names the refusal; 257 says AccessDenied, which with a block
                    // inhibitor present can only be that inhibitor.
                    Some("org.freedesktop.login1.BlockedByInhibitorLock") => Err(PowerError::Inhibited { holders }),
                    Some("org.freedesktop.DBus.Error.AccessDenied") if !holders.is_empty() => Err(PowerError::Inhibited { holders }),
                    _ => Err(failed(&format!("logind {method}"), e)),
                }
            }
        }
    }

    fn forced(&self, c: &zbus::blocking::Connection, method: &str) -> Result<(), PowerError> {
        c.call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), method, &()).map(|_| ()).map_err(|e| failed(&format!("systemd {method}"), e))
    }
}

impl PowerBackend for Logind {
    fn reset(&self, kind: ResetKind) -> Result<(), PowerError> {
        if kind == ResetKind::On {
            return Err(PowerError::Unsupported(kind));
        }
        let c = connect(self.bus.as_deref())?;
        match kind {
            ResetKind::GracefulRestart => self.graceful(&c, "RebootWithFlags"),
            ResetKind::GracefulShutdown => self.graceful(&c, "PowerOffWithFlags"),
            ResetKind::ForceRestart | ResetKind::PowerCycle => self.forced(&c, "Reboot"),
            ResetKind::ForceOff => self.forced(&c, "PowerOff"),
            ResetKind::On => unreachable!(),
        }?;
        self.going_down.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn name(&self) -> &str {
        "logind"
    }
    fn is_real(&self) -> bool {
        true
    }
    fn reset_kinds(&self) -> &'static [ResetKind] {
        &ResetKind::ALL[1..]
    }
    fn power_state(&self) -> PowerState {
        if self.going_down.load(Ordering::SeqCst) { PowerState::PoweringOff } else { PowerState::On }
    }
    fn last_reset(&self) -> Option<DateTime<Utc>> {
        self.booted
    }
}

/// The kernel's boot time (`btime` in /proc/stat).
fn kernel_boot_time() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    DateTime::from_timestamp(secs, 0)
}

// ------------------------------------------------------------------------ keeld as a systemd unit

/// Ask systemd to restart the unit keeld runs as, when keeld is that unit's main process.
///
/// `invocation_id` is `$INVOCATION_ID` (systemd sets it for every unit it starts). The unit is
/// looked up by it, and only restarted when its `MainPID` is this process: an `INVOCATION_ID`
/// inherited from some other unit (a CI runner's, say) must not restart that unit.
/// `Ok(Some(unit))`: systemd accepted `RestartUnit(unit, "replace")`; `Ok(None)`: keeld is not
/// that unit's main process, restart it some other way.
pub fn restart_own_unit(bus: Option<&str>, invocation_id: &str) -> Result<Option<String>, PowerError> {
    let id = parse_invocation_id(invocation_id).ok_or_else(|| PowerError::Failed(format!("INVOCATION_ID '{invocation_id}' is not 32 hex digits")))?;
    let c = connect(bus)?;
    let unit: zbus::zvariant::OwnedObjectPath = c
        .call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), "GetUnitByInvocationID", &(id,))
        .and_then(|m| m.body().deserialize().map_err(Into::into))
        .map_err(|e| failed("systemd GetUnitByInvocationID", e))?;
    let prop = |iface: &str, name: &str| -> Result<zbus::zvariant::OwnedValue, PowerError> {
        c.call_method(Some(SYSTEMD1), unit.as_str(), Some("org.freedesktop.DBus.Properties"), "Get", &(iface, name))
            .and_then(|m| m.body().deserialize().map_err(Into::into))
            .map_err(|e| failed(&format!("systemd {}.{name}", unit.as_str()), e))
    };
    let main_pid = u32::try_from(prop("org.freedesktop.systemd1.Service", "MainPID")?).map_err(|e| PowerError::Failed(format!("MainPID: {e}")))?;
    if main_pid != std::process::id() {
        return Ok(None);
    }
    let name = String::try_from(prop("org.freedesktop.systemd1.Unit", "Id")?).map_err(|e| PowerError::Failed(format!("Id: {e}")))?;
    c.call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), "RestartUnit", &(name.as_str(), "replace")).map_err(|e| failed("systemd RestartUnit", e))?;
    Ok(Some(name))
}

/// Have systemd open a data volume now, as it will at every boot: re-run the generators (a new
/// `/etc/crypttab` line becomes `systemd-cryptsetup@NAME.service`), start that unit and wait
/// until it is active (or failed, or `timeout` passed).
pub fn open_crypttab_volume(bus: Option<&str>, name: &str, timeout: Duration) -> Result<(), PowerError> {
    let c = connect(bus)?;
    c.call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), "Reload", &()).map_err(|e| failed("systemd Reload", e))?;
    let unit = format!("systemd-cryptsetup@{name}.service");
    c.call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), "StartUnit", &(unit.as_str(), "replace")).map_err(|e| failed(&format!("systemd StartUnit {unit}"), e))?;
    let path: zbus::zvariant::OwnedObjectPath = c
        .call_method(Some(SYSTEMD1), SYSTEMD1_PATH, Some(SYSTEMD1_MANAGER), "GetUnit", &(unit.as_str(),))
        .and_then(|m| m.body().deserialize().map_err(Into::into))
        .map_err(|e| failed(&format!("systemd GetUnit {unit}"), e))?;
    let start = std::time::Instant::now();
    loop {
        let state: zbus::zvariant::OwnedValue = c
            .call_method(Some(SYSTEMD1), path.as_str(), Some("org.freedesktop.DBus.Properties"), "Get", &("org.freedesktop.systemd1.Unit", "ActiveState"))
            .and_then(|m| m.body().deserialize().map_err(Into::into))
            .map_err(|e| failed(&format!("systemd {unit} ActiveState"), e))?;
        let state = String::try_from(state).map_err(|e| PowerError::Failed(format!("ActiveState: {e}")))?;
        match state.as_str() {
            "active" => return Ok(()),
            "failed" => return Err(PowerError::Failed(format!("{unit} failed (its journal says why)"))),
            _ if start.elapsed() > timeout => return Err(PowerError::Failed(format!("{unit} is still {state} after {} s", timeout.as_secs()))),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn parse_invocation_id(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().replace('-', "");
    if s.len() != 32 {
        return None;
    }
    (0..16).map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

// -------------------------------------------------------------------------------------- simulated

/// What a simulated reset does besides recording the new power state: the A/B engine's
/// simulated reboot is connected here. It gets every kind performed (`On` and the restarts
/// boot the simulated machine; `GracefulShutdown`/`ForceOff` turn it off) and may refuse, which
/// leaves the recorded state as it was.
pub type ResetHook = Box<dyn Fn(ResetKind) -> Result<(), String> + Send + Sync>;

/// One performed reset, as kept in `power.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ResetRecord {
    pub reset_type: ResetKind,
    pub time: String,
}

/// `power.json`: the simulated system's power state and its latest resets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SimulatedState {
    pub power_state: PowerState,
    /// Newest last, at most [`HISTORY`] entries.
    pub resets: Vec<ResetRecord>,
}

/// How many resets `power.json` remembers.
pub const HISTORY: usize = 32;
const STATE_FILE: &str = "power.json";

pub struct Simulated {
    dir: StateDir,
    /// Held only to read or replace the state, never across the hook: the hook may read the
    /// power state (or anything else that does) without deadlocking.
    state: Mutex<SimulatedState>,
    /// One reset at a time.
    serial: Mutex<()>,
    hook: RwLock<ResetHook>,
}

impl Simulated {
    /// Open the simulated system kept in `dir` (On with no history when new).
    pub fn open(dir: StateDir, hook: ResetHook) -> std::io::Result<Simulated> {
        let state = dir.load::<SimulatedState>(STATE_FILE)?.unwrap_or(SimulatedState { power_state: PowerState::On, resets: vec![] });
        Ok(Simulated { dir, state: Mutex::new(state), serial: Mutex::new(()), hook: RwLock::new(hook) })
    }
    /// The hook used until the A/B engine's simulated reboot is connected: nothing beyond the
    /// recorded state.
    pub fn default_hook() -> ResetHook {
        Box::new(|kind| {
            log::info!("simulated platform: {kind} (no A/B engine attached: only the power state is recorded)");
            Ok(())
        })
    }
    /// Replace the hook (e.g. once the A/B engine exists).
    pub fn set_hook(&self, hook: ResetHook) {
        *self.hook.write().unwrap() = hook;
    }
    pub fn state(&self) -> SimulatedState {
        self.state.lock().unwrap().clone()
    }
}

impl PowerBackend for Simulated {
    fn reset(&self, kind: ResetKind) -> Result<(), PowerError> {
        let _one_at_a_time = self.serial.lock().unwrap();
        let st = self.state();
        let off = st.power_state == PowerState::Off;
        match kind {
            // Already there: nothing to do.
            ResetKind::On if !off => return Ok(()),
            k if k.powers_off() && off => return Ok(()),
            k if k != ResetKind::On && off => return Err(PowerError::PoweredOff),
            _ => {}
        }
        (self.hook.read().unwrap())(kind).map_err(|e| PowerError::Failed(format!("simulated {kind}: {e}")))?;
        let mut next = st.clone();
        next.power_state = if kind.powers_off() { PowerState::Off } else { PowerState::On };
        next.resets.push(ResetRecord { reset_type: kind, time: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true) });
        let excess = next.resets.len().saturating_sub(HISTORY);
        next.resets.drain(..excess);
        self.dir.save(STATE_FILE, &next).map_err(|e| PowerError::Failed(format!("{STATE_FILE}: {e}")))?;
        *self.state.lock().unwrap() = next;
        Ok(())
    }
    fn name(&self) -> &str {
        "simulated"
    }
    fn is_real(&self) -> bool {
        false
    }
    fn reset_kinds(&self) -> &'static [ResetKind] {
        ResetKind::ALL
    }
    fn power_state(&self) -> PowerState {
        self.state.lock().unwrap().power_state
    }
    fn last_reset(&self) -> Option<DateTime<Utc>> {
        let st = self.state.lock().unwrap();
        st.resets.iter().rev().find(|r| r.reset_type.boots()).and_then(|r| DateTime::parse_from_rfc3339(&r.time).ok()).map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn dir() -> StateDir {
        StateDir::open(&std::env::temp_dir().join(format!("keel-power-{}", uuid::Uuid::new_v4()))).unwrap()
    }

    #[test]
    fn names_round_trip() {
        for (k, n) in ResetKind::ALL.iter().zip(ResetKind::NAMES) {
            assert_eq!(k.as_str(), *n);
            assert_eq!(ResetKind::parse(n), Some(*k));
        }
        assert_eq!(ResetKind::parse("Nmi"), None);
        assert_eq!(ResetKind::parse("gracefulrestart"), None);
    }

    #[test]
    fn os_release_id_is_read_with_or_without_quotes() {
        assert_eq!(os_release_id("NAME=Keel\nID=keel\n").as_deref(), Some("keel"));
        assert_eq!(os_release_id("ID=\"debian\"\n").as_deref(), Some("debian"));
        assert_eq!(os_release_id("ID_LIKE=keel\n"), None);
    }

    #[test]
    fn invocation_ids_parse_as_16_bytes() {
        assert_eq!(parse_invocation_id("0123456789abcdef0123456789ABCDEF").unwrap()[..3], [0x01, 0x23, 0x45]);
        assert_eq!(parse_invocation_id("0123"), None);
        assert_eq!(parse_invocation_id("zz23456789abcdef0123456789abcdef"), None);
    }

    #[test]
    fn simulated_shutdown_then_on_with_the_hook_called_and_state_persisted() {
        let d = dir();
        let seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        let sim = Simulated::open(d.clone(), Box::new(move |k| {
            s2.lock().unwrap().push(k);
            Ok(())
        }))
        .unwrap();
        assert_eq!(sim.power_state(), PowerState::On);
        assert_eq!(sim.last_reset(), None);
        sim.reset(ResetKind::GracefulShutdown).unwrap();
        assert_eq!(sim.power_state(), PowerState::Off);
        // Off: restarts are refused, another off and On are not.
        assert_eq!(sim.reset(ResetKind::GracefulRestart), Err(PowerError::PoweredOff));
        assert_eq!(sim.reset(ResetKind::PowerCycle), Err(PowerError::PoweredOff));
        sim.reset(ResetKind::ForceOff).unwrap();
        sim.reset(ResetKind::On).unwrap();
        assert_eq!(sim.power_state(), PowerState::On);
        sim.reset(ResetKind::On).unwrap(); // already on: nothing happens
        sim.reset(ResetKind::ForceRestart).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![ResetKind::GracefulShutdown, ResetKind::On, ResetKind::ForceRestart]);
        assert!(sim.last_reset().is_some());
        // A new process sees the same state.
        let again = Simulated::open(d.clone(), Simulated::default_hook()).unwrap();
        assert_eq!(again.state(), sim.state());
        assert_eq!(again.state().resets.iter().map(|r| r.reset_type).collect::<Vec<_>>(), vec![ResetKind::GracefulShutdown, ResetKind::On, ResetKind::ForceRestart]);
    }

    #[test]
    fn a_refusing_hook_changes_nothing() {
        let d = dir();
        let sim = Simulated::open(d.clone(), Box::new(|_| Err("slot table unreadable".into()))).unwrap();
        assert!(matches!(sim.reset(ResetKind::GracefulShutdown), Err(PowerError::Failed(m)) if m.contains("slot table unreadable")));
        assert_eq!(sim.power_state(), PowerState::On);
        assert!(!d.path(STATE_FILE).exists());
        sim.set_hook(Simulated::default_hook());
        sim.reset(ResetKind::GracefulShutdown).unwrap();
        assert_eq!(sim.power_state(), PowerState::Off);
    }

    #[test]
    fn the_hook_may_read_the_power_state() {
        let sim = Arc::new(Simulated::open(dir(), Simulated::default_hook()).unwrap());
        let weak = Arc::downgrade(&sim);
        let seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        sim.set_hook(Box::new(move |_| {
            s2.lock().unwrap().push(weak.upgrade().unwrap().power_state());
            Ok(())
        }));
        sim.reset(ResetKind::ForceOff).unwrap();
        sim.reset(ResetKind::On).unwrap();
        // The hook runs before the new state is recorded.
        assert_eq!(*seen.lock().unwrap(), vec![PowerState::On, PowerState::Off]);
    }

    #[test]
    fn history_is_bounded() {
        let sim = Simulated::open(dir(), Simulated::default_hook()).unwrap();
        for _ in 0..HISTORY + 5 {
            sim.reset(ResetKind::GracefulRestart).unwrap();
        }
        assert_eq!(sim.state().resets.len(), HISTORY);
    }

    #[test]
    fn logind_lists_every_kind_but_on() {
        let l = Logind::new(Some("unix:path=/nonexistent/bus".into()));
        assert!(!l.reset_kinds().contains(&ResetKind::On));
        assert_eq!(l.reset_kinds().len(), 5);
        assert_eq!(l.reset(ResetKind::On), Err(PowerError::Unsupported(ResetKind::On)));
        // No bus: a failure, and the state stays On.
        assert!(matches!(l.reset(ResetKind::GracefulRestart), Err(PowerError::Failed(_))));
        assert_eq!(l.power_state(), PowerState::On);
    }
}
