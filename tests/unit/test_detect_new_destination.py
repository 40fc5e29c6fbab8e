"""sensor/detect/new_destination.py: quiet through a device's learning period (exclusive bound), then one low alert
per destination never used before, named by DNS name where known."""

from __future__ import annotations

import pytest

from sensor.config import parse_config
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.new_destination import NewDestinationDetector
from sensor.enrich.geography import NO_PLACE
from sensor.state import KnownState

from .observations import device as _device
from .observations import observation as _obs


def _detector(learning=7200.0) -> NewDestinationDetector:
    config = parse_config({"detect": {"learning_period": learning}})
    return NewDestinationDetector(DetectorContext("site", Episodes(3600.0), config=config, known=KnownState(None)))


def test_quiet_while_learning_then_one_alert_per_new_destination():
    detector = _detector()
    dev = _device(maker="Uniview")
    assert detector.observe(_obs(dev, ts=0.0, peer="203.0.113.1")) is None          # learning starts
    assert detector.observe(_obs(dev, ts=7199.99, peer="203.0.113.2")) is None      # learned: never alerts
    alert = detector.observe(_obs(dev, ts=7200.0, peer="203.0.113.3"))
    assert alert.as_dict() == {
        "ts": 7200.0, "sensor": "site", "detector": "new_destination", "severity": "low",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": None},
        "destination": {"ip": "203.0.113.3", "port": 443, "proto": "tcp", "name": None, "scope": "public", **NO_PLACE},
        "score": 0.7, "summary": "10.20.0.5 (Uniview) reached 203.0.113.3 tcp/443, a destination it never "
        "used in 2.0 h of observation. Uniview is a covered maker (prc-nil).", "vlan": 20,
        "evidence": "first use of 203.0.113.3 after learning"}
    assert detector.observe(_obs(dev, ts=7300.0, peer="203.0.113.2")) is None
    assert detector.observe(_obs(dev, ts=7300.0, peer="203.0.113.3")) is None
    assert detector.observe(_obs(dev, ts=9000.0, peer="203.0.113.4")).summary.endswith("in 2.5 h of observation. "
                                                                                       "Uniview is a covered maker "
                                                                                       "(prc-nil).")


def test_a_named_destination_is_one_whatever_its_addresses():
    detector = _detector(learning=10.0)
    dev = _device()
    assert detector.observe(_obs(dev, ts=0.0, peer="203.0.113.9")) is None
    first = detector.observe(_obs(dev, ts=20.0, peer="203.0.113.1", name="cloud.example.com"))
    assert first.summary == ("10.20.0.5 reached cloud.example.com (203.0.113.1) tcp/443, a destination it never used "
                             "in 0.0 h of observation.")
    assert detector.observe(_obs(dev, ts=30.0, peer="203.0.113.2", name="cloud.example.com")) is None


def test_the_hours_of_observation_count_from_the_first_sighting():
    detector = _detector(learning=100.0)
    dev = _device()
    detector.observe(_obs(dev, ts=1000.0, peer="203.0.113.9"))
    alert = detector.observe(_obs(dev, ts=1180.0, peer="203.0.113.1"))
    assert alert.summary.endswith("a destination it never used in 0.1 h of observation.")   # 180 s


def test_inside_peers_and_silence_are_not_destinations():
    detector = _detector(learning=10.0)
    dev = _device()
    detector.observe(_obs(dev, ts=0.0, peer="203.0.113.9"))
    assert detector.observe(_obs(dev, ts=20.0, scope="allowed", peer="203.0.113.1")) is None
    assert detector.observe(_obs(dev, ts=20.0, sent_packets=0, peer="203.0.113.1")) is None
    assert detector.observe(_obs(dev, ts=20.0, scope="core", peer="203.0.113.1")) is not None


def test_the_detector_needs_the_state_store():
    with pytest.raises(ValueError, match=r"^new_destination needs the state store \(DetectorContext.known\)$"):
        NewDestinationDetector(DetectorContext("site", Episodes(3600.0)))
