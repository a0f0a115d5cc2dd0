"""The Redfish protocol around every resource (DSP0266 §7, §8): headers, service documents,
HEAD, ETags and conditional requests, query options, paging, PATCH responses, Manager.Reset and
the OpenAPI document."""
import re
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import ADMIN, KEELD
from redfish_checks import (SCHEMAS, assert_error, client, crawl, norm_ct, odata_types_in, strip_volatile, wait_until)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

ROOT = "/redfish/v1"
AS = "/redfish/v1/AccountService"
ACCTS = "/redfish/v1/AccountService/Accounts"
SS = "/redfish/v1/SessionService"
SESS = "/redfish/v1/SessionService/Sessions"
MGR = "/redfish/v1/Managers/keel"
RESET = "/redfish/v1/Managers/keel/Actions/Manager.Reset"
EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
PW = "Quiet-Lamp-42"
JSON_CT = "application/json;charset=utf-8"


def get(k, path, auth=ADMIN, **kw):
    return client(k, auth).get(k.url + path, **kw)


def allow_of(r):
    return {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}


def describedby(r):
    for part in r.headers.get("Link", "").split(","):
        m = re.match(r"\s*<([^>]+)>\s*;(.*)", part)
        if m and re.search(r"\brel\s*=\s*\"?describedby\"?", m.group(2), re.I):
            return m.group(1)
    return None


def ids(members):
    return [m["@odata.id"] for m in members]


# ------------------------------------------------------------------ headers

def test_headers_on_every_resource(keeld):
    k = keeld
    s, _ = k.login(*ADMIN)
    pages = crawl(k, session=s)
    assert len(pages) > 20, sorted(pages)
    schema_pages = {}
    for uri, r in pages.items():
        assert r.status_code == 200, (uri, r.status_code, r.text[:300])
        assert r.headers.get("OData-Version") == "4.0", uri
        assert r.headers.get("Cache-Control"), uri
        assert norm_ct(r) == JSON_CT, (uri, r.headers.get("Content-Type"))
        assert re.fullmatch(r'(W/)?"[^"]+"', r.headers.get("ETag", "")), (uri, r.headers.get("ETag"))
        assert {"GET", "HEAD"} <= allow_of(r), (uri, r.headers.get("Allow"))
        body = r.json()
        assert body.get("@odata.id") == uri, (uri, body.get("@odata.id"))
        assert body.get("@odata.type", "").startswith("#"), uri
        link = describedby(r)
        assert link, (uri, r.headers.get("Link"))
        if link not in schema_pages:
            schema_pages[link] = s.get(k.url + link) if link.startswith("/") else requests.get(link, timeout=5)
        sr = schema_pages[link]
        assert sr.status_code == 200, (uri, link)
        # The schema named by the Link is the one of the resource's @odata.type.
        if link.startswith("/redfish/v1/JsonSchemas/"):
            assert sr.json()["Schema"] == body["@odata.type"], (uri, link, sr.json().get("Schema"))
    # The documents outside the resource tree and error responses carry the protocol headers too.
    others = [requests.get(k.url + "/redfish", verify=False), requests.get(k.url + ROOT + "/odata", verify=False),
              requests.get(k.url + ACCTS, verify=False), get(k, ROOT + "/Nope"), client(k, ADMIN).put(k.url + AS, json={}),
              client(k, ADMIN).patch(k.url + AS, json={"Nope": 1}), client(k, ADMIN).post(k.url + ACCTS, json={"UserName": "x"}),
              client(k, ADMIN).patch(k.url + AS, json={"AccountLockoutThreshold": 6}),
              client(k, ADMIN).post(k.url + ACCTS, json={"UserName": "hdr", "Password": PW, "RoleId": "ReadOnly"})]
    for r in others:
        assert r.headers.get("OData-Version") == "4.0", (r.url, r.status_code)
        assert r.headers.get("Cache-Control"), (r.url, r.status_code)
        assert norm_ct(r) == JSON_CT, (r.url, r.status_code, r.headers.get("Content-Type"))
    assert [r.status_code for r in others] == [200, 200, 401, 404, 405, 400, 400, 200, 201]


def test_redfish_version_document_is_exact(keeld):
    r = requests.get(keeld.url + "/redfish", verify=False)
    assert r.status_code == 200
    assert r.json() == {"v1": "/redfish/v1/"}
    assert requests.get(keeld.url + "/redfish/", verify=False).json() == {"v1": "/redfish/v1/"}


def test_odata_service_document_without_auth(keeld):
    k = keeld
    r = requests.get(k.url + ROOT + "/odata", verify=False)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["@odata.context"] == "/redfish/v1/$metadata"
    urls = {v["url"] for v in doc["value"]}
    assert ROOT in urls or ROOT + "/" in urls
    root = get(k, ROOT).json()
    # Every top-level resource of the service root is listed, and each one is there.
    for name, v in root.items():
        if isinstance(v, dict) and set(v) == {"@odata.id"}:
            assert v["@odata.id"] in urls, name
    for v in doc["value"]:
        assert {"name", "kind", "url"} <= set(v), v
        assert v["kind"] in ("Singleton", "EntitySet", "FunctionImport", "ServiceDocument"), v
        assert get(k, v["url"]).status_code == 200, v


def test_metadata_is_well_formed_and_references_every_type(keeld):
    k = keeld
    r = requests.get(k.url + ROOT + "/$metadata", verify=False)
    assert r.status_code == 200
    assert norm_ct(r).startswith("application/xml")
    assert r.headers.get("OData-Version") == "4.0"
    tree = ET.fromstring(r.content)
    assert tree.tag == f"{EDMX}Edmx" and tree.get("Version") == "4.0"
    included = {}
    for ref in tree.findall(f"{EDMX}Reference"):
        for inc in ref.findall(f"{EDMX}Include"):
            included[inc.get("Namespace")] = ref.get("Uri")
    # Every @odata.type the service returns, in resources and inside them.
    s, loc = k.login(*ADMIN)
    pages = crawl(k, session=s)
    types = set()
    for p in pages.values():
        types |= odata_types_in(p.json())
    types |= odata_types_in(client(k, ADMIN).patch(k.url + AS, json={"Id": "x", "AccountLockoutThreshold": 6}).json())
    assert any(t.startswith("#Session.") for t in types)
    for t in sorted(types):
        ns = t.lstrip("#").rsplit(".", 1)[0]
        assert ns in included, f"$metadata does not reference {ns} (from {t})"
    # Every reference is real: DMTF files define the namespaces included from them, local ones are served.
    for ns, uri in included.items():
        m = re.match(r"https?://redfish\.dmtf\.org/schemas/v1/([A-Za-z0-9_]+\.xml)$", uri)
        if m:
            f = SCHEMAS / "csdl" / m.group(1)
            if SCHEMAS.exists():
                assert f.exists(), uri
                assert f'Namespace="{ns}"' in f.read_text(), (ns, uri)
        else:
            assert uri.startswith("/redfish/v1/"), uri
            lr = requests.get(k.url + uri, verify=False)
            assert lr.status_code == 200, uri
            assert f'Namespace="{ns}"' in lr.text, (ns, uri)


def test_head_is_get_without_body(keeld):
    k = keeld
    skip = {"date", "content-length", "connection", "keep-alive"}
    for path in (ROOT, AS, ACCTS, ACCTS + "/1", "/redfish/v1/Registries/Base", "/redfish"):
        g = get(k, path)
        h = client(k, ADMIN).head(k.url + path)
        assert h.status_code == g.status_code == 200, path
        assert h.content == b"", path
        gh = {key.lower(): v for key, v in g.headers.items() if key.lower() not in skip}
        hh = {key.lower(): v for key, v in h.headers.items() if key.lower() not in skip}
        assert hh == gh, (path, hh, gh)
        if "content-length" in {x.lower() for x in h.headers}:
            assert int(h.headers["Content-Length"]) in (0, len(g.content)), path
    h = requests.head(k.url + ACCTS, verify=False)
    assert h.status_code == 401 and h.content == b""


# ------------------------------------------------------------------ ETags

def test_etag_header_equals_odata_etag(keeld):
    k = keeld
    for path in (ROOT, AS, ACCTS, ACCTS + "/1", SS, "/redfish/v1/Managers", "/redfish/v1/AccountService/Roles/ReadOnly"):
        r = get(k, path)
        assert r.json().get("@odata.etag") == r.headers.get("ETag"), (path, r.json().get("@odata.etag"), r.headers.get("ETag"))


def test_if_none_match_gives_304(keeld):
    k = keeld
    r = get(k, AS)
    etag = r.headers["ETag"]
    r = get(k, AS, headers={"If-None-Match": etag})
    assert r.status_code == 304, r.text
    assert r.content == b""
    assert r.headers.get("ETag") == etag
    assert get(k, AS, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert get(k, AS, headers={"If-None-Match": f'"x", {etag}'}).status_code == 304
    # After a change the old ETag no longer matches.
    assert client(k, ADMIN).patch(k.url + AS, json={"AccountLockoutThreshold": 9}).status_code == 200
    r = get(k, AS, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag


def test_if_match(keeld):
    k = keeld
    uri = k.create_account("ifm", PW, "ReadOnly")
    before = get(k, uri)
    etag = before.headers["ETag"]
    # Mismatch: 412, nothing changes (PATCH, DELETE, POST to an action-less collection with If-Match).
    r = client(k, ADMIN).patch(k.url + uri, json={"Enabled": False}, headers={"If-Match": '"not-the-etag"'})
    assert_error(r, 412, "PreconditionFailed")
    r = client(k, ADMIN).delete(k.url + uri, headers={"If-Match": '"not-the-etag"'})
    assert_error(r, 412, "PreconditionFailed")
    assert get(k, uri).json() == before.json()
    # Match: applied, and the response carries the new ETag.
    r = client(k, ADMIN).patch(k.url + uri, json={"Enabled": False}, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.json()["Enabled"] is False
    after = get(k, uri)
    assert r.headers.get("ETag") == after.headers["ETag"] != etag
    # The old ETag is stale now.
    r = client(k, ADMIN).patch(k.url + uri, json={"Enabled": True}, headers={"If-Match": etag})
    assert_error(r, 412, "PreconditionFailed")
    assert get(k, uri).json()["Enabled"] is False
    r = client(k, ADMIN).delete(k.url + uri, headers={"If-Match": after.headers["ETag"]})
    assert r.status_code in (200, 204)


def test_concurrent_patches_with_one_etag_exactly_one_wins(keeld):
    k = keeld
    clients = []
    for _ in range(4):
        s = requests.Session()
        s.verify = False
        s.auth = ADMIN
        assert s.get(k.url + AS).status_code == 200   # warm: connection open, credentials verified
        clients.append(s)
    for round_ in range(4):
        etag = clients[0].get(k.url + AS).headers["ETag"]
        barrier = threading.Barrier(4)
        results = [None] * 4

        def go(i):
            barrier.wait()
            results[i] = clients[i].patch(k.url + AS, json={"AccountLockoutThreshold": 20 + 10 * round_ + i}, headers={"If-Match": etag})

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 412, 412, 412], (round_, codes)
        winner = [i for i, r in enumerate(results) if r.status_code == 200][0]
        assert clients[0].get(k.url + AS).json()["AccountLockoutThreshold"] == 20 + 10 * round_ + winner


# ------------------------------------------------------------------ query options

def test_select(keeld):
    k = keeld
    full = get(k, AS).json()
    r = client(k, ADMIN).get(k.url + AS + "?$select=MinPasswordLength,Status/Health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.id"] == full["@odata.id"] and body["@odata.type"] == full["@odata.type"]
    if "@odata.etag" in full:
        assert body["@odata.etag"] == full["@odata.etag"]
    assert {x for x in body if not x.startswith("@odata.")} == {"MinPasswordLength", "Status"}
    assert body["MinPasswordLength"] == full["MinPasswordLength"]
    assert body["Status"] == {"Health": full["Status"]["Health"]}
    # On a collection: the Members stay links and only what was asked comes back.
    r = client(k, ADMIN).get(k.url + ACCTS + "?$select=Name")
    assert {x for x in r.json() if not x.startswith("@odata.")} == {"Name"}


def test_only_on_a_one_member_collection_returns_the_member(keeld):
    k = keeld
    r = client(k, ADMIN).get(k.url + "/redfish/v1/Managers?only")
    assert r.status_code == 200, r.text
    member = get(k, MGR).json()
    got = r.json()
    assert got["@odata.id"] == MGR
    drop = lambda v: {key: x for key, x in strip_volatile(v).items() if key != "@odata.etag"}
    assert drop(got) == drop(member)
    # More than one member (or none): the collection itself.
    k.create_account("only2", PW, "ReadOnly")
    r = client(k, ADMIN).get(k.url + ACCTS + "?only")
    assert r.json()["@odata.id"] == ACCTS and r.json()["Members@odata.count"] == 2
    r = client(k, ADMIN).get(k.url + SESS + "?only")
    assert r.json()["@odata.id"] == SESS and r.json()["Members"] == []


def collect(k, url, auth=ADMIN):
    """Follow Members@odata.nextLink from `url`; returns (pages, all members)."""
    pages, members = [], []
    seen = set()
    while url:
        assert url not in seen, f"nextLink loop at {url}"
        seen.add(url)
        r = client(k, auth).get(k.url + url if url.startswith("/") else url)
        assert r.status_code == 200, (url, r.text)
        body = r.json()
        pages.append(body)
        members.extend(ids(body["Members"]))
        url = body.get("Members@odata.nextLink")
        assert len(pages) < 20
    return pages, members


def test_top_skip_and_server_paging(keeld_factory):
    k = keeld_factory("--page-size", "2")
    for i in range(1, 5):
        k.create_account(f"pager{i}", PW, "ReadOnly")
    k.create_account("pageop", PW, "Operator")
    every = [f"{ACCTS}/{i}" for i in range(1, 7)]
    pages, members = collect(k, ACCTS)
    assert sorted(members) == sorted(every) and len(members) == len(set(members)) == 6
    assert [len(p["Members"]) for p in pages] == [2, 2, 2]
    assert all(p["Members@odata.count"] == 6 for p in pages)
    assert "Members@odata.nextLink" not in pages[-1]
    # $top and $skip are applied before paging, nextLink keeps them.
    _, top3 = collect(k, ACCTS + "?$top=3")
    assert top3 == members[:3]
    _, mid = collect(k, ACCTS + "?$skip=2&$top=3")
    assert mid == members[2:5]
    _, tail = collect(k, ACCTS + "?$skip=4")
    assert tail == members[4:]
    pages, none = collect(k, ACCTS + "?$skip=10")
    assert none == [] and pages[0]["Members@odata.count"] == 6
    # $filter too: every page holds only matches.
    pages, ro = collect(k, ACCTS + "?$filter=RoleId%20eq%20'ReadOnly'")
    assert sorted(ro) == sorted(f"{ACCTS}/{i}" for i in range(2, 6)), ro
    assert all(p["Members@odata.count"] == 4 for p in pages)


def expand_query(k, path, e):
    r = client(k, ADMIN).get(k.url + path, params={"$expand": e})
    assert r.status_code == 200, (path, e, r.text)
    return r.json()


def link_only(v):
    return isinstance(v, dict) and set(v) == {"@odata.id"}


def test_expand(keeld):
    k = keeld
    q = lambda path, e: expand_query(k, path, e)
    # `*`: both the subordinate resources and those under Links.
    m = q(MGR, "*")
    assert m["NetworkProtocol"]["@odata.id"] == MGR + "/NetworkProtocol" and "HTTPS" in m["NetworkProtocol"]
    assert m["Links"]["ManagerForServers"][0]["Id"] == "system"
    # `.`: not under Links.
    m = q(MGR, ".")
    assert "HTTPS" in m["NetworkProtocol"]
    assert link_only(m["Links"]["ManagerForServers"][0])
    # `~`: only under Links.
    m = q(MGR, "~")
    assert link_only(m["NetworkProtocol"])
    assert m["Links"]["ManagerForServers"][0]["Id"] == "system"
    # Members of a collection are expanded.
    r = q(ACCTS, ".")
    assert r["Members@odata.count"] == 1 and r["Members"][0]["UserName"] == "admin"
    # $levels: how deep; `.` never goes under Links, at any level.
    r = q(AS, ".")
    assert "Members" in r["Accounts"]
    assert link_only(r["Accounts"]["Members"][0])
    r = q(AS, ".($levels=2)")
    assert r["Accounts"]["Members"][0]["UserName"] == "admin"
    assert link_only(r["Accounts"]["Members"][0]["Links"]["Role"])
    r = q(AS, ".($levels=3)")
    assert link_only(r["Accounts"]["Members"][0]["Links"]["Role"])
    r = q(AS, "*($levels=2)")
    assert link_only(r["Accounts"]["Members"][0]["Links"]["Role"])
    r = q(AS, "*($levels=3)")
    assert set(r["Accounts"]["Members"][0]["Links"]["Role"]["AssignedPrivileges"]) >= {"Login", "ConfigureUsers"}
    r = q(AS + "/Accounts/1", "~")
    assert r["Links"]["Role"]["Id"] == "Administrator"


def test_expand_on_the_service_root_with_credentials(keeld):
    """The service root needs no authentication, but with credentials $expand shows what they may read."""
    k = keeld
    q = lambda e: expand_query(k, ROOT, e)
    r = q(".")
    assert r["AccountService"].get("Id") == "AccountService", r["AccountService"]
    assert link_only(r["AccountService"]["Accounts"]) and link_only(r["Links"]["Sessions"])
    r = q(".($levels=2)")
    assert "Members" in r["AccountService"]["Accounts"] and link_only(r["AccountService"]["Accounts"]["Members"][0])
    r = q("~")
    assert "Members" in r["Links"]["Sessions"] and link_only(r["AccountService"])
    r = q("*($levels=2)")
    assert r["Managers"]["Members"][0]["Id"] == "keel"
    # Without credentials nothing protected is expanded (and nothing fails).
    r = requests.get(k.url + ROOT, params={"$expand": "*"}, verify=False)
    assert r.status_code == 200 and link_only(r.json()["AccountService"])


def test_filter_on_accounts(keeld):
    k = keeld
    ro1 = k.create_account("ro1", PW, "ReadOnly")
    ro2 = k.create_account("ro2", PW, "ReadOnly")
    op1 = k.create_account("op1", PW, "Operator")
    admin = ACCTS + "/1"
    assert client(k, ADMIN).patch(k.url + ro2, json={"Enabled": False}).status_code == 200
    cases = {
        "RoleId eq 'ReadOnly'": {ro1, ro2},
        "RoleId ne 'ReadOnly'": {admin, op1},
        "RoleId eq 'ReadOnly' and Enabled eq false": {ro2},
        "RoleId eq 'Operator' or RoleId eq 'Administrator'": {admin, op1},
        "not (RoleId eq 'ReadOnly')": {admin, op1},
        "(RoleId eq 'ReadOnly' or RoleId eq 'Operator') and Enabled eq true": {ro1, op1},
        "RoleId eq 'ReadOnly' and (UserName eq 'ro1' or UserName eq 'op1')": {ro1},
        "UserName gt 'op1'": {ro1, ro2},
        "UserName eq 'nobody'": set(),
    }
    for expr, want in cases.items():
        r = client(k, ADMIN).get(k.url + ACCTS, params={"$filter": expr})
        assert r.status_code == 200, (expr, r.text)
        body = r.json()
        assert set(ids(body["Members"])) == want, expr
        assert body["Members@odata.count"] == len(want), expr
    for bad in ("RoleId eq", "RoleId eq 'ReadOnly' junk", "(RoleId eq 'ReadOnly'", "RoleId like 'Read%'"):
        r = client(k, ADMIN).get(k.url + ACCTS, params={"$filter": bad})
        assert_error(r, 400, "QueryParameterValueFormatError", "QueryParameterValueError", "QueryParameterValueTypeError", any_of=True)


def test_protocol_features_supported_advertises_exactly_what_works(keeld):
    k = keeld
    pfs = get(k, ROOT).json()["ProtocolFeaturesSupported"]
    known = {"DeepOperations", "ExcerptQuery", "ExpandQuery", "FilterQuery", "FilterQueryComparisonOperations",
             "FilterQueryCompoundOperations", "IncludeOriginOfConditionQuery", "MultipleHTTPRequests", "OnlyMemberQuery",
             "SelectQuery", "TopSkipQuery"}
    assert set(pfs) <= known, set(pfs) - known

    def works(path):
        return client(k, ADMIN).get(k.url + path).status_code == 200

    k.create_account("pf1", PW, "ReadOnly")
    probes = {
        "ExcerptQuery": works(MGR + "?excerpt"),
        "FilterQuery": works(ACCTS + "?$filter=RoleId%20eq%20'ReadOnly'"),
        "FilterQueryComparisonOperations": all(works(ACCTS + f"?$filter=UserName%20{op}%20'm'") for op in ("eq", "ne", "gt", "ge", "lt", "le")),
        "FilterQueryCompoundOperations": works(ACCTS + "?$filter=not%20(RoleId%20eq%20'x'%20or%20RoleId%20eq%20'y')%20and%20Enabled%20eq%20true"),
        "OnlyMemberQuery": client(k, ADMIN).get(k.url + "/redfish/v1/Managers?only").json().get("@odata.id") == MGR,
        "SelectQuery": set(client(k, ADMIN).get(k.url + AS + "?$select=Id").json()) <= {"Id", "@odata.id", "@odata.type", "@odata.etag", "@odata.context"},
        "TopSkipQuery": len(client(k, ADMIN).get(k.url + ACCTS + "?$top=1&$skip=1").json()["Members"]) == 1,
    }
    wrong = [f"{feature}: advertised {pfs.get(feature)}, works: {ok}" for feature, ok in probes.items() if bool(pfs.get(feature, False)) != ok]
    assert not wrong, wrong
    eq = pfs.get("ExpandQuery", {})
    exp = {
        "ExpandAll": works(MGR + "?$expand=*"),
        "NoLinks": works(MGR + "?$expand=."),
        "Links": works(MGR + "?$expand=~"),
        "Levels": works(ROOT + "?$expand=.($levels=2)"),
    }
    for feature, ok in exp.items():
        assert bool(eq.get(feature, False)) == ok, f"ExpandQuery.{feature}: advertised {eq.get(feature)}, works: {ok}"
    if eq.get("Levels"):
        n = eq["MaxLevels"]
        assert works(ROOT + f"?$expand=.($levels={n})")
        assert client(k, ADMIN).get(k.url + ROOT + f"?$expand=.($levels={n + 1})").status_code == 400
    # Not implemented, so not advertised.
    assert not pfs.get("DeepOperations", {}).get("DeepPATCH") and not pfs.get("DeepOperations", {}).get("DeepPOST")
    assert not pfs.get("IncludeOriginOfConditionQuery")


# ------------------------------------------------------------------ modifications

def test_patch_returns_the_updated_resource(keeld):
    k = keeld
    r = client(k, ADMIN).patch(k.url + AS, json={"AccountLockoutThreshold": 9, "MinPasswordLength": 11})
    assert r.status_code == 200, r.text
    assert norm_ct(r) == JSON_CT
    body = r.json()
    assert body["AccountLockoutThreshold"] == 9 and body["MinPasswordLength"] == 11
    g = get(k, AS)
    assert body == g.json()
    assert r.headers.get("ETag") == g.headers["ETag"]
    uri = k.create_account("patched", PW, "ReadOnly")
    r = client(k, ADMIN).patch(k.url + uri, json={"RoleId": "Operator"})
    assert r.status_code == 200
    assert r.json() == get(k, uri).json()
    assert r.json()["RoleId"] == "Operator" and r.json()["Links"]["Role"]["@odata.id"].endswith("/Operator")


def test_manager_reset_restarts_keeld(keeld):
    k = keeld
    before = get(k, MGR).json()["LastResetTime"]
    s, _ = k.login(*ADMIN)
    time.sleep(1.1)  # LastResetTime has one-second resolution
    r = client(k, ADMIN).post(k.url + RESET, json={"ResetType": "GracefulRestart"})
    assert r.status_code in (200, 202, 204), r.text

    def restarted():
        g = requests.get(k.url + MGR, auth=ADMIN, verify=False, timeout=2)
        return g.status_code == 200 and g.json()["LastResetTime"] != before and g.json()["LastResetTime"]

    after = wait_until(restarted, timeout=30)
    assert after, "LastResetTime never changed: keeld did not restart"
    assert after > before
    assert "restarting keeld" in k.logs()
    assert k.proc.poll() is None
    # It came back with its state: the session from before still works.
    assert s.get(k.url + ROOT + "/Systems").status_code == 200


# ------------------------------------------------------------------ OpenAPI

def openapi_paths(text):
    """{path: {method: ...}} of an OpenAPI YAML document: parsed by PyYAML when it is installed,
    else read from the block layout keeld writes (path keys at two spaces, methods at four)."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        doc = yaml.safe_load(text)
        assert str(doc["openapi"]).startswith("3."), doc.get("openapi")
        return doc["paths"]
    assert re.search(r"^openapi: ['\"]?3\.", text, re.M), text[:200]
    paths, cur, in_paths = {}, None, False
    for line in text.splitlines():
        if line and not line.startswith(" "):
            in_paths = line.rstrip() == "paths:"
            continue
        if not in_paths:
            continue
        m = re.match(r"^  (\S.*):\s*$", line)
        if m:
            cur = m.group(1).strip("'\"")
            paths[cur] = {}
            continue
        m = re.match(r"^    (get|put|post|patch|delete|head|options):", line)
        if m and cur:
            paths[cur][m.group(1)] = {}
    assert paths, "no paths in the OpenAPI document"
    return paths


def test_openapi_document_lists_every_route(keeld):
    k = keeld
    r = requests.get(k.url + ROOT + "/openapi.yaml", verify=False)
    assert r.status_code == 200, r.text
    paths = openapi_paths(r.text)
    templates = [(re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"), p) for p in paths]

    def route(uri):
        exact = [p for p in paths if p == uri]
        if exact:
            return exact[0]
        found = [p for rx, p in templates if rx.match(uri)]
        assert found, f"{uri} has no path in the OpenAPI document"
        return min(found, key=lambda p: p.count("{"))

    s, _ = k.login(*ADMIN)
    pages = crawl(k, session=s)
    root = pages[ROOT].json()
    extra_get = ["/redfish", ROOT + "/odata", ROOT + "/$metadata", ROOT + "/openapi.yaml",
                 get(k, "/redfish/v1/EventService").json()["ServerSentEventUri"]]
    for uri, page in pages.items():
        p = route(uri)
        for m in allow_of(page) - {"HEAD"}:
            assert m.lower() in paths[p], f"{m} {uri} missing under {p}"
        body = page.json()
        for action in body.get("Actions", {}).values():
            if isinstance(action, dict) and "target" in action:
                assert "post" in paths[route(action["target"])], action["target"]
        for loc in body.get("Location", []):
            if "Uri" in loc:
                extra_get.append(loc["Uri"])
    for uri in extra_get:
        assert "get" in paths[route(uri)], uri
    assert "post" in paths[route(SESS + "/Members")]
    assert "post" in paths[route(SESS)] and "post" in paths[route(ACCTS)]
    assert root["@odata.id"] == ROOT
    # The document served is the one `keeld openapi` prints.
    out = subprocess.run([KEELD, "openapi"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout == r.text
