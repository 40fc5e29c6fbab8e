"""Enrich stage: who each camera-side host is (MAC, manufacturer) and what each destination is (scope, name).

Manufacturers come from Wireshark's `manuf` database, longest assignment first (MA-S /36, MA-M /28, MA-L /24),
so a /28 block inside an IEEE registration-authority /24 resolves to the company that actually holds it.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shutil
import subprocess
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sensor.bounded import BoundedLRU, SegmentedLRU
from sensor.config import DEFAULT_CAMERA_NETWORKS, Config, name_matches
from sensor.dissect import DnsMessage
from sensor.errors import CamwatchError
from sensor.flows import IPAddress

COVERED_MAKERS_FILE = Path(__file__).with_name("data") / "covered_makers.toml"

MANUF_PATHS = ("/usr/share/wireshark/manuf", "/usr/local/share/wireshark/manuf")

SCOPE_CAMERA = "camera"
SCOPE_ALLOWED = "allowed"
SCOPE_CORE = "core"
SCOPE_PRIVATE = "private"
SCOPE_MULTICAST = "multicast"
SCOPE_LINK_LOCAL = "link_local"
SCOPE_PUBLIC = "public"
SCOPE_OTHER = "other"
SCOPES = (SCOPE_CAMERA, SCOPE_ALLOWED, SCOPE_CORE, SCOPE_PRIVATE, SCOPE_MULTICAST, SCOPE_LINK_LOCAL,
          SCOPE_PUBLIC, SCOPE_OTHER)

# Addresses beyond the camera VLAN's own broadcast domain but not the Internet either.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in DEFAULT_CAMERA_NETWORKS)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"

# Grace after a DNS record's TTL: cameras keep long-lived connections to addresses resolved long ago.
NAME_GRACE_SECONDS = 3600.0


class ManufDatabase:
    def __init__(self, entries: dict[int, dict[int, str]]):
        self._by_bits = entries  # prefix length in bits -> {prefix value: manufacturer}

    @classmethod
    def load(cls, path: str | Path | None = None) -> ManufDatabase:
        text = None
        for candidate in ([path] if path else MANUF_PATHS):
            try:
                text = Path(candidate).read_text(encoding="utf-8", errors="replace")
                break
            except OSError:
                continue
        if text is None and shutil.which("tshark"):
            # Wireshark 4.2+ compiles the table in and prints it with -G manuf.
            try:
                text = subprocess.run(["tshark", "-G", "manuf"], capture_output=True, text=True,
                                      timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                text = None
        return cls(parse_manuf(text or ""))

    def lookup(self, mac: int) -> str | None:
        if not mac:
            return None
        for bits in (36, 28, 24):
            table = self._by_bits.get(bits)
            if table:
                name = table.get(mac >> (48 - bits))
                if name:
                    return name
        if (mac >> 40) & 0x02:
            return "(locally administered)"
        return None

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_bits.values())


def parse_manuf(text: str) -> dict[int, dict[int, str]]:
    out: dict[int, dict[int, str]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        prefix = parts[0].strip()
        name = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip()
        bits = 24
        if "/" in prefix:
            prefix, b = prefix.split("/", 1)
            bits = int(b)
        hexdigits = prefix.replace(":", "").replace("-", "").replace(".", "")
        try:
            value = int(hexdigits, 16)
        except ValueError:
            continue
        value <<= 4 * (12 - len(hexdigits))
        if bits not in (24, 28, 36):
            continue
        table = out.setdefault(bits, {})
        # A /24 of the IEEE registration authority only says the block is subdivided; keep real owners.
        key = value >> (48 - bits)
        if bits == 24 and name.startswith("IEEE Registration Authority"):
            continue
        table[key] = name
    return out


def format_mac(mac: int) -> str | None:
    if not mac:
        return None
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


@dataclass(frozen=True)
class Maker:
    name: str
    legal_name: str
    basis: str
    manuf: tuple[re.Pattern, ...]
    banners: tuple[re.Pattern, ...]
    reason: str
    sources: tuple[str, ...]


class CoveredMakers:
    """The curated list in data/covered_makers.toml, validated on load."""

    def __init__(self, makers: list[Maker], version: str):
        self.makers = makers
        self.version = version

    @classmethod
    def load(cls, path: Path = COVERED_MAKERS_FILE) -> CoveredMakers:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise CamwatchError(f"{path}: cannot load the covered-maker list: {exc}") from None
        makers = []
        try:
            version = raw["version"]
            for i, entry in enumerate(raw["maker"], 1):
                if entry["basis"] not in ("named", "prc-nil") or not entry["sources"] or not entry["reason"]:
                    raise ValueError(f"maker {i}: basis, reason and sources are required")
                makers.append(Maker(
                    entry["name"], entry["legal_name"], entry["basis"],
                    tuple(re.compile(p, re.I) for p in entry["manuf"]),
                    tuple(re.compile(p, re.I) for p in entry.get("banners", [])),
                    entry["reason"], tuple(entry["sources"])))
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise CamwatchError(f"{path}: invalid covered-maker list: {exc}") from None
        return cls(makers, str(version))

    def by_manufacturer(self, organisation: str | None) -> Maker | None:
        if organisation:
            for maker in self.makers:
                if any(p.search(organisation) for p in maker.manuf):
                    return maker
        return None

    def by_banner(self, text: str | None) -> Maker | None:
        if text:
            for maker in self.makers:
                if any(p.search(text) for p in maker.banners):
                    return maker
        return None


class Classifier:
    """Scope of an address relative to this site's configuration."""

    def __init__(self, config: Config):
        self.config = config
        self._camera = config.effective_camera_networks
        self._core = config.core_networks
        self.address_scope = lru_cache(maxsize=1 << 16)(self._address_scope)
        # The same rules for IPv4 as integer ranges, checked in _address_scope's order: a flow's raw address can
        # be classified without building an ipaddress object (floods bring millions of addresses seen once).
        v4 = [(ipaddress.ip_network("224.0.0.0/4"), SCOPE_MULTICAST), (ipaddress.ip_network("255.255.255.255/32"),
              SCOPE_MULTICAST), (ipaddress.ip_network("127.0.0.0/8"), SCOPE_OTHER),
              (ipaddress.ip_network("0.0.0.0/32"), SCOPE_OTHER), (_LINK_LOCAL[0], SCOPE_LINK_LOCAL)]
        v4 += [(n, SCOPE_CAMERA) for n in self._camera if n.version == 4]
        v4 += [(n, SCOPE_CORE) for n in self._core if n.version == 4]
        v4 += [(n, SCOPE_PRIVATE) for n in _PRIVATE if n.version == 4]
        self._v4_ranges = [(int(n.network_address), int(n.broadcast_address), scope) for n, scope in v4]
        self._raw_cache: dict[bytes, str] = {}

    def _address_scope(self, ip: IPAddress) -> str:
        if ip.is_multicast or ip == _BROADCAST:
            return SCOPE_MULTICAST
        if ip.is_loopback or ip.is_unspecified:
            return SCOPE_OTHER
        if any(ip in n for n in _LINK_LOCAL):
            return SCOPE_LINK_LOCAL
        if any(ip in n for n in self._camera):
            return SCOPE_CAMERA
        if any(ip in n for n in self._core):
            return SCOPE_CORE
        if any(ip in n for n in _PRIVATE):
            return SCOPE_PRIVATE
        return SCOPE_PUBLIC

    def is_camera_side(self, ip: IPAddress) -> bool:
        return self.address_scope(ip) == SCOPE_CAMERA

    def scope_of_raw(self, raw: bytes) -> str:
        """address_scope of a 16-byte address (IPv4 as IPv4-mapped), from integer ranges for IPv4."""
        scope = self._raw_cache.get(raw)
        if scope is None:
            if raw[:12] == _V4_MAPPED:
                value = int.from_bytes(raw[12:], "big")
                scope = next((sc for lo, hi, sc in self._v4_ranges if lo <= value <= hi), SCOPE_PUBLIC)
            else:
                scope = self.address_scope(ipaddress.IPv6Address(raw))
            if len(self._raw_cache) >= 1 << 16:
                self._raw_cache.clear()  # floods: bounded, and the hot addresses come straight back
            self._raw_cache[raw] = scope
        return scope

    def name_allowed(self, name: str) -> bool:
        """Whether some allow rule names this DNS name (whatever its port), so looking it up is expected."""
        return any(r.dst_pattern and name_matches(r.dst_pattern, name) for r in self.config.allow)

    def destination_scope(self, ip: IPAddress, name: str | None, port: int | None, proto: str):
        """(scope, matching allow rule or None) of a destination a camera-side device talks to."""
        scope = self.address_scope(ip)
        if scope in (SCOPE_CAMERA, SCOPE_MULTICAST, SCOPE_OTHER):
            return scope, None
        for rule in self.config.allow:
            if rule.matches(ip, name, port, proto):
                return SCOPE_ALLOWED, rule
        return scope, None


class NameCache:
    """Address -> DNS name learned from answers seen on the wire, TTL-aware and bounded (LRU)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._names: BoundedLRU[str, tuple[str, float]] = BoundedLRU(max_entries)

    @property
    def evicted(self) -> int:
        return self._names.evicted

    def learn(self, msg: DnsMessage, now: float) -> None:
        if not msg.is_response or not msg.qname:
            return
        # one answer's addresses all go in before any is evicted
        qname = msg.qname
        self._names.put_many((address, (qname, now + ttl + NAME_GRACE_SECONDS)) for address, ttl in msg.addresses())

    def lookup(self, ip: IPAddress | str, now: float) -> str | None:
        entry = self._names.get(str(ip))
        if entry is None or entry[1] < now:
            return None
        return entry[0]

    def __len__(self) -> int:
        return len(self._names)


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

    def state(self) -> dict:
        """What the state store keeps; the maker is re-derived on load from the current lists."""
        return {"ip": self.ip, "mac": self.mac, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
                "egress_bytes": self.egress_bytes, "dns_queries": list(self.dns_queries),
                "external_peers": [[ip, n, b] for ip, (n, b) in self.external_peers.items()],
                "identity": self.identity, "evidence": sorted(self.evidence)}

    def as_dict(self) -> dict:
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
        }


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
