"""Faults outside camwatch degrade it, never stop it: a full disk, a read-only or vanished state file, damaged rows.
Each is made for real: a tmpfs of a few pages, a read-only bind mount (both in a private mount namespace of the
child process, so nothing outlives the test), a file deleted under a running sensor, rows written by hand."""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import REPO, SYNTHETIC, alerts_of, camwatch

SITE = SYNTHETIC / "camera_site.pcap"
SITE_CONFIG = SYNTHETIC / "camera_site.toml"

pytestmark = pytest.mark.root


def config_with_state(tmp_path, state_dir) -> os.PathLike:
    config = tmp_path / "site.toml"
    config.write_text(SITE_CONFIG.read_text() + f'\n[state]\npath = "{state_dir / "state.db"}"\n')
    return config


def in_mount_namespace(setup: str, *args: str) -> subprocess.CompletedProcess:
    """camwatch in a private mount namespace prepared by the shell commands `setup`."""
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "sensor", *args))
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", f"{setup}\nexec {command}"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The replay without any state: what every degraded run must still produce."""
    out = tmp_path_factory.mktemp("reference")
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--metrics-out", out / "m.prom")
    assert proc.returncode == 0
    return alerts_of(proc.stdout), (out / "m.prom").read_text()


def test_a_full_disk_is_counted_and_the_replay_goes_on(tmp_path, reference):
    state = tmp_path / "state"
    state.mkdir()
    config = config_with_state(tmp_path, state)
    metrics = tmp_path / "m.prom"
    # A small filesystem, filled once the database holds what a short first run wrote: the writes of the second
    # run, from its first commit on, hit ENOSPC.
    first = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "sensor", "replay", "--quiet", "--alerts",
                                                     "/dev/null", SYNTHETIC / "segmentation.pcap", "--config", config))
    setup = (f"mount -t tmpfs -o size=256k tmpfs {state}\n{first}\n"
             f"dd if=/dev/zero of={state / 'fill'} bs=1k count=1024 2>/dev/null || true")
    proc = in_mount_namespace(setup, "replay", SITE, "--config", config, "--metrics-out", metrics)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "state database" in line]
    assert warnings and all("camwatch: warning:" in line for line in warnings)
    assert len(warnings) <= 4   # logged once per kind of operation, not once per write
    text = metrics.read_text()
    assert metric(text, "camwatch_state_write_errors_total") > 0
    ref_alerts, ref_metrics = reference
    assert metric(text, "camwatch_packets_total") == metric(ref_metrics, "camwatch_packets_total")
    assert [a["detector"] for a in alerts_of(proc.stdout)] == [a["detector"] for a in ref_alerts]


def test_a_read_only_state_file_is_still_read(tmp_path, reference):
    state = tmp_path / "state"
    state.mkdir()
    config = config_with_state(tmp_path, state)
    first = camwatch("replay", SITE, "--config", config)
    assert first.returncode == 0 and len(alerts_of(first.stdout)) == len(reference[0])
    metrics = tmp_path / "m.prom"
    # root ignores file modes: a read-only mount is what really refuses the writes
    setup = f"mount --bind {state} {state}\nmount -o remount,ro,bind {state}"
    proc = in_mount_namespace(setup, "replay", SITE, "--config", config, "--metrics-out", metrics)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "state database" in proc.stderr
    # what the first run learned is remembered: the same episodes, still open, raise nothing new
    assert alerts_of(proc.stdout) == []
    assert metric(metrics.read_text(), "camwatch_packets_total") == metric(reference[1], "camwatch_packets_total")


def test_a_state_file_deleted_under_a_running_sensor(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    config = config_with_state(tmp_path, state)
    alerts = tmp_path / "a.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SITE), "--config", str(config),
                             "--pace", "10x", "--alerts", str(alerts), "--quiet"], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (state / "state.db").exists():
        time.sleep(0.05)
    time.sleep(1.2)
    for path in state.iterdir():
        path.unlink()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert [a["event"] for a in alerts_of(alerts.read_text())] == ["open", "close"]


def test_damaged_rows_cost_only_themselves(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    config = config_with_state(tmp_path, state)
    assert camwatch("replay", SITE, "--config", config).returncode == 0
    db = sqlite3.connect(state / "state.db")
    (good,) = db.execute("SELECT count(*) FROM inventory").fetchone()
    hostile = ["{not json", "[]", "7", '"text"', json.dumps({"ip": "10.20.0.99"}),
               json.dumps({"ip": "not an address", "mac": 1, "first_seen": 0, "last_seen": 0, "packets_sent": 0,
                           "bytes_sent": 0, "egress_bytes": {}, "dns_queries": [], "external_peers": [],
                           "identity": {}, "evidence": []}),
               json.dumps({"ip": "10.20.0.98", "mac": "x", "last_seen": "yesterday"}),
               "[" * 100_000 + "]" * 100_000]
    for i, doc in enumerate(hostile):
        db.execute("INSERT INTO inventory VALUES (?, ?)", (f"10.66.0.{i}", doc))
    for i, key in enumerate(["{", "[[[]]]", "null", json.dumps([{"a": 1}]), "[" * 50_000 + "]" * 50_000]):
        db.execute("INSERT INTO episode VALUES (?, ?, ?, ?, ?)", (key, 1.0, 2.0e12 + i, 1, 1))
    db.execute("INSERT INTO device VALUES ('10.66.1.1', 'not a time')")
    db.commit()
    db.close()
    proc = camwatch("inventory", "--json", "--config", config, SYNTHETIC / "segmentation.pcap")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    devices = {d["ip"] for d in json.loads(proc.stdout)}
    assert "10.20.0.14" in devices                   # the good rows are all restored
    assert not any(ip.startswith("10.66.") for ip in devices)
    assert len(devices) >= good


def test_a_clean_stop_leaves_no_write_ahead_log(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    config = config_with_state(tmp_path, state)
    assert camwatch("replay", SITE, "--config", config).returncode == 0
    wal = state / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    # and a restart that writes nothing new does not grow one
    assert camwatch("replay", SITE, "--config", config).returncode == 0
    assert not wal.exists() or wal.stat().st_size == 0
