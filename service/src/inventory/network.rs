//! Network inventory: interfaces from `/sys/class/net` (physical NICs, bonds, bridges, VLANs),
//! addresses and routes from `ip -json`, name servers from resolv.conf, DHCP leases of
//! systemd-networkd, LLDP neighbors from `networkctl lldp --json=short`, and the physical adapters
//! (PCI devices) the NICs sit on. Every source may be missing or garbled: it then degrades only the
//! properties it feeds.

use crate::host::Host;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Kind {
    Physical,
    Bond,
    Bridge,
    Vlan,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum Origin {
    Static,
    Dhcp,
    LinkLocal,
    Slaac,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IpAddr {
    pub address: String,
    pub prefix_len: u8,
    pub origin: Origin,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Lease {
    pub address: Option<String>,
    pub router: Option<String>,
    pub dns: Vec<String>,
    pub domain: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Interface {
    pub name: String,
    pub ifindex: Option<u32>,
    pub kind: Kind,
    pub mac: Option<String>,
    pub permanent_mac: Option<String>,
    pub mtu: Option<u32>,
    pub operstate: Option<String>,
    pub carrier: Option<bool>,
    /// Administratively up (IFF_UP).
    pub admin_up: Option<bool>,
    pub speed_mbps: Option<u32>,
    pub full_duplex: Option<bool>,
    /// PCI address of the NIC function (physical interfaces on PCI).
    pub pci: Option<String>,
    pub driver: Option<String>,
    /// Bond mode as the kernel names it (`802.3ad`, `active-backup`…).
    pub bond_mode: Option<String>,
    /// Bond members or bridge ports.
    pub members: Vec<String>,
    pub vlan_id: Option<u16>,
    pub vlan_parent: Option<String>,
    /// The bond or bridge this interface belongs to.
    pub master: Option<String>,
    pub ipv4: Vec<IpAddr>,
    pub ipv6: Vec<IpAddr>,
    pub gateway4: Option<String>,
    pub gateway6: Option<String>,
    pub lease: Option<Lease>,
    /// Files that vanished or could not be read while this interface was read.
    pub unreadable: Vec<String>,
}

impl Interface {
    pub fn link_up(&self) -> bool {
        match self.operstate.as_deref() {
            Some("up") => true,
            // Drivers that do not report an operational state, or it could not be read.
            None | Some("unknown") => self.carrier == Some(true),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Neighbor {
    pub chassis_id: Option<String>,
    pub port_id: Option<String>,
    pub port_description: Option<String>,
    pub system_name: Option<String>,
    pub system_description: Option<String>,
    pub capabilities: Option<u16>,
    /// IEEE 802.1AB subtypes of the chassis and port IDs (the first byte of their raw TLVs).
    pub chassis_subtype: Option<u8>,
    pub port_subtype: Option<u8>,
    /// The port ID's octets (without the subtype), as Redfish wants them: `45:74:68:…`.
    pub port_id_hex: Option<String>,
}

/// One physical network adapter (a PCI device, all its functions), or a non-PCI NIC device.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Adapter {
    /// URI-safe id derived from the PCI slot (`0000_3b_00`) or the device name.
    pub id: String,
    pub pci_slot: Option<String>,
    pub vendor_id: Option<String>,
    pub device_id: Option<String>,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_id: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub driver: Option<String>,
    /// The firmware the card runs (`ethtool -i` of its first port), when it reports one.
    pub firmware: Option<String>,
    /// The interfaces (ports) on it, in PCI function order.
    pub ports: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub adapters: Vec<Adapter>,
    pub name_servers: Vec<String>,
    pub lldp: BTreeMap<String, Vec<Neighbor>>,
}

impl Network {
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
    pub fn adapter(&self, id: &str) -> Option<&Adapter> {
        self.adapters.iter().find(|a| a.id == id)
    }
    /// The adapter an interface is a port of.
    pub fn adapter_of(&self, ifname: &str) -> Option<&Adapter> {
        self.adapters.iter().find(|a| a.ports.iter().any(|p| p == ifname))
    }
}

// ---- `ip -json` output ----

#[derive(Deserialize, Debug, Default)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    ifindex: Option<u32>,
    #[serde(default)]
    permaddr: Option<String>,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize, Debug, Default)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Default)]
struct AddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    dynamic: Option<bool>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
struct Route {
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

/// `ip -details -json addr show`, keyed by interface name (empty when `ip` fails or lies).
fn ip_links(host: &Host) -> BTreeMap<String, IpLink> {
    let out = host.run("ip", &["-details", "-json", "addr", "show"]);
    if out.status != 0 {
        return BTreeMap::new();
    }
    // Parse element by element so one odd entry does not lose the others.
    match serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout) {
        Ok(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value::<IpLink>(v).ok())
            .map(|l| (l.ifname.clone(), l))
            .collect(),
        Err(e) => {
            log::warn!("network: `ip -json addr show` printed unparsable output ({e}); addresses omitted");
            BTreeMap::new()
        }
    }
}

/// Default gateways per device from `ip -json [-6] route show`.
fn default_gateways(host: &Host, v6: bool) -> BTreeMap<String, String> {
    let args: &[&str] = if v6 { &["-json", "-6", "route", "show"] } else { &["-json", "route", "show"] };
    let out = host.run("ip", args);
    if out.status != 0 {
        return BTreeMap::new();
    }
    let routes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut m = BTreeMap::new();
    for r in routes.into_iter().filter_map(|v| serde_json::from_value::<Route>(v).ok()) {
        if let (Some("default"), Some(gw), Some(dev)) = (r.dst.as_deref(), r.gateway, r.dev) {
            m.entry(dev).or_insert(gw);
        }
    }
    m
}

/// IPv6 address origin: the kernel's address protocol when reported (Linux 6.3+), else the
/// usual shapes (link scope; /128 leases from DHCPv6; other dynamic ones from router adverts).
fn origin6(a: &AddrInfo, dhcp6: bool) -> Origin {
    match a.protocol.as_deref() {
        Some("kernel_ll") => return Origin::LinkLocal,
        Some("kernel_ra") => return Origin::Slaac,
        _ => {}
    }
    if a.scope.as_deref() == Some("link") || a.local.as_deref().is_some_and(|l| l.to_ascii_lowercase().starts_with("fe80:")) {
        Origin::LinkLocal
    } else if a.dynamic == Some(true) {
        if a.prefixlen == Some(128) || dhcp6 { Origin::Dhcp } else { Origin::Slaac }
    } else {
        Origin::Static
    }
}

fn origin4(a: &AddrInfo, lease: Option<&Lease>) -> Origin {
    let local = a.local.as_deref().unwrap_or("");
    if local.starts_with("169.254.") {
        Origin::LinkLocal
    } else if a.dynamic == Some(true) || lease.and_then(|l| l.address.as_deref()) == Some(local) {
        Origin::Dhcp
    } else {
        Origin::Static
    }
}

/// A systemd-networkd DHCPv4 lease file (`KEY=value` lines).
fn parse_lease(text: &str) -> Lease {
    let mut l = Lease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        match k.trim() {
            "ADDRESS" => l.address = Some(v.to_string()),
            "ROUTER" => l.router = v.split_whitespace().next().map(str::to_string),
            "DNS" => l.dns = v.split_whitespace().map(str::to_string).collect(),
            "DOMAINNAME" => l.domain = Some(v.to_string()),
            _ => {}
        }
    }
    l
}

/// Name servers from resolv.conf; the stub resolver's own address gives way to the upstream list
/// systemd-resolved keeps in `/run/systemd/resolve/resolv.conf`.
pub fn name_servers(host: &Host) -> Vec<String> {
    let parse = |t: String| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|r| r.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let main = host.read("/etc/resolv.conf").map(parse).unwrap_or_default();
    let stub = main.is_empty() || main.iter().all(|s| s.starts_with("127.0.0.53") || s == "127.0.0.54");
    if stub {
        let upstream = host.read("/run/systemd/resolve/resolv.conf").map(parse).unwrap_or_default();
        if !upstream.is_empty() {
            return upstream;
        }
    }
    main.into_iter().filter(|s| !s.starts_with("127.0.0.53")).collect()
}

/// LLDP neighbors per interface from `networkctl lldp --json=short` (systemd 257 prints JSON;
/// older versions print a table, and then there are none).
pub fn lldp(host: &Host) -> BTreeMap<String, Vec<Neighbor>> {
    let out = host.run("networkctl", &["lldp", "--json=short"]);
    let mut m = BTreeMap::new();
    if out.status != 0 {
        return m;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) else { return m };
    let s = |n: &serde_json::Value, k: &str| n.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty()).map(str::to_string);
    for i in v.get("Neighbors").and_then(|x| x.as_array()).into_iter().flatten() {
        let Some(name) = i.get("InterfaceName").and_then(|x| x.as_str()) else { continue };
        let ns: Vec<Neighbor> = i
            .get("Neighbors")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .map(|n| Neighbor {
                chassis_id: s(n, "ChassisID"),
                port_id: s(n, "PortID"),
                port_description: s(n, "PortDescription"),
                system_name: s(n, "SystemName"),
                system_description: s(n, "SystemDescription"),
                capabilities: n.get("EnabledCapabilities").and_then(|x| x.as_u64()).map(|x| x as u16),
                chassis_subtype: raw(n, "RawChassisID").and_then(|r| r.first().copied()),
                port_subtype: raw(n, "RawPortID").and_then(|r| r.first().copied()),
                port_id_hex: raw(n, "RawPortID")
                    .filter(|r| r.len() > 1)
                    .map(|r| r[1..].to_vec())
                    .or_else(|| s(n, "PortID").map(|p| octets_of(&p)))
                    .map(|b| b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(":")),
            })
            .collect();
        if !ns.is_empty() {
            m.insert(name.to_string(), ns);
        }
    }
    m
}

/// A byte array member of a JSON object (systemd prints raw TLVs as arrays of numbers).
fn raw(n: &serde_json::Value, k: &str) -> Option<Vec<u8>> {
    n.get(k)?.as_array()?.iter().map(|x| x.as_u64().filter(|b| *b < 256).map(|b| b as u8)).collect()
}

/// The octets a port ID string stands for: a MAC address's six, else the text's own bytes.
fn octets_of(id: &str) -> Vec<u8> {
    let parts: Vec<&str> = id.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2) {
        if let Ok(b) = parts.iter().map(|p| u8::from_str_radix(p, 16)).collect::<Result<Vec<u8>, _>>() {
            return b;
        }
    }
    id.as_bytes().to_vec()
}

/// `/proc/net/vlan/config`: `name | id | parent` lines after two header lines.
fn vlan_config(host: &Host) -> BTreeMap<String, (u16, String)> {
    let mut m = BTreeMap::new();
    for line in host.read("/proc/net/vlan/config").unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [name, id, parent] = parts[..] {
            if let Ok(id) = id.parse::<u16>() {
                m.insert(name.to_string(), (id, parent.to_string()));
            }
        }
    }
    m
}

/// Permanent MACs of bond members from `/proc/net/bonding/<bond>`.
fn bond_permanent_macs(host: &Host) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for bond in host.list("/proc/net/bonding") {
        let text = host.read(&format!("/proc/net/bonding/{bond}")).unwrap_or_default();
        let mut slave: Option<String> = None;
        for line in text.lines() {
            if let Some(s) = line.strip_prefix("Slave Interface:") {
                slave = Some(s.trim().to_string());
            } else if let Some(mac) = line.strip_prefix("Permanent HW addr:") {
                if let Some(s) = slave.take() {
                    m.insert(s, mac.trim().to_string());
                }
            }
        }
    }
    m
}

fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.' && s.chars().enumerate().all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

fn link_name(host: &Host, path: &str) -> Option<String> {
    host.link(path).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn uevent(host: &Host, path: &str) -> BTreeMap<String, String> {
    host.read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn team_mode(kernel: &str) -> &'static str {
    match kernel {
        "balance-rr" => "RoundRobin",
        "active-backup" => "ActiveBackup",
        "balance-xor" => "XOR",
        "broadcast" => "Broadcast",
        "802.3ad" => "IEEE802_3ad",
        "balance-tlb" => "AdaptiveTransmitLoadBalancing",
        "balance-alb" => "AdaptiveLoadBalancing",
        _ => "None",
    }
}

/// The Redfish `TeamMode` of a bond.
pub fn team_mode_of(i: &Interface) -> Option<&'static str> {
    i.bond_mode.as_deref().map(team_mode)
}

fn hex_id(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim_start_matches("0x").to_ascii_lowercase()).filter(|s| s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether an interface name can be a URI segment and a Redfish `Id` as it is.
pub fn uri_safe(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Read the host's network configuration.
pub fn read(host: &Host) -> Network {
    let ip = ip_links(host);
    let gw4 = default_gateways(host, false);
    let gw6 = default_gateways(host, true);
    let vlans = vlan_config(host);
    let perm = bond_permanent_macs(host);
    let mut interfaces = vec![];
    for name in host.list("/sys/class/net") {
        if name == "lo" || !uri_safe(&name) {
            continue;
        }
        let base = format!("/sys/class/net/{name}");
        let attr = |f: &str| host.attr(&format!("{base}/{f}"));
        let info = ip.get(&name);
        let kind_ip = info.and_then(|l| l.linkinfo.as_ref()).and_then(|k| k.info_kind.as_deref());
        let has = |d: &str| std::fs::symlink_metadata(host.path(&format!("{base}/{d}"))).is_ok();
        let kind = if has("bonding") || kind_ip == Some("bond") {
            Kind::Bond
        } else if has("bridge") || kind_ip == Some("bridge") {
            Kind::Bridge
        } else if vlans.contains_key(&name) || kind_ip == Some("vlan") {
            Kind::Vlan
        } else if has("device") && attr("type").as_deref().map_or(true, |t| t == "1") {
            Kind::Physical
        } else {
            continue; // veth, tun, ifb, wireguard and other software devices
        };
        let mut unreadable = vec![];
        let mut must = |f: &str| {
            let v = attr(f);
            if v.is_none() {
                unreadable.push(f.to_string());
            }
            v
        };
        let mac = must("address");
        let operstate = must("operstate");
        let mtu = must("mtu").and_then(|v| v.parse().ok());
        let admin_up = must("flags").and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok()).map(|f| f & 1 == 1);
        let carrier = attr("carrier").map(|c| c == "1");
        let speed_mbps = attr("speed").and_then(|s| s.parse::<i64>().ok()).filter(|s| *s > 0 && *s < u32::MAX as i64).map(|s| s as u32);
        let full_duplex = match attr("duplex").as_deref() {
            Some("full") => Some(true),
            Some("half") => Some(false),
            _ => None,
        };
        let ifindex = attr("ifindex").and_then(|s| s.parse().ok()).or(info.and_then(|l| l.ifindex));
        let mut i = Interface {
            name: name.clone(),
            ifindex,
            kind,
            mac: mac.map(|m| m.to_ascii_uppercase()),
            permanent_mac: None,
            mtu,
            operstate,
            carrier,
            admin_up,
            speed_mbps,
            full_duplex,
            pci: None,
            driver: None,
            bond_mode: None,
            members: vec![],
            vlan_id: None,
            vlan_parent: None,
            master: link_name(host, &format!("{base}/master")),
            ipv4: vec![],
            ipv6: vec![],
            gateway4: gw4.get(&name).cloned(),
            gateway6: gw6.get(&name).cloned(),
            lease: None,
            unreadable,
        };
        match kind {
            Kind::Physical => {
                let ue = uevent(host, &format!("{base}/device/uevent"));
                i.driver = ue.get("DRIVER").cloned().or_else(|| link_name(host, &format!("{base}/device/driver")));
                i.pci = ue
                    .get("PCI_SLOT_NAME")
                    .cloned()
                    .or_else(|| link_name(host, &format!("{base}/device")).filter(|n| is_pci_address(n)))
                    .map(|s| s.to_ascii_lowercase());
                // The address the NIC was made with: its own when not overridden, else what
                // the bonding driver or `ip` saw.
                i.permanent_mac = perm
                    .get(&name)
                    .cloned()
                    .or_else(|| info.and_then(|l| l.permaddr.clone()))
                    .or_else(|| (attr("addr_assign_type").as_deref() == Some("0")).then(|| i.mac.clone()).flatten())
                    .map(|m| m.to_ascii_uppercase());
            }
            Kind::Bond => {
                i.bond_mode = attr("bonding/mode")
                    .and_then(|m| m.split_whitespace().next().map(str::to_string))
                    .or_else(|| info.and_then(|l| l.linkinfo.as_ref()).and_then(|k| k.info_data.as_ref()).and_then(|d| d.get("mode")).and_then(|m| m.as_str()).map(str::to_string));
                i.members = attr("bonding/slaves").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
            }
            Kind::Bridge => i.members = host.list(&format!("{base}/brif")),
            Kind::Vlan => {
                if let Some((id, parent)) = vlans.get(&name) {
                    i.vlan_id = Some(*id);
                    i.vlan_parent = Some(parent.clone());
                } else if let Some(l) = info {
                    i.vlan_id = l.linkinfo.as_ref().and_then(|k| k.info_data.as_ref()).and_then(|d| d.get("id")).and_then(|x| x.as_u64()).map(|x| x as u16);
                    i.vlan_parent = l.link.clone();
                }
            }
        }
        if let Some(idx) = i.ifindex {
            if let Ok(t) = host.read(&format!("/run/systemd/netif/leases/{idx}")) {
                i.lease = Some(parse_lease(&t));
            }
        }
        if let Some(l) = info {
            let dhcp6 = false;
            for a in &l.addr_info {
                let (Some(addr), Some(len)) = (a.local.clone(), a.prefixlen) else { continue };
                match a.family.as_str() {
                    "inet" => i.ipv4.push(IpAddr { address: addr, prefix_len: len, origin: origin4(a, i.lease.as_ref()) }),
                    "inet6" => i.ipv6.push(IpAddr { address: addr, prefix_len: len, origin: origin6(a, dhcp6) }),
                    _ => {}
                }
            }
        }
        if !i.unreadable.is_empty() {
            log::warn!("network: {name}: unreadable {}; those properties are omitted", i.unreadable.join(", "));
        }
        interfaces.push(i);
    }
    // Members of bonds listed by `master` links when `bonding/slaves` could not be read.
    let masters: Vec<(String, String)> = interfaces.iter().filter_map(|i| i.master.clone().map(|m| (m, i.name.clone()))).collect();
    for i in interfaces.iter_mut().filter(|i| matches!(i.kind, Kind::Bond | Kind::Bridge)) {
        for (m, member) in &masters {
            if *m == i.name && !i.members.contains(member) {
                i.members.push(member.clone());
            }
        }
    }
    let adapters = adapters(host, &interfaces);
    Network { interfaces, adapters, name_servers: name_servers(host), lldp: lldp(host) }
}

/// Group physical interfaces into adapters: PCI functions of one slot are one card.
fn adapters(host: &Host, interfaces: &[Interface]) -> Vec<Adapter> {
    let names = super::pci::PciIds::load(host);
    let pci_names = |v: &str, d: &str| -> (Option<String>, Option<String>) {
        let (Ok(v), Ok(d)) = (u16::from_str_radix(v, 16), u16::from_str_radix(d, 16)) else { return (None, None) };
        (names.vendor(v).map(str::to_string), names.device(v, d).map(str::to_string))
    };
    let mut by_id: BTreeMap<String, Adapter> = BTreeMap::new();
    let mut order: Vec<(String, Option<String>, String)> = vec![];
    for i in interfaces.iter().filter(|i| i.kind == Kind::Physical) {
        let base = format!("/sys/class/net/{}/device", i.name);
        let slot = i.pci.as_ref().map(|p| p.rsplit_once('.').map_or(p.clone(), |(s, _)| s.to_string()));
        let id = match &slot {
            Some(s) => s.replace(':', "_"),
            // Not on PCI (virtio, USB…): the interface names its device.
            None => i.name.clone(),
        };
        order.push((id.clone(), i.pci.clone(), i.name.clone()));
        if by_id.contains_key(&id) {
            continue;
        }
        let ue = uevent(host, &format!("{base}/uevent"));
        let ids = |k: &str| ue.get(k).and_then(|v| v.split_once(':')).map(|(a, b)| (a.to_ascii_lowercase(), b.to_ascii_lowercase()));
        let (vendor_id, device_id) = match ids("PCI_ID") {
            Some((v, d)) => (Some(v), Some(d)),
            None => (hex_id(host.attr(&format!("{base}/vendor"))), hex_id(host.attr(&format!("{base}/device")))),
        };
        let (subsystem_vendor_id, subsystem_id) = match ids("PCI_SUBSYS_ID") {
            Some((v, d)) => (Some(v), Some(d)),
            None => (hex_id(host.attr(&format!("{base}/subsystem_vendor"))), hex_id(host.attr(&format!("{base}/subsystem_device")))),
        };
        let virtio = ue.get("MODALIAS").is_some_and(|m| m.starts_with("virtio:"));
        let (mut manufacturer, mut model) = match (&vendor_id, &device_id) {
            (Some(v), Some(d)) if !virtio => pci_names(v, d),
            _ => (None, None),
        };
        if virtio {
            manufacturer = Some("Red Hat, Inc.".into());
            model = Some("Virtio network device".into());
        }
        by_id.insert(
            id.clone(),
            Adapter {
                id,
                pci_slot: slot,
                manufacturer: manufacturer.or_else(|| vendor_id.as_ref().map(|v| format!("PCI vendor 0x{v}"))),
                model: model.or_else(|| device_id.as_ref().map(|d| format!("PCI device 0x{d}"))),
                vendor_id: (!virtio).then_some(vendor_id).flatten(),
                device_id: (!virtio).then_some(device_id).flatten(),
                subsystem_vendor_id,
                subsystem_id,
                driver: i.driver.clone(),
                firmware: None,
                ports: vec![],
            },
        );
    }
    order.sort();
    for (id, _, name) in order {
        if let Some(a) = by_id.get_mut(&id) {
            if a.ports.is_empty() {
                a.firmware = firmware_version(host, &name);
            }
            a.ports.push(name);
        }
    }
    by_id.into_values().collect()
}

fn ethtool_info_args(ifname: &str) -> Vec<String> {
    vec!["-i".into(), ifname.into()]
}

/// The `firmware-version:` line of `ethtool -i IFACE`; `None` when the driver reports none (virtio,
/// many USB NICs) or ethtool fails.
fn firmware_version(host: &Host, ifname: &str) -> Option<String> {
    let args = ethtool_info_args(ifname);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = host.run("ethtool", &args);
    if out.status != 0 {
        return None;
    }
    parse_firmware_version(&out.stdout)
}

fn parse_firmware_version(text: &str) -> Option<String> {
    let v = text.lines().find_map(|l| l.strip_prefix("firmware-version:"))?.trim();
    (!v.is_empty() && v != "N/A" && !v.chars().any(char::is_control)).then(|| v.to_string())
}

/// The commands `keeld host record` runs for the network besides the fixed ones: `ethtool -i` of
/// each interface backed by a device.
pub fn commands(host: &Host) -> Vec<(String, Vec<String>)> {
    host.list("/sys/class/net")
        .into_iter()
        .filter(|n| host.link(&format!("/sys/class/net/{n}/device")).is_some())
        .map(|n| ("ethtool".to_string(), ethtool_info_args(&n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_firmware_versions() {
        let out = "driver: ice\nversion: 6.1.0\nfirmware-version: 4.40 0x8001c967 1.3534.0\nbus-info: 0000:3b:00.0\n";
        assert_eq!(parse_firmware_version(out).as_deref(), Some("4.40 0x8001c967 1.3534.0"));
        assert_eq!(parse_firmware_version("driver: virtio_net\nfirmware-version: \n"), None);
        assert_eq!(parse_firmware_version("driver: r8152\nfirmware-version: N/A\n"), None);
        assert_eq!(parse_firmware_version("garbage"), None);
    }

    #[test]
    fn leases_and_pci_addresses() {
        let l = parse_lease("# This is private data. Do not parse.\nADDRESS=10.2.0.15\nNETMASK=255.255.255.0\nROUTER=10.2.0.1\nDNS=10.2.0.2 10.2.0.3\n");
        assert_eq!(l.address.as_deref(), Some("10.2.0.15"));
        assert_eq!(l.router.as_deref(), Some("10.2.0.1"));
        assert_eq!(l.dns, vec!["10.2.0.2", "10.2.0.3"]);
        assert!(is_pci_address("0000:3b:00.1"));
        assert!(!is_pci_address("virtio2"));
        assert_eq!(team_mode("802.3ad"), "IEEE802_3ad");
    }

    #[test]
    fn ipv6_origins() {
        let a = |local: &str, len, scope: &str, dynamic, protocol: Option<&str>| AddrInfo {
            family: "inet6".into(),
            local: Some(local.into()),
            prefixlen: Some(len),
            scope: Some(scope.into()),
            dynamic: Some(dynamic),
            protocol: protocol.map(str::to_string),
        };
        assert_eq!(origin6(&a("fe80::1", 64, "link", false, None), false), Origin::LinkLocal);
        assert_eq!(origin6(&a("2001:db8::1", 64, "global", true, None), false), Origin::Slaac);
        assert_eq!(origin6(&a("2001:db8::1", 64, "global", true, Some("kernel_ra")), false), Origin::Slaac);
        assert_eq!(origin6(&a("2001:db8::5", 128, "global", true, None), false), Origin::Dhcp);
        assert_eq!(origin6(&a("2001:db8::5", 64, "global", false, None), false), Origin::Static);
    }
}
