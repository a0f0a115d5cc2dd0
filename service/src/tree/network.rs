//! Network resources: the system's EthernetInterfaces (physical NICs, bonds, bridges, VLANs) and
//! the chassis' NetworkAdapters with their Ports (link state, LLDP neighbors).

use super::systems::{CHASSIS, SYSTEM};
use super::{check_chassis, check_system, collection, link, Req, Tree};
use crate::inventory::network::{self, Interface, Kind, Network, Origin};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/EthernetInterfaces", "EthernetInterfaceCollection", Some(types::ETHERNET_INTERFACE_COLLECTION)).get(LOGIN, interfaces));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/EthernetInterfaces/{EthernetInterfaceId}", "EthernetInterface", Some(types::ETHERNET_INTERFACE)).get(LOGIN, interface));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/NetworkAdapters", "NetworkAdapterCollection", Some(types::NETWORK_ADAPTER_COLLECTION)).get(LOGIN, adapters));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/NetworkAdapters/{NetworkAdapterId}", "NetworkAdapter", Some(types::NETWORK_ADAPTER)).get(LOGIN, adapter));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/NetworkAdapters/{NetworkAdapterId}/Ports", "PortCollection", Some(types::PORT_COLLECTION)).get(LOGIN, ports));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/NetworkAdapters/{NetworkAdapterId}/Ports/{PortId}", "Port", Some(types::PORT)).get(LOGIN, port));
}

pub fn iface_uri(name: &str) -> String {
    format!("{SYSTEM}/EthernetInterfaces/{name}")
}
pub fn adapter_uri(id: &str) -> String {
    format!("{CHASSIS}/NetworkAdapters/{id}")
}
fn port_uri(adapter: &str, port: &str) -> String {
    format!("{CHASSIS}/NetworkAdapters/{adapter}/Ports/{port}")
}


async fn interfaces(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Ethernet Interface Collection", inv.network.interfaces.iter().map(|i| iface_uri(&i.name))))
}

fn link_status(i: &Interface) -> Option<&'static str> {
    if i.link_up() {
        Some("LinkUp")
    } else if i.admin_up == Some(false) {
        Some("LinkDown")
    } else if i.operstate.is_some() || i.carrier.is_some() {
        Some("NoLink")
    } else {
        None
    }
}

fn status(i: &Interface) -> Value {
    let state = match i.admin_up {
        Some(false) => "Disabled",
        _ => "Enabled",
    };
    // Properties that could not be read are omitted; the interface is then not known to be well.
    let health = if i.unreadable.is_empty() { "OK" } else { "Warning" };
    json!({ "State": state, "Health": health })
}

fn mask(len: u8) -> String {
    let m: u32 = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32) as u32) };
    std::net::Ipv4Addr::from(m).to_string()
}

/// Interfaces that use `name`: the bond or bridge it is in, the VLANs on it.
fn affiliated(net: &Network, name: &str) -> Vec<String> {
    net.interfaces
        .iter()
        .filter(|o| o.vlan_parent.as_deref() == Some(name) || (matches!(o.kind, Kind::Bond | Kind::Bridge) && o.members.iter().any(|m| m == name)))
        .map(|o| o.name.clone())
        .collect()
}

async fn interface(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    let net = &inv.network;
    let id = r.param(1);
    let i = net.interface(id).ok_or_else(|| RfError::resource_not_found("EthernetInterface", id))?;
    let desc = match i.kind {
        Kind::Physical => "Physical network interface".to_string(),
        Kind::Bond => format!("Bond of {}", i.members.join(", ")),
        Kind::Bridge => "Bridge".to_string(),
        Kind::Vlan => format!("VLAN {} on {}", i.vlan_id.map(|v| v.to_string()).unwrap_or_default(), i.vlan_parent.clone().unwrap_or_default()),
    };
    let mut v = json!({
        "Id": i.name,
        "Name": i.name,
        "Description": desc,
        "EthernetInterfaceType": if i.kind == Kind::Physical { "Physical" } else { "Virtual" },
        "Status": status(i),
    });
    let mut set = |k: &str, x: Option<Value>| {
        if let Some(x) = x {
            v[k] = x;
        }
    };
    set("MACAddress", i.mac.clone().map(Value::from));
    set("PermanentMACAddress", i.permanent_mac.clone().map(Value::from));
    set("LinkStatus", link_status(i).map(Value::from));
    set("InterfaceEnabled", i.admin_up.map(Value::from));
    set("SpeedMbps", i.speed_mbps.filter(|_| i.link_up()).map(Value::from));
    set("FullDuplex", i.full_duplex.filter(|_| i.link_up()).map(Value::from));
    set("MTUSize", i.mtu.map(Value::from));
    let v4: Vec<Value> = i
        .ipv4
        .iter()
        .map(|a| {
            let mut o = json!({
                "Address": a.address,
                "SubnetMask": mask(a.prefix_len),
                "AddressOrigin": match a.origin { Origin::Dhcp => "DHCP", Origin::LinkLocal => "IPv4LinkLocal", _ => "Static" },
            });
            if let Some(g) = i.gateway4.clone().or_else(|| i.lease.as_ref().and_then(|l| l.router.clone())) {
                o["Gateway"] = json!(g);
            }
            o
        })
        .collect();
    let v6: Vec<Value> = i
        .ipv6
        .iter()
        .map(|a| {
            json!({
                "Address": a.address,
                "PrefixLength": a.prefix_len,
                "AddressOrigin": match a.origin { Origin::Dhcp => "DHCPv6", Origin::LinkLocal => "LinkLocal", Origin::Slaac => "SLAAC", Origin::Static => "Static" },
            })
        })
        .collect();
    let has_ip = !v4.is_empty() || i.ipv6.iter().any(|a| a.origin != Origin::LinkLocal);
    v["IPv4Addresses"] = json!(v4);
    v["IPv6Addresses"] = json!(v6);
    if let Some(g) = &i.gateway6 {
        v["IPv6DefaultGateway"] = json!(g);
    }
    let mut ns: Vec<String> = i.lease.as_ref().map(|l| l.dns.clone()).unwrap_or_default();
    if has_ip {
        for s in &net.name_servers {
            if !ns.contains(s) {
                ns.push(s.clone());
            }
        }
    }
    v["NameServers"] = json!(ns);
    let dhcp4 = i.lease.is_some() || i.ipv4.iter().any(|a| a.origin == Origin::Dhcp);
    v["DHCPv4"] = json!({ "DHCPEnabled": dhcp4 });
    if let Some(l) = &i.lease {
        v["DHCPv4"]["UseDNSServers"] = json!(!l.dns.is_empty());
        v["DHCPv4"]["UseGateway"] = json!(l.router.is_some());
        v["DHCPv4"]["UseDomainName"] = json!(l.domain.is_some());
    }
    let dhcp6 = i.ipv6.iter().any(|a| a.origin == Origin::Dhcp);
    v["DHCPv6"] = json!({ "OperatingMode": if dhcp6 { "Enabled" } else { "Disabled" } });
    v["StatelessAddressAutoConfig"] = json!({ "IPv6AutoConfigEnabled": i.ipv6.iter().any(|a| a.origin == Origin::Slaac) });
    if let Some(mode) = network::team_mode_of(i) {
        v["TeamMode"] = json!(mode);
    }
    if let (Kind::Vlan, Some(id)) = (i.kind, i.vlan_id) {
        v["VLAN"] = json!({ "VLANEnable": true, "VLANId": id });
    }
    let mut links = json!({ "Chassis": link(CHASSIS) });
    let related: Vec<String> = match i.kind {
        Kind::Bond | Kind::Bridge => i.members.clone(),
        Kind::Vlan => i.vlan_parent.clone().into_iter().collect(),
        Kind::Physical => vec![],
    };
    let related: Vec<Value> = related.iter().filter(|n| net.interface(n).is_some()).map(|n| link(iface_uri(n))).collect();
    if !related.is_empty() {
        links["RelatedInterfaces@odata.count"] = json!(related.len());
        links["RelatedInterfaces"] = json!(related);
    }
    let aff: Vec<Value> = affiliated(net, &i.name).iter().map(|n| link(iface_uri(n))).collect();
    if !aff.is_empty() {
        links["AffiliatedInterfaces@odata.count"] = json!(aff.len());
        links["AffiliatedInterfaces"] = json!(aff);
    }
    if let Some(a) = net.adapter_of(&i.name) {
        links["Ports@odata.count"] = json!(1);
        links["Ports"] = json!([link(port_uri(&a.id, &i.name))]);
    }
    v["Links"] = links;
    Ok(v)
}

/// The FirmwareInventory id of an adapter's firmware.
pub fn nic_firmware_id(adapter: &str) -> String {
    format!("NIC_{adapter}")
}

async fn adapters(r: Req) -> RfResult<Value> {
    check_chassis(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Network Adapter Collection", inv.network.adapters.iter().map(|a| adapter_uri(&a.id))))
}

async fn adapter(r: Req) -> RfResult<Value> {
    check_chassis(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let a = inv.network.adapter(id).ok_or_else(|| RfError::resource_not_found("NetworkAdapter", id))?;
    let mut v = json!({
        "Id": a.id,
        "Name": a.model.clone().unwrap_or_else(|| format!("Network adapter {}", a.id)),
        "Ports": link(format!("{}/Ports", adapter_uri(&a.id))),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Controllers": [{ "ControllerCapabilities": { "NetworkPortCount": a.ports.len() } }],
    });
    if let Some(fw) = &a.firmware {
        v["Controllers"][0]["FirmwarePackageVersion"] = json!(fw);
        v["Controllers"][0]["Links"] = json!({ "ActiveSoftwareImage": link(super::update::firmware_uri(&nic_firmware_id(&a.id))) });
    }
    if let Some(m) = &a.manufacturer {
        v["Manufacturer"] = json!(m);
    }
    if let Some(m) = &a.model {
        v["Model"] = json!(m);
    }
    if let Some(s) = &a.pci_slot {
        v["Description"] = json!(format!("PCI device {s}{}", a.driver.as_ref().map(|d| format!(" (driver {d})")).unwrap_or_default()));
    }
    Ok(v)
}

async fn ports(r: Req) -> RfResult<Value> {
    check_chassis(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let a = inv.network.adapter(id).ok_or_else(|| RfError::resource_not_found("NetworkAdapter", id))?;
    Ok(collection("Port Collection", a.ports.iter().map(|p| port_uri(&a.id, p))))
}

/// LLDP capability bits (IEEE 802.1AB system capabilities) as Redfish names.
fn capabilities(bits: u16) -> Vec<&'static str> {
    let names = [(0, "Other"), (1, "Repeater"), (2, "Bridge"), (3, "WLANAccessPoint"), (4, "Router"), (5, "Telephone"), (6, "DOCSISCableDevice"), (7, "Station")];
    let v: Vec<&str> = names.iter().filter(|(b, _)| bits & (1 << b) != 0).map(|(_, n)| *n).collect();
    if v.is_empty() { vec!["None"] } else { v }
}

/// IEEE 802.1AB chassis and port ID subtypes (by number) as Redfish `IEEE802IdSubtype`.
const CHASSIS_SUBTYPES: [&str; 8] = ["", "ChassisComp", "IfAlias", "PortComp", "MacAddr", "NetworkAddr", "IfName", "LocalAssign"];
const PORT_SUBTYPES: [&str; 8] = ["", "IfAlias", "PortComp", "MacAddr", "NetworkAddr", "IfName", "AgentId", "LocalAssign"];

fn looks_like_mac(s: &str) -> bool {
    s.len() == 17 && s.split(':').count() == 6 && s.split(':').all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn port(r: Req) -> RfResult<Value> {
    check_chassis(&r)?;
    let inv = r.keel.inventory();
    let net = &inv.network;
    let (aid, pid) = (r.param(1), r.param(2));
    let a = net.adapter(aid).ok_or_else(|| RfError::resource_not_found("NetworkAdapter", aid))?;
    let i = a.ports.iter().find(|p| *p == pid).and_then(|p| net.interface(p)).ok_or_else(|| RfError::resource_not_found("Port", pid))?;
    let mut v = json!({
        "Id": i.name,
        "Name": format!("Port {}", i.name),
        "LinkNetworkTechnology": "Ethernet",
        "PortProtocol": "Ethernet",
        "PortType": "BidirectionalPort",
        "Status": status(i),
        "Links": { "EthernetInterfaces@odata.count": 1, "EthernetInterfaces": [link(iface_uri(&i.name))] },
    });
    if let Some(pci) = &i.pci {
        v["PortId"] = json!(pci);
    }
    if let Some(s) = link_status(i) {
        v["LinkStatus"] = json!(s);
    }
    if let Some(up) = i.admin_up {
        v["LinkState"] = json!(if up { "Enabled" } else { "Disabled" });
        v["InterfaceEnabled"] = json!(up);
    }
    if let Some(s) = i.speed_mbps.filter(|_| i.link_up()) {
        v["CurrentSpeedGbps"] = json!(s as f64 / 1000.0);
    }
    if let Some(m) = i.mtu {
        v["MaxFrameSize"] = json!(m + 18);
    }
    let mut eth = json!({});
    if let Some(m) = i.permanent_mac.clone().or_else(|| i.mac.clone()) {
        eth["AssociatedMACAddresses"] = json!([m]);
    }
    let lldp = net.lldp.get(&i.name).and_then(|n| n.first());
    eth["LLDPEnabled"] = json!(lldp.is_some());
    if let Some(n) = lldp {
        let mut rx = json!({});
        if let Some(c) = &n.chassis_id {
            rx["ChassisId"] = json!(c);
            let sub = n.chassis_subtype.and_then(|t| CHASSIS_SUBTYPES.get(t as usize).copied()).filter(|t| !t.is_empty());
            if let Some(t) = sub.or_else(|| looks_like_mac(c).then_some("MacAddr")) {
                rx["ChassisIdSubtype"] = json!(t);
            }
        }
        if let Some(p) = &n.port_id_hex {
            rx["PortId"] = json!(p);
        }
        if let Some(t) = n.port_subtype.and_then(|t| PORT_SUBTYPES.get(t as usize).copied()).filter(|t| !t.is_empty()) {
            rx["PortIdSubtype"] = json!(t);
        }
        if let Some(s) = &n.system_name {
            rx["SystemName"] = json!(s);
        }
        if let Some(s) = &n.system_description {
            rx["SystemDescription"] = json!(s);
        }
        if let Some(c) = n.capabilities {
            rx["SystemCapabilities"] = json!(capabilities(c));
        }
        eth["LLDPReceive"] = rx;
    }
    v["Ethernet"] = eth;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_capabilities() {
        assert_eq!(mask(24), "255.255.255.0");
        assert_eq!(mask(0), "0.0.0.0");
        assert_eq!(mask(32), "255.255.255.255");
        assert_eq!(capabilities(0x14), vec!["Bridge", "Router"]);
        assert_eq!(capabilities(0), vec!["None"]);
    }
}
