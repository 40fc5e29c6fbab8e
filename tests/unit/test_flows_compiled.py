"""sensor/_flows.c against FlowTable._apply_python, its reference: random traffic (every protocol, both directions,
low and high ports, SYN-ACKs, closes by FIN and RST, port pairs reused after a close, ICMP replies, fragments,
IPv6, VLANs, frames without a MAC, payload tags, a bounded table) fed batch by batch to two tables, one per path,
which must hold the same flows in the same order with the same values, return the same updates and end the same
flows for the same reasons."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from packets import ethernet, icmp_echo, ipv4, ipv6, tcp, udp
from sensor import compiled
from sensor.config import FlowSettings
from sensor.decode import decode
from sensor.flows import Flow, FlowTable, FlowUpdate, new_update

from .builders import batch_of

pytestmark = pytest.mark.skipif(compiled.flows_extension is None or compiled.extension is None,
                                reason="the C extensions were not built on this machine")

HOSTS4 = ["10.20.0.11", "10.20.0.12", "10.20.0.2", "203.0.113.9", "198.51.100.7"]
HOSTS6 = ["fd00::11", "2001:db8::9"]
PORTS = [23, 80, 443, 554, 1023, 1024, 40000, 40001, 65535]
FLAGS = ["S", "SA", "A", "PA", "FA", "R", "RA", "", "SR", "SF"]   # the last two: hostile, a SYN that also closes


def _conversations(rng: random.Random) -> list[tuple]:
    """A few address and port pairs per run, so the random packets meet again: replies, closes, reuse."""
    out = []
    for _ in range(10):
        v6 = rng.random() < 0.15
        src, dst = rng.sample(HOSTS6 if v6 else HOSTS4, 2)
        out.append((v6, src, dst, rng.choice(PORTS), rng.choice(PORTS), rng.choice(["tcp", "tcp", "udp", "icmp",
                                                                                    "frag"])))
    return out


def _frame(rng: random.Random, conversations: list[tuple]) -> tuple[bytes, int]:
    """One random frame of one of the conversations, either way round, and its link type (1 Ethernet, 101 raw IP:
    no MAC)."""
    v6, src, dst, sport, dport, kind = rng.choice(conversations)
    if rng.random() < 0.5:
        src, dst, sport, dport = dst, src, dport, sport
    if kind == "tcp":
        proto, l4 = 6, tcp(src, dst, sport, dport, 1, 1, rng.choice(FLAGS), b"x" * rng.choice([0, 0, 20]))
    elif kind == "udp":
        proto, l4 = 17, udp(src, dst, sport, dport, b"u" * rng.randint(0, 30))
    else:
        proto, l4 = 1, icmp_echo(7, rng.randint(0, 3), reply=rng.random() < 0.5)
    if v6:
        proto = 58 if proto == 1 else proto
        packet = ipv6(src, dst, proto, l4)
    else:
        packet = ipv4(src, dst, proto, l4, frag_offset=64 if kind == "frag" else 0)
    if rng.random() < 0.2:
        return packet, 101
    vlans = ((0x8100, rng.choice([10, 20])),) if rng.random() < 0.1 else ()
    mac = bytes([2, 0, 0, 0, 0, rng.randint(1, 4)])
    return ethernet(b"\x02" + bytes(5), mac, 0x86DD if v6 else 0x0800, packet, vlans), 1


def _state(ft: FlowTable) -> list[tuple]:
    tables = (ft._tcp, ft._closed, ft._udp, ft._other)
    return [(i, key, tuple(getattr(flow, s) for s in Flow.__slots__))
            for i, table in enumerate(tables) for key, flow in table.items()]


def _updates(updates: list[FlowUpdate]) -> list[tuple]:
    return [(u.flow.key, u.new, u.ts, u.orig_pkts, u.resp_pkts, u.orig_bytes, u.resp_bytes) for u in updates]


def _run(monkeypatch, on: bool, batches: list, max_flows: int, observe: bool = True) -> tuple:
    """`observe`: read every flow of the table after each batch; without, a flow is first read when it ends (its
    every slot, as the flow log would), so what the compiled step leaves to be read later is read from a flow the
    table no longer holds."""
    monkeypatch.setattr(compiled, "table", on)
    ended: list[tuple] = []
    ft = FlowTable(FlowSettings(max_flows=max_flows),
                   on_end=lambda f, why: ended.append((why, tuple(getattr(f, s) for s in Flow.__slots__))))
    seen = []
    for batch, tags, now in batches:
        dec = decode(batch)
        rows = np.arange(len(batch))
        seen.append(_updates(ft.update(dec, rows, tags)))
        if observe:
            seen.append(_state(ft))
        ft.expire(now)
    ft.flush()
    return seen, ended, ft.created, dict(ft.expired), len(ft)


def _random_batches(rng: random.Random) -> list[tuple]:
    batches, t, conversations = [], 1_700_000_000.0, _conversations(rng)
    for _ in range(12):
        n = rng.randint(1, 60)
        frames = [_frame(rng, conversations) for _ in range(n)]
        ts = sorted(t + rng.random() * 2 for _ in range(n))
        t = ts[-1]
        tags = None if rng.random() < 0.4 else np.array([rng.choice([0, 1, 6, 1 << 63]) for _ in range(n)],
                                                         dtype=np.uint64)
        batch = batch_of([f for f, _ in frames], ts=ts, linktype=[lt for _, lt in frames])
        batches.append((batch, tags, t + rng.choice([0.0, 100.0, 400.0])))
    return batches


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_flows", [7, 500_000])
def test_the_compiled_step_equals_the_reference_on_random_traffic(monkeypatch, seed, max_flows):
    batches = _random_batches(random.Random(seed))
    compiled_run = _run(monkeypatch, True, batches, max_flows)
    reference_run = _run(monkeypatch, False, batches, max_flows)
    assert compiled_run == reference_run
    ended = compiled_run[1]
    # flows were made and ended every way, not just an empty table compared to an empty table
    assert compiled_run[2] > 10 and {why for why, _ in ended} >= {"idle"}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_flows", [3, 7, 500_000])
def test_flows_first_read_when_they_end_equal_the_reference(monkeypatch, seed, max_flows):
    """No flow is read while the table holds it: each is read whole when it is evicted, expires or is flushed, so
    a slot the compiled step leaves to be filled later (the ports, lazy_port) is compared as a consumer of ended
    flows (the flow log) first sees it."""
    batches = _random_batches(random.Random(seed))
    compiled_run = _run(monkeypatch, True, batches, max_flows, observe=False)
    assert compiled_run == _run(monkeypatch, False, batches, max_flows, observe=False)
    reasons = {why for why, _ in compiled_run[1]}
    assert "idle" in reasons and (max_flows > 10 or "evicted" in reasons)
    ports = {(flow[3], flow[4]) for _, flow in compiled_run[1]}   # orig_port, resp_port (Flow.__slots__ order)
    assert len(ports) > 3 and any(o != r for o, r in ports)   # real, differing ports were compared


def test_a_compiled_flows_ports_are_read_from_its_key_when_first_asked(monkeypatch):
    """A flood's flows keep no reference to a shared port int until a stage asks for their ports (sensor/_flows.c,
    lazy_port): reading one takes it from the key, oriented to the originator, and keeps it; a port set is kept."""
    import sensor.flows as fl
    monkeypatch.setattr(compiled, "table", True)
    a, b, mac = "203.0.113.9", "10.20.0.11", bytes([2, 0, 0, 0, 0, 1])
    # the SYN-ACK's sender is the responder: the key's A side (lower address) is the originator here
    frames = [ethernet(mac, mac, 0x0800, ipv4(b, a, 6, tcp(b, a, 554, 41234, 1, 1, "SA")))]
    before = [sys.getrefcount(fl._PORTS[p]) for p in (41234, 554)]
    ft = FlowTable(FlowSettings())
    fresh, _ = ft.update_apart(decode(batch_of(frames, ts=[1_700_000_000.0])), np.arange(1))
    flow = fresh[0]
    assert [sys.getrefcount(fl._PORTS[p]) for p in (41234, 554)] == before   # not set yet
    assert (flow.orig_port, flow.resp_port, flow.orig_text, flow.resp_text) == (41234, 554, a, b)
    assert flow.orig_port is fl._PORTS[41234]   # the shared int, as when set eagerly
    assert [sys.getrefcount(fl._PORTS[p]) for p in (41234, 554)] == [n + 1 for n in before]   # kept in the slot
    flow.resp_port = 8554
    assert flow.resp_port == 8554
    del flow.resp_port   # emptied: the key's port again
    assert flow.resp_port == 554


def test_importing_flows_makes_the_port_slots_lazy_only_with_an_extension_that_has_lazy_port(monkeypatch):
    """flows._lazy_ports runs as sensor.flows is imported: sensor.flows imported afresh with the extension built,
    with one built before lazy_port, and with none. Only the first makes Flow's port slots lazy, each reading its
    own side of the key for the originator it names; the others leave plain slots (the ports set in __init__)."""
    import importlib
    from types import SimpleNamespace

    import sensor
    real = compiled.flows_extension
    if not hasattr(real, "lazy_port"):
        pytest.skip("an extension without lazy_port")
    monkeypatch.setattr(sensor, "flows", sys.modules["sensor.flows"])   # both put back when the test ends
    key = b"\0\0\x11" + bytes(16) + (4001).to_bytes(2, "big") + bytes(16) + (554).to_bytes(2, "big") + b"\0"
    for extension, lazy in ((real, True), (SimpleNamespace(), False), (None, False)):
        monkeypatch.setattr(compiled, "flows_extension", extension)
        monkeypatch.delitem(sys.modules, "sensor.flows")
        fresh = importlib.import_module("sensor.flows")
        for orig_is_a, ports in ((True, (4001, 554)), (False, (554, 4001))):
            flow = fresh.Flow.__new__(fresh.Flow)
            flow.key, flow.orig_is_a = key, orig_is_a
            if lazy:
                assert (flow.orig_port, flow.resp_port) == ports
                assert flow.orig_port is fresh._PORTS[ports[0]] and flow.resp_port is fresh._PORTS[ports[1]]
            else:
                with pytest.raises(AttributeError):
                    _ = flow.orig_port
                with pytest.raises(AttributeError):
                    _ = flow.resp_port


def test_the_lazy_port_refuses_what_is_not_a_flow():
    import sensor.flows as fl
    if not isinstance(Flow.__dict__["orig_port"], type(Flow.__dict__["resp_port"])) or not hasattr(
            compiled.flows_extension, "lazy_port"):
        pytest.skip("an extension without lazy_port")
    with pytest.raises(TypeError, match="something else"):
        Flow.__dict__["orig_port"].__get__(object(), object)
    with pytest.raises(TypeError, match="something else"):
        Flow.__dict__["orig_port"].__set__(object(), 1)
    empty = Flow.__new__(Flow)   # no key to read a port from: an AttributeError, as an unset slot's
    with pytest.raises(AttributeError):
        _ = empty.orig_port
    empty.key, empty.orig_is_a = b"short", True
    with pytest.raises(AttributeError):
        _ = empty.resp_port
    with pytest.raises(TypeError, match="not a slot"):
        compiled.flows_extension.lazy_port(dict, "orig_port", fl._PORTS, True)
    with pytest.raises(ValueError, match="65,536"):
        compiled.flows_extension.lazy_port(Flow, "orig_port", (0,), True)


def test_a_reused_port_pair_ends_the_closed_flow_in_both_paths(monkeypatch):
    a, b = "10.20.0.11", "203.0.113.9"
    frames = [tcp(a, b, 40000, 443, 1, 1, f) for f in ("S", "R")]
    mac = bytes([2, 0, 0, 0, 0, 1])
    batches = [(batch_of([ethernet(mac, mac, 0x0800, ipv4(a, b, 6, f))], ts=[1_700_000_000.0 + i]), None, 0.0)
               for i, f in enumerate(frames + [frames[0]])]
    runs = [_run(monkeypatch, on, batches, 100) for on in (True, False)]
    assert runs[0] == runs[1]
    ended = runs[0][1]
    # the SYN after the RST: a second flow, flushed at the end
    assert [why for why, _ in ended] == ["idle", "end"] and runs[0][2] == 2


def _columns(u: int) -> list:
    return [bytes(40 * u), bytes(u), bytes(u), np.zeros(u, np.int64), np.zeros(u, np.int64), np.zeros(u, np.int64),
            np.zeros(u, np.float64), np.zeros(2 * u, np.int64), np.zeros(2 * u, np.int64), np.zeros(2 * u, np.int64),
            bytes(2 * u), b"", np.zeros(2 * u, np.int64), np.zeros(u, np.float64)]


def test_the_compiled_step_refuses_what_is_not_a_flow_table():
    import sensor.flows as fl
    ext = compiled.flows_extension
    tables = tuple(FlowTable(FlowSettings())._tcp for _ in range(4))
    types = (Flow, FlowUpdate, fl._PORTS, fl._MACS, fl._shared_mac)
    with pytest.raises(ValueError, match="different lengths"):
        ext.apply(tables, print, types, *_columns(3)[:-1], np.zeros(2, np.float64))
    with pytest.raises(TypeError, match="not a slot"):
        ext.apply(tables, print, (dict, FlowUpdate, *types[2:]), *_columns(1))
    with pytest.raises(ValueError, match="65,536"):
        ext.apply(tables, print, (Flow, FlowUpdate, (0,), *types[3:]), *_columns(1))
    with pytest.raises(TypeError, match="OrderedDicts or Lrus"):
        ext.apply((1, 2, 3, 4), print, types, *_columns(1))
    for lo, hi in ((0, 2), (1, 0), (-1, 1)):   # a window's groups (flows.Windows): within the groups, in order
        with pytest.raises(ValueError, match="groups out of range"):
            ext.apply(tables, print, types, *_columns(1), True, lo, hi)
    assert ext.apply(tables, print, types, *_columns(1), True, 1, 1) == ([], [], 0)
    with pytest.raises(TypeError):
        ext.apply(tables, print, types, *_columns(1), True, 0)
    with pytest.raises(TypeError):
        ext.apply(tables, print, (Flow, FlowUpdate), *_columns(1))
    bad_port = _columns(1)
    bad_port[3] = np.array([70000], np.int64)
    with pytest.raises(ValueError, match="port"):
        ext.apply(tables, print, types, *bad_port)
    updates, made = ext.apply(tables, print, types, *_columns(2))
    assert made == 1 and len(updates) == 2 and updates[0].new and not updates[1].new   # one key, twice


def test_the_compiled_step_reads_a_changed_flow_type_again():
    """apply keeps what it read off the flow and update types (their slots' offsets) while neither type changes: a
    slot replaced after a call is seen by the next, and put back, taken again."""
    import sensor.flows as fl
    ext = compiled.flows_extension
    kind = type("Kind", (), {"__slots__": Flow.__slots__})
    types = (kind, FlowUpdate, fl._PORTS, fl._MACS, fl._shared_mac)

    def apply_once():
        tables = tuple(FlowTable(FlowSettings())._tcp for _ in range(4))
        return ext.apply(tables, print, types, *_columns(1))

    for _ in range(3):   # read, then kept (an instance's attribute read gives the type its version tag)
        updates, made = apply_once()
        assert made == 1 and updates[0].flow.key == bytes(40) and updates[0].flow.vlan == 0
    slot = kind.__dict__["vlan"]
    kind.vlan = property(lambda self: 0)
    with pytest.raises(TypeError, match="not a slot"):
        apply_once()
    kind.vlan = slot
    updates, made = apply_once()
    assert made == 1 and updates[0].flow.vlan == 0


def _fold_new(updates: list[FlowUpdate]) -> tuple[list[FlowUpdate], list[FlowUpdate]]:
    """update's updates as (each new flow's updates summed into its first, the updates of the other flows)."""
    new_ones: dict[Flow, FlowUpdate] = {}
    others = []
    for u in updates:
        if u.new:
            new_ones[u.flow] = FlowUpdate(u.flow, True, u.ts, u.orig_pkts, u.resp_pkts, u.orig_bytes, u.resp_bytes)
        elif u.flow in new_ones:
            acc = new_ones[u.flow]
            acc.orig_pkts, acc.resp_pkts = acc.orig_pkts + u.orig_pkts, acc.resp_pkts + u.resp_pkts
            acc.orig_bytes, acc.resp_bytes = acc.orig_bytes + u.orig_bytes, acc.resp_bytes + u.resp_bytes
        else:
            others.append(u)
    return list(new_ones.values()), others


@pytest.mark.parametrize("on", [True, False], ids=["compiled", "reference"])
@pytest.mark.parametrize("seed", range(6))
def test_new_flows_apart_stand_for_their_updates(monkeypatch, on, seed):
    """update_apart's new flows, each made into its update by new_update, and the others' updates, are update's
    updates: the same values (every field) in the same order within each kind, batch after batch. A new flow stands
    for all of update's updates of it (a key reopened by a SYN within the batch adds to its flow more than once)."""
    monkeypatch.setattr(compiled, "table", on)
    rng = random.Random(seed)
    conversations, t = _conversations(rng), 1_700_000_000.0
    whole, apart = FlowTable(FlowSettings(max_flows=9)), FlowTable(FlowSettings(max_flows=9))
    made = 0
    for _ in range(12):
        frames = [_frame(rng, conversations) for _ in range(rng.randint(1, 60))]
        ts = sorted(t + rng.random() * 2 for _ in frames)
        t = ts[-1]
        batch = batch_of([f for f, _ in frames], ts=ts, linktype=[lt for _, lt in frames])
        tags = None if rng.random() < 0.4 else np.array([rng.choice([0, 6, 1 << 63]) for _ in frames], np.uint64)
        updates = whole.update(decode(batch), np.arange(len(frames)), tags)
        fresh, known = apart.update_apart(decode(batch), np.arange(len(frames)), tags)
        assert all(isinstance(f, Flow) for f in fresh)
        new_ones, others = _fold_new(updates)
        assert _updates([new_update(f) for f in fresh]) == _updates(new_ones)
        assert _updates(known) == _updates(others)
        assert _state(apart) == _state(whole)
        made += len(fresh)
        now = t + rng.choice([0.0, 100.0])
        assert [f.key for f in whole.expire(now)] == [f.key for f in apart.expire(now)]
    assert made > 10 and apart.created == whole.created == made


def test_the_compiled_eviction_refuses_what_is_not_a_flow_table():
    import sensor.flows as fl
    ext = compiled.flows_extension
    tables = tuple(FlowTable(FlowSettings())._tcp for _ in range(4))
    with pytest.raises(TypeError):
        ext.evict((tables[0], tables[1], tables[2], [1]), 1, Flow)
    with pytest.raises(TypeError, match="not a slot"):
        ext.evict(tables, 1, dict)
    assert ext.evict(tables, 3, Flow) == []   # empty tables: nothing to evict, whatever the excess
    stranger = FlowTable(FlowSettings())._tcp
    key = b"\0\0\x06" + b"k" * 37   # a TCP flow's key
    stranger[key] = "not a flow"   # slots are read by offset: anything else is refused, not read
    with pytest.raises(TypeError, match="other than a flow"):
        ext.evict((stranger, *tables[1:]), 1, Flow)
    with pytest.raises(TypeError, match="other than a flow"):
        ext.apply((stranger, *tables[1:]), print, (Flow, FlowUpdate, fl._PORTS, fl._MACS, fl._shared_mac),
                  key, *_columns(1)[1:])
