//! The TaskService over HTTP: a real `Keel` (state directory, event bus, accounts) behind the real
//! dispatcher, driven with actix's test server; tasks are started and advanced through the Rust
//! API the actions use (no action makes a task yet). Covers the DSP0266 task monitor (202 with
//! Location and Retry-After while running, the final response when done, DELETE to cancel), the
//! DELETE rules of Task, the privileges of every route, and task events on the SSE stream.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test, web, App};
use keeld::app::{Config, Keel};
use keeld::messages::{update, Message};
use keeld::tasks::{Payload, TaskHandle};
use keeld::tree::dispatch::{dispatch, Server};
use keeld::tree::{Reply, Tree};
use serde_json::{json, Value};
use std::sync::Arc;

const TASKS: &str = "/redfish/v1/TaskService/Tasks";
const PASSWORD: &str = "Tasks-Test-Pass1";

struct World {
    keel: Arc<Keel>,
    /// X-Auth-Token per role.
    admin: String,
    operator: String,
    readonly: String,
}

fn world() -> World {
    let base = std::env::temp_dir().join(format!("keel-tasks-http-{}", uuid::Uuid::new_v4()));
    let host = base.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let keel = Keel::open(Config { state_dir: base.join("state"), host_root: Some(host), ..Default::default() }).unwrap();
    let token = |user: &str, role: &str| {
        let hash = keel.accounts.hash_password(PASSWORD).unwrap();
        let a = keel.accounts.create(user, hash, role, true, false).unwrap();
        keel.sessions.create(&a, None, None).unwrap().1
    };
    World { admin: token("admin", "Administrator"), operator: token("operator", "Operator"), readonly: token("reader", "ReadOnly"), keel }
}

async fn app(w: &World) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    let srv = web::Data::new(Server { keel: w.keel.clone(), tree: Arc::new(Tree::build()), write_gate: Default::default() });
    test::init_service(App::new().app_data(srv).default_service(web::to(dispatch))).await
}

struct Resp {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn message_id(&self) -> &str {
        self.body["error"]["@Message.ExtendedInfo"][0]["MessageId"].as_str().unwrap_or("")
    }
}

async fn call(app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    let mut req = test::TestRequest::default().method(method.parse().unwrap()).uri(path).insert_header(("X-Auth-Token", token));
    if let Some(b) = body {
        req = req.set_json(b);
    }
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))) };
    Resp { status, headers, body }
}

fn start(w: &World, name: &str) -> TaskHandle {
    w.keel.tasks.start(name, "admin", Some(Payload::new("POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", Some(&json!({ "ImageURI": "https://example.invalid/b.bundle" })))))
}

#[actix_web::test]
async fn the_task_monitor_answers_202_while_running_then_the_final_response() {
    let w = world();
    let app = app(&w).await;
    let t = start(&w, "Update");
    let monitor = t.monitor_uri();

    // What an action answers.
    match Reply::accepted(&t) {
        Reply::Json { status, body, headers } => {
            assert_eq!(status, StatusCode::ACCEPTED);
            assert_eq!(body["Id"], t.id());
            assert_eq!(body["TaskMonitor"], monitor);
            assert!(headers.contains(&("Location", monitor.clone())), "{headers:?}");
            assert!(headers.contains(&("Retry-After", "1".to_string())), "{headers:?}");
        }
        _ => panic!("Reply::accepted is a JSON reply"),
    }

    // Polling, as a reader (Login is enough).
    t.progress(25);
    let r = call(&app, "GET", &monitor, &w.readonly, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.header("Location"), Some(monitor.as_str()));
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert_eq!(r.body["@odata.id"], t.uri());
    assert_eq!((r.body["TaskState"].as_str(), r.body["PercentComplete"].as_u64()), (Some("Running"), Some(25)));
    assert!(r.body.get("TaskStatus").is_none(), "TaskStatus is not set before the task ends");
    let head = call(&app, "HEAD", &monitor, &w.readonly, None).await;
    assert_eq!(head.status, StatusCode::ACCEPTED);

    let r = call(&app, "GET", &t.uri(), &w.readonly, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["TaskMonitor"], monitor);
    assert_eq!(r.body["Payload"]["TargetUri"], "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate");
    assert!(r.header("ETag").is_some());

    // A running task can be neither deleted nor (it does not allow it) cancelled.
    let r = call(&app, "DELETE", &t.uri(), &w.admin, None).await;
    assert_eq!((r.status, r.message_id()), (StatusCode::CONFLICT, "Base.1.22.ResourceInUse"));
    let r = call(&app, "DELETE", &monitor, &w.admin, None).await;
    assert_eq!((r.status, r.message_id()), (StatusCode::METHOD_NOT_ALLOWED, "Base.1.22.OperationNotAllowed"));
    assert_eq!(t.state(), keeld::tasks::TaskState::Running);

    t.message(Message::update(&update::VERIFYING_AT_COMPONENT, &["b.bundle", "slot B"]));
    t.complete(Some(Message::update(&update::UPDATE_SUCCESSFUL, &["slot B", "b.bundle"])));
    let r = call(&app, "GET", &monitor, &w.readonly, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("Location").is_none() && r.header("Retry-After").is_none());
    assert_eq!((r.body["TaskState"].as_str(), r.body["TaskStatus"].as_str(), r.body["PercentComplete"].as_u64()), (Some("Completed"), Some("OK"), Some(100)));
    let info: Vec<&str> = r.body["@Message.ExtendedInfo"].as_array().unwrap().iter().map(|m| m["MessageId"].as_str().unwrap()).collect();
    assert_eq!(info, ["TaskEvent.1.0.TaskStarted", "Update.1.3.VerifyingAtComponent", "Update.1.3.UpdateSuccessful", "TaskEvent.1.0.TaskCompletedOK"]);
    // The monitor keeps answering while the task exists.
    assert_eq!(call(&app, "GET", &monitor, &w.readonly, None).await.status, StatusCode::OK);
    let r = call(&app, "GET", &t.uri(), &w.readonly, None).await;
    assert!(r.body["EndTime"].is_string());
    let id = t.id().to_string();
    drop(t);

    // Deleting a finished task: ConfigureManager only.
    for token in [&w.readonly, &w.operator] {
        let r = call(&app, "DELETE", &format!("{TASKS}/{id}"), token, None).await;
        assert_eq!((r.status, r.message_id()), (StatusCode::FORBIDDEN, "Base.1.22.InsufficientPrivilege"));
    }
    let r = call(&app, "GET", TASKS, &w.readonly, None).await;
    assert_eq!(r.body["Members"], json!([{ "@odata.id": format!("{TASKS}/{id}") }]));
    assert_eq!(call(&app, "DELETE", &format!("{TASKS}/{id}"), &w.admin, None).await.status, StatusCode::NO_CONTENT);
    let r = call(&app, "GET", &format!("{TASKS}/{id}"), &w.admin, None).await;
    assert_eq!((r.status, r.message_id()), (StatusCode::NOT_FOUND, "Base.1.22.ResourceNotFound"));
    assert_eq!(call(&app, "GET", &monitor, &w.admin, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, "GET", TASKS, &w.admin, None).await.body["Members@odata.count"], 0);
}

#[actix_web::test]
async fn a_failed_task_and_a_chosen_final_response() {
    let w = world();
    let app = app(&w).await;
    let t = start(&w, "Update");
    t.progress(60);
    t.fail(Message::update(&update::VERIFICATION_FAILED, &["b.bundle", "slot B"]));
    let r = call(&app, "GET", &t.monitor_uri(), &w.readonly, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((r.body["TaskState"].as_str(), r.body["TaskStatus"].as_str(), r.body["PercentComplete"].as_u64()), (Some("Exception"), Some("Critical"), Some(60)));
    assert!(r.body["@Message.ExtendedInfo"].as_array().unwrap().iter().any(|m| m["MessageId"] == "Update.1.3.VerificationFailed" && m["MessageSeverity"] == "Critical"));

    let t = start(&w, "Reset");
    t.complete_with(StatusCode::NO_CONTENT, None);
    let r = call(&app, "GET", &t.monitor_uri(), &w.readonly, None).await;
    assert_eq!((r.status, &r.body), (StatusCode::NO_CONTENT, &Value::Null));
    let t = start(&w, "Export");
    t.complete_with(StatusCode::OK, Some(json!({ "Hello": "world" })));
    let r = call(&app, "GET", &t.monitor_uri(), &w.readonly, None).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({ "Hello": "world" })));
}

#[actix_web::test]
async fn a_delete_of_the_monitor_cancels_a_task_that_allows_it() {
    let w = world();
    let app = app(&w).await;
    let t = start(&w, "Long");
    t.allow_cancel();
    let monitor = t.monitor_uri();
    assert_eq!(call(&app, "GET", &monitor, &w.readonly, None).await.header("Allow"), Some("GET, HEAD, DELETE"));
    for token in [&w.readonly, &w.operator] {
        let r = call(&app, "DELETE", &monitor, token, None).await;
        assert_eq!((r.status, r.message_id()), (StatusCode::FORBIDDEN, "Base.1.22.InsufficientPrivilege"));
    }
    assert!(!t.is_cancelled());
    assert_eq!(call(&app, "DELETE", &monitor, &w.admin, None).await.status, StatusCode::NO_CONTENT);
    assert!(t.is_cancelled());
    // DSP0266: the monitor is removed when the task is cancelled; the Task shows the cancel.
    assert_eq!(call(&app, "GET", &monitor, &w.admin, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, "DELETE", &monitor, &w.admin, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, "GET", &t.uri(), &w.admin, None).await.body["TaskState"], "Cancelling");
    t.cancelled();
    let r = call(&app, "GET", &t.uri(), &w.admin, None).await;
    assert_eq!((r.body["TaskState"].as_str(), r.body["TaskStatus"].as_str()), (Some("Cancelled"), Some("Warning")));
}

#[actix_web::test]
async fn task_service_root_link_registries_and_delete_all() {
    let w = world();
    let app = app(&w).await;
    let root = call(&app, "GET", "/redfish/v1", &w.readonly, None).await;
    assert_eq!(root.body["Tasks"]["@odata.id"], "/redfish/v1/TaskService");
    let s = call(&app, "GET", "/redfish/v1/TaskService", &w.readonly, None).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["@odata.type"], "#TaskService.v1_3_0.TaskService");
    assert_eq!((s.body["CompletedTaskOverWritePolicy"].as_str(), s.body["LifeCycleEventOnTaskStateChange"].as_bool()), (Some("Oldest"), Some(true)));
    assert_eq!(s.body["Tasks"]["@odata.id"], TASKS);
    let target = s.body["Actions"]["#TaskService.DeleteAllCompletedTasks"]["target"].as_str().unwrap().to_string();

    let running = start(&w, "Running");
    let done = start(&w, "Done");
    done.complete(None);
    for token in [&w.readonly, &w.operator] {
        let r = call(&app, "POST", &target, token, Some(json!({}))).await;
        assert_eq!((r.status, r.message_id()), (StatusCode::FORBIDDEN, "Base.1.22.InsufficientPrivilege"));
    }
    assert_eq!(call(&app, "GET", TASKS, &w.admin, None).await.body["Members@odata.count"], 2);
    let r = call(&app, "POST", &target, &w.admin, Some(json!({ "Bogus": 1 }))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(call(&app, "GET", TASKS, &w.admin, None).await.body["Members@odata.count"], 2, "a refused request changes nothing");
    assert_eq!(call(&app, "POST", &target, &w.admin, Some(json!({}))).await.status, StatusCode::NO_CONTENT);
    let r = call(&app, "GET", TASKS, &w.admin, None).await;
    assert_eq!(r.body["Members"], json!([{ "@odata.id": running.uri() }]));

    // Writes to the service and the collection are not offered.
    assert_eq!(call(&app, "PATCH", "/redfish/v1/TaskService", &w.admin, Some(json!({ "ServiceEnabled": false }))).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(call(&app, "POST", TASKS, &w.admin, Some(json!({ "Name": "x" }))).await.status, StatusCode::METHOD_NOT_ALLOWED);

    let regs = call(&app, "GET", "/redfish/v1/Registries", &w.readonly, None).await;
    let members: Vec<&str> = regs.body["Members"].as_array().unwrap().iter().map(|m| m["@odata.id"].as_str().unwrap()).collect();
    assert!(members.contains(&"/redfish/v1/Registries/TaskEvent") && members.contains(&"/redfish/v1/Registries/Update"), "{members:?}");
    let te = call(&app, "GET", "/redfish/v1/Registries/TaskEvent", &w.readonly, None).await;
    assert_eq!(te.body["Registry"], "TaskEvent.1.0");
    assert_eq!(te.body["Location"][0]["PublicationUri"], "https://redfish.dmtf.org/registries/TaskEvent.1.0.5.json");
    let es = call(&app, "GET", "/redfish/v1/EventService", &w.readonly, None).await;
    assert_eq!(es.body["RegistryPrefixes"], json!(["Base", "ResourceEvent", "TaskEvent", "Update"]));
    assert!(es.body["ResourceTypes"].as_array().unwrap().contains(&json!("Task")));
    // A push subscription may ask for task events only.
    let r = call(&app, "POST", "/redfish/v1/EventService/Subscriptions", &w.admin, Some(json!({
        "Destination": "https://127.0.0.1:9/tasks", "Protocol": "Redfish", "RegistryPrefixes": ["TaskEvent", "Update"], "ResourceTypes": ["Task"],
    }))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// Read SSE frames until `want` MessageIds were all seen (or fail after a deadline).
async fn sse_until(body: &mut actix_web::body::BoxBody, want: &[&str]) -> Vec<Value> {
    let mut seen: Vec<Value> = vec![];
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !want.iter().all(|w| seen.iter().any(|e| e["Events"][0]["MessageId"] == *w)) {
        let chunk = tokio::time::timeout_at(deadline, futures_util::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_next(cx)))
            .await
            .unwrap_or_else(|_| panic!("SSE: {want:?} not all seen; got {seen:?}"))
            .expect("SSE stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                seen.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    seen
}

#[actix_web::test]
async fn the_sse_stream_carries_task_events() {
    let w = world();
    let app = app(&w).await;
    let req = test::TestRequest::get()
        .uri("/redfish/v1/EventService/SSE?$filter=RegistryPrefix%20eq%20'TaskEvent'%20or%20RegistryPrefix%20eq%20'Update'")
        .insert_header(("X-Auth-Token", w.readonly.as_str()))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    let t = start(&w, "Update");
    t.progress(10);
    t.message(Message::update(&update::TRANSFERRING_TO_COMPONENT, &["b.bundle", "slot B"]));
    t.complete(None);
    let id = t.id().to_string();
    drop(t);
    assert_eq!(call(&app, "DELETE", &format!("{TASKS}/{id}"), &w.admin, None).await.status, StatusCode::NO_CONTENT);
    let seen = sse_until(
        &mut body,
        &["TaskEvent.1.0.TaskStarted", "TaskEvent.1.0.TaskProgressChanged", "Update.1.3.TransferringToComponent", "TaskEvent.1.0.TaskCompletedOK", "TaskEvent.1.0.TaskRemoved"],
    )
    .await;
    let ids: Vec<&str> = seen.iter().map(|e| e["Events"][0]["MessageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["TaskEvent.1.0.TaskStarted", "TaskEvent.1.0.TaskProgressChanged", "Update.1.3.TransferringToComponent", "TaskEvent.1.0.TaskCompletedOK", "TaskEvent.1.0.TaskRemoved"], "the filter keeps ResourceEvent out");
    for e in &seen {
        let rec = &e["Events"][0];
        assert_eq!(rec["OriginOfCondition"]["@odata.id"], format!("{TASKS}/{id}"));
        assert_eq!(e["@odata.type"], "#Event.v1_13_0.Event");
    }
    assert_eq!(seen[1]["Events"][0]["MessageArgs"], json!([id, "10"]));
}
