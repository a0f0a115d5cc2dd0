"""Inventory of machines recorded inside the Keel image under QEMU (tests/fixtures/qemu-*).

Each fixture is what `keeld host record` captured inside the devel image booted by qemu-tests'
`record-fixture` (OVMF Secure Boot, swtpm behind tpm-crb, TCG): `qemu-nvme8` has eight NVMe
drives next to the virtio boot disk, `qemu-nics5` four virtio-net NICs and an e1000e. Re-record
with `qemu-tests/record.sh` (README, qemu-tests); the values asserted here are
the ones QEMU was given (serials, sizes, MACs, SMBIOS identity) or that QEMU, OVMF and swtpm
report for themselves.
"""
import json
import pathlib

import pytest

from conftest import ROOT, run_service_validator

FIXTURES = ROOT / "tests" / "fixtures"
NVME8 = FIXTURES / "qemu-nvme8"
NICS5 = FIXTURES / "qemu-nics5"
SYS = "/redfish/v1/Systems/system"
STO = SYS + "/Storage"
EI = SYS + "/EthernetInterfaces"
DRV = "/redfish/v1/Chassis/chassis/Drives"
NA = "/redfish/v1/Chassis/chassis/NetworkAdapters"
GIB = 1 << 30
# QEMU's NVMe controller reports QEMU's version as its firmware revision (the image's tools tree).
QEMU_NVME_FW = "10.0.13"
SWTPM_FW = "8217.4131.22.13878"


def get(k, s, path):
    r = s.get(k.url + path)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def members(k, s, path):
    return {m["Id"]: m for m in get(k, s, path + "?$expand=.")["Members"]}


@pytest.fixture
def nvme8(keeld_factory):
    k = keeld_factory("--host-root", str(NVME8))
    return k, k.admin()


@pytest.fixture
def nics5(keeld_factory):
    k = keeld_factory("--host-root", str(NICS5))
    return k, k.admin()


# ----------------------------------------------------------------------------- qemu-nvme8

def test_nvme8_guest_has_eight_nvme_drives_and_the_boot_disk(nvme8):
    k, s = nvme8
    drives = members(k, s, DRV)
    assert sorted(drives) == [f"nvme{i}" for i in range(8)] + ["vda"]
    for i in range(8):
        d = drives[f"nvme{i}"]
        assert (d["SerialNumber"], d["Model"], d["Revision"]) == (f"KEELNVME{i + 1:02}", "QEMU NVMe Ctrl", QEMU_NVME_FW)
        assert d["CapacityBytes"] == GIB << i, "1, 2, 4 ... 128 GiB as the recorder gave them"
        assert (d["BlockSizeBytes"], d["MediaType"], d["Protocol"]) == (512, "SSD", "NVMe")
        # smartctl's NVMe health log from QEMU: nothing used, nothing predicted.
        assert (d["PredictedMediaLifeLeftPercent"], d["FailurePredicted"]) == (100, False)
        assert d["Status"] == {"State": "Enabled", "Health": "OK"}
        assert d["Links"]["Storage"] == {"@odata.id": f"{STO}/NVMe{i}"}
    boot = drives["vda"]
    assert (boot["SerialNumber"], boot["Model"], boot["CapacityBytes"]) == ("KEELBOOT0", "Virtio Block Device", 12 * GIB)
    assert "Protocol" not in boot and "PredictedMediaLifeLeftPercent" not in boot


def test_nvme8_guest_storage_controllers_and_encrypted_volumes(nvme8):
    k, s = nvme8
    storage = members(k, s, STO)
    assert sorted(storage) == [f"NVMe{i}" for i in range(8)] + ["virtio0"]
    for i in range(8):
        st = storage[f"NVMe{i}"]
        addr = f"0000:00:{3 + i:02x}.0"
        assert st["Description"] == f"NVMe controller, driver nvme, PCI {addr}"
        assert st["Drives"] == [{"@odata.id": f"{DRV}/nvme{i}"}]
        assert st["Status"] == {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"}
        assert get(k, s, f"{STO}/NVMe{i}/Controllers")["Members"] == [{"@odata.id": f"{STO}/NVMe{i}/Controllers/0"}]
        c = get(k, s, f"{STO}/NVMe{i}/Controllers/0")
        assert (c["Model"], c["SerialNumber"], c["FirmwareVersion"]) == ("QEMU NVMe Ctrl", f"KEELNVME{i + 1:02}", QEMU_NVME_FW)
        assert c["SupportedDeviceProtocols"] == ["NVMe"] and c["Description"] == f"driver nvme, PCI {addr}"
        assert get(k, s, f"{STO}/NVMe{i}/Volumes")["Members"] == []
    v = storage["virtio0"]
    assert v["Description"] == "virtio block device, driver virtio_blk, PCI 0000:00:02.0"
    # First boot's systemd-repart made root and swap LUKS2 on the boot disk, unlocked by the TPM.
    vols = members(k, s, f"{STO}/virtio0/Volumes")
    assert sorted(vols) == ["root", "swap"]
    assert all(x["Encrypted"] is True and x["Name"] == f"LUKS2 volume {x['Id']}" for x in vols.values())
    assert vols["root"]["Links"]["Drives"] == [{"@odata.id": f"{DRV}/vda"}]
    fw = members(k, s, "/redfish/v1/UpdateService/FirmwareInventory")
    assert {f"Drive_nvme{i}" for i in range(8)} <= set(fw)
    assert all(fw[f"Drive_nvme{i}"]["Version"] == QEMU_NVME_FW for i in range(8))


def test_nvme8_guest_identity_firmware_and_software(nvme8):
    k, s = nvme8
    sys = get(k, s, SYS)
    # QEMU's own SMBIOS type 1, with the serial and UUID the recorder set.
    assert (sys["Manufacturer"], sys["Model"]) == ("QEMU", "Standard PC (Q35 + ICH9, 2009)")
    assert (sys["SerialNumber"], sys["UUID"]) == ("KEEL-REC-NVME8", "4b45454c-0000-4000-8000-000000000008")
    assert sys["HostName"] == "keel"
    assert sys["ProcessorSummary"] == {"Count": 1, "CoreCount": 2, "LogicalProcessorCount": 2, "Model": "QEMU TCG CPU version 2.5+"}
    assert sys["MemorySummary"]["TotalSystemMemoryGiB"] == 2.0
    assert [(m["Id"], m["CapacityMiB"]) for m in get(k, s, SYS + "/Memory?$expand=.")["Members"]] == [("DIMM0", 2048)]
    ch = get(k, s, "/redfish/v1/Chassis/chassis")
    assert (ch["Manufacturer"], ch["ChassisType"]) == ("QEMU", "Other")
    bios = get(k, s, "/redfish/v1/UpdateService/FirmwareInventory/bios")
    assert bios["Manufacturer"] == "Debian distribution of EDK II" and bios["Version"] == sys["BiosVersion"]
    sw = members(k, s, "/redfish/v1/UpdateService/SoftwareInventory")
    assert sw["os"]["Name"] == "Keel 0.1.0" and sw["kernel"]["Version"].endswith("+deb13-amd64")
    assert sw["incus"]["Version"] == "6.0.4"
    # A recorded Keel image is served, never updated: the slots are keeld's simulated ones.
    assert get(k, s, "/redfish/v1/Managers/keel")["Oem"]["Keel"]["PlatformMode"] == "Simulated"


def test_nvme8_guest_secure_boot_with_the_image_key(nvme8):
    k, s = nvme8
    sb = get(k, s, SYS + "/SecureBoot")
    assert (sb["SecureBootEnable"], sb["SecureBootCurrentBoot"], sb["SecureBootMode"]) == (True, "Enabled", "UserMode")
    dbs = members(k, s, SYS + "/SecureBoot/SecureBootDatabases")
    assert sorted(dbs) == ["KEK", "PK", "db", "dbx"]
    for db in ("PK", "KEK", "db"):
        certs = list(members(k, s, f"{SYS}/SecureBoot/SecureBootDatabases/{db}/Certificates").values())
        assert len(certs) == 1, db
        assert "Keel test image signing key" in json.dumps(certs[0]["Subject"]), db


def test_nvme8_guest_tpm_is_served_as_recorded_without_attestation(nvme8):
    k, s = nvme8
    assert get(k, s, SYS)["TrustedModules"] == [
        {"InterfaceType": "TPM2_0", "FirmwareVersion": SWTPM_FW, "Status": {"State": "Enabled", "Health": "OK"}}]
    tc = get(k, s, "/redfish/v1/Chassis/chassis/TrustedComponents/TPM")
    assert (tc["Manufacturer"], tc["FirmwareVersion"]) == ("IBM", SWTPM_FW)
    ci = get(k, s, "/redfish/v1/ComponentIntegrity/TPM")
    assert ci["ComponentIntegrityType"] == "TPM" and ci["Status"]["Health"] == "OK"
    pcrs = {(m["MeasurementHashAlgorithm"], m["PCR"]): m["Measurement"] for m in ci["TPM"]["MeasurementSet"]["Measurements"]}
    banks = {alg for alg, _ in pcrs}
    assert banks == {"TPM_ALG_SHA1", "TPM_ALG_SHA256", "TPM_ALG_SHA384", "TPM_ALG_SHA512"}
    assert all(len([1 for a, _ in pcrs if a == alg]) == 24 for alg in banks)
    zero = "A" * 43 + "="
    # OVMF measured the Secure Boot policy (PCR 7), systemd-stub the UKI (PCR 11).
    assert pcrs[("TPM_ALG_SHA256", 7)] != zero and pcrs[("TPM_ALG_SHA256", 11)] != zero
    recorded = json.loads((NVME8 / ".keel-tpm.json").read_text())
    assert recorded["manufacturer"] == "IBM" and len(recorded["pcrs"]) == 96
    # No attestation key in a recording: no quote action, no certificate.
    assert "Actions" not in ci and "IdentityAuthentication" not in ci["TPM"]
    r = s.post(k.url + "/redfish/v1/ComponentIntegrity/TPM/Actions/ComponentIntegrity.TPMGetSignedMeasurements", json={})
    assert r.status_code in (404, 405)
    assert get(k, s, "/redfish/v1/Chassis/chassis/TrustedComponents/TPM/Certificates")["Members"] == []


# ----------------------------------------------------------------------------- qemu-nics5

NICS = {  # MAC -> (QEMU device, guest subnet of its user network)
    "52:54:00:4B:52:11": ("virtio", 2),
    "52:54:00:4B:52:12": ("virtio", 3),
    "52:54:00:4B:52:13": ("virtio", 4),
    "52:54:00:4B:52:14": ("virtio", 5),
    "52:54:00:4B:52:15": ("e1000e", 6),
}


def test_nics5_guest_has_five_nics_linked_up_on_dhcp(nics5):
    k, s = nics5
    ifs = members(k, s, EI)
    assert len(ifs) == 5
    by_mac = {e["MACAddress"]: e for e in ifs.values()}
    assert set(by_mac) == set(NICS)
    for mac, (_, net) in NICS.items():
        e = by_mac[mac]
        assert e["PermanentMACAddress"] == mac and e["EthernetInterfaceType"] == "Physical"
        assert (e["LinkStatus"], e["InterfaceEnabled"], e["MTUSize"]) == ("LinkUp", True, 1500)
        # Each NIC on its own QEMU user network 10.0.N.0/24, leased by networkd's DHCP client.
        assert e["IPv4Addresses"][0]["Address"] == f"10.0.{net}.15"
        assert (e["IPv4Addresses"][0]["SubnetMask"], e["IPv4Addresses"][0]["AddressOrigin"]) == ("255.255.255.0", "DHCP")
        assert e["DHCPv4"]["DHCPEnabled"] is True
        ll = [a for a in e["IPv6Addresses"] if a["AddressOrigin"] == "LinkLocal"]
        assert [a["Address"] for a in ll] == ["fe80::5054:ff:fe4b:52" + mac[-2:].lower()]


def test_nics5_guest_adapters_and_ports(nics5):
    k, s = nics5
    ads = members(k, s, NA)
    # A virtio NIC's device is on the virtio bus (named after its interface); the e1000e is a
    # PCI function (named by its address). The image has no pci.ids: the e1000e's names are its IDs.
    assert sorted(ads) == ["0000_00_07", "enp0s3", "enp0s4", "enp0s5", "enp0s6"]
    for n in range(3, 7):
        assert (ads[f"enp0s{n}"]["Manufacturer"], ads[f"enp0s{n}"]["Model"]) == ("Red Hat, Inc.", "Virtio network device")
    e = ads["0000_00_07"]
    assert (e["Manufacturer"], e["Model"]) == ("PCI vendor 0x8086", "PCI device 0x10d3")
    assert e["Description"] == "PCI device 0000:00:07 (driver e1000e)"
    macs = {}
    for a in ads.values():
        ports = members(k, s, f"{NA}/{a['Id']}/Ports")
        assert len(ports) == 1
        [p] = ports.values()
        assert p["LinkStatus"] == "LinkUp"
        assert p["Links"]["EthernetInterfaces"] == [{"@odata.id": f"{EI}/{p['Id']}"}]
        [mac] = p["Ethernet"]["AssociatedMACAddresses"]
        macs[mac] = (a["Id"], p)
    assert set(macs) == set(NICS)
    # Only the e1000e reports a speed (virtio-net has none), and a PCI port ID.
    aid, p = macs["52:54:00:4B:52:15"]
    assert (aid, p["Id"], p["CurrentSpeedGbps"], p["PortId"]) == ("0000_00_07", "enp0s7", 1.0, "0000:00:07.0")
    assert all(macs[m][1].get("CurrentSpeedGbps") is None for m in NICS if NICS[m][0] == "virtio")
    ifs = members(k, s, EI)
    assert ifs["enp0s7"]["SpeedMbps"] == 1000 and "SpeedMbps" not in ifs["enp0s3"]


def test_nics5_guest_has_only_the_boot_disk_and_its_own_identity(nics5):
    k, s = nics5
    assert sorted(members(k, s, DRV)) == ["vda"]
    sys = get(k, s, SYS)
    assert (sys["Manufacturer"], sys["Model"], sys["SerialNumber"]) == ("QEMU", "Standard PC (Q35 + ICH9, 2009)", "KEEL-REC-NICS5")
    assert sys["UUID"] == "4b45454c-0000-4000-8000-000000000005"
    assert sys["TrustedModules"][0]["InterfaceType"] == "TPM2_0"
    assert get(k, s, SYS + "/SecureBoot")["SecureBootCurrentBoot"] == "Enabled"


# ----------------------------------------------------------------------------- both

@pytest.mark.parametrize("fixture", [NVME8, NICS5], ids=lambda p: p.name)
def test_guest_fixture_holds_no_secrets(fixture):
    files = [p for p in fixture.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 100
    for p in files:
        data = p.read_bytes()
        rel = p.relative_to(fixture)
        assert b"PRIVATE KEY" not in data, rel
        # No SMBIOS credential (the recorder passes no bootstrap administrator) and no password.
        assert b"io.systemd.credential" not in data and b"Keel-Test-Pass" not in data, rel
    names = {str(p.relative_to(fixture)) for p in files}
    # keeld's state directory and the TPM's state are never recorded; of the EFI variables only
    # the Secure Boot ones are.
    assert not any(n.startswith(("var/", "etc/keel")) for n in names)
    efivars = {pathlib.Path(n).name for n in names if n.startswith("sys/firmware/efi/efivars/")}
    assert efivars and all(v.split("-")[0] in ("SecureBoot", "SetupMode", "AuditMode", "DeployedMode", "PK", "KEK", "db", "dbx") for v in efivars)


@pytest.mark.parametrize("fixture", [NVME8, NICS5], ids=lambda p: p.name)
def test_service_validator_on_guest_fixture(keeld_factory, tmp_path, fixture):
    k = keeld_factory("--host-root", str(fixture))
    logs = run_service_validator(k, tmp_path)
    assert "/redfish/v1/Chassis/chassis/Drives/vda" in logs
