"""What devices say about themselves: discovery announcements and RTSP/HTTP/SSDP banners name a device's maker,
model and firmware; UPnP searches and port-mapping requests show a device trying to be reachable from outside."""

from __future__ import annotations

import re

from sensor.decode import PROTO_UDP, Decoded, payload
from sensor.dissect import IDENTITY_PORTS, ParserGuard, parse_banner
from sensor.enrich.events import EventSink, IdentityReport, UpnpRequest
from sensor.enrich.inventory import Inventory
from sensor.enrich.scope import SCOPE_CAMERA, Classifier
from sensor.flows import ip_from16

_BANNER_KEYS = frozenset({"server"})
_DISCOVERY_KEYS = frozenset({"protocol", "model"})
_CAMERA_DISCOVERY = ("onvif", "sadp", "dhip")
_IGD_TARGETS = re.compile(rb"(?i)ST:\s*urn:schemas-upnp-org:"
                          rb"(device:InternetGatewayDevice|service:WAN(IP|PPP)Connection)")
_PORT_MAPPING = re.compile(rb"<NewExternalPort>\s*(\d{1,5})\s*<")
UPNP_IGD_DISCOVERY = "upnp_igd_discovery"
UPNP_PORT_MAPPING = "upnp_port_mapping"


class IdentityReader:
    def __init__(self, classifier: Classifier, inventory: Inventory, parsers: ParserGuard, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.parsers = parsers
        self.sink = sink

    def read(self, dec: Decoded, udp: list[int], banners: list[int]) -> None:
        """udp: discovery rows (by port); banners: TCP rows opening with RTSP or HTTP."""
        for row in udp + banners:
            raw = dec.src[row].tobytes()
            if self.classifier.scope_of_raw(raw) != SCOPE_CAMERA:
                continue
            sender = ip_from16(raw)
            known = self.inventory.lookup(sender)
            is_udp = dec.proto[row] == PROTO_UDP
            # A camera repeats its banners and announcements all day: once its identity holds what this kind of
            # packet can tell, parsing it again changes nothing.
            if known is not None and (_DISCOVERY_KEYS if is_udp else _BANNER_KEYS) <= known.identity.keys():
                continue
            fields = self._parse(dec, row, is_udp)
            if not fields:
                continue
            ts = float(dec.batch.ts[row])
            dev = self.inventory.touch(sender, int(dec.src_mac[row]), ts)
            if fields.get("protocol") in _CAMERA_DISCOVERY:
                dev.evidence.add("camera_discovery")
            self.inventory.add_identity(dev, fields)
            self.sink.identity(IdentityReport(ts, dev, fields))

    def _parse(self, dec: Decoded, row: int, is_udp: bool) -> dict[str, str]:
        body = payload(dec, row, limit=16384)
        if not is_udp:
            return self.parsers.run(parse_banner, body, {})
        sport, dport = int(dec.sport[row]), int(dec.dport[row])
        parser = IDENTITY_PORTS.get(dport if dport in IDENTITY_PORTS else sport)
        return self.parsers.run(parser, body, {}) if parser else {}


class UpnpReader:
    def __init__(self, classifier: Classifier, inventory: Inventory, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.sink = sink

    def read(self, dec: Decoded, searches: list[int], posts: list[int]) -> None:
        """searches: UDP rows to port 1900; posts: TCP rows opening with POST."""
        for row, kind in [(r, UPNP_IGD_DISCOVERY) for r in searches] + [(r, UPNP_PORT_MAPPING) for r in posts]:
            sender = ip_from16(dec.src[row].tobytes())
            if not self.classifier.is_camera_side(sender):
                continue
            detail = _upnp_detail(kind, payload(dec, row, limit=8192))
            if detail is None:
                continue
            ts = float(dec.batch.ts[row])
            dev = self.inventory.touch(sender, int(dec.src_mac[row]), ts)
            peer = ip_from16(dec.dst[row].tobytes())
            self.sink.upnp(UpnpRequest(ts, dev, kind, str(peer), int(dec.dport[row]),
                                       "udp" if dec.proto[row] == PROTO_UDP else "tcp",
                                       self.classifier.address_scope(peer), int(dec.vlan[row]), detail))


def _upnp_detail(kind: str, body: bytes) -> str | None:
    """What the alert adds about a request of this kind, or None when the packet is not one."""
    if kind == UPNP_IGD_DISCOVERY:
        return "" if body.startswith(b"M-SEARCH") and _IGD_TARGETS.search(body) else None
    if b"AddPortMapping" not in body:
        return None
    port = _PORT_MAPPING.search(body)
    return f" for external port {int(port.group(1))}" if port else ""
