"""Learned state survives restarts, including kill -9, without re-opening the incidents of known episodes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import REPO, SYNTHETIC, alerts_of, camwatch

SITE = SYNTHETIC / "camera_site.pcap"


def config_with_state(tmp_path, base=SYNTHETIC / "camera_site.toml"):
    config = tmp_path / "site.toml"
    config.write_text(base.read_text() + f'\n[state]\npath = "{tmp_path / "state.db"}"\n')
    return config


def test_restart_does_not_realert_and_remembers_the_inventory(tmp_path):
    config = config_with_state(tmp_path)
    first = alerts_of(camwatch("replay", SITE, "--config", config).stdout)
    assert [a["event"] for a in first] == ["open", "close"]
    second = camwatch("replay", SITE, "--config", config, "--metrics-out", tmp_path / "m.prom")
    assert second.returncode == 0
    # the same episodes, still open in the state store: no detection, so no incident and nothing new to say
    assert alerts_of(second.stdout) == []
    proc = camwatch("inventory", "--json", SYNTHETIC / "segmentation.pcap", "--config", config)
    devices = {d["ip"]: d for d in json.loads(proc.stdout)}
    # devices of the first site, remembered, next to those of this capture
    assert devices["10.20.0.14"]["maker"] == "Hikvision" and devices["10.20.0.14"]["role"] == "camera"
    assert {e["name"] for e in devices["10.20.0.14"]["external_destinations"]} >= {"litedev.hik-connect.com"}


def test_kill_9_loses_nothing_already_reported(tmp_path):
    config = config_with_state(tmp_path)
    alerts = tmp_path / "a.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SITE), "--config", str(config),
                             "--pace", "10x", "--alerts", str(alerts), "--quiet"], cwd=REPO)
    deadline = time.monotonic() + 20
    # this capture's one incident opens within its first 8 s, 0.8 s of wall time at 10x
    while time.monotonic() < deadline and not alerts_of(alerts.read_text() if alerts.exists() else ""):
        time.sleep(0.1)
    time.sleep(1.5)  # past one state commit, still mid-replay (the capture lasts 3 s at 10x)
    assert proc.poll() is None, "the replay ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the open line was flushed as written; a killed sensor writes no close
    assert [a["event"] for a in alerts_of(alerts.read_text())] == ["open"]
    again = camwatch("replay", SITE, "--config", config)
    assert again.returncode == 0
    assert alerts_of(again.stdout) == []


def test_corrupt_state_database_is_a_clear_error(tmp_path):
    config = config_with_state(tmp_path)
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    proc = camwatch("replay", SITE, "--config", config)
    assert proc.returncode == 2
    assert "cannot use the state database" in proc.stderr and "Traceback" not in proc.stderr
