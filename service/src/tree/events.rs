//! EventService: push subscriptions, the SSE stream and test events.

use super::{collection, link, Reply, Req, Tree};
use crate::events::{sse_allows, Subscription};
use crate::messages::{base, render, resource_event, Message, RfError, RfResult, RESOURCE_EVENT_PREFIX};
use crate::privilege::{Privilege, CONFIGURE_MANAGER, LOGIN, MANAGER_OR_COMPONENTS, MANAGER_OR_SELF};
use crate::protocol::body::{Prop, Ty};
use crate::protocol::query::{self, Filter};
use crate::types;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub const SSE_URI: &str = "/redfish/v1/EventService/SSE";
const SUBS: &str = "/redfish/v1/EventService/Subscriptions";

const SERVICE_PATCH: &[Prop] = &[
    Prop::new("ServiceEnabled", Ty::Bool, "Whether events are sent at all."),
    Prop::new("DeliveryRetryAttempts", Ty::Int { min: 0, max: 20 }, "Retries of a failed delivery."),
    Prop::new("DeliveryRetryIntervalSeconds", Ty::Int { min: 1, max: 3600 }, "Seconds between retries."),
];

const SUB_CREATE: &[Prop] = &[
    Prop::required("Destination", Ty::Uri, "The http(s) URI events are POSTed to."),
    Prop::new("Protocol", Ty::Enum(&["Redfish"]), "Only Redfish push delivery."),
    Prop::nullable("Context", Ty::Str { min: 0, max: 256 }, "Returned in every event."),
    Prop::new("SubscriptionType", Ty::Enum(&["RedfishEvent"]), "Push subscriptions are RedfishEvent."),
    Prop::new("EventFormatType", Ty::Enum(&["Event"]), "Events are Event resources."),
    Prop::new("RegistryPrefixes", Ty::StrList { max_items: 32 }, "Only messages of these registries."),
    Prop::new("MessageIds", Ty::StrList { max_items: 64 }, "Only these MessageIds."),
    Prop::new("ResourceTypes", Ty::StrList { max_items: 64 }, "Only events about these resource types."),
    Prop::new("OriginResources", Ty::LinkList, "Only events about these resources."),
    Prop::new("SubordinateResources", Ty::Bool, "Whether OriginResources includes their subordinates."),
    Prop::new("HttpHeaders", Ty::StrMap, "Headers sent with each event (write-only)."),
    Prop::new("VerifyCertificate", Ty::Bool, "Whether the destination's certificate is verified (default true)."),
    Prop::new("DeliveryRetryPolicy", Ty::Enum(&["RetryForever", "SuspendRetries", "TerminateAfterRetries"]), "Accepted; keeld drops an event after the retries."),
];

const SUB_PATCH: &[Prop] = &[Prop::nullable("Context", Ty::Str { min: 0, max: 256 }, "Returned in every event.")];

const TEST_EVENT: &[Prop] = &[
    Prop::new("EventId", Ty::Str { min: 0, max: 64 }, "Ignored: keeld numbers events itself."),
    Prop::new("EventTimestamp", Ty::Str { min: 0, max: 64 }, "The time stamp to report."),
    Prop::new("EventType", Ty::Enum(&["StatusChange", "ResourceUpdated", "ResourceAdded", "ResourceRemoved", "Alert", "MetricReport", "Other"]), "Deprecated event type."),
    Prop::new("EventGroupId", Ty::Int { min: 0, max: i64::MAX }, "Group of related events."),
    Prop::new("Message", Ty::Str { min: 0, max: 1024 }, "The message text."),
    Prop::new("MessageArgs", Ty::StrList { max_items: 16 }, "The message arguments."),
    Prop::new("MessageId", Ty::Str { min: 1, max: 256 }, "The MessageId."),
    Prop::new("MessageSeverity", Ty::Enum(&["OK", "Warning", "Critical"]), "The severity."),
    Prop::new("Severity", Ty::Str { min: 0, max: 64 }, "Deprecated severity."),
    Prop::new("OriginOfCondition", Ty::Str { min: 0, max: 512 }, "The URI of the resource the event is about."),
];

pub fn register(t: &mut Tree) {
    t.add(
        Tree::route("/redfish/v1/EventService", "EventService", Some(types::EVENT_SERVICE))
            .get(LOGIN, service)
            .patch(CONFIGURE_MANAGER, SERVICE_PATCH, patch_service),
    );
    t.add(
        Tree::route(SUBS, "EventDestinationCollection", Some(types::EVENT_DESTINATION_COLLECTION))
            .get(LOGIN, list)
            .create(MANAGER_OR_COMPONENTS, SUB_CREATE, "Subscribe a destination to events", create),
    );
    t.add(
        Tree::route("/redfish/v1/EventService/Subscriptions/{EventDestinationId}", "EventDestination", Some(types::EVENT_DESTINATION))
            .get(LOGIN, one)
            .patch(MANAGER_OR_SELF, SUB_PATCH, patch_sub)
            .delete(MANAGER_OR_SELF, remove),
    );
    t.add(Tree::route(SSE_URI, "EventService", None).get_raw(LOGIN, "text/event-stream", sse));
    t.add(Tree::route("/redfish/v1/EventService/Actions/EventService.SubmitTestEvent", "EventService", None).action(
        "EventService.SubmitTestEvent",
        CONFIGURE_MANAGER,
        TEST_EVENT,
        "Send a test event to every subscriber",
        submit_test_event,
    ));
}

async fn service(r: Req) -> RfResult<Value> {
    let s = r.keel.events.settings();
    Ok(json!({
        "Id": "EventService",
        "Name": "Event Service",
        "Description": "Events by push subscription and Server-Sent Events",
        "ServiceEnabled": s.service_enabled,
        "DeliveryRetryAttempts": s.retry_attempts,
        "DeliveryRetryIntervalSeconds": s.retry_interval,
        "EventFormatTypes": ["Event"],
        "RegistryPrefixes": super::registries::REGISTRIES.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "ResourceTypes": types::ALL.iter().filter(|t| t.version.is_some()).map(|t| t.name).collect::<Vec<_>>(),
        "ServerSentEventUri": SSE_URI,
        "SSEFilterPropertiesSupported": {
            "EventFormatType": true,
            "MessageId": true,
            "MetricReportDefinition": false,
            "OriginResource": true,
            "RegistryPrefix": true,
            "ResourceType": true,
            "SubordinateResources": false,
        },
        "SubordinateResourcesSupported": true,
        "IncludeOriginOfConditionSupported": false,
        "Subscriptions": link(SUBS),
        "Status": { "State": if s.service_enabled { "Enabled" } else { "Disabled" }, "Health": "OK" },
        "Actions": {
            "#EventService.SubmitTestEvent": {
                "target": "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
                "title": "Submit a test event",
            }
        },
    }))
}

async fn patch_service(r: Req, b: Map<String, Value>) -> RfResult<()> {
    let mut s = r.keel.events.settings();
    if let Some(v) = b.get("ServiceEnabled").and_then(Value::as_bool) {
        s.service_enabled = v;
    }
    if let Some(v) = b.get("DeliveryRetryAttempts").and_then(Value::as_i64) {
        s.retry_attempts = v as u32;
    }
    if let Some(v) = b.get("DeliveryRetryIntervalSeconds").and_then(Value::as_i64) {
        s.retry_interval = v as u32;
    }
    r.keel.events.set_settings(s)
}

fn sub_uri(id: &str) -> String {
    format!("{SUBS}/{id}")
}

async fn list(r: Req) -> RfResult<Value> {
    let mut ids: Vec<String> = r.keel.events.subscriptions().iter().map(|s| sub_uri(&s.id)).collect();
    let mut sse: Vec<String> = r.keel.events.sse.lock().unwrap().keys().map(|k| sub_uri(k)).collect();
    sse.sort();
    ids.extend(sse);
    Ok(collection("Event Subscriptions", ids))
}

fn sub_json(s: &Subscription) -> Value {
    json!({
        "Id": s.id,
        "Name": "Event Subscription",
        "Destination": s.destination,
        "Protocol": s.protocol,
        "Context": s.context,
        "SubscriptionType": "RedfishEvent",
        "EventFormatType": "Event",
        "RegistryPrefixes": s.registry_prefixes,
        "MessageIds": s.message_ids,
        "ResourceTypes": s.resource_types,
        "OriginResources": s.origin_resources.iter().map(|o| link(o.clone())).collect::<Vec<_>>(),
        "SubordinateResources": s.subordinate_resources,
        "HttpHeaders": [],
        "VerifyCertificate": s.verify_certificate,
        "DeliveryRetryPolicy": "TerminateAfterRetries",
        "Status": { "State": "Enabled", "Health": "OK" },
    })
}

async fn one(r: Req) -> RfResult<Value> {
    let id = r.param(0);
    if let Some(s) = r.keel.events.sse.lock().unwrap().get(id) {
        return Ok(json!({
            "Id": id,
            "Name": "Server-Sent Events stream",
            "Protocol": "Redfish",
            "SubscriptionType": "SSE",
            "EventFormatType": "Event",
            "Context": format!("SSE stream of {}", s.owner),
            "Description": match &s.filter { Some(f) => format!("SSE stream of {} with $filter={f}", s.owner), None => format!("SSE stream of {}", s.owner) },
            "Status": { "State": "Enabled", "Health": "OK" },
        }));
    }
    let s = r.keel.events.subscription(id).ok_or_else(|| RfError::resource_not_found("EventDestination", id))?;
    Ok(sub_json(&s))
}

fn strs(b: &Map<String, Value>, k: &str) -> Vec<String> {
    b.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

async fn create(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let prefixes = strs(&b, "RegistryPrefixes");
    for p in &prefixes {
        if !super::registries::REGISTRIES.iter().any(|(id, _)| id == p) {
            return Err(RfError::not_in_list(&json!(p), "RegistryPrefixes"));
        }
    }
    let resource_types = strs(&b, "ResourceTypes");
    for t in &resource_types {
        if types::by_name(t).is_none() {
            return Err(RfError::not_in_list(&json!(t), "ResourceTypes"));
        }
    }
    let sub = Subscription {
        id: String::new(),
        destination: b["Destination"].as_str().unwrap_or_default().to_string(),
        context: b.get("Context").and_then(Value::as_str).map(str::to_string),
        protocol: "Redfish".into(),
        registry_prefixes: prefixes,
        message_ids: strs(&b, "MessageIds"),
        resource_types,
        origin_resources: b
            .get("OriginResources")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|l| l["@odata.id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        subordinate_resources: b.get("SubordinateResources").and_then(Value::as_bool).unwrap_or(false),
        http_headers: b
            .get("HttpHeaders")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default(),
        verify_certificate: b.get("VerifyCertificate").and_then(Value::as_bool).unwrap_or(true),
        owner: r.principal().user.clone(),
        created: chrono::Utc::now().to_rfc3339(),
    };
    let s = r.keel.events.add_subscription(sub)?;
    log::info!("event subscription {} to {} created by {}", s.id, s.destination, s.owner);
    let mut body = sub_json(&s);
    body["@odata.id"] = json!(sub_uri(&s.id));
    body["@odata.type"] = json!(types::EVENT_DESTINATION.odata_type());
    Ok(Reply::created(sub_uri(&s.id), body))
}

/// ConfigureSelf reaches only the subscriptions the principal made.
fn owns(r: &Req, id: &str) -> bool {
    let p = r.principal();
    if p.privs.has(Privilege::ConfigureManager) {
        return true;
    }
    let owner = r.keel.events.subscription(id).map(|s| s.owner).or_else(|| r.keel.events.sse.lock().unwrap().get(id).map(|s| s.owner.clone()));
    owner.as_deref() == Some(p.user.as_str())
}

async fn patch_sub(r: Req, b: Map<String, Value>) -> RfResult<()> {
    let id = r.param(0).to_string();
    if !owns(&r, &id) {
        return Err(RfError::forbidden());
    }
    r.keel.events.update_subscription(&id, |s| {
        if let Some(c) = b.get("Context") {
            s.context = c.as_str().map(str::to_string);
        }
    })
}

async fn remove(r: Req) -> RfResult<Reply> {
    let id = r.param(0).to_string();
    if r.keel.events.subscription(&id).is_none() && !r.keel.events.sse.lock().unwrap().contains_key(&id) {
        return Err(RfError::resource_not_found("EventDestination", &id));
    }
    if !owns(&r, &id) {
        return Err(RfError::forbidden());
    }
    r.keel.events.remove_subscription(&id)?;
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

async fn submit_test_event(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let message_id = b.get("MessageId").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("{RESOURCE_EVENT_PREFIX}.TestMessage"));
    let args: Vec<String> = strs(&b, "MessageArgs");
    let message = b
        .get("Message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| render(resource_event::TEST_MESSAGE.text, &args));
    let mut record = json!({
        "EventType": b.get("EventType").and_then(Value::as_str).unwrap_or("Other"),
        "MessageId": message_id,
        "Message": message,
        "MessageArgs": args,
        "MessageSeverity": b.get("MessageSeverity").and_then(Value::as_str).unwrap_or("OK"),
    });
    if let Some(ts) = b.get("EventTimestamp").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        if chrono::DateTime::parse_from_rfc3339(ts).is_err() {
            return Err(RfError::bad_request(&base::ACTION_PARAMETER_VALUE_FORMAT_ERROR, &[ts, "EventTimestamp", "EventService.SubmitTestEvent"]));
        }
        record["EventTimestamp"] = json!(ts);
    }
    if let Some(g) = b.get("EventGroupId") {
        record["EventGroupId"] = g.clone();
    }
    let origin = b.get("OriginOfCondition").and_then(Value::as_str).unwrap_or("").to_string();
    if !origin.is_empty() {
        record["OriginOfCondition"] = link(origin.clone());
    }
    let rtype = super::global().find(&origin).and_then(|(r, _)| r.rtype).map(|t| t.name.to_string()).unwrap_or_default();
    r.keel.events.publish(record, message_id, origin, rtype);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// The SSE stream (DSP0266 §13.5): `text/event-stream`, `$filter`, `Last-Event-ID` replay, and an
/// EventDestination that exists while the stream is open.
async fn sse(r: Req) -> RfResult<Reply> {
    let mut filter_text = None;
    for (k, v) in query::pairs(r.http.query_string()) {
        match k.as_str() {
            "$filter" => filter_text = Some(v),
            other if other.starts_with('$') => return Err(RfError::query_unsupported(other)),
            _ => {}
        }
    }
    let filter = match &filter_text {
        Some(f) => Some(Filter::parse(f)?),
        None => None,
    };
    let bus = r.keel.events.clone();
    if !bus.settings().service_enabled {
        return Err(RfError::new(StatusCode::SERVICE_UNAVAILABLE, Message::base(&base::SERVICE_SHUTTING_DOWN, &[])));
    }
    let last: Option<u64> = r.header("Last-Event-ID").and_then(|v| v.trim().parse().ok());
    let rx = bus.subscribe();
    let replay = last.map(|l| bus.replay_after(l)).unwrap_or_default();
    let (id, closer) = bus.open_sse(&r.principal().user, filter_text);
    log::info!("SSE stream {id} opened by {}", r.principal().user);
    let guard = SseGuard { bus: bus.clone(), id };
    let state = SseState { rx, closer, replay: replay.into(), filter, _guard: guard };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.replay.pop_front() {
                if sse_allows(st.filter.as_ref(), &e) {
                    return Some((Ok::<_, actix_web::Error>(frame(&e)), st));
                }
                continue;
            }
            tokio::select! {
                _ = st.closer.notified() => return None,
                got = st.rx.recv() => match got {
                    Ok(e) => if sse_allows(st.filter.as_ref(), &e) { return Some((Ok(frame(&e)), st)); },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                },
                _ = tokio::time::sleep(std::time::Duration::from_secs(20)) => {
                    return Some((Ok(web_bytes(": keep-alive\n\n".into())), st));
                }
            }
        }
    });
    Ok(Reply::Raw(
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(stream),
    ))
}

fn web_bytes(s: String) -> actix_web::web::Bytes {
    actix_web::web::Bytes::from(s)
}

fn frame(e: &crate::events::EventRecord) -> actix_web::web::Bytes {
    web_bytes(format!("id: {}\ndata: {}\n\n", e.id, e.payload(None)))
}

struct SseState {
    rx: tokio::sync::broadcast::Receiver<Arc<crate::events::EventRecord>>,
    closer: Arc<tokio::sync::Notify>,
    replay: std::collections::VecDeque<Arc<crate::events::EventRecord>>,
    filter: Option<Filter>,
    _guard: SseGuard,
}

/// Removes the stream's EventDestination when the client goes away.
struct SseGuard {
    bus: Arc<crate::events::EventBus>,
    id: String,
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.bus.close_sse(&self.id);
        log::info!("SSE stream {} closed", self.id);
    }
}
