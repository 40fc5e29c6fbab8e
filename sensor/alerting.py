"""What reaches the alert log: the per-device budget and the flood summary, between the detectors and the sink.

Detectors already raise one alert per episode. Two kinds of storm remain, and both are one story each:
- one device opening episode after episode of one detector (a scan): after ALERTS_PER_DEVICE lines in an episode
  window, one line marked "suppressing", then counting only;
- many devices raising one detector's alerts on one VLAN at once (forged sources, a worm): after FLOOD_DEVICES
  devices in FLOOD_WINDOW_SECONDS, the rest are counted and one summary line per window says how many alerts from
  how many devices were held back, with the first of them as its example.
Every keyed structure here is bounded; what is held back is counted in `suppressed`, per detector.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sensor.bounded import BoundedLRU
from sensor.detect.alert import SEVERITIES, Alert
from sensor.detect.episodes import MAX_EPISODES

ALERTS_PER_DEVICE = 20   # per detector and episode window; then one notice, then counting only
FLOOD_DEVICES = 50       # distinct devices writing one detector's alerts on one VLAN within a flood window
FLOOD_WINDOW_SECONDS = 60.0
MAX_FLOOD_KEYS = 4096 * 16   # (detector, VLAN) pairs: every VLAN id times the detectors, with room
MAX_COUNTED_DEVICES = 1 << 16   # distinct held-back devices counted exactly per window; beyond, "at least"
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}   # SEVERITIES.index, as one lookup


@dataclass(eq=False, repr=False)
class _FloodWindow:
    """One window of the alert flood guard: who wrote alerts in it and what it held back."""

    start: float
    writers: set[str] = field(default_factory=set)
    held: int = 0
    held_devices: set[str] = field(default_factory=set)
    example: Alert | None = None
    last_ts: float = 0.0
    severity: int = 0


class AlertGate:
    def __init__(self, episode_timeout: float, max_budgets: int = MAX_EPISODES):
        self.episode_timeout = episode_timeout
        self.max_budgets = max_budgets
        self.suppressed: Counter[str] = Counter()
        self._budget: BoundedLRU[tuple[str, str], tuple[float, int]] = BoundedLRU(max_budgets)
        # an evicted window's held-back alerts go unsummarised, as they always have; MAX_FLOOD_KEYS is far above
        # the (detector, VLAN) pairs a site has
        self._floods: BoundedLRU[tuple[str, int], _FloodWindow] = BoundedLRU(MAX_FLOOD_KEYS)

    @property
    def budgets_evicted(self) -> int:
        return self._budget.evicted

    def admit(self, alert: Alert) -> list[Alert]:
        """The lines to write for this alert: itself, possibly amended, a flood summary that a new window
        releases, or nothing."""
        out, admitted = self.admit_lazily(alert.ts, alert.detector, alert.vlan, alert.device_ip, alert.severity,
                                          lambda: alert)
        if admitted is not None:
            out.append(admitted)
        return out

    def admit_lazily(self, ts: float, detector: str, vlan: int, device_ip: str, severity: str,
                     build: Callable[[], Alert]) -> tuple[list[Alert], Alert | None]:
        """admit() of the alert `build` makes (with these fields), built only when it is written, amended, or kept
        as a flood window's example: under a flood of new devices most alerts are only counted, and building each
        one's line was most of what the gate cost them. Returns the flood summaries a new window releases, then
        the alert when it is let through (None when held back)."""
        # _summaries' test for this one window, inline: every alert comes here, and its window has rarely ended
        key = (detector, vlan)
        window = self._floods.get(key)
        out = []
        if window is not None and ts - window.start > FLOOD_WINDOW_SECONDS:
            self._floods.pop(key)
            if window.held:
                out.append(_flood_summary(window))
        count = self._count(detector, device_ip, ts)
        if count > ALERTS_PER_DEVICE + 1:
            self.suppressed[detector] += 1
            return out, None
        alert = None
        if count == ALERTS_PER_DEVICE + 1:
            alert = build()
            alert.summary += (f" This device has raised {ALERTS_PER_DEVICE} {detector} alerts within "
                              f"{self.episode_timeout:.0f} s; further ones are counted, not written, until "
                              f"that time has passed.")
            alert.extra["suppressing"] = True
        holding = self._holding_flood(ts, detector, vlan, device_ip, severity)
        if holding is None:
            return out, alert if alert is not None else build()
        if holding.example is None:
            holding.example = alert if alert is not None else build()
        return out, None

    def flush(self, now: float, final: bool = False) -> list[Alert]:
        """Summaries of flood windows that have ended by `now` (all of them when final)."""
        if not len(self._floods):
            return []   # asked once a second; most seconds of most sites have no alert in a flood window
        return self._summaries(now, final=final)

    def _count(self, detector: str, device_ip: str, ts: float) -> int:
        """This alert's number in its device's budget window (detector, device), counted now."""
        key = (detector, device_ip)
        window_start, count = self._budget.use(key) or (ts, 0)
        if ts - window_start > self.episode_timeout:
            window_start, count = ts, 0
        count += 1
        self._budget.put(key, (window_start, count))
        return count

    def _holding_flood(self, ts: float, detector: str, vlan: int, device_ip: str,
                       severity: str) -> _FloodWindow | None:
        """The (detector, VLAN) flood window when it holds this device's alert back (counted here; its example is
        the caller's to set), None when it lets the device write."""
        key = (detector, vlan)
        window = self._floods.use(key)
        if window is None:
            window = _FloodWindow(ts)
            self._floods.put(key, window)
        if device_ip in window.writers or len(window.writers) < FLOOD_DEVICES:
            window.writers.add(device_ip)
            return None
        window.held += 1
        if len(window.held_devices) < MAX_COUNTED_DEVICES:
            window.held_devices.add(device_ip)
        if ts > window.last_ts:   # max()'s answer without its call: every held alert of a flood comes here
            window.last_ts = ts
        rank = _RANK[severity]
        if rank > window.severity:
            window.severity = rank
        self.suppressed[detector] += 1
        return window

    def _summaries(self, now: float, final: bool = False) -> list[Alert]:
        """Every flood window that has ended by `now` (all, when final) taken out, the summaries of those that held
        alerts back; `admit` looks at its one window the same way, inline."""
        out = []
        for k in list(self._floods):
            window = self._floods.get(k)
            if window is None or not (final or now - window.start > FLOOD_WINDOW_SECONDS):
                continue
            self._floods.pop(k)
            if window.held:
                out.append(_flood_summary(window))
        return out


def _flood_summary(window: _FloodWindow) -> Alert:
    example = window.example
    assert example is not None
    devices = len(window.held_devices)
    counted = f"{devices:,}" if devices < MAX_COUNTED_DEVICES else f"at least {devices:,}"
    span = max(0.0, window.last_ts - window.start)
    summary = (f"Flood on VLAN {example.vlan}: {window.held:,} further {example.detector} alerts from {counted} "
               f"camera-side devices within {span:.0f} s were counted, not written, after {FLOOD_DEVICES} devices "
               f"had raised one (forged sources, a scan or a worm). The first held back: {example.summary}")
    extra = {**example.extra, "flood": {"alerts": window.held, "devices": devices, "window_start": window.start,
                                        "window_end": window.last_ts}}
    return dataclasses.replace(example, ts=window.last_ts, severity=SEVERITIES[window.severity], summary=summary,
                               extra=extra)
