//! The logind power backend and keeld's unit restart against a real private `dbus-daemon`, with
//! an in-process zbus server playing systemd-logind and systemd (support/fake_systemd.rs):
//! every reset kind makes exactly the documented call, block inhibitors refuse the graceful kinds
//! and not the forced ones, and `Manager.Reset` restarts keeld's unit only when keeld is its
//! main process.

#[path = "support/fake_systemd.rs"]
mod fake_systemd;

use fake_systemd::{Call, FakeSystemd, MainPid, Recorder, UnitSpec};
use keeld::power::{restart_own_unit, Logind, PowerBackend, PowerError, PowerState, ResetKind};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// A `dbus-daemon` of our own, on a socket in a fresh directory; killed on drop.
struct PrivateBus {
    child: Child,
    address: String,
    dir: PathBuf,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = std::env::temp_dir().join(format!("keel-power-bus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/dbus/private-bus.conf");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg(format!("--address=unix:path={}/bus", dir.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon; scripts/setup.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("unix:path="), "dbus-daemon printed {line:?}");
        PrivateBus { child, address: line.trim().to_string(), dir }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fake(bus: &PrivateBus, unit: Option<UnitSpec>) -> FakeSystemd {
    FakeSystemd::start(&bus.address, Arc::new(Recorder::default()), unit).unwrap()
}

/// The calls that act (everything but ListInhibitors, which keeld reads to name a refusal).
fn actions(calls: &[Call]) -> Vec<(String, String, serde_json::Value, String)> {
    calls.iter().filter(|c| c.method != "ListInhibitors" && c.method != "Inhibit").map(|c| (c.service.clone(), c.method.clone(), c.args.clone(), c.outcome.clone())).collect()
}

fn call(service: &str, method: &str, args: serde_json::Value, outcome: &str) -> (String, String, serde_json::Value, String) {
    (service.into(), method.into(), args, outcome.into())
}

/// Take a logind inhibitor over the bus, as systemd-inhibit does; it lasts while the fd is open.
fn inhibit(bus: &PrivateBus, what: &str, who: &str, why: &str, mode: &str) -> zbus::zvariant::OwnedFd {
    let c = zbus::blocking::connection::Builder::address(bus.address.as_str()).unwrap().build().unwrap();
    let m = c.call_method(Some("org.freedesktop.login1"), "/org/freedesktop/login1", Some("org.freedesktop.login1.Manager"), "Inhibit", &(what, who, why, mode)).unwrap();
    m.body().deserialize::<zbus::zvariant::OwnedFd>().unwrap()
}

#[test]
fn every_reset_kind_makes_exactly_its_call() {
    let bus = PrivateBus::start();
    let f = fake(&bus, None);
    let expected = [
        (ResetKind::GracefulRestart, call("login1", "RebootWithFlags", json!([1]), "ok")),
        (ResetKind::GracefulShutdown, call("login1", "PowerOffWithFlags", json!([1]), "ok")),
        (ResetKind::ForceRestart, call("systemd1", "Reboot", json!([]), "ok")),
        (ResetKind::ForceOff, call("systemd1", "PowerOff", json!([]), "ok")),
        (ResetKind::PowerCycle, call("systemd1", "Reboot", json!([]), "ok")),
    ];
    for (i, (kind, want)) in expected.iter().enumerate() {
        let l = Logind::new(Some(bus.address.clone()));
        assert_eq!(l.power_state(), PowerState::On);
        l.reset(*kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(l.power_state(), PowerState::PoweringOff, "{kind}");
        let calls = f.rec.calls();
        assert_eq!(calls.len(), i + 1, "{kind} made one call: {calls:?}");
        assert_eq!(actions(&calls[i..]), vec![want.clone()], "{kind}");
    }
    // On is the simulated platform's: logind is not even asked.
    assert_eq!(Logind::new(Some(bus.address.clone())).reset(ResetKind::On), Err(PowerError::Unsupported(ResetKind::On)));
    assert_eq!(f.rec.calls().len(), expected.len());
}

#[test]
fn a_block_inhibitor_refuses_the_graceful_kinds_and_not_the_forced_ones() {
    let bus = PrivateBus::start();
    let f = fake(&bus, None);
    let l = Logind::new(Some(bus.address.clone()));
    let fd = inhibit(&bus, "shutdown", "incus", "instances are migrating", "block");
    for kind in [ResetKind::GracefulRestart, ResetKind::GracefulShutdown] {
        match l.reset(kind) {
            Err(PowerError::Inhibited { holders }) => assert_eq!(holders, vec!["incus (instances are migrating)".to_string()], "{kind}"),
            other => panic!("{kind}: {other:?}"),
        }
    }
    assert_eq!(l.power_state(), PowerState::On, "a refused reset leaves the host on");
    assert_eq!(
        actions(&f.rec.calls()),
        vec![
            call("login1", "RebootWithFlags", json!([1]), "org.freedesktop.login1.BlockedByInhibitorLock"),
            call("login1", "PowerOffWithFlags", json!([1]), "org.freedesktop.login1.BlockedByInhibitorLock"),
        ],
        "refused once each, never retried around the inhibitor"
    );
    l.reset(ResetKind::ForceRestart).unwrap();
    assert_eq!(actions(&f.rec.calls()).last().unwrap(), &call("systemd1", "Reboot", json!([]), "ok"));
    // The lock ends when its holder closes the fd: a graceful reset goes through again.
    drop(fd);
    l.reset(ResetKind::GracefulRestart).unwrap();
    assert_eq!(actions(&f.rec.calls()).last().unwrap(), &call("login1", "RebootWithFlags", json!([1]), "ok"));
}

#[test]
fn a_weak_block_inhibitor_binds_keeld_too_and_a_delay_one_does_not() {
    let bus = PrivateBus::start();
    let f = fake(&bus, None);
    let l = Logind::new(Some(bus.address.clone()));
    let delay = inhibit(&bus, "shutdown", "journald", "flushing", "delay");
    let sleep = inhibit(&bus, "sleep", "desktop", "not about shutdown", "block");
    l.reset(ResetKind::GracefulShutdown).unwrap();
    let weak = inhibit(&bus, "shutdown:sleep", "backup", "nightly run", "block-weak");
    // Root ignores block-weak locks unless it passes SD_LOGIND_ROOT_CHECK_INHIBITORS: keeld does.
    assert_eq!(l.reset(ResetKind::GracefulRestart), Err(PowerError::Inhibited { holders: vec!["backup (nightly run)".into()] }));
    assert_eq!(
        actions(&f.rec.calls()),
        vec![call("login1", "PowerOffWithFlags", json!([1]), "ok"), call("login1", "RebootWithFlags", json!([1]), "org.freedesktop.login1.BlockedByInhibitorLock")]
    );
    drop((delay, sleep, weak));
}

#[test]
fn an_unreachable_bus_is_a_failure_that_changes_nothing() {
    let l = Logind::new(Some("unix:path=/nonexistent/keel-test-bus".into()));
    assert!(matches!(l.reset(ResetKind::GracefulRestart), Err(PowerError::Failed(_))));
    assert!(matches!(l.reset(ResetKind::ForceOff), Err(PowerError::Failed(_))));
    assert_eq!(l.power_state(), PowerState::On);
}

#[test]
fn keelds_own_unit_is_restarted_only_when_keeld_is_its_main_process() {
    let bus = PrivateBus::start();
    let id_hex = "00112233445566778899aabbccddeeff";
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    // This test process is the unit's main process.
    let f = fake(&bus, Some(UnitSpec { name: "keeld.service".into(), invocation_id: id, main_pid: MainPid::Fixed(std::process::id()) }));
    assert_eq!(restart_own_unit(Some(&bus.address), id_hex).unwrap(), Some("keeld.service".to_string()));
    assert_eq!(
        actions(&f.rec.calls()),
        vec![call("systemd1", "GetUnitByInvocationID", json!([id_hex]), "ok"), call("systemd1", "RestartUnit", json!(["keeld.service", "replace"]), "ok")]
    );
    // An invocation ID systemd does not know: an error, no restart.
    assert!(restart_own_unit(Some(&bus.address), "ffffffffffffffffffffffffffffffff").is_err());
    assert!(restart_own_unit(Some(&bus.address), "not-an-id").is_err());
    assert_eq!(f.rec.calls().iter().filter(|c| c.method == "RestartUnit").count(), 1);
    drop(f);

    // The unit's main process is someone else (an INVOCATION_ID inherited from, say, a CI
    // runner's unit): that unit is left alone.
    let f = fake(&bus, Some(UnitSpec { name: "ci-runner.service".into(), invocation_id: id, main_pid: MainPid::Fixed(1) }));
    assert_eq!(restart_own_unit(Some(&bus.address), id_hex).unwrap(), None);
    assert_eq!(actions(&f.rec.calls()), vec![call("systemd1", "GetUnitByInvocationID", json!([id_hex]), "ok")]);
}

#[test]
fn the_fake_is_bound_by_its_own_rules() {
    // A check on the test double itself: plain Reboot(false) with a block lock is refused (logind
    // ≥ 257), unknown flags are invalid, and SKIP_INHIBITORS overrides — so the refusals above
    // come from the inhibitor, not from the fake refusing everything.
    let bus = PrivateBus::start();
    let f = fake(&bus, None);
    let c = zbus::blocking::connection::Builder::address(bus.address.as_str()).unwrap().build().unwrap();
    let login = |m: &str, flags: u64| c.call_method(Some("org.freedesktop.login1"), "/org/freedesktop/login1", Some("org.freedesktop.login1.Manager"), m, &(flags,)).map(|_| ());
    let _fd = inhibit(&bus, "shutdown", "t", "t", "block");
    assert!(c.call_method(Some("org.freedesktop.login1"), "/org/freedesktop/login1", Some("org.freedesktop.login1.Manager"), "Reboot", &(false,)).is_err());
    assert!(login("RebootWithFlags", 1 << 7).is_err());
    assert!(login("RebootWithFlags", fake_systemd::SD_LOGIND_SKIP_INHIBITORS).is_ok());
    let outcomes: Vec<String> = f.rec.calls().iter().filter(|c| c.method != "Inhibit").map(|c| c.outcome.clone()).collect();
    assert_eq!(outcomes, ["org.freedesktop.login1.BlockedByInhibitorLock", "org.freedesktop.DBus.Error.InvalidArgs", "ok"]);
}
