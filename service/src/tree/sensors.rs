//! Chassis sensors (hwmon): Sensors, the ThermalSubsystem with its fans and temperatures, and the
//! PowerSubsystem with the power supplies the kernel knows (voltage, current and power readings
//! are Sensors).

use super::{collection, link, Req, Tree};
use crate::inventory::hwmon::{self, Kind, Sensor};
use crate::messages::{RfError, RfResult};
use crate::privilege::LOGIN;
use crate::types;
use serde_json::{json, Value};

pub fn register(t: &mut Tree) {
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/Sensors", "SensorCollection", Some(types::SENSOR_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/Sensors/{SensorId}", "Sensor", Some(types::SENSOR)).get(LOGIN, one));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/ThermalSubsystem", "ThermalSubsystem", Some(types::THERMAL_SUBSYSTEM)).get(LOGIN, thermal));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/ThermalSubsystem/ThermalMetrics", "ThermalMetrics", Some(types::THERMAL_METRICS)).get(LOGIN, metrics));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/ThermalSubsystem/Fans", "FanCollection", Some(types::FAN_COLLECTION)).get(LOGIN, fans));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/ThermalSubsystem/Fans/{FanId}", "Fan", Some(types::FAN)).get(LOGIN, fan));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/PowerSubsystem", "PowerSubsystem", Some(types::POWER_SUBSYSTEM)).get(LOGIN, power));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/PowerSubsystem/PowerSupplies", "PowerSupplyCollection", Some(types::POWER_SUPPLY_COLLECTION)).get(LOGIN, supplies));
    t.add(Tree::route("/redfish/v1/Chassis/{ChassisId}/PowerSubsystem/PowerSupplies/{PowerSupplyId}", "PowerSupply", Some(types::POWER_SUPPLY)).get(LOGIN, supply));
}

pub fn power_supply_uri(id: &str) -> String {
    format!("{}/PowerSubsystem/PowerSupplies/{id}", super::systems::CHASSIS)
}

/// Whether the chassis shows a PowerSubsystem: it has power supplies, or voltage, current or power
/// readings (which are its Sensors).
pub fn has_power(inv: &crate::inventory::Inventory) -> bool {
    !inv.power_supplies.is_empty() || inv.sensors.iter().any(|s| matches!(s.kind, Kind::Voltage | Kind::Current | Kind::Power))
}

pub fn sensor_uri(id: &str) -> String {
    format!("{}/Sensors/{id}", super::systems::CHASSIS)
}

/// The chassis ThermalSubsystem's URI.
fn thermal_uri() -> String {
    format!("{}/ThermalSubsystem", super::systems::CHASSIS)
}

fn find<'a>(list: &'a [Sensor], id: &str, kind: &str) -> RfResult<&'a Sensor> {
    list.iter().find(|s| s.id == id).ok_or_else(|| RfError::resource_not_found(kind, id))
}

/// Whether the chassis shows a ThermalSubsystem (it has temperatures or fans).
pub fn has_thermal(sensors: &[Sensor]) -> bool {
    sensors.iter().any(|s| matches!(s.kind, Kind::Temperature | Kind::Fan))
}

async fn list(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    Ok(collection("Sensors", inv.sensors.iter().map(|s| sensor_uri(&s.id))))
}

/// Health from the chip's own limits: at or past critical is Critical, past max/min is Warning.
fn health(r: &Req, s: &Sensor, reading: Option<f64>) -> &'static str {
    let Some(v) = reading else { return "OK" };
    let at = |suffix| hwmon::value(&r.keel.host, s, suffix);
    if at("crit").map_or(false, |c| v >= c) || at("lcrit").map_or(false, |c| v <= c) {
        "Critical"
    } else if at("max").map_or(false, |m| v >= m) || (s.kind != Kind::Temperature && at("min").map_or(false, |m| v < m)) {
        "Warning"
    } else {
        "OK"
    }
}

async fn one(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let s = find(&inv.sensors, r.param(1), "Sensor")?;
    let (_, reading_type, units, _) = s.kind.spec();
    let reading = hwmon::value(&r.keel.host, s, "input");
    let mut v = json!({
        "Id": s.id,
        "Name": format!("{} {}", s.chip, s.label),
        "ReadingType": reading_type,
        "ReadingUnits": units,
        "Reading": reading,
        "Status": { "State": if reading.is_some() { "Enabled" } else { "UnavailableOffline" }, "Health": health(&r, s, reading) },
    });
    let mut th = serde_json::Map::new();
    for (name, suffix) in [("UpperCritical", "crit"), ("UpperCaution", "max"), ("LowerCritical", "lcrit"), ("LowerCaution", "min")] {
        if let Some(x) = hwmon::value(&r.keel.host, s, suffix) {
            th.insert(name.into(), json!({ "Reading": x }));
        }
    }
    if !th.is_empty() {
        v["Thresholds"] = Value::Object(th);
    }
    Ok(v)
}

async fn thermal(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    if !has_thermal(&inv.sensors) {
        return Err(RfError::not_found(&r.path));
    }
    Ok(json!({
        "Id": "ThermalSubsystem",
        "Name": "Thermal Subsystem",
        "Fans": link(format!("{}/Fans", thermal_uri())),
        "ThermalMetrics": link(format!("{}/ThermalMetrics", thermal_uri())),
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

async fn metrics(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    if !has_thermal(&inv.sensors) {
        return Err(RfError::not_found(&r.path));
    }
    let temps: Vec<Value> = inv
        .sensors
        .iter()
        .filter(|s| s.kind == Kind::Temperature)
        .map(|s| json!({ "DataSourceUri": sensor_uri(&s.id), "Reading": hwmon::value(&r.keel.host, s, "input"), "DeviceName": format!("{} {}", s.chip, s.label) }))
        .collect();
    Ok(json!({ "Id": "ThermalMetrics", "Name": "Thermal Metrics", "TemperatureReadingsCelsius": temps }))
}

async fn fans(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    if !has_thermal(&inv.sensors) {
        return Err(RfError::not_found(&r.path));
    }
    Ok(collection("Fans", inv.sensors.iter().filter(|s| s.kind == Kind::Fan).map(|s| format!("{}/Fans/{}", thermal_uri(), s.id))))
}

async fn fan(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let s = find(&inv.sensors, r.param(1), "Fan").and_then(|s| if s.kind == Kind::Fan { Ok(s) } else { Err(RfError::resource_not_found("Fan", r.param(1))) })?;
    let rpm = hwmon::value(&r.keel.host, s, "input");
    Ok(json!({
        "Id": s.id,
        "Name": format!("{} {}", s.chip, s.label),
        "SpeedPercent": { "DataSourceUri": sensor_uri(&s.id), "SpeedRPM": rpm },
        "Status": { "State": if rpm.is_some() { "Enabled" } else { "UnavailableOffline" }, "Health": health(&r, s, rpm) },
    }))
}

async fn power(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    if !has_power(&inv) {
        return Err(RfError::not_found(&r.path));
    }
    let mut v = json!({
        "Id": "PowerSubsystem",
        "Name": "Power Subsystem",
        "Description": "Power supplies the host's kernel reports; voltage, current and power readings are the chassis Sensors",
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    if !inv.power_supplies.is_empty() {
        v["PowerSupplies"] = link(format!("{}/PowerSubsystem/PowerSupplies", super::systems::CHASSIS));
    }
    Ok(v)
}

async fn supplies(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    if inv.power_supplies.is_empty() {
        return Err(RfError::not_found(&r.path));
    }
    Ok(collection("Power Supplies", inv.power_supplies.iter().map(|p| power_supply_uri(&p.id))))
}

async fn supply(r: Req) -> RfResult<Value> {
    super::check_chassis(&r)?;
    let inv = r.keel.inventory();
    let id = r.param(1);
    let p = inv.power_supplies.iter().find(|p| p.id == id).ok_or_else(|| RfError::resource_not_found("PowerSupply", id))?;
    // Offline mains (a UPS on battery, an unplugged adapter) is a warning; absent is not a fault.
    let (state, health) = match (p.present, p.online) {
        (false, _) => ("Absent", None),
        (true, Some(false)) => ("UnavailableOffline", Some("Warning")),
        (true, _) => ("Enabled", Some("OK")),
    };
    let mut v = json!({
        "Id": p.id,
        "Name": format!("Power supply {}", p.id),
        "PowerSupplyType": p.supply_type,
        "Status": { "State": state },
    });
    if let Some(h) = health {
        v["Status"]["Health"] = json!(h);
    }
    super::put(&mut v, "Manufacturer", p.manufacturer.clone());
    super::put(&mut v, "Model", p.model.clone());
    super::put(&mut v, "SerialNumber", p.serial.clone());
    Ok(v)
}
