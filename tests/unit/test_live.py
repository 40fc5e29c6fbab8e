"""sensor/live.py without dumpcap: its stderr, split however the pipe delivers it, gives one clean error line and
the right counts; the pipe queue's slabs; a slow start waited out while dumpcap lives (a stand-in on PATH)."""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

import pytest

from sensor.errors import CamwatchError, StartCancelled
from sensor.live import LiveCapture


def _stderr_parser() -> LiveCapture:
    live = LiveCapture.__new__(LiveCapture)   # the stderr handling only, no dumpcap
    live._lock = threading.Lock()
    live._stats, live._captured, live._messages = {}, 0, collections.deque(maxlen=64)

    class Exited:
        @staticmethod
        def poll():
            return 1
    live.proc = Exited()
    return live


# What dumpcap 4.0 wrote when its interface was deleted under it: the running count has no line end, so the
# message starts on the count's line.
INTERFACE_DELETED = (b"Capturing on 'cwhca'\nFile: -\n\rPackets: 2 \rPackets: 6 dumpcap: The network adapter "
                     b"\"cwhca\" is no longer attached; the capture has stopped.\n\rPackets captured: 6\n"
                     b"Packets received/dropped on interface 'cwhca': 6/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) "
                     b"(100.0%)\n")


@pytest.mark.parametrize("piece", [len(INTERFACE_DELETED), 1, 5, 17])
def test_dumpcap_message_after_a_running_count_is_one_clean_line(piece):
    live = _stderr_parser()
    rest = b""
    for i in range(0, len(INTERFACE_DELETED), piece):
        lines, rest = live._split_stderr(rest + INTERFACE_DELETED[i:i + piece])
        for line in lines:
            live._stderr_line(line)
    live._stderr_line(rest.decode().strip())
    assert live.error_message() == 'The network adapter "cwhca" is no longer attached; the capture has stopped.'
    assert live.captured == 6
    assert live.received == 6 and live.dropped == 0


def _pipe_queue(queue_mib: int = 64) -> LiveCapture:
    live = LiveCapture.__new__(LiveCapture)   # the queue between the pump and the reader only, no dumpcap
    live._cond = threading.Condition()
    live._queue, live._queued, live._free_slabs, live._slabs_made = collections.deque(), 0, [], 0
    live._queue_limit, live._discard, live._eof, live._tick = queue_mib << 20, False, False, 0.01
    live._stop_requested_at = 0.0   # the reader takes what is queued without waiting for a batch to gather
    return live


def _backlog(live: LiveCapture, slabs: int) -> None:
    """What the pump does while the analysis stalls: fills slab after slab and queues each whole."""
    for _ in range(slabs):
        slab = live._next_slab()
        slab[:] = b"\xab" * len(slab)
        live._queue.append((slab, 0, len(slab)))
        live._queued += len(slab)


def test_a_drained_backlog_keeps_only_the_spare_slabs_and_lets_the_rest_go():
    live = _pipe_queue()
    _backlog(live, 9)
    assert live._slabs_made == 9
    out = bytearray(LiveCapture.SLAB_BYTES)
    for _ in range(9):
        assert live._readinto(memoryview(out)) == LiveCapture.SLAB_BYTES
        assert out == b"\xab" * len(out)
    assert live._queued == 0
    assert len(live._free_slabs) == LiveCapture.SPARE_SLABS == 2
    assert live._slabs_made == 2   # the other seven were unmapped: a later backlog may make them again


def test_steady_capture_reuses_its_spare_slabs():
    live = _pipe_queue()
    _backlog(live, 2)
    out = bytearray(LiveCapture.SLAB_BYTES)
    live._readinto(memoryview(out))
    live._readinto(memoryview(out))
    spares = list(live._free_slabs)
    _backlog(live, 2)
    assert live._slabs_made == 2 and not live._free_slabs
    assert {id(buf) for buf, _, _ in live._queue} == {id(s) for s in spares}



# A classic pcap file header (microseconds, Ethernet) as dumpcap -P writes it once capturing.
PCAP_HEADER = r"\324\303\262\241\002\000\004\000\000\000\000\000\000\000\000\000\000\000\004\000\001\000\000\000"


@pytest.fixture
def fake_dumpcap(tmp_path, monkeypatch):
    """Put a `dumpcap` running `script` (sh) first on PATH."""
    def install(script: str) -> None:
        path = tmp_path / "dumpcap"
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return install


def test_a_slow_start_is_waited_out_and_told_while_dumpcap_lives(fake_dumpcap, monkeypatch):
    monkeypatch.setattr(LiveCapture, "START_NOTICE", 0.2)
    fake_dumpcap(f"sleep 0.7; printf '{PCAP_HEADER}'; exec sleep 30")
    told: list[float] = []
    live = LiveCapture("eth9", buffer_mib=1, start_limit=5, waiting=told.append)
    try:
        assert live.proc.poll() is None
        assert 2 <= len(told) <= 4 and told == sorted(told) and 0.2 <= told[0] < 0.4
    finally:
        live.stop()


def test_a_start_past_the_limit_is_one_error_and_dumpcap_is_stopped(fake_dumpcap, tmp_path):
    fake_dumpcap(f"echo $$ > {tmp_path}/pid; exec sleep 30")
    began = time.monotonic()
    with pytest.raises(CamwatchError) as err:
        LiveCapture("eth9", buffer_mib=7, start_limit=0.5)
    assert time.monotonic() - began < 3
    assert not Path(f"/proc/{(tmp_path / 'pid').read_text().strip()}").exists()   # stopped and reaped
    assert str(err.value) == ("dumpcap did not start capturing on eth9 within 0.5 s (it was still running: stuck "
                              "opening the interface or allocating its 7 MiB capture buffer)")


def test_dumpcap_failing_after_a_slow_start_is_its_own_error(fake_dumpcap, monkeypatch):
    monkeypatch.setattr(LiveCapture, "START_NOTICE", 0.2)
    fake_dumpcap("sleep 0.5; echo 'dumpcap: There is no device named \"eth9\".' >&2; exit 1")
    with pytest.raises(CamwatchError) as err:
        LiveCapture("eth9", buffer_mib=1, start_limit=5, waiting=lambda s: None)
    assert str(err.value) == 'dumpcap cannot capture on eth9: There is no device named "eth9".'


def test_a_stop_during_a_slow_start_cancels_it(fake_dumpcap):
    fake_dumpcap("exec sleep 30")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(StartCancelled, match="stopped before dumpcap started capturing on eth9"):
        LiveCapture("eth9", buffer_mib=1, start_limit=10, cancelled=stop.is_set)
    assert time.monotonic() - began < 3
