"""sensor/detect/egress_policy.py: a camera-side device sending to the public Internet, one alert per (device,
address) episode, with its exact fields; the pings it sends are not egress."""

from __future__ import annotations

from sensor.detect.base import DetectorContext
from sensor.detect.egress_policy import EgressPolicyDetector
from sensor.detect.episodes import Episodes
from sensor.enrich.geography import NO_PLACE
from sensor.flows import Flow
from sensor.tags import TAG_ICMP_ECHO, TAG_ICMP_OTHER

from .observations import device as _device
from .observations import observation as _obs


def _detector() -> EgressPolicyDetector:
    return EgressPolicyDetector(DetectorContext("site", Episodes(3600.0)))


def test_a_covered_camera_opening_a_public_address_is_a_high_alert():
    alert = _detector().observe(_obs(_device(maker="Hikvision", vendor="Hangzhou Hikvision")))
    assert alert.as_dict() == {
        "ts": 100.0, "sensor": "site", "detector": "egress_policy", "severity": "high",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": "Hangzhou Hikvision"},
        "destination": {"ip": "203.0.113.7", "port": 443, "proto": "tcp", "name": None, "scope": "public", **NO_PLACE},
        "score": 1.0, "summary": "camera 10.20.0.5 (Hikvision) opened 203.0.113.7 tcp/443 on the public Internet, "
        "sending 3 packets (300 bytes) at first sight; no allow rule matches. Hikvision is a covered maker (named).",
        "vlan": 20, "direction": "outbound", "evidence": "opened 203.0.113.7 tcp/443 on the Internet"}


def test_an_uncovered_device_answering_is_a_medium_inbound_alert():
    alert = _detector().observe(_obs(_device(vendor="Acme"), initiated=False, sent_packets=1, sent_bytes=60,
                                     name="x.example.com", port=None, proto="udp"))
    assert (alert.severity, alert.extra, alert.dst_name, alert.dst_port) == (
        "medium", {"direction": "inbound",
                   "evidence": "answered a connection from x.example.com (203.0.113.7) udp on the Internet"},
        "x.example.com", None)
    assert alert.summary == ("10.20.0.5 (Acme) answered a connection from x.example.com (203.0.113.7) udp on the "
                             "public Internet, sending 1 packet (60 bytes) at first sight; no allow rule matches.")


def test_silence_or_other_scopes_raise_nothing_and_repeats_are_one_episode():
    detector = _detector()
    dev = _device()
    assert detector.observe(_obs(dev, sent_packets=0, sent_bytes=0)) is None
    for scope in ("core", "camera", "allowed", "private"):
        assert detector.observe(_obs(dev, scope=scope)) is None
    assert detector.observe(_obs(dev, port=443)) is not None
    assert detector.observe(_obs(dev, ts=200.0, port=8443)) is None          # same address, another port
    assert detector.observe(_obs(dev, ts=300.0, peer="203.0.113.8")) is not None
    assert detector.observe(_obs(dev, ts=300.0 + 3600.5, port=1)) is not None  # the episode timed out


def _icmp(orig_tags=0, resp_tags=0):
    flow = Flow(b"k" * 37, 20, 1, 0, 0, 100.0)
    flow.orig_tags, flow.resp_tags = orig_tags, resp_tags
    return flow


def test_pings_the_device_sends_are_a_connectivity_check_not_egress():
    detector = _detector()
    dev = _device(maker="Hikvision")
    ping = {"port": None, "proto": "icmp", "peer": "8.8.8.8", "sent_packets": 4, "sent_bytes": 4 * 98}
    assert detector.observe(_obs(dev, flow=_icmp(TAG_ICMP_ECHO), **ping)) is None
    # anything else in the flow, or packets too big for a ping (a tunnel over ICMP), is egress again
    assert detector.observe(_obs(dev, flow=_icmp(TAG_ICMP_ECHO | TAG_ICMP_OTHER), **ping)) is not None
    tunnel = {**ping, "peer": "203.0.113.9", "sent_bytes": 4 * 1100}
    assert detector.observe(_obs(dev, flow=_icmp(TAG_ICMP_ECHO), **tunnel)).severity == "high"
    # answering pings from the Internet: the device is reachable from outside
    answered = {**ping, "peer": "203.0.113.10"}
    alert = detector.observe(_obs(dev, initiated=False, flow=_icmp(resp_tags=TAG_ICMP_ECHO), **answered))
    assert alert.extra == {"direction": "inbound",
                           "evidence": "answered a connection from 203.0.113.10 icmp on the Internet"}
    # untyped ICMP (later fragments only) is not known to be a ping
    assert detector.observe(_obs(dev, flow=_icmp(), **{**ping, "peer": "203.0.113.11"})) is not None
