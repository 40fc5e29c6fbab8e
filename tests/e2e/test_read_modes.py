"""The way a capture file is read changes nothing camwatch reports: the fixtures read through a memory map
(sensor.mapped, the default for large files; also with its prefetch thread, and with the next batch read and
decoded on the overlap thread, sensor.overlap, or in line), with the read-ahead thread
(sensor.readahead) and with readinto in line, each in chunks small enough that records straddle many chunk
boundaries, give exactly their golden alerts, metrics and inventory (tests/golden.py)."""

from __future__ import annotations

import golden
import pytest

from sensor import capture, mapped, overlap
from sensor.cli import loop

CASES = {c.name: c for c in golden.fixture_cases()}
PICKED = ["synthetic/camera_site.pcap", "synthetic/links/two_interfaces.pcapng", "real/ndpi/rtsp.pcap",
          "real/nku-lifecycle/xiaobai_Y2camera_setup.pcap"]
# MAP_FROM, READ_AHEAD_FROM, mapped.PREFETCH, capture.overlap (only mapped files are overlapped), overlap.SHARE
# (on: the decode of each batch on whichever thread the timing gives; off: every batch decoded on the thread)
MODES = {"mapped": (1, 0, False, "off", True), "mapped-overlap": (1, 0, False, "on", True),
         "mapped-overlap-unshared": (1, 0, False, "on", False), "mapped-prefetch": (1, 0, True, "off", True),
         "read-ahead": (0, 1, False, "on", True), "readinto": (0, 0, False, "on", True)}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", PICKED)
def test_each_read_mode_gives_the_golden_outputs(name, mode, monkeypatch):
    case = CASES[name]
    expected = golden.load(case)
    assert expected is not None
    map_from, ahead_from, prefetch, overlapping, share = MODES[mode]
    monkeypatch.setattr(mapped, "PREFETCH", prefetch)
    monkeypatch.setattr(overlap, "SHARE", share)
    real_batches, threads = overlap.batches, []

    def batches(reader, mode):   # whatever the config says
        threads.append(reader.mapped and overlapping == "on")
        return real_batches(reader, overlapping)
    monkeypatch.setattr(overlap, "batches", batches)
    monkeypatch.setattr(capture, "MAP_FROM", map_from)
    monkeypatch.setattr(capture, "READ_AHEAD_FROM", ahead_from)
    monkeypatch.setattr(capture, "CHUNK_BYTES", 16 << 10)
    opened = []
    real_open = capture.open_file

    def spy(path):
        reader, size = real_open(path)
        opened.append(type(reader._read_ahead).__name__)
        return reader, size
    monkeypatch.setattr(loop, "open_file", spy)
    diff = golden.differences(expected, golden.outputs(case))
    assert not diff, f"{name} read {mode} differs:\n" + "\n".join(diff)
    assert opened == [{"mapped": "MappedFile", "mapped-overlap": "MappedFile", "mapped-overlap-unshared": "MappedFile",
                       "mapped-prefetch": "MappedFile", "read-ahead": "ReadAhead", "readinto": "NoneType"}[mode]]
    assert threads == [mode.startswith("mapped-overlap")]
