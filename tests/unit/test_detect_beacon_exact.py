"""sensor/detect/beacon.py sorts each series once and reads its statistics off the sorted list; the scores must be
those of statistics.median and statistics.quantiles over the unsorted series to the bit (alerts carry them, and a
threshold sits on them). The reference below is the straightforward version the module replaced."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import pytest

from sensor.detect.beacon import (
    ON_PERIOD,
    _kth_deviation,
    _mad_of_sorted,
    _within,
    beacon_score,
    bowley_skew,
    mad,
    median_of_sorted,
    size_score,
    sorted_beacon_score,
    sorted_timing,
    timing_clearing,
    timing_score,
)


def ref_bowley_skew(values):
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    if q2 in (q1, q3):
        return 0.0
    return (q1 + q3 - 2 * q2) / (q3 - q1)


def ref_mad(values):
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


def _ref_skew_part(values, med):
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return 1 - abs(ref_bowley_skew(values)) * min(1.0, (q3 - q1) / med)


def _ref_madm_part(values, med):
    return max(0.0, 1 - ref_mad(values) / med)


def ref_timing_score(intervals):
    med = statistics.median(intervals)
    if med <= 0:
        return 0.0
    share = sum(abs(i - med) <= ON_PERIOD * med for i in intervals) / len(intervals)
    return (_ref_skew_part(intervals, med) + _ref_madm_part(intervals, med) + share) / 3


def ref_size_score(sizes):
    med = statistics.median(sizes)
    if med <= 0:
        return 0.0
    return (_ref_skew_part(sizes, med) + _ref_madm_part(sizes, med)) / 2


def ref_beacon_score(times, sizes):
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    ts_score = ref_timing_score(intervals)
    ds_score = ref_size_score([float(s) for s in sizes])
    parts = {"interval_s": round(statistics.median(intervals), 2), "interval_mad_s": round(ref_mad(intervals), 2),
             "ts_score": round(ts_score, 3), "ds_score": round(ds_score, 3)}
    return (ts_score + ds_score) / 2, ts_score, parts


def _history(rng: random.Random) -> tuple[list[float], list[int]]:
    """Check-in starts and sizes of many shapes: jittered timers, missed check-ins, ties, bursts, chance arrivals,
    time running backwards (a capture out of order), sizes constant, varying, zero or wild."""
    n = rng.randint(4, 65)
    period = rng.choice([0.5, 5.0, 30.0, 60.0, 300.0, 3600.0, rng.uniform(0.01, 5000)])
    kind = rng.randrange(5)
    t = rng.uniform(0, 2e9)
    times = [t]
    for _ in range(n - 1):
        if kind == 0:
            step = period * (1 + rng.uniform(-0.2, 0.2))
        elif kind == 1:
            step = period * rng.choice([1, 1, 1, 2])
        elif kind == 2:
            step = rng.choice([0.0, period, period])
        elif kind == 3:
            step = rng.expovariate(1 / period)
        else:
            step = rng.uniform(-period, period)
        t += step
        times.append(t)
    shape = rng.randrange(4)
    base = rng.randint(0, 100_000)
    sizes = [base if shape == 0 else base + rng.randint(0, base + 1) if shape == 1 else
             rng.choice([0, base]) if shape == 2 else rng.randint(0, 10**9) for _ in range(n - 1)]
    return times, sizes


@pytest.mark.parametrize("seed", range(20))
def test_scores_equal_the_statistics_module_on_random_histories(seed):
    rng = random.Random(seed)
    for _ in range(250):
        times, sizes = _history(rng)
        assert beacon_score(times, sizes) == ref_beacon_score(times, sizes)
        intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert timing_score(intervals) == ref_timing_score(intervals)
        assert size_score(sizes) == ref_size_score(sizes)
        assert mad(intervals) == ref_mad(intervals)
        assert bowley_skew(sizes) == ref_bowley_skew(sizes)


def test_small_series_match_including_the_errors_of_too_few_values():
    for values in ([1.0, 2.0], [3, 1], [5.0, 5.0, 5.0], [2, 9, 4]):
        assert bowley_skew(values) == ref_bowley_skew(values)
        assert mad(values) == ref_mad(values)
    with pytest.raises(statistics.StatisticsError):
        bowley_skew([1.0])
    with pytest.raises(statistics.StatisticsError):
        mad([])


def test_an_interval_exactly_on_the_edge_of_the_on_period_band_counts_as_on_period():
    # median 60; 42 and 78 lie exactly 18 s (= 0.3 * 60) from it
    intervals = [42.0, 60.0, 60.0, 60.0, 78.0, 100.0, 20.0]
    assert timing_score(intervals) == ref_timing_score(intervals)
    assert timing_score(intervals) == pytest.approx((1 + (1 - 18 / 60) + 5 / 7) / 3)


def test_the_detectors_sorted_series_follow_its_check_ins_as_they_come_and_go():
    """CheckIns keeps the intervals and finished sizes sorted as check-ins begin and the oldest are forgotten; they
    must equal the series worked out afresh, so the score is beacon_score's of the check-ins it holds."""
    from sensor.detect.beaconing import CheckIns

    for seed in range(30):
        rng = random.Random(seed)
        times, sizes = _history(rng)
        times += [times[-1] + rng.uniform(-10, 500) for _ in range(rng.randint(0, 80))]
        events, history = CheckIns(), rng.choice([4, 9, 64])
        for k, t in enumerate(times):
            events.begin(t, rng.randint(0, 5000), history)
            events[-1][2] += rng.randint(0, 3)           # a check-in grows while it is the last
            events[-1][1] = t + rng.choice([0.0, rng.uniform(-1, 40)])   # and lasts (time may run backwards)
            if len(events) >= 4 and (k % 3 == 0 or events.intervals is not None):
                got = events.sorted_series()
                starts = [e[0] for e in events]
                assert len(events) <= history
                assert got == (sorted(b - a for a, b in zip(starts, starts[1:], strict=False)),
                               sorted(float(e[2]) for e in events[:-1]))
                assert sorted_beacon_score(*got) == ref_beacon_score(starts, [e[2] for e in events[:-1]])
                # the finished check-ins' durations, sorted, and their median is statistics.median's to the bit
                durations = events.sorted_durations()
                assert list(durations) == sorted(e[1] - e[0] for e in events[:-1])
                assert median_of_sorted(durations) == statistics.median(e[1] - e[0] for e in events[:-1])
                # the detector's two steps: the timing first (its threshold can refuse before the sizes), then
                # the score from it; the same numbers as in one step
                timed = sorted_timing(got[0])
                assert timed[2] == ref_timing_score(got[0])
                assert sorted_beacon_score(*got, timed) == sorted_beacon_score(*got)


# The MAD and the on-period share are read off the sorted series without a list of deviations (_kth_deviation,
# _within); every order statistic of the deviations and every count must be those of the sorted list, to the bit.

def _series(rng: random.Random) -> list[float]:
    n = rng.randint(1, 70)
    kind = rng.randrange(5)
    if kind == 0:
        return [rng.uniform(-1e3, 1e3) for _ in range(n)]
    if kind == 1:   # ties, many of them on the median
        return [float(rng.randint(0, 3)) for _ in range(n)]
    if kind == 2:   # tiny, subnormal and huge gaps, and sums that round
        return [rng.choice([5e-324, 1e-300, 0.1, 0.2, 0.30000000000000004, 1.0, 1e15 + 0.5, 1e300]) for _ in range(n)]
    if kind == 3:   # a jittered timer with missed check-ins (a long tail on one side)
        period = rng.uniform(0.01, 5000)
        return [period * (1 + rng.uniform(-0.2, 0.2)) * rng.choice([1, 1, 1, 2, 3]) for _ in range(n)]
    return [rng.choice([-1.0, 1.0]) * rng.expovariate(1.0) * 10 ** rng.randint(-8, 8) for _ in range(n)]


def test_deviation_statistics_equal_the_sorted_deviations():
    rng = random.Random(16)
    for _ in range(4000):
        data = sorted(_series(rng))
        med = median_of_sorted(data)
        devs = sorted([abs(v - med) for v in data])
        for k in range(len(data)):
            got = _kth_deviation(data, med, k)
            assert got == devs[k] and math.copysign(1.0, got) == math.copysign(1.0, devs[k]), (data, k)
        assert _mad_of_sorted(data, med) == statistics.median(devs)
        for reach in (ON_PERIOD * med, 0.0, abs(med), devs[len(devs) // 2], devs[-1], -1.0, 5e-324):
            assert _within(data, med, reach) == sum(d <= reach for d in devs), (data, reach)
        # a reach on a deviation exactly, and on its neighbouring floats, where med ± reach rounds either way
        for d in devs:
            for reach in (d, math.nextafter(d, -math.inf), math.nextafter(d, math.inf)):
                assert _within(data, med, reach) == sum(x <= reach for x in devs)


def test_mad_and_timing_equal_the_statistics_module_on_timers():
    rng = random.Random(61)
    for _ in range(1500):
        times, sizes = _history(rng)
        intervals = sorted(b - a for a, b in zip(times, times[1:], strict=False))
        assert mad(intervals) == ref_mad(intervals)
        med, mad_, score = sorted_timing(intervals)
        assert (med, mad_) == (statistics.median(intervals), ref_mad(intervals))
        assert score == ref_timing_score(intervals)


def test_timing_clearing_gives_up_only_below_the_floor():
    """timing_clearing may answer None only when sorted_timing's score is below the floor; otherwise it is
    sorted_timing's answer, to the bit. Both outcomes must occur, or the test proves nothing."""
    rng = random.Random(1616)
    outcomes = Counter()
    for _ in range(3000):
        times, _ = _history(rng)
        intervals = sorted(b - a for a, b in zip(times, times[1:], strict=False))
        full = sorted_timing(intervals)
        for floor in (0.8, rng.uniform(0.0, 1.0), 0.0, 1.0):
            got = timing_clearing(intervals, floor)
            if got is None:
                assert full[2] < floor, (intervals, floor, full)
                outcomes["gave up"] += 1
            else:
                assert got == full
                outcomes["scored"] += 1
    assert outcomes["gave up"] > 100 and outcomes["scored"] > 100, outcomes
