//! Power supplies the kernel knows (`/sys/class/power_supply`, Documentation/ABI/testing/sysfs-class-power):
//! mains adapters and UPSes of edge boxes and workstations. Server PSUs usually sit behind the BMC;
//! their voltages and power, when the host sees them at all, come through hwmon as Sensors.

use crate::host::Host;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Supply {
    /// The kernel's name (`AC`, `ADP1`, `ups-0`), URI-safe.
    pub id: String,
    /// `AC` or `DC` as Redfish PowerSupplyType.
    pub supply_type: &'static str,
    /// `online` (mains connected); `None` when the driver does not say.
    pub online: Option<bool>,
    /// `present`; most mains adapters do not report it (then present).
    pub present: bool,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
}

const DIR: &str = "/sys/class/power_supply";

/// Mains, UPS and USB supplies; batteries are not power supplies and are left out.
pub fn supplies(host: &Host) -> Vec<Supply> {
    let mut out = vec![];
    for name in host.list(DIR) {
        let attr = |f: &str| host.attr(&format!("{DIR}/{name}/{f}")).and_then(|s| super::meaningful(&s));
        let supply_type = match attr("type").as_deref() {
            Some("Mains") | Some("UPS") => "AC",
            Some("USB") => "DC",
            _ => continue,
        };
        if !super::network::uri_safe(&name) {
            continue;
        }
        let flag = |f: &str| attr(f).and_then(|v| v.parse::<u8>().ok()).map(|v| v != 0);
        out.push(Supply {
            online: flag("online"),
            present: flag("present").unwrap_or(true),
            manufacturer: attr("manufacturer"),
            model: attr("model_name"),
            serial: attr("serial_number"),
            id: name,
            supply_type,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mains_and_ups_are_supplies_batteries_are_not() {
        let dir = std::env::temp_dir().join(format!("keel-psu-{}", uuid::Uuid::new_v4()));
        for (n, attrs) in [
            ("AC", vec![("type", "Mains"), ("online", "1")]),
            ("ups-0", vec![("type", "UPS"), ("online", "0"), ("present", "1"), ("manufacturer", "APC"), ("model_name", "Back-UPS ES 700")]),
            ("BAT0", vec![("type", "Battery"), ("status", "Charging")]),
            ("odd", vec![("type", "Wireless")]),
        ] {
            let d = dir.join("sys/class/power_supply").join(n);
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in attrs {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
        let h = Host::fixture(&dir);
        let mut s = supplies(&h);
        s.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].id.as_str(), s[0].supply_type, s[0].online, s[0].present), ("AC", "AC", Some(true), true));
        assert_eq!((s[1].id.as_str(), s[1].online, s[1].manufacturer.as_deref()), ("ups-0", Some(false), Some("APC")));
        assert_eq!(s[1].model.as_deref(), Some("Back-UPS ES 700"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
