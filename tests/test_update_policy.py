"""The update policy (Keel OEM on the UpdateService): a signed index checked on demand or every
CheckIntervalSeconds stages the newest version of the channel; Rollback makes the other slot boot next."""
import hashlib
import http.server
import json
import subprocess
import threading
import time

import pytest

from conftest import KEELD, run_service_validator

US = "/redfish/v1/UpdateService"
CHECK = US + "/Actions/Oem/KeelUpdateService.CheckForUpdates"
ROLLBACK = US + "/Actions/Oem/KeelUpdateService.Rollback"
RESET = "/redfish/v1/Systems/system/Actions/ComputerSystem.Reset"


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca", "other-ca"):
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}.key", "-out", d / f"{name}.pem",
           "-days", "2", "-subj", f"/CN=Keel test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign")
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}-signer.key", "-out", d / f"{name}-signer.csr",
           "-subj", f"/CN=Keel test signer of {name}")
        sh("openssl", "x509", "-req", "-in", d / f"{name}-signer.csr", "-CA", d / f"{name}.pem", "-CAkey", d / f"{name}.key",
           "-CAcreateserial", "-out", d / f"{name}-signer.pem", "-days", "2")
    return d


def make_bundle(pki, out, version):
    """A bundle for the simulated platform: random usr/verity/signature and a simulated UKI naming the usr."""
    d = out.parent
    usr = d / f"usr-{version}"
    usr.write_bytes(hashlib.sha256(version.encode()).digest() * 40000)
    (d / "verity").write_bytes(b"v" * 4096)
    (d / "sig").write_text(json.dumps({"rootHash": hashlib.sha256(usr.read_bytes()).hexdigest(), "signature": "test"}))
    (d / f"uki-{version}").write_text(f"KEEL-SIM-UKI 1\nversion={version}\nusrhash={hashlib.sha256(usr.read_bytes()).hexdigest()}\n"
                                      f"usrsize={usr.stat().st_size}\n")
    sh(KEELD, "bundle", "create", "--version", version, "--usr", usr, "--usr-verity", d / "verity", "--usr-verity-sig", d / "sig",
       "--uki", d / f"uki-{version}", "--key", pki / "ca-signer.key", "--cert", pki / "ca-signer.pem", "-o", out)


def sign_index(pki, index, signer="ca"):
    sh("openssl", "cms", "-sign", "-binary", "-in", index, "-signer", pki / f"{signer}-signer.pem",
       "-inkey", pki / f"{signer}-signer.key", "-outform", "DER", "-out", f"{index}.sig")


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **kw)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def wait_task(k, s, location, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = s.get(k.url + location.replace("TaskMonitors", "Tasks")).json()
        if t["TaskState"] in ("Completed", "Exception", "Killed", "Cancelled"):
            return t
        time.sleep(0.2)
    raise AssertionError(f"task {location} did not end")


def slot(k, s, sid):
    return s.get(k.url + f"{US}/SoftwareInventory/Slot_{sid}").json()


def test_a_signed_index_stages_the_newest_version_of_the_channel(keeld_factory, tmp_path, pki, server):
    www, base = server
    make_bundle(pki, www / "keel_0.2.0.keel", "0.2.0")
    make_bundle(pki, www / "keel_0.3.0.keel", "0.3.0")
    (www / "index.json").write_text(json.dumps({"Updates": [
        {"Version": "0.2.0", "Channel": "stable", "Architecture": "x86-64", "URI": "keel_0.2.0.keel"},
        {"Version": "0.3.0", "Channel": "testing", "Architecture": "x86-64", "URI": "/keel_0.3.0.keel"},
        {"Version": "9.9.9", "Channel": "stable", "Architecture": "arm64", "URI": "elsewhere.keel"}]}))
    sign_index(pki, www / "index.json")
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    oem = s.get(k.url + US).json()["Oem"]["Keel"]
    assert (oem["Channel"], oem["CheckIntervalSeconds"], oem["IndexURI"]) == ("stable", 21600, None)
    assert s.post(k.url + CHECK, json={}).status_code == 409, "no index to check"
    r = s.patch(k.url + US, json={"Oem": {"Keel": {"IndexURI": base + "/index.json", "CheckIntervalSeconds": 0}}})
    assert r.status_code == 200, r.text
    r = s.post(k.url + CHECK, json={})
    assert r.status_code == 202, r.text
    t = wait_task(k, s, r.headers["Location"])
    assert t["TaskState"] == "Completed", t
    assert "Update.1.3.AwaitToActivate" in [m["MessageId"] for m in t["Messages"]]
    b = slot(k, s, "B")
    assert (b["Version"], b["Staged"], slot(k, s, "A")["Active"]) == ("0.2.0", True, True), "stable 0.2.0 staged, 0.1.0 runs"
    oem = s.get(k.url + US).json()["Oem"]["Keel"]
    assert oem["AvailableVersion"] == "0.2.0" and oem["LastCheckResult"] == "staging version 0.2.0" and oem["LastCheckTime"]
    # Staged means staged: a reset keeps 0.1.0 until StartUpdate.
    assert s.post(k.url + RESET, json={"ResetType": "GracefulRestart"}).status_code == 200
    assert slot(k, s, "A")["Active"] is True
    assert s.post(k.url + US + "/Actions/UpdateService.StartUpdate", json={}).status_code == 200
    assert slot(k, s, "B")["Active"] is True and slot(k, s, "B")["Version"] == "0.2.0"
    # Nothing newer in stable now; the testing channel has 0.3.0 (its URI absolute on the server).
    r = s.post(k.url + CHECK, json={})
    t = wait_task(k, s, r.headers["Location"])
    assert t["TaskState"] == "Completed" and t["Messages"][-2]["MessageId"] == "Update.1.3.NoTargetsDetermined"
    assert s.get(k.url + US).json()["Oem"]["Keel"]["LastCheckResult"].startswith("up to date")
    assert s.patch(k.url + US, json={"Oem": {"Keel": {"Channel": "testing"}}}).status_code == 200
    t = wait_task(k, s, s.post(k.url + CHECK, json={}).headers["Location"])
    assert t["TaskState"] == "Completed", t
    assert slot(k, s, "A")["Version"] == "0.3.0", "the inactive slot (A) now holds 0.3.0"
    # Refusals change nothing: an unknown channel, a negative interval, a relative index URI.
    before = s.get(k.url + US).json()["Oem"]["Keel"]
    for bad in ({"Channel": "nightly"}, {"CheckIntervalSeconds": -1}, {"IndexURI": "index.json"}):
        assert s.patch(k.url + US, json={"Oem": {"Keel": bad}}).status_code == 400, bad
    assert s.get(k.url + US).json()["Oem"]["Keel"] == before
    ro = k.create_account("watcher", "Watch-Only-Pass1", "ReadOnly")
    assert k.client("watcher", "Watch-Only-Pass1").post(k.url + CHECK, json={}).status_code == 403


def test_an_index_signed_by_another_ca_is_refused_and_nothing_is_written(keeld_factory, tmp_path, pki, server):
    www, base = server
    make_bundle(pki, www / "keel_0.2.0.keel", "0.2.0")
    (www / "index.json").write_text(json.dumps({"Updates": [
        {"Version": "0.2.0", "Channel": "stable", "Architecture": "x86-64", "URI": "keel_0.2.0.keel"}]}))
    sign_index(pki, www / "index.json", signer="other-ca")
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    s.patch(k.url + US, json={"Oem": {"Keel": {"IndexURI": base + "/index.json", "CheckIntervalSeconds": 0}}})
    t = wait_task(k, s, s.post(k.url + CHECK, json={}).headers["Location"])
    assert t["TaskState"] == "Exception"
    assert "does not chain to the update CA" in t["Messages"][-2]["Resolution"]
    assert "refused" in s.get(k.url + US).json()["Oem"]["Keel"]["LastCheckResult"]
    assert slot(k, s, "B")["Status"]["State"] == "Absent", "slot B still empty"
    # A tampered index (valid signature of other bytes) is refused the same way.
    sign_index(pki, www / "index.json")
    (www / "index.json").write_text((www / "index.json").read_text().replace("0.2.0\", \"Channel", "0.2.1\", \"Channel"))
    t = wait_task(k, s, s.post(k.url + CHECK, json={}).headers["Location"])
    assert t["TaskState"] == "Exception" and "does not verify" in t["Messages"][-2]["Resolution"]
    assert slot(k, s, "B")["Status"]["State"] == "Absent"


def test_the_periodic_check_stages_by_itself(keeld_factory, tmp_path, pki, server):
    www, base = server
    make_bundle(pki, www / "keel_0.2.0.keel", "0.2.0")
    (www / "index.json").write_text(json.dumps({"Updates": [
        {"Version": "0.2.0", "Channel": "stable", "Architecture": "x86-64", "URI": "keel_0.2.0.keel"}]}))
    sign_index(pki, www / "index.json")
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    s.patch(k.url + US, json={"Oem": {"Keel": {"IndexURI": base + "/index.json", "CheckIntervalSeconds": 3600}}})
    deadline = time.time() + 20
    while time.time() < deadline and slot(k, s, "B").get("Version") != "0.2.0":
        time.sleep(0.5)
    assert slot(k, s, "B")["Version"] == "0.2.0" and slot(k, s, "B")["Staged"] is True
    tasks = [s.get(k.url + m["@odata.id"]).json() for m in s.get(k.url + "/redfish/v1/TaskService/Tasks").json()["Members"]]
    assert [t["Name"] for t in tasks] == ["Check for updates"] and tasks[0]["TaskState"] == "Completed"


def test_rollback_makes_the_other_slot_boot_next(keeld_factory, tmp_path, pki):
    make_bundle(pki, tmp_path / "b.keel", "0.2.0")
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    assert s.post(k.url + ROLLBACK, json={}).status_code == 409, "slot B is empty: nothing to roll back to"
    with open(tmp_path / "b.keel", "rb") as f:
        r = s.post(k.url + US + "/upload", files={"UpdateParameters": (None, json.dumps({"@Redfish.OperationApplyTime": "OnReset"}), "application/json"),
                                                 "UpdateFile": ("b.keel", f, "application/octet-stream")})
    assert r.status_code == 202, r.text
    assert wait_task(k, s, r.headers["Location"])["TaskState"] == "Completed"
    boot = s.get(k.url + "/redfish/v1/Systems/system").json()["Boot"]
    assert boot["BootOrder"] == ["keel_0.2.0", "keel_0.1.0"], "the new entry (3 tries) boots next"
    opt = s.get(k.url + "/redfish/v1/Systems/system/BootOptions/keel_0.2.0").json()
    assert opt["BootOptionEnabled"] is True and "3 tries left" in opt["DisplayName"] and "boots next" in opt["DisplayName"]
    assert {"@odata.id": US + "/SoftwareInventory/Slot_B"} in opt["RelatedItem"]
    s.post(k.url + RESET, json={"ResetType": "GracefulRestart"})
    assert slot(k, s, "B")["Active"] is True
    assert s.post(k.url + ROLLBACK, json={}).status_code == 200
    assert s.get(k.url + "/redfish/v1/Systems/system").json()["Boot"]["BootOrder"][0] == "keel_0.1.0", "rollback: 0.1.0 boots next"
    assert "blessed" in s.get(k.url + "/redfish/v1/Systems/system/BootOptions/keel_0.2.0").json()["DisplayName"]
    s.post(k.url + RESET, json={"ResetType": "ForceRestart"})
    a = slot(k, s, "A")
    assert (a["Active"], a["Version"]) == (True, "0.1.0"), "back on 0.1.0"
    assert slot(k, s, "B")["Status"]["State"] == "StandbySpare", "0.2.0 kept as the other slot"
    run_service_validator(k, tmp_path)


def push(k, s, bundle, apply_time):
    with open(bundle, "rb") as f:
        r = s.post(k.url + US + "/upload", files={"UpdateParameters": (None, json.dumps({"@Redfish.OperationApplyTime": apply_time}), "application/json"),
                                                 "UpdateFile": (bundle.name, f, "application/octet-stream")})
    assert r.status_code == 202, r.text
    assert wait_task(k, s, r.headers["Location"])["TaskState"] == "Completed"


def test_redfishtool_and_sushy_resets_are_simulated_reboots_that_activate_staged_updates(keeld_factory, tmp_path, pki):
    """A client's ComputerSystem.Reset on the simulated platform reboots by systemd-boot's rules: a
    version staged OnReset is running afterwards, and after a rollback the old one again."""
    import sushy
    import sushy.auth
    from conftest import ADMIN
    from test_clients import Redfishtool
    make_bundle(pki, tmp_path / "b2.keel", "0.2.0")
    make_bundle(pki, tmp_path / "b3.keel", "0.3.0")
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    push(k, s, tmp_path / "b2.keel", "OnReset")
    assert slot(k, s, "A")["Active"] is True
    rt = Redfishtool(k)
    rt.auth = ["-u", ADMIN[0], "-p", ADMIN[1], "-A", "Basic"]
    rt.run("Systems", "-I", "system", "reset", "GracefulRestart")
    assert (slot(k, s, "B")["Active"], slot(k, s, "B")["Version"]) == (True, "0.2.0"), "redfishtool's reset booted the staged version"
    push(k, s, tmp_path / "b3.keel", "OnReset")
    client = sushy.Sushy(k.url, verify=str(k.state_dir / "tls-cert.pem"), auth=sushy.auth.SessionAuth(*ADMIN), server_side_retries=0)
    client.get_system("/redfish/v1/Systems/system").reset_system(sushy.ResetType.FORCE_RESTART)
    assert (slot(k, s, "A")["Active"], slot(k, s, "A")["Version"]) == (True, "0.3.0"), "sushy's reset booted the staged version"
    assert s.get(k.url + "/redfish/v1/Systems/system").json()["PowerState"] == "On"


def test_the_maintenance_window_annotation_is_writable_and_shared_with_push_options(keeld_factory, pki):
    k = keeld_factory("--update-ca", str(pki / "ca.pem"), "--sim-usr-size", str(4 << 20))
    s = k.admin()
    assert "@Redfish.MaintenanceWindow" not in s.get(k.url + US).json()
    r = s.patch(k.url + US, json={"@Redfish.MaintenanceWindow": {"MaintenanceWindowStartTime": "2030-01-02T03:00:00Z",
                                                                "MaintenanceWindowDurationInSeconds": 7200}})
    assert r.status_code == 200, r.text
    us = s.get(k.url + US).json()
    assert us["@Redfish.MaintenanceWindow"]["MaintenanceWindowStartTime"] == "2030-01-02T03:00:00Z"
    assert us["HttpPushUriOptions"]["HttpPushUriApplyTime"]["MaintenanceWindowDurationInSeconds"] == 7200
    assert us["Actions"]["#UpdateService.SimpleUpdate"]["@Redfish.OperationApplyTimeSupport"]["MaintenanceWindowStartTime"] == "2030-01-02T03:00:00Z"
    bad = s.patch(k.url + US, json={"@Redfish.MaintenanceWindow": {"MaintenanceWindowStartTime": "tomorrow"}})
    assert bad.status_code == 400 and bad.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.22.PropertyValueFormatError"
    assert s.get(k.url + US).json()["@Redfish.MaintenanceWindow"]["MaintenanceWindowStartTime"] == "2030-01-02T03:00:00Z"
