//! Storage, Drives and Volumes of the system (from `inventory::storage`).

use super::systems::{CHASSIS, SYSTEM};
use super::{check_system, collection, link, put, Req, Tree};
use crate::inventory::storage::{Controller, Drive, Kind};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

const SYS_PATTERN: &str = "/redfish/v1/Systems/{ComputerSystemId}/Storage";

pub fn register(t: &mut Tree) {
    t.add(Tree::route(SYS_PATTERN, "StorageCollection", Some(types::STORAGE_COLLECTION)).get(LOGIN, storage_list));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Storage/{StorageId}", "Storage", Some(types::STORAGE)).get(LOGIN, storage));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Storage/{StorageId}/Controllers", "StorageControllerCollection", Some(types::STORAGE_CONTROLLER_COLLECTION)).get(LOGIN, controllers));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Storage/{StorageId}/Controllers/{StorageControllerId}", "StorageController", Some(types::STORAGE_CONTROLLER)).get(LOGIN, controller));
    // Drives live under the chassis (the Storage-relative URI is deprecated in Drive v1.x).
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/Drives", "DriveCollection", Some(types::DRIVE_COLLECTION)).get(LOGIN, drive_list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/Drives/{DriveId}", "Drive", Some(types::DRIVE)).get(LOGIN, drive));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/Drives/{DriveId}/EnvironmentMetrics", "EnvironmentMetrics", Some(types::ENVIRONMENT_METRICS)).get(LOGIN, drive_environment));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Storage/{StorageId}/Volumes", "VolumeCollection", Some(types::VOLUME_COLLECTION)).get(LOGIN, volumes));
    t.add(Tree::route("/redfish/v1/Systems/{ComputerSystemId}/Storage/{StorageId}/Volumes/{VolumeId}", "Volume", Some(types::VOLUME)).get(LOGIN, volume));
}

fn base() -> String {
    format!("{SYSTEM}/Storage")
}

/// The URI of a Volume of a Storage.
pub fn volume_uri(storage: &str, volume: &str) -> String {
    format!("{}/{storage}/Volumes/{volume}", base())
}


fn with_ctrl<T>(r: &Req, f: impl FnOnce(&Controller) -> RfResult<T>) -> RfResult<T> {
    check_system(r)?;
    let inv = r.keel.inventory();
    let c = inv.storage.iter().find(|c| c.id == r.param(1)).ok_or_else(|| RfError::resource_not_found("Storage", r.param(1)))?;
    f(c)
}

pub fn drive_uri(d: &Drive) -> String {
    format!("{CHASSIS}/Drives/{}", d.id)
}

/// Below this much predicted media life left, a drive's health is Warning.
const LIFE_LOW_PERCENT: u64 = 10;

fn health(d: &Drive) -> &'static str {
    match &d.smart {
        Some(s) if s.failing => "Critical",
        Some(s) if s.life_left_percent.is_some_and(|l| l <= LIFE_LOW_PERCENT) => "Warning",
        _ => "OK",
    }
}

async fn storage_list(r: Req) -> RfResult<Value> {
    check_system(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Storage Collection", inv.storage.iter().map(|c| format!("{}/{}", base(), c.id))))
}

async fn storage(r: Req) -> RfResult<Value> {
    with_ctrl(&r, |c| {
        let uri = format!("{}/{}", base(), c.id);
        let drives: Vec<Value> = c.drives.iter().map(|d| link(drive_uri(d))).collect();
        let worst = |h: &str| c.drives.iter().any(|d| health(d) == h);
        let rollup = if worst("Critical") {
            "Critical"
        } else if worst("Warning") {
            "Warning"
        } else {
            "OK"
        };
        let what = match c.kind {
            Kind::NVMe => "NVMe controller",
            Kind::SATA => "SATA (AHCI) controller",
            Kind::SAS => "SAS host bus adapter",
            Kind::USB => "USB mass storage",
            Kind::Virtio => "virtio block device",
            Kind::Image => "simulated platform's disk images",
            Kind::Other => "storage controller",
        };
        let mut desc = what.to_string();
        if let Some(d) = &c.driver {
            desc.push_str(&format!(", driver {d}"));
        }
        if let Some(p) = &c.pci {
            desc.push_str(&format!(", PCI {p}"));
        }
        Ok(json!({
            "Id": c.id,
            "Name": format!("{} {}", what, c.id),
            "Description": desc,
            "Status": { "State": "Enabled", "Health": "OK", "HealthRollup": rollup },
            "Drives@odata.count": drives.len(),
            "Drives": drives,
            "Volumes": link(format!("{uri}/Volumes")),
            "Controllers": link(format!("{uri}/Controllers")),
        }))
    })
}

async fn drive_list(r: Req) -> RfResult<Value> {
    if r.param(0) != "chassis" {
        return Err(RfError::resource_not_found("Chassis", r.param(0)));
    }
    let inv = r.keel.inventory();
    Ok(collection("Drive Collection", inv.storage.iter().flat_map(|c| c.drives.iter().map(drive_uri))))
}

/// A drive by its Id, with the controller it hangs off.
fn find_drive<'a>(inv: &'a crate::inventory::Inventory, id: &str) -> RfResult<(&'a Controller, &'a Drive)> {
    inv.storage
        .iter()
        .find_map(|c| c.drives.iter().find(|d| d.id == id).map(|d| (c, d)))
        .ok_or_else(|| RfError::resource_not_found("Drive", id))
}

/// A drive's temperature as SMART last reported it (EnvironmentMetrics of the drive).
async fn drive_environment(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let (_, d) = find_drive(&inv, id)?;
    let t = d.smart.as_ref().and_then(|s| s.temperature_c).ok_or_else(|| RfError::not_found(&r.path))?;
    Ok(json!({
        "Id": "EnvironmentMetrics",
        "Name": format!("Drive {id} environment"),
        "TemperatureCelsius": { "Reading": t },
    }))
}

async fn drive(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let (c, d) = find_drive(&inv, id)?;
    {
        let uri = drive_uri(d);
        let mut v = json!({
            "Id": d.id,
            "Name": format!("Drive {}", d.id),
            "Status": { "State": "Enabled", "Health": health(d) },
        });
        put(&mut v, "Manufacturer", d.manufacturer.clone());
        put(&mut v, "Model", d.model.clone());
        put(&mut v, "SerialNumber", d.serial.clone());
        put(&mut v, "Revision", d.revision.clone());
        put(&mut v, "CapacityBytes", d.capacity_bytes);
        put(&mut v, "BlockSizeBytes", d.block_size);
        put(&mut v, "MediaType", d.media_type);
        put(&mut v, "Protocol", d.protocol);
        put(&mut v, "RotationSpeedRPM", d.rotation_rpm);
        if let Some((fmt, name)) = &d.durable_name {
            v["Identifiers"] = json!([{ "DurableNameFormat": fmt, "DurableName": name }]);
        }
        if let Some(s) = &d.smart {
            if s.temperature_c.is_some() {
                v["EnvironmentMetrics"] = link(format!("{uri}/EnvironmentMetrics"));
            }
            v["FailurePredicted"] = json!(s.failing);
            put(&mut v, "PredictedMediaLifeLeftPercent", s.life_left_percent);
            if s.failing {
                let location = format!("Storage {} drive {}", c.id, d.id);
                v["Status"]["Conditions"] = json!([{
                    "MessageId": "StorageDevice.1.5.DriveFailure",
                    "MessageArgs": [location],
                    "Message": format!("A failure condition for the drive located in '{location}' was detected. SMART: {}.", s.failures.join("; ")),
                    "Severity": "Critical",
                    "Resolution": "Back up the data on this drive and replace it.",
                    "OriginOfCondition": link(uri.clone()),
                }]);
            } else if let Some(life) = s.life_left_percent.filter(|l| *l <= LIFE_LOW_PERCENT) {
                let location = format!("Storage {} drive {}", c.id, d.id);
                v["Status"]["Conditions"] = json!([{
                    "MessageId": "StorageDevice.1.5.DrivePredictedMediaLifeLow",
                    "MessageArgs": [location, life.to_string(), LIFE_LOW_PERCENT.to_string()],
                    "Message": format!("The drive located at `{location}` has a predicted media life left of {life} percent and is below the specified threhsold of {LIFE_LOW_PERCENT} percent."),
                    "Severity": "Warning",
                    "Resolution": "Replace the drive before the predicted media life left reaches 0%.",
                    "OriginOfCondition": link(uri.clone()),
                }]);
            }
        }
        if let Some(e) = &d.smart_error {
            // SMART could not be read: the SMART properties are left out, and Status says why.
            v["Status"]["Conditions"] = json!([{
                "MessageId": "ResourceEvent.1.4.ResourceErrorsDetected",
                "MessageArgs": ["FailurePredicted", e],
                "Message": format!("The resource property FailurePredicted has detected errors of type '{e}'."),
                "Severity": "OK",
                "Resolution": "Install smartmontools (smartctl 7 or later) and check that the drive answers SMART commands.",
                "OriginOfCondition": link(uri.clone()),
            }]);
        }
        let vols: Vec<Value> = c.volumes.iter().filter(|x| x.drives.contains(&d.id)).map(|x| link(volume_uri(&c.id, &x.id))).collect();
        v["Links"] = json!({ "Storage": link(format!("{}/{}", base(), c.id)) });
        if !vols.is_empty() {
            v["Links"]["Volumes@odata.count"] = json!(vols.len());
            v["Links"]["Volumes"] = json!(vols);
        }
        Ok(v)
    }
}

async fn controllers(r: Req) -> RfResult<Value> {
    with_ctrl(&r, |c| Ok(collection("Storage Controller Collection", [format!("{}/{}/Controllers/0", base(), c.id)])))
}

/// The controller of a Storage (one each: an NVMe controller, an HBA, a virtio device).
async fn controller(r: Req) -> RfResult<Value> {
    with_ctrl(&r, |c| {
        if r.param(2) != "0" {
            return Err(RfError::resource_not_found("StorageController", r.param(2)));
        }
        let mut v = json!({
            "Id": "0",
            "Name": format!("{} controller", c.id),
            "Status": { "State": "Enabled", "Health": "OK" },
        });
        let mut desc = vec![];
        if let Some(d) = &c.driver {
            desc.push(format!("driver {d}"));
        }
        if let Some(p) = &c.pci {
            desc.push(format!("PCI {p}"));
            v["SupportedControllerProtocols"] = json!(["PCIe"]);
        }
        if !desc.is_empty() {
            v["Description"] = json!(desc.join(", "));
        }
        let devices: &[&str] = match c.kind {
            Kind::NVMe => &["NVMe"],
            Kind::SATA => &["SATA"],
            Kind::SAS => &["SAS", "SATA"],
            Kind::USB => &["USB"],
            Kind::Virtio | Kind::Image | Kind::Other => &[],
        };
        if !devices.is_empty() {
            v["SupportedDeviceProtocols"] = json!(devices);
        }
        if let Some(m) = &c.model {
            v["Model"] = json!(m);
            if let Some(x) = c.drives.first().and_then(|d| d.manufacturer.clone()).filter(|_| c.kind == Kind::NVMe) {
                v["Manufacturer"] = json!(x);
            }
        }
        if let Some(x) = &c.serial {
            v["SerialNumber"] = json!(x);
        }
        if let Some(x) = &c.firmware {
            v["FirmwareVersion"] = json!(x);
        }
        Ok(v)
    })
}

async fn volumes(r: Req) -> RfResult<Value> {
    with_ctrl(&r, |c| Ok(collection("Volume Collection", c.volumes.iter().map(|v| volume_uri(&c.id, &v.id)))))
}

async fn volume(r: Req) -> RfResult<Value> {
    with_ctrl(&r, |c| {
        let id = r.param(2);
        let x = c.volumes.iter().find(|v| v.id == id).ok_or_else(|| RfError::resource_not_found("Volume", id))?;
        let drives: Vec<Value> = x.drives.iter().map(|d| link(format!("{CHASSIS}/Drives/{d}"))).collect();
        let description = match c.kind {
            Kind::Image => format!("{} volume {} on a disk image of the simulated platform", x.luks, x.dm_name),
            _ => format!("dm-crypt mapping {} ({})", x.dm_name, x.luks),
        };
        let mut v = json!({
            "Id": x.id,
            "Name": format!("{} volume {}", x.luks, x.dm_name),
            "DisplayName": x.dm_name,
            "Description": description,
            "Status": { "State": "Enabled", "Health": "OK" },
            "Encrypted": true,
            "EncryptionTypes": ["SoftwareAssisted"],
            "Links": { "Drives@odata.count": drives.len(), "Drives": drives },
        });
        if let Some(b) = x.capacity_bytes {
            v["CapacityBytes"] = json!(b);
        }
        if let Some(o) = super::crypt::volume_oem(&r, &c.id, &x.id) {
            v["Oem"] = json!({ "Keel": o });
        }
        Ok(v)
    })
}
