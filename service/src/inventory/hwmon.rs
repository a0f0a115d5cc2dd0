//! Sensors from the kernel's hwmon interface (Documentation/hwmon/sysfs-interface): temperatures,
//! fans, voltages, currents and power, with the thresholds the chips report. Readings are read
//! on each request (sysfs reads, no command), the list of sensors with the inventory.

use crate::host::Host;
use serde::Serialize;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Kind {
    Temperature,
    Fan,
    Voltage,
    Current,
    Power,
}

impl Kind {
    /// (sysfs prefix, Redfish ReadingType, unit, divisor from the sysfs unit)
    pub fn spec(self) -> (&'static str, &'static str, &'static str, f64) {
        match self {
            Kind::Temperature => ("temp", "Temperature", "Cel", 1000.0),
            Kind::Fan => ("fan", "Rotational", "RPM", 1.0),
            Kind::Voltage => ("in", "Voltage", "V", 1000.0),
            Kind::Current => ("curr", "Current", "A", 1000.0),
            Kind::Power => ("power", "Power", "W", 1_000_000.0),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sensor {
    /// URI-safe id, e.g. `coretemp0_temp2`.
    pub id: String,
    pub kind: Kind,
    /// What the chip calls it (`Package id 0`, `fan1`…).
    pub label: String,
    pub chip: String,
    /// The sysfs directory and channel, for reading.
    pub dir: String,
    pub channel: String,
}

const KINDS: [Kind; 5] = [Kind::Temperature, Kind::Fan, Kind::Voltage, Kind::Current, Kind::Power];

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// Every sensor channel that has an `_input` file.
pub fn sensors(host: &Host) -> Vec<Sensor> {
    let mut out = vec![];
    for hw in host.list("/sys/class/hwmon") {
        let dir = format!("/sys/class/hwmon/{hw}");
        let chip = host.attr(&format!("{dir}/name")).unwrap_or_else(|| hw.clone());
        let files = host.list(&dir);
        for kind in KINDS {
            let (prefix, ..) = kind.spec();
            for f in &files {
                let Some(chan) = f.strip_prefix(prefix).and_then(|r| r.strip_suffix("_input")) else { continue };
                if chan.is_empty() || !chan.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let channel = format!("{prefix}{chan}");
                let label = host.attr(&format!("{dir}/{channel}_label")).unwrap_or_else(|| channel.clone());
                out.push(Sensor { id: format!("{}_{}", safe(&chip), channel), kind, label, chip: chip.clone(), dir: dir.clone(), channel });
            }
        }
    }
    // Two chips of the same name (two sockets' coretemp): keep ids unique.
    let mut seen = std::collections::HashMap::new();
    for s in &mut out {
        let n = seen.entry(s.id.clone()).or_insert(0);
        if *n > 0 {
            s.id = format!("{}_{}", s.id, n);
        }
        *n += 1;
    }
    out
}

/// A reading in Redfish units; `None` when the chip gives nothing usable right now.
pub fn value(host: &Host, s: &Sensor, suffix: &str) -> Option<f64> {
    let (_, _, _, div) = s.kind.spec();
    let raw: f64 = host.attr(&format!("{}/{}_{suffix}", s.dir, s.channel))?.parse().ok()?;
    Some((raw / div * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_channels_and_scales_readings() {
        let dir = std::env::temp_dir().join(format!("keel-hw-{}", uuid::Uuid::new_v4()));
        let hw = dir.join("sys/class/hwmon/hwmon0");
        std::fs::create_dir_all(&hw).unwrap();
        for (f, v) in [("name", "coretemp"), ("temp1_input", "45000"), ("temp1_label", "Package id 0"), ("temp1_crit", "100000"), ("fan2_input", "5400"), ("in0_input", "1212"), ("power1_input", "85500000"), ("temp_bogus", "1")] {
            std::fs::write(hw.join(f), format!("{v}\n")).unwrap();
        }
        let h = Host::fixture(&dir);
        let s = sensors(&h);
        let ids: Vec<&str> = s.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, vec!["coretemp_temp1", "coretemp_fan2", "coretemp_in0", "coretemp_power1"]);
        assert_eq!(s[0].label, "Package id 0");
        assert_eq!(value(&h, &s[0], "input"), Some(45.0));
        assert_eq!(value(&h, &s[0], "crit"), Some(100.0));
        assert_eq!(value(&h, &s[1], "input"), Some(5400.0));
        assert_eq!(value(&h, &s[2], "input"), Some(1.212));
        assert_eq!(value(&h, &s[3], "input"), Some(85.5));
        assert_eq!(value(&h, &s[0], "max"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
