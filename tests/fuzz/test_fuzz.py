"""Property-based fuzzing of the pcap/pcapng reader, the decoder and the app parsers: whatever the bytes, reading
ends in batches or a CaptureError, decoding never raises, and counts add up."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import compiled, flows
from sensor.capture import MAX_BLOCK_BYTES, CaptureReader
from sensor.certificate import parse_tls_certificate
from sensor.config import Config
from sensor.decode import decode
from sensor.dissect import (
    parse_banner,
    parse_dhip,
    parse_dns,
    parse_http_host,
    parse_http_identity,
    parse_http_request,
    parse_mdns,
    parse_sadp,
    parse_tftp_request,
    parse_tls_sni,
    parse_ws_discovery,
)
from sensor.enrich import routing
from sensor.errors import CaptureError
from sensor.pipeline import Sensor

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINKTYPES = st.sampled_from([0, 1, 12, 101, 108, 113, 147, 228, 229, 276])


def reader(data: bytes, chunk: int) -> CaptureReader:
    pieces = iter([data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""])
    return CaptureReader(lambda: next(pieces, b""), "fuzz")


def read_everything(data: bytes, chunk: int):
    batches = []
    try:
        for b in reader(data, chunk):
            batches.append(b)
    except CaptureError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(data)
    return batches


frame = st.binary(min_size=0, max_size=200)


@st.composite
def pcap_files(draw):
    """Mostly well-formed pcap with random frames, sometimes with lying lengths or a cut tail."""
    linktype = draw(LINKTYPES)
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for body in draw(st.lists(frame, max_size=20)):
        caplen = len(body) if draw(st.booleans()) else draw(st.integers(0, 2**32 - 1))
        out += struct.pack("<IIII", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 999_999)), caplen,
                           draw(st.integers(0, 2**32 - 1))) + body
    if draw(st.booleans()):
        out = out[:draw(st.integers(0, len(out)))]
    return out


@st.composite
def ethernet_ip_frames(draw):
    """Frames that get deep into the decoder: Ethernet/VLAN, then IPv4 or IPv6 headers with random fields."""
    vlans = b"".join(struct.pack("!HH", draw(st.sampled_from([0x8100, 0x88A8])), draw(st.integers(0, 4095)))
                     for _ in range(draw(st.integers(0, 3))))
    if draw(st.booleans()):
        ip = bytes([0x40 | draw(st.integers(0, 15)), 0]) + draw(st.binary(min_size=0, max_size=80))
        etype = 0x0800
    else:
        ip = bytes([0x60, 0, 0, 0]) + draw(st.binary(min_size=0, max_size=120))
        etype = 0x86DD
    return b"\x00" * 12 + vlans + struct.pack("!H", etype) + ip


@FUZZ
@given(data=pcap_files(), chunk=st.integers(1, 300))
def test_pcap_reader_never_crashes(data, chunk):
    for b in read_everything(data, chunk):
        assert len(b.offsets) == len(b.caplen) == len(b.ts)
        assert (b.offsets + b.caplen <= len(b.data)).all()


def _ng_block(order: str, btype: int, body: bytes, lie: int | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", btype, length if lie is None else lie) + body + struct.pack(order + "I", length)


@st.composite
def pcapng_files(draw):
    """pcapng with sections in either byte order, interfaces with random time resolutions, offsets and snap
    lengths, enhanced, simple and obsolete packet blocks, statistics and unknown blocks, then (sometimes) lying
    lengths, overwritten bytes and a cut tail: the blocks the C walk takes and every kind it must stop at."""
    order = draw(st.sampled_from("<>"))
    out = _ng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += _ng_block(order, 1, struct.pack(order + "HHI", 1, 0, 0))
    u32 = st.integers(0, 2**32 - 1)
    for _ in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from(["epb"] * 6 + ["spb", "spb", "idb", "idb", "shb", "opb", "isb", "junk"]))
        body = draw(frame)
        lie = draw(st.one_of(st.none(), u32)) if draw(st.integers(0, 9)) == 0 else None
        if kind == "epb":
            caplen = len(body) if draw(st.integers(0, 5)) else draw(u32)
            iface = draw(st.sampled_from([0, 0, 0, 1, 3]))   # mostly declared: runs the C walk takes
            head = struct.pack(order + "IIIII", iface, draw(u32), draw(u32), caplen, draw(u32))
            out += _ng_block(order, 6, head + body, lie)
        elif kind == "spb":
            wirelen = len(body) if draw(st.booleans()) else draw(u32)
            out += _ng_block(order, 3, struct.pack(order + "I", wirelen) + body, lie)
        elif kind == "idb":
            options = b""
            if draw(st.booleans()):
                options += struct.pack(order + "HH", 9, 1) + bytes([draw(st.integers(0, 255))]) + b"\0" * 3
            if draw(st.booleans()):
                options += struct.pack(order + "HHq", 14, 8, draw(st.integers(-2**40, 2**40)))
            snap = draw(st.sampled_from([0, 0, 64, 65535, draw(u32)]))
            out += _ng_block(order, 1, struct.pack(order + "HHI", draw(LINKTYPES), 0, snap) + options, lie)
        elif kind == "shb":
            order = draw(st.sampled_from("<>"))
            out += _ng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), lie)
        elif kind == "opb":
            head = struct.pack(order + "HHIIII", draw(st.integers(0, 2)), 0, draw(u32), draw(u32), len(body),
                               len(body))
            out += _ng_block(order, 2, head + body, lie)
        else:
            out += _ng_block(order, 5 if kind == "isb" else draw(u32), body, lie)
    damaged = bytearray(out)
    for _ in range(draw(st.integers(0, 2))):
        damaged[draw(st.integers(0, len(damaged) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        damaged = damaged[:draw(st.integers(0, len(damaged)))]
    return bytes(damaged)


def _outcome(data: bytes, chunk: int, use_c: bool) -> tuple:
    """Every batch's records, and how the reading ended (the error's message and offset), one walk or the other."""
    saved, compiled.walk_pcapng = compiled.walk_pcapng, use_c
    batches, ending = [], None
    try:
        for b in reader(data, chunk):
            batches.append((b.offsets.tolist(), b.caplen.tolist(), b.wirelen.tolist(), b.ts.tolist(),
                            b.linktype.tolist()))
    except CaptureError as exc:
        ending = (str(exc), exc.offset)
    finally:
        compiled.walk_pcapng = saved
    return batches, ending


@FUZZ
@given(data=pcapng_files(), chunk=st.sampled_from([1, 7, 64, 300, 4096, 1 << 20]))
def test_compiled_pcapng_walk_equals_the_python_walk_on_damaged_files(data, chunk):
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    fast = _outcome(data, chunk, True)
    assert fast == _outcome(data, chunk, False)
    for offsets, caplens, *_ in fast[0]:
        assert all(0 <= o and o + c <= len(data) for o, c in zip(offsets, caplens, strict=True))


@FUZZ
@given(data=st.one_of(pcapng_files(), st.binary(max_size=400)), start=st.integers(-8, 600),
       big=st.booleans(), columns=st.lists(st.binary(max_size=40), min_size=4, max_size=4))
def test_compiled_pcapng_walk_is_total_on_any_arguments(data, start, big, columns):
    """Called directly, with interface columns of any (even mismatched) lengths and any start: it never reads
    outside the buffer, and every record it gives lies inside its block and the buffer."""
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    stop, offsets, caplens, wirelens, stamps, links = compiled.extension.walk_pcapng(
        data, start, big, MAX_BLOCK_BYTES, *columns, 0.0)
    n = len(offsets) // 8
    assert len(caplens) == len(wirelens) == len(stamps) == 8 * n and len(links) == 4 * n
    assert (stop == len(data)) if not 0 <= start <= len(data) else start <= stop <= len(data)
    off, cap = np.frombuffer(offsets, np.int64), np.frombuffer(caplens, np.int64)
    assert (off >= max(start, 0)).all() and (off + cap <= stop).all()
    if n:
        assert len(columns[0]) >= 4   # a packet needs an interface


@FUZZ
@given(data=st.binary(max_size=600), chunk=st.integers(1, 128))
def test_random_bytes_never_crash_the_reader(data, chunk):
    read_everything(b"\x0a\x0d\x0d\x0a" + data, chunk)   # pcapng section header start, then noise
    read_everything(data, chunk)


@FUZZ
@given(frames=st.lists(st.one_of(ethernet_ip_frames(), frame), min_size=1, max_size=30), linktype=LINKTYPES)
def test_decoder_and_pipeline_count_every_frame(frames, linktype):
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    data = head + b"".join(struct.pack("<IIII", 1000 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames))
    batches = [b for b in reader(data, 4096) if len(b)]
    assert sum(len(b) for b in batches) == len(frames)
    sensor = Sensor(Config())
    for b in batches:
        dec = decode(b)
        assert len(dec.error) == len(frames)
        sensor.process(b)
    sensor.finish()
    assert sensor.packets == len(frames)
    assert sensor.bytes == sum(len(f) for f in frames)


@FUZZ
@given(payload=st.binary(max_size=400))
def test_application_parsers_never_crash(payload):
    parse_dns(payload)
    parse_tls_sni(payload)
    for prefix in (b"", b"GET / HTTP/1.1\r\n", b"RTSP/1.0 200 OK\r\n", b"\x16\x03\x01\x00\x40\x01"):
        parse_http_host(prefix + payload)
        parse_http_request(prefix + payload)
        parse_banner(prefix + payload)
        parse_tls_sni(prefix + payload)
    parse_ws_discovery(b"<ProbeMatch>" + payload)
    parse_sadp(b"<ProbeMatch>" + payload)
    parse_dhip(b"DHIP{" + payload)
    parse_dns(payload, every_record=True)
    parse_mdns(payload)
    for prefix in (b"HTTP/1.1 200 OK\r\n\r\n", b"<?xml", b'<root xmlns="urn:schemas-upnp-org:device-1-0">',
                   b"<title>", b"GetDeviceSettingsResponse"):
        parse_http_identity(prefix + payload)
    for prefix in (b"", b"\x16\x03\x03\x01\x00\x0b", b"\x16\x03\x03\x01\x00\x0b\x00\x00\xfc\x00\x00\xf9\x30\x82"):
        parse_tls_certificate(prefix + payload)
    for opcode in (b"\x00\x01", b"\x00\x02", b""):
        parse_tftp_request(opcode + payload)


TAGGER = Sensor(Config()).tagger   # the payload tags use the indicator file's signatures


@FUZZ
@given(frames=st.lists(st.one_of(ethernet_ip_frames(), frame), min_size=1, max_size=30), linktype=LINKTYPES)
def test_compiled_decode_equals_numpy_on_hostile_frames(frames, linktype):
    import sensor.decode as d
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    data = head + b"".join(struct.pack("<IIII", 1000 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames))
    for b in reader(data, 4096):
        if len(b):
            fast, ref = d.decode(b), d.decode_numpy(b)
            for field in dataclasses.fields(fast):
                if field.name != "batch":
                    assert np.array_equal(getattr(fast, field.name), getattr(ref, field.name)), field.name
            rows = np.flatnonzero(fast.is_ip)
            tags = np.arange(len(rows), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            grouped, reference = flows.group(fast, rows, tags), flows.group_numpy(fast, rows, tags)
            assert np.array_equal(TAGGER.tags(fast, rows), TAGGER.tags_numpy(fast, rows))
            assert routing.route(fast, fast.is_ip) == routing.route_numpy(fast, fast.is_ip)
            for name, a, r in zip(grouped._fields, grouped, reference, strict=True):
                assert a.dtype == r.dtype and np.array_equal(a, r), name
            assert _table_after(fast, rows, tags, True) == _table_after(fast, rows, tags, False)


def _table_after(dec, rows, tags, compiled_table: bool) -> tuple:
    """A flow table's flows (every slot, table by table, in order) and updates after one batch, through the
    compiled per-flow step (sensor/_flows.c) or its Python reference."""
    if compiled.flows_extension is None and compiled_table:
        return _table_after(dec, rows, tags, False)
    saved, compiled.table = compiled.table, compiled_table
    try:
        ft = flows.FlowTable(Config().flows)
        updates = ft.update(dec, rows, tags)
    finally:
        compiled.table = saved
    state = [(key, tuple(getattr(f, s) for s in flows.Flow.__slots__))
             for table, _ in ft._timeouts for key, f in table.items()]
    return state, [(u.flow.key, u.new, u.ts, u.orig_pkts, u.resp_pkts, u.orig_bytes, u.resp_bytes) for u in updates]
