"""sensor/flows.py: canonical keys, per-batch grouping (compiled and numpy), orientation of new flows, what each
batch adds to a flow, closing, lookup, eviction and flush, all by exact value."""

from __future__ import annotations

import dataclasses
import gc
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sensor.flows as fl
from packets import ethernet, icmp_echo, ipv4, ipv6, mac, tcp, udp
from sensor import compiled
from sensor.config import FlowSettings
from sensor.decode import decode
from sensor.flows import Flow, FlowTable, flow_key, flow_keys, group, group_numpy, proto_name

from .builders import batch_of

CAM, NVR, CLOUD = "10.20.0.11", "10.20.0.2", "203.0.113.9"
CAM_MAC, NVR_MAC, GW_MAC = mac("04:03:12:00:00:11"), mac("00:11:32:00:00:02"), mac("00:1b:21:0a:0b:01")
MACS = {CAM: CAM_MAC, NVR: NVR_MAC, CLOUD: GW_MAC}
T0 = 1_700_000_000.0


def u(src, dst, sport, dport, payload=b"p" * 10, vlans=()):
    other = NVR_MAC if MACS[src] != NVR_MAC else CAM_MAC
    return ethernet(other, MACS[src], 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)), vlans)


def t(src, dst, sport, dport, flags, payload=b""):
    other = NVR_MAC if MACS[src] != NVR_MAC else CAM_MAC
    return ethernet(other, MACS[src], 0x0800, ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, flags, payload)))


def icmp(src, dst, reply=False):
    other = NVR_MAC if MACS[src] != NVR_MAC else CAM_MAC
    return ethernet(other, MACS[src], 0x0800, ipv4(src, dst, 1, icmp_echo(9, 1, reply)))


def raw_udp(src, dst, sport, dport, payload=b"p" * 10):
    """The same datagram without a link layer (LINKTYPE_RAW): no source MAC."""
    return ipv4(src, dst, 17, udp(src, dst, sport, dport, payload))


REAL_RTSP = Path(__file__).resolve().parents[2] / "pcaps" / "real" / "ndpi" / "rtsp.pcap"


def ip16(text: str) -> bytes:
    import ipaddress
    a = ipaddress.ip_address(text)
    return (b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def table(**settings) -> tuple[FlowTable, list[tuple[Flow, str]]]:
    ended: list[tuple[Flow, str]] = []
    return FlowTable(FlowSettings(**settings), on_end=lambda f, why: ended.append((f, why))), ended


def feed(ft: FlowTable, frames, ts=None, **kw):
    dec = decode(batch_of(frames, ts=ts, **kw))
    return ft.update(dec, np.arange(len(frames)))


def feed_tags(ft: FlowTable, frames, tags, ts=None):
    dec = decode(batch_of(frames, ts=ts))
    return ft.update(dec, np.arange(len(frames)), np.array(tags, dtype=np.uint64))


# ---- small helpers ----------------------------------------------------------------------------------------------
def test_protocol_names():
    assert [proto_name(p) for p in (6, 17, 1, 58, 47)] == ["tcp", "udp", "icmp", "icmp", "47"]


def test_shared_macs_are_one_object_per_value_and_bounded(monkeypatch):
    monkeypatch.setattr(fl, "_MACS", {})
    monkeypatch.setattr(fl, "MAX_SHARED_MACS", 3)
    first = fl._shared_mac(int("0x0403120000aa", 16))
    again = fl._shared_mac(int("0x0403120000aa", 16))   # an equal value, another int object
    assert first == 0x0403120000AA and again is first
    for m in (0x0403120000AB, 0x0403120000AC):
        assert fl._shared_mac(m) == m
    assert len(fl._MACS) == 3
    assert fl._shared_mac(0x0403120000AD) == 0x0403120000AD   # a fourth: the table starts over
    assert fl._MACS == {0x0403120000AD: 0x0403120000AD}


def test_a_new_flow_starts_empty():
    f = Flow(b"k" * 40, 7, 17, 5000, 53, 12.5)
    assert (f.key, f.vlan, f.proto, f.orig_port, f.resp_port, f.first, f.last) == (b"k" * 40, 7, 17, 5000, 53,
                                                                                     12.5, 12.5)
    assert (f.orig_pkts, f.resp_pkts, f.orig_bytes, f.resp_bytes, f.orig_payload, f.resp_payload) == (0,) * 6
    assert (f.orig_flags, f.resp_flags, f.orig_mac, f.resp_mac, f.orig_tags, f.resp_tags) == (0,) * 6
    assert f.name is None and f.closed is False and f.context is None and f.orig_is_a is True


def test_as_dict_names_every_field(impl):
    ft, _ = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), t(CLOUD, CAM, 443, 50000, "SA"), t(CAM, CLOUD, 50000, 443, "A", b"hi")],
         ts=[T0, T0 + 0.5, T0 + 1.0], wirelen=[100, 200, 300])
    (flow,) = ft.flows()
    flow.name = "cloud.example.com"
    assert flow.as_dict() == {
        "vlan": 0, "proto": "tcp", "orig_ip": CAM, "orig_port": 50000, "resp_ip": CLOUD, "resp_port": 443,
        "first": T0, "last": T0 + 1.0, "orig_pkts": 2, "resp_pkts": 1, "orig_bytes": 400, "resp_bytes": 200,
        "state": "S1", "name": "cloud.example.com"}


S, A, F, R = fl.SYN, fl.ACK, fl.FIN, fl.RST


@pytest.mark.parametrize("orig, resp, state", [
    (A, S | A, "OTH"), (S, R, "REJ"), (S, R | A, "REJ"), (S, 0, "S0"), (S, S | R, "REJ"), (S | R, 0, "RSTOS0"),
    (S, A, "OTH"), (S, S | A, "S1"), (S | R, R, "REJ"), (R, 0, "OTH"), (A | R, A, "OTH"),
    (S | A | R, S | A, "RSTO"), (S | A, S | A | R, "RSTR"), (S | A | F, S | A | F, "SF"), (S | A | F, S | A, "S2"),
    (S | A, S | A | F, "S3"), (S | A, S | A, "S1"), (S | A | R | F, S | A | F, "RSTO"),
    (S | F, 0, "SH"), (S | A | F, A, "SH"), (A, S | A | F, "SHR"), (A | F, S | A | F, "SF"), (A, S | A | R, "RSTRH"),
    (A, R, "RSTRH"), (0, A, "OTH")])
def test_tcp_state_of_each_handshake(orig, resp, state):
    """Zeek's connection states (not mutated by mutmut, being a property, so held here by value)."""
    f = Flow(b"k" * 40, 0, 6, 50000, 443, 0.0)
    f.orig_flags, f.resp_flags = orig, resp
    assert f.state == state


def test_state_of_other_protocols_is_a_dash():
    f = Flow(b"k" * 40, 0, 17, 5000, 53, 0.0)
    f.orig_flags = S
    assert f.state == "-"


# ---- keys -------------------------------------------------------------------------------------------------------
def test_a_packet_and_its_reply_share_one_canonical_key(impl):
    dec = decode(batch_of([u(CAM, NVR, 50000, 554, vlans=((0x8100, 0x123),)),
                           u(NVR, CAM, 554, 50000, vlans=((0x8100, 0x123),))]))
    keys, a_is_src = flow_keys(dec, np.arange(2))
    assert keys.dtype == np.uint8 and keys.shape == (2, 40)
    assert keys[0].tobytes() == keys[1].tobytes()
    # vlan (2 bytes), proto, A address and port (the smaller endpoint: 10.20.0.2:554), B address and port, a zero
    want = (b"\x01\x23" + bytes([17]) + ip16(NVR) + (554).to_bytes(2, "big") + ip16(CAM)
            + (50000).to_bytes(2, "big") + b"\0")
    assert keys[0].tobytes() == want
    assert a_is_src.tolist() == [False, True]


def test_icmp_and_fragments_are_keyed_without_ports(impl):
    dec = decode(batch_of([icmp(CAM, NVR), icmp(NVR, CAM, reply=True), u(CAM, NVR, 50000, 554)]))
    keys, _ = flow_keys(dec, np.arange(3))
    assert keys[0].tobytes() == keys[1].tobytes()          # type 8 and type 0: one flow
    assert keys[0, 19:21].tolist() == [0, 0] and keys[0, 37:39].tolist() == [0, 0]
    # a row flagged as a fragment is port-less whatever its port columns hold
    frag = dataclasses.replace(dec, fragment=np.array([False, False, True]))
    fkeys, _ = flow_keys(frag, np.arange(3))
    assert fkeys[2, 19:21].tolist() == [0, 0] and fkeys[2, 37:39].tolist() == [0, 0]
    assert fkeys[2, 2] == 17


def _keys_one_by_one(dec, rows):
    return [flow_key(dec, int(row)) for row in rows]


def _keys_together(dec, rows):
    keys, a_is_src = flow_keys(dec, np.asarray(rows, dtype=np.int64))
    return [(key.tobytes(), bool(is_a)) for key, is_a in zip(keys, a_is_src, strict=True)]


def test_one_rows_key_is_the_batchs_key_of_that_row(impl):
    """flow_key (a row at a time, for the readers) and flow_keys (the reference) agree on every kind of row: both
    directions, VLAN tags, ICMP and ICMPv6, fragments, IPv6, a packet to itself, ports that decide the order."""
    v6a, v6b = "2001:db8::1", "2001:db8::2"
    frames = [u(CAM, NVR, 50000, 554, vlans=((0x8100, 0x123),)), u(NVR, CAM, 554, 50000),
              icmp(CAM, NVR), icmp(NVR, CAM, reply=True), u(CAM, CAM, 5000, 5000), u(CAM, CAM, 5001, 5000),
              t(CAM, NVR, 40000, 80, "S"), t(NVR, CAM, 80, 40000, "SA"),
              ethernet(NVR_MAC, CAM_MAC, 0x86DD, ipv6(v6a, v6b, 17, udp(v6a, v6b, 5353, 5353, b"x"))),
              ethernet(CAM_MAC, NVR_MAC, 0x86DD, ipv6(v6b, v6a, 17, udp(v6b, v6a, 5353, 5353, b"x"))),
              ethernet(NVR_MAC, CAM_MAC, 0x86DD, ipv6(v6a, v6b, 58, icmp_echo(9, 1)))]
    dec = decode(batch_of(frames))
    rows = range(len(frames))
    assert _keys_one_by_one(dec, rows) == _keys_together(dec, rows)
    frag = dataclasses.replace(dec, fragment=np.array([i % 2 == 0 for i in rows]))
    assert _keys_one_by_one(frag, rows) == _keys_together(frag, rows)
    # eight flows (the tagged datagram's untagged reply is another flow): a key that lost its VLAN, its ports or its
    # order would merge some
    assert len({key for key, _ in _keys_one_by_one(dec, rows)}) == 8
    # ICMPv6 has no ports, whatever its first bytes hold
    assert _keys_one_by_one(dec, [len(frames) - 1])[0][0][19:21] == b"\0\0"


def test_one_rows_key_is_the_batchs_key_on_a_real_capture(impl):
    from sensor.capture import open_file

    reader, _ = open_file(REAL_RTSP)
    try:
        batch = next(iter(reader))
    finally:
        reader.close()
    dec = decode(batch)
    rows = np.flatnonzero(dec.is_ip)[:3000]
    assert len(rows) > 100
    assert _keys_one_by_one(dec, rows) == _keys_together(dec, rows)


def test_a_packet_to_itself_is_sent_by_the_a_side(impl):
    """Source equal to destination (address and port): the key's A side is the sender, in both groupings."""
    dec = decode(batch_of([u(CAM, CAM, 5000, 5000)]))
    _, a_is_src = flow_keys(dec, np.arange(1))
    assert a_is_src.tolist() == [True]
    assert group(dec, np.arange(1), None).first_dir.tolist() == [0]
    assert group_numpy(dec, np.arange(1), None).first_dir.tolist() == [0]


# ---- grouping ---------------------------------------------------------------------------------------------------
def _mixed():
    # flow X: its key's A side is 10.20.0.2 (the NVR), which sends first; flow Y: A is the camera, which sends first
    frames = [u(NVR, CAM, 5000, 6000, b"a" * 5),     # X
              t(CAM, CLOUD, 50000, 443, "S"),        # flow Y
              u(CAM, NVR, 6000, 5000, b"b" * 7),     # X, the other way
              t(CLOUD, CAM, 443, 50000, "SA"),       # Y back
              u(NVR, CAM, 5000, 6000, b"c" * 9),     # X
              t(CAM, CLOUD, 50000, 443, "FA", b"zz")]  # Y
    ts = [T0 + 3, T0 + 1, T0 + 2, T0 + 5, T0 + 0.5, T0 + 4]
    wire = [1000, 1001, 1002, 1003, 1004, 1005]
    tags = np.array([1, 2, 4, 8, 16, 32], dtype=np.uint64)
    return decode(batch_of(frames, ts=ts, wirelen=wire)), tags


@pytest.mark.parametrize("grouping", ["group", "group_numpy"])
def test_grouping_sums_each_flow_and_direction(impl, grouping):
    dec, tags = _mixed()
    rows = np.arange(6)
    g = getattr(fl, grouping)(dec, rows, tags)
    keys, _ = flow_keys(dec, rows)
    assert [k.tobytes() for k in g.keys] == [keys[0].tobytes(), keys[1].tobytes()]   # order of first packets
    assert g.first.tolist() == [0, 1]
    # X: key A is 10.20.0.2 (NVR) so NVR->CAM is direction 0; Y: A is 10.20.0.11 (CAM)
    assert g.first_dir.tolist() == [0, 0]
    assert g.pkts.tolist() == [[2, 1], [2, 1]]
    assert g.bytes.tolist() == [[1000 + 1004, 1002], [1001 + 1005, 1003]]   # wire lengths, not captured
    assert g.payload.tolist() == [[5 + 9, 7], [2, 0]]
    assert g.last.tolist() == [T0 + 3, T0 + 5]
    assert g.flags.tolist() == [[0, 0], [0x02 | 0x11, 0x12]]
    assert g.tags.tolist() == [[1 | 16, 4], [2 | 32, 8]]
    assert g.macs.tolist() == [[int.from_bytes(NVR_MAC, "big"), int.from_bytes(CAM_MAC, "big")],
                               [int.from_bytes(CAM_MAC, "big"), int.from_bytes(GW_MAC, "big")]]
    assert g.pkts.dtype == np.int64 and g.flags.dtype == np.uint8 and g.tags.dtype == np.uint64
    untagged = getattr(fl, grouping)(dec, rows, None)
    assert untagged.tags.tolist() == [[0, 0], [0, 0]]


def test_parts_number_each_keys_packets_and_are_none_when_no_syn_reopens_a_key():
    """_parts by value: each packet's part, numbered over all keys from 0 in key order; None (group_numpy then
    skips its second np.unique) when every key is one part, however many keys and SYNs there are."""
    syn, ack, rst = fl.SYN, fl.ACK, fl.RST
    assert fl._parts(np.array([0]), np.array([syn], np.uint8)) is None
    assert fl._parts(np.array([0, 1, 2]), np.array([syn, syn, syn], np.uint8)) is None   # three keys, one SYN each
    assert fl._parts(np.array([0, 1, 1, 2]), np.array([ack, syn, syn, syn], np.uint8)) is None   # a retransmit
    # key 1 reopened by the SYN after its RST: key 0 is part 0, key 1's parts 1 and 2, key 2 part 3
    part = fl._parts(np.array([1, 0, 1, 2, 1]), np.array([syn, ack, rst, syn, syn], np.uint8))
    assert part is not None and part.tolist() == [1, 0, 1, 3, 2]


@pytest.mark.parametrize("grouping", ["group", "group_numpy"])
def test_a_syn_after_anything_but_a_plain_syn_opens_its_keys_next_group(impl, grouping):
    """A SYN after a RST (a retried handshake), after a FIN or data (a reused port pair, an injected SYN) opens
    a group of its key; retransmitted SYNs and the SYN-ACK after them stay in theirs, as does a SYN of a key
    whose previous packet is in another batch. A SYN carrying RST or FIN is no plain SYN."""
    a, b = (CAM, CLOUD, 50000, 443), (CLOUD, CAM, 443, 50000)
    frames = [t(*a, "S"), t(*a, "S"), t(*b, "RA"), u(CAM, NVR, 50000, 554), t(*a, "S"), t(*a, "S"), t(*b, "SA"),
              t(*a, "A"), t(*a, "PA", b"x"), t(*b, "S"), t(*a, "SR"), t(*a, "S"), t(*b, "FA"), t(*b, "SA")]
    dec = decode(batch_of(frames))
    g = getattr(fl, grouping)(dec, np.arange(len(frames)), None)
    assert g.first.tolist() == [0, 3, 4, 9, 11, 13]
    keys = [k.tobytes() for k in g.keys]
    assert keys[1] != keys[0] and keys[0] == keys[2] == keys[3] == keys[4] == keys[5]
    # the camera is the TCP key's A side, the NVR the UDP key's
    assert g.pkts.tolist() == [[2, 1], [0, 1], [4, 1], [1, 1], [1, 1], [0, 1]]
    assert g.flags.tolist() == [[0x02, 0x14], [0, 0], [0x1A, 0x12], [0x06, 0x02], [0x02, 0x11], [0, 0x12]]
    assert g.first_dir.tolist() == [0, 1, 0, 1, 0, 1]
    assert g.last.tolist() == [T0 + 2, T0 + 3, T0 + 8, T0 + 10, T0 + 12, T0 + 13]
    later = getattr(fl, grouping)(dec, np.arange(4, len(frames)), None)   # the SYN at row 4 first of its key
    assert later.first.tolist() == [0, 5, 7, 9]


def test_grouping_of_a_subset_of_rows(impl):
    dec, tags = _mixed()
    rows = np.array([1, 3, 5])
    g = group(dec, rows, tags[rows])
    assert g.first.tolist() == [0] and g.pkts.tolist() == [[2, 1]] and g.tags.tolist() == [[2 | 32, 8]]


def test_group_uses_the_compiled_helper_only_while_its_switch_is_on(monkeypatch):
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    dec, tags = _mixed()
    calls = []
    real = fl.group_numpy
    monkeypatch.setattr(fl, "group_numpy", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(compiled, "group", True)
    fast = group(dec, np.arange(6), tags)
    assert calls == []
    monkeypatch.setattr(compiled, "group", False)
    ref = group(dec, np.arange(6), tags)
    assert len(calls) == 1 and calls[0][0] is dec and calls[0][1].tolist() == list(range(6))
    assert calls[0][2] is tags
    for name, a, b in zip(fast._fields, fast, ref, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_compiled_grouping_takes_columns_of_any_integer_width(monkeypatch):
    """The compiled helper reads raw buffers: group() converts every column it hands over, so a Decoded or a
    row index held in other dtypes (int32 rows, an int32 batch, bool fragments...) groups exactly the same."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    frames = [u(CAM, NVR, 50000, 554, vlans=((0x8100, 300 + i),)) for i in range(3)]
    frames += [u(NVR, CAM, 554, 50000), t(CAM, CLOUD, 50000, 443, "SA")]
    dec = decode(batch_of(frames, wirelen=[500, 600, 700, 800, 900]))
    dec = dataclasses.replace(dec, fragment=np.array([False, True, False, False, False]))   # a port-less row
    tags = np.array([1, 2, 4, 8, 16], dtype=np.uint64)
    b = dec.batch
    odd_batch = dataclasses.replace(b, wirelen=b.wirelen.astype(np.int32), ts=b.ts.astype(np.longdouble))
    odd = dataclasses.replace(
        dec, batch=odd_batch, vlan=dec.vlan.astype(np.int64), proto=dec.proto.astype(np.int32),
        fragment=dec.fragment.astype(np.int64), src=dec.src.astype(np.int16), dst=dec.dst.astype(np.int16),
        sport=dec.sport.astype(np.int32), dport=dec.dport.astype(np.int32), tcp_flags=dec.tcp_flags.astype(np.int32),
        payload_len=dec.payload_len.astype(np.int32), src_mac=dec.src_mac.astype(np.float64))
    rows = np.arange(5, dtype=np.int32)
    got, want = group(odd, rows, tags.astype(np.int32)), group_numpy(dec, np.arange(5), tags)
    for name, a, r in zip(got._fields, got, want, strict=True):
        assert a.dtype == r.dtype and np.array_equal(a, r), name
    assert [k[0] << 8 | k[1] for k in got.keys.tolist()] == [300, 301, 302, 0, 0]
    assert got.keys[1, 19:21].tolist() == [0, 0]
    assert got.tags.tolist() == [[0, 1], [0, 2], [0, 4], [8, 0], [16, 0]]   # the NVR, then the camera, is A
    assert got.flags.tolist() == [[0, 0]] * 4 + [[0x12, 0]]
    # the window path (FlowTable._batch_columns, _flows.orient) likewise: the same flows and updates
    if compiled.flows_extension is None:
        return
    for name in ("decode", "group", "table"):
        monkeypatch.setattr(compiled, name, True)

    def seen(fresh, known):
        return ([(f.as_dict(), f.orig_tags, f.resp_tags, f.orig_mac, f.resp_mac) for f in fresh]
                + [(x.flow.key, x.new, x.ts, x.orig_pkts, x.resp_pkts, x.orig_bytes, x.resp_bytes) for x in known])

    made = []
    for d in (dec, odd):
        ft, _ = table()
        out = seen(*ft.update_apart(d, rows[:3], tags[:3]))
        windows = ft.windows(d, rows, tags, np.array([0, 3, 5]))
        for k in range(2):
            out += seen(*windows.update_apart(k))
        made.append(out + [(f.as_dict(), f.orig_mac, f.resp_mac) for f in ft.flush()])
    assert made[1] == made[0] and len(made[0]) == 13 and made[0][0][0]["vlan"] == 300 and made[0][-1][1:] != (0, 0)


def test_the_flow_table_takes_rows_of_any_integer_width(impl):
    """update, update_apart and windows hand their rows, tags and window bounds to the compiled calls as raw
    buffers (FlowTable._group_windows): rows and bounds held as int32 or uint16 and tags as uint32 must make the same
    flows, updates and tags as the documented types, not a misread of their bytes."""
    frames = [u(CAM, NVR, 50000 + i % 3, 554, b"p" * (20 + 10 * i)) for i in range(12)]
    dec = decode(batch_of(frames, ts=[T0 + i for i in range(12)]))

    def run(rows: np.ndarray, tags: np.ndarray, bounds: np.ndarray) -> list:
        ft, _ = table()
        updates = ft.update(dec, rows[:2], tags[:2])
        fresh, known = ft.update_apart(dec, rows[2:], tags[2:])
        windows = ft.windows(dec, rows, tags, bounds)
        out = [[(x.flow.orig_port, x.new, x.ts, x.orig_pkts, x.orig_bytes) for x in updates],
               [(f.orig_port, f.orig_pkts, f.orig_bytes) for f in fresh],
               [(x.flow.orig_port, x.orig_pkts) for x in known]]
        for k in range(2):
            fresh, known = windows.update_apart(k)
            out += [[f.orig_port for f in fresh], [(x.flow.orig_port, x.ts, x.orig_pkts) for x in known]]
        return out + [sorted((f.orig_port, f.orig_pkts, f.orig_tags, f.orig_payload, f.last) for f in ft.flows())]

    rows, tags, bounds = [8, 0, 4], [1 << 20 | 1, 2, 4], [0, 1, 3]
    want = run(np.array(rows, np.int64), np.array(tags, np.uint64), np.array(bounds, np.int64))
    assert want[0] == [(50002, True, T0 + 8, 1, 142), (50000, True, T0, 1, 62)] and want[1] == [(50001, 1, 102)]
    assert want[-1] == [(50000, 2, 2, 40, T0), (50001, 2, 4, 120, T0 + 4), (50002, 2, 1 << 20 | 1, 200, T0 + 8)]
    for dtype in (np.int32, np.uint16):
        assert run(np.array(rows, dtype), np.array(tags, np.uint32), np.array(bounds, dtype)) == want, dtype


def _near_keys(rng: np.random.Generator, n: int) -> list[bytes]:
    """Frames whose flow keys differ from others in one field at a time: addresses a byte apart (first and last,
    either half of an IPv6 address), ports a byte apart, a packet to its own address, VLANs, protocols, fragments,
    TCP flags that open a key's next group."""
    v4 = ["10.20.0.11", "10.20.0.12", "11.20.0.11", "10.20.0.2"]
    v6 = ["2001:db8::1", "2001:db8::2", "2001:db9::1"]
    ports = [0, 1, 255, 256, 554, 50000, 65535]
    vlans = [(), ((0x8100, 1),), ((0x8100, 256),)]
    frames = []
    for _ in range(n):
        pool = v4 if rng.random() < 0.7 else v6
        src = pool[rng.integers(len(pool))]
        dst = src if rng.random() < 0.15 else pool[rng.integers(len(pool))]
        sport, dport = (ports[i] for i in rng.integers(len(ports), size=2))
        kind = rng.integers(4)
        if kind == 0:
            l4, proto = udp(src, dst, sport, dport, b"x" * int(rng.integers(20))), 17
        elif kind == 1:
            flags = ["S", "SA", "A", "PA", "R", "FA", "SR"][rng.integers(7)]
            l4, proto = tcp(src, dst, sport, dport, 1, 1, flags), 6
        else:
            l4, proto = icmp_echo(sport, dport, kind == 3), 1 if pool is v4 else 58
        if pool is v4:
            frag = int(rng.integers(3)) * 8 if proto != 6 else 0   # non-first fragments are port-less
            net = ipv4(src, dst, proto, l4, frag_offset=frag), 0x0800
        else:
            net = ipv6(src, dst, proto, l4), 0x86DD
        frames.append(ethernet(CAM_MAC, NVR_MAC, net[1], net[0], vlans[rng.integers(len(vlans))]))
    return frames


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chained", [False, True])
def test_compiled_grouping_tells_apart_keys_one_field_apart(monkeypatch, seed, chained):
    """The compiled grouping hashes and compares keys from the columns (sensor/_walk.c): it must tell apart every
    pair of keys the reference does, and order each key's two ends as it does, whatever the rows' order. Chained:
    every key's hash cleared, so that each is compared with every other key of the batch down one chain (keys
    are compared only where their slots meet)."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    rng = np.random.default_rng(seed)
    dec = decode(batch_of(_near_keys(rng, 600)))
    if chained:
        walk = compiled.extension
        monkeypatch.setattr(compiled, "extension", types.SimpleNamespace(group=lambda *a: walk.group(*a, 0)))
    ip = np.flatnonzero(dec.is_ip)
    for rows in (ip, rng.permutation(ip), ip[rng.random(len(ip)) < 0.5]):
        tags = rng.integers(0, 1 << 62, size=len(rows)).astype(np.uint64)
        got, want = group(dec, rows, tags), group_numpy(dec, rows, tags)
        assert len(want.first) > 100   # many keys, many of them one field apart
        for name, a, r in zip(got._fields, got, want, strict=True):
            assert a.dtype == r.dtype and np.array_equal(a, r), name


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hash_mask", [fl._ALL_BITS, 0], ids=["hashed", "chained"])
def test_compiled_grouping_of_windows_at_once_is_each_window_grouped_alone(seed, hash_mask):
    """_walk.group with bounds (flows.Windows: a decoded batch's windows grouped in one call) gives, window by
    window, what a call with that window's rows alone gives: its groups in order after the previous window's, each
    group's first packet as a position in all the rows, and where each window's groups start. Windows of 0 to 40
    rows of near keys, in several row orders, a key's packets in several windows (which must not join)."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    walk = compiled.extension
    rng = np.random.default_rng(seed)
    dec = decode(batch_of(_near_keys(rng, 300)))
    columns = FlowTable(FlowSettings())._batch_columns(dec)
    ip = np.flatnonzero(dec.is_ip)
    for rows in (ip, rng.permutation(ip), np.concatenate([ip, ip])):
        tags = rng.integers(0, 1 << 62, size=len(rows)).astype(np.uint64)
        cuts = np.sort(rng.integers(0, len(rows) + 1, size=rng.integers(1, 40)))
        bounds = [0, *cuts.tolist(), len(rows)]
        *got, offsets = walk.group(*columns, tags, rows, hash_mask, np.array(bounds, np.int64))
        alone = [walk.group(*columns, tags[lo:hi], rows[lo:hi], hash_mask) for lo, hi in zip(bounds[:-1], bounds[1:],
                                                                                             strict=True)]
        counts = [len(one[1]) // 8 for one in alone]
        assert np.frombuffer(offsets, np.int64).tolist() == np.cumsum([0, *counts]).tolist()
        firsts = [np.frombuffer(one[1], np.int64) + lo for one, lo in zip(alone, bounds[:-1], strict=True)]
        assert np.frombuffer(got[1], np.int64).tolist() == np.concatenate(firsts).tolist()
        for k in (0, *range(2, 10)):
            assert got[k] == b"".join(one[k] for one in alone), k
        assert sum(counts) > len(set(counts))   # windows of many groups, not empty ones compared


def test_compiled_grouping_refuses_what_it_cannot_read():
    """Every index group reads by is checked first: rows within the batch, columns of one length, bounds in order
    from 0 to the rows' number."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    walk = compiled.extension
    dec = decode(batch_of([u(CAM, NVR, 5000, 6000), u(NVR, CAM, 6000, 5000)]))
    columns = FlowTable(FlowSettings())._batch_columns(dec)
    rows = np.array([0, 1], np.int64)
    assert len(walk.group(*columns, b"", rows, fl._ALL_BITS, np.array([0, 1, 2], np.int64))) == 11
    for bad_rows in ([0, 2], [-1, 0]):
        with pytest.raises(ValueError, match="out of range"):
            walk.group(*columns, b"", np.array(bad_rows, np.int64))
    for bounds in ([0, 1], [1, 2], [0, 2, 1, 2], [0, 3], []):
        with pytest.raises(ValueError, match="out of order"):
            walk.group(*columns, b"", rows, fl._ALL_BITS, np.array(bounds, np.int64))
    with pytest.raises(ValueError, match="different lengths"):
        walk.group(*columns[:-1], np.zeros(3), b"", rows)
    with pytest.raises(ValueError, match="different lengths"):
        walk.group(*columns, np.zeros(3, np.uint64), rows)   # a tag per row
    with pytest.raises(TypeError):
        walk.group(*columns, b"", rows, 0, np.zeros(1, np.int64), 1)
    # a column whose elements start at an odd byte (a sliced memoryview): read through a misaligned pointer, undefined
    def shifted(column) -> memoryview:
        return memoryview(bytearray(1) + bytes(column))[1:]
    for k, column in enumerate(columns):
        if np.asarray(column).dtype.itemsize > 1 and np.asarray(column).ndim == 1:
            with pytest.raises(ValueError, match="unaligned"):
                walk.group(*columns[:k], shifted(column), *columns[k + 1:], b"", rows)
    with pytest.raises(ValueError, match="unaligned"):
        walk.group(*columns, b"", shifted(rows))
    with pytest.raises(ValueError, match="unaligned"):
        walk.group(*columns, shifted(np.zeros(2, np.uint64)), rows)
    with pytest.raises(ValueError, match="unaligned"):
        walk.group(*columns, b"", rows, fl._ALL_BITS, shifted(np.array([0, 2], np.int64)))


# ---- the table: what a batch adds ---------------------------------------------------------------------------------
def test_update_of_nothing_adds_nothing():
    ft, _ = table()
    dec = decode(batch_of([u(CAM, NVR, 5000, 6000)]))
    assert ft.update(dec, np.array([], dtype=np.int64)) == []
    assert len(ft) == 0 and ft.created == 0


def test_batches_add_up_per_direction(impl):
    ft, _ = table()
    ups = feed(ft, [u(CAM, NVR, 50000, 554, b"a" * 10), u(NVR, CAM, 554, 50000, b"b" * 30)], ts=[T0, T0 + 1],
               wirelen=[100, 300])
    assert [(x.new, x.ts, x.orig_pkts, x.resp_pkts, x.orig_bytes, x.resp_bytes) for x in ups] == [
        (True, T0, 1, 1, 100, 300)]
    ups = feed(ft, [u(NVR, CAM, 554, 50000, b"c" * 20), u(CAM, NVR, 50000, 554, b"d" * 5),
                    u(CAM, NVR, 50000, 554, b"e" * 5)], ts=[T0 + 2, T0 + 3, T0 + 4], wirelen=[200, 50, 60])
    assert [(x.new, x.ts, x.orig_pkts, x.resp_pkts, x.orig_bytes, x.resp_bytes) for x in ups] == [
        (False, T0 + 2, 2, 1, 110, 200)]
    (flow,) = ft.flows()
    assert ups[0].flow is flow
    assert (flow.orig_pkts, flow.resp_pkts, flow.orig_bytes, flow.resp_bytes) == (3, 2, 210, 500)
    assert (flow.orig_payload, flow.resp_payload) == (20, 50)
    assert (flow.orig_port, flow.resp_port, flow.first, flow.last) == (50000, 554, T0, T0 + 4)
    assert ft.created == 1


def test_payload_tags_are_or_ed_into_the_sending_side(impl):
    ft, _ = table()
    feed_tags(ft, [u(CAM, NVR, 50000, 554), u(NVR, CAM, 554, 50000)], [0b0011, 0b1000])
    feed_tags(ft, [u(CAM, NVR, 50000, 554), u(NVR, CAM, 554, 50000)], [0b0110, 0b0000])
    (flow,) = ft.flows()
    assert (flow.orig_tags, flow.resp_tags) == (0b0111, 0b1000)
    feed(ft, [u(CAM, NVR, 50000, 554)])   # no tags given: nothing changes
    assert (flow.orig_tags, flow.resp_tags) == (0b0111, 0b1000)


def test_several_flows_in_one_batch_keep_their_own_keys(impl):
    ft, _ = table()
    frames = [u(CAM, NVR, 50000 + i, 554) for i in range(4)]
    feed(ft, frames)
    dec = decode(batch_of(frames))
    keys, _ = flow_keys(dec, np.arange(4))
    for i in range(4):
        flow = ft.get(keys[i].tobytes(), 17)
        assert flow is not None and flow.key == keys[i].tobytes() and flow.orig_port == 50000 + i


def test_source_macs_follow_the_last_packet_but_a_frame_without_one_keeps_them(impl):
    ft, _ = table()
    feed(ft, [u(CAM, NVR, 50000, 554), u(NVR, CAM, 554, 50000)])
    (flow,) = ft.flows()
    assert (flow.orig_mac, flow.resp_mac) == (int.from_bytes(CAM_MAC, "big"), int.from_bytes(NVR_MAC, "big"))
    # the same flow seen without a link layer (raw IP): no MAC, the known ones stay
    feed(ft, [raw_udp(CAM, NVR, 50000, 554), raw_udp(NVR, CAM, 554, 50000)], linktype=101)
    assert (flow.orig_mac, flow.resp_mac) == (int.from_bytes(CAM_MAC, "big"), int.from_bytes(NVR_MAC, "big"))
    # a new MAC for each side (a replaced NIC, a router in between) replaces the old one
    new_cam, new_nvr = mac("04:03:12:00:00:99"), mac("00:11:32:00:00:98")
    feed(ft, [ethernet(NVR_MAC, new_cam, 0x0800, raw_udp(CAM, NVR, 50000, 554)),
              ethernet(CAM_MAC, new_nvr, 0x0800, raw_udp(NVR, CAM, 554, 50000))])
    assert (flow.orig_mac, flow.resp_mac) == (int.from_bytes(new_cam, "big"), int.from_bytes(new_nvr, "big"))


@pytest.mark.parametrize("cut", [None, 1, 2, 3])
def test_a_frame_without_a_link_layer_keeps_the_macs_within_a_batch_too(impl, cut):
    """Frames of one flow from two interfaces, one without a link layer, last: each side's MAC is the one its
    latest framed packet carried, whether or not the frame without one came in the same batch."""
    ft, _ = table()
    frames = [u(CAM, NVR, 50000, 554), u(NVR, CAM, 554, 50000), raw_udp(CAM, NVR, 50000, 554),
              raw_udp(NVR, CAM, 554, 50000)]
    types = [1, 1, 101, 101]
    for lo, hi in ([(0, 4)] if cut is None else [(0, cut), (cut, 4)]):
        feed(ft, frames[lo:hi], ts=[T0 + i for i in range(lo, hi)], linktype=types[lo:hi])
    (flow,) = ft.flows()
    assert (flow.orig_mac, flow.resp_mac) == (int.from_bytes(CAM_MAC, "big"), int.from_bytes(NVR_MAC, "big"))


def test_a_late_packet_does_not_move_last_back(impl):
    ft, _ = table()
    feed(ft, [u(CAM, NVR, 50000, 554)], ts=[T0 + 10])
    feed(ft, [u(CAM, NVR, 50000, 554)], ts=[T0 + 4])
    (flow,) = ft.flows()
    assert (flow.first, flow.last) == (T0 + 10, T0 + 10)
    feed(ft, [u(CAM, NVR, 50000, 554)], ts=[T0 + 11])
    assert flow.last == T0 + 11


# ---- orientation of a new flow ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sport, dport, swapped", [
    (1023, 1024, True), (80, 50000, True), (1024, 1024, False), (1023, 1023, False), (1024, 1023, False),
    (50000, 80, False)])
@pytest.mark.parametrize("proto", ["udp", "tcp-midstream"])
def test_a_flow_first_seen_from_a_low_port_to_a_high_one_is_turned_round(impl, proto, sport, dport, swapped):
    frame = u(CAM, NVR, sport, dport) if proto == "udp" else t(CAM, NVR, sport, dport, "PA", b"x")
    ft, _ = table()
    feed(ft, [frame])
    (flow,) = ft.flows()
    if swapped:
        assert (flow.orig_text, flow.orig_port, flow.resp_text, flow.resp_port) == (NVR, dport, CAM, sport)
        assert (flow.orig_pkts, flow.resp_pkts) == (0, 1)
    else:
        assert (flow.orig_text, flow.orig_port, flow.resp_text, flow.resp_port) == (CAM, sport, NVR, dport)
        assert (flow.orig_pkts, flow.resp_pkts) == (1, 0)


@pytest.mark.parametrize("flags, swapped", [("S", False), ("SA", True), ("A", True), ("FA", True), ("R", True)])
def test_tcp_orientation_by_handshake_flags(impl, flags, swapped):
    """Packets from port 80 to 50000: a SYN is an originator whatever its ports, a SYN-ACK a responder; others
    go by the ports."""
    ft, _ = table()
    feed(ft, [t(CAM, NVR, 80, 50000, flags)])
    (flow,) = ft.flows()
    assert flow.orig_text == (NVR if swapped else CAM)
    assert (flow.orig_port, flow.resp_port) == ((50000, 80) if swapped else (80, 50000))


def test_a_syn_ack_between_high_ports_is_still_the_responder(impl):
    ft, _ = table()
    feed(ft, [t(CAM, NVR, 40000, 50000, "SA")])
    (flow,) = ft.flows()
    assert (flow.orig_text, flow.orig_port, flow.resp_port, flow.resp_flags) == (NVR, 50000, 40000, 0x12)


@pytest.mark.parametrize("reply", [False, True])
def test_an_icmp_flow_first_seen_as_a_reply_is_turned_round(impl, reply):
    ft, _ = table()
    feed(ft, [icmp(CAM, CLOUD, reply=reply)])
    (flow,) = ft.flows()
    assert flow.orig_text == (CLOUD if reply else CAM)
    assert (flow.proto, flow.orig_port, flow.resp_port) == (1, 0, 0)


def test_an_icmpv6_echo_reply_is_turned_round(impl):
    a, b = "fd00::11", "fd00::2"
    echo_reply = bytes([129, 0, 0, 0]) + b"\0\x07\0\x01"
    ft, _ = table()
    feed(ft, [ethernet(NVR_MAC, CAM_MAC, 0x86DD, ipv6(a, b, 58, echo_reply))])
    (flow,) = ft.flows()
    assert (flow.orig_text, flow.resp_text, flow.proto, flow.orig_port, flow.resp_port) == (b, a, 58, 0, 0)


def test_a_fragment_row_opens_a_port_less_flow(impl):
    ft, _ = table()
    dec = decode(batch_of([u(CAM, NVR, 50000, 554)]))
    ft.update(dataclasses.replace(dec, fragment=np.array([True])), np.arange(1))
    (flow,) = ft.flows()
    assert (flow.orig_port, flow.resp_port, flow.orig_text) == (0, 0, CAM)


def test_a_new_flow_keeps_its_vlan_and_first_time(impl):
    ft, _ = table()
    feed(ft, [u(CAM, NVR, 50000, 554, vlans=((0x8100, 42),))], ts=[T0 + 7])
    (flow,) = ft.flows()
    assert (flow.vlan, flow.first, flow.proto_name) == (42, T0 + 7, "udp")


# ---- closing, lookup, port reuse -----------------------------------------------------------------------------------
def _key(frame) -> bytes:
    dec = decode(batch_of([frame]))
    return flow_keys(dec, np.arange(1))[0][0].tobytes()


def test_get_finds_open_and_closed_flows_by_key_and_protocol(impl):
    ft, _ = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), u(CAM, NVR, 50000, 554), icmp(CAM, NVR)])
    tk, uk, ik = _key(t(CAM, CLOUD, 50000, 443, "S")), _key(u(CAM, NVR, 50000, 554)), _key(icmp(CAM, NVR))
    assert ft.get(tk, 6).proto == 6 and ft.get(uk, 17).proto == 17 and ft.get(ik, 1).proto == 1
    assert ft.get(uk, 6) is None and ft.get(tk, 17) is None and ft.get(b"\0" * 40, 6) is None
    feed(ft, [t(CLOUD, CAM, 443, 50000, "R")])
    closed = ft.get(tk, 6)
    assert closed is not None and closed.closed and closed.state == "REJ"


@pytest.mark.parametrize("closing, closed", [
    ([("R", "orig")], True), ([("R", "resp")], True), ([("FA", "orig"), ("FA", "resp")], True),
    ([("FA", "orig")], False), ([("FA", "resp")], False), ([("PA", "orig")], False)])
def test_rst_from_either_side_or_fin_from_both_closes_a_tcp_flow(impl, closing, closed):
    ft, _ = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), t(CLOUD, CAM, 443, 50000, "SA"), t(CAM, CLOUD, 50000, 443, "A")])
    for flags, side in closing:
        feed(ft, [t(CAM, CLOUD, 50000, 443, flags) if side == "orig" else t(CLOUD, CAM, 443, 50000, flags)])
    (flow,) = ft.flows()
    assert flow.closed is closed
    assert (flow in ft._closed.values()) is closed


def test_a_packet_after_the_close_without_syn_stays_in_the_closed_flow(impl):
    ft, ended = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), t(CLOUD, CAM, 443, 50000, "SA"), t(CAM, CLOUD, 50000, 443, "R")])
    ups = feed(ft, [t(CAM, CLOUD, 50000, 443, "A")])
    assert [x.new for x in ups] == [False] and ended == [] and ft.created == 1 and len(ft) == 1
    (flow,) = ft.flows()
    assert flow.orig_pkts == 3
    ups = feed(ft, [t(CAM, CLOUD, 50000, 443, "S")])   # the port pair reused: a new connection
    assert [x.new for x in ups] == [True] and [(f.orig_pkts, why) for f, why in ended] == [(3, "idle")]
    assert ft.created == 2 and ft.expired["idle"] == 1 and len(ft) == 1


def _ended_by_cuts(frames, cuts) -> tuple[int, list[tuple]]:
    """The flows a table makes of `frames` fed in the batches that `cuts` (positions) mark, all ended by a flush:
    how many, and each one's values (sorted: a table's order follows its batches' groups, its flows do not)."""
    ft, ended = table()
    ts = [T0 + i / 1000 for i in range(len(frames))]
    for lo, hi in zip([0, *cuts], [*cuts, len(frames)], strict=True):
        if hi > lo:
            feed(ft, frames[lo:hi], ts=ts[lo:hi])
    ft.flush()
    return ft.created, sorted((f.key, f.first, f.last, f.orig_is_a, f.orig_pkts, f.resp_pkts, f.orig_flags,
                               f.resp_flags, f.closed, f.state) for f, _ in ended)


def _every_cut(frames) -> list[list[int]]:
    return [[], *([c] for c in range(1, len(frames))), list(range(1, len(frames)))]


@pytest.mark.parametrize("copies", [1, 2])
def test_a_handshake_retried_after_a_reset_is_two_flows_however_the_batches_are_cut(impl, copies):
    """A SYN refused by a RST and tried again on the same port pair within one batch (the second attempt is a
    new connection), each packet `copies` times as a capture on a mirror port may hold it: the refused attempt
    and the connection, whatever batch each packet falls in."""
    syn, rst, syn_ack = t(CAM, CLOUD, 50000, 443, "S"), t(CLOUD, CAM, 443, 50000, "RA"), t(CLOUD, CAM, 443, 50000, "SA")
    frames = [f for f in (syn, rst, syn, syn_ack, t(CAM, CLOUD, 50000, 443, "A")) for _ in range(copies)]
    whole = _ended_by_cuts(frames, [])
    assert whole[0] == 2 and [(f[-1], f[4], f[5]) for f in whole[1]] == [("REJ", copies, copies),
                                                                         ("S1", 2 * copies, copies)]
    for cuts in _every_cut(frames):
        assert _ended_by_cuts(frames, cuts) == whole, cuts


@pytest.mark.parametrize("seed", range(12))
def test_the_flows_of_tcp_packets_do_not_depend_on_where_the_batches_are_cut(impl, seed):
    """Random flags on two port pairs, either way round (closes, reuse, SYNs after anything, SYN with RST or
    FIN): one batch, a packet a batch and random cuts make the same flows."""
    import random
    rng = random.Random(seed)
    flags = ["S", "S", "SA", "A", "PA", "FA", "R", "RA", "SR", "SF", ""]
    pairs = [(CAM, CLOUD, 50000, 443), (CAM, NVR, 40000, 554)]
    frames = []
    for _ in range(40):
        a, b, pa, pb = rng.choice(pairs)
        if rng.random() < 0.5:
            a, b, pa, pb = b, a, pb, pa
        frames.append(t(a, b, pa, pb, rng.choice(flags)))
    whole = _ended_by_cuts(frames, [])
    assert whole[0] > 2
    for cuts in ([*range(1, len(frames))], *(sorted(rng.sample(range(1, len(frames)), rng.randint(1, 8)))
                                             for _ in range(20))):
        assert _ended_by_cuts(frames, cuts) == whole, cuts


# ---- eviction, flush ------------------------------------------------------------------------------------------------
def test_eviction_removes_the_least_recently_active_flows_across_tables(impl):
    ft, ended = table(max_flows=2)
    feed(ft, [u(CAM, NVR, 50000, 554)], ts=[T0])                 # UDP, oldest
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S")], ts=[T0 + 1])     # TCP
    feed(ft, [icmp(CAM, NVR)], ts=[T0 + 2])                     # ICMP: one too many
    assert [(f.proto, why) for f, why in ended] == [(17, "evicted")]
    assert sorted(f.proto for f in ft.flows()) == [1, 6] and ft.expired["evicted"] == 1


def test_eviction_of_several_flows_in_one_batch_is_counted_exactly(impl):
    ft, ended = table(max_flows=1)
    feed(ft, [u(CAM, NVR, 50000 + i, 554) for i in range(4)], ts=[T0 + 3, T0 + 1, T0 + 2, T0 + 4])
    # one table, least recently updated first: within a batch, the order of the flows' first packets
    assert [(f.orig_port, why) for f, why in ended] == [(50000, "evicted"), (50001, "evicted"), (50002, "evicted")]
    assert len(ft) == 1 and ft.expired == {"idle": 0, "active": 0, "evicted": 3, "end": 0}


def test_flush_ends_every_flow_of_every_table(impl):
    ft, ended = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), u(CAM, NVR, 50000, 554), icmp(CAM, NVR),
              t(CAM, CLOUD, 50001, 443, "R")])
    out = ft.flush()
    assert sorted((f.proto, why) for f, why in ended) == [(1, "end"), (6, "end"), (6, "end"), (17, "end")]
    assert len(out) == 4 and len(ft) == 0 and list(ft.flows()) == [] and ft.expired["end"] == 4


def test_flush_ends_flows_least_recently_active_first_in_each_table(impl):
    """flush reads each table's plain dict view: the same LRU order as the OrderedDict's own, after flows were
    updated again (taken out and put back at the recent end), closed and evicted."""
    ft, ended = table(max_flows=5)
    feed(ft, [u(CAM, NVR, 50000 + i, 554) for i in range(6)], ts=[T0 + i for i in range(6)])   # 50000 evicted
    feed(ft, [u(CAM, NVR, 50002, 554), t(CAM, CLOUD, 50000, 443, "S")], ts=[T0 + 7, T0 + 8])   # 50001 evicted
    feed(ft, [u(NVR, CAM, 554, 50003), t(CAM, CLOUD, 50001, 443, "S")], ts=[T0 + 9, T0 + 10])  # 50004 evicted
    lru = [f.orig_port for tbl, _ in ft._timeouts for f in tbl.values()]
    ended.clear()
    ft.flush()
    assert [f.orig_port for f, _ in ended] == lru == [50000, 50001, 50005, 50002, 50003]


@pytest.mark.skipif(compiled.flows_extension is None, reason="the C extension was not built on this machine")
def test_compiled_flows_and_updates_stay_out_of_the_cyclic_collector():
    """A flow holds only bytes, numbers, strings and tuples of them: no cycle can run through it, so the compiled
    step leaves flows and their updates untracked (a flood's full table is not walked at every collection); they
    are still freed by reference counting."""
    ft, _ = table()
    ups = feed(ft, [u(CAM, NVR, 50000, 554), t(CAM, CLOUD, 50000, 443, "S")])
    assert [gc.is_tracked(x) for x in ups] == [False, False]
    assert [gc.is_tracked(f) for f in ft.flows()] == [False, False]
    flow = ups[0].flow
    del ups
    assert sys.getrefcount(flow) == 3   # the table's, `flow`'s and getrefcount's argument: no stray reference


def test_length_counts_every_table(impl):
    ft, _ = table()
    feed(ft, [t(CAM, CLOUD, 50000, 443, "S"), u(CAM, NVR, 50000, 554), icmp(CAM, NVR),
              t(CAM, CLOUD, 50001, 443, "R")])
    assert (len(ft._tcp), len(ft._closed), len(ft._udp), len(ft._other)) == (1, 1, 1, 1)
    assert len(ft) == 4 and len(list(ft.flows())) == 4


@pytest.mark.parametrize("seed", range(5))
def test_eviction_takes_the_oldest_head_of_any_table_first_table_on_a_tie(impl, seed):
    """_evict (compiled and its reference) against the plain rule (the table whose head is least recently active,
    the first in _timeouts order on a tie, one flow at a time), on tables of random times with ties across tables
    and tables running empty; each table's order is its OrderedDict order (here not the dict's)."""
    import random
    rng = random.Random(seed)
    ft, ended = table(max_flows=1_000)
    for n in range(400):
        flow = Flow(n.to_bytes(40, "big"), 0, 6, 0, 0, 0.0)
        flow.last = float(rng.randint(0, 30))
        rng.choice([ft._tcp, ft._closed, ft._udp, ft._other])[flow.key] = flow
    for t, _ in ft._timeouts:   # each table in LRU order, as update keeps them
        for k in sorted(t, key=lambda k: t[k].last):
            t.move_to_end(k)
    tables = [dict(t) for t, _ in ft._timeouts]
    expected = []
    for _ in range(390):
        oldest = min((t for t in tables if t), key=lambda t: next(iter(t.values())).last)
        expected.append(oldest.pop(next(iter(oldest))))
    ft.settings = FlowSettings(max_flows=10)
    assert ft._evict() == expected and [f for f, _ in ended] == expected and ft.expired["evicted"] == 390
    assert len(ft) == 10


def test_the_compiled_eviction_runs_only_while_its_switch_is_on(monkeypatch):
    """compiled.table off (or no extension) evicts with _evict_python: a switch the compiled path ignored would
    leave the test above comparing the compiled loop with itself (it evicts OrderedDicts as well as Lrus)."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    real = compiled.flows_extension
    asked: list[str] = []
    spy = types.SimpleNamespace(evict=lambda *a: (asked.append("c"), real.evict(*a))[1])
    python = FlowTable._evict_python
    monkeypatch.setattr(FlowTable, "_evict_python", lambda self, n: (asked.append("python"), python(self, n))[1])
    for extension, on in ((spy, False), (None, True), (None, False), (spy, True)):
        monkeypatch.setattr(compiled, "table", on)
        monkeypatch.setattr(compiled, "flows_extension", real if extension is not None else None)
        ft, ended = table(max_flows=3)
        for n in range(5):
            flow = Flow(n.to_bytes(40, "big"), 0, 17, 0, 0, float(n))
            ft._udp[flow.key] = flow
        monkeypatch.setattr(compiled, "flows_extension", extension)
        asked.clear()
        assert [f.last for f in ft._evict()] == [0.0, 1.0] and [f.last for f, _ in ended] == [0.0, 1.0]
        assert asked == (["c"] if extension is not None and on else ["python"]), (extension, on)


def test_address_texts_are_ipaddress_s_own():
    """ip_text formats IPv4 from its bytes (inet_ntop), IPv6 through ipaddress: the same text either way."""
    import ipaddress
    import random

    from sensor.flows import ip_text
    rng = random.Random(5)
    v4 = [rng.getrandbits(32).to_bytes(4, "big") for _ in range(5_000)] + [bytes(4), b"\xff" * 4, b"\x0a\x00\x00\x01"]
    for packed in v4:
        assert ip_text(b"\x00" * 10 + b"\xff\xff" + packed) == str(ipaddress.IPv4Address(packed))
    v6 = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(2_000)]
    v6 += [bytes(16), bytes(15) + b"\x01", bytes(12) + b"\x01\x02\x03\x04", b"\xfe\x80" + bytes(13) + b"\x01"]
    for packed in v6:
        assert ip_text(packed) == str(ipaddress.IPv6Address(packed))
