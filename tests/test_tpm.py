"""The TPM through a TCTI (`--tpm-tcti`), against swtpm on loopback: TrustedModules and the PCR banks
of the ComponentIntegrity resource; no TPM shows nothing."""
import base64
import hashlib
import os
import shutil
import struct
import socket
import subprocess
import time

import pytest

from conftest import free_port

SYS = "/redfish/v1/Systems/system"
CI = "/redfish/v1/ComponentIntegrity"
TC = "/redfish/v1/Chassis/chassis/TrustedComponents/TPM"
AK = TC + "/Certificates/AK"
QUOTE = CI + "/TPM/Actions/ComponentIntegrity.TPMGetSignedMeasurements"

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
    assert ci["TargetComponentURI"] == TC
    assert ci["Links"]["ComponentsProtected"] == [{"@odata.id": SYS}]
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
    assert "TrustedComponents" not in s.get(k.url + SYS).json()["Links"]
    assert s.get(k.url + CI).json()["Members"] == []
    assert s.get(k.url + CI + "/TPM").status_code == 404
    assert s.get(k.url + "/redfish/v1/Chassis/chassis/TrustedComponents").json()["Members"] == []
    assert s.get(k.url + TC).status_code == 404
    r = s.post(k.url + QUOTE, json=quote_body(b"\1" * 8, {0xB: [0]}))
    assert r.status_code == 404, r.text
    assert s.post(k.url + QUOTE, json={}).status_code == 404


def pcr_selection(banks):
    """A marshalled TPML_PCR_SELECTION: {alg_id: [pcr, ...]}."""
    out = struct.pack(">I", len(banks))
    for alg, pcrs in banks.items():
        bits = bytearray(3)
        for p in pcrs:
            bits[p // 8] |= 1 << (p % 8)
        out += struct.pack(">HB", alg, 3) + bytes(bits)
    return out


ECDSA_SHA256 = struct.pack(">HH", 0x0018, 0x000B)


def quote_body(nonce, banks, scheme=ECDSA_SHA256, cert=AK):
    return {"Certificate": {"@odata.id": cert}, "Nonce": nonce.hex(),
            "PCRSelection": base64.b64encode(pcr_selection(banks)).decode(),
            "Scheme": base64.b64encode(scheme).decode()}


def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b


def parse_quote(blob):
    """TPMS_ATTEST (a quote) then TPMT_SIGNATURE (ECDSA): the fields a verifier needs."""
    at = 0

    def take(n):
        nonlocal at
        at += n
        return blob[at - n:at]

    def tpm2b():
        return take(struct.unpack(">H", take(2))[0])

    magic, typ = struct.unpack(">IH", take(6))
    signer = tpm2b()
    extra = tpm2b()
    take(17 + 8)  # clockInfo, firmwareVersion
    count = struct.unpack(">I", take(4))[0]
    sel = []
    for _ in range(count):
        alg, size = struct.unpack(">HB", take(3))
        bits = take(size)
        sel.append((alg, [i for i in range(size * 8) if bits[i // 8] & (1 << (i % 8))]))
    digest = tpm2b()
    attest = blob[:at]
    sig_alg, hash_alg = struct.unpack(">HH", take(4))
    r, s_ = tpm2b(), tpm2b()
    assert at == len(blob)
    body = der_int(r) + der_int(s_)
    return dict(magic=magic, type=typ, signer=signer, extra=extra, sel=sel, digest=digest, attest=attest,
                sig_alg=sig_alg, hash_alg=hash_alg, sig_der=b"\x30" + bytes([len(body)]) + body)


@needs_swtpm
def test_signed_measurements_verify_outside_keeld(keeld_factory, swtpm, tmp_path):
    subprocess.run(["tpm2_pcrextend", "-T", swtpm, f"16:sha256={hashlib.sha256(b'quote').hexdigest()}"], check=True)
    k = keeld_factory("--tpm-tcti", swtpm)
    s = k.admin()
    ci = s.get(k.url + CI + "/TPM").json()
    assert ci["Actions"]["#ComponentIntegrity.TPMGetSignedMeasurements"]["target"] == QUOTE
    assert ci["TPM"]["IdentityAuthentication"]["ComponentCertificate"] == {"@odata.id": AK}
    assert ci["TPM"]["NonceSizeBytesMaximum"] == 32
    tc = s.get(k.url + TC).json()
    assert tc["TrustedComponentType"] == "Discrete"
    system = s.get(k.url + SYS).json()
    assert tc["FirmwareVersion"] == system["TrustedModules"][0]["FirmwareVersion"]
    assert system["Links"]["TrustedComponents"] == [{"@odata.id": TC}], "the non-deprecated link to the TPM"
    assert [m["@odata.id"] for m in s.get(k.url + TC + "/Certificates").json()["Members"]] == [AK]
    cert = s.get(k.url + AK).json()
    assert cert["CertificateType"] == "PEM"

    # The attestation CA: in the state directory, owner-only.
    ca_path = k.state_dir / "attestation-ca.pem"
    assert ca_path.stat().st_mode & 0o777 == 0o600
    (tmp_path / "ak.pem").write_text(cert["CertificateString"])
    (tmp_path / "ca.pem").write_text(ca_path.read_text().split("-----END PRIVATE KEY-----\n")[1])
    v = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "ak.pem"], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    pub = subprocess.run(["openssl", "x509", "-in", tmp_path / "ak.pem", "-pubkey", "-noout"], capture_output=True, check=True).stdout
    (tmp_path / "ak.pub").write_bytes(pub)

    nonce = os.urandom(20)
    r = s.post(k.url + QUOTE, json=quote_body(nonce, {0x000B: [0, 7, 16]}))
    assert r.status_code == 200, r.text
    q = parse_quote(base64.b64decode(r.json()["SignedMeasurements"]))
    assert q["magic"] == 0xFF544347 and q["type"] == 0x8018
    assert q["extra"] == nonce
    assert q["sel"] == [(0x000B, [0, 7, 16])]
    out = subprocess.run(["tpm2_pcrread", "-T", swtpm, "sha256:0,7,16", "-o", tmp_path / "pcrs.bin"], capture_output=True, check=True)
    assert q["digest"] == hashlib.sha256((tmp_path / "pcrs.bin").read_bytes()).digest(), out.stdout
    assert (q["sig_alg"], q["hash_alg"]) == (0x0018, 0x000B)
    (tmp_path / "attest.bin").write_bytes(q["attest"])
    (tmp_path / "sig.der").write_bytes(q["sig_der"])
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", tmp_path / "ak.pub", "-signature", tmp_path / "sig.der",
                        tmp_path / "attest.bin"], capture_output=True, text=True)
    assert v.returncode == 0 and "Verified OK" in v.stdout, v.stdout + v.stderr
    # A tampered quote does not verify.
    (tmp_path / "attest.bin").write_bytes(q["attest"][:-1] + bytes([q["attest"][-1] ^ 1]))
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", tmp_path / "ak.pub", "-signature", tmp_path / "sig.der",
                        tmp_path / "attest.bin"], capture_output=True, text=True)
    assert v.returncode != 0

    # TPM_ALG_NULL takes the key's own scheme.
    r = s.post(k.url + QUOTE, json=quote_body(nonce, {0x000B: [16]}, scheme=struct.pack(">H", 0x0010)))
    assert r.status_code == 200, r.text
    # The AK (a primary key) is the same after a restart, and so is its certificate's issuer.
    k.restart()
    s = k.admin()
    pub2 = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=s.get(k.url + AK).json()["CertificateString"].encode(),
                          capture_output=True, check=True).stdout
    assert pub2 == pub


@needs_swtpm
def test_signed_measurements_reject_bad_input(keeld_factory, swtpm):
    k = keeld_factory("--tpm-tcti", swtpm)
    s = k.admin()
    good = quote_body(b"\1" * 8, {0x000B: [0]})

    def fails(body, msg, param):
        r = s.post(k.url + QUOTE, json=body)
        assert r.status_code == 400, r.text
        info = r.json()["error"]["@Message.ExtendedInfo"]
        assert any(m["MessageId"].endswith("." + msg) for m in info), info
        assert param in str(info)

    fails({**good, "Nonce": "xyz"}, "ActionParameterValueFormatError", "Nonce")
    fails({**good, "Nonce": "abc"}, "ActionParameterValueFormatError", "Nonce")
    fails({**good, "Nonce": "00" * 33}, "StringValueTooLong", "Nonce")
    fails({**good, "PCRSelection": "not base64!"}, "ActionParameterValueFormatError", "PCRSelection")
    fails({**good, "PCRSelection": base64.b64encode(b"\0\0").decode()}, "ActionParameterValueFormatError", "PCRSelection")
    fails({**good, "PCRSelection": base64.b64encode(pcr_selection({0x0777: [0]})).decode()}, "ActionParameterValueNotInList", "PCRSelection")
    fails({**good, "PCRSelection": base64.b64encode(pcr_selection({0x0012: [0]})).decode()}, "ActionParameterValueNotInList", "PCRSelection")
    fails({**good, "Scheme": base64.b64encode(struct.pack(">HH", 0x0014, 0x000B)).decode()}, "ActionParameterValueNotInList", "Scheme")
    fails({**good, "Scheme": "@@"}, "ActionParameterValueFormatError", "Scheme")
    fails({**good, "Certificate": {"@odata.id": "/redfish/v1/Managers/keel"}}, "ActionParameterValueNotInList", "Certificate")
    fails({k_: v for k_, v in good.items() if k_ != "PCRSelection"}, "ActionParameterMissing", "PCRSelection")
    fails({**good, "Extra": 1}, "ActionParameterUnknown", "Extra")
    assert s.post(k.url + QUOTE, json=good).status_code == 200
    # Asking for a quote and reading the AK certificate take ConfigureManager (Privilege Registry);
    # the TrustedComponent and ComponentIntegrity take Login.
    k.create_account("reader", "Quiet-Lamp-42", role="Operator")
    op = k.client("reader", "Quiet-Lamp-42")
    assert op.post(k.url + QUOTE, json=good).status_code == 403
    assert op.get(k.url + AK).status_code == 403
    assert op.get(k.url + TC).status_code == 200
    assert op.get(k.url + CI + "/TPM").status_code == 200


@needs_swtpm
def test_service_validator_with_tpm(keeld_factory, swtpm, tmp_path):
    """The DMTF Service Validator over keeld with a TPM: ComponentIntegrity, its action, the
    TrustedComponent and the AK certificate, 0 failures."""
    from conftest import run_service_validator
    k = keeld_factory("--tpm-tcti", swtpm)
    walked = run_service_validator(k, tmp_path)
    # The validator walked the new resources.
    assert "/TrustedComponents/TPM/Certificates/AK" in walked


@needs_swtpm
def test_tpm_firmware_is_in_the_firmware_inventory(keeld_factory, swtpm):
    k = keeld_factory("--tpm-tcti", swtpm)
    s = k.admin()
    tm = s.get(k.url + "/redfish/v1/Systems/system").json()["TrustedModules"][0]
    fw = s.get(k.url + "/redfish/v1/UpdateService/FirmwareInventory/TPM").json()
    assert fw["Version"] == tm["FirmwareVersion"] and fw["Version"]
    assert fw["RelatedItem"] == [{"@odata.id": "/redfish/v1/Chassis/chassis/TrustedComponents/TPM"}]
    assert s.get(k.url + fw["RelatedItem"][0]["@odata.id"]).status_code == 200


def test_no_tpm_no_tpm_firmware(keeld):
    r = keeld.admin().get(keeld.url + "/redfish/v1/UpdateService/FirmwareInventory/TPM")
    assert r.status_code == 404
