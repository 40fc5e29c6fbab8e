"""camwatch replay of a capture another process truncates while camwatch has it memory-mapped (log rotation, a copy
still being written, an attacker with write access to the capture directory): the process ends with exit 1 and one
line on stderr, never SIGBUS, and its outputs hold every packet before the cut (sensor/_mapguard.c,
sensor/mapped.py; the reader's own cases are in tests/unit/test_mapped_truncation.py)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from capture_bytes import pcap, video_frame, write

from sensor import capture
from tests.unit.test_mapped_truncation import REPO, _plain, child

pytest.importorskip("sensor._mapguard", reason="the SIGBUS guard is a compiled extension")


@pytest.mark.parametrize("faulthandler", ["", "1"])
def test_replay_of_a_file_truncated_by_another_process(tmp_path, faulthandler):
    """`camwatch replay` (mapped by default), the file cut by another process as soon as it is mapped: exit 1, one
    line on stderr, no traceback, no core, and the outputs hold every packet before the cut. Also with Python's
    faulthandler on from the start (PYTHONFAULTHANDLER), whose SIGBUS handler the guard's sits in front of."""
    assert capture.MAP_FROM and capture.MAP_FROM <= 64 << 20
    data = pcap(60_000, video_frame(1400))   # ~86 MB: a few dozen chunks
    path = write(tmp_path, "big.pcap", data)
    cut = len(data) // 3 + 5
    metrics = tmp_path / "m.prom"
    cmd = [str(REPO / ".venv" / "bin" / "camwatch"), "replay", str(path), "--quiet", "--alerts",
           str(tmp_path / "alerts.jsonl"), "--metrics-out", str(metrics)]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "sensor"]
    env = dict(os.environ, PYTHONFAULTHANDLER=faulthandler)
    replay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    truncator = child(f"""
        import os, sys, time
        maps, deadline = "/proc/{replay.pid}/maps", time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if {str(path)!r} in open(maps).read():
                    os.truncate({str(path)!r}, {cut})
                    sys.exit(0)
            except FileNotFoundError:
                sys.exit(3)
            time.sleep(0.0005)
        sys.exit(4)
    """)
    _out, err = replay.communicate(timeout=120)
    assert truncator.returncode == 0, "the file was never seen mapped"
    assert replay.returncode == 1, (replay.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(rf"big\.pcap at byte \d+: truncated while it was read: the file shrank from {len(data)} to "
                     rf"{cut} bytes", lines[0]), lines[0]
    intact = len(_plain(data[:cut])[0])
    counts = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'camwatch_decoded_packets_total\{network="(\w+)",sensor="camwatch"\} (\S+)', metrics.read_text())}
    assert intact <= counts["ipv4"] <= len(_plain(data)[0])
    assert "egress" in (tmp_path / "alerts.jsonl").read_text()   # the phone-home packet at the start: written
    assert metrics.read_text().count("camwatch_device_info{") == 1   # zeros read past the cut made no device


def test_frames_read_as_zeros_are_counted_and_nothing_more(tmp_path):
    """What the records of a batch cut under the sensor become (their pages read as zeros): frames of network
    "other", no device, no flow, no alert beyond those of the real packets."""
    real = pcap(100, video_frame(1400))
    zeros = b"".join(struct.pack("<IIII", 1_700_000_100, 0, 1400, 1400) + bytes(1400) for _ in range(300))
    outputs = {}
    for name, data in (("real", real), ("zeros", real + zeros)):
        path = write(tmp_path, f"{name}.pcap", data)
        done = subprocess.run([sys.executable, "-m", "sensor", "replay", str(path), "--quiet", "--alerts",
                               str(tmp_path / f"{name}.jsonl"), "--metrics-out", str(tmp_path / f"{name}.prom")],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs[name] = ((tmp_path / f"{name}.prom").read_text(), (tmp_path / f"{name}.jsonl").read_text())
    metric = re.compile(r'(camwatch_device_info\{.*|camwatch_flows_created_total\{.*|'
                        r'camwatch_decoded_packets_total\{network="(?:ipv4|ipv6)".*)', re.M)
    assert metric.findall(outputs["zeros"][0]) == metric.findall(outputs["real"][0])
    assert 'camwatch_decoded_packets_total{network="other",sensor="camwatch"} 300.0' in outputs["zeros"][0]
    alerts = [json.loads(line)["detector"] for line in outputs["zeros"][1].splitlines()]
    assert alerts == [json.loads(line)["detector"] for line in outputs["real"][1].splitlines()] and alerts
