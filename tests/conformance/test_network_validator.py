"""DMTF Service Validator against keeld serving the network fixtures of tests/test_network.py
(bonded 25G server with VLANs, a bridge and LLDP; an edge box on DHCP; a NIC vanishing mid-read).
0 FAIL, run like test_validators.py: keeld and the validator in a private network namespace."""
import subprocess
import time

import pytest

from conftest import ADMIN, KEELD
from test_network import IP_ADDR, make_edge, make_server, record_command
from test_validators import PORT, NetNS, clean_env, schema_dir, service_findings, service_table, tool  # noqa: F401


@pytest.fixture(scope="module")
def netns():
    ns = NetNS()
    yield ns
    ns.close()


def make_odd(root):
    make_server(root)
    for f in ("address", "operstate", "flags", "speed", "mtu"):
        (root / "sys/class/net/ens1f1np1" / f).unlink()
    record_command(root, *IP_ADDR, "garbage {[")


@pytest.mark.parametrize("name,builder", [("server", make_server), ("edge", make_edge), ("odd", make_odd)])
def test_service_validator_on_network_fixture(name, builder, netns, schema_dir, tmp_path):
    root = tmp_path / "host"
    root.mkdir()
    builder(root)
    boot = tmp_path / "bootstrap-admin"
    boot.write_text(f"{ADMIN[0]}:{ADMIN[1]}\n")
    state = tmp_path / "state"
    log = open(tmp_path / "keeld.log", "ab")
    url = f"https://127.0.0.1:{PORT}"
    proc = subprocess.Popen(
        netns.cmd([KEELD, "serve", "--listen", f"127.0.0.1:{PORT}", "--state-dir", state,
                   "--bootstrap-admin-file", boot, "--host-root", root]),
        stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "keeld.log").read_text()
            r = netns.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url + "/redfish/v1"],
                          capture_output=True, text=True, timeout=10)
            if r.stdout.strip() == "200":
                break
            assert time.time() < deadline, "keeld did not start"
            time.sleep(0.2)
        logdir = tmp_path / "rsv"
        logdir.mkdir()
        argv = [tool("rf_service_validator"), "-r", url, "-u", ADMIN[0], "-p", ADMIN[1], "--authtype", "Session",
                "--schema_directory", schema_dir, "--skipschema", "--logdir", logdir, "--timeout", "30"]
        r = netns.run(argv, cwd=logdir, capture_output=True, text=True, timeout=300)
        (logdir / "output.txt").write_text(r.stdout + r.stderr)
        table = service_table(r.stdout)
        findings = service_findings(logdir)
        print(f"Service Validator on the {name} network fixture: {table}  (reports: {logdir})")
        detail = "\n".join(findings) + f"\n(reports and keeld log: {tmp_path})"
        assert table is not None, f"no result table (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert table["FAIL"] == 0, f"{table['FAIL']} FAIL\n{detail}"
        assert "NetworkAdapters" in (logdir / "output.txt").read_text(), "the network resources were validated"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
