"""Network inventory through the host root: NICs, bonds, VLANs, bridges, addresses, LLDP."""
import json
import os
import re
import subprocess

from conftest import KEELD

SYS = "/redfish/v1/Systems/system"
EI = SYS + "/EthernetInterfaces"
NA = "/redfish/v1/Chassis/chassis/NetworkAdapters"

PCI_IDS = """# pci.ids excerpt
8086  Intel Corporation
\t1533  I210 Gigabit Network Connection
\t\t8086 0001  Ethernet Server Adapter I210-T1
15b3  Mellanox Technologies
\t1015  MT27710 Family [ConnectX-4 Lx]
\t\t15b3 0004  ConnectX-4 Lx Stand-up dual-port 10GbE MCX4121A-XCAT
C 02  Network controller
\t00  Ethernet controller
"""


def command_key(program, args):
    """The file name keeld replays a command from (host::command_key)."""
    parts = [program, *args]
    return "__".join("".join(c if c.isalnum() or c in "-_.=" else "+" for c in p) for p in parts) + ".json"


def record_command(root, program, args, stdout, status=0):
    d = root / ".keel-commands"
    d.mkdir(parents=True, exist_ok=True)
    (d / command_key(program, args)).write_text(json.dumps({"status": status, "stdout": stdout}))


IP_ADDR = ("ip", ["-details", "-json", "addr", "show"])
IP_ROUTE = ("ip", ["-json", "route", "show"])
IP_ROUTE6 = ("ip", ["-json", "-6", "route", "show"])
LLDP = ("networkctl", ["lldp", "--json=short"])


def write_attrs(d, attrs):
    d.mkdir(parents=True, exist_ok=True)
    for k, v in attrs.items():
        (d / k).write_text(f"{v}\n")


def netdev(root, devpath, name, attrs):
    """An interface directory at sys/<devpath>/net/<name> (or sys/devices/virtual/net/<name>) and
    its /sys/class/net link, as the kernel lays them out."""
    base = root / "sys" / devpath / "net" / name
    defaults = {"type": 1, "flags": "0x1003", "mtu": 1500, "addr_assign_type": 0, "operstate": "up", "carrier": 1}
    write_attrs(base, {**defaults, **attrs})
    cls = root / "sys/class/net"
    cls.mkdir(parents=True, exist_ok=True)
    depth = len(devpath.split("/"))
    os.symlink("../../" + "/".join([devpath, "net", name]), cls / name)
    return base


def pci_nic(root, parent, slot, vendor, device, subsys, driver, ifname, attrs):
    """A PCI NIC function with its interface."""
    dev = root / "sys/devices" / parent / slot
    write_attrs(dev, {"vendor": f"0x{vendor}", "device": f"0x{device}", "class": "0x020000",
                      "subsystem_vendor": f"0x{subsys[0]}", "subsystem_device": f"0x{subsys[1]}"})
    (dev / "uevent").write_text(
        f"DRIVER={driver}\nPCI_CLASS=20000\nPCI_ID={vendor.upper()}:{device.upper()}\n"
        f"PCI_SUBSYS_ID={subsys[0].upper()}:{subsys[1].upper()}\nPCI_SLOT_NAME={slot}\n")
    drivers = root / "sys/bus/pci/drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    ups = "../" * (len(parent.split("/")) + 2)
    os.symlink(f"{ups}bus/pci/drivers/{driver}", dev / "driver")
    base = netdev(root, f"devices/{parent}/{slot}", ifname, attrs)
    os.symlink(f"../../../{slot}", base / "device")
    return base


def ip_link(ifindex, name, mac, addrs, mtu=1500, kind=None, data=None, link=None, operstate="UP", extra=None):
    v = {"ifindex": ifindex, "ifname": name, "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": mtu,
         "operstate": operstate, "link_type": "ether", "address": mac, "addr_info": addrs}
    if kind:
        v["linkinfo"] = {"info_kind": kind, "info_data": data or {}}
    if link:
        v["link"] = link
    v.update(extra or {})
    return v


def a4(local, prefixlen, dynamic=False, label=None):
    v = {"family": "inet", "local": local, "prefixlen": prefixlen, "scope": "global",
         "valid_life_time": 4294967295, "preferred_life_time": 4294967295}
    if dynamic:
        v["dynamic"] = True
        v["valid_life_time"] = 86000
    return v


def a6(local, prefixlen, scope="global", dynamic=False, protocol=None):
    v = {"family": "inet6", "local": local, "prefixlen": prefixlen, "scope": scope}
    if dynamic:
        v["dynamic"] = True
    if protocol:
        v["protocol"] = protocol
    return v


BOND_MAC = "0c:42:a1:8e:5b:20"
P0_MAC, P1_MAC = "0c:42:a1:8e:5b:20", "0c:42:a1:8e:5b:21"


def make_server(root):
    """2 x ConnectX-4 Lx ports (mlx5_core, 25G) in an LACP bond0; VLANs bond0.100 (in bridge br0,
    static IPv4+IPv6) and bond0.200 (DHCP); LLDP from two leaf switches; plus software devices
    that are not inventory (lo, a veth, an ifb)."""
    parent = "pci0000:3a/0000:3a:00.0"
    for n, (slot, name, mac, assign, idx) in enumerate([("0000:3b:00.0", "ens1f0np0", BOND_MAC, 0, 2),
                                                         ("0000:3b:00.1", "ens1f1np1", BOND_MAC, 3, 3)]):
        base = pci_nic(root, parent, slot, "15b3", "1015", ("15b3", "0004"), "mlx5_core", name,
                       {"address": mac, "addr_assign_type": assign, "mtu": 9000, "speed": 25000, "duplex": "full",
                        "ifindex": idx, "flags": "0x1803"})
        os.symlink("../../../../../virtual/net/bond0", base / "master")
    bond = netdev(root, "devices/virtual", "bond0", {"address": BOND_MAC, "addr_assign_type": 3, "mtu": 9000,
                                                      "speed": 50000, "duplex": "full", "ifindex": 4, "flags": "0x1403"})
    write_attrs(bond / "bonding", {"mode": "802.3ad 4", "slaves": "ens1f0np0 ens1f1np1", "lacp_rate": "fast 1",
                                   "xmit_hash_policy": "layer3+4 1"})
    for name, idx in (("bond0.100", 5), ("bond0.200", 6)):
        netdev(root, "devices/virtual", name, {"address": BOND_MAC, "addr_assign_type": 2, "mtu": 9000,
                                                "speed": 50000, "duplex": "full", "ifindex": idx})
    br = netdev(root, "devices/virtual", "br0", {"address": "0c:42:a1:8e:5b:20", "addr_assign_type": 3,
                                                  "mtu": 9000, "ifindex": 7, "carrier": 1, "operstate": "up"})
    write_attrs(br / "bridge", {"stp_state": 0, "forward_delay": 1500})
    (br / "brif").mkdir()
    os.symlink("../../bond0.100/brport", br / "brif/bond0.100")
    os.symlink("../br0", root / "sys/devices/virtual/net/bond0.100/master")
    netdev(root, "devices/virtual", "lo", {"address": "00:00:00:00:00:00", "type": 772, "ifindex": 1, "mtu": 65536})
    netdev(root, "devices/virtual", "veth3f2a1b", {"address": "4a:1c:22:33:44:55", "ifindex": 8})
    netdev(root, "devices/virtual", "ifb0", {"address": "ba:99:da:e9:c2:7b", "ifindex": 9, "operstate": "down",
                                              "flags": "0x1002", "carrier": 0})
    proc = root / "proc/net"
    (proc / "vlan").mkdir(parents=True)
    (proc / "vlan/config").write_text(
        "VLAN Dev name\t | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\n"
        "bond0.100      | 100  | bond0\nbond0.200      | 200  | bond0\n")
    (proc / "bonding").mkdir()
    (proc / "bonding/bond0").write_text(
        "Ethernet Channel Bonding Driver: v6.1.0\n\nBonding Mode: IEEE 802.3ad Dynamic link aggregation\n"
        "Transmit Hash Policy: layer3+4 (1)\nMII Status: up\n\n802.3ad info\nLACP active: on\nLACP rate: fast\n\n"
        f"Slave Interface: ens1f0np0\nMII Status: up\nSpeed: 25000 Mbps\nDuplex: full\nPermanent HW addr: {P0_MAC}\n"
        "Slave queue ID: 0\n\n"
        f"Slave Interface: ens1f1np1\nMII Status: up\nSpeed: 25000 Mbps\nDuplex: full\nPermanent HW addr: {P1_MAC}\n"
        "Slave queue ID: 0\n")
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").write_text("# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch dc1.example.net\n")
    (root / "run/systemd/resolve").mkdir(parents=True)
    (root / "run/systemd/resolve/resolv.conf").write_text("nameserver 10.10.0.53\nnameserver 10.10.0.54\nsearch dc1.example.net\n")
    (root / "run/systemd/netif/leases").mkdir(parents=True)
    (root / "run/systemd/netif/leases/6").write_text(
        "# This is private data. Do not parse.\nADDRESS=10.20.0.57\nNETMASK=255.255.252.0\nROUTER=10.20.0.1\n"
        "SERVER_ADDRESS=10.20.0.1\nT1=43200\nT2=75600\nLIFETIME=86400\nDNS=10.20.0.2 10.20.0.3\nDOMAINNAME=mgmt.example.net\n")
    (root / "usr/share/misc").mkdir(parents=True)
    (root / "usr/share/misc/pci.ids").write_text(PCI_IDS)
    links = [
        ip_link(1, "lo", "00:00:00:00:00:00", [a4("127.0.0.1", 8)], mtu=65536),
        ip_link(2, "ens1f0np0", BOND_MAC, [], mtu=9000, extra={"parentbus": "pci", "parentdev": "0000:3b:00.0"}),
        ip_link(3, "ens1f1np1", BOND_MAC, [], mtu=9000, extra={"permaddr": P1_MAC}),
        ip_link(4, "bond0", BOND_MAC, [], mtu=9000, kind="bond", data={"mode": "802.3ad"}),
        ip_link(5, "bond0.100", BOND_MAC, [], mtu=9000, kind="vlan", data={"protocol": "802.1Q", "id": 100}, link="bond0"),
        ip_link(6, "bond0.200", BOND_MAC, [a4("10.20.0.57", 22, dynamic=True),
                                           a6("fe80::e42:a1ff:fe8e:5b20", 64, scope="link")],
                mtu=9000, kind="vlan", data={"protocol": "802.1Q", "id": 200}, link="bond0"),
        ip_link(7, "br0", BOND_MAC, [a4("10.10.100.21", 24), a6("2001:db8:100::21", 64),
                                     a6("fe80::e42:a1ff:fe8e:5b20", 64, scope="link", protocol="kernel_ll")],
                mtu=9000, kind="bridge", data={"stp_state": 0}),
        ip_link(8, "veth3f2a1b", "4a:1c:22:33:44:55", [], kind="veth"),
    ]
    record_command(root, *IP_ADDR, json.dumps(links))
    record_command(root, *IP_ROUTE, json.dumps([
        {"dst": "default", "gateway": "10.10.100.1", "dev": "br0", "flags": []},
        {"dst": "default", "gateway": "10.20.0.1", "dev": "bond0.200", "protocol": "dhcp", "metric": 1024, "flags": []},
        {"dst": "10.10.100.0/24", "dev": "br0", "protocol": "kernel", "scope": "link", "prefsrc": "10.10.100.21", "flags": []}]))
    record_command(root, *IP_ROUTE6, json.dumps([
        {"dst": "2001:db8:100::/64", "dev": "br0", "protocol": "kernel", "metric": 256, "flags": []},
        {"dst": "default", "gateway": "2001:db8:100::1", "dev": "br0", "metric": 1024, "flags": []}]))
    record_command(root, *LLDP, json.dumps({"Neighbors": [
        {"InterfaceIndex": 2, "InterfaceName": "ens1f0np0", "Neighbors": [
            {"ChassisID": "7c:fe:90:12:34:56", "RawChassisID": [4, 124, 254, 144, 18, 52, 86], "PortID": "Ethernet1/17",
             "RawPortID": [5, *b"Ethernet1/17"],
             "PortDescription": "rack12-node3 p0", "SystemName": "leaf-r12-a",
             "SystemDescription": "Cisco Nexus Operating System (NX-OS) Software 10.3(4a)", "EnabledCapabilities": 20}]},
        {"InterfaceIndex": 3, "InterfaceName": "ens1f1np1", "Neighbors": [
            {"ChassisID": "7c:fe:90:ab:cd:ef", "PortID": "Ethernet1/17", "SystemName": "leaf-r12-b",
             "EnabledCapabilities": 4}]}]}))
    # `ethtool -i` of each port (ConnectX-4 Lx firmware; the first port names the card's).
    for ifname, bus in [("ens1f0np0", "0000:3b:00.0"), ("ens1f1np1", "0000:3b:00.1")]:
        record_command(root, "ethtool", ["-i", ifname],
                       f"driver: mlx5_core\nversion: 6.1.0-18-amd64\nfirmware-version: 14.32.1010 (MT_2420110034)\n"
                       f"expansion-rom-version: \nbus-info: {bus}\nsupports-statistics: yes\n")


def make_edge(root):
    """A small edge box: one Intel I210 (igb) at 1 Gb/s on DHCP, SLAAC IPv6, pci.ids from hwdata."""
    pci_nic(root, "pci0000:00/0000:00:1c.0", "0000:02:00.0", "8086", "1533", ("8086", "0001"), "igb", "enp2s0",
            {"address": "00:1b:21:aa:bb:cc", "speed": 1000, "duplex": "full", "ifindex": 2})
    netdev(root, "devices/virtual", "lo", {"address": "00:00:00:00:00:00", "type": 772, "ifindex": 1})
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").write_text("nameserver 192.168.1.1\nsearch lan\n")
    (root / "run/systemd/netif/leases").mkdir(parents=True)
    (root / "run/systemd/netif/leases/2").write_text(
        "ADDRESS=192.168.1.57\nNETMASK=255.255.255.0\nROUTER=192.168.1.1\nDNS=192.168.1.1\n")
    (root / "usr/share/hwdata").mkdir(parents=True)
    (root / "usr/share/hwdata/pci.ids").write_text(PCI_IDS)
    record_command(root, *IP_ADDR, json.dumps([
        ip_link(1, "lo", "00:00:00:00:00:00", [a4("127.0.0.1", 8)], mtu=65536),
        ip_link(2, "enp2s0", "00:1b:21:aa:bb:cc", [
            a4("192.168.1.57", 24, dynamic=True),
            a6("2001:db8:1:0:21b:21ff:feaa:bbcc", 64, dynamic=True, protocol="kernel_ra"),
            a6("fe80::21b:21ff:feaa:bbcc", 64, scope="link")])]))
    record_command(root, *IP_ROUTE, json.dumps([{"dst": "default", "gateway": "192.168.1.1", "dev": "enp2s0",
                                                 "protocol": "dhcp", "flags": []}]))
    record_command(root, *IP_ROUTE6, json.dumps([{"dst": "default", "gateway": "fe80::1", "dev": "enp2s0",
                                                  "protocol": "ra", "flags": []}]))
    # systemd 252's networkctl prints a table (and fails without networkd): no LLDP data.
    record_command(root, *LLDP, "LINK             CHASSIS ID        SYSTEM NAME      CAPS        PORT ID\n", status=1)
    # The igb driver reports no firmware version here: the card has no firmware entry.
    record_command(root, "ethtool", ["-i", "enp2s0"], "driver: igb\nversion: 6.1.0\nfirmware-version: \nbus-info: 0000:02:00.0\n")


def members(s, url):
    return {m["Id"]: m for m in s.get(url + "?$expand=.").json()["Members"]}


def test_bonded_server_interfaces(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert s.get(k.url + SYS).json()["EthernetInterfaces"] == {"@odata.id": EI}
    ifs = members(s, k.url + EI)
    assert sorted(ifs) == ["bond0", "bond0.100", "bond0.200", "br0", "ens1f0np0", "ens1f1np1"], "lo, veth, ifb skipped"
    p0, p1 = ifs["ens1f0np0"], ifs["ens1f1np1"]
    assert p0["EthernetInterfaceType"] == "Physical" and p0["LinkStatus"] == "LinkUp" and p0["InterfaceEnabled"] is True
    assert (p0["SpeedMbps"], p0["FullDuplex"], p0["MTUSize"]) == (25000, True, 9000)
    assert p0["MACAddress"] == BOND_MAC.upper() and p0["PermanentMACAddress"] == P0_MAC.upper()
    assert p1["MACAddress"] == BOND_MAC.upper() and p1["PermanentMACAddress"] == P1_MAC.upper()
    assert p0["Links"]["AffiliatedInterfaces"] == [{"@odata.id": EI + "/bond0"}]
    assert p0["Links"]["Ports"] == [{"@odata.id": NA + "/0000_3b_00/Ports/ens1f0np0"}]
    assert p0["IPv4Addresses"] == [] and p0["NameServers"] == []
    bond = ifs["bond0"]
    assert bond["TeamMode"] == "IEEE802_3ad" and bond["EthernetInterfaceType"] == "Virtual"
    assert bond["SpeedMbps"] == 50000
    assert bond["Links"]["RelatedInterfaces"] == [{"@odata.id": EI + "/ens1f0np0"}, {"@odata.id": EI + "/ens1f1np1"}]
    assert {x["@odata.id"] for x in bond["Links"]["AffiliatedInterfaces"]} == {EI + "/bond0.100", EI + "/bond0.200"}
    v100, v200 = ifs["bond0.100"], ifs["bond0.200"]
    assert v100["VLAN"] == {"VLANEnable": True, "VLANId": 100} and v200["VLAN"]["VLANId"] == 200
    assert v100["Links"]["RelatedInterfaces"] == [{"@odata.id": EI + "/bond0"}]
    assert v100["Links"]["AffiliatedInterfaces"] == [{"@odata.id": EI + "/br0"}]
    assert "TeamMode" not in v100
    br = ifs["br0"]
    assert br["Links"]["RelatedInterfaces"] == [{"@odata.id": EI + "/bond0.100"}]
    assert br["IPv4Addresses"] == [{"Address": "10.10.100.21", "SubnetMask": "255.255.255.0",
                                    "AddressOrigin": "Static", "Gateway": "10.10.100.1"}]
    assert br["IPv6Addresses"] == [
        {"Address": "2001:db8:100::21", "PrefixLength": 64, "AddressOrigin": "Static"},
        {"Address": "fe80::e42:a1ff:fe8e:5b20", "PrefixLength": 64, "AddressOrigin": "LinkLocal"}]
    assert br["IPv6DefaultGateway"] == "2001:db8:100::1"
    assert br["NameServers"] == ["10.10.0.53", "10.10.0.54"], "resolved's upstreams, not the stub"
    assert br["DHCPv4"]["DHCPEnabled"] is False and br["DHCPv6"]["OperatingMode"] == "Disabled"
    assert v200["IPv4Addresses"] == [{"Address": "10.20.0.57", "SubnetMask": "255.255.252.0",
                                      "AddressOrigin": "DHCP", "Gateway": "10.20.0.1"}]
    assert v200["IPv6Addresses"][0]["AddressOrigin"] == "LinkLocal"
    assert v200["DHCPv4"] == {"DHCPEnabled": True, "UseDNSServers": True, "UseGateway": True, "UseDomainName": True}
    assert v200["NameServers"] == ["10.20.0.2", "10.20.0.3", "10.10.0.53", "10.10.0.54"]
    assert s.get(k.url + EI + "/veth3f2a1b").status_code == 404


def test_bonded_server_adapters_ports_and_lldp(keeld_factory, tmp_path):
    root = tmp_path / "server"
    make_server(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    assert s.get(k.url + "/redfish/v1/Chassis/chassis").json()["NetworkAdapters"] == {"@odata.id": NA}
    ads = members(s, k.url + NA)
    assert list(ads) == ["0000_3b_00"], "both functions are one dual-port card"
    a = ads["0000_3b_00"]
    assert a["Manufacturer"] == "Mellanox Technologies" and a["Model"] == "MT27710 Family [ConnectX-4 Lx]"
    assert a["Controllers"][0]["ControllerCapabilities"]["NetworkPortCount"] == 2
    assert "mlx5_core" in a["Description"]
    fw_uri = "/redfish/v1/UpdateService/FirmwareInventory/NIC_0000_3b_00"
    assert a["Controllers"][0]["FirmwarePackageVersion"] == "14.32.1010 (MT_2420110034)"
    assert a["Controllers"][0]["Links"]["ActiveSoftwareImage"] == {"@odata.id": fw_uri}
    fw = s.get(k.url + fw_uri).json()
    assert fw["Version"] == "14.32.1010 (MT_2420110034)" and fw["Manufacturer"] == "Mellanox Technologies"
    assert fw["RelatedItem"] == [{"@odata.id": NA + "/0000_3b_00"}]
    assert {"@odata.id": fw_uri} in s.get(k.url + "/redfish/v1/UpdateService/FirmwareInventory").json()["Members"]
    ports = members(s, k.url + NA + "/0000_3b_00/Ports")
    assert sorted(ports) == ["ens1f0np0", "ens1f1np1"]
    p = ports["ens1f0np0"]
    assert (p["LinkStatus"], p["CurrentSpeedGbps"], p["LinkNetworkTechnology"]) == ("LinkUp", 25.0, "Ethernet")
    assert p["PortId"] == "0000:3b:00.0"
    assert p["Links"]["EthernetInterfaces"] == [{"@odata.id": EI + "/ens1f0np0"}]
    assert p["Ethernet"]["AssociatedMACAddresses"] == [P0_MAC.upper()]
    rx = p["Ethernet"]["LLDPReceive"]
    # Redfish wants the port ID as octets: "Ethernet1/17" (subtype 5, interface name).
    eth117 = ":".join(f"{b:02X}" for b in b"Ethernet1/17")
    assert rx == {"ChassisId": "7c:fe:90:12:34:56", "ChassisIdSubtype": "MacAddr", "PortId": eth117, "PortIdSubtype": "IfName",
                  "SystemName": "leaf-r12-a",
                  "SystemDescription": "Cisco Nexus Operating System (NX-OS) Software 10.3(4a)",
                  "SystemCapabilities": ["Bridge", "Router"]}
    rx1 = ports["ens1f1np1"]["Ethernet"]["LLDPReceive"]
    assert rx1["SystemName"] == "leaf-r12-b" and rx1["PortId"] == eth117 and "PortIdSubtype" not in rx1
    assert s.get(k.url + NA + "/0000_3b_00/Ports/bond0").status_code == 404
    assert s.get(k.url + NA + "/nope").status_code == 404


def test_edge_box_single_nic_on_dhcp(keeld_factory, tmp_path):
    root = tmp_path / "edge"
    make_edge(root)
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    ifs = members(s, k.url + EI)
    assert list(ifs) == ["enp2s0"]
    e = ifs["enp2s0"]
    assert (e["MACAddress"], e["PermanentMACAddress"]) == ("00:1B:21:AA:BB:CC", "00:1B:21:AA:BB:CC")
    assert (e["SpeedMbps"], e["LinkStatus"], e["MTUSize"]) == (1000, "LinkUp", 1500)
    assert e["IPv4Addresses"] == [{"Address": "192.168.1.57", "SubnetMask": "255.255.255.0",
                                   "AddressOrigin": "DHCP", "Gateway": "192.168.1.1"}]
    assert [(x["Address"], x["AddressOrigin"]) for x in e["IPv6Addresses"]] == [
        ("2001:db8:1:0:21b:21ff:feaa:bbcc", "SLAAC"), ("fe80::21b:21ff:feaa:bbcc", "LinkLocal")]
    assert e["IPv6DefaultGateway"] == "fe80::1"
    assert e["StatelessAddressAutoConfig"] == {"IPv6AutoConfigEnabled": True}
    assert e["DHCPv4"]["DHCPEnabled"] is True and e["NameServers"] == ["192.168.1.1"]
    assert "TeamMode" not in e and "VLAN" not in e
    ads = members(s, k.url + NA)
    assert list(ads) == ["0000_02_00"]
    assert (ads["0000_02_00"]["Manufacturer"], ads["0000_02_00"]["Model"]) == ("Intel Corporation", "I210 Gigabit Network Connection")
    assert "FirmwarePackageVersion" not in ads["0000_02_00"]["Controllers"][0], "ethtool reported no firmware"
    fw = members(s, k.url + "/redfish/v1/UpdateService/FirmwareInventory")
    assert not [i for i in fw if i.startswith("NIC_")]
    port = s.get(k.url + NA + "/0000_02_00/Ports/enp2s0").json()
    assert port["CurrentSpeedGbps"] == 1.0 and port["Ethernet"]["LLDPEnabled"] is False
    assert "LLDPReceive" not in port["Ethernet"], "networkctl without JSON gives no neighbors"


def test_vanishing_nic_and_broken_commands_degrade_only_those_properties(keeld_factory, tmp_path):
    root = tmp_path / "odd"
    make_server(root)
    # ens1f1np1 disappears while it is read: most of its files are gone, speed is unreadable.
    gone = root / "sys/class/net/ens1f1np1"
    for f in ("address", "operstate", "flags", "speed", "mtu"):
        (gone / f).unlink()
    (root / "usr/share/misc/pci.ids").unlink()
    record_command(root, *IP_ADDR, "garbage {[", status=0)
    record_command(root, *IP_ROUTE, "", status=1)
    record_command(root, *LLDP, '{"Neighbors": 17}')
    k = keeld_factory("--host-root", str(root))
    s = k.admin()
    r = s.get(k.url + EI + "/ens1f1np1")
    assert r.status_code == 200
    p1 = r.json()
    for prop in ("MACAddress", "SpeedMbps", "MTUSize", "InterfaceEnabled"):
        assert prop not in p1, prop
    assert p1["Status"]["Health"] == "Warning"
    assert p1["PermanentMACAddress"] == P1_MAC.upper(), "still known from the bonding driver"
    br = s.get(k.url + EI + "/br0").json()
    assert br["IPv4Addresses"] == [] and br["IPv6Addresses"] == [], "ip printed garbage"
    assert "IPv6DefaultGateway" in br, "the IPv6 routes still parse"
    v200 = s.get(k.url + EI + "/bond0.200").json()
    assert v200["VLAN"]["VLANId"] == 200 and v200["DHCPv4"]["DHCPEnabled"] is True
    a = s.get(k.url + NA + "/0000_3b_00").json()
    assert (a["Manufacturer"], a["Model"]) == ("PCI vendor 0x15b3", "PCI device 0x1015")
    port = s.get(k.url + NA + "/0000_3b_00/Ports/ens1f0np0").json()
    assert "LLDPReceive" not in port["Ethernet"]
    assert s.get(k.url + SYS + "?$expand=.($levels=2)").status_code == 200


def test_live_machine_and_its_recording_agree(keeld, keeld_factory, tmp_path):
    rec = tmp_path / "recorded"
    out = subprocess.run([KEELD, "host", "record", str(rec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    replay = keeld_factory("--host-root", str(rec))
    live = members(keeld.admin(), keeld.url + EI)
    recorded = members(replay.admin(), replay.url + EI)
    names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo" and os.path.exists(f"/sys/class/net/{n}/device"))
    assert all(n in live for n in names), (names, list(live))
    strip = lambda ms: {k: {p: v for p, v in m.items() if p not in ("@odata.etag",)} for k, m in ms.items()}
    assert strip(live) == strip(recorded)
    for name, m in live.items():
        mac = open(f"/sys/class/net/{name}/address").read().strip().upper()
        assert m["MACAddress"] == mac
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", m["Id"])
