"""A device's outbound bytes over time, in fixed buckets over a fixed window: what the report draws as a timeline.

Fixed size whatever the traffic (a ring of BUCKETS counters, allocated on the first outbound byte), so ten thousand
devices cost at most ~12 MB. Capture time picks the bucket, so a replayed capture draws its own day; the capturing
host stamps packets, not their sender, so the wire cannot move a device's window. Bytes stamped before the window
are dropped, never folded into a newer bucket.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

BUCKET_SECONDS = 300
BUCKETS = 288  # 24 hours
_MAX_COUNT = (1 << 32) - 1  # a bucket saturates at 4 GiB rather than wrap


class ByteSeries:
    __slots__ = ("counts", "lone", "newest")

    def __init__(self) -> None:
        self.counts = array("I", [0]) * BUCKETS
        self.newest = -1  # index of the newest bucket (capture seconds // BUCKET_SECONDS); -1 before any byte
        # Every slot but the newest bucket's is zero: true until a byte lands in an older bucket or the window
        # moves on with the old bucket kept (a new device's series, saved after its first bytes, is one bucket)
        self.lone = True

    def add(self, ts: float, nbytes: int) -> None:
        if nbytes <= 0 or not math.isfinite(ts) or ts < 0:
            return
        bucket = int(ts // BUCKET_SECONDS)
        if bucket > self.newest:
            self._advance(bucket)
        elif bucket <= self.newest - BUCKETS:
            return
        elif bucket < self.newest:
            self.lone = False
        slot = bucket % BUCKETS
        self.counts[slot] = min(_MAX_COUNT, self.counts[slot] + nbytes)

    def _advance(self, bucket: int) -> None:
        """Clear the buckets the window moves past, so the ring never carries bytes from a lap ago."""
        if self.newest < 0:
            pass   # nothing was ever added: the ring is still all zero (a new device's first byte, every time)
        elif bucket - self.newest >= BUCKETS:
            self.counts = array("I", [0]) * BUCKETS
            self.lone = True
        else:
            for b in range(self.newest + 1, bucket + 1):
                self.counts[b % BUCKETS] = 0
            self.lone = False   # the old newest bucket holds bytes and stays in the window
        self.newest = bucket

    def points(self) -> list[tuple[float, int]]:
        """(bucket start, bytes) for every non-empty bucket in the window, oldest first."""
        if self.newest < 0:
            return []
        slot = self.newest % BUCKETS
        if self.counts[slot] and (self.lone or self.counts.count(0) == BUCKETS - 1):
            # the newest bucket alone (a device saved after its first outbound bytes: every new device of a
            # flood), answered without the array scan below; `lone` (add keeps it) spares even the count
            return [(float(self.newest * BUCKET_SECONDS), self.counts[slot])]
        # Only the non-empty slots are visited (a device saved after its first packet has one of 288): each slot's
        # bucket is the newest one at or before `newest` that lands on it (add writes no other, and _advance
        # clears what the window leaves, so a non-empty slot is never older than the window nor before bucket 0).
        counts = np.frombuffer(self.counts, dtype=f"u{self.counts.itemsize}")
        found = sorted((self.newest - (self.newest - s) % BUCKETS, s) for s in np.flatnonzero(counts).tolist())
        return [(float(b * BUCKET_SECONDS), int(counts[s])) for b, s in found]

    def state(self) -> list[list[float | int]]:
        return [[start, count] for start, count in self.points()]

    @classmethod
    def from_state(cls, doc: object) -> ByteSeries:
        """Read back state(); entries that are not [finite start >= 0, count > 0] are skipped."""
        series = cls()
        if isinstance(doc, list):
            for entry in doc[-BUCKETS:]:
                if isinstance(entry, list) and len(entry) == 2:
                    start, count = entry
                    if isinstance(start, (int, float)) and isinstance(count, int) and not isinstance(count, bool):
                        series.add(float(start), count)
        return series
