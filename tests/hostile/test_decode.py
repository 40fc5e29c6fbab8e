"""Issue "Evasion by header options": long IPv6 extension-header chains, IPv4 options behind deep VLAN stacks and
QinQ decode to their real ports, equal in the compiled and numpy decodes and to Wireshark; what cannot be decoded is
counted as header_too_deep and still accounted to its device, port-less."""

from __future__ import annotations

import ipaddress
import struct
import subprocess

import pytest
from conftest import alerts_of, camwatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from unit.builders import decoded_fields

import sensor.decode as d
from packets import PcapWriter, _checksum, ethernet, mac, tcp, udp
from sensor import compiled
from sensor.capture import CaptureReader
from sensor.decode import ERR_TOO_DEEP, MAX_EXT_HEADERS, MAX_VLAN_TAGS, NET_IPV4, NET_IPV6, NET_OTHER
from sensor.flows import ip_from16

CAMERA_MAC = mac("44:19:b6:00:00:07")   # a Hikvision OUI
# A second camera: with the first one's MAC, its IPv4 address would be the same box (docs/identity.md)
CAMERA4_MAC = mac("44:19:b6:00:00:08")
ROUTER_MAC = mac("00:1b:21:0a:0b:02")
CAM4, CLOUD4 = "10.20.0.7", "203.0.113.80"
CAM6, CLOUD6 = "fd00:20::7", "2001:db8:ffff::50"
PAYLOAD = bytes(range(256)) * 4 + b"\x17\x03\x03" + bytes(173)   # 1,200 bytes


# ---- frame builders -----------------------------------------------------------------------------------------
def _options(n: int) -> bytes:
    """n bytes of IPv6 TLV options: experimental type 0x1E (skip if unknown), Pad1 for a last odd byte."""
    out = b""
    while n:
        if n == 1:
            out, n = out + b"\0", 0
            continue
        k = min(n - 2, 255)
        if n - 2 - k == 1:   # would leave a single byte: take one less now, a Pad1 later
            k -= 1
        out, n = out + bytes([0x1E, k]) + bytes(k), n - 2 - k
    return out


def ext_header(kind: int, nh: int, size: int, frag_offset: int = 0) -> bytes:
    """One IPv6 extension header of `size` bytes (a multiple of 8; 8 for a fragment, a multiple of 4 for AH)."""
    if kind == 44:
        return struct.pack("!BBHI", nh, 0, (frag_offset << 3) | 1, 0x1234)
    if kind == 51:
        return (struct.pack("!BBHII", nh, size // 4 - 2, 0, 0x100, 1) + bytes(size))[:size]
    if kind == 43:   # routing type 253 (experimental), no segments left: the destination is the final one
        return bytes([nh, size // 8 - 1, 253, 0]) + bytes(size - 4)
    return bytes([nh, size // 8 - 1]) + _options(size - 2)


def ipv6_chain(src: str, dst: str, chain: list[tuple[int, int]], proto: int, l4: bytes,
               frag_offset: int = 0) -> bytes:
    """IPv6 with the extension headers (kind, size) in order, then l4 under protocol proto."""
    kinds = [k for k, _ in chain] + [proto]
    body = l4
    for i in range(len(chain) - 1, -1, -1):
        body = ext_header(chain[i][0], kinds[i + 1], chain[i][1], frag_offset) + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), kinds[0], 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + body


RECORD_ROUTE = bytes([7, 39, 4]) + bytes(36) + b"\0"   # 40 bytes of options: IHL 15


def ipv4_options(src: str, dst: str, proto: int, l4: bytes, options: bytes = RECORD_ROUTE) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | (5 + len(options) // 4), 0, 20 + len(options) + len(l4), 7, 0x4000,
                      64, proto, 0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + options
    return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + l4


def tags(n: int, outer: int = 0x8100) -> tuple[tuple[int, int], ...]:
    return tuple((outer if i == 0 else 0x8100, 100 + i) for i in range(n))


def v6_frame(chain, l4=None, proto=6, frag_offset=0, vlans=()) -> bytes:
    l4 = tcp(CAM6, CLOUD6, 50123, 443, 1000, 1, "PA", PAYLOAD) if l4 is None else l4
    return ethernet(ROUTER_MAC, CAMERA_MAC, 0x86DD, ipv6_chain(CAM6, CLOUD6, chain, proto, l4, frag_offset), vlans)


def v4_frame(vlans, options=RECORD_ROUTE, l4=None) -> bytes:
    l4 = tcp(CAM4, CLOUD4, 50124, 443, 1000, 1, "PA", PAYLOAD) if l4 is None else l4
    return ethernet(ROUTER_MAC, CAMERA_MAC, 0x0800, ipv4_options(CAM4, CLOUD4, 6, l4, options), vlans)


# ---- decoding both ways ---------------------------------------------------------------------------------------
def pcap_bytes(frames: list[bytes], caplens: list[int | None] | None = None) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    for i, f in enumerate(frames):
        cap = len(f) if caplens is None or caplens[i] is None else caplens[i]
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, cap, len(f)) + f[:cap]
    return out


def one_batch(frames, caplens=None):
    pieces = iter([pcap_bytes(frames, caplens), b""])
    batches = [b for b in CaptureReader(lambda: next(pieces, b""), "test") if len(b)]
    assert len(batches) == 1
    return batches[0]


def decode_both(frames, caplens=None):
    """The numpy reference decode, after checking the compiled one gives exactly the same."""
    batch = one_batch(frames, caplens)
    ref = d.decode_numpy(batch)
    if compiled.extension is not None:
        assert decoded_fields(d.decode(batch)) == decoded_fields(ref)
    return ref


def assert_tcp(dec, i, src, dst, sport, dport, payload=PAYLOAD, vlan=0):
    assert int(dec.error[i]) == 0 and not dec.fragment[i] and dec.is_ip[i]
    assert str(ip_from16(dec.src[i].tobytes())) == src and str(ip_from16(dec.dst[i].tobytes())) == dst
    assert (int(dec.proto[i]), int(dec.sport[i]), int(dec.dport[i])) == (6, sport, dport)
    assert int(dec.payload_len[i]) == len(payload)
    assert int(dec.head[i]) == int.from_bytes(payload[:8], "big")
    assert d.payload(dec, i) == payload
    assert int(dec.vlan[i]) == vlan


# ---- the classes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 256, 2048])
def test_ipv6_destination_options_of_any_size(size):
    dec = decode_both([v6_frame([(60, size)])])
    assert_tcp(dec, 0, CAM6, CLOUD6, 50123, 443)


CHAINS = {
    "rfc-order": [(0, 16), (60, 32), (43, 24), (44, 8), (51, 24)],
    "ah-before-fragment": [(0, 8), (43, 56), (51, 24), (44, 8), (60, 2048)],
    "dstopts-twice": [(0, 2048), (60, 8), (44, 8), (43, 16), (51, 1028), (60, 264)],
    "routing-first": [(43, 24), (60, 40), (51, 16), (44, 8)],
    "mobility-hip-shim6": [(0, 8), (135, 16), (139, 24), (140, 8), (60, 32)],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_extension_header_chains_in_any_order(name):
    dec = decode_both([v6_frame(CHAINS[name])])
    assert_tcp(dec, 0, CAM6, CLOUD6, 50123, 443)


@pytest.mark.parametrize("n_tags", [4, 8])
def test_ipv4_with_every_option_behind_a_deep_vlan_stack(n_tags):
    dec = decode_both([v4_frame(tags(n_tags))])
    assert_tcp(dec, 0, CAM4, CLOUD4, 50124, 443, vlan=100 + n_tags - 1)
    assert dec.network[0] == NET_IPV4


@pytest.mark.parametrize("outer", [0x88A8, 0x9100])
def test_qinq_outer_tag(outer):
    frames = [v4_frame(tags(2, outer)), v6_frame([(60, 32)], vlans=tags(2, outer)), v4_frame(tags(8, outer))]
    dec = decode_both(frames)
    assert_tcp(dec, 0, CAM4, CLOUD4, 50124, 443, vlan=101)
    assert_tcp(dec, 1, CAM6, CLOUD6, 50123, 443, vlan=101)
    assert_tcp(dec, 2, CAM4, CLOUD4, 50124, 443, vlan=107)


def test_udp_and_icmpv6_behind_long_chains():
    udp_frame = v6_frame([(0, 8), (60, 512)], udp(CAM6, CLOUD6, 5000, 53, PAYLOAD[:100]), proto=17)
    icmp = bytes([128, 0, 0, 0, 0, 1, 0, 1]) + PAYLOAD[:40]
    dec = decode_both([udp_frame, v6_frame([(60, 1024)], icmp, proto=58)])
    assert (int(dec.proto[0]), int(dec.sport[0]), int(dec.dport[0]), int(dec.payload_len[0])) == (17, 5000, 53, 100)
    assert (int(dec.proto[1]), int(dec.sport[1]), int(dec.dport[1]), int(dec.payload_len[1])) == (58, 128, 0, 40)
    assert int(dec.head[1]) == int.from_bytes(PAYLOAD[:8], "big") and not dec.error.any()


def test_deep_rows_mixed_with_ordinary_ones_keep_their_places():
    """The numpy decode reads only the deep rows again; their results go back to their own rows."""
    plain = ethernet(ROUTER_MAC, CAMERA_MAC, 0x0800,
                     ipv4_options(CAM4, "10.20.0.2", 17, udp(CAM4, "10.20.0.2", 40000, 554, b"\x80" * 50), b""))
    frames = [plain, v6_frame([(60, 2048)]), plain, v4_frame(tags(8)), v6_frame(CHAINS["dstopts-twice"]), plain]
    dec = decode_both(frames)
    for i in (0, 2, 5):
        assert (int(dec.sport[i]), int(dec.dport[i]), int(dec.payload_len[i])) == (40000, 554, 50)
    assert_tcp(dec, 1, CAM6, CLOUD6, 50123, 443)
    assert_tcp(dec, 3, CAM4, CLOUD4, 50124, 443, vlan=107)
    assert_tcp(dec, 4, CAM6, CLOUD6, 50123, 443)


# ---- where decoding stops -------------------------------------------------------------------------------------
def test_chain_bound_and_what_lies_beyond_it():
    at_bound = v6_frame([(60, 8)] * MAX_EXT_HEADERS)
    beyond = v6_frame([(60, 8)] * (MAX_EXT_HEADERS + 1))
    dec = decode_both([at_bound, beyond])
    assert_tcp(dec, 0, CAM6, CLOUD6, 50123, 443)
    assert int(dec.error[1]) == ERR_TOO_DEEP
    # still an IPv6 packet of this camera, for the flows: addresses, the header where the walk stopped, no ports
    assert dec.network[1] == NET_IPV6 and dec.is_ip[1] and dec.fragment[1]
    assert ip_from16(dec.src[1].tobytes()) == ipaddress.IPv6Address(CAM6)
    assert ip_from16(dec.dst[1].tobytes()) == ipaddress.IPv6Address(CLOUD6)
    assert (int(dec.proto[1]), int(dec.sport[1]), int(dec.dport[1])) == (60, 0, 0)


def test_chain_running_past_the_capture_is_too_deep_but_accounted():
    """A 96-byte snaplen cuts a 2 KiB destination-options header: the transport header was never captured."""
    frame = v6_frame([(60, 2048)])
    dec = decode_both([frame, frame, v6_frame([(0, 8)])], caplens=[96, 14 + 40 + 1, 14 + 40 + 8])
    assert dec.error.tolist() == [ERR_TOO_DEEP, ERR_TOO_DEEP, 1]   # the last: chain complete, TCP header cut
    assert dec.is_ip.tolist() == [True, True, False]
    assert int(dec.proto[0]) == 6 and int(dec.proto[1]) == 60   # the first header's next header was captured


def test_vlan_stack_beyond_the_bound_is_too_deep():
    dec = decode_both([v4_frame(tags(MAX_VLAN_TAGS)), v4_frame(tags(MAX_VLAN_TAGS + 1))])
    assert int(dec.error[0]) == 0
    assert int(dec.error[1]) == ERR_TOO_DEEP and dec.network[1] == NET_OTHER and not dec.is_ip[1]


def test_non_first_fragment_ends_the_chain():
    """What follows a non-first fragment's header is data, even when its next header names an extension."""
    data = bytes([60, 255]) + bytes(60)
    dec = decode_both([v6_frame([(0, 8), (44, 8)], data, proto=60, frag_offset=100)])
    assert int(dec.error[0]) == 0 and dec.fragment[0] and dec.is_ip[0]
    assert int(dec.proto[0]) == 60 and int(dec.payload_len[0]) == len(data)


# ---- property: random chains ----------------------------------------------------------------------------------
EXT_KINDS = [0, 43, 60, 44, 51, 135, 139, 140]


@st.composite
def chain_frames(draw):
    """(frame, caplen or None, expected (proto, sport, dport, payload_len) when it must decode cleanly, or None)."""
    vlans = tuple((draw(st.sampled_from([0x8100, 0x88A8, 0x9100])), draw(st.integers(0, 4095)))
                  for _ in range(draw(st.integers(0, MAX_VLAN_TAGS + 2))))
    proto = draw(st.sampled_from([6, 17, 58, 132, 59]))
    payload = draw(st.binary(max_size=40))
    if proto == 6:
        l4 = tcp("::1", "::2", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), 1, 1, "A", payload)
    elif proto in (17, 132):
        l4 = struct.pack("!HHHH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), 8 + len(payload),
                         0) + (b"\0" * 4 if proto == 132 else b"") + payload
    else:
        l4 = payload
    frag = 0
    if draw(st.booleans()):
        options = bytes(4 * draw(st.integers(0, 10)))
        ip = ipv4_options(CAM4, CLOUD4, proto, l4, options)
        etype, n_ext = 0x0800, 0
    else:
        chain = []
        for _ in range(draw(st.integers(0, MAX_EXT_HEADERS + 2))):
            kind = draw(st.sampled_from(EXT_KINDS))
            units = draw(st.one_of(st.integers(0, 6), st.just(255)))
            chain.append((kind, 8 if kind == 44 else (units + 2) * 4 if kind == 51 else (units + 1) * 8))
        frag = draw(st.sampled_from([0, 0, 0, 5]))
        ip = ipv6_chain(CAM6, CLOUD6, chain, proto, l4, frag)
        etype, n_ext = 0x86DD, len(chain)
    frame = ethernet(ROUTER_MAC, CAMERA_MAC, etype, ip, vlans)
    cut = draw(st.one_of(st.none(), st.integers(0, len(frame))))
    clean = cut is None and len(vlans) <= MAX_VLAN_TAGS and n_ext <= MAX_EXT_HEADERS and not (frag and n_ext)
    ports = struct.unpack("!HH", l4[:4]) if proto in (6, 17, 132) else (0, 0)
    header = {6: 20, 17: 8, 132: 12}.get(proto, 0)
    expected = (proto, *ports, len(l4) - header) if clean and proto != 58 else None
    return frame, cut, expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(chain_frames(), min_size=1, max_size=8))
def test_random_chains_decode_the_same_both_ways(cases):
    dec = decode_both([f for f, _, _ in cases], [c for _, c, _ in cases])
    for i, (_, _, expected) in enumerate(cases):
        if expected is not None:
            assert int(dec.error[i]) == 0 and dec.is_ip[i]
            assert (int(dec.proto[i]), int(dec.sport[i]), int(dec.dport[i]), int(dec.payload_len[i])) == expected


@st.composite
def garbage_chains(draw):
    """An IPv6 header naming an extension header, then random bytes: lengths and next headers are noise."""
    vlans = tuple((0x8100, 1) for _ in range(draw(st.integers(0, MAX_VLAN_TAGS + 1))))
    body = draw(st.binary(max_size=2600))
    ip = struct.pack("!IHBB32s", 6 << 28, draw(st.integers(0, 65535)), draw(st.sampled_from(EXT_KINDS)), 64,
                     bytes(32)) + body
    frame = ethernet(ROUTER_MAC, CAMERA_MAC, 0x86DD, ip, vlans)
    return frame, draw(st.one_of(st.none(), st.integers(0, len(frame))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(garbage_chains(), min_size=1, max_size=8))
def test_random_bytes_behind_extension_headers_decode_the_same_both_ways(cases):
    dec = decode_both([f for f, _ in cases], [c for _, c in cases])
    assert not (dec.fragment & (dec.sport != 0)).any()


# ---- Wireshark as the oracle ----------------------------------------------------------------------------------
def test_tshark_sees_the_same_ports_and_addresses(tmp_path):
    names = ["", "", "", "rfc-order", "ah-before-fragment", "dstopts-twice", "routing-first", "", "", "", ""]
    frames = [v6_frame([(60, s)]) for s in (32, 256, 2048)] + [v6_frame(CHAINS[n]) for n in names[3:7]]
    frames += [v4_frame(tags(4)), v4_frame(tags(8)), v4_frame(tags(2, 0x88A8)), v6_frame([(0, 8)], vlans=tags(3))]
    path = tmp_path / "deep.pcap"
    with PcapWriter(path, snaplen=262144) as w:
        for i, f in enumerate(frames):
            w.write(1_700_000_000 + i, f)
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "separator=|", "-E", "occurrence=l"]
    for f in ("ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.len", "vlan.id"):
        cmd += ["-e", f]
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    dec = decode_both(frames)
    assert len(lines) == len(frames)
    for i, line in enumerate(lines):
        src4, dst4, src6, dst6, sport, dport, tcp_len, vlan = line.split("|")
        assert (str(ip_from16(dec.src[i].tobytes())), str(ip_from16(dec.dst[i].tobytes()))) == \
            ((src4, dst4) if src4 else (str(ipaddress.IPv6Address(src6)), str(ipaddress.IPv6Address(dst6))))
        assert (int(dec.sport[i]), int(dec.dport[i])) == (int(sport), int(dport))
        if tcp_len:
            assert int(dec.payload_len[i]) == int(tcp_len)
        else:   # Wireshark gives no segment length for a first fragment read without reassembly
            assert 44 in dict(CHAINS[names[i]])
        assert int(dec.vlan[i]) == (int(vlan) if vlan else 0)
        assert int(dec.error[i]) == 0


# ---- end to end: the camera no longer vanishes ------------------------------------------------------------------
def _handshake_and_video(src: str, dst: str, sport: int, frame_of, seconds: int = 3) -> list[tuple[float, bytes]]:
    """A SYN, then 1,200-byte TCP/443 segments every 0.1 s, every packet of the camera through frame_of."""
    out = [(0.0, frame_of(tcp(src, dst, sport, 443, 999, 0, "S")))]
    for k in range(10 * seconds):
        out.append((0.05 + k / 10, frame_of(tcp(src, dst, sport, 443, 1000 + k * len(PAYLOAD), 1, "PA", PAYLOAD))))
    return out


def hostile_site(path) -> dict[str, int]:
    """The issue's capture; returns the wire bytes each camera address sent."""
    v6 = _handshake_and_video(CAM6, CLOUD6, 50123,
                              lambda l4: ethernet(ROUTER_MAC, CAMERA_MAC, 0x86DD, ipv6_chain(CAM6, CLOUD6, [(60, 32)],
                                                                                             6, l4)))
    v4 = _handshake_and_video(CAM4, CLOUD4, 50124,
                              lambda l4: ethernet(ROUTER_MAC, CAMERA4_MAC, 0x0800, ipv4_options(CAM4, CLOUD4, 6, l4),
                                                  tags(4)))
    # and one packet whose chain is beyond the bound: counted as header_too_deep, yet still the camera's bytes
    too_deep = ethernet(ROUTER_MAC, CAMERA_MAC, 0x86DD,
                        ipv6_chain(CAM6, CLOUD6, [(60, 8)] * (MAX_EXT_HEADERS + 1), 6,
                                   tcp(CAM6, CLOUD6, 50123, 443, 1, 1, "PA", PAYLOAD)))
    packets = sorted(v6 + v4 + [(3.5, too_deep)], key=lambda p: p[0])
    with PcapWriter(path, snaplen=262144) as w:
        for t, frame in packets:
            w.write(1_700_000_000 + t, frame)
    return {CAM6: sum(len(f) for _, f in v6) + len(too_deep), CAM4: sum(len(f) for _, f in v4)}


def metric_values(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_camera_behind_header_options_is_seen_end_to_end(tmp_path):
    path = tmp_path / "hostile.pcap"
    sent = hostile_site(path)
    proc = camwatch("replay", path, "--metrics-out", tmp_path / "m.prom")
    assert proc.returncode == 0, proc.stderr
    m = metric_values((tmp_path / "m.prom").read_text())
    errors = {dict(ls)["reason"]: v for (n, ls), v in m.items() if n == "camwatch_decode_errors_total"}
    assert errors["header_too_deep"] == 1 and sum(errors.values()) == 1
    egress = {(dict(ls)["device"], dict(ls)["scope"]): v for (n, ls), v in m.items()
              if n == "camwatch_device_egress_bytes_total"}
    assert egress[(CAM4, "public")] == sent[CAM4]
    assert egress[(CAM6, "public")] == sent[CAM6]   # the too-deep packet included
    alerts = [a for a in alerts_of(proc.stdout) if a["detector"] == "egress_policy"]
    by_dst = {a["destination"]["ip"]: a for a in alerts}
    assert set(by_dst) == {CLOUD4, CLOUD6}
    for a in alerts:
        assert a["destination"]["port"] == 443 and a["severity"] == "high"
        assert "Hikvision" in a["device"]["vendor"]


def test_camera_flows_carry_the_real_ports(tmp_path):
    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.pipeline import Sensor
    path = tmp_path / "hostile.pcap"
    sent = hostile_site(path)
    ended = []
    sensor = Sensor(Config())
    sensor.flows.on_end = lambda flow, reason: ended.append(flow.as_dict())
    reader, _ = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    flows = sorted((f["proto"], f["orig_ip"], f["orig_port"], f["resp_port"], f["orig_pkts"]) for f in ended)
    # the two TLS flows of 31 packets each, and the too-deep packet's port-less flow (next header 60)
    assert flows == [("60", CAM6, 0, 0, 1), ("tcp", CAM4, 50124, 443, 31), ("tcp", CAM6, 50123, 443, 31)]
    devices = {dev["ip"]: dev for dev in sensor.inventory_snapshot()}
    assert devices[CAM4]["bytes_sent"] == sent[CAM4] and devices[CAM6]["bytes_sent"] == sent[CAM6]
