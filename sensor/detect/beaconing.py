"""beaconing: regular check-ins from a device to one outside address (RITA-style interval and size analysis)."""

from __future__ import annotations

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.beacon import beacon_score
from sensor.detect.text import covered_note, describe_destination, describe_device, severity_for
from sensor.enrich import Observation


class BeaconingDetector(Detector):
    """Each burst of packets a device sends to the destination is one event; bursts closer than MIN_INTERVAL
    seconds are one event, so continuous streams never look like beacons."""

    name = "beaconing"
    MIN_EVENTS = 6          # five intervals: time-to-detect is at most five periods
    MIN_INTERVAL = 5.0
    THRESHOLD = 0.8
    HISTORY = 64

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        # Lists, not deques: a deque preallocates a 64-slot block, and floods bring a pair per forged source.
        self._events: BoundedLRU[tuple[str, str], list[list]] = BoundedLRU(context.episodes.max_open)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        events = self._check_ins(obs)
        if events is None or len(events) < self.MIN_EVENTS:
            return None
        score, parts = beacon_score([e[0] for e in events], [e[2] for e in events])
        if score < self.THRESHOLD:
            return None
        if not self.new_episode((obs.device.ip, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        summary = (f"{describe_device(obs.device)} checks in with "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)} every "
                   f"{parts['interval_s']:.0f} s (jitter {parts['interval_mad_s']:.1f} s) over {len(events)} "
                   f"check-ins: beacon score {score:.2f}.{covered_note(obs.device)}")
        return self.alert(obs, severity_for(obs.device, "high", "medium"), score, summary, **parts)

    def _check_ins(self, obs: Observation) -> list[list] | None:
        """The device's check-ins with this peer, [start, last activity, bytes] each, when this observation starts
        a new one; None when it only extends the current burst."""
        key = (obs.device.ip, obs.peer)
        events = self._events.use(key)
        if events is None:
            events = []
        if events and obs.ts - events[-1][1] < self.MIN_INTERVAL:
            events[-1][1] = obs.ts
            events[-1][2] += obs.sent_bytes
            return None
        events.append([obs.ts, obs.ts, obs.sent_bytes])
        if len(events) > self.HISTORY:
            del events[0]
        self._events.put(key, events)
        return events
