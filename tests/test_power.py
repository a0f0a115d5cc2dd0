"""Power: ComputerSystem.Reset and Manager.Reset against a real keeld.

`--power logind`: keeld talks to a real private dbus-daemon (tests/dbus/private-bus.conf) on which
the `fake-logind` example (service/examples/fake-logind.rs) plays systemd-logind and systemd and
prints every call it receives; the tests assert the exact calls. Inhibitors are taken by the real
`systemd-inhibit`, pointed at the private bus. `--power simulated`: nothing on the machine is
touched (the fake on the bus proves keeld never calls it); the power state lives in the state
directory. redfishtool and sushy drive the action as clients do.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import sushy
import sushy.auth

from conftest import ADMIN, KEELD, ROOT
from test_events import SSEClient, first, is_event, message_ids

SYSTEM = "/redfish/v1/Systems/system"
RESET = SYSTEM + "/Actions/ComputerSystem.Reset"
ACTION_INFO = SYSTEM + "/ResetActionInfo"
MANAGER = "/redfish/v1/Managers/keel"
MANAGER_RESET = MANAGER + "/Actions/Manager.Reset"
KINDS = ["GracefulRestart", "ForceRestart", "GracefulShutdown", "ForceOff", "PowerCycle"]
# What each kind must call (service, method, args): see service/src/power.rs.
CALLS = {
    "GracefulRestart": ("login1", "RebootWithFlags", [1]),
    "GracefulShutdown": ("login1", "PowerOffWithFlags", [1]),
    "ForceRestart": ("systemd1", "Reboot", []),
    "ForceOff": ("systemd1", "PowerOff", []),
    "PowerCycle": ("systemd1", "Reboot", []),
}
WAIT = 20.0
INVOCATION_ID = "5eed0f4e11a94c0c8e0d0c0ffee0a11b"
PASSWORD = "Power-Test-Pass1"
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def poll(fn, timeout=WAIT, interval=0.1):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


# ------------------------------------------------------------------ the private bus and the fake


def fake_logind_exe():
    """The fake-logind example beside the keeld under test, or this checkout's (`cargo test` builds
    examples; built here when missing)."""
    ours = ROOT / "target" / "debug" / "examples" / "fake-logind"
    for exe in (pathlib.Path(KEELD).parent / "examples" / "fake-logind", ours):
        if exe.exists():
            return exe
    subprocess.run(["cargo", "build", "-q", "--example", "fake-logind"], cwd=ROOT, check=True, timeout=1200)
    assert ours.exists(), f"{ours} was not built"
    return ours


class Bus:
    """A dbus-daemon of our own with fake-logind on it; `calls()` is what the fake received."""

    def __init__(self, tmp, unit_main_pid_file=None):
        self.dir = tmp
        self.address = f"unix:path={tmp}/bus"
        self.daemon = subprocess.Popen(
            ["dbus-daemon", f"--config-file={ROOT / 'tests/dbus/private-bus.conf'}", f"--address={self.address}",
             "--nofork", "--print-address"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.daemon.stdout.readline()
        assert line.startswith("unix:path="), f"dbus-daemon printed {line!r}"
        self.calls_path = tmp / "fake-logind.out"
        args = [str(fake_logind_exe()), "--bus", self.address]
        if unit_main_pid_file:
            args += ["--unit", "keeld.service", "--invocation-id", INVOCATION_ID, "--main-pid-file", str(unit_main_pid_file)]
        self.out = open(self.calls_path, "w")
        self.fake = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        assert poll(lambda: "READY" in self.calls_path.read_text()), self.calls_path.read_text()
        self.inhibitors = []

    def calls(self):
        lines = self.calls_path.read_text().splitlines()
        return [json.loads(l) for l in lines[lines.index("READY") + 1:] if l.strip()]

    def actions(self, since=0):
        """(service, method, args, outcome) of every call after the first `since`, ListInhibitors and Inhibit left out."""
        return [(c["service"], c["method"], c["args"], c["outcome"]) for c in self.calls()[since:]
                if c["method"] not in ("ListInhibitors", "Inhibit")]

    def inhibit(self, who, why, mode="block"):
        """A real systemd-inhibit holding a shutdown lock on this bus until release()."""
        exe = shutil.which("systemd-inhibit")
        assert exe, "systemd-inhibit is missing (Debian package systemd; scripts/setup.sh installs it)"
        n = len([c for c in self.calls() if c["method"] == "Inhibit"])
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        p = subprocess.Popen([exe, "--what=shutdown", f"--who={who}", f"--why={why}", f"--mode={mode}", "sleep", "600"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        assert poll(lambda: len([c for c in self.calls() if c["method"] == "Inhibit"]) > n or p.poll() is not None), "no Inhibit call"
        assert p.poll() is None, p.stderr.read()
        self.inhibitors.append(p)
        return p

    @staticmethod
    def release(p):
        """End systemd-inhibit and its command (its own process group): the lock goes with its fd."""
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)

    def stop(self):
        for p in self.inhibitors:
            self.release(p)
        for p in (self.fake, self.daemon):
            p.terminate()
            p.wait(10)
        self.out.close()


@pytest.fixture
def bus(tmp_path):
    d = tmp_path / "dbus"
    d.mkdir()
    b = Bus(d)
    yield b
    b.stop()


@pytest.fixture
def logind_keeld(keeld_factory, bus):
    return keeld_factory("--power", "logind", "--power-bus", bus.address)


def reset(k, kind, s=None, **extra):
    body = {} if kind is None else {"ResetType": kind}
    body.update(extra)
    return (s or k.admin()).post(k.url + RESET, json=body)


def system(k):
    r = k.get(SYSTEM)
    assert r.status_code == 200, r.text
    return r.json()


def sim_history(k):
    p = k.state_dir / "power.json"
    return [e["ResetType"] for e in json.loads(p.read_text())["Resets"]] if p.exists() else []


def user(k, name, role):
    k.create_account(name, PASSWORD, role)
    return k.client(name, PASSWORD)


# ------------------------------------------------------------------ logind


def test_each_reset_kind_makes_exactly_its_call(logind_keeld, bus):
    k = logind_keeld
    sys_ = system(k)
    assert sys_["PowerState"] == "On"
    action = sys_["Actions"]["#ComputerSystem.Reset"]
    assert action["target"] == RESET and action["@Redfish.ActionInfo"] == ACTION_INFO
    assert action["ResetType@Redfish.AllowableValues"] == KINDS
    info = k.get(ACTION_INFO).json()
    assert info["@odata.type"].startswith("#ActionInfo.") and info["@odata.id"] == ACTION_INFO
    assert info["Parameters"] == [{"Name": "ResetType", "Required": True, "DataType": "String", "AllowableValues": KINDS}]
    with SSEClient(k) as sse:
        for i, kind in enumerate(KINDS):
            r = reset(k, kind)
            assert r.status_code == 200, (kind, r.text)
            assert [m["MessageId"] for m in r.json()["@Message.ExtendedInfo"]] == ["Base.1.22.Success"]
            assert bus.actions(i) == [(*CALLS[kind], "ok")], kind
            if i == 0:
                ev = sse.next(is_event("ResourceEvent.1.4.ResourcePoweringOff", SYSTEM), what="ResourcePoweringOff")
                assert first(ev["data"])["MessageArgs"] == [SYSTEM]
    # The host is on its way down, as far as keeld knows.
    assert system(k)["PowerState"] == "PoweringOff"
    assert not [m for svc, m, _, _ in bus.actions() if svc == "login1" and m in ("Reboot", "PowerOff")], \
        "logind's Reboot/PowerOff(interactive) are never used: they cannot ask for inhibitors to be checked"


def test_a_block_inhibitor_refuses_graceful_kinds_not_forced_ones(logind_keeld, bus):
    k = logind_keeld
    lock = bus.inhibit("incus", "instances are migrating")
    for kind in ("GracefulRestart", "GracefulShutdown"):
        n = len(bus.calls())
        r = reset(k, kind)
        assert r.status_code == 409, (kind, r.text)
        assert message_ids(r) == ["Base.1.22.ResourceInUse"]
        service, method, args = CALLS[kind]
        assert bus.actions(n) == [(service, method, args, "org.freedesktop.login1.BlockedByInhibitorLock")]
    assert system(k)["PowerState"] == "On", "a refused reset changes nothing"
    assert "incus (instances are migrating)" in k.logs()
    # Forced kinds do not ask logind, so no inhibitor stands in their way.
    n = len(bus.calls())
    assert reset(k, "ForceOff").status_code == 200
    assert bus.actions(n) == [("systemd1", "PowerOff", [], "ok")]
    # Once the lock's holder is gone, a graceful reset goes through.
    bus.release(lock)
    n = len(bus.calls())
    assert reset(k, "GracefulRestart").status_code == 200
    assert bus.actions(n) == [("login1", "RebootWithFlags", [1], "ok")]


def test_refusals_change_nothing_and_call_nothing(logind_keeld, bus):
    k = logind_keeld
    ro = user(k, "viewer", "ReadOnly")
    op = user(k, "operator", "Operator")
    cases = [
        # (session, body kind, extra, status, MessageIds)
        (ro, "GracefulRestart", {}, 403, ["Base.1.22.InsufficientPrivilege"]),
        (k.client(), "GracefulRestart", {}, 401, None),
        (k.client("admin", "Wrong-Pass-123"), "ForceOff", {}, 401, None),
        (None, None, {}, 400, ["Base.1.22.ActionParameterMissing"]),
        (None, "Nmi", {}, 400, ["Base.1.22.ActionParameterValueNotInList"]),
        (None, "PushPowerButton", {}, 400, ["Base.1.22.ActionParameterValueNotInList"]),
        (None, "gracefulrestart", {}, 400, ["Base.1.22.ActionParameterValueNotInList"]),
        # On belongs to the simulated platform; this host is always on while keeld runs.
        (None, "On", {}, 400, ["Base.1.22.ActionParameterValueNotInList"]),
        (None, 7, {}, 400, ["Base.1.22.ActionParameterValueTypeError"]),
        (None, "GracefulRestart", {"Delay": 5}, 400, ["Base.1.22.ActionParameterUnknown"]),
    ]
    for s, kind, extra, status, ids in cases:
        r = reset(k, kind, s, **extra)
        assert r.status_code == status, (kind, extra, r.text)
        if ids:
            assert message_ids(r) == ids, (kind, r.text)
    r = reset(k, "On")
    assert r.json()["error"]["@Message.ExtendedInfo"][0]["MessageArgs"] == ["On", "ResetType", "ComputerSystem.Reset"]
    r = k.admin().post(k.url + RESET, data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and message_ids(r) == ["Base.1.22.MalformedJSON"]
    r = k.admin().post(k.url + "/redfish/v1/Systems/other/Actions/ComputerSystem.Reset", json={"ResetType": "ForceOff"})
    assert r.status_code == 404
    # Manager.Reset needs ConfigureManager, which an Operator lacks.
    assert op.post(k.url + MANAGER_RESET, json={}).status_code == 403
    assert ro.get(k.url + ACTION_INFO).status_code == 200
    assert bus.calls() == [], "no refused request reached D-Bus"
    assert system(k)["PowerState"] == "On"
    # ComputerSystem POST needs ConfigureComponents (Privilege Registry): an Operator has it.
    assert reset(k, "GracefulShutdown", op).status_code == 200
    assert bus.actions() == [("login1", "PowerOffWithFlags", [1], "ok")]


def test_redfishtool_and_sushy_reset_through_logind(logind_keeld, bus):
    k = logind_keeld
    from test_clients import Redfishtool
    rt = Redfishtool(k)
    rt.auth = ["-u", ADMIN[0], "-p", ADMIN[1], "-A", "Basic"]
    rt.run("Systems", "-I", "system", "reset", "GracefulRestart")
    assert bus.actions() == [("login1", "RebootWithFlags", [1], "ok")]
    s = sushy.Sushy(k.url, verify=str(k.state_dir / "tls-cert.pem"), auth=sushy.auth.BasicAuth(*ADMIN), server_side_retries=0)
    system_ = s.get_system("/redfish/v1/Systems/system")
    assert {v.value for v in system_.get_allowed_reset_system_values()} == set(KINDS)
    system_.reset_system(sushy.ResetType.FORCE_RESTART)
    assert bus.actions(1) == [("systemd1", "Reboot", [], "ok")]


# ------------------------------------------------------------------ simulated


def test_simulated_shutdown_and_on_never_touch_the_bus(keeld_factory, bus):
    k = keeld_factory("--power", "simulated", "--power-bus", bus.address)
    info = k.get(ACTION_INFO).json()
    assert info["Parameters"][0]["AllowableValues"] == ["On", *KINDS]
    assert system(k)["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"] == ["On", *KINDS]
    assert "LastResetTime" not in system(k)
    with SSEClient(k) as sse:
        r = reset(k, "GracefulShutdown")
        assert r.status_code == 200, r.text
        assert system(k)["PowerState"] == "Off"
        sse.next(is_event("ResourceEvent.1.4.ResourcePoweredOff", SYSTEM), what="ResourcePoweredOff")
        # Off: a restart has nothing to restart; another off is a no-op.
        for kind in ("GracefulRestart", "ForceRestart", "PowerCycle"):
            r = reset(k, kind)
            assert r.status_code == 409 and message_ids(r) == ["Base.1.22.ResourceInStandby"], (kind, r.text)
        assert reset(k, "ForceOff").status_code == 200
        assert sim_history(k) == ["GracefulShutdown"]
        # The state is kept across a restart of keeld.
        k.restart()
        assert system(k)["PowerState"] == "Off"
    with SSEClient(k) as sse:
        assert reset(k, "On").status_code == 200
        assert system(k)["PowerState"] == "On"
        sse.next(is_event("ResourceEvent.1.4.ResourcePoweredOn", SYSTEM), what="ResourcePoweredOn")
        last = system(k)["LastResetTime"]
        time.sleep(1.1)
        assert reset(k, "ForceRestart").status_code == 200
        sse.next(is_event("ResourceEvent.1.4.ResourcePoweredOn", SYSTEM), what="ResourcePoweredOn after a restart")
        assert system(k)["LastResetTime"] > last
    assert sim_history(k) == ["GracefulShutdown", "On", "ForceRestart"]
    assert bus.calls() == [], "the simulated platform never calls logind or systemd"
    # Refusals change nothing there either.
    ro = user(k, "viewer", "ReadOnly")
    assert reset(k, "GracefulShutdown", ro).status_code == 403
    assert system(k)["PowerState"] == "On" and sim_history(k) == ["GracefulShutdown", "On", "ForceRestart"]


def test_redfishtool_and_sushy_reset_the_simulated_system(keeld_factory):
    # auto: this is not a Keel image, so the platform is simulated.
    k = keeld_factory()
    assert "On" in k.get(ACTION_INFO).json()["Parameters"][0]["AllowableValues"]
    from test_clients import Redfishtool
    rt = Redfishtool(k)
    rt.auth = ["-u", ADMIN[0], "-p", ADMIN[1], "-A", "Basic"]
    rt.run("Systems", "-I", "system", "reset", "GracefulRestart")
    assert sim_history(k) == ["GracefulRestart"]
    s = sushy.Sushy(k.url, verify=str(k.state_dir / "tls-cert.pem"), auth=sushy.auth.SessionAuth(*ADMIN), server_side_retries=0)
    sys_ = s.get_system("/redfish/v1/Systems/system")
    assert {v.value for v in sys_.get_allowed_reset_system_values()} == {"On", *KINDS}
    sys_.reset_system(sushy.ResetType.GRACEFUL_SHUTDOWN)
    sys_.refresh()
    assert sys_.power_state == sushy.PowerState.OFF
    sys_.reset_system(sushy.ResetType.ON)
    sys_.refresh()
    assert sys_.power_state == sushy.PowerState.ON
    assert sim_history(k) == ["GracefulRestart", "GracefulShutdown", "On"]
    r = rt.run("Systems", "-I", "system", "reset", "Nmi", check=False)
    assert r.returncode != 0 and sim_history(k) == ["GracefulRestart", "GracefulShutdown", "On"]


# ------------------------------------------------------------------ Manager.Reset under systemd


def manager_reset(k):
    r = k.admin().post(k.url + MANAGER_RESET, json={"ResetType": "GracefulRestart"})
    assert r.status_code == 204, r.text


@pytest.mark.parametrize("main_process", [True, False])
def test_manager_reset_asks_systemd_only_as_the_units_main_process(tmp_path, keeld_factory, monkeypatch, main_process):
    d = tmp_path / "dbus"
    d.mkdir()
    pid_file = tmp_path / "main-pid"
    pid_file.write_text("0")
    b = Bus(d, unit_main_pid_file=pid_file)
    try:
        monkeypatch.setenv("INVOCATION_ID", INVOCATION_ID)
        k = keeld_factory("--power-bus", b.address)
        pid_file.write_text(str(k.proc.pid if main_process else os.getpid()))
        started = k.get(MANAGER).json()["LastResetTime"]
        time.sleep(1.1)  # LastResetTime has whole seconds: a re-exec must show
        manager_reset(k)
        if main_process:
            assert poll(lambda: b.actions()[-1:] == [("systemd1", "RestartUnit", ["keeld.service", "replace"], "ok")]), b.calls()
            assert b.actions() == [("systemd1", "GetUnitByInvocationID", [INVOCATION_ID], "ok"),
                                   ("systemd1", "RestartUnit", ["keeld.service", "replace"], "ok")]
            # systemd (here: the fake, which only records) does the restart; keeld does not re-exec.
            time.sleep(2)
            assert k.get(MANAGER).json()["LastResetTime"] == started
        else:
            # INVOCATION_ID names a unit whose main process is not keeld: keeld restarts itself.
            def restarted():
                try:
                    return k.get(MANAGER).json()["LastResetTime"] != started
                except Exception:
                    return False
            assert poll(restarted), "keeld did not re-execute itself"
            assert b.actions() == [("systemd1", "GetUnitByInvocationID", [INVOCATION_ID], "ok")]
    finally:
        b.stop()
