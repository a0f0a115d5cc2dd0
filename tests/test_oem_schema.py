"""Keel's own OEM schema: committed in schemas/, served at /redfish/v1/schema/, referenced by
$metadata and the JsonSchemas collection, and matching what the Manager's Oem.Keel object carries."""
import xml.etree.ElementTree as ET

import requests

from conftest import ROOT


def test_oem_schema_files_are_served_as_committed(keeld):
    for name, ctype in (("KeelManager_v1.xml", "application/xml"), ("KeelManager.v1_0_0.json", "application/json")):
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
