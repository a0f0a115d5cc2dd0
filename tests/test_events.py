"""EventService: the SSE stream and push subscriptions, against a real keeld.

SSE is read by a background thread per stream (requests, stream=True); push deliveries go to a
small HTTP(S) receiver run by the test on 127.0.0.1. Waits poll with generous deadlines; the
only fixed waits are the short grace periods that check that something did *not* arrive, and
they always come after a later event has been seen, so nothing is waited for blindly.
"""
import json
import queue
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import ADMIN

SSE = "/redfish/v1/EventService/SSE"
SUBS = "/redfish/v1/EventService/Subscriptions"
EVENT_SERVICE = "/redfish/v1/EventService"
SUBMIT = "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent"
ACCOUNTS = "/redfish/v1/AccountService/Accounts"
EVENT_TYPE = "#Event.v1_13_0.Event"
CREATED = "ResourceEvent.1.4.ResourceCreated"
CHANGED = "ResourceEvent.1.4.ResourceChanged"
REMOVED = "ResourceEvent.1.4.ResourceRemoved"
TEST_MESSAGE = "ResourceEvent.1.4.TestMessage"
PASSWORD = "Event-Test-Pass1"

WAIT = 20.0   # deadline for something that should happen (loaded 2-core machine)
GRACE = 1.5   # how long we keep listening for something that must not happen


# ------------------------------------------------------------------ helpers


def path_of(uri):
    """Location may be absolute or a path; compare paths."""
    if uri.startswith("http"):
        uri = "/" + uri.split("/", 3)[3]
    return uri


def first(ev):
    """Events[0] of an Event payload."""
    return ev["Events"][0]


def origin(rec):
    o = rec.get("OriginOfCondition")
    return o.get("@odata.id") if isinstance(o, dict) else o


def message_ids(resp):
    try:
        return [m.get("MessageId", "") for m in resp.json()["error"]["@Message.ExtendedInfo"]]
    except Exception:
        return []


def members(k):
    r = k.get(SUBS)
    assert r.status_code == 200, r.text
    return [m["@odata.id"] for m in r.json()["Members"]]


def submit_test_event(k, **body):
    body.setdefault("MessageId", TEST_MESSAGE)
    r = k.admin().post(k.url + SUBMIT, json=body)
    assert r.status_code in (200, 204), (r.status_code, r.text)


def poll(fn, timeout=WAIT, interval=0.1):
    """Call fn until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


class SSEClient:
    """An open SSE stream: events parsed by a reader thread into a queue."""

    def __init__(self, k, auth=ADMIN, params=None, headers=None):
        self.k = k
        before = members(k)
        self.resp = requests.get(k.url + SSE, auth=auth, params=params, headers=headers or {},
                                 stream=True, verify=False, timeout=(WAIT, None))
        self.status = self.resp.status_code
        self.q = queue.Queue()
        self.seen = []
        self.ended = threading.Event()
        self.error = None
        self.thread = None
        self.dest = None
        if self.status == 200:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
            self.dest = new_sse_member(k, before)

    @staticmethod
    def _parse(block):
        ev_id, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "id":
                ev_id = value
            elif field == "data":
                data.append(value)
        if not data:
            return None
        return {"id": ev_id, "data": json.loads("\n".join(data)), "raw": block}

    def _run(self):
        buf = ""
        try:
            for chunk in self.resp.iter_content(chunk_size=None):
                buf += chunk.decode("utf-8")
                buf = buf.replace("\r\n", "\n")
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    ev = self._parse(block)
                    if ev is not None:
                        self.q.put(ev)
        except Exception as e:  # connection torn down
            self.error = e
        finally:
            self.ended.set()
            self.q.put(None)

    def next(self, pred=lambda e: True, timeout=WAIT, what="an event"):
        """The next event satisfying pred (others are kept in self.seen too)."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no SSE event {what} within {timeout}s; got {[e['data'] for e in self.seen]}")
            try:
                ev = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if ev is None:
                self.q.put(None)
                raise AssertionError(f"SSE stream ended while waiting for {what} ({self.error!r}); got {[e['data'] for e in self.seen]}")
            self.seen.append(ev)
            if pred(ev):
                return ev

    def drain(self, seconds):
        """Everything that arrives within `seconds`."""
        out, deadline = [], time.time() + seconds
        while time.time() < deadline:
            try:
                ev = self.q.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if ev is None:
                self.q.put(None)
                break
            self.seen.append(ev)
            out.append(ev)
        return out

    def _socket(self):
        for get in (lambda: self.resp.raw._connection.sock,
                    lambda: self.resp.raw._fp.fp.raw._sock):
            try:
                s = get()
                if s is not None:
                    return s
            except AttributeError:
                pass
        return None

    def abort(self):
        """Drop the TCP connection as a client that goes away would."""
        s = self._socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.resp.close()
        if self.thread:
            self.thread.join(5)

    def close(self):
        """End the stream from the server side (DELETE of its EventDestination), then drop it.
        (A client-side close alone is what test_sse_client_disconnect_removes_destination checks.)"""
        if self.dest and not self.ended.is_set():
            try:
                self.k.admin().delete(self.k.url + self.dest, timeout=WAIT)
            except requests.RequestException:
                pass
            self.ended.wait(5)
        self.abort()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def is_event(mid, uri=None):
    def pred(ev):
        rec = first(ev["data"])
        return rec.get("MessageId") == mid and (uri is None or origin(rec) == uri)
    return pred


def new_sse_member(k, before):
    """The SSE EventDestination that appeared since `before`."""
    extra = [m for m in members(k) if m not in before]
    assert len(extra) == 1, f"expected one new EventDestination for the SSE stream, got {extra}"
    return extra[0]


# ------------------------------------------------------------------ push receiver


@pytest.fixture(scope="session")
def receiver_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("receiver-cert")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Receiver:
    """An event listener: records every POST; paths in `fail_first` answer 500 to the first
    n attempts of each event (by the payload's Id)."""

    def __init__(self, cert=None):
        self.cond = threading.Condition()
        self.attempts = []      # every POST: dict(path, headers, body, status)
        self.deliveries = []    # POSTs answered 200
        self.fail_first = {}
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                raw = self._body()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                path = self.path
                with rec.cond:
                    tries = 1 + sum(1 for a in rec.attempts if a["path"] == path and a["body"].get("Id") == body.get("Id"))
                    status = 500 if tries <= rec.fail_first.get(path, 0) else 200
                    item = {"path": path, "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body, "status": status, "try": tries}
                    rec.attempts.append(item)
                    if status == 200:
                        rec.deliveries.append(item)
                    rec.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            # Handshake in the handler thread, not in the accept loop.
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path="/events"):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def got(self, path=None, pred=lambda d: True):
        with self.cond:
            return [d for d in self.deliveries if (path is None or d["path"] == path) and pred(d)]

    def wait(self, path, pred, timeout=WAIT, what="a delivery"):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                hits = [d for d in self.deliveries if d["path"] == path and pred(d)]
                if hits:
                    return hits[0]
                left = deadline - time.time()
                if left <= 0:
                    seen = [(d["path"], first(d["body"]).get("MessageId") if "Events" in d["body"] else d["body"],
                             origin(first(d["body"])) if "Events" in d["body"] else None) for d in self.deliveries]
                    raise AssertionError(f"no {what} at {path} within {timeout}s; deliveries so far: {seen}")
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def https_receiver(receiver_cert):
    r = Receiver(receiver_cert)
    yield r
    r.close()


@pytest.fixture
def http_receiver():
    r = Receiver()
    yield r
    r.close()


def about(mid, uri=None):
    """Receiver predicate: a delivery whose Events[0] has this MessageId (and origin)."""
    def pred(d):
        evs = d["body"].get("Events") or [{}]
        return evs[0].get("MessageId") == mid and (uri is None or origin(evs[0]) == uri)
    return pred


def subscribe(k, dest, **extra):
    body = {"Destination": dest, "Protocol": "Redfish", "VerifyCertificate": False}
    body.update(extra)
    r = k.admin().post(k.url + SUBS, json=body)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Location"), r.headers
    return path_of(r.headers["Location"])


# ------------------------------------------------------------------ SSE


def test_sse_stream_is_an_event_destination_while_open(keeld):
    before = members(keeld)
    with SSEClient(keeld) as s:
        assert s.status == 200
        assert s.resp.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
        uri = new_sse_member(keeld, before)
        assert uri == s.dest
        r = keeld.get(uri)
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["SubscriptionType"] == "SSE", d
        assert d.get("@odata.id") == uri
        assert d.get("@odata.type", "").startswith("#EventDestination."), d


def test_sse_account_lifecycle_events(keeld):
    with SSEClient(keeld) as s:
        acct = path_of(keeld.create_account("evuser", PASSWORD))
        ev = s.next(is_event(CREATED, acct), what=f"ResourceCreated for {acct}")
        assert ev["data"]["@odata.type"] == EVENT_TYPE
        assert first(ev["data"])["OriginOfCondition"] == {"@odata.id": acct}

        r = keeld.admin().patch(keeld.url + acct, json={"RoleId": "Operator"})
        assert r.status_code in (200, 204), r.text
        s.next(is_event(CHANGED, acct), what=f"ResourceChanged for {acct}")

        r = keeld.admin().delete(keeld.url + acct)
        assert r.status_code in (200, 204), r.text
        s.next(is_event(REMOVED, acct), what=f"ResourceRemoved for {acct}")

        # Every frame: a unique id line and an Event payload.
        ids = [e["id"] for e in s.seen]
        assert all(ids), f"SSE events without an id: line: {[e['raw'] for e in s.seen]}"
        assert len(set(ids)) == len(ids), f"SSE ids repeat: {ids}"
        for e in s.seen:
            assert e["data"]["@odata.type"] == EVENT_TYPE, e["raw"]
            assert isinstance(e["data"]["Events"], list) and e["data"]["Events"], e["raw"]


def test_sse_session_login_and_logout_events(keeld):
    with SSEClient(keeld) as s:
        sess, uri = keeld.login(*ADMIN)
        uri = path_of(uri)
        s.next(is_event(CREATED, uri), what=f"ResourceCreated for session {uri}")
        r = sess.delete(keeld.url + uri)
        assert r.status_code in (200, 204), r.text
        s.next(is_event(REMOVED, uri), what=f"ResourceRemoved for session {uri}")


def test_sse_filter_delivers_only_matching_events(keeld):
    params = {"$filter": f"MessageId eq '{REMOVED}'"}
    with SSEClient(keeld, params=params) as s:
        assert s.status == 200
        a = path_of(keeld.create_account("filt1", PASSWORD))
        b = path_of(keeld.create_account("filt2", PASSWORD))
        keeld.admin().patch(keeld.url + a, json={"RoleId": "Operator"})
        submit_test_event(keeld)
        assert keeld.admin().delete(keeld.url + a).status_code in (200, 204)
        assert keeld.admin().delete(keeld.url + b).status_code in (200, 204)
        s.next(is_event(REMOVED, b), what=f"ResourceRemoved for {b}")
        got = [(first(e["data"])["MessageId"], origin(first(e["data"]))) for e in s.seen]
        assert got == [(REMOVED, a), (REMOVED, b)], f"$filter let through: {got}"


def test_sse_bad_filter_is_rejected(keeld):
    r = keeld.admin().get(keeld.url + SSE, params={"$filter": "MessageId eq"}, stream=True, timeout=WAIT)
    try:
        assert r.status_code == 400, r.status_code
    finally:
        r.close()


def test_sse_last_event_id_replays_later_events_only(keeld):
    a0 = path_of(keeld.create_account("replay0", PASSWORD))  # before any stream: never replayed
    with SSEClient(keeld) as s:
        uris = [path_of(keeld.create_account(f"replay{i}", PASSWORD)) for i in (1, 2, 3)]
        evs = [s.next(is_event(CREATED, u), what=f"ResourceCreated for {u}") for u in uris]
    ids = [e["id"] for e in evs]
    assert len(set(ids)) == 3, ids

    with SSEClient(keeld, headers={"Last-Event-ID": ids[0]}) as s2:
        assert s2.status == 200
        replayed = [s2.next(timeout=WAIT, what="a replayed event") for _ in range(2)]
        assert [e["id"] for e in replayed] == ids[1:], \
            f"replay after {ids[0]} should be {ids[1:]}, got {[(e['id'], first(e['data'])) for e in replayed]}"
        assert [origin(first(e["data"])) for e in replayed] == uris[1:]
        # Then live events, with nothing replayed twice and nothing older.
        submit_test_event(keeld)
        live = s2.next(is_event(TEST_MESSAGE), what="the live test event")
        seen_ids = [e["id"] for e in s2.seen]
        assert len(set(seen_ids)) == len(seen_ids), seen_ids
        assert ids[0] not in seen_ids
        assert live["id"] not in ids
        assert all(origin(first(e["data"])) not in (a0, uris[0]) for e in s2.seen), [e["data"] for e in s2.seen]


def test_sse_delete_of_destination_closes_stream(keeld):
    with SSEClient(keeld) as s:
        uri = s.dest
        r = keeld.admin().delete(keeld.url + uri)
        assert r.status_code == 204, r.text
        assert s.ended.wait(WAIT), "DELETE of the SSE EventDestination did not end the stream"
        assert keeld.get(uri).status_code == 404
        assert uri not in members(keeld)


def test_sse_client_disconnect_removes_destination(keeld):
    s = SSEClient(keeld)
    uri = s.dest
    s.abort()
    try:
        gone = poll(lambda: uri not in members(keeld), timeout=5)
        assert gone, f"{uri} still listed 5 s after the SSE client disconnected"
        assert keeld.get(uri).status_code == 404
    finally:
        keeld.admin().delete(keeld.url + uri)  # spare the teardown a stuck stream if it is still there


def test_shutdown_is_prompt_with_an_open_sse_stream(keeld):
    """SIGTERM (and so every restart) must not wait on a stream that never ends by itself."""
    s = SSEClient(keeld)
    try:
        t0 = time.time()
        keeld.stop()
        took = time.time() - t0
        assert took < 3, f"keeld took {took:.1f}s to stop with an SSE stream open"
        assert s.ended.wait(5), "the SSE stream was not ended by the shutdown"
    finally:
        s.abort()


def test_sse_requires_authentication(keeld):
    r = requests.get(keeld.url + SSE, verify=False, stream=True, timeout=WAIT)
    try:
        assert r.status_code == 401
        assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic")
    finally:
        r.close()
    r = requests.get(keeld.url + SSE, auth=("admin", "wrong-password"), verify=False, stream=True, timeout=WAIT)
    try:
        assert r.status_code == 401
    finally:
        r.close()
    assert members(keeld) == [], "a refused SSE request left an EventDestination behind"


def test_sse_submit_test_event_reaches_stream(keeld):
    with SSEClient(keeld) as s:
        submit_test_event(keeld, MessageId=TEST_MESSAGE, MessageArgs=["a1"], Message="hello from the test")
        ev = s.next(is_event(TEST_MESSAGE), what="the submitted test event")
        rec = first(ev["data"])
        assert rec["Message"] == "hello from the test"
        assert rec["MessageArgs"] == ["a1"]
        assert ev["data"]["@odata.type"] == EVENT_TYPE


def test_sse_destination_of_another_user_cannot_be_deleted(keeld):
    keeld.create_account("ssero1", PASSWORD, "ReadOnly")
    keeld.create_account("ssero2", PASSWORD, "ReadOnly")
    with SSEClient(keeld, auth=("ssero1", PASSWORD)) as s:
        assert s.status == 200
        uri = s.dest
        r = keeld.client("ssero2", PASSWORD).delete(keeld.url + uri)
        assert r.status_code == 403, (r.status_code, r.text)
        assert uri in members(keeld)
        assert not s.ended.is_set()
        r = keeld.client("ssero1", PASSWORD).delete(keeld.url + uri)
        assert r.status_code == 204, (r.status_code, r.text)
        assert s.ended.wait(WAIT)


# ------------------------------------------------------------------ push subscriptions


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_push_subscription_delivers_events(keeld, scheme, receiver_cert):
    rcv = Receiver(receiver_cert if scheme == "https" else None)
    try:
        body = {"Destination": rcv.url("/events"), "Protocol": "Redfish", "Context": "ctx1",
                "VerifyCertificate": False, "HttpHeaders": {"X-Test": "abc"}}
        r = keeld.admin().post(keeld.url + SUBS, json=body)
        assert r.status_code == 201, r.text
        loc = path_of(r.headers["Location"])
        assert "abc" not in r.text, "HttpHeaders values must not be echoed"

        g = keeld.get(loc)
        assert g.status_code == 200, g.text
        sub = g.json()
        assert sub["Context"] == "ctx1"
        assert sub["Destination"] == rcv.url("/events")
        assert sub["Protocol"] == "Redfish"
        assert sub.get("HttpHeaders") in ([], None), f"HttpHeaders is write-only, GET showed {sub.get('HttpHeaders')}"
        assert "abc" not in g.text
        assert loc in members(keeld)

        acct = path_of(keeld.create_account("pushuser", PASSWORD))
        d = rcv.wait("/events", about(CREATED, acct), what=f"ResourceCreated for {acct}")
        assert d["body"]["@odata.type"] == EVENT_TYPE
        assert d["body"]["Context"] == "ctx1"
        assert d["headers"].get("x-test") == "abc", d["headers"]
        assert d["headers"].get("content-type", "").startswith("application/json")
        assert first(d["body"])["OriginOfCondition"] == {"@odata.id": acct}
    finally:
        rcv.close()


def test_push_verify_certificate_defaults_to_true(keeld, https_receiver, http_receiver):
    """Without VerifyCertificate: false, a self-signed destination must not get events."""
    r = keeld.admin().post(keeld.url + SUBS, json={"Destination": https_receiver.url("/strict"), "Protocol": "Redfish"})
    assert r.status_code == 201, r.text
    assert keeld.get(path_of(r.headers["Location"])).json().get("VerifyCertificate") is True
    subscribe(keeld, http_receiver.url("/control"))
    acct = path_of(keeld.create_account("verifyuser", PASSWORD))
    http_receiver.wait("/control", about(CREATED, acct))
    time.sleep(GRACE)
    assert https_receiver.got("/strict") == [], "event delivered to an untrusted certificate"


def test_push_filters_restrict_deliveries(keeld, http_receiver):
    rcv = http_receiver
    a1 = path_of(keeld.create_account("filtacct1", PASSWORD))
    a2 = path_of(keeld.create_account("filtacct2", PASSWORD))
    subscribe(keeld, rcv.url("/prefix"), RegistryPrefixes=["Base"])
    subscribe(keeld, rcv.url("/rtype"), ResourceTypes=["Session"])
    subscribe(keeld, rcv.url("/origin"), OriginResources=[{"@odata.id": a2}])
    subscribe(keeld, rcv.url("/msgid"), MessageIds=[REMOVED])

    assert keeld.admin().patch(keeld.url + a1, json={"RoleId": "Operator"}).status_code in (200, 204)  # nobody
    _, sess = keeld.login(*ADMIN)                                                                        # /rtype
    sess = path_of(sess)
    assert keeld.admin().patch(keeld.url + a2, json={"RoleId": "Operator"}).status_code in (200, 204)  # /origin
    submit_test_event(keeld, MessageId="Base.1.22.Success")                                             # /prefix
    assert keeld.admin().delete(keeld.url + a1).status_code in (200, 204)                               # /msgid

    rcv.wait("/rtype", about(CREATED, sess), what="the session's ResourceCreated")
    rcv.wait("/origin", about(CHANGED, a2), what=f"ResourceChanged for {a2}")
    rcv.wait("/prefix", about("Base.1.22.Success"), what="the Base test event")
    rcv.wait("/msgid", about(REMOVED, a1), what=f"ResourceRemoved for {a1}")
    time.sleep(GRACE)

    def summary(path):
        return [(first(d["body"])["MessageId"], origin(first(d["body"]))) for d in rcv.got(path)]

    assert summary("/rtype") == [(CREATED, sess)], summary("/rtype")
    assert summary("/origin") == [(CHANGED, a2)], summary("/origin")
    assert summary("/prefix") == [("Base.1.22.Success", None)], summary("/prefix")
    assert summary("/msgid") == [(REMOVED, a1)], summary("/msgid")


def test_push_delivery_is_retried(keeld, http_receiver):
    rcv = http_receiver
    r = keeld.admin().patch(keeld.url + EVENT_SERVICE, json={"DeliveryRetryIntervalSeconds": 1})
    assert r.status_code in (200, 204), r.text
    assert keeld.get(EVENT_SERVICE).json()["DeliveryRetryIntervalSeconds"] == 1
    assert keeld.get(EVENT_SERVICE).json()["DeliveryRetryAttempts"] >= 1
    rcv.fail_first["/flaky"] = 1
    subscribe(keeld, rcv.url("/flaky"))
    acct = path_of(keeld.create_account("retryuser", PASSWORD))
    d = rcv.wait("/flaky", about(CREATED, acct), what="the retried delivery")
    assert d["try"] == 2, d["try"]
    failed = [a for a in rcv.attempts if a["path"] == "/flaky" and a["status"] == 500 and a["body"].get("Id") == d["body"]["Id"]]
    assert len(failed) == 1


@pytest.mark.parametrize("dest", ["ftp://x", "not a uri", "", "https://", "http:///nohost"])
def test_push_invalid_destination_is_rejected(keeld, dest):
    r = keeld.admin().post(keeld.url + SUBS, json={"Destination": dest, "Protocol": "Redfish"})
    assert r.status_code == 400, (dest, r.status_code, r.text)
    assert members(keeld) == []


@pytest.mark.parametrize("body, msg", [
    ({"Protocol": "FTP"}, "PropertyValueNotInList"),
    ({"RegistryPrefixes": ["NoSuchRegistry"]}, "PropertyValueNotInList"),
    ({"ResourceTypes": ["NoSuchType"]}, "PropertyValueNotInList"),
    ({"HttpHeaders": {"X-Test": 5}}, "PropertyValueTypeError"),
])
def test_push_invalid_properties_are_rejected(keeld, body, msg):
    full = {"Destination": "https://127.0.0.1:9/events", "Protocol": "Redfish"}
    full.update(body)
    r = keeld.admin().post(keeld.url + SUBS, json=full)
    assert r.status_code == 400, (body, r.status_code, r.text)
    assert any(msg in m for m in message_ids(r)), (body, message_ids(r))
    assert members(keeld) == []


def test_push_missing_destination_is_rejected(keeld):
    r = keeld.admin().post(keeld.url + SUBS, json={"Protocol": "Redfish"})
    assert r.status_code == 400, r.text
    ids = message_ids(r)
    assert any("PropertyMissing" in m or "CreateFailedMissingReqProperties" in m for m in ids), ids


def test_push_subscription_needs_privilege(keeld, http_receiver):
    keeld.create_account("pushro", PASSWORD, "ReadOnly")
    r = keeld.client("pushro", PASSWORD).post(keeld.url + SUBS, json={"Destination": http_receiver.url(), "Protocol": "Redfish"})
    assert r.status_code == 403, (r.status_code, r.text)
    assert members(keeld) == []


def test_push_delete_stops_deliveries(keeld, http_receiver):
    rcv = http_receiver
    gone = subscribe(keeld, rcv.url("/gone"))
    subscribe(keeld, rcv.url("/control"))
    a = path_of(keeld.create_account("deluser1", PASSWORD))
    rcv.wait("/gone", about(CREATED, a))
    rcv.wait("/control", about(CREATED, a))

    r = keeld.admin().delete(keeld.url + gone)
    assert r.status_code == 204, r.text
    assert keeld.get(gone).status_code == 404
    assert gone not in members(keeld)

    b = path_of(keeld.create_account("deluser2", PASSWORD))
    rcv.wait("/control", about(CREATED, b))
    time.sleep(GRACE)
    assert rcv.got("/gone", about(CREATED, b)) == [], "deleted subscription still receives events"


def test_push_subscriptions_persist_across_restart(keeld, http_receiver):
    rcv = http_receiver
    loc = subscribe(keeld, rcv.url("/persist"), Context="keep-me", HttpHeaders={"X-Test": "abc"},
                    RegistryPrefixes=["ResourceEvent"])
    keeld.restart()
    r = keeld.get(loc)
    assert r.status_code == 200, f"subscription {loc} lost over restart: {r.status_code} {r.text}"
    sub = r.json()
    assert sub["Destination"] == rcv.url("/persist")
    assert sub["Context"] == "keep-me"
    assert sub["RegistryPrefixes"] == ["ResourceEvent"]
    assert loc in members(keeld)
    acct = path_of(keeld.create_account("afterrestart", PASSWORD))
    d = rcv.wait("/persist", about(CREATED, acct), what="a delivery after restart")
    assert d["body"]["Context"] == "keep-me"
    assert d["headers"].get("x-test") == "abc", "HttpHeaders lost over restart"

    # A new subscription after restart gets a fresh id.
    loc2 = subscribe(keeld, rcv.url("/second"))
    assert loc2 != loc


def test_push_service_disabled_stops_deliveries(keeld, http_receiver):
    rcv = http_receiver
    subscribe(keeld, rcv.url("/svc"))
    r = keeld.admin().patch(keeld.url + EVENT_SERVICE, json={"ServiceEnabled": False})
    assert r.status_code in (200, 204), r.text
    assert keeld.get(EVENT_SERVICE).json()["ServiceEnabled"] is False
    quiet = path_of(keeld.create_account("whiledisabled", PASSWORD))
    submit_test_event(keeld)

    r = keeld.admin().patch(keeld.url + EVENT_SERVICE, json={"ServiceEnabled": True})
    assert r.status_code in (200, 204), r.text
    loud = path_of(keeld.create_account("afterenabled", PASSWORD))
    rcv.wait("/svc", about(CREATED, loud), what="a delivery after re-enabling")
    time.sleep(GRACE)
    assert rcv.got("/svc", about(CREATED, quiet)) == [], "event delivered while ServiceEnabled was false"
    assert rcv.got("/svc", about(TEST_MESSAGE)) == [], "test event delivered while ServiceEnabled was false"
