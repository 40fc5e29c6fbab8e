"""new_destination: an outside destination a device has not used before, once its learning period is over."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import covered_note, describe_destination, describe_device
from sensor.enrich import Observation


class NewDestinationDetector(Detector):
    """`known` is the persistent store of (device, destination) first sightings and of each device's first
    sighting; restarts therefore neither forget what was learned nor re-alert."""

    name = "new_destination"

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        if context.known is None:
            raise ValueError("new_destination needs the state store (DetectorContext.known)")
        self.known = context.known
        self.learning_period = context.config.learning_period

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        dev = obs.device
        learning_since = self.known.device_first_seen(dev.id, obs.ts)  # enrichment recorded the real first sight
        destination = obs.name or obs.peer
        if not self.known.add_destination(dev.id, destination, obs.ts):
            return None
        if obs.ts - learning_since < self.learning_period:
            return None
        if not self.new_episode((dev.id, destination), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        summary = (f"{describe_device(dev)} reached {describe_destination(obs.peer, obs.name, obs.port, obs.proto)}, "
                   f"a destination it never used in {(obs.ts - learning_since) / 3600:.1f} h of observation."
                   f"{covered_note(dev)}")
        return self.alert(obs, "low", 0.7, summary, evidence=f"first use of {destination} after learning")
