"""Application-layer dissection for the few low-volume packets that name things: DNS, TLS ClientHello, HTTP.

These run inline on a handful of packets per batch, so they are small hand-written parsers bounded against
hostile input (compression loops, lengths past the end). The tests cross-check them against Wireshark's
dissectors through pyshark on the bundled captures.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

DNS_A, DNS_CNAME, DNS_AAAA = 1, 5, 28
MAX_DNS_RECORDS = 64
HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")


@dataclass
class DnsMessage:
    is_response: bool
    rcode: int
    qname: str | None
    qtype: int | None
    answers: list[tuple[str, int, int, str]] = field(default_factory=list)  # (owner, type, ttl, value)

    def addresses(self) -> list[tuple[str, int]]:
        """(address, ttl) of every A/AAAA answer reachable from the query name through CNAMEs."""
        names = {self.qname} if self.qname else set()
        for owner, rtype, _ttl, value in self.answers:
            if rtype == DNS_CNAME and owner in names:
                names.add(value)
        return [(value, ttl) for owner, rtype, ttl, value in self.answers
                if rtype in (DNS_A, DNS_AAAA) and owner in names]


def _dns_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode a possibly compressed name at pos; returns (name, position after the name in the record)."""
    labels: list[str] = []
    end = None
    jumps = 0
    total = 0
    while True:
        if pos >= len(msg):
            raise ValueError("name past end")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise ValueError("truncated pointer")
            if end is None:
                end = pos + 2
            jumps += 1
            if jumps > 16:
                raise ValueError("compression loop")
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise ValueError("bad label type")
        pos += 1
        if length == 0:
            break
        label = msg[pos:pos + length]
        if len(label) < length:
            raise ValueError("label past end")
        total += length + 1
        if total > 255:
            raise ValueError("name too long")
        labels.append(label.decode("ascii", "replace").lower())
        pos += length
    return ".".join(labels), (end if end is not None else pos)


def parse_dns(msg: bytes) -> DnsMessage | None:
    """Parse a DNS message (UDP payload); None when it is not one."""
    if len(msg) < 12:
        return None
    _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    if qd > 4 or an > 256:
        return None
    try:
        pos = 12
        qname = qtype = None
        for i in range(qd):
            name, pos = _dns_name(msg, pos)
            if pos + 4 > len(msg):
                return None
            if i == 0:
                qname, qtype = name, struct.unpack_from("!H", msg, pos)[0]
            pos += 4
        out = DnsMessage(bool(flags & 0x8000), flags & 0xF, qname, qtype)
        for _ in range(min(an, MAX_DNS_RECORDS)):
            owner, pos = _dns_name(msg, pos)
            if pos + 10 > len(msg):
                break
            rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
            pos += 10
            rdata = msg[pos:pos + rdlen]
            if len(rdata) < rdlen:
                break
            if rtype == DNS_A and rdlen == 4:
                out.answers.append((owner, rtype, ttl, ".".join(str(b) for b in rdata)))
            elif rtype == DNS_AAAA and rdlen == 16:
                out.answers.append((owner, rtype, ttl, str(ipaddress.IPv6Address(rdata))))
            elif rtype == DNS_CNAME:
                target, _ = _dns_name(msg, pos)
                out.answers.append((owner, rtype, ttl, target))
            pos += rdlen
        return out
    except ValueError:
        return None


def parse_tls_sni(payload: bytes) -> str | None:
    """Server name from a TLS ClientHello in the first segment; None when absent or not parseable."""
    try:
        if len(payload) < 43 or payload[0] != 0x16 or payload[5] != 0x01:
            return None
        pos = 9 + 2 + 32  # record header, handshake header, version, random
        sid_len = payload[pos]
        pos += 1 + sid_len
        cs_len = struct.unpack_from("!H", payload, pos)[0]
        pos += 2 + cs_len
        comp_len = payload[pos]
        pos += 1 + comp_len
        ext_total = struct.unpack_from("!H", payload, pos)[0]
        pos += 2
        end = min(len(payload), pos + ext_total)
        while pos + 4 <= end:
            etype, elen = struct.unpack_from("!HH", payload, pos)
            pos += 4
            if etype == 0:
                # server_name list: list length, then (type, length, name)
                name_type = payload[pos + 2]
                name_len = struct.unpack_from("!H", payload, pos + 3)[0]
                if name_type == 0:
                    name = payload[pos + 5:pos + 5 + name_len]
                    if len(name) == name_len:
                        return name.decode("ascii", "replace").lower()
                return None
            pos += elen
    except (IndexError, struct.error):
        return None
    return None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The parts of an HTTP request's head that camwatch uses. `method` and `target` are empty when the request
    line is not `METHOD target [version]` (the Host header may still be there)."""

    method: str
    target: bytes        # the request-target as sent, at most the 4 KiB of head read
    host: str | None


def parse_http_request(payload: bytes) -> HttpRequest | None:
    """Method, request-target and Host of an HTTP request; None when the payload does not open one."""
    if payload[:4] not in HTTP_METHODS:
        return None
    head = payload[:4096]
    # Servers take a bare LF and runs of spaces or tabs in the request line; so must whoever judges the path.
    parts = head.split(b"\n", 1)[0].split()
    method = target = b""
    if 2 <= len(parts) <= 3 and parts[0].isalpha() and parts[0].isupper() and len(parts[0]) <= 16:
        method, target = parts[0], parts[1]
    return HttpRequest(method.decode("ascii"), target, _http_host(head))


def parse_http_host(payload: bytes) -> str | None:
    request = parse_http_request(payload)
    return request.host if request is not None else None


def _http_host(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        if not line:
            break
        if line[:5].lower() == b"host:":
            host = line[5:].strip().decode("ascii", "replace").lower()
            if host.startswith("["):
                return host[1:host.find("]")] if "]" in host else None
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return None


# ---- file transfers: TFTP requests ----------------------------------------------------------------------------
TFTP_PORT = 69
TFTP_READ, TFTP_WRITE = 1, 2
TFTP_MODES = frozenset({b"netascii", b"octet", b"mail"})   # RFC 1350; servers refuse any other


@dataclass(frozen=True, slots=True)
class TftpRequest:
    opcode: int          # TFTP_READ or TFTP_WRITE
    filename: bytes      # as sent (any length, any bytes but NUL)
    mode: str


def parse_tftp_request(payload: bytes) -> TftpRequest | None:
    """A TFTP read or write request (RFC 1350: opcode, filename NUL, mode NUL, then RFC 2347 options, ignored);
    None for anything else, data and acknowledgements included."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] not in (TFTP_READ, TFTP_WRITE):
        return None
    name_end = payload.find(b"\0", 2)
    if name_end <= 2:
        return None
    mode_end = payload.find(b"\0", name_end + 1)
    mode = payload[name_end + 1:mode_end].lower()
    if mode_end < 0 or mode not in TFTP_MODES:
        return None
    return TftpRequest(payload[1], payload[2:name_end], mode.decode("ascii"))


def wire_text(raw: bytes, limit: int = 160) -> str:
    """Attacker-chosen bytes (a file name, a path) as one safe line to quote in an alert: valid UTF-8 as itself,
    every other byte as \\xNN, control and other non-printable characters (line breaks, bidi overrides) escaped,
    backslash and double quote escaped, at most `limit` characters and an ellipsis when cut."""
    out: list[str] = []
    size = 0
    for ch in raw[:limit * 4].decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:             # a byte that is not UTF-8
            piece = f"\\x{code - 0xDC00:02x}"
        elif ch in "\\\"":
            piece = "\\" + ch
        elif ch.isprintable():
            piece = ch
        else:
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        if size + len(piece) > limit:
            return "".join(out) + "\u2026"
        out.append(piece)
        size += len(piece)
    return "".join(out) + ("\u2026" if len(raw) > limit * 4 else "")


# ---- device identity: discovery protocols and banners ------------------------------------------------------
MAX_IDENTITY_VALUE = 128
_XML_TAG = re.compile(rb"<(?:[\w-]+:)?(\w+)>([^<]{1,256})</(?:[\w-]+:)?\1>")


def _clean(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "".join(c for c in value.strip() if c.isprintable())[:MAX_IDENTITY_VALUE]


def _headers(payload: bytes) -> dict[str, str]:
    out = {}
    for line in payload[:4096].split(b"\r\n")[1:]:
        if not line:
            break
        key, sep, val = line.partition(b":")
        if sep:
            out[key.strip().lower().decode("ascii", "replace")] = _clean(val)
    return out


def parse_banner(payload: bytes) -> dict[str, str]:
    """Server / User-Agent of an RTSP or HTTP message, and SSDP's LOCATION."""
    if not payload[:8].startswith((b"RTSP/1.0", b"HTTP/1.", b"NOTIFY *", b"M-SEARCH")):
        return {}
    h = _headers(payload)
    out = {}
    if h.get("server"):
        out["server"] = h["server"]
    if h.get("location"):
        out["location"] = h["location"]
    return out


def parse_ws_discovery(payload: bytes) -> dict[str, str]:
    """ONVIF WS-Discovery ProbeMatch/Hello: hardware model and name from the onvif:// scopes."""
    if b"ProbeMatch" not in payload and b"Hello" not in payload:
        return {}
    out = {}
    scopes = re.search(rb"<(?:[\w-]+:)?Scopes[^>]*>([^<]*)<", payload)
    if scopes:
        for scope in scopes.group(1).split():
            for key in (b"hardware", b"name"):
                prefix = b"onvif://www.onvif.org/" + key + b"/"
                if scope.startswith(prefix):
                    out["model" if key == b"hardware" else "name"] = _clean(
                        scope[len(prefix):].replace(b"%20", b" "))
    if out:
        out["protocol"] = "onvif"
    return out


def parse_sadp(payload: bytes) -> dict[str, str]:
    """Hikvision SADP (UDP 37020) XML announcement: model, serial and firmware."""
    if b"<ProbeMatch" not in payload and b"<Probe" not in payload:
        return {}
    fields = {k.decode(): _clean(v) for k, v in _XML_TAG.findall(payload[:8192])}
    out = {"protocol": "sadp"}
    for ours, theirs in (("model", "DeviceDescription"), ("serial", "DeviceSN"), ("firmware", "SoftwareVersion"),
                         ("device_type", "DeviceType")):
        if fields.get(theirs):
            out[ours] = fields[theirs]
    return out if len(out) > 1 else {}


# DHIP documents are a few flat objects; more brackets than this is not a discovery reply, and refusing it before
# json.loads keeps the decoder's recursion far from the interpreter's limit.
MAX_JSON_BRACKETS = 256


def parse_dhip(payload: bytes) -> dict[str, str]:
    """Dahua DHIP discovery (UDP 37810): a binary header, then JSON with deviceInfo."""
    start = payload.find(b"{")
    if start < 0 or b"DHIP" not in payload[:start + 1] and b"deviceInfo" not in payload:
        return {}
    body = payload[start:]
    if body.count(b"{") + body.count(b"[") > MAX_JSON_BRACKETS:
        return {}
    try:
        doc = json.loads(body.rstrip(b"\0").decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return {}
    params = doc.get("params") if isinstance(doc, dict) else None
    info = params.get("deviceInfo") if isinstance(params, dict) else None
    if not isinstance(info, dict):
        return {}
    out = {"protocol": "dhip"}
    for ours, theirs in (("model", "DeviceType"), ("serial", "SerialNo"), ("firmware", "Version"),
                         ("vendor", "Vendor")):
        if isinstance(info.get(theirs), str) and info[theirs]:
            out[ours] = _clean(info[theirs])
    return out if len(out) > 1 else {}


IDENTITY_PORTS = {1900: parse_banner, 3702: parse_ws_discovery, 37020: parse_sadp, 37810: parse_dhip}
# UDP ports whose rows the router picks by the same port table as IDENTITY_PORTS, for parsers that are not about
# identity: they are split off before the identity reader (sensor.enrich.routing).
REQUEST_PORTS = {TFTP_PORT: parse_tftp_request}
# Every parser of wire bytes the pipeline runs: the label values of camwatch_dissect_errors_total. http_host is the
# HTTP request parser (request line and Host), under the label it has always had.
WIRE_PARSERS = ("dns", "tls_sni", "http_host", "banner", "ws_discovery", "sadp", "dhip", "tftp_request", "dhcp", "arp",
                "ndp")


_Result = TypeVar("_Result")


class ParserGuard:
    """Runs a wire parser so that a bug in it costs the one packet it was reading, counted, never the sensor.

    The parsers are meant to be total (the fuzz tests hold them to it); this is the second line, for the input
    nobody thought of. Each parser's failures are counted by name (a fixed, small label set) and reported once.
    """

    def __init__(self, report: Callable[[str], None] | None = None):
        self.errors: Counter[str] = Counter()
        self._report = report

    def run(self, parser: Callable[[bytes], _Result], payload: bytes, failed: _Result,
            label: str | None = None) -> _Result:
        """parser(payload), or `failed` when it raises; counted under `label` (default: the parser's name)."""
        try:
            return parser(payload)
        except Exception as exc:  # noqa: BLE001 - whatever a parser of attacker bytes raises, the sensor goes on
            name = label or getattr(parser, "__name__", "parser").removeprefix("parse_")
            self.errors[name] += 1
            if self.errors[name] == 1 and self._report is not None:
                self._report(f"{name} failed on a {len(payload)}-byte payload ({type(exc).__name__}); such "
                             f"packets are skipped and counted in camwatch_dissect_errors_total")
            return failed


# ---- the link: who holds which address (DHCP, ARP, IPv6 neighbour discovery) ------------------------------------
DHCP_PORTS = (67, 68)
DHCP_MESSAGE_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release",
                      8: "inform"}
_DHCP_COOKIE = b"\x63\x82\x53\x63"
MAX_DHCP_OPTIONS = 255   # options are at most the rest of a 1500-byte frame; a loop bound all the same
MAX_PARAMETER_LIST = 64


@dataclass
class DhcpMessage:
    """A DHCPv4 message (RFC 2131/2132): what the link learns from it. Addresses are dotted text, None when zero or
    absent; host_name and vendor_class are wire text, escaped (wire_text)."""

    op: int                       # 1 request (client), 2 reply (server)
    message_type: str | None      # discover, offer, request, ack, ... (option 53)
    chaddr: int                   # the client's hardware address (a MAC when htype 1 / hlen 6), 0 otherwise
    ciaddr: str | None
    yiaddr: str | None
    requested: str | None = None  # option 50
    subnet_mask: str | None = None  # option 1
    routers: list[str] = field(default_factory=list)   # option 3
    server_id: str | None = None  # option 54
    host_name: str | None = None  # option 12
    vendor_class: str | None = None  # option 60
    parameters: list[int] = field(default_factory=list)  # option 55

    @property
    def prefix_length(self) -> int | None:
        """The subnet mask as a prefix length, or None when absent or not a contiguous mask."""
        if self.subnet_mask is None:
            return None
        value = int(ipaddress.IPv4Address(self.subnet_mask))
        length = bin(value).count("1")
        return length if value == (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF else None


def _v4(raw: bytes) -> str | None:
    return str(ipaddress.IPv4Address(raw)) if len(raw) == 4 and raw != b"\0\0\0\0" else None


def _dhcp_options(msg: bytes) -> dict[int, bytes]:
    """Options after the magic cookie: code -> value (the first of each code), bounded, stopping at End or at
    the end of the bytes; a length past the end cuts the value (a total parser keeps what is there)."""
    out: dict[int, bytes] = {}
    pos = 240
    for _ in range(MAX_DHCP_OPTIONS):
        if pos >= len(msg):
            break
        code = msg[pos]
        if code == 255:
            break
        if code == 0:
            pos += 1
            continue
        if pos + 1 >= len(msg):
            break
        length = msg[pos + 1]
        out.setdefault(code, msg[pos + 2:pos + 2 + length])
        pos += 2 + length
    return out


def parse_dhcp(msg: bytes) -> DhcpMessage | None:
    """A BOOTP/DHCP message (UDP 67/68), or None when the bytes are not one."""
    if len(msg) < 240 or msg[0] not in (1, 2) or msg[236:240] != _DHCP_COOKIE:
        return None
    chaddr = int.from_bytes(msg[28:34], "big") if msg[1] == 1 and msg[2] == 6 else 0
    opts = _dhcp_options(msg)
    kind = opts.get(53, b"")
    mask = _v4(opts.get(1, b""))
    routers = [r for i in range(0, min(len(opts.get(3, b"")), 32), 4) if (r := _v4(opts[3][i:i + 4]))]
    return DhcpMessage(
        msg[0], DHCP_MESSAGE_TYPES.get(kind[0]) if len(kind) == 1 else None, chaddr, _v4(msg[12:16]),
        _v4(msg[16:20]), requested=_v4(opts.get(50, b"")), subnet_mask=mask, routers=routers,
        server_id=_v4(opts.get(54, b"")),
        host_name=wire_text(opts[12], MAX_IDENTITY_VALUE) if opts.get(12) else None,
        vendor_class=wire_text(opts[60], MAX_IDENTITY_VALUE) if opts.get(60) else None,
        parameters=list(opts.get(55, b"")[:MAX_PARAMETER_LIST]))


@dataclass
class ArpMessage:
    """An Ethernet/IPv4 ARP request or reply: the sender claims its address on the link."""

    op: int                # 1 request, 2 reply
    sender_mac: int
    sender_ip: str | None  # None for an ARP probe (sender 0.0.0.0)
    target_ip: str | None


def parse_arp(msg: bytes) -> ArpMessage | None:
    """An ARP packet (from its hardware type on), or None unless Ethernet/IPv4 ARP with op 1 or 2."""
    if len(msg) < 28 or msg[0:2] != b"\x00\x01" or msg[2:4] != b"\x08\x00" or msg[4] != 6 or msg[5] != 4:
        return None
    op = int.from_bytes(msg[6:8], "big")
    if op not in (1, 2):
        return None
    return ArpMessage(op, int.from_bytes(msg[8:14], "big"), _v4(msg[14:18]), _v4(msg[24:28]))


NDP_TYPES = {133: "router_solicitation", 134: "router_advertisement", 135: "neighbor_solicitation",
             136: "neighbor_advertisement"}
MAX_NDP_OPTIONS = 32
MAX_RA_PREFIXES = 8


@dataclass
class NdpMessage:
    """An IPv6 neighbour discovery message (RFC 4861): what it says of who holds which address."""

    kind: str                      # NDP_TYPES' values
    target: str | None = None      # NS/NA: the address asked about or announced
    link_address: int = 0          # source (RS, RA, NS) or target (NA) link-layer address option, a MAC
    prefixes: list[tuple[str, int]] = field(default_factory=list)   # RA: on-link prefixes (address, length)


def parse_ndp(message: bytes) -> NdpMessage | None:
    """An ICMPv6 message from its type byte on, or None unless router/neighbour solicitation/advertisement."""
    if len(message) < 8 or message[0] not in NDP_TYPES or message[1] != 0:
        return None
    kind = NDP_TYPES[message[0]]
    out = NdpMessage(kind)
    start = {133: 8, 134: 16, 135: 24, 136: 24}[message[0]]
    if message[0] in (135, 136):
        if len(message) < 24:
            return None
        out.target = str(ipaddress.IPv6Address(message[8:24]))
    pos = start
    for _ in range(MAX_NDP_OPTIONS):
        if pos + 2 > len(message) or message[pos + 1] == 0:
            break   # a zero length is invalid (RFC 4861 4.6) and would never advance
        code, end = message[pos], pos + message[pos + 1] * 8
        body = message[pos + 2:end]
        if code in (1, 2) and len(body) >= 6:
            out.link_address = out.link_address or int.from_bytes(body[:6], "big")
        elif code == 3 and len(body) >= 30 and body[1] & 0x80 and len(out.prefixes) < MAX_RA_PREFIXES:
            out.prefixes.append((str(ipaddress.IPv6Address(body[14:30])), min(body[0], 128)))
        pos = end
    return out
