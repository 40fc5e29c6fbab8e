"""video_egress: sustained upstream media-like traffic from a camera to a destination outside the site."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import covered_note, describe_destination, describe_device, severity_for
from sensor.enrich import Observation
from sensor.tags import PROFILE_NAMES, TAG_PPPP


@dataclass
class _Upstream:
    first: float
    last: float
    bytes: int = 0
    packets: int = 0


class VideoEgressDetector(Detector):
    """Fires when, within one continuous episode (gaps under GAP seconds), a device has sent at least MIN_RATE
    bit/s on average for MIN_DURATION seconds, in packets averaging MIN_PACKET bytes, to a public or core address,
    with a media profile (RTP, PPPP DRW frames or TLS) or simply far more up than down."""

    name = "video_egress"
    MIN_RATE = 200_000
    MIN_DURATION = 5.0
    MIN_PACKET = 400
    GAP = 30.0
    UP_DOWN_RATIO = 5

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self._state: BoundedLRU[tuple[str, str], _Upstream] = BoundedLRU(context.episodes.max_open)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_bytes == 0:
            return None
        st = self._upstream(obs)
        duration = st.last - st.first
        if duration < self.MIN_DURATION or st.packets == 0:
            return None
        rate = 8 * st.bytes / duration
        if rate < self.MIN_RATE or st.bytes / st.packets < self.MIN_PACKET:
            return None
        profile = self._media_profile(obs)
        if profile is None:
            return None
        if not self.new_episode((obs.device.ip, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        dev = obs.device
        summary = (f"{describe_device(dev)} has been sending {rate / 1e6:.2f} Mbit/s for {duration:.0f} s "
                   f"({', '.join(profile)}) to {describe_destination(obs.peer, obs.name, obs.port, obs.proto)} "
                   f"outside the site: video is leaving.{covered_note(dev)}")
        score = min(1.0, 0.6 + rate / (10 * self.MIN_RATE))
        return self.alert(obs, severity_for(dev, "critical", "high"), score, summary,
                          rate_bps=round(rate), duration_s=round(duration, 1), profile=profile)

    def _upstream(self, obs: Observation) -> _Upstream:
        """The device's sending to this peer within the current episode, this observation included."""
        key = (obs.device.ip, obs.peer)
        st = self._state.use(key)
        if st is None or obs.ts - st.last > self.GAP:
            st = _Upstream(obs.ts, obs.ts)
        st.last = max(st.last, obs.flow.last if obs.flow else obs.ts)
        st.bytes += obs.sent_bytes
        st.packets += obs.sent_packets
        self._state.put(key, st)
        return st

    def _media_profile(self, obs: Observation) -> list[str] | None:
        """What makes the traffic look like media, or None when nothing does."""
        profile = [label for bit, label in PROFILE_NAMES.items() if obs.tags & bit and bit != TAG_PPPP]
        flow = obs.flow
        if flow is not None and not profile:
            sent = flow.orig_bytes if obs.initiated else flow.resp_bytes
            received = flow.resp_bytes if obs.initiated else flow.orig_bytes
            if sent < self.UP_DOWN_RATIO * max(received, 1):
                return None
            profile = ["one-way bulk upload"]
        return profile
