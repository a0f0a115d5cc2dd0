"""Accounts, roles, sessions and authentication (DSP0266 §13), persistence of the security state,
the first administrator and mutual TLS."""
import json
import os
import re
import stat
import subprocess
import time

import pytest
import requests

from conftest import ADMIN, KEELD, free_port
from redfish_checks import BASE, assert_error, check_message, client, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

AS = "/redfish/v1/AccountService"
ACCTS = "/redfish/v1/AccountService/Accounts"
ROLES = "/redfish/v1/AccountService/Roles"
SS = "/redfish/v1/SessionService"
SESS = "/redfish/v1/SessionService/Sessions"
ES = "/redfish/v1/EventService"
SUBS = "/redfish/v1/EventService/Subscriptions"
ADMIN_URI = "/redfish/v1/AccountService/Accounts/1"

PW = "Quiet-Lamp-42"
PW2 = "Stone-Bridge-77"
PW3 = "Amber-Kettle-19"


def get(k, path, auth=ADMIN):
    return client(k, auth).get(k.url + path)


def patch(k, path, body, auth=ADMIN):
    return client(k, auth).patch(k.url + path, json=body)


def post_login(k, user, password, path=SESS):
    return requests.post(k.url + path, json={"UserName": user, "Password": password}, verify=False)


def token_client(token):
    s = requests.Session()
    s.verify = False
    s.headers["X-Auth-Token"] = token
    return s


def path_of(location):
    """A Location header as a path (it may be absolute)."""
    return re.sub(r"^https?://[^/]+", "", location)


def session_ids(k):
    return {m["@odata.id"] for m in get(k, SESS).json()["Members"]}


# ------------------------------------------------------------------ sessions

def test_session_login_returns_201_location_token_and_session(keeld):
    k = keeld
    r = post_login(k, *ADMIN)
    assert r.status_code == 201, r.text
    token = r.headers.get("X-Auth-Token", "")
    assert re.fullmatch(r"[0-9A-Za-z+/=_\-.]{32,}", token), "token too short or odd"
    loc = path_of(r.headers["Location"])
    assert loc.startswith(SESS + "/")
    body = r.json()
    assert body["@odata.id"] == loc
    assert body["@odata.type"].startswith("#Session.v1_")
    assert body["UserName"] == "admin"
    assert body.get("Password") is None
    assert ADMIN[1] not in r.text and token not in r.text
    # The session is a resource its owner can read, and it is in the collection.
    s = token_client(token)
    g = s.get(k.url + loc)
    assert g.status_code == 200
    assert g.json()["Id"] == body["Id"] and g.json()["UserName"] == "admin"
    assert token not in g.text
    assert loc in session_ids(k)
    # The token authenticates requests to protected resources.
    assert s.get(k.url + "/redfish/v1/Systems").status_code == 200
    assert s.patch(k.url + AS, json={"AccountLockoutThreshold": 6}).status_code == 200
    # Wrong password: 401, no token, no session.
    r = post_login(k, "admin", "Wrong-Pass-000")
    assert_error(r, 401, "AccessUnauthorized", "NoValidSession", any_of=True)
    assert "X-Auth-Token" not in r.headers
    assert session_ids(k) == {loc}


def test_post_to_sessions_members_also_logs_in(keeld):
    k = keeld
    r = post_login(k, *ADMIN, path=SESS + "/Members")
    assert r.status_code == 201, r.text
    loc = path_of(r.headers["Location"])
    assert loc.startswith(SESS + "/") and loc != SESS + "/Members"
    assert token_client(r.headers["X-Auth-Token"]).get(k.url + "/redfish/v1/Managers").status_code == 200
    assert loc in session_ids(k)


def test_delete_session_logs_out(keeld):
    k = keeld
    k.create_account("user1", PW, "ReadOnly")
    s, loc = k.login("user1", PW)
    other, other_loc = k.login("user1", PW)
    assert s.get(k.url + ACCTS).status_code == 200
    r = s.delete(k.url + loc)
    assert r.status_code in (200, 204), r.text
    r = s.get(k.url + ACCTS)
    assert_error(r, 401, "NoValidSession", "AccessUnauthorized", any_of=True)
    assert r.headers.get("WWW-Authenticate")
    assert loc not in session_ids(k)
    # The user's other session is untouched; an administrator can end it.
    assert other.get(k.url + ACCTS).status_code == 200
    assert client(k, ADMIN).delete(k.url + other_loc).status_code in (200, 204)
    assert other.get(k.url + ACCTS).status_code == 401
    assert session_ids(k) == set()


def test_session_idle_timeout(keeld):
    """SessionTimeout 30 (the minimum): sessions idle longer end, busy ones stay. The idle time is
    put into the state file while keeld is stopped, so the test need not wait 30 s."""
    k = keeld
    assert patch(k, SS, {"SessionTimeout": 30}).status_code == 200
    old, old_loc = k.login(*ADMIN)       # idle 100 s: gone when keeld starts again
    soon, soon_loc = k.login(*ADMIN)     # idle 26 s: alive at start, gone 5 s later
    fresh, fresh_loc = k.login(*ADMIN)   # just used
    k.stop()
    f = k.state_dir / "sessions.json"
    data = json.loads(f.read_text())
    now = int(time.time())
    ids = {old_loc.rsplit("/", 1)[1]: now - 100, soon_loc.rsplit("/", 1)[1]: now - 26, fresh_loc.rsplit("/", 1)[1]: now}
    for sess in data["sessions"]:
        assert "last_used" in sess, sess
        sess["last_used"] = ids[sess["id"]]
    f.write_text(json.dumps(data))
    k.start()
    present = session_ids(k)   # listing as the administrator (Basic) refreshes no session
    assert old_loc not in present
    assert soon_loc in present and fresh_loc in present
    r = old.get(k.url + "/redfish/v1/Systems")
    assert_error(r, 401, "NoValidSession", "AccessUnauthorized", any_of=True)
    time.sleep(max(0, now + 5 - time.time()) + 0.2)
    assert fresh.get(k.url + "/redfish/v1/Systems").status_code == 200
    r = soon.get(k.url + "/redfish/v1/Systems")
    assert r.status_code == 401, f"session idle {int(time.time()) - now + 26} s > SessionTimeout 30 still works"
    assert session_ids(k) == {fresh_loc}


def test_basic_auth_on_every_request_creates_no_session(keeld):
    k = keeld
    k.create_account("basic1", PW, "Operator")
    for path in ("/redfish/v1/Systems", "/redfish/v1/Managers/keel", ACCTS, SS, ES):
        r = requests.get(k.url + path, auth=("basic1", PW), verify=False)
        assert r.status_code == 200, (path, r.text)
    r = requests.get(k.url + "/redfish/v1/Systems", auth=("basic1", PW2), verify=False)
    assert_error(r, 401, "AccessUnauthorized", "NoValidSession", any_of=True)
    assert session_ids(k) == set()


# ------------------------------------------------------------------ accounts

def test_account_create_patch_delete(keeld):
    k = keeld
    count = get(k, ACCTS).json()["Members@odata.count"]
    r = client(k, ADMIN).post(k.url + ACCTS, json={"UserName": "alice", "Password": PW, "RoleId": "Operator"})
    assert r.status_code == 201, r.text
    loc = path_of(r.headers["Location"])
    body = r.json()
    assert body["@odata.id"] == loc and body["UserName"] == "alice" and body["RoleId"] == "Operator"
    assert body["Enabled"] is True and body["Locked"] is False
    assert body.get("Password") is None and PW not in r.text
    g = get(k, loc).json()
    assert g["UserName"] == "alice" and g["RoleId"] == "Operator"
    assert g["Links"]["Role"]["@odata.id"] == f"{ROLES}/Operator"
    assert get(k, ACCTS).json()["Members@odata.count"] == count + 1
    assert loc in {m["@odata.id"] for m in get(k, ACCTS).json()["Members"]}
    alice, _ = k.login("alice", PW)
    # Rename: the new name logs in, the old one does not.
    r = patch(k, loc, {"UserName": "alice2"})
    assert r.status_code == 200 and r.json()["UserName"] == "alice2"
    assert post_login(k, "alice2", PW).status_code == 201
    assert post_login(k, "alice", PW).status_code == 401
    # Role change shows in the account and its link.
    r = patch(k, loc, {"RoleId": "ReadOnly"})
    assert r.status_code == 200
    g = get(k, loc).json()
    assert g["RoleId"] == "ReadOnly" and g["Links"]["Role"]["@odata.id"] == f"{ROLES}/ReadOnly"
    assert requests.patch(k.url + AS, json={"AccountLockoutThreshold": 7}, auth=("alice2", PW), verify=False).status_code == 403
    # Disable: no more logins.
    assert patch(k, loc, {"Enabled": False}).status_code == 200
    assert post_login(k, "alice2", PW).status_code == 401
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("alice2", PW), verify=False).status_code == 401
    assert patch(k, loc, {"Enabled": True}).status_code == 200
    s2, _ = k.login("alice2", PW)
    r = client(k, ADMIN).delete(k.url + loc)
    assert r.status_code in (200, 204), r.text
    assert_error(get(k, loc), 404, "ResourceNotFound", "ResourceMissingAtURI", any_of=True)
    assert get(k, ACCTS).json()["Members@odata.count"] == count
    assert post_login(k, "alice2", PW).status_code == 401
    # Deleting the account ended its sessions.
    assert s2.get(k.url + "/redfish/v1/Systems").status_code == 401
    assert alice.get(k.url + "/redfish/v1/Systems").status_code == 401


def test_password_change_ends_other_sessions(keeld):
    k = keeld
    uri = k.create_account("bob", PW, "ReadOnly")
    a, a_loc = k.login("bob", PW)
    b, _ = k.login("bob", PW)
    admin_s, _ = k.login(*ADMIN)
    # bob changes his own password through session a: a stays, b ends.
    r = a.patch(k.url + uri, json={"Password": PW2})
    assert r.status_code == 200, r.text
    assert PW2 not in r.text and r.json().get("Password") is None
    assert a.get(k.url + uri).status_code == 200
    assert b.get(k.url + uri).status_code == 401
    assert post_login(k, "bob", PW).status_code == 401
    assert requests.get(k.url + uri, auth=("bob", PW), verify=False).status_code == 401
    assert post_login(k, "bob", PW2).status_code == 201
    # The administrator resets bob's password: every session of bob ends, other users' stay.
    assert patch(k, uri, {"Password": PW3}).status_code == 200
    assert a.get(k.url + uri).status_code == 401
    assert admin_s.get(k.url + uri).status_code == 200
    assert requests.get(k.url + uri, auth=("bob", PW3), verify=False).status_code == 200
    remaining = session_ids(k)
    assert remaining and all(get(k, s).json()["UserName"] != "bob" for s in remaining)


def test_account_lockout_after_threshold(keeld):
    k = keeld
    assert patch(k, AS, {"AccountLockoutThreshold": 3, "AccountLockoutDuration": 600,
                         "AccountLockoutCounterResetAfter": 600}).status_code == 200
    uri = k.create_account("carol", PW, "Operator")
    # Below the threshold a correct password still works and clears the count.
    for _ in range(2):
        assert requests.get(k.url + "/redfish/v1/Systems", auth=("carol", "Wrong-Pass-001"), verify=False).status_code == 401
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("carol", PW), verify=False).status_code == 200
    assert get(k, uri).json()["Locked"] is False
    # Three failures in a row, by Basic and by session login alike, lock the account.
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("carol", "Wrong-Pass-002"), verify=False).status_code == 401
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("carol", "Wrong-Pass-003"), verify=False).status_code == 401
    assert post_login(k, "carol", "Wrong-Pass-004").status_code == 401
    assert get(k, uri).json()["Locked"] is True
    # Locked: the right password is refused too, however it comes.
    r = requests.get(k.url + "/redfish/v1/Systems", auth=("carol", PW), verify=False)
    assert_error(r, 401, "AccessUnauthorized", "NoValidSession", any_of=True)
    assert post_login(k, "carol", PW).status_code == 401
    # An administrator unlocks it.
    r = patch(k, uri, {"Locked": False})
    assert r.status_code == 200 and r.json()["Locked"] is False
    assert get(k, uri).json()["Locked"] is False
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("carol", PW), verify=False).status_code == 200
    assert post_login(k, "carol", PW).status_code == 201


def test_password_change_required_flow(keeld):
    k = keeld
    # An Administrator, so that privileges alone would allow everything below.
    r = client(k, ADMIN).post(k.url + ACCTS, json={"UserName": "dave", "Password": PW, "RoleId": "Administrator",
                                                   "PasswordChangeRequired": True})
    assert r.status_code == 201, r.text
    uri = path_of(r.headers["Location"])
    assert r.json()["PasswordChangeRequired"] is True
    # Login is allowed and says the password must change.
    r = post_login(k, "dave", PW)
    assert r.status_code == 201, r.text
    info = r.json().get("@Message.ExtendedInfo", [])
    ids = [check_message(m) for m in info]
    assert f"{BASE}.PasswordChangeRequired" in ids, r.json()
    pcr = [m for m in info if m["MessageId"] == f"{BASE}.PasswordChangeRequired"][0]
    assert pcr["MessageArgs"] == [uri]
    s = token_client(r.headers["X-Auth-Token"])
    # Its own account can be read ...
    assert s.get(k.url + uri).status_code == 200
    # ... everything else is 403 PasswordChangeRequired, by token and by Basic alike.
    for method, path, body in [("GET", "/redfish/v1/Systems", None), ("GET", "/redfish/v1/Managers/keel", None),
                               ("GET", ACCTS, None), ("GET", AS, None), ("GET", SS, None), ("GET", ES, None),
                               ("GET", ROLES, None), ("POST", SUBS, {"Destination": "https://127.0.0.1:9/e"}),
                               ("PATCH", AS, {"AccountLockoutThreshold": 9}), ("PATCH", ADMIN_URI, {"Enabled": False}),
                               # Its own account: only Password may change, not the flag itself.
                               ("PATCH", uri, {"UserName": "dave2"}), ("PATCH", uri, {"PasswordChangeRequired": False}),
                               ("PATCH", uri, {"RoleId": "ReadOnly"})]:
        for sess in (s, requests.Session()):
            if sess is not s:
                sess.verify = False
                sess.auth = ("dave", PW)
            r = sess.request(method, k.url + path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert f"{BASE}.PasswordChangeRequired" in [m["MessageId"] for m in r.json()["error"]["@Message.ExtendedInfo"]], (method, path, r.text)
            assert_error(r, 403, "PasswordChangeRequired")
            assert [m["MessageArgs"] for m in r.json()["error"]["@Message.ExtendedInfo"]
                    if m["MessageId"].endswith(".PasswordChangeRequired")] == [[uri]]
    g = get(k, uri).json()
    assert g["UserName"] == "dave" and g["PasswordChangeRequired"] is True and g["RoleId"] == "Administrator"
    assert get(k, AS).json()["AccountLockoutThreshold"] == 5 and get(k, ADMIN_URI).json()["Enabled"] is True
    # PATCH of its own password clears the flag; the session then works normally.
    r = s.patch(k.url + uri, json={"Password": PW2})
    assert r.status_code == 200, r.text
    assert get(k, uri).json()["PasswordChangeRequired"] is False
    assert s.get(k.url + "/redfish/v1/Systems").status_code == 200
    r = post_login(k, "dave", PW2)
    assert r.status_code == 201
    assert f"{BASE}.PasswordChangeRequired" not in [m["MessageId"] for m in r.json().get("@Message.ExtendedInfo", [])]
    assert requests.get(k.url + "/redfish/v1/Systems", auth=("dave", PW2), verify=False).status_code == 200


# ------------------------------------------------------------------ roles and privileges

EXPECTED_ROLES = {
    "Administrator": {"Login", "ConfigureManager", "ConfigureUsers", "ConfigureComponents", "ConfigureSelf"},
    "Operator": {"Login", "ConfigureComponents", "ConfigureSelf"},
    "ReadOnly": {"Login", "ConfigureSelf"},
}


def test_predefined_roles_exist_with_exact_privileges_and_are_read_only(keeld):
    k = keeld
    coll = get(k, ROLES).json()
    assert {m["@odata.id"] for m in coll["Members"]} == {f"{ROLES}/{r}" for r in EXPECTED_ROLES}
    assert coll["Members@odata.count"] == 3
    for role, privs in EXPECTED_ROLES.items():
        r = get(k, f"{ROLES}/{role}")
        assert r.status_code == 200
        body = r.json()
        assert body["Id"] == role and body["RoleId"] == role and body["IsPredefined"] is True
        assert set(body["AssignedPrivileges"]) == privs and len(body["AssignedPrivileges"]) == len(privs)
        assert body.get("OemPrivileges", []) == []
        allow = {m.strip() for m in r.headers["Allow"].split(",")}
        assert "PATCH" not in allow and "DELETE" not in allow
        for method, payload in (("PATCH", {"AssignedPrivileges": ["Login"]}), ("PATCH", {"Description": "mine"}),
                                ("PUT", {"AssignedPrivileges": ["Login"]}), ("DELETE", None)):
            r = client(k, ADMIN).request(method, k.url + f"{ROLES}/{role}", json=payload)
            assert_error(r, 405)
            assert {m.strip() for m in r.headers["Allow"].split(",")} == allow
        assert set(get(k, f"{ROLES}/{role}").json()["AssignedPrivileges"]) == privs


def test_read_only_account_reads_itself_but_not_others(keeld):
    k = keeld
    me = k.create_account("erin", PW, "ReadOnly")
    other = k.create_account("frank", PW2, "Operator")
    auth = ("erin", PW)
    r = get(k, me, auth)
    assert r.status_code == 200 and r.json()["UserName"] == "erin"
    for path in (other, ADMIN_URI):
        assert_error(get(k, path, auth), 403, "InsufficientPrivilege")
    # The collection shows it only its own account.
    assert [m["@odata.id"] for m in get(k, ACCTS, auth).json()["Members"]] == [me]
    # It may change its own password, nothing else.
    r = patch(k, me, {"Password": PW3}, auth)
    assert r.status_code == 200, r.text
    assert requests.get(k.url + me, auth=("erin", PW3), verify=False).status_code == 200


def test_last_administrator_cannot_be_deleted_disabled_or_demoted(keeld):
    k = keeld
    before = get(k, ADMIN_URI).json()
    r = client(k, ADMIN).delete(k.url + ADMIN_URI)
    assert r.status_code in (400, 403, 405, 409), r.text
    assert_error(r, r.status_code, "ResourceCannotBeDeleted", "ResourceInUse", any_of=True)
    for body in ({"RoleId": "Operator"}, {"RoleId": "ReadOnly"}, {"Enabled": False}):
        r = patch(k, ADMIN_URI, body)
        assert 400 <= r.status_code < 500, (body, r.text)
        assert_error(r, r.status_code)
    assert get(k, ADMIN_URI).json() == before
    assert requests.get(k.url + ADMIN_URI, auth=ADMIN, verify=False).status_code == 200
    # A disabled Administrator does not count as a second one.
    idle = k.create_account("idle-admin", PW, "Administrator")
    assert patch(k, idle, {"Enabled": False}).status_code == 200
    assert 400 <= patch(k, ADMIN_URI, {"RoleId": "Operator"}).status_code < 500
    assert client(k, ADMIN).delete(k.url + ADMIN_URI).status_code >= 400
    # With a second enabled Administrator the first may go.
    assert patch(k, idle, {"Enabled": True}).status_code == 200
    assert patch(k, ADMIN_URI, {"RoleId": "Operator"}).status_code == 200
    assert get(k, ADMIN_URI, ("idle-admin", PW)).json()["RoleId"] == "Operator"
    # ... and now the other one is the last.
    assert client(k, ("idle-admin", PW)).delete(k.url + idle).status_code >= 400
    assert get(k, idle, ("idle-admin", PW)).status_code == 200


# ------------------------------------------------------------------ persistence

def test_state_persists_across_restart(keeld):
    k = keeld
    uri = k.create_account("gina", PW, "Operator")
    s, loc = k.login("gina", PW)
    assert patch(k, AS, {"MinPasswordLength": 10, "AccountLockoutThreshold": 7, "AccountLockoutDuration": 120,
                         "AccountLockoutCounterResetAfter": 90}).status_code == 200
    assert patch(k, SS, {"SessionTimeout": 900}).status_code == 200
    assert patch(k, ES, {"DeliveryRetryAttempts": 5, "DeliveryRetryIntervalSeconds": 30}).status_code == 200
    r = client(k, ADMIN).post(k.url + SUBS, json={"Destination": "https://127.0.0.1:9/events", "Context": "persisted",
                                                  "Protocol": "Redfish", "RegistryPrefixes": ["ResourceEvent"]})
    assert r.status_code == 201, r.text
    sub = path_of(r.headers["Location"])
    keep = {p: get(k, p).json() for p in (AS, SS, ES, uri, sub)}
    k.restart()
    for p, v in keep.items():
        got = get(k, p).json()
        got.pop("@odata.etag", None)
        v = dict(v)
        v.pop("@odata.etag", None)
        assert got == v, p
    assert get(k, AS).json()["MinPasswordLength"] == 10
    assert get(k, SS).json()["SessionTimeout"] == 900
    assert get(k, ES).json()["DeliveryRetryAttempts"] == 5
    assert get(k, sub).json()["Context"] == "persisted"
    # The session token from before the restart still works, and its session is listed.
    assert s.get(k.url + "/redfish/v1/Systems").status_code == 200
    assert loc in session_ids(k)
    assert requests.get(k.url + uri, auth=("gina", PW), verify=False).status_code == 200


def test_state_files_hold_no_plaintext_password_or_token(keeld):
    k = keeld
    uri = k.create_account("hank", PW, "ReadOnly")
    tokens = []
    for user, pw in (ADMIN, ("hank", PW)):
        r = post_login(k, user, pw)
        assert r.status_code == 201
        tokens.append(r.headers["X-Auth-Token"])
    assert patch(k, uri, {"Password": PW2}).status_code == 200
    r = post_login(k, "hank", PW2)
    tokens.append(r.headers["X-Auth-Token"])
    k.restart()  # make sure everything was flushed
    secrets = [ADMIN[1], PW, PW2] + tokens
    files = [p for p in k.state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "accounts.json" for p in files) and any(p.name == "sessions.json" for p in files)
    for p in files:
        data = p.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{p.name} holds a secret in clear"
    for name in ("accounts.json", "sessions.json"):
        mode = stat.S_IMODE((k.state_dir / name).stat().st_mode)
        assert mode & 0o077 == 0, f"{name} mode {oct(mode)}"
    assert stat.S_IMODE(k.state_dir.stat().st_mode) & 0o077 == 0
    log = k.logs()
    for secret in secrets:
        assert secret not in log, "a secret in the log"


def test_initial_admin_password_file_without_bootstrap(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    log_path = tmp_path / "keeld.log"
    url = f"https://127.0.0.1:{port}"

    def start():
        log = open(log_path, "ab")
        p = subprocess.Popen([KEELD, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)],
                             stdout=log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: p.poll() is not None or requests.get(url + "/redfish/v1", verify=False, timeout=2).status_code == 200, 30)
        assert ok and p.poll() is None, log_path.read_text()
        return p

    def stop(p):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    p = start()
    try:
        f = state / "initial-admin-password"
        assert f.exists()
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        password = f.read_text().strip()
        assert len(password) >= 12
        log = log_path.read_text()
        assert str(f) in log or "initial-admin-password" in log, log
        assert password not in log
        r = requests.post(url + SESS, json={"UserName": "admin", "Password": password}, verify=False)
        assert r.status_code == 201, r.text
        assert requests.get(url + ACCTS, auth=("admin", password), verify=False).json()["Members@odata.count"] == 1
        # A restart neither makes a new password nor a new account.
        stop(p)
        p = start()
        assert f.read_text().strip() == password
        assert requests.get(url + ACCTS, auth=("admin", password), verify=False).json()["Members@odata.count"] == 1
        assert password not in log_path.read_text()
    finally:
        stop(p)


# ------------------------------------------------------------------ mutual TLS

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_client_cert(d, ca, cn):
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    name = f"{ca}-{cn}"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "client.ext", cwd=d)
    return (str(d / f"{name}.pem"), str(d / f"{name}.key"))


def test_mutual_tls_client_certificate_logs_in_as_its_cn(keeld_factory, tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "trusted-ca")
    make_ca(d, "other-ca")
    ivy = make_client_cert(d, "trusted-ca", "ivy")
    nobody = make_client_cert(d, "trusted-ca", "nobody")
    admin_cert = make_client_cert(d, "trusted-ca", "admin")
    forged = make_client_cert(d, "other-ca", "admin")
    k = keeld_factory("--tls-client-ca", str(d / "trusted-ca.pem"))
    ivy_uri = k.create_account("ivy", PW, "ReadOnly")

    def with_cert(cert, method="GET", path=ACCTS, body=None):
        return requests.request(method, k.url + path, json=body, cert=cert, verify=False)

    # Clients without a certificate still use passwords.
    assert requests.get(k.url + ACCTS, auth=ADMIN, verify=False).status_code == 200
    # ivy's certificate, no password: ivy (ReadOnly) sees only itself and may not configure.
    r = with_cert(ivy)
    assert r.status_code == 200, r.text
    assert [m["@odata.id"] for m in r.json()["Members"]] == [ivy_uri]
    assert with_cert(ivy, path=ivy_uri).json()["UserName"] == "ivy"
    assert_error(with_cert(ivy, "PATCH", AS, {"AccountLockoutThreshold": 9}), 403, "InsufficientPrivilege")
    # admin's certificate: the administrator.
    r = with_cert(admin_cert, "PATCH", AS, {"AccountLockoutThreshold": 9})
    assert r.status_code == 200, r.text
    assert with_cert(admin_cert).json()["Members@odata.count"] == 2
    # A certificate for a name with no account authenticates nobody.
    assert_error(with_cert(nobody), 401, "NoValidSession", "AccessUnauthorized", any_of=True)
    # A disabled account's certificate stops working.
    assert patch(k, ivy_uri, {"Enabled": False}).status_code == 200
    assert with_cert(ivy).status_code == 401
    # A certificate from another CA: refused at the handshake or unauthenticated, never admin.
    try:
        r = with_cert(forged, "PATCH", AS, {"AccountLockoutThreshold": 3})
        assert r.status_code == 401, r.text
    except requests.exceptions.RequestException:
        pass
    assert get(k, AS).json()["AccountLockoutThreshold"] == 9
