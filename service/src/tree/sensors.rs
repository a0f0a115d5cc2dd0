//! Chassis sensors (hwmon): Sensors, and the ThermalSubsystem with its fans and temperatures.

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
