"""egress_policy: a camera-side device exchanging traffic with the public Internet, outside the allowlist."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector
from sensor.detect.connectivity import only_pings
from sensor.detect.text import covered_note, describe_destination, describe_device, plural
from sensor.enrich import SCOPE_PUBLIC, Observation


class EgressPolicyDetector(Detector):
    """The device must itself send: an inbound scan the camera never answers is not the camera talking. Small pings
    it sends are not egress either: a connectivity check carries nothing out (hardcoded_infra reports it, low).
    Answering pings from the Internet still is: the device is reachable from outside."""

    name = "egress_policy"
    interest = frozenset({SCOPE_PUBLIC})

    def observe(self, obs: Observation) -> Alert | None:
        if obs.scope != SCOPE_PUBLIC or obs.sent_packets == 0 or only_pings(obs):
            return None
        # Keyed by address, not port: P2P clients spray consecutive ports at one server, which is one story.
        if not self.new_episode((obs.device.id, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        dev = obs.device
        verb = "opened" if obs.initiated else "answered a connection from"
        destination = describe_destination(obs.peer, obs.name, obs.port, obs.proto)   # once: summary and evidence
        summary = (f"{describe_device(dev)} {verb} {destination} "
                   f"on the public Internet, sending {plural(obs.sent_packets, 'packet')} "
                   f"({plural(obs.sent_bytes, 'byte')}) at first sight; no allow rule matches.{covered_note(dev)}")
        severity = "high" if dev.covered else "medium"
        evidence = f"{verb} {destination} on the Internet"
        return self.alert(obs, severity, 1.0, summary, direction="outbound" if obs.initiated else "inbound",
                          evidence=evidence)
