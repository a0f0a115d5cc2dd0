"""TLS: HTTPS only, TLS 1.2+, the self-signed certificate made once and reused, an operator's own
certificate, and the one start-up line that names the URL."""
import socket
import ssl
import subprocess

import pytest

from conftest import Keeld


def peer_cert(k):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", k.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def test_self_signed_certificate_is_made_once_and_reused(keeld):
    cert_file = keeld.state_dir / "tls-cert.pem"
    key_file = keeld.state_dir / "tls-key.pem"
    assert cert_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    first, version = peer_cert(keeld)
    assert version in ("TLSv1.2", "TLSv1.3")
    keeld.restart()
    second, _ = peer_cert(keeld)
    assert first == second, "a restart must serve the same certificate"
    # It verifies for 127.0.0.1 with itself as the CA (SAN IP:127.0.0.1).
    ctx = ssl.create_default_context(cafile=str(cert_file))
    with socket.create_connection(("127.0.0.1", keeld.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


@pytest.mark.parametrize("old", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(keeld, old):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = old
        ctx.maximum_version = old
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip(f"this Python/OpenSSL cannot even offer {old.name}")
    with socket.create_connection(("127.0.0.1", keeld.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass


def test_plain_http_gets_no_answer(keeld):
    with socket.create_connection(("127.0.0.1", keeld.port), timeout=10) as s:
        s.sendall(b"GET /redfish/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        try:
            data = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
    assert not data.startswith(b"HTTP/"), data


def test_operator_certificate_is_used(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=keel-operator-cert", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    k = Keeld(tmp_path / "state", ["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    try:
        der, _ = peer_cert(k)
        pem = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                             capture_output=True, check=True).stdout.decode()
        assert "keel-operator-cert" in pem
        assert not (k.state_dir / "tls-cert.pem").exists(), "no self-signed certificate when one is given"
        status = k.admin().get(k.url + "/redfish/v1/Managers/keel").json()["Oem"]["Keel"]["SelfSignedCertificate"]
        assert status is False
    finally:
        k.stop()


def test_one_log_line_names_the_url_and_no_password(tmp_path):
    k = Keeld(tmp_path / "state").start()
    try:
        lines = [l for l in k.logs().splitlines() if "listening on" in l]
        assert lines == [l for l in lines if f"https://127.0.0.1:{k.port}/redfish/v1" in l] and len(lines) == 1, lines
        assert "Keel-Test-Pass1" not in k.logs()
    finally:
        k.stop()
