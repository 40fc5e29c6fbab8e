"""sensor/detect/vendor_cloud.py and indicators.py: vendor clouds recognised by DNS query, by name of the flow, by
payload signature, or by port from a device of the service's maker; one alert per (device, service) episode."""

from __future__ import annotations

from sensor.detect import Indicators
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.vendor_cloud import VendorCloudDetector
from sensor.enrich import DnsQuery
from sensor.flows import Flow
from sensor.tags import TAG_PPPP, TAG_SIGNATURE_BASE

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
                        "scope": "camera"},
        "score": 0.8, "summary": "camera 10.20.0.5 (Hikvision) looked up litedev.hik-connect.com, a Hik-Connect / "
        "EZVIZ cloud (Hikvision) name: the device is set up to reach its vendor's cloud. Hikvision is a covered maker "
        "(named).", "vlan": 20, "service": "hik-connect", "evidence": "dns query"}
    assert detector._episodes.take_dirty() == [(("vendor_cloud", "10.20.0.5", "hik-connect", "dns"), 50.0, 50.0, 1, 0)]
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
