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

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

ON_PERIOD = 0.3      # an interval within ±30% of the median one is "on period" (±20% jitter stays well inside)

# The statistics are order-free, so each series is sorted once and its median, quartiles and MAD are read off the
# sorted list (the MAD and the on-period share too: see _kth_deviation), where statistics.median and .quantiles
# sorted it again for every call: a device's history is scored at every check-in it starts. The arithmetic is theirs
# (Python 3.11's), so the scores are the same to the bit (tests/unit/test_detect_beacon_exact.py pins it).


def _median(data: Sequence[float]) -> float:
    """statistics.median of sorted, non-empty data."""
    n = len(data)
    if not n:
        import statistics  # only for its error: at the top it costs start-up random, fractions, decimal (issue 16)

        raise statistics.StatisticsError("no median for empty data")
    if n % 2:
        return data[n // 2]
    return (data[n // 2 - 1] + data[n // 2]) / 2


def median_of_sorted(data: Sequence[float]) -> float:
    """statistics.median of data already sorted ascending (non-empty), to the bit."""
    return _median(data)


def _quartiles(data: list[float]) -> tuple[float, float, float]:
    """statistics.quantiles(data, n=4, method="inclusive") of sorted data."""
    if len(data) < 2:
        import statistics

        raise statistics.StatisticsError("must have at least two data points")
    m = len(data) - 1
    j1, d1 = divmod(m, 4)
    j2, d2 = divmod(2 * m, 4)
    j3, d3 = divmod(3 * m, 4)
    return ((data[j1] * (4 - d1) + data[j1 + 1] * d1) / 4, (data[j2] * (4 - d2) + data[j2 + 1] * d2) / 4,
            (data[j3] * (4 - d3) + data[j3 + 1] * d3) / 4)


# The deviations |v - med| of sorted data, computed as floats, fall then rise (v - med rounds monotonically, and
# med - v is exactly its negation), so the k + 1 smallest are k + 1 neighbours data[i..i+k], and the k-th smallest is
# the least, over those windows, of the larger end's deviation: max(med - data[i], data[i+k] - med) (a window wholly
# on one side has its far end's). The first falls and the second rises with i: a bisection finds where they cross,
# and the answer is one of the very subtractions abs(v - med) would have made. No list, no sort (issue 16: the
# deviations' list and sort were a third of a score, at every check-in of every pair).

def _kth_deviation(data: Sequence[float], med: float, k: int) -> float:
    """The k-th smallest (0-based) of abs(v - med) over sorted data, to the bit."""
    lo, hi = 0, len(data) - 1 - k   # the first window whose right end's deviation is at least its left end's
    while lo < hi:
        mid = (lo + hi) // 2
        if data[mid + k] - med >= med - data[mid]:
            hi = mid
        else:
            lo = mid + 1
    best = max(data[lo + k] - med, med - data[lo])   # the window there (the last may not have crossed)
    if lo:
        best = min(best, med - data[lo - 1])
    return best


def _mad_of_sorted(data: Sequence[float], med: float) -> float:
    """statistics.median of the deviations from med of sorted, non-empty data, to the bit."""
    n = len(data)
    if n % 2:
        return _kth_deviation(data, med, n // 2)
    return (_kth_deviation(data, med, n // 2 - 1) + _kth_deviation(data, med, n // 2)) / 2


def _within(data: Sequence[float], med: float, reach: float) -> int:
    """How many of sorted data have abs(v - med) <= reach: a run of neighbours (the deviations fall then rise),
    found by bisecting on med ± reach and then moving each end by the exact test (the sum may round either way)."""
    n = len(data)
    j = bisect_right(data, med + reach)
    while j < n and data[j] - med <= reach:
        j += 1
    while j and data[j - 1] - med > reach:
        j -= 1
    i = bisect_left(data, med - reach)
    while i and med - data[i - 1] <= reach:
        i -= 1
    while i < n and med - data[i] > reach:
        i += 1
    return max(0, j - i)   # none when reach < 0


def _skew(q1: float, q2: float, q3: float) -> float:
    if q2 in (q1, q3):
        return 0.0
    return (q1 + q3 - 2 * q2) / (q3 - q1)


def bowley_skew(values: list[float]) -> float:
    """Bowley's quartile skew in [-1, 1]; 0 when the median is on a quartile (the spread is then mostly one value,
    and the skew only says on which side the rest fell)."""
    return _skew(*_quartiles(sorted(values)))


def mad(values: list[float]) -> float:
    data = sorted(values)
    return _mad_of_sorted(data, _median(data))


def _skew_part(data: list[float], med: float) -> float:
    q1, q2, q3 = _quartiles(data)
    return 1 - abs(_skew(q1, q2, q3)) * min(1.0, (q3 - q1) / med)


def _madm_part(mad_: float, med: float) -> float:
    return max(0.0, 1 - mad_ / med)


def _share(data: list[float], med: float) -> float:
    return _within(data, med, ON_PERIOD * med) / len(data)    # the deviations within ±ON_PERIOD of the median


def _timing(data: list[float], med: float, mad_: float, share: float | None = None) -> float:
    if med <= 0:
        return 0.0
    if share is None:
        share = _share(data, med)
    return (_skew_part(data, med) + _madm_part(mad_, med) + share) / 3


def _sizes(data: list[float]) -> float:
    med = _median(data)
    if med <= 0:
        return 0.0
    return (_skew_part(data, med) + _madm_part(_mad_of_sorted(data, med), med)) / 2


def timing_score(intervals: list[float]) -> float:
    """Mean of the skew part, the MAD part and the on-period share; 0 for a degenerate median."""
    data = sorted(intervals)
    med = _median(data)
    return _timing(data, med, _mad_of_sorted(data, med))


def size_score(sizes: list[float]) -> float:
    """Mean of the skew part and the MAD part of the bytes sent per check-in."""
    return _sizes(sorted(sizes))


def beacon_score(times: list[float], sizes: list[int]) -> tuple[float, float, dict]:
    """The beacon score in [0, 1] (the mean of the timing and the size score: RITA weighs them alike), the timing
    score alone, and the parts an alert reports. `times` are the check-ins' starts (at least four), `sizes` the
    bytes of each (at least two; a detector scoring as a check-in begins gives those of the finished ones)."""
    return sorted_beacon_score(sorted([b - a for a, b in zip(times, times[1:], strict=False)]),
                               sorted([float(s) for s in sizes]))


def sorted_timing(intervals: list[float]) -> tuple[float, float, float]:
    """The timing half of sorted_beacon_score: the median interval, the median deviation from it (MAD) and the
    timing score. A detector that needs a timing score above a threshold asks this first, and the sizes only after."""
    med = _median(intervals)
    mad_ = _mad_of_sorted(intervals, med)
    return med, mad_, _timing(intervals, med, mad_)


def timing_clearing(intervals: list[float], floor: float) -> tuple[float, float, float] | None:
    """sorted_timing(intervals), or None when its score is certainly below floor: the skew and MAD parts are at most
    1 each, and IEEE addition and division are monotone, so (2 + share) / 3 below the floor leaves the score below
    it too, whatever the quartiles and the MAD. A fifth of the scored check-ins of real cameras end there, the
    quartiles and the MAD not worked out. (None is not the only answer below the floor: the caller still compares.)
    """
    med = _median(intervals)
    share = None
    if med > 0:
        share = _share(intervals, med)
        if (2 + share) / 3 < floor:
            return None
    mad_ = _mad_of_sorted(intervals, med)
    return med, mad_, _timing(intervals, med, mad_, share)


def sorted_beacon_score(intervals: list[float], sizes: list[float],
                        timing: tuple[float, float, float] | None = None) -> tuple[float, float, dict]:
    """beacon_score of the intervals between the check-ins and their sizes (floats), each sorted ascending: a
    detector keeping them sorted as check-ins come and go scores without sorting them again. timing: what
    sorted_timing(intervals) gave, if the caller has it."""
    med, mad_, ts_score = timing if timing is not None else sorted_timing(intervals)
    ds_score = _sizes(sizes)
    parts = {"interval_s": round(med, 2), "interval_mad_s": round(mad_, 2),
             "ts_score": round(ts_score, 3), "ds_score": round(ds_score, 3)}
    return (ts_score + ds_score) / 2, ts_score, parts
