"""Hostile input to the parsers of what a device says about itself (mDNS, SSDP, web pages and UPnP descriptions, TLS
certificates): each is total over structured and random input, bounded in what it keeps and in the time one packet
costs, and a sensor fed them goes on to the end of the capture with every identity value printable and bounded."""

from __future__ import annotations

import json
import struct
import time

import pytest
from conftest import camwatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_packets import PTR, SRV, TXT, A, der, der_certificate, mdns_message, mdns_record, tls_server_flight
from packets import PcapWriter, ethernet, ip, mac, tcp, udp
from sensor import dissect
from sensor.certificate import parse_tls_certificate
from sensor.dissect import WIRE_PARSERS, ParserGuard, parse_banner, parse_dns, parse_http_identity, parse_mdns

WIRE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAMERA_MAC = mac("18:68:cb:00:00:14")
GATEWAY_MAC = mac("00:11:32:00:00:01")
PER_PACKET_SECONDS = 0.05     # the worst packet of each kind, far above what an ordinary one costs (~50 us)


def bounded(fields: dict) -> bool:
    return isinstance(fields, dict) and all(
        isinstance(v, str) and len(v) <= dissect.MAX_IDENTITY_VALUE and v.isprintable() for v in fields.values())


def slowest(parser, payloads) -> float:
    worst = 0.0
    for body in payloads:
        start = time.perf_counter()
        assert bounded(parser(body))
        worst = max(worst, time.perf_counter() - start)
    return worst


# ---- mDNS ----------------------------------------------------------------------------------------------------------
labels = st.lists(st.binary(min_size=0, max_size=70), max_size=5)


@st.composite
def mdns_messages(draw):
    """Counts that lie, names with labels or pointers anywhere, records of every type mDNS reads with rdata whose
    length lies, TXT strings that run past their record."""
    counts = [draw(st.integers(0, 70)) for _ in range(4)]
    out = struct.pack("!HHHHHH", 0, draw(st.sampled_from([0x8400, 0x0000, 0xFFFF])), *counts)
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["name", "pointer", "record", "txt", "noise"]))
        if kind == "name":
            out += b"".join(bytes([min(len(lab), 63)]) + lab[:63] for lab in draw(labels)) + b"\0"
        elif kind == "pointer":
            out += struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))
        elif kind in ("record", "txt"):
            rdata = draw(st.binary(max_size=60))
            if kind == "txt":
                rdata = bytes([draw(st.integers(0, 255))]) + rdata
            out += struct.pack("!HHIH", draw(st.sampled_from([A, PTR, TXT, 28, SRV, 5, 47])), 0x8001, 120,
                               draw(st.sampled_from([len(rdata), 0, 6, 65535]))) + rdata
        else:
            out += draw(st.binary(max_size=30))
    return out


@WIRE
@given(msg=mdns_messages())
def test_mdns_parser_is_total_and_bounded(msg):
    assert bounded(parse_mdns(msg))
    parsed = parse_dns(msg, every_record=True)
    if parsed is not None:
        assert len(parsed.records) <= dissect.MAX_DNS_RECORDS
        assert all(len(r.data) <= dissect.MAX_TXT_STRINGS for r in parsed.records)


def _loop_record(rtype: int, prefix: bytes = b"") -> bytes:
    """A message whose one record's rdata holds a name that points at itself (offset 12 + owner 2 + 10 + prefix)."""
    at = 12 + 2 + 10 + len(prefix)
    rdata = prefix + struct.pack("!H", 0xC000 | at)
    return struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 1,
                                                                                   len(rdata)) + rdata


@pytest.mark.parametrize("msg", [
    _loop_record(PTR), _loop_record(SRV, b"\0\0\0\0\0\x50"),
    struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0e\xc0\x0c",          # two pointers at each other
    mdns_message(answers=[mdns_record("a._http._tcp.local", TXT, ["x"])])[:-1],   # TXT cut short
    struct.pack("!HHHHHH", 0, 0x8400, 0, 65535, 65535, 65535),                 # counts with nothing behind
    mdns_message(answers=[mdns_record("\udcff".encode("utf-8", "surrogateescape").decode("latin-1") + ".local",
                                      A, "1.2.3.4")]),
])
def test_mdns_loops_and_lies_are_not_parsed_into_anything(msg):
    assert bounded(parse_mdns(msg))


def test_mdns_invalid_utf8_names_and_txt_are_replaced_not_raised():
    owner = b"\x04\xff\xfe\x80\x00\x05_http\x04_tcp\x05local\x00"
    txt = b"\x0amodel=\xc3\x28\xa0\xa1"
    msg = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + owner + struct.pack("!HHIH", TXT, 1, 1, len(txt)) + txt
    fields = parse_mdns(msg)
    assert bounded(fields) and fields["mdns_model"].startswith("\ufffd(") and fields["mdns_service"] == "_http._tcp"


def test_the_costliest_mdns_packets_stay_cheap():
    many = mdns_message(answers=[mdns_record(f"i{i}._hap._tcp.local", TXT, ["k=" + "v" * 200] * 6)
                                 for i in range(256)])[:65_000]
    pointers = struct.pack("!HHHHHH", 0, 0x8400, 0, 256, 0, 0) + (b"\xc0\x0c" + struct.pack(
        "!HHIH", PTR, 1, 1, 2) + b"\xc0\x0c") * 4000
    assert slowest(parse_mdns, [many, pointers]) < PER_PACKET_SECONDS


# ---- HTTP pages, UPnP descriptions, SSDP -----------------------------------------------------------------------------
xml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
tags = st.sampled_from(["manufacturer", "modelName", "modelNumber", "friendlyName", "serialNumber", "deviceType",
                        "title", "TITLE", "VendorName", "ModelName", "root", "device", "u:manufacturer", "x"])


@WIRE
@given(elements=st.lists(st.tuples(tags, xml_text, st.booleans()), max_size=10),
       start=st.sampled_from([b"HTTP/1.1 200 OK\r\nServer: s\r\n\r\n", b"HTTP/1.1 200 OK\r\n",
                              b"HTTP/1.0 401 x\r\n\r\n", b"", b"RTSP/1.0 200 OK\r\n\r\n"]),
       root=st.sampled_from([b'<root xmlns="urn:schemas-upnp-org:device-1-0">', b"<html>", b"<soap:Envelope>",
                             b"GetDeviceSettingsResponse", b""]),
       cut=st.integers(0, 3000), tail=st.binary(max_size=30))
def test_http_identity_is_total_over_documents_of_any_shape(elements, start, root, cut, tail):
    body = b"".join((f"<{t}>{v}</{t.split(':')[-1]}>" if closed else f"<{t}>{v}").encode()
                    for t, v, closed in elements)
    assert bounded(parse_http_identity((start + root + body + tail)[:cut]))


@WIRE
@given(lines=st.lists(st.tuples(st.sampled_from([b"NT", b"ST", b"SERVER", b"LOCATION", b"nt", b""]),
                                st.binary(max_size=80)), max_size=8),
       start=st.sampled_from([b"NOTIFY * HTTP/1.1", b"HTTP/1.1 200 OK", b"M-SEARCH * HTTP/1.1"]))
def test_ssdp_device_type_is_total(lines, start):
    fields = parse_banner(start + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in lines) + b"\r\n")
    assert bounded(fields)


@pytest.mark.parametrize("body", [
    b"<root " + b"x" * 16_000,                                           # a root tag that never closes
    b'<root xmlns="urn:schemas-upnp-org:device-1-0">' + b"<device>" * 2000,           # deep nesting
    b'<root xmlns="urn:schemas-upnp-org:device-1-0">' + b"<manufacturer>" * 1300,     # opens that never close
    (b'<root xmlns="urn:schemas-upnp-org:device-1-0">' + b"<modelName>" + b"\xff" * 250 + b"</modelName>") * 60,
    b"<title" * 2700, b"<title>" + b"<" * 16_000, b"<title>" + b"&amp;" * 100 + b"</title>",
    b"<html>" + b"\xed\xa0\x80" * 5000 + b"<title>\xed\xa0\x80</title>",   # surrogates in UTF-8
    b"GetDeviceSettingsResponse" + b"<VendorName>" * 1300,
])
def test_huge_nested_and_broken_pages_are_bounded_and_cheap(body):
    payloads = [body[:16384], b"HTTP/1.1 200 OK\r\n\r\n" + body[:16000]]
    assert slowest(parse_http_identity, payloads) < PER_PACKET_SECONDS


# ---- TLS certificates --------------------------------------------------------------------------------------------
der_trees = st.recursive(
    st.tuples(st.sampled_from([0x02, 0x06, 0x0C, 0x13, 0x1E, 0x1C, 0x04, 0x05]), st.binary(max_size=20)).map(
        lambda t: der(*t)),
    lambda inner: st.tuples(st.sampled_from([0x30, 0x31, 0xA0]), st.lists(inner, max_size=5)).map(
        lambda t: der(t[0], b"".join(t[1]))),
    max_leaves=40)


@WIRE
@given(tree=der_trees, cut=st.integers(0, 2000), lie=st.sampled_from([None, 0, 0x7F, 0x80, 0x84, 0xFF]))
def test_certificate_parser_is_total_over_any_der(tree, cut, lie):
    cert = bytearray(tree)
    if lie is not None and len(cert) > 1:
        cert[1] = lie
    flight = tls_server_flight([bytes(cert)])
    assert bounded(parse_tls_certificate(flight[:cut]))


@WIRE
@given(noise=st.binary(max_size=400), kind=st.sampled_from([2, 11, 14, 1]), version=st.integers(0, 255))
def test_certificate_parser_is_total_over_any_handshake_bytes(noise, kind, version):
    for body in (bytes([0x16, 3, version]) + struct.pack("!H", len(noise) + 1) + bytes([kind]) + noise,
                 bytes([0x16, 3, version, 0xFF, 0xFF, kind]) + noise, b"\x16\x03" + noise):
        assert bounded(parse_tls_certificate(body))


@pytest.mark.parametrize("cert", [
    b"\x30\x84\xff\xff\xff\xff" * 2700,                         # headers claiming 4 GB, nested
    b"\x30\x80" * 8000,                                         # indefinite lengths (not DER)
    b"\x30\x82\x3f\x00" + b"\x30\x02\x31\x00" * 4000,           # a tbs of thousands of tiny names
    der(0x30, der(0x30, der(0x02, b"\1") + der(0x30, b"") + der(0x30, der(0x31, der(0x30, b"\x06\x03\x55\x04\x03"
                                                                                   + b"\x0c\xff")) * 2000))),
    der_certificate([("CN", "x")] * 2000),                      # every RDN a CN: the bound stops the walk
])
def test_huge_and_deep_certificates_are_cheap(cert):
    assert slowest(parse_tls_certificate, [tls_server_flight([cert])[:16384]]) < PER_PACKET_SECONDS


# ---- through the sensor ------------------------------------------------------------------------------------------
def test_a_parser_bug_in_an_identity_parser_is_counted_under_its_name(monkeypatch):
    assert {"mdns", "http_identity", "tls_certificate"} <= set(WIRE_PARSERS)
    guard = ParserGuard()

    def parse_mdns(_payload):
        raise MemoryError("a bug nobody foresaw")

    assert guard.run(parse_mdns, b"x", {}) == {} and guard.errors == {"mdns": 1}


def test_hostile_identity_packets_through_the_sensor(tmp_path):
    """A camera-side device sends every hostile identity packet above, as mDNS, SSDP, its web server's pages and
    its TLS service's flight, then ordinary traffic: the replay reads to the end and every identity value the
    inventory shows is printable and bounded."""
    path = tmp_path / "identity.pcap"
    cam, nvr = "10.20.0.14", "10.20.0.2"
    t = 1_700_000_000.0
    mdns = [_loop_record(PTR), b"\x00" * 12, mdns_message(answers=[mdns_record(
        "\x1b]2;x\x07._hap._tcp.local", TXT, ["md=\u202e" + "m" * 240, "mf=\x1b[31mred"])])]
    pages = [b"HTTP/1.1 200 OK\r\nServer: \x1b[2J\xff\r\n\r\n<title>\x1b]0;owned\x07" + "\u202e".encode() + b"</title>",
             b"<root " + b"x" * 1300, b"<title>" + b"\xff" * 1300 + b"</title>"]
    tls = [tls_server_flight([b"\x30\x84\xff\xff\xff\xff" * 200]), tls_server_flight([der_certificate(
        [("O", "\x1b[0m\u202eEvil"), ("CN", "x" * 500)])])]
    with PcapWriter(path) as w:
        for i, body in enumerate(mdns):
            w.write(t + i, ethernet(b"\x01\x00\x5e\x00\x00\xfb", CAMERA_MAC, 0x0800, ip(
                cam, "224.0.0.251", 17, udp(cam, "224.0.0.251", 5353, 5353, body))))
        for i, body in enumerate(pages + tls):
            port = 443 if body[:1] == b"\x16" else 80
            w.write(t + 10 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                cam, nvr, 6, tcp(cam, nvr, port, 41000 + i, 1, 1, "PA", body))))
        for i in range(5):
            w.write(t + 20 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                cam, "203.0.113.50", 6, tcp(cam, "203.0.113.50", 40000, 443, i, 0, "A", b"x" * 1200))))
    proc = camwatch("inventory", "--json", path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    device = {d["ip"]: d for d in json.loads(proc.stdout)}[cam]
    identity = device["identity"]
    assert bounded(identity)
    assert identity["mdns_model"] == "m" * dissect.MAX_IDENTITY_VALUE and identity["server"] == "[2J\ufffd"
    assert "\x1b" not in json.dumps(identity) and "\u202e" not in "".join(identity.values())
    table = camwatch("inventory", path)
    assert table.returncode == 0 and "\x1b" not in table.stdout
