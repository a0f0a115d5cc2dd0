"""Browsable HTML: a resource rendered for a person with a browser (Accept: text/html), and the
same pages opened by a real headless Chromium."""
import html.parser
import os
import shutil
import struct
import subprocess

import pytest
import requests

from conftest import ADMIN

MANAGER = "/redfish/v1/Managers/keel"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


class Page(html.parser.HTMLParser):
    """Anchors, breadcrumbs (anchors inside <nav>), the actions section's text, the title."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.hrefs, self.crumbs, self.actions_text, self.title, self.text = [], [], [], "", []
        self._stack, self._in_title, self._actions_depth = [], False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("meta", "br", "hr", "img", "link", "input"):
            return
        self._stack.append(tag)
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
            if "nav" in self._stack:
                self.crumbs.append(a["href"])
        if tag == "title":
            self._in_title = True
        if tag == "section" and "actions" in (a.get("class") or "").split() and self._actions_depth is None:
            self._actions_depth = len(self._stack)

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        # Tolerate the implicit closes of HTML: pop up to the matching tag.
        if tag in self._stack:
            while self._stack:
                t = self._stack.pop()
                if self._actions_depth is not None and len(self._stack) < self._actions_depth:
                    self._actions_depth = None
                if t == tag:
                    break

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title:
            self.title += data
        if self._actions_depth is not None:
            self.actions_text.append(data)

    @property
    def actions(self):
        return " ".join(self.actions_text)


def odata_ids(v):
    """Every @odata.id string in a JSON document."""
    out = []
    if isinstance(v, dict):
        for k, c in v.items():
            if k == "@odata.id" and isinstance(c, str):
                out.append(c)
            else:
                out.extend(odata_ids(c))
    elif isinstance(v, list):
        for c in v:
            out.extend(odata_ids(c))
    return out


def get_html(k, path, accept="text/html"):
    r = k.admin().get(k.url + path, headers={"Accept": accept})
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    assert r.headers["Content-Type"].split(";")[0].strip() == "text/html", r.headers["Content-Type"]
    return r


def get_json(k, path):
    r = k.admin().get(k.url + path, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ HTTP level


@pytest.mark.parametrize("path", [MANAGER, "/redfish/v1", "/redfish/v1/AccountService/Accounts", "/redfish/v1/EventService"])
def test_every_odata_id_is_a_link(keeld, path):
    doc = get_json(keeld, path)
    page = Page(get_html(keeld, path).text)
    ids = odata_ids(doc)
    assert ids, doc
    missing = [i for i in ids if i not in page.hrefs]
    assert not missing, f"@odata.id values not rendered as <a href> on {path}: {missing}"


def test_manager_page_breadcrumbs_actions_and_headers(keeld):
    r = get_html(keeld, MANAGER)
    page = Page(r.text)
    assert page.crumbs[-3:] == ["/redfish/v1", "/redfish/v1/Managers", MANAGER], page.crumbs
    assert "Manager.Reset" in page.actions, page.actions
    assert "/redfish/v1/Managers/keel/Actions/Manager.Reset" in page.actions
    for v in get_json(keeld, MANAGER)["Actions"]["#Manager.Reset"]["ResetType@Redfish.AllowableValues"]:
        assert v in page.actions, f"ResetType value {v} not listed with the action: {page.actions!r}"
    assert "ResetType" in page.actions
    assert "keeld" in page.title
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp, csp
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


def test_collection_page_links_members(keeld):
    acct = keeld.create_account("htmluser", "Html-Test-Pass1")
    if acct.startswith("http"):
        acct = "/" + acct.split("/", 3)[3]
    page = Page(get_html(keeld, "/redfish/v1/AccountService/Accounts").text)
    assert acct in page.hrefs, page.hrefs
    assert page.crumbs[-1] == "/redfish/v1/AccountService/Accounts", page.crumbs


def test_a_browser_accept_header_gets_html(keeld):
    r = get_html(keeld, MANAGER, accept=BROWSER_ACCEPT)
    assert r.text.lstrip().lower().startswith("<!doctype html")


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/json, text/html;q=0.5",
                                    "text/html;q=0.5, application/json;q=0.9"])
def test_json_is_still_served(keeld, accept):
    headers = {"Accept": accept} if accept else {}
    r = keeld.admin().get(keeld.url + MANAGER, headers=headers)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json", (accept, r.headers["Content-Type"])
    assert r.json()["@odata.id"] == MANAGER


def test_html_values_are_escaped(keeld):
    """A value a user controls must not become markup (the subscription Context here)."""
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    r = keeld.admin().post(keeld.url + "/redfish/v1/EventService/Subscriptions",
                           json={"Destination": "https://127.0.0.1:9/x", "Protocol": "Redfish", "Context": evil})
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    r = get_html(keeld, loc)
    assert "<script" not in r.text.lower()
    assert "<img" not in r.text.lower()
    assert evil in "".join(Page(r.text).text), "the Context value is not shown as text"


def test_browser_without_credentials_gets_basic_challenge(keeld):
    r = requests.get(keeld.url + MANAGER, headers={"Accept": BROWSER_ACCEPT}, verify=False)
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers
    assert "/redfish/v1/Managers/keel/NetworkProtocol" not in r.text
    r = requests.get(keeld.url + MANAGER, headers={"Accept": BROWSER_ACCEPT}, auth=("admin", "wrong"), verify=False)
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers


# ------------------------------------------------------------------ a real browser


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.fixture
def chromium(tmp_path):
    exe = chromium_binary()
    if not exe:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()

    def run(url, *extra):
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--ignore-certificate-errors", *extra, url]
        p = subprocess.run(cmd, capture_output=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
        return p.stdout.decode("utf-8", "replace")

    return run


def browser_url(k, path, user=ADMIN[0], password=ADMIN[1]):
    return f"https://{user}:{password}@127.0.0.1:{k.port}{path}"


def test_chromium_renders_manager_with_links(keeld, chromium):
    dom = chromium(browser_url(keeld, MANAGER), "--dump-dom")
    page = Page(dom)
    for link in ("/redfish/v1/Managers/keel/NetworkProtocol", "/redfish/v1/Systems/system",
                 "/redfish/v1/Chassis/chassis", "/redfish/v1/Managers"):
        assert link in page.hrefs, f"{link} not a link in Chromium's DOM: {dom[:500]}"
    assert page.crumbs[-3:] == ["/redfish/v1", "/redfish/v1/Managers", MANAGER]
    assert "GracefulRestart" in page.actions and "ForceRestart" in page.actions
    assert "keeld" in page.title


def test_chromium_with_wrong_credentials_sees_no_resource(keeld, chromium):
    dom = chromium(browser_url(keeld, MANAGER, password="Wrong-Password1"), "--dump-dom")
    assert "/redfish/v1/Managers/keel/NetworkProtocol" not in dom
    assert "ServiceEntryPointUUID" not in dom


def test_chromium_screenshot(keeld, chromium, tmp_path):
    shot = tmp_path / "manager.png"
    chromium(browser_url(keeld, MANAGER), f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 900), (width, height)
    # A blank (or error) page compresses to a few KB; the rendered tables do not.
    assert len(data) > 30_000, f"screenshot is suspiciously small ({len(data)} bytes): {shot}"
    keep = os.environ.get("KEEL_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
