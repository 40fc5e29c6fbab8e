"""The flow log: one JSON line per flow that leaves the flow table (idle or active timeout, FIN/RST close, eviction,
the end of the capture or the sensor's shutdown), in Zeek conn.log's field names where Zeek has the field, and
camwatch's enrichment under `camwatch.`: the contract is in the README (Flow records).

Nothing here runs unless `--flows` is given: the flow table's `on_end` and the incidents' flow links stay None.
"""

from __future__ import annotations

import struct

# hashlib's own blake2b, without hashlib loading OpenSSL's _hashlib at start-up (issue 16).
from _blake2 import blake2b
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sensor.bounded import BoundedLRU
from sensor.decode import PROTO_TCP, PROTO_UDP
from sensor.detect.services import KIND_VENDOR
from sensor.enrich.makers import format_mac
from sensor.enrich.scope import SCOPE_CAMERA, SCOPE_MULTICAST, SCOPE_OTHER, SCOPE_PUBLIC
from sensor.export.lines import LineFile, encode
from sensor.flows import Flow
from sensor.tags import TAG_PPPP, TAG_RTP, TAG_SIGNATURE_BASE, TAG_TLS

if TYPE_CHECKING:
    from sensor.pipeline import Sensor

FLOW_CONTRACT = 1
MAX_TEXT = 253          # a name from the wire longer than a DNS name is cut here
# What a service port alone says, where camwatch saw no payload that says more: the protocol camwatch itself reads
# on that port (its wire parsers), in Zeek's analyzer names where Zeek has one.
PORT_SERVICES = {
    ("udp", 53): "dns", ("tcp", 53): "dns", ("udp", 5353): "dns", ("udp", 123): "ntp", ("udp", 67): "dhcp",
    ("udp", 68): "dhcp", ("udp", 69): "tftp", ("udp", 1900): "ssdp", ("udp", 3702): "ws-discovery",
    ("udp", 37020): "sadp", ("udp", 37810): "dhip", ("tcp", 554): "rtsp", ("tcp", 80): "http",
}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_PAIRS = tuple(a + b for a in _BASE62 for b in _BASE62)
_FIRST = struct.Struct("<d")

# A site's MACs are few and every flow names two: each is formatted once (bounded: forged MACs churn it, no more).
_mac_text = lru_cache(maxsize=1 << 12)(format_mac)

# Geography.place(ip) of the geo stage: an object with `country`, `asn` and `org` (each may be None), or None.
Place = Any
PlaceLookup = Callable[[str], Place]


def flow_uid(sensor: bytes, flow: Flow) -> str:
    """Zeek-like ("C" and base62 of 96 bits, at most 18 digits), and stable: the same capture and sensor name
    (`sensor`, encoded, with a separator after it) give the same uid."""
    digest = blake2b(sensor + _FIRST.pack(flow.first) + flow.key, digest_size=12).digest()
    value, out = int.from_bytes(digest, "big"), []
    while value:   # two base62 digits a step: half the steps of a per-flow cost a flood pays 100,000 times a second
        value, pair = divmod(value, 3844)
        out.append(_BASE62_PAIRS[pair])
    return "C" + "".join(reversed(out))


def conn_state(flow: Flow) -> str:
    """Zeek's conn_state: TCP from the flags (Flow.state); UDP by which sides sent; anything else OTH, as Zeek."""
    if flow.proto == PROTO_TCP:
        return flow.state
    if flow.proto == PROTO_UDP:
        if flow.orig_pkts:
            return "SF" if flow.resp_pkts else "S0"
        return "SHR" if flow.resp_pkts else "OTH"
    return "OTH"


def _text(value: str | None) -> str | None:
    return value[:MAX_TEXT] if value else None


class FlowRecords:
    """Builds a flow's record from what the sensor knows when the flow ends. `place`: the geography lookup of an
    address (optional; its fields are null without it)."""

    def __init__(self, sensor: Sensor, place: PlaceLookup | None = None):
        self.sensor_name = sensor.config.sensor_name
        self._uid_prefix = sensor.config.sensor_name.encode() + b"\0"
        self._allow = bool(sensor.config.allow)
        self.classifier = sensor.classifier
        self.names = sensor.names
        self.inventory = sensor.inventory
        self.incidents = sensor.detection.incidents
        self.services = sensor.detection.services
        self.place = place

    def record(self, flow: Flow, reason: str) -> dict:
        proto = flow.proto_name
        portless = proto == "icmp"
        name = _text(flow.name or self.names.lookup(flow.resp_text, flow.last))
        orig_scope, resp_scope = self._scopes(flow, name)
        rec: dict[str, Any] = {
            "ts": round(flow.first, 6), "uid": flow_uid(self._uid_prefix, flow),
            "id.orig_h": flow.orig_text, "id.orig_p": None if portless else flow.orig_port,
            "id.resp_h": flow.resp_text, "id.resp_p": None if portless else flow.resp_port,
            "proto": proto, "service": self._service(flow, proto, name),
            "duration": round(flow.last - flow.first, 6),
            "orig_bytes": flow.orig_payload, "resp_bytes": flow.resp_payload, "conn_state": conn_state(flow),
            "orig_pkts": flow.orig_pkts, "resp_pkts": flow.resp_pkts, "ip_proto": flow.proto,
            "vlan": flow.vlan or None,
            "orig_l2_addr": _mac_text(flow.orig_mac), "resp_l2_addr": _mac_text(flow.resp_mac),
            "camwatch.contract": FLOW_CONTRACT, "camwatch.sensor": self.sensor_name,
            "camwatch.end": "closed" if flow.closed else reason,
            "camwatch.orig_wire_bytes": flow.orig_bytes, "camwatch.resp_wire_bytes": flow.resp_bytes,
            "camwatch.orig_scope": orig_scope, "camwatch.resp_scope": resp_scope,
        }
        self._device(rec, flow, orig_scope, resp_scope)
        rec["camwatch.name"] = name
        self._place(rec, flow, orig_scope, resp_scope)
        rec["camwatch.incident"] = self.incidents.incident_of(flow)
        return rec

    def _scopes(self, flow: Flow, name: str | None) -> tuple[str, str]:
        """Each end's scope; the end a camera-side device talks to as the detectors see it (an allow rule makes it
        `allowed`), with the flow's service port and the name of that end."""
        c = self.classifier
        orig, resp = c.scope_of_raw(flow.orig_raw), c.scope_of_raw(flow.resp_raw)
        if not self._allow:
            return orig, resp   # without allow rules an address's scope is the whole answer
        judged = (SCOPE_CAMERA, SCOPE_MULTICAST, SCOPE_OTHER)
        port, proto = flow.resp_port or None, flow.proto_name
        if orig == SCOPE_CAMERA and resp not in judged:
            resp = c.destination_scope(flow.resp_ip, name, port, proto)[0]
        elif resp == SCOPE_CAMERA and orig not in judged:
            orig = c.destination_scope(flow.orig_ip, self.names.lookup(flow.orig_text, flow.last), port, proto)[0]
        return orig, resp

    def _service(self, flow: Flow, proto: str, name: str | None) -> str | None:
        """Zeek's comma-separated `service`: the protocols the payload showed, else the one the service port
        implies, then the vendor service of the indicator file (by payload signature, name, or an address seen
        before as that service's)."""
        if proto == "icmp":
            return None   # as Zeek: no service over ICMP, whoever answers it (camwatch.name and the incident say who)
        tags = flow.orig_tags | flow.resp_tags
        found = []
        if tags & TAG_TLS:
            found.append("ssl")
        elif flow.name and flow.proto == PROTO_TCP:
            found.append("http")   # a name without TLS records came from an HTTP request's Host
        if tags & TAG_RTP:
            found.append("rtp")
        if tags & TAG_PPPP:
            found.append("pppp")
        if not found and (by_port := PORT_SERVICES.get((proto, flow.resp_port))):
            found.append(by_port)
        vendor = None
        if tags >> TAG_SIGNATURE_BASE:   # some prefix signature matched: which service's, on this port
            port = flow.resp_port or None
            vendor = (self.services.indicators.by_signature(flow.orig_tags, proto, port)
                      or self.services.indicators.by_signature(flow.resp_tags, proto, port))
        if vendor is not None:
            found.append(vendor[0].id)
        else:
            service = self.services.of_destination(flow.resp_text, name)
            if service.kind == KIND_VENDOR:
                found.append(service.id)
        return ",".join(found) or None

    def _device(self, rec: dict, flow: Flow, orig_scope: str, resp_scope: str) -> None:
        """The camera-side end's device: the originator when both are."""
        ip = flow.orig_text if orig_scope == SCOPE_CAMERA else flow.resp_text if resp_scope == SCOPE_CAMERA else None
        dev = self.inventory.lookup(ip) if ip is not None else None
        rec["camwatch.device"] = ip
        rec["camwatch.device_vendor"] = _text(dev.vendor) if dev else None
        rec["camwatch.device_maker"] = dev.maker_label if dev else None
        rec["camwatch.covered"] = dev.covered if dev else None
        rec["camwatch.covered_basis"] = dev.covered_basis if dev else None
        rec["camwatch.device_role"] = dev.role if dev else None

    def _place(self, rec: dict, flow: Flow, orig_scope: str, resp_scope: str) -> None:
        """Country and network owner of the flow's public end: the responder when both are public."""
        where = None
        if self.place is not None:
            public = (flow.resp_text if resp_scope == SCOPE_PUBLIC else flow.orig_text if orig_scope == SCOPE_PUBLIC
                      else None)
            where = self.place(public) if public is not None else None
        rec["camwatch.country"] = getattr(where, "country", None)
        rec["camwatch.asn"] = getattr(where, "asn", None)
        rec["camwatch.org"] = _text(getattr(where, "org", None))


class FlowLog:
    """The flow table's `on_end`: each ended flow's record, buffered (sensor.export.lines) so that a flood of short
    flows costs one write a second, not one per flow."""

    def __init__(self, target: str, *, append: bool = False):
        self.file = LineFile(target, "flow records", append=append, buffered=True)
        self.records: FlowRecords | None = None

    def attach(self, sensor: Sensor, place: PlaceLookup | None = None) -> None:
        """Start writing the sensor's ended flows; from here on the incidents remember which flow is whose."""
        self.records = FlowRecords(sensor, place)
        sensor.detection.incidents.flow_links = BoundedLRU(sensor.config.flows.max_flows)
        sensor.flows.on_end = self.write

    def write(self, flow: Flow, reason: str) -> None:
        assert self.records is not None
        self.file.write(encode(self.records.record(flow, reason)))

    def close(self) -> None:
        self.file.close()
