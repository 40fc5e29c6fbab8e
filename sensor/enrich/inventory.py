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
from sensor.enrich.geography import Geography, destinations_by_place
from sensor.enrich.makers import CoveredMakers, ManufDatabase, format_mac
from sensor.flows import IPAddress
from sensor.reference_data import Maker


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
    maker: Maker | None = None
    maker_evidence: str | None = None   # "mac" or the banner/discovery text that named the maker
    identity: dict = field(default_factory=dict)  # model, firmware, serial, server, ... first value seen
    evidence: set = field(default_factory=set)   # behaviours behind the role

    @property
    def covered(self) -> bool:
        return self.maker is not None

    @property
    def role(self) -> str:
        e = self.evidence
        if e & {"rtsp_server", "video_sender", "camera_discovery"}:
            return "camera"
        if e & {"rtsp_client", "video_receiver"}:
            return "nvr"
        if e & {"dns_server", "ntp_server", "router_mac"}:
            return "gateway"
        if self.maker is not None and self.maker.basis == "named":
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

    def state(self) -> dict:
        """What the state store keeps; the maker is re-derived on load from the current lists."""
        return {"ip": self.ip, "mac": self.mac, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
                "egress_bytes": self.egress_bytes, "dns_queries": list(self.dns_queries),
                "external_peers": [[ip, n, b] for ip, (n, b) in self.external_peers.items()],
                "identity": self.identity, "evidence": sorted(self.evidence)}

    def as_dict(self, geography: Geography | None = None) -> dict:
        """The inventory document; `geography` places the external destinations (default: registry countries)."""
        countries, owners = destinations_by_place(self.external_peers, geography or REGISTRY)
        return {
            "ip": self.ip, "mac": format_mac(self.mac), "vendor": self.vendor,
            "covered": self.covered, "maker": self.maker.name if self.maker else None,
            "covered_basis": self.maker.basis if self.maker else None, "maker_evidence": self.maker_evidence,
            "role": self.role, "identity": dict(self.identity),
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
            "egress_bytes": dict(self.egress_bytes), "dns_queries": list(self.dns_queries),
            "external_destinations": [{"ip": ip, "name": name, "bytes": sent}
                                      for ip, (name, sent) in self.external_peers.items()],
            "destination_countries": countries, "destination_owners": owners,
        }


REGISTRY = Geography()   # registry countries only: for documents made without the sensor's own geography
MAX_QUERIES_PER_DEVICE = 256
MAX_PEERS_PER_DEVICE = 4096


# A device proves itself, and moves to the inventory's protected segment, by sending in two different seconds: a
# forged one-packet source never does, so a flood of them cannot push the site's real cameras out.
ESTABLISHED_AFTER_SECONDS = 1.0


class Inventory:
    """Camera-side hosts that have sent traffic, bounded by max_devices: least recently seen newcomers go first,
    then least recently seen established devices (bounded.SegmentedLRU)."""

    def __init__(self, config: Config, manuf: ManufDatabase, makers: CoveredMakers | None = None):
        self.max_devices = config.max_devices
        self.manuf = manuf
        self.makers = makers if makers is not None else CoveredMakers.load()
        self.devices: SegmentedLRU[str, Device] = SegmentedLRU(config.max_devices, self._forget)
        self.dirty: set[str] = set()   # changed since the last save to the state store
        self.on_forget: Callable[[str], None] | None = None   # the state store drops an evicted device's row

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
            dev.vendor = self.manuf.lookup(mac)
            maker = self.makers.by_manufacturer(dev.vendor)
            if maker is not None or dev.maker_evidence == "mac":
                dev.maker, dev.maker_evidence = maker, "mac" if maker else None
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
            dev.vendor = self.manuf.lookup(dev.mac)
            dev.maker = self.makers.by_manufacturer(dev.vendor)
            dev.maker_evidence = "mac" if dev.maker else None
            if dev.maker is None:
                self.add_identity(dev, {})
            self.devices.put(dev.ip, dev)
            if dev.last_seen - dev.first_seen >= ESTABLISHED_AFTER_SECONDS:
                self.devices.promote(dev.ip)

    def add_identity(self, dev: Device, fields: dict[str, str]) -> None:
        for key, value in fields.items():
            dev.identity.setdefault(key, value)
        if dev.maker is None:
            for key in ("server", "vendor", "model", "device_type"):
                maker = self.makers.by_banner(dev.identity.get(key))
                if maker is not None:
                    dev.maker, dev.maker_evidence = maker, f"{key}: {dev.identity[key]}"
                    break

    def record_query(self, dev: Device, name: str, ts: float) -> None:
        if name not in dev.dns_queries:
            dev.dns_queries[name] = ts
            if len(dev.dns_queries) > MAX_QUERIES_PER_DEVICE:
                dev.dns_queries.popitem(last=False)

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
                     evidence={e for e in doc["evidence"] if isinstance(e, str)})
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(dev.first_seen) and math.isfinite(dev.last_seen)) or not 0 <= dev.mac < 1 << 48:
        return None
    return dev


def top_destinations(dev: Device, n: int) -> list[tuple[str, str, int]]:
    """The n outside destinations a device sent most to: (name or address, address, bytes)."""
    ranked = sorted(dev.external_peers.items(), key=lambda item: item[1][1], reverse=True)[:n]
    return [(name or ip, ip, sent) for ip, (name, sent) in ranked]
