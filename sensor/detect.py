"""Detect stage: detectors over flow updates, with one alert per (device, destination, detector) episode.

An episode stays open while matching traffic keeps coming; it closes after `alerts.episode_timeout` seconds of
silence, and only a new episode produces a new alert line. Repeats update the episode's counters.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from sensor.enrich import SCOPE_CORE, SCOPE_PUBLIC, Device, format_mac

SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_EPISODES = 100_000


@dataclass
class Alert:
    ts: float
    sensor: str
    detector: str
    severity: str
    device_ip: str
    device_mac: str | None
    device_vendor: str | None
    dst_ip: str
    dst_port: int | None
    dst_proto: str
    dst_name: str | None
    dst_scope: str
    score: float
    summary: str
    vlan: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {
            "ts": round(self.ts, 6),
            "sensor": self.sensor,
            "detector": self.detector,
            "severity": self.severity,
            "device": {"ip": self.device_ip, "mac": self.device_mac, "vendor": self.device_vendor},
            "destination": {"ip": self.dst_ip, "port": self.dst_port, "proto": self.dst_proto,
                            "name": self.dst_name, "scope": self.dst_scope},
            "score": round(self.score, 4),
            "summary": self.summary,
            "vlan": self.vlan,
        }
        out.update(self.extra)
        return out


@dataclass
class Episode:
    first: float
    last: float
    packets: int = 0
    bytes: int = 0
    alerts: int = 1


class Episodes:
    """Open episodes keyed by a detector-chosen tuple (detector, device, destination...), bounded (LRU)."""

    def __init__(self, timeout: float, max_open: int = MAX_EPISODES):
        self.timeout = timeout
        self.max_open = max_open
        self._open: OrderedDict[tuple, Episode] = OrderedDict()

    def observe(self, key: tuple, ts: float, packets: int, nbytes: int) -> bool:
        """Record activity; True when this starts a new episode (and so deserves an alert)."""
        ep = self._open.pop(key, None)
        new = ep is None or ts - ep.last > self.timeout
        if new:
            ep = Episode(ts, ts)
        ep.last = max(ep.last, ts)
        ep.packets += packets
        ep.bytes += nbytes
        self._open[key] = ep
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return new

    def __len__(self) -> int:
        return len(self._open)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe_device(dev: Device) -> str:
    who = dev.maker.name if dev.maker else dev.vendor
    if who and dev.role != "other":
        return f"{dev.role} {dev.ip} ({who})"
    return f"{dev.ip} ({who})" if who else dev.ip


def describe_destination(ip: str, name: str | None, port: int | None, proto: str) -> str:
    where = f"{name} ({ip})" if name else ip
    return f"{where} {proto}/{port}" if port else f"{where} {proto}"


@dataclass(slots=True)
class Observation:
    """One camera-side device's share of a flow update, as the detectors see it."""

    ts: float            # capture time of the first packet of this update
    device: Device
    sent_packets: int
    sent_bytes: int
    initiated: bool      # the device originated the flow
    peer: str            # the other end's address
    port: int | None     # the flow's service (responder) port
    proto: str
    name: str | None     # DNS/SNI/Host name of the peer, if known
    scope: str           # scope of the peer (enrich.SCOPES)
    vlan: int


class Detector:
    name = ""

    def __init__(self, sensor_name: str, episodes: Episodes):
        self.sensor_name = sensor_name
        self.episodes = episodes

    def alert(self, obs: Observation, severity: str, score: float, summary: str, **extra) -> Alert:
        dev = obs.device
        return Alert(obs.ts, self.sensor_name, self.name, severity, dev.ip, format_mac(dev.mac), dev.vendor,
                     obs.peer, obs.port, obs.proto, obs.name, obs.scope, score, summary, obs.vlan, extra)


def covered_note(dev: Device) -> str:
    return f" {dev.maker.name} is a covered maker ({dev.maker.basis})." if dev.maker else ""


class EgressPolicyDetector(Detector):
    """A camera-side device exchanging traffic with the public Internet, outside the allowlist.

    The device must itself send: an inbound scan the camera never answers is not the camera talking.
    """

    name = "egress_policy"

    def observe(self, obs: Observation) -> Alert | None:
        if obs.scope != SCOPE_PUBLIC or obs.sent_packets == 0:
            return None
        # Keyed by address, not port: P2P clients spray consecutive ports at one server, which is one story.
        if not self.episodes.observe((self.name, obs.device.ip, obs.peer), obs.ts, obs.sent_packets,
                                     obs.sent_bytes):
            return None
        dev = obs.device
        verb = "opened" if obs.initiated else "answered a connection from"
        summary = (f"{describe_device(dev)} {verb} {describe_destination(obs.peer, obs.name, obs.port, obs.proto)} "
                   f"on the public Internet, sending {plural(obs.sent_packets, 'packet')} "
                   f"({plural(obs.sent_bytes, 'byte')}) at first sight; no allow rule matches.{covered_note(dev)}")
        severity = "high" if dev.covered else "medium"
        return self.alert(obs, severity, 1.0, summary, direction="outbound" if obs.initiated else "inbound")


class SegmentationDetector(Detector):
    """Camera VLAN and core network meeting outside the allowlist, whichever side starts it.

    A core host reaching into the camera VLAN counts even when the camera never answers: the attempt itself shows
    the segmentation is not holding.
    """

    name = "segmentation"

    def __init__(self, sensor_name: str, episodes: Episodes):
        super().__init__(sensor_name, episodes)
        self.violations = {"camera_to_core": 0, "core_to_camera": 0}

    def observe(self, obs: Observation) -> Alert | None:
        if obs.scope != SCOPE_CORE:
            return None
        direction = "camera_to_core" if obs.initiated else "core_to_camera"
        if obs.sent_packets == 0 and obs.initiated:
            return None
        new = self.episodes.observe((self.name, obs.device.ip, obs.peer, direction), obs.ts, obs.sent_packets,
                                    obs.sent_bytes)
        if not new:
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
        return self.alert(obs, "high", 1.0, summary, direction=direction)
