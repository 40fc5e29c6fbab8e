"""Detect stage: detectors over flow updates, with one alert per (device, destination, detector) episode.

An episode stays open while matching traffic keeps coming; it closes after `alerts.episode_timeout` seconds of
silence, and only a new episode produces a new alert line. Repeats update the episode's counters.
"""

from __future__ import annotations

import statistics
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from sensor.bounded import BoundedLRU
from sensor.config import name_matches
from sensor.enrich import SCOPE_CORE, SCOPE_PUBLIC, Device, format_mac
from sensor.errors import CamwatchError
from sensor.flows import Flow

INDICATORS_FILE = Path(__file__).with_name("data") / "indicators.toml"

# Payload-profile bits set by the pipeline on each flow side (Flow.orig_tags / resp_tags).
TAG_RTP = 1 << 0         # RTP version 2 with an audio/video payload type
TAG_PPPP = 1 << 1        # CS2 PPPP framing: 0xF1, type, big-endian length of the rest
TAG_PPPP_DRW = 1 << 2    # PPPP DRW (data) frames, which carry the media
TAG_TLS = 1 << 3         # TLS records
TAG_SIGNATURE_BASE = 8   # bit 8 + i: the i-th prefix signature of the indicator file
PROFILE_NAMES = {TAG_RTP: "RTP", TAG_PPPP_DRW: "PPPP DRW frames", TAG_TLS: "TLS", TAG_PPPP: "PPPP"}

SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_EPISODES = 100_000
# Per-(device, peer) state of every detector, episodes and the alert budget follow the site's size: a site of
# max_devices needs room for a few dozen peers per device, and a flood of forged sources must not get more.
PEERS_TRACKED_PER_DEVICE = 20


def tracked_pairs(max_devices: int) -> int:
    """The bound on each detector's (device, peer) state, on open episodes and on the alert budget."""
    return max(10_000, min(MAX_EPISODES, PEERS_TRACKED_PER_DEVICE * max_devices))


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
        self._open: BoundedLRU[tuple, Episode] = BoundedLRU(max_open, self._forget)
        self.dirty: set[tuple] = set()   # changed since the last save to the state store
        self.on_evict: Callable[[tuple], None] | None = None   # the state store drops an evicted episode's row

    @property
    def evicted(self) -> int:
        return self._open.evicted

    def _forget(self, key: tuple, _ep: Episode) -> None:
        self.dirty.discard(key)
        if self.on_evict is not None:
            self.on_evict(key)

    def restore(self, rows) -> None:
        # a key repeated in the rows keeps its first place and its last values, as assignment into a dict does
        restored = {key: Episode(first, last, packets, nbytes) for key, first, last, packets, nbytes in rows}
        self._open.put_many(restored.items())

    def take_dirty(self) -> list[tuple[tuple, float, float, int, int]]:
        out = [(k, ep.first, ep.last, ep.packets, ep.bytes) for k in self.dirty if (ep := self._open.get(k))]
        self.dirty.clear()
        return out

    def observe(self, key: tuple, ts: float, packets: int, nbytes: int) -> bool:
        """Record activity; True when this starts a new episode (and so deserves an alert)."""
        ep = self._open.use(key)
        new = ep is None or ts - ep.last > self.timeout
        if ep is None or new:
            ep = Episode(ts, ts)
        ep.last = max(ep.last, ts)
        ep.packets += packets
        ep.bytes += nbytes
        self.dirty.add(key)
        self._open.put(key, ep)   # evicts the least recently used over max_open (never key itself)
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
    flow: Flow | None = None
    new_flow: bool = False

    @property
    def tags(self) -> int:
        """Payload-profile bits the device itself sent in this flow."""
        if self.flow is None:
            return 0
        return self.flow.orig_tags if self.initiated else self.flow.resp_tags

    @property
    def external(self) -> bool:
        return self.scope in (SCOPE_PUBLIC, SCOPE_CORE)


class Observer(Protocol):
    """What the pipeline feeds every flow update to: a Detector, or anything else that watches observations (the
    training run's window collector)."""

    external_only: bool

    def observe(self, obs: Observation) -> Alert | None: ...


class Detector:
    name = ""
    # True when observe() can only act on peers in the public or core scope (Observation.external): the pipeline
    # then spares it the camera VLAN's own traffic, most of all the video to the recorder.
    external_only = True

    def __init__(self, sensor_name: str, episodes: Episodes):
        self.sensor_name = sensor_name
        self.episodes = episodes

    def observe(self, obs: Observation) -> Alert | None:
        """An alert when this observation starts a new episode of what the detector looks for; every subclass
        defines it."""
        raise NotImplementedError

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


# ---- vendor cloud / P2P intelligence ------------------------------------------------------------------------
@dataclass(frozen=True)
class Service:
    id: str
    name: str
    makers: tuple[str, ...]
    domains: tuple[str, ...]
    ports: frozenset
    signature_bits: int
    sources: tuple[str, ...]

    def matches_name(self, name: str | None) -> bool:
        if not name:
            return False
        return any(name_matches(p, name) for p in self.domains)


class Indicators:
    """The shipped, versioned indicator file, validated on load."""

    def __init__(self, services: list[Service], prefixes: list[bytes], version: str):
        self.services = services
        self.prefixes = prefixes  # index i is tag bit TAG_SIGNATURE_BASE + i
        self.version = version
        self._by_name: dict[str, Service | None] = {}

    @classmethod
    def load(cls, path: Path = INDICATORS_FILE) -> Indicators:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            version = str(raw["version"])
            services, prefixes = [], []
            for entry in raw["service"]:
                bits = 0
                for sig in entry.get("signatures", []):
                    if sig["kind"] == "cs2_pppp":
                        bits |= TAG_PPPP
                    elif sig["kind"] == "prefix":
                        value = sig["value"].encode("ascii")
                        if not 1 <= len(value) <= 8:
                            raise ValueError(f"{entry['id']}: prefix signatures are 1 to 8 bytes")
                        prefixes.append(value)
                        bits |= 1 << (TAG_SIGNATURE_BASE + len(prefixes) - 1)
                    else:
                        raise ValueError(f"{entry['id']}: unknown signature kind {sig['kind']!r}")
                ports = frozenset((str(p), int(n)) for p, n in entry.get("ports", []))
                if not entry.get("sources"):
                    raise ValueError(f"{entry['id']}: every service needs sources")
                services.append(Service(entry["id"], entry["name"], tuple(entry.get("makers", [])),
                                        tuple(d.lower() for d in entry.get("domains", [])), ports, bits,
                                        tuple(entry["sources"])))
            if len(prefixes) > 48:
                raise ValueError("at most 48 prefix signatures")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CamwatchError(f"{path}: invalid indicator file: {exc}") from None
        return cls(services, prefixes, version)

    def by_name(self, name: str | None) -> Service | None:
        if not name:
            return None
        try:
            return self._by_name[name]
        except KeyError:
            pass
        found = next((svc for svc in self.services if svc.matches_name(name)), None)
        if len(self._by_name) >= 1 << 14:
            self._by_name.clear()  # bounded: a DNS flood of unique names must not grow it
        self._by_name[name] = found
        return found

    def match(self, obs: Observation) -> tuple[Service, str] | None:
        """The service a device's traffic belongs to, and the evidence."""
        svc = self.by_name(obs.name) if obs.initiated else None
        if svc is not None:
            return svc, f"name {obs.name}"
        tags = obs.tags
        for svc in self.services:
            if tags & svc.signature_bits:
                return svc, "its protocol signature in the payload"
        maker = obs.device.maker.name if obs.device.maker else None
        if obs.initiated and maker:
            for svc in self.services:
                if maker in svc.makers and (obs.proto, obs.port) in svc.ports:
                    return svc, f"{obs.proto}/{obs.port}, a {svc.name} port, from a {maker} device"
        return None


def severity_for(dev: Device, covered: str, other: str) -> str:
    return covered if dev.covered else other


class VendorCloudDetector(Detector):
    """Cameras reaching vendor cloud / P2P services: by DNS query, SNI/Host name, payload signature, or port."""

    name = "vendor_cloud"

    def __init__(self, sensor_name: str, episodes: Episodes, indicators: Indicators):
        super().__init__(sensor_name, episodes)
        self.indicators = indicators

    def dns_query(self, ts: float, dev: Device, qname: str, resolver: str, scope: str, vlan: int) -> Alert | None:
        svc = self.indicators.by_name(qname)
        if svc is None or not self.episodes.observe((self.name, dev.ip, svc.id, "dns"), ts, 1, 0):
            return None
        obs = Observation(ts, dev, 1, 0, True, resolver, 53, "udp", qname, scope, vlan)
        summary = (f"{describe_device(dev)} looked up {qname}, a {svc.name} name: the device is set up to "
                   f"reach its vendor's cloud.{covered_note(dev)}")
        return self.alert(obs, "medium", 0.8, summary, service=svc.id, evidence="dns query")

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        found = self.indicators.match(obs)
        if found is None:
            return None
        svc, evidence = found
        if not self.episodes.observe((self.name, obs.device.ip, svc.id), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        dev = obs.device
        summary = (f"{describe_device(dev)} is talking to {svc.name} at "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)}, recognised by {evidence}."
                   f"{covered_note(dev)}")
        return self.alert(obs, severity_for(dev, "high", "medium"), 0.95, summary, service=svc.id,
                          evidence=evidence)


# ---- hard-coded infrastructure ---------------------------------------------------------------------------------
class HardcodedInfraDetector(Detector):
    """DNS or NTP straight to outside servers instead of the site's; UPnP IGD discovery and port-mapping requests."""

    name = "hardcoded_infra"
    SERVICES: dict[tuple[str, int | None], str] = {
        ("udp", 53): "DNS", ("tcp", 53): "DNS", ("tcp", 853): "DNS over TLS", ("udp", 123): "NTP"}

    def observe(self, obs: Observation) -> Alert | None:
        what = self.SERVICES.get((obs.proto, obs.port))
        if what is None or not obs.external or not obs.initiated or obs.sent_packets == 0:
            return None
        if not self.episodes.observe((self.name, obs.device.ip, obs.peer, what), obs.ts, obs.sent_packets,
                                     obs.sent_bytes):
            return None
        summary = (f"{describe_device(obs.device)} sends {what} queries straight to "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)} instead of the site's "
                   f"servers: a hard-coded resolver or time source that bypasses site controls.")
        return self.alert(obs, "medium" if what != "NTP" else "low", 0.9, summary, service=what.lower())

    def upnp(self, ts: float, dev: Device, kind: str, peer: str, port: int, proto: str, scope: str,
             vlan: int, detail: str) -> Alert | None:
        if not self.episodes.observe((self.name, dev.ip, kind), ts, 1, 0):
            return None
        obs = Observation(ts, dev, 1, 0, True, peer, port, proto, None, scope, vlan)
        if kind == "upnp_port_mapping":
            summary = (f"{describe_device(dev)} asked the gateway {peer} to open a port through the firewall "
                       f"(UPnP AddPortMapping{detail}).")
            return self.alert(obs, "high", 1.0, summary, service=kind)
        summary = (f"{describe_device(dev)} is searching for an Internet gateway it could open ports on "
                   f"(UPnP IGD M-SEARCH); no port mapping seen yet.")
        return self.alert(obs, "low", 0.6, summary, service=kind)


# ---- video leaving the site ----------------------------------------------------------------------------------
@dataclass
class _Upstream:
    first: float
    last: float
    bytes: int = 0
    packets: int = 0


class VideoEgressDetector(Detector):
    """Sustained upstream media-like traffic from a camera to a non-local destination.

    Fires when, within one continuous episode (gaps under GAP seconds), a device has sent at least MIN_RATE bit/s
    on average for MIN_DURATION seconds, in packets averaging MIN_PACKET bytes, to a public or core address, with a
    media profile (RTP, PPPP DRW frames or TLS) or simply far more up than down.
    """

    name = "video_egress"
    MIN_RATE = 200_000
    MIN_DURATION = 5.0
    MIN_PACKET = 400
    GAP = 30.0
    UP_DOWN_RATIO = 5

    def __init__(self, sensor_name: str, episodes: Episodes):
        super().__init__(sensor_name, episodes)
        self._state: BoundedLRU[tuple[str, str], _Upstream] = BoundedLRU(episodes.max_open)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_bytes == 0:
            return None
        key = (obs.device.ip, obs.peer)
        st = self._state.use(key)
        if st is None or obs.ts - st.last > self.GAP:
            st = _Upstream(obs.ts, obs.ts)
        st.last = max(st.last, obs.flow.last if obs.flow else obs.ts)
        st.bytes += obs.sent_bytes
        st.packets += obs.sent_packets
        self._state.put(key, st)
        duration = st.last - st.first
        if duration < self.MIN_DURATION or st.packets == 0:
            return None
        rate = 8 * st.bytes / duration
        if rate < self.MIN_RATE or st.bytes / st.packets < self.MIN_PACKET:
            return None
        flow = obs.flow
        profile = [label for bit, label in PROFILE_NAMES.items() if obs.tags & bit and bit != TAG_PPPP]
        if flow is not None and not profile:
            sent = flow.orig_bytes if obs.initiated else flow.resp_bytes
            received = flow.resp_bytes if obs.initiated else flow.orig_bytes
            if sent < self.UP_DOWN_RATIO * max(received, 1):
                return None
            profile = ["one-way bulk upload"]
        if not self.episodes.observe((self.name, obs.device.ip, obs.peer), obs.ts, obs.sent_packets,
                                     obs.sent_bytes):
            return None
        dev = obs.device
        summary = (f"{describe_device(dev)} has been sending {rate / 1e6:.2f} Mbit/s for {duration:.0f} s "
                   f"({', '.join(profile)}) to {describe_destination(obs.peer, obs.name, obs.port, obs.proto)} "
                   f"outside the site: video is leaving.{covered_note(dev)}")
        score = min(1.0, 0.6 + rate / (10 * self.MIN_RATE))
        return self.alert(obs, severity_for(dev, "critical", "high"), score, summary,
                          rate_bps=round(rate), duration_s=round(duration, 1), profile=profile)


# ---- beaconing -----------------------------------------------------------------------------------------------
def bowley_skew(values: list[float]) -> float:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    if q3 == q1:
        return 0.0
    return (q1 + q3 - 2 * q2) / (q3 - q1)


def mad(values: list[float]) -> float:
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


def beacon_score(times: list[float], sizes: list[int]) -> tuple[float, dict]:
    """RITA-style score in [0, 1]: regular intervals and regular sizes score high.

    Interval part: 1 - |Bowley skew|, 1 - MAD/median interval (jitter relative to the period), and how densely the
    connections fill the observed span. Size part: 1 - |Bowley skew|, 1 - MAD/32 bytes, and smallness.
    """
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    med = statistics.median(intervals)
    span = times[-1] - times[0]
    ts_skew = 1 - min(1.0, abs(bowley_skew(intervals)))
    ts_mad = max(0.0, 1 - mad(intervals) / max(med, 1e-9))
    ts_count = min(1.0, len(intervals) / max(span / max(med, 1e-9), 1))
    ds_skew = 1 - min(1.0, abs(bowley_skew([float(s) for s in sizes])))
    ds_mad = max(0.0, 1 - mad([float(s) for s in sizes]) / 32)
    ds_small = max(0.0, 1 - statistics.mode(sizes) / 65535)
    ts_score = (ts_skew + ts_mad + ts_count) / 3
    ds_score = (ds_skew + ds_mad + ds_small) / 3
    parts = {"interval_s": round(med, 2), "interval_mad_s": round(mad(intervals), 2),
             "ts_score": round(ts_score, 3), "ds_score": round(ds_score, 3)}
    return (ts_score + ds_score) / 2, parts


class BeaconingDetector(Detector):
    """Regular check-ins from a device to one outside address (RITA-style interval and size analysis).

    Each burst of packets a device sends to the destination is one event; bursts closer than MIN_INTERVAL seconds
    are one event, so continuous streams never look like beacons.
    """

    name = "beaconing"
    MIN_EVENTS = 6          # five intervals: time-to-detect is at most five periods
    MIN_INTERVAL = 5.0
    THRESHOLD = 0.8
    HISTORY = 64

    def __init__(self, sensor_name: str, episodes: Episodes):
        super().__init__(sensor_name, episodes)
        # Lists, not deques: a deque preallocates a 64-slot block, and floods bring a pair per forged source.
        self._events: BoundedLRU[tuple[str, str], list[list]] = BoundedLRU(episodes.max_open)

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        key = (obs.device.ip, obs.peer)
        events = self._events.use(key)
        if events is None:
            events = []
        # events hold [start, last activity, bytes]; activity within MIN_INTERVAL of the last extends the burst,
        # so a continuous stream stays one long event instead of a train of regular ones
        if events and obs.ts - events[-1][1] < self.MIN_INTERVAL:
            events[-1][1] = obs.ts
            events[-1][2] += obs.sent_bytes
            return None
        events.append([obs.ts, obs.ts, obs.sent_bytes])
        if len(events) > self.HISTORY:
            del events[0]
        self._events.put(key, events)
        if len(events) < self.MIN_EVENTS:
            return None
        score, parts = beacon_score([e[0] for e in events], [e[2] for e in events])
        if score < self.THRESHOLD:
            return None
        if not self.episodes.observe((self.name, obs.device.ip, obs.peer), obs.ts, obs.sent_packets,
                                     obs.sent_bytes):
            return None
        summary = (f"{describe_device(obs.device)} checks in with "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)} every "
                   f"{parts['interval_s']:.0f} s (jitter {parts['interval_mad_s']:.1f} s) over {len(events)} "
                   f"check-ins: beacon score {score:.2f}.{covered_note(obs.device)}")
        return self.alert(obs, severity_for(obs.device, "high", "medium"), score, summary, **parts)


# ---- new external destination ------------------------------------------------------------------------------------
class NewDestinationDetector(Detector):
    """An external destination a device has not used before, once its learning period is over.

    `known` is the persistent store of (device, destination) first sightings and of each device's first sighting;
    restarts therefore neither forget what was learned nor re-alert.
    """

    name = "new_destination"

    def __init__(self, sensor_name: str, episodes: Episodes, known, learning_period: float):
        super().__init__(sensor_name, episodes)
        self.known = known
        self.learning_period = learning_period

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        dev = obs.device
        learning_since = self.known.device_first_seen(dev.ip, obs.ts)  # the pipeline recorded the real first sight
        destination = obs.name or obs.peer
        if not self.known.add_destination(dev.ip, destination, obs.ts):
            return None
        if obs.ts - learning_since < self.learning_period:
            return None
        if not self.episodes.observe((self.name, dev.ip, destination), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        summary = (f"{describe_device(dev)} reached {describe_destination(obs.peer, obs.name, obs.port, obs.proto)}, "
                   f"a destination it never used in {(obs.ts - learning_since) / 3600:.1f} h of observation."
                   f"{covered_note(dev)}")
        return self.alert(obs, "low", 0.7, summary)


# ---- learned anomaly ----------------------------------------------------------------------------------------
class AnomalyDetector(Detector):
    """Scores each device's one-minute windows with the learned model; an out-of-character window is an alert.

    The destination reported is the outside (or, failing that, any) peer the device sent most to in that window.
    Only camera-role devices are modelled (see observe).
    """

    name = "anomaly"
    external_only = False   # a device's whole minute is what gets scored
    MAX_PEERS_TRACKED = 256

    def __init__(self, sensor_name: str, episodes: Episodes, model, windows, inventory):
        super().__init__(sensor_name, episodes)
        self.model = model
        self.windows = windows
        self.inventory = inventory
        self._peers: dict[str, dict[tuple, int]] = {}  # device -> (peer, port, proto, name, scope, vlan) -> bytes
        self._last_partial = float("-inf")

    def observe(self, obs: Observation) -> None:
        # Cameras only: the gateway and the NVR are one of a kind on a camera VLAN, so their normal minutes look
        # isolated to a forest trained on the site, and they are not what the model is for.
        if obs.sent_packets == 0 or obs.device.role != "camera":
            return None
        self.windows.observe(obs, obs.new_flow)
        peers = self._peers.setdefault(obs.device.ip, {})
        key = (obs.peer, obs.port, obs.proto, obs.name, obs.scope, obs.vlan)
        if key in peers or len(peers) < self.MAX_PEERS_TRACKED:
            peers[key] = peers.get(key, 0) + obs.sent_bytes + (1 << 40 if obs.external else 0)
        return None

    PARTIAL_EVERY = 5.0   # seconds of sensor time between looks at windows still filling
    # Counts only grow as a window fills: part-way through, what matters is whether they already exceed a typical
    # minute, so they are lifted to the training median (the most ordinary value) and judged above it.
    MONOTONE = ("log_bytes_sent", "log_packets_sent", "log_new_flows", "log_peers", "log_external_peers",
                "log_service_ports", "log_dns_queries")
    BOUNDED = ("log_mean_packet_bytes",)   # settles as the window fills: judged only once it is outside training

    def _as_far_as_seen(self, vector: np.ndarray) -> np.ndarray:
        lo = np.asarray(self.model.feature_stats["min"])
        med = np.asarray(self.model.feature_stats["median"])
        hi = np.asarray(self.model.feature_stats["max"])
        v = vector.copy()
        for i, name in enumerate(self.model.features):
            if name in self.MONOTONE:
                v[i] = max(v[i], med[i])
            elif name in self.BOUNDED:
                v[i] = min(max(v[i], lo[i]), hi[i])
        return v

    def tick(self, now: float, final: bool = False) -> list[Alert]:
        """Score windows that closed, and every PARTIAL_EVERY seconds the ones still open; alert at `now`."""
        rows = [] if final else self.windows.close(now)
        partial = self.windows.flush() if final else []
        if not final and now - self._last_partial >= self.PARTIAL_EVERY:
            self._last_partial = now
            partial = self.windows.partial()
        rows = rows + [(ip, start, self._as_far_as_seen(v)) for ip, start, v in partial]
        if not rows:
            return []
        scores = self.model.score(np.vstack([r[2] for r in rows]))
        alerts = []
        for (ip, start, vector), score in zip(rows, scores, strict=True):
            dev = self.inventory.devices.get(ip)
            if dev is None or not self.model.is_anomalous(float(score)):
                continue
            if not self.episodes.observe((self.name, ip), now, 0, 0):
                continue
            peers = self._peers.get(ip, {})
            if peers:
                peer, port, proto, name, scope, vlan = max(peers, key=peers.__getitem__)
            else:
                peer, port, proto, name, scope, vlan = ("", None, "", None, "other", 0)
            why = "; ".join(self.model.explain(vector)) or "an unusual mix of its usual features"
            summary = (f"{describe_device(dev)} behaved out of character in the minute from "
                       f"{time.strftime('%H:%M:%S', time.gmtime(start))} UTC: {why} "
                       f"(anomaly score {score:.2f}, threshold {self.model.threshold:.2f}, model {self.model.name}).")
            obs = Observation(now, dev, 0, 0, True, peer, port, proto, name, scope, vlan)
            alerts.append(self.alert(obs, "medium", float(score), summary, model=self.model.name,
                                     model_version=self.model.version))
        for ip, start, _ in rows:
            if start + self.windows.window <= now:
                self._peers.pop(ip, None)
        return alerts
