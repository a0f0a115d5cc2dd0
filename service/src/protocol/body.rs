//! Request bodies: a small declarative schema per PATCH, create (POST) and action body.
//!
//! One spec serves three purposes: it validates the JSON (type, range, enumeration, unknown and
//! missing properties) with the exact Base registry message for each fault before a handler runs,
//! it tells the PATCH engine which properties are writable, and it is turned into the OpenAPI
//! request-body schema (see `openapi.rs`).

use crate::messages::{base, value_arg, Message, RfError, RfResult};
use actix_web::http::StatusCode;
use serde_json::{Map, Value};

#[derive(Debug)]
pub enum Ty {
    Bool,
    Int { min: i64, max: i64 },
    Str { min: usize, max: usize },
    /// A secret string: never echoed back in messages.
    Secret { max: usize },
    /// An array of secret strings (e.g. recovery keys): no element is ever echoed back.
    SecretList { max_items: usize, max: usize },
    Enum(&'static [&'static str]),
    /// An absolute http(s) URI.
    Uri,
    StrList { max_items: usize },
    EnumList(&'static [&'static str]),
    Obj(&'static [Prop]),
    /// An array of `{"@odata.id": ...}` links.
    LinkList,
    /// A JSON object whose keys are free (e.g. HTTP headers): string values only.
    StrMap,
}

#[derive(Debug)]
pub struct Prop {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// Whether `null` is accepted (clears the value).
    pub nullable: bool,
    pub desc: &'static str,
}

impl Prop {
    pub const fn new(name: &'static str, ty: Ty, desc: &'static str) -> Prop {
        Prop { name, ty, required: false, nullable: false, desc }
    }
    pub const fn required(name: &'static str, ty: Ty, desc: &'static str) -> Prop {
        Prop { name, ty, required: true, nullable: false, desc }
    }
    pub const fn nullable(name: &'static str, ty: Ty, desc: &'static str) -> Prop {
        Prop { name, ty, required: false, nullable: true, desc }
    }
}

/// What the body is for, which decides the MessageIds used for faults.
#[derive(Clone, Copy, Debug)]
pub enum Use<'a> {
    Create,
    Patch,
    Action(&'a str),
}

/// Parse raw bytes as a JSON object; anything else is a `MalformedJSON`/`UnrecognizedRequestBody` 400.
pub fn parse_object(bytes: &[u8]) -> RfResult<Map<String, Value>> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(RfError::bad_request(&base::MALFORMED_JSON, &[]));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RfError::bad_request(&base::UNRECOGNIZED_REQUEST_BODY, &[])),
        Err(_) => Err(RfError::malformed_json()),
    }
}

fn path_join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

fn type_err(u: Use, v: &Value, path: &str) -> Message {
    match u {
        Use::Action(a) => Message::base(&base::ACTION_PARAMETER_VALUE_TYPE_ERROR, &[&value_arg(v), path, a]).related(path),
        _ => Message::base(&base::PROPERTY_VALUE_TYPE_ERROR, &[&value_arg(v), path]).related(path),
    }
}
fn list_err(u: Use, v: &Value, path: &str) -> Message {
    match u {
        Use::Action(a) => Message::base(&base::ACTION_PARAMETER_VALUE_NOT_IN_LIST, &[&value_arg(v), path, a]).related(path),
        _ => Message::base(&base::PROPERTY_VALUE_NOT_IN_LIST, &[&value_arg(v), path]).related(path),
    }
}
fn format_err(u: Use, v: &Value, path: &str) -> Message {
    match u {
        Use::Action(a) => Message::base(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &[&value_arg(v), path, a]).related(path),
        _ => Message::base(&base::PROPERTY_VALUE_FORMAT_ERROR, &[&value_arg(v), path]).related(path),
    }
}

fn check_value(u: Use, ty: &Ty, v: &Value, path: &str, errs: &mut Vec<Message>) {
    match ty {
        Ty::Bool => {
            if !v.is_boolean() {
                errs.push(type_err(u, v, path))
            }
        }
        Ty::Int { min, max } => match v.as_i64() {
            None => errs.push(type_err(u, v, path)),
            Some(n) if n < *min || n > *max => errs.push(match u {
                Use::Action(_) => format_err(u, v, path),
                _ => Message::base(&base::PROPERTY_VALUE_OUT_OF_RANGE, &[&value_arg(v), path]).related(path),
            }),
            _ => {}
        },
        Ty::Str { min, max } => match v.as_str() {
            None => errs.push(type_err(u, v, path)),
            Some(s) if s.chars().count() > *max => {
                errs.push(Message::base(&base::STRING_VALUE_TOO_LONG, &[s, &max.to_string()]).related(path))
            }
            Some(s) if s.chars().count() < *min => errs.push(format_err(u, v, path)),
            _ => {}
        },
        Ty::Secret { max } => match v.as_str() {
            // Never echo a secret back: the message names the property only.
            None => errs.push(type_err(u, &Value::String("<hidden>".into()), path)),
            Some(s) if s.len() > *max => errs.push(Message::base(&base::PASSWORD_INCORRECT_LENGTH, &[]).related(path)),
            _ => {}
        },
        Ty::SecretList { max_items, max } => match v.as_array() {
            Some(a) if a.iter().all(Value::is_string) && a.len() <= *max_items => {
                if a.iter().any(|s| s.as_str().is_some_and(|s| s.len() > *max)) {
                    errs.push(Message::base(&base::PASSWORD_INCORRECT_LENGTH, &[]).related(path));
                }
            }
            _ => errs.push(type_err(u, &Value::String("<hidden>".into()), path)),
        },
        Ty::Enum(allowed) => match v.as_str() {
            None => errs.push(type_err(u, v, path)),
            Some(s) if !allowed.contains(&s) => errs.push(list_err(u, v, path)),
            _ => {}
        },
        Ty::Uri => match v.as_str() {
            None => errs.push(type_err(u, v, path)),
            Some(s) if !valid_http_uri(s) => errs.push(format_err(u, v, path)),
            _ => {}
        },
        Ty::StrList { max_items } => match v.as_array() {
            Some(a) if a.iter().all(Value::is_string) => {
                if a.len() > *max_items {
                    errs.push(type_err(u, v, path))
                }
            }
            _ => errs.push(type_err(u, v, path)),
        },
        Ty::EnumList(allowed) => match v.as_array() {
            Some(a) => {
                for item in a {
                    match item.as_str() {
                        Some(s) if allowed.contains(&s) => {}
                        Some(_) => errs.push(list_err(u, item, path)),
                        None => errs.push(type_err(u, item, path)),
                    }
                }
            }
            None => errs.push(type_err(u, v, path)),
        },
        Ty::LinkList => match v.as_array() {
            Some(a) if a.iter().all(|l| l.get("@odata.id").and_then(Value::as_str).is_some()) => {}
            _ => errs.push(type_err(u, v, path)),
        },
        Ty::StrMap => match v.as_object() {
            Some(m) if m.values().all(Value::is_string) => {}
            Some(_) | None => errs.push(type_err(u, &Value::String("<hidden>".into()), path)),
        },
        Ty::Obj(props) => match v.as_object() {
            Some(m) => check_object(u, props, m, path, errs, None),
            None => errs.push(type_err(u, v, path)),
        },
    }
}

/// Validate `m` against `props`. Unknown properties are faults, except those listed in
/// `readonly` (PATCH): those are reported as `PropertyNotWritable` by the caller instead.
fn check_object(u: Use, props: &[Prop], m: &Map<String, Value>, prefix: &str, errs: &mut Vec<Message>, readonly: Option<&mut Vec<String>>) {
    let mut readonly = readonly;
    for (k, v) in m {
        let path = path_join(prefix, k);
        match props.iter().find(|p| p.name == k) {
            Some(p) => {
                if v.is_null() {
                    if !p.nullable {
                        errs.push(type_err(u, v, &path));
                    }
                } else {
                    check_value(u, &p.ty, v, &path, errs);
                }
            }
            None => {
                if let Some(ro) = readonly.as_deref_mut() {
                    ro.push(k.clone());
                    continue;
                }
                errs.push(match u {
                    Use::Action(a) => Message::base(&base::ACTION_PARAMETER_UNKNOWN, &[a, k]).related(&path),
                    _ => Message::base(&base::PROPERTY_UNKNOWN, &[k]).related(&path),
                })
            }
        }
    }
    if !matches!(u, Use::Patch) {
        for p in props.iter().filter(|p| p.required) {
            if !m.contains_key(p.name) {
                let path = path_join(prefix, p.name);
                errs.push(match u {
                    Use::Action(a) => Message::base(&base::ACTION_PARAMETER_MISSING, &[a, p.name]).related(&path),
                    _ => Message::base(&base::CREATE_FAILED_MISSING_REQ_PROPERTIES, &[p.name]).related(&path),
                });
            }
        }
    }
}

/// Validate a create or action body: every fault is collected into one 400.
pub fn validate(u: Use, props: &[Prop], m: &Map<String, Value>) -> RfResult<()> {
    let mut errs = vec![];
    check_object(u, props, m, "", &mut errs, None);
    if errs.is_empty() { Ok(()) } else { Err(RfError::many(StatusCode::BAD_REQUEST, errs)) }
}

/// The outcome of checking a PATCH body against the writable properties and the current
/// representation: what to apply, and the read-only properties to report.
#[derive(Debug)]
pub struct PatchPlan {
    pub apply: Map<String, Value>,
    pub not_writable: Vec<Message>,
}

/// Check a PATCH body. Malformed values and properties the resource does not have reject the
/// whole request (400, nothing changes). Properties the resource has but that cannot be written
/// are left out and reported (`PropertyNotWritable`); when nothing is left to apply that is a 400.
pub fn plan_patch(writable: &[Prop], mut body: Map<String, Value>, current: &Value) -> RfResult<PatchPlan> {
    if body.is_empty() {
        return Err(RfError::bad_request(&base::EMPTY_JSON, &[]));
    }
    // OData annotations in a request are ignored (DSP0266 §7.9); nothing else left is a no-op.
    body.retain(|k, _| !k.starts_with("@odata."));
    if body.is_empty() {
        return Err(RfError::bad_request(&base::NO_OPERATION, &[]));
    }
    let mut errs = vec![];
    let mut readonly = vec![];
    check_object(Use::Patch, writable, &body, "", &mut errs, Some(&mut readonly));
    let mut not_writable = vec![];
    for k in &readonly {
        if current.get(k).is_some() {
            not_writable.push(Message::base(&base::PROPERTY_NOT_WRITABLE, &[k]).related(k));
        } else {
            errs.push(Message::base(&base::PROPERTY_UNKNOWN, &[k]).related(k));
        }
    }
    if !errs.is_empty() {
        return Err(RfError::many(StatusCode::BAD_REQUEST, errs));
    }
    let mut apply = body;
    for k in &readonly {
        apply.remove(k);
    }
    if apply.is_empty() {
        return Err(RfError::many(StatusCode::BAD_REQUEST, not_writable));
    }
    Ok(PatchPlan { apply, not_writable })
}

pub fn valid_http_uri(s: &str) -> bool {
    let rest = if let Some(r) = s.strip_prefix("https://") {
        r
    } else if let Some(r) = s.strip_prefix("http://") {
        r
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &[Prop] = &[
        Prop::required("UserName", Ty::Str { min: 1, max: 16 }, ""),
        Prop::new("Enabled", Ty::Bool, ""),
        Prop::new("RoleId", Ty::Enum(&["Administrator", "ReadOnly"]), ""),
        Prop::new("Timeout", Ty::Int { min: 30, max: 86400 }, ""),
    ];

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }
    fn ids(e: &RfError) -> Vec<String> {
        e.messages.iter().map(|m| m.def.key.to_string()).collect()
    }

    #[test]
    fn create_reports_every_fault() {
        let e = validate(Use::Create, SPEC, &obj(json!({"Enabled": "yes", "Bogus": 1, "RoleId": "King"}))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let mut got = ids(&e);
        got.sort();
        assert_eq!(got, vec!["CreateFailedMissingReqProperties", "PropertyUnknown", "PropertyValueNotInList", "PropertyValueTypeError"]);
        assert!(validate(Use::Create, SPEC, &obj(json!({"UserName": "a"}))).is_ok());
    }

    #[test]
    fn action_faults_use_action_messages() {
        let e = validate(Use::Action("Manager.Reset"), SPEC, &obj(json!({"Nope": 1}))).unwrap_err();
        let mut got = ids(&e);
        got.sort();
        assert_eq!(got, vec!["ActionParameterMissing", "ActionParameterUnknown"]);
    }

    #[test]
    fn patch_partial_success_and_rejections() {
        let current = json!({"UserName": "x", "Id": "1", "Enabled": true});
        let p = plan_patch(SPEC, obj(json!({"Enabled": false, "Id": "2"})), &current).unwrap();
        assert_eq!(p.apply, obj(json!({"Enabled": false})));
        assert_eq!(p.not_writable.len(), 1);
        // Only read-only properties: 400 PropertyNotWritable.
        let e = plan_patch(SPEC, obj(json!({"Id": "2"})), &current).unwrap_err();
        assert_eq!(ids(&e), vec!["PropertyNotWritable"]);
        // An unknown property rejects the whole request, valid ones included.
        let e = plan_patch(SPEC, obj(json!({"Enabled": false, "Nope": 1})), &current).unwrap_err();
        assert_eq!(ids(&e), vec!["PropertyUnknown"]);
        let e = plan_patch(SPEC, obj(json!({"Timeout": 5})), &current).unwrap_err();
        assert_eq!(ids(&e), vec!["PropertyValueOutOfRange"]);
        assert_eq!(ids(&plan_patch(SPEC, Map::new(), &current).unwrap_err()), vec!["EmptyJSON"]);
        assert_eq!(ids(&plan_patch(SPEC, obj(json!({"@odata.id": "/x/"})), &current).unwrap_err()), vec!["NoOperation"]);
        let p = plan_patch(SPEC, obj(json!({"@odata.etag": "\"x\"", "Enabled": true})), &current).unwrap();
        assert_eq!(p.apply, obj(json!({"Enabled": true})));
        assert!(p.not_writable.is_empty());
    }

    #[test]
    fn json_parsing_faults() {
        assert_eq!(ids(&parse_object(b"{").unwrap_err()), vec!["MalformedJSON"]);
        assert_eq!(ids(&parse_object(b"[1]").unwrap_err()), vec!["UnrecognizedRequestBody"]);
        assert_eq!(ids(&parse_object(b"").unwrap_err()), vec!["MalformedJSON"]);
        assert!(parse_object(b"{\"a\":1}").is_ok());
    }

    #[test]
    fn uris() {
        assert!(valid_http_uri("https://127.0.0.1:8443/events"));
        assert!(!valid_http_uri("ftp://x"));
        assert!(!valid_http_uri("https:///x"));
        assert!(!valid_http_uri("https://a b"));
    }
}
