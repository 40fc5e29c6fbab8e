"""How the input is cut into batches changes nothing camwatch reports: every fixture fed in batches of 1, 2 and
100 packets (a live pump's reads, a replay's chunk edges) gives exactly its golden alerts, metrics and inventory
(tests/golden.py), and so does a live sensor fed a packet at a time; its flow records are those of one batch. The
cut that matters most falls between a flow's first packet and the one that names it (a ClientHello's SNI, the
answering camera's MAC): a new flow is judged at the end of its second (live, NAME_WAIT after its first packet at
the latest), never at its batch's end."""

from __future__ import annotations

import golden
import pytest

from sensor import decode as decoding
from sensor import pipeline

CASES = golden.fixture_cases()
IDS = [c.name for c in CASES]


def _differences(case: golden.Case) -> list[str]:
    expected = golden.load(case)
    assert expected is not None
    produced = golden.outputs(case)
    # a live sensor's own gauge (wall-clock lag), not a result of the packets
    produced["metrics"] = [m for m in produced["metrics"] if "processing_lag" not in m]
    return golden.differences(expected, produced)


@pytest.mark.parametrize("packets", [1, 2, 100])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_any_batch_size_gives_the_golden_outputs(case, packets, monkeypatch):
    monkeypatch.setattr(decoding, "DECODE_SLICE", packets)
    diff = _differences(case)
    assert not diff, f"{case.name} in batches of {packets} differs:\n" + "\n".join(diff)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_live_sensor_fed_a_packet_at_a_time_gives_the_golden_outputs(case, monkeypatch):
    """Live, lines go out after every read and a new flow waits at most NAME_WAIT of capture time: in these
    captures whatever names a flow comes sooner than that."""
    monkeypatch.setattr(decoding, "DECODE_SLICE", 1)
    real_init = pipeline.Sensor.__init__

    def live_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.live = True
    monkeypatch.setattr(pipeline.Sensor, "__init__", live_init)
    diff = _differences(case)
    assert not diff, f"{case.name} live, a packet at a time, differs:\n" + "\n".join(diff)


def _flow_records(case: golden.Case, tmp_path, packets: int, monkeypatch) -> list[str]:
    """The flow log (--flows) of a replay of the case in batches of `packets`, its lines sorted: flows that end
    together are written in the order their tables hold them, which follows the batches' groups."""
    from sensor.cli.loop import replay_into
    from sensor.config import load_config
    from sensor.export.flow_log import FlowLog

    monkeypatch.setattr(decoding, "DECODE_SLICE", packets)
    path = tmp_path / f"flows-{packets}.jsonl"
    sensor = pipeline.Sensor(load_config(case.config))
    log = FlowLog(str(path))
    log.attach(sensor)
    replay_into(sensor, [str(p) for p in case.pcaps])
    log.close()
    return sorted(path.read_text().splitlines())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_any_batch_size_gives_the_same_flow_records(case, tmp_path, monkeypatch):
    """Each flow record (counters, states, MACs, names, devices, incidents) whatever the batches: a SYN that
    reopens a port pair, a frame without a link layer or a name in the next packet falls on either side of a cut."""
    whole = _flow_records(case, tmp_path, 1 << 20, monkeypatch)
    for packets in (1, 7):
        assert _flow_records(case, tmp_path, packets, monkeypatch) == whole, f"{case.name} in batches of {packets}"


@pytest.mark.parametrize("packets", [3, 5, 7, 11])
def test_a_retried_handshake_cut_across_batches_counts_the_same_flows(packets, monkeypatch):
    """rtsp.pcap holds a SYN refused by a RST and tried again on the same port pair half a second later (every
    packet four times, as its mirror port captured it): the refused attempt and the connection are two flows
    however the batches cut the SYNs, the RSTs and the SYN-ACKs apart (flows_created, flows_expired)."""
    monkeypatch.setattr(decoding, "DECODE_SLICE", packets)
    case = next(c for c in CASES if c.name == "real/ndpi/rtsp.pcap")
    assert not _differences(case)
