"""Episodes: one alert per (detector, device, destination...) story. An episode stays open while matching traffic
keeps coming; it closes after `alerts.episode_timeout` seconds of silence, and only a new episode deserves a new
alert line. Repeats update the episode's counters, which the state store keeps across restarts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sensor.bounded import BoundedLRU

MAX_EPISODES = 100_000
# Per-(device, peer) state of every detector, episodes and the alert budget follow the site's size: a site of
# max_devices needs room for a few dozen peers per device, and a flood of forged sources must not get more.
PEERS_TRACKED_PER_DEVICE = 20


def tracked_pairs(max_devices: int) -> int:
    """The bound on each detector's (device, peer) state, on open episodes and on the alert budget."""
    return max(10_000, min(MAX_EPISODES, PEERS_TRACKED_PER_DEVICE * max_devices))


@dataclass(slots=True, eq=False, repr=False)
class Episode:
    """An open episode's first and last activity and the traffic counted in it."""

    first: float
    last: float
    packets: int = 0
    bytes: int = 0


class Episodes:
    """Open episodes keyed by a detector-chosen tuple (detector, device, destination...), bounded (LRU)."""

    def __init__(self, timeout: float, max_open: int = MAX_EPISODES):
        self.timeout = timeout
        self.max_open = max_open
        self._open: BoundedLRU[tuple, Episode] = BoundedLRU(max_open, self._forget)
        self.dirty: set[tuple] = set()   # changed since the last save to the state store
        self.on_evict: Callable[[tuple], None] | None = None   # the state store drops an evicted episode's row

    @property
    def evicted(self) -> int:
        return self._open.evicted

    def _forget(self, key: tuple, _ep: Episode) -> None:
        self.dirty.discard(key)
        if self.on_evict is not None:
            self.on_evict(key)

    def restore(self, rows) -> None:
        # a key repeated in the rows keeps its first place and its last values, as assignment into a dict does
        restored = {key: Episode(first, last, packets, nbytes) for key, first, last, packets, nbytes in rows}
        self._open.put_many(restored.items())

    def take_dirty(self) -> Iterator[tuple[tuple, float, float, int, int]]:
        """The rows of the episodes changed since the last call (the dirty set taken at once), each made as the
        caller takes it, as Inventory.take_dirty's documents: a flush of a flood's ten thousand new episodes
        then never holds them all at once."""
        keys = list(self.dirty)
        self.dirty.clear()
        return ((k, ep.first, ep.last, ep.packets, ep.bytes) for k in keys if (ep := self._open.get(k)))

    def observe(self, key: tuple, ts: float, packets: int, nbytes: int) -> bool:
        """Record activity; True when this starts a new episode (and so deserves an alert)."""
        ep = self._open.use(key)   # marked as just used
        if ep is None or ts - ep.last > self.timeout:
            # made with this activity in it (every new device of a flood starts one)
            self._open.put(key, Episode(ts, ts, packets, nbytes))   # evicts the least recently used over max_open
            self.dirty.add(key)                                    # (never key itself)
            return True
        if ts > ep.last:   # max()'s answer, without its call
            ep.last = ts
        ep.packets += packets
        ep.bytes += nbytes
        self.dirty.add(key)
        return False

    def __len__(self) -> int:
        return len(self._open)
