"""UpdateService end to end: real keeld processes on the simulated platform (a GPT image file and a
simulated ESP in STATE/sim, running version 0.1.0), bundles made by `keeld bundle create` and
signed with a throwaway update CA made by the openssl CLI.

Every refusal checks that nothing changed: the running slot's partitions byte-identical (hashed
from the disk image at sfdisk's offsets), no boot entry added to STATE/sim/esp/EFI/Linux, the
slot that was to be written labelled `_empty` (or, for refusals before anything is written, its
labels unchanged). The machine's state is read both through Redfish and through
`keeld sim status` (the engine's own view).
"""
import functools
import hashlib
import json
import os
import pathlib
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import ADMIN, KEELD, basic, run_service_validator
from test_events import SSEClient, first, origin

US = "/redfish/v1/UpdateService"
PUSH = US + "/upload"
SIMPLE = US + "/Actions/UpdateService.SimpleUpdate"
START = US + "/Actions/UpdateService.StartUpdate"
SW = US + "/SoftwareInventory"
TASKS = "/redfish/v1/TaskService/Tasks"
RESET = "/redfish/v1/Systems/system/Actions/ComputerSystem.Reset"
RUNNING = "0.1.0"           # what the simulated machine runs at first (keeld's crate version)
SLOT_SIZE = 8 << 20          # --sim-usr-size: each usr partition
SMALL = 256 << 10            # usr size of most bundles
PASSWORD = "Update-Test-Pass1"
WAIT = 30.0
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


# ------------------------------------------------------------------ PKI and bundles


def openssl(cwd, *args):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


def make_ca(d, name):
    """A CA and a signer certified by it: (ca.pem, signer key, signer cert)."""
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem",
            "-days", "2", "-subj", f"/CN=Keel test update CA {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-sign.key", "-out", f"{name}-sign.csr",
            "-subj", f"/CN=Keel test update signer {name}")
    openssl(d, "x509", "-req", "-in", f"{name}-sign.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
            "-CAcreateserial", "-out", f"{name}-sign.pem", "-days", "2")
    return d / f"{name}-ca.pem", d / f"{name}-sign.key", d / f"{name}-sign.pem"


class Bundles:
    """Signed bundles made on demand (and kept) by `keeld bundle create`."""

    def __init__(self, d):
        self.d = d
        self.ca, key, cert = make_ca(d, "good")
        _, rkey, rcert = make_ca(d, "rogue")
        self.signers = {"good": (key, cert), "rogue": (rkey, rcert)}
        self.made = {}

    def get(self, version="0.2.0", usr_size=SMALL, arch=None, min_version=None, signer="good"):
        key = (version, usr_size, arch, min_version, signer)
        if key in self.made:
            return self.made[key]
        name = f"{version}-{usr_size}-{arch or 'native'}-{min_version or 'any'}-{signer}"
        w = self.d / name
        w.mkdir()
        usr = os.urandom(usr_size)
        (w / "usr").write_bytes(usr)
        (w / "verity").write_bytes(os.urandom(4096))
        # systemd's verity signature object: the engine sets the slot's PARTUUIDs from rootHash.
        (w / "sig").write_text(json.dumps({"rootHash": hashlib.sha256(usr).hexdigest(), "signature": "test"}))
        (w / "uki").write_text(f"KEEL-SIM-UKI 1\nversion={version}\nusrhash={hashlib.sha256(usr).hexdigest()}\nusrsize={usr_size}\n")
        out = self.d / f"{name}.keel"
        k, c = self.signers[signer]
        args = [KEELD, "bundle", "create", "--version", version, "--usr", w / "usr", "--usr-verity", w / "verity",
                "--usr-verity-sig", w / "sig", "--uki", w / "uki", "--key", k, "--cert", c, "-o", out]
        if arch:
            args += ["--arch", arch]
        if min_version:
            args += ["--min-version", min_version]
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        shutil.rmtree(w)
        self.made[key] = out
        return out


def artifacts_offset(bundle_bytes):
    """Where the artifacts start: magic, format, manifest length + manifest, signature length +
    signature (big-endian u32 lengths)."""
    assert bundle_bytes[:8] == b"KEELBNDL"
    off = 12
    mlen = int.from_bytes(bundle_bytes[off:off + 4], "big")
    off += 4 + mlen
    slen = int.from_bytes(bundle_bytes[off:off + 4], "big")
    return off + 4 + slen


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return Bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def upd(keeld_factory, bundles):
    """Start a keeld on the simulated platform trusting the test update CA."""
    def make(*extra, slot_size=SLOT_SIZE):
        return keeld_factory("--platform", "simulated", "--update-ca", str(bundles.ca), "--sim-usr-size", str(slot_size), *extra)
    return make


class Served:
    """An HTTP server on loopback serving the bundles directory (what `python3 -m http.server` does)."""

    def __init__(self, d):
        handler = functools.partial(Quiet, directory=str(d))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/{pathlib.Path(path).name}"


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def http(bundles):
    s = Served(bundles.d)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


# ------------------------------------------------------------------ helpers


def short(mid):
    """`Update.1.3.UpdateSuccessful` -> `Update.UpdateSuccessful`."""
    parts = mid.split(".")
    return f"{parts[0]}.{parts[-1]}"


def error_ids(r):
    try:
        return [short(m["MessageId"]) for m in r.json()["error"]["@Message.ExtendedInfo"]]
    except Exception:
        return []


def task_ids(task):
    return [short(m["MessageId"]) for m in task["Messages"]]


def push(k, bundle, params=None, auth=ADMIN, filename=None, data=None):
    """POST the MultipartHttpPushUri with parts UpdateParameters (when given) and UpdateFile."""
    files = []
    if params is not None:
        files.append(("UpdateParameters", (None, json.dumps(params), "application/json")))
    if bundle is not None or data is not None:
        body = data if data is not None else pathlib.Path(bundle).read_bytes()
        files.append(("UpdateFile", (filename or (pathlib.Path(bundle).name if bundle else "b.keel"), body, "application/octet-stream")))
    return requests.post(k.url + PUSH, files=files, auth=auth, verify=False, timeout=WAIT)


def wait_task(k, task_uri, timeout=WAIT):
    """Poll a task until it is final; return its JSON."""
    deadline = time.time() + timeout
    while True:
        t = k.get(task_uri).json()
        if t["TaskState"] not in ("New", "Starting", "Running", "Pending", "Stopping", "Suspended"):
            return t
        assert time.time() < deadline, f"task {task_uri} still {t['TaskState']} after {timeout}s: {t}"
        time.sleep(0.1)


def task_of(k, r, timeout=WAIT):
    """202 with a task monitor; poll the monitor until it stops answering 202; return the Task."""
    assert r.status_code == 202, (r.status_code, r.text)
    monitor = r.headers["Location"]
    assert monitor.startswith("/redfish/v1/TaskService/TaskMonitors/"), monitor
    assert int(r.headers["Retry-After"]) >= 1
    task_uri = r.json()["@odata.id"]
    deadline = time.time() + timeout
    while True:
        m = k.get(monitor)
        if m.status_code != 202:
            break
        assert time.time() < deadline, f"monitor {monitor} still 202 after {timeout}s"
        time.sleep(0.1)
    assert m.status_code == 200, (m.status_code, m.text)
    return wait_task(k, task_uri)


def completed(task, *expect):
    assert task["TaskState"] == "Completed" and task["TaskStatus"] == "OK", task
    assert task["PercentComplete"] == 100
    ids = task_ids(task)
    for e in expect:
        assert e in ids, (e, ids)


def failed(task, mid):
    assert task["TaskState"] == "Exception" and task["TaskStatus"] == "Critical", task
    assert mid in task_ids(task), (mid, task_ids(task))
    assert "Update.UpdateSuccessful" not in task_ids(task)


def sim(k):
    """The engine's view of the simulated machine."""
    r = subprocess.run([KEELD, "sim", "--dir", str(k.state_dir / "sim"), "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def booted(k):
    return sim(k)["booted"]


def reset(k, auth=ADMIN):
    r = requests.post(k.url + RESET, json={"ResetType": "GracefulRestart"}, auth=auth, verify=False, timeout=WAIT)
    assert r.status_code in (200, 204), (r.status_code, r.text)


def item(k, id_):
    r = k.get(f"{SW}/{id_}")
    assert r.status_code == 200, (id_, r.status_code, r.text)
    return r.json()


def partitions(k):
    r = subprocess.run(["sfdisk", "--json", str(k.state_dir / "sim" / "disk.img")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["partitiontable"]
    assert t["sectorsize"] == 512
    return t["partitions"]


def esp_entries(k):
    d = k.state_dir / "sim" / "esp" / "EFI" / "Linux"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


def snapshot(k):
    """The running slot's bytes (its usr, verity and signature partitions), every partition label,
    the boot entries, and what runs."""
    st = sim(k)
    run = next(s for s in st["slots"] if s["booted"])
    label = run["label"]
    disk = k.state_dir / "sim" / "disk.img"
    parts = partitions(k)
    mine = [p for p in parts if p.get("name") in (label, f"{label}_verity", f"{label}_verity_sig")]
    assert len(mine) == 3, (label, parts)
    h = hashlib.sha256()
    with open(disk, "rb") as f:
        for p in mine:
            f.seek(p["start"] * 512)
            left = p["size"] * 512
            while left:
                b = f.read(min(left, 1 << 20))
                assert b
                h.update(b)
                left -= len(b)
    return {"booted": st["booted"], "running": h.hexdigest(), "labels": [p.get("name") for p in parts],
            "entries": esp_entries(k), "running_slot": run["id"]}


def inactive_labels(k):
    st = sim(k)
    other = next(s for s in st["slots"] if not s["booted"])
    parts = partitions(k)
    base = [p for p in parts if p["uuid"].lower() == other["partuuid"].lower()]
    assert base
    i = parts.index(base[0])
    return [p.get("name") for p in parts[i:i + 3]]


def assert_unchanged(k, before, written):
    """After a refusal: the running slot byte-identical, no new boot entry, nothing booted
    differently; the inactive slot `_empty` when writing had begun, its labels unchanged when the
    refusal came first."""
    after = snapshot(k)
    assert after["booted"] == before["booted"]
    assert after["running"] == before["running"], "the running slot changed"
    new = set(after["entries"]) - set(before["entries"])
    assert not new, f"boot entries added: {new}"
    for name, h in after["entries"].items():
        assert before["entries"][name] == h, f"boot entry {name} changed"
    if written:
        assert inactive_labels(k) == ["_empty"] * 3
    else:
        assert after["labels"] == before["labels"]
        assert after["entries"] == before["entries"]


def task_count(k):
    return k.get(TASKS).json()["Members@odata.count"]


def tasks(k):
    return [m["@odata.id"] for m in k.get(TASKS).json()["Members"]]


def patch_service(k, body, auth=ADMIN):
    r = requests.patch(k.url + US, json=body, auth=auth, verify=False, timeout=WAIT)
    assert r.status_code in (200, 204), (r.status_code, r.text)
    return r


def rfc3339(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_running(k, version, other=None):
    """`version` booted (and blessed) in the engine's view and as SoftwareInventory."""
    st = sim(k)
    assert st["booted"] == version, st
    run = next(s for s in st["slots"] if s["booted"])
    assert run["version"] == version and run["state"] == "Active"
    entry = next(e for e in st["entries"] if e["version"] == version)
    assert entry["blessed"] and entry["file"] == f"keel_{version}.efi", entry
    s = item(k, f"Slot_{run['id']}")
    assert s["Version"] == version and s["Active"] is True and s["WriteProtected"] is True
    assert s["Status"]["State"] == "Enabled"
    u = item(k, f"UKI_{version}")
    assert u["Active"] is True and u["Description"] == "Blessed boot entry"
    if other:
        o = next(x for x in st["slots"] if not x["booted"])
        assert o["version"] == other and o["state"] == "Previous", o
        assert item(k, f"Slot_{o['id']}")["Status"]["State"] == "StandbySpare"


def assert_staged(k, version):
    st = sim(k)
    o = next(x for x in st["slots"] if not x["booted"])
    assert o["version"] == version and o["state"] == "Staged", st
    assert o["label"] == f"keel_{version}"
    s = item(k, f"Slot_{o['id']}")
    assert s["Version"] == version and s["Staged"] is True and s["Active"] is False
    assert s["Status"]["State"] == "StandbyOffline"
    assert f"keel_{version}+3.efi" in esp_entries(k)


class RawPush:
    """A MultipartHttpPushUri upload over a raw TLS socket, sent at the test's pace, so that it can
    be held open, cut off, or overlapped with another request."""

    def __init__(self, k, bundle_bytes, params=None, auth=ADMIN, filename="b.keel"):
        b = "keel-test-" + os.urandom(8).hex()
        head = b""
        if params is not None:
            head += (f"--{b}\r\nContent-Disposition: form-data; name=\"UpdateParameters\"\r\n"
                     f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n").encode()
        head += (f"--{b}\r\nContent-Disposition: form-data; name=\"UpdateFile\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        self.body = head + bundle_bytes + f"\r\n--{b}--\r\n".encode()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", k.port), timeout=WAIT), server_hostname="127.0.0.1")
        self.sock.sendall((f"POST {PUSH} HTTP/1.1\r\nHost: 127.0.0.1:{k.port}\r\nAuthorization: {basic(*auth)}\r\n"
                           f"Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len(self.body)}\r\n"
                           f"Connection: close\r\n\r\n").encode())
        self.sent = 0

    def send(self, n):
        chunk = self.body[self.sent:self.sent + n]
        self.sock.sendall(chunk)
        self.sent += len(chunk)

    def send_paced(self, seconds, upto=None, chunk=64 << 10):
        """Send the body (up to byte `upto`) evenly over `seconds`."""
        end = len(self.body) if upto is None else upto
        n = max(1, -(-(end - self.sent) // chunk))
        t0 = time.time()
        for i in range(n):
            self.send(min(chunk, end - self.sent))
            delay = t0 + seconds * (i + 1) / n - time.time()
            if delay > 0:
                time.sleep(delay)

    def response(self):
        """(status, headers, JSON body) once the server answered and closed."""
        data = b""
        while True:
            b = self.sock.recv(65536)
            if not b:
                break
            data += b
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        while lines[0].startswith("HTTP/1.1 100"):
            lines = lines[2:] if len(lines) > 1 and lines[1] == "" else lines[1:]
        status = int(lines[0].split()[1])
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        return status, headers, (json.loads(body) if body.strip() else None)

    def cut(self):
        """Drop the connection mid-upload, as a client that dies would."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def new_task(k, before, timeout=WAIT):
    """The task URI that appeared since `before` (a list of task URIs)."""
    deadline = time.time() + timeout
    while True:
        extra = [t for t in tasks(k) if t not in before]
        if extra:
            assert len(extra) == 1, extra
            return extra[0]
        assert time.time() < deadline, "no new task"
        time.sleep(0.05)


# ------------------------------------------------------------------ 1. Immediate


def test_immediate_push_restarts_into_the_new_slot_with_progress_and_events(upd, bundles):
    # The engine writes in 4 MiB chunks with four in flight: a bundle of some tens of MiB shows
    # PercentComplete rising step by step.
    usr_size = 40 << 20
    k = upd(slot_size=48 << 20)
    assert_running(k, RUNNING)
    assert inactive_labels(k) == ["_empty"] * 3
    svc = k.get(US).json()
    assert svc["MultipartHttpPushUri"] == PUSH
    assert svc["HttpPushUriOptions"]["HttpPushUriApplyTime"]["ApplyTime"] == "Immediate"
    assert svc["MaxImageSizeBytes"] >= 48 << 20
    bundle = bundles.get("0.2.0", usr_size=usr_size).read_bytes()
    with SSEClient(k) as sse:
        before = tasks(k)
        up = RawPush(k, bundle)
        seen = []
        sender = threading.Thread(target=up.send_paced, args=(3.0,))
        sender.start()
        task_uri = new_task(k, before)
        while sender.is_alive():
            seen.append(k.get(task_uri).json()["PercentComplete"])
            time.sleep(0.05)
        sender.join()
        status, headers, body = up.response()
        assert status == 202, body
        assert headers["location"] == body["TaskMonitor"] and body["@odata.id"] == task_uri
        task = wait_task(k, task_uri)
        completed(task, "Update.TargetDetermined", "Update.TransferringToComponent", "Update.VerifyingAtComponent",
                  "Update.ApplyingOnComponent", "Update.UpdateSuccessful")
        assert "Update.AwaitToActivate" not in task_ids(task)
        # PercentComplete rose while the bytes were written.
        assert seen == sorted(seen), seen
        assert len({p for p in seen if 0 < p < 100}) >= 3, seen
        # The event stream carried the task's progress and its Update messages.
        got = set()
        deadline = time.time() + WAIT
        want = {"TaskEvent.TaskProgressChanged", "Update.TargetDetermined", "Update.TransferringToComponent",
                "Update.UpdateSuccessful", "TaskEvent.TaskCompletedOK"}
        while not want <= got:
            ev = sse.next(timeout=max(0.1, deadline - time.time()), what=f"task events {want - got}")
            for rec in ev["data"]["Events"]:
                if origin(rec) == task_uri:
                    got.add(short(rec["MessageId"]))
    # The machine restarted by itself into the new slot, and blessed it.
    assert_running(k, "0.2.0", other=RUNNING)
    assert item(k, "Slot_B")["Version"] == "0.2.0" and item(k, "Slot_A")["Active"] is False
    st = sim(k)
    assert st["next_boot"]["version"] == "0.2.0"
    assert sorted(esp_entries(k)) == ["keel_0.1.0.efi", "keel_0.2.0.efi"]
    assert [p["name"] for p in partitions(k)][1:7] == ["keel_0.1.0", "keel_0.1.0_verity", "keel_0.1.0_verity_sig",
                                                       "keel_0.2.0", "keel_0.2.0_verity", "keel_0.2.0_verity_sig"]
    # The slot holds exactly the bundle's usr.
    parts = {p["name"]: p for p in partitions(k)}
    off = artifacts_offset(bundle)
    with open(k.state_dir / "sim" / "disk.img", "rb") as f:
        f.seek(parts["keel_0.2.0"]["start"] * 512)
        assert f.read(usr_size) == bundle[off:off + usr_size]
    # The next update goes to the other slot (A), which is not running any more.
    task = task_of(k, push(k, bundles.get("0.3.0")))
    completed(task, "Update.UpdateSuccessful")
    assert_running(k, "0.3.0", other="0.2.0")
    assert sorted(esp_entries(k)) == ["keel_0.2.0.efi", "keel_0.3.0.efi"]


# ------------------------------------------------------------------ 2. apply times


def test_on_reset_and_on_start_update_request(upd, bundles):
    k = upd()
    # StartUpdate with nothing staged.
    r = requests.post(k.url + START, json={}, auth=ADMIN, verify=False)
    assert r.status_code == 409, r.text
    assert error_ids(r)
    # OnReset: staged, the next reset boots it.
    task = task_of(k, push(k, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": "OnReset"}))
    completed(task, "Update.UpdateSuccessful", "Update.AwaitToActivate")
    assert_staged(k, "0.2.0")
    assert sim(k)["next_boot"]["version"] == "0.2.0"
    assert_running(k, RUNNING)
    reset(k)
    assert_running(k, "0.2.0", other=RUNNING)

    # OnStartUpdateRequest: a reset keeps the running version, StartUpdate activates.
    task = task_of(k, push(k, bundles.get("0.3.0"), {"@Redfish.OperationApplyTime": "OnStartUpdateRequest"}))
    completed(task, "Update.UpdateSuccessful", "Update.AwaitToActivate")
    assert_staged(k, "0.3.0")
    pending = json.loads((k.state_dir / "update" / "pending.json").read_text())
    assert pending["version"] == "0.3.0" and pending["apply_time"] == "OnStartUpdateRequest"
    assert sim(k)["next_boot"]["version"] == "0.2.0"
    reset(k)
    assert_running(k, "0.2.0")
    assert_staged(k, "0.3.0")
    r = requests.post(k.url + START, json={}, auth=ADMIN, verify=False)
    assert r.status_code in (200, 204), r.text
    assert_running(k, "0.3.0", other="0.2.0")
    assert json.loads((k.state_dir / "update" / "pending.json").read_text()) is None
    r = requests.post(k.url + START, json={}, auth=ADMIN, verify=False)
    assert r.status_code == 409, r.text

    # The push default follows HttpPushUriOptions.
    patch_service(k, {"HttpPushUriOptions": {"HttpPushUriApplyTime": {"ApplyTime": "OnReset"}}})
    assert k.get(US).json()["HttpPushUriOptions"]["HttpPushUriApplyTime"]["ApplyTime"] == "OnReset"
    task = task_of(k, push(k, bundles.get("0.4.0")))
    completed(task, "Update.AwaitToActivate")
    assert_staged(k, "0.4.0")
    assert_running(k, "0.3.0")


def test_maintenance_windows(upd, bundles):
    at_start, on_reset = upd(), upd()
    # Without a window, the maintenance apply times are refused (push and SimpleUpdate).
    for at in ("AtMaintenanceWindowStart", "InMaintenanceWindowOnReset"):
        before = snapshot(at_start)
        r = push(at_start, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": at})
        assert r.status_code == 400, r.text
        assert "Base.ActionParameterValueConflict" in error_ids(r)
        r = requests.post(at_start.url + SIMPLE, json={"ImageURI": "http://127.0.0.1:9/x.keel", "@Redfish.OperationApplyTime": at},
                          auth=ADMIN, verify=False)
        assert r.status_code == 400, r.text
        assert task_count(at_start) == 0
        assert_unchanged(at_start, before, written=False)

    start = int(time.time()) + 5
    for k in (at_start, on_reset):
        patch_service(k, {"HttpPushUriOptions": {"HttpPushUriApplyTime": {
            "MaintenanceWindowStartTime": rfc3339(start), "MaintenanceWindowDurationInSeconds": 60}}})
        svc = k.get(US).json()
        assert svc["@Redfish.MaintenanceWindow"]["MaintenanceWindowStartTime"] == rfc3339(start)
        assert svc["HttpPushUriOptions"]["HttpPushUriApplyTime"]["MaintenanceWindowDurationInSeconds"] == 60
    completed(task_of(at_start, push(at_start, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": "AtMaintenanceWindowStart"})),
              "Update.AwaitToActivate")
    completed(task_of(on_reset, push(on_reset, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": "InMaintenanceWindowOnReset"})),
              "Update.AwaitToActivate")
    # Before the window: staged, and a reset keeps the running version.
    assert_staged(at_start, "0.2.0")
    assert_staged(on_reset, "0.2.0")
    reset(on_reset)
    assert time.time() < start, "the machine is too slow for this test's window"
    assert_running(on_reset, RUNNING)
    assert_staged(on_reset, "0.2.0")
    assert booted(at_start) == RUNNING
    # AtMaintenanceWindowStart activates by itself once the window starts.
    deadline = start + 20
    while booted(at_start) != "0.2.0":
        assert time.time() < deadline, "AtMaintenanceWindowStart did not activate within the window"
        time.sleep(0.2)
    assert time.time() >= start
    assert_running(at_start, "0.2.0", other=RUNNING)
    # InMaintenanceWindowOnReset: nothing by itself; a reset inside the window boots the new version.
    assert booted(on_reset) == RUNNING
    reset(on_reset)
    assert_running(on_reset, "0.2.0", other=RUNNING)


def test_restart_of_keeld_keeps_a_staged_update_and_its_task(upd, bundles):
    k = upd()
    failed_task = task_of(k, push(k, bundles.get("0.2.0", signer="rogue")))
    failed(failed_task, "Update.VerificationFailed")
    task = task_of(k, push(k, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": "OnStartUpdateRequest"}))
    completed(task, "Update.AwaitToActivate")
    k.restart()
    assert_staged(k, "0.2.0")
    assert json.loads((k.state_dir / "update" / "pending.json").read_text())["version"] == "0.2.0"
    again = wait_task(k, task["@odata.id"])
    again.pop("@odata.etag", None)
    task.pop("@odata.etag", None)
    assert again == task
    assert wait_task(k, failed_task["@odata.id"])["TaskState"] == "Exception"
    reset(k)
    assert_running(k, RUNNING)
    k.restart()
    assert_staged(k, "0.2.0")
    r = requests.post(k.url + START, json={}, auth=ADMIN, verify=False)
    assert r.status_code in (200, 204), r.text
    assert_running(k, "0.2.0", other=RUNNING)


# ------------------------------------------------------------------ 3. SimpleUpdate


def simple(k, body, auth=ADMIN):
    return requests.post(k.url + SIMPLE, json=body, auth=auth, verify=False, timeout=WAIT)


def test_simple_update(upd, bundles, http):
    k = upd()
    k.create_account("operator", PASSWORD, "Operator")
    op = ("operator", PASSWORD)
    # HTTP from a server on loopback: a task, Immediate.
    task = task_of(k, simple(k, {"ImageURI": http.url(bundles.get("0.2.0"))}))
    completed(task, "Update.TargetDetermined", "Update.UpdateSuccessful")
    assert task["Payload"]["TargetUri"] == SIMPLE
    assert_running(k, "0.2.0", other=RUNNING)
    # TransferProtocol with a URI without scheme; Stage=true stages.
    uri = http.url(bundles.get("0.3.0")).removeprefix("http://")
    task = task_of(k, simple(k, {"ImageURI": uri, "TransferProtocol": "HTTP", "Stage": True, "Targets": ["/redfish/v1/Systems/system"]}))
    completed(task, "Update.AwaitToActivate")
    assert_staged(k, "0.3.0")
    reset(k)
    assert_running(k, "0.2.0")
    r = requests.post(k.url + START, json={}, auth=op, verify=False)
    assert r.status_code in (200, 204), r.text
    assert_running(k, "0.3.0", other="0.2.0")
    # file:// as Administrator; as Operator it is forbidden and nothing is written.
    path = bundles.get("0.4.0")
    before = snapshot(k)
    n = task_count(k)
    r = simple(k, {"ImageURI": f"file://{path}"}, auth=op)
    assert r.status_code == 403, r.text
    assert task_count(k) == n
    assert_unchanged(k, before, written=False)
    task = task_of(k, simple(k, {"ImageURI": f"file://{path}", "@Redfish.OperationApplyTime": "OnReset"}))
    completed(task, "Update.AwaitToActivate")
    assert_staged(k, "0.4.0")
    reset(k)
    assert_running(k, "0.4.0", other="0.3.0")
    # An Operator may update over HTTP (ConfigureComponents).
    task = task_of(k, simple(k, {"ImageURI": http.url(bundles.get("0.5.0"))}, auth=op))
    completed(task, "Update.UpdateSuccessful")
    assert_running(k, "0.5.0", other="0.4.0")


def test_simple_update_refusals(upd, bundles, http):
    k = upd()
    before = snapshot(k)
    # Bad requests: no task, nothing written.
    for body, status in [
        ({"ImageURI": "ftp://127.0.0.1/b.keel"}, 400),
        ({"ImageURI": "127.0.0.1/b.keel"}, 400),
        ({"ImageURI": f"file://{bundles.d}/does-not-exist.keel"}, 400),
        ({"ImageURI": http.url(bundles.get("0.2.0")), "TransferProtocol": "HTTPS"}, 400),
        ({"ImageURI": http.url(bundles.get("0.2.0")), "TransferProtocol": "FTP"}, 400),
        ({"ImageURI": http.url(bundles.get("0.2.0")), "Targets": ["/redfish/v1/Managers/keel"]}, 400),
        ({"ImageURI": http.url(bundles.get("0.2.0")), "@Redfish.OperationApplyTime": "Later"}, 400),
        ({"TransferProtocol": "HTTP"}, 400),
    ]:
        r = simple(k, body)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert error_ids(r), r.text
    assert task_count(k) == 0
    r = simple(k, {"ImageURI": http.url(bundles.get("0.2.0"))}, auth=None)
    assert r.status_code == 401
    k.create_account("reader", PASSWORD, "ReadOnly")
    r = simple(k, {"ImageURI": http.url(bundles.get("0.2.0"))}, auth=("reader", PASSWORD))
    assert r.status_code == 403, r.text
    assert task_count(k) == 0
    assert_unchanged(k, before, written=False)
    # A 404 from the server: the task fails with TransferFailed.
    failed(task_of(k, simple(k, {"ImageURI": f"http://127.0.0.1:{http.port}/missing.keel"})), "Update.TransferFailed")
    # Nobody listening.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    failed(task_of(k, simple(k, {"ImageURI": f"http://127.0.0.1:{dead}/b.keel"})), "Update.TransferFailed")
    assert_unchanged(k, before, written=False)
    # A downgrade without ForceUpdate fails; with it, it is applied.
    old = bundles.get("0.0.9")
    failed(task_of(k, simple(k, {"ImageURI": http.url(old)})), "Update.UpdateSkippedVersionTooLow")
    failed(task_of(k, simple(k, {"ImageURI": http.url(old), "ForceUpdate": False})), "Update.UpdateSkippedVersionTooLow")
    assert_unchanged(k, before, written=False)
    # Staged, a forced downgrade waits for StartUpdate, then boots although it is older.
    completed(task_of(k, simple(k, {"ImageURI": http.url(old), "ForceUpdate": True, "Stage": True})), "Update.AwaitToActivate")
    assert_staged(k, "0.0.9")
    reset(k)
    assert_running(k, RUNNING)
    r = requests.post(k.url + START, json={}, auth=ADMIN, verify=False)
    assert r.status_code in (200, 204), r.text
    assert_running(k, "0.0.9", other=RUNNING)
    # Immediate: the machine restarts into the older version at once.
    completed(task_of(k, simple(k, {"ImageURI": http.url(bundles.get("0.0.8")), "ForceUpdate": True})), "Update.UpdateSuccessful")
    assert_running(k, "0.0.8", other="0.0.9")
    # An update to a newer version afterwards boots the newest again.
    completed(task_of(k, push(k, bundles.get("0.2.0"))), "Update.UpdateSuccessful")
    assert_running(k, "0.2.0", other="0.0.8")


# ------------------------------------------------------------------ 4. refusals through the push


def tamper(data, at):
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def refusal_cases(bundles):
    good = bundles.get("0.3.0").read_bytes()
    off = artifacts_offset(good)
    return {
        # (data, expected task message, whether writing had begun)
        "untrusted-signer": (bundles.get("0.3.0", signer="rogue").read_bytes(), "Update.VerificationFailed", False),
        "manifest-changed": (good.replace(b'"version":"0.3.0"', b'"version":"0.3.1"', 1), "Update.VerificationFailed", False),
        "tampered-usr": (tamper(good, off + SMALL // 2), "Update.VerificationFailed", True),
        "tampered-uki": (tamper(good, len(good) - 10), "Update.VerificationFailed", True),
        "truncated": (good[:off + SMALL // 2], "Update.TransferFailed", True),
        "wrong-architecture": (bundles.get("0.3.0", arch="arm64").read_bytes(), "Update.UpdateNotApplicable", False),
        "downgrade": (bundles.get("0.0.9").read_bytes(), "Update.UpdateSkippedVersionTooLow", False),
        "same-version": (bundles.get(RUNNING).read_bytes(), "Update.UpdateSkippedSameVersion", False),
        "min-version": (bundles.get("0.3.0", min_version="0.2.0").read_bytes(), "Update.UpdateSkippedVersionTooLow", False),
        "no-space": (bundles.get("0.3.0", usr_size=SLOT_SIZE + 4096).read_bytes(), "Update.ApplyFailed", False),
        "garbage": (os.urandom(4096), "Update.VerificationFailed", False),
    }


@pytest.mark.parametrize("case", ["untrusted-signer", "manifest-changed", "tampered-usr", "tampered-uki", "truncated",
                                  "wrong-architecture", "downgrade", "same-version", "min-version", "no-space", "garbage"])
def test_push_refusals_change_nothing(upd, bundles, case):
    data, mid, written = refusal_cases(bundles)[case]
    k = upd()
    # Slot B holds a staged 0.2.0 first: a refusal before writing keeps it, one during writing
    # leaves the slot `_empty` (and its boot entry gone) — never the running slot.
    completed(task_of(k, push(k, bundles.get("0.2.0"), {"@Redfish.OperationApplyTime": "OnStartUpdateRequest"})))
    before = snapshot(k)
    task = task_of(k, push(k, None, data=data, filename=f"{case}.keel"))
    failed(task, mid)
    msg = next(m for m in task["Messages"] if short(m["MessageId"]) == mid)
    assert msg["Resolution"] and msg["Resolution"] != "None.", msg
    assert_unchanged(k, before, written)
    if written:
        assert "keel_0.2.0+3.efi" not in esp_entries(k)
        assert item(k, "Slot_B")["Status"]["State"] == "Absent"
    else:
        assert_staged(k, "0.2.0")
    assert item(k, "Slot_A")["Active"] is True
    # The machine still boots what it ran, and a good update goes through afterwards.
    reset(k)
    assert_running(k, RUNNING)
    completed(task_of(k, push(k, bundles.get("0.4.0"))), "Update.UpdateSuccessful")
    assert_running(k, "0.4.0", other=RUNNING)


def test_push_request_errors(upd, bundles):
    k = upd()
    k.create_account("reader", PASSWORD, "ReadOnly")
    k.create_account("operator", PASSWORD, "Operator")
    before = snapshot(k)
    b = bundles.get("0.2.0")

    def check(r, status, mid=None):
        assert r.status_code == status, (r.status_code, r.text)
        if mid:
            assert mid in error_ids(r), r.text
        assert task_count(k) == 0
        assert_unchanged(k, before, written=False)

    # Unknown part, missing UpdateFile, bad UpdateParameters, bad target, not multipart.
    r = requests.post(k.url + PUSH, files=[("UpdateParameters", (None, "{}", "application/json")), ("Firmware", ("b.keel", b"x" * 100))],
                      auth=ADMIN, verify=False)
    check(r, 400, "Base.ActionParameterUnknown")
    r = requests.post(k.url + PUSH, files=[("UpdateParameters", (None, "{}", "application/json"))], auth=ADMIN, verify=False)
    check(r, 400, "Base.ActionParameterMissing")
    r = requests.post(k.url + PUSH, files=[("UpdateParameters", (None, "{not json", "application/json")),
                                           ("UpdateFile", ("b.keel", b.read_bytes()))], auth=ADMIN, verify=False)
    check(r, 400)
    check(push(k, b, {"@Redfish.OperationApplyTime": "Sometime"}), 400)
    check(push(k, b, {"Targets": ["/redfish/v1/Chassis/chassis"]}), 400, "Base.ActionParameterValueNotInList")
    check(push(k, b, {"Bogus": 1}), 400)
    r = requests.post(k.url + PUSH, data=b.read_bytes(), headers={"Content-Type": "application/octet-stream"}, auth=ADMIN, verify=False)
    check(r, 415)
    r = requests.post(k.url + PUSH, json={"UpdateFile": "x"}, auth=ADMIN, verify=False)
    check(r, 415)
    # Privileges: no credentials, ReadOnly: refused; nothing written.
    check(push(k, b, auth=None), 401)
    check(push(k, b, auth=("reader", PASSWORD)), 403)
    # An Operator has ConfigureComponents.
    completed(task_of(k, push(k, b, {"Targets": ["/redfish/v1/Systems/system"]}, auth=("operator", PASSWORD))), "Update.UpdateSuccessful")
    assert_running(k, "0.2.0", other=RUNNING)


def test_cut_connection_mid_upload(upd, bundles):
    k = upd()
    bundle = bundles.get("0.2.0", usr_size=4 << 20).read_bytes()
    before = snapshot(k)
    up = RawPush(k, bundle)
    t0 = tasks(k)
    up.send_paced(0.5, upto=len(up.body) // 2)
    task_uri = new_task(k, t0)
    up.cut()
    task = wait_task(k, task_uri)
    failed(task, "Update.TransferFailed")
    assert_unchanged(k, before, written=True)
    # The service is free again: a good push goes through.
    completed(task_of(k, push(k, bundles.get("0.2.0"))), "Update.UpdateSuccessful")
    assert_running(k, "0.2.0", other=RUNNING)


def test_second_update_while_one_is_writing_is_refused(upd, bundles, http):
    k = upd()
    bundle = bundles.get("0.2.0", usr_size=4 << 20).read_bytes()
    up = RawPush(k, bundle, params={"@Redfish.OperationApplyTime": "OnReset"})
    t0 = tasks(k)
    up.send_paced(0.3, upto=len(up.body) // 2)
    task_uri = new_task(k, t0)
    assert k.get(US).json()["Status"]["State"] == "Updating"
    assert item(k, "Slot_B")["Status"]["State"] == "Updating"
    # Another push and a SimpleUpdate meanwhile: 409 UpdateInProgress, no task.
    r = push(k, bundles.get("0.3.0"))
    assert r.status_code == 409, r.text
    assert "Update.UpdateInProgress" in error_ids(r)
    r = simple(k, {"ImageURI": http.url(bundles.get("0.3.0"))})
    assert r.status_code == 409, r.text
    assert "Update.UpdateInProgress" in error_ids(r)
    assert len(tasks(k)) == 1
    # The first one finishes undisturbed.
    up.send_paced(0.3)
    status, _, body = up.response()
    assert status == 202, body
    completed(wait_task(k, task_uri), "Update.AwaitToActivate")
    assert_staged(k, "0.2.0")
    assert k.get(US).json()["Status"]["State"] == "Enabled"
    reset(k)
    assert_running(k, "0.2.0", other=RUNNING)


# ------------------------------------------------------------------ 5. power loss


def test_power_loss_during_push(upd, bundles):
    """kill -9 keeld at random moments of an Immediate push (each trial on a fresh machine); after a
    restart of keeld and a reset, the machine runs the old version, or the new one only if its
    activation had completed; a retried push then succeeds. (The engine-level test with 50 kills at
    random write offsets is in service/tests/slots.rs.)"""
    seed = int(os.environ.get("KEEL_TEST_SEED", time.time_ns() % 1_000_000))
    rnd = random.Random(seed)
    new = bundles.get("0.2.0", usr_size=2 << 20)
    bundle = new.read_bytes()
    pace, trials = 0.8, 10
    window = pace + 0.5
    outcomes = []
    t0 = time.time()
    for trial in range(trials):
        # Stratified: trial i kills somewhere in the i-th tenth of [0, upload time + 0.5 s], so the
        # kills cover the whole upload, its verification, activation and the restart after it.
        delay = window * (trial + rnd.random()) / trials
        why = f"seed {seed}, trial {trial}, kill after {delay:.2f}s"
        k = upd()
        before = snapshot(k)
        up = RawPush(k, bundle)
        sender = threading.Thread(target=_send_ignoring_errors, args=(up, pace), daemon=True)
        sender.start()
        time.sleep(delay)
        k.proc.kill()
        k.proc.wait()
        sender.join(10)
        up.cut()
        # Power back: keeld starts on the same state directory.
        k.start()
        st = sim(k)
        slot_b = next(s for s in st["slots"] if s["id"] == "B")
        activated = slot_b["label"] == "keel_0.2.0" and any(e["version"] == "0.2.0" for e in st["entries"])
        if not activated:
            assert slot_b["label"] == "_empty", (why, st)
        assert st["next_boot"]["version"] == ("0.2.0" if activated else RUNNING), (why, st)
        for t in tasks(k):
            assert k.get(t).json()["TaskState"] in ("Completed", "Exception"), (why, t)
        reset(k)
        assert booted(k) == ("0.2.0" if activated else RUNNING), (why, st, sim(k))
        if activated:
            assert_running(k, "0.2.0", other=RUNNING)
            completed(task_of(k, push(k, bundles.get("0.3.0"))), "Update.UpdateSuccessful")
            assert_running(k, "0.3.0", other="0.2.0")
        else:
            assert snapshot(k)["running"] == before["running"], why
            # Retried, the same push succeeds.
            completed(task_of(k, push(k, new)), "Update.UpdateSuccessful")
            assert_running(k, "0.2.0", other=RUNNING)
        k.stop()
        outcomes.append((round(delay, 2), "activated" if activated else "old"))
    print(f"power-loss seed {seed}: {outcomes}")
    assert any(o == "old" for _, o in outcomes)
    assert time.time() - t0 < 60


def _send_ignoring_errors(up, pace):
    try:
        up.send_paced(pace)
        up.response()
    except (OSError, IndexError, ValueError):
        pass


# ------------------------------------------------------------------ 6. clients


def test_rf_update(upd, bundles, http, tmp_path):
    """DMTF's rf_update.py (redfish_utilities): a local file goes to the MultipartHttpPushUri, a URI
    to SimpleUpdate; either way it follows the task monitor to the end and prints the messages."""
    k = upd()
    exe = pathlib.Path(sys.executable).parent / "rf_update.py"
    assert exe.exists(), "rf_update.py (redfish_utilities) is not installed in the test venv"

    def rf_update(image, *extra):
        r = subprocess.run([sys.executable, str(exe), "-u", ADMIN[0], "-p", ADMIN[1], "-r", k.url, "-i", str(image), *extra],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Task is Done!" in r.stdout, r.stdout
        return r.stdout

    out = rf_update(bundles.get("0.2.0"), "--applytime", "OnReset")
    assert "Pushing the image to the service directly" in out
    assert "Update.1.3.UpdateSuccessful" in out and "Update.1.3.AwaitToActivate" in out, out
    assert_staged(k, "0.2.0")
    reset(k)
    assert_running(k, "0.2.0", other=RUNNING)
    # Default apply time (Immediate).
    out = rf_update(bundles.get("0.3.0"))
    assert "Update.1.3.UpdateSuccessful" in out and "TaskEvent.1.0.TaskCompletedOK" in out, out
    assert_running(k, "0.3.0", other="0.2.0")
    # A refused image: rf_update shows the task's failure.
    out = rf_update(bundles.get("0.4.0", signer="rogue"))
    assert "Update.1.3.VerificationFailed" in out and "TaskEvent.1.0.TaskAborted" in out, out
    assert_running(k, "0.3.0")
    # A remote image: SimpleUpdate.
    out = rf_update(http.url(bundles.get("0.4.0")))
    assert "Pushing" not in out and "Update.1.3.UpdateSuccessful" in out, out
    assert_running(k, "0.4.0", other="0.3.0")


def sushy_wait(monitor, timeout=60):
    """Poll a sushy TaskMonitor until it stops answering 202. (Not `TaskMonitor.wait`: sushy
    5.14's `sleep_for` hands Retry-After's delay-seconds to time.sleep as a str, a TypeError.)"""
    deadline = time.time() + timeout
    while monitor.check_is_processing:
        assert time.time() < deadline, f"task monitor {monitor.task_monitor_uri} still busy"
        time.sleep(0.2)


def test_sushy_simple_update(upd, bundles, http):
    import sushy
    k = upd()
    s = sushy.Sushy(k.url + "/redfish/v1", username=ADMIN[0], password=ADMIN[1], verify=str(k.state_dir / "tls-cert.pem"))
    try:
        sushy_updates(k, s, bundles, http)
    finally:
        s._auth.close()  # log out while keeld runs (else Sushy.__del__ retries against a stopped keeld)


def sushy_updates(k, s, bundles, http):
    import sushy
    us = s.get_update_service()
    assert us.service_enabled and us.status.state == sushy.State.ENABLED
    tm = us.simple_update(http.url(bundles.get("0.2.0")))
    assert tm.response.status_code == 202
    assert tm.task is not None and tm.task.identity
    # The monitor of the Location header, as sushy.Sushy.get_task_monitor reads it.
    mon = s.get_task_monitor(tm.response.headers["Location"])
    sushy_wait(mon)
    task = tm.get_task()
    assert task.task_state == sushy.TaskState.COMPLETED, task.task_state
    assert task.task_status == sushy.Health.OK
    assert task.percent_complete == 100
    assert "Update.1.3.UpdateSuccessful" in [m.message_id for m in task.messages]
    assert_running(k, "0.2.0", other=RUNNING)
    # A failing one: the task ends in Exception and says why.
    tm = us.simple_update(f"http://127.0.0.1:{http.port}/missing.keel", transfer_protocol="HTTP")
    sushy_wait(s.get_task_monitor(tm.response.headers["Location"]))
    task = tm.get_task()
    assert task.task_state == sushy.TaskState.EXCEPTION, task.task_state
    assert "Update.1.3.TransferFailed" in [m.message_id for m in task.messages]
    assert_running(k, "0.2.0")
    # The inventory through sushy: both slots and the UKIs.
    inv = us.software_inventory
    ids = {m.identity for m in inv.get_members()}
    assert {"Slot_A", "Slot_B", "UKI_0.1.0", "UKI_0.2.0"} <= ids, ids
    b = inv.get_member(f"{SW}/Slot_B")
    assert b.version == "0.2.0" and b.updateable is False


# ------------------------------------------------------------------ 7. Service Validator


def test_service_validator_with_update_tasks(upd, bundles, tmp_path):
    k = upd()
    failed(task_of(k, push(k, bundles.get("0.2.0", signer="rogue"))), "Update.VerificationFailed")
    completed(task_of(k, push(k, bundles.get("0.2.0"))), "Update.UpdateSuccessful")
    completed(task_of(k, push(k, bundles.get("0.3.0"), {"@Redfish.OperationApplyTime": "OnStartUpdateRequest"})), "Update.AwaitToActivate")
    patch_service(k, {"HttpPushUriOptions": {"HttpPushUriApplyTime": {
        "MaintenanceWindowStartTime": rfc3339(time.time() + 86400), "MaintenanceWindowDurationInSeconds": 3600}}})
    assert_staged(k, "0.3.0")
    logs = run_service_validator(k, tmp_path)
    for uri in (US, f"{SW}/Slot_A", f"{SW}/Slot_B", f"{SW}/UKI_0.3.0", f"{TASKS}/1", f"{TASKS}/3"):
        assert uri in logs, f"the validator did not walk {uri}"
