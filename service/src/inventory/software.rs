//! Software and firmware the host runs: os-release, the kernel, keeld, Incus, system firmware.

use crate::host::Host;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Component {
    /// URI-safe id, e.g. `os`, `kernel`, `keeld`, `incus`, `bios`.
    pub id: String,
    pub name: String,
    pub version: String,
    pub manufacturer: Option<String>,
    pub release_date: Option<String>,
    pub software_id: Option<String>,
    /// Whether it can be updated through UpdateService (the OS image can, by A/B slots).
    pub updateable: bool,
    /// The resources this firmware runs in (RelatedItem).
    #[serde(default)]
    pub related: Vec<String>,
}

/// `KEY="value"` lines of os-release(5).
pub fn os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

/// The software inventory: the OS, the kernel, keeld itself and Incus when present.
pub fn software(host: &Host) -> Vec<Component> {
    let mut out = vec![];
    let osr = host.read("/etc/os-release").or_else(|_| host.read("/usr/lib/os-release")).map(|t| os_release(&t)).unwrap_or_default();
    let get = |k: &str| osr.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    if let Some(name) = get("PRETTY_NAME").or_else(|| get("NAME")) {
        out.push(Component {
            id: "os".into(),
            name,
            version: get("IMAGE_VERSION").or_else(|| get("VERSION_ID")).or_else(|| get("VERSION")).unwrap_or_else(|| "unknown".into()),
            manufacturer: get("VENDOR_NAME"),
            release_date: None,
            software_id: get("ID"),
            updateable: get("ID").as_deref() == Some("keel"),
            related: vec![],
        });
    }
    if let Some(k) = host.attr("/proc/sys/kernel/osrelease") {
        out.push(Component { id: "kernel".into(), name: "Linux kernel".into(), version: k, manufacturer: None, release_date: None, software_id: Some("linux".into()), updateable: false, related: vec![] });
    }
    out.push(Component {
        id: "keeld".into(),
        name: "keeld".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        manufacturer: Some("Keel".into()),
        release_date: None,
        software_id: Some("keeld".into()),
        updateable: false,
        related: vec![crate::tree::managers::MANAGER.to_string()],
    });
    // `incus version` prints "Client version: X" and "Server version: Y".
    let iv = host.run("incus", &["version"]);
    if iv.status == 0 {
        let version = iv.stdout.lines().find_map(|l| l.strip_prefix("Server version:").or_else(|| l.strip_prefix("Client version:"))).map(|v| v.trim().to_string());
        if let Some(version) = version.filter(|v| !v.is_empty() && v != "unreachable") {
            out.push(Component { id: "incus".into(), name: "Incus".into(), version, manufacturer: None, release_date: None, software_id: Some("incus".into()), updateable: false, related: vec![] });
        }
    }
    out
}

/// The firmware inventory this module knows: the system firmware (BIOS/UEFI) from DMI.
pub fn firmware(host: &Host) -> Vec<Component> {
    let dmi = |f: &str| host.attr(&format!("/sys/class/dmi/id/{f}"));
    let mut out = vec![];
    if let Some(version) = dmi("bios_version") {
        // DMI dates are MM/DD/YYYY; Redfish wants a date-time.
        let release_date = dmi("bios_date").and_then(|d| {
            let p: Vec<&str> = d.split('/').collect();
            (p.len() == 3 && p[2].len() == 4).then(|| format!("{}-{}-{}T00:00:00Z", p[2], p[0], p[1]))
        });
        out.push(Component {
            id: "bios".into(),
            name: "System firmware".into(),
            version,
            manufacturer: dmi("bios_vendor"),
            release_date,
            software_id: None,
            updateable: false,
            related: vec![crate::tree::systems::SYSTEM.to_string()],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_and_components() {
        let dir = std::env::temp_dir().join(format!("keel-sw-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(dir.join("sys/class/dmi/id")).unwrap();
        std::fs::write(dir.join("etc/os-release"), "PRETTY_NAME=\"Keel 2026.11\"\nID=keel\nIMAGE_VERSION=2026.11.1\n").unwrap();
        std::fs::write(dir.join("proc/sys/kernel/osrelease"), "6.12.48+deb13-amd64\n").unwrap();
        std::fs::write(dir.join("sys/class/dmi/id/bios_version"), "2.3.1\n").unwrap();
        std::fs::write(dir.join("sys/class/dmi/id/bios_date"), "05/17/2024\n").unwrap();
        let h = Host::fixture(&dir);
        let sw = software(&h);
        assert_eq!(sw[0].version, "2026.11.1");
        assert!(sw[0].updateable);
        assert_eq!(sw[1].version, "6.12.48+deb13-amd64");
        assert_eq!(sw[2].id, "keeld");
        assert!(sw.iter().all(|c| c.id != "incus"), "no recorded incus");
        let fw = firmware(&h);
        assert_eq!(fw[0].release_date.as_deref(), Some("2024-05-17T00:00:00Z"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
