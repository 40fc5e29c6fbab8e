"""What devices say about themselves: discovery announcements and RTSP/HTTP/SSDP banners name a device's maker,
model and firmware; UPnP searches and port-mapping requests show a device trying to be reachable from outside."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from sensor.certificate import parse_tls_certificate
from sensor.decode import PROTO_TCP, PROTO_UDP, Decoded, payload
from sensor.dissect import IDENTITY_PORTS, MDNS_PORT, ParserGuard, parse_banner, parse_http_identity, parse_mdns
from sensor.enrich.events import EventSink, IdentityReport, UpnpRequest
from sensor.enrich.inventory import Inventory
from sensor.enrich.parse_budget import ParseBudget
from sensor.enrich.scope import SCOPE_CAMERA, Classifier
from sensor.flows import FlowTable, flow_key, ip_text

_CAMERA_DISCOVERY = ("onvif", "sadp", "dhip")
_IGD_TARGETS = re.compile(rb"(?i)ST:\s*urn:schemas-upnp-org:"
                          rb"(device:InternetGatewayDevice|service:WAN(IP|PPP)Connection)")
_PORT_MAPPING = re.compile(rb"<NewExternalPort>\s*(\d{1,5})\s*<")
UPNP_IGD_DISCOVERY = "upnp_igd_discovery"
UPNP_PORT_MAPPING = "upnp_port_mapping"


class _Kind(NamedTuple):
    """A kind of identity packet: its parser, the identity keys it can tell (once a device has them all, its
    packets of this kind are not parsed again: a camera repeats its banners and announcements all day), and
    whether the sender must be the responder of its flow (a certificate or page of the device's own service)."""

    parser: Callable[[bytes], dict[str, str]]
    tells: frozenset[str]
    own_service: bool = False


_DISCOVERY = frozenset({"protocol", "model"})
_UDP_KINDS = {port: _Kind(parser, _DISCOVERY) for port, parser in IDENTITY_PORTS.items()}
_MDNS = _Kind(parse_mdns, frozenset({"mdns_name", "mdns_service", "mdns_model"}))
_UDP_KINDS[MDNS_PORT] = _MDNS
_UDP_KINDS[1900] = _Kind(parse_banner, frozenset({"server", "location", "upnp_device_type"}))
_RTSP = _Kind(parse_banner, frozenset({"server"}))
_HTTP = _Kind(parse_http_identity, frozenset({"server", "title", "manufacturer"}))
_BODY = _Kind(parse_http_identity, frozenset({"title", "manufacturer"}), own_service=True)
_TLS = _Kind(parse_tls_certificate, frozenset({"tls_subject", "tls_issuer"}), own_service=True)


# Identity packets are few, but every one a camera-side sender sends may be parsed until its identity is complete,
# and a sender can forge many: each capture second, at most this many parses in all and per sender. A device's
# announcements and pages repeat, so one skipped now is read the next time.
MAX_PARSES_PER_SECOND = 1024
MAX_SENDER_PARSES_PER_SECOND = 32


# An mDNS responder repeats the same announcement all day, and a device's announcements are read until its mDNS
# identity is complete, which for a camera that names no model is never (127 real sites one after another: 4,145
# parses of 40 distinct payloads, ~20 µs each). parse_mdns is a function of the payload and the sender alone, so its
# answers are kept for payloads up to a frame's size (a hostile sender's distinct payloads only evict). A parse that
# raises is not kept: ParserGuard counts each.
MDNS_REMEMBERED = 512
MDNS_REMEMBERED_BYTES = 1500


def mdns_fields(data: bytes, sender: str) -> dict[str, str]:
    """parse_mdns(data, sender), a new dict each call (the caller's to keep)."""
    if len(data) > MDNS_REMEMBERED_BYTES:
        return parse_mdns(data, sender)
    return dict(_mdns_remembered(data, sender))


@lru_cache(maxsize=MDNS_REMEMBERED)
def _mdns_remembered(data: bytes, sender: str) -> dict[str, str]:
    return parse_mdns(data, sender)


def _tcp_kind(first: bytes) -> _Kind:
    """The kind of a banner row (sensor.enrich.routing picks them by their first bytes)."""
    if first[:1] == b"\x16":
        return _TLS
    if first.startswith(b"RTSP"):
        return _RTSP
    return _HTTP if first.startswith(b"HTTP") else _BODY


class IdentityReader:
    def __init__(self, classifier: Classifier, inventory: Inventory, parsers: ParserGuard, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.parsers = parsers
        self.sink = sink
        self.budget = ParseBudget(MAX_PARSES_PER_SECOND, MAX_SENDER_PARSES_PER_SECOND)

    def read(self, dec: Decoded, udp: list[int], banners: list[int], flows: FlowTable | None = None) -> None:
        """udp: discovery rows (by port); banners: TCP rows opening an RTSP/HTTP head, an XML/HTML body or a TLS
        server's handshake (sensor.enrich.routing). flows tells who answers in each TCP flow: a body or a
        certificate counts only from the flow's responder, the device's own service."""
        if not udp and not banners:
            return   # most windows of control traffic: nothing to read, and this runs once a window
        scope_of, src = self.classifier.scope_of_raw, dec.src
        for row in udp:
            # The sender first: most discovery rows come from the recorder and the site's other hosts, which are
            # not read, and their ports need not be.
            raw = src[row].tobytes()
            if scope_of(raw) != SCOPE_CAMERA:
                continue
            sport, dport = int(dec.sport[row]), int(dec.dport[row])
            kind = _UDP_KINDS.get(dport if dport in _UDP_KINDS else sport)
            if kind is not None:
                self._read_row(dec, row, kind, raw)
        rows = [(row, raw, _tcp_kind(int(dec.head[row]).to_bytes(8, "big"))) for row in banners
                if scope_of(raw := src[row].tobytes()) == SCOPE_CAMERA]
        own = [row for row, _, kind in rows if kind.own_service]
        responders = set(_responders(dec, own, flows)) if own else set()
        for row, raw, kind in rows:
            if not kind.own_service or row in responders:
                self._read_row(dec, row, kind, raw)

    def _read_row(self, dec: Decoded, row: int, kind: _Kind, raw: bytes) -> None:
        """A row whose sender (raw: its 16-byte address) is camera-side."""
        sender = ip_text(raw)
        known = self.inventory.lookup(sender)
        if known is not None and kind.tells <= known.identity.keys():
            return
        ts = float(dec.batch.ts[row])
        if not self.budget.allow(sender, ts):
            return
        nothing: dict[str, str] = {}
        body = payload(dec, row, limit=16384)
        if kind is _MDNS:   # whether the records are the sender's own needs its address
            fields = self.parsers.run(lambda data: mdns_fields(data, sender), body, nothing, label="mdns")
        else:
            fields = self.parsers.run(kind.parser, body, nothing)
        if not fields:
            return
        dev = self.inventory.touch(sender, int(dec.src_mac[row]), ts)
        if dev is None:
            return
        if fields.get("protocol") in _CAMERA_DISCOVERY:
            dev.evidence.add("camera_discovery")
        self.inventory.add_identity(dev, fields)
        self.sink.identity(IdentityReport(ts, dev, fields))


def _responders(dec: Decoded, rows: list[int], flows: FlowTable | None) -> list[int]:
    """The TCP rows whose sender is its flow's responder (none whose flow is not in the table)."""
    if flows is None:
        return []
    out = []
    for row in rows:
        key, sender_is_a = flow_key(dec, row)
        flow = flows.get(key, PROTO_TCP)
        if flow is not None and sender_is_a != flow.orig_is_a:
            out.append(row)
    return out


class UpnpReader:
    def __init__(self, classifier: Classifier, inventory: Inventory, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.sink = sink

    def read(self, dec: Decoded, searches: list[int], posts: list[int]) -> None:
        """searches: UDP rows to port 1900; posts: TCP rows opening with POST."""
        if not searches and not posts:
            return
        scope_of = self.classifier.scope_of_raw
        for row, kind in [(r, UPNP_IGD_DISCOVERY) for r in searches] + [(r, UPNP_PORT_MAPPING) for r in posts]:
            sender = dec.src[row].tobytes()
            if scope_of(sender) != SCOPE_CAMERA:
                continue
            detail = _upnp_detail(kind, payload(dec, row, limit=8192))
            if detail is None:
                continue
            ts = float(dec.batch.ts[row])
            dev = self.inventory.touch(ip_text(sender), int(dec.src_mac[row]), ts)
            if dev is None:
                continue
            peer = dec.dst[row].tobytes()
            self.sink.upnp(UpnpRequest(ts, dev, kind, ip_text(peer), int(dec.dport[row]),
                                       "udp" if dec.proto[row] == PROTO_UDP else "tcp", scope_of(peer),
                                       int(dec.vlan[row]), detail))


def _upnp_detail(kind: str, body: bytes) -> str | None:
    """What the alert adds about a request of this kind, or None when the packet is not one."""
    if kind == UPNP_IGD_DISCOVERY:
        return "" if body.startswith(b"M-SEARCH") and _IGD_TARGETS.search(body) else None
    if b"AddPortMapping" not in body:
        return None
    port = _PORT_MAPPING.search(body)
    return f" for external port {int(port.group(1))}" if port else ""
