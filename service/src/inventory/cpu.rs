//! Processors: /proc/cpuinfo, sysfs topology and frequency, SMBIOS type 4.

use super::smbios::Structure;
use crate::host::Host;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Processor {
    /// Socket index (physical package id).
    pub socket: u32,
    pub socket_label: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// `x86-64`, `ARM-A64`…
    pub instruction_set: Option<&'static str>,
    pub architecture: Option<&'static str>,
    pub cores: u32,
    pub threads: u32,
    pub max_mhz: Option<u32>,
    pub current_mhz: Option<u32>,
    pub vendor_id: Option<String>,
    pub family: Option<String>,
    pub model_number: Option<String>,
    pub stepping: Option<String>,
    pub microcode: Option<String>,
    pub serial: Option<String>,
    pub part_number: Option<String>,
}

fn blocks(cpuinfo: &str) -> Vec<BTreeMap<String, String>> {
    cpuinfo
        .split("\n\n")
        .map(|b| {
            b.lines()
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|m| m.contains_key("processor"))
        .collect()
}

fn arm_vendor(implementer: &str) -> Option<&'static str> {
    match implementer.trim_start_matches("0x") {
        "41" => Some("ARM"),
        "42" => Some("Broadcom"),
        "43" => Some("Cavium"),
        "46" => Some("Fujitsu"),
        "48" => Some("HiSilicon"),
        "4e" => Some("NVIDIA"),
        "50" => Some("Ampere"),
        "51" => Some("Qualcomm"),
        "61" => Some("Apple"),
        "c0" => Some("Ampere"),
        _ => None,
    }
}

/// One `Processor` per populated socket.
pub fn processors(host: &Host, tables: &[Structure]) -> Vec<Processor> {
    let info = host.read("/proc/cpuinfo").unwrap_or_default();
    let mut by_socket: BTreeMap<u32, Processor> = BTreeMap::new();
    let mut cores: BTreeMap<u32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for b in blocks(&info) {
        let n = b["processor"].clone();
        let topo = |f: &str| host.attr(&format!("/sys/devices/system/cpu/cpu{n}/topology/{f}"));
        let socket: u32 = topo("physical_package_id").or_else(|| b.get("physical id").cloned()).and_then(|s| s.parse().ok()).unwrap_or(0);
        let core = topo("core_id").or_else(|| b.get("core id").cloned()).unwrap_or_else(|| n.clone());
        cores.entry(socket).or_default().insert(core);
        let p = by_socket.entry(socket).or_insert_with(|| Processor { socket, ..Default::default() });
        p.threads += 1;
        if p.model.is_none() {
            let x86 = b.contains_key("vendor_id");
            p.model = b.get("model name").cloned();
            p.vendor_id = b.get("vendor_id").cloned();
            p.manufacturer = match p.vendor_id.as_deref() {
                Some("GenuineIntel") => Some("Intel(R) Corporation".into()),
                Some("AuthenticAMD") => Some("Advanced Micro Devices, Inc.".into()),
                Some(other) => Some(other.to_string()),
                None => b.get("CPU implementer").and_then(|i| arm_vendor(i)).map(str::to_string),
            };
            if x86 {
                let lm = b.get("flags").map_or(false, |f| f.split_whitespace().any(|x| x == "lm"));
                p.instruction_set = Some(if lm { "x86-64" } else { "x86" });
                p.architecture = Some("x86");
            } else if b.contains_key("CPU implementer") {
                p.instruction_set = Some("ARM-A64");
                p.architecture = Some("ARM");
            }
            p.family = b.get("cpu family").cloned().or_else(|| b.get("CPU architecture").cloned());
            p.model_number = b.get("model").cloned().or_else(|| b.get("CPU part").cloned());
            p.stepping = b.get("stepping").cloned().or_else(|| b.get("CPU revision").cloned());
            p.microcode = b.get("microcode").cloned();
            p.current_mhz = b.get("cpu MHz").and_then(|m| m.parse::<f64>().ok()).map(|m| m.round() as u32);
            p.max_mhz = host.attr(&format!("/sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq")).and_then(|k| k.parse::<u32>().ok()).map(|k| k / 1000);
        }
    }
    for (s, c) in &cores {
        if let Some(p) = by_socket.get_mut(s) {
            p.cores = c.len() as u32;
        }
    }
    // SMBIOS type 4, in table order, describes the sockets in order: add what the kernel lacks.
    let populated: Vec<&Structure> = tables.iter().filter(|t| t.kind == 4 && t.byte(0x18).map_or(false, |st| st & 0x40 != 0)).collect();
    for (i, p) in by_socket.values_mut().enumerate() {
        let Some(t) = populated.get(i) else { continue };
        p.socket_label = t.string(0x04);
        if let Some(m) = t.string(0x07) {
            p.manufacturer = Some(m);
        }
        if p.model.is_none() {
            p.model = t.string(0x10);
        }
        if let Some(max) = t.word(0x14).filter(|v| *v != 0) {
            p.max_mhz = p.max_mhz.or(Some(max as u32));
        }
        p.serial = t.string(0x20);
        p.part_number = t.string(0x22);
    }
    by_socket.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_threads_by_socket() {
        let dir = std::env::temp_dir().join(format!("keel-cpu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let mut info = String::new();
        for n in 0..8 {
            info.push_str(&format!(
                "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nstepping\t: 8\ncpu MHz\t\t: 2100.000\nphysical id\t: {}\ncore id\t\t: {}\nflags\t\t: fpu lm sse\n\n",
                n / 4,
                (n % 4) / 2
            ));
        }
        std::fs::write(dir.join("proc/cpuinfo"), info).unwrap();
        let p = processors(&Host::fixture(&dir), &[]);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].cores, p[0].threads), (2, 4));
        assert_eq!(p[1].socket, 1);
        assert_eq!(p[0].instruction_set, Some("x86-64"));
        assert_eq!(p[0].manufacturer.as_deref(), Some("Intel(R) Corporation"));
        assert_eq!(p[0].current_mhz, Some(2100));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_cpuinfo_means_no_processors() {
        let dir = std::env::temp_dir().join(format!("keel-cpu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(processors(&Host::fixture(&dir), &[]).is_empty());
    }
}
