"""Beacon maths: how regular a device's check-ins with one destination are (RITA-style)."""

from __future__ import annotations

import statistics


def bowley_skew(values: list[float]) -> float:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    if q3 == q1:
        return 0.0
    return (q1 + q3 - 2 * q2) / (q3 - q1)


def mad(values: list[float]) -> float:
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


def beacon_score(times: list[float], sizes: list[int]) -> tuple[float, dict]:
    """RITA-style score in [0, 1]: regular intervals and regular sizes score high.

    Interval part: 1 - |Bowley skew|, 1 - MAD/median interval (jitter relative to the period), and how densely the
    connections fill the observed span. Size part: 1 - |Bowley skew|, 1 - MAD/32 bytes, and smallness.
    """
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    med = statistics.median(intervals)
    span = times[-1] - times[0]
    ts_skew = 1 - min(1.0, abs(bowley_skew(intervals)))
    ts_mad = max(0.0, 1 - mad(intervals) / max(med, 1e-9))
    ts_count = min(1.0, len(intervals) / max(span / max(med, 1e-9), 1))
    ds_skew = 1 - min(1.0, abs(bowley_skew([float(s) for s in sizes])))
    ds_mad = max(0.0, 1 - mad([float(s) for s in sizes]) / 32)
    ds_small = max(0.0, 1 - statistics.mode(sizes) / 65535)
    ts_score = (ts_skew + ts_mad + ts_count) / 3
    ds_score = (ds_skew + ds_mad + ds_small) / 3
    parts = {"interval_s": round(med, 2), "interval_mad_s": round(mad(intervals), 2),
             "ts_score": round(ts_score, 3), "ds_score": round(ds_score, 3)}
    return (ts_score + ds_score) / 2, parts
