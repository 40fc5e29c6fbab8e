"""The live sensor under a burst of every hostile packet class, on a veth between private network namespaces: it
keeps capturing, counts every frame, alerts on the real camera behind the burst, and /metrics answers throughout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from hostile_packets import CAMERA, CAMERA6, PUBLIC, PUBLIC6, every_class

from .test_live import link, packets_total, run, settle, start_camwatch, tcpreplay  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root

# Scrapes /metrics from inside the sensor's namespace, 0.1 s after each answer, until told to stop (a line on
# stdin); then prints how many answered, the failures, and the longest time without an answer.
SCRAPER = r"""
import json, select, sys, time, urllib.request
url, ok, failures = sys.argv[1], 0, []
last = time.monotonic()
longest = 0.0
while not select.select([sys.stdin], [], [], 0.1)[0]:
    try:
        body = urllib.request.urlopen(url, timeout=10).read()
        if b"camwatch_packets_total" in body:
            ok += 1
            longest, last = max(longest, time.monotonic() - last), time.monotonic()
    except Exception as exc:
        failures.append(repr(exc))
print(json.dumps({"ok": ok, "failures": failures, "longest_silence_s": longest}))
"""


def test_a_burst_of_every_hostile_class_neither_stops_nor_blinds_the_live_sensor(link, start_camwatch,  # noqa: F811
                                                                                  tmp_path):
    capture = tmp_path / "hostile.pcap"
    frames = every_class(capture, forged=3_000)
    run("ip", "-n", link.sensor_ns, "link", "set", "lo", "up")
    for ns, ifname in ((link.sensor_ns, link.sensor_if), (link.feed_ns, link.feed_if)):
        run("ip", "-n", ns, "link", "set", ifname, "mtu", "65000")   # the discovery floods are jumbo datagrams
    cw = start_camwatch(link, "--serve", "127.0.0.1:0")
    cw.wait_capturing()
    deadline = time.monotonic() + 5
    while not (served := re.search(r"serving metrics on (http://\S+)", cw.stderr)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served, cw.stderr
    scraper = subprocess.Popen(["ip", "netns", "exec", link.sensor_ns, sys.executable, "-c", SCRAPER,
                                served[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        sent = 0
        for _ in range(3):   # three bursts, each every class at 5,000 frames/s
            sent += tcpreplay(link, "--pps", "5000", pcap=capture)
        time.sleep(1.0)
        assert cw.proc.poll() is None, cw.stderr
    finally:
        out, _ = scraper.communicate("stop\n", timeout=30)
    scrapes = json.loads(out)
    # answering throughout: every scrape, and never silent for long even on a loaded 2-core machine
    assert scrapes["failures"] == [] and scrapes["ok"] >= 3 and scrapes["longest_silence_s"] < 5, scrapes
    assert sent == 3 * frames
    settle(cw.proc.pid)   # the scraper stopped: whatever is still queued for camwatch is taken before the stop
    assert cw.terminate(timeout=30) == 0, cw.stderr
    assert "Traceback" not in cw.stderr
    assert packets_total(cw.metrics.read_text()) == sent
    alerts = [json.loads(line) for line in cw.alerts.read_text().splitlines()]
    # the real camera behind the burst, and the uploads hidden behind long header chains, are seen
    seen = {(a["device"]["ip"], ip) for a in alerts if a["event"] == "close" and "egress_policy" in a["detectors"]
            for ip in a["totals"]["addresses"]}
    assert {(CAMERA, PUBLIC), (CAMERA6, PUBLIC6)} <= seen
    # three bursts of 3,000 forged sources: a summary per flood window, not a line per source
    assert len(alerts) < 200
    assert any("flood" in a for a in alerts)
