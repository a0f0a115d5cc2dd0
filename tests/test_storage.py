"""Storage inventory (Storage, Drives, Volumes) from recorded sysfs layouts and smartctl JSON.

Each fixture is built here the way the kernel lays out sysfs (absolute /sys/devices paths, the
/sys/block and /sys/class/nvme entries as relative symbolic links) and with smartctl 7.3's
`--json=c -a` output recorded under .keel-commands/, as `keeld host record` writes it.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import KEELD, run_service_validator

STO = "/redfish/v1/Systems/system/Storage"
DRV = "/redfish/v1/Chassis/chassis/Drives"


# ----------------------------------------------------------------------------- fixture builders

def write(root, path, text):
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text if text.endswith("\n") else text + "\n")


def symlink(root, path, target):
    """A relative link at machine path `path` to machine path `target` (as sysfs makes them)."""
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(path)), p)


def block(root, devpath, name, sectors, logical=512, physical=512, rotational=0):
    """A block device directory at `devpath` (…/block/NAME) and its /sys/block link."""
    write(root, f"{devpath}/size", str(sectors))
    write(root, f"{devpath}/queue/logical_block_size", str(logical))
    write(root, f"{devpath}/queue/physical_block_size", str(physical))
    write(root, f"{devpath}/queue/rotational", str(rotational))
    symlink(root, f"/sys/block/{name}", devpath)


def pci(root, addr_path, driver):
    write(root, f"{addr_path}/vendor", "0x1000")
    symlink(root, f"{addr_path}/driver", f"/sys/bus/pci/drivers/{driver}")


def smartctl_key(dev):
    return f"smartctl__--json=c__-n__standby__-a__+dev+{dev}.json"


def smartctl(root, dev, status, out):
    """A recorded `smartctl --json=c -n standby -a DEV` (file name as keeld's command_key makes it)."""
    d = root / ".keel-commands"
    d.mkdir(parents=True, exist_ok=True)
    stdout = out if isinstance(out, str) else json.dumps(out, separators=(",", ":")) + "\n"
    (d / smartctl_key(dev)).write_text(json.dumps({"status": status, "stdout": stdout}))


def header(dev, kind, protocol, status):
    return {"json_format_version": [1, 0],
            "smartctl": {"version": [7, 3], "svn_revision": "5338", "platform_info": "x86_64-linux-6.1.0-18-amd64",
                         "build_info": "(local build)", "argv": ["smartctl", "--json=c", "-n", "standby", "-a", f"/dev/{dev}"],
                         "exit_status": status},
            "local_time": {"time_t": 1763800000, "asctime": "Sat Nov 22 08:26:40 2025 UTC"},
            "device": {"name": f"/dev/{dev}", "info_name": f"/dev/{dev}", "type": kind, "protocol": protocol}}


def nvme_json(dev, model, serial, fw, capacity, used, temp, warning=0):
    j = header(dev, "nvme", "NVMe", 0)
    j.update({
        "model_name": model, "serial_number": serial, "firmware_version": fw,
        "nvme_pci_vendor": {"id": 5197, "subsystem_id": 5197}, "nvme_ieee_oui_identifier": 9528,
        "nvme_total_capacity": capacity, "nvme_unallocated_capacity": 0, "nvme_controller_id": 6,
        "nvme_version": {"string": "1.4", "value": 66560}, "nvme_number_of_namespaces": 32,
        "nvme_namespaces": [{"id": 1, "size": {"blocks": capacity // 512, "bytes": capacity},
                             "capacity": {"blocks": capacity // 512, "bytes": capacity},
                             "utilization": {"blocks": capacity // 1024, "bytes": capacity // 2},
                             "formatted_lba_size": 512, "eui64": {"oui": 9528, "ext_id": 775209100000}}],
        "user_capacity": {"blocks": capacity // 512, "bytes": capacity}, "logical_block_size": 512,
        "smart_support": {"available": True, "enabled": True},
        "smart_status": {"passed": warning == 0, "nvme": {"value": warning}},
        "nvme_smart_health_information_log": {
            "critical_warning": warning, "temperature": temp, "available_spare": 100, "available_spare_threshold": 10,
            "percentage_used": used, "data_units_read": 181723411, "data_units_written": 245891022,
            "host_reads": 2817263526, "host_writes": 3918274611, "controller_busy_time": 1893,
            "power_cycles": 41, "power_on_hours": 12034, "unsafe_shutdowns": 17, "media_errors": 0,
            "num_err_log_entries": 0, "warning_temp_time": 0, "critical_comp_time": 0,
            "temperature_sensors": [temp, temp + 9, temp + 2]},
        "temperature": {"current": temp}, "power_cycle_count": 41, "power_on_time": {"hours": 12034},
    })
    return j


NVME_MODELS = [("SAMSUNG MZQL23T8HCLS-00A07", "S64HNE0T80{:04d}", "GDC5602Q"),
               ("Micron_7450_MTFDKCC3T8TFR", "2241393F{:04X}", "E2MU200")]
NVME_BYTES = 3840755982336


def make_nvme_sas_server(root):
    """2-socket server: 12 U.2 NVMe (6 Samsung PM9A3, 6 Micron 7450 PRO, 3.84 TB) behind PCIe root
    ports of both sockets, a Broadcom SAS3008 HBA (mpt3sas) with 4 Seagate Exos X18 SAS HDDs, and a
    LUKS2 volume on the first NVMe drive."""
    for n in range(12):
        model, serial_fmt, fw = NVME_MODELS[n // 6]
        serial = serial_fmt.format(1234 + n)
        bus = 0x41 + n if n < 6 else 0xc1 + n - 6
        rootport = "/sys/devices/pci0000:40" if n < 6 else "/sys/devices/pci0000:c0"
        pdev = f"{rootport}/0000:{rootport[-2:]}:01.{n % 6}/0000:{bus:02x}:00.0"
        pci(root, pdev, "nvme")
        ctrl = f"{pdev}/nvme/nvme{n}"
        write(root, f"{ctrl}/model", model.ljust(40))
        write(root, f"{ctrl}/serial", serial.ljust(20))
        write(root, f"{ctrl}/firmware_rev", fw)
        write(root, f"{ctrl}/transport", "pcie")
        symlink(root, f"{ctrl}/device", pdev)
        symlink(root, f"/sys/class/nvme/nvme{n}", ctrl)
        block(root, f"{ctrl}/nvme{n}n1", f"nvme{n}n1", NVME_BYTES // 512)
        write(root, f"{ctrl}/nvme{n}n1/wwid", f"eui.36344730528{n:05d}2500253845000001")
        smartctl(root, f"nvme{n}", 0, nvme_json(f"nvme{n}", model, serial, fw, NVME_BYTES, used=93 if n == 11 else n, temp=34 + n))
    # A LUKS2 mapping on nvme0n1p2.
    part = "/sys/devices/pci0000:40/0000:40:01.0/0000:41:00.0/nvme/nvme0/nvme0n1/nvme0n1p2"
    write(root, f"{part}/size", "7499378688")
    write(root, f"{part}/partition", "2")
    dm = "/sys/devices/virtual/block/dm-0"
    write(root, f"{dm}/size", "7499345920")
    write(root, f"{dm}/dm/name", "luks-data")
    write(root, f"{dm}/dm/uuid", "CRYPT-LUKS2-6f1d3c8e4b2a4d7f9e0c1b2a3d4e5f60-luks-data")
    symlink(root, f"{dm}/slaves/nvme0n1p2", part)
    symlink(root, "/sys/block/dm-0", dm)
    # A loop device, ignored.
    block(root, "/sys/devices/virtual/block/loop0", "loop0", 0)
    # SAS HBA with 4 HDDs.
    hba = "/sys/devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0"
    pci(root, hba, "mpt3sas")
    for i in range(4):
        name = "sd" + "abcd"[i]
        serial = f"ZR5{i:02d}K7H0000C2143{i}WQ4"
        sdev = f"{hba}/host0/port-0:{i}/end_device-0:{i}/target0:0:{i}/0:0:{i}:0"
        write(root, f"{sdev}/vendor", "SEAGATE ")
        write(root, f"{sdev}/model", "ST18000NM004J   ")
        write(root, f"{sdev}/rev", "E004")
        write(root, f"{sdev}/wwid", f"naa.5000c500d5a3b1c{i}")
        write(root, f"{sdev}/vpd_pg80", bytes([0, 0x80, 0, len(serial)]) + serial.encode())
        bdev = f"{sdev}/block/{name}"
        block(root, bdev, name, 35156656128, 512, 4096, rotational=1)
        symlink(root, f"{bdev}/device", sdev)
        j = header(name, "scsi", "SCSI", 0)
        j.update({"scsi_vendor": "SEAGATE", "scsi_product": "ST18000NM004J", "scsi_model_name": "SEAGATE ST18000NM004J",
                  "scsi_revision": "E004", "scsi_version": "SPC-5",
                  "user_capacity": {"blocks": 35156656128, "bytes": 18000207937536},
                  "logical_block_size": 512, "physical_block_size": 4096, "rotation_rate": 7200,
                  "form_factor": {"scsi_value": 2, "name": "3.5 inches"}, "logical_unit_id": f"0x5000c500d5a3b1c{i}",
                  "serial_number": serial, "device_type": {"scsi_terminology": "direct access block device", "scsi_value": 0},
                  "scsi_transport_protocol": {"name": "SAS (SPL-4)", "value": 6},
                  "smart_support": {"available": True, "enabled": True}, "temperature_warning": {"enabled": True},
                  "smart_status": {"passed": True}, "temperature": {"current": 31 + i, "drive_trip": 60},
                  "power_on_time": {"hours": 20411, "minutes": 7}, "scsi_grown_defect_list": 0})
        smartctl(root, name, 0, j)


def ata_json(dev, model, serial, fw, capacity, rotation, attrs, passed=True, status=0):
    j = header(dev, "sat", "ATA", status)
    j.update({
        "model_family": "Samsung based SSDs" if rotation == 0 else "Seagate Exos 7E8",
        "model_name": model, "serial_number": serial, "wwn": {"naa": 5, "oui": 9528, "id": 61234567890},
        "firmware_version": fw, "user_capacity": {"blocks": capacity // 512, "bytes": capacity},
        "logical_block_size": 512, "physical_block_size": 512 if rotation == 0 else 4096, "rotation_rate": rotation,
        "form_factor": {"ata_value": 3 if rotation == 0 else 2, "name": "2.5 inches" if rotation == 0 else "3.5 inches"},
        "in_smartctl_database": True,
        "ata_version": {"string": "ACS-4 T13/BSR INCITS 529 revision 5", "major_value": 4092, "minor_value": 94},
        "sata_version": {"string": "SATA 3.3", "value": 511},
        "interface_speed": {"max": {"sata_value": 14, "string": "6.0 Gb/s", "units_per_second": 60, "bits_per_unit": 100000000}},
        "smart_support": {"available": True, "enabled": True},
        "smart_status": {"passed": passed},
        "ata_smart_attributes": {"revision": 1, "table": [
            {"id": a, "name": n, "value": v, "worst": v, "thresh": t, "when_failed": wf,
             "flags": {"value": 51, "string": "PO--CK ", "prefailure": True, "updated_online": True, "performance": False,
                       "error_rate": False, "event_count": False, "auto_keep": True},
             "raw": {"value": raw, "string": str(raw)}} for a, n, v, t, wf, raw in attrs]},
        "power_on_time": {"hours": 18765}, "power_cycle_count": 112, "temperature": {"current": 31},
    })
    return j


def make_edge_box(root):
    """A small edge box: one Samsung 870 EVO 500 GB SATA SSD on the chipset's AHCI controller."""
    hba = "/sys/devices/pci0000:00/0000:00:17.0"
    pci(root, hba, "ahci")
    sdev = f"{hba}/ata1/host0/target0:0:0/0:0:0:0"
    write(root, f"{sdev}/vendor", "ATA     ")
    write(root, f"{sdev}/model", "Samsung SSD 870 ")
    write(root, f"{sdev}/rev", "2B6Q")
    write(root, f"{sdev}/vpd_pg80", bytes([0, 0x80, 0, 20]) + b"     S6PWNX0T412345A")
    block(root, f"{sdev}/block/sda", "sda", 976773168, 512, 512, rotational=0)
    symlink(root, f"{sdev}/block/sda/device", sdev)
    smartctl(root, "sda", 0, ata_json("sda", "Samsung SSD 870 EVO 500GB", "S6PWNX0T412345A", "SVT02B6Q", 500107862016, 0, [
        (5, "Reallocated_Sector_Ct", 100, 10, "", 0), (9, "Power_On_Hours", 95, 0, "", 18765),
        (12, "Power_Cycle_Count", 99, 0, "", 112), (177, "Wear_Leveling_Count", 97, 0, "", 21),
        (179, "Used_Rsvd_Blk_Cnt_Tot", 100, 10, "", 0), (187, "Uncorrectable_Error_Cnt", 100, 0, "", 0),
        (190, "Airflow_Temperature_Cel", 69, 0, "", 31), (241, "Total_LBAs_Written", 99, 0, "", 48271635321)]))


def make_failing_server(root):
    """A server whose SATA HDD (Seagate Exos 7E8 4 TB) fails SMART: reallocated sectors past threshold."""
    hba = "/sys/devices/pci0000:00/0000:00:11.5"
    pci(root, hba, "ahci")
    for i, (name, serial, bad) in enumerate([("sda", "ZC1A2B3C", True), ("sdb", "ZC1A2B4D", False)]):
        sdev = f"{hba}/ata{i + 1}/host{i}/target{i}:0:0/{i}:0:0:0"
        write(root, f"{sdev}/vendor", "ATA")
        write(root, f"{sdev}/model", "ST4000NM0035-1V4")
        write(root, f"{sdev}/rev", "TN05")
        write(root, f"{sdev}/vpd_pg80", bytes([0, 0x80, 0, 20]) + serial.rjust(20).encode())
        block(root, f"{sdev}/block/{name}", name, 7814037168, 512, 4096, rotational=1)
        symlink(root, f"{sdev}/block/{name}/device", sdev)
        realloc = (5, "Reallocated_Sector_Ct", 1, 10, "now", 4016) if bad else (5, "Reallocated_Sector_Ct", 100, 10, "", 0)
        smartctl(root, name, 24 if bad else 0, ata_json(name, "ST4000NM0035-1V4107", serial, "TN05", 4000787030016, 7200, [
            (1, "Raw_Read_Error_Rate", 77, 44, "", 55123432), realloc, (9, "Power_On_Hours", 52, 0, "", 42381),
            (187, "Reported_Uncorrect", 1 if bad else 100, 0, "", 311 if bad else 0),
            (194, "Temperature_Celsius", 36, 0, "", 36)], passed=not bad, status=24 if bad else 0))


def make_degraded_server(root):
    """The failing server with smartctl printing garbage for one drive and missing for the other."""
    make_failing_server(root)
    smartctl(root, "sda", 4, "\x00\x17garbage {not json")
    (root / ".keel-commands" / smartctl_key("sdb")).unlink()


# ----------------------------------------------------------------------------- tests

def get(k, s, path):
    r = s.get(k.url + path)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def test_nvme_and_sas_server(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_nvme_sas_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert get(k, s, "/redfish/v1/Systems/system")["Storage"] == {"@odata.id": STO}
    ids = [m["@odata.id"].rsplit("/", 1)[1] for m in get(k, s, STO)["Members"]]
    assert ids == [f"NVMe{n}" for n in range(12)] + ["SAS0"]
    n0 = get(k, s, STO + "/NVMe0")
    assert n0["Drives"] == [{"@odata.id": DRV + "/nvme0"}] and n0["Status"]["Health"] == "OK"
    d = get(k, s, DRV + "/nvme0")
    assert d["Model"] == "SAMSUNG MZQL23T8HCLS-00A07" and d["Manufacturer"] == "Samsung"
    assert (d["SerialNumber"], d["Revision"]) == ("S64HNE0T801234", "GDC5602Q")
    assert (d["CapacityBytes"], d["BlockSizeBytes"], d["MediaType"], d["Protocol"]) == (NVME_BYTES, 512, "SSD", "NVMe")
    assert (d["PredictedMediaLifeLeftPercent"], d["FailurePredicted"]) == (100, False)
    assert d["Status"] == {"State": "Enabled", "Health": "OK"} and "RotationSpeedRPM" not in d
    assert d["Identifiers"] == [{"DurableNameFormat": "NGUID", "DurableName": "36344730528000002500253845000001"}]
    d = get(k, s, DRV + "/nvme11")
    assert (d["Model"], d["Manufacturer"], d["SerialNumber"], d["Revision"]) == (
        "Micron_7450_MTFDKCC3T8TFR", "Micron", "2241393F04DD", "E2MU200")
    # Worn out (93 % used): Warning, with the StorageDevice message, and the Storage rolls it up.
    assert (d["PredictedMediaLifeLeftPercent"], d["FailurePredicted"], d["Status"]["Health"]) == (7, False, "Warning")
    [c] = d["Status"]["Conditions"]
    assert c["MessageId"] == "StorageDevice.1.5.DrivePredictedMediaLifeLow" and c["MessageArgs"][1:] == ["7", "10"]
    assert get(k, s, STO + "/NVMe11")["Status"]["HealthRollup"] == "Warning"
    assert get(k, s, DRV + "/nvme10")["PredictedMediaLifeLeftPercent"] == 90
    # The LUKS2 volume sits on the first drive.
    vols = get(k, s, STO + "/NVMe0/Volumes")["Members"]
    assert vols == [{"@odata.id": STO + "/NVMe0/Volumes/luks-data"}]
    v = get(k, s, STO + "/NVMe0/Volumes/luks-data")
    assert (v["Encrypted"], v["EncryptionTypes"], v["CapacityBytes"]) == (True, ["SoftwareAssisted"], 7499345920 * 512)
    assert v["Links"]["Drives"] == [{"@odata.id": DRV + "/nvme0"}]
    assert get(k, s, DRV + "/nvme0")["Links"] == {"Storage": {"@odata.id": STO + "/NVMe0"}, "Volumes@odata.count": 1, "Volumes": vols}
    assert len(get(k, s, DRV)["Members"]) == 16
    assert get(k, s, "/redfish/v1/Chassis/chassis")["Drives"] == {"@odata.id": DRV}
    assert get(k, s, STO + "/NVMe1/Volumes")["Members"] == []
    assert get(k, s, STO + "/NVMe0/Controllers")["Members"] == [{"@odata.id": STO + "/NVMe0/Controllers/0"}]
    c = get(k, s, STO + "/NVMe11/Controllers/0")
    assert (c["Model"], c["Manufacturer"], c["SerialNumber"], c["FirmwareVersion"]) == (
        "Micron_7450_MTFDKCC3T8TFR", "Micron", "2241393F04DD", "E2MU200")
    assert c["SupportedDeviceProtocols"] == ["NVMe"] and c["Description"] == "driver nvme, PCI 0000:c6:00.0"
    c = get(k, s, STO + "/SAS0/Controllers/0")
    assert c["SupportedDeviceProtocols"] == ["SAS", "SATA"] and c["Description"] == "driver mpt3sas, PCI 0000:5e:00.0"
    assert s.get(k.url + STO + "/SAS0/Controllers/1").status_code == 404
    sas = get(k, s, STO + "/SAS0?$expand=.")
    assert "mpt3sas" in sas["Description"] and "0000:5e:00.0" in sas["Description"]
    drives = sas["Drives"]
    assert [x["Id"] for x in drives] == ["sda", "sdb", "sdc", "sdd"]
    h = drives[2]
    assert (h["Manufacturer"], h["Model"], h["Revision"], h["SerialNumber"]) == ("Seagate", "ST18000NM004J", "E004", "ZR502K7H0000C21432WQ4")
    assert (h["CapacityBytes"], h["BlockSizeBytes"], h["MediaType"], h["Protocol"], h["RotationSpeedRPM"]) == (
        18000207937536, 512, "HDD", "SAS", 7200)
    assert h["Identifiers"] == [{"DurableNameFormat": "NAA", "DurableName": "5000C500D5A3B1C2"}]
    assert h["FailurePredicted"] is False and h["Status"]["Health"] == "OK" and "PredictedMediaLifeLeftPercent" not in h
    assert s.get(k.url + DRV + "/nvme99").status_code == 404
    assert s.get(k.url + STO + "/NVMe99").status_code == 404


def test_edge_box_sata_ssd(keeld_factory, tmp_path):
    root = tmp_path / "edge"
    make_edge_box(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert [m["@odata.id"] for m in get(k, s, STO)["Members"]] == [STO + "/SATA0"]
    st = get(k, s, STO + "/SATA0")
    assert "ahci" in st["Description"] and st["Drives@odata.count"] == 1
    d = get(k, s, DRV + "/sda")
    assert (d["Model"], d["Manufacturer"], d["SerialNumber"], d["Revision"]) == (
        "Samsung SSD 870 EVO 500GB", "Samsung", "S6PWNX0T412345A", "SVT02B6Q")
    assert (d["CapacityBytes"], d["BlockSizeBytes"], d["MediaType"], d["Protocol"]) == (500107862016, 512, "SSD", "SATA")
    assert (d["PredictedMediaLifeLeftPercent"], d["FailurePredicted"]) == (97, False)
    assert "RotationSpeedRPM" not in d and d["Status"]["Health"] == "OK"


def test_smart_failure_is_critical_and_named(keeld_factory, tmp_path):
    root = tmp_path / "failing"
    make_failing_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    st = get(k, s, STO + "/SATA0")
    assert st["Status"] == {"State": "Enabled", "Health": "OK", "HealthRollup": "Critical"}
    d = get(k, s, DRV + "/sda")
    assert d["FailurePredicted"] is True and d["Status"]["Health"] == "Critical"
    assert (d["Model"], d["Manufacturer"], d["Revision"], d["RotationSpeedRPM"], d["MediaType"]) == (
        "ST4000NM0035-1V4107", "Seagate", "TN05", 7200, "HDD")
    [c] = d["Status"]["Conditions"]
    assert c["MessageId"] == "StorageDevice.1.5.DriveFailure" and c["Severity"] == "Critical"
    assert "Reallocated_Sector_Ct" in c["Message"] and "attribute 5" in c["Message"]
    assert c["OriginOfCondition"] == {"@odata.id": DRV + "/sda"}
    ok = get(k, s, DRV + "/sdb")
    assert ok["FailurePredicted"] is False and ok["Status"] == {"State": "Enabled", "Health": "OK"}


def test_bad_smartctl_output_degrades_only_that_drive(keeld_factory, tmp_path):
    root = tmp_path / "odd"
    make_degraded_server(root)  # sda: garbage and a non-zero exit; sdb: smartctl missing
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    for name in ("sda", "sdb"):
        d = get(k, s, DRV + f"/{name}")
        assert d["Model"] == "ST4000NM0035-1V4" and d["Revision"] == "TN05", "sysfs values stay"
        assert d["CapacityBytes"] == 7814037168 * 512 and d["MediaType"] == "HDD"
        assert "FailurePredicted" not in d and "PredictedMediaLifeLeftPercent" not in d
        assert d["Status"]["Health"] == "OK"
        [c] = d["Status"]["Conditions"]
        assert c["MessageId"] == "ResourceEvent.1.4.ResourceErrorsDetected" and c["MessageArgs"][0] == "FailurePredicted"
    assert "without readable JSON" in get(k, s, DRV + "/sda")["Status"]["Conditions"][0]["Message"]
    assert "not available" in get(k, s, DRV + "/sdb")["Status"]["Conditions"][0]["Message"]
    assert k.logs().count("no SMART data") == 2, "logged once per drive"


def test_device_vanishing_mid_read(keeld_factory, tmp_path):
    root = tmp_path / "vanish"
    make_nvme_sas_server(root)
    hba = root / "sys/devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0"
    # sdb's device directory is gone (only the block entry is left), sdc entirely (a dangling link).
    shutil.rmtree(hba / "host0/port-0:1/end_device-0:1/target0:0:1/0:0:1:0/block/sdb/queue")
    for f in ("model", "vendor", "rev", "vpd_pg80"):
        (hba / "host0/port-0:1/end_device-0:1/target0:0:1/0:0:1:0" / f).unlink()
    shutil.rmtree(hba / "host0/port-0:2")
    (root / "sys/class/nvme/nvme3/model").unlink()
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    sas = get(k, s, STO + "/SAS0?$expand=.")
    assert [d["Id"] for d in sas["Drives"]] == ["sda", "sdb", "sdd"]
    sdb = sas["Drives"][1]
    assert sdb["CapacityBytes"] == 18000207937536 and sdb["Model"] == "ST18000NM004J", "smartctl still knows it"
    assert get(k, s, DRV + "/nvme3")["Model"] == "SAMSUNG MZQL23T8HCLS-00A07"
    r = s.get(k.url + "/redfish/v1/Systems/system?$expand=.($levels=3)")
    assert r.status_code == 200
def test_recording_this_machine_serves_the_same_storage(keeld, keeld_factory, tmp_path):
    rec = tmp_path / "recorded"
    out = subprocess.run([KEELD, "host", "record", str(rec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    replay = keeld_factory("--host-root", str(rec))
    for path in (STO + "?$expand=.($levels=2)", DRV + "?$expand=."):
        live = get(keeld, keeld.admin(), path)
        recorded = get(replay, replay.admin(), path)
        assert live == recorded, path


# ----------------------------------------------------------------------------- Service Validator

@pytest.mark.parametrize("maker", [make_nvme_sas_server, make_edge_box, make_failing_server, make_degraded_server, None],
                         ids=["nvme_sas_server", "edge_box", "failing_server", "degraded_server", "live"])
def test_service_validator_on_storage_fixtures(maker, keeld_factory, tmp_path):
    if maker is None:
        k = keeld_factory()
    else:
        root = tmp_path / "host"
        maker(root)
        k = keeld_factory("--host-root", str(root))
    run_service_validator(k, tmp_path)


def test_each_drives_firmware_is_in_the_firmware_inventory(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_nvme_sas_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    drives = get(k, s, "/redfish/v1/Chassis/chassis/Drives?$expand=.")["Members"]
    fw = {m["Id"]: m for m in get(k, s, "/redfish/v1/UpdateService/FirmwareInventory?$expand=.")["Members"]}
    with_rev = [d for d in drives if d.get("Revision")]
    assert len(with_rev) == 16, "12 NVMe and 4 SAS drives report firmware"
    for d in with_rev:
        f = fw[f"Drive_{d['Id']}"]
        assert f["Version"] == d["Revision"]
        assert f["RelatedItem"] == [{"@odata.id": d["@odata.id"]}]
        assert f["Updateable"] is False
    assert {m["Version"] for m in fw.values() if m["Id"].startswith("Drive_")} >= {d["Revision"] for d in with_rev}


def test_drive_temperature_from_smart(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_nvme_sas_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    d = get(k, s, "/redfish/v1/Chassis/chassis/Drives/nvme5")
    env = get(k, s, d["EnvironmentMetrics"]["@odata.id"])
    assert env["TemperatureCelsius"]["Reading"] == 34 + 5, "the fixture's smartctl reports 34 + n °C"
    # A drive without SMART (or without a temperature) has no EnvironmentMetrics.
    bare = tmp_path / "edge"
    make_edge_box(bare)
    (bare / ".keel-commands").exists() and [p.unlink() for p in (bare / ".keel-commands").glob("smartctl*")]
    k2 = keeld_factory("--host-root", str(bare))
    for m in get(k2, k2.admin(), "/redfish/v1/Chassis/chassis/Drives?$expand=.")["Members"]:
        assert "EnvironmentMetrics" not in m
        assert k2.admin().get(k2.url + m["@odata.id"] + "/EnvironmentMetrics").status_code == 404
