//! The event bus: every change becomes a Redfish event, kept in a replay ring, streamed to SSE
//! clients and delivered (with retries) to push subscriptions.

use crate::messages::{render, MessageDef, RfError, RfResult, RESOURCE_EVENT_PREFIX};
use crate::protocol::query::Filter;
use crate::store::StateDir;
use crate::types::EVENT;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, Notify};

/// One event record (an element of `Events[]`) with what filters look at.
#[derive(Debug)]
pub struct EventRecord {
    pub id: u64,
    pub record: Value,
    pub message_id: String,
    pub origin: String,
    pub resource_type: String,
}

impl EventRecord {
    pub fn registry_prefix(&self) -> &str {
        self.message_id.split('.').next().unwrap_or("")
    }
    /// The properties an SSE `$filter` can name.
    pub fn filter_view(&self) -> Value {
        json!({
            "EventType": self.record.get("EventType").cloned().unwrap_or(Value::Null),
            "MessageId": self.message_id,
            "RegistryPrefix": self.registry_prefix(),
            "ResourceType": self.resource_type,
            "OriginResource": self.origin,
            "EventFormatType": "Event",
        })
    }
    /// A whole Event payload for one destination.
    pub fn payload(&self, context: Option<&str>) -> Value {
        let mut v = json!({
            "@odata.type": EVENT.odata_type(),
            "Id": self.id.to_string(),
            "Name": "Keel event",
            "Events": [self.record.clone()],
        });
        if let Some(c) = context {
            v["Context"] = json!(c);
        }
        v
    }
}

/// A push subscription (EventDestination), persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub destination: String,
    #[serde(default)]
    pub context: Option<String>,
    pub protocol: String,
    #[serde(default)]
    pub registry_prefixes: Vec<String>,
    #[serde(default)]
    pub message_ids: Vec<String>,
    #[serde(default)]
    pub resource_types: Vec<String>,
    #[serde(default)]
    pub origin_resources: Vec<String>,
    #[serde(default)]
    pub subordinate_resources: bool,
    /// Write-only: sent with each delivery, never shown.
    #[serde(default)]
    pub http_headers: Vec<(String, String)>,
    #[serde(default)]
    pub verify_certificate: bool,
    pub owner: String,
    #[serde(default)]
    pub created: String,
}

impl Subscription {
    pub fn wants(&self, e: &EventRecord) -> bool {
        (self.registry_prefixes.is_empty() || self.registry_prefixes.iter().any(|p| p == e.registry_prefix()))
            && (self.message_ids.is_empty() || self.message_ids.iter().any(|m| message_id_matches(m, &e.message_id)))
            && (self.resource_types.is_empty() || self.resource_types.iter().any(|t| t == &e.resource_type))
            && (self.origin_resources.is_empty()
                || self.origin_resources.iter().any(|o| {
                    o == &e.origin || (self.subordinate_resources && e.origin.starts_with(&format!("{o}/")))
                }))
    }
}

/// `Base.1.22.X` matches `Base.1.X` or `Base.X` as DSP0266 allows versionless MessageIds.
fn message_id_matches(wanted: &str, actual: &str) -> bool {
    if wanted == actual {
        return true;
    }
    let (wp, wk) = (wanted.split('.').next(), wanted.rsplit('.').next());
    let (ap, ak) = (actual.split('.').next(), actual.rsplit('.').next());
    wp == ap && wk == ak && wanted.split('.').count() <= 2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EventSettings {
    pub service_enabled: bool,
    pub retry_attempts: u32,
    pub retry_interval: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings { service_enabled: true, retry_attempts: 3, retry_interval: 5 }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct EventsFile {
    next_id: u64,
    subscriptions: Vec<Subscription>,
    #[serde(default)]
    settings: EventSettings,
}

/// An open SSE stream, shown as an EventDestination while it lasts.
pub struct SseStream {
    pub owner: String,
    pub filter: Option<String>,
    pub created: String,
    pub closer: Arc<Notify>,
}

pub const RING: usize = 512;
pub const MAX_SUBSCRIPTIONS: usize = 64;
const FILE: &str = "events.json";

pub struct EventBus {
    dir: StateDir,
    next_event: AtomicU64,
    ring: Mutex<VecDeque<Arc<EventRecord>>>,
    tx: broadcast::Sender<Arc<EventRecord>>,
    file: RwLock<EventsFile>,
    pub sse: Mutex<HashMap<String, SseStream>>,
    next_sse: AtomicU64,
    push: Mutex<Option<mpsc::UnboundedSender<(Subscription, Arc<EventRecord>, EventSettings)>>>,
}

impl EventBus {
    pub fn open(dir: StateDir) -> std::io::Result<Self> {
        let file: EventsFile = dir.load(FILE)?.unwrap_or(EventsFile { next_id: 1, ..Default::default() });
        let (tx, _) = broadcast::channel(256);
        // Event ids grow across restarts without being persisted: start from the clock.
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
        Ok(EventBus {
            dir,
            next_event: AtomicU64::new(start),
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx,
            file: RwLock::new(file),
            sse: Mutex::new(HashMap::new()),
            next_sse: AtomicU64::new(1),
            push: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> EventSettings {
        self.file.read().unwrap().settings.clone()
    }
    pub fn set_settings(&self, s: EventSettings) -> RfResult<()> {
        let mut f = self.file.write().unwrap();
        let old = std::mem::replace(&mut f.settings, s);
        if let Err(e) = self.dir.save(FILE, &*f) {
            f.settings = old;
            return Err(RfError::internal(e));
        }
        Ok(())
    }

    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.file.read().unwrap().subscriptions.clone()
    }
    pub fn subscription(&self, id: &str) -> Option<Subscription> {
        self.file.read().unwrap().subscriptions.iter().find(|s| s.id == id).cloned()
    }
    pub fn add_subscription(&self, mut s: Subscription) -> RfResult<Subscription> {
        let mut f = self.file.write().unwrap();
        if f.subscriptions.len() + self.sse.lock().unwrap().len() >= MAX_SUBSCRIPTIONS {
            return Err(RfError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                crate::messages::Message::base(&crate::messages::base::EVENT_SUBSCRIPTION_LIMIT_EXCEEDED, &[]),
            ));
        }
        s.id = f.next_id.max(1).to_string();
        f.next_id = f.next_id.max(1) + 1;
        f.subscriptions.push(s.clone());
        if let Err(e) = self.dir.save(FILE, &*f) {
            f.subscriptions.pop();
            f.next_id -= 1;
            return Err(RfError::internal(e));
        }
        Ok(s)
    }
    pub fn update_subscription(&self, id: &str, change: impl FnOnce(&mut Subscription)) -> RfResult<()> {
        let mut f = self.file.write().unwrap();
        let i = f.subscriptions.iter().position(|s| s.id == id).ok_or_else(|| RfError::resource_not_found("EventDestination", id))?;
        let before = f.subscriptions[i].clone();
        change(&mut f.subscriptions[i]);
        if let Err(e) = self.dir.save(FILE, &*f) {
            f.subscriptions[i] = before;
            return Err(RfError::internal(e));
        }
        Ok(())
    }
    pub fn remove_subscription(&self, id: &str) -> RfResult<()> {
        if let Some(s) = self.sse.lock().unwrap().remove(id) {
            s.closer.notify_waiters();
            s.closer.notify_one();
            return Ok(());
        }
        let mut f = self.file.write().unwrap();
        let i = f.subscriptions.iter().position(|s| s.id == id).ok_or_else(|| RfError::resource_not_found("EventDestination", id))?;
        let removed = f.subscriptions.remove(i);
        if let Err(e) = self.dir.save(FILE, &*f) {
            f.subscriptions.insert(i, removed);
            return Err(RfError::internal(e));
        }
        Ok(())
    }

    /// Register an SSE stream; returns its EventDestination id and the notifier that closes it.
    pub fn open_sse(&self, owner: &str, filter: Option<String>) -> (String, Arc<Notify>) {
        let id = format!("SSE{}", self.next_sse.fetch_add(1, Ordering::Relaxed));
        let closer = Arc::new(Notify::new());
        self.sse.lock().unwrap().insert(
            id.clone(),
            SseStream { owner: owner.to_string(), filter, created: chrono::Utc::now().to_rfc3339(), closer: closer.clone() },
        );
        (id, closer)
    }
    /// End every SSE stream (on shutdown or restart).
    pub fn close_all_sse(&self) {
        for s in self.sse.lock().unwrap().values() {
            s.closer.notify_one();
        }
    }
    pub fn close_sse(&self, id: &str) {
        self.sse.lock().unwrap().remove(id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }
    /// Events after `last_id` still in the replay ring (for `Last-Event-ID`).
    pub fn replay_after(&self, last_id: u64) -> Vec<Arc<EventRecord>> {
        self.ring.lock().unwrap().iter().filter(|e| e.id > last_id).cloned().collect()
    }

    pub fn set_push_sender(&self, tx: mpsc::UnboundedSender<(Subscription, Arc<EventRecord>, EventSettings)>) {
        *self.push.lock().unwrap() = Some(tx);
    }

    /// Publish an event record (the `Events[]` element without `EventId`, which is assigned here).
    pub fn publish(&self, mut record: Value, message_id: String, origin: String, resource_type: String) -> Arc<EventRecord> {
        let id = self.next_event.fetch_add(1, Ordering::Relaxed);
        record["EventId"] = json!(id.to_string());
        if record.get("EventTimestamp").is_none() {
            record["EventTimestamp"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let e = Arc::new(EventRecord { id, record, message_id, origin, resource_type });
        {
            let mut r = self.ring.lock().unwrap();
            if r.len() == RING {
                r.pop_front();
            }
            r.push_back(e.clone());
        }
        let settings = self.settings();
        if settings.service_enabled {
            let _ = self.tx.send(e.clone());
            if let Some(tx) = self.push.lock().unwrap().as_ref() {
                for s in self.file.read().unwrap().subscriptions.iter().filter(|s| s.wants(&e)) {
                    let _ = tx.send((s.clone(), e.clone(), settings.clone()));
                }
            }
        }
        e
    }

    /// A device that appeared (hot-plug) or went away: ResourceCreated / ResourceRemoved, with the
    /// EventType clients of older Redfish versions filter on.
    pub fn inventory_event(&self, added: bool, origin: &str, resource_type: &str) {
        let def = if added { &crate::messages::resource_event::RESOURCE_CREATED } else { &crate::messages::resource_event::RESOURCE_REMOVED };
        let message_id = format!("{RESOURCE_EVENT_PREFIX}.{}", def.key);
        let record = json!({
            "EventType": if added { "ResourceAdded" } else { "ResourceRemoved" },
            "MessageId": message_id,
            "Message": def.text,
            "MessageArgs": [],
            "MessageSeverity": def.severity,
            "OriginOfCondition": { "@odata.id": origin },
        });
        self.publish(record, message_id, origin.to_string(), resource_type.to_string());
    }

    /// An event carrying one message of any registry (TaskEvent, Update…) about `origin`.
    pub fn message_event(&self, m: &crate::messages::Message, origin: &str, resource_type: &str) {
        let message_id = m.id();
        let mut record = json!({
            "EventType": "Other",
            "MessageId": message_id,
            "Message": render(m.def.text, &m.args),
            "MessageArgs": m.args,
            "MessageSeverity": m.def.severity,
        });
        if !origin.is_empty() {
            record["OriginOfCondition"] = json!({ "@odata.id": origin });
        }
        self.publish(record, message_id, origin.to_string(), resource_type.to_string());
    }

    /// A ResourceEvent registry event about `origin`.
    pub fn resource_event(&self, def: &'static MessageDef, origin: &str, resource_type: &str, args: &[String]) {
        let message_id = format!("{RESOURCE_EVENT_PREFIX}.{}", def.key);
        let mut record = json!({
            "EventType": "Other",
            "MessageId": message_id,
            "Message": render(def.text, args),
            "MessageArgs": args,
            "MessageSeverity": def.severity,
        });
        if !origin.is_empty() {
            record["OriginOfCondition"] = json!({ "@odata.id": origin });
        }
        self.publish(record, message_id, origin.to_string(), resource_type.to_string());
    }
}

/// Whether an SSE `$filter` lets the event through.
pub fn sse_allows(filter: Option<&Filter>, e: &EventRecord) -> bool {
    filter.map_or(true, |f| f.matches(&e.filter_view()))
}

/// The delivery loop for push subscriptions: its own thread and actix runtime (the HTTP client
/// is not `Send`), one task per delivery, retried as the EventService settings say.
pub fn start_delivery(bus: &EventBus) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Subscription, Arc<EventRecord>, EventSettings)>();
    bus.set_push_sender(tx);
    std::thread::Builder::new()
        .name("keel-events".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                // Built on first use: each loads the system CA bundle (megabytes of heap), which
                // a host without subscriptions never needs.
                let (mut verify, mut noverify): (Option<awc::Client>, Option<awc::Client>) = (None, None);
                while let Some((sub, ev, settings)) = rx.recv().await {
                    let c = if sub.verify_certificate {
                        verify.get_or_insert_with(|| client(true)).clone()
                    } else {
                        noverify.get_or_insert_with(|| client(false)).clone()
                    };
                    actix_rt::spawn(deliver(c, sub, ev, settings));
                }
            })
        })
        .expect("spawn event delivery thread");
}

fn client(verify: bool) -> awc::Client {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).expect("ssl connector");
    if !verify {
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    }
    awc::Client::builder()
        .connector(awc::Connector::new().openssl(b.build()).timeout(std::time::Duration::from_secs(5)))
        .timeout(std::time::Duration::from_secs(10))
        .finish()
}

async fn deliver(c: awc::Client, sub: Subscription, ev: Arc<EventRecord>, settings: EventSettings) {
    let body = ev.payload(sub.context.as_deref()).to_string();
    for attempt in 0..=settings.retry_attempts {
        let mut r = c.post(&sub.destination).insert_header(("Content-Type", "application/json"));
        for (k, v) in &sub.http_headers {
            r = r.insert_header((k.as_str(), v.as_str()));
        }
        match r.send_body(body.clone()).await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => log::warn!("event {} to subscription {}: HTTP {}", ev.id, sub.id, resp.status()),
            Err(e) => log::warn!("event {} to subscription {}: {e}", ev.id, sub.id),
        }
        if attempt < settings.retry_attempts {
            actix_rt::time::sleep(std::time::Duration::from_secs(settings.retry_interval as u64)).await;
        }
    }
    log::warn!("event {} to subscription {} dropped after {} retries", ev.id, sub.id, settings.retry_attempts);
}

#[cfg(test)]
mod tests {
    use super::*;
    fn rec(mid: &str, origin: &str) -> EventRecord {
        EventRecord { id: 1, record: json!({}), message_id: mid.into(), origin: origin.into(), resource_type: "ManagerAccount".into() }
    }
    fn sub() -> Subscription {
        Subscription {
            id: "1".into(),
            destination: "https://127.0.0.1/".into(),
            context: None,
            protocol: "Redfish".into(),
            registry_prefixes: vec![],
            message_ids: vec![],
            resource_types: vec![],
            origin_resources: vec![],
            subordinate_resources: false,
            http_headers: vec![],
            verify_certificate: false,
            owner: "a".into(),
            created: String::new(),
        }
    }
    #[test]
    fn subscription_filters() {
        let e = rec("ResourceEvent.1.4.ResourceChanged", "/redfish/v1/AccountService/Accounts/2");
        let mut s = sub();
        assert!(s.wants(&e));
        s.registry_prefixes = vec!["Base".into()];
        assert!(!s.wants(&e));
        s.registry_prefixes = vec!["ResourceEvent".into()];
        s.message_ids = vec!["ResourceEvent.ResourceChanged".into()];
        assert!(s.wants(&e));
        s.origin_resources = vec!["/redfish/v1/AccountService".into()];
        assert!(!s.wants(&e));
        s.subordinate_resources = true;
        assert!(s.wants(&e));
        s.resource_types = vec!["Session".into()];
        assert!(!s.wants(&e));
    }
    #[test]
    fn ring_replays_after_id() {
        let dir = StateDir::open(&std::env::temp_dir().join(format!("keel-ev-{}", uuid::Uuid::new_v4()))).unwrap();
        let bus = EventBus::open(dir).unwrap();
        let a = bus.publish(json!({}), "X.1.0.A".into(), "/a".into(), "T".into());
        let b = bus.publish(json!({}), "X.1.0.B".into(), "/b".into(), "T".into());
        assert!(b.id > a.id);
        let r = bus.replay_after(a.id);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].message_id, "X.1.0.B");
        assert_eq!(r[0].record["EventId"], b.id.to_string());
    }
}
