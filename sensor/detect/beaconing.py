"""beaconing: regular check-ins from a device to one outside address (RITA-style interval and size analysis,
sensor/detect/beacon.py)."""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.beacon import ON_PERIOD, median_of_sorted, sorted_beacon_score, timing_clearing
from sensor.detect.connectivity import only_pings
from sensor.detect.text import covered_note, describe_destination, describe_device, severity_for
from sensor.enrich import Observation
from sensor.flows import FIN, RST


class CheckIns(list):
    """A device's check-ins with one peer, [start, last activity, bytes] each, oldest first; from the first scoring
    on, also the intervals between their starts and the finished ones' sizes and durations, each kept sorted as
    check-ins come and go, so that scoring at every new check-in sorts nothing. A list with three slots rather than
    an object holding one: a flood brings a pair per forged source, and most never reach a score."""

    __slots__ = ("intervals", "sizes", "durations")

    def __init__(self) -> None:
        super().__init__()
        self.intervals: list[float] | None = None
        self.sizes: list[float] | None = None
        # doubles in an array (8 bytes each, not a float object apiece): only the median is ever read of them
        self.durations: array[float] | None = None

    def begin(self, ts: float, nbytes: int, history: int) -> None:
        """A new check-in; the oldest is forgotten past `history`."""
        self.append([ts, ts, nbytes])
        intervals, sizes, durations = self.intervals, self.sizes, self.durations
        if intervals is not None and sizes is not None and durations is not None:
            before = self[-2]   # the one before is finished: its size and length are final
            insort(intervals, ts - before[0])
            insort(sizes, float(before[2]))
            insort(durations, before[1] - before[0])
        if len(self) > history:
            oldest = self.pop(0)
            if intervals is not None and sizes is not None and durations is not None:
                del intervals[bisect_left(intervals, self[0][0] - oldest[0])]
                del sizes[bisect_left(sizes, float(oldest[2]))]
                del durations[bisect_left(durations, oldest[1] - oldest[0])]

    def sorted_series(self) -> tuple[list[float], list[float]]:
        """The intervals and the finished check-ins' sizes, sorted (worked out in full the first time)."""
        if self.intervals is None or self.sizes is None or self.durations is None:
            self.intervals = sorted([b[0] - a[0] for a, b in zip(self, self[1:], strict=False)])
            self.sizes = sorted([float(e[2]) for e in self[:-1]])
            self.durations = array("d", sorted([e[1] - e[0] for e in self[:-1]]))
        return self.intervals, self.sizes

    def sorted_durations(self) -> array[float]:
        """How long each finished check-in lasted, sorted (after sorted_series)."""
        if self.durations is None:
            self.sorted_series()
        return self.durations   # type: ignore[return-value]


class BeaconingDetector(Detector):
    """A check-in is a burst of sending to the destination: sending closer than `checkin_gap` seconds to the last
    is the same check-in, so a short TCP connection (handshake, request, close) is one, and a continuous stream is
    one long one, never a train of beacons. Thresholds: [detect.beaconing] (sensor/config.py)."""

    name = "beaconing"
    HISTORY = 64
    TEARDOWN_PACKETS = 2    # a FIN (or RST) and its ACK

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        s = context.config.detect.beaconing
        self.min_checkins, self.gap = s.min_checkins, s.checkin_gap
        self.threshold, self.timing_threshold = s.threshold, s.timing_threshold
        # a period counts only when its on-period band clears the gap that cuts check-ins (see _shaped)
        self.min_period = self.gap / (1 - ON_PERIOD)
        # Lists, not deques: a deque preallocates a 64-slot block, and floods bring a pair per forged source.
        self._events: BoundedLRU[tuple[str, str], CheckIns] = BoundedLRU(context.episodes.max_open)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0 or only_pings(obs):   # regular by design; hardcoded_infra's
            return None
        events = self._check_ins(obs)
        if events is None or len(events) < self.min_checkins:
            return None
        # the check-in that just began has no size yet: the sizes are those of the finished ones
        intervals, sizes = events.sorted_series()
        timed = timing_clearing(intervals, self.timing_threshold)
        # what the score of the sizes could not change: spared a third of the scores it costs
        if timed is None or timed[2] < self.timing_threshold or round(timed[0], 2) < self.min_period:
            return None
        score, timing, parts = sorted_beacon_score(intervals, sizes, timed)
        if score < self.threshold or timing < self.timing_threshold or not self._shaped(events, parts["interval_s"]):
            return None
        if not self.new_episode((obs.device.id, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        summary = (f"{describe_device(obs.device)} checks in with "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)} every "
                   f"{parts['interval_s']:.0f} s (jitter {parts['interval_mad_s']:.1f} s) over {len(events)} "
                   f"check-ins: beacon score {score:.2f}.{covered_note(obs.device)}")
        return self.alert(obs, severity_for(obs.device, "high", "medium"), round(score, 4), summary, **parts,
                          checkins=len(events), evidence=f"{len(events)} check-ins every "
                          f"{parts['interval_s']:.0f} s ± {parts['interval_mad_s']:.1f} s with "
                          f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)}")

    def _shaped(self, events: CheckIns, period: float) -> bool:
        """What a score cannot see. The period must clear the gap: sending every few seconds is merged or split
        into check-ins by chance, and the gap's floor under every interval makes such a train look regular (RTCP's
        randomised 5 s reports would). And the device must be quiet most of the period: check-ins lasting a
        quarter of it or more are a session with pauses, not a beacon. (The median of the finished check-ins'
        durations, kept sorted: statistics.median's arithmetic, without sorting them at every check-in.)"""
        return period >= self.min_period and 4 * median_of_sorted(events.sorted_durations()) <= period

    def _check_ins(self, obs: Observation) -> CheckIns | None:
        """The device's check-ins with this peer, [start, last activity, bytes] each, when this observation starts
        a new one; None when it only extends the current one (or is a connection's teardown)."""
        key = (obs.device.ip, obs.peer)
        events = self._events.use(key)
        if events is None:   # a new pair (every forged source of a flood): its first check-in, unless a teardown
            if self._teardown(obs):
                return None
            events = CheckIns()
            events.begin(obs.ts, obs.sent_bytes, self.HISTORY)
            self._events.put(key, events)
            return events
        if events and obs.ts - events[-1][1] < self.gap:
            events[-1][1] = obs.ts
            events[-1][2] += obs.sent_bytes
            return None
        if self._teardown(obs):
            return None
        events.begin(obs.ts, obs.sent_bytes, self.HISTORY)
        return events

    def _teardown(self, obs: Observation) -> bool:
        """The close of a TCP connection that went quiet (a FIN and its ACK, seconds after the exchange, as an
        idle keep-alive timeout ends it) is part of the check-in that opened it, not one of its own."""
        flow = obs.flow
        if obs.proto != "tcp" or flow is None or obs.new_flow or obs.sent_packets > self.TEARDOWN_PACKETS:
            return False
        return bool((flow.orig_flags | flow.resp_flags) & (FIN | RST))
