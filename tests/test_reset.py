"""Factory reset (Manager.ResetToDefaults, ComputerSystem.Decommission) and configuration backup
(KeelManager.ExportConfiguration / ImportConfiguration) against a real keeld on the simulated
platform: for each type, what is kept and what is gone (also after a further restart), the
simulated disk, LUKS2 images and swtpm after a Decommission, refusals that change nothing (the
state directory is compared byte for byte), and archives refused for each fault.
"""
import base64
import hashlib
import io
import json
import pathlib
import subprocess
import tarfile
import time

import pytest
import requests

from conftest import ADMIN, Keeld, run_service_validator
from test_crypt import luks_image, needs_tools, opens, tools, tpm_opens  # noqa: F401
from test_crypt import run_task as crypt_task
from test_tasks import seed_task
from test_tpm import swtpm  # noqa: F401  (the fixture)

MGR = "/redfish/v1/Managers/keel"
RTD = MGR + "/Actions/Manager.ResetToDefaults"
SYS = "/redfish/v1/Systems/system"
DECOM = SYS + "/Actions/ComputerSystem.Decommission"
EXPORT = MGR + "/Actions/Oem/KeelManager.ExportConfiguration"
IMPORT = MGR + "/Actions/Oem/KeelManager.ImportConfiguration"
ACCOUNTS = "/redfish/v1/AccountService/Accounts"
SUBS = "/redfish/v1/EventService/Subscriptions"
SIM = ("--power", "simulated", "--platform", "simulated")
OP = ("op", "Busy-Hands-42")
RO = ("ro", "Quiet-Lamp-42")
DEST = "https://127.0.0.1:9/reset-test"


def start(tmp_path, *extra, name="state"):
    state = tmp_path / name
    seed_task(state, 3, "Completed", percent=100, status="OK", end="2025-01-02T03:09:00Z")
    return Keeld(state, [*SIM, *extra]).start()


def client(auth=ADMIN):
    s = requests.Session()
    s.verify = False
    s.auth = auth
    return s


def populate(k):
    """Accounts, a subscription, a session, account/session/update settings, a network file."""
    s = client()
    k.create_account(*OP, role="Operator")
    k.create_account(*RO, role="ReadOnly")
    r = s.post(k.url + SUBS, json={"Destination": DEST, "Protocol": "Redfish", "Context": "reset-test", "VerifyCertificate": False})
    assert r.status_code == 201, r.text
    for path, body in [("/redfish/v1/AccountService", {"AccountLockoutThreshold": 9}),
                       ("/redfish/v1/SessionService", {"SessionTimeout": 600}),
                       ("/redfish/v1/UpdateService", {"HttpPushUriOptions": {"HttpPushUriApplyTime": {"ApplyTime": "OnReset"}}})]:
        r = s.patch(k.url + path, json=body)
        assert r.status_code in (200, 204), (path, r.text)
    k.login(*OP)
    net = k.state_dir / "network"
    net.mkdir(exist_ok=True)
    (net / "eth0.json").write_text('{"DHCPv4": true}')


def observe(k, auth=ADMIN):
    s = client(auth)
    get = lambda p: s.get(k.url + p).json()  # noqa: E731
    push = get("/redfish/v1/UpdateService")["HttpPushUriOptions"]["HttpPushUriApplyTime"]
    net = k.state_dir / "network"
    return {
        "accounts": sorted(get(m["@odata.id"])["UserName"] for m in get(ACCOUNTS)["Members"]),
        "sessions": get("/redfish/v1/SessionService/Sessions")["Members@odata.count"],
        "subscriptions": sorted((d["Destination"], d.get("Context")) for d in (get(m["@odata.id"]) for m in get(SUBS)["Members"])),
        "lockout": get("/redfish/v1/AccountService")["AccountLockoutThreshold"],
        "timeout": get("/redfish/v1/SessionService")["SessionTimeout"],
        "apply_time": push["ApplyTime"],
        "network": sorted(p.name for p in net.iterdir()) if net.exists() else [],
        "tasks": sorted(m["@odata.id"].rsplit("/", 1)[1] for m in get("/redfish/v1/TaskService/Tasks")["Members"]),
    }


DEFAULTS = {"sessions": 0, "subscriptions": [], "lockout": 5, "timeout": 1800, "apply_time": "Immediate"}
POPULATED = {"accounts": ["admin", "op", "ro"], "sessions": 1, "subscriptions": [(DEST, "reset-test")], "lockout": 9,
             "timeout": 600, "apply_time": "OnReset", "network": ["eth0.json"]}


def state_files(k):
    """Every file of the state directory with its SHA-256 (what a refusal must leave alone)."""
    return {str(p.relative_to(k.state_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(k.state_dir.rglob("*")) if p.is_file()}


def starts(k):
    """How many times this keeld process started serving (a restart re-executes it in place)."""
    return k.logs().count("keeld listening on")


def wait_task(k, monitor, auth=ADMIN, timeout=90):
    """Poll a task monitor through keeld's restart until the task is over; the final Task."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(k.url + monitor, auth=auth, verify=False, timeout=5)
        except requests.exceptions.ConnectionError:
            time.sleep(0.2)
            continue
        if r.status_code == 202:
            time.sleep(0.2)
            continue
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()
    raise AssertionError("the task did not end: " + k.logs()[-3000:])


def run(k, path, body, auth=ADMIN):
    r = client(auth).post(k.url + path, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["TaskState"] == "Running"
    monitor = r.headers["Location"]
    task = wait_task(k, monitor, auth)
    assert (task["TaskState"], task["TaskStatus"], task["PercentComplete"]) == ("Completed", "OK", 100), task
    assert [m["MessageId"] for m in task["Messages"]] == ["TaskEvent.1.0.TaskStarted", "Base.1.22.Success", "TaskEvent.1.0.TaskCompletedOK"]
    assert "restarting keeld" in k.logs()
    return task


def error_ids(r):
    return [m["MessageId"].split(".")[-1] for m in r.json()["error"]["@Message.ExtendedInfo"]]


# ------------------------------------------------------------------ the actions as shown


def test_actions_are_advertised_with_their_allowable_values(keeld):
    s = keeld.admin()
    m = s.get(keeld.url + MGR).json()["Actions"]
    assert m["#Manager.ResetToDefaults"] == {"target": RTD, "ResetType@Redfish.AllowableValues": ["ResetAll", "PreserveNetwork", "PreserveNetworkAndUsers"]}
    assert m["Oem"] == {"#KeelManager.ExportConfiguration": {"target": EXPORT}, "#KeelManager.ImportConfiguration": {"target": IMPORT}}
    d = s.get(keeld.url + SYS).json()["Actions"]["#ComputerSystem.Decommission"]
    assert d["target"] == DECOM
    assert d["DecommissionTypes@Redfish.AllowableValues"] == ["All", "UserData", "ManagerConfig", "NetworkConfig", "TPM"]


# ------------------------------------------------------------------ ResetToDefaults


@pytest.mark.parametrize("reset_type", ["ResetAll", "PreserveNetwork", "PreserveNetworkAndUsers"])
def test_reset_to_defaults_keeps_exactly_what_its_type_says(tmp_path, reset_type):
    k = start(tmp_path)
    try:
        populate(k)
        assert observe(k) == {**POPULATED, "tasks": ["3"]}
        identity = {f: (k.state_dir / f).read_bytes() for f in ("tls-cert.pem", "service-uuid")}
        disk = hashlib.sha256((k.state_dir / "sim/disk.img").read_bytes()).hexdigest()
        before = starts(k)
        task = run(k, RTD, {"ResetType": reset_type})
        assert task["Payload"]["JsonBody"] == json.dumps({"ResetType": reset_type}, separators=(",", ":"))
        assert starts(k) == before + 1, "keeld restarted once"
        users = ["admin", "op", "ro"] if reset_type == "PreserveNetworkAndUsers" else ["admin"]
        network = [] if reset_type == "ResetAll" else ["eth0.json"]
        expected = {**DEFAULTS, "accounts": users, "network": network, "tasks": [task["Id"]]}
        assert observe(k) == expected
        if reset_type == "PreserveNetworkAndUsers":
            assert client(OP).get(k.url + MGR).status_code == 200, "the passwords were kept"
        else:
            assert client(OP).get(k.url + MGR).status_code == 401
        # Neither keeld's identity nor the machine was touched.
        assert {f: (k.state_dir / f).read_bytes() for f in identity} == identity
        assert hashlib.sha256((k.state_dir / "sim/disk.img").read_bytes()).hexdigest() == disk
        assert not (k.state_dir / "reset-pending.json").exists()
        assert not (k.state_dir / "sim/factory-reset.json").exists()
        k.restart()
        assert observe(k) == expected, "as it is after a plain restart"
    finally:
        k.stop()


def test_without_a_bootstrap_file_the_administrator_who_asked_keeps_the_account(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        k.bootstrap.unlink()
        r = client().post(k.url + RTD, json={"ResetType": "ResetAll"})
        assert r.status_code == 202, r.text
        monitor = r.headers["Location"]
        deadline = time.time() + 60
        while True:
            assert time.time() < deadline, k.logs()[-2000:]
            try:
                if "Manager.ResetToDefaults: done" in k.logs():
                    r = client().get(k.url + MGR)
                    break
            except requests.exceptions.ConnectionError:
                pass
            time.sleep(0.2)
        assert r.status_code == 403 and error_ids(r) == ["PasswordChangeRequired"], r.text
        admin = client().get(k.url + ACCOUNTS + "/1")
        assert admin.json()["PasswordChangeRequired"] is True
        assert client().patch(k.url + ACCOUNTS + "/1", json={"Password": "Fresh-Start-77"}).status_code in (200, 204)
        after = ("admin", "Fresh-Start-77")
        assert wait_task(k, monitor, after)["TaskState"] == "Completed"
        assert observe(k, after)["accounts"] == ["admin"]
    finally:
        k.stop()


# ------------------------------------------------------------------ Decommission


def gpt_partition(img, name):
    """(offset, size) in bytes of the GPT partition labelled `name` (512-byte sectors)."""
    with open(img, "rb") as f:
        f.seek(512)
        hdr = f.read(92)
        entries_lba = int.from_bytes(hdr[72:80], "little")
        count = int.from_bytes(hdr[80:84], "little")
        size = int.from_bytes(hdr[84:88], "little")
        f.seek(entries_lba * 512)
        table = f.read(count * size)
    for i in range(count):
        e = table[i * size:(i + 1) * size]
        label = e[56:128].decode("utf-16-le").rstrip("\0")
        if label == name:
            first, last = int.from_bytes(e[32:40], "little"), int.from_bytes(e[40:48], "little")
            return first * 512, (last - first + 1) * 512
    raise AssertionError(f"no partition {name}")


def region(img, name):
    off, size = gpt_partition(img, name)
    with open(img, "rb") as f:
        f.seek(off)
        return f.read(size)


def fill(img, name, byte=0xA5):
    off, size = gpt_partition(img, name)
    with open(img, "r+b") as f:
        f.seek(off)
        f.write(bytes([byte]) * size)


def sim_record(k):
    return json.loads((k.state_dir / "sim/factory-reset.json").read_text())


def test_decommission_network_config_removes_the_network_configuration_only(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        task = run(k, DECOM, {"DecommissionTypes": ["NetworkConfig"]})
        assert observe(k) == {**POPULATED, "network": [], "tasks": ["3", task["Id"]]}
        assert not (k.state_dir / "sim/factory-reset.json").exists(), "the machine was not touched"
    finally:
        k.stop()


def test_decommission_manager_config_is_reset_all(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        task = run(k, DECOM, {"DecommissionTypes": ["ManagerConfig"], "OEMDecommissionTypes": []})
        assert observe(k) == {**DEFAULTS, "accounts": ["admin"], "network": [], "tasks": [task["Id"]]}
    finally:
        k.stop()


def test_decommission_user_data_wipes_root_drives_and_keelds_state_on_the_image_files(tmp_path):
    data = tmp_path / "data.img"
    data.write_bytes(b"user data " * (1 << 20))
    k = start(tmp_path, "--crypt-volume", f"data={data}")
    try:
        populate(k)
        disk = k.state_dir / "sim/disk.img"
        fill(disk, "root")
        usr = hashlib.sha256(region(disk, "keel_0.1.0")).hexdigest()
        esp = sorted(p.name for p in (k.state_dir / "sim/esp/EFI/Linux").iterdir())
        cert, uuid = (k.state_dir / "tls-cert.pem").read_bytes(), (k.state_dir / "service-uuid").read_text()
        task = run(k, DECOM, {"DecommissionTypes": ["UserData"], "RequireSecureErase": True})
        # The machine: root zeroed, the data drive blank, the installed OS untouched.
        assert not any(region(disk, "root")), "the root partition is zeroed"
        assert data.stat().st_size == 10 << 20 and not any(data.read_bytes())
        assert hashlib.sha256(region(disk, "keel_0.1.0")).hexdigest() == usr
        assert sorted(p.name for p in (k.state_dir / "sim/esp/EFI/Linux").iterdir()) == esp
        rec = sim_record(k)
        assert len(rec) == 1
        assert (rec[0]["action"], rec[0]["platform"], rec[0]["partitions"], rec[0]["zeroed_drives"], rec[0]["erased_volumes"], rec[0]["tpm"]) == \
            ("ComputerSystem.Decommission", "simulated", ["root"], ["data"], [], None)
        assert "the simulated machine restarted" in k.logs()
        # keeld's state lives on the root volume: all of it went, identity included.
        assert observe(k) == {**DEFAULTS, "accounts": ["admin"], "network": [], "tasks": [task["Id"]]}
        assert (k.state_dir / "tls-cert.pem").read_bytes() != cert
        assert (k.state_dir / "service-uuid").read_text() != uuid
        assert client().get(k.url + MGR).json()["UUID"] == (k.state_dir / "service-uuid").read_text().strip()
    finally:
        k.stop()


def test_decommission_tpm_without_a_software_tpm_is_only_recorded(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        task = run(k, DECOM, {"DecommissionTypes": ["TPM"]})
        assert [r["tpm"] for r in sim_record(k)] == ["Simulated"]
        assert observe(k) == {**POPULATED, "tasks": ["3", task["Id"]]}
    finally:
        k.stop()


@needs_tools
def test_decommission_all_erases_luks_images_and_clears_the_software_tpm(tmp_path, swtpm, tools):  # noqa: F811
    root, other = tmp_path / "root.img", tmp_path / "other.img"
    luks_image(root, swtpm)
    luks_image(other, swtpm)  # not keeld's: only shows whether the TPM still unseals
    assert tpm_opens(other, swtpm, tmp_path)
    k = start(tmp_path, "--tpm-tcti", swtpm, "--crypt-volume", f"root={root}")
    try:
        s = k.admin()
        assert s.get(k.url + SYS + "/Storage/Image0/Volumes/root").json()["Oem"]["Keel"]["ManagedByKeel"] is True
        key = "Correct-Horse-Battery-Staple-1"
        crypt_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": [key]})
        assert opens(root, key)
        populate(k)
        fill(k.state_dir / "sim/disk.img", "root")
        task = run(k, DECOM, {"DecommissionTypes": ["All"]})
        rec = sim_record(k)[0]
        assert (rec["erased_volumes"], rec["zeroed_drives"], rec["tpm"]) == (["root"], ["root"], "Cleared")
        assert subprocess.run(["cryptsetup", "isLuks", str(root)]).returncode != 0
        assert subprocess.run(["blkid", "-p", str(root)], capture_output=True).returncode != 0, "no signature left"
        assert not opens(root, key)
        assert not tpm_opens(other, swtpm, tmp_path), "the TPM was cleared"
        assert not any(region(k.state_dir / "sim/disk.img", "root"))
        assert not (k.state_dir / "crypt").exists() or not any((k.state_dir / "crypt").iterdir())
        sec = s.get(k.url + SYS).json()["Oem"]["Keel"]["Security"]
        assert sec.get("RecoveryKeyCount", 0) == 0 and sec.get("EncryptionManaged") is not True
        assert observe(k) == {**DEFAULTS, "accounts": ["admin"], "network": [], "tasks": [task["Id"]]}
        assert key not in k.logs()
    finally:
        k.stop()


# ------------------------------------------------------------------ refusals


def test_refusals_change_nothing(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        k.login(*ADMIN)  # sessions.json is written now, not during the refusals
        time.sleep(0.1)
        before = state_files(k)
        started = starts(k)
        cases = [
            (RO, RTD, {"ResetType": "ResetAll"}, 403, "InsufficientPrivilege"),
            (OP, RTD, {"ResetType": "ResetAll"}, 403, "InsufficientPrivilege"),
            (RO, DECOM, {"DecommissionTypes": ["NetworkConfig"]}, 403, "InsufficientPrivilege"),
            (OP, DECOM, {"DecommissionTypes": ["ManagerConfig"]}, 403, "InsufficientPrivilege"),
            (OP, DECOM, {"DecommissionTypes": ["All"]}, 403, "InsufficientPrivilege"),
            (OP, DECOM, {"DecommissionTypes": ["UserData"]}, 403, "InsufficientPrivilege"),
            (RO, EXPORT, {}, 403, "InsufficientPrivilege"),
            (OP, EXPORT, {"IncludeRecoveryKeys": False}, 403, "InsufficientPrivilege"),
            (OP, IMPORT, {"Configuration": "AAAA"}, 403, "InsufficientPrivilege"),
            (ADMIN, RTD, {"ResetType": "Bogus"}, 400, "ActionParameterValueNotInList"),
            (ADMIN, RTD, {}, 400, "ActionParameterMissing"),
            (ADMIN, RTD, {"ResetType": "ResetAll", "Force": True}, 400, "ActionParameterUnknown"),
            (ADMIN, RTD, {"ResetType": 1}, 400, "ActionParameterValueTypeError"),
            (ADMIN, DECOM, {"DecommissionTypes": ["BIOSConfig"]}, 400, "ActionParameterValueNotInList"),
            (ADMIN, DECOM, {"DecommissionTypes": ["Logs"]}, 400, "ActionParameterValueNotInList"),
            (ADMIN, DECOM, {"DecommissionTypes": []}, 400, "ActionParameterValueError"),
            (ADMIN, DECOM, {"DecommissionTypes": "All"}, 400, "ActionParameterValueTypeError"),
            (ADMIN, DECOM, {}, 400, "ActionParameterMissing"),
            (ADMIN, DECOM, {"DecommissionTypes": ["All"], "OEMDecommissionTypes": ["Keel.Everything"]}, 400, "ActionParameterValueNotInList"),
            (ADMIN, DECOM, {"DecommissionTypes": ["All"], "Bogus": 1}, 400, "ActionParameterUnknown"),
            (ADMIN, DECOM, {"DecommissionTypes": ["ManagerConfig"], "RequireSecureErase": True}, 501, "ActionParameterValueConflict"),
            (ADMIN, "/redfish/v1/Systems/other/Actions/ComputerSystem.Decommission", {"DecommissionTypes": ["All"]}, 404, "ResourceNotFound"),
            (ADMIN, EXPORT, {"IncludeRecoveryKeys": "yes"}, 400, "ActionParameterValueTypeError"),
            (ADMIN, IMPORT, {}, 400, "ActionParameterMissing"),
        ]
        for auth, path, body, status, mid in cases:
            r = client(auth).post(k.url + path, json=body)
            assert r.status_code == status, (auth[0], path, body, r.status_code, r.text)
            assert mid in error_ids(r), (path, body, r.text)
        time.sleep(0.6)
        assert starts(k) == started, "keeld did not restart"
        assert state_files(k) == before
        assert observe(k) == {**POPULATED, "sessions": 2, "tasks": ["3"]}
    finally:
        k.stop()


# ------------------------------------------------------------------ backup


def export(k, auth=ADMIN, **body):
    r = client(auth).post(k.url + EXPORT, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    j = r.json()
    assert j["SchemaVersion"] == 1 and [m["MessageId"] for m in j["@Message.ExtendedInfo"]] == ["Base.1.22.Success"]
    return base64.b64decode(j["Configuration"])


def members(tar_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}, [m.name for m in t.getmembers()], t.getmembers()


def wait_restart(k, before, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if starts(k) > before:
            try:
                client().get(k.url + "/redfish/v1")
                return
            except requests.exceptions.ConnectionError:
                pass
        time.sleep(0.2)
    raise AssertionError("keeld did not restart: " + k.logs()[-2000:])


def test_export_then_import_restores_the_configuration(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        original = observe(k)
        tar = export(k)
        files, order, infos = members(tar)
        assert order[0] == "manifest.json"
        assert set(order) == {"manifest.json", "accounts.json", "sessions.json", "events.json", "update/settings.json", "network/eth0.json"}
        assert all(i.isreg() and i.mode == 0o600 for i in infos)
        manifest = json.loads(files["manifest.json"])
        assert (manifest["Format"], manifest["SchemaVersion"], manifest["IncludesRecoveryKeys"]) == ("keel-configuration", 1, False)
        for name, info in manifest["Files"].items():
            assert info == {"Size": len(files[name]), "SHA256": hashlib.sha256(files[name]).hexdigest()}
        assert "$argon2id$" in files["accounts.json"].decode()
        assert json.loads(files["sessions.json"])["sessions"] == [], "no session is exported"

        # Change everything the archive holds.
        s = client()
        ops = [a["@odata.id"] for a in (s.get(k.url + m["@odata.id"]).json() for m in s.get(k.url + ACCOUNTS).json()["Members"]) if a["UserName"] == "op"]
        assert s.delete(k.url + ops[0]).status_code in (200, 204)
        k.create_account("extra", "Other-Pass-99", "Administrator")
        for m in s.get(k.url + SUBS).json()["Members"]:
            assert s.delete(k.url + m["@odata.id"]).status_code in (200, 204)
        for path, body in [("/redfish/v1/AccountService", {"AccountLockoutThreshold": 3}), ("/redfish/v1/SessionService", {"SessionTimeout": 900}),
                           ("/redfish/v1/UpdateService", {"HttpPushUriOptions": {"HttpPushUriApplyTime": {"ApplyTime": "Immediate"}}})]:
            assert s.patch(k.url + path, json=body).status_code in (200, 204)
        (k.state_dir / "network/eth0.json").unlink()
        (k.state_dir / "network/eth1.json").write_text("{}")
        assert observe(k) != original

        before = starts(k)
        r = s.post(k.url + IMPORT, json={"Configuration": base64.b64encode(tar).decode()})
        assert r.status_code == 200, r.text
        wait_restart(k, before)
        assert observe(k) == {**original, "sessions": 0}
        assert client(OP).get(k.url + MGR).status_code == 200, "op's password hash is back"
        assert client(("extra", "Other-Pass-99")).get(k.url + MGR).status_code == 401
        assert not (k.state_dir / ".import").exists() and not (k.state_dir / ".import.tmp").exists()
        k.restart()
        assert observe(k) == {**original, "sessions": 0}
    finally:
        k.stop()


def tar_of(entries):
    """A tar of (TarInfo fields, data) pairs, written by Python's tarfile (USTAR)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for fields, data in entries:
            info = tarfile.TarInfo(fields.pop("name"))
            info.size = len(data or b"")
            for a, v in fields.items():
                setattr(info, a, v)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def rebuild(files, manifest_changes=None, order=None):
    """An archive of `files` with a manifest that matches them (then changed as asked)."""
    manifest = {"Format": "keel-configuration", "SchemaVersion": 1, "Created": "2026-01-01T00:00:00Z", "KeeldVersion": "0.1.0",
                "IncludesRecoveryKeys": "recovery-keys.json" in files,
                "Files": {n: {"Size": len(d), "SHA256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
    manifest.update(manifest_changes or {})
    entries = [({"name": "manifest.json"}, json.dumps(manifest).encode())] + [({"name": n}, d) for n, d in files.items()]
    return tar_of(entries)


def test_bad_archives_are_refused_and_change_nothing(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        good = export(k)
        files, _, _ = members(good)
        files.pop("manifest.json")
        # The test's own archives are accepted when nothing is wrong with them (keeld restarts).
        before = starts(k)
        r = client().post(k.url + IMPORT, json={"Configuration": base64.b64encode(rebuild(files)).decode()})
        assert r.status_code == 200, r.text
        wait_restart(k, before)
        before = state_files(k)
        started = starts(k)
        accounts = files["accounts.json"]
        no_admin = json.loads(accounts)
        for a in no_admin["accounts"]:
            a["role_id"] = "Operator" if a["role_id"] == "Administrator" else a["role_id"]
        cases = {
            "not base64": b"%%% not base64 %%%",
            "not a tar": b"\x89PNG" + b"\x01" * 3000,
            "truncated": good[:len(good) // 2],
            "truncated header": good[:300],
            "oversized": tar_of([({"name": "manifest.json"}, b"{}"), ({"name": "network/big.json"}, b" " * (600 << 10))]),
            "path traversal": rebuild({**files, "../x": b"{}"}),
            "absolute path": rebuild({**files, "/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}),
            "symlink member": tar_of([({"name": "manifest.json"}, b"{}"), ({"name": "accounts.json", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)]),
            "hard link member": tar_of([({"name": "manifest.json"}, b"{}"), ({"name": "accounts.json", "type": tarfile.LNKTYPE, "linkname": "manifest.json"}, None)]),
            "device member": tar_of([({"name": "manifest.json"}, b"{}"), ({"name": "events.json", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)]),
            "directory member": tar_of([({"name": "manifest.json"}, b"{}"), ({"name": "network", "type": tarfile.DIRTYPE}, None)]),
            "unknown member": rebuild({**files, "etc/shadow": b"{}"}),
            "newer schema": rebuild(files, {"SchemaVersion": 2}),
            "other format": rebuild(files, {"Format": "something-else"}),
            "manifest not first": tar_of([({"name": "accounts.json"}, accounts), ({"name": "manifest.json"}, b"{}")]),
            "altered member": rebuild(files, {"Files": {**{n: {"Size": len(d), "SHA256": hashlib.sha256(d).hexdigest()} for n, d in files.items()},
                                                       "accounts.json": {"Size": len(accounts), "SHA256": "0" * 64}}}),
            "member missing": rebuild({n: d for n, d in files.items() if n != "events.json"},
                                      {"Files": {n: {"Size": len(d), "SHA256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}),
            "bad JSON": rebuild({**files, "events.json": b"{not json"}),
            "wrong shape": rebuild({**files, "events.json": b'{"next_id": "two", "subscriptions": {}}'}),
            "no administrator": rebuild({**files, "accounts.json": json.dumps(no_admin).encode()}),
            "trailing garbage": good + b"garbage",
        }
        for what, archive in cases.items():
            r = client().post(k.url + IMPORT, json={"Configuration": base64.b64encode(archive).decode() if what != "not base64" else archive.decode()})
            assert r.status_code == 400, (what, r.status_code, r.text)
            m = r.json()["error"]["@Message.ExtendedInfo"][0]
            assert m["MessageId"] in ("Base.1.22.ActionParameterValueError", "Base.1.22.ActionParameterValueFormatError"), (what, m)
            assert m["RelatedProperties"] == ["#/Configuration"], (what, m)
            assert "$argon2" not in r.text, what
        time.sleep(0.6)
        assert starts(k) == started
        assert state_files(k) == before
    finally:
        k.stop()


@needs_tools
def test_recovery_keys_are_exported_only_when_asked_and_restored_on_import(tmp_path, swtpm, tools):  # noqa: F811
    root = tmp_path / "root.img"
    luks_image(root, swtpm)
    k = start(tmp_path, "--tpm-tcti", swtpm, "--crypt-volume", f"root={root}")
    other = None
    try:
        s = k.admin()
        key = "Correct-Horse-Battery-Staple-1"
        crypt_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": [key]})
        without = export(k, IncludeRecoveryKeys=False)
        files, order, _ = members(without)
        assert "recovery-keys.json" not in order and key.encode() not in without
        assert json.loads(files["manifest.json"])["IncludesRecoveryKeys"] is False
        with_keys = export(k)
        files, order, _ = members(with_keys)
        assert json.loads(files["recovery-keys.json"]) == {"RecoveryKeys": [key]}
        assert json.loads(files["manifest.json"])["IncludesRecoveryKeys"] is True
        # An Operator may not take the password hashes and keys.
        k.create_account(*OP, role="Operator")
        assert client(OP).post(k.url + EXPORT, json={}).status_code == 403

        # The keys change; importing the archive puts the old one back on the volume.
        new = "Another-Battery-Horse-2"
        crypt_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": [new]})
        assert opens(root, new) and not opens(root, key)
        before = starts(k)
        r = s.post(k.url + IMPORT, json={"Configuration": base64.b64encode(with_keys).decode()})
        assert r.status_code == 200, r.text
        wait_restart(k, before)
        assert opens(root, key) and not opens(root, new)
        assert client(OP).get(k.url + MGR).status_code == 401, "op was created after the export"
        assert key not in k.logs() and new not in k.logs()

        # A machine where keeld manages no volume refuses the keys unless told to leave them out.
        other = start(tmp_path, name="other")
        snapshot = state_files(other)
        r = client().post(other.url + IMPORT, json={"Configuration": base64.b64encode(with_keys).decode()})
        assert r.status_code == 409 and error_ids(r) == ["ActionParameterValueConflict"], r.text
        assert state_files(other) == snapshot
        before = starts(other)
        r = client().post(other.url + IMPORT, json={"Configuration": base64.b64encode(with_keys).decode(), "ApplyRecoveryKeys": False})
        assert r.status_code == 200, r.text
        wait_restart(other, before)
        assert key not in other.logs()
    finally:
        k.stop()
        if other:
            other.stop()


# ------------------------------------------------------------------ validator


def test_service_validator_after_a_reset(tmp_path):
    k = start(tmp_path)
    try:
        populate(k)
        run(k, RTD, {"ResetType": "PreserveNetworkAndUsers"})
        logs = run_service_validator(k, tmp_path)
        assert "Managers/keel" in logs
    finally:
        k.stop()
