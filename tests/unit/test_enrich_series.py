"""A device's outbound bytes over time (sensor/enrich/series.py), and its trip through the state store."""

import math

from sensor.config import Config
from sensor.enrich import Inventory, ManufDatabase
from sensor.enrich.series import BUCKET_SECONDS, BUCKETS, ByteSeries

T0 = 1_700_000_100.0   # inside a bucket, not at its start


def test_bytes_land_in_the_bucket_of_their_time():
    s = ByteSeries()
    s.add(T0, 100)
    s.add(T0 + 1, 50)
    s.add(T0 + BUCKET_SECONDS, 7)
    start = T0 - T0 % BUCKET_SECONDS
    assert s.points() == [(start, 150), (start + BUCKET_SECONDS, 7)]


def test_the_window_slides_and_forgets_what_fell_out():
    s = ByteSeries()
    s.add(T0, 1)
    s.add(T0 + BUCKET_SECONDS * (BUCKETS - 1), 2)
    assert [c for _, c in s.points()] == [1, 2]
    s.add(T0 + BUCKET_SECONDS * BUCKETS, 3)   # one lap on: the first bucket's slot is reused, cleared first
    assert [c for _, c in s.points()] == [2, 3]
    s.add(T0, 99)                              # now older than the window: dropped, not folded in
    assert [c for _, c in s.points()] == [2, 3]


def test_a_long_silence_clears_the_whole_ring():
    s = ByteSeries()
    for k in range(BUCKETS):
        s.add(T0 + k * BUCKET_SECONDS, 1)
    s.add(T0 + 10 * BUCKETS * BUCKET_SECONDS, 5)
    assert [c for _, c in s.points()] == [5]


def test_out_of_order_bytes_within_the_window_still_count():
    s = ByteSeries()
    s.add(T0 + 3 * BUCKET_SECONDS, 1)
    s.add(T0, 2)
    assert [c for _, c in s.points()] == [2, 1]


def test_nonsense_is_ignored_and_counts_saturate():
    s = ByteSeries()
    for ts, n in ((math.nan, 5), (math.inf, 5), (-1.0, 5), (T0, 0), (T0, -3)):
        s.add(ts, n)
    assert s.points() == []
    s.add(T0, 1 << 40)
    s.add(T0, 1 << 40)
    assert s.points()[0][1] == (1 << 32) - 1


def test_state_round_trip_and_damaged_state():
    s = ByteSeries()
    s.add(T0, 10)
    s.add(T0 + 600, 20)
    assert ByteSeries.from_state(s.state()).points() == s.points()
    damaged = [[T0, "9"], ["x", 1], [T0, True], [T0], None, [-5, 3], [T0 + 900, 4]]
    assert [c for _, c in ByteSeries.from_state(damaged).points()] == [4]
    assert ByteSeries.from_state({"not": "a list"}).points() == []


def test_inventory_keeps_the_series_across_a_restart():
    inventory = Inventory(Config(), ManufDatabase({}))
    dev = inventory.touch("10.20.0.11", 0x1868CB000001, T0)
    dev.note_outbound(T0, 1234)
    docs = list(inventory.take_dirty())
    restored = Inventory(Config(), ManufDatabase({}))
    restored.restore(docs)
    again = restored.devices.get("10.20.0.11")
    assert again is not None and again.outbound is not None
    assert again.as_dict()["outbound_series"] == {"bucket_seconds": BUCKET_SECONDS,
                                                 "points": [[T0 - T0 % BUCKET_SECONDS, 1234]]}
    assert restored.touch("10.20.0.12", 0, T0).as_dict()["outbound_series"]["points"] == []


def test_the_estates_bytes_by_country_over_time_are_kept_across_a_restart(tmp_path):
    """CountryEgress's series (the report's country-over-time chart) go to the state store's meta row and back;
    labels outside the closed set are not restored."""
    from sensor.config import parse_config
    from sensor.pipeline import Sensor
    from sensor.state import COUNTRY_SERIES_KEY

    config = parse_config({"state": {"path": str(tmp_path / "s.db")}})
    sensor = Sensor(config)
    egress = sensor.enricher.egress_countries
    egress.add("110.43.68.240", True, 700, True, T0)        # registered in China
    egress.add("8.8.8.8", False, 90, True, T0 + 600)       # in the United States
    egress.add("203.0.113.9", False, 5, True, T0)          # documentation: no country
    sensor.finish()
    sensor.close()
    again = Sensor(config)
    series = {label: s.points() for label, s in again.enricher.egress_countries.series.items()}
    start = T0 - T0 % BUCKET_SECONDS
    assert series == {"CN": [(start, 700)], "US": [(start + 600, 90)], "unknown": [(start, 5)]}
    again.known.save_meta(COUNTRY_SERIES_KEY, {"XX-not-a-label": [[T0, 1]], "CN": "junk"})
    again.known.commit()
    again.close()
    third = Sensor(config)
    assert set(third.enricher.egress_countries.series) == {"CN"} and third.enricher.egress_countries.series[
        "CN"].points() == []
    third.close()


def test_a_first_byte_long_after_the_epoch_lands_alone_and_a_later_lap_clears():
    s = ByteSeries()
    s.add(1_700_000_000.0, 10)
    assert s.points() == [(1_700_000_000.0 // BUCKET_SECONDS * BUCKET_SECONDS, 10)]
    s.add(1_700_000_000.0 + 2 * BUCKETS * BUCKET_SECONDS, 7)
    assert [count for _, count in s.points()] == [7]


def _points_by_walking_the_window(s: ByteSeries) -> list[tuple[float, int]]:
    """The plain rule points() follows: every bucket of the window, oldest first, the empty ones left out."""
    if s.newest < 0:
        return []
    first, ring = max(0, s.newest - BUCKETS + 1), _ring(s)
    return [(float(b * BUCKET_SECONDS), int(ring[b % BUCKETS])) for b in range(first, s.newest + 1)
            if ring[b % BUCKETS]]


def _ring(s: ByteSeries):
    """The series' ring, or the one it stands for while it holds one bucket (`single` beside its index)."""
    from array import array

    if s.counts is not None:
        return s.counts
    ring = array("I", [0]) * BUCKETS
    if s.newest >= 0:
        ring[s.newest % BUCKETS] = s.single
    return ring


def test_points_are_the_window_walked_oldest_first_across_wraps_and_gaps():
    import random
    rng = random.Random(5)
    for start in (0.0, 1_700_000_000.0):
        s, ts, most = ByteSeries(), start, 0
        for _ in range(3_000):
            ts += rng.choice([0.0, 1.0, BUCKET_SECONDS, 7 * BUCKET_SECONDS, 100 * BUCKET_SECONDS])
            s.add(ts - rng.choice([0.0, 0.0, 50 * BUCKET_SECONDS]), rng.randint(1, 1000))
            points = s.points()
            assert points == _points_by_walking_the_window(s)
            most = max(most, len(points))
        assert most > 20   # windows full of buckets were compared, not only short ones


def test_points_of_one_bucket_match_the_general_path():
    """The one-bucket shortcut answers what the numpy scan does, one bucket or several, saturated or not."""
    import random

    from sensor.enrich import series as mod

    rng = random.Random(16)
    for _ in range(200):
        s = mod.ByteSeries()
        for _ in range(rng.randint(1, 4)):
            s.add(rng.choice([0.0, 299.9, 300.0, 86_400.0 * 3, rng.uniform(0, 1e6)]), rng.randint(1, 1 << 33))
        assert s.points() == _scan(s)


def _scan(s):
    import numpy as np

    from sensor.enrich.series import BUCKET_SECONDS, BUCKETS

    if s.newest < 0:
        return []
    ring = _ring(s)
    counts = np.frombuffer(ring, dtype=f"u{ring.itemsize}")
    found = sorted((s.newest - (s.newest - i) % BUCKETS, i) for i in np.flatnonzero(counts).tolist())
    return [(float(b * BUCKET_SECONDS), int(counts[i])) for b, i in found]


def test_a_series_without_its_ring_holds_one_bucket_of_bytes():
    """points() answers a series without its ring (never made, or let go when the window moved past every bucket)
    without scanning one: on random histories (older buckets, gaps, laps) that series holds one bucket with bytes
    in it, laps do let the ring go, and points() stays the window walked."""
    import random

    rng = random.Random(1601)
    for start in (0.0, 1_700_000_000.0):
        s, ts, lone_seen = ByteSeries(), start, 0
        for _ in range(2_000):
            ts += rng.choice([0.0, 1.0, BUCKET_SECONDS, 3 * BUCKET_SECONDS, BUCKETS * BUCKET_SECONDS])
            s.add(ts - rng.choice([0.0, 0.0, 0.0, 2 * BUCKET_SECONDS, BUCKETS * BUCKET_SECONDS]), rng.randint(1, 99))
            if s.counts is None and s.newest >= 0:
                lone_seen += 1
                assert _ring(s).count(0) == BUCKETS - 1 and _ring(s)[s.newest % BUCKETS]
            assert s.points() == _points_by_walking_the_window(s)
            assert s.state() == [[start, count] for start, count in _points_by_walking_the_window(s)]
        assert lone_seen > 10


class _EagerSeries:
    """ByteSeries as it was before its ring was made lazily: the ring from the start. The reference below."""

    def __init__(self) -> None:
        from array import array

        self.counts = array("I", [0]) * BUCKETS
        self.newest = -1

    def add(self, ts: float, nbytes: int) -> None:
        from array import array

        if nbytes <= 0 or not math.isfinite(ts) or ts < 0:
            return
        bucket = int(ts // BUCKET_SECONDS)
        if bucket > self.newest:
            if self.newest >= 0 and bucket - self.newest >= BUCKETS:
                self.counts = array("I", [0]) * BUCKETS
            elif self.newest >= 0:
                for b in range(self.newest + 1, bucket + 1):
                    self.counts[b % BUCKETS] = 0
            self.newest = bucket
        elif bucket <= self.newest - BUCKETS:
            return
        slot = bucket % BUCKETS
        self.counts[slot] = min((1 << 32) - 1, self.counts[slot] + nbytes)

    def points(self) -> list[tuple[float, int]]:
        if self.newest < 0:
            return []
        first = max(0, self.newest - BUCKETS + 1)
        return [(float(b * BUCKET_SECONDS), int(self.counts[b % BUCKETS])) for b in range(first, self.newest + 1)
                if self.counts[b % BUCKETS]]


def test_a_series_without_its_ring_until_a_second_bucket_counts_as_the_ring_from_the_start():
    """While a series holds one bucket it keeps a count, not the ring (a flood's devices each have one bucket):
    random histories (the same bucket again, a later one, an older one inside the window, one older than it, a
    lap or more on, saturating counts, nonsense) give the points and state of a ring kept from the start, after
    every step, in both forms."""
    import random

    rng = random.Random(1612)
    seen = {True: 0, False: 0}
    for _ in range(400):
        s, ref = ByteSeries(), _EagerSeries()
        ts = rng.choice([0.0, 299.0, 1_700_000_000.0])
        for _ in range(rng.randint(1, 12)):
            ts += rng.choice([0.0, 1.0, BUCKET_SECONDS, 5 * BUCKET_SECONDS, BUCKETS * BUCKET_SECONDS,
                              3 * BUCKETS * BUCKET_SECONDS])
            at = ts - rng.choice([0.0, 0.0, 0.0, 2 * BUCKET_SECONDS, (BUCKETS - 1) * BUCKET_SECONDS,
                                  BUCKETS * BUCKET_SECONDS, math.nan])
            nbytes = rng.choice([rng.randint(1, 1500), 1 << 33, 0, -1])
            s.add(at, nbytes)
            ref.add(at, nbytes)
            seen[s.counts is None] += 1
            assert s.points() == ref.points()
            assert s.state() == [[start, count] for start, count in ref.points()]
    assert seen[True] > 500 and seen[False] > 500   # both forms were compared, often
