"""Bounded maps for state keyed by what the wire says (addresses, names): an attacker on the camera VLAN chooses
the keys, so every such map has a limit and counts what it drops.

`SegmentedLRU` is a segmented least-recently-used map (SLRU): a key enters on probation and is promoted to the
protected segment once the caller has seen it prove itself (a device that keeps sending, for example). A flood of
one-packet identities then churns only the probation segment, and the established entries, which are what the
sensor has learnt, survive it. Protected entries are evicted only when the protected segment itself is full.

`BoundedLRU` is the plain least-recently-used map, one segment, for state where any entry is as cheap to lose as
any other (per-pair detector state, alert budgets, learnt names): over its limit, the least recently used goes. Its
entries are an OrderedDict, or the compiled Lru (sensor/_flows.c) that the link's sightings of a flood's sources
are made into in C (`sight_rows`).

Values are never None in either map: `get`, `use` and `pop` answer None for an absent key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from sensor import compiled

if TYPE_CHECKING:
    import numpy as np

K = TypeVar("K")
V = TypeVar("V")

PROTECTED_SHARE = 0.8


class SegmentedLRU(Generic[K, V]):
    def __init__(self, limit: int, on_evict: Callable[[K, V], None] | None = None,
                 protected_share: float = PROTECTED_SHARE):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.protected_limit = max(1, int(limit * protected_share)) if limit > 1 else 0
        self._probation: OrderedDict[K, V] = OrderedDict()
        self._protected: OrderedDict[K, V] = OrderedDict()
        self._on_evict = on_evict
        self.evicted = 0

    def use(self, key: K) -> V | None:
        """The value, marked as just used; None when absent."""
        # the two segments spelt out, not looped over: every packet of a known device asks (issue 16)
        protected = self._protected
        value = protected.get(key)
        if value is not None:
            protected.move_to_end(key)
            return value
        probation = self._probation
        value = probation.get(key)
        if value is not None:
            probation.move_to_end(key)
        return value

    def get(self, key: K) -> V | None:
        """The value without changing its recency, as a reader (an exporter, a check) should."""
        value = self._protected.get(key)
        return value if value is not None else self._probation.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert (on probation) or replace (in place), as just used."""
        if key in self._protected:
            self._protected[key] = value
            self._protected.move_to_end(key)
            return
        probation = self._probation
        if key in probation:   # replaced: no entry more
            probation[key] = value
            probation.move_to_end(key)
            return
        probation[key] = value   # a new key goes in at the newest end
        if len(probation) + len(self._protected) > self.limit:
            self._shrink()

    def promote(self, key: K) -> None:
        """Move a key on probation into the protected segment; the protected segment's least recently used entry
        goes back to probation when that segment is full."""
        value = self._probation.pop(key, None)
        if value is None:
            return
        if self.protected_limit == 0:
            self._probation[key] = value
            return
        self._protected[key] = value
        while len(self._protected) > self.protected_limit:
            old_key, old_value = self._protected.popitem(last=False)
            self._probation[old_key] = old_value
            self._probation.move_to_end(old_key, last=False)
        self._shrink()

    def is_protected(self, key: K) -> bool:
        return key in self._protected

    def pop(self, key: K) -> V | None:
        value = self._protected.pop(key, None)
        return value if value is not None else self._probation.pop(key, None)

    def _shrink(self) -> None:
        while len(self._probation) + len(self._protected) > self.limit:
            segment = self._probation if self._probation else self._protected
            key, value = segment.popitem(last=False)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict(key, value)

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._probation

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first: probation, then protected."""
        yield from list(self._probation)
        yield from list(self._protected)

    def values(self) -> list[V]:
        return [*self._probation.values(), *self._protected.values()]

    def items(self) -> list[tuple[K, V]]:
        return [*self._probation.items(), *self._protected.items()]


class BoundedLRU(Generic[K, V]):
    def __init__(self, limit: int, on_evict: Callable[[K, V], None] | None = None,
                 entries: OrderedDict[K, V] | None = None):
        """`entries`: the empty table to keep them in, an OrderedDict or the compiled Lru (sensor/_flows.c, bytes
        keys only) that has its methods."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict() if entries is None else entries
        self._on_evict = on_evict
        self.evicted = 0

    def use(self, key: K) -> V | None:
        """The value, marked as just used; None when absent."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def get(self, key: K) -> V | None:
        """The value without changing its recency, as a reader (an exporter, a check) should."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert or replace, as just used; then evict down to the limit."""
        # a flood's new device puts a new key into a handful of these maps: a new key goes in at the newest end
        # (no move), and only a map over its limit has anything to evict (no call)
        entries = self._entries
        if key in entries:
            entries[key] = value
            entries.move_to_end(key)
            return
        entries[key] = value
        if len(entries) > self.limit:
            self._shrink()

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        """`put` each in turn, evicting only once all are in: a key the batch touches again is never evicted (and
        counted) on the way, and a batch larger than the limit keeps its last entries."""
        for key, value in items:
            self._entries[key] = value
            self._entries.move_to_end(key)
        self._shrink()

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def sight_each(self, keys: list[K], values: list[V], again: Callable[[V, V], bool]) -> int:
        """For each key in turn: absent, `put` with its value; present, `use`d, and the walk stops there when
        again(its value, the new value) says so: returns that index, else len(keys). The same map after as `use`
        then `put` per key, in one call (a flood's first sightings come by the thousand)."""
        entries, limit, on_evict = self._entries, self.limit, self._on_evict
        size = len(entries)
        for at, (key, value) in enumerate(zip(keys, values, strict=True)):
            if key in entries:
                entries.move_to_end(key)
                if again(entries[key], value):
                    return at
                continue
            entries[key] = value
            size += 1
            if size > limit:   # _shrink, inlined: one in, one out
                old_key, old_value = entries.popitem(last=False)
                size -= 1
                self.evicted += 1
                if on_evict is not None:
                    on_evict(old_key, old_value)
        return len(keys)

    def sight_rows(self: BoundedLRU[bytes, float], keys: np.ndarray, times: np.ndarray, after: float) -> int:
        """sight_each of bytes keys, the rows of an (n, width) uint8 array, with their times (a float64 array) as
        values, a key seen again when seen_again(its time, the new time, after) says so. On a compiled Lru in one C
        call (_flows.sight: no key or float made but for those that go in), else by sight_each, its reference."""
        at = 0
        ext = compiled.flows_extension
        table: object = self._entries   # an Lru, when it is one, stands in for the OrderedDict of the annotation
        if self._on_evict is None and ext is not None and hasattr(ext, "sight") and isinstance(table, ext.Lru):
            at, evicted, odd = ext.sight(table, keys, keys.shape[1], times, self.limit, after)
            self.evicted += evicted
            if not odd:
                return at
            # a value sight cannot compare (not a float) stopped it before that key: the reference goes on
        rows = [bytes(row) for row in keys[at:]]
        return at + self.sight_each(rows, times[at:].tolist(), lambda first, ts: seen_again(first, ts, after))

    def take_all(self) -> list[tuple[K, V]]:
        """Every entry, least recently used first, and the map left empty: popping `oldest` until none is left, in
        one step (nothing is evicted or counted)."""
        items = list(self._entries.items())
        self._entries.clear()
        return items

    def oldest(self) -> tuple[K, V] | None:
        """The least recently used entry, left in place; None when empty."""
        return next(iter(self._entries.items()), None)

    def _shrink(self) -> None:
        while len(self._entries) > self.limit:
            key, value = self._entries.popitem(last=False)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict(key, value)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first (a snapshot: the map may change while it is walked)."""
        yield from list(self._entries)

    def values(self) -> list[V]:
        return list(self._entries.values())

    def items(self) -> list[tuple[K, V]]:
        return list(self._entries.items())


def seen_again(first: float, ts: float, after: float) -> bool:
    """A sighting at ts of what was first seen at `first` confirms it: `after` seconds or more later, or earlier
    (time ran back)."""
    return ts - first >= after or ts < first
