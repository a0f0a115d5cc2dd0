//! The host inventory backend: parses what the host root shows into plain facts. Built once at
//! start (and again on change), so a GET never waits on the machine.

pub mod cpu;
pub mod hwmon;
pub mod journal;
pub mod memory;
pub mod pci;
pub mod network;
pub mod power;
pub mod secureboot;
pub mod smbios;
pub mod software;
pub mod storage;
pub mod uevent;

use crate::host::Host;
use serde::Serialize;

/// What the inventory knows about the system as a whole (DMI/SMBIOS type 1 and the kernel).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SystemInfo {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub sku: Option<String>,
    pub bios_version: Option<String>,
    pub hostname: Option<String>,
    pub total_memory_kib: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Inventory {
    pub system: SystemInfo,
    pub processors: Vec<cpu::Processor>,
    pub memory: Vec<memory::Dimm>,
    pub software: Vec<software::Component>,
    pub firmware: Vec<software::Component>,
    pub sensors: Vec<hwmon::Sensor>,
    pub power_supplies: Vec<power::Supply>,
    pub pci: Vec<pci::Device>,
    pub storage: Vec<storage::Controller>,
    pub network: network::Network,
    /// `None` when the host did not boot through UEFI.
    pub secure_boot: Option<secureboot::SecureBoot>,
}

/// A firmware-provided text, unless it is one of the placeholders vendors leave in
/// (`To Be Filled By O.E.M.`, `Default string`, `Not Specified`…): those mean "unknown".
pub fn meaningful(s: &str) -> Option<String> {
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.", "default string", "not specified", "system product name", "system manufacturer",
        "unknown", "none", "not provided", "no dimm", "n/a",
    ];
    let s = s.trim();
    (!s.is_empty() && !PLACEHOLDERS.contains(&s.to_ascii_lowercase().as_str())).then(|| s.to_string())
}

/// One `/sys/class/dmi/id` field of the host, if meaningful.
pub fn dmi(host: &Host, field: &str) -> Option<String> {
    meaningful(&host.attr(&format!("/sys/class/dmi/id/{field}"))?)
}

pub fn system_info(host: &Host, tables: &[smbios::Structure]) -> SystemInfo {
    let t1 = tables.iter().find(|s| s.kind == 1);
    let from1 = |off| t1.and_then(|s| s.string(off));
    let uuid = dmi(host, "product_uuid").or_else(|| t1.and_then(smbios_uuid)).and_then(|u| uuid::Uuid::parse_str(&u).ok()).map(|u| u.to_string());
    SystemInfo {
        manufacturer: dmi(host, "sys_vendor").or_else(|| from1(4)),
        model: dmi(host, "product_name").or_else(|| from1(5)),
        serial: dmi(host, "product_serial").or_else(|| from1(7)),
        uuid,
        sku: dmi(host, "product_sku").or_else(|| from1(0x19)),
        bios_version: dmi(host, "bios_version").or_else(|| tables.iter().find(|s| s.kind == 0).and_then(|s| s.string(5))),
        hostname: host.attr("/proc/sys/kernel/hostname").or_else(|| host.attr("/etc/hostname")),
        total_memory_kib: host.read("/proc/meminfo").ok().and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok()))
        }),
    }
}

/// SMBIOS type 1 UUID (bytes 8..24; the first three fields little-endian, DSP0134 §7.2.1).
fn smbios_uuid(s: &smbios::Structure) -> Option<String> {
    let b = s.data.get(8..24)?;
    if b.iter().all(|x| *x == 0) || b.iter().all(|x| *x == 0xff) {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

impl Inventory {
    /// Every resource the inventory puts in the tree, with its Redfish type name: comparing two
    /// inventories tells what was hot-plugged or removed.
    pub fn resources(&self) -> std::collections::BTreeMap<String, &'static str> {
        use crate::tree::{network, pcie, sensors, storage, systems};
        let mut m = std::collections::BTreeMap::new();
        m.extend(self.processors.iter().map(|p| (systems::processor_uri(p.socket), "Processor")));
        m.extend((0..self.memory.len()).map(|i| (systems::dimm_uri(i), "Memory")));
        m.extend(self.sensors.iter().map(|s| (sensors::sensor_uri(&s.id), "Sensor")));
        m.extend(self.power_supplies.iter().map(|p| (sensors::power_supply_uri(&p.id), "PowerSupply")));
        m.extend(self.pci.iter().map(|d| (pcie::device_uri(&d.id), "PCIeDevice")));
        m.extend(self.network.interfaces.iter().map(|i| (network::iface_uri(&i.name), "EthernetInterface")));
        m.extend(self.network.adapters.iter().map(|a| (network::adapter_uri(&a.id), "NetworkAdapter")));
        m.extend(self.storage.iter().flat_map(|c| c.drives.iter()).map(|d| (storage::drive_uri(d), "Drive")));
        m
    }

    /// Read everything: sysfs, procfs and the commands the inventory parses (`ip`, `smartctl`…).
    /// `smart` keeps SMART results between builds (smartctl runs only when due); `None` skips SMART.
    pub fn build(host: &Host, smart: Option<&storage::SmartCache>) -> Inventory {
        let tables = host.read_bytes("/sys/firmware/dmi/tables/DMI").map(|t| smbios::parse(&t)).unwrap_or_default();
        Inventory {
            system: system_info(host, &tables),
            processors: cpu::processors(host, &tables),
            memory: memory::dimms(&tables),
            software: software::software(host),
            firmware: software::firmware(host),
            sensors: hwmon::sensors(host),
            power_supplies: power::supplies(host),
            pci: pci::devices(host, &pci::PciIds::load(host)),
            storage: storage::controllers(host, smart),
            network: network::read(host),
            secure_boot: secureboot::read(host),
        }
    }
}
