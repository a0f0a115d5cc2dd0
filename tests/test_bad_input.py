"""Every class of bad request: the right HTTP status, the right Base registry MessageId in the
`error` body, no secret echoed back, and nothing changed afterwards (DSP0266 §7.5.2: a 4XX means
the resource was not modified)."""
import base64
import json
import time

import pytest
import requests

from conftest import ADMIN
from redfish_checks import BASE, assert_error, assert_no_secret, check_message, client, snapshot

ROOT = "/redfish/v1"
AS = "/redfish/v1/AccountService"
ACCTS = "/redfish/v1/AccountService/Accounts"
SS = "/redfish/v1/SessionService"
SESS = "/redfish/v1/SessionService/Sessions"
ES = "/redfish/v1/EventService"
SUBS = "/redfish/v1/EventService/Subscriptions"
MGR = "/redfish/v1/Managers/keel"
RESET = "/redfish/v1/Managers/keel/Actions/Manager.Reset"
ROLE_ADMIN = "/redfish/v1/AccountService/Roles/Administrator"

PW_RO = "Quiet-Lamp-42"
PW_OP = "Stone-Bridge-42"
NEW_PW = "Brand-New-Pass-77"
JSON_CT = {"Content-Type": "application/json"}

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture
def k(keeld):
    """keeld with a ReadOnly account `reader` and an Operator account `oper`."""
    keeld.reader_uri = keeld.create_account("reader", PW_RO, "ReadOnly")
    keeld.oper_uri = keeld.create_account("oper", PW_OP, "Operator")
    return keeld


def send(k, method, path, body=None, raw=None, headers=None, auth=ADMIN):
    """One request; `body` is sent as JSON, `raw` as bytes with a JSON Content-Type."""
    h = dict(JSON_CT) if (body is not None or raw is not None) else {}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return client(k, auth).request(method, k.url + path, data=data, headers=h)


def account_count(k):
    return k.get(ACCTS).json()["Members@odata.count"]


def login_ok(k, user, password):
    r = requests.post(k.url + SESS, json={"UserName": user, "Password": password}, verify=False)
    return r.status_code == 201


def related(e, key):
    """RelatedProperties of the messages with `key`."""
    out = []
    for m in e["@Message.ExtendedInfo"]:
        if m["MessageId"] == f"{BASE}.{key}":
            out.extend(m.get("RelatedProperties", []))
    return out


def args_of(e, key):
    return [m.get("MessageArgs", []) for m in e["@Message.ExtendedInfo"] if m["MessageId"] == f"{BASE}.{key}"]


# ------------------------------------------------------------------ request bodies

def test_malformed_json_is_400_malformed_json(keeld):
    k = keeld
    before = snapshot(k)
    for raw in (b'{"MinPasswordLength": ', b'{"MinPasswordLength": 9,}', b"{'MinPasswordLength': 9}",
                b'{"MinPasswordLength": 9}{"MaxPasswordLength": 20}', b'{"MinPasswordLength": 0x10}', b'\xff\xfe{"a": 1}'):
        assert_error(send(k, "PATCH", AS, raw=raw), 400, "MalformedJSON")
    secret = "Sekrit-Pass-77x"
    r = send(k, "POST", ACCTS, raw=('{"UserName": "mallory", "Password": "%s", "RoleId": "ReadOnly"' % secret).encode())
    assert_error(r, 400, "MalformedJSON")
    assert_no_secret(r, secret)
    # Login is unauthenticated: same answer, no token, no echo of the password.
    r = send(k, "POST", SESS, raw=('{"UserName": "admin", "Password": "%s",' % ADMIN[1]).encode(), auth=None)
    assert_error(r, 400, "MalformedJSON")
    assert "X-Auth-Token" not in r.headers
    assert_no_secret(r, ADMIN[1])
    assert snapshot(k) == before


def test_empty_body_on_patch_is_400(keeld):
    k = keeld
    before = snapshot(k)
    for raw in (b"", b"   \n"):
        assert_error(send(k, "PATCH", AS, raw=raw), 400, "MalformedJSON", "EmptyJSON", "UnrecognizedRequestBody", any_of=True)
    assert snapshot(k) == before


def test_non_object_json_is_400(k):
    before = snapshot(k)
    for raw in (b"[]", b'[{"MinPasswordLength": 9}]', b'"MinPasswordLength"', b"42", b"null", b"true"):
        assert_error(send(k, "PATCH", AS, raw=raw), 400, "UnrecognizedRequestBody", "MalformedJSON", any_of=True)
        assert_error(send(k, "PATCH", k.reader_uri, raw=raw), 400, "UnrecognizedRequestBody", "MalformedJSON", any_of=True)
    r = send(k, "POST", ACCTS, raw=json.dumps([{"UserName": "arr", "Password": NEW_PW, "RoleId": "ReadOnly"}]).encode())
    assert_error(r, 400, "UnrecognizedRequestBody", "MalformedJSON", any_of=True)
    assert_no_secret(r, NEW_PW)
    assert snapshot(k) == before


def test_wrong_property_types_are_400_property_value_type_error(k):
    before = snapshot(k)
    cases = [
        (AS, {"MinPasswordLength": "ten"}, "MinPasswordLength"),
        (AS, {"MinPasswordLength": 9.5}, "MinPasswordLength"),
        (AS, {"MinPasswordLength": True}, "MinPasswordLength"),
        (AS, {"MinPasswordLength": None}, "MinPasswordLength"),
        (AS, {"AccountLockoutThreshold": [3]}, "AccountLockoutThreshold"),
        (SS, {"SessionTimeout": "600"}, "SessionTimeout"),
        (ES, {"ServiceEnabled": "yes"}, "ServiceEnabled"),
        (k.reader_uri, {"Enabled": "false"}, "Enabled"),
        (k.reader_uri, {"Enabled": 0}, "Enabled"),
        (k.reader_uri, {"UserName": 7}, "UserName"),
        (k.reader_uri, {"RoleId": ["ReadOnly"]}, "RoleId"),
        (k.reader_uri, {"Locked": "false"}, "Locked"),
    ]
    for path, body, prop in cases:
        e = assert_error(send(k, "PATCH", path, body), 400, "PropertyValueTypeError")
        assert f"#/{prop}" in related(e, "PropertyValueTypeError"), (body, e)
        assert any(prop in a[1] for a in args_of(e, "PropertyValueTypeError")), (body, e)
    # A wrong type on create: nothing is created.
    e = assert_error(send(k, "POST", ACCTS, {"UserName": 12345, "Password": NEW_PW, "RoleId": "ReadOnly"}), 400, "PropertyValueTypeError")
    assert "#/UserName" in related(e, "PropertyValueTypeError")
    e = assert_error(send(k, "POST", ACCTS, {"UserName": "typed", "Password": NEW_PW, "RoleId": "ReadOnly", "Enabled": "yes"}), 400, "PropertyValueTypeError")
    assert "#/Enabled" in related(e, "PropertyValueTypeError")
    # A password of the wrong type is still a secret: it must not be echoed.
    r = send(k, "POST", ACCTS, {"UserName": "typed", "Password": 98765432123, "RoleId": "ReadOnly"})
    assert_error(r, 400, "PropertyValueTypeError")
    assert_no_secret(r, "98765432123")
    r = send(k, "POST", SESS, {"UserName": "admin", "Password": ["Keel-Test-Pass1"]}, auth=None)
    assert_error(r, 400, "PropertyValueTypeError")
    assert_no_secret(r, ADMIN[1])
    assert "X-Auth-Token" not in r.headers
    assert snapshot(k) == before


def test_unknown_properties_are_400_property_unknown_and_change_nothing(k):
    before = snapshot(k)
    e = assert_error(send(k, "PATCH", k.reader_uri, {"Bogus": 1}), 400, "PropertyUnknown")
    assert args_of(e, "PropertyUnknown") == [["Bogus"]]
    assert related(e, "PropertyUnknown") == ["#/Bogus"]
    # A valid property next to an unknown one is not applied either.
    assert_error(send(k, "PATCH", k.reader_uri, {"Enabled": False, "Bogus": 1}), 400, "PropertyUnknown")
    assert_error(send(k, "PATCH", AS, {"MinPasswordLength": 12, "Nope": True}), 400, "PropertyUnknown")
    assert_error(send(k, "PATCH", SS, {"SessionTimeout": 600, "Timeout": 600}), 400, "PropertyUnknown")
    # ... and the valid one was really not applied:
    assert k.get(k.reader_uri).json()["Enabled"] is True
    assert k.get(AS).json()["MinPasswordLength"] == 8
    # Create with an extra property: nothing created.
    r = send(k, "POST", ACCTS, {"UserName": "extra", "Password": NEW_PW, "RoleId": "ReadOnly", "Favourite": "x"})
    assert_error(r, 400, "PropertyUnknown")
    assert_no_secret(r, NEW_PW)
    # Login with an extra property: no session.
    r = send(k, "POST", SESS, {"UserName": "admin", "Password": ADMIN[1], "Bogus": 1}, auth=None)
    assert_error(r, 400, "PropertyUnknown")
    assert "X-Auth-Token" not in r.headers
    assert_no_secret(r, ADMIN[1])
    assert snapshot(k) == before


def test_read_only_property_alone_is_400_property_not_writable(k):
    before = snapshot(k)
    for path, body, prop in [
        (k.reader_uri, {"Id": "99"}, "Id"),
        (k.reader_uri, {"AccountTypes": ["Redfish"]}, "AccountTypes"),
        (AS, {"ServiceEnabled": False}, "ServiceEnabled"),
        (AS, {"PasswordGuidanceMessage": "anything"}, "PasswordGuidanceMessage"),
        (SS, {"ServiceEnabled": False}, "ServiceEnabled"),
        (ROOT + "/Systems/system", {"PowerState": "Off"}, None),
    ]:
        r = send(k, "PATCH", path, body)
        if prop is None:
            # No PATCH at all on this resource: 405 (DSP0266 §7.6, every property read-only).
            assert_error(r, 405)
            continue
        e = assert_error(r, 400, "PropertyNotWritable")
        assert args_of(e, "PropertyNotWritable") == [[prop]], e
        assert related(e, "PropertyNotWritable") == [f"#/{prop}"], e
    assert snapshot(k) == before


def test_read_only_mixed_with_writable_applies_the_writable_one(k):
    r = send(k, "PATCH", k.reader_uri, {"Id": "99", "Enabled": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Enabled"] is False and body["Id"] == k.reader_uri.rsplit("/", 1)[1]
    info = body.get("@Message.ExtendedInfo")
    assert isinstance(info, list) and info, body
    for m in info:
        check_message(m)
    nw = [m for m in info if m["MessageId"] == f"{BASE}.PropertyNotWritable"]
    assert [m["MessageArgs"] for m in nw] == [["Id"]], info
    got = k.get(k.reader_uri).json()
    assert got["Enabled"] is False and got["Id"] == body["Id"]
    assert "@Message.ExtendedInfo" not in got
    r = send(k, "PATCH", AS, {"MinPasswordLength": 10, "ServiceEnabled": False})
    assert r.status_code == 200, r.text
    assert [m["MessageArgs"] for m in r.json()["@Message.ExtendedInfo"] if m["MessageId"].endswith(".PropertyNotWritable")] == [["ServiceEnabled"]]
    got = k.get(AS).json()
    assert got["MinPasswordLength"] == 10 and got["ServiceEnabled"] is True


def test_patch_of_only_odata_annotations_changes_nothing(k):
    """DSP0266 §7.6: annotations in a PATCH body are ignored; a body of annotations only is a
    400 NoOperation (or a success that changes nothing)."""
    before = snapshot(k)
    r = send(k, "PATCH", k.reader_uri, {"@odata.id": "/redfish/v1/elsewhere", "@odata.type": "#Foo.v1_0_0.Foo"})
    if r.status_code >= 400:
        assert_error(r, 400, "NoOperation")
    else:
        assert r.status_code in (200, 204), r.text
    assert snapshot(k) == before


def test_values_out_of_range_or_not_in_list(k):
    before = snapshot(k)
    out_of_range = [
        (AS, {"MinPasswordLength": 3}, "MinPasswordLength"),
        (AS, {"MinPasswordLength": 65}, "MinPasswordLength"),
        (AS, {"AccountLockoutThreshold": -1}, "AccountLockoutThreshold"),
        (AS, {"AccountLockoutCounterResetAfter": 0}, "AccountLockoutCounterResetAfter"),
        (SS, {"SessionTimeout": 29}, "SessionTimeout"),
        (SS, {"SessionTimeout": 86401}, "SessionTimeout"),
        (ES, {"DeliveryRetryAttempts": 21}, "DeliveryRetryAttempts"),
    ]
    for path, body, prop in out_of_range:
        e = assert_error(send(k, "PATCH", path, body), 400, "PropertyValueOutOfRange")
        assert f"#/{prop}" in related(e, "PropertyValueOutOfRange"), e
        assert args_of(e, "PropertyValueOutOfRange")[0][0] == str(body[prop]), e
    # Each in range, but the minimum above the maximum.
    assert_error(send(k, "PATCH", AS, {"MinPasswordLength": 20, "MaxPasswordLength": 16}), 400, "PropertyValueOutOfRange")
    for body, prop in [({"RoleId": "King"}, "RoleId"), ({"RoleId": "administrator"}, "RoleId")]:
        e = assert_error(send(k, "PATCH", k.reader_uri, body), 400, "PropertyValueNotInList")
        assert args_of(e, "PropertyValueNotInList") == [[body[prop], prop]], e
    # Locked can only be cleared, never set.
    assert_error(send(k, "PATCH", k.reader_uri, {"Locked": True}), 400, "PropertyValueNotInList", "PropertyValueIncorrect", any_of=True)
    r = send(k, "POST", ACCTS, {"UserName": "rooty", "Password": NEW_PW, "RoleId": "Root"})
    e = assert_error(r, 400, "PropertyValueNotInList")
    assert related(e, "PropertyValueNotInList") == ["#/RoleId"]
    assert_no_secret(r, NEW_PW)
    assert_error(send(k, "POST", ACCTS, {"UserName": "snmp", "Password": NEW_PW, "RoleId": "ReadOnly", "AccountTypes": ["SNMP"]}), 400, "PropertyValueNotInList")
    assert snapshot(k) == before


def test_missing_required_properties_on_create(k):
    before = snapshot(k)
    e = assert_error(send(k, "POST", ACCTS, {"UserName": "nopass"}), 400, "CreateFailedMissingReqProperties")
    assert sorted(a[0] for a in args_of(e, "CreateFailedMissingReqProperties")) == ["Password", "RoleId"]
    e = assert_error(send(k, "POST", ACCTS, {"Password": NEW_PW, "RoleId": "ReadOnly"}), 400, "CreateFailedMissingReqProperties")
    assert args_of(e, "CreateFailedMissingReqProperties") == [["UserName"]]
    e = assert_error(send(k, "POST", ACCTS, {}), 400, "CreateFailedMissingReqProperties")
    assert sorted(a[0] for a in args_of(e, "CreateFailedMissingReqProperties")) == ["Password", "RoleId", "UserName"]
    r = send(k, "POST", SESS, {"UserName": "admin"}, auth=None)
    assert_error(r, 400, "CreateFailedMissingReqProperties", "PropertyMissing", any_of=True)
    assert "X-Auth-Token" not in r.headers
    assert_error(send(k, "POST", SUBS, {"Context": "no destination"}), 400, "CreateFailedMissingReqProperties")
    assert snapshot(k) == before


def test_oversized_bodies_are_413(keeld_factory):
    k = keeld_factory("--max-body", "4096")
    before = snapshot(k)
    pad = "x" * 5000
    assert_error(send(k, "PATCH", AS, {"MinPasswordLength": 9, "Pad": pad}), 413, "PayloadTooLarge")
    r = send(k, "POST", ACCTS, {"UserName": "big", "Password": NEW_PW, "RoleId": "ReadOnly", "Pad": pad})
    assert_error(r, 413, "PayloadTooLarge")
    assert_no_secret(r, NEW_PW)
    assert_error(send(k, "POST", SESS, {"UserName": "admin", "Password": ADMIN[1], "Pad": pad}, auth=None), 413, "PayloadTooLarge")

    # Without Content-Length (chunked): the limit holds while reading.
    def chunks():
        yield b'{"MinPasswordLength": 9, "Pad": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'
    r = requests.patch(k.url + AS, data=chunks(), headers=JSON_CT, auth=ADMIN, verify=False)
    assert_error(r, 413, "PayloadTooLarge")
    assert snapshot(k) == before
    # Just under the limit is fine: the limit is the configured one, not lower.
    raw = b'{"MinPasswordLength": 9}'
    raw = raw[:-1] + b" " * (4000 - len(raw)) + b"}"
    r = send(k, "PATCH", AS, raw=raw)
    assert r.status_code == 200, r.text
    assert k.get(AS).json()["MinPasswordLength"] == 9


def test_wrong_content_type_is_415(keeld):
    k = keeld
    before = snapshot(k)
    body = json.dumps({"MinPasswordLength": 9})
    header_invalid = []
    for ct in ("text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        e = assert_error(send(k, "PATCH", AS, raw=body.encode(), headers={"Content-Type": ct}), 415)
        header_invalid += [(ct, m) for m in e["@Message.ExtendedInfo"] if m["MessageId"].endswith(".HeaderInvalid")]
    r = send(k, "POST", ACCTS, raw=json.dumps({"UserName": "texty", "Password": NEW_PW, "RoleId": "ReadOnly"}).encode(),
             headers={"Content-Type": "text/plain"})
    assert_error(r, 415)
    assert_no_secret(r, NEW_PW)
    r = requests.post(k.url + SESS, data={"UserName": "admin", "Password": ADMIN[1]}, verify=False)  # form-encoded
    assert_error(r, 415)
    assert "X-Auth-Token" not in r.headers
    assert_no_secret(r, ADMIN[1])
    assert snapshot(k) == before
    # application/json with a charset parameter is JSON.
    r = send(k, "PATCH", AS, raw=body.encode(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    # HeaderInvalid's argument is "the full request header, including the field name and field value".
    for ct, m in header_invalid:
        assert "Content-Type" in m["MessageArgs"][0] and ct.split(";")[0] in m["MessageArgs"][0], m


def test_empty_patch_is_400_empty_json(k):
    before = snapshot(k)
    for path in (AS, SS, ES, k.reader_uri):
        assert_error(send(k, "PATCH", path, {}), 400, "EmptyJSON")
    assert snapshot(k) == before


# ------------------------------------------------------------------ authentication and privileges

UNAUTH_REQUESTS = [
    ("GET", ROOT + "/Systems", None),
    ("GET", ACCTS, None),
    ("GET", MGR, None),
    ("GET", ROOT + "/NoSuchThing", None),
    ("PATCH", AS, {"MinPasswordLength": 12}),
    ("POST", ACCTS, {"UserName": "sneaky", "Password": NEW_PW, "RoleId": "Administrator"}),
    ("POST", RESET, {"ResetType": "ForceRestart"}),
    ("PUT", AS, {"MinPasswordLength": 12}),
]


def check_401(r, *secrets):
    assert_error(r, 401, "NoValidSession", "AccessUnauthorized", any_of=True)
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic"), r.headers
    assert_no_secret(r, *secrets)


def test_unauthenticated_requests_are_401_with_www_authenticate(k):
    before = snapshot(k)
    for method, path, body in UNAUTH_REQUESTS + [("DELETE", k.reader_uri, None)]:
        check_401(send(k, method, path, body, auth=None))
    # A wrong Basic password (admin: two failures, below the lockout threshold).
    wrong = "Wrong-Pass-1234"
    for method, path, body in [("GET", ROOT + "/Systems", None), ("PATCH", AS, {"MinPasswordLength": 12})]:
        check_401(send(k, method, path, body, auth=("admin", wrong)), wrong)
    # An unknown user answers exactly like a wrong password: no account enumeration.
    r_unknown = send(k, "GET", ROOT + "/Systems", auth=("nobody", wrong))
    check_401(r_unknown, wrong)
    r_wrong = send(k, "GET", ROOT + "/Systems", auth=("reader", wrong))
    check_401(r_wrong, wrong)
    assert r_unknown.json() == r_wrong.json()
    # A made-up session token.
    bogus = "0123456789abcdef" * 4
    for method, path, body in UNAUTH_REQUESTS:
        check_401(send(k, method, path, body, auth=None, headers={"X-Auth-Token": bogus}), bogus)
    # Garbage in Authorization.
    for h in ("Basic !!!not-base64!!!", "Bearer abc.def.ghi", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest username=admin"):
        check_401(send(k, "GET", ROOT + "/Systems", auth=None, headers={"Authorization": h}))
    assert snapshot(k) == before


def test_under_privileged_requests_are_403_insufficient_privilege(k):
    admin_s, admin_session = k.login(*ADMIN)
    before = snapshot(k)
    reader_s, _ = k.login("reader", PW_RO)
    reader_token = reader_s.headers["X-Auth-Token"]
    attempts = [
        ("POST", ACCTS, {"UserName": "escalate", "Password": NEW_PW, "RoleId": "Administrator"}),
        ("PATCH", "/redfish/v1/AccountService/Accounts/1", {"PasswordChangeRequired": True}),
        ("PATCH", "/redfish/v1/AccountService/Accounts/1", {"Password": NEW_PW}),
        ("PATCH", AS, {"MinPasswordLength": 12}),
        ("PATCH", SS, {"SessionTimeout": 600}),
        ("PATCH", ES, {"DeliveryRetryAttempts": 1}),
        ("DELETE", "/redfish/v1/AccountService/Accounts/1", None),
        ("POST", RESET, {"ResetType": "GracefulRestart"}),
    ]
    for user, pw, own, token in (("reader", PW_RO, k.reader_uri, reader_token), ("oper", PW_OP, k.oper_uri, None)):
        other = k.oper_uri if user == "reader" else k.reader_uri
        mine = attempts + [
            ("PATCH", other, {"Password": NEW_PW}),
            ("PATCH", other, {"Enabled": False}),
            ("DELETE", other, None),
            # No escalation through one's own account.
            ("PATCH", own, {"RoleId": "Administrator"}),
            ("PATCH", own, {"Enabled": False}),
        ]
        for method, path, body in mine:
            r = send(k, method, path, body, auth=(user, pw))
            assert_error(r, 403, "InsufficientPrivilege")
            assert_no_secret(r, pw, NEW_PW)
            if token:  # the same with a session token
                r = send(k, method, path, body, auth=None, headers={"X-Auth-Token": token})
                assert_error(r, 403, "InsufficientPrivilege")
                assert_no_secret(r, token, NEW_PW, admin_s.headers["X-Auth-Token"])
    time.sleep(0.5)  # a Manager.Reset that slipped through would restart keeld after 300 ms
    assert "restarting keeld" not in k.logs()
    # Everything as before, except the reader's own new session.
    after = snapshot(k)
    sess_members = [m for m in after[SESS]["Members"] if m not in before[SESS]["Members"]]
    assert len(sess_members) == 1
    for m in sess_members:
        after.pop(m["@odata.id"])
    after[SESS]["Members"] = [m for m in after[SESS]["Members"] if m not in sess_members]
    after[SESS]["Members@odata.count"] -= 1
    after[SESS].pop("@odata.etag", None)
    before[SESS].pop("@odata.etag", None)
    assert after == before
    # Someone else's session: ReadOnly and Operator may not end it (by Basic or by token).
    for r in (send(k, "DELETE", admin_session, auth=("reader", PW_RO)),
              send(k, "DELETE", admin_session, auth=("oper", PW_OP)),
              send(k, "DELETE", admin_session, auth=None, headers={"X-Auth-Token": reader_token})):
        assert_no_secret(r, reader_token, admin_s.headers["X-Auth-Token"])
        assert admin_s.get(k.url + MGR).status_code == 200, "the administrator's session was ended"
        assert_error(r, 403, "InsufficientPrivilege")


def test_unknown_uris_are_404_resource_missing_at_uri(k):
    before = snapshot(k)
    for auth in (ADMIN, ("reader", PW_RO)):
        for path in (ROOT + "/NoSuchThing", AS + "/Nope", "/redfish/v2", MGR + "/Nope/Deeper", ROOT + "/Systems/system/Bogus"):
            e = assert_error(send(k, "GET", path, auth=auth), 404, "ResourceMissingAtURI")
            assert args_of(e, "ResourceMissingAtURI") == [[path]], e
    for method, path, body in [("PATCH", ROOT + "/NoSuchThing", {"A": 1}), ("POST", ROOT + "/NoSuchThing", {"A": 1}),
                               ("DELETE", ROOT + "/NoSuchThing", None), ("PUT", ROOT + "/NoSuchThing", {"A": 1})]:
        assert_error(send(k, method, path, body), 404, "ResourceMissingAtURI")
    # Members that do not exist in existing collections.
    for method, path in [("GET", ACCTS + "/999"), ("PATCH", ACCTS + "/999"), ("DELETE", ACCTS + "/999"),
                         ("GET", ROOT + "/Systems/nosuch"), ("GET", SESS + "/nosuch"), ("DELETE", SESS + "/nosuch"),
                         ("GET", SUBS + "/nosuch"), ("GET", ROOT + "/AccountService/Roles/Root")]:
        body = {"Enabled": False} if method == "PATCH" else None
        assert_error(send(k, method, path, body), 404, "ResourceMissingAtURI", "ResourceNotFound", any_of=True)
    assert snapshot(k) == before


def test_unsupported_methods_are_405_with_allow(k):
    before = snapshot(k)
    paths = [ROOT, AS, ACCTS, k.reader_uri, SESS, ROLE_ADMIN, MGR, ROOT + "/Systems/system", ES, SUBS, "/redfish/v1/Registries/Base"]
    for path in paths:
        g = k.get(path)
        assert g.status_code == 200, (path, g.text)
        allowed = {m.strip() for m in g.headers["Allow"].split(",")}
        r = send(k, "PUT", path, {"Name": "replaced"} if path == AS else None)
        assert_error(r, 405)
        assert "Allow" in r.headers, (path, r.headers)
        got = {m.strip() for m in r.headers["Allow"].split(",")}
        assert got == allowed, (path, got, allowed)
        assert "PUT" not in got
    for method, path, body in [("POST", AS, {"A": 1}), ("DELETE", AS, None), ("PATCH", ACCTS, {"Name": "x"}),
                               ("DELETE", ROOT, None), ("POST", MGR, {}), ("PATCH", ROLE_ADMIN, {"AssignedPrivileges": ["Login"]}),
                               ("DELETE", ROLE_ADMIN, None), ("POST", ROOT + "/AccountService/Roles", {"RoleId": "Custom"}),
                               ("DELETE", SESS, None), ("PATCH", MGR, {"DateTime": "2020-01-01T00:00:00Z"})]:
        r = send(k, method, path, body)
        assert_error(r, 405)
        allow = {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}
        assert allow and method not in allow, (method, path, r.headers)
    r = send(k, "GET", RESET)
    assert_error(r, 405)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"POST"}
    # Public resources answer 405 without authentication; protected ones want credentials first.
    r = send(k, "PUT", ROOT, {"Name": "x"}, auth=None)
    assert_error(r, 405)
    assert "Allow" in r.headers
    check_401(send(k, "PUT", AS, {"MinPasswordLength": 9}, auth=None))
    assert snapshot(k) == before


# ------------------------------------------------------------------ query options and headers

def test_unknown_dollar_query_parameter_is_501(keeld):
    k = keeld
    for path, q in [(AS, "$bogus=1"), (ACCTS, "$orderby=UserName"), (ROOT, "$count=true"), (ACCTS, "$search=admin")]:
        r = requests.get(f"{k.url}{path}?{q}", auth=ADMIN, verify=False)
        e = assert_error(r, 501, "QueryParameterUnsupported")
        assert args_of(e, "QueryParameterUnsupported") == [[q.split("=")[0]]], e
    # Unknown parameters without `$` are ignored.
    r = requests.get(f"{k.url}{AS}?foo=bar", auth=ADMIN, verify=False)
    assert r.status_code == 200


def test_bad_top_and_skip_values_are_400(keeld):
    k = keeld
    keys = ("QueryParameterValueTypeError", "QueryParameterValueFormatError", "QueryParameterValueError", "QueryParameterOutOfRange")
    # $top: a non-negative integer, minimum 1 (DSP0266 §7.3).
    for v in ("abc", "-1", "1.5", ""):
        r = client(k, ADMIN).get(f"{k.url}{ACCTS}?$top={v}")
        assert_error(r, 400, *keys, any_of=True)
    for v in ("abc", "-1", "2x"):
        r = client(k, ADMIN).get(f"{k.url}{ACCTS}?$skip={v}")
        assert_error(r, 400, *keys, any_of=True)
    r = client(k, ADMIN).get(f"{k.url}{ACCTS}?$top=0")
    assert_error(r, 400, *keys, any_of=True)


def test_collection_query_parameters_on_a_singular_resource_are_400(keeld):
    k = keeld
    """DSP0266 §7.3: $filter, $top, $skip and only apply to collections only."""
    for q in ("$top=1", "$skip=1", "$filter=Id eq 'x'", "only"):
        r = requests.get(f"{k.url}{AS}?{q}", auth=ADMIN, verify=False)
        assert_error(r, 400, "QueryNotSupportedOnResource")


def test_only_combined_with_other_options_is_400_query_combination_invalid(keeld):
    k = keeld
    for q in ("only&$select=Id", "$select=Id&only", "only&$expand=.", "only&$top=1", "only&$skip=0", "only&$filter=Id eq 'keel'"):
        r = requests.get(f"{k.url}/redfish/v1/Managers?{q}", auth=ADMIN, verify=False)
        assert_error(r, 400, "QueryCombinationInvalid")
    # `only` takes no value.
    r = requests.get(f"{k.url}/redfish/v1/Managers?only=1", auth=ADMIN, verify=False)
    assert_error(r, 400, "QueryParameterValueFormatError", "QueryParameterValueTypeError", "QueryParameterValueError", any_of=True)


def test_unsupported_odata_version_is_412(keeld):
    k = keeld
    before = snapshot(k)
    header_invalid = []
    for method, path, body in [("GET", AS, None), ("GET", ROOT, None), ("PATCH", AS, {"MinPasswordLength": 12}),
                               ("POST", ACCTS, {"UserName": "odata", "Password": NEW_PW, "RoleId": "ReadOnly"})]:
        r = send(k, method, path, body, headers={"OData-Version": "4.1"})
        e = assert_error(r, 412)
        header_invalid += [m for m in e["@Message.ExtendedInfo"] if m["MessageId"].endswith(".HeaderInvalid")]
        assert_no_secret(r, NEW_PW)
    assert snapshot(k) == before
    assert send(k, "GET", AS, headers={"OData-Version": "4.0"}).status_code == 200
    # HeaderInvalid's argument is "the full request header, including the field name and field value".
    for m in header_invalid:
        assert "OData-Version" in m["MessageArgs"][0] and "4.1" in m["MessageArgs"][0], m


def test_bad_action_parameters_on_manager_reset(keeld):
    k = keeld
    started = k.get(MGR).json()["LastResetTime"]
    e = assert_error(send(k, "POST", RESET, {"ResetType": "PowerCycle"}), 400, "ActionParameterValueNotInList")
    assert args_of(e, "ActionParameterValueNotInList") == [["PowerCycle", "ResetType", "Manager.Reset"]]
    assert_error(send(k, "POST", RESET, {"ResetType": "On"}), 400, "ActionParameterValueNotInList")
    e = assert_error(send(k, "POST", RESET, {"Bogus": 1}), 400, "ActionParameterUnknown")
    assert args_of(e, "ActionParameterUnknown") == [["Manager.Reset", "Bogus"]]
    # A valid ResetType next to an unknown parameter: still refused, no restart.
    assert_error(send(k, "POST", RESET, {"ResetType": "GracefulRestart", "Bogus": 1}), 400, "ActionParameterUnknown")
    assert_error(send(k, "POST", RESET, {"ResetType": 5}), 400, "ActionParameterValueTypeError")
    assert_error(send(k, "POST", RESET, raw=b'{"ResetType": "GracefulRestart"'), 400, "MalformedJSON")
    assert_error(send(k, "POST", RESET, raw=b'["GracefulRestart"]'), 400, "UnrecognizedRequestBody", "MalformedJSON", any_of=True)
    assert_error(send(k, "POST", RESET, raw=b'{"ResetType": "GracefulRestart"}', headers={"Content-Type": "text/plain"}), 415)
    time.sleep(0.6)
    assert "restarting keeld" not in k.logs()
    assert k.get(MGR).json()["LastResetTime"] == started


def test_duplicate_account_is_409_resource_already_exists(k):
    before = snapshot(k)
    for name in ("reader", "admin"):
        r = send(k, "POST", ACCTS, {"UserName": name, "Password": NEW_PW, "RoleId": "Administrator"})
        e = assert_error(r, 409, "ResourceAlreadyExists")
        assert related(e, "ResourceAlreadyExists") == ["#/UserName"], e
        assert_no_secret(r, NEW_PW)
    # Renaming onto an existing name is the same conflict.
    assert_error(send(k, "PATCH", k.oper_uri, {"UserName": "reader"}), 409, "ResourceAlreadyExists")
    assert snapshot(k) == before
    assert login_ok(k, "reader", PW_RO)


def test_weak_passwords_are_refused(k):
    before = snapshot(k)
    length = "PasswordIncorrectLength"
    complexity = "PasswordComplexityNotMet"
    for user, pw, key in [
        ("weakling", "Ab1!", length),
        ("weakling", "Aa1!" + "x" * 130, length),
        ("weakling", "alllowercase", complexity),
        ("weakling", "lowercase12345", complexity),
        ("weakling", "Weakling-Pass-1", complexity),  # contains the user name
    ]:
        r = send(k, "POST", ACCTS, {"UserName": user, "Password": pw, "RoleId": "ReadOnly"})
        e = assert_error(r, 400, key)
        assert related(e, key) == ["#/Password"], e
        assert_no_secret(r, pw)
    # Changing a password to a weak one: refused, the old one keeps working.
    for auth, target in ((ADMIN, k.reader_uri), (("reader", PW_RO), k.reader_uri)):
        for pw, key in (("short1A", length), ("onlylowercaseletters", complexity)):
            r = send(k, "PATCH", target, {"Password": pw}, auth=auth)
            assert_error(r, 400, key)
            assert_no_secret(r, pw, PW_RO)
    assert snapshot(k) == before
    assert login_ok(k, "reader", PW_RO)
    # The policy is the configured one.
    assert send(k, "PATCH", AS, {"MinPasswordLength": 16}).status_code == 200
    r = send(k, "POST", ACCTS, {"UserName": "policy", "Password": "Fifteen-Chars-1", "RoleId": "ReadOnly"})
    assert_error(r, 400, length)
    assert account_count(k) == 3
