//! Storage inventory: block devices from /sys/block grouped by the controller they hang off
//! (NVMe controllers, the AHCI/SAS HBA a disk's `device` path leads to, virtio-blk), SMART data
//! from `smartctl --json=c -n standby -a` (run at most every `--smart-interval` per drive, see
//! `SmartCache`), and dm-crypt (LUKS) volumes.

use crate::host::{CmdOutput, Host};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Kind {
    NVMe,
    SATA,
    SAS,
    USB,
    Virtio,
    /// Disk image files of the simulated platform (`--crypt-volume`).
    Image,
    Other,
}

impl Kind {
    /// The Storage Id prefix.
    fn prefix(self) -> &'static str {
        match self {
            Kind::NVMe => "NVMe",
            Kind::SATA => "SATA",
            Kind::SAS => "SAS",
            Kind::USB => "USB",
            Kind::Virtio => "virtio",
            Kind::Image => "Image",
            Kind::Other => "Storage",
        }
    }
    /// The Redfish Protocol of the controller's drives (none fits virtio-blk).
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            Kind::NVMe => Some("NVMe"),
            Kind::SATA => Some("SATA"),
            Kind::SAS => Some("SAS"),
            Kind::USB => Some("USB"),
            Kind::Virtio | Kind::Image | Kind::Other => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Controller {
    /// Storage Id: `NVMe0`, `SATA0`, `SAS0`, `virtio0`.
    pub id: String,
    pub kind: Kind,
    /// The kernel driver (`nvme`, `ahci`, `mpt3sas`, `virtio_blk`…).
    pub driver: Option<String>,
    /// PCI address of the controller, when it is a PCI device.
    pub pci: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub drives: Vec<Drive>,
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Drive {
    /// Drive Id: the kernel name (`nvme0`, `sda`, `vda`).
    pub id: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub revision: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub block_size: Option<u64>,
    pub physical_block_size: Option<u64>,
    /// `HDD` or `SSD`.
    pub media_type: Option<&'static str>,
    pub protocol: Option<&'static str>,
    pub rotation_rpm: Option<u64>,
    /// What smartctl said; `None` when it was not asked (virtio) or gave nothing usable.
    pub smart: Option<Smart>,
    /// Why SMART data is missing, when it was asked for.
    pub smart_error: Option<String>,
    /// A durable name: (Redfish DurableNameFormat, name), from the kernel's `wwid`.
    pub durable_name: Option<(&'static str, String)>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Smart {
    pub failing: bool,
    /// What fails, in words (attribute names, NVMe critical warnings…).
    pub failures: Vec<String>,
    pub life_left_percent: Option<u64>,
    pub temperature_c: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    pub id: String,
    pub dm_name: String,
    pub capacity_bytes: Option<u64>,
    /// `LUKS1` or `LUKS2`.
    pub luks: String,
    /// Drive Ids (within the same Storage) the volume lives on.
    pub drives: Vec<String>,
    /// The LUKS device under the mapping (`/dev/nvme0n1p2`), or the image file.
    pub device: Option<String>,
}

// ---------------------------------------------------------------- smartctl JSON (7.x)

#[derive(Deserialize, Default)]
#[serde(default)]
struct SmartJson {
    smartctl: Option<SmartctlInfo>,
    device: Option<DeviceJson>,
    model_name: Option<String>,
    scsi_vendor: Option<String>,
    scsi_product: Option<String>,
    scsi_revision: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
    user_capacity: Option<Capacity>,
    logical_block_size: Option<u64>,
    physical_block_size: Option<u64>,
    rotation_rate: Option<u64>,
    smart_status: Option<SmartStatus>,
    temperature: Option<Temperature>,
    nvme_smart_health_information_log: Option<NvmeHealth>,
    ata_smart_attributes: Option<AtaAttributes>,
    scsi_percentage_used_endurance_indicator: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SmartctlInfo {
    exit_status: Option<i32>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct DeviceJson {
    protocol: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct Capacity {
    bytes: Option<u64>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct SmartStatus {
    passed: Option<bool>,
    scsi: Option<ScsiStatus>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct ScsiStatus {
    ie_string: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct Temperature {
    current: Option<i64>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct NvmeHealth {
    critical_warning: Option<u64>,
    temperature: Option<i64>,
    percentage_used: Option<u64>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct AtaAttributes {
    table: Vec<AtaAttribute>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct AtaAttribute {
    id: u32,
    name: String,
    value: Option<u64>,
    thresh: Option<u64>,
    when_failed: String,
}

/// What smartctl printed, parsed; `Err` says why nothing is usable.
fn parse_smartctl(status: i32, stdout: &str) -> Result<(SmartJson, Smart), String> {
    let j: SmartJson = match serde_json::from_str(stdout) {
        Ok(j) => j,
        Err(_) if status < 0 => return Err("smartctl is not available".into()),
        Err(e) => return Err(format!("smartctl exited with status {status} without readable JSON ({e})")),
    };
    let status = j.smartctl.as_ref().and_then(|s| s.exit_status).unwrap_or(status);
    // Bits 0-2: the command line, the device open or a SMART command failed: nothing to trust.
    if status < 0 || status & 0b11 != 0 {
        return Err(format!("smartctl could not read the device (exit status {status})"));
    }
    if j.smart_status.is_none() && j.nvme_smart_health_information_log.is_none() && j.ata_smart_attributes.is_none() {
        return Err(format!("smartctl reported no SMART data (exit status {status})"));
    }
    let mut s = Smart::default();
    if let Some(h) = &j.nvme_smart_health_information_log {
        let cw = h.critical_warning.unwrap_or(0);
        for (bit, what) in [
            (0x01, "available spare below threshold"),
            (0x02, "temperature outside its threshold"),
            (0x04, "NVM subsystem reliability degraded"),
            (0x08, "media placed in read-only mode"),
            (0x10, "volatile memory backup device failed"),
            (0x20, "persistent memory region read-only"),
        ] {
            if cw & bit != 0 {
                s.failures.push(format!("NVMe critical warning 0x{bit:02x}: {what}"));
            }
        }
        s.life_left_percent = h.percentage_used.map(|u| 100 - u.min(100));
        s.temperature_c = h.temperature;
    }
    if let Some(a) = &j.ata_smart_attributes {
        for at in &a.table {
            if at.when_failed == "now" {
                s.failures.push(format!(
                    "SMART attribute {} {} failing now (normalized value {} at or below threshold {})",
                    at.id,
                    at.name,
                    at.value.map_or("?".into(), |v| v.to_string()),
                    at.thresh.map_or("?".into(), |v| v.to_string())
                ));
            }
        }
        // Wear indicators whose normalized value counts down from 100.
        for id in [231, 233, 177, 202, 169] {
            if let Some(v) = a.table.iter().find(|x| x.id == id).and_then(|x| x.value) {
                s.life_left_percent = Some(v.min(100));
                break;
            }
        }
    }
    if let Some(u) = j.scsi_percentage_used_endurance_indicator {
        s.life_left_percent = Some(100 - u.min(100));
    }
    if s.temperature_c.is_none() {
        s.temperature_c = j.temperature.as_ref().and_then(|t| t.current);
    }
    let passed = j.smart_status.as_ref().and_then(|x| x.passed);
    if passed == Some(false) || status & 0b1000 != 0 {
        if s.failures.is_empty() {
            let why = j.smart_status.as_ref().and_then(|x| x.scsi.as_ref()).and_then(|x| x.ie_string.clone());
            s.failures.push(match why {
                Some(w) => format!("SMART health status: FAILED ({w})"),
                None => "SMART overall-health self-assessment: FAILED".into(),
            });
        }
    }
    s.failing = !s.failures.is_empty();
    Ok((j, s))
}

// ---------------------------------------------------------------- sysfs

/// A sysfs link's target made absolute (lexically; sysfs targets are relative, `..`-style).
fn resolve(host: &Host, path: &str) -> String {
    let Some(target) = host.link(path) else { return path.to_string() };
    let target = target.to_string_lossy().into_owned();
    let mut parts: Vec<&str> = if target.starts_with('/') { vec![] } else { path.split('/').filter(|s| !s.is_empty()).collect() };
    if !target.starts_with('/') {
        parts.pop();
    }
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    format!("/{}", parts.join("/"))
}

fn is_pci_addr(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.' && s.chars().enumerate().all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

fn link_name(host: &Host, path: &str) -> Option<String> {
    host.link(path).and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn num(host: &Host, path: &str) -> Option<u64> {
    host.attr(path).and_then(|v| v.parse().ok())
}

/// Names of whole disks keeld reports (not loop, ram, zram, dm, md, optical or nbd devices).
fn disks(host: &Host) -> Vec<String> {
    host.list("/sys/block")
        .into_iter()
        .filter(|n| !["loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"].iter().any(|p| n.starts_with(p)))
        // eMMC hardware partitions are not disks of their own.
        .filter(|n| !(n.starts_with("mmcblk") && (n.contains("boot") || n.ends_with("rpmb"))))
        .collect()
}

/// `nvme0n1` -> `nvme0` (also the multipath-hidden `nvme0c0n1`).
fn nvme_ctrl(disk: &str) -> Option<String> {
    let rest = disk.strip_prefix("nvme")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!digits.is_empty()).then(|| format!("nvme{digits}"))
}

fn manufacturer_from_model(model: &str) -> Option<String> {
    let m = model.to_ascii_uppercase();
    let known: &[(&str, &str)] = &[
        ("SAMSUNG", "Samsung"),
        ("MZ", "Samsung"),
        ("MICRON", "Micron"),
        ("MTFD", "Micron"),
        ("CT", "Crucial"),
        ("INTEL", "Intel"),
        ("SSDPE", "Intel"),
        ("SOLIDIGM", "Solidigm"),
        ("KIOXIA", "KIOXIA"),
        ("TOSHIBA", "Toshiba"),
        ("WDC", "Western Digital"),
        ("WD", "Western Digital"),
        ("ST", "Seagate"),
        ("SEAGATE", "Seagate"),
        ("HGST", "HGST"),
        ("KINGSTON", "Kingston"),
        ("SK HYNIX", "SK hynix"),
        ("HFS", "SK hynix"),
    ];
    known.iter().find(|(p, _)| m.starts_with(p)).map(|(_, n)| n.to_string())
}

/// The serial number in a SCSI VPD page 0x80 (unit serial number): a 4-byte header, then ASCII.
fn vpd_serial(host: &Host, path: &str) -> Option<String> {
    let b = host.read_bytes(path).ok()?;
    let len = *b.get(3)? as usize;
    let s = String::from_utf8_lossy(b.get(4..(4 + len).min(b.len()))?).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// smartctl's command line for one device. `-n standby`: a disk that sleeps is not spun up;
/// smartctl then says so and exits with bit 1 set.
fn smartctl_args(dev: &str) -> [&str; 5] {
    ["--json=c", "-n", "standby", "-a", dev]
}

/// Whether smartctl left the device alone because it sleeps (`-n standby`): exit bit 1 and a
/// "Device is in STANDBY (or SLEEP) mode" message.
fn in_standby(out: &CmdOutput) -> bool {
    if out.status < 0 || out.status & 0b10 == 0 {
        return false;
    }
    let text = out.stdout.to_ascii_lowercase();
    text.contains("standby") || text.contains("sleep mode")
}

/// What `SmartCache` keeps per device between inventory builds.
struct SmartEntry {
    /// (serial, model) as sysfs showed them: another drive under the same name is read again.
    identity: (Option<String>, Option<String>),
    /// When smartctl last ran for it.
    read_at: Instant,
    /// The last output that was not a standby notice (`None`: the drive has only been seen asleep).
    out: Option<CmdOutput>,
}

/// SMART results kept between inventory builds: sysfs is read on every refresh, smartctl at most
/// once per `interval` per drive (and at once for a drive not seen before, or whose serial or
/// model changed). Outputs are kept raw and parsed again on each build, so a reused result
/// describes the drive exactly as a fresh one would.
pub struct SmartCache {
    interval: Duration,
    entries: Mutex<HashMap<String, SmartEntry>>,
}

impl SmartCache {
    pub fn new(interval: Duration) -> SmartCache {
        SmartCache { interval, entries: Mutex::new(HashMap::new()) }
    }

    /// Fill `d` from the SMART data of `dev`, running smartctl only when it is due.
    fn apply(&self, host: &Host, d: &mut Drive, dev: &str, now: Instant) {
        let identity = (d.serial.clone(), d.model.clone());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let prev = entries.get(dev).filter(|e| e.identity == identity);
        if let Some(e) = prev.filter(|e| now.saturating_duration_since(e.read_at) < self.interval) {
            apply_smart(d, e.out.as_ref(), false);
            return;
        }
        let out = host.run("smartctl", &smartctl_args(dev));
        let (out, fresh) = if in_standby(&out) {
            // Keep what the drive said when it was awake; say nothing new.
            let kept = prev.and_then(|e| e.out.clone());
            if kept.is_none() {
                log::info!("drive {}: in standby, SMART data not read so as not to spin it up", d.id);
            }
            (kept, false)
        } else {
            (Some(out), true)
        };
        apply_smart(d, out.as_ref(), fresh);
        entries.insert(dev.to_string(), SmartEntry { identity, read_at: now, out });
    }

    /// Forget the devices not seen in the last build: one that comes back is read at once.
    fn retain(&self, seen: &[String]) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|dev, _| seen.contains(dev));
    }
}

/// One drive's SMART data (live or replayed; `None`: the drive was asleep every time smartctl
/// asked); fills what sysfs did not say. `announce`: log failures (only for a fresh reading, so
/// a reused one does not log again).
fn apply_smart(d: &mut Drive, out: Option<&CmdOutput>, announce: bool) {
    let Some(out) = out else {
        d.smart_error = Some("the drive is in standby: SMART data is read once it is awake".into());
        return;
    };
    match parse_smartctl(out.status, &out.stdout) {
        Ok((j, s)) => {
            // sysfs truncates ATA model (16) and firmware (4) strings: smartctl has them whole.
            d.model = j.model_name.clone().or(d.model.take()).or_else(|| j.scsi_product.clone());
            if d.manufacturer.is_none() {
                d.manufacturer = j.scsi_vendor.clone().filter(|v| v != "ATA").or_else(|| d.model.as_deref().and_then(manufacturer_from_model));
            }
            d.serial = j.serial_number.clone().or(d.serial.take());
            d.revision = j.firmware_version.clone().or(d.revision.take()).or(j.scsi_revision.clone());
            d.capacity_bytes = d.capacity_bytes.or(j.user_capacity.as_ref().and_then(|c| c.bytes));
            d.block_size = d.block_size.or(j.logical_block_size);
            d.physical_block_size = d.physical_block_size.or(j.physical_block_size);
            match j.rotation_rate {
                Some(r) if r > 1 => {
                    d.rotation_rpm = Some(r);
                    d.media_type = Some("HDD");
                }
                Some(0) | Some(1) => d.media_type = Some("SSD"),
                _ => {}
            }
            // A SATA disk behind a SAS HBA speaks SATA.
            if d.protocol == Some("SAS") && j.device.as_ref().and_then(|x| x.protocol.as_deref()) == Some("ATA") {
                d.protocol = Some("SATA");
            }
            if s.failing && announce {
                log::warn!("drive {}: SMART reports failure: {}", d.id, s.failures.join("; "));
            }
            d.smart = Some(s);
        }
        Err(e) => {
            if announce {
                log::warn!("drive {}: no SMART data: {e}", d.id);
            }
            d.smart_error = Some(e);
        }
    }
}

/// The block-device facts of one disk (`sda`, `nvme0n1`).
fn block_facts(host: &Host, disk: &str, d: &mut Drive) {
    let b = format!("/sys/block/{disk}");
    d.durable_name = host.attr(&format!("{b}/wwid")).or_else(|| host.attr(&format!("{b}/device/wwid"))).and_then(|w| {
        let (fmt, rest) = if let Some(r) = w.strip_prefix("naa.") {
            ("NAA", r)
        } else if let Some(r) = w.strip_prefix("eui.") {
            if r.len() == 32 { ("NGUID", r) } else { ("EUI", r) }
        } else {
            return None;
        };
        (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit()) && rest.chars().any(|c| c != '0')).then(|| (fmt, rest.to_ascii_uppercase()))
    });
    d.capacity_bytes = num(host, &format!("{b}/size")).map(|s| s * 512).filter(|s| *s > 0);
    d.block_size = num(host, &format!("{b}/queue/logical_block_size"));
    d.physical_block_size = num(host, &format!("{b}/queue/physical_block_size"));
    d.media_type = match host.attr(&format!("{b}/queue/rotational")).as_deref() {
        Some("1") => Some("HDD"),
        Some("0") => Some("SSD"),
        _ => None,
    };
}

/// Build the storage inventory. With `smart`, each drive gets its SMART data (smartctl run or
/// replayed when due, else the kept result); without, SMART is skipped.
pub fn controllers(host: &Host, smart: Option<&SmartCache>) -> Vec<Controller> {
    controllers_at(host, smart, Instant::now())
}

fn controllers_at(host: &Host, smart: Option<&SmartCache>, now: Instant) -> Vec<Controller> {
    let mut seen: Vec<String> = vec![];
    let mut add_smart = |d: &mut Drive, dev: String| {
        if let Some(cache) = smart {
            cache.apply(host, d, &dev, now);
            seen.push(dev);
        }
    };
    let mut out: Vec<Controller> = vec![];
    let all = disks(host);
    // NVMe: one Storage per controller; its namespaces are one drive.
    let mut nvme: Vec<String> = host.list("/sys/class/nvme");
    for d in &all {
        if let Some(c) = nvme_ctrl(d) {
            if !nvme.contains(&c) {
                nvme.push(c);
            }
        }
    }
    nvme.sort_by_key(|c| c[4..].parse::<u64>().unwrap_or(u64::MAX));
    for c in nvme {
        let cp = format!("/sys/class/nvme/{c}");
        let namespaces: Vec<&String> = all.iter().filter(|d| nvme_ctrl(d).as_deref() == Some(c.as_str()) && !d[c.len()..].starts_with('c')).collect();
        let model = host.attr(&format!("{cp}/model"));
        let mut drive = Drive {
            id: c.clone(),
            manufacturer: model.as_deref().and_then(manufacturer_from_model),
            model: model.clone(),
            serial: host.attr(&format!("{cp}/serial")),
            revision: host.attr(&format!("{cp}/firmware_rev")),
            protocol: Some("NVMe"),
            ..Default::default()
        };
        if let Some(ns) = namespaces.first() {
            block_facts(host, ns, &mut drive);
            drive.media_type = Some("SSD");
            let total: u64 = namespaces.iter().filter_map(|n| num(host, &format!("/sys/block/{n}/size"))).sum::<u64>() * 512;
            drive.capacity_bytes = (total > 0).then_some(total);
        }
        if namespaces.is_empty() && model.is_none() {
            continue;
        }
        add_smart(&mut drive, format!("/dev/{c}"));
        let real = resolve(host, &cp);
        let pci = resolve(host, &format!("{real}/device")).rsplit('/').next().filter(|s| is_pci_addr(s)).map(String::from);
        out.push(Controller {
            id: format!("NVMe{}", &c[4..]),
            kind: Kind::NVMe,
            driver: Some("nvme".into()),
            pci,
            model,
            serial: drive.serial.clone(),
            firmware: drive.revision.clone(),
            drives: vec![drive],
            volumes: vec![],
        });
    }
    // Everything else: grouped by the PCI device (or virtio device) the disk hangs off.
    let mut others: Vec<Controller> = vec![];
    for disk in all.iter().filter(|d| nvme_ctrl(d).is_none()) {
        let real = resolve(host, &format!("/sys/block/{disk}"));
        let parts: Vec<&str> = real.split('/').collect();
        let pci_idx = parts.iter().rposition(|p| is_pci_addr(p));
        let virtio_idx = parts.iter().position(|p| p.starts_with("virtio") && p[6..].chars().all(|c| c.is_ascii_digit()) && p.len() > 6);
        let pci = pci_idx.map(|i| parts[i].to_string());
        let (kind, driver) = if let Some(i) = virtio_idx {
            (Kind::Virtio, link_name(host, &format!("{}/driver", parts[..=i].join("/"))).or(Some("virtio_blk".into())))
        } else {
            let driver = pci_idx.and_then(|i| link_name(host, &format!("{}/driver", parts[..=i].join("/"))));
            let kind = match driver.as_deref() {
                Some("ahci" | "ata_piix" | "sata_nv" | "sata_sil24" | "sata_via" | "pata_acpi") => Kind::SATA,
                Some("mpt3sas" | "mpt2sas" | "megaraid_sas" | "smartpqi" | "hpsa" | "aacraid" | "mpi3mr" | "isci" | "pm80xx" | "mvsas") => Kind::SAS,
                _ if real.split('/').any(|p| p.starts_with("usb") && p[3..].chars().all(|c| c.is_ascii_digit())) => Kind::USB,
                _ if real.contains("/ata") => Kind::SATA,
                _ => Kind::Other,
            };
            (kind, driver)
        };
        let dev = format!("/sys/block/{disk}/device");
        // A virtio device's `vendor`/`device` are PCI-style ids, not names.
        let virtio = kind == Kind::Virtio;
        let vendor = host.attr(&format!("{dev}/vendor")).filter(|_| !virtio);
        let model = if virtio { Some("Virtio Block Device".to_string()) } else { host.attr(&format!("{dev}/model")) };
        let mut d = Drive {
            id: disk.clone(),
            manufacturer: vendor
                .clone()
                .filter(|v| v != "ATA" && !v.is_empty())
                .map(|v| manufacturer_from_model(&v).unwrap_or(v))
                .or_else(|| model.as_deref().and_then(manufacturer_from_model)),
            model,
            serial: host
                .attr(&format!("{dev}/serial"))
                .or_else(|| vpd_serial(host, &format!("{dev}/vpd_pg80")))
                .or_else(|| host.attr(&format!("/sys/block/{disk}/serial"))),
            revision: host.attr(&format!("{dev}/rev")).or_else(|| host.attr(&format!("{dev}/firmware_rev"))),
            protocol: kind.protocol(),
            ..Default::default()
        };
        block_facts(host, disk, &mut d);
        if d.capacity_bytes.is_none() && d.serial.is_none() && (virtio || d.model.is_none()) {
            log::warn!("block device {disk} vanished or shows nothing: not listed");
            continue;
        }
        if kind == Kind::Virtio {
            // virtio-blk says nothing true about the media (rotational is 1 by default).
            d.media_type = None;
        } else {
            add_smart(&mut d, format!("/dev/{disk}"));
        }
        let key = virtio_idx.map(|i| parts[..=i].join("/")).or_else(|| pci_idx.map(|i| parts[..=i].join("/"))).unwrap_or_default();
        match others.iter_mut().find(|c| c.kind == kind && c.model.as_deref() == Some(key.as_str())) {
            Some(c) => c.drives.push(d),
            None => others.push(Controller { id: String::new(), kind, driver, pci, model: Some(key), serial: None, firmware: None, drives: vec![d], volumes: vec![] }),
        }
    }
    others.sort_by(|a, b| (a.kind as u8, &a.model).cmp(&(b.kind as u8, &b.model)));
    let mut counts = std::collections::HashMap::new();
    for mut c in others {
        let n = counts.entry(c.kind as u8).or_insert(0);
        c.id = format!("{}{}", c.kind.prefix(), n);
        *n += 1;
        c.model = None; // the grouping key was a sysfs path, not a model
        out.push(c);
    }
    add_volumes(host, &mut out);
    if let Some(cache) = smart {
        cache.retain(&seen);
    }
    out
}

/// dm-crypt (LUKS) mappings, attached to the Storage of the drive they live on.
fn add_volumes(host: &Host, ctrls: &mut [Controller]) {
    for dm in host.list("/sys/block").into_iter().filter(|n| n.starts_with("dm-")) {
        let b = format!("/sys/block/{dm}");
        let Some(uuid) = host.attr(&format!("{b}/dm/uuid")) else { continue };
        let luks = match uuid.strip_prefix("CRYPT-") {
            Some(r) if r.starts_with("LUKS1-") => "LUKS1",
            Some(r) if r.starts_with("LUKS2-") => "LUKS2",
            _ => continue,
        };
        let name = host.attr(&format!("{b}/dm/name")).unwrap_or_else(|| dm.clone());
        for slave in host.list(&format!("{b}/slaves")) {
            // The partition's disk: the one whose directory holds it (or the disk itself).
            let disk = disks(host).into_iter().find(|d| *d == slave || host.path(&format!("/sys/block/{d}/{slave}")).exists());
            let Some(disk) = disk else { continue };
            let drive_id = nvme_ctrl(&disk).unwrap_or(disk);
            if let Some(c) = ctrls.iter_mut().find(|c| c.drives.iter().any(|d| d.id == drive_id)) {
                let id = if name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && name.len() <= 64 { name.clone() } else { dm.clone() };
                if c.volumes.iter().any(|v| v.id == id) {
                    continue;
                }
                c.volumes.push(Volume {
                    id,
                    dm_name: name.clone(),
                    capacity_bytes: num(host, &format!("{b}/size")).map(|s| s * 512),
                    luks: luks.into(),
                    drives: vec![drive_id],
                    device: Some(format!("/dev/{slave}")),
                });
            }
        }
    }
}

/// What `keeld host record` must capture for this module: sysfs directories (with the depth to
/// follow) and the smartctl invocations.
pub fn captures(host: &Host) -> Vec<(String, usize)> {
    let mut v = vec![("/sys/block".to_string(), 1), ("/sys/class/nvme".to_string(), 1)];
    for b in host.list("/sys/block") {
        let real = resolve(host, &format!("/sys/block/{b}"));
        v.push((real.clone(), 2));
        v.push((resolve(host, &format!("{real}/device")), 1));
        let parts: Vec<&str> = real.split('/').collect();
        for (i, p) in parts.iter().enumerate() {
            if is_pci_addr(p) || (p.starts_with("virtio") && p.len() > 6) {
                v.push((parts[..=i].join("/"), 1));
            }
        }
    }
    for c in host.list("/sys/class/nvme") {
        let real = resolve(host, &format!("/sys/class/nvme/{c}"));
        v.push((real.clone(), 1));
        v.push((resolve(host, &format!("{real}/device")), 1));
    }
    v
}

pub fn commands(host: &Host) -> Vec<(String, Vec<String>)> {
    let mut devs: Vec<String> = host.list("/sys/class/nvme").into_iter().map(|c| format!("/dev/{c}")).collect();
    devs.extend(disks(host).into_iter().filter(|d| nvme_ctrl(d).is_none() && !d.starts_with("vd")).map(|d| format!("/dev/{d}")));
    devs.into_iter().map(|d| ("smartctl".to_string(), smartctl_args(&d).iter().map(|a| a.to_string()).collect())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_names() {
        assert_eq!(nvme_ctrl("nvme10n1").as_deref(), Some("nvme10"));
        assert_eq!(nvme_ctrl("sda"), None);
        assert!(is_pci_addr("0000:3b:00.0"));
        assert!(!is_pci_addr("pci0000:00"));
    }

    #[test]
    fn usb_disks_and_emmc_partitions() {
        let dir = std::env::temp_dir().join(format!("keel-sto-usb-{}", uuid::Uuid::new_v4()));
        let usb = "sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
        for (p, v) in [(format!("{usb}/block/sdb/size"), "60062500"), (format!("{usb}/vendor"), "SanDisk"), (format!("{usb}/model"), "Extreme Pro")] {
            std::fs::create_dir_all(dir.join(&p).parent().unwrap()).unwrap();
            std::fs::write(dir.join(&p), v).unwrap();
        }
        std::fs::create_dir_all(dir.join("sys/block")).unwrap();
        std::os::unix::fs::symlink(format!("../{}/block/sdb", &usb[4..]), dir.join("sys/block/sdb")).unwrap();
        std::os::unix::fs::symlink("../../../6:0:0:0", dir.join(format!("{usb}/block/sdb/device"))).unwrap();
        for n in ["mmcblk0boot0", "mmcblk0rpmb"] {
            std::fs::create_dir_all(dir.join("sys/devices/virtual/block").join(n)).unwrap();
            std::os::unix::fs::symlink(format!("../devices/virtual/block/{n}"), dir.join("sys/block").join(n)).unwrap();
        }
        let c = controllers(&Host::fixture(&dir), None);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].id.as_str(), c[0].drives[0].protocol, c[0].drives[0].manufacturer.as_deref()), ("USB0", Some("USB"), Some("SanDisk")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn smartctl_nvme_and_failures() {
        let (_, s) = parse_smartctl(0, r#"{"smartctl":{"exit_status":0},"smart_status":{"passed":true},"nvme_smart_health_information_log":{"critical_warning":0,"temperature":38,"percentage_used":3}}"#).unwrap();
        assert_eq!((s.failing, s.life_left_percent, s.temperature_c), (false, Some(97), Some(38)));
        let (_, s) = parse_smartctl(8, r#"{"smartctl":{"exit_status":8},"smart_status":{"passed":false},"ata_smart_attributes":{"table":[{"id":5,"name":"Reallocated_Sector_Ct","value":3,"thresh":10,"when_failed":"now"}]}}"#).unwrap();
        assert!(s.failing);
        assert!(s.failures[0].contains("Reallocated_Sector_Ct"), "{:?}", s.failures);
        assert!(parse_smartctl(4, "garbage").is_err());
        assert!(parse_smartctl(-1, "").is_err());
        assert!(parse_smartctl(2, r#"{"smartctl":{"exit_status":2}}"#).is_err());
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn put(root: &Path, p: &str, v: &str) {
        let p = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, v).unwrap();
    }
    fn ln(root: &Path, p: &str, target: &str) {
        let p = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// One SATA HDD on AHCI (`sda`) whose recorded smartctl output the test rewrites.
    const HDD: &str = "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
    fn one_hdd(root: &Path) {
        ln(root, "/sys/devices/pci0000:00/0000:00:17.0/driver", "../../../bus/pci/drivers/ahci");
        put(root, &format!("{HDD}/vendor"), "ATA     \n");
        put(root, &format!("{HDD}/model"), "ST4000NM0035-1V4\n");
        put(root, &format!("{HDD}/serial"), "ZC1001AB\n");
        put(root, &format!("{HDD}/block/sda/size"), "7814037168\n");
        put(root, &format!("{HDD}/block/sda/queue/rotational"), "1\n");
        ln(root, &format!("{HDD}/block/sda/device"), "../../../0:0:0:0");
        ln(root, "/sys/block/sda", "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda");
    }
    fn smart_says(root: &Path, status: i32, stdout: &str) {
        let cmd = root.join(crate::host::COMMANDS_DIR);
        fs::create_dir_all(&cmd).unwrap();
        let out = crate::host::CmdOutput { status, stdout: stdout.into() };
        fs::write(cmd.join(crate::host::command_key("smartctl", &smartctl_args("/dev/sda"))), serde_json::to_vec(&out).unwrap()).unwrap();
    }
    fn temperature(c: &[Controller]) -> Option<i64> {
        c[0].drives[0].smart.as_ref().and_then(|s| s.temperature_c)
    }
    fn hdd_json(temp: i64) -> String {
        format!(r#"{{"smartctl":{{"exit_status":0}},"device":{{"protocol":"ATA"}},"model_name":"ST4000NM0035-1V4107","rotation_rate":7200,"smart_status":{{"passed":true}},"temperature":{{"current":{temp}}},"ata_smart_attributes":{{"table":[]}}}}"#)
    }

    #[test]
    fn smart_is_reused_within_the_interval_and_standby_keeps_it() {
        let root = std::env::temp_dir().join(format!("keel-sto-smart-{}", uuid::Uuid::new_v4()));
        one_hdd(&root);
        smart_says(&root, 0, &hdd_json(30));
        let host = Host::fixture(&root);
        let cache = SmartCache::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let first = controllers_at(&host, Some(&cache), t0);
        assert_eq!(temperature(&first), Some(30));
        assert_eq!(first[0].drives[0].model.as_deref(), Some("ST4000NM0035-1V4107"), "smartctl's whole model string");

        // The drive now says otherwise, but within the interval smartctl is not run again, and
        // the kept result describes the drive as the fresh one did.
        smart_says(&root, 0, &hdd_json(41));
        let again = controllers_at(&host, Some(&cache), t0 + Duration::from_secs(599));
        assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&first).unwrap());
        // After it, smartctl runs again.
        let later = controllers_at(&host, Some(&cache), t0 + Duration::from_secs(600));
        assert_eq!(temperature(&later), Some(41));

        // The disk sleeps: `-n standby` leaves it alone (exit bit 1): the old values stay, no error.
        smart_says(&root, 2, r#"{"smartctl":{"exit_status":2,"messages":[{"string":"Device is in STANDBY mode, exit(2)","severity":"information"}]}}"#);
        let asleep = controllers_at(&host, Some(&cache), t0 + Duration::from_secs(1300));
        assert_eq!(serde_json::to_value(&asleep).unwrap(), serde_json::to_value(&later).unwrap());
        assert_eq!(asleep[0].drives[0].smart_error, None);

        // Another drive in the same bay (new serial) is read at once, even within the interval.
        put(&root, &format!("{HDD}/serial"), "ZC1002CD\n");
        smart_says(&root, 0, &hdd_json(25));
        let swapped = controllers_at(&host, Some(&cache), t0 + Duration::from_secs(1301));
        assert_eq!(temperature(&swapped), Some(25));

        // A drive seen only asleep has no SMART data and says why; SMART can also be skipped.
        let fresh = SmartCache::new(Duration::from_secs(600));
        smart_says(&root, 2, r#"{"smartctl":{"exit_status":2,"messages":[{"string":"Device is in STANDBY mode, exit(2)","severity":"information"}]}}"#);
        let c = controllers_at(&host, Some(&fresh), t0);
        assert_eq!(c[0].drives[0].smart, None);
        assert!(c[0].drives[0].smart_error.as_deref().unwrap().contains("standby"));
        let c = controllers_at(&host, None, t0);
        assert_eq!((c[0].drives[0].smart.is_none(), c[0].drives[0].smart_error.is_none()), (true, true));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_recorded_machine_gives_the_same_storage() {
        let src = std::env::temp_dir().join(format!("keel-sto-src-{}", uuid::Uuid::new_v4()));
        let dst = std::env::temp_dir().join(format!("keel-sto-dst-{}", uuid::Uuid::new_v4()));
        // An NVMe drive with a LUKS2 partition, and a SATA SSD on AHCI.
        let nv = "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0";
        ln(&src, &format!("{nv}/driver"), "../../../../bus/pci/drivers/nvme");
        put(&src, &format!("{nv}/nvme/nvme0/model"), "SAMSUNG MZQL23T8HCLS-00A07\n");
        put(&src, &format!("{nv}/nvme/nvme0/serial"), "S64HNE0T801234\n");
        put(&src, &format!("{nv}/nvme/nvme0/firmware_rev"), "GDC5602Q\n");
        ln(&src, &format!("{nv}/nvme/nvme0/device"), "../../../0000:41:00.0");
        put(&src, &format!("{nv}/nvme/nvme0/nvme0n1/size"), "7501476528\n");
        put(&src, &format!("{nv}/nvme/nvme0/nvme0n1/queue/logical_block_size"), "512\n");
        put(&src, &format!("{nv}/nvme/nvme0/nvme0n1/nvme0n1p2/size"), "7499378688\n");
        ln(&src, "/sys/class/nvme/nvme0", "../../devices/pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0");
        ln(&src, "/sys/block/nvme0n1", "../devices/pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0/nvme0n1");
        put(&src, "/sys/devices/virtual/block/dm-0/size", "7499345920\n");
        put(&src, "/sys/devices/virtual/block/dm-0/dm/name", "luks-data\n");
        put(&src, "/sys/devices/virtual/block/dm-0/dm/uuid", "CRYPT-LUKS2-6f1d3c8e4b2a4d7f9e0c1b2a3d4e5f60-luks-data\n");
        ln(&src, "/sys/devices/virtual/block/dm-0/slaves/nvme0n1p2", "../../../../pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme0/nvme0n1/nvme0n1p2");
        ln(&src, "/sys/block/dm-0", "../devices/virtual/block/dm-0");
        let ahci = "/sys/devices/pci0000:00/0000:00:17.0";
        ln(&src, &format!("{ahci}/driver"), "../../../bus/pci/drivers/ahci");
        let sd = format!("{ahci}/ata1/host0/target0:0:0/0:0:0:0");
        put(&src, &format!("{sd}/vendor"), "ATA     \n");
        put(&src, &format!("{sd}/model"), "Samsung SSD 870 \n");
        put(&src, &format!("{sd}/rev"), "2B6Q\n");
        put(&src, &format!("{sd}/block/sda/size"), "976773168\n");
        put(&src, &format!("{sd}/block/sda/queue/rotational"), "0\n");
        ln(&src, &format!("{sd}/block/sda/device"), "../../../0:0:0:0");
        ln(&src, "/sys/block/sda", "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda");
        let cmd = src.join(crate::host::COMMANDS_DIR);
        fs::create_dir_all(&cmd).unwrap();
        let out = crate::host::CmdOutput { status: 0, stdout: r#"{"smartctl":{"exit_status":0},"smart_status":{"passed":true},"nvme_smart_health_information_log":{"critical_warning":0,"percentage_used":4}}"#.into() };
        fs::write(cmd.join(crate::host::command_key("smartctl", &smartctl_args("/dev/nvme0"))), serde_json::to_vec(&out).unwrap()).unwrap();

        let before = controllers(&Host::fixture(&src), Some(&SmartCache::new(Duration::ZERO)));
        assert_eq!(before.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["NVMe0", "SATA0"]);
        assert_eq!(before[0].pci.as_deref(), Some("0000:41:00.0"));
        assert_eq!(before[0].volumes[0].id, "luks-data");
        assert_eq!(before[0].drives[0].smart.as_ref().unwrap().life_left_percent, Some(96));
        assert_eq!(before[1].driver.as_deref(), Some("ahci"));
        crate::host::record::record(&Host::fixture(&src), &dst).unwrap();
        let after = controllers(&Host::fixture(&dst), Some(&SmartCache::new(Duration::ZERO)));
        assert_eq!(serde_json::to_value(&before).unwrap(), serde_json::to_value(&after).unwrap());
        fs::remove_dir_all(&src).unwrap();
        fs::remove_dir_all(&dst).unwrap();
    }
}
