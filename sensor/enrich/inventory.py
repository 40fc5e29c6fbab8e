"""The inventory: every camera-side host that has sent traffic, what it is (maker, role, identity) and where it
sends, bounded so that a flood of forged sources cannot push the site's real cameras out."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sensor import compiled
from sensor.bounded import BoundedLRU, SegmentedLRU
from sensor.config import Config
from sensor.dissect import printable
from sensor.enrich import addresses
from sensor.enrich.admission import AdmissionBudget
from sensor.enrich.geography import Geography, destinations_by_place
from sensor.enrich.maker_evidence import (
    MAX_DETAIL,
    MAX_ITEMS,
    MAX_OUI_FACTS,
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


@dataclass(slots=True, weakref_slot=True, eq=False, repr=False)
class Device:
    """A device on the camera side, as the inventory knows it. Slotted (a weak reference slot for the incidents'
    `device_ref`): no attribute dict, one collector-tracked object less a device (a flood makes ten thousand)."""

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
    # One box, all its addresses (docs/identity.md, "One device per box"): `ip` is the primary one, the name
    # alerts give; `id` never changes (the first address the device was seen with), whatever renumbering does.
    id: str = ""
    addresses: dict = field(default_factory=dict)   # current address -> when it was last seen
    former_addresses: list = field(default_factory=list)   # addresses it left (renumbering), oldest first
    link_claimed: bool = False   # its MAC claimed one of its addresses on the link (ARP, DHCP, NDP, link-local)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.ip
        if not self.addresses:
            self.addresses = {self.ip: self.last_seen}

    @property
    def covered(self) -> bool:
        return self.maker is not None

    @property
    def role(self) -> str:
        # Asked for every observation (detectors filter on it): isdisjoint answers without building a set.
        e = self.evidence
        if NVR_MODEL_EVIDENCE in e:
            return "nvr"
        if not e.isdisjoint(CAMERA_EVIDENCE):
            return "camera"
        if not e.isdisjoint(NVR_EVIDENCE):
            return "nvr"
        if not e.isdisjoint(GATEWAY_EVIDENCE):
            return "gateway"
        if (not e.isdisjoint(MAKER_EVIDENCE) or self.verdict.cameras
                or (self.maker is not None and self.maker.basis == "named")):
            return "camera"
        return "other"

    def note_external_peer(self, peer: str, name: str | None, sent_bytes: int) -> None:
        """Bytes sent to an outside peer, and its latest name; a new peer beyond the bound is not recorded."""
        if name is not None:
            name = printable(name)   # it reaches a metric label and the inventory table, which quote nothing
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
                "maker_evidence": [[i.source, i.detail, i.maker] for i in self.maker_items], "id": self.id,
                "addresses": list(self.addresses), "former_addresses": list(self.former_addresses),
                "link_claimed": self.link_claimed}

    def as_dict(self, geography: Geography | None = None) -> dict:
        """The inventory document; `geography` places the external destinations (default: registry countries)."""
        countries, owners = destinations_by_place(self.external_peers, geography or REGISTRY)
        return {
            "id": self.id, "ip": self.ip, "addresses": sorted(self.addresses, key=address_order),
            "former_addresses": list(self.former_addresses), "mac": format_mac(self.mac), "vendor": self.vendor,
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
            "destination_countries": countries, "destination_owners": owners,
        }


REGISTRY = Geography()   # registry countries only: for documents made without the sensor's own geography
# Behaviour and names that make a device a camera (roles.py and Inventory add them).
CAMERA_EVIDENCE = frozenset({"rtsp_server", "video_sender", "camera_discovery", "camera_model", "p2p_device"})
# Weaker, after the gateway's evidence: the maker is one named in a government restriction ("named_maker") or one
# that makes cameras only ("camera_maker", covered_makers.toml / brands.toml `cameras`).
MAKER_EVIDENCE = frozenset({"named_maker", "camera_maker"})
GATEWAY_EVIDENCE = frozenset({"dns_server", "ntp_server", "router_mac"})
NVR_EVIDENCE = frozenset({"rtsp_client", "video_receiver"})
NVR_MODEL_EVIDENCE = "nvr_model"   # Device.role's first step: a recorder, whatever else its evidence says
# Device.role's third and fourth steps: without camera evidence, either settles a role other than camera. The
# anomaly detector's filter (WindowFeatures.tally) reads it to pass over the NVR and the gateway without the property.
NOT_CAMERA_EVIDENCE = NVR_EVIDENCE | GATEWAY_EVIDENCE
MAX_QUERIES_PER_DEVICE = 256
MAX_PEERS_PER_DEVICE = 4096
# A box has a handful of addresses (IPv4, IPv6 link-local, a global or two); past these the least recently seen go
# to the history, which keeps the last MAX_FORMER_ADDRESSES.
MAX_ADDRESSES_PER_DEVICE = 8
MAX_FORMER_ADDRESSES = 8
# A MAC that is the source of more established camera-side addresses than this (per family) is a router's: the
# hosts behind it carry its MAC, so their addresses are never merged by behaviour (docs/identity.md).
ROUTER_MIN_V4_ADDRESSES = 4
ROUTER_MIN_V6_ADDRESSES = 8
MAX_ROUTER_MACS = 64
MAX_ROUTER_ADDRESSES = 16
# IPv6 link-local addresses heard (neighbour discovery) before their MAC had a device, kept for when it has one
MAX_PENDING_LINK_LOCAL = 1024


# A device proves itself, and moves to the inventory's protected segment, by sending in two different seconds: a
# forged one-packet source never does, so a flood of them cannot push the site's real cameras out.
ESTABLISHED_AFTER_SECONDS = 1.0
# Inventory._address_is's marks: the built extension's, whatever compiled's switches say (None: not built)
_mark_v4 = getattr(compiled.flows_extension, "mark_v4", None)
_V4_MARKS = getattr(compiled.flows_extension, "V4_MARKS", 0)
# New keys of _by_address between two rebuilds of v4_marks, at least: an address that leaves keeps its mark, so under
# a long flood (the budget letting in 100 devices a second, each evicted later) the marks would fill and every held
# source be looked up again. 65,536 new keys set at most ~6% of the 2**20 marks; a rebuild marks the current keys
# (~10,000 at max_devices, a few ms) and comes every ~11 minutes of such a flood.
REMARK_AFTER_NEW_KEYS = 1 << 16


def address_order(ip: str) -> tuple[int, str]:
    return addresses.preference(ip), ip


class Inventory:
    """Camera-side boxes that have sent traffic, one device per box whatever its addresses (docs/identity.md, "One
    device per box"), bounded by max_devices: least recently seen newcomers go first, then least recently seen
    established devices (bounded.SegmentedLRU). Devices are keyed by their stable id; `lookup` finds one by any
    current address."""

    def __init__(self, config: Config, manuf: ManufDatabase, makers: CoveredMakers | None = None,
                 judge: MakerJudge | None = None):
        self.max_devices = config.max_devices
        self.manuf = manuf
        self.makers = makers if makers is not None else CoveredMakers.load()
        self.judge = judge if judge is not None else MakerJudge.load(self.makers)
        self.devices: SegmentedLRU[str, Device] = SegmentedLRU(config.max_devices, self._forget)
        self.dirty: set[str] = set()   # ids changed since the last save to the state store
        self.on_forget: Callable[[str], None] | None = None   # the state store drops an evicted device's row
        # The vendor service a DNS name belongs to (the pipeline hands in the indicator file's lookup): a lookup of
        # a maker's cloud name is maker evidence.
        self.service_of_name: Callable[[str], Service | None] | None = None
        self._by_address: dict[str, str] = {}   # current address -> device id, added to by _address_is only
        # every IPv4 address ever a key of _by_address, marked for _flows.known_v4 (see _address_is)
        self.v4_marks = bytearray(_V4_MARKS)
        self._new_keys_since_marked = 0
        self._by_mac: dict[int, str] = {}       # a MAC -> the device it is the own MAC of
        self.router_macs: set[int] = set()
        self._router_addresses: set[str] = set()   # routers named by DHCP (option 3), to find their MACs
        self._mac_sources: BoundedLRU[int, set[str]] = BoundedLRU(config.max_devices)
        self._pending_link_local: BoundedLRU[int, tuple[str, float]] = BoundedLRU(MAX_PENDING_LINK_LOCAL)
        self.merged = 0   # devices folded into another one (same box)
        self.admission = AdmissionBudget(config.limits.new_devices_per_second, config.limits.new_devices_burst,
                                         start=config.max_devices)
        self.on_router: Callable[[int], None] | None = None   # zero-config scoping forgets what a router taught
        self._facts_by_vendor: dict[str | None, tuple] = {}   # _first_facts' answers

    @property
    def evicted(self) -> int:
        return self.devices.evicted

    def lookup(self, ip: IPAddress | str) -> Device | None:
        """The device currently holding this address, if any (a reader: recency unchanged)."""
        dev_id = self._by_address.get(str(ip))
        return self.devices.get(dev_id) if dev_id is not None else None

    def device_of_mac(self, mac: int) -> Device | None:
        """The device whose own MAC this is, if any."""
        return self._owner(mac)

    def owns_mac(self, dev: Device) -> bool:
        """Whether dev.mac is the device's own (not the router's MAC that hosts behind it carry)."""
        return bool(dev.mac) and self._by_mac.get(dev.mac) == dev.id

    def is_gateway(self, dev: Device) -> bool:
        """dev is the router itself: its MAC is a router's and its own, claimed on the link or carried by no
        other device (on a routed segment, the first host seen behind the router has its MAC and is no router)."""
        if dev.mac not in self.router_macs or not self.owns_mac(dev):
            return False
        others = self._mac_sources.get(dev.mac) or set()
        return dev.link_claimed or others <= dev.addresses.keys() | set(dev.former_addresses)

    def _forget(self, dev_id: str, dev: Device) -> None:
        for addr in dev.addresses:
            if self._by_address.get(addr) == dev_id:
                del self._by_address[addr]
        if self._by_mac.get(dev.mac) == dev_id:
            del self._by_mac[dev.mac]
        self.dirty.discard(dev_id)
        if self.on_forget is not None:
            self.on_forget(dev_id)

    # ---- traffic: an address sending with a MAC (behaviour, not link evidence) -------------------------------
    def touch(self, ip: IPAddress | str, mac: int, ts: float, last: float | None = None) -> Device | None:
        """The device of a camera-side address that sent at ts (its first packet here) up to `last`; None when it
        would be a new device and the new-device budget holds it back (a flood of forged sources)."""
        key = str(ip)
        last = ts if last is None else last
        dev_id = self._by_address.get(key)
        dev = self.devices.use(dev_id) if dev_id is not None else None
        if dev is None:
            dev = self._new_address(key, mac, ts)
            if dev is None:
                return None
        elif mac and not dev.mac:
            self._set_mac(dev, mac)
        if ts < dev.first_seen:
            dev.first_seen = ts
        if last > dev.addresses.get(key, 0.0):
            dev.addresses[key] = last
        if last > dev.last_seen:
            dev.last_seen = last
            if last - dev.first_seen >= ESTABLISHED_AFTER_SECONDS and not self.devices.is_protected(dev.id):
                self.devices.promote(dev.id)
                self._count_source(dev)
        # _join_by_behaviour returns dev as it is before dev has proved itself (two seconds): tested here first, as
        # every new device behind a shared MAC (a flood's forged sources behind the router's) comes this way
        if (mac and mac == dev.mac and not dev.last_seen - dev.first_seen < ESTABLISHED_AFTER_SECONDS
                and self._by_mac.get(mac, dev.id) != dev.id):
            dev = self._join_by_behaviour(dev, mac)
        self.dirty.add(dev.id)
        return dev

    def holds_back(self, ip: str, mac: int, ts: float) -> bool:
        """touch(ip, mac, ts) would return None and change nothing but the held count (counted now): an address no
        device holds, of no box it could join, with the new-device budget spent. False when unsure."""
        if ip in self._by_address or self._joined_owner(ip, mac) is not None:
            return False
        return self.admission.would_hold(ts)

    def first_known(self, ips: list[str], macs: list[int], start: int, stop: int) -> int:
        """The first of ips[start:stop] (each sent with the MAC beside it) that holds_back answers False for before it
        asks the budget: an address a device holds, or one that joins its MAC's box; stop when none is (a flood's
        sources, a window at a time)."""
        by_address = self._by_address
        for at in range(start, stop):
            ip = ips[at]
            # only an IPv6 address is link evidence of its MAC (addresses.on_link_evidence): the rest cannot join
            if ip in by_address or (":" in ip and self._joined_owner(ip, macs[at]) is not None):
                return at
        return stop

    def _joined_owner(self, ip: str, mac: int) -> Device | None:
        """The device a new address joins rather than being a device of its own: its MAC's, on link evidence."""
        # the address's own test first (no lookup): an IPv4 address never joins
        return self._owner(mac) if addresses.on_link_evidence(ip, mac) else None

    def _new_address(self, key: str, mac: int, ts: float) -> Device | None:
        owner = self._joined_owner(key, mac)
        if owner is not None:
            self._attach(owner, key, ts)
            owner.link_claimed = True
            return owner
        if not self.admission.admit(ts):
            return None
        dev_id, n = key, 0
        while dev_id in self.devices:   # a device that lost this address to another box keeps its id
            n += 1
            dev_id = f"{key}#{n}"
        dev = Device(key, first_seen=ts, id=dev_id, addresses={key: ts})
        self.devices.put(dev_id, dev)
        self._address_is(key, dev_id)
        if mac:
            self._set_mac(dev, mac)
            if mac not in self._by_mac and mac not in self.router_macs:
                self._by_mac[mac] = dev_id
                self._adopt_link_local(dev, mac)
            if addresses.on_link_evidence(key, mac):
                self._claimed(dev, mac)
        return dev

    def _adopt_link_local(self, dev: Device, mac: int) -> None:
        """The link-local address the MAC announced before it had a device (note_link_local)."""
        heard = self._pending_link_local.pop(mac)
        if heard is not None and heard[0] not in self._by_address:
            self._attach(dev, heard[0], heard[1])
            dev.link_claimed = True
            dev.first_seen = min(dev.first_seen, heard[1])   # the box's first packet was that announcement

    def note_link_local(self, ip: str, mac: int, ts: float) -> Device | None:
        """An IPv6 link-local address its MAC announced (neighbour discovery): it joins the MAC's device, now or
        when it has one. A link-local address alone makes no device: every host on a trunk has one."""
        owner = self._owner(mac)
        if owner is not None or self.lookup(ip) is not None:
            return self.claim(ip, mac, ts)
        if mac:
            self._pending_link_local.put(mac, (ip, ts))
        return None

    def join_link_local(self, ip: str, mac: int, ts: float) -> Device | None:
        """An IPv6 link-local address sending in a flow: it joins the device its MAC already has, and nothing is
        kept for a MAC without one (neighbour discovery's note_link_local keeps it): a flood of forged link-local
        sources must not cost more than any forged flow (macs_with_device lets a batch of new flows skip them)."""
        return self.claim(ip, mac, ts) if self._owner(mac) is not None else None

    def macs_with_device(self) -> Iterable[int]:
        """The MACs join_link_local would join to a device."""
        return self._by_mac.keys()

    def _set_mac(self, dev: Device, mac: int) -> None:
        dev.mac = mac
        self._note_mac(dev)

    def _owner(self, mac: int) -> Device | None:
        owner_id = self._by_mac.get(mac) if mac else None
        return self.devices.get(owner_id) if owner_id is not None else None

    def _join_by_behaviour(self, dev: Device, mac: int) -> Device:
        """dev sends with the MAC of another device: the same box, once dev has proved itself (two seconds) and
        when the MAC is no router's; two IPv4 addresses only when one took over from the other (renumbering: the
        new one started after the old ones went quiet), since a router's hosts talk at the same time."""
        owner = self._owner(mac)
        if owner is None or mac in self.router_macs or dev.last_seen - dev.first_seen < ESTABLISHED_AFTER_SECONDS:
            return dev
        new_v4 = [a for a in dev.addresses if addresses.version(a) == 4]
        old_v4 = [seen for a, seen in owner.addresses.items() if addresses.version(a) == 4]
        if new_v4 and old_v4 and max(old_v4) > dev.first_seen:
            return dev
        self._merge(dev, owner)
        if new_v4:
            self._renumber(owner, new_v4[0])
        return owner

    def _count_source(self, dev: Device) -> None:
        """An established device's address counts towards its MAC's: past the bound the MAC is a router's, and a
        MAC carried by several devices is no single device's own (the gateway's evidence goes)."""
        if not dev.mac:
            return
        seen = self._mac_sources.use(dev.mac)
        if seen is None:
            seen = set()
            self._mac_sources.put(dev.mac, seen)
        if len(seen) <= ROUTER_MIN_V4_ADDRESSES + ROUTER_MIN_V6_ADDRESSES + 1:
            seen.add(dev.ip)
        v4 = sum(1 for a in seen if addresses.version(a) == 4)
        if v4 > ROUTER_MIN_V4_ADDRESSES or len(seen) - v4 > ROUTER_MIN_V6_ADDRESSES:
            self.mark_router(dev.mac)
        owner = self._owner(dev.mac)
        if owner is not None and "router_mac" in owner.evidence and not self.is_gateway(owner):
            owner.evidence.discard("router_mac")
            self.dirty.add(owner.id)

    # ---- link evidence: ARP, DHCP, NDP -----------------------------------------------------------------------
    def claim(self, ip: str, mac: int, ts: float, primary: bool = False) -> Device | None:
        """The link says `mac` holds `ip` (an ARP sender, a DHCP lease, a neighbour advertisement): the address
        joins that MAC's device, leaving a box that held it before; primary: the device's address from now on
        (a DHCP lease), its former addresses of that family going to the history."""
        if not mac or addresses.version(ip) == 0:
            return None
        holder = self.lookup(ip)
        if holder is not None and holder.mac and holder.mac != mac:
            self._detach(holder, ip)
            holder = None
        owner = self._owner(mac)
        if holder is None and owner is None:
            made = self._new_address(ip, mac, ts)
            if made is None:
                return None
            dev = made
        elif holder is None:
            assert owner is not None
            dev = owner
            self._attach(dev, ip, ts)
        elif owner is None or owner is holder:
            dev = holder
            if not dev.mac:
                self._set_mac(dev, mac)
        else:
            dev = owner
            self._merge(holder, owner)
        self._claimed(dev, mac)
        dev.first_seen = min(dev.first_seen, ts)
        dev.last_seen = max(dev.last_seen, ts)
        if ip in self._router_addresses:
            self.mark_router(mac)
        if primary:
            self._renumber(dev, ip)
        self.dirty.add(dev.id)
        return dev

    def _claimed(self, dev: Device, mac: int) -> None:
        dev.link_claimed = True
        owner = self._owner(mac)
        if owner is None or not owner.link_claimed:
            self._by_mac[mac] = dev.id
            self._adopt_link_local(dev, mac)

    def _attach(self, dev: Device, ip: str, ts: float) -> None:
        dev.addresses[ip] = max(dev.addresses.get(ip, 0.0), ts)
        self._address_is(ip, dev.id)
        if ip in dev.former_addresses:
            dev.former_addresses.remove(ip)
        while len(dev.addresses) > MAX_ADDRESSES_PER_DEVICE:
            oldest = min((a for a in dev.addresses if a != dev.ip), key=dev.addresses.__getitem__)
            self._detach(dev, oldest)

    def _address_is(self, ip: str, dev_id: str) -> None:
        """The one way an address becomes a key of _by_address: an IPv4 one is marked in v4_marks too, and
        _flows.known_v4 does not look up a held source whose mark is clear, so a key added past this would go unseen
        by the held sources' lookup. Marked whenever the extension is built, whatever the switches say at the time:
        a switch turned on later reads complete marks. A key that leaves keeps its mark (a superset does no harm)
        until the marks are rebuilt from the current keys, after REMARK_AFTER_NEW_KEYS new ones."""
        if _mark_v4 is None:
            self._by_address[ip] = dev_id
            return
        if ip not in self._by_address:
            self._new_keys_since_marked += 1
            if self._new_keys_since_marked > max(REMARK_AFTER_NEW_KEYS, 4 * len(self._by_address)):
                self._remark()
        self._by_address[ip] = dev_id
        _mark_v4(self.v4_marks, ip)

    def _remark(self) -> None:
        """v4_marks made again from the current keys alone, in place (callers hold the bytearray)."""
        mark, marks = _mark_v4, self.v4_marks
        if mark is None:
            return
        marks[:] = bytes(len(marks))
        for ip in self._by_address:
            mark(marks, ip)
        self._new_keys_since_marked = 0

    def _detach(self, dev: Device, ip: str) -> None:
        """The address leaves the device (to its history); a device left with no address keeps its name."""
        if dev.addresses.pop(ip, None) is not None and self._by_address.get(ip) == dev.id:
            del self._by_address[ip]
        dev.former_addresses = [a for a in dev.former_addresses if a != ip][-(MAX_FORMER_ADDRESSES - 1):] + [ip]
        if dev.ip == ip and dev.addresses:
            dev.ip = min(dev.addresses, key=address_order)
        self.dirty.add(dev.id)

    def _renumber(self, dev: Device, ip: str) -> None:
        """ip is the device's address now: its other addresses of that family are former ones."""
        family = addresses.version(ip)
        dev.ip = ip
        for old in [a for a in dev.addresses if a != ip and addresses.version(a) == family
                    and not addresses.is_link_local_v6(a)]:
            self._detach(dev, old)

    def _merge(self, dev: Device, into: Device) -> None:
        """Fold dev (a box's address first seen alone) into the box's device."""
        self.devices.pop(dev.id)
        self._forget(dev.id, dev)
        self.merged += 1
        for ip, seen in dev.addresses.items():
            self._attach(into, ip, seen)
        for ip in dev.former_addresses:
            if ip not in into.addresses and ip not in into.former_addresses:
                into.former_addresses = (into.former_addresses + [ip])[-MAX_FORMER_ADDRESSES:]
        into.first_seen = min(into.first_seen, dev.first_seen)
        into.last_seen = max(into.last_seen, dev.last_seen)
        into.packets_sent += dev.packets_sent
        into.bytes_sent += dev.bytes_sent
        for scope, sent in dev.egress_bytes.items():
            into.egress_bytes[scope] = into.egress_bytes.get(scope, 0) + sent
        for name, ts in dev.dns_queries.items():
            self.record_query(into, name, ts)
        for peer, (name, sent) in dev.external_peers.items():
            into.note_external_peer(peer, name, sent)
        into.evidence |= dev.evidence
        into.link_claimed |= dev.link_claimed
        if addresses.preference(dev.ip) < addresses.preference(into.ip):
            into.ip = dev.ip
        self.add_identity(into, dev.identity)
        self.judge_again(into, [i for i in dev.maker_items if i.source != "oui"])   # one box, one MAC prefix
        if dev.outbound is not None:
            for start, sent in dev.outbound.points():
                into.note_outbound(start, sent)
        if into.last_seen - into.first_seen >= ESTABLISHED_AFTER_SECONDS and not self.devices.is_protected(into.id):
            self.devices.promote(into.id)
        self.dirty.add(into.id)

    # ---- routers -----------------------------------------------------------------------------------------------
    def mark_router(self, mac: int) -> None:
        """mac is a router's (it carries Internet traffic, sends router advertisements, holds a DHCP router
        address, or sources too many addresses): only its own device is the gateway."""
        if not mac or mac in self.router_macs or len(self.router_macs) >= MAX_ROUTER_MACS:
            return
        self.router_macs.add(mac)
        if self.on_router is not None:
            self.on_router(mac)
        owner = self._owner(mac)
        if owner is not None and self.is_gateway(owner):
            owner.evidence.add("router_mac")
            self.dirty.add(owner.id)

    def note_router_address(self, ip: str) -> None:
        """A DHCP server named ip as the router: whichever MAC holds it is a router's."""
        holder = self.lookup(ip)
        if holder is not None and holder.link_claimed:
            self.mark_router(holder.mac)
        elif len(self._router_addresses) < MAX_ROUTER_ADDRESSES:
            self._router_addresses.add(ip)

    # ---- the state store ---------------------------------------------------------------------------------------
    def take_dirty(self) -> Iterator[dict]:
        """The state documents of the devices changed since the last call, each made as the caller takes it: a
        flush of a flood's new devices then never holds ten thousand documents at once (each goes once encoded,
        before the collector would move it to an older generation: a quarter of such a flush)."""
        devices = [dev for dev_id in self.dirty if (dev := self.devices.get(dev_id)) is not None]
        self.dirty.clear()
        return (dev.state() for dev in devices)

    def restore(self, docs: list) -> None:
        """Devices from the state store. A row that is not what save wrote (a damaged or hand-edited database) is
        skipped: it must never cost the rows beside it, nor the start."""
        devices = [dev for doc in docs if (dev := _device_from_state(doc)) is not None]
        for dev in sorted(devices, key=lambda d: d.last_seen)[-self.max_devices:]:
            if dev.id in self.devices:
                continue
            # The items are kept as seen; their makers and weights are re-derived from today's lists.
            kept, dev.maker_items = dev.maker_items, []
            self._note_mac(dev)
            for item in kept:
                if item.source != "oui":
                    self._rederive(dev, item)
            self._judge_identity(dev, dev.identity)
            self.devices.put(dev.id, dev)
            for ip in list(dev.addresses):
                self._address_is(ip, dev.id)
            if dev.mac and (dev.link_claimed or dev.mac not in self._by_mac):
                self._by_mac[dev.mac] = dev.id
            if dev.last_seen - dev.first_seen >= ESTABLISHED_AFTER_SECONDS:
                self.devices.promote(dev.id)

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
        if not dev.maker_items:   # a new device: its MAC's facts alone, remembered
            dev.vendor, dev.module, items, dev.verdict, evidence = self._first_facts(dev.mac)
            dev.maker_items = list(items)
            dev.evidence.update(evidence)
            return
        self._judge_mac(dev)

    def _first_facts(self, mac: int) -> tuple[str | None, str | None, tuple[MakerEvidence, ...], Verdict,
                                              tuple[str, ...]]:
        """What _judge_mac makes of a device without maker evidence that has this MAC (its vendor, module, items,
        verdict and the evidence it adds). All of it follows from the MAC's vendor alone, so it is worked out once
        per vendor: a site's cameras are thousands of MACs of a few makers, and a flood's forged sources come
        behind one router's MAC; either would otherwise ask the same questions again for each new device."""
        vendor = self.manuf.lookup(mac)
        facts = self._facts_by_vendor.get(vendor)
        if facts is not None:
            return facts
        probe = Device("", mac)
        self._judge_mac(probe)
        # judge_again's order of adding them
        evidence = tuple(label for label in ("named_maker", "camera_maker") if label in probe.evidence)
        assert len(evidence) == len(probe.evidence)   # judge_again adds no other
        facts = (probe.vendor, probe.module, tuple(probe.maker_items), probe.verdict, evidence)
        if len(self._facts_by_vendor) >= MAX_OUI_FACTS:   # forged MACs of every vendor must not buy memory
            self._facts_by_vendor.clear()
        self._facts_by_vendor[vendor] = facts
        return facts

    def _judge_mac(self, dev: Device) -> None:
        """The MAC's vendor, module and badge (the "oui" item, replacing an earlier MAC's), and the verdict again."""
        dev.vendor = self.manuf.lookup(dev.mac)
        dev.module, item = self.judge.oui_facts(dev.vendor)
        dev.maker_items = [i for i in dev.maker_items if i.source != "oui"]   # a new MAC, a new badge
        dev.verdict = self.judge.verdict(dev.maker_items)
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
                     external_peers={str(ip): [printable(n) if isinstance(n, str) else None, int(b)]
                                     for ip, n, b in doc["external_peers"][:MAX_PEERS_PER_DEVICE]},
                     identity={str(k): v for k, v in dict(doc["identity"]).items() if isinstance(v, str)},
                     evidence={e for e in doc["evidence"] if isinstance(e, str)},
                     outbound=ByteSeries.from_state(doc.get("outbound")) if doc.get("outbound") else None,
                     maker_items=_items_from_state(doc.get("maker_evidence", [])))
        # Rows written before devices had several addresses have none of these: the device is its one address.
        dev.id = str(doc.get("id") or dev.ip)[:128]
        current = [str(ipaddress.ip_address(a)) for a in doc.get("addresses", [])[:MAX_ADDRESSES_PER_DEVICE]]
        dev.addresses = dict.fromkeys(current or [dev.ip], dev.last_seen)
        dev.addresses.setdefault(dev.ip, dev.last_seen)
        dev.former_addresses = [str(ipaddress.ip_address(a))
                                for a in doc.get("former_addresses", [])[-MAX_FORMER_ADDRESSES:]]
        dev.link_claimed = doc.get("link_claimed") is True
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
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
