"""sensor/detect/segmentation.py: camera VLAN and core network meeting, in both directions, counted by direction."""

from __future__ import annotations

from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.segmentation import SegmentationDetector

from .observations import device as _device
from .observations import observation as _obs


def test_both_directions_alert_with_exact_summaries_and_are_counted():
    detector = SegmentationDetector(DetectorContext("site", Episodes(3600.0)))
    out = detector.observe(_obs(_device(), scope="core", peer="10.1.0.9", port=22))
    assert (out.severity, out.score, out.extra, out.dst_scope) == (
        "high", 1.0, {"direction": "camera_to_core", "evidence": "reached core host 10.1.0.9 tcp/22"}, "core")
    assert out.summary == ("10.20.0.5 reached core-network host 10.1.0.9 tcp/22, sending 3 packets; cameras must stay "
                           "off core networks.")
    unanswered = detector.observe(_obs(_device(), scope="core", peer="10.1.0.9", port=554, initiated=False,
                                       sent_packets=0, sent_bytes=0))
    assert unanswered.extra == {"direction": "core_to_camera", "evidence": "core host 10.1.0.9 reached in on tcp/554"}
    assert unanswered.summary == ("Core-network host 10.1.0.9 reached into the camera VLAN at 10.20.0.5 tcp/554 (the "
                                  "camera did not answer); no allow rule matches.")
    answered = detector.observe(_obs(_device("10.20.0.7", maker="Dahua"), scope="core", peer="10.1.0.9", port=554,
                                     initiated=False, sent_packets=2))
    assert answered.summary == ("Core-network host 10.1.0.9 reached into the camera VLAN at camera 10.20.0.7 (Dahua) "
                                "tcp/554 and the camera answered; no allow rule matches. Dahua is a covered maker "
                                "(named).")
    assert detector.violations == {"camera_to_core": 1, "core_to_camera": 2}


def test_a_named_core_host_is_named_in_the_summary():
    detector = SegmentationDetector(DetectorContext("site", Episodes(3600.0)))
    out = detector.observe(_obs(_device(), scope="core", peer="10.1.0.9", port=445, name="files.corp.example"))
    assert out.summary.startswith("10.20.0.5 reached core-network host files.corp.example (10.1.0.9) tcp/445, ")


def test_only_core_peers_and_only_sending_initiators_count():
    detector = SegmentationDetector(DetectorContext("site", Episodes(3600.0)))
    dev = _device()
    assert detector.observe(_obs(dev, scope="public")) is None
    assert detector.observe(_obs(dev, scope="core", sent_packets=0, sent_bytes=0)) is None
    assert detector.observe(_obs(dev, scope="core", sent_packets=1)).summary.endswith("sending 1 packet; cameras "
                                                                                       "must stay off core networks.")
    assert detector.observe(_obs(dev, scope="core", ts=200.0)) is None     # the same episode
    assert detector.violations == {"camera_to_core": 1, "core_to_camera": 0}
