"""sensor/live.py without dumpcap: its stderr, split however the pipe delivers it, gives one clean error line and
the right counts."""

from __future__ import annotations

import collections
import threading

import pytest

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
