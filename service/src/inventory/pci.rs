//! PCI devices and functions from /sys/bus/pci/devices, named from pci.ids when installed.

use crate::host::Host;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Function {
    /// `0000:3b:00.1`
    pub address: String,
    pub function: u8,
    pub vendor_id: u16,
    pub device_id: u16,
    pub subsystem_vendor_id: Option<u16>,
    pub subsystem_id: Option<u16>,
    pub class: u32,
    pub revision: Option<u8>,
    pub driver: Option<String>,
    pub virtual_fn: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Device {
    /// URI-safe id from domain, bus and slot: `0000_3b_00`.
    pub id: String,
    pub vendor: Option<String>,
    pub name: Option<String>,
    /// Current and maximum link: ("Gen4", 16).
    pub link: Option<(&'static str, u32)>,
    pub max_link: Option<(&'static str, u32)>,
    pub functions: Vec<Function>,
}

/// Vendor and device names from a pci.ids file.
#[derive(Default, Debug)]
pub struct PciIds {
    vendors: BTreeMap<u16, (String, BTreeMap<u16, String>)>,
}

impl PciIds {
    pub fn parse(text: &str) -> PciIds {
        let mut ids = PciIds::default();
        let mut cur: Option<u16> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with("C ") {
                break; // the device class section follows the vendors
            }
            if let Some(rest) = line.strip_prefix('\t') {
                if rest.starts_with('\t') {
                    continue; // subsystems
                }
                if let (Some(v), Some((id, name))) = (cur, rest.split_once("  ")) {
                    if let Ok(id) = u16::from_str_radix(id.trim(), 16) {
                        ids.vendors.get_mut(&v).map(|e| e.1.insert(id, name.trim().to_string()));
                    }
                }
            } else if let Some((id, name)) = line.split_once("  ") {
                cur = u16::from_str_radix(id.trim(), 16).ok();
                if let Some(v) = cur {
                    ids.vendors.insert(v, (name.trim().to_string(), BTreeMap::new()));
                }
            }
        }
        ids
    }
    pub fn vendor(&self, v: u16) -> Option<&str> {
        self.vendors.get(&v).map(|e| e.0.as_str())
    }
    pub fn device(&self, v: u16, d: u16) -> Option<&str> {
        self.vendors.get(&v).and_then(|e| e.1.get(&d)).map(String::as_str)
    }
    pub fn load(host: &Host) -> PciIds {
        ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"]
            .iter()
            .find_map(|p| host.read(p).ok())
            .map(|t| PciIds::parse(&t))
            .unwrap_or_default()
    }
}

/// "16.0 GT/s PCIe" → Gen4.
pub fn generation(speed: &str) -> Option<&'static str> {
    let gts: f64 = speed.split_whitespace().next()?.parse().ok()?;
    Some(match gts {
        x if x < 3.0 => "Gen1",
        x if x < 6.0 => "Gen2",
        x if x < 10.0 => "Gen3",
        x if x < 20.0 => "Gen4",
        x if x < 40.0 => "Gen5",
        _ => "Gen6",
    })
}

fn hex<T: TryFrom<u64>>(s: Option<String>) -> Option<T> {
    let s = s?;
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok().and_then(|v| T::try_from(v).ok())
}

fn link(host: &Host, dir: &str, speed: &str, width: &str) -> Option<(&'static str, u32)> {
    let g = generation(&host.attr(&format!("{dir}/{speed}"))?)?;
    let w: u32 = host.attr(&format!("{dir}/{width}"))?.parse().ok()?;
    (w > 0).then_some((g, w))
}

/// Every PCI device (grouped functions), bridges left out.
pub fn devices(host: &Host, ids: &PciIds) -> Vec<Device> {
    let mut by_slot: BTreeMap<String, Device> = BTreeMap::new();
    for addr in host.list("/sys/bus/pci/devices") {
        let dir = format!("/sys/bus/pci/devices/{addr}");
        let Some((slot, func)) = addr.rsplit_once('.') else { continue };
        let (Some(vendor_id), Some(device_id)) = (hex::<u16>(host.attr(&format!("{dir}/vendor"))), hex::<u16>(host.attr(&format!("{dir}/device")))) else {
            continue; // vanished while reading
        };
        let class = hex::<u32>(host.attr(&format!("{dir}/class"))).unwrap_or(0);
        if class >> 16 == 0x06 {
            continue; // host bridges and PCI bridges are not devices an operator manages
        }
        let f = Function {
            address: addr.clone(),
            function: func.parse().unwrap_or(0),
            vendor_id,
            device_id,
            subsystem_vendor_id: hex(host.attr(&format!("{dir}/subsystem_vendor"))),
            subsystem_id: hex(host.attr(&format!("{dir}/subsystem_device"))),
            class,
            revision: hex(host.attr(&format!("{dir}/revision"))),
            driver: host.link(&format!("{dir}/driver")).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            virtual_fn: host.link(&format!("{dir}/physfn")).is_some(),
        };
        let d = by_slot.entry(slot.to_string()).or_insert_with(|| Device {
            id: slot.replace(':', "_"),
            vendor: ids.vendor(vendor_id).map(str::to_string),
            name: ids.device(vendor_id, device_id).map(str::to_string),
            link: link(host, &dir, "current_link_speed", "current_link_width"),
            max_link: link(host, &dir, "max_link_speed", "max_link_width"),
            functions: vec![],
        });
        d.functions.push(f);
    }
    by_slot.into_values().collect()
}

/// PCI class code (base class) as Redfish DeviceClass.
pub fn device_class(class: u32) -> &'static str {
    match class >> 16 {
        0x00 => "UnclassifiedDevice",
        0x01 => "MassStorageController",
        0x02 => "NetworkController",
        0x03 => "DisplayController",
        0x04 => "MultimediaController",
        0x05 => "MemoryController",
        0x06 => "Bridge",
        0x07 => "CommunicationController",
        0x08 => "GenericSystemPeripheral",
        0x09 => "InputDeviceController",
        0x0a => "DockingStation",
        0x0b => "Processor",
        0x0c => "SerialBusController",
        0x0d => "WirelessController",
        0x0e => "IntelligentController",
        0x0f => "SatelliteCommunicationsController",
        0x10 => "EncryptionController",
        0x11 => "SignalProcessingController",
        0x12 => "ProcessingAccelerators",
        0x13 => "NonEssentialInstrumentation",
        0x40 => "Coprocessor",
        0xff => "UnassignedClass",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_ids_and_generations() {
        let ids = PciIds::parse("# comment\n15b3  Mellanox Technologies\n\t1015  MT27710 Family [ConnectX-4 Lx]\n\t\t15b3 0003  Stand-up ConnectX-4 Lx EN\n8086  Intel Corporation\n\t1533  I210 Gigabit Network Connection\nC 00  Unclassified device\n");
        assert_eq!(ids.vendor(0x15b3), Some("Mellanox Technologies"));
        assert_eq!(ids.device(0x15b3, 0x1015), Some("MT27710 Family [ConnectX-4 Lx]"));
        assert_eq!(ids.device(0x8086, 0x1533), Some("I210 Gigabit Network Connection"));
        assert_eq!(ids.device(0x8086, 0x9999), None);
        assert_eq!(generation("16.0 GT/s PCIe"), Some("Gen4"));
        assert_eq!(generation("8.0 GT/s PCIe"), Some("Gen3"));
        assert_eq!(generation("2.5 GT/s"), Some("Gen1"));
        assert_eq!(generation("Unknown"), None);
        assert_eq!(device_class(0x020000), "NetworkController");
        assert_eq!(device_class(0x010802), "MassStorageController");
    }
}
