"""sensor/enrich/routing.py: the rows each parser is handed, for every kind of row at its edges (DNS from 12 bytes,
TCP from 6, a ClientHello as a name, a ServerHello or Certificate as a banner, each HTTP method, RTSP/HTTP banners
and body segments, POSTs, UDP identity ports and SSDP searches, TFTP requests to port 69 but not what comes from
it), equal through the compiled router and its numpy reference, and a window's share of them."""

from __future__ import annotations

import pytest

from packets import ethernet, ipv4, ipv6, mac, tcp, udp
from sensor import compiled
from sensor.decode import decode
from sensor.enrich.routing import NO_ROWS, BatchPlan, ParserRows, _between, route

from .builders import batch_of

CAM, PEER, V6 = "10.20.0.11", "203.0.113.7", ("fd00::1", "fd00::2")
A, B = mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02")


def _u(sport, dport, payload):
    return ethernet(B, A, 0x0800, ipv4(CAM, PEER, 17, udp(CAM, PEER, sport, dport, payload)))


def _t(payload, sport=40000, dport=80):
    return ethernet(B, A, 0x0800, ipv4(CAM, PEER, 6, tcp(CAM, PEER, sport, dport, 1, 1, "PA", payload)))


FRAMES = [
    _u(5000, 53, b"q" * 12),                       # 0 DNS question, the 12-byte minimum
    _u(5000, 53, b"q" * 11),                       # 1 too short for DNS
    _u(53, 5000, b"r" * 40),                       # 2 DNS answer
    _u(5000, 1900, b"M-SEARCH * HTTP/1.1\r\n"),    # 3 SSDP search: identity and searches
    _u(1900, 5000, b"HTTP/1.1 200 OK\r\n"),        # 4 SSDP answer: identity only
    _u(5000, 3702, b"<x/>"),                       # 5 WS-Discovery
    _u(37020, 5000, b"<x/>"),                      # 6 SADP
    _u(5000, 37810, b"DHIP"),                      # 7 DHIP
    _u(5000, 53, b""),                             # 8 empty UDP: nothing
    _t(b"\x16\x03\x01\x00\xc8\x01\x00\x00"),       # 9 TLS ClientHello: named
    _t(b"\x16\x03\x03\x00\x4a\x02\x00\x00"),       # 10 TLS ServerHello: banner (the server's certificate)
    _t(b"GET / HTTP/1.1\r\n"),                     # 11 named
    _t(b"POST /ctl HTTP/1.1\r\n"),                 # 12 named and a POST
    _t(b"RTSP/1.0 200 OK\r\n", 554, 40000),        # 13 banner
    _t(b"HTTP/1.1 200 OK\r\n", 80, 40000),         # 14 banner
    _t(b"GET /"),                                  # 15 five bytes: too short for any
    _t(b"HEAD /"),                                 # 16 six bytes: named
    _t(b"DELETE /x"), _t(b"OPTIONS *"), _t(b"PATCH /x"), _t(b"CONNECT x"), _t(b"PUT /x "),   # 17-21 named
    _t(b"\x17\x03\x03\x00\x10\x01\x00"),           # 22 TLS application data: nothing
    ethernet(B, A, 0x0806, bytes(28)),             # 23 ARP: not IP
    ethernet(B, A, 0x86DD, ipv6(*V6, 17, udp(*V6, 5000, 53, b"q" * 20))),   # 24 DNS over IPv6
    _u(5000, 1900, b""),                           # 25 empty UDP to an identity port: nothing
    _t(b"q" * 20, 40000, 53),                      # 26 DNS over TCP: not read
    _t(b"NOTIFY * HTTP/1.1\r\n", 40000, 1900),      # 27 TCP to an identity port: nothing
    _u(5000, 3702, b"x"),                          # 28 one byte to an identity port: discovery
    _u(5000, 69, b"\x00\x01a\x00octet\x00"),         # 29 TFTP request: requests
    _u(69, 5000, b"\x00\x05\x00\x01no\x00"),          # 30 from port 69 (an error): nobody's
    _u(1900, 69, b"\x00\x01a\x00octet\x00"),         # 31 to 69 from an identity port: a request
    _u(69, 3702, b"<x/>"),                         # 32 to an identity port from 69: discovery
    _u(5000, 69, b""),                             # 33 empty: nothing
    _t(b"\x00\x01a\x00octet\x00", 5000, 69),         # 34 TCP to 69: nothing
    _t(b"\x16\x03\x01\x03\x20\x0b\x00\x03", 443, 40000),   # 35 a Certificate in its own record: banner
    _t(b"\x16\x03\x03\x00\x10\x0c\x00\x00", 443, 40000),   # 36 ServerKeyExchange: nothing
    _t(b"\x16\x02\x00\x00\x4a\x02\x00\x00"),       # 37 not a TLS 1.x record version: nothing
    _t(b"<?xml version=\"1.0\"?>", 49152, 40000),   # 38 a description's body on its own: banner
    _t(b"<root xmlns=", 80, 40000),                # 39 banner
    _t(b"<!DOCTYPE html>", 80, 40000), _t(b"<!doctype html>", 80, 40000),   # 40-41 banner
    _t(b"<html><head>", 80, 40000), _t(b"<HTML>\r\n", 80, 40000),          # 42-43 banner
    _t(b"<Html>", 80, 40000), _t(b" <html>", 80, 40000),                    # 44-45 other cases: nothing
]
EXPECTED = ParserRows(dns=[0, 2, 24], identity=[3, 4, 5, 6, 7, 28, 32], searches=[3],
                      named=[9, 11, 12, 16, 17, 18, 19, 20, 21], banners=[10, 13, 14, 35, 38, 39, 40, 41, 42, 43],
                      posts=[12], requests=[29, 31])


@pytest.mark.parametrize("compiled_route", [True, False], ids=["compiled", "numpy"])
def test_each_parser_gets_exactly_its_rows(compiled_route, monkeypatch):
    if compiled_route and compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    monkeypatch.setattr(compiled, "route", compiled_route)
    dec = decode(batch_of(FRAMES))
    assert route(dec, dec.is_ip) == EXPECTED


@pytest.mark.parametrize("compiled_route", [True, False], ids=["compiled", "numpy"])
def test_dhcp_rows_are_those_between_two_dhcp_ports_of_one_protocol(compiled_route, monkeypatch):
    """DHCP's rows: UDP from a DHCP port to a DHCP port (67/68, or DHCPv6's 546/547), either way; one DHCP port
    alone, or a port of each protocol, is nobody's."""
    if compiled_route and compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    monkeypatch.setattr(compiled, "route", compiled_route)
    pairs = [(68, 67), (67, 68), (546, 547), (547, 546),   # 0-3 DHCP and DHCPv6, either way
             (5000, 67), (67, 5000), (5000, 547), (546, 5000),   # 4-7 one DHCP port: nobody's
             (68, 547), (546, 67)]                              # 8-9 a port of each: nobody's
    dec = decode(batch_of([_u(sport, dport, b"d" * 240) for sport, dport in pairs]))
    rows = route(dec, dec.is_ip)
    assert rows.dhcp == [0, 1, 2, 3]
    assert rows.identity == rows.requests == []


def test_the_compiled_router_runs_only_while_its_switch_is_on(monkeypatch):
    """compiled.route off (or no extension) takes route_numpy: a switch the compiled path ignored would leave the
    test above comparing the compiled router with itself."""
    import types

    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    asked = []
    real = compiled.extension.route
    walk = types.SimpleNamespace(route=lambda *columns: (asked.append(len(columns[0])), real(*columns))[1])
    dec = decode(batch_of(FRAMES))
    for extension, on in ((walk, False), (None, True), (None, False), (walk, True)):
        monkeypatch.setattr(compiled, "extension", extension)
        monkeypatch.setattr(compiled, "route", on)
        asked.clear()
        assert route(dec, dec.is_ip) == EXPECTED
        assert asked == ([len(FRAMES)] if extension is not None and on else []), (extension, on)


def test_a_window_takes_its_share_of_the_batch_rows():
    dec = decode(batch_of(FRAMES))
    plan = BatchPlan(dec, lambda d, rows: rows * 0)
    assert plan.parsers == EXPECTED._replace(link=[23])   # the ARP frame: the link reader's
    assert list(plan.ip) == [i for i in range(len(FRAMES)) if i != 23]
    assert plan.parser_rows(2, 13) == ParserRows([2], [3, 4, 5, 6, 7], [3], [9, 11, 12], [10], [12], [])
    assert plan.parser_rows(29, 33) == ParserRows([], [32], [], [], [], [], [29, 31])
    assert plan.parser_rows(0, 0) == ParserRows([], [], [], [], [], [], [])
    assert _between([1, 3, 5], 3, 5) == [3] and _between([], 0, 9) == []


def test_every_window_takes_what_between_gives_each_list():
    """parser_rows inlines _between: the same rows for any window, empty lists and windows past the ends too."""
    import random

    dec = decode(batch_of(FRAMES))
    plan = BatchPlan(dec, lambda d, rows: rows * 0)
    rng = random.Random(16)
    for _ in range(500):
        start = rng.randint(-2, len(FRAMES) + 2)
        end = start + rng.randint(0, 12)
        assert plan.parser_rows(start, end) == ParserRows(*(_between(r, start, end) for r in plan.parsers))


def test_window_rows_are_parser_rows_for_every_cut_of_the_batch():
    """window_rows answers the windows cut found without parser rows at once: for any cut of the batch into
    contiguous windows (one row, many, none holding a parser's row), each window's rows are parser_rows'."""
    import random

    dec = decode(batch_of(FRAMES))
    plan = BatchPlan(dec, lambda d, rows: rows * 0)
    rng = random.Random(17)
    empty_seen = 0
    for _ in range(300):
        bounds = sorted({0, len(FRAMES), *rng.sample(range(1, len(FRAMES)), rng.randint(0, len(FRAMES) - 2))})
        if rng.random() < 0.5 and len(bounds) > 3:   # windows of part of the batch: rows before and after them
            bounds = bounds[1:-1]
        plan.cut(bounds)
        for k in range(len(bounds) - 1):
            got = plan.window_rows(k, bounds[k], bounds[k + 1])
            assert got == plan.parser_rows(bounds[k], bounds[k + 1])
            assert (got is NO_ROWS) == (not any(got))
            empty_seen += not any(got)
    assert empty_seen > 0   # the shortcut was taken, not only the slices
    empty_seen = 0
    for start in range(len(FRAMES)):   # one window (a video batch's shape), held or not
        for end in range(start + 1, len(FRAMES) + 1):
            plan.cut([start, end])
            got = plan.window_rows(0, start, end)
            assert got == plan.parser_rows(start, end)
            assert (got is NO_ROWS) == (not any(got))   # a window holding none costs the pipeline no reader
            empty_seen += got is NO_ROWS
    assert empty_seen > 5
    nothing = BatchPlan(decode(batch_of(FRAMES[:1])), lambda d, rows: rows * 0)
    nothing.parsers = ParserRows([], [], [], [], [], [], [], [], [])
    for bounds in ([0, 1], [0, 0, 1]):   # no parser wants any row: every window is NO_ROWS, whatever the cut
        nothing.cut(bounds)
        assert [nothing.window_rows(k, bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)] == \
            [ParserRows([], [], [], [], [], [], [], [], [])] * (len(bounds) - 1)
        assert all(nothing.window_rows(k, bounds[k], bounds[k + 1]) is NO_ROWS for k in range(len(bounds) - 1))


def link_rows_numpy(dec, is_ip):
    """What BatchPlan found before link_rows, and its reference: every mask over the whole batch."""
    import numpy as np

    from sensor.decode import NET_ARP, PROTO_ICMPV6
    from sensor.dissect import NDP_TYPES

    ndp = is_ip & (dec.proto == PROTO_ICMPV6) & (dec.sport >= min(NDP_TYPES)) & (dec.sport <= max(NDP_TYPES))
    return np.flatnonzero((dec.network == NET_ARP) | (ndp & ~dec.fragment)).tolist()


def test_link_rows_are_the_whole_batch_masks_rows():
    """link_rows tests ARP or ICMPv6 over the batch and the rest on those rows alone: the same rows as the masks over
    the whole batch, for the link frames and for columns drawn at random around every edge (neighbour discovery's
    types and their neighbours, fragments, decode errors, ARP and the other networks)."""
    import dataclasses

    import numpy as np
    from link_packets import arp, neighbor_advertisement, neighbor_solicitation, router_advertisement

    from sensor.enrich.routing import link_rows

    frames = FRAMES + [neighbor_advertisement(A, "fe80::1", "fe80::1"), neighbor_solicitation(A, "fe80::1", "fe80::2"),
                       router_advertisement(B, "fe80::9", "2001:db8::"), arp(A, CAM, PEER)]
    dec = decode(batch_of(frames))
    assert link_rows(dec, dec.is_ip) == link_rows_numpy(dec, dec.is_ip) == [23] + list(range(len(FRAMES),
                                                                                              len(frames)))
    rng = np.random.default_rng(16)
    n, found = 2000, 0
    for _ in range(20):
        drawn = dataclasses.replace(
            dec, network=rng.integers(0, 4, n, dtype=np.uint8),
            error=rng.choice(np.array([0, 0, 0, 1, 5], np.uint8), n),
            proto=rng.choice(np.array([58, 58, 1, 6, 17], np.uint8), n), sport=rng.integers(130, 140, n),
            fragment=rng.random(n) < 0.2)
        want = link_rows_numpy(drawn, drawn.is_ip)
        assert link_rows(drawn, drawn.is_ip) == want
        found += len(want)
    assert found > 1000
    nothing = dataclasses.replace(drawn, network=np.ones(n, np.uint8), proto=np.full(n, 17, np.uint8))
    assert link_rows(nothing, nothing.is_ip) == []


def test_the_ip_rows_of_a_batch_all_ip_are_every_row():
    """BatchPlan.ip of a batch whose rows are all IP (its shortcut) and of one that is not: flatnonzero's rows."""
    import numpy as np

    for frames in (FRAMES[:23], FRAMES):
        dec = decode(batch_of(frames))
        ip = BatchPlan(dec, lambda d, rows: rows * 0).ip
        want = np.flatnonzero(dec.is_ip)
        assert ip.dtype == want.dtype and ip.tolist() == want.tolist()
    assert len(ip) == len(FRAMES) - 1


def test_the_compiled_router_is_numpys_on_random_heads(monkeypatch):
    """The compiled router skips TCP rows by their first payload byte before trying the prefixes: over random
    columns (payloads opening with each prefix, with a prefix's first byte and other bytes after it, or anything)
    it picks exactly numpy's rows."""
    import dataclasses

    import numpy as np

    from sensor.enrich.routing import _BANNER_PREFIXES, _HTTP_PREFIXES, _POST

    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    dec = decode(batch_of(FRAMES))
    rng = np.random.default_rng(16)
    prefixes = np.concatenate((_HTTP_PREFIXES, _BANNER_PREFIXES, [_POST, 0x16030100, 0x16030302, 0x1603030B]))
    n, picked = 3000, 0
    for _ in range(10):
        first4 = rng.choice(prefixes, n).astype(np.uint64)
        first4 = np.where(rng.random(n) < 0.3, first4 ^ rng.integers(0, 1 << 24, n).astype(np.uint64), first4)
        first4 = np.where(rng.random(n) < 0.2, rng.integers(0, 1 << 32, n).astype(np.uint64), first4)
        head = (first4 << np.uint64(32)) | rng.integers(0, 1 << 32, n).astype(np.uint64)
        head = np.where(rng.random(n) < 0.2, head & np.uint64(0xFFFFFFFF00FFFFFF) | np.uint64(0x010000),
                        head)   # a ClientHello's handshake type
        drawn = dataclasses.replace(
            dec, network=np.ones(n, np.uint8), error=np.zeros(n, np.uint8), fragment=np.zeros(n, bool),
            proto=rng.choice(np.array([6, 6, 6, 17, 1], np.uint8), n), payload_len=rng.integers(0, 9, n),
            head=head, sport=rng.choice(np.array([53, 1900, 69, 5000, 80]), n),
            dport=rng.choice(np.array([53, 1900, 69, 3702, 443]), n))
        monkeypatch.setattr(compiled, "route", True)
        got = route(drawn, drawn.is_ip)
        monkeypatch.setattr(compiled, "route", False)
        want = route(drawn, drawn.is_ip)
        assert got == want
        picked += len(want.named) + len(want.banners) + len(want.posts)
    assert picked > 2_000


def test_the_compiled_router_refuses_columns_of_other_lengths_or_unaligned():
    """Every column is read by row up to is_ip's length: a shorter one, or one whose int64s are not aligned, is
    refused, not read past its end."""
    import numpy as np

    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    n = 64
    ports = bytes(65536)
    prefixes = np.array([0x47455420], np.int64)
    good = [np.ones(n, np.uint8), np.full(n, 17, np.uint8), np.full(n, 20, np.int64), np.zeros(n, np.uint64),
            np.full(n, 53, np.int64), np.full(n, 5000, np.int64)]
    assert compiled.extension.route(*good, ports, prefixes, prefixes, 0)[0] == list(range(n))
    for k in range(1, 6):
        short = [c[:n - 1] if j == k else c for j, c in enumerate(good)]
        with pytest.raises(ValueError, match="route: columns"):
            compiled.extension.route(*short, ports, prefixes, prefixes, 0)
    for k in range(2, 6):
        shifted = [memoryview(bytearray(1) + c.tobytes())[1:] if j == k else c for j, c in enumerate(good)]
        with pytest.raises(ValueError, match="route: columns"):
            compiled.extension.route(*shifted, ports, prefixes, prefixes, 0)
    with pytest.raises(ValueError, match="route: columns"):
        compiled.extension.route(*good, ports, prefixes.tobytes()[:7], prefixes, 0)
