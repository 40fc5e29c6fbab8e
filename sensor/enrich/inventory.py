"""The inventory: every camera-side host that has sent traffic, what it is (maker, role, identity) and where it
sends, bounded so that a flood of forged sources cannot push the site's real cameras out."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sensor.bounded import SegmentedLRU
from sensor.config import Config
from sensor.enrich.maker_evidence import (
    MAX_DETAIL,
    MAX_ITEMS,
    NOTHING,
    ROLE_KEYS,
    SOURCES,
    MakerEvidence,
    MakerJudge,
    Verdict,
)
from sensor.enrich.makers import CoveredMakers, ManufDatabase, format_mac
from sensor.enrich.series import BUCKET_SECONDS, ByteSeries
from sensor.flows import IPAddress
from sensor.reference_data import Maker, Service


@dataclass
class Device:
    ip: str
    mac: int = 0
    vendor: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    packets_sent: int = 0
    bytes_sent: int = 0
    egress_bytes: dict[str, int] = field(default_factory=dict)  # by destination scope
    dns_queries: OrderedDict = field(default_factory=OrderedDict)  # name -> first seen
    external_peers: dict = field(default_factory=dict)  # address -> [name or None, bytes sent]
    identity: dict = field(default_factory=dict)  # model, firmware, serial, server, ... first value seen
    evidence: set = field(default_factory=set)   # behaviours behind the role
    outbound: ByteSeries | None = None   # bytes to public and core scopes over time; made on the first such byte
    # Who made it (sensor.enrich.maker_evidence): the items, bounded, and the verdict Inventory derives from them.
    maker_items: list[MakerEvidence] = field(default_factory=list)
    verdict: Verdict = NOTHING
    module: str | None = None    # the module maker the MAC prefix names (Texas Instruments, Espressif, ...)

    @property
    def maker(self) -> Maker | None:
        """The covered maker, or None."""
        return self.verdict.covered

    @property
    def covered_basis(self) -> str | None:
        return self.verdict.basis

    @property
    def maker_name(self) -> str | None:
        """The best-supported maker, covered or not."""
        return self.verdict.name

    @property
    def maker_label(self) -> str | None:
        """What a person reads: the maker, else "unknown (module: X)", else None."""
        if self.verdict.name:
            return self.verdict.name
        return f"unknown (module: {self.module})" if self.module else None

    @property
    def maker_evidence(self) -> str | None:
        """The evidence in one line, strongest first."""
        return "; ".join(f"{i.detail} ({i.source})" for i in self.ranked_evidence()) or None

    def ranked_evidence(self) -> list[MakerEvidence]:
        return sorted(self.maker_items, key=lambda i: -i.weight)

    def add_maker_evidence(self, item: MakerEvidence) -> bool:
        """True when the item is new: one per (source, maker), the first detail kept, at most MAX_ITEMS."""
        if len(self.maker_items) >= MAX_ITEMS or any(
                i.source == item.source and i.maker == item.maker for i in self.maker_items):
            return False
        self.maker_items.append(item)
        return True

    @property
    def covered(self) -> bool:
        return self.maker is not None

    @property
    def role(self) -> str:
        e = self.evidence
        if "nvr_model" in e:
            return "nvr"
        if e & CAMERA_EVIDENCE:
            return "camera"
        if e & {"rtsp_client", "video_receiver"}:
            return "nvr"
        if e & GATEWAY_EVIDENCE:
            return "gateway"
        if e & MAKER_EVIDENCE or self.verdict.cameras or (self.maker is not None and self.maker.basis == "named"):
            return "camera"
        return "other"

    def note_external_peer(self, peer: str, name: str | None, sent_bytes: int) -> None:
        """Bytes sent to an outside peer, and its latest name; a new peer beyond the bound is not recorded."""
        entry = self.external_peers.get(peer)
        if entry is not None:
            entry[0] = name or entry[0]
            entry[1] += sent_bytes
        elif len(self.external_peers) < MAX_PEERS_PER_DEVICE:
            self.external_peers[peer] = [name, sent_bytes]

    def note_outbound(self, ts: float, sent_bytes: int) -> None:
        if self.outbound is None:
            self.outbound = ByteSeries()
        self.outbound.add(ts, sent_bytes)

    def state(self) -> dict:
        """What the state store keeps; the maker is re-derived on load from the current lists."""
        return {"ip": self.ip, "mac": self.mac, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
                "egress_bytes": self.egress_bytes, "dns_queries": list(self.dns_queries),
                "external_peers": [[ip, n, b] for ip, (n, b) in self.external_peers.items()],
                "identity": self.identity, "evidence": sorted(self.evidence),
                "outbound": self.outbound.state() if self.outbound else [],
                "maker_evidence": [[i.source, i.detail, i.maker] for i in self.maker_items]}

    def as_dict(self) -> dict:
        return {
            "ip": self.ip, "mac": format_mac(self.mac), "vendor": self.vendor,
            "covered": self.covered, "maker": self.maker_label,
            "covered_basis": self.covered_basis, "maker_evidence": self.maker_evidence,
            "maker_evidence_items": [i.as_dict() for i in self.ranked_evidence()], "maker_note": self.verdict.note,
            "module": self.module, "role": self.role, "identity": dict(self.identity),
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
            "egress_bytes": dict(self.egress_bytes), "dns_queries": list(self.dns_queries),
            "external_destinations": [{"ip": ip, "name": name, "bytes": sent}
                                      for ip, (name, sent) in self.external_peers.items()],
            "outbound_series": {"bucket_seconds": BUCKET_SECONDS,
                                "points": self.outbound.state() if self.outbound else []},
        }


# Behaviour and names that make a device a camera (roles.py and Inventory add them).
CAMERA_EVIDENCE = frozenset({"rtsp_server", "video_sender", "camera_discovery", "camera_model", "p2p_device"})
# Weaker, after the gateway's evidence: the maker is one named in a government restriction ("named_maker") or one
# that makes cameras only ("camera_maker", covered_makers.toml / brands.toml `cameras`).
MAKER_EVIDENCE = frozenset({"named_maker", "camera_maker"})
GATEWAY_EVIDENCE = frozenset({"dns_server", "ntp_server", "router_mac"})
MAX_QUERIES_PER_DEVICE = 256
MAX_PEERS_PER_DEVICE = 4096


# A device proves itself, and moves to the inventory's protected segment, by sending in two different seconds: a
# forged one-packet source never does, so a flood of them cannot push the site's real cameras out.
ESTABLISHED_AFTER_SECONDS = 1.0


class Inventory:
    """Camera-side hosts that have sent traffic, bounded by max_devices: least recently seen newcomers go first,
    then least recently seen established devices (bounded.SegmentedLRU)."""

    def __init__(self, config: Config, manuf: ManufDatabase, makers: CoveredMakers | None = None,
                 judge: MakerJudge | None = None):
        self.max_devices = config.max_devices
        self.manuf = manuf
        self.makers = makers if makers is not None else CoveredMakers.load()
        self.judge = judge if judge is not None else MakerJudge.load(self.makers)
        self.devices: SegmentedLRU[str, Device] = SegmentedLRU(config.max_devices, self._forget)
        self.dirty: set[str] = set()   # changed since the last save to the state store
        self.on_forget: Callable[[str], None] | None = None   # the state store drops an evicted device's row
        # The vendor service a DNS name belongs to (the pipeline hands in the indicator file's lookup): a lookup of
        # a maker's cloud name is maker evidence.
        self.service_of_name: Callable[[str], Service | None] | None = None

    @property
    def evicted(self) -> int:
        return self.devices.evicted

    def _forget(self, ip: str, _dev: Device) -> None:
        self.dirty.discard(ip)
        if self.on_forget is not None:
            self.on_forget(ip)

    def touch(self, ip: IPAddress | str, mac: int, ts: float) -> Device:
        key = str(ip)
        dev = self.devices.use(key)
        if dev is None:
            dev = Device(key, first_seen=ts)
            self.devices.put(key, dev)
        if mac and mac != dev.mac:
            dev.mac = mac
            self._note_mac(dev)
        if ts > dev.last_seen:
            dev.last_seen = ts
            if ts - dev.first_seen >= ESTABLISHED_AFTER_SECONDS and not self.devices.is_protected(key):
                self.devices.promote(key)
        self.dirty.add(key)
        return dev

    def take_dirty(self) -> list[dict]:
        docs = [dev.state() for ip in self.dirty if (dev := self.devices.get(ip)) is not None]
        self.dirty.clear()
        return docs

    def restore(self, docs: list) -> None:
        """Devices from the state store. A row that is not what save wrote (a damaged or hand-edited database) is
        skipped: it must never cost the rows beside it, nor the start."""
        devices = [dev for doc in docs if (dev := _device_from_state(doc)) is not None]
        for dev in sorted(devices, key=lambda d: d.last_seen)[-self.max_devices:]:
            # The items are kept as seen; their makers and weights are re-derived from today's lists.
            kept, dev.maker_items = dev.maker_items, []
            self._note_mac(dev)
            for item in kept:
                if item.source != "oui":
                    self._rederive(dev, item)
            self._judge_identity(dev, dev.identity)
            self.devices.put(dev.ip, dev)
            if dev.last_seen - dev.first_seen >= ESTABLISHED_AFTER_SECONDS:
                self.devices.promote(dev.ip)

    def add_identity(self, dev: Device, fields: dict[str, str]) -> None:
        new = {key: value for key, value in fields.items() if key not in dev.identity}
        dev.identity.update(new)
        if new:   # a camera repeats its announcements all day: only a first value can say more
            self._judge_identity(dev, new)

    def _judge_identity(self, dev: Device, fields: dict[str, str]) -> None:
        self.judge_again(dev, self.judge.from_identity({**fields, "protocol": dev.identity.get("protocol", "")}))
        role = self.judge.role_of(v for k in ROLE_KEYS if isinstance(v := fields.get(k), str))
        if role is not None:
            dev.evidence.add(f"{role}_model")

    def note_service(self, dev: Device, svc: Service, how: str, seen: str) -> None:
        """The device used a maker's service (how: "dns" for a lookup of its name `seen`, "service" for traffic
        recognised by `seen`). Not for a gateway: a router looks names up and forwards traffic for the cameras
        behind it, and what they use says nothing about who made the router."""
        item = self.judge.from_service(svc, how, seen)
        if item is not None and not dev.evidence & GATEWAY_EVIDENCE:
            self.judge_again(dev, [item])

    def judge_again(self, dev: Device, items: list[MakerEvidence]) -> None:
        """New evidence in, the verdict again; nothing new, nothing to do."""
        added = [dev.add_maker_evidence(item) for item in items]   # every item offered, not up to the first new
        if any(added):
            dev.verdict = self.judge.verdict(dev.maker_items)
            # kept: a camera stays a camera when later evidence names another maker
            if dev.verdict.covered is not None and dev.verdict.covered.basis == "named":
                dev.evidence.add("named_maker")
            if dev.verdict.cameras:
                dev.evidence.add("camera_maker")

    def _note_mac(self, dev: Device) -> None:
        dev.vendor = self.manuf.lookup(dev.mac)
        dev.module = self.judge.module_of(dev.vendor)
        dev.maker_items = [i for i in dev.maker_items if i.source != "oui"]   # a new MAC, a new badge
        dev.verdict = self.judge.verdict(dev.maker_items)
        item = self.judge.from_oui(dev.vendor)
        self.judge_again(dev, [item] if item is not None else [])

    def _rederive(self, dev: Device, item: MakerEvidence) -> None:
        """A stored item against the current lists: a service's maker may have been renamed, a weight changed."""
        if item.source in ("service", "dns"):
            self.judge_again(dev, [MakerEvidence(item.source, item.detail, item.maker, SOURCES[item.source])])

    def record_query(self, dev: Device, name: str, ts: float) -> None:
        if name not in dev.dns_queries:
            dev.dns_queries[name] = ts
            if len(dev.dns_queries) > MAX_QUERIES_PER_DEVICE:
                dev.dns_queries.popitem(last=False)
            svc = self.service_of_name(name) if self.service_of_name is not None else None
            if svc is not None:
                self.note_service(dev, svc, "dns", name)

    def __len__(self) -> int:
        return len(self.devices)


def _device_from_state(doc: object) -> Device | None:
    """Device.state() read back, or None when the document is not one."""
    if not isinstance(doc, dict):
        return None
    try:
        dev = Device(str(ipaddress.ip_address(doc["ip"])), int(doc["mac"]), first_seen=float(doc["first_seen"]),
                     last_seen=float(doc["last_seen"]), packets_sent=int(doc["packets_sent"]),
                     bytes_sent=int(doc["bytes_sent"]),
                     egress_bytes={str(k): int(v) for k, v in dict(doc["egress_bytes"]).items()},
                     dns_queries=OrderedDict((str(q), None) for q in doc["dns_queries"][-MAX_QUERIES_PER_DEVICE:]),
                     external_peers={str(ip): [n if isinstance(n, str) else None, int(b)]
                                     for ip, n, b in doc["external_peers"][:MAX_PEERS_PER_DEVICE]},
                     identity={str(k): v for k, v in dict(doc["identity"]).items() if isinstance(v, str)},
                     evidence={e for e in doc["evidence"] if isinstance(e, str)},
                     outbound=ByteSeries.from_state(doc.get("outbound")) if doc.get("outbound") else None,
                     maker_items=_items_from_state(doc.get("maker_evidence", [])))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(dev.first_seen) and math.isfinite(dev.last_seen)) or not 0 <= dev.mac < 1 << 48:
        return None
    return dev


def _items_from_state(rows: object) -> list[MakerEvidence]:
    """Stored maker evidence (source, detail, maker); rows that are not that, or of a source no longer known, go."""
    out: list[MakerEvidence] = []
    for row in rows[:MAX_ITEMS] if isinstance(rows, list) else []:
        # what save wrote is escaped already; a hand-edited row must not put a control character in a summary
        if (isinstance(row, list) and len(row) == 3 and all(isinstance(v, str) and v.isprintable() for v in row)
                and row[0] in SOURCES):
            out.append(MakerEvidence(row[0], row[1][:MAX_DETAIL + 1], row[2][:MAX_DETAIL], SOURCES[row[0]]))
    return out


def top_destinations(dev: Device, n: int) -> list[tuple[str, str, int]]:
    """The n outside destinations a device sent most to: (name or address, address, bytes)."""
    ranked = sorted(dev.external_peers.items(), key=lambda item: item[1][1], reverse=True)[:n]
    return [(name or ip, ip, sent) for ip, (name, sent) in ranked]
