"""DMTF conformance: the Protocol, Service and Interop validators against a fresh keeld.

The bar is 0 FAIL. On a failure the assertion message lists every failing (and warning) check
with its URI and message, and the full reports stay in the test's temporary directory.

keeld and the validators run inside a private network namespace that has only loopback: the
Protocol Validator subscribes `https://192.168.1.50/Destination1` to events (keeld then tries to
deliver to it) and sends SSDP multicast. None of that may leave this machine.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ADMIN, KEELD, ROOT, SHARED

SCHEMAS = SHARED / "redfish-schemas"
OEM_CSDL = sorted((ROOT / "schemas").glob("*.xml"))
PORT = 8443  # the namespace is private: no other process can hold it
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Accounts the Service Validator also runs as (created through the API first).
ROLE_USERS = {
    "Operator": ("conf-operator", "Oper-Conf-Pass7"),
    "ReadOnly": ("conf-readonly", "Read-Conf-Pass7"),
}


def tool(name):
    """A console script of the venv running the tests (or on PATH)."""
    p = pathlib.Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run scripts/setup.sh (it installs requirements-test.txt into .venv)")
    return found


def clean_env():
    env = dict(os.environ)
    for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(v, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


class NetNS:
    """A network namespace with only `lo` (up), held open by a sleeping process."""

    def __init__(self):
        unshare = ["unshare", "--net"]
        if os.geteuid() != 0:
            unshare.insert(1, "--map-root-user")
        try:
            self.holder = subprocess.Popen(
                unshare + ["sh", "-c", "ip link set lo up && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError as e:
            pytest.fail(f"cannot create a network namespace ({e}); scripts/setup.sh installs util-linux and iproute2")
        if self.holder.stdout.readline().strip() != "ready":
            err = self.holder.stderr.read()
            self.holder.kill()
            pytest.fail("cannot create a private network namespace for the validators (needs root, or unprivileged "
                        f"user namespaces): {err.strip()}. They must not run unisolated: the Protocol Validator "
                        "makes keeld send events to 192.168.1.50 and sends SSDP multicast.")
        pid = self.holder.pid
        self.prefix = ["nsenter"]
        if os.geteuid() != 0:
            self.prefix += ["--preserve-credentials", f"--user=/proc/{pid}/ns/user"]
        self.prefix += [f"--net=/proc/{pid}/ns/net", "--"]

    def cmd(self, argv):
        return self.prefix + [str(a) for a in argv]

    def run(self, argv, timeout=60, **kw):
        return subprocess.run(self.cmd(argv), env=clean_env(), timeout=timeout, **kw)

    def close(self):
        self.holder.kill()
        self.holder.wait()


class NsKeeld:
    """keeld inside a NetNS, on 127.0.0.1:8443 with a fresh state directory; API calls go through curl."""

    def __init__(self, ns, workdir):
        self.ns = ns
        self.dir = pathlib.Path(workdir)
        self.state = self.dir / "state"
        self.cert = self.state / "tls-cert.pem"
        self.url = f"https://127.0.0.1:{PORT}"
        self.log_path = self.dir / "keeld.log"
        boot = self.dir / "bootstrap-admin"
        boot.write_text(f"{ADMIN[0]}:{ADMIN[1]}\n")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ns.cmd([KEELD, "serve", "--listen", f"127.0.0.1:{PORT}", "--state-dir", self.state,
                    "--bootstrap-admin-file", boot]),
            stdout=self.log, stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keeld exited: {self.logs()}")
            if self.cert.exists() and self.request("GET", "/redfish/v1", auth=None)[0] == 200:
                break
            if time.time() > deadline:
                raise RuntimeError(f"keeld did not start: {self.logs()}")
            time.sleep(0.2)

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def curl_args(self, auth=ADMIN):
        a = ["curl", "-sS", "--noproxy", "*", "--cacert", self.cert]
        if auth:
            a += ["-u", f"{auth[0]}:{auth[1]}"]
        return a

    def request(self, method, path, body=None, auth=ADMIN):
        """(status, parsed JSON body or None) of one request made inside the namespace."""
        with tempfile.NamedTemporaryFile(dir=self.dir, suffix=".body") as out:
            argv = self.curl_args(auth) + ["-X", method, "-o", out.name, "-w", "%{http_code}"]
            if body is not None:
                argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
            r = self.ns.run(argv + [self.url + path], capture_output=True, text=True, timeout=30)
            raw = pathlib.Path(out.name).read_text(errors="replace")
        status = int(r.stdout.strip() or 0)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def netns():
    ns = NetNS()
    yield ns
    ns.close()


def start_keeld(ns, tmp_path_factory, name):
    return NsKeeld(ns, tmp_path_factory.mktemp(name))


# ------------------------------------------------------------------------------ Protocol Validator

def protocol_failures(report_dir):
    """The FAIL and WARN rows of the Protocol Validator's TSV report, one readable line each."""
    rows = []
    for tsv in sorted(pathlib.Path(report_dir).glob("*.tsv")):
        for line in tsv.read_text(errors="replace").splitlines()[1:]:
            f = line.split("\t")
            if len(f) >= 6 and f[4] in ("FAIL", "WARN"):
                rows.append(f"{f[4]} {f[0]}: {f[1]} {f[3]} -> {f[2]}: {f[5]}")
    return rows


def test_protocol_validator(netns, tmp_path_factory):
    k = start_keeld(netns, tmp_path_factory, "rpv")
    try:
        out = k.dir / "report"
        work = k.dir / "cwd"  # the validator reads ./config.ini if there is one: run it in an empty directory
        work.mkdir()
        argv = [tool("rf_protocol_validator"), "-r", k.url, "-u", ADMIN[0], "-p", ADMIN[1],
                "--ca-bundle", k.cert, "--avoid-http-redirect", "--report-dir", out, "--report-type", "tsv"]
        r = netns.run(argv, cwd=work, capture_output=True, text=True, timeout=600)
        (k.dir / "rpv-output.txt").write_text(r.stdout + r.stderr)
        summary = [l for l in ANSI.sub("", r.stdout).splitlines() if l.startswith("Summary - ")]
        results = out / "results.json"
        assert results.exists(), f"no results.json (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        counts = json.loads(results.read_text())["TestResults"]["Protocol Validations"]
        rows = protocol_failures(out)
        print(f"Protocol Validator: {summary[-1] if summary else counts}  (reports: {out})")
        for row in rows:
            print("  " + row)
        detail = "\n".join(rows) + f"\n(reports and keeld log: {k.dir})"
        assert counts["fail"] == 0, f"Protocol Validator: {counts['fail']} FAIL\n{detail}"
        assert r.returncode == 0, f"rf_protocol_validator exited {r.returncode}\n{r.stderr[-3000:]}\n{detail}"
    finally:
        k.stop()


# ------------------------------------------------------------------------------- Service Validator

@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory):
    """The DMTF CSDL plus Keel's OEM CSDL, as --skipschema wants them (links, nothing downloaded)."""
    csdl = sorted((SCHEMAS / "csdl").glob("*.xml"))
    if not csdl:
        pytest.fail(f"no DMTF CSDL in {SCHEMAS / 'csdl'}: set KEEL_SHARED to the directory holding redfish-schemas/")
    assert OEM_CSDL, "no OEM CSDL in schemas/"
    d = tmp_path_factory.mktemp("rsv-schemas")
    for f in csdl + OEM_CSDL:
        (d / f.name).symlink_to(f)
    return d


@pytest.fixture(scope="module")
def populated_keeld(netns, tmp_path_factory):
    """A fresh keeld holding one of each thing a client can create: an Operator and a ReadOnly account,
    a push subscription and an open SSE stream (so EventDestination resources get validated too)."""
    k = start_keeld(netns, tmp_path_factory, "rsv")
    sse = None
    try:
        for role, (user, password) in ROLE_USERS.items():
            status, body = k.request("POST", "/redfish/v1/AccountService/Accounts",
                                     {"UserName": user, "Password": password, "RoleId": role})
            assert status == 201, f"creating the {role} account: {status} {body}"
        status, body = k.request("POST", "/redfish/v1/EventService/Subscriptions", {
            "Destination": "https://127.0.0.1:9/keel-conformance", "Protocol": "Redfish",
            "Context": "conformance push subscription"})
        assert status == 201, f"creating a push subscription: {status} {body}"
        sse = subprocess.Popen(
            netns.cmd(k.curl_args() + ["-N", "-o", "/dev/null", k.url + "/redfish/v1/EventService/SSE"]),
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while k.request("GET", "/redfish/v1/EventService/Subscriptions")[1]["Members@odata.count"] < 2:
            assert time.time() < deadline, "the SSE stream did not show up in Subscriptions"
            time.sleep(0.2)
        yield k
    finally:
        if sse:
            sse.terminate()
            sse.wait()
        k.stop()


def service_table(stdout):
    """PASS/WARN/FAIL/NOT TESTED from the validator's closing table, or None."""
    lines = ANSI.sub("", stdout).splitlines()
    for i, line in enumerate(lines):
        if re.search(r"\|\s*PASS\s*\|\s*WARN\s*\|\s*FAIL\s*\|", line) and i + 2 < len(lines):
            nums = [c.strip() for c in lines[i + 2].strip().strip("|").split("|")]
            if len(nums) == 4 and all(n.isdigit() for n in nums):
                return dict(zip(("PASS", "WARN", "FAIL", "NOT TESTED"), map(int, nums)))
    return None


def service_findings(logdir):
    """FAIL/WARN lines of the debug log, each with the resource it was found on; also what the
    validator only logged as critical (e.g. unreachable resources)."""
    found = []
    for log in sorted(pathlib.Path(logdir).glob("*/RedfishServiceValidatorDebug_*.log")):
        uri = "?"
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r" - INFO - Validating (\S+?)\.\.\.$", line)
            if m:
                uri = m.group(1)
            elif re.search(r" - (ERROR|WARNING|CRITICAL) - ", line):
                found.append(f"{uri}: {line.split(' - ', 3)[-1]}")
    return found


@pytest.mark.parametrize("role", ["Administrator", "Operator", "ReadOnly"])
def test_service_validator(role, netns, populated_keeld, schema_dir):
    k = populated_keeld
    user, password = ADMIN if role == "Administrator" else ROLE_USERS[role]
    logdir = k.dir / f"rsv-{role}"
    logdir.mkdir()
    argv = [tool("rf_service_validator"), "-r", k.url, "-u", user, "-p", password, "--authtype", "Session",
            "--schema_directory", schema_dir, "--skipschema", "--logdir", logdir, "--timeout", "30"]
    r = netns.run(argv, cwd=logdir, capture_output=True, text=True, timeout=900)
    (logdir / "output.txt").write_text(r.stdout + r.stderr)
    table = service_table(r.stdout)
    findings = service_findings(logdir)
    print(f"Service Validator as {role} ({user}): {table}  (reports: {logdir})")
    for f in findings:
        print("  " + f)
    detail = "\n".join(findings) + f"\n(reports and keeld log: {k.dir})"
    assert table is not None, f"no result table (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert table["FAIL"] == 0, f"Service Validator as {role}: {table['FAIL']} FAIL\n{detail}"
    assert r.returncode == 0, f"rf_service_validator as {role} exited {r.returncode}\n{r.stderr[-3000:]}\n{detail}"


# -------------------------------------------------------------------------------- Interop Validator

KEEL_PROFILES = sorted((pathlib.Path(__file__).resolve().parents[2] / "profiles").glob("*.json"))


def ocp_profiles():
    """OCP interoperability profiles shipped with the schema bundle (or named by KEEL_INTEROP_PROFILE)."""
    if os.environ.get("KEEL_INTEROP_PROFILE"):
        return [pathlib.Path(os.environ["KEEL_INTEROP_PROFILE"])]
    return sorted(p for p in SCHEMAS.rglob("*.json") if re.search(r"ocp|profile", p.name, re.I)
                  and "ProfileName" in p.read_text(errors="replace")[:4000])


def run_interop(netns, k, profile):
    logdir = pathlib.Path(tempfile.mkdtemp(dir=k.dir, prefix=f"interop-{profile.stem}-"))
    argv = [tool("rf_interop_validator"), "-r", k.url, "-u", ADMIN[0], "-p", ADMIN[1],
            "--authtype", "Session", "--logdir", logdir, "--timeout", "30", profile]
    r = netns.run(argv, cwd=logdir, capture_output=True, text=True, timeout=900)
    (logdir / "output.txt").write_text(r.stdout + r.stderr)
    print(f"Interop Validator, {profile.name}: exit {r.returncode} (reports: {logdir})")
    print("  " + "\n  ".join(ANSI.sub("", r.stdout).strip().splitlines()[-6:]))
    return r


def interop_failures(netns, k, profiles):
    """Run the Interop Validator with each profile; the failures, readable."""
    failed = []
    for profile in profiles:
        r = run_interop(netns, k, profile)
        if r.returncode != 0:
            failed.append(f"{profile.name}: exit {r.returncode}\n{ANSI.sub('', r.stdout)[-4000:]}")
    return failed


def test_interop_validator_keel_profile(netns, populated_keeld):
    """Keel's own product profile (profiles/): what every Keel host promises its clients."""
    assert KEEL_PROFILES, "no profile in profiles/"
    failed = interop_failures(netns, populated_keeld, KEEL_PROFILES)
    assert not failed, "\n".join(failed)


def test_interop_validator_ocp_profile(netns, populated_keeld):
    profiles = ocp_profiles()
    if not profiles:
        pytest.skip(f"no OCP interoperability profile in {SCHEMAS} (the DSP8010 bundle ships none); "
                    "set KEEL_INTEROP_PROFILE=/path/to/profile.json to run rf_interop_validator")
    failed = interop_failures(netns, populated_keeld, profiles)
    assert not failed, "\n".join(failed)
