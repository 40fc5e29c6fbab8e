"""sensor/bounded.py: BoundedLRU.take_all is popping the oldest entry until none is left, in one step."""

from __future__ import annotations

import random

from sensor.bounded import BoundedLRU


def _pop_oldest_until_empty(lru: BoundedLRU) -> list:
    out = []
    while (oldest := lru.oldest()) is not None:
        lru.pop(oldest[0])
        out.append(oldest)
    return out


def test_take_all_is_popping_the_oldest_until_empty():
    """Same entries in the same order (least recently used first, after uses, replacements and evictions), the
    map empty after, no eviction counted or reported; the map works as before afterwards."""
    rng = random.Random(16)
    for _ in range(50):
        evicted: list = []
        a, b = BoundedLRU(rng.randint(1, 20), lambda k, v, seen=evicted: seen.append((k, v))), BoundedLRU(20)
        b.limit = a.limit
        for _ in range(rng.randint(0, 60)):
            key, op = rng.randint(0, 30), rng.random()
            for lru in (a, b):
                if op < 0.5:
                    lru.put(key, key * 10 + 1)
                elif op < 0.8:
                    lru.use(key)
                else:
                    lru.pop(key)
        before = a.evicted, len(evicted)
        assert a.take_all() == _pop_oldest_until_empty(b)
        assert len(a) == 0 and a.oldest() is None and (a.evicted, len(evicted)) == before
        a.put(1, 2)
        assert a.items() == [(1, 2)] and a.take_all() == [(1, 2)] and a.take_all() == []


def test_segmented_use_marks_the_entry_used_in_its_own_segment():
    """SegmentedLRU.use: the value from whichever segment holds the key, moved to that segment's newest end;
    None for an absent key, nothing moved."""
    from sensor.bounded import SegmentedLRU

    lru: SegmentedLRU[str, int] = SegmentedLRU(10)
    for key in "abcde":
        lru.put(key, ord(key))
    lru.promote("a")
    lru.promote("b")
    assert lru.use("a") == ord("a") and list(lru) == ["c", "d", "e", "b", "a"]
    assert lru.use("c") == ord("c") and list(lru) == ["d", "e", "c", "b", "a"]
    assert lru.use("z") is None and list(lru) == ["d", "e", "c", "b", "a"]
