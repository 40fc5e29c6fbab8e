"""The beacon score one component at a time and the beaconing detector's edges (sensor/detect/beacon.py and
beaconing.py). Episode timeouts are in test_detect_episodes.py, the alert budget in test_alerting.py.

beacon_score (sensor/detect/beacon.py) averages a timing part and a size part:
  ts_score = (1 - |Bowley skew of intervals|, 1 - MAD/median interval, intervals / (span / median)) / 3
  ds_score = (1 - |Bowley skew of sizes|, 1 - MAD of sizes / 32, 1 - mode of sizes / 65535) / 3
Each part is tested alone with the other held perfect (constant sizes; perfectly regular timing), then together.
The expected values are worked out by hand in the comments (quantiles are statistics.quantiles(n=4,
method="inclusive"): for n values, positions (n - 1) * (1/4, 1/2, 3/4) into the sorted list).
"""

from __future__ import annotations

import math
import random

import pytest

from sensor.detect import Alert, BeaconingDetector, DetectorContext, Episodes, Observation, beacon_score
from sensor.enrich import CoveredMakers, Device

T0 = 1_700_000_000.0
EPS = 1 / 1024
PEER = "198.51.100.7"


def times_from(intervals: list[float], start: float = T0) -> list[float]:
    out = [start]
    for step in intervals:
        out.append(out[-1] + step)
    return out


# Skewed, widely spread intervals (shuffled: order does not matter to the score).
# sorted 50 100 200 400 800 1600: q1 = 100 + .25*100 = 125, median 300, q3 = 400 + .75*400 = 700,
# Bowley (125 + 700 - 600) / 575 = 9/23; |x - 300| sorted 100 100 200 250 500 1300: MAD 225;
# span 3150, so span/median = 10.5 and the count part is 6 / 10.5 = 4/7.
IRREGULAR_INTERVALS = [100, 1600, 50, 400, 200, 800]
IRREGULAR_TS = ((1 - 9 / 23) + (1 - 225 / 300) + 6 / 10.5) / 3           # 0.476708...
CONSTANT_DS = (1 + 1 + (1 - 80 / 65535)) / 3                              # sizes all 80: 0.999593...

# Spread sizes with perfectly regular timing (event order as given).
# sorted 100 100 100 116 132 164 228: q1 = 100, median 116, q3 = 132 + .5*32 = 148, Bowley 16/48 = 1/3;
# |x - 116| sorted 0 16 16 16 16 48 112: MAD 16, so 1 - 16/32 = 1/2; mode 100.
SPREAD_SIZES = [132, 100, 228, 100, 164, 116, 100]
SPREAD_DS = ((1 - 1 / 3) + (1 - 16 / 32) + (1 - 100 / 65535)) / 3         # 0.721713...

# Jittered intervals around 60 s: sorted 50 55 60 60 65 70: q1 56.25, median 60, q3 63.75, Bowley 0;
# |x - 60| sorted 0 0 5 5 10 10: MAD 5; span 360 = 6 medians, so the count part is 1.
JITTER_INTERVALS = [55, 70, 50, 60, 65, 60]
JITTER_TS = (1 + (1 - 5 / 60) + 1) / 3                                    # 35/36


# ---- beacon_score, one component at a time -------------------------------------------------------------------
def test_beacon_timing_component_alone_with_constant_sizes():
    """Sizes all equal, so the size part is perfect and the score moves with timing only; jitter is judged
    against the period (MAD / median interval), not against the whole span."""
    score, parts = beacon_score(times_from(IRREGULAR_INTERVALS), [80] * 7)
    assert score == pytest.approx((IRREGULAR_TS + CONSTANT_DS) / 2, abs=1e-12)
    assert parts == {"interval_s": 300.0, "interval_mad_s": 225.0, "ts_score": round(IRREGULAR_TS, 3),
                     "ds_score": 1.0}
    assert score < BeaconingDetector.THRESHOLD


def test_beacon_timing_component_alone_with_small_jitter():
    score, parts = beacon_score(times_from(JITTER_INTERVALS), [80] * 7)
    assert score == pytest.approx((JITTER_TS + CONSTANT_DS) / 2, abs=1e-12)
    assert parts["ts_score"] == 0.972 and parts["interval_s"] == 60.0 and parts["interval_mad_s"] == 5.0


def test_beacon_perfect_timing_and_constant_sizes():
    score, parts = beacon_score(times_from([60.0] * 6), [80] * 7)
    assert score == pytest.approx((1 + CONSTANT_DS) / 2, abs=1e-12)
    assert parts == {"interval_s": 60.0, "interval_mad_s": 0.0, "ts_score": 1.0, "ds_score": 1.0}


def test_beacon_size_component_alone_with_perfectly_regular_timing():
    score, parts = beacon_score(times_from([60.0] * 6), SPREAD_SIZES)
    assert score == pytest.approx((1 + SPREAD_DS) / 2, abs=1e-12)
    assert parts == {"interval_s": 60.0, "interval_mad_s": 0.0, "ts_score": 1.0, "ds_score": round(SPREAD_DS, 3)}


def test_beacon_size_smallness_is_the_mode_against_65535():
    """Regular timing, every size 32768: skew and MAD perfect, smallness 1 - 32768/65535."""
    score, _ = beacon_score(times_from([60.0] * 6), [32768] * 7)
    assert score == pytest.approx((1 + (2 + (1 - 32768 / 65535)) / 3) / 2, abs=1e-12)


def test_beacon_size_mad_saturates_at_32_bytes():
    """MAD of 32 bytes or more zeroes the MAD part (it never goes negative)."""
    # sorted 100 100 100 132 164 164 164: q1 100, median 132, q3 164, Bowley 0; |x - 132| all 32 but one: MAD 32
    _, parts = beacon_score(times_from([60.0] * 6), [100, 164, 100, 132, 164, 100, 164])
    assert parts["ds_score"] == round((1 + 0 + (1 - 100 / 65535)) / 3, 3)
    # MAD 64: clamped to 0, not -1
    _, parts = beacon_score(times_from([60.0] * 6), [100, 228, 100, 164, 228, 100, 228])
    assert parts["ds_score"] == round((1 + 0 + (1 - 100 / 65535)) / 3, 3)


def test_beacon_count_part_is_capped_at_one():
    """More check-ins than the span holds periods (extra ones in between): the count part stops at 1."""
    # sorted 10 10 60 60 60 60: q1 = 10 + .25*50 = 22.5, median 60, q3 60, Bowley (22.5 + 60 - 120) / 37.5 = -1;
    # |x - 60| sorted 0 0 0 0 50 50: MAD 0; span 260 is 4.33 periods for 6 intervals: 1.38, capped at 1
    score, parts = beacon_score(times_from([10, 60, 60, 60, 60, 10]), [80] * 7)
    assert parts["ts_score"] == round((0 + 1 + 1) / 3, 3)
    assert score == pytest.approx(((0 + 1 + 1) / 3 + CONSTANT_DS) / 2, abs=1e-12)


def test_beacon_timing_and_size_components_combined():
    score, parts = beacon_score(times_from(JITTER_INTERVALS), SPREAD_SIZES)
    assert score == pytest.approx((JITTER_TS + SPREAD_DS) / 2, abs=1e-12)
    assert parts == {"interval_s": 60.0, "interval_mad_s": 5.0, "ts_score": 0.972, "ds_score": 0.722}


# ---- the detector --------------------------------------------------------------------------------------------
def device(covered: bool = False) -> Device:
    dev = Device("10.20.0.11", mac=0x00408C000011, vendor="Axis Communications AB")
    if covered:
        dev.maker = next(m for m in CoveredMakers.load().makers if m.name == "Hikvision")
    return dev


def obs(ts: float, nbytes: int = 80, dev: Device | None = None, packets: int = 1) -> Observation:
    return Observation(ts, dev or device(), packets, nbytes, True, PEER, 443, "tcp", None, "public", 20)


def run_detector(times: list[float], sizes: list[int], dev: Device | None = None, episode_timeout=3600.0,
                 detector: BeaconingDetector | None = None) -> list[tuple[int, Alert]]:
    det = detector or BeaconingDetector(DetectorContext("camwatch", Episodes(episode_timeout)))
    dev = dev or device()
    alerts = [(i, det.observe(obs(t, s, dev))) for i, (t, s) in enumerate(zip(times, sizes, strict=True))]
    return [(i, a) for i, a in alerts if a is not None]


def test_irregular_timing_with_constant_sizes_is_not_a_beacon():
    """Scattered check-ins of one constant size: the size part alone is perfect, the timing part must keep the
    score under the threshold at every event (the detector scores from the sixth event on)."""
    times = times_from(IRREGULAR_INTERVALS)
    for n in (6, 7):
        assert beacon_score(times[:n], [80] * n)[0] < BeaconingDetector.THRESHOLD
    assert run_detector(times, [80] * 7) == []


def test_irregular_sizes_with_perfectly_regular_timing_is_not_a_beacon():
    """Check-ins exactly every 60 s but of wildly different sizes: the timing part alone is perfect."""
    # sorted 60 60 300 700 1500 4000 9000: q1 = 60 + .5*240 = 180, median 700, q3 = 1500 + .5*2500 = 2750,
    # Bowley (180 + 2750 - 1400) / 2570 = 1530/2570; |x - 700| sorted 0 400 640 640 800 3300 8300: MAD 640, so the
    # MAD part is 0 (clamped); mode 60
    sizes = [60, 1500, 300, 9000, 60, 4000, 700]
    score, parts = beacon_score(times_from([60.0] * 6), sizes)
    expected_ds = ((1 - 1530 / 2570) + 0 + (1 - 60 / 65535)) / 3
    assert score == pytest.approx((1 + expected_ds) / 2, abs=1e-12) and parts["ts_score"] == 1.0
    assert beacon_score(times_from([60.0] * 5), sizes[:6])[0] < BeaconingDetector.THRESHOLD
    assert run_detector(times_from([60.0] * 6), sizes) == []


@pytest.mark.parametrize("covered,severity", [(False, "medium"), (True, "high")])
def test_regular_check_ins_alert_at_the_sixth_event_exactly(covered, severity):
    times = times_from([60.0] * 7)
    alerts = run_detector(times, [80] * 8, device(covered))
    assert [i for i, _ in alerts] == [5]          # MIN_EVENTS = 6: the sixth check-in, not the fifth
    alert = alerts[0][1]
    assert alert.ts == times[5] and alert.detector == "beaconing" and alert.severity == severity
    assert alert.score == pytest.approx((1 + CONSTANT_DS) / 2, abs=1e-12)
    assert alert.extra == {"interval_s": 60.0, "interval_mad_s": 0.0, "ts_score": 1.0, "ds_score": 1.0}
    assert "every 60 s (jitter 0.0 s) over 6 check-ins: beacon score 1.00" in alert.summary
    assert (alert.dst_ip, alert.dst_port, alert.dst_proto, alert.vlan) == (PEER, 443, "tcp", 20)


@pytest.mark.parametrize("gap,events", [(5.0 - EPS, 1), (5.0, 2)])
def test_activity_closer_than_min_interval_extends_the_burst(gap, events):
    """MIN_INTERVAL = 5 s after the burst's last activity: closer is the same check-in (its bytes added), at 5 s it
    is a new one."""
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    dev = device()
    det.observe(obs(T0, 100, dev))
    det.observe(obs(T0 + gap, 30, dev))
    state = det._events.get((dev.ip, PEER))
    if events == 1:
        assert state == [[T0, T0 + gap, 130]]
    else:
        assert state == [[T0, T0, 100], [T0 + gap, T0 + gap, 30]]


def test_a_burst_is_measured_from_its_last_activity_not_its_start():
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    dev = device()
    for k in range(4):   # 0, 4, 8, 12 s: each within 5 s of the previous, one burst of 16 s
        det.observe(obs(T0 + 4 * k, 10, dev))
    assert det._events.get((dev.ip, PEER)) == [[T0, T0 + 12, 40]]


def test_detector_keeps_the_last_64_events():
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    dev = device()
    for k in range(70):
        det.observe(obs(T0 + 60 * k, 80, dev))
    events = det._events.get((dev.ip, PEER))
    assert len(events) == 64 and events[0][0] == T0 + 60 * 6 and events[-1][0] == T0 + 60 * 69


@pytest.mark.parametrize("nudge,alerts", [(0, 1), (1, 0)])
def test_threshold_is_inclusive(nudge, alerts):
    """A score equal to THRESHOLD alerts; the next float above the score as threshold does not."""
    times, sizes = times_from([60.0] * 5), SPREAD_SIZES[:6]
    score, _ = beacon_score(times, sizes)
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    det.THRESHOLD = math.nextafter(score, 2.0) if nudge else score
    assert len(run_detector(times, sizes, detector=det)) == alerts


def test_non_sending_or_internal_observations_are_not_events():
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    dev = device()
    assert det.observe(Observation(T0, dev, 0, 0, False, PEER, 443, "tcp", None, "public", 20)) is None
    assert det.observe(Observation(T0, dev, 1, 80, True, "10.20.0.2", 443, "tcp", None, "camera", 20)) is None
    assert len(det._events) == 0


def test_beacon_score_separates_regular_from_random():
    rng = random.Random(1)
    regular = [1000 + 60 * k + rng.uniform(-1, 1) for k in range(20)]
    assert beacon_score(regular, [80] * 20)[0] >= BeaconingDetector.THRESHOLD
    scattered, t = [], 1000.0
    for _ in range(20):
        t += rng.expovariate(1 / 60)
        scattered.append(t)
    sizes = [rng.randrange(60, 6000) for _ in range(20)]
    assert beacon_score(scattered, sizes)[0] < BeaconingDetector.THRESHOLD


def test_sub_second_intervals_are_judged_against_their_own_median():
    """Intervals 0.4, 0.5, 0.5, 0.6, 0.7 s: median 0.5, MAD 0.1, Bowley skew 1 (q1 = q2 = 0.5, q3 = 0.6), span 2.7
    s; so jitter part 1 - 0.1/0.5 = 0.8, count part 5 / (2.7 / 0.5) = 0.9259, skew part 0."""
    score, parts = beacon_score(times_from([0.4, 0.5, 0.5, 0.6, 0.7]), [100] * 6)
    ts_score = (0 + 0.8 + 5 / 5.4) / 3
    ds_score = (1 + 1 + (1 - 100 / 65535)) / 3
    assert parts == {"interval_s": 0.5, "interval_mad_s": 0.1, "ts_score": round(ts_score, 3),
                     "ds_score": round(ds_score, 3)}
    assert score == pytest.approx((ts_score + ds_score) / 2)


def test_the_beacon_summary_names_the_destination_and_times_bursts_from_their_start():
    """Bursts start every 60 s but last 0 to 4 s: the timing is read from each burst's start (regular), not its
    last activity (irregular), and the alert names the destination by DNS name, port and protocol."""
    det = BeaconingDetector(DetectorContext("camwatch", Episodes(3600.0)))
    dev, raised = device(), []
    for k, length in enumerate([0, 4, 1, 3, 0, 2]):
        start = T0 + 60.0 * k
        for ts in (start, start + length):
            found = det.observe(Observation(ts, dev, 1, 40, True, PEER, 8443, "udp", "c2.example", "public", 20))
            raised += [found] if found else []
    [alert] = raised
    assert alert.extra == {"interval_s": 60.0, "interval_mad_s": 0.0, "ts_score": 1.0, "ds_score": 1.0}
    assert alert.summary == ("10.20.0.11 (Axis Communications AB) checks in with c2.example (198.51.100.7) "
                             "udp/8443 every 60 s (jitter 0.0 s) over 6 check-ins: beacon score 1.00.")
