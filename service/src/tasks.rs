//! Tasks: the long-running operations of DSP0266 "Asynchronous operations".
//!
//! An action that takes time starts a task (`Tasks::start`), answers `202 Accepted` with the task
//! monitor (`tree::Reply::accepted`) and does its work on its own thread, reporting through the
//! task's `TaskHandle`: progress, messages (Update, TaskEvent or Base registry), the final state and,
//! if it wants, the response the task monitor gives once the work is done.
//!
//! Every task is one JSON document in `STATE/tasks/`, written atomically at every state change and
//! message and at most a few times a second for progress, so a restart of keeld finds them all. A
//! task that was still running when keeld stopped is finished as `Exception` at the next start: its
//! work died with the process. Every change is also an event about the task's URI (TaskEvent
//! registry), so SSE streams and push subscriptions carry task progress.

use crate::events::EventBus;
use crate::messages::{base, resource_event, task_event, Message, MessageDef, RfError, RfResult};
use crate::store::StateDir;
use crate::types;
use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const SERVICE_URI: &str = "/redfish/v1/TaskService";
pub const TASKS_URI: &str = "/redfish/v1/TaskService/Tasks";
pub const MONITORS_URI: &str = "/redfish/v1/TaskService/TaskMonitors";
/// Finished tasks kept (CompletedTaskOverWritePolicy `Oldest`): the oldest beyond this are removed.
pub const MAX_FINISHED: usize = 100;
/// Seconds a client is asked to wait between two polls of a task monitor (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 1;
/// Most messages one task keeps (the first, TaskStarted, stays; the oldest after it go).
pub const MAX_MESSAGES: usize = 256;
/// Progress alone is written to disk at most this often (state changes and messages always are).
const PERSIST_EVERY: Duration = Duration::from_millis(250);
/// TaskProgressChanged events are sent at most this often.
const PROGRESS_EVENT_EVERY: Duration = Duration::from_secs(1);
const DIR: &str = "tasks";
const NEXT_ID: &str = "next-id";

pub fn task_uri(id: impl std::fmt::Display) -> String {
    format!("{TASKS_URI}/{id}")
}

pub fn monitor_uri(id: impl std::fmt::Display) -> String {
    format!("{MONITORS_URI}/{id}")
}

/// Task.TaskState, named as the schema names its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    New,
    Starting,
    Running,
    Suspended,
    Interrupted,
    Pending,
    Stopping,
    Completed,
    Killed,
    Exception,
    Service,
    Cancelling,
    Cancelled,
}

impl TaskState {
    /// Whether the task is over (its work is done or gone).
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Killed | TaskState::Exception | TaskState::Cancelled)
    }
}

/// The request that started a task (Task `Payload`). A hidden payload (`Payload::hidden`) shows
/// `HidePayload: true` and keeps no body or headers at all, not even on disk: actions whose body
/// holds a secret must use it. Headers never include credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub http_operation: String,
    pub target_uri: String,
    #[serde(default)]
    pub http_headers: Vec<String>,
    #[serde(default)]
    pub json_body: Option<String>,
    #[serde(default)]
    pub hidden: bool,
}

/// Whether a request property may hold a secret (shown as null, as write-only properties are).
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "passphrase", "secret", "token", "key", "credential"].iter().any(|w| n.contains(w))
}

/// A copy of a request body fit to show to every reader of the task: secret-looking properties
/// become null and `user:password@` in URIs becomes `REDACTED@`.
fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), if secret_name(k) { Value::Null } else { redact(x) })).collect()),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) => match s.find("://") {
            Some(i) => {
                let rest = &s[i + 3..];
                let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
                match authority.rfind('@') {
                    Some(at) => Value::String(format!("{}://REDACTED@{}", &s[..i], &rest[at + 1..])),
                    None => v.clone(),
                }
            }
            None => v.clone(),
        },
        other => other.clone(),
    }
}

impl Payload {
    /// e.g. `Payload::new("POST", &r.path, Some(&Value::Object(body.clone())))`. Properties whose
    /// names look secret (Password, …Key, Token…) are shown as null and credentials in URIs are
    /// dropped; a body that is secret as a whole needs `Payload::hidden`.
    pub fn new(http_operation: &str, target_uri: &str, json_body: Option<&Value>) -> Self {
        Payload {
            http_operation: http_operation.to_string(),
            target_uri: target_uri.to_string(),
            http_headers: vec![],
            json_body: json_body.map(|b| redact(b).to_string()),
            hidden: false,
        }
    }
    /// A payload that is never shown nor stored (HidePayload true).
    pub fn hidden(http_operation: &str, target_uri: &str) -> Self {
        Payload { hidden: true, ..Payload::new(http_operation, target_uri, None) }
    }
    /// Add a request header (`Name: value`) to show; credentials and cookies are refused.
    pub fn with_header(mut self, header: &str) -> Self {
        let name = header.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if ["authorization", "x-auth-token", "cookie", "proxy-authorization"].contains(&name.as_str()) {
            log::warn!("task payload: header {name} is never recorded");
        } else {
            self.http_headers.push(header.to_string());
        }
        self
    }
    fn to_json(&self) -> Value {
        let mut v = json!({
            "HttpOperation": self.http_operation,
            "TargetUri": self.target_uri,
            "HttpHeaders": self.http_headers,
        });
        if let Some(b) = &self.json_body {
            v["JsonBody"] = json!(b);
        }
        v
    }
}

/// The response a finished task's monitor gives when the task chose one (`complete_with`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Final {
    status: u16,
    #[serde(default)]
    body: Option<Value>,
}

/// One task as stored in `STATE/tasks/<id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    owner: String,
    state: TaskState,
    /// TaskStatus: set only once the task is over.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    percent: u8,
    start: String,
    #[serde(default)]
    end: Option<String>,
    /// Message objects, as shown.
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default)]
    created_resources: Vec<String>,
    #[serde(default)]
    cancellable: bool,
    #[serde(default)]
    cancel_requested: bool,
    #[serde(default)]
    result: Option<Final>,
}

struct Live {
    rec: Record,
    /// Bumped by every change that is to be written.
    version: u64,
    last_persist: Option<Instant>,
    last_progress_event: Option<Instant>,
}

#[derive(Default)]
struct Io {
    /// The version on disk.
    written: u64,
    /// The task was deleted: nothing may write its file again.
    removed: bool,
}

struct Entry {
    id: u64,
    live: Mutex<Live>,
    io: Mutex<Io>,
}

impl Entry {
    fn new(rec: Record) -> Self {
        Entry { id: rec.id, live: Mutex::new(Live { rec, version: 0, last_persist: None, last_progress_event: None }), io: Mutex::new(Io::default()) }
    }
    fn is_final(&self) -> bool {
        lock(&self.live).rec.state.is_final()
    }
}

/// A poisoned lock (a worker panicked while holding it) still holds consistent data here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn file_name(id: u64) -> String {
    format!("{id}.json")
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "Critical" => 2,
        "Warning" => 1,
        _ => 0,
    }
}

/// The worst MessageSeverity of a task's messages (`OK` for none), as TaskStatus wants it.
fn worst(messages: &[Value]) -> &'static str {
    match messages.iter().map(|m| severity_rank(m["MessageSeverity"].as_str().unwrap_or("OK"))).max().unwrap_or(0) {
        2 => "Critical",
        1 => "Warning",
        _ => "OK",
    }
}

fn push_message(rec: &mut Record, m: Value) {
    if rec.messages.len() >= MAX_MESSAGES {
        rec.messages.remove(1);
    }
    rec.messages.push(m);
}

fn task_json(r: &Record) -> Value {
    let hidden = r.payload.as_ref().map_or(false, |p| p.hidden);
    let mut v = json!({
        "@odata.id": task_uri(r.id),
        "@odata.type": types::TASK.odata_type(),
        "Id": r.id.to_string(),
        "Name": r.name,
        "TaskState": r.state,
        "StartTime": r.start,
        "PercentComplete": r.percent,
        "Messages": r.messages,
        "TaskMonitor": monitor_uri(r.id),
        "HidePayload": hidden,
    });
    if let Some(s) = &r.status {
        v["TaskStatus"] = json!(s);
    }
    if let Some(e) = &r.end {
        v["EndTime"] = json!(e);
    }
    if let Some(p) = r.payload.as_ref().filter(|p| !p.hidden) {
        v["Payload"] = p.to_json();
    }
    if !r.created_resources.is_empty() {
        v["Links"] = json!({
            "CreatedResources": r.created_resources.iter().map(|u| json!({ "@odata.id": u })).collect::<Vec<_>>(),
            "CreatedResources@odata.count": r.created_resources.len(),
        });
    }
    v
}

/// What a task monitor answers.
#[derive(Debug)]
pub enum Monitor {
    /// The task is still at work: `202 Accepted` with the Task.
    Running { task: Value, cancellable: bool },
    /// The operation's final response (a body of `None` is `204 No Content`).
    Done { status: StatusCode, body: Option<Value> },
}

struct Inner {
    dir: StateDir,
    events: Arc<EventBus>,
    tasks: Mutex<BTreeMap<u64, Arc<Entry>>>,
    next: Mutex<u64>,
}

impl Inner {
    /// Write the task's document: always when `force`, otherwise (progress) at most every
    /// PERSIST_EVERY. Writes of one task are serialised and never go back to an older version.
    fn persist(&self, e: &Entry, force: bool) {
        let (snapshot, version) = {
            let mut l = lock(&e.live);
            l.version += 1;
            if !force && l.last_persist.map_or(false, |t| t.elapsed() < PERSIST_EVERY) {
                return;
            }
            l.last_persist = Some(Instant::now());
            (l.rec.clone(), l.version)
        };
        let mut io = lock(&e.io);
        if io.removed || io.written >= version {
            return;
        }
        match self.dir.save(&file_name(e.id), &snapshot) {
            Ok(()) => io.written = version,
            Err(err) => log::error!("task {}: cannot write its state: {err}", e.id),
        }
    }

    fn event(&self, id: u64, m: &Message) {
        self.events.message_event(m, &task_uri(id), types::TASK.name);
    }

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        let n: u64 = id.parse().ok()?;
        if n.to_string() != id {
            return None;
        }
        lock(&self.tasks).get(&n).cloned()
    }

    fn remove_entry(&self, e: &Entry) {
        lock(&self.tasks).remove(&e.id);
        let mut io = lock(&e.io);
        io.removed = true;
        match std::fs::remove_file(self.dir.path(&file_name(e.id))) {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(self.dir.path(".")) {
                    let _ = d.sync_all();
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => log::error!("task {}: cannot remove its state: {err}", e.id),
        }
    }

    /// Remove the oldest finished tasks beyond MAX_FINISHED.
    fn prune(&self) {
        let finished: Vec<Arc<Entry>> = lock(&self.tasks).values().filter(|e| e.is_final()).cloned().collect();
        if finished.len() > MAX_FINISHED {
            for e in &finished[..finished.len() - MAX_FINISHED] {
                log::info!("task {} removed: more than {MAX_FINISHED} finished tasks", e.id);
                self.remove_entry(e);
            }
        }
    }

    /// End a task: its final state, the messages that explain it, and the TaskEvent message that
    /// closes it (in Messages and as an event). False when it had already ended.
    fn finish(&self, e: &Entry, state: TaskState, msgs: Vec<Message>, result: Option<Final>) -> bool {
        debug_assert!(state.is_final());
        let id = e.id.to_string();
        let closing = {
            let mut l = lock(&e.live);
            if l.rec.state.is_final() {
                log::warn!("task {id} already ended as {:?}; {state:?} ignored", l.rec.state);
                return false;
            }
            for m in &msgs {
                push_message(&mut l.rec, m.to_json());
            }
            let def: &'static MessageDef = match state {
                TaskState::Completed if worst(&l.rec.messages) == "OK" => &task_event::TASK_COMPLETED_OK,
                TaskState::Completed => &task_event::TASK_COMPLETED_WARNING,
                TaskState::Exception => &task_event::TASK_ABORTED,
                _ => &task_event::TASK_CANCELLED,
            };
            let closing = Message::task_event(def, &[&id]);
            push_message(&mut l.rec, closing.to_json());
            if state == TaskState::Completed {
                l.rec.percent = 100;
            }
            l.rec.status = Some(worst(&l.rec.messages).to_string());
            l.rec.state = state;
            l.rec.end = Some(now());
            l.rec.result = result;
            closing
        };
        self.persist(e, true);
        for m in &msgs {
            self.event(e.id, m);
        }
        self.event(e.id, &closing);
        log::info!("task {id} ended: {state:?}");
        self.prune();
        true
    }
}

/// The task service's store: every task, running or finished (see the module documentation).
pub struct Tasks {
    inner: Arc<Inner>,
}

impl Tasks {
    /// Load the tasks of `STATE/tasks/`; those still running when keeld stopped end as `Exception`
    /// (or `Cancelled`, when a cancel had been asked for).
    pub fn open(state: &StateDir, events: Arc<EventBus>) -> std::io::Result<Tasks> {
        let dir = StateDir::open(&state.path(DIR))?;
        let mut map = BTreeMap::new();
        for f in std::fs::read_dir(dir.path("."))? {
            let name = f?.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp.") {
                // A write that a crash interrupted; the document it was replacing is intact.
                let _ = std::fs::remove_file(dir.path(&name));
                continue;
            }
            let Some(n) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) else { continue };
            match dir.load::<Record>(&name) {
                Ok(Some(r)) if r.id == n => {
                    map.insert(n, Arc::new(Entry::new(r)));
                }
                Ok(_) => log::warn!("tasks: {name} does not hold task {n}; ignored"),
                Err(e) => log::warn!("tasks: {name} unreadable ({e}); ignored"),
            }
        }
        let stored_next: u64 = dir.load(NEXT_ID).ok().flatten().unwrap_or(1);
        let next = stored_next.max(map.keys().next_back().map_or(1, |m| m + 1));
        let inner = Arc::new(Inner { dir, events, tasks: Mutex::new(BTreeMap::new()), next: Mutex::new(next) });
        let unfinished: Vec<Arc<Entry>> = map.values().filter(|e| !e.is_final()).cloned().collect();
        *lock(&inner.tasks) = map;
        for e in unfinished {
            let cancelled = lock(&e.live).rec.cancel_requested;
            log::warn!("task {} was running when keeld stopped: its work is lost", e.id);
            if cancelled {
                inner.finish(&e, TaskState::Cancelled, vec![], None);
            } else {
                // The registries have no "service restarted" message: ServiceShuttingDown says the
                // operation failed because the service went down.
                inner.finish(&e, TaskState::Exception, vec![Message::base(&base::SERVICE_SHUTTING_DOWN, &[])], None);
            }
        }
        inner.prune();
        Ok(Tasks { inner })
    }

    /// Start a task (TaskState `Running`, a TaskStarted message and event). `owner` is the user
    /// name of the principal that asked for it.
    pub fn start(&self, name: &str, owner: &str, payload: Option<Payload>) -> TaskHandle {
        let id = {
            let mut n = lock(&self.inner.next);
            let id = *n;
            *n += 1;
            if let Err(e) = self.inner.dir.save(NEXT_ID, &*n) {
                log::error!("tasks: cannot write the next task id: {e}");
            }
            id
        };
        let payload = payload.map(|p| if p.hidden { Payload { json_body: None, http_headers: vec![], ..p } } else { p });
        let started = Message::task_event(&task_event::TASK_STARTED, &[&id.to_string()]);
        let rec = Record {
            id,
            name: name.to_string(),
            owner: owner.to_string(),
            state: TaskState::Running,
            status: None,
            percent: 0,
            start: now(),
            end: None,
            messages: vec![started.to_json()],
            payload,
            created_resources: vec![],
            cancellable: false,
            cancel_requested: false,
            result: None,
        };
        let entry = Arc::new(Entry::new(rec));
        lock(&self.inner.tasks).insert(id, entry.clone());
        self.inner.persist(&entry, true);
        self.inner.event(id, &started);
        log::info!("task {id} ({name}) started for {owner}");
        TaskHandle {
            inner: self.inner.clone(),
            entry: entry.clone(),
            id: id.to_string(),
            _guard: Arc::new(Guard { inner: self.inner.clone(), entry }),
        }
    }

    /// Every task's Id, oldest first.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.inner.tasks).keys().map(u64::to_string).collect()
    }

    /// The Task resource.
    pub fn json(&self, id: &str) -> Option<Value> {
        self.inner.entry(id).map(|e| task_json(&lock(&e.live).rec))
    }

    /// (Id, Name) of every task still at work.
    pub fn active(&self) -> Vec<(String, String)> {
        lock(&self.inner.tasks)
            .values()
            .filter_map(|e| {
                let l = lock(&e.live);
                (!l.rec.state.is_final()).then(|| (e.id.to_string(), l.rec.name.clone()))
            })
            .collect()
    }

    /// What the task monitor of `id` answers; `None` when there is no such monitor (no such task,
    /// or a cancelled one: DSP0266 removes the monitor when the task is cancelled).
    pub fn monitor(&self, id: &str) -> Option<Monitor> {
        let e = self.inner.entry(id)?;
        let l = lock(&e.live);
        let r = &l.rec;
        if r.cancel_requested || matches!(r.state, TaskState::Cancelled | TaskState::Killed) {
            return None;
        }
        if !r.state.is_final() {
            return Some(Monitor::Running { task: task_json(r), cancellable: r.cancellable });
        }
        Some(match &r.result {
            Some(f) => Monitor::Done { status: StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK), body: f.body.clone() },
            None => {
                // The Task itself, with its messages also as @Message.ExtendedInfo so that clients
                // which print an operation's outcome (DMTF's redfish_utilities) show it.
                let mut body = task_json(r);
                body["@Message.ExtendedInfo"] = json!(r.messages);
                Monitor::Done { status: StatusCode::OK, body: Some(body) }
            }
        })
    }

    /// Ask a task to stop (DELETE of its monitor). Refused (405) for a task that cannot be
    /// cancelled or is over; the work stops when the task's worker sees `is_cancelled`.
    pub fn cancel(&self, id: &str) -> RfResult<()> {
        let e = self.inner.entry(id).ok_or_else(|| RfError::not_found(&monitor_uri(id)))?;
        {
            let mut l = lock(&e.live);
            if l.rec.cancel_requested {
                return Err(RfError::not_found(&monitor_uri(id)));
            }
            if l.rec.state.is_final() || !l.rec.cancellable {
                return Err(RfError::method_not_allowed("GET, HEAD".into()));
            }
            l.rec.cancel_requested = true;
            l.rec.state = TaskState::Cancelling;
        }
        self.inner.persist(&e, true);
        self.inner.events.resource_event(&resource_event::RESOURCE_CHANGED, &task_uri(id), types::TASK.name, &[]);
        log::info!("task {id}: cancel requested");
        Ok(())
    }

    /// Delete a finished task (409 ResourceInUse while it is at work).
    pub fn remove(&self, id: &str) -> RfResult<()> {
        let e = self.inner.entry(id).ok_or_else(|| RfError::resource_not_found("Task", id))?;
        if !e.is_final() {
            return Err(RfError::new(StatusCode::CONFLICT, Message::base(&base::RESOURCE_IN_USE, &[])));
        }
        self.inner.remove_entry(&e);
        self.inner.event(e.id, &Message::task_event(&task_event::TASK_REMOVED, &[id]));
        log::info!("task {id} removed");
        Ok(())
    }

    /// Delete every finished task (TaskService.DeleteAllCompletedTasks); how many went.
    pub fn remove_finished(&self) -> usize {
        let finished: Vec<Arc<Entry>> = lock(&self.inner.tasks).values().filter(|e| e.is_final()).cloned().collect();
        for e in &finished {
            self.inner.remove_entry(e);
            self.inner.event(e.id, &Message::task_event(&task_event::TASK_REMOVED, &[&e.id.to_string()]));
        }
        finished.len()
    }
}

/// Ends the task as `Exception` when the last handle goes away without ending it (its worker
/// returned early or panicked), so no task stays `Running` for ever.
struct Guard {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.entry.is_final() {
            log::error!("task {} ended without a result", self.entry.id);
            self.inner.finish(&self.entry, TaskState::Exception, vec![Message::base(&base::INTERNAL_ERROR, &[])], None);
        }
    }
}

/// What a task's worker reports through. Cheap to clone; `Send + Sync`. Every call after the task
/// ended is ignored.
#[derive(Clone)]
pub struct TaskHandle {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    id: String,
    _guard: Arc<Guard>,
}

impl TaskHandle {
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `/redfish/v1/TaskService/Tasks/{id}`
    pub fn uri(&self) -> String {
        task_uri(&self.id)
    }
    /// `/redfish/v1/TaskService/TaskMonitors/{id}`
    pub fn monitor_uri(&self) -> String {
        monitor_uri(&self.id)
    }
    pub fn state(&self) -> TaskState {
        lock(&self.entry.live).rec.state
    }
    pub fn percent(&self) -> u8 {
        lock(&self.entry.live).rec.percent
    }
    /// The Task resource as it is now.
    pub fn to_json(&self) -> Value {
        task_json(&lock(&self.entry.live).rec)
    }

    /// PercentComplete (0–100; it only rises: a lower value is ignored). Written to disk at most
    /// a few times a second; a TaskProgressChanged event at most once a second.
    pub fn progress(&self, percent: u8) {
        let percent = percent.min(100);
        let emit = {
            let mut l = lock(&self.entry.live);
            if l.rec.state.is_final() || percent <= l.rec.percent {
                return;
            }
            l.rec.percent = percent;
            let emit = l.last_progress_event.map_or(true, |t| t.elapsed() >= PROGRESS_EVENT_EVERY);
            if emit {
                l.last_progress_event = Some(Instant::now());
            }
            emit
        };
        self.inner.persist(&self.entry, false);
        if emit {
            self.inner.event(self.entry.id, &Message::task_event(&task_event::TASK_PROGRESS_CHANGED, &[&self.id, &percent.to_string()]));
        }
    }

    /// Append a message to the task's Messages (and send it as an event about the task).
    pub fn message(&self, m: Message) {
        {
            let mut l = lock(&self.entry.live);
            if l.rec.state.is_final() {
                return;
            }
            push_message(&mut l.rec, m.to_json());
        }
        self.inner.persist(&self.entry, true);
        self.inner.event(self.entry.id, &m);
    }

    /// Change TaskState. A final state ends the task as `complete`/`fail`/`cancelled` would,
    /// without a message of the caller's.
    pub fn set_state(&self, state: TaskState) {
        if state.is_final() {
            self.inner.finish(&self.entry, state, vec![], None);
            return;
        }
        let prev = {
            let mut l = lock(&self.entry.live);
            if l.rec.state.is_final() || l.rec.state == state {
                return;
            }
            std::mem::replace(&mut l.rec.state, state)
        };
        self.inner.persist(&self.entry, true);
        match (prev, state) {
            (_, TaskState::Suspended) => self.inner.event(self.entry.id, &Message::task_event(&task_event::TASK_PAUSED, &[&self.id])),
            (TaskState::Suspended, TaskState::Running) => self.inner.event(self.entry.id, &Message::task_event(&task_event::TASK_RESUMED, &[&self.id])),
            _ => self.inner.events.resource_event(&resource_event::RESOURCE_CHANGED, &self.uri(), types::TASK.name, &[]),
        }
    }

    /// The work is done: TaskState Completed, PercentComplete 100, TaskStatus OK (Warning when a
    /// message warned). The monitor then answers 200 with the Task.
    pub fn complete(&self, final_message: Option<Message>) {
        self.inner.finish(&self.entry, TaskState::Completed, final_message.into_iter().collect(), None);
    }

    /// As `complete`, but the monitor answers `status` with `body` (`None`: no body, e.g. 204).
    pub fn complete_with(&self, status: StatusCode, body: Option<Value>) {
        self.inner.finish(&self.entry, TaskState::Completed, vec![], Some(Final { status: status.as_u16(), body }));
    }

    /// The work failed: TaskState Exception, TaskStatus Critical, `m` says why.
    pub fn fail(&self, m: Message) {
        self.inner.finish(&self.entry, TaskState::Exception, vec![m], None);
    }

    /// Let clients cancel the task (DELETE of its monitor); the worker must then poll `is_cancelled`.
    pub fn allow_cancel(&self) {
        lock(&self.entry.live).rec.cancellable = true;
        self.inner.persist(&self.entry, true);
    }

    /// Whether a client asked to cancel the task; the worker stops and calls `cancelled`.
    pub fn is_cancelled(&self) -> bool {
        lock(&self.entry.live).rec.cancel_requested
    }

    /// The worker stopped on request: TaskState Cancelled.
    pub fn cancelled(&self) {
        self.inner.finish(&self.entry, TaskState::Cancelled, vec![], None);
    }

    /// A resource (not a collection) the operation created (Task `Links.CreatedResources`).
    pub fn created(&self, uri: &str) {
        {
            let mut l = lock(&self.entry.live);
            if l.rec.state.is_final() {
                return;
            }
            l.rec.created_resources.push(uri.to_string());
        }
        self.inner.persist(&self.entry, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::update;

    fn dir() -> StateDir {
        StateDir::open(&std::env::temp_dir().join(format!("keel-tasks-{}", uuid::Uuid::new_v4()))).unwrap()
    }
    fn open(d: &StateDir) -> (Tasks, Arc<EventBus>) {
        let bus = Arc::new(EventBus::open(d.clone()).unwrap());
        (Tasks::open(d, bus.clone()).unwrap(), bus)
    }
    fn on_disk(d: &StateDir, id: &str) -> Value {
        serde_json::from_slice(&std::fs::read(d.path(&format!("tasks/{id}.json"))).unwrap()).unwrap()
    }
    fn ids_of(bus: &EventBus) -> Vec<String> {
        bus.replay_after(0).iter().map(|e| e.message_id.clone()).collect()
    }

    #[test]
    fn a_task_runs_and_completes() {
        let d = dir();
        let (tasks, bus) = open(&d);
        let t = tasks.start("Test", "admin", Some(Payload::new("POST", "/redfish/v1/X/Actions/X.Do", Some(&json!({"A": 1})))));
        assert_eq!(t.uri(), format!("/redfish/v1/TaskService/Tasks/{}", t.id()));
        assert_eq!(t.monitor_uri(), format!("/redfish/v1/TaskService/TaskMonitors/{}", t.id()));
        let j = tasks.json(t.id()).unwrap();
        assert_eq!(j["TaskState"], "Running");
        assert_eq!(j["@odata.type"], "#Task.v1_7_4.Task");
        assert!(j.get("TaskStatus").is_none() && j.get("EndTime").is_none(), "{j}");
        assert_eq!(j["Payload"]["JsonBody"], "{\"A\":1}");
        assert_eq!(j["HidePayload"], false);
        assert!(matches!(tasks.monitor(t.id()), Some(Monitor::Running { cancellable: false, .. })));
        t.progress(40);
        t.progress(30); // never goes back
        assert_eq!(t.percent(), 40);
        t.message(Message::update(&update::TRANSFERRING_TO_COMPONENT, &["b.bundle", "slot B"]));
        t.complete(Some(Message::update(&update::UPDATE_SUCCESSFUL, &["slot B", "b.bundle"])));
        let j = tasks.json(t.id()).unwrap();
        assert_eq!((j["TaskState"].as_str(), j["TaskStatus"].as_str(), j["PercentComplete"].as_u64()), (Some("Completed"), Some("OK"), Some(100)));
        assert!(j["EndTime"].is_string());
        let ids: Vec<&str> = j["Messages"].as_array().unwrap().iter().map(|m| m["MessageId"].as_str().unwrap()).collect();
        assert_eq!(ids, ["TaskEvent.1.0.TaskStarted", "Update.1.3.TransferringToComponent", "Update.1.3.UpdateSuccessful", "TaskEvent.1.0.TaskCompletedOK"]);
        assert_eq!(j["Messages"][1]["Message"], "Image 'b.bundle' is being transferred to 'slot B'.");
        // Calls after the end change nothing.
        t.progress(50);
        t.fail(Message::base(&base::INTERNAL_ERROR, &[]));
        assert_eq!(tasks.json(t.id()).unwrap(), j);
        match tasks.monitor(t.id()) {
            Some(Monitor::Done { status, body: Some(b) }) => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(b["TaskState"], "Completed");
                assert_eq!(b["@Message.ExtendedInfo"], j["Messages"]);
            }
            other => panic!("{other:?}"),
        }
        // On disk as shown.
        assert_eq!(on_disk(&d, t.id())["state"], "Completed");
        let ev = ids_of(&bus);
        assert_eq!(ev, ["TaskEvent.1.0.TaskStarted", "TaskEvent.1.0.TaskProgressChanged", "Update.1.3.TransferringToComponent", "Update.1.3.UpdateSuccessful", "TaskEvent.1.0.TaskCompletedOK"]);
        let last = bus.replay_after(0).last().unwrap().clone();
        assert_eq!(last.origin, t.uri());
        assert_eq!(last.resource_type, "Task");
        assert_eq!(last.record["OriginOfCondition"]["@odata.id"], t.uri());
    }

    #[test]
    fn failure_and_warning_set_task_status() {
        let d = dir();
        let (tasks, bus) = open(&d);
        let a = tasks.start("A", "admin", None);
        a.fail(Message::update(&update::VERIFICATION_FAILED, &["x", "slot B"]));
        let j = tasks.json(a.id()).unwrap();
        assert_eq!((j["TaskState"].as_str(), j["TaskStatus"].as_str()), (Some("Exception"), Some("Critical")));
        assert!(matches!(tasks.monitor(a.id()), Some(Monitor::Done { status: StatusCode::OK, .. })));
        let b = tasks.start("B", "admin", None);
        b.message(Message::update(&update::UPDATE_NOT_APPLICABLE, &["x", "y"]));
        b.complete(None);
        let j = tasks.json(b.id()).unwrap();
        assert_eq!((j["TaskState"].as_str(), j["TaskStatus"].as_str()), (Some("Completed"), Some("Warning")));
        assert!(ids_of(&bus).contains(&"TaskEvent.1.0.TaskAborted".to_string()));
        assert!(ids_of(&bus).contains(&"TaskEvent.1.0.TaskCompletedWarning".to_string()));
        let c = tasks.start("C", "admin", None);
        c.complete_with(StatusCode::NO_CONTENT, None);
        assert!(matches!(tasks.monitor(c.id()), Some(Monitor::Done { status: StatusCode::NO_CONTENT, body: None })));
    }

    #[test]
    fn running_tasks_end_as_exception_after_a_restart() {
        let d = dir();
        let (id, done) = {
            let (tasks, _) = open(&d);
            let t = tasks.start("Update", "admin", None);
            t.progress(10);
            t.message(Message::update(&update::TRANSFERRING_TO_COMPONENT, &["b", "slot B"]));
            let done = tasks.start("Done", "admin", None);
            done.complete(None);
            let id = t.id().to_string();
            // keeld dies: nothing of the worker runs any more.
            std::mem::forget(t);
            (id, done.id().to_string())
        };
        let (tasks, bus) = open(&d);
        let j = tasks.json(&id).unwrap();
        assert_eq!((j["TaskState"].as_str(), j["TaskStatus"].as_str()), (Some("Exception"), Some("Critical")), "{j}");
        assert_eq!(j["PercentComplete"], 10);
        let ids: Vec<&str> = j["Messages"].as_array().unwrap().iter().map(|m| m["MessageId"].as_str().unwrap()).collect();
        assert_eq!(ids, ["TaskEvent.1.0.TaskStarted", "Update.1.3.TransferringToComponent", "Base.1.22.ServiceShuttingDown", "TaskEvent.1.0.TaskAborted"]);
        assert_eq!(on_disk(&d, &id)["state"], "Exception");
        assert_eq!(tasks.json(&done).unwrap()["TaskState"], "Completed");
        assert_eq!(ids_of(&bus), ["Base.1.22.ServiceShuttingDown", "TaskEvent.1.0.TaskAborted"]);
        // Ids are never reused, even after the newest task is deleted.
        tasks.remove(&done).unwrap();
        drop(tasks);
        let (tasks, _) = open(&d);
        let t = tasks.start("Next", "admin", None);
        assert!(t.id().parse::<u64>().unwrap() > done.parse::<u64>().unwrap());
    }

    #[test]
    fn a_dropped_handle_ends_the_task() {
        let d = dir();
        let (tasks, _) = open(&d);
        let t = tasks.start("Worker", "admin", None);
        let id = t.id().to_string();
        let t2 = t.clone();
        drop(t);
        assert_eq!(tasks.json(&id).unwrap()["TaskState"], "Running");
        std::thread::spawn(move || {
            let _t = t2;
            panic!("worker panics");
        })
        .join()
        .unwrap_err();
        let j = tasks.json(&id).unwrap();
        assert_eq!(j["TaskState"], "Exception");
        assert!(j["Messages"].as_array().unwrap().iter().any(|m| m["MessageId"] == "Base.1.22.InternalError"));
    }

    #[test]
    fn delete_rules_and_cancel() {
        let d = dir();
        let (tasks, bus) = open(&d);
        let t = tasks.start("Long", "admin", None);
        let e = tasks.remove(t.id()).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.messages[0].id(), "Base.1.22.ResourceInUse");
        assert_eq!(tasks.cancel(t.id()).unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        t.allow_cancel();
        assert!(!t.is_cancelled());
        tasks.cancel(t.id()).unwrap();
        assert!(t.is_cancelled());
        assert_eq!(t.state(), TaskState::Cancelling);
        assert!(tasks.monitor(t.id()).is_none(), "the monitor goes with the cancel");
        t.cancelled();
        let j = tasks.json(t.id()).unwrap();
        assert_eq!((j["TaskState"].as_str(), j["TaskStatus"].as_str()), (Some("Cancelled"), Some("Warning")));
        tasks.remove(t.id()).unwrap();
        assert!(tasks.json(t.id()).is_none());
        assert!(!d.path(&format!("tasks/{}.json", t.id())).exists());
        assert_eq!(tasks.remove(t.id()).unwrap_err().status, StatusCode::NOT_FOUND);
        assert!(ids_of(&bus).ends_with(&["TaskEvent.1.0.TaskCancelled".to_string(), "TaskEvent.1.0.TaskRemoved".to_string()]));
        // Ids are canonical numbers.
        let u = tasks.start("U", "admin", None);
        assert!(tasks.json(&format!("0{}", u.id())).is_none());
        assert!(tasks.json(&format!("+{}", u.id())).is_none());
    }

    #[test]
    fn oldest_finished_tasks_are_pruned() {
        let d = dir();
        let (tasks, _) = open(&d);
        let running = tasks.start("Running", "admin", None);
        let first: Vec<String> = (0..MAX_FINISHED + 5)
            .map(|i| {
                let t = tasks.start(&format!("T{i}"), "admin", None);
                t.complete(None);
                t.id().to_string()
            })
            .collect();
        let ids = tasks.ids();
        assert_eq!(ids.len(), MAX_FINISHED + 1);
        assert!(ids.contains(&running.id().to_string()));
        for gone in &first[..5] {
            assert!(tasks.json(gone).is_none());
            assert!(!d.path(&format!("tasks/{gone}.json")).exists());
        }
        assert!(tasks.json(&first[5]).is_some());
        assert_eq!(tasks.remove_finished(), MAX_FINISHED);
        assert_eq!(tasks.ids(), [running.id().to_string()]);
    }

    #[test]
    fn progress_is_throttled_but_state_changes_are_written_at_once() {
        let d = dir();
        let (tasks, bus) = open(&d);
        let t = tasks.start("P", "admin", None);
        for p in 1..=50 {
            t.progress(p);
        }
        assert_eq!(t.percent(), 50);
        let progress_events = ids_of(&bus).iter().filter(|m| m.ends_with("TaskProgressChanged")).count();
        assert_eq!(progress_events, 1, "one progress event per second at most");
        assert!(on_disk(&d, t.id())["percent"].as_u64().unwrap() < 50, "progress is not written on every step");
        t.set_state(TaskState::Pending);
        assert_eq!(on_disk(&d, t.id())["state"], "Pending");
        assert_eq!(on_disk(&d, t.id())["percent"], 50);
        std::thread::sleep(PROGRESS_EVENT_EVERY);
        t.set_state(TaskState::Running);
        t.progress(60);
        let ev = ids_of(&bus);
        assert_eq!(ev.iter().filter(|m| m.ends_with("TaskProgressChanged")).count(), 2);
        let last = bus.replay_after(0).last().unwrap().clone();
        assert_eq!(last.record["MessageArgs"], json!([t.id(), "60"]));
        assert_eq!(last.record["Message"], format!("The task with Id '{}' has changed to progress 60 percent complete.", t.id()));
    }

    #[test]
    fn hidden_payload_is_neither_shown_nor_stored() {
        let d = dir();
        let (tasks, _) = open(&d);
        let mut p = Payload::hidden("POST", "/redfish/v1/Managers/keel/Actions/Oem/X");
        p.json_body = Some("{\"RecoveryKey\":\"secret-key-123456\"}".into());
        let t = tasks.start("Secret", "admin", Some(p.with_header("Authorization: Basic Zm9vOmJhcg==")));
        let j = tasks.json(t.id()).unwrap();
        assert_eq!(j["HidePayload"], true);
        assert!(j.get("Payload").is_none());
        let raw = std::fs::read_to_string(d.path(&format!("tasks/{}.json", t.id()))).unwrap();
        assert!(!raw.contains("secret-key") && !raw.contains("Zm9v"), "{raw}");
        let shown = Payload::new("POST", "/x", None).with_header("X-Auth-Token: abc").with_header("Content-Type: application/json");
        assert_eq!(shown.http_headers, ["Content-Type: application/json"]);
    }

    #[test]
    fn shown_payloads_leave_secrets_out() {
        let body = json!({
            "ImageURI": "https://user:pa55@updates.example/b.bundle?x=1",
            "Username": "user",
            "Password": "pa55",
            "Targets": ["/redfish/v1/UpdateService/FirmwareInventory/usr"],
            "Oem": { "Keel": { "RecoveryKeys": ["abcdefghijklmnop"], "AllowDowngrade": true } },
            "Plain": "https://updates.example/a@b",
        });
        let p = Payload::new("POST", "/x", Some(&body));
        let shown: Value = serde_json::from_str(p.json_body.as_deref().unwrap()).unwrap();
        assert_eq!(shown["ImageURI"], "https://REDACTED@updates.example/b.bundle?x=1");
        assert_eq!(shown["Username"], "user");
        assert_eq!(shown["Password"], Value::Null);
        assert_eq!(shown["Targets"], body["Targets"]);
        assert_eq!(shown["Oem"]["Keel"], json!({ "RecoveryKeys": null, "AllowDowngrade": true }));
        assert_eq!(shown["Plain"], "https://updates.example/a@b");
        assert!(!p.json_body.unwrap().contains("pa55"));
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<TaskHandle>();
        send_sync::<Tasks>();
    }
}
