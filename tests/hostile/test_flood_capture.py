"""Floods: a million spoofed flows, a scanning camera and a DNS flood keep memory and metric cardinality
bounded, are counted, and do not hide a real phone-home."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, alerts_of, metric_values, value
from flood import PCAP_HEADER, camera_scan, spoofed_flood

from packets import PcapWriter, dns_response, ethernet, ipv4, mac, tcp, udp
from sensor.detect.incidents import FAN_OUT

MAX_FLOWS = 50_000
MAX_NAMES = 5_000
# Measured ~175 MB with the cap and ~650 MB without it.
PEAK_RSS_LIMIT_MB = 300
# The peak is the process's own high-water mark (VmHWM). getrusage's ru_maxrss would not do: Linux carries it across
# exec, so a child spawned by a large pytest process reports pytest's size (CI once saw 615 MB that way).
MEASURED = """
import re, sys
from sensor.cli import main
try:
    code = main(sys.argv[1:])
finally:
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    sys.stderr.write(f"peak_rss_kib={peak}\\n")
sys.exit(code)
"""


@pytest.fixture(scope="module")
def flood_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("flood")
    t0 = 1_700_000_000.0
    # the real phone-home and the DNS flood, written by the ordinary builders
    extra = d / "extra.pcap"
    gw, cam = mac("00:1e:bd:00:00:01"), mac("04:03:12:00:00:09")
    with PcapWriter(extra) as w:
        for k in range(20_000):
            name = f"n{k}.flood.example"
            body = dns_response(k & 0xFFFF, name, [(name, 1, 300, f"198.51.{(k >> 8) & 255}.{k & 255}")])
            w.write(t0 + 1 + k / 10_000, ethernet(cam, gw, 0x0800, ipv4("10.20.0.1", "10.20.0.9", 17,
                                                  udp("10.20.0.1", "10.20.0.9", 53, 5353, body))))
        seg = tcp("10.20.0.9", "203.0.113.9", 41000, 443, 1, 0, "S")
        w.write(t0 + 5.0, ethernet(gw, cam, 0x0800, ipv4("10.20.0.9", "203.0.113.9", 6, seg)))
    flood = spoofed_flood(1_000_000, t0=t0, rate=100_000)
    scan = camera_scan(5_000, "10.20.0.5", t0=t0 + 2, rate=1000)
    records = np.concatenate([flood, scan])
    ts = records[:, :16].view("<u4")
    order = np.argsort(ts[:, 0].astype(np.float64) + ts[:, 1] / 1e6, kind="stable")
    path = d / "flood.pcap"
    path.write_bytes(PCAP_HEADER + records[order].tobytes())
    config = d / "c.toml"
    config.write_text(f'[networks]\ncamera = ["10.20.0.0/16"]\n[flows]\nmax_flows = {MAX_FLOWS}\n'
                      f'[limits]\nmax_names = {MAX_NAMES}\nmax_devices = 1000\n')
    # The child reports its own peak: RUSAGE_CHILDREN would be the largest of every child this session reaped.
    proc = subprocess.run([sys.executable, "-c", MEASURED, "replay", str(path), str(extra), "--config", str(config),
                           "--metrics-out", str(d / "m.prom"), "--quiet"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stderr.strip().splitlines()[-1].removeprefix("peak_rss_kib=")) / 1024
    return proc, metric_values((d / "m.prom").read_text()), peak_mb


def test_every_packet_counted_and_flows_capped(flood_run):
    _, m, _ = flood_run
    assert value(m, "camwatch_packets_total") == 1_000_000 + 5_000 + 20_000 + 1
    assert value(m, "camwatch_flows_created_total") >= 1_000_000
    assert value(m, "camwatch_flows_active") <= MAX_FLOWS
    assert value(m, "camwatch_flows_expired_total", reason="evicted") >= 1_000_000 - MAX_FLOWS


def test_memory_stays_under_the_documented_cap(flood_run):
    _, _, peak_mb = flood_run
    assert peak_mb < PEAK_RSS_LIMIT_MB


def test_name_cache_is_bounded(flood_run):
    _, m, _ = flood_run
    assert value(m, "camwatch_dns_names") == MAX_NAMES


def test_scanner_alerts_are_capped_and_the_real_phone_home_still_alerts(flood_run):
    proc, m, _ = flood_run
    alerts = alerts_of(proc.stdout)
    scanner = [a for a in alerts if a["device"]["ip"] == "10.20.0.5"]
    # 5,000 public addresses: FAN_OUT incidents of their own, then one fan-out incident for the rest, each once
    # opened and once closed; the detections are all counted
    opened = [a["service"]["id"] for a in scanner if a["event"] == "open"]
    assert len(opened) == FAN_OUT + 1 and opened[-1] == "fan-out-public"
    assert sorted(a["event"] for a in scanner) == ["close"] * (FAN_OUT + 1) + ["open"] * (FAN_OUT + 1)
    assert sum(value(m, "camwatch_alerts_total", detector="egress_policy", severity=sev)
               for sev in ("low", "medium", "high")) == 5_000 + 1   # and the phone-home camera's
    assert any(a["device"]["ip"] == "10.20.0.9" and a["destination"]["ip"] == "203.0.113.9" for a in alerts)
    # spoofed sources never answered by a camera create no devices and no alerts
    assert {a["device"]["ip"] for a in alerts} <= {"10.20.0.5", "10.20.0.9"}


def test_metric_cardinality_stays_bounded(flood_run):
    _, m, _ = flood_run
    assert len(m) < 400
    assert value(m, "camwatch_devices") <= 1000
