"""video_egress: a camera-side device sending video, images or bulk data to a destination outside the site, judged on
sliding windows of what it sent that peer each second: a burst (a clip), a stream (live video) or a trickle (stills or
data, low and slow). Each alert gives the window's rate, length, bytes and up:down balance, never an average since
some start, so a slow start neither delays a stream nor dilutes what is reported."""

from __future__ import annotations

import math
from typing import NamedTuple

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.jurisdiction import attribution, watched
from sensor.detect.text import covered_note, describe_destination, describe_device, rate_text
from sensor.detect.uploads import TRICKLE_SLOTS, Sending, Totals, Window
from sensor.enrich import Observation
from sensor.tags import PROFILE_NAMES, TAG_PPPP_DRW, TAG_RTP, TAG_TLS
from sensor.units import byte_size

ONE_WAY = "one-way bulk upload"
MEDIA = TAG_RTP | TAG_PPPP_DRW | TAG_TLS    # PPPP framing alone is signalling, not media
RANK = {"medium": 1, "high": 2, "critical": 3}
# What each pattern means, and its severity for a covered maker and for the others. A clip and live video are the
# same finding: video is leaving (a faster upload must not be judged milder than a slower one). A trickle is
# one-way bulk at tens of kbit/s: stills or data, not provably video, so a step lower.
MEANING = {"stream": "video is leaving", "burst": "a clip or a set of images is leaving",
           "trickle": "a low-and-slow one-way upload: stills or data are leaving"}
SEVERITY = {"stream": ("critical", "high"), "burst": ("critical", "high"), "trickle": ("high", "medium")}


class Upload(NamedTuple):      # made on every check of an upload under way: a tuple is the cheapest record
    kind: str            # burst, stream or trickle
    window: int          # the seconds the rate is measured over
    sent: int
    received: int
    tags: int            # the flow's payload-profile bits
    one_way: bool
    strength: float      # the measure against its threshold: 1.0 at the threshold

    @property
    def rate(self) -> float:
        return 8 * self.sent / self.window

    @property
    def profile(self) -> list[str]:
        """What makes the sending look like media, and whether it is one-way."""
        profile = [label for bit, label in PROFILE_NAMES.items() if self.tags & bit & MEDIA]
        return [*profile, ONE_WAY] if self.one_way else profile


class VideoEgressDetector(Detector):
    """Per (device, peer): the last few seconds in per-second buckets (bursts and streams) and the trickle window in
    twelve slots (sensor/detect/uploads.py). Thresholds: [detect.uploads] (sensor/config.py)."""

    name = "video_egress"

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        s = self.settings = context.config.detect.uploads
        self._short = max(s.burst_window, s.stream_window)
        self._slot = max(1, math.ceil(s.trickle_window / TRICKLE_SLOTS))
        self._slots = math.ceil(s.trickle_window / self._slot)
        self._stream_bytes = s.stream_rate * s.stream_window / 8
        self._trickle_bytes = s.trickle_rate * s.trickle_window / 8
        # A slot counts toward a trickle's persistence when it holds a quarter of its share of the threshold: an
        # image or two, not the keep-alives that follow a single snapshot.
        self._trickle_floor = max(1, int(self._trickle_bytes / (4 * self._slots)))
        # Below this much in the short window neither a burst nor a stream is possible: most observations (keep-
        # alives, lookups, control traffic) stop at this one comparison.
        self._short_floor = min(s.burst_bytes, self._stream_bytes)
        self._state: BoundedLRU[tuple[str, str], Sending] = BoundedLRU(context.episodes.max_open)
        self.geography = context.geography
        self.watch = frozenset(context.config.watch_countries)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_bytes == 0:
            return None
        sec = int(obs.ts)
        st = self._sending(obs, sec)
        found = None
        if st.seconds.sent >= self._short_floor:
            found = self._stream(st, sec, obs) or self._burst(st, sec, obs)
        if found is None and st.slots.sent >= self._trickle_bytes:
            found = self._trickle(st, sec, obs)
        return None if found is None else self._report(obs, st, found)

    def _sending(self, obs: Observation, sec: int) -> Sending:
        key = (obs.device.ip, obs.peer)
        st = self._state.use(key)
        if st is None:   # a new pair: both windows made holding this first sending
            sent, received, packets = obs.sent_bytes, obs.received_bytes, obs.sent_packets
            st = Sending(Window.holding(sec, sent, received, packets),
                         Window.holding(sec // self._slot, sent, received, packets))
            self._state.put(key, st)
            return st
        st.seconds.add(sec, self._short, obs.sent_bytes, obs.received_bytes, obs.sent_packets)
        st.slots.add(sec // self._slot, self._slots, obs.sent_bytes, obs.received_bytes, obs.sent_packets)
        return st

    # ---- the three patterns ------------------------------------------------------------------------------------
    def _stream(self, st: Sending, sec: int, obs: Observation) -> Upload | None:
        """At least stream_rate averaged over the whole stream window, sending in all but one of its seconds,
        media-like (RTP, PPPP DRW, TLS) or one-way."""
        s = self.settings
        t = st.seconds.tail(sec, s.stream_window)
        if t.sent < self._stream_bytes or t.active < max(1, s.stream_window - 1) or not self._bulk(t):
            return None
        one_way = self._one_way(t)
        if not (one_way or obs.tags & MEDIA):
            return None
        # judged over the whole window, reported over the part of it the stream has filled
        return Upload("stream", sec - t.first + 1, t.sent, t.received, obs.tags, one_way,
                      8 * t.sent / s.stream_window / s.stream_rate)

    def _burst(self, st: Sending, sec: int, obs: Observation) -> Upload | None:
        """At least burst_bytes within the burst window, one-way."""
        s = self.settings
        t = st.seconds.tail(sec, s.burst_window)
        if t.sent < s.burst_bytes or not self._bulk(t) or not self._one_way(t):
            return None
        return Upload("burst", sec - t.first + 1, t.sent, t.received, obs.tags, True, t.sent / s.burst_bytes)

    def _trickle(self, st: Sending, sec: int, obs: Observation) -> Upload | None:
        """At least trickle_rate averaged over the trickle window, one-way, and persistent: bulk sending in at least
        a third of the window's slots, spanning at least half of it (one snapshot or two is not a trickle)."""
        s = self.settings
        t = st.slots.tail(sec // self._slot, self._slots, self._trickle_floor)
        span = sec - t.first * self._slot + 1
        if (t.sent < self._trickle_bytes or 2 * span < s.trickle_window or 3 * t.active < self._slots
                or not self._bulk(t) or not self._one_way(t)):
            return None
        return Upload("trickle", span, t.sent, t.received, obs.tags, True,
                      8 * t.sent / s.trickle_window / s.trickle_rate)

    def _bulk(self, t: Totals) -> bool:
        """Large packets: a download's stream of ACKs, or chatter, is no upload."""
        return t.sent >= self.settings.min_packet * t.packets

    def _one_way(self, t: Totals) -> bool:
        return t.sent >= self.settings.up_down_ratio * max(t.received, 1)

    # ---- the alert ---------------------------------------------------------------------------------------------
    def _report(self, obs: Observation, st: Sending, up: Upload) -> Alert | None:
        """One alert per (device, peer) episode, and one more if a more severe pattern follows in it (a trickle
        that turns into a stream)."""
        dev = obs.device
        severity = SEVERITY[up.kind][0 if dev.covered else 1]
        # A covered maker's camera sending video-like traffic to a watched jurisdiction is the directive's case
        # exactly: critical, whatever the pattern (a trickle of stills included).
        place, countries = watched(self.geography, self.watch, obs.peer) if dev.covered else (None, ())
        jurisdiction = f" The destination is {attribution(place, countries)}, a watched jurisdiction." if (
            place is not None and countries) else ""
        if jurisdiction:
            severity = "critical"
        rank = RANK[severity]
        if self.new_episode((dev.id, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            st.reported = 0
        elif not st.reported:
            # An open episode this state never reported: restored from the state store after a restart, or the
            # state was evicted. Its alert was written then; only a more severe pattern from here on is news.
            st.reported = rank
            return None
        if rank <= st.reported:
            return None
        st.reported = rank
        balance = f"{up.sent / up.received:.0f}:1 up:down" if up.received else "nothing came back"
        summary = (f"{describe_device(dev)} sent {rate_text(up.rate)} over the last {up.window} s: "
                   f"{byte_size(up.sent)} to {describe_destination(obs.peer, obs.name, obs.port, obs.proto)} "
                   f"outside the site ({', '.join(up.profile)}; {balance}): {MEANING[up.kind]}.{covered_note(dev)}"
                   f"{jurisdiction}")
        return self.alert(obs, severity, round(min(1.0, 0.6 + up.strength / 10), 4), summary,
                          upload=up.kind, rate_bps=round(up.rate), window_s=up.window, bytes=up.sent,
                          up_down=round(up.sent / up.received, 1) if up.received else None, profile=up.profile,
                          evidence=f"{up.kind}: {byte_size(up.sent)} in {up.window} s at {rate_text(up.rate)} to "
                          f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)}")
