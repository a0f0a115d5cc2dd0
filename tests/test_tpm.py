"""The TPM through a TCTI (`--tpm-tcti`), against swtpm on loopback: TrustedModules and the PCR banks
of the ComponentIntegrity resource; no TPM shows nothing."""
import hashlib
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port

SYS = "/redfish/v1/Systems/system"
CI = "/redfish/v1/ComponentIntegrity"

needs_swtpm = pytest.mark.skipif(not shutil.which("swtpm") or not shutil.which("tpm2_pcrextend"),
                                 reason="swtpm and tpm2-tools are not installed")


def free_port_pair():
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as a:
                a.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two free adjacent ports")


@pytest.fixture
def swtpm(tmp_path):
    state = tmp_path / "tpm"
    state.mkdir()
    # The swtpm TCTI reaches the control channel at port + 1.
    port = free_port_pair()
    ctrl = port + 1
    p = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                          "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                          "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                          "--flags", "not-need-init,startup-clear"],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "swtpm.log", "wb"))
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    try:
        deadline = time.time() + 10
        while (r := subprocess.run(["tpm2_getcap", "-T", tcti, "properties-fixed"], capture_output=True, text=True)).returncode != 0:
            assert time.time() < deadline, (tmp_path / "swtpm.log").read_text() + r.stderr
            time.sleep(0.1)
        yield tcti
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@needs_swtpm
def test_tpm_properties_and_pcrs(keeld_factory, swtpm):
    # PCR 16 (debug) extended once with a known digest: new = SHA256(0^32 || digest).
    digest = hashlib.sha256(b"keel").digest()
    subprocess.run(["tpm2_pcrextend", "-T", swtpm, f"16:sha256={digest.hex()}"], check=True)
    expected = hashlib.sha256(b"\0" * 32 + digest).digest()

    k = keeld_factory("--tpm-tcti", swtpm)
    s = k.admin()
    tm = s.get(k.url + SYS).json()["TrustedModules"]
    assert len(tm) == 1
    assert tm[0]["InterfaceType"] == "TPM2_0"
    assert tm[0]["Status"] == {"State": "Enabled", "Health": "OK"}
    caps = subprocess.run(["tpm2_getcap", "-T", swtpm, "properties-fixed"], capture_output=True, text=True, check=True).stdout
    fw1 = int(caps.split("TPM2_PT_FIRMWARE_VERSION_1:")[1].split("raw:")[1].split()[0], 16)
    assert tm[0]["FirmwareVersion"].startswith(f"{fw1 >> 16}.{fw1 & 0xffff}.")

    assert s.get(k.url + "/redfish/v1").json()["ComponentIntegrity"] == {"@odata.id": CI}
    assert [m["@odata.id"] for m in s.get(k.url + CI).json()["Members"]] == [CI + "/TPM"]
    ci = s.get(k.url + CI + "/TPM").json()
    assert ci["ComponentIntegrityType"] == "TPM"
    assert ci["TargetComponentURI"] == SYS
    ms = ci["TPM"]["MeasurementSet"]["Measurements"]
    sha256 = {m["PCR"]: m["Measurement"] for m in ms if m["MeasurementHashAlgorithm"] == "TPM_ALG_SHA256"}
    assert sorted(sha256) == list(range(24))
    import base64
    assert base64.b64decode(sha256[16]) == expected
    assert base64.b64decode(sha256[0]) == b"\0" * 32

    # The resource shows the PCRs as they are now.
    subprocess.run(["tpm2_pcrextend", "-T", swtpm, f"16:sha256={digest.hex()}"], check=True)
    again = hashlib.sha256(expected + digest).digest()
    ms = s.get(k.url + CI + "/TPM").json()["TPM"]["MeasurementSet"]["Measurements"]
    assert [base64.b64decode(m["Measurement"]) for m in ms if m["PCR"] == 16 and m["MeasurementHashAlgorithm"] == "TPM_ALG_SHA256"] == [again]
    assert s.get(k.url + CI + "/other").status_code == 404


def test_no_tpm_shows_nothing(keeld_factory):
    k = keeld_factory("--tpm-tcti", f"swtpm:host=127.0.0.1,port={free_port()}")
    s = k.admin()
    assert "TrustedModules" not in s.get(k.url + SYS).json()
    assert s.get(k.url + CI).json()["Members"] == []
    assert s.get(k.url + CI + "/TPM").status_code == 404
