//! A first ComputerSystem and Chassis, so links resolve; the inventory issue fills them in.

use super::{check_system, collection, link, put, Req, Tree};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

pub const SYSTEM: &str = "/redfish/v1/Systems/system";
pub const CHASSIS: &str = "/redfish/v1/Chassis/chassis";

pub fn processor_uri(socket: u32) -> String {
    format!("{SYSTEM}/Processors/CPU{socket}")
}
pub fn dimm_uri(index: usize) -> String {
    format!("{SYSTEM}/Memory/DIMM{index}")
}

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Systems", "ComputerSystemCollection", Some(types::COMPUTER_SYSTEM_COLLECTION)).get(LOGIN, systems));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}", "ComputerSystem", Some(types::COMPUTER_SYSTEM)).get(LOGIN, system));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Processors", "ProcessorCollection", Some(types::PROCESSOR_COLLECTION)).get(LOGIN, processors));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Processors/{ProcessorId}", "Processor", Some(types::PROCESSOR)).get(LOGIN, processor));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Memory", "MemoryCollection", Some(types::MEMORY_COLLECTION)).get(LOGIN, memory_list));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Memory/{MemoryId}", "Memory", Some(types::MEMORY)).get(LOGIN, memory));
    t.add(Tree::route("/redfish/v1/Chassis", "ChassisCollection", Some(types::CHASSIS_COLLECTION)).get(LOGIN, chassis_list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}", "Chassis", Some(types::CHASSIS)).get(LOGIN, chassis));
}

/// One DMI field of the host, if meaningful.
fn dmi(r: &Req, field: &str) -> Option<String> {
    crate::inventory::dmi(&r.keel.host, field)
}

async fn systems(_: Req) -> RfResult<Value> {
    Ok(collection("Computer System Collection", [SYSTEM.to_string()]))
}


async fn system(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    let sys = &inv.system;
    let cores: u32 = inv.processors.iter().map(|p| p.cores).sum();
    let threads: u32 = inv.processors.iter().map(|p| p.threads).sum();
    let mut v = json!({
        "Id": "system",
        "Name": "Keel host",
        "SystemType": "Physical",
        "Status": { "State": "Enabled", "Health": "OK" },
        "ProcessorSummary": {
            "Count": inv.processors.len(),
            "CoreCount": cores,
            "LogicalProcessorCount": threads,
        },
        "MemorySummary": {
            "TotalSystemMemoryGiB": memory_gib(&inv),
        },
        "Processors": link(format!("{SYSTEM}/Processors")),
        "Memory": link(format!("{SYSTEM}/Memory")),
        "LogServices": link(format!("{SYSTEM}/LogServices")),
        "Storage": link(format!("{SYSTEM}/Storage")),
        "EthernetInterfaces": link(format!("{SYSTEM}/EthernetInterfaces")),
        "Links": { "Chassis": [link(CHASSIS)], "ManagedBy": [link(super::managers::MANAGER)] },
    });
    super::power::system_props(&r, &mut v);
    if let Some(t) = super::tpm::trusted_modules(&r) {
        // TrustedModules is deprecated in favour of Links.TrustedComponents; both are served, as
        // clients (sushy, Ansible) still read the former.
        v["TrustedModules"] = t;
        v["Links"]["TrustedComponents"] = json!([link(super::tpm::TRUSTED_TPM)]);
    }
    if inv.secure_boot.is_some() {
        v["SecureBoot"] = link(super::secureboot::uri());
    }
    if let Some(b) = super::boot::system_boot(&r) {
        v["Boot"] = b;
    }
    v["Oem"] = json!({ "Keel": super::crypt::system_oem(&r) });
    if let Some(a) = super::crypt::system_actions(&r) {
        v["Actions"]["Oem"] = a;
    }
    if let Some(m) = inv.processors.first().and_then(|p| p.model.clone()) {
        v["ProcessorSummary"]["Model"] = json!(m);
    }
    for (prop, val) in [("Manufacturer", &sys.manufacturer), ("Model", &sys.model), ("SerialNumber", &sys.serial), ("SKU", &sys.sku), ("BiosVersion", &sys.bios_version), ("HostName", &sys.hostname), ("UUID", &sys.uuid)] {
        if let Some(x) = val {
            v[prop] = json!(x);
        }
    }
    Ok(v)
}

/// Installed memory: the DIMMs' sizes when SMBIOS lists them, else what the kernel sees.
fn memory_gib(inv: &crate::inventory::Inventory) -> f64 {
    let mib: u64 = inv.memory.iter().map(|d| d.size_mib).sum();
    let gib = if mib > 0 { mib as f64 / 1024.0 } else { inv.system.total_memory_kib.unwrap_or(0) as f64 / (1024.0 * 1024.0) };
    (gib * 100.0).round() / 100.0
}

async fn processors(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Processors Collection", inv.processors.iter().map(|p| processor_uri(p.socket))))
}

async fn processor(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let p = inv
        .processors
        .iter()
        .find(|p| format!("CPU{}", p.socket) == id)
        .ok_or_else(|| RfError::resource_not_found("Processor", id))?;
    let mut v = json!({
        "Id": id,
        "Name": format!("Processor {}", p.socket),
        "ProcessorType": "CPU",
        "TotalCores": p.cores,
        "TotalEnabledCores": p.cores,
        "TotalThreads": p.threads,
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    put(&mut v, "Socket", p.socket_label.clone());
    put(&mut v, "Manufacturer", p.manufacturer.clone());
    put(&mut v, "Model", p.model.clone());
    put(&mut v, "InstructionSet", p.instruction_set);
    put(&mut v, "ProcessorArchitecture", p.architecture);
    put(&mut v, "MaxSpeedMHz", p.max_mhz);
    put(&mut v, "OperatingSpeedMHz", p.current_mhz);
    put(&mut v, "SerialNumber", p.serial.clone());
    put(&mut v, "PartNumber", p.part_number.clone());
    let mut id_obj = serde_json::Map::new();
    for (k, x) in [("VendorId", &p.vendor_id), ("EffectiveFamily", &p.family), ("EffectiveModel", &p.model_number), ("Step", &p.stepping), ("MicrocodeInfo", &p.microcode)] {
        if let Some(x) = x {
            id_obj.insert(k.into(), json!(x));
        }
    }
    if !id_obj.is_empty() {
        v["ProcessorId"] = Value::Object(id_obj);
    }
    Ok(v)
}

async fn memory_list(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Memory Collection", (0..inv.memory.len()).map(dimm_uri)))
}

async fn memory(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let d = id
        .strip_prefix("DIMM")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|i| inv.memory.get(i))
        .ok_or_else(|| RfError::resource_not_found("Memory", id))?;
    let mut v = json!({
        "Id": id,
        "Name": d.locator.clone().unwrap_or_else(|| id.to_string()),
        "MemoryType": "DRAM",
        "CapacityMiB": d.size_mib,
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    put(&mut v, "MemoryDeviceType", d.device_type);
    put(&mut v, "OperatingSpeedMhz", d.configured_mts.or(d.speed_mts));
    put(&mut v, "AllowedSpeedsMHz", d.speed_mts.map(|s| json!([s])));
    put(&mut v, "Manufacturer", d.manufacturer.clone());
    put(&mut v, "SerialNumber", d.serial.clone());
    put(&mut v, "PartNumber", d.part_number.clone());
    put(&mut v, "RankCount", d.rank);
    put(&mut v, "DataWidthBits", d.data_width);
    put(&mut v, "BusWidthBits", d.total_width);
    if let Some(l) = &d.locator {
        v["Location"] = json!({ "PartLocation": { "ServiceLabel": l, "LocationType": "Slot" } });
    }
    Ok(v)
}

async fn chassis_list(_: Req) -> RfResult<Value> {
    Ok(collection("Chassis Collection", [CHASSIS.to_string()]))
}

/// SMBIOS chassis type numbers (DSP0134 §7.4.1) as Redfish ChassisType.
fn chassis_type(r: &Req) -> &'static str {
    match dmi(r, "chassis_type").and_then(|t| t.parse::<u32>().ok()) {
        Some(3 | 4 | 5 | 6 | 7 | 15 | 16 | 24) => "StandAlone",
        Some(8 | 9 | 10 | 14 | 30 | 31 | 32) => "Other",
        Some(17 | 23 | 28) => "RackMount",
        Some(25 | 29) => "Blade",
        Some(1) | Some(2) | None | Some(_) => "Other",
    }
}

async fn chassis(r: Req) -> RfResult<Value> {
    if r.param(0) != "chassis" {
        return Err(RfError::resource_not_found("Chassis", r.param(0)));
    }
    let mut v = json!({
        "Id": "chassis",
        "Name": "Keel host chassis",
        "ChassisType": chassis_type(&r),
        "NetworkAdapters": link(format!("{CHASSIS}/NetworkAdapters")),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Links": { "ComputerSystems": [link(SYSTEM)], "ManagedBy": [link(super::managers::MANAGER)] },
        "Sensors": link(format!("{CHASSIS}/Sensors")),
        "PCIeDevices": link(format!("{CHASSIS}/PCIeDevices")),
        "Drives": link(format!("{CHASSIS}/Drives")),
        "TrustedComponents": link(format!("{CHASSIS}/TrustedComponents")),
    });
    let inv = r.keel.inventory();
    if super::sensors::has_thermal(&inv.sensors) {
        v["ThermalSubsystem"] = link(format!("{CHASSIS}/ThermalSubsystem"));
    }
    if super::sensors::has_power(&inv) {
        v["PowerSubsystem"] = link(format!("{CHASSIS}/PowerSubsystem"));
    }
    for (prop, field) in [("Manufacturer", "chassis_vendor"), ("SerialNumber", "chassis_serial"), ("AssetTag", "chassis_asset_tag")] {
        if let Some(x) = dmi(&r, field) {
            v[prop] = json!(x);
        }
    }
    Ok(v)
}
