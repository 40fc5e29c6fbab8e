"""sensor/detect/hardcoded_infra.py: DNS, DNS over TLS and NTP straight to outside servers; UPnP gateway
discovery and port mapping."""

from __future__ import annotations

import pytest

from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.hardcoded_infra import HardcodedInfraDetector
from sensor.enrich import UpnpRequest

from .observations import device as _device
from .observations import observation as _obs


def _detector() -> HardcodedInfraDetector:
    return HardcodedInfraDetector(DetectorContext("site", Episodes(3600.0)))


@pytest.mark.parametrize("proto,port,service,severity", [("udp", 53, "DNS", "medium"), ("tcp", 53, "DNS", "medium"),
                                                         ("tcp", 853, "DNS over TLS", "medium"),
                                                         ("udp", 123, "NTP", "low")])
def test_each_service_to_an_outside_server_alerts(proto, port, service, severity):
    alert = _detector().observe(_obs(_device(), port=port, proto=proto, peer="8.8.8.8"))
    assert (alert.severity, alert.score, alert.extra) == (severity, 0.9, {"service": service.lower()})
    assert alert.summary == (f"10.20.0.5 sends {service} queries straight to 8.8.8.8 {proto}/{port} instead of the "
                             "site's servers: a hard-coded resolver or time source that bypasses site controls.")


def test_a_named_server_is_named_in_the_summary():
    alert = _detector().observe(_obs(_device(), port=853, proto="tcp", peer="9.9.9.9", name="dns.quad9.net"))
    assert alert.summary.startswith("10.20.0.5 sends DNS over TLS queries straight to dns.quad9.net (9.9.9.9) tcp/853 ")


def test_other_ports_answers_inside_and_silence_raise_nothing():
    detector = _detector()
    dev = _device()
    assert detector.observe(_obs(dev, port=123, proto="tcp")) is None
    assert detector.observe(_obs(dev, port=853, proto="udp")) is None
    assert detector.observe(_obs(dev, port=53, proto="udp", scope="allowed")) is None
    assert detector.observe(_obs(dev, port=53, proto="udp", initiated=False)) is None
    assert detector.observe(_obs(dev, port=53, proto="udp", sent_packets=0)) is None
    assert detector.observe(_obs(dev, port=53, proto="udp", scope="core")) is not None
    assert detector.observe(_obs(dev, port=53, proto="tcp", scope="core", ts=101.0)) is None   # same DNS episode
    assert detector.observe(_obs(dev, port=123, proto="udp", scope="core", ts=101.0)) is not None


def test_upnp_port_mapping_and_gateway_search():
    detector = _detector()
    dev = _device()
    mapping = UpnpRequest(7.0, dev, "upnp_port_mapping", "10.20.0.1", 1900, "udp", "camera", 20, " of TCP 554")
    alert = detector.upnp(mapping)
    assert alert.as_dict() == {
        "ts": 7.0, "sensor": "site", "detector": "hardcoded_infra", "severity": "high",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": None},
        "destination": {"ip": "10.20.0.1", "port": 1900, "proto": "udp", "name": None, "scope": "camera"},
        "score": 1.0, "summary": "10.20.0.5 asked the gateway 10.20.0.1 to open a port through the firewall (UPnP "
        "AddPortMapping of TCP 554).", "vlan": 20, "service": "upnp_port_mapping"}
    assert detector._episodes.take_dirty() == [(("hardcoded_infra", "10.20.0.5", "upnp_port_mapping"), 7.0, 7.0, 1, 0)]
    assert detector.upnp(mapping) is None
    search = detector.upnp(UpnpRequest(8.0, dev, "upnp_igd_discovery", "239.255.255.250", 1900, "udp", "multicast", 20,
                                       ""))
    assert (search.severity, search.score, search.extra) == ("low", 0.6, {"service": "upnp_igd_discovery"})
    assert search.summary == ("10.20.0.5 is searching for an Internet gateway it could open ports on (UPnP IGD "
                              "M-SEARCH); no port mapping seen yet.")
