"""sensor/detect/video_egress.py: sustained upstream media to an outside address, at each threshold exactly (rate,
duration, packet size, gap, up/down ratio) and with each media profile."""

from __future__ import annotations

import pytest

from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.video_egress import VideoEgressDetector
from sensor.flows import Flow

from .observations import device as _device
from .observations import observation as _obs


def _flow(tags=1, orig_bytes=0, resp_bytes=0) -> Flow:
    flow = Flow(b"k" * 37, 20, 17, 5000, 6000, 100.0)
    flow.orig_tags, flow.orig_bytes, flow.resp_bytes = tags, orig_bytes, resp_bytes
    return flow


def _run(steps, flow=None, dev=None, **kw):
    """steps: (ts, packets, bytes) observations of one device to one peer; the alerts raised, in order."""
    detector = VideoEgressDetector(DetectorContext("site", Episodes(3600.0)))
    dev = dev or _device()
    flow = flow or _flow()
    out = []
    for ts, packets, nbytes in steps:
        flow.last = ts
        out.append(detector.observe(_obs(dev, ts=ts, sent_packets=packets, sent_bytes=nbytes, flow=flow, port=6000,
                                         proto="udp", **kw)))
    return out


def test_five_seconds_at_the_minimum_rate_and_packet_size_is_video_leaving():
    # 125,000 bytes over 5 s is 200,000 bit/s; 312.5 packets of 400 bytes: 312 packets average a little more
    first, alert = _run([(100.0, 156, 62_500), (105.0, 156, 62_500)], dev=_device(maker="Hikvision"))
    assert first is None
    assert alert.as_dict() == {
        "ts": 105.0, "sensor": "site", "detector": "video_egress", "severity": "critical",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": None},
        "destination": {"ip": "203.0.113.7", "port": 6000, "proto": "udp", "name": None, "scope": "public"},
        "score": 0.7, "summary": "camera 10.20.0.5 (Hikvision) has been sending 0.20 Mbit/s for 5 s (RTP) to "
        "203.0.113.7 udp/6000 outside the site: video is leaving. Hikvision is a covered maker (named).",
        "vlan": 20, "rate_bps": 200000, "duration_s": 5.0, "profile": ["RTP"]}


@pytest.mark.parametrize("steps", [
    [(100.0, 156, 62_500), (104.99, 156, 62_500)],            # just under 5 s
    [(100.0, 156, 62_499), (105.0, 156, 62_500)],             # one byte under 200,000 bit/s
    [(100.0, 157, 62_500), (105.0, 156, 62_500)],             # packets average under 400 bytes
    [(100.0, 156, 62_500), (130.001, 156, 62_500), (135.0, 1, 1)],   # a gap over 30 s starts again
])
def test_below_any_threshold_no_alert(steps):
    assert _run(steps)[-1] is None


def test_a_gap_of_exactly_30_s_continues_the_episode_and_rates_cap_the_score():
    alerts = _run([(100.0, 1000, 1_000_000), (130.0, 1000, 1_000_000)])
    assert alerts[1].extra == {"rate_bps": 533333, "duration_s": 30.0, "profile": ["RTP"]}
    assert alerts[1].severity == "high" and alerts[1].score == pytest.approx(0.6 + 533333.33 / 2_000_000)
    capped = _run([(100.0, 10_000, 10_000_000), (105.0, 10_000, 10_000_000)])[1]
    assert capped.score == 1.0 and capped.summary.startswith("10.20.0.5 has been sending 32.00 Mbit/s for 5 s (RTP)")


@pytest.mark.parametrize("tags,profile", [(1, ["RTP"]), (4, ["PPPP DRW frames"]), (8, ["TLS"]),
                                          (1 | 4 | 8 | 2, ["RTP", "PPPP DRW frames", "TLS"])])
def test_each_media_profile_is_named_and_pppp_alone_is_not_media(tags, profile):
    alert = _run([(100.0, 156, 62_500), (105.0, 156, 62_500)], flow=_flow(tags))[1]
    assert alert.extra["profile"] == profile and f"for 5 s ({', '.join(profile)}) to " in alert.summary


@pytest.mark.parametrize("initiated,orig,resp,alerts", [
    (True, 5000, 1000, True), (True, 4999, 1000, False), (True, 5, 0, True), (True, 4, 0, False),
    (False, 1000, 5000, True), (False, 1000, 4999, False)])
def test_without_a_media_tag_five_times_more_up_than_down_is_a_bulk_upload(initiated, orig, resp, alerts):
    flow = _flow(tags=2, orig_bytes=orig, resp_bytes=resp)
    flow.resp_tags = 2
    alert = _run([(100.0, 156, 62_500), (105.0, 156, 62_500)], flow=flow, initiated=initiated)[1]
    assert (alert is not None) == alerts
    if alerts:
        assert alert.extra["profile"] == ["one-way bulk upload"]


def test_inside_peers_and_receive_only_observations_are_ignored():
    assert _run([(100.0, 156, 62_500), (105.0, 156, 62_500)], scope="allowed") == [None, None]
    assert _run([(100.0, 156, 62_500), (105.0, 0, 0)])[1] is None
    alerts = _run([(100.0, 156, 62_500), (105.0, 156, 62_500), (106.0, 156, 62_500)])
    assert alerts[1] is not None and alerts[2] is None       # one alert per episode


def test_an_update_spanning_five_seconds_alone_is_enough():
    detector = VideoEgressDetector(DetectorContext("site", Episodes(3600.0)))
    flow = _flow()
    flow.last = 105.25                                          # the update's packets ran from 100 to 105.25 s
    alert = detector.observe(_obs(_device(), ts=100.0, sent_packets=500, sent_bytes=200_000, flow=flow, port=6000,
                                  proto="udp", name="relay.example.com"))
    assert alert.extra == {"rate_bps": 304762, "duration_s": 5.2, "profile": ["RTP"]}
    assert alert.summary == ("10.20.0.5 has been sending 0.30 Mbit/s for 5 s (RTP) to relay.example.com (203.0.113.7) "
                             "udp/6000 outside the site: video is leaving.")


def test_packets_of_exactly_400_bytes_on_average_and_a_one_byte_update_count():
    assert _run([(100.0, 250, 100_000), (105.0, 250, 100_000)])[1] is not None      # 400.0 bytes each
    assert _run([(100.0, 311, 124_999), (105.0, 1, 1)])[1] is not None              # 125,000 bytes in 312 packets


def test_each_peer_has_its_own_upstream():
    detector = VideoEgressDetector(DetectorContext("site", Episodes(3600.0)))
    dev, flow = _device(), _flow()
    flow.last = 100.0
    assert detector.observe(_obs(dev, ts=100.0, sent_packets=156, sent_bytes=62_500, flow=flow)) is None
    flow.last = 105.0
    assert detector.observe(_obs(dev, ts=105.0, sent_packets=156, sent_bytes=62_500, flow=flow,
                                 peer="203.0.113.8")) is None
