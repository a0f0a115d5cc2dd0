"""Disk encryption (backend `crypt`) against real LUKS2 image files made by `cryptsetup luksFormat`
and a real TPM (swtpm on loopback), changed by keeld through cryptsetup and systemd-cryptenroll.

keeld takes charge of a volume by having the TPM unlock it (`systemd-cryptenroll
--unlock-tpm2-device`, systemd 256+): these tests put systemd 257's tools from Debian 13 first on
keeld's PATH (scripts/trixie-tools.sh, which scripts/setup.sh runs). How this boot opened a volume
comes from systemd-cryptsetup's journal; keeld reads it through the host root, so a recorded host
root (`--host-root`) carries the journal lines systemd writes in each case.
"""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest
import requests

from conftest import ADMIN, ROOT, Keeld, run_service_validator
from test_events import SSEClient, is_event
from test_tpm import swtpm  # noqa: F401  (the fixture)

SYS = "/redfish/v1/Systems/system"
ACT = SYS + "/Actions/Oem/KeelComputerSystem."
VOLS = SYS + "/Storage/Image0/Volumes"
TASKS = "/redfish/v1/TaskService/Tasks"
DATA_DRIVE = {"Drive": {"@odata.id": "/redfish/v1/Chassis/chassis/Drives/data"}}
TOOLS = ROOT / ".cache" / "trixie-tools" / "bin"
INITIAL = "Initial-Passphrase-1!"

needs_tools = pytest.mark.skipif(not shutil.which("cryptsetup") or not shutil.which("swtpm"),
                                 reason="cryptsetup and swtpm are not installed (scripts/setup.sh)")


@pytest.fixture
def tools(monkeypatch):
    """systemd 257's systemd-cryptenroll first on PATH (keeld and the test's own checks use it)."""
    if not (TOOLS / "systemd-cryptenroll").exists():
        subprocess.run([str(ROOT / "scripts" / "trixie-tools.sh")], check=True)
    monkeypatch.setenv("PATH", f"{TOOLS}:{os.environ['PATH']}")
    return TOOLS


def sh(*args, input=None, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    return subprocess.run(list(args), input=input, env=e, capture_output=True, text=True, check=check)


def extend(tcti, pcr, what):
    sh("tpm2_pcrextend", "-T", tcti, f"{pcr}:sha256={hashlib.sha256(what).hexdigest()}")


def luks_image(path, tcti, pcrs="7"):
    """A LUKS2 image as an installer makes it: a passphrase slot, and a TPM2 slot bound to PCR 7."""
    with open(path, "wb") as f:
        f.truncate(32 << 20)
    sh("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
       "--pbkdf-force-iterations", "1000", "--key-file", "-", str(path), input=INITIAL)
    sh("systemd-cryptenroll", f"--tpm2-device={tcti}", f"--tpm2-pcrs={pcrs}", str(path), env={"PASSWORD": INITIAL})


def header(path):
    """The LUKS2 header area (the first 16 MiB): byte-identical means nothing was changed."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(16 << 20)).hexdigest()


def opens(path, key):
    return sh("cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(path), input=key, check=False).returncode == 0


def tpm_opens(path, tcti, tmp_path):
    """Whether the TPM unseals the volume's key now (on a copy: enrolling is the probe)."""
    probe = tmp_path / "probe.img"
    shutil.copyfile(path, probe)
    r = sh("systemd-cryptenroll", f"--unlock-tpm2-device={tcti}", "--password", str(probe), env={"NEWPASSWORD": "Probe-Passphrase-9!"}, check=False)
    probe.unlink()
    return r.returncode == 0


def command_key(program, args):
    """The file name `keeld host record` gives a command's output (host/mod.rs command_key)."""
    parts = [program, *args]
    return "__".join("".join(c if c.isalnum() and c.isascii() or c in "-_.=" else "+" for c in p) for p in parts) + ".json"


def record_journal(root, volume, messages):
    """A host root whose journal holds these systemd-cryptsetup@VOLUME lines for this boot."""
    unit = f"systemd-cryptsetup@{volume}.service"
    lines = "".join(json.dumps({"MESSAGE": m, "_SYSTEMD_UNIT": unit if not m.startswith("Finished") else "init.scope",
                                "UNIT": unit}) + "\n" for m in messages)
    d = root / ".keel-commands"
    d.mkdir(parents=True, exist_ok=True)
    (d / command_key("journalctl", ["-b", "-o", "json", "--no-pager", "-u", unit, "-q"])).write_text(
        json.dumps({"status": 0, "stdout": lines}))


START = "Starting systemd-cryptsetup@root.service - Cryptography Setup for root..."
DONE = "Finished systemd-cryptsetup@root.service - Cryptography Setup for root."
# systemd-cryptsetup's own words (systemd 257) when the TPM opens the volume, and when it cannot.
TPM_OPENED = [START, "Automatically discovered security TPM2 token unlocks volume.", DONE]
FELL_BACK = [START, "Automatically discovered security TPM2 token unlocks volume.",
             "Failed to unseal secret using TPM2: Operation not permitted",
             "No TPM2 metadata matching the current system state found in LUKS2 header, falling back to traditional unlocking.", DONE]


def volume(s, k, name):
    return s.get(k.url + f"{VOLS}/{name}").json()


def security(s, k):
    return s.get(k.url + SYS).json()["Oem"]["Keel"]["Security"]


def post(s, k, action, body):
    return s.post(k.url + ACT + action, json=body)


def task_ids(s, k):
    return [m["@odata.id"].rsplit("/", 1)[1] for m in s.get(k.url + TASKS).json()["Members"]]


def wait_task(s, k, monitor, timeout=120):
    """Poll a task monitor as DSP0266 says (sushy 5.14's TaskMonitor.wait crashes on a numeric
    Retry-After): 202 with Location and Retry-After while the task runs, then 200 with the Task."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = s.get(k.url + monitor)
        if r.status_code != 202:
            assert r.status_code == 200, (r.status_code, r.text)
            return r.json()
        assert r.json()["TaskState"] == "Running", r.text
        assert r.headers["Location"] == monitor and int(r.headers["Retry-After"]) >= 1, r.headers
        time.sleep(0.2)
    raise AssertionError(f"task {monitor} did not end: " + k.logs()[-3000:])


def start_task(s, k, action, body):
    """POST an action that runs as a task: 202 with the Running Task, its monitor in Location."""
    r = post(s, k, action, body)
    assert r.status_code == 202, r.text
    t = r.json()
    assert (t["TaskState"], t["Name"], t["HidePayload"]) == ("Running", "KeelComputerSystem." + action, False), t
    assert r.headers["Location"] == t["TaskMonitor"] and r.headers["Retry-After"] == "1", r.headers
    assert t["Payload"]["TargetUri"] == ACT + action
    return t


def run_task(s, k, action, body, last="Base.1.22.Success"):
    """Run an action as a task to its end: the final Task, Completed."""
    t = start_task(s, k, action, body)
    done = wait_task(s, k, t["TaskMonitor"])
    assert (done["Id"], done["TaskState"], done["TaskStatus"], done["PercentComplete"]) == (t["Id"], "Completed", "OK", 100), done
    assert [m["MessageId"] for m in done["Messages"]] == ["TaskEvent.1.0.TaskStarted", last, "TaskEvent.1.0.TaskCompletedOK"], done
    return done


def failed_task(s, k, action, body):
    """Run an action as a task that fails in its work: the final Task, Exception."""
    t = start_task(s, k, action, body)
    done = wait_task(s, k, t["TaskMonitor"])
    assert (done["TaskState"], done["TaskStatus"]) == ("Exception", "Critical"), done
    assert [m["MessageId"] for m in done["Messages"]] == ["TaskEvent.1.0.TaskStarted", "Base.1.22.GeneralError", "TaskEvent.1.0.TaskAborted"], done
    return done


def start(tmp_path, tcti, *volumes, host_root=None):
    args = ["--tpm-tcti", tcti] + [a for name, path in volumes for a in ("--crypt-volume", f"{name}={path}")]
    if host_root:
        args += ["--host-root", str(host_root)]
    return Keeld(tmp_path / "crypt-state", args).start()


@needs_tools
def test_discovery_keys_generate_confirm_and_refusals(tmp_path, swtpm, tools):  # noqa: F811
    k, root, data = root_and_blank_drive(tmp_path, swtpm)
    try:
        s = k.admin()
        # Discovery: keeld took charge of the volume (the TPM unlocked it) and shows its slots by kind.
        v = volume(s, k, "root")
        assert v["Encrypted"] is True and v["EncryptionTypes"] == ["SoftwareAssisted"]
        oem = v["Oem"]["Keel"]
        assert oem["@odata.type"] == "#KeelVolume.v1_0_0.Volume"
        assert oem["ManagedByKeel"] is True and oem["Simulated"] is True and oem["UnlockedBy"] == "Unknown"
        slots = {x["Slot"]: x for x in oem["KeySlots"]}
        assert [(x["Slot"], x["Kind"], x["KeelServiceKey"]) for x in oem["KeySlots"]] == [
            (0, "Password", False), (1, "TPM2", False), (2, "RecoveryKey", True)]
        assert slots[1]["TPM2"] == {"PCRs": [7], "PCRBank": "sha256", "SignedPolicyPCRs": [], "PINRequired": False, "PCRLockPolicy": False}
        assert [m["@odata.id"] for m in s.get(k.url + VOLS).json()["Members"]] == [f"{VOLS}/root"]
        assert s.get(k.url + "/redfish/v1/Chassis/chassis/Drives/data").json()["CapacityBytes"] == 32 << 20
        sec = security(s, k)
        assert sec == {"SecureBoot": sec["SecureBoot"], "TPMPresent": True, "BootUnlockedBy": "Unknown", "EncryptionManaged": True,
                       "RecoveryKeyCount": 0, "RecoveryKeyRetrieved": False, "RecoveryKeyStorageConfirmed": False}
        actions = s.get(k.url + SYS).json()["Actions"]["Oem"]
        assert sorted(actions) == sorted(f"#KeelComputerSystem.{a}" for a in
                                         ("SetRecoveryKeys", "GenerateRecoveryKey", "ConfirmRecoveryKeyStored", "RebindTPM", "EncryptDataDrive"))
        assert all(a["target"] == ACT + n.split(".")[1] for n, a in actions.items())

        before = header(root)
        # Refusals change nothing: weak keys (each rule), none, a missing parameter, a key repeated.
        for bad, why in [(["Short-1!"], "15"), (["NoSpecialCharacters123"], "special"), (["abcdefgh-Zqx!-Wvu"], "consecutive"),
                         (["Schlüssel-für-alles"], "ASCII"), (["Correct-Horse-Battery", "Correct-Horse-Battery"], "repeats"), ([], "At least one")]:
            r = post(s, k, "SetRecoveryKeys", {"RecoveryKeys": bad})
            assert r.status_code == 400, r.text
            m = r.json()["error"]["@Message.ExtendedInfo"][0]
            assert m["MessageId"] == "Base.1.22.ActionParameterValueError" and why in m["Resolution"], m
            assert not any(b in r.text for b in bad)
        r = post(s, k, "SetRecoveryKeys", {})
        assert r.status_code == 400 and r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.22.ActionParameterMissing"
        r = post(s, k, "SetRecoveryKeys", {"RecoveryKeys": ["Correct-Horse-Battery", 5]})
        assert r.status_code == 400 and "Correct-Horse" not in r.text
        r = post(s, k, "ConfirmRecoveryKeyStored", {})
        assert r.status_code == 409 and "no recovery key" in r.json()["error"]["@Message.ExtendedInfo"][0]["Resolution"]
        # A ReadOnly account may not; an Operator (ConfigureComponents) may.
        k.create_account("reader", "Quiet-Lamp-42", "ReadOnly")
        ro = k.client("reader", "Quiet-Lamp-42")
        for action, body in [("SetRecoveryKeys", {"RecoveryKeys": ["Correct-Horse-Battery"]}), ("GenerateRecoveryKey", {}), ("RebindTPM", {}),
                             ("ConfirmRecoveryKeyStored", {}), ("EncryptDataDrive", {"Drive": {"@odata.id": "/redfish/v1/Chassis/chassis/Drives/data"}})]:
            r = post(ro, k, action, body)
            assert r.status_code == 403 and r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.22.InsufficientPrivilege", action
        assert header(root) == before and header(data) == hashlib.sha256(b"\0" * (16 << 20)).hexdigest()
        assert opens(root, INITIAL)
        assert task_ids(s, k) == [], "a refusal starts no task"

        # Every event from here on, as an SSE client sees them (task events included).
        sse = SSEClient(k)
        # Set, as a task: exactly these keys open the volume afterwards; the installer's passphrase is gone.
        keys = ["Correct-Horse-Battery", "Another: key, 42 chars?"]
        done = run_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": keys})
        # The Task shows the request without the keys.
        assert done["Payload"]["JsonBody"] == '{"RecoveryKeys":null}'
        sse.next(is_event("TaskEvent.1.0.TaskCompletedOK", f"{TASKS}/{done['Id']}"), what="the SetRecoveryKeys task's end")
        assert all(opens(root, x) for x in keys) and not opens(root, INITIAL)
        kinds = [(x["Kind"], x["KeelServiceKey"]) for x in volume(s, k, "root")["Oem"]["Keel"]["KeySlots"]]
        assert sorted(kinds) == sorted([("TPM2", False), ("RecoveryKey", True), ("Password", False), ("Password", False)])
        sec = security(s, k)
        assert (sec["RecoveryKeyCount"], sec["RecoveryKeyRetrieved"], sec["RecoveryKeyStorageConfirmed"]) == (2, True, False)

        # Generate: synchronous (no task may hold the key), returned once, in systemd's format, and it opens the volume.
        tasks_before = task_ids(s, k)
        r = post(s, k, "GenerateRecoveryKey", {})
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        gen = r.json()["RecoveryKey"]
        assert len(gen) == 71 and gen.count("-") == 7
        assert opens(root, gen) and all(opens(root, x) for x in keys)
        assert security(s, k)["RecoveryKeyCount"] == 3
        # Confirm, by an Operator.
        k.create_account("operator", "Busy-Hands-42", "Operator")
        r = post(k.client("operator", "Busy-Hands-42"), k, "ConfirmRecoveryKeyStored", {})
        assert r.status_code == 200, r.text
        assert security(s, k)["RecoveryKeyStorageConfirmed"] is True
        assert task_ids(s, k) == tasks_before, "GenerateRecoveryKey and ConfirmRecoveryKeyStored are not tasks"

        # A data drive, as a task: encrypted with a TPM2 slot and every recovery key; the task
        # names the new Volume.
        done = run_task(s, k, "EncryptDataDrive", DATA_DRIVE, last="Base.1.22.Created")
        assert done["Links"] == {"CreatedResources": [{"@odata.id": f"{VOLS}/data"}], "CreatedResources@odata.count": 1}
        assert f"{VOLS}/data" in done["Messages"][1]["Resolution"]
        assert json.loads(done["Payload"]["JsonBody"]) == DATA_DRIVE
        assert [m["@odata.id"] for m in s.get(k.url + VOLS).json()["Members"]] == [f"{VOLS}/root", f"{VOLS}/data"]
        d = volume(s, k, "data")["Oem"]["Keel"]
        assert d["ManagedByKeel"] is True
        assert sorted(x["Kind"] for x in d["KeySlots"]) == ["Password", "Password", "Password", "RecoveryKey", "TPM2"]
        assert [x["TPM2"]["PCRs"] for x in d["KeySlots"] if x["Kind"] == "TPM2"] == [[7]]
        assert all(opens(data, x) for x in keys + [gen])
        assert tpm_opens(data, swtpm, tmp_path)
        # Refused at once, no task started: encrypted already; no such drive; not a drive. Nothing changes.
        before_data, tasks_before = header(data), task_ids(s, k)
        r = post(s, k, "EncryptDataDrive", DATA_DRIVE)
        assert r.status_code == 409 and r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.22.ResourceInUse"
        assert header(data) == before_data
        r = post(s, k, "EncryptDataDrive", {"Drive": {"@odata.id": "/redfish/v1/Chassis/chassis/Drives/nope"}})
        assert r.status_code == 400, r.text
        r = post(s, k, "EncryptDataDrive", {"Drive": {"@odata.id": "/redfish/v1/Systems/system"}})
        assert r.status_code == 400, r.text
        assert task_ids(s, k) == tasks_before

        # Generate, replacing the others: only the new key (and keeld's own) remain.
        r = post(s, k, "GenerateRecoveryKey", {"ReplaceExisting": True})
        assert r.status_code == 200, r.text
        gen2 = r.json()["RecoveryKey"]
        for path in (root, data):
            assert opens(path, gen2) and not opens(path, gen) and not any(opens(path, x) for x in keys)
        # keeld's own key stays: a recovery key slot on root, a passphrase slot on the data drive.
        assert sorted(x["Kind"] for x in volume(s, k, "root")["Oem"]["Keel"]["KeySlots"]) == ["RecoveryKey", "RecoveryKey", "TPM2"]
        assert sorted(x["Kind"] for x in volume(s, k, "data")["Oem"]["Keel"]["KeySlots"]) == ["Password", "RecoveryKey", "TPM2"]
        sec = security(s, k)
        assert (sec["RecoveryKeyCount"], sec["RecoveryKeyStorageConfirmed"]) == (1, False)

        # No secret in any GET, in any task or task monitor (as a ReadOnly user reads them), in
        # any event an SSE client got, in keeld's log, or in keeld's state outside crypt/.
        seen = "".join(s.get(k.url + p).text for p in (SYS, f"{VOLS}/root", f"{VOLS}/data", VOLS, SYS + "/Storage/Image0"))
        seen += s.get(k.url + SYS + "?$expand=.($levels=3)").text
        walked = task_ids(ro, k)
        assert len(walked) == 2
        for tid in walked:
            t = ro.get(k.url + f"{TASKS}/{tid}")
            assert t.status_code == 200 and t.json()["TaskState"] == "Completed", t.text
            m = ro.get(k.url + t.json()["TaskMonitor"])
            assert m.status_code == 200, m.text
            seen += t.text + m.text
        seen += ro.get(k.url + "/redfish/v1/TaskService/Tasks?$expand=.").text
        sse.drain(0.5)
        events = "".join(e["raw"] for e in sse.seen)
        sse.close()
        assert "TaskEvent.1.0.TaskStarted" in events and "Base.1.22.Created" in events, events[:2000]
        seen += events
        state_dir = tmp_path / "crypt-state"
        stored = b"".join(p.read_bytes() for p in state_dir.rglob("*") if p.is_file() and p.relative_to(state_dir).parts[0] != "crypt")
        log = k.logs()
        for secret in keys + [gen, gen2, INITIAL]:
            assert secret not in seen and secret not in log, secret
            assert secret.encode() not in stored, secret
        state = (tmp_path / "crypt-state" / "crypt")
        assert oct(state.stat().st_mode & 0o777) == "0o700"
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in state.iterdir())

        # Everything survives a restart.
        k.restart()
        s = k.admin()
        assert security(s, k)["RecoveryKeyCount"] == 1
        assert volume(s, k, "root")["Oem"]["Keel"]["ManagedByKeel"] is True
    finally:
        k.stop()


@needs_tools
def test_rebind_only_after_a_boot_that_needed_a_recovery_key(tmp_path, swtpm, tools):  # noqa: F811
    extend(swtpm, 7, b"firmware")
    root = tmp_path / "root.img"
    luks_image(root, swtpm)
    host = tmp_path / "host"
    # This boot: systemd-cryptsetup opened root with the TPM.
    record_journal(host, "root", TPM_OPENED)
    k = start(tmp_path, swtpm, ("root", root), host_root=host)
    try:
        s = k.admin()
        assert volume(s, k, "root")["Oem"]["Keel"]["UnlockedBy"] == "TPM"
        assert security(s, k)["BootUnlockedBy"] == "TPM"
        before = header(root)
        r = post(s, k, "RebindTPM", {})
        assert r.status_code == 409, r.text
        assert "TPM unlocked every encrypted volume" in r.json()["error"]["@Message.ExtendedInfo"][0]["Resolution"]
        assert header(root) == before
        assert task_ids(s, k) == [], "refused at once, without a task"

        # The boot chain changes (PCR 7): the TPM no longer opens the volume, and the next boot
        # needed the recovery key.
        extend(swtpm, 7, b"a new bootloader")
        assert not tpm_opens(root, swtpm, tmp_path)
        record_journal(host, "root", FELL_BACK)
        k.restart()
        s = k.admin()
        assert volume(s, k, "root")["Oem"]["Keel"]["UnlockedBy"] == "RecoveryKey"
        assert security(s, k)["BootUnlockedBy"] == "RecoveryKey"
        old_tpm = [x["Slot"] for x in volume(s, k, "root")["Oem"]["Keel"]["KeySlots"] if x["Kind"] == "TPM2"]
        done = run_task(s, k, "RebindTPM", {})
        assert done["Payload"]["JsonBody"] == "{}"
        # Bound again to PCR 7 as it is now: the TPM opens the volume again.
        assert tpm_opens(root, swtpm, tmp_path)
        slots = volume(s, k, "root")["Oem"]["Keel"]["KeySlots"]
        assert [x["TPM2"]["PCRs"] for x in slots if x["Kind"] == "TPM2"] == [[7]]
        assert len(old_tpm) == 1 and opens(root, INITIAL)

        # Without any record of this boot (no journal), keeld does not trust the PCRs either.
        (host / ".keel-commands").rename(tmp_path / "gone")
        k.restart()
        s = k.admin()
        before = header(root)
        tasks_before = task_ids(s, k)
        r = post(s, k, "RebindTPM", {})
        assert r.status_code == 409 and "no record" in r.json()["error"]["@Message.ExtendedInfo"][0]["Resolution"]
        assert header(root) == before
        assert task_ids(s, k) == tasks_before
    finally:
        k.stop()


@needs_tools
def test_no_tpm_unlock_no_charge_and_no_actions_without_volumes(tmp_path, swtpm, tools, keeld):  # noqa: F811
    # A volume the TPM cannot open (PCR 7 changed since enrollment): keeld shows it but holds no
    # key for it, and every change is refused with nothing changed.
    root = tmp_path / "root.img"
    luks_image(root, swtpm)
    extend(swtpm, 7, b"something else")
    k = start(tmp_path, swtpm, ("root", root))
    try:
        s = k.admin()
        assert volume(s, k, "root")["Oem"]["Keel"]["ManagedByKeel"] is False
        assert security(s, k)["EncryptionManaged"] is False
        before = header(root)
        for action, body in [("SetRecoveryKeys", {"RecoveryKeys": ["Correct-Horse-Battery"]}), ("GenerateRecoveryKey", {}), ("RebindTPM", {})]:
            r = post(s, k, action, body)
            assert r.status_code == 409, r.text
        assert header(root) == before
        assert task_ids(s, k) == []
    finally:
        k.stop()
    # A keeld with no volume to manage offers no encryption actions.
    s = keeld.admin()
    sysres = s.get(keeld.url + SYS).json()
    assert "Oem" not in sysres.get("Actions", {})
    assert sysres["Oem"]["Keel"]["Security"]["BootUnlockedBy"] == "Unknown"
    assert "RecoveryKeyCount" not in sysres["Oem"]["Keel"]["Security"]
    assert s.post(keeld.url + ACT + "GenerateRecoveryKey", json={}).status_code == 404


@needs_tools
def test_one_encryption_change_at_a_time(tmp_path, swtpm, tools):  # noqa: F811
    k, root, data = root_and_blank_drive(tmp_path, swtpm)
    try:
        s = k.admin()
        # Three keys: three slow enrollments (systemd's key derivation for typed passphrases).
        keys = ["Correct-Horse-Battery", "Another: key, 42 chars?", "Third-Key-For-Slowness!"]
        first = start_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": keys})
        # While it runs, every other encryption action is refused at once, and so is a factory reset.
        for action, body in [("SetRecoveryKeys", {"RecoveryKeys": ["Other-Horse-Battery"]}), ("RebindTPM", {}), ("EncryptDataDrive", DATA_DRIVE),
                             ("GenerateRecoveryKey", {}), ("ConfirmRecoveryKeyStored", {})]:
            r = post(s, k, action, body)
            assert r.status_code == 409, (action, r.text)
            m = r.json()["error"]["@Message.ExtendedInfo"][0]
            assert m["MessageId"] == "Base.1.22.ResourceInUse", m
            assert f"KeelComputerSystem.SetRecoveryKeys (task {first['Id']})" in m["Resolution"], m
        r = s.post(k.url + "/redfish/v1/Managers/keel/Actions/Manager.ResetToDefaults", json={"ResetType": "ResetAll"})
        assert r.status_code == 409 and r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.22.ResourceInUse", r.text
        # The first was still at work when they were refused, and it is the only task.
        assert s.get(k.url + first["TaskMonitor"]).status_code == 202, "the refusals came after the first task ended: not a test"
        assert task_ids(s, k) == [first["Id"]]
        done = wait_task(s, k, first["TaskMonitor"])
        assert done["TaskState"] == "Completed", done
        # A refused key was never enrolled; the drive is still blank.
        assert all(opens(root, x) for x in keys) and not opens(root, "Other-Horse-Battery")
        assert header(data) == hashlib.sha256(b"\0" * (16 << 20)).hexdigest()
        # Progress rose on the way (the task's events say by how much).
        with SSEClient(k, headers={"Last-Event-ID": "0"}) as sse:
            ev = sse.next(is_event("TaskEvent.1.0.TaskProgressChanged", f"{TASKS}/{first['Id']}"), what="a progress event")
            assert 0 < int(ev["data"]["Events"][0]["MessageArgs"][1]) < 100
        # Once it is over, the next change runs.
        run_task(s, k, "EncryptDataDrive", DATA_DRIVE, last="Base.1.22.Created")
        assert volume(s, k, "data")["Oem"]["Keel"]["ManagedByKeel"] is True
    finally:
        k.stop()


def keyslot_area(path, slot):
    """(offset, size) of a key slot's encrypted key material, from the LUKS2 metadata."""
    meta = json.loads(sh("cryptsetup", "luksDump", "--dump-json-metadata", str(path)).stdout)
    area = meta["keyslots"][str(slot)]["area"]
    return int(area["offset"]), int(area["size"])


@needs_tools
def test_a_failure_in_the_work_ends_the_task_as_exception_with_nothing_changed(tmp_path, swtpm, tools):  # noqa: F811
    extend(swtpm, 7, b"firmware")
    root, swap, data = tmp_path / "root.img", tmp_path / "swap.img", tmp_path / "data.img"
    luks_image(root, swtpm)
    luks_image(swap, swtpm)
    with open(data, "wb") as f:
        f.truncate(32 << 20)
    k = start(tmp_path, swtpm, ("root", root), ("swap", swap), ("data", data))
    try:
        s = k.admin()
        assert volume(s, k, "swap")["Oem"]["Keel"]["ManagedByKeel"] is True
        # The key material of keeld's own slot on swap gets corrupted (its header still reads
        # well, so nothing up front can tell): cryptsetup can no longer open swap with it.
        service = [x["Slot"] for x in volume(s, k, "swap")["Oem"]["Keel"]["KeySlots"] if x["KeelServiceKey"]]
        offset, size = keyslot_area(swap, service[0])
        with open(swap, "r+b") as f:
            f.seek(offset)
            f.write(os.urandom(size))
        before = {p: header(p) for p in (root, swap)}
        key = "Correct-Horse-Battery"
        # root comes first: its keys were replaced, then put back when swap failed.
        done = failed_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": [key]})
        why = done["Messages"][1]["Resolution"]
        assert "cryptsetup luksAddKey" in why and "nothing was changed" in why, why
        assert "restored" in k.logs()
        assert {p: header(p) for p in (root, swap)} == before
        assert opens(root, INITIAL) and not opens(root, key) and not opens(swap, key)
        assert security(s, k)["RecoveryKeyCount"] == 0
        mon = s.get(k.url + done["TaskMonitor"])
        assert mon.status_code == 200 and mon.json()["TaskState"] == "Exception"
        assert key not in json.dumps(done) and key not in mon.text and key not in k.logs()
    finally:
        k.stop()



def root_and_blank_drive(tmp_path, swtpm):
    """keeld with a TPM-bound LUKS2 root image and a blank 32 MiB data drive (PCR 7 extended)."""
    extend(swtpm, 7, b"firmware")
    root, data = tmp_path / "root.img", tmp_path / "data.img"
    luks_image(root, swtpm)
    with open(data, "wb") as f:
        f.truncate(32 << 20)
    return start(tmp_path, swtpm, ("root", root), ("data", data)), root, data

@needs_tools
def test_encrypting_a_drive_fails_in_its_task_when_the_tpm_is_gone(tmp_path, swtpm, tools):  # noqa: F811
    k, root, data = root_and_blank_drive(tmp_path, swtpm)
    try:
        s = k.admin()
        key = "Correct-Horse-Battery"
        run_task(s, k, "SetRecoveryKeys", {"RecoveryKeys": [key]})
        crypt_dir = tmp_path / "crypt-state" / "crypt"
        kept = sorted(p.name for p in crypt_dir.iterdir())
        state = (crypt_dir / "state.json").read_bytes()
        # The TPM goes away (swtpm told to shut down through its control channel): the drive is
        # formatted, then binding it to the TPM fails.
        port = int(swtpm.rsplit("port=", 1)[1])
        sh("swtpm_ioctl", "--tcp", f"127.0.0.1:{port + 1}", "-s")
        done = failed_task(s, k, "EncryptDataDrive", DATA_DRIVE)
        why = done["Messages"][1]["Resolution"]
        assert "systemd-cryptenroll" in why and "left blank" in why, why
        assert "Links" not in done
        # The drive is blank again (no signature for cryptsetup or blkid), no Volume appeared, and
        # keeld keeps no key or record for it.
        assert sh("cryptsetup", "isLuks", str(data), check=False).returncode != 0
        assert sh("blkid", "-p", str(data), check=False).returncode != 0
        assert [m["@odata.id"] for m in s.get(k.url + VOLS).json()["Members"]] == [f"{VOLS}/root"]
        assert sorted(p.name for p in crypt_dir.iterdir()) == kept
        assert (crypt_dir / "state.json").read_bytes() == state
        assert key not in json.dumps(done) and key not in k.logs()
    finally:
        k.stop()


@needs_tools
def test_service_validator_with_encrypted_volumes(tmp_path, swtpm, tools):  # noqa: F811
    k, root, data = root_and_blank_drive(tmp_path, swtpm)
    try:
        logs = run_service_validator(k, tmp_path)
        assert f"{VOLS}/root" in logs
    finally:
        k.stop()
