"""A device's outbound bytes over time, in fixed buckets over a fixed window: what the report draws as a timeline.

Fixed size whatever the traffic (a ring of BUCKETS counters, allocated when a second bucket is kept; until then the
one bucket is a count beside its index, as a new device's series is), so ten thousand devices cost at most ~12 MB.
Capture time picks the bucket, so a replayed capture draws its own day; the capturing host stamps packets, not their
sender, so the wire cannot move a device's window. Bytes stamped before the window are dropped, never folded into a
newer bucket.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

BUCKET_SECONDS = 300
BUCKETS = 288  # 24 hours
_MAX_COUNT = (1 << 32) - 1  # a bucket saturates at 4 GiB rather than wrap


class ByteSeries:
    __slots__ = ("counts", "newest", "single")

    def __init__(self) -> None:
        # The ring, made when a second bucket is kept, and let go when the window moves past every bucket it held:
        # a forged-source flood's devices each have one bucket, and the ring's 1.1 KiB apiece (zeroed, outside
        # Python's small-object allocator) was a tenth of such a device's memory and time. Without it `single` is
        # the newest bucket's count.
        self.counts: array[int] | None = None
        self.single = 0
        self.newest = -1  # index of the newest bucket (capture seconds // BUCKET_SECONDS); -1 before any byte

    def add(self, ts: float, nbytes: int) -> None:
        if nbytes <= 0 or not math.isfinite(ts) or ts < 0:
            return
        bucket = int(ts // BUCKET_SECONDS)
        newest = self.newest
        if bucket > newest and (newest < 0 or bucket - newest >= BUCKETS):
            # the first bucket, or the window moved past every one it had: one bucket, no ring
            self.counts, self.newest, self.single = None, bucket, min(_MAX_COUNT, nbytes)
            return
        counts = self.counts
        if counts is None:
            if bucket == newest:
                self.single = min(_MAX_COUNT, self.single + nbytes)
                return
            if bucket <= newest - BUCKETS:
                return
            counts = self.counts = array("I", [0]) * BUCKETS   # a second bucket in the window: the ring
            counts[newest % BUCKETS] = self.single
        if bucket > newest:
            self._advance(counts, bucket)
        elif bucket <= newest - BUCKETS:
            return
        slot = bucket % BUCKETS
        counts[slot] = min(_MAX_COUNT, counts[slot] + nbytes)

    def _advance(self, counts: array[int], bucket: int) -> None:
        """Clear the buckets the window moves past, so the ring never carries bytes from a lap ago (add lets the ring
        go when the window moves past all of them)."""
        for b in range(self.newest + 1, bucket + 1):
            counts[b % BUCKETS] = 0
        self.newest = bucket

    def points(self) -> list[tuple[float, int]]:
        """(bucket start, bytes) for every non-empty bucket in the window, oldest first."""
        if self.newest < 0:
            return []
        ring = self.counts
        if ring is None:
            return [(float(self.newest * BUCKET_SECONDS), self.single)]
        # Only the non-empty slots are visited (a ring is made for a second bucket: most of its 288 stay empty): each
        # slot's bucket is the newest one at or before `newest` that lands on it (add writes no other, and _advance
        # clears what the window leaves, so a non-empty slot is never older than the window nor before bucket 0).
        counts = np.frombuffer(ring, dtype=f"u{ring.itemsize}")
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
