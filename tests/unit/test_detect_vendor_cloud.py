"""sensor/detect/vendor_cloud.py and indicators.py: vendor clouds recognised by DNS query, by name of the flow, by
payload signature, or by port from a device of the service's maker; one alert per (device, service) episode. The P2P
signatures are checked on packets built from each protocol's write-up, through the whole pipeline, against their
look-alikes."""

from __future__ import annotations

import struct

import pytest

from packets import ethernet, ip, mac, tcp, udp
from plant_recognise import baichuan, dvrip, kalay_cc51, kalay_iotc, reolink_bcudp_data, reolink_bcudp_discovery
from sensor import compiled
from sensor.config import Config
from sensor.detect import Indicators
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.vendor_cloud import VendorCloudDetector
from sensor.enrich import DnsQuery, ManufDatabase
from sensor.enrich.geography import NO_PLACE
from sensor.flows import Flow
from sensor.pipeline import Sensor
from sensor.tags import TAG_PPPP, TAG_SIGNATURE_BASE

from .builders import batch_of
from .observations import device as _device
from .observations import observation as _obs

INDICATORS = Indicators.load()


def _detector() -> VendorCloudDetector:
    return VendorCloudDetector(DetectorContext("site", Episodes(3600.0), indicators=INDICATORS))


def _tagged(orig_tags=0, resp_tags=0) -> Flow:
    flow = Flow(b"k" * 37, 20, 17, 5000, 6000, 100.0)
    flow.orig_tags, flow.resp_tags = orig_tags, resp_tags
    return flow


def test_a_lookup_of_a_cloud_name_is_a_medium_alert_once():
    detector = _detector()
    dev = _device(maker="Hikvision")
    query = DnsQuery(50.0, dev, "litedev.hik-connect.com", "10.20.0.1", "camera", 20, False)
    assert detector.dns_query(query).as_dict() == {
        "ts": 50.0, "sensor": "site", "detector": "vendor_cloud", "severity": "medium",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": None},
        "destination": {"ip": "10.20.0.1", "port": 53, "proto": "udp", "name": "litedev.hik-connect.com",
                        "scope": "camera", **NO_PLACE},
        "score": 0.8, "summary": "camera 10.20.0.5 (Hikvision) looked up litedev.hik-connect.com, a Hik-Connect / "
        "EZVIZ cloud (Hikvision) name: the device is set up to reach its vendor's cloud. Hikvision is a covered maker "
        "(named).", "vlan": 20, "service": "hik-connect", "evidence": "looked up litedev.hik-connect.com"}
    assert list(detector._episodes.take_dirty()) == [
        (("vendor_cloud", "10.20.0.5", "hik-connect", "dns"), 50.0, 50.0, 1, 0)]
    assert detector.dns_query(query) is None
    assert detector.dns_query(DnsQuery(50.0, dev, "www.example.com", "10.20.0.1", "camera", 20, False)) is None
    allowed = DnsQuery(50.0, _device("10.20.0.6"), "litedev.hik-connect.com", "10.20.0.1", "camera", 20, True)
    assert detector.dns_query(allowed) is None


def test_traffic_named_as_a_cloud_is_high_from_a_covered_device_and_medium_otherwise():
    detector = _detector()
    alert = detector.observe(_obs(_device(maker="Hikvision"), name="dev.hik-connect.com"))
    assert (alert.severity, alert.score, alert.extra) == (
        "high", 0.95, {"service": "hik-connect", "evidence": "name dev.hik-connect.com"})
    assert alert.summary == ("camera 10.20.0.5 (Hikvision) is talking to Hik-Connect / EZVIZ cloud (Hikvision) at "
                             "dev.hik-connect.com (203.0.113.7) tcp/443, recognised by name dev.hik-connect.com. "
                             "Hikvision is a covered maker (named).")
    assert detector.observe(_obs(_device(maker="Hikvision"), ts=200.0, name="dev.hik-connect.com")) is None
    other = detector.observe(_obs(_device("10.20.0.6"), name="dev.hik-connect.com"))
    assert other.severity == "medium"


def test_a_name_on_a_flow_the_device_answered_is_not_evidence():
    detector = _detector()
    assert detector.observe(_obs(_device(), name="dev.hik-connect.com", initiated=False)) is None


def test_payload_signatures_are_evidence_in_either_direction():
    detector = _detector()
    pppp = detector.observe(_obs(_device(), flow=_tagged(orig_tags=TAG_PPPP), port=32100, proto="udp"))
    assert pppp.extra == {"service": "cs2-pppp", "evidence": "its protocol signature in the payload"}
    dahua = detector.observe(_obs(_device("10.20.0.6"), initiated=False, port=37777,
                                  flow=_tagged(resp_tags=1 << TAG_SIGNATURE_BASE)))
    assert dahua.extra == {"service": "dahua-p2p", "evidence": "its protocol signature in the payload"}
    assert detector.observe(_obs(_device("10.20.0.7"), initiated=False, flow=_tagged(orig_tags=TAG_PPPP))) is None


def test_a_service_port_counts_only_from_a_device_of_its_maker_that_opened_the_flow():
    detector = _detector()
    alert = detector.observe(_obs(_device("10.20.0.9", maker="Dahua"), port=8800, proto="udp"))
    assert alert.extra == {"service": "dahua-p2p",
                           "evidence": "udp/8800, a Dahua Easy4IP / Imou P2P cloud port, from a Dahua device"}
    assert detector.observe(_obs(_device("10.20.0.10", maker="Hikvision"), port=8800, proto="udp")) is None
    assert detector.observe(_obs(_device("10.20.0.11"), port=8800, proto="udp")) is None
    assert detector.observe(_obs(_device("10.20.0.12", maker="Dahua"), port=8800, proto="tcp")) is None
    assert detector.observe(_obs(_device("10.20.0.13", maker="Dahua"), port=8800, proto="udp",
                                 initiated=False)) is None


def test_only_outside_peers_that_the_device_sends_to():
    detector = _detector()
    dev = _device(maker="Hikvision")
    assert detector.observe(_obs(dev, name="dev.hik-connect.com", scope="allowed")) is None
    assert detector.observe(_obs(dev, name="dev.hik-connect.com", sent_packets=0)) is None
    assert detector.observe(_obs(dev, name="dev.hik-connect.com", scope="core")) is not None


def test_indicator_names_are_cached_and_bounded():
    import tomllib

    from sensor.reference_data import INDICATORS_FILE
    indicators = Indicators.load()
    assert indicators.version == tomllib.loads(INDICATORS_FILE.read_text(encoding="utf-8"))["version"]
    assert indicators.by_name(None) is None and indicators.by_name("") is None
    assert indicators.by_name("a.hik-connect.com").id == "hik-connect"
    assert indicators.by_name("a.hik-connect.com").id == "hik-connect"      # from the cache
    assert indicators.by_name("www.example.com") is None
    assert len(indicators._by_name) == 2
    indicators._by_name.update({f"n{i}.example": None for i in range((1 << 14) - 2)})   # filled to the bound
    assert len(indicators._by_name) == 1 << 14
    indicators.by_name("one.more.example")
    assert len(indicators._by_name) == 1


# ---- payload signatures on the wire: packets built as each protocol's write-up describes them ------------------------
CAM, PEER = "10.20.0.5", "203.0.113.140"
CAM_MAC, GATEWAY_MAC = mac("00:12:34:00:00:05"), mac("00:0c:29:00:00:01")


def _udp(payload: bytes, dport: int = 10240, sport: int = 24680) -> tuple[int, bytes]:
    return 17, udp(CAM, PEER, sport, dport, payload)


def _tcp(payload: bytes, dport: int, sport: int = 40622) -> list[tuple[int, bytes]]:
    return [(6, tcp(CAM, PEER, sport, dport, 1000, 0, "S")), (6, tcp(CAM, PEER, sport, dport, 1001, 1, "PA", payload))]


def _cloud_alerts(packets: list[tuple[int, bytes]]) -> list:
    """vendor_cloud's alerts on the device's packets to PEER, through the whole pipeline (decode, tags, flows)."""
    alerts: list = []
    sensor = Sensor(Config(), ManufDatabase({}), on_alert=alerts.append)
    frames = [ethernet(GATEWAY_MAC, CAM_MAC, 0x0800, ip(CAM, PEER, proto, l4)) for proto, l4 in packets]
    sensor.process(batch_of(frames, ts=[1_700_000_000.0 + 0.1 * i for i in range(len(frames))]))
    sensor.finish()
    # the incidents' open lines that vendor_cloud leads (it leads egress_policy at equal severity)
    return [a for a in alerts if a.detector == "vendor_cloud" and a.extra["event"] == "open"]


@pytest.fixture
def tagger(impl, monkeypatch) -> str:
    """impl, with the payload tagger switched the same way (compiled or its numpy reference)."""
    monkeypatch.setattr(compiled, "tags", impl == "compiled")
    return impl


KALAY_SESSION_IDS = [b"\x00\x00\x00\x00", b"\x5a\x17\xc3\x09", b"\xff\xff\xff\xff", b"\x01\x80\x7f\xfe"]

SIGNED = [
    ("kalay discovery response", [_udp(kalay_iotc(0x0602, 0x0012, bytes(184)))], "tutk-kalay",
     "a scrambled ThroughTek IOTC discovery response (command 0x0602) in the payload"),
    *[(f"kalay keep-alive {s.hex()}", [_udp(kalay_iotc(0x0428, 0x0012, bytes(8), session=s, sequence=k))],
       "tutk-kalay", "a scrambled ThroughTek IOTC keep-alive from a device (command 0x0428) in the payload")
      for k, s in enumerate(KALAY_SESSION_IDS)],
    ("kalay data", [_udp(kalay_iotc(0x0408, 0x0012, bytes(range(52)), version=0x1D))], "tutk-kalay",
     "a scrambled ThroughTek IOTC data message from a device (command 0x0408) in the payload"),
    ("kalay 0xcc51 discovery", [_udp(kalay_cc51(0x1002, bytes(40)))], "tutk-kalay",
     "the ThroughTek IOTC (0xCC51) discovery header in the payload"),
    ("kalay 0xcc51 dtls", [_udp(kalay_cc51(0x1502, bytes(77)))], "tutk-kalay",
     "the ThroughTek IOTC (0xCC51) DTLS wrapper header in the payload"),
    ("reolink discovery", [_udp(reolink_bcudp_discovery(3, bytes(120)), dport=9999)], "reolink-p2p",
     "the Reolink BCUDP P2P discovery header in the payload"),
    ("reolink data", [_udp(reolink_bcudp_data(-4711, 9, baichuan(3, bytes(30))), dport=9999)], "reolink-p2p",
     "the Reolink BCUDP P2P data header in the payload"),
    ("reolink ack", [_udp(b"\x20\xcf\x87\x2a" + bytes(24), dport=9999)], "reolink-p2p",
     "the Reolink BCUDP P2P acknowledgement header in the payload"),
    ("baichuan", _tcp(baichuan(1, bytes(64)), dport=9000), "reolink-p2p", "the Reolink Baichuan header in the payload"),
    ("dvrip alarm push", _tcp(dvrip(1504, b'{"Type": "Alarm"}', session=0x5A), dport=15002), "xmeye",
     "the Xiongmai DVRIP (Sofia) header in the payload"),
    ("dvrip login", _tcp(dvrip(1000, b'{"UserName": "admin"}'), dport=34567), "xmeye",
     "the Xiongmai DVRIP (Sofia) header in the payload"),
    ("dvrip reply", _tcp(dvrip(1001, b'{"Ret": 100}', session=0x12, version=1), dport=34567), "xmeye",
     "the Xiongmai DVRIP (Sofia) header in the payload"),
]


@pytest.mark.parametrize("packets,service,evidence", [s[1:] for s in SIGNED], ids=[s[0] for s in SIGNED])
def test_a_p2p_platform_reached_by_address_is_recognised_by_its_payload(tagger, packets, service, evidence):
    (alert,) = _cloud_alerts(packets)
    own = [e["text"] for e in alert.extra["evidence"] if e["detector"] == "vendor_cloud"]
    assert (alert.extra["service"]["id"], own, alert.dst_ip) == (service, [evidence], PEER)


LOOK_ALIKES = [
    # a Kalay client's (not a device's) discovery request, and a device message of another command
    ("kalay client request", [_udp(kalay_iotc(0x0601, 0x0021, bytes(64)))]),
    ("kalay other command", [_udp(kalay_iotc(0x0404, 0x0012, bytes(36)))]),
    ("kalay unscrambled", [_udp(struct.pack("<BBBBHHHH4s", 4, 2, 0x19, 2, 8, 0, 0x0428, 0x0012, bytes(4)) + bytes(8))]),
    ("kalay header one byte late", [_udp(b"\x00" + kalay_iotc(0x0428, 0x0012, bytes(8)))]),
    ("cc51 other payload size", [_udp(kalay_cc51(0x1002, bytes(41)))]),
    ("reolink magic over tcp", _tcp(reolink_bcudp_discovery(1, bytes(40)), dport=9999)),
    ("reolink magic big-endian", [_udp(struct.pack(">I", 0x2A87CF3A) + bytes(40), dport=9999)]),
    ("reolink magic one bit off", [_udp(b"\x3a\xcf\x87\x2b" + bytes(40), dport=9999)]),
    ("baichuan over udp", [_udp(baichuan(1, bytes(64)), dport=9000)]),
    ("dvrip on another port", _tcp(dvrip(1000, b'{"UserName": "admin"}'), dport=8443)),
    ("dvrip over udp", [_udp(dvrip(1000, b'{"UserName": "admin"}'), dport=34567)]),
    ("dvrip version 2", _tcp(b"\xff\x02\x00\x00" + bytes(40), dport=34567)),
    ("little-endian 255 on 34567", _tcp(struct.pack("<IIII", 0xFF00FF, 255, 0, 0), dport=34567)),
    ("tls on 34567", _tcp(b"\x16\x03\x01\x00\x40" + bytes(64), dport=34567)),
]


@pytest.mark.parametrize("packets", [s[1] for s in LOOK_ALIKES], ids=[s[0] for s in LOOK_ALIKES])
def test_look_alikes_of_the_p2p_signatures_are_not_recognised(tagger, packets):
    assert _cloud_alerts(packets) == []


def test_the_shipped_kalay_patterns_are_the_scrambled_device_headers():
    """Rebuilt from the plaintext headers (command and flags at bytes 8-11) through the scrambler the write-ups
    describe: the bits under the mask depend on nothing else, so every session id gives the same pattern."""
    kalay = next(s for s in INDICATORS.services if s.id == "tutk-kalay")
    scrambled = [sig for _, sig in kalay.signature_rules if sig.pattern_mask == bytes.fromhex("ffff1fe0fe010000")]
    assert len(scrambled) == 3
    for sig, command in zip(scrambled, (0x0602, 0x0428, 0x0408), strict=True):
        for session in KALAY_SESSION_IDS:
            head = int.from_bytes(kalay_iotc(command, 0x0012, bytes(8), session=session)[:8], "big")
            assert head & int.from_bytes(sig.pattern_mask, "big") == int.from_bytes(sig.pattern, "big")


def test_the_shortcuts_past_signatures_and_maker_ports_find_what_every_service_finds():
    """Indicators tells most observations at once that no signature bit and no maker's port can match; what it
    finds is what walking every service finds, for each signature bit alone and in pairs, and for every maker's
    every port, on every transport."""
    ind = Indicators.load()
    bits = sorted({bit for svc in ind.services for bit, _ in svc.signature_rules} | {1 << 40})

    def by_signature_walk(tags, proto, port):
        for svc in ind.services:
            for bit, sig in svc.signature_rules:
                if tags & svc.signature_bits & bit and sig.applies(proto, port):
                    return svc, sig.evidence
        return None

    ports = sorted({p for svc in ind.services for _, p in svc.ports} | {None, 80, 443}, key=str)
    signed = 0
    for tags in [0, *bits, *(a | b for a in bits for b in bits if a < b)]:
        for proto in ("udp", "tcp", "icmp"):
            for port in ports:
                assert ind.by_signature(tags, proto, port) == by_signature_walk(tags, proto, port)
                signed += ind.by_signature(tags, proto, port) is not None
    assert signed > len(bits)
    makers = sorted({m for svc in ind.services for m in svc.makers}) + ["Axis", None]
    matched = 0
    for maker in makers:
        dev = _device("10.20.0.9", maker=maker) if maker else _device("10.20.0.9")
        for proto in ("udp", "tcp"):
            for port in ports:
                found = ind.match(_obs(dev, port=port, proto=proto))
                walked = next(((svc, f"{proto}/{port}, a {svc.name} port, from a {maker} device")
                               for svc in ind.services if maker in svc.makers and (proto, port) in svc.ports), None)
                assert found == walked
                matched += found is not None
    assert matched >= 2   # the ports of more than one maker's services were found
