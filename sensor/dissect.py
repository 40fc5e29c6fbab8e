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
WIRE_PARSERS = ("dns", "tls_sni", "http_host", "banner", "ws_discovery", "sadp", "dhip", "tftp_request")


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
