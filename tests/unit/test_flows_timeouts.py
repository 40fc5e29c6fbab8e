"""Flow timeouts at their edges: every timeout at, just before and just after its boundary, with exact counts.

A flow idle for exactly its timeout is still alive (FlowTable.expire removes flows idle *longer* than the timeout);
one idle EPS longer has ended. The same holds for the active timeout (measured from the flow's first packet). Each
timeout is checked twice: on the flow table itself (FlowTable.expire at a chosen clock) and through the sensor
(sensor.pipeline.Sensor, configured by parse_config as a user's file would be), where a gap in packet time splits
one flow into two or not. Every count is asserted by value, never as a lower bound.

EPS is 1/1024 s, exact in binary floating point, so `boundary + EPS - boundary == EPS` with no rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from packets import ethernet, icmp_echo, ipv4, mac, tcp, udp
from sensor.capture import Batch
from sensor.config import Config, FlowSettings, parse_config
from sensor.decode import decode
from sensor.enrich import ManufDatabase
from sensor.flows import FlowTable
from sensor.pipeline import Sensor

EPS = 1 / 1024
T0 = 1_700_000_000.0
CAM, PEER = "10.20.0.11", "10.20.0.50"
CAM_MAC, PEER_MAC = mac("04:03:12:00:00:11"), mac("00:11:32:00:00:50")
# Distinct values for every timeout, so a table expired on another table's timeout is caught.
TIMEOUTS = {"tcp_idle_timeout": 300.0, "udp_idle_timeout": 60.0, "icmp_idle_timeout": 30.0,
            "tcp_closed_timeout": 5.0, "active_timeout": 100_000.0}
OFFSETS = {"just_before": -EPS, "at": 0.0, "just_after": EPS}


# ---- frames and batches -----------------------------------------------------------------------------------------
def eth(src: str, packet: bytes) -> bytes:
    """An Ethernet frame whose source MAC is the sender's own."""
    own, other = (CAM_MAC, PEER_MAC) if src == CAM else (PEER_MAC, CAM_MAC)
    return ethernet(other, own, 0x0800, packet)


def frame_udp(src=CAM, dst=PEER, sport=40000, dport=6000, payload=b"x" * 20) -> bytes:
    return eth(src, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)))


def frame_tcp(flags: str, src=CAM, dst=PEER, sport=40000, dport=8000, payload=b"") -> bytes:
    return eth(src, ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, flags, payload)))


def frame_icmp(src=CAM, dst=PEER, seq=1, reply=False) -> bytes:
    return eth(src, ipv4(src, dst, 1, icmp_echo(7, seq, reply)))


def frame_gre(src=CAM, dst=PEER) -> bytes:
    """IP protocol 47: neither TCP, UDP nor ICMP, so it lives in the table of icmp_idle_timeout."""
    return eth(src, ipv4(src, dst, 47, b"\x00\x00\x08\x00" + b"g" * 16))


def make_batch(records: list[tuple[float, bytes]]) -> Batch:
    frames = [f for _, f in records]
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Batch(b"".join(frames), offsets, lengths, lengths.copy(), np.array([t for t, _ in records]),
                 np.ones(len(frames), dtype=np.int32))


class Table:
    """A FlowTable fed one batch at a time, recording (flow, reason) of every flow that leaves it."""

    def __init__(self, **settings):
        self.ended: list[tuple[object, str]] = []
        self.flows = FlowTable(FlowSettings(**{**TIMEOUTS, **settings}),
                               on_end=lambda flow, reason: self.ended.append((flow, reason)))

    def feed(self, *records: tuple[float, bytes]) -> None:
        dec = decode(make_batch(list(records)))
        self.flows.update(dec, np.arange(len(records)))


# The packets that open each kind of flow, and that keep it going, and the timeout that governs it once idle.
def _tcp_open(t):
    return [(t, frame_tcp("S")), (t, frame_tcp("SA", PEER, CAM, 8000, 40000)), (t, frame_tcp("A"))]


def _tcp_closed(t):
    return _tcp_open(t) + [(t, frame_tcp("FA")), (t, frame_tcp("FA", PEER, CAM, 8000, 40000)), (t, frame_tcp("A"))]


KINDS = {
    # kind: (packets at time t that leave the flow in the table under test, a later packet of the same flow,
    #        setting that governs it)
    "tcp_idle": (_tcp_open, lambda t: (t, frame_tcp("PA", payload=b"more")), "tcp_idle_timeout"),
    "udp_idle": (lambda t: [(t, frame_udp())], lambda t: (t, frame_udp()), "udp_idle_timeout"),
    "icmp_idle": (lambda t: [(t, frame_icmp())], lambda t: (t, frame_icmp(seq=2)), "icmp_idle_timeout"),
    "other_ip_idle": (lambda t: [(t, frame_gre())], lambda t: (t, frame_gre()), "icmp_idle_timeout"),
    "tcp_closed": (_tcp_closed, lambda t: (t, frame_tcp("A")), "tcp_closed_timeout"),
}


# ---- the flow table itself --------------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_idle_timeout_boundary_on_the_flow_table(kind, offset):
    opening, _, setting = KINDS[kind]
    table = Table()
    table.feed(*opening(T0))
    assert len(table.flows) == 1 and table.flows.created == 1
    out = table.flows.expire(T0 + TIMEOUTS[setting] + offset)
    if offset > 0:
        assert len(out) == 1 and len(table.flows) == 0
        assert [reason for _, reason in table.ended] == ["idle"]
        assert table.flows.expired == {"idle": 1, "active": 0, "evicted": 0, "end": 0}
    else:
        assert out == [] and len(table.flows) == 1 and table.ended == []
        assert table.flows.expired == {"idle": 0, "active": 0, "evicted": 0, "end": 0}


@pytest.mark.parametrize("kind", KINDS)
def test_idle_timeout_is_measured_from_the_last_packet(kind):
    """A packet half a timeout in moves the idle deadline: the flow outlives first + timeout, ends after
    last + timeout."""
    opening, later, setting = KINDS[kind]
    timeout = TIMEOUTS[setting]
    table = Table()
    table.feed(*opening(T0))
    table.feed(later(T0 + timeout / 2))
    assert table.flows.expire(T0 + timeout + timeout / 2) == []
    assert len(table.flows.expire(T0 + timeout + timeout / 2 + EPS)) == 1
    assert table.flows.expired["idle"] == 1 and table.flows.created == 1


def test_a_closed_tcp_flow_leaves_on_the_closed_timeout_not_the_idle_one():
    table = Table()
    table.feed(*_tcp_open(T0))
    table.feed(*_tcp_closed(T0)[3:])   # the FIN exchange, same time
    flow = next(iter(table.flows.flows()))
    assert flow.closed and flow.state == "SF"
    assert len(table.flows.expire(T0 + 5.0 + EPS)) == 1
    table = Table()
    table.feed(*_tcp_open(T0))
    table.feed((T0, frame_tcp("R")))
    assert next(iter(table.flows.flows())).closed
    assert table.flows.expire(T0 + 5.0) == []
    assert len(table.flows.expire(T0 + 5.0 + EPS)) == 1


@pytest.mark.parametrize("side", ["originator", "responder"])
def test_a_fin_from_one_side_only_does_not_close_the_flow(side):
    """Half-closed is still open: it stays on the TCP idle timeout (300 s here), not the closed one (5 s)."""
    fin = frame_tcp("FA") if side == "originator" else frame_tcp("FA", PEER, CAM, 8000, 40000)
    table = Table()
    table.feed(*_tcp_open(T0), (T0, fin))
    flow = next(iter(table.flows.flows()))
    assert not flow.closed and flow.state == ("S2" if side == "originator" else "S3")
    assert table.flows.expire(T0 + 5.0 + EPS) == []
    assert table.flows.expire(T0 + 300.0) == []
    assert len(table.flows.expire(T0 + 300.0 + EPS)) == 1


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_active_timeout_boundary_on_the_flow_table(proto, offset):
    """A flow busy all along is cut when it has lasted longer than active_timeout since its first packet."""
    first, keep_going = {"tcp": (lambda t: _tcp_open(t), lambda t: (t, frame_tcp("PA", payload=b"x"))),
                         "udp": (lambda t: [(t, frame_udp())], lambda t: (t, frame_udp())),
                         "icmp": (lambda t: [(t, frame_icmp())], lambda t: (t, frame_icmp(seq=3)))}[proto]
    table = Table(active_timeout=100.0)
    table.feed(*first(T0))
    for dt in (25.0, 50.0, 75.0, 99.0):   # never idle as long as the shortest idle timeout here (30 s)
        table.feed(keep_going(T0 + dt))
    out = table.flows.expire(T0 + 100.0 + offset)   # the first sweep of this table: always runs
    if offset > 0:
        assert len(out) == 1 and [r for _, r in table.ended] == ["active"]
        assert table.flows.expired == {"idle": 0, "active": 1, "evicted": 0, "end": 0}
    else:
        assert out == [] and len(table.flows) == 1
        assert table.flows.expired == {"idle": 0, "active": 0, "evicted": 0, "end": 0}


@pytest.mark.parametrize("active,sweep_every", [(30.0, 30.0), (60.0, 60.0), (60.5, 60.0), (600.0, 60.0)])
def test_active_timeout_sweep_runs_every_min_60s_and_active_timeout(active, sweep_every):
    """The active sweep is throttled: it runs when min(60 s, active_timeout) have passed since the last one, and
    not before. A flow past its active timeout therefore goes at the next sweep, at most that much late."""
    table = Table(active_timeout=active, udp_idle_timeout=10_000.0)
    table.feed((T0, frame_udp()))
    assert table.flows.expire(T0 + active - 1.0) == []          # first sweep: the flow is not stale yet
    table.feed((T0 + active - 1.0, frame_udp()))
    last_sweep = T0 + active - 1.0
    assert table.flows.expire(last_sweep + sweep_every - EPS) == []   # stale, but no sweep is due
    assert table.flows.expired["active"] == 0
    assert len(table.flows.expire(last_sweep + sweep_every)) == 1     # the sweep that is due cuts it
    assert table.flows.expired == {"idle": 0, "active": 1, "evicted": 0, "end": 0}


def test_port_reuse_after_close_ends_the_closed_flow_as_idle_and_counts_two_flows():
    table = Table()
    table.feed(*_tcp_closed(T0))
    table.feed((T0 + 1.0, frame_tcp("S")))   # a SYN on the same port pair within the closed timeout
    assert table.flows.created == 2
    assert [(f.state, f.orig_pkts, f.resp_pkts, r) for f, r in table.ended] == [("SF", 4, 2, "idle")]
    assert table.flows.expired == {"idle": 1, "active": 0, "evicted": 0, "end": 0}


def test_eviction_over_max_flows_is_oldest_first_and_counted_exactly():
    table = Table(max_flows=3)
    for k in range(5):
        table.feed((T0 + k, frame_udp(sport=41000 + k)))
    assert table.flows.created == 5 and len(table.flows) == 3
    assert [(f.orig_port, r) for f, r in table.ended] == [(41000, "evicted"), (41001, "evicted")]
    assert table.flows.expired == {"idle": 0, "active": 0, "evicted": 2, "end": 0}
    assert sorted(f.orig_port for f in table.flows.flush()) == [41002, 41003, 41004]
    assert table.flows.expired == {"idle": 0, "active": 0, "evicted": 2, "end": 3}


def test_default_timeouts_are_the_documented_ones():
    """README: tcp 300 s, udp 60 s, icmp 60 s, closed TCP 5 s, active 1800 s, episode 3600 s."""
    s = FlowSettings()
    assert (s.tcp_idle_timeout, s.udp_idle_timeout, s.icmp_idle_timeout, s.tcp_closed_timeout,
            s.active_timeout) == (300.0, 60.0, 60.0, 5.0, 1800.0)
    assert Config().episode_timeout == 3600.0
    loaded = parse_config({})
    assert loaded.flows.udp_idle_timeout == 60.0 and loaded.episode_timeout == 3600.0


# ---- through the sensor: a gap in packet time at the timeout --------------------------------------------------
_MANUF = None


def manuf() -> ManufDatabase:
    global _MANUF
    if _MANUF is None:
        _MANUF = ManufDatabase.load()
    return _MANUF


def sensor_for(**flows) -> Sensor:
    """A sensor configured the way a user's file does it: [flows] keys parsed by parse_config."""
    return Sensor(parse_config({"flows": {**TIMEOUTS, **flows}}), manuf=manuf())


def replay(sensor: Sensor, records: list[tuple[float, bytes]]) -> list[tuple]:
    ended = []
    sensor.flows.on_end = lambda flow, reason: ended.append((flow.orig_pkts, flow.resp_pkts, reason))
    sensor.process(make_batch(records))
    sensor.finish()
    return ended


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_a_gap_at_the_idle_timeout_keeps_one_flow_and_a_gap_past_it_makes_two(kind, offset):
    opening, later, setting = KINDS[kind]
    records = opening(T0) + [later(T0 + TIMEOUTS[setting] + offset)]
    sensor = sensor_for()
    ended = replay(sensor, records)
    n = len(records)
    orig_first = sum(1 for _, f in records[:-1] if f[6:12] == CAM_MAC)
    resp_first = n - 1 - orig_first
    if offset > 0:
        assert sensor.flows.created == 2
        assert sensor.flows.expired == {"idle": 1, "active": 0, "evicted": 0, "end": 1}
        assert ended == [(orig_first, resp_first, "idle"), (1, 0, "end")]
    else:
        assert sensor.flows.created == 1
        assert sensor.flows.expired == {"idle": 0, "active": 0, "evicted": 0, "end": 1}
        assert ended == [(orig_first + 1, resp_first, "end")]
    assert sensor.summary()["flows"] == sensor.flows.created


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
def test_udp_gap_exactly_at_the_default_timeout(offset):
    """tests/oracle/test_flows.py puts its gap 0.5 s past the timeout; here it is at it, with the default config."""
    sensor = Sensor(Config(), manuf=manuf())
    ended = replay(sensor, [(T0, frame_udp()), (T0 + 30.0, frame_udp()), (T0 + 90.0 + offset, frame_udp())])
    if offset > 0:
        assert sensor.flows.created == 2 and ended == [(2, 0, "idle"), (1, 0, "end")]
    else:
        assert sensor.flows.created == 1 and ended == [(3, 0, "end")]


def test_active_timeout_through_the_sensor_cuts_at_exact_points():
    """A UDP packet every 30 s for 270 s with active_timeout 100: the sweeps at 60 s intervals of packet time
    (T0, +60, +120, +180, +240) cut the flow at +120 and +240, so three flows of 4, 4 and 2 packets."""
    sensor = sensor_for(active_timeout=100.0)
    ended = replay(sensor, [(T0 + 30 * k, frame_udp()) for k in range(10)])
    assert sensor.flows.created == 3
    assert ended == [(4, 0, "active"), (4, 0, "active"), (2, 0, "end")]
    assert sensor.flows.expired == {"idle": 0, "active": 2, "evicted": 0, "end": 1}


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
def test_active_timeout_boundary_through_the_sensor(offset):
    """active_timeout 60. An anchor packet at T0 makes the first active sweep run at T0; the next runs at the first
    window starting 60 s later, T0 + 60.5. The flow under test starts at T0 + 0.5 - offset and is busy every 20 s,
    so that sweep finds it exactly 60 + offset seconds old: kept at and before the boundary, cut just after."""
    sensor = sensor_for(active_timeout=60.0)
    ended = []
    sensor.flows.on_end = lambda flow, reason: ended.append((flow.orig_port, flow.orig_pkts, reason))
    records = [(T0, frame_udp(sport=39999))] + [
        (t, frame_udp()) for t in (T0 + 0.5 - offset, T0 + 20.0, T0 + 40.0, T0 + 60.5, T0 + 80.0)]
    sensor.process(make_batch(records))
    sensor.finish()
    # the anchor is idle for 60.5 s at the sweep: it goes first, on the idle pass
    if offset > 0:
        assert ended == [(39999, 1, "idle"), (40000, 3, "active"), (40000, 2, "end")]
        assert sensor.flows.created == 3
    else:
        assert ended == [(39999, 1, "idle"), (40000, 5, "end")]
        assert sensor.flows.created == 2


def test_sensor_expire_on_the_wall_clock_uses_the_same_boundary():
    """Live and idle, the sensor expires on the caller's clock (Sensor.expire)."""
    sensor = sensor_for()
    sensor.process(make_batch([(T0, frame_udp())]))
    sensor.expire(T0 + 60.0)
    assert len(sensor.flows) == 1 and sensor.flows.expired["idle"] == 0
    sensor.expire(T0 + 60.0 + EPS)
    assert len(sensor.flows) == 0 and sensor.flows.expired["idle"] == 1
