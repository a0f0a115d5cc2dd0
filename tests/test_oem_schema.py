"""Keel's own OEM schema: committed in schemas/, served at /redfish/v1/schema/, referenced by
$metadata and the JsonSchemas collection, and matching what the Manager's Oem.Keel object carries."""
import xml.etree.ElementTree as ET

import requests

from conftest import ROOT


OEM = (("KeelManager", "Manager"), ("KeelComputerSystem", "ComputerSystem"), ("KeelVolume", "Volume"),
       ("KeelUpdateService", "UpdateService"))


def test_oem_schema_files_are_served_as_committed(keeld):
    files = [(f"{ns}_v1.xml", "application/xml") for ns, _ in OEM] + [(f"{ns}.v1_0_0.json", "application/json") for ns, _ in OEM]
    for name, ctype in files:
        r = requests.get(f"{keeld.url}/redfish/v1/schema/{name}", verify=False)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(ctype)
        assert r.content == (ROOT / "schemas" / name).read_bytes()
    assert requests.get(f"{keeld.url}/redfish/v1/schema/nope.xml", verify=False).status_code == 404


def test_metadata_and_json_schemas_point_at_the_oem_schema(keeld):
    meta = ET.fromstring(requests.get(f"{keeld.url}/redfish/v1/$metadata", verify=False).content)
    ns = {"edmx": "http://docs.oasis-open.org/odata/ns/edmx"}
    refs = {r.get("Uri"): [i.get("Namespace") for i in r.findall("edmx:Include", ns)] for r in meta.findall("edmx:Reference", ns)}
    assert refs["/redfish/v1/schema/KeelManager_v1.xml"] == ["KeelManager", "KeelManager.v1_0_0"]
    s = keeld.admin()
    f = s.get(keeld.url + "/redfish/v1/JsonSchemas/KeelManager").json()
    uri = f["Location"][0]["Uri"]
    assert uri == "/redfish/v1/schema/KeelManager.v1_0_0.json"
    schema = requests.get(keeld.url + uri, verify=False).json()
    # Every property the Manager's Oem.Keel object carries is declared, with a valid value.
    oem = s.get(keeld.url + "/redfish/v1/Managers/keel").json()["Oem"]["Keel"]
    declared = schema["definitions"]["Manager"]["properties"]
    assert oem["@odata.type"] == "#KeelManager.v1_0_0.Manager"
    for k, v in oem.items():
        assert k in declared, k
    assert oem["PlatformMode"] in schema["definitions"]["PlatformMode"]["enum"]
    csdl = ET.fromstring((ROOT / "schemas/KeelManager_v1.xml").read_bytes())
    props = {p.get("Name") for p in csdl.iter("{http://docs.oasis-open.org/odata/ns/edm}Property")}
    assert props == {k for k in declared if not k.startswith("@")}, "CSDL and JSON Schema declare the same properties"


def test_every_oem_schema_is_referenced_and_csdl_matches_json_schema(keeld):
    meta = ET.fromstring(requests.get(f"{keeld.url}/redfish/v1/$metadata", verify=False).content)
    ns = {"edmx": "http://docs.oasis-open.org/odata/ns/edmx"}
    refs = {r.get("Uri"): [i.get("Namespace") for i in r.findall("edmx:Include", ns)] for r in meta.findall("edmx:Reference", ns)}
    s = keeld.admin()
    members = {m["@odata.id"] for m in s.get(keeld.url + "/redfish/v1/JsonSchemas").json()["Members"]}
    edm = "{http://docs.oasis-open.org/odata/ns/edm}"
    for name, entity in OEM:
        assert refs[f"/redfish/v1/schema/{name}_v1.xml"] == [name, f"{name}.v1_0_0"]
        assert f"/redfish/v1/JsonSchemas/{name}" in members
        f = s.get(keeld.url + f"/redfish/v1/JsonSchemas/{name}").json()
        assert f["Schema"] == f"#{name}.v1_0_0.{entity}"
        schema = requests.get(keeld.url + f["Location"][0]["Uri"], verify=False).json()
        csdl = ET.fromstring((ROOT / "schemas" / f"{name}_v1.xml").read_bytes())
        # Each complex type declares the same properties in both; each action the same parameters.
        for ct in csdl.iter(edm + "ComplexType"):
            props = {p.get("Name") for p in ct.iter(edm + "Property")}
            declared = {k for k in schema["definitions"][ct.get("Name")]["properties"] if not k.startswith("@")}
            assert props == declared, (name, ct.get("Name"))
        for a in csdl.iter(edm + "Action"):
            params = {p.get("Name") for p in a.iter(edm + "Parameter")} - {entity}
            assert params == set(schema["definitions"][a.get("Name")]["parameters"]), (name, a.get("Name"))
        for e in csdl.iter(edm + "EnumType"):
            assert [m.get("Name") for m in e.iter(edm + "Member")] == schema["definitions"][e.get("Name")]["enum"]


def test_system_oem_carries_what_the_schema_declares(keeld):
    s = keeld.admin()
    oem = s.get(keeld.url + "/redfish/v1/Systems/system").json()["Oem"]["Keel"]
    schema = requests.get(keeld.url + "/redfish/v1/schema/KeelComputerSystem.v1_0_0.json", verify=False).json()
    assert oem["@odata.type"] == "#KeelComputerSystem.v1_0_0.ComputerSystem"
    sec = schema["definitions"]["Security"]["properties"]
    assert set(oem["Security"]) <= set(sec)
    assert oem["Security"]["SecureBoot"] in schema["definitions"]["SecureBootState"]["enum"]
    assert oem["Security"]["BootUnlockedBy"] in schema["definitions"]["UnlockMethod"]["enum"]
