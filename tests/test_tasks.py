"""TaskService against a real keeld: tasks kept across restarts, the Task and TaskService resources,
their privileges and DELETE rules, task monitors of finished tasks, task events on SSE and push
subscriptions, and the Service Validator with tasks present.

These tests leave in the state directory what a keeld that died during an operation leaves there
(a task document still `Running`), and what a finished operation leaves (a `Completed` one); keeld
must take both over at start. Tasks made by real actions (updates: 202, monitors, progress, events)
are tested in tests/test_update.py; cancelling, through the dispatcher itself, in
service/tests/tasks_http.rs.
"""
import json
import time

import pytest

from conftest import ADMIN, Keeld, run_service_validator
from test_events import GRACE, Receiver, SSEClient, about, first, is_event, origin, subscribe

TS = "/redfish/v1/TaskService"
TASKS = TS + "/Tasks"
MONITORS = TS + "/TaskMonitors"
DELETE_ALL = TS + "/Actions/TaskService.DeleteAllCompletedTasks"
PASSWORD = "Tasks-Test-Pass1"


def message(mid, text, args, severity="OK"):
    return {"@odata.type": "#Message.v1_3_0.Message", "MessageId": mid, "Message": text,
            "MessageArgs": args, "MessageSeverity": severity, "Resolution": "None."}


def seed_task(state_dir, task_id, state, **extra):
    """Write a task document as keeld keeps it in STATE/tasks/."""
    d = state_dir / "tasks"
    d.mkdir(parents=True, exist_ok=True)
    rec = {
        "id": task_id, "name": f"Update {task_id}", "owner": "admin", "state": state, "percent": 0,
        "start": "2025-01-02T03:04:05Z",
        "messages": [message("TaskEvent.1.0.TaskStarted", f"The task with Id '{task_id}' has started.", [str(task_id)])],
        "payload": {"http_operation": "POST", "target_uri": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                    "http_headers": ["Content-Type: application/json"],
                    "json_body": json.dumps({"ImageURI": "https://updates.invalid/keel_2.bundle"})},
    }
    rec.update(extra)
    (d / f"{task_id}.json").write_text(json.dumps(rec))
    return rec


def seeded_keeld(tmp_path):
    """keeld started on a state directory holding task 7 (its keeld died while it ran, at 40%)
    and task 3 (completed)."""
    state = tmp_path / "state"
    seed_task(state, 7, "Running", percent=40, messages=[
        message("TaskEvent.1.0.TaskStarted", "The task with Id '7' has started.", ["7"]),
        message("Update.1.3.TransferringToComponent", "Image 'keel_2.bundle' is being transferred to 'usr-B'.",
                ["keel_2.bundle", "usr-B"]),
    ])
    seed_task(state, 3, "Completed", percent=100, status="OK", end="2025-01-02T03:09:00Z",
              created_resources=["/redfish/v1/AccountService/Accounts/1"],
              messages=[
                  message("TaskEvent.1.0.TaskStarted", "The task with Id '3' has started.", ["3"]),
                  message("Update.1.3.UpdateSuccessful", "Device 'usr-B' successfully updated with image 'keel_2.bundle'.",
                          ["usr-B", "keel_2.bundle"]),
                  message("TaskEvent.1.0.TaskCompletedOK", "The task with Id '3' has completed.", ["3"]),
              ])
    return Keeld(state).start()


@pytest.fixture
def k(tmp_path):
    keeld = seeded_keeld(tmp_path)
    yield keeld
    keeld.stop()


def ids(messages):
    return [m["MessageId"] for m in messages]


def error_ids(r):
    return [m["MessageId"] for m in r.json()["error"]["@Message.ExtendedInfo"]]


def test_a_task_running_when_keeld_died_ends_as_exception(k):
    a = k.admin()
    t = a.get(k.url + TASKS + "/7").json()
    assert (t["TaskState"], t["TaskStatus"], t["PercentComplete"]) == ("Exception", "Critical", 40), t
    assert ids(t["Messages"]) == ["TaskEvent.1.0.TaskStarted", "Update.1.3.TransferringToComponent",
                                  "Base.1.22.ServiceShuttingDown", "TaskEvent.1.0.TaskAborted"]
    assert t["Messages"][-1]["Message"] == "The task with Id '7' has completed with errors."
    assert t["EndTime"] and t["StartTime"] == "2025-01-02T03:04:05Z"
    assert t["TaskMonitor"] == MONITORS + "/7"
    assert (t["@odata.id"], t["@odata.type"], t["Id"], t["Name"]) == (TASKS + "/7", "#Task.v1_7_4.Task", "7", "Update 7")
    assert t["HidePayload"] is False
    assert t["Payload"] == {"HttpOperation": "POST", "TargetUri": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                            "HttpHeaders": ["Content-Type: application/json"],
                            "JsonBody": json.dumps({"ImageURI": "https://updates.invalid/keel_2.bundle"})}
    # Written back at once: the state directory says so too.
    on_disk = json.loads((k.state_dir / "tasks" / "7.json").read_text())
    assert on_disk["state"] == "Exception"
    # The event went out: a stream that asks for everything since the start replays it.
    with SSEClient(k, headers={"Last-Event-ID": "0"}) as s:
        ev = s.next(is_event("TaskEvent.1.0.TaskAborted", TASKS + "/7"), what="TaskAborted for task 7")
        assert first(ev["data"])["MessageArgs"] == ["7"]
    # A later start (a clean stop, then a crash) finds it finished: nothing changes any more.
    for stop in ("terminate", "kill"):
        if stop == "terminate":
            k.stop()
        else:
            k.proc.kill()
            k.proc.wait()
        k.start()
        assert k.admin().get(k.url + TASKS + "/7").json() == t
    # The completed task was left as it was.
    done = k.admin().get(k.url + TASKS + "/3").json()
    assert (done["TaskState"], done["TaskStatus"], done["PercentComplete"]) == ("Completed", "OK", 100)
    assert done["Links"] == {"CreatedResources": [{"@odata.id": "/redfish/v1/AccountService/Accounts/1"}],
                             "CreatedResources@odata.count": 1}


def test_task_service_collection_and_monitors_of_finished_tasks(k):
    k.create_account("reader", PASSWORD, "ReadOnly")
    reader = k.client("reader", PASSWORD)
    root = reader.get(k.url + "/redfish/v1").json()
    assert root["Tasks"] == {"@odata.id": TS}
    ts = reader.get(k.url + TS)
    assert ts.status_code == 200
    body = ts.json()
    assert body["@odata.type"] == "#TaskService.v1_3_0.TaskService"
    assert (body["ServiceEnabled"], body["CompletedTaskOverWritePolicy"], body["LifeCycleEventOnTaskStateChange"]) == (True, "Oldest", True)
    assert body["Tasks"] == {"@odata.id": TASKS} and body["DateTime"]
    coll = reader.get(k.url + TASKS).json()
    assert coll["@odata.type"] == "#TaskCollection.TaskCollection"
    assert coll["Members"] == [{"@odata.id": TASKS + "/3"}, {"@odata.id": TASKS + "/7"}]
    # A finished task's monitor answers the operation's final response: 200 with the Task.
    m = reader.get(k.url + MONITORS + "/3")
    assert m.status_code == 200, m.text
    assert "Location" not in m.headers and "Retry-After" not in m.headers
    assert m.json()["TaskState"] == "Completed"
    assert ids(m.json()["@Message.ExtendedInfo"]) == ids(m.json()["Messages"])
    for path in (MONITORS + "/99", MONITORS + "/03", TASKS + "/99", TASKS + "/x"):
        r = reader.get(k.url + path)
        assert r.status_code == 404, (path, r.status_code)
    assert error_ids(reader.get(k.url + TASKS + "/99")) == ["Base.1.22.ResourceNotFound"]
    # Without credentials: nothing, not even a monitor.
    for path in (TS, TASKS, TASKS + "/3", MONITORS + "/3"):
        assert k.client().get(k.url + path).status_code == 401, path


def test_deleting_tasks_needs_configure_manager_and_lasts(k):
    k.create_account("reader", PASSWORD, "ReadOnly")
    k.create_account("operator", PASSWORD, "Operator")
    for user in ("reader", "operator"):
        c = k.client(user, PASSWORD)
        for method, path in (("DELETE", TASKS + "/3"), ("DELETE", MONITORS + "/3"), ("POST", DELETE_ALL)):
            r = c.request(method, k.url + path, json={} if method == "POST" else None)
            assert r.status_code == 403, (user, method, path, r.status_code, r.text)
            assert error_ids(r) == ["Base.1.22.InsufficientPrivilege"]
    a = k.admin()
    assert len(a.get(k.url + TASKS).json()["Members"]) == 2, "refused requests change nothing"
    # Methods the Task and the collection do not offer.
    r = a.patch(k.url + TASKS + "/3", json={"Name": "x"})
    assert r.status_code == 405 and "DELETE" in r.headers["Allow"]
    assert a.post(k.url + TASKS, json={"Name": "x"}).status_code == 405
    assert a.patch(k.url + TS, json={"ServiceEnabled": False}).status_code == 405
    # A finished task cannot be cancelled: its monitor refuses DELETE.
    r = a.delete(k.url + MONITORS + "/3")
    assert r.status_code == 405 and error_ids(r) == ["Base.1.22.OperationNotAllowed"]
    # Delete one, then the rest through the action.
    assert a.delete(k.url + TASKS + "/3").status_code == 204
    assert a.get(k.url + TASKS + "/3").status_code == 404
    assert a.get(k.url + MONITORS + "/3").status_code == 404
    assert not (k.state_dir / "tasks" / "3.json").exists()
    assert a.delete(k.url + TASKS + "/3").status_code == 404
    r = a.post(k.url + DELETE_ALL, json={"Extra": 1})
    assert r.status_code == 400 and error_ids(r) == ["Base.1.22.ActionParameterUnknown"]
    assert a.get(k.url + TASKS).json()["Members"] == [{"@odata.id": TASKS + "/7"}]
    assert a.post(k.url + DELETE_ALL, json={}).status_code == 204
    assert a.get(k.url + TASKS).json()["Members"] == []
    k.restart()
    assert k.admin().get(k.url + TASKS).json()["Members"] == [], "deleted tasks stay deleted"


def test_task_events_reach_sse_and_push_subscriptions(k):
    rcv = Receiver()
    try:
        tasks_only = subscribe(k, rcv.url("/tasks"), RegistryPrefixes=["TaskEvent"])
        everything = subscribe(k, rcv.url("/all"))
        assert k.get(tasks_only).json()["RegistryPrefixes"] == ["TaskEvent"]
        es = k.get("/redfish/v1/EventService").json()
        assert {"TaskEvent", "Update"} <= set(es["RegistryPrefixes"])
        assert "Task" in es["ResourceTypes"]
        with SSEClient(k, params={"$filter": "RegistryPrefix eq 'TaskEvent'"}) as s:
            assert k.admin().delete(k.url + TASKS + "/3").status_code == 204
            ev = s.next(is_event("TaskEvent.1.0.TaskRemoved", TASKS + "/3"), what="TaskRemoved")
            rec = first(ev["data"])
            assert (rec["Message"], rec["MessageSeverity"], rec["MessageArgs"]) == \
                ("The task with Id '3' was removed.", "Warning", ["3"])
            rcv.wait("/tasks", about("TaskEvent.1.0.TaskRemoved", TASKS + "/3"), what="TaskRemoved pushed")
            rcv.wait("/all", about("ResourceEvent.1.4.ResourceRemoved", TASKS + "/3"), what="ResourceRemoved pushed")
            time.sleep(GRACE)
            assert [first(d["body"])["MessageId"] for d in rcv.got("/tasks")] == ["TaskEvent.1.0.TaskRemoved"]
            assert all(first(e["data"])["MessageId"].startswith("TaskEvent.") for e in s.drain(0.2) + s.seen)
    finally:
        rcv.close()


def test_service_validator_with_tasks(k, tmp_path):
    walked = run_service_validator(k, tmp_path)
    for uri in (TS, TASKS, TASKS + "/3", TASKS + "/7"):
        assert f"Validating {uri}..." in walked, uri
