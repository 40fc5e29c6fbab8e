"""sensor/detect/jurisdiction.py and [policy] watch_countries: traffic from a camera-side device to an address
registered (or, with a country database, located) in a watched country is evidence of its own weight; a covered
maker's video to there is critical (video_egress)."""

from __future__ import annotations

import pytest
from mmdbs import write_country

from sensor.config import parse_config
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.jurisdiction import JurisdictionDetector
from sensor.detect.video_egress import VideoEgressDetector
from sensor.enrich.geography import Geography
from sensor.errors import ConfigError
from sensor.tags import TAG_ICMP_ECHO

from .observations import device, observation

CN_PEER = "110.43.68.240"


def _context(policy: dict | None = None, geography: Geography | None = None) -> DetectorContext:
    config = parse_config({"policy": policy} if policy is not None else {})
    return DetectorContext("site", Episodes(3600.0), config, geography=geography or Geography())


def test_a_covered_camera_sending_to_a_cn_registered_address_is_high_evidence():
    detector = JurisdictionDetector(_context())
    cam = device(maker="Hikvision", vendor="Hangzhou Hikvision")
    alert = detector.observe(observation(cam, peer=CN_PEER, sent_bytes=1443))
    assert (alert.detector, alert.severity, alert.score, alert.dst_ip) == ("jurisdiction", "high", 1.0, CN_PEER)
    assert alert.extra["jurisdiction"] == ["CN"]
    assert alert.summary == ("camera 10.20.0.5 (Hikvision) sent 1443 bytes to 110.43.68.240 tcp/443, an address "
                             "registered in CN: a watched jurisdiction ([policy] watch_countries). Hikvision is a "
                             "covered maker (named).")
    assert alert.extra["evidence"] == "110.43.68.240 tcp/443 registered in CN"
    # one per (device, address) episode
    assert detector.observe(observation(cam, ts=101.0, peer=CN_PEER)) is None


def test_any_other_maker_is_medium_and_other_countries_are_not_evidence():
    detector = JurisdictionDetector(_context())
    other = device(ip="10.20.0.9", vendor="Axis Communications AB")
    assert detector.observe(observation(other, peer="114.114.114.114", proto="udp", port=53)).severity == "medium"
    for peer in ("8.8.8.8", "1.0.16.1", "203.0.113.7", "2001:4860:4860::8888"):
        assert detector.observe(observation(other, peer=peer)) is None


def test_silent_devices_pings_and_allowed_destinations_are_not_judged():
    detector = JurisdictionDetector(_context())
    cam = device(maker="Hikvision")
    assert detector.observe(observation(cam, peer=CN_PEER, sent_packets=0, sent_bytes=0)) is None
    assert detector.observe(observation(cam, peer=CN_PEER, scope="allowed")) is None
    assert JurisdictionDetector.interest == frozenset({"public"})

    class Pings:
        orig_tags, resp_tags = TAG_ICMP_ECHO, 0

    ping = observation(cam, peer=CN_PEER, proto="icmp", port=None, sent_packets=2, sent_bytes=196, flow=Pings())
    assert detector.observe(ping) is None


def test_the_watch_list_is_the_config_s():
    ru = JurisdictionDetector(_context({"watch_countries": ["ru"]}))
    cam = device(maker="Hikvision")
    assert ru.observe(observation(cam, peer=CN_PEER)) is None
    assert ru.observe(observation(cam, peer="77.88.8.8")).extra["jurisdiction"] == ["RU"]   # Yandex DNS
    assert not JurisdictionDetector.wanted(_context({"watch_countries": []}))
    assert JurisdictionDetector.wanted(_context())


def test_a_geolocated_watched_country_counts_as_located_there(tmp_path):
    db = write_country(tmp_path / "c.mmdb", {"47.88.0.0/14": "HK", "110.43.0.0/16": "DE"})
    detector = JurisdictionDetector(_context(geography=Geography.from_config(None, str(db))))
    cam = device(maker="Hikvision")
    hk = detector.observe(observation(cam, peer="47.88.59.209"))        # a US-registered block standing in HK
    assert hk.extra["jurisdiction"] == ["HK"] and "an address located in HK:" in hk.summary
    de = detector.observe(observation(cam, peer=CN_PEER))               # a CN holder's block standing in Germany
    assert de.extra["jurisdiction"] == ["CN"] and "an address registered in CN:" in de.summary


@pytest.mark.parametrize(("watch", "message"), [
    (["CHN"], "'CHN' is not an ISO 3166-1 alpha-2 country code"),
    (["XX"], "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("CN", "policy.watch_countries must be a list of ISO 3166-1 alpha-2 country codes"),
    ([1], "policy.watch_countries must be a list"),
])
def test_a_watch_list_typo_is_refused(watch, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"policy": {"watch_countries": watch}})


def test_watch_countries_default_to_the_directive_s_concern_and_read_in_either_case():
    assert parse_config({}).watch_countries == ("CN", "HK", "MO")
    assert parse_config({"policy": {"watch_countries": ["hk", "HK", "Mo"]}}).watch_countries == ("HK", "MO")
    assert parse_config({"policy": {"watch_countries": []}}).watch_countries == ()


def _trickle(detector: VideoEgressDetector, cam, peer: str):
    """A one-way trickle: 1,500 bytes a second for two minutes, the acks coming back small."""
    found = []
    for second in range(125):
        alert = detector.observe(observation(cam, ts=1000.0 + second, peer=peer, sent_packets=1, sent_bytes=1500,
                                             received_bytes=40, received_packets=1))
        if alert is not None:
            found.append(alert)
    return found


def test_a_covered_maker_s_video_to_a_watched_country_is_critical():
    cam = device(maker="Hikvision")
    to_cn = _trickle(VideoEgressDetector(_context()), cam, CN_PEER)
    assert [(a.severity, a.extra["upload"]) for a in to_cn] == [("critical", "trickle")]
    assert to_cn[0].summary.endswith("The destination is registered in CN, a watched jurisdiction.")
    # the same trickle elsewhere, or from a maker not covered, or with the policy off: as video_egress always says
    assert [a.severity for a in _trickle(VideoEgressDetector(_context()), cam, "8.8.8.8")] == ["high"]
    assert [a.severity for a in _trickle(VideoEgressDetector(_context()), device(ip="10.20.0.9"), CN_PEER)] == [
        "medium"]
    off = VideoEgressDetector(_context({"watch_countries": []}))
    assert [a.severity for a in _trickle(off, cam, CN_PEER)] == ["high"]


def test_watched_countries_are_the_places_countries_that_are_watched_in_their_order():
    """watched() answers without building Place.countries(): the same countries, in the same order, for every
    combination of a geolocated and a registered country (either missing, the two equal or not) and watch list."""
    from itertools import product

    from sensor.detect.jurisdiction import watched
    from sensor.enrich.geography import Place

    class Fixed:
        def __init__(self, place):
            self.found = place

        def place(self, ip):
            return self.found

    codes = (None, "CN", "HK", "US")
    for country, registry in product(codes, repeat=2):
        place = Place(country, None, None, registry)
        for watch in (frozenset(), frozenset({"CN"}), frozenset({"CN", "HK", "MO"}), frozenset({"US", "HK"})):
            expected = tuple(c for c in place.countries() if c in watch)
            assert watched(Fixed(place), watch, "198.51.100.1") == ((place, expected) if watch else (None, ()))
    assert watched(Fixed(None), frozenset({"CN"}), "198.51.100.1") == (None, ())
