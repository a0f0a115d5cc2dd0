"""Real Redfish clients against keeld: redfishtool (the DMTF CLI), sushy (OpenStack Ironic's library)
and the DMTF `redfish` library.

Each client, once with a session and once with Basic authentication: logs in, reads the service
root, walks every link (every `@odata.id` and `Members@odata.nextLink`, recursively; each must
answer 200 with a JSON object), changes an account's RoleId and Enabled (checked by a separate
admin GET), and, for sessions, logs out (afterwards the session URI answers 401 to the old token and
404 to the Administrator). TLS is verified against keeld's own certificate.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import redfish
import sushy
import sushy.auth
import sushy.exceptions

from conftest import ADMIN

# Resources every walk must reach (a walk that stops early would pass vacuously otherwise).
MUST_REACH = {
    "/redfish/v1/AccountService/Accounts", "/redfish/v1/AccountService/Roles/ReadOnly",
    "/redfish/v1/SessionService/Sessions", "/redfish/v1/Managers/keel", "/redfish/v1/Managers/keel/NetworkProtocol",
    "/redfish/v1/Systems/system", "/redfish/v1/Chassis/chassis", "/redfish/v1/EventService/Subscriptions",
    "/redfish/v1/Registries/Base", "/redfish/v1/JsonSchemas",
}
LINK_KEYS = ("@odata.id", "Members@odata.nextLink")
AUTHS = ["session", "basic"]
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def links(body):
    """Every URI the payload links to, without fragments."""
    out = set()

    def visit(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k in LINK_KEYS and isinstance(x, str) and x.startswith("/"):
                    out.add(x.split("#", 1)[0])
                else:
                    visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)

    visit(body)
    return out


def walk(fetch, start="/redfish/v1/", workers=1):
    """Breadth-first walk of the whole service with `fetch(uri) -> (status, body)`.
    Returns (set of URIs fetched, {uri: problem} for every answer that was not 200 + JSON object)."""
    seen, bad, level = set(), {}, {start}
    with ThreadPoolExecutor(workers) as pool:
        while level:
            seen |= level
            found = set()
            for uri, (status, body) in zip(sorted(level), pool.map(fetch, sorted(level))):
                if status != 200 or not isinstance(body, dict):
                    bad[uri] = f"HTTP {status}: {str(body)[:300]}"
                    continue
                found |= links(body)
            level = found - seen
    return seen, bad


def check_walk(client, auth, seen, bad):
    assert not bad, f"{client} ({auth}): links that did not answer 200:\n" + "\n".join(f"  {u}: {p}" for u, p in sorted(bad.items()))
    missing = MUST_REACH - seen
    assert not missing, f"{client} ({auth}): the walk never reached {sorted(missing)} (walked {len(seen)} URIs)"


def account(keeld, name):
    """A ReadOnly account for a client to modify: (user name, URI)."""
    uri = keeld.create_account(name, "Client-Pass-42x", "ReadOnly")
    return name, uri


def admin_view(keeld, uri):
    r = keeld.get(uri)
    assert r.status_code == 200, r.text
    return r.json()


def assert_logged_out(keeld, session_uri, token):
    """The session is gone: its token no longer authenticates, and the resource no longer exists."""
    r = keeld.client().get(keeld.url + session_uri, headers={"X-Auth-Token": token})
    assert r.status_code == 401, f"GET {session_uri} with the logged-out token: {r.status_code} {r.text}"
    r = keeld.get(session_uri)
    assert r.status_code == 404, f"GET {session_uri} as Administrator after logout: {r.status_code} {r.text}"


# ------------------------------------------------------------------------------------- redfishtool

class Redfishtool:
    """The redfishtool CLI of the test venv, one process per command."""

    def __init__(self, keeld):
        self.keeld = keeld
        exe = pathlib.Path(sys.executable).parent / "redfishtool"
        self.base = [str(exe), "-r", keeld.url.removeprefix("https://"), "-S", "Always", "-T", "30"]
        self.auth = []

    def run(self, *args, check=True):
        r = subprocess.run(self.base + self.auth + list(args), capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, f"redfishtool {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, *args):
        return json.loads(self.run(*args).stdout)

    def get(self, uri):
        """(status, body) of `raw GET` (-s prints the status)."""
        r = self.run("-s", "raw", "GET", uri, check=False)
        m = re.search(r"status_code: (\d+)", r.stdout + r.stderr)
        status = int(m.group(1)) if m else None
        text = re.sub(r"^#STATUS:.*\n", "", r.stdout)
        try:
            body = json.loads(text)
        except ValueError:
            body = (text + r.stderr).strip()
        if r.returncode != 0 and status == 200:
            status = f"200 but exit {r.returncode}"
        return status, body


@pytest.mark.parametrize("auth", AUTHS)
def test_redfishtool(keeld, auth):
    rt = Redfishtool(keeld)
    if auth == "session":
        rt.auth = ["-u", ADMIN[0], "-p", ADMIN[1], "-A", "Session"]
        login = rt.json("SessionService", "login")
        token, session_uri = login["X-Auth-Token"], login["SessionLocation"]
        rt.auth = ["-A", "Session", "-t", token]
    else:
        rt.auth = ["-u", ADMIN[0], "-p", ADMIN[1], "-A", "Basic"]

    root = rt.json("root")
    assert root["@odata.id"] in ("/redfish/v1", "/redfish/v1/") and root["RedfishVersion"]
    assert rt.json("versions") == {"v1": "/redfish/v1/"}

    seen, bad = walk(rt.get, workers=4)
    check_walk("redfishtool", auth, seen, bad)

    user, uri = account(keeld, f"rt-{auth}")
    rt.run("AccountService", "useradmin", user, "setRoleId", "Operator")
    assert admin_view(keeld, uri)["RoleId"] == "Operator"
    rt.run("AccountService", "useradmin", user, "disable")
    assert admin_view(keeld, uri)["Enabled"] is False
    rt.run("AccountService", "useradmin", user, "enable")
    assert admin_view(keeld, uri)["Enabled"] is True

    if auth == "session":
        rt.run("SessionService", "logout", "-l", session_uri)
        assert_logged_out(keeld, session_uri, token)


# ------------------------------------------------------------------------------------------- sushy

def sushy_fetch(conn):
    def fetch(uri):
        try:
            r = conn.get(path=uri)
        except sushy.exceptions.HTTPError as e:
            return e.status_code, str(e)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text
    return fetch


@pytest.mark.parametrize("auth", AUTHS)
def test_sushy(keeld, auth):
    mech = sushy.auth.SessionAuth if auth == "session" else sushy.auth.BasicAuth
    s = sushy.Sushy(keeld.url, verify=str(keeld.state_dir / "tls-cert.pem"), auth=mech(*ADMIN),
                    server_side_retries=0, read_timeout=30)
    root = admin_view(keeld, "/redfish/v1")
    assert (s.identity, s.uuid, s.redfish_version) == (root["Id"], root["UUID"], root["RedfishVersion"])
    if auth == "session":
        session_uri = s._auth.get_session_resource_id()
        token = s._auth.get_session_key()
        assert session_uri and token, "sushy did not obtain a session"

    # sushy's own resource models parse keeld's payloads
    assert [m.identity for m in s.get_manager_collection().get_members()] == ["keel"]
    assert [m.identity for m in s.get_system_collection().get_members()] == ["system"]
    assert [c.identity for c in s.get_chassis_collection().get_members()] == ["chassis"]
    assert s.get_session_service().session_timeout > 0

    seen, bad = walk(sushy_fetch(s._conn))
    check_walk("sushy", auth, seen, bad)

    _, uri = account(keeld, f"sushy-{auth}")
    r = s._conn.patch(uri, data={"RoleId": "Operator"})
    assert r.status_code in (200, 204), r.text
    assert admin_view(keeld, uri)["RoleId"] == "Operator"
    r = s._conn.patch(uri, data={"Enabled": False})
    assert r.status_code in (200, 204), r.text
    assert admin_view(keeld, uri)["Enabled"] is False

    if auth == "session":
        s._auth.close()
        assert s._auth.get_session_resource_id() is None
        assert_logged_out(keeld, session_uri, token)


# ------------------------------------------------------------------------------ DMTF redfish library

@pytest.mark.parametrize("auth", AUTHS)
def test_redfish_library(keeld, auth):
    c = redfish.redfish_client(base_url=keeld.url, username=ADMIN[0], password=ADMIN[1],
                               cafile=str(keeld.state_dir / "tls-cert.pem"), timeout=30, max_retry=1)
    c.login(auth=auth)
    try:
        if auth == "session":
            session_uri, token = c.get_session_location(), c.get_session_key()
            assert session_uri and token, "the redfish library did not obtain a session"
            assert session_uri.startswith("/redfish/v1/SessionService/Sessions/")
        root = c.get("/redfish/v1/")
        assert root.status == 200 and root.dict["RedfishVersion"], root.text

        def fetch(uri):
            r = c.get(uri)
            try:
                return r.status, r.dict
            except ValueError:
                return r.status, r.text

        seen, bad = walk(fetch)
        check_walk("redfish", auth, seen, bad)

        _, uri = account(keeld, f"lib-{auth}")
        before = c.get(uri)
        etag = before.getheader("ETag")
        assert etag, "account GET without ETag"
        r = c.patch(uri, body={"RoleId": "Operator"}, headers={"If-Match": etag})
        assert r.status in (200, 204), r.text
        assert admin_view(keeld, uri)["RoleId"] == "Operator"
        r = c.patch(uri, body={"Enabled": False}, headers={"If-Match": etag})
        assert r.status == 412, f"PATCH with a stale If-Match: {r.status} {r.text}"
        r = c.patch(uri, body={"Enabled": False})
        assert r.status in (200, 204), r.text
        assert admin_view(keeld, uri)["Enabled"] is False
    finally:
        c.logout()
    if auth == "session":
        assert c.get_session_key() is None
        assert_logged_out(keeld, session_uri, token)
