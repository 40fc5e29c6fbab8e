"""sensor/detect/hardcoded_infra.py: DNS (plain, over TLS, QUIC, HTTPS) and NTP straight to outside servers, with
well-known resolvers named from sensor/data/resolvers.toml; ICMP connectivity checks; UPnP gateway discovery and
port mapping."""

from __future__ import annotations

import pytest

from packets import ethernet, icmp_echo, ip, mac, tcp, tls_client_hello, udp
from sensor import compiled
from sensor.config import Config
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.hardcoded_infra import HardcodedInfraDetector
from sensor.enrich import ManufDatabase, UpnpRequest
from sensor.enrich.geography import NO_PLACE
from sensor.flows import Flow
from sensor.pipeline import Sensor
from sensor.tags import TAG_ICMP_ECHO, TAG_ICMP_OTHER, TAG_TLS

from .builders import batch_of
from .observations import device as _device
from .observations import observation as _obs


def _detector() -> HardcodedInfraDetector:
    return HardcodedInfraDetector(DetectorContext("site", Episodes(3600.0)))


def _flow(proto: int, orig_tags: int = 0, resp_tags: int = 0) -> Flow:
    flow = Flow(b"k" * 37, 20, proto, 0, 0, 100.0)
    flow.orig_tags, flow.resp_tags = orig_tags, resp_tags
    return flow


@pytest.mark.parametrize("proto,port,service,severity", [("udp", 53, "DNS", "medium"), ("tcp", 53, "DNS", "medium"),
                                                         ("tcp", 853, "DNS over TLS", "medium"),
                                                         ("udp", 853, "DNS over QUIC", "medium"),
                                                         ("udp", 123, "NTP", "low")])
def test_each_service_to_an_outside_server_alerts(proto, port, service, severity):
    alert = _detector().observe(_obs(_device(), port=port, proto=proto, peer="198.51.100.9"))
    assert (alert.severity, alert.score, alert.extra) == (
        severity, 0.9, {"protocol": service.lower(), "evidence": f"{service} to 198.51.100.9"})
    assert alert.summary == (f"10.20.0.5 sends {service} queries straight to 198.51.100.9 {proto}/{port} instead of "
                             "the site's servers: a hard-coded resolver or time source that bypasses site controls.")


def test_a_well_known_resolver_is_named_by_its_address_or_its_name():
    alert = _detector().observe(_obs(_device(), port=53, proto="udp", peer="8.8.8.8"))
    assert alert.extra == {"protocol": "dns", "evidence": "DNS to 8.8.8.8 (Google Public DNS)", "resolver": "google"}
    assert alert.summary.startswith("10.20.0.5 sends DNS queries straight to 8.8.8.8 udp/53 (Google Public DNS) ")
    v6 = _detector().observe(_obs(_device(), port=53, proto="udp", peer="2620:fe::fe"))
    assert v6.extra["resolver"] == "quad9"
    named = _detector().observe(_obs(_device(), port=853, proto="tcp", peer="203.0.113.9", name="dns.quad9.net"))
    assert named.summary.startswith("10.20.0.5 sends DNS over TLS queries straight to dns.quad9.net (203.0.113.9) "
                                    "tcp/853 (Quad9) ")


@pytest.mark.parametrize("name", ["dns.google", "cloudflare-dns.com", "one.one.one.one", "dns.quad9.net",
                                  "dns11.quad9.net", "doh.opendns.com", "dns.adguard-dns.com", "dns.alidns.com",
                                  "doh.pub", "security.cloudflare-dns.com", "abc123.dns.nextdns.io"])
def test_dns_over_https_is_recognised_by_the_name_a_resolver_presents(name):
    flow = _flow(6, orig_tags=TAG_TLS)
    alert = _detector().observe(_obs(_device(), port=443, peer="203.0.113.50", name=name, flow=flow))
    assert (alert.severity, alert.extra["protocol"], alert.extra["evidence"]) == (
        "medium", "dns over https", f"DNS over HTTPS to {name}")
    assert f"recognised by name {name}: a hard-coded encrypted resolver" in alert.summary


@pytest.mark.parametrize("peer,proto,resolver", [("8.8.8.8", "tcp", "google"), ("1.1.1.1", "tcp", "cloudflare"),
                                                 ("2606:4700:4700::1111", "tcp", "cloudflare"),
                                                 ("9.9.9.9", "udp", "quad9"), ("94.140.14.14", "tcp", "adguard")])
def test_dns_over_https_is_recognised_by_a_resolver_address_that_serves_it(peer, proto, resolver):
    alert = _detector().observe(_obs(_device(), port=443, proto=proto, peer=peer))
    assert alert.extra == {"protocol": "dns over https", "evidence": f"DNS over HTTPS to {peer}", "resolver": resolver}
    assert f"recognised by address {peer}" in alert.summary


@pytest.mark.parametrize("peer,port,name", [
    ("208.67.222.222", 443, None),          # OpenDNS's resolver addresses serve plain DNS only
    ("114.114.114.114", 443, None),         # a DNS-only resolver's address
    ("203.0.113.50", 443, None),            # any HTTPS
    ("203.0.113.50", 443, "www.google.com"),
    ("203.0.113.50", 443, "notdns.google"),
    ("203.0.113.50", 443, "dns.google.evil.example"),
    ("203.0.113.50", 443, "dnsxquad9.net"),
    ("8.8.8.8", 8443, None),                # not an HTTPS DNS port
    ("8.8.8.8", 80, "dns.google"),
])
def test_https_that_is_not_dns_raises_nothing(peer, port, name):
    assert _detector().observe(_obs(_device(), port=port, peer=peer, name=name)) is None


def test_dns_over_https_needs_the_device_to_open_it_to_the_outside():
    detector = _detector()
    dev = _device()
    assert detector.observe(_obs(dev, port=443, peer="8.8.8.8", initiated=False)) is None
    assert detector.observe(_obs(dev, port=443, peer="8.8.8.8", scope="allowed")) is None
    assert detector.observe(_obs(dev, port=443, peer="8.8.8.8", sent_packets=0)) is None
    assert detector.observe(_obs(dev, port=443, peer="8.8.8.8")) is not None
    assert detector.observe(_obs(dev, port=443, peer="8.8.8.8", ts=200.0, name="dns.google")) is None  # one episode


def test_an_icmp_echo_to_a_public_address_is_a_low_connectivity_check():
    detector = _detector()
    ping = _obs(_device(), port=None, proto="icmp", peer="8.8.8.8", sent_packets=1, sent_bytes=98,
                flow=_flow(1, orig_tags=TAG_ICMP_ECHO))
    alert = detector.observe(ping)
    assert (alert.severity, alert.dst_port, alert.dst_proto, alert.extra) == (
        "low", None, "icmp", {"protocol": "icmp echo", "evidence": "connectivity check: ICMP echo to 8.8.8.8",
                              "resolver": "google"})
    assert alert.summary == ("10.20.0.5 pings 8.8.8.8 (Google Public DNS) on the public Internet: a connectivity "
                             "check to a hard-coded address.")
    assert detector.observe(ping) is None
    other = detector.observe(_obs(_device(), port=None, proto="icmp", peer="203.0.113.7",
                                  flow=_flow(1, orig_tags=TAG_ICMP_ECHO)))
    assert other.extra == {"protocol": "icmp echo", "evidence": "connectivity check: ICMP echo to 203.0.113.7"}


@pytest.mark.parametrize("tags,initiated,scope", [
    (TAG_ICMP_OTHER, True, "public"),        # an unreachable or time-exceeded the device returns
    (0, True, "public"),                     # no type seen (a later fragment)
    (TAG_ICMP_ECHO, False, "public"),        # it answers pings from outside: not its own check
    (TAG_ICMP_ECHO, True, "core"),           # a ping into a core network is segmentation's
    (TAG_ICMP_ECHO, True, "allowed"),
])
def test_icmp_that_is_not_an_outbound_echo_is_no_connectivity_check(tags, initiated, scope):
    tagged = _flow(1, orig_tags=tags, resp_tags=tags)
    obs = _obs(_device(), port=None, proto="icmp", peer="8.8.8.8", initiated=initiated, scope=scope, flow=tagged)
    assert _detector().observe(obs) is None


def test_other_ports_answers_inside_and_silence_raise_nothing():
    detector = _detector()
    dev = _device()
    assert detector.observe(_obs(dev, port=123, proto="tcp")) is None
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
        "destination": {"ip": "10.20.0.1", "port": 1900, "proto": "udp", "name": None, "scope": "camera", **NO_PLACE},
        "score": 1.0, "summary": "10.20.0.5 asked the gateway 10.20.0.1 to open a port through the firewall (UPnP "
        "AddPortMapping of TCP 554).", "vlan": 20, "protocol": "upnp_port_mapping",
        "evidence": "UPnP AddPortMapping of TCP 554"}
    assert list(detector._episodes.take_dirty()) == [
        (("hardcoded_infra", "10.20.0.5", "upnp_port_mapping"), 7.0, 7.0, 1, 0)]
    assert detector.upnp(mapping) is None
    search = detector.upnp(UpnpRequest(8.0, dev, "upnp_igd_discovery", "239.255.255.250", 1900, "udp", "multicast", 20,
                                       ""))
    assert (search.severity, search.score, search.extra) == (
        "low", 0.6, {"protocol": "upnp_igd_discovery", "evidence": "UPnP IGD M-SEARCH"})
    assert search.summary == ("10.20.0.5 is searching for an Internet gateway it could open ports on (UPnP IGD "
                              "M-SEARCH); no port mapping seen yet.")


# ---- on the wire: packets through the whole pipeline (decode, ICMP tags, flows, TLS SNI) ----------------------------
def _wire(frames: list[bytes], impl_on: str, monkeypatch) -> list:
    monkeypatch.setattr(compiled, "tags", impl_on == "compiled")
    alerts: list = []
    sensor = Sensor(Config(), ManufDatabase({}), on_alert=alerts.append)
    sensor.process(batch_of(frames, ts=[1_700_000_000.0 + 0.2 * i for i in range(len(frames))]))
    sensor.finish()
    return [a for a in alerts if a.extra["event"] == "open"]


CAM, CAM_MAC, GW_MAC = "10.20.0.5", mac("00:12:34:00:00:05"), mac("00:0c:29:00:00:01")


def _to(dst: str, proto: int, l4: bytes) -> bytes:
    return ethernet(GW_MAC, CAM_MAC, 0x0800, ip(CAM, dst, proto, l4))


def _from(src: str, proto: int, l4: bytes) -> bytes:
    return ethernet(CAM_MAC, GW_MAC, 0x0800, ip(src, CAM, proto, l4))


def test_pings_on_the_wire_are_a_low_check_and_no_egress(impl, monkeypatch):
    frames = []
    for k in range(3):
        frames += [_to("8.8.8.8", 1, icmp_echo(9, k)), _from("8.8.8.8", 1, icmp_echo(9, k, reply=True))]
    unreachable = b"\x03\x03\x00\x00\x00\x00\x00\x00" + ip("203.0.113.9", CAM, 17, udp("203.0.113.9", CAM, 5, 9, b""))
    frames.append(_to("203.0.113.9", 1, unreachable))      # an error the camera returns: egress, no check
    alerts = _wire(frames, impl, monkeypatch)
    got = {(a.detector, a.dst_ip, a.severity) for a in alerts if a.detector in ("hardcoded_infra", "egress_policy")}
    assert got == {("hardcoded_infra", "8.8.8.8", "low"), ("egress_policy", "203.0.113.9", "medium")}


def test_dns_over_https_on_the_wire_is_named_by_its_client_hello(impl, monkeypatch):
    sni = tcp(CAM, "203.0.113.50", 40001, 443, 1, 1, "PA", tls_client_hello("dns.google"))
    other = tcp(CAM, "203.0.113.51", 40002, 443, 1, 1, "PA", tls_client_hello("www.example.com"))
    alerts = [a for a in _wire([_to("203.0.113.50", 6, sni), _to("203.0.113.51", 6, other)], impl, monkeypatch)
              if a.detector == "hardcoded_infra"]
    assert [(a.dst_ip, a.dst_name, [e["text"] for e in a.extra["evidence"] if e["detector"] == a.detector])
            for a in alerts] == [("203.0.113.50", "dns.google", ["DNS over HTTPS to dns.google"])]
