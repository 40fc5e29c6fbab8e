"""The /metrics endpoint: loopback default, TLS, mutual TLS and basic auth with hashed passwords; the scheme it
announces; mutual TLS keeping every route, /healthz included, behind the client certificate."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
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
SITE = SYNTHETIC / "camera_site.pcap"


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
        assert get(url + "/countries", ctx)[0] == 401   # where the cameras send, by country: guarded too
        status, body = get(url + "/countries", ctx, "prometheus:scrape-me")
        assert status == 200 and isinstance(json.loads(body), dict)
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


# ---- the endpoint: scheme announced, mutual TLS ----------------------------------------------------------
class Served:
    """camwatch replay serving metrics, its stderr read as it comes (not --quiet: the announcement is the test)."""

    def __init__(self, tmp_path: Path, metrics_toml: str):
        config = tmp_path / "c.toml"
        config.write_text(f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n{metrics_toml}')
        self.proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SITE), "--config", str(config),
                                      "--alerts", str(tmp_path / "a.jsonl")], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def url(self) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(r"serving metrics on (\S+)", line):
                    return found[1]
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError("".join(self.lines))

    def stop(self) -> None:
        # Sent again if need be: cmd_replay's untimed stop.wait() misses a SIGTERM the kernel delivers to one of
        # the server's threads (Python runs the handler only when the main thread next runs bytecode), a
        # shutdown bug outside what these tests are about.
        for _ in range(3):
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                pass
        else:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        assert self.proc.returncode == 0, "".join(self.lines)


def test_tls_endpoint_announces_https(tmp_path, pki):
    served = Served(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n')
    try:
        url = served.url()
        assert url.startswith("https://127.0.0.1:") and url.endswith("/metrics")
        status, body = get(url, ssl.create_default_context(cafile=str(pki / "ca.crt")))
        assert status == 200 and "camwatch_packets_total" in body
    finally:
        served.stop()


def test_plain_endpoint_announces_http(tmp_path):
    served = Served(tmp_path, "")
    try:
        url = served.url()
        assert url.startswith("http://127.0.0.1:")
        assert get(url)[0] == 200
    finally:
        served.stop()


def test_mutual_tls_keeps_healthz_behind_the_client_certificate(tmp_path, pki):
    """With client_ca the TLS handshake itself demands a certificate the CA signed, so nothing - /healthz and
    /readyz included - is served to a client without one (docs/deploy.md says so). A TCP connect, which is all
    a certificate-less probe can check, still succeeds."""
    served = Served(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
                              f'client_ca = "{pki / "ca.crt"}"\n')
    try:
        base = served.url().removesuffix("/metrics")
        port = int(base.rsplit(":", 1)[1])
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        for path in ("/healthz", "/readyz", "/metrics", "/inventory", "/countries", "/"):
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                urllib.request.urlopen(base + path, timeout=5, context=anonymous).read()
        client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        client.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        assert get(base + "/healthz", client) == (200, "ok\n")
        assert get(base + "/readyz", client)[0] == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        served.stop()


# ---- the client side: inventory --url and report --url against a protected sensor --------------------------
def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_report_and_inventory_read_a_sensor_behind_tls_and_basic_auth(tmp_path, pki):
    hashed = hash_password("read-inventory")
    proc, port = serve(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
                                 f'[metrics.basic_auth]\nestates = "{hashed}"\n')
    url, ca = f"https://127.0.0.1:{port}", str(pki / "ca.crt")
    password = {"CAMWATCH_URL_PASSWORD": "read-inventory"}
    try:
        assert "HTTP 401" in one_line_error(camwatch("inventory", "--url", url, "--url-ca", ca, "--json"))
        assert "--url-user" in one_line_error(camwatch("inventory", "--url", url, "--url-ca", ca))
        wrong = {"CAMWATCH_URL_PASSWORD": "guess"}
        assert "HTTP 401" in one_line_error(camwatch("inventory", "--url", url, "--url-ca", ca, "--url-user",
                                                     "estates", env_extra=wrong))
        assert "CAMWATCH_URL_PASSWORD" in one_line_error(camwatch("inventory", "--url", url, "--url-ca", ca,
                                                                  "--url-user", "estates"))
        assert "CERTIFICATE_VERIFY_FAILED" in one_line_error(camwatch("inventory", "--url", url, "--url-user",
                                                                      "estates", env_extra=password))
        listed = camwatch("inventory", "--url", url, "--url-ca", ca, "--url-user", "estates", "--json",
                          env_extra=password)
        assert listed.returncode == 0, listed.stderr
        assert "10.20.0.14" in {d["ip"] for d in json.loads(listed.stdout)}
        made = camwatch("report", "--url", f"hq={url}", "--url-ca", ca, "--url-user", "estates", "--out",
                        tmp_path / "r.html", "--csv", tmp_path, env_extra=password)
        assert made.returncode == 0, made.stderr
        assert "10.20.0.14" in (tmp_path / "inventory.csv").read_text()
        # the password never crosses plain http, nor sits in a URL
        plain = camwatch("inventory", "--url", f"http://127.0.0.1:{port}", "--url-user", "estates",
                         env_extra=password)
        assert "needs https://" in one_line_error(plain)
        assert "credentials do not go in the URL" in one_line_error(
            camwatch("report", "--url", f"https://estates:read-inventory@127.0.0.1:{port}", "--out",
                     tmp_path / "x.html"))
    finally:
        stop(proc)


def test_inventory_reads_a_mutual_tls_sensor_with_a_client_certificate(tmp_path, pki):
    proc, port = serve(tmp_path, f'tls_cert = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
                                 f'client_ca = "{pki / "ca.crt"}"\n')
    url, ca = f"https://127.0.0.1:{port}", str(pki / "ca.crt")
    try:
        assert "cannot read the inventory" in one_line_error(camwatch("inventory", "--url", url, "--url-ca", ca))
        listed = camwatch("inventory", "--url", url, "--url-ca", ca, "--url-cert", str(pki / "client.crt"),
                          "--url-key", str(pki / "client.key"))
        assert listed.returncode == 0, listed.stderr
        assert "10.20.0.14" in listed.stdout and "Hikvision" in listed.stdout
        assert "no such file" in one_line_error(camwatch("report", "--url", url, "--url-cert", tmp_path / "none.crt",
                                                         "--out", tmp_path / "r.html"))
        assert "--url-key needs --url-cert" in one_line_error(
            camwatch("inventory", "--url", url, "--url-key", str(pki / "client.key")))
    finally:
        stop(proc)
