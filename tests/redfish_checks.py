"""Assertions shared by test_bad_input.py, test_accounts_sessions.py and test_protocol.py.

Error bodies are checked against the DMTF Base registry (DSP0266 §9.5.11): every
`@Message.ExtendedInfo` entry must name a real Base message, with the registry's text rendered
with its own MessageArgs, the right number of arguments and the registry's severity.
"""
import json
import os
import pathlib
import re
import time

import requests

from conftest import ADMIN

BASE = "Base.1.22"
# The DMTF bundle beside the repository, as conftest finds it (KEEL_SHARED overrides).
SHARED = pathlib.Path(os.environ.get("KEEL_SHARED") or pathlib.Path(__file__).resolve().parent.parent.parent / "shared").resolve()
SCHEMAS = SHARED / "redfish-schemas"
REGISTRY_FILE = SCHEMAS / "registries" / "Base.1.22.1.json"
_REGISTRY = None


def base_registry():
    """The Base registry messages, or None when the DMTF files are not on this machine."""
    global _REGISTRY
    if _REGISTRY is None and REGISTRY_FILE.exists():
        _REGISTRY = json.loads(REGISTRY_FILE.read_text())["Messages"]
    return _REGISTRY


def render(template, args):
    return re.sub(r"%(\d+)", lambda m: str(args[int(m.group(1)) - 1]) if int(m.group(1)) <= len(args) else m.group(0), template)


def check_message(m):
    """One Message object: a Base message exactly as the registry defines it."""
    assert isinstance(m, dict), m
    mid = m.get("MessageId", "")
    assert mid.startswith(BASE + "."), f"MessageId {mid!r} is not a {BASE} message"
    key = mid[len(BASE) + 1:]
    args = m.get("MessageArgs", [])
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), m
    assert not re.search(r"%\d", m.get("Message", "")), f"unrendered message {m}"
    reg = base_registry()
    if reg is not None:
        assert key in reg, f"{mid} is not in the Base registry"
        d = reg[key]
        assert len(args) == d.get("NumberOfArgs", 0), f"{mid}: {len(args)} MessageArgs, registry wants {d.get('NumberOfArgs', 0)}: {m}"
        assert m.get("Message") == render(d["Message"], args), f"{mid}: message text {m.get('Message')!r} != registry {d['Message']!r}"
        assert m.get("MessageSeverity") == d["MessageSeverity"], m
        assert m.get("Resolution") == d["Resolution"], m
    return mid


def error_ids(r):
    return [m.get("MessageId") for m in r.json()["error"]["@Message.ExtendedInfo"]]


def assert_error(r, status, *message_keys, any_of=False):
    """`r` is a Redfish error response with `status` whose ExtendedInfo holds every key in
    `message_keys` (e.g. "PropertyUnknown"), or at least one of them with any_of=True.
    Returns the `error` object."""
    assert r.status_code == status, f"{r.request.method} {r.request.url}: want {status}, got {r.status_code}: {r.text[:600]}"
    assert r.headers.get("OData-Version") == "4.0", r.headers
    ct = r.headers.get("Content-Type", "").replace(" ", "").lower()
    assert ct.startswith("application/json"), f"error Content-Type {ct!r}"
    body = r.json()
    assert set(body) == {"error"}, f"error body has {sorted(body)}"
    e = body["error"]
    assert isinstance(e.get("code"), str) and e["code"], e
    assert isinstance(e.get("message"), str) and e["message"], e
    info = e.get("@Message.ExtendedInfo")
    assert isinstance(info, list) and info, e
    ids = [check_message(m) for m in info]
    if len(ids) == 1:
        assert e["code"] == ids[0], f"error.code {e['code']} != the only MessageId {ids[0]}"
    else:
        assert e["code"] in ids or e["code"] == f"{BASE}.GeneralError", e
    wanted = [f"{BASE}.{k}" for k in message_keys]
    if any_of:
        assert any(w in ids for w in wanted), f"want one of {wanted}, got {ids}"
    else:
        for w in wanted:
            assert w in ids, f"want {w}, got {ids}: {r.text[:600]}"
    return e


def assert_no_secret(r, *secrets):
    """No password or token in the body or (except a login's own X-Auth-Token) the headers."""
    text = r.text
    headers = {k: v for k, v in r.headers.items() if k.lower() != "x-auth-token"}
    for s in secrets:
        if not s:
            continue
        assert s not in text, f"secret {s[:3]}… echoed in the body: {text[:400]}"
        for k, v in headers.items():
            assert s not in v, f"secret echoed in header {k}"


def norm_ct(r):
    return r.headers.get("Content-Type", "").replace(" ", "").lower()


def strip_volatile(v):
    """A resource without values that change by themselves (clock)."""
    if isinstance(v, dict):
        return {k: strip_volatile(x) for k, x in v.items() if k not in ("DateTime",)}
    if isinstance(v, list):
        return [strip_volatile(x) for x in v]
    return v


def snapshot(k):
    """Everything a bad request could have changed, as the administrator sees it."""
    s = client(k, ADMIN)
    out = {}
    for p in ("/redfish/v1/AccountService", "/redfish/v1/SessionService", "/redfish/v1/EventService",
              "/redfish/v1/AccountService/Accounts", "/redfish/v1/SessionService/Sessions",
              "/redfish/v1/EventService/Subscriptions"):
        r = s.get(k.url + p)
        assert r.status_code == 200, (p, r.status_code, r.text)
        out[p] = r.json()
    for coll in ("/redfish/v1/AccountService/Accounts", "/redfish/v1/SessionService/Sessions", "/redfish/v1/EventService/Subscriptions"):
        for m in out[coll]["Members"]:
            r = s.get(k.url + m["@odata.id"])
            assert r.status_code == 200, (m, r.status_code)
            out[m["@odata.id"]] = r.json()
    return out


def crawl(k, session=None, limit=400):
    """Every JSON resource reachable from the service root by @odata.id links: {uri: response}."""
    s = session or k.admin()
    seen = {}
    todo = ["/redfish/v1"]
    while todo and len(seen) < limit:
        uri = todo.pop(0)
        if uri in seen:
            continue
        r = s.get(k.url + uri)
        seen[uri] = r
        if r.status_code != 200 or not norm_ct(r).startswith("application/json"):
            continue
        for link in links_in(r.json()):
            if link not in seen and link not in todo:
                todo.append(link)
    return seen


def links_in(v):
    out = []
    if isinstance(v, dict):
        for key, x in v.items():
            if key == "@odata.id" and isinstance(x, str) and x.startswith("/redfish/v1") and "#" not in x:
                out.append(x.rstrip("/") or "/")
            else:
                out.extend(links_in(x))
    elif isinstance(v, list):
        for x in v:
            out.extend(links_in(x))
    return out


def odata_types_in(v):
    out = set()
    if isinstance(v, dict):
        for key, x in v.items():
            if key == "@odata.type" and isinstance(x, str):
                out.add(x)
            else:
                out |= odata_types_in(x)
    elif isinstance(v, list):
        for x in v:
            out |= odata_types_in(x)
    return out


_CLIENTS = {}


def client(k, auth=None):
    """A kept-alive requests.Session per keeld and credentials (no TLS handshake per request)."""
    key = (k.url, auth)
    s = _CLIENTS.get(key)
    if s is None:
        s = requests.Session()
        s.verify = False
        s.auth = auth
        _CLIENTS[key] = s
    return s


def wait_until(pred, timeout=20.0, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = pred()
            if v:
                return v
        except requests.exceptions.RequestException:
            pass
        time.sleep(step)
    return None
