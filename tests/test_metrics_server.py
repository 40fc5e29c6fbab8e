"""The /metrics endpoint: loopback default, TLS, mutual TLS and basic auth with hashed passwords."""

from __future__ import annotations

import base64
import http.client
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, SYNTHETIC, camwatch

from sensor.config import parse_config
from sensor.errors import ConfigError
from sensor.export import BasicAuth, hash_password, verify_password

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl needed to make certificates")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=camwatch-test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name, cn in (("server", "127.0.0.1"), ("client", "prometheus")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(d / f"{name}.crt"))
    return d


def serve(tmp_path: Path, metrics_toml: str):
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n{metrics_toml}')
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SYNTHETIC / "camera_site.pcap"),
                             "--config", str(config), "--alerts", str(tmp_path / "a.jsonl"), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.communicate()[1])


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    assert proc.returncode == 0


def get(url: str, context=None, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_tls_with_basic_auth(tmp_path, pki):
    hashed = hash_password("scrape-me")
    proc, port = serve(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
                                 f'[metrics.basic_auth]\nprometheus = "{hashed}"\n')
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        url = f"https://127.0.0.1:{port}"
        assert get(url + "/metrics", ctx)[0] == 401
        assert get(url + "/metrics", ctx, "prometheus:wrong")[0] == 401
        assert get(url + "/metrics", ctx, "nobody:scrape-me")[0] == 401
        status, body = get(url + "/metrics", ctx, "prometheus:scrape-me")
        assert status == 200 and "camwatch_packets_total" in body
        assert get(url + "/inventory", ctx)[0] == 401
        assert get(url + "/healthz", ctx)[0] == 200  # liveness stays open for orchestrators
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)  # no plaintext
    finally:
        stop(proc)


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki):
    proc, port = serve(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
                                 f'client_ca = "{pki / "ca.crt"}"\n')
    try:
        url = f"https://127.0.0.1:{port}/metrics"
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=5, context=anonymous).read()
        client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        client.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        status, body = get(url, client)
        assert status == 200 and "camwatch_bytes_total" in body
    finally:
        stop(proc)


def test_hash_password_command_and_verification():
    proc = camwatch("hash-password", input="correct horse\n")
    assert proc.returncode == 0
    hashed = proc.stdout.strip()
    assert hashed.startswith("pbkdf2_sha256$") and verify_password("correct horse", hashed)
    assert not verify_password("correct horse ", hashed)
    auth = BasicAuth((("u", hashed),))
    assert auth.allows("Basic " + base64.b64encode(b"u:correct horse").decode())
    assert not auth.allows("Basic !!!notbase64")
    assert not auth.allows(None)


@pytest.mark.parametrize("toml,needle", [
    ('[metrics.basic_auth]\nprometheus = "plaintext"\n', "not a password"),
    ('[metrics]\ntls_cert = "a.pem"\n', "go together"),
    ('[metrics]\nclient_ca = "ca.pem"\n', "needs metrics.tls_cert"),
])
def test_metrics_config_is_validated(toml, needle):
    import tomllib
    with pytest.raises(ConfigError, match=needle):
        parse_config(tomllib.loads(toml))


def test_unreadable_certificate_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\ntls_cert = "{tmp_path}/none.crt"\n'
                      f'tls_key = "{tmp_path}/none.key"\n')
    proc = camwatch("replay", SYNTHETIC / "camera_site.pcap", "--config", config)
    assert proc.returncode == 2 and "metrics TLS: cannot load" in proc.stderr and "Traceback" not in proc.stderr
