//! The privileges every route declares and the message texts keeld emits must match the DMTF
//! publications in the shared schema bundle (`../shared/redfish-schemas`, or `$KEEL_SHARED`).

use keeld::messages::{base, resource_event, task_event, update, MessageDef, BASE_REGISTRY, RESOURCE_EVENT_REGISTRY, TASK_EVENT_REGISTRY, UPDATE_REGISTRY};
use keeld::privilege::Requirement;
use keeld::tree::Tree;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn registries_dir() -> PathBuf {
    let shared = std::env::var_os("KEEL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let d = shared.join("redfish-schemas/registries");
    assert!(d.is_dir(), "DMTF registries not found at {} (set KEEL_SHARED)", d.display());
    d
}

fn load(name: &str) -> Value {
    let p = registries_dir().join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn check_messages(registry: &str, defs: &[&MessageDef]) {
    let reg = load(registry);
    for d in defs {
        let m = &reg["Messages"][d.key];
        assert!(m.is_object(), "{registry} has no message {}", d.key);
        assert_eq!(m["Message"], d.text, "{}: text", d.key);
        assert_eq!(m["MessageSeverity"], d.severity, "{}: severity", d.key);
        let nargs = m["NumberOfArgs"].as_u64().unwrap_or(0) as usize;
        let used = (1..=9).filter(|i| d.text.contains(&format!("%{i}"))).count();
        assert_eq!(nargs, used, "{}: argument count", d.key);
        if d.resolution != "None." || m.get("Resolution").is_some() {
            assert_eq!(m["Resolution"], d.resolution, "{}: resolution", d.key);
        }
    }
}

#[test]
fn base_messages_match_the_published_registry() {
    check_messages(BASE_REGISTRY, base::ALL);
}

#[test]
fn resource_event_messages_match_the_published_registry() {
    let reg = load(RESOURCE_EVENT_REGISTRY);
    for d in resource_event::ALL {
        let m = &reg["Messages"][d.key];
        assert_eq!(m["Message"], d.text, "{}", d.key);
        assert_eq!(m["MessageSeverity"], d.severity, "{}", d.key);
    }
}

#[test]
fn task_event_messages_match_the_published_registry() {
    check_messages(TASK_EVENT_REGISTRY, task_event::ALL);
    let reg = load(TASK_EVENT_REGISTRY);
    let ours: BTreeSet<&str> = task_event::ALL.iter().map(|d| d.key).collect();
    let theirs: BTreeSet<&str> = reg["Messages"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(ours, theirs, "every TaskEvent message is defined");
}

#[test]
fn update_messages_match_the_published_registry() {
    check_messages(UPDATE_REGISTRY, update::ALL);
    let reg = load(UPDATE_REGISTRY);
    let ours: BTreeSet<&str> = update::ALL.iter().map(|d| d.key).collect();
    let theirs: BTreeSet<&str> = reg["Messages"].as_object().unwrap().iter().filter(|(_, m)| m.get("Deprecated").is_none()).map(|(k, _)| k.as_str()).collect();
    assert_eq!(ours, theirs, "every Update message that is not deprecated is defined");
}

/// Registry versions: each constant names a file of the bundle, and MessageIds use its Major.Minor.
#[test]
fn registry_prefixes_are_major_minor_of_the_files() {
    use keeld::messages::{BASE_PREFIX, RESOURCE_EVENT_PREFIX, TASK_EVENT_PREFIX, UPDATE_PREFIX};
    for (full, prefix) in [(BASE_REGISTRY, BASE_PREFIX), (RESOURCE_EVENT_REGISTRY, RESOURCE_EVENT_PREFIX), (TASK_EVENT_REGISTRY, TASK_EVENT_PREFIX), (UPDATE_REGISTRY, UPDATE_PREFIX)] {
        let reg = load(full);
        let v = format!("{}.{}", reg["RegistryPrefix"].as_str().unwrap(), reg["RegistryVersion"].as_str().unwrap());
        assert_eq!(v, full);
        assert_eq!(full.rsplit_once('.').unwrap().0, prefix);
    }
}

type Alts = BTreeSet<BTreeSet<String>>;

fn ours(r: &Requirement) -> Alts {
    match r {
        Requirement::NoAuth => [BTreeSet::from(["NoAuth".to_string()])].into(),
        Requirement::AnyOf(alts) => alts.iter().map(|all| all.iter().map(|p| p.name().to_string()).collect()).collect(),
    }
}

fn registry_alts(v: &Value) -> Alts {
    v.as_array().unwrap().iter().map(|alt| alt["Privilege"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()).collect()
}

/// Routes that are not Redfish resources of the registry, or where DSP0266 overrides it.
fn exempt(pattern: &str, method: &str) -> Option<&'static str> {
    match (pattern, method) {
        ("/redfish/v1/$metadata" | "/redfish/v1/odata" | "/redfish/v1/openapi.yaml" | "/redfish", "GET") => Some("DSP0266 §13.3.1: served without authentication"),
        ("/redfish/v1/schema/{File}", "GET") => Some("Keel's published OEM schema files, like DMTF's, are public"),
        ("/redfish/v1/SessionService/Sessions" | "/redfish/v1/SessionService/Sessions/Members", "POST") => Some("DSP0266 §13.3.4: login needs no prior authentication"),
        _ => None,
    }
}

#[test]
fn every_route_declares_the_privilege_registry_privileges() {
    let reg = load("Redfish_1.8.0_PrivilegeRegistry");
    let tree = Tree::build();
    let mut checked = 0;
    for route in &tree.routes {
        let mapping = reg["Mappings"].as_array().unwrap().iter().find(|m| m["Entity"] == route.entity);
        let methods: Vec<(&str, Requirement)> = [
            ("GET", route.get.as_ref().map(|o| o.req)),
            ("PATCH", route.patch.as_ref().map(|o| o.req)),
            ("POST", route.post.as_ref().map(|o| o.req)),
            ("DELETE", route.delete.as_ref().map(|o| o.req)),
        ]
        .into_iter()
        .filter_map(|(m, r)| r.map(|r| (m, r)))
        .collect();
        for (method, req) in methods {
            if exempt(route.pattern, method).is_some() {
                continue;
            }
            let mapping = mapping.unwrap_or_else(|| panic!("{}: entity {} is not in the Privilege Registry", route.pattern, route.entity));
            let mut expected = registry_alts(&mapping["OperationMap"][method]);
            // A SubordinateOverride applies below a resource of one of its target entities.
            if let Some(so) = mapping.get("SubordinateOverrides").and_then(Value::as_array) {
                for o in so {
                    let below = |t: &Value| tree.routes.iter().any(|a| a.entity == t && route.pattern.starts_with(&format!("{}/", a.pattern)));
                    if o["Targets"].as_array().unwrap().iter().any(below) {
                        if let Some(alts) = o["OperationMap"].get(method) {
                            expected = registry_alts(alts);
                        }
                    }
                }
            }
            // Property overrides widen who may PATCH some properties; the handler narrows it again.
            if let Some(po) = mapping.get("PropertyOverrides").and_then(Value::as_array) {
                for o in po {
                    if let Some(alts) = o["OperationMap"].get(method) {
                        expected.extend(registry_alts(alts));
                    }
                }
            }
            // "Login or NoAuth" is NoAuth.
            if expected.iter().any(|alt| alt.contains("NoAuth")) {
                expected = ours(&Requirement::NoAuth);
            }
            assert_eq!(ours(&req), expected, "{method} {} (entity {})", route.pattern, route.entity);
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} route methods checked");
}
