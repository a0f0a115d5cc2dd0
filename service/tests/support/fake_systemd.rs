//! A stand-in for systemd-logind and systemd (PID 1) on a private D-Bus bus, for the power tests.
//!
//! It owns `org.freedesktop.login1` and `org.freedesktop.systemd1`, serves the methods keeld
//! calls with their real signatures, and records every call with its arguments and outcome.
//! Inhibitors behave as in logind (systemd ≥ 258): `Inhibit(what, who, why, mode)` hands back
//! the write end of a pipe and the lock lasts until every copy of that end is closed (so a real
//! `systemd-inhibit` pointed at the bus holds one for as long as its command runs); a
//! `block` shutdown inhibitor refuses `Reboot`/`PowerOff` and their `…WithFlags` variants
//! unless `SD_LOGIND_SKIP_INHIBITORS` is passed, a `block-weak` one only when
//! `SD_LOGIND_ROOT_CHECK_INHIBITORS` is, and unknown flags are invalid arguments.
//! systemd's `Reboot()`/`PowerOff()` know nothing of inhibitors, as in systemd.
//!
//! Used in-process by `service/tests/power.rs` and as the `fake-logind` example binary by
//! `tests/test_power.py`.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

pub const SD_LOGIND_ROOT_CHECK_INHIBITORS: u64 = 1 << 0;
pub const SD_LOGIND_REBOOT_VIA_KEXEC: u64 = 1 << 1;
pub const SD_LOGIND_SOFT_REBOOT: u64 = 1 << 2;
pub const SD_LOGIND_SOFT_REBOOT_IF_NEXTROOT_SET_UP: u64 = 1 << 3;
pub const SD_LOGIND_SKIP_INHIBITORS: u64 = 1 << 4;
const PUBLIC_FLAGS: u64 = 0x1f;

/// One method call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// "login1" or "systemd1".
    pub service: String,
    pub method: String,
    pub args: Value,
    /// "ok", or the D-Bus error name it answered with.
    pub outcome: String,
}

impl Call {
    pub fn to_json(&self) -> Value {
        json!({ "service": self.service, "method": self.method, "args": self.args, "outcome": self.outcome })
    }
}

/// Every call, in order; `sink` also sees each one as it happens (the binary prints them).
#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<Call>>,
    cv: Condvar,
    sink: Option<Box<dyn Fn(&Call) + Send + Sync>>,
}

impl Recorder {
    pub fn with_sink(sink: Box<dyn Fn(&Call) + Send + Sync>) -> Recorder {
        Recorder { sink: Some(sink), ..Default::default() }
    }
    fn push(&self, service: &str, method: &str, args: Value, outcome: &str) {
        let c = Call { service: service.into(), method: method.into(), args, outcome: outcome.into() };
        if let Some(s) = &self.sink {
            s(&c);
        }
        self.calls.lock().unwrap().push(c);
        self.cv.notify_all();
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    /// Wait until at least `n` calls were recorded (or `timeout`); returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let end = Instant::now() + timeout;
        let mut g = self.calls.lock().unwrap();
        while g.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = self.cv.wait_timeout(g, left).unwrap().0;
        }
        g.clone()
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop")]
pub enum FakeError {
    #[zbus(error)]
    ZBus(zbus::Error),
    #[zbus(name = "login1.BlockedByInhibitorLock")]
    BlockedByInhibitorLock(String),
    #[zbus(name = "DBus.Error.InvalidArgs")]
    InvalidArgs(String),
    #[zbus(name = "systemd1.NoSuchUnit")]
    NoSuchUnit(String),
}

impl FakeError {
    fn dbus_name(&self) -> String {
        zbus::DBusError::name(self).to_string()
    }
}

struct Inhibitor {
    what: String,
    who: String,
    why: String,
    mode: String,
    /// Our end of the pipe: the lock is gone once it reads end-of-file.
    fifo: OwnedFd,
}

impl Inhibitor {
    fn alive(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fifo.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        !(n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0)
    }
}

pub struct Login1 {
    rec: Arc<Recorder>,
    inhibitors: Arc<Mutex<Vec<Inhibitor>>>,
}

impl Login1 {
    fn check(&self, flags: u64) -> Result<(), FakeError> {
        if flags & !PUBLIC_FLAGS != 0 {
            return Err(FakeError::InvalidArgs("Invalid flags parameter".into()));
        }
        let mut inh = self.inhibitors.lock().unwrap();
        inh.retain(Inhibitor::alive);
        let blocked = inh.iter().filter(|i| i.what.split(':').any(|w| w == "shutdown")).any(|i| match i.mode.as_str() {
            "block" => flags & SD_LOGIND_SKIP_INHIBITORS == 0,
            "block-weak" => flags & SD_LOGIND_SKIP_INHIBITORS == 0 && flags & SD_LOGIND_ROOT_CHECK_INHIBITORS != 0,
            _ => false,
        });
        if blocked {
            return Err(FakeError::BlockedByInhibitorLock("Operation denied due to active block inhibitor".into()));
        }
        Ok(())
    }
    fn shutdown(&self, method: &str, args: Value, flags: u64) -> Result<(), FakeError> {
        let r = self.check(flags);
        self.rec.push("login1", method, args, &r.as_ref().map(|_| "ok".to_string()).unwrap_or_else(FakeError::dbus_name));
        r
    }
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Login1 {
    fn reboot(&self, interactive: bool) -> Result<(), FakeError> {
        self.shutdown("Reboot", json!([interactive]), 0)
    }
    fn power_off(&self, interactive: bool) -> Result<(), FakeError> {
        self.shutdown("PowerOff", json!([interactive]), 0)
    }
    fn reboot_with_flags(&self, flags: u64) -> Result<(), FakeError> {
        self.shutdown("RebootWithFlags", json!([flags]), flags)
    }
    fn power_off_with_flags(&self, flags: u64) -> Result<(), FakeError> {
        self.shutdown("PowerOffWithFlags", json!([flags]), flags)
    }
    fn inhibit(&self, what: String, who: String, why: String, mode: String) -> Result<zbus::zvariant::OwnedFd, FakeError> {
        self.rec.push("login1", "Inhibit", json!([what, who, why, mode]), "ok");
        if !["block", "block-weak", "delay"].contains(&mode.as_str()) {
            return Err(FakeError::InvalidArgs(format!("Invalid mode {mode}")));
        }
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(FakeError::InvalidArgs(std::io::Error::last_os_error().to_string()));
        }
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        self.inhibitors.lock().unwrap().push(Inhibitor { what, who, why, mode, fifo: read });
        Ok(write.into())
    }
    fn list_inhibitors(&self) -> Vec<(String, String, String, String, u32, u32)> {
        self.rec.push("login1", "ListInhibitors", json!([]), "ok");
        let mut inh = self.inhibitors.lock().unwrap();
        inh.retain(Inhibitor::alive);
        inh.iter().map(|i| (i.what.clone(), i.who.clone(), i.why.clone(), i.mode.clone(), 0, 0)).collect()
    }
}

/// Where the unit's MainPID comes from.
#[derive(Clone, Debug)]
pub enum MainPid {
    Fixed(u32),
    /// Read from this file at each query (the test writes keeld's PID once it started).
    File(PathBuf),
}

/// The unit keeld is supposed to run as.
#[derive(Clone, Debug)]
pub struct UnitSpec {
    pub name: String,
    pub invocation_id: [u8; 16],
    pub main_pid: MainPid,
}

impl UnitSpec {
    pub fn path(&self) -> OwnedObjectPath {
        let escaped: String = self.name.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("_{b:02x}") }).collect();
        ObjectPath::try_from(format!("/org/freedesktop/systemd1/unit/{escaped}")).unwrap().into()
    }
}

pub struct Systemd1 {
    rec: Arc<Recorder>,
    unit: Option<UnitSpec>,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Systemd1 {
    fn reboot(&self) {
        self.rec.push("systemd1", "Reboot", json!([]), "ok");
    }
    fn power_off(&self) {
        self.rec.push("systemd1", "PowerOff", json!([]), "ok");
    }
    #[zbus(name = "GetUnitByInvocationID")]
    fn get_unit_by_invocation_id(&self, id: Vec<u8>) -> Result<OwnedObjectPath, FakeError> {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        match &self.unit {
            Some(u) if u.invocation_id[..] == id[..] => {
                self.rec.push("systemd1", "GetUnitByInvocationID", json!([hex]), "ok");
                Ok(u.path())
            }
            _ => {
                let e = FakeError::NoSuchUnit(format!("No unit with the specified invocation ID {hex} known."));
                self.rec.push("systemd1", "GetUnitByInvocationID", json!([hex]), &e.dbus_name());
                Err(e)
            }
        }
    }
    fn restart_unit(&self, name: String, mode: String) -> Result<OwnedObjectPath, FakeError> {
        match &self.unit {
            Some(u) if u.name == name => {
                self.rec.push("systemd1", "RestartUnit", json!([name, mode]), "ok");
                Ok(ObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap().into())
            }
            _ => {
                let e = FakeError::NoSuchUnit(format!("Unit {name} not found."));
                self.rec.push("systemd1", "RestartUnit", json!([name, mode]), &e.dbus_name());
                Err(e)
            }
        }
    }
}

struct Unit(UnitSpec);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn id(&self) -> String {
        self.0.name.clone()
    }
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> Vec<u8> {
        self.0.invocation_id.to_vec()
    }
}

struct Service(UnitSpec);

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> u32 {
        match &self.0.main_pid {
            MainPid::Fixed(p) => *p,
            MainPid::File(f) => std::fs::read_to_string(f).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        }
    }
}

/// The running fake: drop it to leave the bus.
pub struct FakeSystemd {
    pub rec: Arc<Recorder>,
    _conn: zbus::blocking::Connection,
}

impl FakeSystemd {
    /// Connect to the bus at `address`, own both names and serve them (on zbus's own thread).
    pub fn start(address: &str, rec: Arc<Recorder>, unit: Option<UnitSpec>) -> zbus::Result<FakeSystemd> {
        let inhibitors = Arc::new(Mutex::new(vec![]));
        let mut b = zbus::blocking::connection::Builder::address(address)?
            .name("org.freedesktop.login1")?
            .name("org.freedesktop.systemd1")?
            .serve_at("/org/freedesktop/login1", Login1 { rec: rec.clone(), inhibitors })?
            .serve_at("/org/freedesktop/systemd1", Systemd1 { rec: rec.clone(), unit: unit.clone() })?;
        if let Some(u) = unit {
            b = b.serve_at(u.path(), Unit(u.clone()))?.serve_at(u.path(), Service(u))?;
        }
        Ok(FakeSystemd { rec, _conn: b.build()? })
    }
}
