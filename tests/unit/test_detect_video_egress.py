"""sensor/detect/video_egress.py and its windows (sensor/detect/uploads.py): bursts, streams and trickles judged on
sliding windows of what a device sent one peer each second, at their thresholds and as the classes they stand for
(clips of any size and pace in the class, slow-starting streams, stills every few seconds), and the look-alikes that
must stay quiet: keep-alive and NTP cadences, RTCP, a two-way TLS session, a download, video to the recorder."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import parse_config
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.uploads import Window
from sensor.detect.video_egress import VideoEgressDetector
from sensor.enrich.geography import NO_PLACE
from sensor.flows import Flow
from sensor.tags import TAG_PPPP, TAG_PPPP_DRW, TAG_RTP, TAG_TLS

from .observations import device as _device
from .observations import observation as _obs

T0 = 1_700_000_000.0
SEGMENT = 1400          # bytes on the wire of a full data segment
ACK = 66                # and of a pure ACK


def _detector(uploads=None, episode_timeout=3600.0, max_open=100_000) -> VideoEgressDetector:
    config = parse_config({"detect": {"uploads": uploads or {}}})
    return VideoEgressDetector(DetectorContext("site", Episodes(episode_timeout, max_open), config))


def _flow(tags: int = TAG_TLS) -> Flow:
    flow = Flow(b"k" * 37, 20, 6, 40000, 443, T0)
    flow.orig_tags = tags
    return flow


class Feed:
    """One device sending to one peer, second by second, as the pipeline hands it over (one observation per flow
    per second of capture time)."""

    def __init__(self, detector=None, dev=None, flow=None, peer="203.0.113.7", **kw):
        self.detector = detector or _detector()
        self.dev = dev or _device()
        self.flow = flow or _flow()
        self.peer, self.kw = peer, kw
        self.alerts: list = []

    def second(self, ts: float, sent: int, received: int = 0, packets: int | None = None):
        packets = packets if packets is not None else max(1, math.ceil(sent / SEGMENT))
        self.flow.last = ts
        alert = self.detector.observe(_obs(self.dev, ts=ts, sent_packets=packets, sent_bytes=sent, flow=self.flow,
                                           peer=self.peer, received_bytes=received, **self.kw))
        if alert is not None:
            self.alerts.append(alert)
        return alert

    def upload(self, start: float, per_second: list[int], acks_per_segment: float = 0.5):
        """A TCP upload: `per_second` bytes in consecutive seconds, the peer ACKing every other segment."""
        for k, nbytes in enumerate(per_second):
            if nbytes:
                self.second(start + k + 0.1, nbytes, int(math.ceil(nbytes / SEGMENT) * acks_per_segment) * ACK)
        return self.alerts


def _spread(total: int, seconds: float) -> list[int]:
    """`total` bytes sent evenly over `seconds` (a fractional last second), per whole second."""
    whole = int(seconds)
    rate = total / seconds
    out = [int(rate)] * whole
    if seconds > whole:
        out.append(int(rate * (seconds - whole)))
    out[-1] += total - sum(out)
    return out


# ---- bursts -------------------------------------------------------------------------------------------------------
def test_a_clip_burst_is_reported_with_the_window_rate_length_bytes_and_balance():
    feed = Feed(dev=_device(maker="Hikvision"), name="clips.example.net")
    first = feed.second(T0 + 0.1, 100_000, 2_000)
    second = feed.second(T0 + 1.1, 150_000, 3_000)
    alert = feed.second(T0 + 2.1, 280_000, 5_000)
    assert first is None and second is None
    assert alert.as_dict() == {
        "ts": T0 + 2.1, "sensor": "site", "detector": "video_egress", "severity": "critical",
        "device": {"ip": "10.20.0.5", "mac": "00:12:ab:00:00:01", "vendor": None},
        "destination": {"ip": "203.0.113.7", "port": 443, "proto": "tcp", "name": "clips.example.net",
                        "scope": "public", **NO_PLACE},
        "score": 0.807,                        # 0.6 + (530 kB / 256 kB) / 10
        "summary": "camera 10.20.0.5 (Hikvision) sent 1.41 Mbit/s over the last 3 s: 530 kB to clips.example.net "
                   "(203.0.113.7) tcp/443 outside the site (TLS, one-way bulk upload; 53:1 up:down): a clip or a set "
                   "of images is leaving. Hikvision is a covered maker (named).",
        "vlan": 20, "upload": "burst", "rate_bps": 1413333, "window_s": 3, "bytes": 530_000, "up_down": 53.0,
        "profile": ["TLS", "one-way bulk upload"], "evidence":
        "burst: 530 kB in 3 s at 1.41 Mbit/s to clips.example.net (203.0.113.7) tcp/443"}
    assert feed.second(T0 + 3.1, 100_000, 2_000) is None       # one alert per episode


@pytest.mark.parametrize("seed", range(40))
def test_any_clip_of_450_to_600_kb_in_2_to_4_s_is_a_burst_within_its_own_duration(seed):
    rng = random.Random(seed)
    size, seconds = rng.randrange(450_000, 600_000), rng.uniform(2.0, 4.0)
    start = T0 + rng.random()
    feed = Feed(dev=_device(maker=rng.choice([None, "Dahua"])))
    alerts = feed.upload(start, _spread(size, seconds))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.extra["upload"] == "burst" and alert.ts - start <= seconds
    assert alert.severity == ("critical" if feed.dev.maker else "high")
    assert alert.extra["bytes"] >= 256_000 and alert.extra["rate_bps"] >= 600_000


@pytest.mark.parametrize("sent,alerts", [(256_000, True), (255_999, False)])
def test_a_burst_needs_burst_bytes_within_the_window(sent, alerts):
    feed = Feed()
    feed.second(T0 + 0.5, sent - 100_000, 1_000)
    assert (feed.second(T0 + 4.5, 100_000, 1_000) is not None) == alerts      # seconds 0..4: the 5 s window


def test_the_same_bytes_over_a_longer_time_are_no_burst():
    feed = Feed()
    feed.second(T0 + 0.5, 156_000, 1_000)
    assert feed.second(T0 + 5.5, 156_000, 1_000) is None                       # the first second has left


@pytest.mark.parametrize("received,packets,alerts", [
    (60_000, None, True),        # up:down exactly 5
    (60_001, None, False),       # a little more back: two-way
    (0, 750, True),              # packets average exactly 400 bytes; nothing back
    (0, 751, False),             # smaller packets: chatter, not bulk
])
def test_a_burst_is_one_way_bulk(received, packets, alerts):
    feed = Feed()
    assert (feed.second(T0, 300_000, received, packets) is not None) == alerts


# ---- streams ------------------------------------------------------------------------------------------------------
def test_a_slow_start_does_not_delay_a_stream_nor_dilute_its_rate():
    """8 s at 0.1 Mbit/s, then 0.4 Mbit/s: the window sees the faster seconds as soon as they fill it."""
    feed = Feed(flow=_flow(TAG_RTP), proto="udp", port=10000)
    rates = [100_000] * 8 + [400_000] * 30
    alerts = [feed.second(T0 + k + 0.02, rate // 8, packets=rate // 8 // 800) for k, rate in enumerate(rates)]
    found = [(k, a) for k, a in enumerate(alerts) if a is not None]
    assert len(found) == 1
    k, alert = found[0]
    assert k == 9                                 # the second faster second; an average since the start needs 11
    assert alert.extra["upload"] == "stream" and alert.extra["window_s"] == 5
    assert alert.extra["rate_bps"] == 8 * sum(r // 8 for r in rates[k - 4:k + 1]) // 5
    assert alert.extra["profile"] == ["RTP", "one-way bulk upload"] and alert.extra["up_down"] is None
    assert "sent 0.22 Mbit/s over the last 5 s: 138 kB to 203.0.113.7 udp/10000" in alert.summary


def test_a_stream_is_reported_over_the_seconds_it_filled():
    feed = Feed(flow=_flow(TAG_RTP))
    alerts = [feed.second(T0 + k, 31_250, packets=40) for k in range(4)]
    assert alerts[:3] == [None] * 3
    assert alerts[3].extra["window_s"] == 4 and alerts[3].extra["rate_bps"] == 250_000
    assert alerts[3].summary.startswith("10.20.0.5 sent 0.25 Mbit/s over the last 4 s: 125 kB")


@pytest.mark.parametrize("per_second,alerts", [
    ([25_000] * 5, True),                             # exactly 200 kbit/s over the 5 s window
    ([25_000] * 4 + [24_999], False),                 # a byte short
    ([0, 31_250, 31_250, 31_250, 31_250], True),      # four of five seconds
    ([62_500, 0, 62_500, 0, 0], False),               # two seconds: not sustained (and no burst)
])
def test_a_stream_is_sustained_over_its_window(per_second, alerts):
    feed = Feed(flow=_flow(TAG_RTP))
    for k, nbytes in enumerate(per_second):
        if nbytes:
            feed.second(T0 + k, nbytes, packets=nbytes // 500)
    assert bool(feed.alerts) == alerts


@pytest.mark.parametrize("tags,profile", [(TAG_RTP, ["RTP"]), (TAG_PPPP_DRW, ["PPPP DRW frames"]), (TAG_TLS, ["TLS"]),
                                          (TAG_RTP | TAG_PPPP_DRW | TAG_TLS | TAG_PPPP,
                                           ["RTP", "PPPP DRW frames", "TLS"])])
def test_a_media_profile_makes_a_two_way_stream_count_and_pppp_alone_does_not(tags, profile):
    feed = Feed(flow=_flow(tags))
    for k in range(5):
        feed.second(T0 + k, 40_000, received=40_000, packets=50)
    assert feed.alerts and feed.alerts[0].extra["profile"] == profile
    plain = Feed(flow=_flow(TAG_PPPP))
    for k in range(5):
        plain.second(T0 + k, 40_000, received=40_000, packets=50)
    assert plain.alerts == []


def test_a_stream_without_a_media_profile_must_be_one_way():
    for received, alerts in ((8_000, True), (8_001, False)):
        feed = Feed(flow=_flow(0))
        for k in range(5):
            feed.second(T0 + k, 40_000, received=received, packets=50)
        assert bool(feed.alerts) == alerts


# ---- trickles -----------------------------------------------------------------------------------------------------
def _stills(feed: Feed, seed: int, minutes: float = 9.0, sizes=(15_000, 40_000), gaps=(3.0, 7.0),
            at: float = T0) -> float:
    """A still image every few seconds over one TCP connection, the peer ACKing; returns the start."""
    rng = random.Random(seed)
    start = t = at + rng.random()
    while t < start + 60 * minutes:
        image = rng.randrange(*sizes)
        feed.upload(t, _spread(image, 0.9))
        t += rng.uniform(*gaps)
    return start


@pytest.mark.parametrize("seed", range(20))
def test_stills_every_few_seconds_are_a_trickle_within_five_minutes(seed):
    feed = Feed(name="img.example.net", port=80)
    start = _stills(feed, seed)
    [alert] = feed.alerts
    assert alert.extra["upload"] == "trickle" and alert.severity == "medium"
    assert alert.ts - start <= 300
    assert 60 <= alert.extra["window_s"] <= 120 and alert.extra["up_down"] > 5
    assert "kbit/s over the last" in alert.summary and "a low-and-slow one-way upload" in alert.summary


def test_a_covered_makers_trickle_is_high_and_a_slow_one_still_counts():
    feed = Feed(dev=_device(maker="Hikvision"))
    start = _stills(feed, 1, sizes=(30_000, 35_000), gaps=(20.0, 25.0))   # one still every 20-25 s: ~12 kbit/s
    [alert] = feed.alerts
    assert alert.severity == "high" and alert.extra["upload"] == "trickle" and alert.ts - start <= 300


@pytest.mark.parametrize("case", ["one snapshot", "two snapshots", "below the rate", "answered"])
def test_what_is_not_a_trickle(case):
    feed = Feed()
    if case == "one snapshot":
        feed.upload(T0, _spread(200_000, 1.5))
        for k in range(1, 12):
            feed.second(T0 + 10 * k, 200, 100)
    elif case == "two snapshots":
        feed.upload(T0, _spread(130_000, 1.0))
        feed.upload(T0 + 65, _spread(130_000, 1.0))
    elif case == "below the rate":
        _stills(feed, 2, minutes=15, sizes=(4_000, 5_000), gaps=(5.0, 5.0))   # ~7 kbit/s
    else:
        for k in range(600):
            feed.second(T0 + k, 3_000, received=700, packets=3)             # 24 kbit/s, but answered
    assert feed.alerts == []


def test_a_trickle_that_becomes_a_stream_is_reported_again_and_not_the_other_way():
    feed = Feed(flow=_flow(TAG_TLS))
    _stills(feed, 3, minutes=3)
    assert [a.extra["upload"] for a in feed.alerts] == ["trickle"]
    feed.upload(T0 + 200, [50_000] * 10)
    assert [(a.extra["upload"], a.severity) for a in feed.alerts] == [("trickle", "medium"), ("stream", "high")]
    _stills(feed, 4, minutes=3, at=T0 + 300)
    assert len(feed.alerts) == 2


def test_after_the_episode_ends_the_next_upload_is_a_new_alert():
    feed = Feed(detector=_detector(episode_timeout=600.0))
    feed.upload(T0, _spread(500_000, 3.0))
    feed.upload(T0 + 300, _spread(500_000, 3.0))
    assert len(feed.alerts) == 1
    feed.upload(T0 + 1000, _spread(500_000, 3.0))
    assert len(feed.alerts) == 2


def test_an_upload_whose_episode_was_alerted_before_a_restart_is_not_alerted_again_unless_it_grows():
    """Episodes outlive the process (the state store restores them); the windows do not."""
    episodes = Episodes(3600.0)
    config = parse_config({})
    before = Feed(detector=VideoEgressDetector(DetectorContext("site", episodes, config)))
    _stills(before, 5, minutes=3)
    assert [a.extra["upload"] for a in before.alerts] == ["trickle"]
    after = Feed(detector=VideoEgressDetector(DetectorContext("site", episodes, config)))   # a restart
    _stills(after, 6, minutes=3, at=T0 + 200)
    assert after.alerts == []
    after.upload(T0 + 400, [50_000] * 10)
    assert [(a.extra["upload"], a.severity) for a in after.alerts] == [("stream", "high")]


# ---- look-alikes that must stay quiet -----------------------------------------------------------------------------
def test_keep_alive_ntp_and_rtcp_cadences_are_no_upload():
    det = _detector()
    keepalive = Feed(det, peer="198.51.100.1")
    ntp = Feed(det, peer="198.51.100.2", proto="udp", port=123)
    rtcp = Feed(det, peer="198.51.100.3", proto="udp", port=5005, flow=_flow(TAG_RTP))
    rng = random.Random(5)
    for k in range(3600):
        ts = T0 + k
        if k % 30 == 0:
            keepalive.second(ts, 350, 300, packets=2)
        if k % 64 == 0:
            ntp.second(ts, 90, 90, packets=1)
        if k % 5 == 0:
            rtcp.second(ts + rng.random(), 120, 0, packets=1)
    assert keepalive.alerts == ntp.alerts == rtcp.alerts == []


def test_a_two_way_tls_session_and_a_download_are_no_upload():
    browse = Feed(flow=_flow(TAG_TLS))
    download = Feed(flow=_flow(TAG_TLS), peer="198.51.100.9")
    rng = random.Random(7)
    for k in range(300):
        up = rng.randrange(800, 3_000)
        browse.second(T0 + k, up, received=rng.randrange(20_000, 200_000), packets=up // 600 + 1)
        # 20 Mbit/s coming in: the camera's ACKs (one per two segments) are 470 kbit/s of small packets
        download.second(T0 + k, 893 * ACK, received=2_500_000, packets=893)
    assert browse.alerts == download.alerts == []


def test_video_to_the_recorder_never_reaches_the_detector():
    """The recorder is on the camera VLAN: the framework hands video_egress only public and core peers, and the
    detector itself ignores any other scope it is given."""
    assert VideoEgressDetector.interest == frozenset({"public", "core"})
    feed = Feed(scope="camera", peer="10.20.0.2", flow=_flow(TAG_RTP))
    for k in range(60):
        feed.second(T0 + k, 250_000, packets=200)
    assert feed.alerts == []


# ---- settings, bounds, the windows themselves ---------------------------------------------------------------------
def test_thresholds_come_from_the_config():
    feed = Feed(detector=_detector({"burst_bytes": 100_000, "burst_window": 2}))
    assert feed.second(T0, 60_000) is None
    assert feed.second(T0 + 1, 60_000).extra["upload"] == "burst"
    feed = Feed(detector=_detector({"trickle_rate": 2_000, "trickle_window": 60, "up_down_ratio": 2}))
    for k in range(0, 60, 3):
        feed.second(T0 + k, 1_500, received=700, packets=2)
    assert [a.extra["upload"] for a in feed.alerts] == ["trickle"]


def test_state_is_bounded_per_peer_and_per_window():
    det = _detector(max_open=3)
    dev = _device()
    for peer in range(10):
        Feed(det, dev, peer=f"198.51.100.{peer}").second(T0 + peer, 1_000)
    assert len(det._state) == 3
    feed = Feed(det, dev, peer="198.51.100.200")
    for k in range(2000):
        feed.second(T0 + k, 1_000)
    sending = det._state.get((dev.ip, "198.51.100.200"))
    assert len(sending.seconds.cells) == 4 * 5 and len(sending.slots.cells) == 4 * 12


def test_a_windows_tail_stops_at_its_length_and_counts_buckets_over_the_floor():
    window = Window()
    for unit, sent in ((1000, 10), (1002, 300), (1003, 20)):
        window.add(unit, 5, sent, 1, 1)
    assert window.tail(1003, 4) == (330, 3, 3, 3, 1000)           # all of it: 1000 is within 4 units of 1003
    assert window.tail(1003, 3) == (320, 2, 2, 2, 1002)           # 1000 is exactly 3 back: out
    assert window.tail(1003, 4, floor=20) == (330, 3, 3, 2, 1002)
    assert window.tail(1003, 1, floor=100) == (20, 1, 1, 0, 1003)
    window.add(1006, 5, 5, 0, 1)                                   # 1000 leaves the 5-unit window
    assert (window.sent, window.received, window.packets, list(window.cells[0::4])) == (325, 2, 3, [1002, 1003, 1006])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 40), st.integers(1, 10_000), st.integers(0, 10_000)), max_size=60),
       st.integers(1, 12), st.integers(1, 12), st.integers(1, 5_000))
def test_a_windows_running_totals_are_what_its_buckets_hold(steps, span, length, floor):
    """Units mostly advancing, sometimes a little back (flows of one second arrive in any order), sometimes far
    back (another capture): the totals always equal the buckets, the buckets lie within the span, and the tail
    sums the last units and counts those with at least `floor` bytes sent."""
    window, unit = Window(), 1000
    for delta, sent, received in steps:
        unit += delta
        window.add(unit, span, sent, received, 1)
        cells = window.cells
        units = cells[0::4]
        assert window.sent == sum(cells[1::4]) and window.received == sum(cells[2::4])
        assert window.packets == sum(cells[3::4]) and list(units) == sorted(set(units))
        assert units[-1] - units[0] < span
        tail = window.tail(units[-1], length, floor)
        inside = [i for i in range(0, len(cells), 4) if cells[i] > units[-1] - length]
        active = [cells[i] for i in inside if cells[i + 1] >= floor]
        assert tail.sent == sum(cells[i + 1] for i in inside) and tail.active == len(active)
        assert tail.first == (min(active) if active else units[-1])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(1, 1 << 40), st.integers(0, 1 << 40), st.integers(1, 1 << 20),
       st.integers(1, 12), st.lists(st.tuples(st.integers(-3, 20), st.integers(1, 10_000)), max_size=12))
def test_a_window_made_holding_its_first_bucket_is_a_new_window_that_added_it(unit, sent, received, packets, span,
                                                                               later):
    """Window.holding (a new pair's first sending) is add() on a new window, whatever its span: the same buckets
    and totals then and after the same later sending."""
    made, added = Window.holding(unit, sent, received, packets), Window()
    added.add(unit, span, sent, received, packets)
    for delta, more in [(0, 0), *later]:
        if more:
            unit += delta
            made.add(unit, span, more, 1, 1)
            added.add(unit, span, more, 1, 1)
        assert (list(made.cells), made.sent, made.received, made.packets) == (
            list(added.cells), added.sent, added.received, added.packets)


def test_a_new_pairs_first_sending_is_held_in_both_windows():
    """The detector's state for a new (device, peer) holds its first sending as the windows' add would."""
    det = _detector()
    dev = _device()
    det.observe(_obs(dev, ts=T0 + 0.5, sent_bytes=700, received_bytes=40, sent_packets=2))
    st_ = det._state.get((dev.ip, "203.0.113.7"))
    second, slot = int(T0 + 0.5), int(T0 + 0.5) // det._slot
    assert list(st_.seconds.cells) == [second, 700, 40, 2] and list(st_.slots.cells) == [slot, 700, 40, 2]
    assert (st_.seconds.sent, st_.slots.received, st_.slots.packets, st_.reported) == (700, 40, 2, 0)
