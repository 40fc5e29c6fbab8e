"""segmentation: the camera VLAN and a core network meeting outside the allowlist, whichever side starts it."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import covered_note, describe_destination, describe_device, plural
from sensor.enrich import SCOPE_CORE, Observation


class SegmentationDetector(Detector):
    """A core host reaching into the camera VLAN counts even when the camera never answers: the attempt itself
    shows the segmentation is not holding."""

    name = "segmentation"
    interest = frozenset({SCOPE_CORE})

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.violations = {"camera_to_core": 0, "core_to_camera": 0}   # new episodes, by who started them

    def observe(self, obs: Observation) -> Alert | None:
        if obs.scope != SCOPE_CORE:
            return None
        direction = "camera_to_core" if obs.initiated else "core_to_camera"
        if obs.sent_packets == 0 and obs.initiated:
            return None
        if not self.new_episode((obs.device.id, obs.peer, direction), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        self.violations[direction] += 1
        dev = obs.device
        target = describe_destination(obs.peer, obs.name, obs.port, obs.proto)
        if obs.initiated:
            summary = (f"{describe_device(dev)} reached core-network host {target}, sending "
                       f"{plural(obs.sent_packets, 'packet')}; cameras must stay off core networks.{covered_note(dev)}")
        else:
            answered = "and the camera answered" if obs.sent_packets else "(the camera did not answer)"
            summary = (f"Core-network host {obs.peer} reached into the camera VLAN at {describe_device(dev)} "
                       f"{obs.proto}/{obs.port} {answered}; no allow rule matches.{covered_note(dev)}")
        where = f"{obs.proto}/{obs.port}" if obs.port else obs.proto
        evidence = (f"reached core host {obs.peer} {where}" if obs.initiated
                    else f"core host {obs.peer} reached in on {where}")
        return self.alert(obs, "high", 1.0, summary, direction=direction, evidence=evidence)
