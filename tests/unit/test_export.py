"""Counters and metrics checked by value, through what Prometheus scrapes (export.build_registry): decode errors
per reason, packets and bytes, frames per network, flows created and expired per reason, a device's egress bytes
per scope and the alert counters. Each expected number follows from how the input was built, never from the code
under test, and every label value of a family is asserted, zeros included, so a count landing under the wrong
label is caught too."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from packets import ethernet, ipv4, ipv6, mac, tcp, udp
from sensor.capture import Batch
from sensor.config import parse_config
from sensor.detect import DETECTORS, SEVERITIES
from sensor.enrich import ManufDatabase
from sensor.export import build_registry
from sensor.pipeline import Sensor

T0 = 1_700_000_000.0
CAM, NVR, PUBLIC = "10.20.0.11", "10.20.0.2", "198.51.100.7"
CAM_MAC = mac("00:40:8c:00:00:11")          # Axis Communications AB: not a covered maker
OTHER_MAC = mac("00:1e:bd:00:00:01")
V6_CAM, V6_PEER = "fd00:20::11", "fd00:20::2"


def make_batch(records: list[tuple]) -> Batch:
    """records: (ts, frame) or (ts, frame, linktype, wirelen)."""
    frames = [r[1] for r in records]
    caplen = np.array([len(f) for f in frames], dtype=np.int64)
    wirelen = np.array([r[3] if len(r) > 3 and r[3] else len(r[1]) for r in records], dtype=np.int64)
    linktype = np.array([r[2] if len(r) > 2 else 1 for r in records], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.int64)
    return Batch(b"".join(frames), offsets, caplen, wirelen, np.array([r[0] for r in records]), linktype)


_MANUF = None


def sensor_with(config: dict | None = None) -> Sensor:
    global _MANUF
    if _MANUF is None:
        _MANUF = ManufDatabase.load()
    return Sensor(parse_config(config or {}), manuf=_MANUF)


def scrape(sensor: Sensor) -> dict[str, dict[tuple, float]]:
    """metric sample name -> {sorted (label, value) pairs without `sensor`: value}, from the exposition text."""
    out: dict[str, dict[tuple, float]] = {}
    text = generate_latest(build_registry(sensor)).decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "sensor"))
            assert s.labels.get("sensor", "camwatch") == "camwatch"
            out.setdefault(s.name, {})[labels] = s.value
    return out


def by_label(metrics: dict, name: str, label: str) -> dict[str, float]:
    """Every sample of a family with a single label (besides `sensor`), as {label value: value}."""
    samples = metrics[name]
    assert all(len(k) == 1 and k[0][0] == label for k in samples), samples
    return {k[0][1]: v for k, v in samples.items()}


def single(metrics: dict, name: str) -> float:
    samples = metrics[name]
    assert list(samples) == [()], samples
    return samples[()]


# ---- frames of every decode outcome -------------------------------------------------------------------------
def v4_udp(sport=5000, dport=6000, payload=b"u" * 18, src=CAM, dst=NVR) -> bytes:
    return ethernet(OTHER_MAC, CAM_MAC, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)))


def v4_tcp(payload=b"") -> bytes:
    return ethernet(OTHER_MAC, CAM_MAC, 0x0800, ipv4(CAM, NVR, 6, tcp(CAM, NVR, 40000, 80, 1, 1, "PA", payload)))


def bad_ip_header() -> bytes:
    frame = bytearray(v4_udp())
    frame[14] = 0x44          # version 4, IHL 4 words: shorter than the 20-byte minimum
    return bytes(frame)


def bad_tcp_header() -> bytes:
    frame = bytearray(v4_tcp(b"payload!"))
    frame[14 + 20 + 12] = 0x40   # TCP data offset 4 words: shorter than the 20-byte minimum
    return bytes(frame)


def vlan_too_deep() -> bytes:
    """Nine 802.1Q tags: one more than decode follows (MAX_VLAN_TAGS = 8)."""
    packet = ipv4(CAM, NVR, 17, udp(CAM, NVR, 5000, 6000, b"v" * 8))
    return ethernet(OTHER_MAC, CAM_MAC, 0x0800, packet, vlans=tuple((0x8100, 20 + k) for k in range(9)))


def ipv6_chain_too_deep() -> bytes:
    """Seventeen 8-byte destination-options headers before UDP: one more than decode follows (MAX_EXT_HEADERS)."""
    inner = udp(V6_CAM, V6_PEER, 5000, 6000, b"6" * 8)
    chain = b"".join(struct.pack("!BB6x", 60 if k < 16 else 17, 0) for k in range(17))
    return ethernet(OTHER_MAC, CAM_MAC, 0x86DD, ipv6(V6_CAM, V6_PEER, 60, chain + inner))


def v6_udp() -> bytes:
    return ethernet(OTHER_MAC, CAM_MAC, 0x86DD, ipv6(V6_CAM, V6_PEER, 17, udp(V6_CAM, V6_PEER, 5000, 6000, b"w" * 8)))


def arp() -> bytes:
    return ethernet(b"\xff" * 6, CAM_MAC, 0x0806, bytes(28))


def lldp() -> bytes:
    return ethernet(mac("01:80:c2:00:00:0e"), CAM_MAC, 0x88CC, bytes(30))


TRUNCATED_WIRELEN = 98   # the frame was 98 bytes on the wire; 20 were captured (snaplen)


def error_mix() -> list[tuple]:
    """25 frames: 15 decode errors of five reasons in distinct numbers (1, 2, 3, 4, 5), 10 good frames,
    interleaved and spread over seven seconds of capture time."""
    good = [v4_udp(), v4_udp(), v4_udp(), v4_udp(sport=5001), v4_udp(sport=5001), v4_udp(sport=5001), v6_udp(),
            arp(), arp(), lldp()]
    bad = ([(v4_udp()[:20], 1, TRUNCATED_WIRELEN)]                  # truncated: 1
           + [(bad_ip_header(), 1, None)] * 2                        # bad_ip_header: 2
           + [(bad_tcp_header(), 1, None)] * 3                       # bad_tcp_header: 3
           + [(bytes(range(60)), 147, None)] * 4                     # unknown_linktype (USER0): 4
           + [(vlan_too_deep(), 1, None)] * 3 + [(ipv6_chain_too_deep(), 1, None)] * 2)   # header_too_deep: 5
    frames = [(f, 1, None) for f in good] + bad
    order = [0, 10, 1, 11, 12, 2, 13, 14, 15, 3, 16, 17, 18, 19, 4, 20, 21, 5, 22, 23, 6, 24, 7, 8, 9]
    assert sorted(order) == list(range(25))
    return [(T0 + 0.3 * i, *frames[j]) for i, j in enumerate(order)]


EXPECTED_ERRORS = {"truncated": 1, "bad_ip_header": 2, "bad_tcp_header": 3, "unknown_linktype": 4,
                   "header_too_deep": 5}
# by network: truncated, bad IP and bad TCP frames are IPv4 (1 + 2 + 3) plus the six good IPv4 frames; the two deep
# IPv6 chains and the good IPv6 frame; two ARP; the unknown link type (4), the nine-tag stacks (3) and LLDP (1)
EXPECTED_NETWORKS = {"ipv4": 12, "ipv6": 3, "arp": 2, "other": 8}


def test_decode_errors_are_counted_per_reason_in_the_exported_metric():
    sensor = sensor_with()
    records = error_mix()
    sensor.process(make_batch(records))
    m = scrape(sensor)
    assert by_label(m, "camwatch_decode_errors_total", "reason") == EXPECTED_ERRORS
    assert sensor.summary()["decode_errors"] == 15
    sensor.finish()
    assert by_label(scrape(sensor), "camwatch_decode_errors_total", "reason") == EXPECTED_ERRORS


def test_decode_errors_accumulate_over_batches_and_windows():
    """The same mix twice, in two batches: every counter exactly doubles."""
    sensor = sensor_with()
    sensor.process(make_batch(error_mix()))
    sensor.process(make_batch([(t + 10.0, *rest) for t, *rest in error_mix()]))
    m = scrape(sensor)
    assert by_label(m, "camwatch_decode_errors_total", "reason") == {k: 2 * v for k, v in EXPECTED_ERRORS.items()}
    assert by_label(m, "camwatch_decoded_packets_total", "network") == {
        k: 2 * v for k, v in EXPECTED_NETWORKS.items()}
    assert single(m, "camwatch_packets_total") == 50


def test_packets_bytes_and_networks_by_value():
    sensor = sensor_with()
    records = error_mix()
    sensor.process(make_batch(records))
    sensor.finish()
    m = scrape(sensor)
    wire_bytes = sum(len(r[1]) for r in records) - 20 + TRUNCATED_WIRELEN   # original length, not captured length
    assert single(m, "camwatch_packets_total") == 25
    assert single(m, "camwatch_bytes_total") == wire_bytes
    assert by_label(m, "camwatch_decoded_packets_total", "network") == EXPECTED_NETWORKS
    assert single(m, "camwatch_last_packet_timestamp_seconds") == records[-1][0]
    summary = sensor.summary()
    assert (summary["packets"], summary["bytes"], summary["non_ip_packets"]) == (25, wire_bytes, 10)
    # flows: two IPv4 UDP flows (ports 5000 and 5001), the IPv6 UDP flow, and the deep IPv6 chains, which the
    # flows still count (port-less, under the next header where the walk stopped)
    assert single(m, "camwatch_flows_created_total") == 4
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 0, "active": 0, "evicted": 0, "end": 4}


# ---- flows created and expired, per reason -----------------------------------------------------------------------
def test_flows_expired_idle_by_value():
    sensor = sensor_with({"flows": {"udp_idle_timeout": 60}})
    sensor.process(make_batch([(T0, v4_udp(sport=5000)), (T0 + 0.5, v4_udp(sport=5001)),
                               (T0 + 70.0, v4_udp(sport=5002))]))
    m = scrape(sensor)
    assert single(m, "camwatch_flows_created_total") == 3
    assert single(m, "camwatch_flows_active") == 1
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 2, "active": 0, "evicted": 0, "end": 0}
    sensor.finish()
    m = scrape(sensor)
    assert single(m, "camwatch_flows_created_total") == 3
    assert single(m, "camwatch_flows_active") == 0
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 2, "active": 0, "evicted": 0, "end": 1}


def test_flows_expired_active_by_value():
    sensor = sensor_with({"flows": {"active_timeout": 100}})
    sensor.process(make_batch([(T0 + 30 * k, v4_udp()) for k in range(10)]))
    sensor.finish()
    m = scrape(sensor)
    assert single(m, "camwatch_flows_created_total") == 3
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 0, "active": 2, "evicted": 0, "end": 1}


def test_flows_evicted_by_value():
    sensor = sensor_with({"flows": {"max_flows": 3}})
    sensor.process(make_batch([(T0 + 0.1 * k, v4_udp(sport=5000 + k)) for k in range(5)]))
    m = scrape(sensor)
    assert single(m, "camwatch_flows_created_total") == 5
    assert single(m, "camwatch_flows_active") == 3
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 0, "active": 0, "evicted": 2, "end": 0}
    sensor.finish()
    assert by_label(scrape(sensor), "camwatch_flows_expired_total", "reason") == {
        "idle": 0, "active": 0, "evicted": 2, "end": 3}


def test_closed_tcp_flow_expiry_counts_as_idle():
    c, s = CAM, NVR

    def seg(src, dst, sp, dp, flags):
        return ethernet(OTHER_MAC, CAM_MAC, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sp, dp, 1, 1, flags)))
    records = [(T0, seg(c, s, 40000, 80, "S")), (T0, seg(s, c, 80, 40000, "SA")), (T0, seg(c, s, 40000, 80, "A")),
               (T0 + 1, seg(c, s, 40000, 80, "FA")), (T0 + 1, seg(s, c, 80, 40000, "FA")),
               (T0 + 7.0, v4_udp())]   # 6 s after the close, past the 5 s closed timeout
    sensor = sensor_with()
    sensor.process(make_batch(records))
    m = scrape(sensor)
    assert single(m, "camwatch_flows_created_total") == 2
    assert by_label(m, "camwatch_flows_expired_total", "reason") == {"idle": 1, "active": 0, "evicted": 0, "end": 0}


# ---- what a device sent, and the alerts ------------------------------------------------------------------------
def test_device_egress_bytes_by_scope_and_alert_counters_by_value():
    """The camera sends to a public address (and gets one reply), to the recorder as an RTP sender, and answers the
    recorder's RTSP connection as the responder; the recorder is a camera-side device too. Each device's egress
    bytes per scope are the wire lengths of exactly the frames it sent. The RTSP exchange comes in three batches
    within one second of capture time, both sides sending in the last two, so the updates the sensor sums per
    second (a flow's known updates reach the detectors when the second ends) are covered as well."""
    to_public = [v4_udp(payload=b"p" * n, dst=PUBLIC, dport=9000) for n in (100, 200, 300)]
    from_public = ethernet(CAM_MAC, OTHER_MAC, 0x0800,
                           ipv4(PUBLIC, CAM, 17, udp(PUBLIC, CAM, 9000, 5000, b"r" * 50)))
    to_nvr = [v4_udp(payload=b"n" * n, sport=6970, dport=5004) for n in (400, 500)]

    def rtsp(src, dst, sport, dport, flags, body=b""):
        src_mac = CAM_MAC if src == CAM else OTHER_MAC
        return ethernet(OTHER_MAC if src == CAM else CAM_MAC, src_mac, 0x0800,
                        ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, flags, body)))
    nvr_sent = [rtsp(NVR, CAM, 40000, 554, "S"), rtsp(NVR, CAM, 40000, 554, "A"),
                rtsp(NVR, CAM, 40000, 554, "PA", b"DESCRIBE rtsp://cam/ RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
                rtsp(NVR, CAM, 40000, 554, "A")]
    cam_answered = [rtsp(CAM, NVR, 554, 40000, "SA"), rtsp(CAM, NVR, 554, 40000, "PA", b"RTSP/1.0 200 OK\r\n" * 9),
                    rtsp(CAM, NVR, 554, 40000, "PA", b"v=0\r\n" * 40)]
    first = [(T0, to_public[0]), (T0 + 0.2, to_nvr[0]), (T0 + 1.5, from_public), (T0 + 2.5, to_public[1]),
             (T0 + 3.5, to_nvr[1]), (T0 + 4.5, to_public[2]),
             (T0 + 5.0, nvr_sent[0]), (T0 + 5.1, cam_answered[0]), (T0 + 5.2, nvr_sent[1])]
    second = [(T0 + 5.3, nvr_sent[2]), (T0 + 5.4, cam_answered[1])]
    third = [(T0 + 5.5, cam_answered[2]), (T0 + 5.6, nvr_sent[3])]
    sensor = sensor_with()
    for batch in (first, second, third):
        sensor.process(make_batch(batch))
    sensor.finish()
    m = scrape(sensor)
    egress: dict[str, dict[str, float]] = {}
    for k, v in m["camwatch_device_egress_bytes_total"].items():
        egress.setdefault(dict(k)["device"], {})[dict(k)["scope"]] = v
    cam_local = sum(map(len, to_nvr + cam_answered))
    assert egress == {CAM: {"public": sum(map(len, to_public)), "camera": cam_local},
                      NVR: {"camera": sum(map(len, nvr_sent))}}
    dev = sensor.inventory.devices.get(CAM)
    assert (dev.packets_sent, dev.bytes_sent) == (8, sum(map(len, to_public)) + cam_local)
    nvr = sensor.inventory.devices.get(NVR)
    assert (nvr.packets_sent, nvr.bytes_sent) == (4, sum(map(len, nvr_sent)))
    assert m["camwatch_top_destination_bytes"] == {
        (("country", "unknown"), ("destination", PUBLIC), ("device", CAM), ("owner", ""), ("rank", "1"),
         ("scope", "public")): sum(map(len, to_public))}
    assert single(m, "camwatch_external_destinations") == 1
    # one egress_policy alert, medium (Axis is not a covered maker), and every other counter at zero
    alerts = {(dict(k)["detector"], dict(k)["severity"]): v for k, v in m["camwatch_alerts_total"].items()}
    assert {k: v for k, v in alerts.items() if v} == {("egress_policy", "medium"): 1}
    assert len(alerts) == len(DETECTORS) * len(SEVERITIES)   # every detector and severity exported, zeros included
    assert set(by_label(m, "camwatch_alerts_suppressed_total", "detector").values()) == {0}


@pytest.mark.parametrize("name,value", [("camwatch_flows_created_total", 0), ("camwatch_packets_total", 0),
                                        ("camwatch_bytes_total", 0), ("camwatch_flows_active", 0)])
def test_a_fresh_sensor_exports_zeros(name, value):
    m = scrape(sensor_with())
    assert single(m, name) == value
    assert by_label(m, "camwatch_decode_errors_total", "reason") == dict.fromkeys(EXPECTED_ERRORS, 0)
