"""`--flows` as a user runs it: a record per flow the summary counts, the alerts unchanged by it, stdout, an
unwritable path (exit 2, one line), a full disk (one warning, the replay goes on), SIGHUP reopening both files
under a running replay (logrotate), and the records of a replay stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SYNTHETIC, alerts_of, camwatch

from packets import PcapWriter, ethernet, ipv4, mac, udp

SITE = SYNTHETIC / "camera_site.pcap"
SITE_CONFIG = SYNTHETIC / "camera_site.toml"
CAM, CLOUD = "10.20.0.11", "203.0.113.9"


def flows_of(stderr: str) -> int:
    found = re.search(r"^  flows:\s+([\d,]+)$", stderr, re.M)
    assert found, stderr
    return int(found.group(1).replace(",", ""))


def records_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_record_per_flow_and_the_alerts_unchanged(tmp_path):
    plain = camwatch("replay", SITE, "--config", SITE_CONFIG)
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--flows", tmp_path / "flows.jsonl")
    assert proc.returncode == 0 and plain.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout
    records = records_of((tmp_path / "flows.jsonl").read_text())
    assert len(records) == flows_of(proc.stderr) == len({r["uid"] for r in records})
    assert f"\n  flow records:          {len(records)}\n" in proc.stderr
    assert "flow records" not in plain.stderr
    incidents = {a["incident"] for a in alerts_of(proc.stdout)}
    linked = {r["camwatch.incident"] for r in records} - {None}
    assert linked == incidents
    assert all(r["camwatch.contract"] == 1 and r["camwatch.sensor"] == "demo-site" for r in records)


def test_flows_to_stdout_next_to_the_alerts():
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--flows", "-")
    assert proc.returncode == 0
    lines = records_of(proc.stdout)
    flows = [x for x in lines if "uid" in x]
    alerts = [x for x in lines if "contract" in x]
    assert len(flows) == flows_of(proc.stderr) and len(alerts) + len(flows) == len(lines) and alerts


@pytest.mark.parametrize("target, reason", [("missing/flows.jsonl", "No such file or directory"),
                                            (".", "Is a directory")])
def test_an_unwritable_flow_file_is_exit_2_with_one_line(tmp_path, target, reason):
    path = tmp_path / target
    proc = camwatch("replay", SITE, "--flows", path, "--alerts", tmp_path / "alerts.jsonl")
    assert proc.returncode == 2
    assert proc.stderr == f"camwatch: error: {path}: cannot write flow records: {reason}\n"
    assert proc.stdout == ""


def test_one_file_for_both_logs_is_refused(tmp_path):
    same = tmp_path / "out.jsonl"
    proc = camwatch("replay", SITE, "--alerts", same, "--flows", tmp_path / "." / "out.jsonl")
    assert proc.returncode == 2 and not same.exists()
    assert proc.stderr == f"camwatch: error: --alerts and --flows both name {same}: give each log its own file\n"
    assert camwatch("replay", SITE, "--alerts", "/dev/null", "--flows", "/dev/null", "--quiet").returncode == 0


def test_run_refuses_an_unwritable_flow_file_before_capturing(tmp_path):
    # The outputs are opened before dumpcap is started: nothing is captured, no interface is needed.
    path = tmp_path / "missing" / "flows.jsonl"
    proc = camwatch("run", "--interface", "camwatch-test0", "--flows", path, "--alerts", tmp_path / "a.jsonl")
    assert proc.returncode == 2
    assert proc.stderr == f"camwatch: error: {path}: cannot write flow records: No such file or directory\n"


def test_a_full_disk_is_one_warning_and_the_replay_goes_on():
    plain = camwatch("replay", SITE, "--config", SITE_CONFIG, "--quiet")
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--quiet", "--flows", "/dev/full")
    assert proc.returncode == 0
    assert proc.stderr == ("camwatch: warning: /dev/full: cannot write flow records: No space left on device; "
                           "dropping them until writes succeed\n")
    assert proc.stdout == plain.stdout
    summary = camwatch("replay", SITE, "--config", SITE_CONFIG, "--flows", "/dev/full").stderr
    assert f"  flow records:          0 ({flows_of(summary)} lost: the file could not be written)\n" in summary


def slow_capture(tmp_path: Path, flows: int = 100, gap: float = 0.1) -> tuple[Path, Path]:
    """A camera opening a new UDP flow to one public address every `gap` seconds, each ending a second later:
    records come out all along a realtime replay."""
    pcap = tmp_path / "slow.pcap"
    with PcapWriter(pcap) as w:
        for k in range(flows):
            src, dst = CAM, CLOUD
            w.write(1_700_000_000.0 + k * gap, ethernet(mac("02:00:00:00:00:fe"), mac("00:40:8c:00:00:11"), 0x0800,
                                                        ipv4(src, dst, 17, udp(src, dst, 20000 + k, 9000, b"x" * 40))))
    config = tmp_path / "slow.toml"
    config.write_text('[networks]\ncamera = ["10.20.0.0/24"]\n\n[flows]\nudp_idle_timeout = 1\n')
    return pcap, config


def start(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # SIGHUP as a terminal gives it: a suite started under nohup would hand its children an ignored SIGHUP
    return subprocess.Popen([sys.executable, "-m", "sensor", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


def wait_for_lines(path: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout} s")


def test_sighup_reopens_the_alert_and_flow_files_under_a_running_replay(tmp_path):
    pcap, config = slow_capture(tmp_path)
    alerts, flows = tmp_path / "alerts.jsonl", tmp_path / "flows.jsonl"
    proc = start("replay", pcap, "--config", config, "--pace", "realtime", "--alerts", alerts, "--flows", flows,
                 "--quiet")
    try:
        wait_for_lines(flows, 5)
        wait_for_lines(alerts, 1)
        os.rename(flows, tmp_path / "flows.jsonl.1")   # what logrotate does, then its postrotate: kill -HUP
        os.rename(alerts, tmp_path / "alerts.jsonl.1")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    before, after = (records_of((tmp_path / "flows.jsonl.1").read_text()), records_of(flows.read_text()))
    assert before and after
    uids = [r["uid"] for r in before + after]
    assert len(uids) == len(set(uids)) == 100      # nothing lost, nothing twice, every line whole
    old_alerts, new_alerts = (records_of((tmp_path / "alerts.jsonl.1").read_text()), records_of(alerts.read_text()))
    assert [a["event"] for a in old_alerts] == ["open"] and [a["event"] for a in new_alerts] == ["close"]


def test_a_replay_stopped_by_sigterm_writes_the_records_of_every_flow(tmp_path):
    pcap, config = slow_capture(tmp_path)
    flows = tmp_path / "flows.jsonl"
    proc = start("replay", pcap, "--config", config, "--pace", "realtime", "--flows", flows, "--alerts", "/dev/null")
    try:
        wait_for_lines(flows, 3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.endswith("camwatch: replay stopped by SIGTERM before the end of the captures: 0 of 1 file read to "
                        "the end\n")
    records = records_of(flows.read_text())
    # the stop ends the pacing: the rest of the batch in hand is processed at once, and every flow is written
    assert len(records) == flows_of(err) == len({r["uid"] for r in records})
    ends = {r["camwatch.end"] for r in records}
    assert ends == {"idle", "end"}


def test_with_everything_on_stdout_a_hang_up_still_stops_the_replay(tmp_path):
    # No file to reopen: SIGHUP keeps its meaning (the terminal went away), as before the flow log existed.
    pcap, config = slow_capture(tmp_path)
    proc = start("replay", pcap, "--config", config, "--pace", "realtime", "--flows", "-", "--quiet")
    try:
        assert proc.stdout is not None and json.loads(proc.stdout.readline())   # running: its first line is out
        proc.send_signal(signal.SIGHUP)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGHUP


def test_the_alert_log_rides_out_a_full_disk_the_same_way(tmp_path):
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--quiet", "--alerts", "/dev/full",
                    "--metrics-out", tmp_path / "m.prom")
    assert proc.returncode == 0
    assert proc.stderr == ("camwatch: warning: /dev/full: cannot write alerts: No space left on device; "
                           "dropping them until writes succeed\n")
    assert "camwatch_incident_lines_total" in (tmp_path / "m.prom").read_text()   # the rest of the run went on
