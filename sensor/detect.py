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
    if dev.vendor:
        return f"{dev.ip} ({dev.vendor})"
    return dev.ip


def describe_destination(ip: str, name: str | None, port: int | None, proto: str) -> str:
    where = f"{name} ({ip})" if name else ip
    return f"{where} {proto}/{port}" if port else f"{where} {proto}"


class EgressPolicyDetector:
    """A camera-side device exchanging traffic with the public Internet or a core network, outside the allowlist.

    The device must itself send: an inbound scan the camera never answers is not the camera talking.
    """

    name = "egress_policy"

    def __init__(self, sensor_name: str, episodes: Episodes):
        self.sensor_name = sensor_name
        self.episodes = episodes

    def check(self, ts: float, dev: Device, sent_packets: int, sent_bytes: int, initiated: bool,
              dst_ip: str, dst_port: int | None, proto: str, name: str | None, scope: str,
              vlan: int) -> Alert | None:
        if scope not in (SCOPE_PUBLIC, SCOPE_CORE) or sent_packets == 0:
            return None
        # Keyed by address, not port: P2P clients spray consecutive ports at one server, which is one story.
        key = (self.name, dev.ip, dst_ip)
        if not self.episodes.observe(key, ts, sent_packets, sent_bytes):
            return None
        severity = "high" if scope == SCOPE_CORE else "medium"
        where = "a core network" if scope == SCOPE_CORE else "the public Internet"
        verb = "opened" if initiated else "answered a connection from"
        summary = (f"{describe_device(dev)} {verb} {describe_destination(dst_ip, name, dst_port, proto)} "
                   f"on {where}, sending {plural(sent_packets, 'packet')} ({plural(sent_bytes, 'byte')}) at first sight; "
                   f"no allow rule matches.")
        return Alert(ts, self.sensor_name, self.name, severity, dev.ip, format_mac(dev.mac), dev.vendor,
                     dst_ip, dst_port, proto, name, scope, 1.0, summary, vlan,
                     {"direction": "outbound" if initiated else "inbound"})
