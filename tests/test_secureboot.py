"""UEFI Secure Boot from efivarfs through the host root: state, PK/KEK/db certificates, dbx hashes."""
import hashlib
import struct
import subprocess
import uuid

SYS = "/redfish/v1/Systems/system"
SB = SYS + "/SecureBoot"
DBS = SB + "/SecureBootDatabases"
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECDB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
NV_BS_RT = struct.pack("<I", 0x7)


def make_cert(tmp, name, subject):
    """A self-signed certificate (DER path, PEM path) made by the openssl CLI."""
    key, pem, der = tmp / f"{name}.key", tmp / f"{name}.pem", tmp / f"{name}.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", "3650", "-subj", subject], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER", "-out", str(der)], check=True)
    return der.read_bytes(), pem


def openssl_fingerprint(pem):
    out = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


def openssl_serial(pem):
    out = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-serial"], check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].upper()


def sig_list(kind, entries):
    """An EFI_SIGNATURE_LIST (UEFI §32.4.1) of equally sized entries, each owned by OWNER."""
    size = 16 + len(entries[0])
    data = uuid.UUID(kind).bytes_le + struct.pack("<III", 28 + size * len(entries), 0, size)
    for e in entries:
        data += uuid.UUID(OWNER).bytes_le + e
    return data


def write_var(root, name, guid, data):
    d = root / "sys/firmware/efi/efivars"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}-{guid}").write_bytes(NV_BS_RT + data)


def make_fixture(root, tmp):
    certs = {}
    for name, subj in [("pk", "/CN=Keel Test PK/O=Keel Test/C=US"), ("kek", "/CN=Keel Test KEK/O=Keel Test"),
                       ("db1", "/CN=Keel Test db 1/O=Keel Test/OU=Boot"), ("db2", "/CN=Keel Test db 2/O=Other Org")]:
        certs[name] = make_cert(tmp, name, subj)
    write_var(root, "SecureBoot", GLOBAL, b"\x01")
    write_var(root, "SetupMode", GLOBAL, b"\x00")
    write_var(root, "AuditMode", GLOBAL, b"\x00")
    write_var(root, "DeployedMode", GLOBAL, b"\x00")
    write_var(root, "PK", GLOBAL, sig_list(X509, [certs["pk"][0]]))
    write_var(root, "KEK", GLOBAL, sig_list(X509, [certs["kek"][0]]))
    # Two certificates of different sizes: two lists.
    write_var(root, "db", SECDB, sig_list(X509, [certs["db1"][0]]) + sig_list(X509, [certs["db2"][0]]))
    hashes = [hashlib.sha256(b"revoked %d" % i).digest() for i in range(3)]
    write_var(root, "dbx", SECDB, sig_list(SHA256, hashes))
    return certs, hashes


def members(s, url):
    r = s.get(url + "?$expand=.")
    assert r.status_code == 200, r.text
    return r.json()["Members"]


def test_secure_boot_state_databases_certificates_and_hashes(keeld_factory, tmp_path):
    root = tmp_path / "host"
    certs, hashes = make_fixture(root, tmp_path)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert s.get(k.url + SYS).json()["SecureBoot"] == {"@odata.id": SB}
    sb = s.get(k.url + SB).json()
    assert sb["@odata.type"].startswith("#SecureBoot.v1_")
    assert sb["SecureBootEnable"] is True
    assert sb["SecureBootCurrentBoot"] == "Enabled"
    assert sb["SecureBootMode"] == "UserMode"
    assert sb["SecureBootDatabases"] == {"@odata.id": DBS}
    dbs = members(s, k.url + DBS)
    assert [d["DatabaseId"] for d in dbs] == ["PK", "KEK", "db", "dbx"]

    for db, names in [("PK", ["pk"]), ("KEK", ["kek"]), ("db", ["db1", "db2"])]:
        got = members(s, k.url + f"{DBS}/{db}/Certificates")
        assert len(got) == len(names), db
        for c, n in zip(got, names):
            der, pem = certs[n]
            assert c["CertificateType"] == "PEM"
            assert c["Fingerprint"] == openssl_fingerprint(pem)
            assert c["FingerprintHashAlgorithm"] == "TPM_ALG_SHA256"
            assert c["SerialNumber"].replace(":", "") == openssl_serial(pem).lstrip("0") or c["SerialNumber"].replace(":", "") == openssl_serial(pem)
            assert c["UefiSignatureOwner"] == OWNER
            assert c["CertificateString"].replace("\n", "") == pem.read_text().replace("\n", "")
            assert c["Subject"] == c["Issuer"]
            assert c["ValidNotBefore"].endswith("Z") and c["ValidNotAfter"] > c["ValidNotBefore"]
        assert members(s, k.url + f"{DBS}/{db}/Signatures") == []
    pk = s.get(k.url + f"{DBS}/PK/Certificates/1").json()
    assert pk["Subject"]["CommonName"] == "Keel Test PK"
    assert pk["Subject"]["Organization"] == "Keel Test"
    assert pk["Subject"]["Country"] == "US"
    db1 = s.get(k.url + f"{DBS}/db/Certificates/1").json()
    assert db1["Subject"]["OrganizationalUnit"] == "Boot"
    assert s.get(k.url + f"{DBS}/db/Certificates/2").json()["Subject"]["Organization"] == "Other Org"
    assert s.get(k.url + f"{DBS}/db/Certificates/3").status_code == 404
    assert s.get(k.url + f"{DBS}/db/Certificates/01").status_code == 404
    assert s.get(k.url + f"{DBS}/nope").status_code == 404

    dbx = members(s, k.url + f"{DBS}/dbx/Signatures")
    assert [x["SignatureString"] for x in dbx] == [h.hex() for h in hashes]
    assert {x["SignatureType"] for x in dbx} == {"EFI_CERT_SHA256_GUID"}
    assert {x["SignatureTypeRegistry"] for x in dbx} == {"UEFI"}
    assert {x["UefiSignatureOwner"] for x in dbx} == {OWNER}
    assert members(s, k.url + f"{DBS}/dbx/Certificates") == []


def test_setup_mode_and_privileges(keeld_factory, tmp_path):
    root = tmp_path / "host"
    make_fixture(root, tmp_path)
    write_var(root, "SecureBoot", GLOBAL, b"\x00")
    write_var(root, "SetupMode", GLOBAL, b"\x01")
    k = keeld_factory("--host-root", str(root))
    sb = k.get(SB).json()
    assert (sb["SecureBootEnable"], sb["SecureBootCurrentBoot"], sb["SecureBootMode"]) == (False, "Disabled", "SetupMode")
    # Read-only: no PATCH.
    assert k.admin().patch(k.url + SB, json={"SecureBootEnable": True}).status_code == 405
    # Certificates below a ComputerSystem need ConfigureComponents (Privilege Registry override).
    k.create_account("reader", "Quiet-Lamp-42", "ReadOnly")
    ro, _ = k.login("reader", "Quiet-Lamp-42")
    assert ro.get(k.url + f"{DBS}/PK").status_code == 200
    assert ro.get(k.url + f"{DBS}/PK/Certificates").status_code == 403
    assert ro.get(k.url + f"{DBS}/dbx/Signatures/1").status_code == 200


def test_garbage_variable_degrades_only_that_database(keeld_factory, tmp_path):
    root = tmp_path / "host"
    make_fixture(root, tmp_path)
    write_var(root, "db", SECDB, b"\xde\xad\xbe\xef" * 20)
    (root / f"sys/firmware/efi/efivars/dbx-{SECDB}").write_bytes(b"\x07")  # shorter than its attributes
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert members(s, k.url + f"{DBS}/db/Certificates") == []
    assert members(s, k.url + f"{DBS}/dbx/Signatures") == []
    assert len(members(s, k.url + f"{DBS}/PK/Certificates")) == 1
    assert len(members(s, k.url + f"{DBS}/KEK/Certificates")) == 1
    assert s.get(k.url + SB).json()["SecureBootMode"] == "UserMode"


def test_no_efi_no_secure_boot(keeld_factory, tmp_path):
    root = tmp_path / "host"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text("processor\t: 0\n")
    k = keeld_factory("--host-root", str(root))
    assert "SecureBoot" not in k.get(SYS).json()
    assert k.get(SB).status_code == 404
