"""Hostile names in flow records: whatever bytes a ClientHello's SNI, an HTTP Host or a DNS answer carries, its flow's
record is one line of printable ASCII JSON that reads back to the name camwatch holds, at most 253 characters; the
same names as a device's destinations in /metrics and `camwatch inventory` are printable."""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.builders import batch_of

from packets import dns_name, ethernet, ipv4, mac, tcp, udp
from sensor.cli.inventory import format_inventory
from sensor.config import parse_config
from sensor.enrich import ManufDatabase
from sensor.export import build_registry
from sensor.export.exposition import render_text
from sensor.export.flow_log import FlowRecords
from sensor.export.lines import encode
from sensor.flows import Flow
from sensor.pipeline import Sensor

WIRE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAM, CLOUD, RESOLVER = "10.20.0.14", "203.0.113.50", "10.20.0.1"
CAM_MAC, GW_MAC = mac("18:68:cb:00:00:14"), mac("02:00:00:00:00:fe")
T0 = 1_700_000_000.0
SENSOR = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), manuf=ManufDatabase({}))


def client_hello(sni: bytes) -> bytes:
    ext = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" + b"\x01\x00"
            + struct.pack("!H", len(ext)) + ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def t(src, dst, sport, dport, flags, payload=b""):
    macs = (GW_MAC, CAM_MAC) if src == CAM else (CAM_MAC, GW_MAC)
    return ethernet(*macs, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, flags, payload)))


def records_of(frames: list[tuple[float, bytes]]) -> list[tuple[Flow, str]]:
    """Every flow the frames make, with its record's line; one sensor for all examples (fresh flow ports)."""
    ended: list[Flow] = []
    SENSOR.flows.on_end = lambda flow, reason: ended.append(flow)
    SENSOR.process(batch_of([f for _, f in frames], ts=[ts for ts, _ in frames]))
    SENSOR.flows.flush()
    build = FlowRecords(SENSOR)
    return [(flow, encode(build.record(flow, "end"))) for flow in ended]


def check(flow: Flow, line: str) -> dict:
    assert line.isascii() and line.isprintable()
    rec = json.loads(line)
    name = rec["camwatch.name"]
    assert name is None or 0 < len(name) <= 253
    if flow.name:
        assert name == flow.name[:253]
    return rec


@WIRE
@given(st.binary(min_size=1, max_size=300))
def test_any_sni_bytes_make_a_printable_record(sni):
    frames = [(T0, t(CAM, CLOUD, 41000, 443, "S")), (T0 + 0.1, t(CLOUD, CAM, 443, 41000, "SA")),
              (T0 + 0.2, t(CAM, CLOUD, 41000, 443, "PA", client_hello(sni)))]
    for flow, line in records_of(frames):
        check(flow, line)


@WIRE
@given(st.binary(min_size=1, max_size=300))
def test_any_http_host_bytes_make_a_printable_record(host):
    request = b"GET / HTTP/1.1\r\nHost: " + host.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n"
    frames = [(T0, t(CAM, CLOUD, 42000, 80, "S")), (T0 + 0.1, t(CLOUD, CAM, 80, 42000, "SA")),
              (T0 + 0.2, t(CAM, CLOUD, 42000, 80, "PA", request))]
    for flow, line in records_of(frames):
        check(flow, line)


@WIRE
@given(st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4))
def test_any_dns_answer_name_makes_a_printable_record(labels):
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    answer = (struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0) + name + struct.pack("!HH", 1, 1)
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([203, 0, 113, 77]))
    dns = ethernet(CAM_MAC, GW_MAC, 0x0800, ipv4(RESOLVER, CAM, 17, udp(RESOLVER, CAM, 53, 5353, answer)))
    out = ethernet(GW_MAC, CAM_MAC, 0x0800, ipv4(CAM, "203.0.113.77", 17, udp(CAM, "203.0.113.77", 5000, 6000, b"x")))
    for _flow, line in records_of([(T0, dns), (T0 + 1, out)]):
        assert line.isascii() and line.isprintable()
        rec = json.loads(line)
        assert rec["camwatch.name"] is None or len(rec["camwatch.name"]) <= 253


def test_the_dns_name_helper_is_what_the_answers_use():
    assert dns_name("a.b") == b"\x01a\x01b\x00"


def test_hostile_destination_names_are_printable_in_metrics_and_the_inventory_table():
    # A destination's name (SNI, Host, DNS answer) went into the device's destinations as sent: terminal escapes,
    # a bell, a carriage return, a NUL and a right-to-left override reached camwatch_top_destination_bytes's
    # `destination` label and `camwatch inventory`'s table as they were (the flow records, alerts and report escape
    # their own). Each unprintable character is now shown as U+FFFD, as the report shows it.
    hostile = b"cam\x1b[2J\x1b]0;owned\x07\r\x00\xe2\x80\xaeevil.example"
    host = b"GET / HTTP/1.1\r\nHost: h\x1b[31m\x7fst.example\r\n\r\n"
    labels = [bytes([len(part)]) + part for part in (b"d\x1b[1m\x08ns", b"example")]
    answer = (struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0) + b"".join(labels) + b"\0" + struct.pack("!HH", 1, 1)
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([203, 0, 113, 78]))
    sensor = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), manuf=ManufDatabase({}))
    frames = [(T0, t(CAM, CLOUD, 43000, 443, "S")), (T0 + 0.1, t(CLOUD, CAM, 443, 43000, "SA")),
              (T0 + 0.2, t(CAM, CLOUD, 43000, 443, "PA", client_hello(hostile))),
              (T0 + 0.3, t(CAM, "203.0.113.51", 43001, 80, "S")),
              (T0 + 0.4, t(CAM, "203.0.113.51", 43001, 80, "PA", host)),
              (T0 + 0.5, ethernet(CAM_MAC, GW_MAC, 0x0800, ipv4(RESOLVER, CAM, 17, udp(RESOLVER, CAM, 53, 5353,
                                                                                        answer)))),
              (T0 + 1.5, ethernet(GW_MAC, CAM_MAC, 0x0800, ipv4(CAM, "203.0.113.78", 17, udp(
                  CAM, "203.0.113.78", 5000, 6000, b"x" * 40)))),
              (T0 + 3, t(CAM, CLOUD, 43000, 443, "A"))]
    sensor.process(batch_of([f for _, f in frames], ts=[ts for ts, _ in frames]))
    sensor.flows.flush()
    names = {name for (name, _sent) in sensor.inventory.lookup(CAM).external_peers.values()}
    assert len(names - {None}) == 3, names   # each of the three named its destination
    text = render_text(build_registry(sensor)).decode()
    shown = [line for line in text.split("\n") if line.startswith("camwatch_top_destination_bytes{")]
    assert len(shown) == 3 and all(line.isprintable() for line in shown), shown
    assert sum("\ufffd" in line for line in shown) == 3
    table = format_inventory([sensor.inventory.lookup(CAM).as_dict()])
    assert all(line.isprintable() for line in table.split("\n")), table
    # a state database written before (or edited) gives its names back the same way
    doc = sensor.inventory.lookup(CAM).state()
    doc["external_peers"] = [["203.0.113.9", "a\x1b[2Jb", 5]]
    again = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), manuf=ManufDatabase({}))
    again.inventory.restore([doc])
    assert again.inventory.lookup(CAM).external_peers == {"203.0.113.9": ["a\ufffd[2Jb", 5]}
    sensor.close()
    again.close()
