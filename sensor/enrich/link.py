"""What the link says about who holds which address, and where the camera side is (docs/identity.md).

DHCP leases, ARP senders and IPv6 neighbour discovery are link evidence: an address claimed there joins its MAC's
device at once (Inventory.claim), the lease's subnet and the neighbours' networks are camera-side (Classifier.learn,
zero-config only), router advertisements and DHCP's router option name the routers. Flows add the networks of
addresses seen with their own MACs, but only once seen in two different seconds and only until that MAC proves to be
a router's (the hosts behind a router carry its MAC).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from functools import lru_cache
from typing import cast

import numpy as np

from sensor import compiled
from sensor.bounded import BoundedLRU, seen_again
from sensor.decode import NET_ARP, Decoded
from sensor.dissect import DHCPV6_PORTS, Dhcp6Message, ParserGuard, parse_arp, parse_dhcp, parse_dhcpv6, parse_ndp
from sensor.enrich import addresses
from sensor.enrich.events import EventSink, IdentityReport
from sensor.enrich.inventory import ESTABLISHED_AFTER_SECONDS, Device, Inventory
from sensor.enrich.scope import (
    LEARNED_HOST_PREFIX,
    SCOPE_CAMERA,
    SCOPE_LINK_LOCAL,
    SCOPE_PRIVATE,
    SCOPE_PUBLIC,
    Classifier,
)
from sensor.flows import FlowUpdate, ip_text

# (network or address, MAC) pairs seen once, waiting for a second sighting a second or more later
MAX_CANDIDATES = 4096
# DHCP names a client (host name, vendor class) before it has an address: kept per MAC until it has a device
MAX_PENDING_NAMES = 1024
_ETHERTYPE_OFFSET = {1: 12, 113: 14, 276: 0}   # Ethernet, Linux cooked v1 and v2: where the ethertype is
_LINK_HEADER = {1: 14, 113: 16, 276: 20}
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MAX_VLAN_TAGS = 8
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


class LinkReader:
    def __init__(self, classifier: Classifier, inventory: Inventory, parsers: ParserGuard, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.parsers = parsers
        self.sink = sink
        # keyed by bytes (candidate_key): a flood's sightings are made in numpy and go into a compiled Lru in C
        self._candidates: BoundedLRU[bytes, float] = BoundedLRU(MAX_CANDIDATES, entries=_candidate_table())
        self._pending_names: BoundedLRU[int, dict[str, str]] = BoundedLRU(MAX_PENDING_NAMES)
        inventory.on_router = classifier.forget_taught_by

    # ---- the state store ---------------------------------------------------------------------------------------
    def learned_state(self) -> dict[str, list]:
        """What the link taught that a restart would otherwise have to learn again: the routers' MACs and the
        learnt camera-side networks (each with the MAC whose traffic alone taught it, 0 for link evidence)."""
        return {"routers": sorted(self.inventory.router_macs),
                "networks": sorted([str(net), by] for net, by in self.classifier.learned.items())}

    def restore_learned(self, doc: object) -> None:
        """learned_state() read back through the same rules as the wire's evidence (bounds, private space only,
        no /0): a damaged or edited state database teaches no more than the link could."""
        if not isinstance(doc, dict):
            return
        routers, networks = doc.get("routers"), doc.get("networks")
        for mac in routers if isinstance(routers, list) else ():
            if isinstance(mac, int) and not isinstance(mac, bool) and 0 < mac < 1 << 48:
                self.inventory.mark_router(mac)
        for entry in networks if isinstance(networks, list) else ():
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and 0 <= entry[1] < 1 << 48):
                continue
            try:
                network = ipaddress.ip_network(entry[0])
            except ValueError:
                continue
            if entry[1] not in self.inventory.router_macs:
                self.classifier.learn(network, entry[1])

    # ---- rows of a window ------------------------------------------------------------------------------------
    def read(self, dec: Decoded, dhcp: list[int], link: list[int]) -> None:
        """In packet order: a lease and the neighbour messages around it say who came first."""
        # a set, not the list: a window flooded with DHCP and ARP asked the list once per row, quadratic in the flood
        is_dhcp = set(dhcp)
        for row in sorted(dhcp + link):
            if row in is_dhcp and int(dec.dport[row]) in DHCPV6_PORTS:
                msg6 = self.parsers.run(parse_dhcpv6, _payload(dec, row, 0), None)
                if msg6 is not None:
                    self._dhcp6(float(dec.batch.ts[row]), int(dec.src_mac[row]), msg6)
            elif row in is_dhcp:
                msg = self.parsers.run(parse_dhcp, _payload(dec, row, 0), None)
                if msg is not None:
                    self._dhcp(dec, row, msg)
            elif dec.network[row] == NET_ARP:
                arp = self.parsers.run(parse_arp, _arp_bytes(dec, row), None)
                if arp is not None and arp.sender_ip is not None:
                    self._arp(float(dec.batch.ts[row]), arp.sender_ip, arp.sender_mac)
            else:
                ndp = self.parsers.run(parse_ndp, _payload(dec, row, 8), None)
                if ndp is not None:
                    self._ndp(dec, row, ndp)

    def _confirmed(self, key: bytes, ts: float) -> bool:
        """Seen before, a second or more ago: what a forged one-packet source never shows."""
        first = self._candidates.use(key)
        if first is None:
            self._candidates.put(key, ts)
            return False
        return seen_again(first, ts, ESTABLISHED_AFTER_SECONDS)   # a second or more later (or time ran back)

    def _claim(self, ip: str, mac: int, ts: float, primary: bool = False, move: bool = False) -> Device | None:
        """A link claim of a camera-side address, or of an IPv6 link-local one (for a MAC with a device)."""
        scope = self.classifier.scope_of_text(ip)
        if scope == SCOPE_LINK_LOCAL and addresses.is_link_local_v6(ip):
            return self.inventory.note_link_local(ip, mac, ts)
        if scope != SCOPE_CAMERA:
            return None
        holder = self.inventory.lookup(ip)
        if holder is not None and holder.mac and holder.mac != mac and not move \
                and not self._confirmed(candidate_key(b"m", mac, ip.encode("utf-8", "surrogatepass")), ts):
            return holder   # one packet does not take an address from the box that holds it
        dev = self.inventory.claim(ip, mac, ts, primary)
        names = self._pending_names.pop(mac) if dev is not None else None
        if dev is not None and names:
            self._identity(dev, names, ts)
        return dev

    def _learn(self, ip: str, prefix: int, taught_by: int = 0) -> None:
        self.classifier.learn_range(*_address_value(ip), prefix, taught_by)

    def _identity(self, dev: Device, fields: dict[str, str], ts: float) -> None:
        self.inventory.add_identity(dev, fields)
        self.sink.identity(IdentityReport(ts, dev, fields))

    # ---- DHCP, ARP, neighbour discovery --------------------------------------------------------------------
    def _dhcp(self, dec: Decoded, row: int, msg) -> None:
        ts = float(dec.batch.ts[row])
        frame_mac = int(dec.src_mac[row])
        if msg.op == 2:   # the server: a lease for chaddr, its own address, the routers
            for router in msg.routers:
                self.inventory.note_router_address(router)
            server = ip_text(dec.src[row].tobytes())
            if msg.server_id is not None and msg.server_id in msg.routers and frame_mac:
                self.inventory.mark_router(frame_mac)
            if msg.message_type == "ack" and msg.yiaddr and msg.chaddr:
                prefix = msg.prefix_length
                self._learn(msg.yiaddr, prefix if prefix is not None else LEARNED_HOST_PREFIX[4])
                self._claim(msg.yiaddr, msg.chaddr, ts, primary=True, move=True)
            if server != "0.0.0.0" and frame_mac:
                self._claim(server, frame_mac, ts)
            return
        mac = msg.chaddr or frame_mac
        names = {k: v for k, v in (("dhcp_hostname", msg.host_name), ("dhcp_vendor_class", msg.vendor_class)) if v}
        address = msg.requested if msg.message_type == "request" and msg.requested else msg.ciaddr
        dev = None
        if address and mac:
            self._learn(address, LEARNED_HOST_PREFIX[4])
            dev = self._claim(address, mac, ts, primary=msg.message_type == "request")
        dev = dev or self.inventory.device_of_mac(mac)
        if names and dev is not None:
            self._identity(dev, names, ts)
        elif names and mac:
            self._pending_names.put(mac, names)

    def _dhcp6(self, ts: float, frame_mac: int, msg: Dhcp6Message) -> None:
        """A server's reply gives the client (named by its DUID's MAC) its addresses, as a DHCPv4 ACK does: they
        join its box at once, whatever their interface identifiers. A client renewing or confirming holds its
        addresses; its FQDN and vendor class name it."""
        if msg.kind == "reply":
            mac, held = msg.client_mac, [a for a, valid in msg.addresses if valid]
        elif msg.kind in ("renew", "rebind", "confirm", "solicit", "request", "information-request"):
            mac = frame_mac or msg.client_mac
            held = [a for a, _ in msg.addresses] if msg.kind in ("renew", "rebind", "confirm") else []
        else:
            return   # advertise (an offer), release and decline (given up), reconfigure
        if not mac:
            return
        dev = None
        for address in held:
            self._learn(address, LEARNED_HOST_PREFIX[6])
            dev = self._claim(address, mac, ts, move=msg.kind == "reply") or dev
        names = {k: v for k, v in (("dhcp_hostname", msg.host_name), ("dhcp_vendor_class", msg.vendor_class)) if v}
        if msg.kind == "reply" or not names:
            return   # a server's reply may carry its own view of the name: the client's word is the identity
        dev = dev or self.inventory.device_of_mac(mac)
        if dev is not None:
            self._identity(dev, names, ts)
        else:
            self._pending_names.put(mac, names)

    def _arp(self, ts: float, ip: str, mac: int) -> None:
        if not mac:
            return
        if self._confirmed(candidate_key(b"a", mac, ip.encode("utf-8", "surrogatepass")), ts):
            self._learn(ip, LEARNED_HOST_PREFIX[4])
        self._claim(ip, mac, ts)

    def _ndp(self, dec: Decoded, row: int, ndp) -> None:
        ts = float(dec.batch.ts[row])
        mac = int(dec.src_mac[row])
        source = ip_text(dec.src[row].tobytes())
        if ndp.kind == "router_advertisement":
            self.inventory.mark_router(ndp.link_address or mac)
            for prefix, length in ndp.prefixes:
                self._learn(prefix, max(length, LEARNED_HOST_PREFIX[6]))
        held = ndp.target if ndp.kind == "neighbor_advertisement" else source
        if ndp.kind == "neighbor_solicitation" and source == "::":
            held = ndp.target   # duplicate address detection: the target is the sender's own new address
        holder = ndp.link_address if ndp.kind == "neighbor_advertisement" and ndp.link_address else mac
        if held and held != "::" and holder:
            if not addresses.is_link_local_v6(held):
                self._learn(held, LEARNED_HOST_PREFIX[6])
            self._claim(held, holder, ts)
        if source != held and mac and addresses.is_link_local_v6(source):
            self._claim(source, mac, ts)   # the sender's own link-local address, beside the one it announces

    # ---- flows: addresses seen with their own MACs ------------------------------------------------------------
    def note_flow(self, upd: FlowUpdate) -> None:
        """A flow's first update (zero-config): each side that sent, with its MAC, may show a camera-side network."""
        flow = upd.flow
        if upd.orig_pkts and flow.orig_mac:
            self._note_source(flow.orig_raw, flow.orig_mac, upd.ts)
        if upd.resp_pkts and flow.resp_mac:
            self._note_source(flow.resp_raw, flow.resp_mac, upd.ts)

    def _note_source(self, raw: bytes, mac: int, ts: float) -> None:
        """Bytes compared before any text is built: every new flow of a flood passes here."""
        if mac in self.inventory.router_macs:
            return
        scope = self.classifier.scope_of_raw(raw)
        if raw[:12] == _V4_MAPPED:
            if scope == SCOPE_PRIVATE or (scope == SCOPE_CAMERA and not self.classifier.learned_v4):
                if self._confirmed(candidate_key(b"s", mac, raw[12:15]), ts):   # its /24, with its MAC, a second later
                    self.classifier.learn_range(4, int.from_bytes(raw[12:], "big"), LEARNED_HOST_PREFIX[4], mac)
        elif scope == SCOPE_PUBLIC and int.from_bytes(raw[8:], "big") == addresses.eui64(mac):
            # the MAC written into the address (EUI-64): link evidence, Internet peers never carry it
            self.classifier.learn_range(6, int.from_bytes(raw, "big"), LEARNED_HOST_PREFIX[6])

    def note_sources_v4(self, keys: np.ndarray, times: np.ndarray, values: np.ndarray) -> int:
        """_note_source of IPv4 sources in turn, each in a scope that is noted (private, or camera-side while no
        IPv4 network is learnt) and with a MAC no router's, as the caller found (sensor.enrich.new_flows): keys[i]
        is the sighting's candidate_key (a row of 12 bytes), times[i] its time, values[i] the address. Stops at the
        first sighting that confirms, its /24 learnt (scopes may have changed): returns its index, else len(keys)."""
        at = self._candidates.sight_rows(keys, times, ESTABLISHED_AFTER_SECONDS)
        if at < len(keys):
            mac = int.from_bytes(keys[at, 1:9].tobytes(), "big", signed=True)
            self.classifier.learn_range(4, int(values[at]), LEARNED_HOST_PREFIX[4], mac)
        return at


def _candidate_table() -> OrderedDict[bytes, float]:
    """The sightings' table: the compiled Lru (sensor/_flows.c) when built and its switch is on, else an OrderedDict,
    its reference (tests/unit/test_enrich_new_flows.py holds the two to each other)."""
    ext = compiled.flows_extension
    if ext is not None and compiled.sightings and hasattr(ext, "sight"):   # an extension built before sight: no
        return cast("OrderedDict[bytes, float]", ext.Lru())
    return OrderedDict()


def candidate_key(kind: bytes, mac: int, what: bytes) -> bytes:
    """A sighting's key in LinkReader._candidates: its kind (b"s" a source's /24, b"a" an ARP sender, b"m" an address
    moving to another MAC), the MAC as 8 big-endian bytes (int64, as the flow columns hold it), then the /24's three
    bytes or the address's text: one key per (kind, MAC, what), as the tuples were."""
    return kind + mac.to_bytes(8, "big", signed=True) + what


@lru_cache(maxsize=1 << 12)
def _address_value(text: str) -> tuple[int, int]:
    """(version, integer) of an address the link's parsers wrote: the same few come back in every lease and ARP."""
    address = ipaddress.ip_address(text)
    return address.version, int(address)


def _payload(dec: Decoded, row: int, before: int) -> bytes:
    """The transport payload of a row, starting `before` bytes ahead of it (ICMPv6: the message from its type)."""
    b = dec.batch
    start = int(dec.payload_off[row]) - before
    end = min(start + before + int(dec.payload_len[row]), int(b.offsets[row] + b.caplen[row]))
    return bytes(b.data[start:end]) if end > start >= int(b.offsets[row]) else b""


def _arp_bytes(dec: Decoded, row: int) -> bytes:
    """The ARP packet of an ARP row: after the link header and up to MAX_VLAN_TAGS tags (the decoder's walk)."""
    b = dec.batch
    linktype = int(b.linktype[row])
    if linktype not in _LINK_HEADER:
        return b""
    start, end = int(b.offsets[row]), int(b.offsets[row] + b.caplen[row])
    frame = bytes(b.data[start:min(end, start + 128)])
    pos, l3 = _ETHERTYPE_OFFSET[linktype], _LINK_HEADER[linktype]
    for _ in range(MAX_VLAN_TAGS):
        if linktype != 1 or int.from_bytes(frame[pos:pos + 2], "big") not in _VLAN_TPIDS:
            break
        pos, l3 = pos + 4, l3 + 4
    return frame[l3:l3 + 28]
