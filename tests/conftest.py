from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensor.live import LiveCapture

REPO = Path(__file__).resolve().parent.parent
PCAPS = REPO / "pcaps"
SYNTHETIC = PCAPS / "synthetic"
REAL = PCAPS / "real"
SHARED_REAL = REPO.parent / "shared" / "pcaps" / "real"
sys.path.insert(0, str(PCAPS))

# How long a live test waits for `camwatch run` to say it is capturing: camwatch's own bound on dumpcap's start (a
# slow start is waited out, one past the bound is a clean error) and its own start-up on a loaded machine. A shorter
# wait fails the test where camwatch would have started: a cold 1 GiB ring alone took 8 s here.
LIVE_START_WAIT = LiveCapture.START_LIMIT + 30


def all_fixtures() -> list[Path]:
    found = sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    if SHARED_REAL.is_dir():
        found += sorted(p for p in SHARED_REAL.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    return found


def fixture_id(path: Path) -> str:
    for base in (PCAPS, SHARED_REAL.parent.parent):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return path.name


def camwatch(*args: str, timeout: float = 120, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the CLI the way a user does: as a separate process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sensor", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, **kw)


def alerts_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def evidence_of(lines: list[dict], device: str | None = None) -> list[tuple[str, str, str, str]]:
    """(device, detector, severity, text) of every detection the incident lines tell of (alert contract 2), once
    each: evidence that joined without a line of its own (no new detector, no higher severity) shows at the close."""
    found = {(a["device"]["ip"], e["detector"], e["severity"], e["text"]): None for a in lines
             if a["event"] != "flood" and (device is None or a["device"]["ip"] == device) for e in a["evidence"]}
    return list(found)


def addresses_of(lines: list[dict], device: str | None = None) -> set[str]:
    """Every other-end address the incidents of a device name: leading destinations and the close lines' totals."""
    mine = [a for a in lines if device is None or a["device"]["ip"] == device]
    closed = {ip for a in mine for ip in a.get("totals", {}).get("addresses", ())}
    return {a["destination"]["ip"] for a in mine} | closed


def names_of(lines: list[dict], device: str | None = None) -> set[str]:
    mine = [a for a in lines if device is None or a["device"]["ip"] == device]
    return ({a["destination"]["name"] for a in mine if a["destination"]["name"]}
            | {n for a in mine for n in a.get("totals", {}).get("names", ())})


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    """A Prometheus exposition as {(name, sorted labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels`; fails if there is none."""
    matches = [v for (n, ls), v in metrics.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]
    assert matches, f"{name}{labels} not exported"
    return sum(matches)


def capinfos(path: Path) -> dict[str, int]:
    """Packet count and data size (sum of original lengths) as Wireshark's capinfos reports them."""
    out = subprocess.run(["capinfos", "-M", "-c", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    result = {}
    for line in out.splitlines():
        if line.startswith("Number of packets"):
            result["packets"] = int(line.split(":")[1].split()[0])
        if line.startswith("Data size"):
            result["bytes"] = int(line.split(":")[1].split()[0])
    return result


def tshark_fields(path: Path, *fields: str, display_filter: str | None = None) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.fixture(scope="session", autouse=True)
def _wireshark_tools():
    for tool in ("tshark", "capinfos"):
        if shutil.which(tool) is None:
            pytest.exit(f"{tool} missing: run scripts/test.sh, which installs it", returncode=1)


@pytest.fixture(autouse=True)
def _no_stale_sigchld_handler():
    """pyshark installs asyncio's SIGCHLD handler and signal wake-up socket on an event loop that then never runs:
    every later child process's exit would write to that socket until it is full, and each one after that is an
    unraisable BlockingIOError in some unrelated test. pyshark installs them again whenever it runs."""
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)


# ---- what CI demands beyond a developer's run (.ci/run sets these) ---------------------------------------------
ALLOWED_SKIPS = Path(__file__).with_name("allowed_skips.txt")
_skipped: list[tuple[str, str]] = []


def _allowed_skips() -> dict[str, str]:
    """nodeid prefix -> reason, from tests/allowed_skips.txt (`prefix  # reason` per line)."""
    allowed = {}
    for line in ALLOWED_SKIPS.read_text().splitlines():
        prefix, _, reason = line.partition("#")
        if prefix.strip():
            allowed[prefix.strip()] = reason.strip()
    return allowed


def pytest_sessionstart(session):
    if os.environ.get("CAMWATCH_REQUIRE_C") == "1":
        from sensor import compiled
        if compiled.extension is None:
            pytest.exit("the compiled extension sensor._walk is required here and did not build: "
                        f"{compiled.import_error}", returncode=1)
        if compiled.flows_extension is None:
            pytest.exit("the compiled extension sensor._flows is required here and did not build", returncode=1)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CAMWATCH_NO_SKIPS") != "1" or not _skipped:
        return
    allowed = _allowed_skips()
    silent = [(node, why) for node, why in _skipped if not any(node.startswith(p) for p in allowed)]
    if silent:
        lines = "\n".join(f"  {node}: {why}" for node, why in silent)
        sys.stderr.write(f"\nCI allows no skipped test unless tests/allowed_skips.txt names it; skipped:\n{lines}\n")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def scenario(tmp_path_factory):
    """The labelled evaluation site (pcaps/scenarios.py), generated once per test session."""
    out = tmp_path_factory.mktemp("scenario")
    subprocess.run([sys.executable, str(PCAPS / "scenarios.py"), str(out)], check=True)
    return out
