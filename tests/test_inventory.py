"""Inventory through the host root: a recorded machine is served by the same parsers as the live one."""
import struct
import subprocess
import pytest

from conftest import KEELD, run_service_validator

SYS = "/redfish/v1/Systems/system"


def smbios(kind, handle, body, strings):
    """One SMBIOS structure (DSP0134 §6.1.2)."""
    data = bytes([kind, len(body) + 4]) + struct.pack("<H", handle) + bytes(body)
    if strings:
        data += b"".join(s.encode() + b"\0" for s in strings) + b"\0"
    else:
        data += b"\0\0"
    return data


def dimm(handle, size_mib, kind, locator, maker, serial, part, speed, configured):
    """A type 17 Memory Device structure (SMBIOS 3.x layout up to offset 0x28)."""
    b = bytearray(0x28 - 4)

    def put(off, fmt, v):
        struct.pack_into(fmt, b, off - 4, v)

    put(0x08, "<H", 72)   # total width (ECC)
    put(0x0A, "<H", 64)   # data width
    if size_mib >= 32 * 1024:
        put(0x0C, "<H", 0x7FFF)
        put(0x1C, "<I", size_mib)
    else:
        put(0x0C, "<H", size_mib)
    put(0x10, "B", 1)
    put(0x11, "B", 2)
    put(0x12, "B", kind)
    put(0x15, "<H", speed)
    put(0x17, "B", 3)
    put(0x18, "B", 4)
    put(0x1A, "B", 5)
    put(0x1B, "B", 2)     # rank 2
    put(0x20, "<H", configured)
    return smbios(17, handle, b, [locator, "BANK 0", maker, serial, part])


def make_server_fixture(root):
    """A 2-socket server: 2 x 4 cores x 2 threads, 4 DIMMs (one slot empty), DMI identity."""
    (root / "proc/sys/kernel").mkdir(parents=True)
    blocks = []
    for n in range(16):
        socket, core = n // 8, (n % 8) // 2
        blocks.append(
            f"processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            f"model name\t: AMD EPYC 9124 16-Core Processor\nstepping\t: 1\nmicrocode\t: 0xa10113e\n"
            f"cpu MHz\t\t: 3000.000\nphysical id\t: {socket}\ncore id\t\t: {core}\nflags\t\t: fpu lm sse2\n")
    (root / "proc/cpuinfo").write_text("\n".join(blocks) + "\n")
    (root / "proc/meminfo").write_text("MemTotal:       263856128 kB\nMemFree:  1 kB\n")
    (root / "proc/sys/kernel/hostname").write_text("rack12-node3\n")
    (root / "proc/sys/kernel/osrelease").write_text("6.12.48+deb13-amd64\n")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\nID=debian\n')
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    for k, v in {"sys_vendor": "Supermicro", "product_name": "AS -2025HS-TNR", "product_serial": "S123456X",
                 "bios_version": "1.4a", "bios_vendor": "American Megatrends International, LLC.",
                 "bios_date": "03/08/2024", "product_uuid": "4c4c4544-0042-3510-8048-b2c04f4e3332",
                 "chassis_type": "23"}.items():
        (dmi / k).write_text(v + "\n")
    for n in range(16):
        t = root / f"sys/devices/system/cpu/cpu{n}/cpufreq"
        t.mkdir(parents=True)
        (t / "cpuinfo_max_freq").write_text("3700000\n")
    table = b""
    table += dimm(0x1100, 65536, 0x22, "P1-DIMMA1", "Samsung", "03A1B2C3", "M321R8GA0BB0-CQKZJ", 4800, 4800)
    table += dimm(0x1101, 65536, 0x22, "P1-DIMMB1", "Samsung", "03A1B2C4", "M321R8GA0BB0-CQKZJ", 4800, 4800)
    table += dimm(0x1102, 65536, 0x22, "P2-DIMMA1", "Samsung", "03A1B2C5", "M321R8GA0BB0-CQKZJ", 4800, 4400)
    table += dimm(0x1103, 65536, 0x22, "P2-DIMMB1", "Samsung", "03A1B2C6", "M321R8GA0BB0-CQKZJ", 4800, 4400)
    empty = bytearray(dimm(0x1104, 0, 0x22, "P2-DIMMC1", "NO DIMM", "NO DIMM", "NO DIMM", 0, 0))
    struct.pack_into("<H", empty, 0x0C, 0)
    table += bytes(empty)
    table += smbios(127, 0xFFFF, [], [])
    t = root / "sys/firmware/dmi/tables"
    t.mkdir(parents=True)
    (t / "DMI").write_bytes(table)


def test_a_recorded_server_is_served_with_its_values(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_server_fixture(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    sys = s.get(k.url + SYS).json()
    assert sys["Manufacturer"] == "Supermicro" and sys["Model"] == "AS -2025HS-TNR"
    assert sys["SerialNumber"] == "S123456X" and sys["BiosVersion"] == "1.4a"
    assert sys["UUID"] == "4c4c4544-0042-3510-8048-b2c04f4e3332"
    assert sys["HostName"] == "rack12-node3"
    assert sys["ProcessorSummary"] == {"Count": 2, "CoreCount": 8, "LogicalProcessorCount": 16,
                                       "Model": "AMD EPYC 9124 16-Core Processor"}
    assert sys["MemorySummary"]["TotalSystemMemoryGiB"] == 256
    cpus = s.get(k.url + SYS + "/Processors?$expand=.").json()["Members"]
    assert [c["Id"] for c in cpus] == ["CPU0", "CPU1"]
    c = cpus[1]
    assert (c["TotalCores"], c["TotalThreads"], c["MaxSpeedMHz"], c["OperatingSpeedMHz"]) == (4, 8, 3700, 3000)
    assert c["Manufacturer"] == "Advanced Micro Devices, Inc." and c["InstructionSet"] == "x86-64"
    assert c["ProcessorId"]["EffectiveFamily"] == "25" and c["ProcessorId"]["MicrocodeInfo"] == "0xa10113e"
    mem = s.get(k.url + SYS + "/Memory?$expand=.").json()["Members"]
    assert len(mem) == 4, "the empty slot is not listed"
    m = mem[2]
    assert m["Name"] == "P2-DIMMA1" and m["CapacityMiB"] == 65536 and m["MemoryDeviceType"] == "DDR5"
    assert (m["OperatingSpeedMhz"], m["AllowedSpeedsMHz"], m["RankCount"]) == (4400, [4800], 2)
    assert m["PartNumber"] == "M321R8GA0BB0-CQKZJ" and m["SerialNumber"] == "03A1B2C5"
    assert m["Location"]["PartLocation"]["ServiceLabel"] == "P2-DIMMA1"
    assert s.get(k.url + "/redfish/v1/Chassis/chassis").json()["ChassisType"] == "RackMount"
    sw = {m["Id"]: m for m in s.get(k.url + "/redfish/v1/UpdateService/SoftwareInventory?$expand=.").json()["Members"]}
    assert sw["os"]["Name"] == "Debian GNU/Linux 13 (trixie)" and sw["os"]["Version"] == "13"
    assert sw["kernel"]["Version"] == "6.12.48+deb13-amd64"
    assert sw["keeld"]["Version"] and "incus" not in sw
    fw = s.get(k.url + "/redfish/v1/UpdateService/FirmwareInventory/bios").json()
    assert (fw["Version"], fw["ReleaseDate"]) == ("1.4a", "2024-03-08T00:00:00Z")
    assert fw["Manufacturer"] == "American Megatrends International, LLC."


def test_missing_and_garbage_files_degrade_only_those_properties(keeld_factory, tmp_path):
    root = tmp_path / "odd"
    make_server_fixture(root)
    (root / "sys/firmware/dmi/tables/DMI").write_bytes(b"\x11\x50garbage")
    (root / "sys/class/dmi/id/product_name").unlink()
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    r = s.get(k.url + SYS)
    assert r.status_code == 200
    sys = r.json()
    assert "Model" not in sys and sys["Manufacturer"] == "Supermicro"
    assert s.get(k.url + SYS + "/Memory").json()["Members"] == []
    # Without DIMMs, the kernel's view of memory is reported.
    assert sys["MemorySummary"]["TotalSystemMemoryGiB"] == round(263856128 / 1024 / 1024, 2)


def test_recording_this_machine_serves_the_same_inventory(keeld, keeld_factory, tmp_path):
    rec = tmp_path / "recorded"
    out = subprocess.run([KEELD, "host", "record", str(rec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (rec / "proc/cpuinfo").read_text() == open("/proc/cpuinfo").read()
    replay = keeld_factory("--host-root", str(rec))
    live, recorded = keeld.admin().get(keeld.url + SYS).json(), replay.admin().get(replay.url + SYS).json()
    for prop in ("ProcessorSummary", "MemorySummary", "HostName", "Manufacturer", "Model", "UUID"):
        assert live.get(prop) == recorded.get(prop), prop
    lp = keeld.admin().get(keeld.url + SYS + "/Processors?$expand=.").json()["Members"]
    rp = replay.admin().get(replay.url + SYS + "/Processors?$expand=.").json()["Members"]
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("OperatingSpeedMHz",)} for m in ms]
    assert strip(lp) == strip(rp)


def make_hwmon(root):
    """Two hwmon chips: a CPU package sensor near its limit and a board controller with a fan."""
    chips = {
        "hwmon0": {"name": "coretemp", "temp1_input": "84000", "temp1_label": "Package id 0", "temp1_max": "82000",
                   "temp1_crit": "100000", "temp2_input": "51000", "temp2_label": "Core 0", "temp2_crit": "100000"},
        "hwmon1": {"name": "nct6798", "fan1_input": "1830", "fan1_min": "300", "in0_input": "1216",
                   "power1_input": "142500000"},
    }
    for hw, files in chips.items():
        d = root / "sys/class/hwmon" / hw
        d.mkdir(parents=True)
        for f, v in files.items():
            (d / f).write_text(v + "\n")


def test_hwmon_sensors_thresholds_and_thermal_subsystem(keeld_factory, tmp_path):
    root = tmp_path / "hw"
    make_server_fixture(root)
    make_hwmon(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    base = "/redfish/v1/Chassis/chassis"
    sensors = {m["Id"]: m for m in s.get(k.url + base + "/Sensors?$expand=.").json()["Members"]}
    assert set(sensors) == {"coretemp_temp1", "coretemp_temp2", "nct6798_fan1", "nct6798_in0", "nct6798_power1"}
    pkg = sensors["coretemp_temp1"]
    assert (pkg["Reading"], pkg["ReadingUnits"], pkg["ReadingType"]) == (84.0, "Cel", "Temperature")
    assert pkg["Thresholds"] == {"UpperCritical": {"Reading": 100.0}, "UpperCaution": {"Reading": 82.0}}
    assert pkg["Status"]["Health"] == "Warning", "above its max, below critical"
    assert sensors["coretemp_temp2"]["Status"]["Health"] == "OK"
    assert sensors["nct6798_in0"]["Reading"] == 1.216 and sensors["nct6798_in0"]["ReadingUnits"] == "V"
    assert sensors["nct6798_power1"]["Reading"] == 142.5 and sensors["nct6798_power1"]["ReadingUnits"] == "W"
    thermal = s.get(k.url + base + "/ThermalSubsystem?$expand=.($levels=2)").json()
    fans = thermal["Fans"]["Members"]
    assert [f["Id"] for f in fans] == ["nct6798_fan1"] and fans[0]["SpeedPercent"]["SpeedRPM"] == 1830
    temps = thermal["ThermalMetrics"]["TemperatureReadingsCelsius"]
    assert {t["DeviceName"]: t["Reading"] for t in temps} == {"coretemp Package id 0": 84.0, "coretemp Core 0": 51.0}
    # Readings are live: the chip changes, the next GET shows it.
    (root / "sys/class/hwmon/hwmon0/temp1_input").write_text("101000\n")
    assert s.get(k.url + base + "/Sensors/coretemp_temp1").json()["Status"]["Health"] == "Critical"
    # A sensor whose input vanished reads null, the rest are unaffected.
    (root / "sys/class/hwmon/hwmon1/fan1_input").unlink()
    r = s.get(k.url + base + "/Sensors/nct6798_fan1")
    assert r.status_code == 200 and r.json()["Reading"] is None
    assert s.get(k.url + base + "/Sensors/nct6798_in0").json()["Reading"] == 1.216


def make_power_supplies(root):
    """An edge box on a USB UPS: mains adapter online, the UPS on battery (offline), a laptop-style battery."""
    for name, attrs in {"AC": {"type": "Mains", "online": "1"},
                        "ups-0": {"type": "UPS", "online": "0", "present": "1", "manufacturer": "APC",
                                  "model_name": "Back-UPS ES 700", "serial_number": "4B1234P56789"},
                        "BAT0": {"type": "Battery", "status": "Charging", "capacity": "80"}}.items():
        d = root / "sys/class/power_supply" / name
        d.mkdir(parents=True)
        for f, v in attrs.items():
            (d / f).write_text(v + "\n")


def test_power_subsystem_from_power_supplies_and_hwmon(keeld_factory, tmp_path):
    root = tmp_path / "hw"
    make_server_fixture(root)
    make_hwmon(root)
    make_power_supplies(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    base = "/redfish/v1/Chassis/chassis"
    assert s.get(k.url + base).json()["PowerSubsystem"] == {"@odata.id": base + "/PowerSubsystem"}
    ps = s.get(k.url + base + "/PowerSubsystem?$expand=.($levels=2)").json()
    supplies = {m["Id"]: m for m in ps["PowerSupplies"]["Members"]}
    assert sorted(supplies) == ["AC", "ups-0"], "a battery is not a power supply"
    assert supplies["AC"]["PowerSupplyType"] == "AC" and supplies["AC"]["Status"] == {"State": "Enabled", "Health": "OK"}
    ups = supplies["ups-0"]
    assert (ups["Manufacturer"], ups["Model"], ups["SerialNumber"]) == ("APC", "Back-UPS ES 700", "4B1234P56789")
    assert ups["Status"] == {"State": "UnavailableOffline", "Health": "Warning"}, "mains lost: running on its battery"
    assert s.get(k.url + base + "/PowerSubsystem/PowerSupplies/BAT0").status_code == 404
    run_service_validator(k, tmp_path)


def test_no_hwmon_means_no_thermal_subsystem(keeld_factory, tmp_path):
    root = tmp_path / "bare"
    make_server_fixture(root)
    k = keeld_factory("--host-root", str(root))
    ch = k.admin().get(k.url + "/redfish/v1/Chassis/chassis").json()
    assert "ThermalSubsystem" not in ch and "PowerSubsystem" not in ch
    assert k.admin().get(k.url + "/redfish/v1/Chassis/chassis/PowerSubsystem").status_code == 404
    assert k.admin().get(k.url + "/redfish/v1/Chassis/chassis/Sensors").json()["Members"] == []


def record_command(root, argv, stdout, status=0):
    """What `keeld host record` stores for one command (host/mod.rs command_key)."""
    import json
    import re
    key = "__".join(re.sub(r"[^A-Za-z0-9\-_.=]", "+", a) for a in argv) + ".json"
    d = root / ".keel-commands"
    d.mkdir(parents=True, exist_ok=True)
    (d / key).write_text(json.dumps({"status": status, "stdout": stdout}))


JOURNAL_ARGV = ["journalctl", "-o", "json", "-r", "-n", "1000", "--no-pager"]


def test_journal_entries_newest_first_paged_and_filtered(keeld_factory, tmp_path):
    import json
    root = tmp_path / "journal"
    make_server_fixture(root)
    base_us = 1763836800_000000  # 2025-11-22T18:40:00Z
    lines = []
    # journalctl -r prints newest first.
    for i in reversed(range(7)):
        prio = {0: "3", 3: "4"}.get(i, "6")
        lines.append(json.dumps({"__CURSOR": f"s=abc;i={i}", "__REALTIME_TIMESTAMP": str(base_us + i * 60_000_000),
                                 "PRIORITY": prio, "SYSLOG_IDENTIFIER": "kernel" if prio == "3" else "systemd",
                                 "MESSAGE": f"message {i}"}))
    lines.insert(3, "this line is not JSON")
    record_command(root, JOURNAL_ARGV, "\n".join(lines) + "\n")
    k = keeld_factory("--host-root", str(root), "--page-size", "3")
    s = k.admin()
    ls = "/redfish/v1/Systems/system/LogServices"
    assert s.get(k.url + "/redfish/v1/Systems/system").json()["LogServices"] == {"@odata.id": ls}
    svc = s.get(k.url + ls + "/Journal").json()
    assert svc["Entries"] == {"@odata.id": ls + "/Journal/Entries"} and "Actions" not in svc
    page = s.get(k.url + ls + "/Journal/Entries?$expand=.").json()
    assert page["Members@odata.count"] == 7 and len(page["Members"]) == 3
    assert [m["Message"] for m in page["Members"]] == ["message 6", "message 5", "message 4"]
    nxt = s.get(k.url + page["Members@odata.nextLink"]).json()
    assert [m["Message"] for m in nxt["Members"]] == ["message 3", "message 2", "message 1"], "nextLink keeps $expand"
    crit = s.get(k.url + ls + "/Journal/Entries?$filter=Severity eq 'Critical'&$expand=.").json()["Members"]
    assert [(m["Message"], m["Name"], m["Created"]) for m in crit] == [("message 0", "kernel", "2025-11-22T18:40:00Z")]
    late = s.get(k.url + ls + "/Journal/Entries?$filter=Created ge '2025-11-22T18:45:00Z' and Severity ne 'OK'").json()
    assert late["Members@odata.count"] == 0
    warn = s.get(k.url + ls + "/Journal/Entries?$filter=Severity eq 'Warning' or Severity eq 'Critical'").json()
    assert warn["Members@odata.count"] == 2
    one = s.get(k.url + crit[0]["@odata.id"]).json()
    assert one["EntryType"] == "Oem" and one["Severity"] == "Critical"
    # Read-only: no ClearLog, no DELETE.
    assert s.post(k.url + ls + "/Journal/Actions/LogService.ClearLog", json={}).status_code in (404, 405)
    assert s.delete(k.url + crit[0]["@odata.id"]).status_code == 405


def test_journal_failure_leaves_an_empty_log(keeld_factory, tmp_path):
    root = tmp_path / "nojournal"
    make_server_fixture(root)
    record_command(root, JOURNAL_ARGV, "Failed to open journal\n", status=1)
    k = keeld_factory("--host-root", str(root))
    r = k.admin().get(k.url + "/redfish/v1/Systems/system/LogServices/Journal/Entries")
    assert r.status_code == 200 and r.json()["Members"] == []


def make_pci(root):
    """A ConnectX-4 Lx (two functions, Gen3 x8 in a Gen3 x8 slot), an NVMe drive, and a bridge."""
    (root / "usr/share/misc").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/misc/pci.ids").write_text(
        "15b3  Mellanox Technologies\n\t1015  MT27710 Family [ConnectX-4 Lx]\n"
        "144d  Samsung Electronics Co Ltd\n\ta824  NVMe SSD Controller PM173X\n"
        "8086  Intel Corporation\n\t09a2  Ice Lake Memory Map/VT-d\nC 02  Network controller\n")
    devs = {
        "0000:3b:00.0": ("0x15b3", "0x1015", "0x020000", "mlx5_core", "8.0 GT/s PCIe", "8"),
        "0000:3b:00.1": ("0x15b3", "0x1015", "0x020000", "mlx5_core", "8.0 GT/s PCIe", "8"),
        "0000:5e:00.0": ("0x144d", "0xa824", "0x010802", "nvme", "16.0 GT/s PCIe", "4"),
        "0000:00:00.0": ("0x8086", "0x09a2", "0x060000", None, None, None),
    }
    import os
    for addr, (v, d, cls, drv, speed, width) in devs.items():
        p = root / "sys/bus/pci/devices" / addr
        p.mkdir(parents=True)
        for f, val in {"vendor": v, "device": d, "class": cls, "subsystem_vendor": v, "subsystem_device": "0x0003",
                       "revision": "0x00"}.items():
            (p / f).write_text(val + "\n")
        if speed:
            for pre in ("current", "max"):
                (p / f"{pre}_link_speed").write_text(speed + "\n")
                (p / f"{pre}_link_width").write_text(width + "\n")
        if drv:
            os.symlink(f"../../../bus/pci/drivers/{drv}", p / "driver")


def test_pcie_devices_functions_names_and_links(keeld_factory, tmp_path):
    root = tmp_path / "pci"
    make_server_fixture(root)
    make_pci(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    base = "/redfish/v1/Chassis/chassis/PCIeDevices"
    devs = {m["Id"]: m for m in s.get(k.url + base + "?$expand=.").json()["Members"]}
    assert set(devs) == {"0000_3b_00", "0000_5e_00"}, "bridges are left out"
    nic = devs["0000_3b_00"]
    assert (nic["Manufacturer"], nic["Model"], nic["DeviceType"]) == ("Mellanox Technologies", "MT27710 Family [ConnectX-4 Lx]", "MultiFunction")
    assert nic["PCIeInterface"] == {"PCIeType": "Gen3", "LanesInUse": 8, "MaxPCIeType": "Gen3", "MaxLanes": 8}
    fns = s.get(k.url + base + "/0000_3b_00/PCIeFunctions?$expand=.").json()["Members"]
    assert [(f["FunctionId"], f["VendorId"], f["DeviceId"], f["DeviceClass"]) for f in fns] == [
        (0, "0x15b3", "0x1015", "NetworkController"), (1, "0x15b3", "0x1015", "NetworkController")]
    nvme = devs["0000_5e_00"]
    assert nvme["PCIeInterface"]["PCIeType"] == "Gen4" and nvme["PCIeInterface"]["LanesInUse"] == 4
    f0 = s.get(k.url + base + "/0000_5e_00/PCIeFunctions/0").json()
    assert (f0["ClassCode"], f0["DeviceClass"], f0["FunctionType"]) == ("0x010802", "MassStorageController", "Physical")


def test_hotplugged_devices_appear_and_disappear_with_events(keeld_factory, tmp_path):
    import json
    import queue
    import shutil
    import threading
    import requests
    root = tmp_path / "hotplug"
    make_server_fixture(root)
    make_pci(root)
    k = keeld_factory("--host-root", str(root), "--inventory-refresh", "1")
    s = k.admin()
    base = "/redfish/v1/Chassis/chassis/PCIeDevices"
    events = queue.Queue()
    stream = requests.get(k.url + "/redfish/v1/EventService/SSE", auth=("admin", "Keel-Test-Pass1"),
                          verify=False, stream=True, timeout=30)
    assert stream.status_code == 200

    def reader():
        try:
            for line in stream.iter_lines(chunk_size=1, decode_unicode=True):
                if line and line.startswith("data:"):
                    events.put(json.loads(line[5:]))
        except Exception:
            pass

    threading.Thread(target=reader, daemon=True).start()

    def wait_for(message_id, origin, timeout=15):
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                e = events.get(timeout=0.5)["Events"][0]
            except queue.Empty:
                continue
            if e["MessageId"] == message_id and e["OriginOfCondition"]["@odata.id"] == origin:
                return e
        raise AssertionError(f"no {message_id} for {origin}")

    # A GPU is hot-added: it shows up, with a ResourceAdded event.
    gpu = root / "sys/bus/pci/devices/0000:af:00.0"
    gpu.mkdir(parents=True)
    for f, v in {"vendor": "0x10de", "device": "0x20b5", "class": "0x030200"}.items():
        (gpu / f).write_text(v + "\n")
    e = wait_for("ResourceEvent.1.4.ResourceCreated", base + "/0000_af_00")
    assert e["EventType"] == "ResourceAdded"
    assert s.get(k.url + base + "/0000_af_00").status_code == 200
    # The NVMe drive's controller is pulled: it goes away, with a ResourceRemoved event.
    shutil.rmtree(root / "sys/bus/pci/devices/0000:5e:00.0")
    e = wait_for("ResourceEvent.1.4.ResourceRemoved", base + "/0000_5e_00")
    assert e["EventType"] == "ResourceRemoved"
    assert s.get(k.url + base + "/0000_5e_00").status_code == 404
    # (The stream ends when keeld stops; closing it from this side would wait on the reader.)


def test_live_hotplug_monitor_sees_kernel_device_events(tmp_path):
    """keeld on the live machine, in its own network namespace (with a sysfs of that namespace) and
    with the periodic re-read off: a bridge created there appears at once through the kernel's device
    events, and goes away when it is deleted."""
    import json
    import os
    import time
    from conftest import ADMIN, free_port
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    state = tmp_path / "state"
    boot = tmp_path / "bootstrap"
    boot.write_text(f"{ADMIN[0]}:{ADMIN[1]}\n")
    port = free_port()
    log = open(tmp_path / "keeld.log", "wb")
    proc = subprocess.Popen(
        ["unshare", "--net", "--mount", "sh", "-c",
         'mount -t sysfs sysfs /sys && ip link set lo up && exec "$@"', "sh",
         KEELD, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
         "--bootstrap-admin-file", str(boot), "--inventory-refresh", "0"],
        stdout=log, stderr=subprocess.STDOUT)
    ns = ["nsenter", "-t", str(proc.pid), "-n"]

    def get(path):
        r = subprocess.run(ns + ["curl", "-sk", "-u", f"{ADMIN[0]}:{ADMIN[1]}", f"https://127.0.0.1:{port}{path}"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout else None

    def interfaces():
        body = get("/redfish/v1/Systems/system/EthernetInterfaces")
        return None if body is None else [m["@odata.id"].rsplit("/", 1)[1] for m in body["Members"]]

    def wait(cond, what, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"{what}; keeld log:\n{(tmp_path / 'keeld.log').read_text()}")

    try:
        wait(lambda: interfaces() is not None, "keeld did not answer", timeout=30)
        assert "kp7" not in interfaces()
        subprocess.run(ns + ["ip", "link", "add", "kp7", "type", "bridge"], check=True)
        wait(lambda: "kp7" in interfaces(), "a new bridge did not appear")
        iface = get("/redfish/v1/Systems/system/EthernetInterfaces/kp7")
        assert iface["Id"] == "kp7"
        subprocess.run(ns + ["ip", "link", "del", "kp7"], check=True)
        wait(lambda: "kp7" not in interfaces(), "a deleted bridge did not go away")
    finally:
        proc.terminate()
        proc.wait(10)
