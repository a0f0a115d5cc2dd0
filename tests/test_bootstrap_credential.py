"""The first Administrator from a systemd credential (`--bootstrap-admin-credential NAME`).

units/keeld.service passes `--bootstrap-admin-credential keel.bootstrap-admin`; the Keel image
adds `ImportCredential=keel.bootstrap-admin`, so a VM can be given its administrator through SMBIOS
(qemu-tests does) and the image itself carries no password. systemd hands the credential over as
the file $CREDENTIALS_DIRECTORY/NAME; these tests play systemd's part with that variable.
"""
import os
import subprocess
import time

import pytest
import requests

from conftest import ADMIN, KEELD, free_port

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def serve(tmp_path, args, creds=None):
    """Starts keeld with `args`, waits for it, returns (proc, url, state dir)."""
    port = free_port()
    state = tmp_path / "state"
    env = dict(os.environ)
    env.pop("CREDENTIALS_DIRECTORY", None)
    if creds is not None:
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    log = open(tmp_path / "keeld.log", "wb")
    proc = subprocess.Popen([KEELD, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"https://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"keeld exited: {(tmp_path / 'keeld.log').read_text()}")
        try:
            if requests.get(url + "/redfish/v1", verify=False, timeout=2).status_code == 200:
                return proc, url, state
        except requests.RequestException:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("keeld did not start")
        time.sleep(0.1)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=15)


def status_as(url, user, password):
    return requests.get(url + "/redfish/v1/AccountService/Accounts", auth=(user, password), verify=False, timeout=10).status_code


def creds_dir(tmp_path, content=None, name="keel.bootstrap-admin"):
    d = tmp_path / "creds"
    d.mkdir()
    if content is not None:
        (d / name).write_text(content)
        (d / name).chmod(0o400)
    return d


def test_credential_creates_the_administrator(tmp_path):
    creds = creds_dir(tmp_path, f"{ADMIN[0]}:{ADMIN[1]}\n")
    proc, url, state = serve(tmp_path, ["--bootstrap-admin-credential", "keel.bootstrap-admin"], creds)
    try:
        assert status_as(url, *ADMIN) == 200
        assert status_as(url, ADMIN[0], ADMIN[1] + "x") == 401
        assert not (state / "initial-admin-password").exists()
        assert ADMIN[1] not in (tmp_path / "keeld.log").read_text()
    finally:
        stop(proc)


@pytest.mark.parametrize("case", ["no-directory", "no-file", "bad-name"])
def test_missing_credential_falls_back_to_a_random_password(tmp_path, case):
    creds = None if case == "no-directory" else creds_dir(tmp_path, f"{ADMIN[0]}:{ADMIN[1]}\n", name="other")
    name = "../creds/other" if case == "bad-name" else "keel.bootstrap-admin"
    proc, url, state = serve(tmp_path, ["--bootstrap-admin-credential", name], creds)
    try:
        password = (state / "initial-admin-password").read_text().strip()
        assert status_as(url, "admin", password) == 200
        assert status_as(url, *ADMIN) == 401
    finally:
        stop(proc)


def test_bootstrap_file_wins_over_the_credential(tmp_path):
    creds = creds_dir(tmp_path, "credadmin:Cred-Admin-Pass9\n")
    boot = tmp_path / "bootstrap-admin"
    boot.write_text(f"{ADMIN[0]}:{ADMIN[1]}\n")
    proc, url, _ = serve(tmp_path, ["--bootstrap-admin-file", str(boot), "--bootstrap-admin-credential", "keel.bootstrap-admin"], creds)
    try:
        assert status_as(url, *ADMIN) == 200
        assert status_as(url, "credadmin", "Cred-Admin-Pass9") == 401
    finally:
        stop(proc)


def test_credential_with_a_weak_password_is_refused(tmp_path):
    """The password policy applies to the credential as to the file: keeld does not start."""
    creds = creds_dir(tmp_path, "admin:short\n")
    port = free_port()
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    r = subprocess.run([KEELD, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"),
                        "--bootstrap-admin-credential", "keel.bootstrap-admin"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "password refused" in r.stderr
    assert "short" not in r.stderr.replace("too short", "")
