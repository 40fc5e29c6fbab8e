"""Hostile input on the wire: every parser of wire bytes is total, and a parser bug costs one counted packet."""

from __future__ import annotations

import ipaddress
import json
import struct
import unicodedata

import pytest
from conftest import alerts_of, camwatch, evidence_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packets import PcapWriter, dns_name, ethernet, ip, mac, tcp, udp
from sensor import dissect
from sensor.config import Config
from sensor.dissect import (
    ParserGuard,
    parse_banner,
    parse_dhip,
    parse_dns,
    parse_http_host,
    parse_http_request,
    parse_sadp,
    parse_tftp_request,
    parse_tls_sni,
    parse_ws_discovery,
    wire_text,
)
from sensor.enrich.fetches import file_kind, last_segment, request_path
from sensor.pipeline import Sensor

# Bounded for CI: each property below runs this many examples.
WIRE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CAMERA_MAC = mac("18:68:cb:00:00:14")   # Hikvision
GATEWAY_MAC = mac("00:11:32:00:00:01")


def dhip(doc: bytes) -> bytes:
    """A DHIP datagram: the 32-byte binary header (magic at 4), then the JSON document."""
    return b"\x20\x00\x00\x00DHIP" + b"\0" * 24 + doc


HOSTILE_DHIP = [
    b'{"method": "client.notifyDevInfo", "params": []}',
    b'{"method": "client.notifyDevInfo", "params": "deviceInfo"}',
    b'{"params": 7}',
    b'{"params": {"deviceInfo": ["DeviceType"]}}',
    b'{"params": {"deviceInfo": {"DeviceType": {"x": 1}, "SerialNo": 5}}}',
    b'[1, 2, 3]',
    b'"deviceInfo"',
    b'{"params": ' + b"[" * 15_000 + b"]" * 15_000 + b"}",
    b'{"params": ' + b"[" * 8_000 + b"]" * 8_000 + b"}",   # deep, and inside the 16 KiB the pipeline reads
    b'{"params": {"deviceInfo": ' + b'{"a":' * 15_000 + b"1" + b"}" * 15_000 + b"}}",
    b'{"params": {"deviceInfo": {"DeviceType": "' + b"\xff" * 300 + b'"}}}',
]


@pytest.mark.parametrize("doc", HOSTILE_DHIP, ids=range(len(HOSTILE_DHIP)))
def test_dhip_documents_of_any_shape_are_not_parsed_and_never_raise(doc):
    fields = parse_dhip(dhip(doc))
    assert isinstance(fields, dict)
    assert all(isinstance(v, str) and len(v) <= dissect.MAX_IDENTITY_VALUE for v in fields.values())


def test_a_real_dhip_reply_still_names_the_device():
    doc = json.dumps({"method": "client.notifyDevInfo", "params": {"deviceInfo": {
        "DeviceType": "IPC-HDW1230S", "SerialNo": "5J0123", "Version": "2.800", "Vendor": "Dahua"}}}).encode()
    assert parse_dhip(dhip(doc)) == {"protocol": "dhip", "model": "IPC-HDW1230S", "serial": "5J0123",
                                     "firmware": "2.800", "vendor": "Dahua"}


def test_one_hostile_discovery_packet_does_not_stop_the_sensor(tmp_path):
    """The reported case: a DHIP broadcast (UDP 37810 -> 5050) whose params is a list, then one nested 15,000
    deep, then ordinary traffic. The replay goes on to the end and counts every packet after them."""
    path = tmp_path / "dhip.pcap"
    datagrams = [d for d in HOSTILE_DHIP if len(d) < 60_000]   # what fits in one UDP datagram
    with PcapWriter(path) as w:
        t = 1_700_000_000.0
        for i, doc in enumerate(datagrams):
            frame = ethernet(b"\xff" * 6, CAMERA_MAC, 0x0800,
                             ip("10.20.0.14", "255.255.255.255", 17, udp("10.20.0.14", "255.255.255.255", 37810,
                                                                         5050, dhip(doc))))
            w.write(t + i, frame)
        for i in range(20):
            w.write(t + 20 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                "10.20.0.14", "203.0.113.50", 6, tcp("10.20.0.14", "203.0.113.50", 40000, 443, i, 0, "A",
                                                     b"x" * 1200))))
    metrics = tmp_path / "m.prom"
    proc = camwatch("replay", path, "--metrics-out", metrics)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = metrics.read_text()
    assert f'camwatch_packets_total{{sensor="camwatch"}} {len(datagrams) + 20}.0' in text
    assert any(a["detector"] == "egress_policy" and a["destination"]["ip"] == "203.0.113.50"
               for a in alerts_of(proc.stdout))


# ---- every wire parser, over structured hostile input ---------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["params", "deviceInfo", "DeviceType", "SerialNo", "Version", "Vendor", "method", "x"]),
        inner, max_size=5),
    max_leaves=30)


@WIRE
@given(doc=json_values, tail=st.binary(max_size=8))
def test_dhip_is_total_over_json_of_any_shape(doc, tail):
    fields = parse_dhip(dhip(json.dumps(doc).encode() + tail))
    assert isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())


labels = st.lists(st.binary(min_size=0, max_size=70), max_size=6)


@st.composite
def dns_messages(draw):
    """Structurally plausible DNS: a header with lying counts, names with labels, pointers anywhere, records."""
    qd, an = draw(st.integers(0, 6)), draw(st.integers(0, 300))
    out = struct.pack("!HHHHHH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), qd, an, 0, 0)
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["name", "pointer", "record", "noise"]))
        if kind == "name":
            out += b"".join(bytes([min(len(lab), 63)]) + lab[:63] for lab in draw(labels)) + b"\0"
            out += struct.pack("!HH", draw(st.sampled_from([1, 5, 28, 255])), 1)
        elif kind == "pointer":
            out += struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))
        elif kind == "record":
            rdata = draw(st.binary(max_size=40))
            out += struct.pack("!HHIH", draw(st.sampled_from([1, 5, 28])), 1, draw(st.integers(0, 2**32 - 1)),
                               draw(st.sampled_from([len(rdata), 4, 16, 65535]))) + rdata
        else:
            out += draw(st.binary(max_size=20))
    return out


@WIRE
@given(msg=dns_messages())
def test_dns_parser_is_total(msg):
    parsed = parse_dns(msg)
    cost = dissect.dns_answer_cost(msg)   # what the DNS reader's budget charges, read before the parse
    assert 0 <= cost <= dissect.MAX_DNS_RECORDS
    if parsed is not None:
        assert len(parsed.answers) <= cost
        parsed.addresses()


@WIRE
@given(raw=st.binary(min_size=16, max_size=16) | st.binary(min_size=6, max_size=6).map(lambda t: bytes(10) + t))
def test_ipv6_text_is_ipaddress_on_any_16_bytes(raw):
    assert dissect.ipv6_text(raw) == str(ipaddress.IPv6Address(raw))


@WIRE
@given(text=st.text(max_size=40))
def test_printable_leaves_nothing_a_line_or_terminal_would_act_on(text):
    shown = dissect.printable(text)
    assert all(c.isprintable() or unicodedata.category(c) == "Zs" for c in shown)
    assert all(a == b or b == "\ufffd" for a, b in zip(text, shown, strict=True))


@WIRE
@given(value=st.text(max_size=300) | st.binary(max_size=300))
def test_an_identity_value_keeps_its_printable_characters_in_order_and_bounded(value):
    """_clean's shortcut for text printable already gives what the character-by-character filter gives."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    want = "".join(c for c in text.strip() if c.isprintable())[:dissect.MAX_IDENTITY_VALUE]
    assert dissect._clean(value) == want


@st.composite
def decoded_rows(draw):
    """A decoded batch whose every key column (addresses, ports, protocol, VLAN, fragment flag) holds what any
    header could put there, with addresses and ports often equal so that the key's order is decided late."""
    import dataclasses

    import numpy as np
    from unit.builders import batch_of

    from sensor.decode import decode
    n = draw(st.integers(1, 6))
    ends = st.binary(min_size=16, max_size=16) | st.sampled_from([bytes(16), b"\x0a" * 16])
    ports = st.integers(0, 65535) | st.sampled_from([0, 554])
    base = decode(batch_of([ethernet(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"), 0x0800,
                                     ip("10.0.0.1", "10.0.0.2", 17, udp("10.0.0.1", "10.0.0.2", 1, 2, b"x")))] * n))
    src, dst = (b"".join(draw(ends) for _ in range(n)) for _ in range(2))
    return dataclasses.replace(
        base, src=np.frombuffer(src, np.uint8).reshape(n, 16).copy(),
        dst=np.frombuffer(dst, np.uint8).reshape(n, 16).copy(),
        sport=np.array([draw(ports) for _ in range(n)], np.int64),
        dport=np.array([draw(ports) for _ in range(n)], np.int64),
        proto=np.array([draw(st.sampled_from([1, 6, 17, 58, 0, 255])) for _ in range(n)], np.uint8),
        vlan=np.array([draw(st.integers(0, 4095)) for _ in range(n)], np.uint16),
        fragment=np.array([draw(st.booleans()) for _ in range(n)], bool))


@WIRE
@given(dec=decoded_rows())
def test_one_rows_flow_key_is_the_batchs_on_any_header_values(dec):
    """flows.flow_key (the readers' per-row key) is total and equal to flow_keys, the grouping's reference."""
    import numpy as np

    from sensor.flows import flow_key, flow_keys
    rows = np.arange(len(dec.proto))
    keys, a_is_src = flow_keys(dec, rows)
    assert [flow_key(dec, int(r)) for r in rows] == [(k.tobytes(), bool(a)) for k, a in zip(keys, a_is_src,
                                                                                          strict=True)]


@st.composite
def client_hellos(draw):
    """A ClientHello whose every length may lie: session id, cipher suites, extensions, the SNI list."""
    sni = draw(st.binary(max_size=80))
    lie = draw(st.integers(0, 65535))
    ext_sni = struct.pack("!HHHBH", 0, draw(st.sampled_from([len(sni) + 5, lie])), len(sni) + 3,
                          draw(st.sampled_from([0, 1])), draw(st.sampled_from([len(sni), lie]))) + sni
    extensions = b"".join(struct.pack("!HH", draw(st.integers(0, 65535)), len(b)) + b
                          for b in draw(st.lists(st.binary(max_size=20), max_size=4))) + ext_sni
    body = (b"\x03\x03" + bytes(32) + bytes([draw(st.integers(0, 255))]) + struct.pack("!H", draw(
        st.sampled_from([4, lie]))) + b"\x13\x01\x13\x02" + b"\x01\x00" + struct.pack("!H", draw(
            st.sampled_from([len(extensions), lie]))) + extensions)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
    return record[:draw(st.integers(0, len(record)))]


@WIRE
@given(hello=client_hellos())
def test_tls_sni_parser_is_total(hello):
    name = parse_tls_sni(hello)
    assert name is None or isinstance(name, str)


header_lines = st.lists(st.tuples(st.sampled_from([b"Host", b"Server", b"LOCATION", b"User-Agent", b"X", b""]),
                                  st.binary(max_size=60)), max_size=8)


@WIRE
@given(start=st.sampled_from([b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"RTSP/1.0 200 OK", b"HTTP/1.1 200 OK",
                              b"NOTIFY * HTTP/1.1", b"M-SEARCH * HTTP/1.1", b"GET"]),
       lines=header_lines, sep=st.sampled_from([b":", b": ", b"::", b""]))
def test_http_rtsp_ssdp_parsers_are_total(start, lines, sep):
    message = start + b"\r\n" + b"".join(k + sep + v + b"\r\n" for k, v in lines) + b"\r\n"
    host = parse_http_host(message)
    assert host is None or isinstance(host, str)
    banner = parse_banner(message)
    assert all(isinstance(v, str) and len(v) <= dissect.MAX_IDENTITY_VALUE for v in banner.values())


xml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@WIRE
@given(tags=st.lists(st.tuples(st.sampled_from(["DeviceDescription", "DeviceSN", "SoftwareVersion", "DeviceType",
                                                "Scopes", "d:Scopes", "x"]), xml_text), max_size=8),
       root=st.sampled_from(["ProbeMatch", "Probe", "Hello", "ProbeMatches"]), cut=st.integers(0, 4000))
def test_discovery_xml_parsers_are_total(tags, root, cut):
    body = "".join(f"<{t}>{v}</{t.split(':')[-1]}>" for t, v in tags)
    doc = f"<{root}>{body}<Scopes>onvif://www.onvif.org/hardware/{body[:40]}</Scopes></{root}>".encode()
    doc = doc[:cut]
    for parser in (parse_ws_discovery, parse_sadp):
        fields = parser(doc)
        assert all(isinstance(v, str) and len(v) <= dissect.MAX_IDENTITY_VALUE for v in fields.values())


def test_dns_name_compression_loops_and_overlong_names_are_not_parsed():
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0)
    loop = header + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    assert parse_dns(loop) is None
    long_name = header + b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\0" + struct.pack("!HH", 1, 1)
    assert parse_dns(long_name) is None
    assert dns_name("camera.example.com").endswith(b"\0")


# ---- file fetches: TFTP requests and HTTP request lines ---------------------------------------------------------
def _shown_safely(text: str, limit: int) -> bool:
    """What wire_text promises: printable, no unescaped quote, within limit characters and the ellipsis."""
    unescaped_quote = any(ch == '"' and (i == 0 or text[i - 1] != "\\") for i, ch in enumerate(text))
    return text.isprintable() and not unescaped_quote and len(text) <= limit + 1


@WIRE
@given(opcode=st.integers(0, 0xFFFF), name=st.binary(max_size=600), mode=st.sampled_from(
    [b"octet", b"NETASCII", b"mail", b"binary", b"", b"oct\xffet"]), terminators=st.integers(0, 2),
    tail=st.binary(max_size=40))
def test_tftp_request_parser_is_total(opcode, name, mode, terminators, tail):
    payload = struct.pack("!H", opcode) + name + b"\0" * min(terminators, 1) + mode + b"\0" * (terminators // 2) + tail
    request = parse_tftp_request(payload)
    if request is not None:
        assert request.opcode in (1, 2) and request.filename and b"\0" not in request.filename
        assert request.mode in ("octet", "netascii", "mail")
        assert _shown_safely(wire_text(request.filename, 160), 160)


@pytest.mark.parametrize("payload", [
    b"\x00\x01" + b"x" * 65_000,                           # no NUL anywhere
    b"\x00\x01" + b"\xff" * 65_000 + b"\x00octet\x00",       # a huge name that is not UTF-8
    b"\x00\x01" + b"\x00" * 65_000,                         # NULs only
    b"\x00\x01a\x00" + b"octet" * 13_000,                    # a mode that never ends
    b"\x00\x01" + ("\u202e" * 20_000).encode() + b"\x00mail\x00",
])
def test_tftp_request_parser_on_huge_and_broken_requests(payload):
    request = parse_tftp_request(payload)
    assert request is None or _shown_safely(wire_text(request.filename), 160)


request_lines = st.tuples(st.sampled_from([b"GET", b"POST", b"HEAD", b"GET\t", b"GET  "]),
                          st.binary(max_size=120), st.sampled_from([b" HTTP/1.1", b"", b" HTTP/1.0 x", b"\tHTTP/1.1"]),
                          st.sampled_from([b"\r\n", b"\n", b"", b"\r\r\n"]), st.binary(max_size=60))


@WIRE
@given(parts=request_lines)
def test_http_request_line_and_the_file_it_names_are_total(parts):
    method, target, version, eol, rest = parts
    payload = method + b" " + target + version + eol + rest
    request = parse_http_request(payload)
    assert (request is not None) == (payload[:4] in (b"GET ", b"POST", b"HEAD"))
    if request is not None:
        assert request.method in ("", "GET", "POST", "HEAD") and len(request.target) <= 4096
        path = request_path(request.target)
        assert b"?" not in path and b"#" not in path
        kind = file_kind(last_segment(path))
        assert kind in (None, "script", "executable", "firmware image", "archive")
        assert _shown_safely(wire_text(path, 160), 160)


@WIRE
@given(raw=st.binary(max_size=2000) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
       limit=st.integers(1, 300))
def test_wire_text_is_always_one_printable_unambiguous_line_within_its_limit(raw, limit):
    assert _shown_safely(wire_text(raw, limit), limit)


def test_hostile_tftp_and_http_fetches_through_the_sensor_are_escaped_and_the_sensor_goes_on(tmp_path):
    """Broken and hostile TFTP requests and request lines, then ordinary traffic: the replay reads to the end,
    alerts only on the well-formed read requests and GETs of files, and every quoted name is escaped."""
    path = tmp_path / "fetches.pcap"
    tftp = [b"\x00\x01" + b"x" * 1400,                            # no NUL
            b"\x00\x01" + b"\xff\xfe\x1b]2;owned\x07" * 80 + b"\x00octet\x00",
            b"\x00\x01\x00octet\x00", b"\x00\x02up.sh\x00octet\x00", b"\x00\x03\x00\x01data",
            b"\x00\x01a.sh\x00octet\x00" + b"\x00" * 1200]
    http = [b"GET /\x00\xff\x7f\x1b[0m.sh HTTP/1.1\r\n\r\n", b"GET " + b"/" * 3000 + b"x.bin HTTP/1.1\r\n\r\n",
            b"GET /cr\r.sh HTTP/1.1\r\n\r\n",             # a CR inside: not a request line, as servers say
            b"GET /a.sh" + b"\n" * 10, b"GET ", b"GET\t/tab.sh\tHTTP/1.1\r\n\r\n"]
    t = 1_700_000_000.0
    with PcapWriter(path) as w:
        for i, body in enumerate(tftp):
            w.write(t + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                "10.20.0.14", "192.168.9.9", 17, udp("10.20.0.14", "192.168.9.9", 41000 + i, 69, body))))
        for i, body in enumerate(http):
            w.write(t + 10 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                "10.20.0.14", f"203.0.113.{60 + i}", 6, tcp("10.20.0.14", f"203.0.113.{60 + i}", 42000 + i, 80, 1, 1,
                                                           "PA", body))))
        for i in range(5):
            w.write(t + 20 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                "10.20.0.14", "203.0.113.50", 6, tcp("10.20.0.14", "203.0.113.50", 40000, 443, i, 0, "A",
                                                     b"x" * 1200))))
    proc = camwatch("replay", path, "--config", "/dev/null")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    alerts = alerts_of(proc.stdout)
    # the fetches, in order, as evidence of the incidents of the camera and each server (the last line of each
    # incident, its close, holds all of it)
    last = {a["incident"]: a for a in alerts}
    fetches = [(a["service"]["id"], e) for a in last.values() for e in a["evidence"]
               if e["detector"] == "cleartext_fetch"]
    assert [server for server, _ in fetches] == ["192.168.9.9", "203.0.113.60", "203.0.113.61", "203.0.113.63"]
    owned = fetches[0][1]["details"]["file"]
    assert owned.startswith("\\xff\\xfe\\x1b]2;owned\\x07") and owned.endswith("\u2026")
    assert fetches[1][1]["text"] == "HTTP GET /\\x00\\xff\\x7f\\x1b[0m.sh"
    assert fetches[2][1]["details"]["file"] == "x.bin" and fetches[2][1]["text"].endswith("\u2026")
    assert fetches[3][1]["text"] == "HTTP GET /a.sh"
    assert all(a["summary"].isprintable() for a in alerts)
    assert any(det == "egress_policy" and "203.0.113.50" in text for _, det, _, text in evidence_of(alerts))


# ---- the guard at the dispatch ---------------------------------------------------------------------------------
def test_a_parser_bug_costs_one_counted_packet_not_the_sensor(monkeypatch, tmp_path):
    """Whatever a parser raises is caught where the pipeline calls it, counted per parser, and exported."""
    reported: list[str] = []
    guard = ParserGuard(reported.append)

    def parse_broken(_payload: bytes) -> dict:
        raise KeyError("a bug nobody foresaw")

    assert guard.run(parse_broken, b"x", {}) == {}
    assert guard.run(parse_broken, b"y", {}) == {}
    assert guard.errors == {"broken": 2}
    assert len(reported) == 1 and "broken" in reported[0]

    def parse_dns(_payload: bytes):
        raise RecursionError("deep")

    monkeypatch.setattr("sensor.enrich.naming.parse_dns", parse_dns)
    path = tmp_path / "dns.pcap"
    with PcapWriter(path) as w:
        for i in range(5):
            query = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + dns_name("a.example.com") + b"\0\1\0\1"
            w.write(1_700_000_000 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                "10.20.0.14", "10.20.0.1", 17, udp("10.20.0.14", "10.20.0.1", 40000 + i, 53, query))))
    sensor = Sensor(Config())
    from sensor.capture import open_file
    reader = open_file(path)[0]
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    assert sensor.packets == 5
    # the five queries differ only in their ID, which the pipeline's parse cache ignores: one parse, one failure
    assert sensor.parsers.errors["dns"] == 1
    from prometheus_client import generate_latest

    from sensor.export import build_registry
    text = generate_latest(build_registry(sensor)).decode()
    assert 'camwatch_dissect_errors_total{parser="dns",sensor="camwatch"} 1.0' in text
    assert 'camwatch_dissect_errors_total{parser="dhip",sensor="camwatch"} 0.0' in text
    sensor.close()
