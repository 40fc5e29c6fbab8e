"""The beacon score one part at a time and the beaconing detector (sensor/detect/beacon.py and beaconing.py): jittered
beacons of varying sizes found within five periods, and what must not be a beacon (chance arrivals, video, RTCP's
randomised reports, a connection's late close). Episode timeouts are in test_detect_episodes.py, the alert budget
in test_alerting.py.

beacon_score averages a timing score and a size score (RITA v5's weighting of the two):
  timing = (1 - |Bowley skew| * min(1, IQR / median), 1 - MAD / median, share of intervals within 30% of the
            median) / 3
  sizes  = (1 - |Bowley skew| * min(1, IQR / median), 1 - MAD / median) / 2
The Bowley skew is 0 when the median is on a quartile. Expected values are worked out by hand in the comments
(statistics.quantiles(n=4, method="inclusive"): for n values, positions (n - 1) * (1/4, 1/2, 3/4) into the sorted
list).
"""

from __future__ import annotations

import random

import pytest

from sensor.config import parse_config
from sensor.detect import BeaconingDetector, DetectorContext, Episodes, beacon_score
from sensor.detect.beacon import bowley_skew, size_score, timing_score
from sensor.flows import FIN, Flow

from .observations import device as _device
from .observations import observation as _obs

T0 = 1_700_000_000.0
PEER = "198.51.100.7"


def times_from(intervals: list[float], start: float = T0) -> list[float]:
    out = [start]
    for step in intervals:
        out.append(out[-1] + step)
    return out


# ---- the score, one part at a time ----------------------------------------------------------------------------
def test_bowley_skew_and_its_zero_when_the_median_is_on_a_quartile():
    # sorted 50 100 200 400 800 1600: q1 = 125, median 300, q3 = 700: (125 + 700 - 600) / 575
    assert bowley_skew([100, 1600, 50, 400, 200, 800]) == pytest.approx(9 / 23)
    assert bowley_skew([60, 60, 60, 90, 120]) == 0.0        # q1 = median = 60
    assert bowley_skew([30, 60, 90, 90, 90]) == 0.0         # median = q3 = 90
    assert bowley_skew([7, 7, 7, 7]) == 0.0


def test_timing_of_a_jittered_period():
    # sorted 50 55 60 60 65 70: q1 56.25, median 60, q3 63.75, Bowley 0; |x - 60| sorted 0 0 5 5 10 10: MAD 5;
    # all within 18 s of 60
    assert timing_score([55, 70, 50, 60, 65, 60]) == pytest.approx((1 + (1 - 5 / 60) + 1) / 3)


def test_timing_of_scattered_intervals():
    # Bowley 9/23 (above), spread 575/300 > 1: skew part 1 - 9/23; |x - 300| sorted 100 100 200 250 500 1300:
    # MAD 225; none within 90 s of 300
    assert timing_score([100, 1600, 50, 400, 200, 800]) == pytest.approx((14 / 23 + (1 - 225 / 300) + 0) / 3)


def test_a_tight_spreads_skew_counts_little():
    # sorted 48 50 51 54 60: q1 50, median 51, q3 54: Bowley (50 + 54 - 102) / 4 = 0.5, weighed by 4/51;
    # |x - 51| sorted 1 3 3 3 9: MAD 3; all within 15.3 s
    expected = ((1 - 0.5 * 4 / 51) + (1 - 3 / 51) + 1) / 3
    assert timing_score([60, 48, 54, 50, 51]) == pytest.approx(expected)


def test_one_missed_check_in_costs_one_interval_of_the_on_period_share():
    # 60 60 120 60 60: median 60 = q1 = q3: skew 0; MAD 0; four of five on period
    assert timing_score([60, 60, 120, 60, 60]) == pytest.approx((1 + 1 + 4 / 5) / 3)


def test_sizes_varying_by_a_factor_of_two_still_score_high_and_wild_ones_do_not():
    assert size_score([80.0] * 6) == 1.0
    # sorted 300 400 450 500 600: Bowley 0; |x - 450| sorted 0 50 50 150 150: MAD 50
    assert size_score([300, 400, 500, 600, 450]) == pytest.approx((1 + (1 - 50 / 450)) / 2)
    # sorted 60 60 300 700 1500 4000 9000: q1 180, median 700, q3 2750, Bowley 1530/2570 at full weight;
    # |x - 700| sorted 0 400 640 640 800 3300 8300: MAD 640
    assert size_score([60, 1500, 300, 9000, 60, 4000, 700]) == pytest.approx(
        ((1 - 1530 / 2570) + (1 - 640 / 700)) / 2)


def test_the_beacon_score_averages_timing_and_sizes_and_reports_its_parts():
    times = times_from([55, 70, 50, 60, 65, 60])
    sizes = [300, 400, 500, 600, 450, 450, 450]
    score, timing, parts = beacon_score(times, sizes)
    assert timing == pytest.approx(timing_score([55, 70, 50, 60, 65, 60]))
    assert score == pytest.approx((timing + size_score([float(s) for s in sizes])) / 2)
    assert parts == {"interval_s": 60.0, "interval_mad_s": 5.0, "ts_score": round(timing, 3),
                     "ds_score": round(size_score([float(s) for s in sizes]), 3)}


def test_degenerate_medians_score_zero():
    assert timing_score([0.0, 0.0, 0.0]) == 0.0 and size_score([0.0, 0.0, 0.0]) == 0.0


# ---- the detector ------------------------------------------------------------------------------------------------
def _detector(**beaconing) -> BeaconingDetector:
    config = parse_config({"detect": {"beaconing": beaconing}})
    return BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0), config))


def _tcp_check_in(det, dev, t: float, size: int, port: int = 443):
    """A check-in as the pipeline hands over a short TCP connection: the new flow's first packets at once, then
    the rest of that second (request, answer's ACK, close)."""
    flow = Flow(b"k" * 37, 20, 6, 40000, port, t)
    alerts = [det.observe(_obs(dev, ts=t, sent_packets=2, sent_bytes=132, peer=PEER, port=port, flow=flow,
                               new_flow=True))]
    flow.orig_flags |= FIN
    alerts.append(det.observe(_obs(dev, ts=t + 0.05, sent_packets=4, sent_bytes=size + 200, peer=PEER, port=port,
                                   flow=flow, received_bytes=180)))
    return [a for a in alerts if a is not None]


def _run(times, sizes, det=None, dev=None):
    det, dev = det or _detector(), dev or _device()
    found = []
    for k, (t, size) in enumerate(zip(times, sizes, strict=True)):
        found += [(k, a) for a in _tcp_check_in(det, dev, t, size)]
    return found


def test_a_jittered_tcp_beacon_of_varying_sizes_is_found_at_its_fifth_check_in():
    """Check-ins every 50 s ±20%, 300-600 bytes each (a factor of two), each one short TCP connection."""
    rng = random.Random(2020)
    times = times_from([50 * rng.uniform(0.8, 1.2) for _ in range(9)])
    [(k, alert)] = _run(times, [rng.randrange(300, 600) for _ in times], dev=_device(maker="Dahua"))
    assert k == 4 and (alert.ts - times[0]) / 50 <= 5
    assert alert.severity == "high" and alert.detector == "beaconing"
    assert alert.extra["checkins"] == 5 and 40 <= alert.extra["interval_s"] <= 60
    assert alert.summary.startswith(f"camera 10.20.0.5 (Dahua) checks in with {PEER} tcp/443 every ")
    assert alert.extra["evidence"].startswith("5 check-ins every ")


@pytest.mark.parametrize("jitter", ["sleep", "schedule"])
def test_jittered_beacons_of_any_period_are_found_within_five_periods(jitter):
    """200 beacons, periods of 20 s to 10 min: `sleep` jitter draws each interval from P ±20% (as implants
    sleep); `schedule` jitter moves each check-in by up to ±20% of P from its slot (intervals P ±40%)."""
    within, found = 0, 0
    for seed in range(200):
        rng = random.Random(seed)
        period = rng.uniform(20, 600)
        if jitter == "sleep":
            times = times_from([period * rng.uniform(0.8, 1.2) for _ in range(11)])
        else:
            times = [T0 + period * (k + rng.uniform(-0.2, 0.2)) for k in range(12)]
        base = rng.randrange(80, 2000)
        alerts = _run(times, [int(base * rng.uniform(1, 2)) for _ in times])
        found += bool(alerts)
        within += bool(alerts) and (alerts[0][1].ts - times[0]) / period <= 5
    assert found == 200 and within >= (199 if jitter == "sleep" else 192)


def test_chance_arrivals_rarely_look_like_a_beacon():
    """Check-ins at random (exponential gaps over the 5 s that separate them), constant sizes: the old score,
    which sizes alone could carry, called 98% of these beacons."""
    raised = 0
    for seed in range(300):
        rng = random.Random(seed)
        times = times_from([5 + rng.expovariate(1 / 50) for _ in range(29)])
        raised += bool(_run(times, [80] * 30))
    assert raised <= 0.2 * 300


def test_video_and_the_keep_alives_riding_along_are_one_long_check_in():
    det, dev = _detector(), _device()
    for k in range(600):
        assert det.observe(_obs(dev, ts=T0 + k, sent_packets=40, sent_bytes=40_000, peer=PEER, proto="udp")) is None
        if k % 10 == 0:
            assert det.observe(_obs(dev, ts=T0 + k + 0.5, sent_packets=1, sent_bytes=60, peer=PEER,
                                    proto="udp")) is None
    assert len(det._events.get((dev.ip, PEER))) == 1


def test_rtcp_reports_every_5_s_are_no_beacon():
    """RFC 3550: each report 0.5 to 1.5 times the 5 s interval, divided by e - 3/2; 15 minutes each."""
    raised = 0
    for seed in range(200):
        rng = random.Random(seed)
        det, dev, t = _detector(), _device(), T0
        while t < T0 + 900:
            t += 5 * rng.uniform(0.5, 1.5) / 1.21828
            raised += det.observe(_obs(dev, ts=t, sent_packets=1, sent_bytes=rng.choice([72, 80, 96]), peer=PEER,
                                       port=5005, proto="udp")) is not None
    assert raised <= 2


def test_a_tcp_check_in_is_one_however_many_packets_and_its_late_close_is_none():
    det, dev = _detector(), _device()
    _tcp_check_in(det, dev, T0, 400)
    assert det._events.get((dev.ip, PEER)) == [[T0, T0 + 0.05, 132 + 600]]
    flow = Flow(b"k" * 37, 20, 6, 40000, 443, T0)
    flow.orig_flags = flow.resp_flags = FIN                       # the peer closed the idle connection
    det.observe(_obs(dev, ts=T0 + 15, sent_packets=2, sent_bytes=120, peer=PEER, flow=flow))
    assert len(det._events.get((dev.ip, PEER))) == 1
    flow.orig_flags = flow.resp_flags = 0                         # the same two packets, no close: a check-in
    det.observe(_obs(dev, ts=T0 + 30, sent_packets=2, sent_bytes=120, peer=PEER, flow=flow))
    assert len(det._events.get((dev.ip, PEER))) == 2


def test_a_connection_closed_by_an_idle_timeout_after_each_check_in_is_still_a_beacon():
    det, dev = _detector(), _device()
    raised = []
    for k in range(6):
        t = T0 + 60 * k
        raised += _tcp_check_in(det, dev, t, 300)
        late = Flow(b"k" * 37, 20, 6, 40000, 443, t)
        late.resp_flags = FIN
        alert = det.observe(_obs(dev, ts=t + 15, sent_packets=2, sent_bytes=120, peer=PEER, flow=late))
        raised += [alert] if alert else []
    assert len(raised) == 1 and raised[0].extra["interval_s"] == 60.0


@pytest.mark.parametrize("period,alerts", [(7.0, False), (7.2, True)])
def test_a_period_must_clear_the_gap_that_cuts_check_ins(period, alerts):
    """5 s / (1 - 0.3): shorter periods could be the gap's own doing."""
    assert bool(_run(times_from([period] * 6), [100] * 7)) == alerts


@pytest.mark.parametrize("length,alerts", [(14.0, True), (16.0, False)])
def test_a_beacon_is_quiet_most_of_its_period(length, alerts):
    """Check-ins every 60 s lasting `length` seconds (sending every 2 s): a quarter of the period is the limit."""
    det, dev, raised = _detector(), _device(), []
    for k in range(6):
        for step in range(int(length / 2) + 1):
            alert = det.observe(_obs(dev, ts=T0 + 60 * k + 2 * step, sent_packets=1, sent_bytes=100, peer=PEER))
            raised += [alert] if alert else []
    assert bool(raised) == alerts


def test_the_configured_check_ins_and_thresholds_apply():
    times = times_from([60.0] * 8)
    assert [k for k, _ in _run(times, [100] * 9, det=_detector(min_checkins=7))] == [6]
    # scored as the fifth check-in begins, over the four finished ones: each a whole connection, the handshake's
    # 132 bytes and 200 of overhead included
    score, timing, _ = beacon_score(times[:5], [332 + s for s in (100, 200, 100, 200)])
    assert score < 1.0 and timing == 1.0
    assert _run(times[:5], [100, 200, 100, 200, 150], det=_detector(threshold=score))
    assert not _run(times[:5], [100, 200, 100, 200, 150], det=_detector(threshold=min(1.0, score + 1e-9)))
    jittered = times_from([60, 50, 70, 55, 65])
    _, timing, _ = beacon_score(jittered, [100] * 6)
    assert _run(jittered, [100] * 6, det=_detector(timing_threshold=timing))
    assert not _run(jittered, [100] * 6, det=_detector(timing_threshold=timing + 1e-9))


@pytest.mark.parametrize("gap,events", [(5.0 - 1 / 1024, [[T0, T0 + 5.0 - 1 / 1024, 130]]),
                                        (5.0, [[T0, T0, 100], [T0 + 5.0, T0 + 5.0, 30]])])
def test_sending_within_the_gap_of_the_last_activity_is_the_same_check_in(gap, events):
    det, dev = _detector(), _device()
    det.observe(_obs(dev, ts=T0, sent_bytes=100, peer=PEER))
    det.observe(_obs(dev, ts=T0 + gap, sent_bytes=30, peer=PEER))
    assert det._events.get((dev.ip, PEER)) == events


def test_the_check_in_gap_is_configured():
    det, dev = _detector(checkin_gap=20.0), _device()
    for k in range(3):
        det.observe(_obs(dev, ts=T0 + 15 * k, peer=PEER))
    assert len(det._events.get((dev.ip, PEER))) == 1


def test_the_detector_keeps_the_last_64_check_ins_per_pair_and_a_bounded_number_of_pairs():
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0, max_open=3)))
    dev = _device()
    for k in range(70):
        det.observe(_obs(dev, ts=T0 + 60 * k, peer=PEER))
    events = det._events.get((dev.ip, PEER))
    assert len(events) == 64 and events[0][0] == T0 + 60 * 6
    for p in range(5):
        det.observe(_obs(dev, ts=T0 + 5000 + p, peer=f"203.0.113.{p}"))
    assert len(det._events) == 3


def test_non_sending_or_internal_observations_are_not_check_ins():
    det, dev = _detector(), _device()
    assert det.observe(_obs(dev, sent_packets=0, sent_bytes=0, peer=PEER)) is None
    assert det.observe(_obs(dev, peer="10.20.0.2", scope="camera")) is None
    assert len(det._events) == 0


def test_pings_every_period_are_a_connectivity_check_not_a_beacon():
    """A camera pinging a public resolver every 41 s is regular by design; hardcoded_infra reports it, low. Pings
    big enough to carry something (a tunnel over ICMP) are judged like any other check-in."""
    from sensor.tags import TAG_ICMP_ECHO
    det, dev = _detector(), _device(maker="Hikvision")
    flow = Flow(b"p" * 37, 20, 1, 0, 0, 1_000.0)
    flow.orig_tags = TAG_ICMP_ECHO
    pings = [det.observe(_obs(dev, ts=1_000.0 + 41 * k, sent_packets=1, sent_bytes=98, peer=PEER, port=None,
                              proto="icmp", flow=flow)) for k in range(12)]
    assert pings == [None] * 12
    tunnel = Flow(b"q" * 37, 20, 1, 0, 0, 1_000.0)
    tunnel.orig_tags = TAG_ICMP_ECHO
    found = [det.observe(_obs(dev, ts=1_000.0 + 41 * k, sent_packets=1, sent_bytes=1200, peer="198.51.100.9",
                              port=None, proto="icmp", flow=tunnel)) for k in range(12)]
    assert any(a is not None for a in found)


def test_a_new_pairs_first_check_in_is_begun_as_any_other_and_a_first_teardown_begins_none():
    """A pair seen first at a connection's late close keeps nothing; one seen first sending holds one check-in, as
    CheckIns.begin makes it, and goes on as a pair made by begin would."""
    from sensor.detect.beaconing import CheckIns

    det, dev = _detector(), _device()
    flow = Flow(b"k" * 37, 20, 6, 40000, 443, T0)
    flow.orig_flags = FIN
    assert det.observe(_obs(dev, ts=T0, sent_packets=2, sent_bytes=120, peer=PEER, flow=flow)) is None
    assert len(det._events) == 0
    reference = CheckIns()
    for k in range(8):
        det.observe(_obs(dev, ts=T0 + 60 * k, sent_bytes=300 + k, peer=PEER))
        reference.begin(T0 + 60 * k, 300 + k, det.HISTORY)
        events = det._events.get((dev.ip, PEER))
        assert isinstance(events, CheckIns) and events == reference
        assert events.sorted_series() == reference.sorted_series()
