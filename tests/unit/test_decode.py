"""sensor/decode.py: every link type, tag stack, network and transport header by exact value, each length check
at and one byte short of its bound, through both the compiled decode and its numpy reference (fixture `impl`)."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import numpy as np
import pytest

import sensor.decode as d
from packets import ethernet, icmp_echo, ipv4, ipv6, mac, sll, sll2, tcp, udp
from sensor import compiled
from sensor.decode import (
    ERR_BAD_IP,
    ERR_BAD_TCP,
    ERR_LINKTYPE,
    ERR_TOO_DEEP,
    ERR_TRUNCATED,
    NET_ARP,
    NET_IPV4,
    NET_IPV6,
    NET_OTHER,
    WINDOW,
    decode,
    payload,
)

from .builders import batch_of, decoded_fields

DST, SRC = mac("00:11:32:00:00:02"), mac("44:19:b6:00:00:07")
SRC_INT = int.from_bytes(SRC, "big")
A4, B4 = "10.20.0.7", "203.0.113.80"
A6, B6 = "fd00:20::7", "2001:db8::50"
DATA = bytes(range(1, 41))   # 40 bytes of payload, no zero among them


def ip16(text: str) -> list[int]:
    a = ipaddress.ip_address(text)
    return list((b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed)


def udp4(payload: bytes = DATA, src=A4, dst=B4, sport=50000, dport=554) -> bytes:
    return ipv4(src, dst, 17, udp(src, dst, sport, dport, payload))


def tcp4(flags="PA", payload: bytes = DATA, sport=50000, dport=443) -> bytes:
    return ipv4(A4, B4, 6, tcp(A4, B4, sport, dport, 1, 1, flags, payload))


def udp6(payload: bytes = DATA) -> bytes:
    return ipv6(A6, B6, 17, udp(A6, B6, 50000, 554, payload))


def eth(l3: bytes, ethertype=0x0800, vlans=()) -> bytes:
    return ethernet(DST, SRC, ethertype, l3, vlans)


def one(frame: bytes, linktype: int = 1, caplen: int | None = None, wirelen: int | None = None):
    return decode(batch_of([frame], linktype=linktype, caplen=None if caplen is None else [caplen],
                           wirelen=None if wirelen is None else [wirelen]))


def row(dec, i: int = 0) -> dict:
    return {f.name: np.asarray(getattr(dec, f.name))[i].tolist() for f in dataclasses.fields(dec) if f.name != "batch"}


def assert_udp4(dec, i=0, vlan=0, mac_=SRC_INT, payload_off=None):
    r = row(dec, i)
    assert (r["network"], r["error"], r["vlan"], r["src_mac"]) == (NET_IPV4, 0, vlan, mac_)
    assert (r["src"], r["dst"], r["proto"], r["sport"], r["dport"]) == (ip16(A4), ip16(B4), 17, 50000, 554)
    assert (r["payload_len"], r["fragment"], r["tcp_flags"]) == (len(DATA), False, 0)
    assert r["head"] == int.from_bytes(DATA[:8], "big")
    if payload_off is not None:
        assert r["payload_off"] - int(dec.batch.offsets[i]) == payload_off
    assert payload(dec, i) == DATA


# ---- the decoded arrays ---------------------------------------------------------------------------------------------
DTYPES = {"network": np.uint8, "error": np.uint8, "vlan": np.uint16, "src_mac": np.int64, "src": np.uint8,
          "dst": np.uint8, "proto": np.uint8, "sport": np.int64, "dport": np.int64, "tcp_flags": np.uint8,
          "payload_off": np.int64, "payload_len": np.int64, "fragment": np.bool_, "head": np.uint64}


def test_every_column_has_its_documented_type_and_shape(impl):
    frames = [eth(tcp4()), eth(udp6()), eth(b"\0" * 28, 0x0806), b"", eth(udp4(), vlans=((0x8100, 5),))]
    dec = decode(batch_of(frames))
    assert {f.name for f in dataclasses.fields(dec)} - {"batch"} == set(DTYPES)
    for name, dtype in DTYPES.items():
        col = getattr(dec, name)
        assert col.dtype == dtype, name
        assert col.shape == ((5, 16) if name in ("src", "dst") else (5,)), name


def test_an_empty_batch(impl):
    dec = decode(batch_of([]))
    assert all(len(getattr(dec, name)) == 0 for name in DTYPES)
    assert dec.src.shape == (0, 16)


def test_a_batch_of_empty_frames_only(impl):
    dec = decode(batch_of([b"", b""]))
    assert dec.error.tolist() == [ERR_TRUNCATED] * 2 and dec.head.tolist() == [0, 0]
    assert dec.network.tolist() == [NET_OTHER] * 2


def test_decode_numpy_directly_on_empty_data():
    dec = d.decode_numpy(batch_of([b"", b""]))
    assert dec.error.tolist() == [ERR_TRUNCATED] * 2 and dec.head.tolist() == [0, 0]


def test_decode_uses_the_compiled_helper_only_while_its_switch_is_on(monkeypatch):
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    calls = []
    real = d.decode_numpy
    monkeypatch.setattr(d, "decode_numpy", lambda b: calls.append(b) or real(b))
    batch = batch_of([eth(udp4())])
    monkeypatch.setattr(compiled, "decode", True)
    assert_udp4(decode(batch))
    assert calls == []
    empty = batch_of([])
    decode(empty)
    assert calls == [empty]               # nothing to hand over: the reference answers
    monkeypatch.setattr(compiled, "decode", False)
    assert_udp4(decode(batch))
    assert calls == [empty, batch]


def test_batch_arrays_of_other_integer_widths(impl):
    frames = [eth(udp4()), eth(tcp4()), sll(udp4(), 0x0800, SRC)]
    b = batch_of(frames, linktype=[1, 1, 113])
    odd = dataclasses.replace(b, offsets=b.offsets.astype(np.int32), caplen=b.caplen.astype(np.int32),
                              linktype=b.linktype.astype(np.int64))
    got, want = decode(odd), d.decode_numpy(b)
    for name in DTYPES:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert_udp4(got, 0)
    assert_udp4(got, 2)


# ---- link layers ----------------------------------------------------------------------------------------------------
def test_ethernet(impl):
    assert_udp4(one(eth(udp4())), payload_off=14 + 20 + 8)


def test_linux_cooked_v1_with_and_without_a_mac(impl):
    assert_udp4(one(sll(udp4(), 0x0800, SRC), linktype=113), payload_off=16 + 28)
    no_mac = struct.pack("!HHH", 0, 772, 0) + bytes(8) + struct.pack("!H", 0x0800) + udp4()
    assert_udp4(one(no_mac, linktype=113), mac_=0)
    odd_len = struct.pack("!HHH", 0, 1, 0x0106) + SRC + b"\0\0" + struct.pack("!H", 0x0800) + udp4()
    assert_udp4(one(odd_len, linktype=113), mac_=0)


def test_linux_cooked_v2_with_and_without_a_mac(impl):
    assert_udp4(one(sll2(udp4(), 0x0800, SRC), linktype=276), payload_off=20 + 28)
    no_mac = struct.pack("!HHIHBB", 0x0800, 0, 2, 772, 0, 0) + bytes(8) + udp4()
    assert_udp4(one(no_mac, linktype=276), mac_=0)


@pytest.mark.parametrize("linktype", [101, 12, 14, 228, 229])
def test_raw_ip(impl, linktype):
    assert_udp4(one(udp4(), linktype=linktype), mac_=0, payload_off=28)
    dec = one(udp6(), linktype=linktype)
    assert (dec.network[0], dec.error[0], dec.sport[0], dec.dport[0]) == (NET_IPV6, 0, 50000, 554)
    dec = one(b"\x50" + udp4()[1:], linktype=linktype)   # neither version 4 nor 6
    assert (dec.network[0], dec.error[0]) == (NET_OTHER, 0)


@pytest.mark.parametrize("linktype, family, network", [
    (0, b"\x02\0\0\0", NET_IPV4), (0, b"\0\0\0\x02", NET_IPV4),       # AF_INET in either host order
    (0, b"\x18\0\0\0", NET_IPV6), (0, b"\0\0\0\x1e", NET_IPV6), (0, b"\x0a\0\0\0", NET_IPV6),
    (0, b"\x1c\0\0\0", NET_IPV6),
    (108, b"\0\0\0\x02", NET_IPV4), (108, b"\x02\0\0\0", NET_IPV4), (108, b"\0\0\0\x18", NET_IPV6),
    (0, b"\x07\0\0\0", NET_OTHER), (108, b"\0\0\0\0", NET_OTHER),
    # neither byte order of one family: NULL (host order) takes first | last byte, LOOP (network order) the last
    (0, b"\x18\0\0\x02", NET_OTHER), (0, b"\x02\0\0\x18", NET_OTHER), (108, b"\x02\0\0\x18", NET_IPV6),
    (108, b"\x18\0\0\x02", NET_IPV4)])
def test_bsd_loopback_families(impl, linktype, family, network):
    l3 = udp6() if network == NET_IPV6 else udp4()
    dec = one(family + l3, linktype=linktype)
    assert (dec.network[0], dec.error[0], dec.src_mac[0]) == (network, 0, 0)
    if network == NET_IPV4:
        assert_udp4(dec, mac_=0, payload_off=4 + 28)
    elif network == NET_IPV6:
        assert (dec.sport[0], dec.dport[0], dec.payload_off[0]) == (50000, 554, 4 + 48)


def test_an_unknown_link_type_is_an_error_not_a_guess(impl):
    dec = one(eth(udp4()), linktype=147)
    assert (dec.network[0], dec.error[0], dec.src_mac[0], dec.sport[0]) == (NET_OTHER, ERR_LINKTYPE, 0, 0)


def test_link_types_mixed_in_one_batch(impl):
    """pcapng interfaces of several link types: each row decoded by its own, none by another's."""
    # an Ethernet source MAC ending in 06 and a destination with 00 06 at bytes 4-5: the SLL and SLL2 MAC tests
    # must not read these rows
    eth_src, eth_dst = mac("44:19:b6:00:00:06"), mac("00:11:32:00:00:06")
    frames = [ethernet(eth_dst, eth_src, 0x0800, udp4()), sll(udp4(), 0x0800, SRC), sll2(udp4(), 0x0800, SRC),
              udp4(), b"\x02\0\0\0" + udp4(), eth(udp4()), b"\0\0\0\x02" + udp4()]
    dec = decode(batch_of(frames, linktype=[1, 113, 276, 101, 0, 147, 108]))
    assert dec.error.tolist() == [0, 0, 0, 0, 0, ERR_LINKTYPE, 0]
    assert dec.network.tolist() == [NET_IPV4] * 5 + [NET_OTHER, NET_IPV4]
    assert dec.src_mac.tolist() == [int.from_bytes(eth_src, "big"), SRC_INT, SRC_INT, 0, 0, 0, 0]
    assert dec.sport.tolist() == [50000] * 5 + [0, 50000]
    assert (dec.payload_off - dec.batch.offsets).tolist() == [42, 44, 48, 28, 32, 0, 32]


@pytest.mark.parametrize("linktype, header", [(1, 14), (113, 16), (276, 20)])
def test_a_link_header_alone_decodes_and_one_byte_less_is_truncated(impl, linktype, header):
    frame = {1: eth(b"", 0x88CC), 113: sll(b"", 0x88CC, SRC), 276: sll2(b"", 0x88CC, SRC)}[linktype][:header]
    dec = decode(batch_of([frame, frame], linktype=linktype, caplen=[header, header - 1]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED]
    assert dec.network.tolist() == [NET_OTHER, NET_OTHER]


# ---- VLAN tags ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tpid", [0x8100, 0x88A8, 0x9100])
def test_one_tag_of_each_kind_with_priority_bits(impl, tpid):
    assert_udp4(one(eth(udp4(), vlans=((tpid, 0xE000 | 100),))), vlan=100, payload_off=18 + 28)


def test_the_innermost_of_eight_tags_is_the_vlan(impl):
    tags = tuple((0x88A8 if i == 0 else 0x8100, 10 + i) for i in range(8))
    assert_udp4(one(eth(udp4(), vlans=tags)), vlan=17, payload_off=14 + 32 + 28)


def test_nine_tags_are_too_deep(impl):
    tags = tuple((0x8100, 10 + i) for i in range(9))
    dec = one(eth(udp4(), vlans=tags))
    assert (dec.error[0], dec.sport[0]) == (ERR_TOO_DEEP, 0)
    assert not dec.is_ip[0]


def test_a_tag_cut_short_is_truncated(impl):
    frame = eth(b"", 0x88CC, vlans=((0x8100, 7), (0x8100, 8)))
    dec = decode(batch_of([frame, frame], caplen=[22, 21]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED] and dec.vlan.tolist()[0] == 8


def test_tagged_arp_and_other_ethertypes(impl):
    dec = decode(batch_of([eth(b"\0" * 28, 0x0806, vlans=((0x8100, 3),)), eth(b"\0" * 28, 0x88CC)]))
    assert dec.network.tolist() == [NET_ARP, NET_OTHER] and dec.error.tolist() == [0, 0]
    assert dec.vlan.tolist() == [3, 0] and dec.src_mac.tolist() == [SRC_INT, SRC_INT]
    assert not dec.is_ip.any()


# ---- IPv4 -----------------------------------------------------------------------------------------------------------
def test_ipv4_header_alone_decodes_and_one_byte_less_is_truncated(impl):
    hdr = ipv4(A4, B4, 253, b"")
    dec = decode(batch_of([hdr, hdr], linktype=101, caplen=[20, 19]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED]
    assert (dec.proto[0], dec.payload_len[0], dec.payload_off[0]) == (253, 0, 20)


def test_ipv4_options_move_the_transport_header(impl):
    l4 = udp(A4, B4, 50000, 554, DATA)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x46, 0, 24 + len(l4), 0, 0, 64, 17, 0, ipaddress.IPv4Address(A4).packed,
                      ipaddress.IPv4Address(B4).packed) + b"\x01\x01\x01\x00"
    assert_udp4(one(eth(hdr + l4)), payload_off=14 + 24 + 8)


@pytest.mark.parametrize("first_byte, total, error", [
    (0x45, None, 0), (0x55, None, ERR_BAD_IP), (0x44, None, ERR_BAD_IP), (0x46, 22, ERR_BAD_IP),
    (0x45, 19, ERR_BAD_IP), (0x45, 20, 0), (0x35, 19, ERR_BAD_IP)])
def test_ipv4_version_header_length_and_total_length(impl, first_byte, total, error):
    pkt = bytearray(udp4() + bytes(8))
    pkt[0] = first_byte
    if total is not None:
        pkt[2:4] = total.to_bytes(2, "big")
    dec = one(eth(bytes(pkt)))
    assert (dec.network[0], dec.error[0]) == (NET_IPV4, error)
    assert dec.is_ip[0] == (error == 0)
    assert dec.src[0].tolist() == ip16(A4) and dec.dst[0].tolist() == ip16(B4)


def test_ipv4_total_length_bounds_the_payload(impl):
    dec = one(eth(ipv4(A4, B4, 17, udp(A4, B4, 1, 2, DATA), total_length=20 + 8 + 5)))
    assert (dec.payload_len[0], dec.error[0]) == (5, 0)
    dec = one(eth(ipv4(A4, B4, 17, udp(A4, B4, 1, 2, DATA), total_length=20 + 4)))
    assert (dec.payload_len[0], dec.error[0], dec.sport[0]) == (0, 0, 1)


@pytest.mark.parametrize("offset, more, fragment", [(0, False, False), (0, True, False), (8, False, True),
                                                    (8, True, True), (1480, False, True)])
def test_ipv4_fragments_after_the_first_have_no_transport_header(impl, offset, more, fragment):
    l4 = udp(A4, B4, 50000, 554, DATA)
    dec = one(eth(ipv4(A4, B4, 17, l4, frag_offset=offset, more_fragments=more)))
    assert (bool(dec.fragment[0]), dec.error[0], bool(dec.is_ip[0])) == (fragment, 0, True)
    assert (dec.sport[0], dec.dport[0]) == ((0, 0) if fragment else (50000, 554))
    assert dec.payload_len[0] == (len(l4) if fragment else len(DATA))


# ---- IPv6 -----------------------------------------------------------------------------------------------------------
def test_ipv6(impl):
    dec = one(eth(udp6(), 0x86DD))
    r = row(dec)
    assert (r["network"], r["error"], r["src"], r["dst"], r["proto"]) == (NET_IPV6, 0, ip16(A6), ip16(B6), 17)
    assert (r["sport"], r["dport"], r["payload_len"], r["payload_off"]) == (50000, 554, len(DATA), 14 + 48)


def test_ipv6_header_alone_decodes_and_one_byte_less_is_truncated(impl):
    hdr = ipv6(A6, B6, 59, b"")   # no next header
    dec = decode(batch_of([hdr, hdr], linktype=101, caplen=[40, 39]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED] and dec.proto.tolist()[0] == 59
    assert (dec.payload_off[0], dec.payload_len[0]) == (40, 0)


def test_ipv6_of_the_wrong_version_is_a_bad_header(impl):
    pkt = bytearray(udp6())
    pkt[0] = 0x40
    dec = one(eth(bytes(pkt), 0x86DD))
    assert (dec.network[0], dec.error[0], bool(dec.is_ip[0])) == (NET_IPV6, ERR_BAD_IP, False)


def ext(nh: int, kind: int = 60, size: int = 8) -> bytes:
    return bytes([nh, size // 8 - 1]) + b"\x01" + bytes([size - 4]) + bytes(size - 4) if kind != 44 else \
        struct.pack("!BBHI", nh, 0, 0, 1)


def chain6(n: int, proto: int = 17, l4: bytes | None = None) -> bytes:
    l4 = udp(A6, B6, 50000, 554, DATA) if l4 is None else l4
    body = l4
    for i in range(n):
        body = ext(proto if i == 0 else 60) + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 60 if n else proto, 64, ipaddress.IPv6Address(A6).packed,
                       ipaddress.IPv6Address(B6).packed) + body


def test_a_chain_too_long_and_a_chain_cut_short_in_one_batch_are_both_too_deep(impl):
    """One row walks all 16 headers and still finds another, the other's chain runs past its capture a few bytes
    into a header: each is header_too_deep, whatever the other row does."""
    long = eth(chain6(17), 0x86DD)
    cut = eth(chain6(2), 0x86DD)
    ok = eth(chain6(16), 0x86DD)
    dec = decode(batch_of([long, cut, ok], caplen=[len(long), 14 + 40 + 8 + 1, len(ok)]))
    assert dec.error.tolist() == [ERR_TOO_DEEP, ERR_TOO_DEEP, 0]
    assert dec.fragment.tolist() == [True, True, False]
    assert dec.is_ip.tolist() == [True, True, True]
    assert dec.sport.tolist() == [0, 0, 50000]


def test_a_non_first_fragment_stays_one_while_other_rows_walk_on(impl):
    later = struct.pack("!BBHI", 17, 0, (1 << 3), 7) + bytes(16)
    frames = [eth(ipv6(A6, B6, 44, later), 0x86DD), eth(chain6(2), 0x86DD)]
    dec = decode(batch_of(frames))
    assert dec.fragment.tolist() == [True, False] and dec.error.tolist() == [0, 0]
    assert dec.sport.tolist() == [0, 50000] and dec.proto.tolist() == [17, 17]


def test_a_chain_cut_short_stays_too_deep_beside_one_past_the_bound(impl):
    """Both rows reach past the window: the one cut inside its 12th header keeps header_too_deep when the other
    runs into the bound of 16 in the same walk."""
    long, cut = eth(chain6(17), 0x86DD), eth(chain6(12), 0x86DD)
    dec = decode(batch_of([long, cut], caplen=[len(long), 14 + 40 + 11 * 8 + 1]))
    assert dec.error.tolist() == [ERR_TOO_DEEP, ERR_TOO_DEEP] and dec.fragment.tolist() == [True, True]
    assert dec.proto.tolist() == [60, 60]


@pytest.mark.parametrize("kind, captured, proto", [
    (44, 3, 44), (44, 4, 17),     # a fragment header is read once its offset field (4 bytes) is captured
    (60, 1, 60), (60, 2, 17)])    # an options header once its next-header and length bytes are
def test_an_extension_header_cut_short(impl, kind, captured, proto):
    """The walk stops at the first header it cannot read: header_too_deep, and proto names that header; once a
    header is readable, its own next header is the protocol, still too deep as the chain ends past the capture."""
    hdr = struct.pack("!BBHI", 17, 0, 1, 7) if kind == 44 else bytes([17, 0, 1, 4, 0, 0, 0, 0])
    frame = eth(ipv6(A6, B6, kind, hdr + udp(A6, B6, 50000, 554, DATA)), 0x86DD)
    dec = one(frame, caplen=14 + 40 + captured)
    assert (dec.error[0], dec.proto[0], bool(dec.fragment[0]), dec.sport[0]) == (ERR_TOO_DEEP, proto, True, 0)


def test_a_fragment_header_is_eight_bytes_whatever_its_reserved_byte(impl):
    first = struct.pack("!BBHI", 17, 0x5A, 1, 7) + udp(A6, B6, 50000, 554, DATA)
    dec = one(eth(ipv6(A6, B6, 44, first), 0x86DD))
    assert (dec.error[0], dec.fragment[0], dec.sport[0], dec.payload_len[0]) == (0, False, 50000, len(DATA))


def test_an_ipv6_fragment_header(impl):
    first = struct.pack("!BBHI", 17, 0, 1, 7) + udp(A6, B6, 50000, 554, DATA)             # offset 0, more
    later = struct.pack("!BBHI", 17, 0, (1 << 3), 7) + bytes(16)                           # offset 8 bytes
    dec = decode(batch_of([eth(ipv6(A6, B6, 44, first), 0x86DD), eth(ipv6(A6, B6, 44, later), 0x86DD)]))
    assert dec.fragment.tolist() == [False, True] and dec.error.tolist() == [0, 0]
    assert dec.sport.tolist() == [50000, 0] and dec.proto.tolist() == [17, 17]
    assert dec.payload_len.tolist() == [len(DATA), 16]


# ---- transport ------------------------------------------------------------------------------------------------------
def test_tcp_ports_flags_and_payload(impl):
    dec = one(eth(tcp4("FPA", DATA, 50000, 443)))
    r = row(dec)
    assert (r["proto"], r["sport"], r["dport"], r["tcp_flags"], r["error"]) == (6, 50000, 443, 0x19, 0)
    assert (r["payload_off"], r["payload_len"]) == (14 + 20 + 20, len(DATA))
    assert payload(dec, 0) == DATA


def test_tcp_options_move_the_payload(impl):
    seg = bytearray(tcp(A4, B4, 50000, 443, 1, 1, "PA", bytes(12) + DATA))
    seg[12] = 8 << 4                                             # data offset 32: 12 bytes of options
    dec = one(eth(ipv4(A4, B4, 6, bytes(seg))))
    assert (dec.error[0], dec.payload_off[0], dec.payload_len[0]) == (0, 14 + 20 + 32, len(DATA))
    assert payload(dec, 0) == DATA


@pytest.mark.parametrize("doff, error", [(4, ERR_BAD_TCP), (5, 0), (6, ERR_BAD_TCP)])
def test_tcp_data_offset_out_of_bounds_is_a_bad_header(impl, doff, error):
    seg = bytearray(tcp(A4, B4, 50000, 443, 1, 1, "S"))       # 20 bytes, nothing after
    seg[12] = doff << 4
    dec = one(eth(ipv4(A4, B4, 6, bytes(seg))))
    assert dec.error[0] == error
    assert (dec.sport[0], dec.dport[0], dec.tcp_flags[0]) == (50000, 443, 0x02)


def test_a_tcp_header_cut_short_is_truncated(impl):
    frame = ipv4(A4, B4, 6, tcp(A4, B4, 50000, 443, 1, 1, "S"))
    dec = decode(batch_of([frame, frame], linktype=101, caplen=[40, 39]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED]


@pytest.mark.parametrize("proto, header", [(17, 8), (132, 12)])
def test_udp_and_sctp_ports_and_payload(impl, proto, header):
    l4 = struct.pack("!HH", 5060, 2905) + bytes(header - 4) + DATA
    dec = one(eth(ipv4(A4, B4, proto, l4)))
    assert (dec.proto[0], dec.sport[0], dec.dport[0], dec.error[0]) == (proto, 5060, 2905, 0)
    assert (dec.payload_off[0], dec.payload_len[0]) == (14 + 20 + header, len(DATA))
    assert payload(dec, 0) == DATA


def test_a_udp_header_cut_short_is_truncated_and_one_too_short_for_its_length_has_no_payload(impl):
    frame = udp4()
    dec = decode(batch_of([frame, frame], linktype=101, caplen=[28, 27]))
    assert dec.error.tolist() == [0, ERR_TRUNCATED]
    assert (dec.sport[0], dec.payload_len[0], payload(dec, 0)) == (50000, len(DATA), b"")


@pytest.mark.parametrize("proto, make", [(1, lambda: icmp_echo(7, 1, True, DATA)),
                                         (58, lambda: bytes([129, 0, 0, 0, 0, 7, 0, 1]) + DATA)])
def test_icmp_type_and_code_stand_in_for_ports(impl, proto, make):
    l3 = ipv4(A4, B4, 1, make()) if proto == 1 else ipv6(A6, B6, 58, make())
    dec = one(eth(l3, 0x0800 if proto == 1 else 0x86DD))
    want_type = 0 if proto == 1 else 129
    assert (dec.proto[0], dec.sport[0], dec.dport[0], dec.error[0]) == (proto, want_type, 0, 0)
    assert (dec.payload_off[0] - (14 + (20 if proto == 1 else 40)), dec.payload_len[0]) == (8, len(DATA))
    dec = one(eth(ipv4(A4, B4, 1, bytes([3, 13, 0, 0, 0, 0, 0, 0]))))
    assert (dec.sport[0], dec.dport[0]) == (3, 13)


def test_an_icmp_header_past_the_capture_reads_as_zero_not_the_next_frame(impl):
    """Captured up to the end of a 60-byte IPv4 header behind four tags (90 bytes): the next frame's bytes, right
    after it in the batch, must not be taken for the ICMP type and code."""
    opts = bytes([1] * 40)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x4F, 0, 60 + 8, 0, 0, 64, 1, 0, ipaddress.IPv4Address(A4).packed,
                      ipaddress.IPv4Address(B4).packed) + opts
    frame = eth(hdr + bytes([8, 0, 0, 0, 0, 0, 0, 0]), vlans=tuple((0x8100, i) for i in range(4)))
    nxt = b"\xff" * 60
    dec = decode(batch_of([frame, nxt], caplen=[90, 60]))
    assert (dec.error[0], dec.proto[0], dec.sport[0], dec.dport[0], dec.head[0]) == (0, 1, 0, 0, 0)


def test_an_icmp_header_longer_than_the_ip_payload_leaves_no_payload(impl):
    dec = one(eth(ipv4(A4, B4, 1, icmp_echo(7, 1), total_length=20 + 4)))
    assert (dec.error[0], dec.sport[0], dec.payload_len[0]) == (0, 8, 0)


def test_other_ip_protocols_keep_their_payload_length(impl):
    dec = one(eth(ipv4(A4, B4, 47, b"\x00\x00\x08\x00" + DATA)))
    assert (dec.proto[0], dec.sport[0], dec.payload_off[0], dec.payload_len[0]) == (47, 0, 34, 4 + len(DATA))


# ---- payload head and payload() --------------------------------------------------------------------------------------
def test_head_is_the_first_eight_payload_bytes_and_zero_past_the_capture(impl):
    frames = [eth(udp4(DATA)), udp4(b"\xab\xcd\xef"), udp4(DATA), tcp4("S", b"")]
    dec = decode(batch_of(frames, linktype=[1, 101, 101, 101], caplen=[len(frames[0]), 31, 31, 40]))
    assert dec.head.tolist() == [0x0102030405060708, 0xABCDEF << 40, 0x010203 << 40, 0]
    dec = decode(batch_of([udp4(DATA), udp4(b"\xab\xcd\xef")], linktype=101))   # the batch's last bytes
    assert dec.head.tolist() == [0x0102030405060708, 0xABCDEF << 40]


def test_payload_is_cut_at_the_capture_and_at_the_limit(impl):
    frames = [udp4(DATA), udp4(b"Z" * 40)]
    dec = decode(batch_of(frames, linktype=101, caplen=[28 + 10, 68]))
    assert payload(dec, 0) == DATA[:10]             # not the next frame's bytes
    assert payload(dec, 1) == b"Z" * 40
    assert payload(dec, 1, limit=5) == b"ZZZZZ"
    assert payload(dec, 1, 65535) == b"Z" * 40


def test_payload_stops_at_the_ip_length_not_at_the_ethernet_padding(impl):
    dec = one(eth(udp4(b"abc")))
    assert len(dec.batch.data) == 60 and payload(dec, 0) == b"abc" and dec.payload_len[0] == 3


def test_payload_of_a_packet_without_one_is_empty(impl):
    dec = decode(batch_of([tcp4("S", b""), udp4(b"")], linktype=101))
    assert payload(dec, 0) == b"" and payload(dec, 1) == b""


# ---- rows whose headers reach past the window -----------------------------------------------------------------------
def test_headers_past_the_window_are_decoded_from_the_capture(impl):
    tags = tuple((0x8100, 100 + i) for i in range(8))
    seg = bytearray(tcp(A4, B4, 50000, 443, 1, 1, "PA", bytes(40) + DATA))
    seg[12] = 15 << 4                                            # 60-byte TCP header
    opts = bytes([1] * 40)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x4F, 0, 60 + len(seg), 0, 0, 64, 6, 0, ipaddress.IPv4Address(A4).packed,
                      ipaddress.IPv4Address(B4).packed) + opts
    frame = eth(hdr + bytes(seg), vlans=tags)
    short = eth(udp4())
    dec = decode(batch_of([short, frame, short]))
    assert 14 + 32 + 60 + 20 > WINDOW
    assert dec.error.tolist() == [0, 0, 0] and dec.vlan.tolist() == [0, 107, 0]
    assert dec.sport.tolist() == [50000] * 3 and dec.dport.tolist() == [554, 443, 554]
    assert (dec.payload_off[1] - dec.batch.offsets[1], dec.payload_len[1]) == (14 + 32 + 60 + 60, len(DATA))
    assert payload(dec, 1) == DATA and dec.head[1] == int.from_bytes(DATA[:8], "big")


def test_capture_view_reads_zero_past_each_capture():
    data = np.frombuffer(b"abcdefXYZ", dtype=np.uint8)
    view = d._CaptureView(data, np.array([0, 6]), np.array([6, 3]))
    assert len(view) == 2
    assert view[np.array([0, 1]), np.array([0, 2])].tolist() == [ord("a"), ord("Z")]
    assert view[np.array([1]), np.array([3])].tolist() == [0]
    assert view[:, slice(4, 8)].tolist() == [list(b"ef") + [0, 0], [0, 0, 0, 0]]
    assert view[np.array([True, False]), slice(0, 2)].tolist() == [list(b"ab")]


def test_gather_pads_each_row_with_zeros():
    data = np.frombuffer(b"abcdefXYZ", dtype=np.uint8)
    h = d._gather(data, np.array([0, 6]), np.array([6, 3]), 4)
    assert h.shape == (2, 4 + d.SLACK)
    assert h[0].tolist() == list(b"abcd") + [0] * d.SLACK
    assert h[1].tolist() == list(b"XYZ") + [0] * (1 + d.SLACK)


# ---- the compiled decode's columns: pooled memory, never cleared ----------------------------------------------------
def _busy(n: int) -> list[bytes]:
    """Frames that set every decoded field: tagged IPv6 TCP with ports, flags, a MAC and a payload."""
    return [eth(ipv6(A6, B6, 6, tcp(A6, B6, 40000 + i % 999, 443, 1, 1, "SPAF", DATA)), 0x86DD,
                vlans=((0x8100, 100 + i % 7),)) for i in range(n)]


def test_the_compiled_decode_writes_every_element_over_memory_a_batch_before_filled():
    """The compiled decode's columns come from a pool of blocks earlier columns held, and are not cleared: a batch
    whose packets set every field is decoded and dropped, then one of as many packets that leave fields at their
    defaults (IPv4's first ten address bytes, no transport, no link, cut short, a later fragment); its columns,
    written over the first batch's, are the numpy reference's. (Fails with an address, a port or a MAC left
    unwritten for any kind of packet.)"""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    n = 4096   # every column a size the pool takes: 4 KiB to 64 KiB
    kinds = [(eth(udp4()), 1), (eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), 0x0806), 1),
             (eth(udp4())[:20], 1), (eth(udp4()), 147), (udp4(), 101), (eth(udp6()), 1),
             (eth(ipv4(A4, B4, 17, udp(A4, B4, 1, 2, DATA), frag_offset=8)), 1), (eth(tcp4("S")), 1)]
    sparse = batch_of([kinds[i % len(kinds)][0] for i in range(n)], linktype=[kinds[i % len(kinds)][1]
                                                                              for i in range(n)])
    for _ in range(2):
        assert compiled.extension.pooled(True) == (0, 0)
        busy = d.decode(batch_of(_busy(n)))
        assert int(busy.sport[0]) == 40000 and busy.src_mac[0] == SRC_INT
        del busy
        assert compiled.extension.pooled()[0] == 14
        dec = d.decode(sparse)
        # its 14 columns are the blocks the busy batch gave back (the fragment column, copied to bools, went back)
        assert compiled.extension.pooled()[0] == 1
        assert decoded_fields(dec) == decoded_fields(d.decode_numpy(sparse))
        del dec


def test_the_columns_pool_keeps_at_most_64_blocks_of_at_most_72_kib():
    """Columns given back past the pool's count, or larger than it takes, are freed: six decodes of 60,000 packets
    (84 columns of 60 KB to 960 KB) alive at once, then dropped, leave the pool holding some within its bounds.
    (Fails with the size bound dropped: 16 of the 84 columns would fill its count with ~7.4 MB.)"""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    batch = batch_of([eth(udp4())] * 60_000)
    compiled.extension.pooled(True)
    alive = [d.decode(batch) for _ in range(6)]
    del alive
    blocks, held = compiled.extension.pooled()
    assert 0 < blocks <= 64 and 0 < held <= 64 * 72 << 10


@pytest.mark.parametrize("offsets, caplens, linktypes", [
    ([0], [83], [1]), ([1], [82], [1]), ([-1], [4], [1]), ([0], [-1], [1]), ([2**63 - 1], [0], [1]),
    ([0], [2**63 - 1], [1]), ([0, 0], [4], [1, 1]), ([0], [4], [1, 1]), ([0], [4, 4], [1])])
def test_the_compiled_decode_refuses_columns_that_disagree_or_a_frame_outside_the_buffer(offsets, caplens, linktypes):
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    frame = eth(udp4())
    assert len(frame) == 82
    ok = compiled.extension.decode(frame, np.array([0], np.int64), np.array([82], np.int64), np.array([1], np.int32))
    assert np.frombuffer(ok[0], np.uint8).tolist() == [NET_IPV4]
    with pytest.raises(ValueError, match="decode: "):
        compiled.extension.decode(frame, np.array(offsets, np.int64), np.array(caplens, np.int64),
                                  np.array(linktypes, np.int32))


def test_the_compiled_decode_refuses_unaligned_columns():
    """A memoryview sliced at an odd byte is a buffer of the right length whose int64s are not where C may read
    them (undefined behaviour; UBSan stops there): refused like columns that disagree."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    frame = eth(udp4())
    columns = [np.array([0], np.int64).tobytes(), np.array([82], np.int64).tobytes(), np.array([1], np.int32).tobytes()]
    for k in range(3):
        shifted = [memoryview(bytearray(1) + c)[1:] if j == k else c for j, c in enumerate(columns)]
        with pytest.raises(ValueError, match="decode: .*unaligned"):
            compiled.extension.decode(frame, *shifted)
    assert np.frombuffer(compiled.extension.decode(frame, *columns)[0], np.uint8).tolist() == [NET_IPV4]
    empty = memoryview(bytearray(1))[1:]   # an empty column is never read: wherever it starts, no rows
    assert [len(c) for c in compiled.extension.decode(frame, empty, empty, empty)] == [0] * 14


def test_the_compiled_decode_refuses_a_far_frame_it_was_asked_to_fetch_early():
    """Rows eight ahead are prefetched before their offsets are checked: an offset near 2**63 must be no more than
    a refused frame (the address it prefetches is made as an integer; as a pointer sum it overflowed, which UBSan
    stops at)."""
    if compiled.extension is None:
        pytest.skip("the C extension sensor._walk was not built on this machine")
    frame = eth(udp4())
    for far in (2**63 - 1, -2**63, 2**62):
        with pytest.raises(ValueError, match="decode: a frame outside the buffer"):
            compiled.extension.decode(frame, np.array([0] * 9 + [far], np.int64), np.array([82] * 10, np.int64),
                                      np.ones(10, np.int32))
