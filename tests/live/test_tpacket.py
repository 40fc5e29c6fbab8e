"""The tpacket engine live: `camwatch run --engine tpacket` over a veth pair between two namespaces made here
(cwtp-*), fed by tcpreplay at a low rate, against the dumpcap engine on the same input: the same packets, alerts
and metrics, and no capability left in any thread while it captures.

Short runs at 2,000 packets/s: what is tested is equality and privilege, not speed (bench/live_capture.py).
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, alerts_of

from .test_live import (
    SITE,
    SITE_CONFIG,
    Camwatch,
    Link,
    _unavailable,
    alert_keys,
    packets_total,
    run,
    tcpreplay,
    veth_pair,
)

pytestmark = pytest.mark.root

_SKIP = _unavailable()
_serial = itertools.count()
# Families whose values follow from the packets alone (not from wall-clock timing or process identity).
SAME_METRICS = ("camwatch_packets_total", "camwatch_bytes_total", "camwatch_decoded_packets_total",
                "camwatch_decode_errors_total", "camwatch_devices", "camwatch_device_info",
                "camwatch_device_egress_bytes_total", "camwatch_dissect_errors_total", "camwatch_external_destinations",
                "camwatch_segmentation_violations_total", "camwatch_capture_dropped_packets_total",
                "camwatch_capture_interface_received_packets_total", "camwatch_egress_country_bytes_total")


@pytest.fixture
def tp_link(request):
    """A veth pair in namespaces of this test's own (cwtp-PID-N): never those of other runs on the machine."""
    if _SKIP:
        pytest.skip(_SKIP)
    n = next(_serial)
    pid = os.getpid()
    return veth_pair(request, Link(f"cwtp-{pid}-{n}-s", f"cwtp-{pid}-{n}-f", f"cwtps{pid}n{n}", f"cwtpf{pid}n{n}"))


def metric_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.split("{")[0].split(" ")[0] in SAME_METRICS)


def thread_capabilities(pid: int) -> dict[str, dict[str, str]]:
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        found[task.name] = {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs")}
    return found


def test_tpacket_counts_every_packet_and_alerts_like_dumpcap(tp_link, tmp_path):
    # Each engine in turn on the same link, into files of its own.
    results = {}
    held = {}
    for engine in ("dumpcap", "tpacket"):
        base = tmp_path / engine
        base.mkdir()
        cw = Camwatch(tp_link, base, "--config", str(SITE_CONFIG), "--engine", engine)
        try:
            cw.wait_capturing()
            if engine == "tpacket":
                # While it captures: not one thread holds a capability, and none can regain one.
                held = thread_capabilities(cw.proc.pid)
            sent = tcpreplay(tp_link, "--pps", "2000")
            time.sleep(0.5)
            assert cw.terminate() == 0, cw.stderr
        finally:
            cw.kill()
        results[engine] = (sent, cw.alerts.read_text(), cw.metrics.read_text(), cw.stderr)

    sent, alerts, metrics, stderr = results["tpacket"]
    assert held and all(sets == {"CapEff": "0" * 16, "CapPrm": "0" * 16, "CapInh": "0" * 16, "CapAmb": "0" * 16,
                                 "NoNewPrivs": "1"} for sets in held.values()), held
    assert packets_total(metrics) == sent, stderr
    m = re.search(r"capture drops:\s+([\d,]+) \(tpacket received ([\d,]+), passed on ([\d,]+)\)", stderr)
    assert m and tuple(int(g.replace(",", "")) for g in m.groups()) == (0, sent, sent), stderr
    assert "warning" not in stderr
    d_sent, d_alerts, d_metrics, _ = results["dumpcap"]
    assert d_sent == sent
    # Every frame of the site capture is VLAN-tagged: the kernel took the tags off, the engine put them back.
    assert alert_keys(alerts_of(alerts)) == alert_keys(alerts_of(d_alerts))
    assert alerts_of(alerts)
    assert metric_lines(metrics) == metric_lines(d_metrics)


@pytest.mark.parametrize(("bpf", "display"), [("udp port 53 or tcp port 443", "udp.port == 53 or tcp.port == 443"),
                                              # the kernel keeps the tag outside the packet: a live-compiled filter
                                              # tests it there, as dumpcap's does
                                              ("vlan 20 and tcp", "vlan.id == 20 and tcp")])
def test_tpacket_filter_means_what_it_means_to_dumpcap(tp_link, tmp_path, bpf, display):
    counted = {}
    for engine in ("dumpcap", "tpacket"):
        base = tmp_path / engine
        base.mkdir()
        cw = Camwatch(tp_link, base, "--engine", engine, "--bpf", bpf)
        try:
            cw.wait_capturing()
            tcpreplay(tp_link, "--pps", "4000")
            time.sleep(0.5)
            assert cw.terminate() == 0, cw.stderr
        finally:
            cw.kill()
        counted[engine] = packets_total(cw.metrics.read_text())
    listed = subprocess.run(["tshark", "-r", str(SITE), "-Y", display, "-T", "fields",
                             "-e", "frame.number"], capture_output=True, text=True, check=True).stdout
    expected = len(listed.split())
    assert 0 < counted["tpacket"] < 1622
    assert counted["tpacket"] == counted["dumpcap"] == expected


def _flows_created(metrics_text: str) -> float:
    m = re.search(r"^camwatch_flows_created_total(?:\{[^}]*\})? (\S+)$", metrics_text, re.M)
    assert m, metrics_text
    return float(m[1])


def _tpacket_runs(lk: Link, tmp: Path, name: str, config: Path, processes: int) -> tuple[int, list[str]]:
    """`processes` camwatch runs with `config` on the same interface at once, fed the site once: (sent, metrics)."""
    workers = []
    try:
        for i in range(processes):
            base = tmp / f"{name}{i}"
            base.mkdir()
            workers.append(Camwatch(lk, base, "--config", str(config)))
        for cw in workers:
            cw.wait_capturing()
        sent = tcpreplay(lk, "--pps", "4000")
        time.sleep(0.5)
        for cw in workers:
            assert cw.terminate() == 0, cw.stderr
    finally:
        for cw in workers:
            cw.kill()
    return sent, [cw.metrics.read_text() for cw in workers]


def test_two_processes_in_one_fanout_group_share_the_packets_by_flow(tp_link, tmp_path):
    alone = tmp_path / "alone.toml"
    alone.write_text('[capture]\nengine = "tpacket"\nbuffer_mib = 64\n')
    grouped = tmp_path / "fanout.toml"
    grouped.write_text('[capture]\nengine = "tpacket"\nfanout_group = 4242\nbuffer_mib = 64\n')
    sent, [whole] = _tpacket_runs(tp_link, tmp_path, "alone", alone, 1)
    sent_again, shares = _tpacket_runs(tp_link, tmp_path, "worker", grouped, 2)
    assert sent == sent_again == packets_total(whole)
    counts = [packets_total(m) for m in shares]
    # Every packet reaches exactly one of them (the demo site's 20-odd flows make a one-sided split vanishingly
    # unlikely), and all of a flow's packets, both ways, the same one: the flows add up to those of one whole run.
    assert sum(counts) == sent and all(counts), counts
    assert sum(_flows_created(m) for m in shares) == _flows_created(whole)
    # The interface counts every frame, a member only its share: no interface series to compare against.
    assert "camwatch_capture_interface_received_packets_total" in whole
    assert not any("camwatch_capture_interface_received_packets_total" in m for m in shares)


def test_interface_deleted_under_tpacket_is_one_clean_error(tp_link, tmp_path):
    cw = Camwatch(tp_link, tmp_path, "--engine", "tpacket")
    try:
        cw.wait_capturing()
        run("ip", "-n", tp_link.sensor_ns, "link", "del", tp_link.sensor_if)
        assert cw.wait(timeout=30) == 1, cw.stderr
    finally:
        cw.kill()
    assert "Traceback" not in cw.stderr, cw.stderr
    errors = [line for line in cw.lines if line.startswith("camwatch: error")]
    assert errors == [f"camwatch: error: capture on {tp_link.sensor_if} ended unexpectedly: Network is down "
                      "(the interface went down or away)\n"], cw.stderr
    assert cw.metrics.exists()


_AS_NOBODY = """
import json, os, sys
from sensor.tpacket import TpacketCapture
capture = TpacketCapture(sys.argv[1], buffer_mib=16, user="nobody")
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({"uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
                  "caps": [status[k].strip() for k in ("CapEff", "CapPrm", "CapInh", "CapAmb")]}))
capture.stop()
"""


def test_started_as_root_it_runs_on_as_the_configured_user(tp_link):
    out = subprocess.run(["ip", "netns", "exec", tp_link.sensor_ns, sys.executable, "-c", _AS_NOBODY,
                          tp_link.sensor_if], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    nobody = pwd.getpwnam("nobody")
    assert state["uid"] == [nobody.pw_uid] * 3 and state["gid"] == [nobody.pw_gid] * 3
    assert state["groups"] == [] and state["caps"] == ["0" * 16] * 4


def test_the_live_benchmark_compares_both_engines():
    if _SKIP:
        pytest.skip(_SKIP)
    out = subprocess.run([sys.executable, "bench/live_capture.py", "--pps", "4000", "--loops", "1", "--compare",
                          "--settle", "0.5", "--netns-prefix", "cwtp"], cwd=REPO, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line.startswith(("| dumpcap", "| tpacket"))]
    assert [row[0] for row in rows] == ["| dumpcap", "| tpacket"], out.stdout
    for row in rows:
        assert row[1] == "1,622" and row[3] == "0 (0.00%)" and row[5] == "0", out.stdout   # sent, lost, unaccounted
    # No dumpcap process under the tpacket engine (too few packets here for CPU figures to mean more).
    assert rows[1][8] == "0.00 s" and "dumpcap CPU               none (no capture process)" in out.stdout, out.stdout


def test_sigterm_under_steady_traffic_ends_promptly_with_every_taken_packet_counted(tp_link, tmp_path):
    """Traffic goes on after the stop: the capture still ends promptly (the engine seals its socket after the
    linger and drains the ring as it stands; at this low rate a drain would end anyway, so what this holds is the
    accounting across the seal), and what it passed on is what camwatch counted."""
    cw = Camwatch(tp_link, tmp_path, "--engine", "tpacket")
    feed = subprocess.Popen(["ip", "netns", "exec", tp_link.feed_ns, "tcpreplay", "-q", "-i", tp_link.feed_if,
                             "--pps", "3000", "--loop", "20", str(SITE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cw.wait_capturing()
        time.sleep(1.0)
        stopped = time.monotonic()
        assert cw.terminate(timeout=15) == 0, cw.stderr
        took = time.monotonic() - stopped
        assert feed.poll() is None   # still sending when camwatch had finished
    finally:
        feed.terminate()
        feed.wait()
        cw.kill()
    assert took < 5, cw.stderr
    counted = packets_total(cw.metrics.read_text())
    m = re.search(r"capture drops:\s+([\d,]+) \(tpacket received ([\d,]+), passed on ([\d,]+)\)", cw.stderr)
    assert m, cw.stderr
    dropped, received, passed = (int(g.replace(",", "")) for g in m.groups())
    assert counted > 0 and dropped == 0 and passed == counted and received >= passed, cw.stderr


def test_a_stalled_sensor_overflows_its_ring_and_every_packet_is_counted_or_reported_dropped(tp_link, tmp_path):
    """A 1 MiB ring (8 blocks) and camwatch stopped while the site is sent twice (about 4 MB): the kernel drops
    what does not fit and says so (tp_drops); nothing vanishes unaccounted."""
    config = tmp_path / "small-ring.toml"
    config.write_text('[capture]\nengine = "tpacket"\nbuffer_mib = 1\n')
    cw = Camwatch(tp_link, tmp_path, "--config", str(config))
    try:
        cw.wait_capturing()
        os.kill(cw.proc.pid, signal.SIGSTOP)
        try:
            sent = tcpreplay(tp_link, "--pps", "4000", "--loop", "2")
        finally:
            os.kill(cw.proc.pid, signal.SIGCONT)
        time.sleep(0.5)
        assert cw.terminate() == 0, cw.stderr
    finally:
        cw.kill()
    metrics = cw.metrics.read_text()
    counted = packets_total(metrics)
    dropped = float(re.search(r"^camwatch_capture_dropped_packets_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)[1])
    assert dropped > 0 and counted > 0, cw.stderr
    assert counted + dropped == sent, cw.stderr
    assert "ring full" in cw.stderr
