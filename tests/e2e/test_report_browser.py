"""The report in a real browser: Debian's headless `chromium` (installed by scripts/bootstrap.sh --test) loads each
test report with no console message at all (a CSP violation is one) and no network request, takes a screenshot
(an artefact: kept, not compared) and prints it to PDF.

Network requests are caught by pointing the browser at a local "proxy" socket, for every host including loopback,
that records each connection and answers none. Chromium itself phones its update and sign-in services whatever the
flags; those few hosts are set aside by name, and a control page that does fetch something proves the recorder
sees a page's requests. Screenshots go to $CAMWATCH_ARTIFACTS/report/ when that is set (CI keeps the directory),
otherwise to the test's tmp dir. Without chromium the tests skip, which CI (CAMWATCH_NO_SKIPS=1) turns into a
failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import REAL, SYNTHETIC, camwatch

from .test_report import hostile_state_db

# Chromium's own background services (component updater, network time, account sign-in): not the page.
BROWSER_OWN_HOSTS = ("update.googleapis.com", "accounts.google.com", "clients2.google.com",
                     "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com")
QUIET_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
               "--disable-extensions", "--disable-background-networking", "--disable-component-update",
               "--disable-default-apps", "--disable-domain-reliability", "--no-pings", "--password-store=basic"]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium missing: run scripts/bootstrap.sh --test, which installs it")
    return found


class Recorder:
    """A listening socket standing in for a proxy: every connection is a request the page (or browser) made."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).decode("latin-1").split("\r\n")[0]
                except OSError:
                    line = "(a connection that sent nothing within 2 s)"
                # Chromium opens spare connections to its proxy ahead of need and closes them unused: one that
                # closes without a byte fetched nothing.
                if line:
                    self.requests.append(line)

    def page_requests(self) -> list[str]:
        return [r for r in self.requests if not any(host in r for host in BROWSER_OWN_HOSTS)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.close()


def artefacts(tmp_path: Path) -> Path:
    base = os.environ.get("CAMWATCH_ARTIFACTS")
    out = Path(base) / "report" if base else tmp_path / "artefacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


def browse(chromium: str, page: Path, recorder: Recorder, profile: Path, *action: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", *QUIET_FLAGS, f"--user-data-dir={profile}",
                           f"--proxy-server=http://127.0.0.1:{recorder.port}", "--proxy-bypass-list=<-loopback>",
                           "--enable-logging=stderr", "--v=0", *action, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def make_reports(tmp_path: Path) -> dict[str, Path]:
    out = {"synthetic": tmp_path / "synthetic.html", "real": tmp_path / "real.html",
           "hostile": tmp_path / "hostile.html"}
    runs = [("synthetic", [SYNTHETIC / "camera_site.pcap", "--config", SYNTHETIC / "camera_site.toml"]),
            ("real", [REAL / "neu-intl-iot" / "yi_camera_sample.pcap"])]
    hostile_state_db(tmp_path / "hostile.db")
    runs.append(("hostile", ["--state", tmp_path / "hostile.db"]))
    for name, args in runs:
        proc = camwatch("report", *map(str, args), "--out", str(out[name]), "--quiet")
        assert proc.returncode == 0, proc.stderr
    return out


def test_reports_load_with_no_console_message_and_no_request(chromium, recorder, tmp_path):
    keep = artefacts(tmp_path)
    for name, page in make_reports(tmp_path).items():
        shot = keep / f"{name}.png"
        proc = browse(chromium, page, recorder, tmp_path / f"profile-{name}", "--window-size=1200,1800",
                      f"--screenshot={shot}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert console_lines(proc.stderr) == [], (name, console_lines(proc.stderr))
        assert recorder.page_requests() == [], (name, recorder.page_requests())
        assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_prints_to_pdf_a_page_per_device(chromium, recorder, tmp_path):
    page = make_reports(tmp_path)["synthetic"]
    pdf = artefacts(tmp_path) / "synthetic.pdf"
    proc = browse(chromium, page, recorder, tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    cards = page.read_text().count('<section class="card')
    # the print stylesheet starts every device card on a new page, after the summary and the removal list
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= cards + 1
    assert console_lines(proc.stderr) == [] and recorder.page_requests() == []


def test_the_recorder_and_console_check_catch_a_page_that_misbehaves(chromium, recorder, tmp_path):
    """The control: without camwatch's CSP, a page that fetches and logs is caught by both checks."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png">'
                    '<script>console.error("control")</script></body></html>')
    proc = browse(chromium, page, recorder, tmp_path / "profile", f"--screenshot={tmp_path / 'c.png'}")
    assert any('"control"' in line for line in console_lines(proc.stderr)), proc.stderr[-2000:]
    assert any("example.invalid" in r for r in recorder.page_requests()), recorder.requests
