"""Shared fixtures: a real keeld on loopback with a fresh state directory.

KEELD names the binary (default: target/debug/keeld of this checkout).
"""
import base64
import os
import pathlib
import socket
import subprocess
import time

import pytest
import requests
import urllib3

# Recorded machines (sysfs trees with symbolic-link cycles, thousands of files) hold no tests:
# pytest must not walk them.
collect_ignore = ["fixtures"]


urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

# Some machines (CI among them) export these; python-requests then verifies against that bundle
# even where a session says verify=False. Tests only talk to keeld on loopback, so drop them for this
# process and every client or validator it starts.
for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The shared data beside the repository (DMTF schema bundle in SHARED/redfish-schemas).
SHARED = pathlib.Path(os.environ.get("KEEL_SHARED") or ROOT.parent / "shared").resolve()
KEELD = os.environ.get("KEELD", str(ROOT / "target" / "debug" / "keeld"))
ADMIN = ("admin", "Keel-Test-Pass1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Keeld:
    """One keeld process. `restart()` keeps the state directory."""

    def __init__(self, state_dir, extra_args=()):
        self.state_dir = pathlib.Path(state_dir)
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = self.state_dir.parent / f"keeld-{self.port}.log"
        boot = self.state_dir.parent / "bootstrap-admin"
        boot.write_text(f"{ADMIN[0]}:{ADMIN[1]}\n")
        self.bootstrap = boot

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [KEELD, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir),
             "--bootstrap-admin-file", str(self.bootstrap), *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keeld exited: {self.log_path.read_text()}")
            try:
                requests.get(self.url + "/redfish/v1", verify=False, timeout=2)
                return self
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("keeld did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def logs(self):
        return self.log_path.read_text(errors="replace")

    # -- clients --
    def client(self, user=None, password=None):
        """A requests.Session with Basic auth (or none)."""
        s = requests.Session()
        s.verify = False
        if user:
            s.auth = (user, password)
        return s

    def admin(self):
        return self.client(*ADMIN)

    def login(self, user, password):
        """Create a Redfish session; returns (requests.Session with X-Auth-Token, session URI)."""
        r = requests.post(self.url + "/redfish/v1/SessionService/Sessions",
                          json={"UserName": user, "Password": password}, verify=False)
        assert r.status_code == 201, r.text
        s = requests.Session()
        s.verify = False
        s.headers["X-Auth-Token"] = r.headers["X-Auth-Token"]
        return s, r.headers["Location"]

    def get(self, path, s=None, **kw):
        return (s or self.admin()).get(self.url + path, **kw)

    def create_account(self, user, password, role="ReadOnly"):
        r = self.admin().post(self.url + "/redfish/v1/AccountService/Accounts",
                              json={"UserName": user, "Password": password, "RoleId": role})
        assert r.status_code == 201, r.text
        return r.headers["Location"]


@pytest.fixture
def keeld(tmp_path):
    k = Keeld(tmp_path / "state").start()
    yield k
    k.stop()


@pytest.fixture
def keeld_factory(tmp_path):
    """Start keeld with extra arguments: keeld_factory("--page-size", "2")."""
    started = []

    def make(*extra):
        d = tmp_path / f"state{len(started)}"
        k = Keeld(d, extra).start()
        started.append(k)
        return k

    yield make
    for k in started:
        k.stop()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run_service_validator(keeld, workdir):
    """Run the DMTF Service Validator (the test venv's, or RF_SERVICE_VALIDATOR) against `keeld` as
    the administrator, with the DMTF CSDL of ../shared plus Keel's OEM CSDL; assert 0 FAIL and
    return the debug logs' text (to check what it walked)."""
    import os
    import re
    import shutil
    import sys
    here = os.path.join(os.path.dirname(sys.executable), "rf_service_validator")
    rsv = next((p for p in (os.environ.get("RF_SERVICE_VALIDATOR"), here, shutil.which("rf_service_validator"))
                if p and os.path.exists(p)), None)
    if not rsv:
        pytest.fail("rf_service_validator is not installed: run scripts/setup.sh (or set RF_SERVICE_VALIDATOR)")
    workdir = pathlib.Path(workdir)
    schemas = workdir / "schemas"
    schemas.mkdir()
    for f in list((SHARED / "redfish-schemas/csdl").glob("*.xml")) + list((ROOT / "schemas").glob("*.xml")):
        (schemas / f.name).symlink_to(f)
    logdir = workdir / "rsv"
    logdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    r = subprocess.run([rsv, "-r", keeld.url, "-u", ADMIN[0], "-p", ADMIN[1], "--authtype", "Session",
                        "--schema_directory", str(schemas), "--skipschema", "--logdir", str(logdir), "--timeout", "30"],
                       cwd=logdir, env=env, capture_output=True, text=True, timeout=300)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout).splitlines()
    table = None
    for i, line in enumerate(lines):
        if re.search(r"\|\s*PASS\s*\|\s*WARN\s*\|\s*FAIL\s*\|", line) and i + 2 < len(lines):
            nums = [c.strip() for c in lines[i + 2].strip().strip("|").split("|")]
            if len(nums) == 4 and all(n.isdigit() for n in nums):
                table = dict(zip(("PASS", "WARN", "FAIL", "NOT TESTED"), map(int, nums)))
    logs = "\n".join(p.read_text(errors="replace") for p in logdir.glob("*/RedfishServiceValidatorDebug_*.log"))
    errors = [l for l in logs.splitlines() if " - ERROR - " in l]
    assert table is not None, "\n".join(lines[-60:]) + r.stderr[-2000:]
    assert table["FAIL"] == 0, "\n".join(errors)
    assert r.returncode == 0, "\n".join(errors)
    return logs

