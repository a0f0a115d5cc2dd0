//! TaskService: the tasks of long-running operations and their task monitors (DSP0266
//! "Asynchronous operations"). The tasks themselves live in `crate::tasks`.
//!
//! A task monitor (`/redfish/v1/TaskService/TaskMonitors/{id}`, the `Location` of an action's
//! `202 Accepted`) is not a Redfish resource: while the task runs a GET answers `202` with
//! `Location` and `Retry-After` and the Task as body; once it is done, the operation's final
//! response (by default `200` with the Task). A DELETE cancels a task that allows it, and the
//! monitor goes away with the cancel.

use super::{collection, link, Reply, Req, Tree};
use crate::messages::RfResult;
use crate::privilege::{CONFIGURE_MANAGER, LOGIN};
use crate::tasks::{monitor_uri, Monitor, RETRY_AFTER_SECS, SERVICE_URI, TASKS_URI};
use crate::types;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

const DELETE_ALL: &str = "/redfish/v1/TaskService/Actions/TaskService.DeleteAllCompletedTasks";

pub fn register(t: &mut Tree) {
    t.add(Tree::route(SERVICE_URI, "TaskService", Some(types::TASK_SERVICE)).get(LOGIN, service));
    t.add(Tree::route(DELETE_ALL, "TaskService", None).action(
        "TaskService.DeleteAllCompletedTasks",
        CONFIGURE_MANAGER,
        &[],
        "Delete every finished task",
        delete_all,
    ));
    t.add(Tree::route(TASKS_URI, "TaskCollection", Some(types::TASK_COLLECTION)).get(LOGIN, list));
    t.add(Tree::route("/redfish/v1/TaskService/Tasks/{TaskId}", "Task", Some(types::TASK)).get(LOGIN, one).delete(CONFIGURE_MANAGER, remove));
    // Polling a monitor is reading the Task; cancelling is deleting it (Privilege Registry, Task).
    t.add(
        Tree::route("/redfish/v1/TaskService/TaskMonitors/{TaskId}", "Task", None)
            .get_raw(LOGIN, "application/json", monitor)
            .delete(CONFIGURE_MANAGER, cancel),
    );
}

async fn service(_: Req) -> RfResult<Value> {
    Ok(json!({
        "Id": "TaskService",
        "Name": "Task Service",
        "Description": "The long-running operations of this host (updates, resets, encryption changes)",
        "ServiceEnabled": true,
        "CompletedTaskOverWritePolicy": "Oldest",
        "LifeCycleEventOnTaskStateChange": true,
        "DateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "Tasks": link(TASKS_URI),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Actions": {
            "#TaskService.DeleteAllCompletedTasks": { "target": DELETE_ALL, "title": "Delete all completed tasks" },
        },
    }))
}

async fn delete_all(r: Req, _: Map<String, Value>) -> RfResult<Reply> {
    let n = r.keel.tasks.remove_finished();
    log::info!("{} deleted {n} finished tasks", r.principal().user);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

async fn list(r: Req) -> RfResult<Value> {
    Ok(collection("Task Collection", r.keel.tasks.ids().iter().map(|id| crate::tasks::task_uri(id))))
}

async fn one(r: Req) -> RfResult<Value> {
    r.keel.tasks.json(r.param(0)).ok_or_else(|| crate::messages::RfError::resource_not_found("Task", r.param(0)))
}

async fn remove(r: Req) -> RfResult<Reply> {
    r.keel.tasks.remove(r.param(0))?;
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

async fn monitor(r: Req) -> RfResult<Reply> {
    let id = r.param(0);
    let json_body = |b: &mut actix_web::HttpResponseBuilder, v: &Value| b.content_type("application/json; charset=utf-8").body(v.to_string());
    Ok(Reply::Raw(match r.keel.tasks.monitor(id).ok_or_else(|| crate::messages::RfError::not_found(&r.path))? {
        Monitor::Running { task, cancellable } => json_body(
            HttpResponse::Accepted()
                .insert_header(("Location", monitor_uri(id)))
                .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
                .insert_header(("Allow", if cancellable { "GET, HEAD, DELETE" } else { "GET, HEAD" })),
            &task,
        ),
        Monitor::Done { status, body: Some(b) } => json_body(&mut HttpResponse::build(status), &b),
        Monitor::Done { status, body: None } => HttpResponse::build(status).finish(),
    }))
}

async fn cancel(r: Req) -> RfResult<Reply> {
    r.keel.tasks.cancel(r.param(0))?;
    log::info!("{} cancelled task {}", r.principal().user, r.param(0));
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
