"""Beacon maths: how regular a device's check-ins with one destination are, after RITA v5 (activecm/rita,
analysis/beacons.go), adapted to deciding within a few periods instead of over a day of logs.

RITA v5 scores a series (the intervals between connections, or the bytes of each) by the mean of two parts:
1 - |Bowley skew| (a symmetric spread, as jitter makes it), and (median - MAD) / median (the spread against the
period itself). It counts the skew only when the spread is wide enough to mean something (an interquartile range
of at least 10 units, the median on neither quartile). Its other two parts, a histogram of connections per hour
and the hours they cover, need hours of history; they cannot speak within five periods and are not used here.

Adapted:
- the skew guard is scale-free: the skew is weighed by the interquartile range against the median (a tight
  spread's asymmetry is noise; a wide one's is a long tail), and it is 0 when the median is on a quartile (RITA);
- timing has a third part, the share of intervals within ON_PERIOD of the median: RITA's histogram asks the same
  question (how much of the mass sits in the dominant mode) at the scale of hours. With four or five intervals it
  is what tells a jittered timer from chance arrivals best, and one missed check-in costs it only one interval.
"""

from __future__ import annotations

import statistics

ON_PERIOD = 0.3      # an interval within ±30% of the median one is "on period" (±20% jitter stays well inside)


def bowley_skew(values: list[float]) -> float:
    """Bowley's quartile skew in [-1, 1]; 0 when the median is on a quartile (the spread is then mostly one value,
    and the skew only says on which side the rest fell)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    if q2 in (q1, q3):
        return 0.0
    return (q1 + q3 - 2 * q2) / (q3 - q1)


def mad(values: list[float]) -> float:
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


def _skew_part(values: list[float], med: float) -> float:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return 1 - abs(bowley_skew(values)) * min(1.0, (q3 - q1) / med)


def _madm_part(values: list[float], med: float) -> float:
    return max(0.0, 1 - mad(values) / med)


def timing_score(intervals: list[float]) -> float:
    """Mean of the skew part, the MAD part and the on-period share; 0 for a degenerate median."""
    med = statistics.median(intervals)
    if med <= 0:
        return 0.0
    share = sum(abs(i - med) <= ON_PERIOD * med for i in intervals) / len(intervals)
    return (_skew_part(intervals, med) + _madm_part(intervals, med) + share) / 3


def size_score(sizes: list[float]) -> float:
    """Mean of the skew part and the MAD part of the bytes sent per check-in."""
    med = statistics.median(sizes)
    if med <= 0:
        return 0.0
    return (_skew_part(sizes, med) + _madm_part(sizes, med)) / 2


def beacon_score(times: list[float], sizes: list[int]) -> tuple[float, float, dict]:
    """The beacon score in [0, 1] (the mean of the timing and the size score: RITA weighs them alike), the timing
    score alone, and the parts an alert reports. `times` are the check-ins' starts (at least four), `sizes` the
    bytes of each (at least two; a detector scoring as a check-in begins gives those of the finished ones)."""
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    ts_score = timing_score(intervals)
    ds_score = size_score([float(s) for s in sizes])
    parts = {"interval_s": round(statistics.median(intervals), 2), "interval_mad_s": round(mad(intervals), 2),
             "ts_score": round(ts_score, 3), "ds_score": round(ds_score, 3)}
    return (ts_score + ds_score) / 2, ts_score, parts
