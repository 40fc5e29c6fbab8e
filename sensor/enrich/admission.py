"""The new-device budget: how fast the inventory may make devices, so that a flood of forged camera-side sources
costs the sensor a counter per packet instead of a device, its detections and its incidents each.

A source the camera VLAN has never shown is cheap to forge (one packet, any address) and, before this budget, cost
~160 µs of Python as a new device: ~6,000 forged sources a second stopped a sensor live. The budget is a token
bucket on packet time. It starts holding `max_devices` tokens, because a fresh sensor meets its whole site in the
first seconds; after that it refills at `per_second` up to `burst`. A new source that finds no token is held back:
counted, its traffic unattributed, and asked about again the next time it sends, so a real device that arrives
during a flood becomes one once the flood leaves tokens free. Devices the inventory already holds, and new
addresses of a box it already knows (its MAC), never wait (docs/reliability.md, "Floods of forged sources").
"""

from __future__ import annotations

import numpy as np

from sensor import compiled

_NONE = np.empty(0, np.float64)


class AdmissionBudget:
    def __init__(self, per_second: int, burst: int, start: int):
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(max(start, burst))
        self.held = 0           # sightings of new sources held back, ever (a source sending on is counted again)
        self._clock: float | None = None

    def would_hold(self, ts: float) -> bool:
        """admit(ts) would be False: counted as a held sighting now, as admit would have counted it."""
        self._refill(ts)
        if self.tokens >= 1.0:
            return False
        self.held += 1
        return True

    def admit(self, ts: float) -> bool:
        """Whether a new device may be made at packet time ts (a token spent); False counts a held sighting."""
        if self.would_hold(ts):
            return False
        self.tokens -= 1.0
        return True

    def holding(self, times: np.ndarray) -> tuple[int, np.ndarray]:
        """How many of these sightings, from the first, would_hold would hold in turn, and the tokens it would leave
        after each of them (at least up to the first it lets in); nothing changes (hold() makes it so). A flood's
        held sightings are settled a window at a time: the same refill, one step per sighting, as numpy's running
        sum (np.add.accumulate adds in order, so every value is the float would_hold computes), or in C
        (_flows.holding, the same operations in the same order: numpy's is the reference)."""
        if self.tokens >= 1.0 or not len(times):
            return 0, _NONE   # refilling only adds: the first is let in
        if self.burst < 1:
            return self._holding_each(times)
        clock = times[0] if self._clock is None else self._clock   # no clock yet: the first refills nothing
        ext = compiled.flows_extension
        if ext is not None and compiled.held and hasattr(ext, "holding"):   # the same steps in C, in one pass
            count, after = ext.holding(np.ascontiguousarray(times, np.float64), self.tokens, float(clock),
                                       self.per_second)
            return count, np.frombuffer(after, np.float64)
        before = np.concatenate(([clock], times[:-1]))
        # below one token the refill is never capped (burst >= 1), and time running backwards adds nothing
        steps = np.where(times > before, (times - before) * self.per_second, 0.0)
        steps[0] += self.tokens
        tokens = np.add.accumulate(steps)
        let_in = tokens >= 1.0
        return (int(let_in.argmax()) if let_in.any() else len(times)), tokens

    def hold(self, times: np.ndarray, tokens: np.ndarray, count: int) -> None:
        """would_hold of the first `count` sightings, all of which it holds (count <= holding(times)[0], tokens
        what holding answered): counted, the clock at the last of them."""
        if count:
            self.tokens = float(tokens[count - 1])
            self._clock = float(times[count - 1])
            self.held += count

    def _holding_each(self, times: np.ndarray) -> tuple[int, np.ndarray]:
        """holding() one sighting at a time (a burst below one token, which only tests make)."""
        saved = self.tokens, self._clock, self.held
        after = []
        for ts in times.tolist():
            if not self.would_hold(ts):
                break
            after.append(self.tokens)
        self.tokens, self._clock, self.held = saved
        return len(after), np.array(after, np.float64)

    def _refill(self, ts: float) -> None:
        clock = self._clock
        if clock is not None and ts > clock and self.tokens < self.burst:
            self.tokens = min(float(self.burst), self.tokens + (ts - clock) * self.per_second)
        # Time running backwards (merged captures) refills nothing but moves the clock back with it, so one packet
        # stamped far ahead cannot stop the refill for good.
        self._clock = ts
