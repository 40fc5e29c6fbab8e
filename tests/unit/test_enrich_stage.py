"""sensor/enrich/stage.py and naming.py through the sensor: what each camera-side device's traffic becomes (the
observation's fields, its peer named by DNS answer or SNI, egress bytes per scope, external destinations), camera
DNS questions as events, and a core host reaching into the camera VLAN seen even when the camera stays silent."""

from __future__ import annotations

import random

import pytest

from packets import dns_query, dns_response, ethernet, ipv4, ipv6, mac, tcp, tls_client_hello, udp
from sensor.config import parse_config
from sensor.detect import Detector, DetectorContext, registry
from sensor.enrich import SCOPES, ManufDatabase
from sensor.enrich import new_flows as new_flow_batch
from sensor.enrich.geography import UNKNOWN, Geography, Place
from sensor.enrich.inventory import MAX_ROUTER_MACS
from sensor.enrich.scope import MAX_LEARNED_NETWORKS, SCOPE_PRIVATE, flow_context
from sensor.enrich.series import ByteSeries
from sensor.enrich.stage import Enricher
from sensor.flows import new_update
from sensor.pipeline import Sensor

from .test_export import T0, make_batch

CAM, RESOLVER, CLOUD, OTHER, CORE = "10.20.0.11", "10.20.0.1", "203.0.113.7", "198.51.100.9", "10.1.0.5"
CAM_MAC, ROUTER_MAC = mac("00:40:8c:00:00:11"), mac("02:00:00:00:00:fe")
NO_MANUF = ManufDatabase({})
SITE = {"networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]}, "allow": [{"dst": "*.allowed.example"}]}


class Recorder(Detector):
    name = "recorder"
    interest = frozenset(SCOPES)

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.events: list[tuple] = []
        self.balance: list[tuple] = []

    def observe(self, obs):
        assert obs.flow is not None
        self.balance.append((obs.ts, obs.peer, obs.initiated, obs.sent_bytes, obs.received_bytes,
                             obs.received_packets))
        self.events.append(("observe", obs.ts, obs.device.ip, obs.sent_packets, obs.sent_bytes, obs.initiated,
                            obs.peer, obs.port, obs.proto, obs.name, obs.scope, obs.vlan, obs.new_flow))

    def dns_query(self, query):
        self.events.append(("dns_query", query.ts, query.device.ip, query.qname, query.resolver,
                            query.resolver_scope, query.vlan, query.allowed))

    def dns_answer(self, answer):
        self.events.append(("dns_answer", answer.ts, answer.message.qname, answer.client, answer.vlan))

    def identity(self, report):
        self.events.append(("identity", report.ts, report.device.ip, report.fields))

    def upnp(self, request):
        self.events.append(("upnp", request.ts, request.device.ip, request.kind, request.peer, request.port,
                            request.proto, request.scope, request.vlan, request.detail))


def _frame(src, dst, l4, proto=17, src_mac=CAM_MAC, dst_mac=ROUTER_MAC):
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src, dst, proto, l4))


def _u(src, dst, sport, dport, payload, **kw):
    return _frame(src, dst, udp(src, dst, sport, dport, payload), **kw)


def _t(src, dst, sport, dport, flags, payload=b"", **kw):
    return _frame(src, dst, tcp(src, dst, sport, dport, 1, 1, flags, payload), 6, **kw)


def _run(monkeypatch, records, config=SITE, detectors=(Recorder,), **kw):
    monkeypatch.setattr(registry, "DETECTORS", detectors)
    sensor = Sensor(parse_config(config), manuf=NO_MANUF, **kw)   # no manuf file to read: makers from banners
    sensor.process(make_batch(records))
    sensor.finish()
    recorder = sensor.detection.find(Recorder)
    return sensor, recorder.events if recorder is not None else []


def test_dns_questions_answers_and_the_flow_they_name(monkeypatch):
    answer = dns_response(7, "cam.cloud.example", [("cam.cloud.example", 1, 60, CLOUD)])
    ntp = dns_response(8, "ntp.allowed.example", [("ntp.allowed.example", 1, 60, "192.0.2.123")])
    records = [(T0, _u(CAM, RESOLVER, 5353, 53, b"\xff" * 12)),                   # not a DNS message: skipped
               (T0, _u(CAM, RESOLVER, 5353, 53, dns_query(7, "cam.cloud.example"))),
               (T0, _u(CAM, RESOLVER, 5353, 53, dns_query(8, "ntp.allowed.example"))),
               (T0, _u(CAM, RESOLVER, 53, 5300, dns_query(9, "not.to.port53.example"))),   # a question, not to 53
               (T0, _u(CAM, RESOLVER, 5354, 53, dns_query(11, "cam.cloud.example"))),     # asked again: parsed once
               (T0, _u(OTHER, RESOLVER, 5353, 53, dns_query(10, "outsider.example"), src_mac=ROUTER_MAC)),
               (T0, _u(CAM, "8.8.8.8", 5355, 53, dns_query(12, "public.example"))),   # the resolver's scope
               (T0, _u(CAM, CORE, 5356, 53, dns_query(13, "core.example"))),
               (T0 + 0.1, _u(RESOLVER, CAM, 53, 5353, answer, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.1, _u(RESOLVER, CAM, 53, 5353, ntp, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.2, _u(CAM, CLOUD, 40000, 8800, b"x" * 100)),
               (T0 + 0.3, _u(CAM, "192.0.2.123", 40001, 123, b"n" * 48))]
    sensor, events = _run(monkeypatch, records)
    queries = [e for e in events if e[0] == "dns_query"]
    assert queries == [("dns_query", T0, CAM, "cam.cloud.example", RESOLVER, "camera", 0, False),
                       ("dns_query", T0, CAM, "ntp.allowed.example", RESOLVER, "camera", 0, True),
                       ("dns_query", T0, CAM, "cam.cloud.example", RESOLVER, "camera", 0, False),
                       ("dns_query", T0, CAM, "public.example", "8.8.8.8", "public", 0, False),
                       ("dns_query", T0, CAM, "core.example", CORE, "core", 0, False)]
    assert [e for e in events if e[0] == "dns_answer"] == [("dns_answer", T0 + 0.1, "cam.cloud.example", CAM, 0),
                                                           ("dns_answer", T0 + 0.1, "ntp.allowed.example", CAM, 0)]
    cloud = [e for e in events if e[0] == "observe" and e[6] == CLOUD]
    assert cloud == [("observe", T0 + 0.2, CAM, 1, len(records[-2][1]), True, CLOUD, 8800, "udp",
                      "cam.cloud.example", "public", 0, True)]
    assert [e[9:11] for e in events if e[0] == "observe" and e[6] == "192.0.2.123"] == [
        ("ntp.allowed.example", "allowed")]
    dev = sensor.inventory.devices.get(CAM)
    assert list(dev.dns_queries) == ["cam.cloud.example", "ntp.allowed.example", "public.example", "core.example"]
    public_question, core_question = records[6][1], records[7][1]
    assert dev.external_peers == {"8.8.8.8": [None, len(public_question)], CORE: [None, len(core_question)],
                                  CLOUD: ["cam.cloud.example", len(records[-2][1])]}
    assert sensor.enricher.external_destinations == {CLOUD, "8.8.8.8", CORE}
    assert sensor.enricher.names.lookup(CLOUD, T0 + 60 + 3600) == "cam.cloud.example"


def test_a_big_answer_teaches_its_names_without_being_remembered_as_parsed(monkeypatch):
    # unique jumbo answers (a flood's) would hold up to DNS_PARSE_CACHE of their bodies: only small ones are kept
    from sensor.enrich.naming import MAX_CACHED_DNS_BYTES
    big = dns_response(7, "big.example", [("big.example", 1, 60, f"203.0.113.{k}") for k in range(60)])
    small = dns_response(8, "cam.cloud.example", [("cam.cloud.example", 1, 60, CLOUD)])
    assert len(big) > MAX_CACHED_DNS_BYTES >= len(small)
    records = [(T0, _u(RESOLVER, CAM, 53, 5353, body, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)) for body in (big, small)]
    sensor, events = _run(monkeypatch, records)
    assert [e[2] for e in events if e[0] == "dns_answer"] == ["big.example", "cam.cloud.example"]
    assert sensor.enricher.names.lookup("203.0.113.59", T0) == "big.example"
    assert [len(key) + 2 for key in sensor.enricher._dns._parsed] == [len(small)]


def test_a_flood_of_unique_answers_is_read_within_its_budget_and_the_sites_own_dns_still_is(monkeypatch):
    """A forged sender floods unique answers of 64 records each (~260 us apiece to read): within one capture
    second it is read up to its share of the DNS budget, the rest left unread and counted; the site's resolver
    answering in the same second, and a camera's question, are read all the same, and the next second has a budget
    again."""
    from sensor.enrich.naming import DNS_SENDER_RECORDS_PER_SECOND
    forger, mac_of_forger = "10.20.0.66", mac("00:40:8c:00:00:66")
    flood = [(T0 + i / 1000, _u(forger, CAM, 53, 40053, dns_response(i, f"n{i}.example", [
        (f"n{i}.example", 1, 60, f"198.51.{i}.{k}") for k in range(64)]), src_mac=mac_of_forger, dst_mac=CAM_MAC))
        for i in range(100)]
    answer = dns_response(7, "cam.cloud.example", [("cam.cloud.example", 1, 60, CLOUD)])
    late = dns_response(8, "late.example", [("late.example", 1, 60, f"198.51.200.{k}") for k in range(64)])
    records = [*flood, (T0 + 0.5, _u(RESOLVER, CAM, 53, 40053, answer, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.6, _u(CAM, RESOLVER, 40053, 53, dns_query(9, "asked.example"))),
               (T0 + 1.5, _u(forger, CAM, 53, 40053, late, src_mac=mac_of_forger, dst_mac=CAM_MAC))]
    sensor, events = _run(monkeypatch, records)
    read = DNS_SENDER_RECORDS_PER_SECOND // 64
    answered = [e[2] for e in events if e[0] == "dns_answer"]
    assert answered == [f"n{i}.example" for i in range(read)] + ["cam.cloud.example", "late.example"]
    assert sensor.enricher.parses_skipped == {"dns": 100 - read, "identity": 0}
    assert [e[3] for e in events if e[0] == "dns_query"] == ["asked.example"]
    assert sensor.enricher.names.lookup(CLOUD, T0 + 1) == "cam.cloud.example"


def test_an_ipv6_cameras_question_names_its_device_and_resolver_as_printed(monkeypatch):
    cam, resolver, outsider = "2001:db8:20::11", "2001:db8:1::53", "2001:db8:99::1"
    records = [(T0, ethernet(ROUTER_MAC, CAM_MAC, 0x86DD, ipv6(cam, resolver, 17, udp(
                   cam, resolver, 5353, 53, dns_query(7, "cam.cloud.example"))))),
               (T0, ethernet(ROUTER_MAC, ROUTER_MAC, 0x86DD, ipv6(outsider, resolver, 17, udp(
                   outsider, resolver, 5353, 53, dns_query(8, "outsider.example")))))]
    config = {"networks": {"camera": ["2001:db8:20::/64"], "core": ["2001:db8:1::/48"]}}
    sensor, events = _run(monkeypatch, records, config)
    assert [e for e in events if e[0] == "dns_query"] == [
        ("dns_query", T0, cam, "cam.cloud.example", resolver, "core", 0, False)]
    assert list(sensor.inventory.devices.get(cam).dns_queries) == ["cam.cloud.example"]


def test_a_client_hello_names_its_flow_and_the_device_counts_what_it_sent(monkeypatch):
    hello = tls_client_hello("video.cloud.example")
    sent = [_t(CAM, OTHER, 40001, 443, "S"), _t(CAM, OTHER, 40001, 443, "A"), _t(CAM, OTHER, 40001, 443, "PA", hello)]
    back = _t(OTHER, CAM, 443, 40001, "SA", src_mac=ROUTER_MAC, dst_mac=CAM_MAC)
    records = [(T0, sent[0]), (T0 + 0.01, back), (T0 + 0.02, sent[1]), (T0 + 0.03, sent[2]),
               (T0 + 2.0, _t(CAM, OTHER, 40001, 443, "A"))]
    sensor, events = _run(monkeypatch, records)
    observed = [e for e in events if e[0] == "observe"]
    assert observed[0] == ("observe", T0, CAM, 3, sum(map(len, sent)), True, OTHER, 443, "tcp", "video.cloud.example",
                           "public", 0, True)
    assert observed[1][1:11] == (T0 + 2.0, CAM, 1, len(records[-1][1]), True, OTHER, 443, "tcp",
                                 "video.cloud.example", "public")
    dev = sensor.inventory.devices.get(CAM)
    total = sum(map(len, sent)) + len(records[-1][1])
    assert (dev.packets_sent, dev.bytes_sent, dev.egress_bytes) == (4, total, {"public": total})
    assert sensor.enricher.roles.router_macs == {int.from_bytes(ROUTER_MAC, "big")}


def test_an_observation_carries_what_came_back_in_the_same_update(monkeypatch):
    """Either side of the flow: the camera as client (received: the responder's bytes) and as server (received:
    the originator's); a second in which only the peer sends is no observation."""
    out = [_t(CAM, CLOUD, 40001, 443, "S"), _t(CAM, CLOUD, 40001, 443, "PA", b"u" * 900)]
    back = [_t(CLOUD, CAM, 443, 40001, "SA", src_mac=ROUTER_MAC, dst_mac=CAM_MAC),
            _t(CLOUD, CAM, 443, 40001, "A", src_mac=ROUTER_MAC, dst_mac=CAM_MAC),
            _t(CLOUD, CAM, 443, 40001, "PA", b"d" * 300, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)]
    viewer = [_t(OTHER, CAM, 50000, 554, "PA", b"v" * 200, src_mac=ROUTER_MAC, dst_mac=CAM_MAC),
              _t(CAM, OTHER, 554, 50000, "PA", b"w" * 1200)]
    records = [(T0, out[0]), (T0 + 0.01, back[0]), (T0 + 2.0, out[1]), (T0 + 2.01, back[1]),
               (T0 + 4.0, back[2]), (T0 + 6.0, viewer[0]), (T0 + 6.01, viewer[1])]
    sensor, _ = _run(monkeypatch, records)
    assert sensor.detection.find(Recorder).balance == [
        (T0, CLOUD, True, len(out[0]), len(back[0]), 1),
        (T0 + 2.0, CLOUD, True, len(out[1]), len(back[1]), 1),
        (T0 + 6.0, OTHER, False, len(viewer[1]), len(viewer[0]), 1)]


def test_a_core_host_reaching_a_silent_camera_is_observed(monkeypatch):
    records = [(T0, _t(CORE, CAM, 50000, 554, "S", src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.5, _t(CORE, CAM, 50000, 554, "S", src_mac=ROUTER_MAC, dst_mac=CAM_MAC))]
    sensor, events = _run(monkeypatch, records)
    assert [e for e in events if e[0] == "observe"] == [
        ("observe", T0, CAM, 0, 0, False, CORE, 554, "tcp", None, "core", 0, True)]
    dev = sensor.inventory.devices.get(CAM)
    assert (dev.packets_sent, dev.bytes_sent, dev.egress_bytes) == (0, 0, {})
    assert sensor.inventory.devices.get(CORE) is None
    # a public host reaching a silent camera is not an observation: nothing was exchanged
    sensor, events = _run(monkeypatch, [(T0, _t(OTHER, CAM, 50000, 554, "S", src_mac=ROUTER_MAC, dst_mac=CAM_MAC))])
    assert [e for e in events if e[0] == "observe"] == []
    assert sensor.enricher.roles.router_macs == {int.from_bytes(ROUTER_MAC, "big")}   # the Internet side's MAC


SADP = (b'<?xml version="1.0" encoding="utf-8"?><ProbeMatch><Uuid>x</Uuid><Types>inquiry</Types><DeviceType>139'
        b'</DeviceType><DeviceDescription>DS-2CD2143G0-I</DeviceDescription><DeviceSN>DS-2CD2143G0-I2020</DeviceSN>'
        b'<SoftwareVersion>V5.6.3</SoftwareVersion></ProbeMatch>')
NVR = "10.20.0.2"


def test_banners_and_discovery_name_the_device_once_and_only_camera_side(monkeypatch):
    rtsp = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hikvision-Webs\r\n\r\n"
    records = [(T0, _t(CAM, NVR, 554, 40000, "PA", rtsp)),
               (T0 + 0.1, _t(CAM, NVR, 554, 40000, "PA", rtsp)),                  # identity known: not parsed again
               (T0 + 0.2, _u(CAM, "239.255.255.250", 37020, 37020, SADP)),
               (T0 + 0.3, _u(CAM, "239.255.255.250", 37020, 37020, SADP)),
               (T0 + 0.4, _t(OTHER, CAM, 80, 40000, "PA", b"HTTP/1.1 200 OK\r\nServer: Dahua Rtsp Server\r\n\r\n",
                             src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.5, _t(NVR, CAM, 40000, 554, "PA", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"))]   # no fields
    sensor, events = _run(monkeypatch, records)
    # within one window, discovery rows are read before banners
    assert [e for e in events if e[0] == "identity"] == [
        ("identity", T0 + 0.2, CAM, {"protocol": "sadp", "model": "DS-2CD2143G0-I", "serial": "DS-2CD2143G0-I2020",
                                     "firmware": "V5.6.3", "device_type": "139"}),
        ("identity", T0, CAM, {"server": "Hikvision-Webs"})]
    dev = sensor.inventory.devices.get(CAM)
    assert (dev.maker.name, dev.maker_evidence) == (
        "Hikvision", "model: DS-2CD2143G0-I (discovery); server: Hikvision-Webs (banner)")
    assert dev.identity["server"] == "Hikvision-Webs"
    assert "camera_discovery" in dev.evidence and dev.role == "camera"
    assert sensor.inventory.devices.get(NVR).identity == {}


def test_upnp_gateway_searches_and_port_mappings_become_requests(monkeypatch):
    search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
              b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")
    other_search = search.replace(b"device:InternetGatewayDevice:1", b"device:MediaRenderer:1")
    mapping = (b"POST /ctl/IPConn HTTP/1.1\r\nSOAPACTION: \"urn:schemas-upnp-org:service:WANIPConnection:1#"
               b"AddPortMapping\"\r\n\r\n<NewExternalPort> 8080 </NewExternalPort>")
    records = [(T0, _u(CAM, "239.255.255.250", 5000, 1900, search)),
               (T0, _u(CAM, "239.255.255.250", 5001, 1900, other_search)),
               (T0 + 0.1, _t(CAM, RESOLVER, 40000, 5000, "PA", mapping)),
               (T0 + 0.2, _t(CAM, RESOLVER, 40001, 5000, "PA", mapping.split(b"<New")[0])),
               (T0 + 0.3, _t(CAM, RESOLVER, 40002, 5000, "PA", b"POST /ctl HTTP/1.1\r\n\r\nGetStatusInfo")),
               (T0 + 0.4, _u(OTHER, "239.255.255.250", 5000, 1900, search, src_mac=ROUTER_MAC))]
    _, events = _run(monkeypatch, records)
    assert [e for e in events if e[0] == "upnp"] == [
        ("upnp", T0, CAM, "upnp_igd_discovery", "239.255.255.250", 1900, "udp", "multicast", 0, ""),
        ("upnp", T0 + 0.1, CAM, "upnp_port_mapping", RESOLVER, 5000, "tcp", "camera", 0, " for external port 8080"),
        ("upnp", T0 + 0.2, CAM, "upnp_port_mapping", RESOLVER, 5000, "tcp", "camera", 0, "")]


NVR_MAC = mac("00:40:8c:00:00:02")


def test_rtsp_roles_first_sightings_and_http_hosts(monkeypatch):
    get = b"GET / HTTP/1.1\r\nHost: cam.vendor.example\r\n\r\n"
    records = [(T0, _t(NVR, CAM, 40000, 554, "S", src_mac=NVR_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.1, _t(CAM, NVR, 554, 40000, "SA", dst_mac=NVR_MAC)),
               (T0 + 0.2, _t(CAM, OTHER, 40002, 80, "PA", get)),
               (T0 + 0.3, _t(CAM, OTHER, 40002, 80, "PA", get.replace(b"cam.vendor", b"other.vendor")))]
    sensor, events = _run(monkeypatch, records)
    assert sensor.inventory.devices.get(NVR).evidence == {"rtsp_client"}
    assert sensor.inventory.devices.get(CAM).evidence == {"rtsp_server"}
    assert sensor.known.device_first_seen(CAM, T0 + 999) == T0 and sensor.known.device_first_seen(NVR, T0 + 9) == T0
    assert {e[9] for e in events if e[0] == "observe" and e[6] == OTHER} == {"cam.vendor.example"}   # the first


def test_each_camera_banner_is_read_once_and_discovery_from_either_port(monkeypatch):
    rtsp = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hikvision-Webs\r\n\r\n"
    records = [(T0, _u(OTHER, CAM, 37020, 37020, SADP, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),   # not camera-side
               (T0, _u("10.20.0.21", "239.255.255.250", 5000, 37020, SADP)),
               (T0, _u("10.20.0.22", "10.20.0.9", 37020, 5000, SADP)),
               (T0 + 0.05, _t("10.20.0.24", NVR, 554, 40001, "PA", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")),  # no fields
               (T0 + 0.1, _t("10.20.0.23", NVR, 554, 40000, "PA", rtsp)),
               (T0 + 0.2, _t("10.20.0.23", NVR, 554, 40000, "PA", rtsp))]
    sensor, events = _run(monkeypatch, records)
    assert [(e[2], sorted(e[3])) for e in events if e[0] == "identity"] == [
        ("10.20.0.21", ["device_type", "firmware", "model", "protocol", "serial"]),
        ("10.20.0.22", ["device_type", "firmware", "model", "protocol", "serial"]),
        ("10.20.0.23", ["server"])]
    assert "camera_discovery" not in sensor.inventory.devices.get("10.20.0.23").evidence


def _mixed_flows(seed: int) -> list[tuple]:
    """Random flows among camera-side, core, private, public and multicast hosts over a few seconds: new port pairs
    each packet or answered in the same window, from cameras' own MACs, a router's, or none (0)."""
    rng = random.Random(seed)
    own = {CAM: CAM_MAC, NVR: mac("00:40:8c:00:00:02"), "10.20.0.12": mac("00:40:8c:00:00:12"),
           "10.30.0.40": mac("3c:ef:8c:00:00:40"), "10.30.0.41": mac("3c:ef:8c:00:00:41"), "192.168.7.9": b"\x00" * 6}
    hosts = [*own, CORE, CLOUD, OTHER, "239.255.255.250", "203.0.113.200"]

    def mac_of(host):   # a host's own MAC, sometimes another camera-side host's; the router's beyond the VLAN
        if host not in own:
            return ROUTER_MAC
        return rng.choice(list(own.values())) if rng.random() < 0.05 else own[host]

    records = []
    for i in range(600):
        ts = T0 + i * 0.01
        src, dst = rng.sample(hosts, 2)
        sport, dport = rng.choice([(40000 + i, 443), (50000 + i, 554), (123, 123), (40000 + i % 7, 80)])
        kw = {"src_mac": mac_of(src), "dst_mac": mac_of(dst)}
        frame = _t(src, dst, sport, dport, rng.choice(["S", "SA", "PA", "R"]), b"p" * rng.randrange(60), **kw) \
            if rng.random() < 0.6 else _u(src, dst, sport, dport, b"q" * rng.randrange(1, 80), **kw)
        records.append((ts, frame))
        if rng.random() < 0.3:   # answered in the same window: both sides of a new flow sent
            kw = {"src_mac": kw["dst_mac"], "dst_mac": kw["src_mac"]}
            records.append((ts + 0.001, _u(dst, src, dport, sport, b"r" * 20, **kw)))
    return records


def _outcome(sensor: Sensor) -> tuple:
    inv = sensor.inventory
    return (sensor.detection.find(Recorder).events,
            sorted((d.ip, d.mac, d.packets_sent, d.bytes_sent, sorted(d.egress_bytes.items()), sorted(d.evidence))
                   for d in inv.devices.values()),
            sorted(inv.router_macs), sensor.enricher.link.learned_state(),
            sorted(sensor.enricher.external_destinations))


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
@pytest.mark.parametrize("seed", range(4))
def test_new_flows_in_one_call_do_what_flow_update_does_one_by_one(monkeypatch, config, seed):
    """Enricher.new_flows settles most of a flood's flows from their scopes alone: the same events, devices,
    routers and learned networks as the reference, flow_update for each new flow in turn."""
    records = _mixed_flows(seed)
    _, events = _run(monkeypatch, records, config)
    fast = _outcome(_run(monkeypatch, records, config)[0])
    monkeypatch.setattr(Enricher, "new_flows", lambda self, flows: [self.flow_update(new_update(f)) for f in flows])
    reference = _outcome(_run(monkeypatch, records, config)[0])
    assert fast == reference
    # the cases are exercised, not vacuous: observations, a router, and (zero-config) networks learned from flows
    assert any(e[0] == "observe" for e in events) and reference[2] and (config or reference[3]["networks"])


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
@pytest.mark.parametrize("seed", range(3))
def test_new_flows_hold_back_what_flow_update_holds_back(monkeypatch, config, seed):
    """With the new-device budget spent, new_flows settles a new source's one-way flow as held (inventory
    holds_back) where flow_update would reach touch() and be told None: the same outcome and the same held count,
    among sources that answer, known devices and the budget refilling between seconds."""
    rng = random.Random(seed)
    records = _mixed_flows(seed)
    for i in range(400):   # forged camera-side sources, one packet each, some answered, over 4 s
        src = f"10.20.0.{30 + i % 220}"
        ts = T0 + i * 0.01 + 0.003
        records.append((ts, _t(src, CLOUD, 30000 + i, 443, "S", b"", src_mac=mac("00:de:ad:00:00:01"))))
        if rng.random() < 0.1:
            records.append((ts + 0.001, _t(CLOUD, src, 443, 30000 + i, "SA", b"", dst_mac=mac("00:de:ad:00:00:01"))))
    records.sort(key=lambda r: r[0])
    tight = {**config, "limits": {"max_devices": 8, "new_devices_burst": 3, "new_devices_per_second": 5}}

    def outcome(sensor):
        return _outcome(sensor), sensor.inventory.admission.held
    fast = outcome(_run(monkeypatch, records, tight)[0])
    monkeypatch.setattr(Enricher, "new_flows", lambda self, flows: [self.flow_update(new_update(f)) for f in flows])
    reference = outcome(_run(monkeypatch, records, tight)[0])
    assert fast == reference
    assert reference[1] > 300   # most forged sources were held back: the fast way was taken, not skipped


def _flow_update_reference(self, upd):
    """Enricher.flow_update as it was before the updates without a camera side were settled inline: _side for
    each side in turn, whatever the scopes."""
    flow = upd.flow
    if upd.new and self.classifier.zero_config:
        self._link.note_flow(upd)
    ctx = flow.context
    if ctx is None or ctx[6] != self.classifier.generation:
        ctx = flow_context(self.classifier, flow)
    if (not upd.new and SCOPE_PRIVATE in ctx[:2] and self.classifier.zero_config   # a later sighting (flow_update)
            and len(self.classifier.learned) < MAX_LEARNED_NETWORKS):
        self._link.note_flow(upd)
        ctx = flow_context(self.classifier, flow)
    ctx = self._side(upd, ctx, True)
    ctx = self._side(upd, ctx, False)
    if not upd.new:
        flow.context = ctx


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("routers", [8, 90], ids=["routers", "routers-past-the-bound"])
def test_updates_without_a_camera_side_do_what_each_side_would(monkeypatch, config, seed, routers):
    """flow_update settles a known flow with no camera-side end (core, private, public, multicast hosts only)
    without _side: the same events, devices, routers and learned networks as calling _side for each side, on
    flows that last several seconds (so that their later seconds come to flow_update)."""
    rng = random.Random(seed)
    # Public hosts behind routers of their own, each MAC a router's only once its host has sent; they only answer
    # (a flow's originator is its first sender), in the seconds after the flow began, so their MACs are marked by
    # flow_update alone. Private, core, multicast and camera-side hosts among the rest; a few port pairs, so that
    # flows come back second after second.
    publics = {f"203.0.113.{k}": mac(f"02:00:00:00:01:{k:02x}") for k in range(1, routers + 1)}
    others = {"192.168.7.9": mac("3c:ef:8c:00:00:09"), CORE: mac("3c:ef:8c:00:00:05"),
              "239.255.255.250": mac("01:00:5e:7f:ff:fa"), CAM: CAM_MAC, "10.30.0.40": mac("3c:ef:8c:00:00:40")}
    hosts = {**publics, **others}
    pairs = [(rng.choice(list(others)), rng.choice(list(hosts)), rng.choice([(40000, 443), (123, 123), (50000, 554)]))
             for _ in range(3 * routers)]
    records = [(T0 + i * 0.001, _u(a, b, sport, dport, b"q", src_mac=hosts[a], dst_mac=hosts[b]))
               for i, (a, b, (sport, dport)) in enumerate(pairs) if a != b]
    for i in range(60 * routers):
        a, b, (sport, dport) = rng.choice(pairs)
        if a == b:
            continue
        if rng.random() < 0.5:
            a, b, sport, dport = b, a, dport, sport
        payload = b"q" * rng.randrange(1, 80)
        records.append((T0 + 1 + i * 6 / (60 * routers), _u(a, b, sport, dport, payload, src_mac=hosts[a],
                                                            dst_mac=hosts[b])))
    sides = []
    monkeypatch.setattr(Enricher, "_side", lambda self, upd, ctx, is_orig, side=Enricher._side: (
        sides.append(is_orig), side(self, upd, ctx, is_orig))[1])
    fast, fast_sides = _outcome(_run(monkeypatch, records, config)[0]), len(sides)
    monkeypatch.setattr(Enricher, "flow_update", _flow_update_reference)
    reference = _outcome(_run(monkeypatch, records, config)[0])
    assert fast == reference
    # exercised: known flows without a camera side reached flow_update and were settled without _side, and a
    # public sender's MAC was marked as a router's
    assert len(sides) - fast_sides > fast_sides / 10 and reference[2]
    assert len(reference[2]) == MAX_ROUTER_MACS if routers > MAX_ROUTER_MACS else len(reference[2]) < MAX_ROUTER_MACS


def test_a_device_is_seen_up_to_the_last_packet_of_each_update(monkeypatch):
    """A flow update touches its device from the update's first packet to the flow's last: the device's last
    sighting and its address's are the last packet's time, in the new flow's second and in a later one's."""
    records = [(T0 + k * 0.3, _u(CAM, CLOUD, 40000, 8800, b"x" * 10)) for k in range(3)]
    sensor, _ = _run(monkeypatch, records)
    dev = sensor.inventory.devices.get(CAM)
    assert (dev.first_seen, dev.last_seen, dev.addresses[CAM]) == (T0, records[-1][0], records[-1][0])
    records += [(T0 + 1.2 + k * 0.3, _u(CAM, CLOUD, 40000, 8800, b"x" * 10)) for k in range(2)]
    sensor, _ = _run(monkeypatch, records)
    dev = sensor.inventory.devices.get(CAM)
    assert (dev.first_seen, dev.last_seen, dev.addresses[CAM]) == (T0, records[-1][0], records[-1][0])


class _Everywhere(Geography):
    """Every address placed in one country: which peers count as egress is then the stage's choice alone."""

    def place(self, ip: str) -> Place | None:
        return Place("FR", None, None, None)


def test_egress_by_country_is_a_camera_sides_bytes_to_public_and_allowed_peers(monkeypatch):
    """Per country, per coverage and over time: a camera's bytes to a public peer and to an allowed one (counted
    only when placed: an allowed server of unknown place is no egress); never those to the camera side or the
    core, placed or not."""
    ntp = dns_response(8, "ntp.allowed.example", [("ntp.allowed.example", 1, 60, "192.0.2.123")])
    records = [(T0, _u(CAM, RESOLVER, 5353, 53, dns_query(8, "ntp.allowed.example"))),
               (T0 + 0.1, _u(RESOLVER, CAM, 53, 5353, ntp, src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 1.2, _u(CAM, CLOUD, 40000, 8800, b"x" * 100)),
               (T0 + 2.3, _u(CAM, "192.0.2.123", 40001, 123, b"n" * 48)),
               (T0 + 3.4, _u(CAM, CORE, 40002, 8080, b"c" * 70)),
               (T0 + 3.5, _u(CAM, NVR, 40003, 554, b"v" * 30))]
    cloud, allowed = len(records[2][1]), len(records[3][1])
    sensor, events = _run(monkeypatch, records, geography=_Everywhere())
    assert [e[6] for e in events if e[0] == "observe" and e[10] == "allowed"] == ["192.0.2.123"]   # named: allowed
    covered = sensor.inventory.devices.get(CAM).covered
    assert covered is False
    egress = sensor.enricher.egress_countries
    assert egress.bytes == {("FR", covered): cloud + allowed}
    series = ByteSeries()
    series.add(T0 + 1.2, cloud)
    series.add(T0 + 2.3, allowed)
    assert egress.series_state() == {"FR": series.state()}
    # nowhere known: the public peer's bytes under "unknown", the allowed server's not at all
    egress = _run(monkeypatch, records, geography=Geography())[0].enricher.egress_countries
    assert egress.bytes == {(UNKNOWN, covered): cloud}


def test_external_destinations_are_counted_up_to_their_bound(monkeypatch):
    """The gauge's set stops growing at MAX_EXTERNAL_DESTINATIONS (exactly); the device keeps every peer."""
    monkeypatch.setattr("sensor.enrich.stage.MAX_EXTERNAL_DESTINATIONS", 2)
    peers = ["203.0.113.7", "203.0.113.8", "203.0.113.9"]
    sensor, _ = _run(monkeypatch, [(T0 + i, _u(CAM, p, 40000 + i, 8800, b"x")) for i, p in enumerate(peers)])
    assert sensor.enricher.external_destinations == set(peers[:2])
    assert set(sensor.inventory.devices.get(CAM).external_peers) == set(peers)


def test_a_vendor_service_is_evidence_of_a_device_that_sends_to_it_outside_whatever_the_detectors_watch(monkeypatch):
    """Traffic with a maker's cloud names the maker even with no detector observing any scope; a camera sending to
    a private host answered for the same name is no such evidence (the service is outside: public or core)."""
    cam2, name, private = "10.20.0.12", "litedev.hik-connect.com", "192.168.7.9"
    records = [(T0, _u(CAM, RESOLVER, 5353, 53, dns_query(7, name))),
               (T0 + 0.1, _u(RESOLVER, CAM, 53, 5353, dns_response(7, name, [(name, 1, 60, CLOUD)]),
                             src_mac=ROUTER_MAC, dst_mac=CAM_MAC)),
               (T0 + 0.2, _u(CAM, CLOUD, 40000, 8800, b"x" * 100)),
               (T0 + 1.0, _u(cam2, RESOLVER, 5353, 53, dns_query(8, name), src_mac=mac("00:40:8c:00:00:12"))),
               (T0 + 1.1, _u(RESOLVER, cam2, 53, 5353, dns_response(8, name, [(name, 1, 60, private)]),
                             src_mac=ROUTER_MAC, dst_mac=mac("00:40:8c:00:00:12"))),
               (T0 + 1.2, _u(cam2, private, 40000, 8800, b"x" * 100, src_mac=mac("00:40:8c:00:00:12")))]
    sensor, _ = _run(monkeypatch, records, detectors=())
    assert not sensor.detection.scopes   # nothing observed: the evidence comes from the stage alone
    sources = {ip: {e.source for e in sensor.inventory.devices.get(ip).ranked_evidence()} for ip in (CAM, cam2)}
    assert "service" in sources[CAM] and "service" not in sources[cam2]
    assert sensor.enricher.names.lookup(private, T0 + 2) == name   # cam2's peer was named, and still no evidence


def test_a_public_originator_heard_only_in_a_later_second_marks_its_router(monkeypatch):
    """A flow first seen from its responder (a core server's UDP reply, low port to high: the capture began
    mid-conversation) has a public originator that has not sent; when it does, in a later second, its MAC is a
    router's (flow_update of a known flow without a camera side)."""
    core_mac = mac("3c:ef:8c:00:00:05")
    records = [(T0, _u(CORE, OTHER, 53, 40000, b"a" * 20, src_mac=core_mac, dst_mac=ROUTER_MAC)),
               (T0 + 1.5, _u(OTHER, CORE, 40000, 53, b"q" * 20, src_mac=ROUTER_MAC, dst_mac=core_mac))]
    assert _run(monkeypatch, records[:1])[0].enricher.roles.router_macs == set()
    assert _run(monkeypatch, records)[0].enricher.roles.router_macs == {int.from_bytes(ROUTER_MAC, "big")}


def test_a_flows_remembered_scopes_are_worked_out_again_once_a_network_is_learnt(monkeypatch):
    """Zero-config: a flow's scopes, remembered from its second second on, are stale once the sensor learns a
    camera-side network (here another host's /24, from a second sighting of it with its MAC): a private host taken
    for camera-side until then is private from then on, and its flow's later packets no longer count for it. That
    host's frames carry no source MAC of their own (all zeros), so they never teach its network themselves."""
    host, host_mac = "192.168.7.9", mac("3c:ef:8c:00:00:09")
    other, other_mac = "192.168.9.20", bytes(6)
    records = [(T0, _u(host, CLOUD, 40000, 8800, b"a" * 10, src_mac=host_mac)),
               (T0, _u(other, CLOUD, 40000, 8800, b"a" * 10, src_mac=other_mac)),
               (T0 + 1.1, _u(other, CLOUD, 40000, 8800, b"b" * 10, src_mac=other_mac)),
               (T0 + 2.5, _u(host, CLOUD, 40001, 8801, b"c" * 10, src_mac=host_mac)),
               (T0 + 3.5, _u(other, CLOUD, 40000, 8800, b"d" * 10, src_mac=other_mac))]
    sensor, _ = _run(monkeypatch, records, config={})
    scope = sensor.enricher.classifier.scope_of_text
    assert (scope(host), scope(other)) == ("camera", "private")
    dev = sensor.inventory.devices.get(other)
    assert (dev.packets_sent, dev.bytes_sent) == (2, len(records[1][1]) + len(records[2][1]))


@pytest.mark.parametrize("first", ["learnt first", "alone"])
def test_hosts_that_each_keep_one_long_flow_teach_their_network(monkeypatch, first):
    """Zero-config: a network is learnt from a host seen with its own MAC in two seconds. Hosts that each keep a
    single flow (a camera streaming to its recorder, a device that only broadcasts) are seen again in their flow's
    later seconds: their /24 is learnt and they are devices, whether or not another network was learnt before
    (the order of the capture files gave 1 device or 14 before)."""
    hosts = {f"192.168.242.{k}": mac(f"3c:ef:8c:00:01:{k:02x}") for k in range(10, 14)}
    records = []
    if first == "learnt first":   # 192.168.1.0/24 learnt: a host of it with two flows a second apart
        lan, lan_mac = "192.168.1.2", mac("3c:ef:8c:00:00:02")
        records += [(T0, _u(lan, CLOUD, 5060, 5060, b"r" * 20, src_mac=lan_mac)),
                    (T0 + 1.5, _u(lan, CLOUD, 5061, 5060, b"r" * 20, src_mac=lan_mac))]
    for second in range(4):   # each host's only flow: a broadcast every second, from T0 + 2
        for k, (host, host_mac) in enumerate(hosts.items()):
            records.append((T0 + 2 + second + k * 0.01, _u(host, "255.255.255.255", 6667, 6667, b"t" * 30,
                                                           src_mac=host_mac, dst_mac=b"\xff" * 6)))
    records.sort(key=lambda r: r[0])
    sensor, _ = _run(monkeypatch, records, config={})
    scope = sensor.enricher.classifier.scope_of_text
    assert {scope(host) for host in hosts} == {"camera"}
    assert all(sensor.inventory.devices.get(host) is not None for host in hosts)


def _v6(src, dst, sport, dport, payload, src_mac, dst_mac=b"\x33\x33\x00\x00\x00\x0c"):
    return ethernet(dst_mac, src_mac, 0x86DD, ipv6(src, dst, 17, udp(src, dst, sport, dport, payload)))


def test_an_ipv6_link_local_sender_joins_the_device_its_mac_has(monkeypatch):
    """A link-local source in a flow is its MAC's (never routed): WS-Discovery from fe80:: joins the camera that
    sends IPv4 with that MAC. One heard before its MAC has a device is not kept (a flood of forged link-local
    sources would otherwise cost a pending entry each); neighbour discovery's are."""
    cam_ll, nvr, nvr_ll = "fe80::3441:3d24:6d30:a807", "10.20.0.2", "fe80::240:8cff:fe00:2"
    nvr_mac = mac("00:40:8c:00:00:02")
    records = [(T0, _u(CAM, CLOUD, 40000, 443, b"a" * 10)),
               (T0 + 0.5, _v6(cam_ll, "ff02::c", 3702, 3702, b"<probe/>", CAM_MAC)),
               (T0 + 0.6, _v6(nvr_ll, "ff02::c", 3702, 3702, b"<probe/>", nvr_mac)),   # before the NVR is a device
               (T0 + 1.5, _u(nvr, CLOUD, 40001, 443, b"b" * 10, src_mac=nvr_mac))]
    sensor, _ = _run(monkeypatch, records)
    devices = sensor.inventory.devices
    assert sorted(devices.get(CAM).addresses) == sorted([CAM, cam_ll])
    assert sorted(devices.get(nvr).addresses) == [nvr]
    assert len(devices) == 2   # a link-local address alone makes no device


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
def test_link_local_senders_in_a_window_of_many_new_flows_join_as_one_by_one(monkeypatch, config):
    """new_flows settles a window of MIN_FLOWS or more new flows together: the link-local senders among them join
    their MACs' devices as flow_update one flow at a time has them join (and forged ones, whose MAC has no device,
    are settled with the rest)."""
    cams = {f"10.20.0.{k}": mac(f"00:40:8c:00:00:{k:02x}") for k in range(20, 40)}
    records = [(T0 + k * 0.001, _u(ip, CLOUD, 40000 + k, 443, b"a", src_mac=m))
               for k, (ip, m) in enumerate(cams.items())]
    for k, m in enumerate(list(cams.values()) + [mac("02:11:22:33:44:55")] * 3):
        ll = f"fe80::{k + 1:x}"
        for j in range(4):   # four new port pairs each: a window of more than MIN_FLOWS new flows
            records.append((T0 + 1.2 + k * 0.002 + j * 0.0001, _v6(ll, "ff02::c", 40000 + j, 3702, b"p", m)))
    for k in range(200):   # a second of forged link-local sources, one flow each, their MAC no device's
        ll, m = f"fe80::1:{k:x}", mac(f"02:11:22:33:{k // 256:02x}:{k % 256:02x}")
        records.append((T0 + 2.2 + k * 0.001, _v6(ll, "ff02::c", 40000, 3702, b"p", m)))

    def addresses(sensor):
        return sorted((d.id, sorted(d.addresses)) for d in sensor.inventory.devices.values())
    settled, settle = [], new_flow_batch.settle
    monkeypatch.setattr(new_flow_batch, "settle", lambda e, flows: (settled.append(len(flows)), settle(e, flows)))
    one_by_one, new_flow = [], Enricher._new_flow
    monkeypatch.setattr(Enricher, "_new_flow", lambda self, flow, *a: (one_by_one.append(flow.orig_mac),
                                                                         new_flow(self, flow, *a))[1])
    fast = _run(monkeypatch, records, config)[0]
    assert max(settled) >= new_flow_batch.MIN_FLOWS   # the window went to the batch
    assert not [m for m in one_by_one if m >> 8 == 0x0211223300]   # the forged second was settled as a batch
    monkeypatch.setattr(Enricher, "_new_flow", new_flow)
    monkeypatch.setattr(Enricher, "new_flows", lambda self, flows: [self.flow_update(new_update(f)) for f in flows])
    reference = _run(monkeypatch, records, config)[0]
    assert addresses(fast) == addresses(reference) and _outcome(fast) == _outcome(reference)
    assert sum(len(a) for _, a in addresses(fast)) == 2 * len(cams)


def test_with_the_learnt_networks_at_their_bound_a_known_flows_update_is_no_sighting(monkeypatch):
    """Once MAX_LEARNED_NETWORKS are learnt no sighting can teach: a known flow's later seconds are not noted (a
    site of more private networks than the bound paid a sighting in every update of their flows)."""
    from sensor.enrich.link import LinkReader
    host, host_mac = "192.168.242.10", mac("3c:ef:8c:00:01:10")
    records = [(T0 + second, _u(host, "255.255.255.255", 6667, 6667, b"t", src_mac=host_mac,
                                dst_mac=b"\xff" * 6)) for second in range(4)]
    noted: list[bool] = []
    monkeypatch.setattr(LinkReader, "note_flow", lambda self, upd, note=LinkReader.note_flow: (
        noted.append(upd.new), note(self, upd))[1])
    original = Sensor.__init__

    def full(self, *args, **kw):   # a sensor whose learnt networks are at their bound from the start
        original(self, *args, **kw)
        for k in range(MAX_LEARNED_NETWORKS):
            assert self.enricher.classifier.learn_range(4, (10 << 24) | (k << 8), 24)
    monkeypatch.setattr(Sensor, "__init__", full)
    _run(monkeypatch, records, config={})
    assert noted == [True]   # the flow's first second only


def test_a_window_of_min_flows_new_flows_is_settled_together_and_one_fewer_one_at_a_time(monkeypatch):
    """Enricher.new_flows' bound: exactly MIN_FLOWS new flows in a window go to the batch (sensor.enrich.new_flows),
    MIN_FLOWS - 1 one at a time."""
    settled, settle = [], new_flow_batch.settle
    monkeypatch.setattr(new_flow_batch, "settle", lambda enricher, flows: (settled.append(len(flows)),
                                                                             settle(enricher, flows))[1])
    n = new_flow_batch.MIN_FLOWS
    records = [(T0 + i / (2 * n), _u(CAM, CLOUD, 20000 + i, 8800, b"x")) for i in range(n)]
    records += [(T0 + 1 + i / (2 * n), _u(CAM, CLOUD, 30000 + i, 8800, b"x")) for i in range(n - 1)]
    sensor, _ = _run(monkeypatch, records)
    assert settled == [n]
    assert sensor.inventory.devices.get(CAM).packets_sent == 2 * n - 1


def test_a_known_cameras_new_address_joins_it_while_the_budget_holds_new_sources_back(monkeypatch):
    """With the new-device budget spent, a new camera-side source that only sent is held back (settled without an
    update), but not a known camera's own new address (its MAC's EUI-64): that joins the camera's device."""
    cam6 = "fd00:20::240:8cff:fe00:11"   # EUI-64 of CAM_MAC
    config = {**SITE, "networks": {**SITE["networks"], "camera": ["10.20.0.0/24", "fd00:20::/64"]},
              "limits": {"max_devices": 2, "new_devices_burst": 2, "new_devices_per_second": 1}}
    forged = [(T0 + 0.1 + i * 0.1, _u(f"10.20.0.{40 + i}", CLOUD, 40000, 8800, b"f", src_mac=mac("00:de:ad:00:00:01")))
              for i in range(4)]
    v6 = ethernet(ROUTER_MAC, CAM_MAC, 0x86DD, ipv6(cam6, "2001:db8::50", 17, udp(cam6, "2001:db8::50", 40000, 8800,
                                                                                   b"6" * 20)))
    records = [(T0, _u(CAM, CLOUD, 40000, 8800, b"x")), *forged, (T0 + 0.6, v6)]
    sensor, _ = _run(monkeypatch, records, config)
    dev = sensor.inventory.devices.get(CAM)
    assert cam6 in dev.addresses and dev.packets_sent == 2
    assert sensor.inventory.admission.held == 3   # the forged sources past the first, not the camera's address


def test_an_enricher_made_alone_asks_no_service_and_places_no_destination(monkeypatch):
    """Enricher's defaults, for a caller other than the pipeline (which hands in both): no vendor service asked,
    and a geography that knows no place, so a camera's Internet egress counts under "unknown"."""
    monkeypatch.setattr(registry, "DETECTORS", (Recorder,))
    sensor = Sensor(parse_config(SITE), manuf=NO_MANUF)
    sensor.process(make_batch([(T0, _u(CAM, CLOUD, 40000, 8800, b"x" * 10))]))
    alone = Enricher(sensor.config, sensor.inventory, sensor.known, sensor.detection)
    (flow,) = sensor.flows.flows()
    alone.flow_update(new_update(flow))
    assert alone.egress_countries.bytes == {(UNKNOWN, False): flow.orig_bytes}
