"""Application-layer dissection for the few low-volume packets that name things: DNS, TLS ClientHello, HTTP.

These run inline on a handful of packets per batch, so they are small hand-written parsers bounded against
hostile input (compression loops, lengths past the end). The tests cross-check them against Wireshark's
dissectors through pyshark on the bundled captures.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import struct
import unicodedata

# _socket, not socket: the same C function without socket.py's enum conversions and selectors (start-up, issue 16).
from _socket import AF_INET6, inet_ntoa, inet_ntop
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import AnyStr, TypeVar

from sensor.schema import Values

DNS_A, DNS_CNAME, DNS_PTR, DNS_TXT, DNS_AAAA, DNS_SRV = 1, 5, 12, 16, 28, 33
MAX_DNS_RECORDS = 64
MAX_TXT_STRINGS = 32
DNS_ANSWER, DNS_AUTHORITY, DNS_ADDITIONAL = 0, 1, 2
HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class DnsRecord(Values):
    """One resource record of any section, its rdata decoded where camwatch reads it: an address, a PTR/CNAME/SRV
    target, or a TXT record's strings; empty for the other types."""

    section: int                # DNS_ANSWER, DNS_AUTHORITY or DNS_ADDITIONAL
    owner: str
    rtype: int
    data: tuple[str, ...]


@dataclass
class DnsMessage:
    """A parsed DNS message: the question, the answers and, when asked for, every record."""

    is_response: bool
    rcode: int
    qname: str | None
    qtype: int | None
    answers: list[tuple[str, int, int, str]] = field(default_factory=list)  # (owner, type, ttl, value)
    # Every record of every section, names as sent (case kept): filled only by parse_dns(..., every_record=True),
    # which mDNS wants (a responder names itself in TXT/SRV/PTR records, often in the additional section).
    records: list[DnsRecord] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)   # every question's name, with every_record

    def addresses(self) -> list[tuple[str, int]]:
        """(address, ttl) of every A/AAAA answer reachable from the query name through CNAMEs."""
        names = {self.qname} if self.qname else set()
        for owner, rtype, _ttl, value in self.answers:
            if rtype == DNS_CNAME and owner in names:
                names.add(value)
        return [(value, ttl) for owner, rtype, ttl, value in self.answers
                if rtype in (DNS_A, DNS_AAAA) and owner in names]


_ZERO_80 = bytes(10)


def ipv6_text(raw: bytes) -> str:
    """str(ipaddress.IPv6Address(raw)) of 16 bytes, without the object: inet_ntop writes the same RFC 5952 text
    (tests/unit/test_dissect.py holds the two equal) except where the first 80 bits are zero, which it writes with a
    dotted IPv4 tail (::ffff:1.2.3.4 for ipaddress's ::ffff:102:304). A response's AAAA records are read by the
    dozen (the object cost ~5 us each, most of a forged answer's parse)."""
    if raw[:10] == _ZERO_80:
        return str(ipaddress.IPv6Address(raw))
    return inet_ntop(AF_INET6, raw)


def _owner_name(msg: bytes, pos: int, named: dict[int, str]) -> tuple[str, int]:
    """_dns_name of a record's owner: a compression pointer's name decoded once per message (named: by the position
    it points to), as every answer of a response points back at the question's name."""
    if pos + 1 < len(msg) and msg[pos] & 0xC0 == 0xC0:
        target = ((msg[pos] & 0x3F) << 8) | msg[pos + 1]
        name = named.get(target)
        if name is None:
            name = named[target] = _dns_name(msg, pos)[0]
        return name, pos + 2
    return _dns_name(msg, pos)


def _dns_name(msg: bytes, pos: int, keep_case: bool = False) -> tuple[str, int]:
    """Decode a possibly compressed name at pos; returns (name, position after the name in the record).
    Lower-case ASCII for DNS; keep_case reads labels as UTF-8 as sent (mDNS instance names are text for people)."""
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
        labels.append(label.decode("utf-8", "replace") if keep_case else label.decode("ascii", "replace").lower())
        pos += length
    return ".".join(labels), (end if end is not None else pos)


def _dns_header(msg: bytes, every_record: bool = False) -> tuple[int, int, int, int, int] | None:
    """A message's flags and section counts (questions, answers, authority, additional), or None for a header
    parse_dns refuses before reading anything: too short, or counts no real message has."""
    if len(msg) < 12:
        return None
    _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    if qd > (MAX_DNS_RECORDS if every_record else 4) or an > 256:
        return None
    return flags, qd, an, ns, ar


def parse_dns(msg: bytes, every_record: bool = False) -> DnsMessage | None:
    """Parse a DNS message (UDP payload); None when it is not one. every_record (mDNS): also every question's
    name and the records of all three sections, names as sent, into .records; at most MAX_DNS_RECORDS in all."""
    header = _dns_header(msg, every_record)
    if header is None:
        return None
    flags, qd, an, ns, ar = header
    try:
        pos = 12
        qname = qtype = None
        questions = []
        for i in range(qd):
            name, pos = _dns_name(msg, pos, every_record)
            if pos + 4 > len(msg):
                return None
            if i == 0:
                qname, qtype = name.lower(), struct.unpack_from("!H", msg, pos)[0]
            questions.append(name)
            pos += 4
        out = DnsMessage(bool(flags & 0x8000), flags & 0xF, qname, qtype)
        if not every_record:
            _read_answers(msg, pos, an, out)
            return out
        out.questions = questions
        budget = MAX_DNS_RECORDS
        for section, count in ((DNS_ANSWER, an), (DNS_AUTHORITY, ns), (DNS_ADDITIONAL, ar)):
            pos = _read_records(msg, pos, min(count, budget), section, out.records)
            budget -= min(count, budget)
            if pos < 0 or not budget:
                break
        return out
    except ValueError:
        return None


def dns_answer_cost(msg: bytes) -> int:
    """How many answer records parse_dns(msg) reads (0 for a question, or for a header it refuses unread): what a
    message costs the DNS reader's parse budget (sensor.enrich.naming)."""
    header = _dns_header(msg)
    return 0 if header is None else min(header[2], MAX_DNS_RECORDS)


def _read_answers(msg: bytes, pos: int, an: int, out: DnsMessage) -> None:
    """The answer section as the name cache wants it: A/AAAA/CNAME, names lower-case."""
    named: dict[int, str] = {}
    for _ in range(min(an, MAX_DNS_RECORDS)):
        owner, pos = _owner_name(msg, pos, named)
        if pos + 10 > len(msg):
            break
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        rdata = msg[pos:pos + rdlen]
        if len(rdata) < rdlen:
            break
        if rtype == DNS_A and rdlen == 4:
            out.answers.append((owner, rtype, ttl, inet_ntoa(rdata)))
        elif rtype == DNS_AAAA and rdlen == 16:
            out.answers.append((owner, rtype, ttl, ipv6_text(rdata)))
        elif rtype == DNS_CNAME:
            target, _ = _dns_name(msg, pos)
            out.answers.append((owner, rtype, ttl, target))
        pos += rdlen


def _read_records(msg: bytes, pos: int, count: int, section: int, out: list[DnsRecord]) -> int:
    """count records of one section from pos, names as sent; returns the position after them, -1 when the
    message ends inside one (the records read so far are kept)."""
    for _ in range(count):
        owner, pos = _dns_name(msg, pos, True)
        if pos + 10 > len(msg):
            return -1
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            return -1
        out.append(DnsRecord(section, owner, rtype, _rdata(msg, pos, rdlen, rtype)))
        pos += rdlen
    return pos


def _rdata(msg: bytes, pos: int, rdlen: int, rtype: int) -> tuple[str, ...]:
    rdata = msg[pos:pos + rdlen]
    if rtype == DNS_A and rdlen == 4:
        return (inet_ntoa(rdata),)
    if rtype == DNS_AAAA and rdlen == 16:
        return (ipv6_text(rdata),)
    if rtype in (DNS_PTR, DNS_CNAME):
        return (_dns_name(msg, pos, True)[0],)
    if rtype == DNS_SRV and rdlen > 6:     # priority, weight, port, then the target host
        return (_dns_name(msg, pos + 6, True)[0],)
    if rtype == DNS_TXT:
        strings: list[str] = []
        at = 0
        while at < rdlen and len(strings) < MAX_TXT_STRINGS:
            size = rdata[at]
            strings.append(rdata[at + 1:at + 1 + size].decode("utf-8", "replace"))
            at += 1 + size
        return tuple(strings)
    return ()


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


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class HttpRequest(Values):
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


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class TftpRequest(Values):
    """A TFTP read or write request."""

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


# Bytes that wire_text shows as themselves, one character each: printable ASCII but the backslash and double quote
_PLAIN_ASCII = bytes(b for b in range(0x20, 0x7F) if b not in b'\\"')


def wire_text(raw: bytes, limit: int = 160) -> str:
    """Attacker-chosen bytes (a file name, a path) as one safe line to quote in an alert: valid UTF-8 as itself,
    every other byte as \\xNN, control and other non-printable characters (line breaks, bidi overrides) escaped,
    backslash and double quote escaped, at most `limit` characters and an ellipsis when cut."""
    if len(raw) <= limit and not raw.translate(None, _PLAIN_ASCII):
        # nothing to escape or cut (host names, vendor classes, most paths): what the walk below would build,
        # without a Python step per character
        return raw.decode("ascii")
    return _escaped(raw, limit)


def printable(text: str) -> str:
    """Text from the wire where it is shown as it is, not quoted (a metric label, a table, the report): each
    character str.isprintable refuses (controls, line and paragraph separators, bidi overrides, zero-width marks),
    but a space of any width, as U+FFFD. A name with U+202E would read backwards ("moc.live" as "evil.com"), a CR or
    line separator would split an exposition or CSV line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or unicodedata.category(c) == "Zs" else "\ufffd" for c in text)


def _escaped(raw: bytes, limit: int) -> str:
    """wire_text's character-by-character walk: the reference its shortcut is tested against."""
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


def _on_first_use(pattern: AnyStr) -> Callable[[], re.Pattern[AnyStr]]:
    """The pattern compiled when first asked for (`_TITLE()`): these parse the pages, descriptions and announcements
    a device sends now and then, and compiling them all at import was ~0.5 ms of every start (issue 16)."""
    return functools.cache(lambda: re.compile(pattern))


_XML_TAG = _on_first_use(rb"<(?:[\w-]+:)?(\w+)>([^<]{1,256})</(?:[\w-]+:)?\1>")


def _unescape(text: str) -> str:
    """html.unescape, imported on first use: html.entities' 2,000-entry table is start-up a replay of cameras that
    never show a page or description does not need (issue 16)."""
    import html

    return html.unescape(text)


def _clean(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.strip()
    # most values are printable already: asked once, not a character at a time (a banner's headers, each camera's)
    if not value.isprintable():
        value = "".join(c for c in value if c.isprintable())
    return value[:MAX_IDENTITY_VALUE]


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
    """Server / User-Agent of an RTSP or HTTP message, SSDP's LOCATION, and the UPnP device type a device announces
    as its own (NT of a NOTIFY, ST of a search reply; never an M-SEARCH's ST, which names what is sought)."""
    start = payload[:8]
    if not start.startswith((b"RTSP/1.0", b"HTTP/1.", b"NOTIFY *", b"M-SEARCH")):
        return {}
    h = _headers(payload)
    out = {}
    if h.get("server"):
        out["server"] = h["server"]
    if h.get("location"):
        out["location"] = h["location"]
    own_type = h.get("nt") if start.startswith(b"NOTIFY") else h.get("st") if start.startswith(b"HTTP/1.") else None
    device = _UPNP_DEVICE_TYPE().match(own_type or "")
    if device:
        out["upnp_device_type"] = device.group(1)
    return out


# urn:<domain>:device:<type>:<version>, e.g. urn:schemas-upnp-org:device:DCS-935L:1 (D-Link names its model)
_UPNP_DEVICE_TYPE = _on_first_use(r"urn:[^:\s]{1,64}:device:([^:\s]{1,64}):[\d.]{1,8}$")
_UPNP_NAMESPACE = b"urn:schemas-upnp-org:device-1-0"
_UPNP_FIELDS = _on_first_use(rb"<(?:[\w-]{1,32}:)?(manufacturer|modelName|modelNumber|modelDescription|"
                             rb"friendlyName|serialNumber|deviceType)>([^<]{1,256})</")
_UPNP_KEYS = {b"manufacturer": "manufacturer", b"modelName": "model_name", b"modelNumber": "model",
              b"modelDescription": "model_description", b"friendlyName": "friendly_name",
              b"serialNumber": "serial", b"deviceType": "upnp_device_type"}
_TITLE = _on_first_use(rb"(?is)<title\b[^>]{0,256}>([^<]{0,512})</title")
# D-Link's HNAP (SOAP on the camera's web server, asked by its phone app): GetDeviceSettings names the device.
_HNAP_FIELDS = _on_first_use(rb"<(VendorName|ModelName|ModelDescription|FirmwareVersion)>([^<]{1,256})</")
_HNAP_KEYS = {b"VendorName": "manufacturer", b"ModelName": "model_name", b"ModelDescription": "model_description",
              b"FirmwareVersion": "firmware"}
# Pages every web server sends that name the status, not the device ("401 Unauthorized", "Object moved").
_STATUS_TITLE = _on_first_use(r"(?i)^(\d{3}\b|error\b|unauthori[sz]ed|forbidden|not found|"
                              r"(document |object )?moved|redirect)")
MAX_BODY_SCAN = 8192     # a page's <title> and a device description's fields sit in its first few kB


def _xml_fields(body: bytes, pattern: re.Pattern[bytes], keys: dict[bytes, str], out: dict[str, str]) -> None:
    """The first value of each element pattern finds, entities decoded, under our key."""
    for tag, value in pattern.findall(body):
        text = _clean(_unescape(value.decode("utf-8", "replace")))
        if text:
            out.setdefault(keys[tag], text)


def parse_http_identity(payload: bytes) -> dict[str, str]:
    """What a device's own web server says about it: the banner's headers (parse_banner), the HTML <title> of a
    successful response, and the fields of a UPnP device description (the XML at an SSDP LOCATION). payload is
    an HTTP response, or a segment that opens a body (`<?xml`, `<root`, `<!DOCTYPE`, `<html`) sent on its own."""
    out: dict[str, str] = {}
    body = payload
    if payload.startswith(b"HTTP/1."):
        out = parse_banner(payload)
        head_end = payload.find(b"\r\n\r\n", 0, 4096)
        if head_end < 0 or payload[9:10] != b"2":       # headers only so far, or not a 2xx: no page of the device
            return out
        body = payload[head_end + 4:]
    elif payload.startswith(b"RTSP/1.0"):
        return parse_banner(payload)
    body = body[:MAX_BODY_SCAN]
    namespace = body.find(_UPNP_NAMESPACE)
    if namespace >= 0 and b"root" in body[max(0, namespace - 256):namespace]:    # <root xmlns="urn:...device-1-0">
        _xml_fields(body, _UPNP_FIELDS(), _UPNP_KEYS, out)
        device = _UPNP_DEVICE_TYPE().match(out.get("upnp_device_type", ""))
        if device:
            out["upnp_device_type"] = device.group(1)
        return out
    if b"GetDeviceSettingsResponse" in body:
        _xml_fields(body, _HNAP_FIELDS(), _HNAP_KEYS, out)
        return out
    title = _TITLE().search(body)
    if title:
        text = _clean(" ".join(_unescape(title.group(1).decode("utf-8", "replace")).split()))
        if text and not _STATUS_TITLE().match(text):
            out["title"] = text
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
    fields = {k.decode(): _clean(v) for k, v in _XML_TAG().findall(payload[:8192])}
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


# ---- mDNS / DNS-SD (RFC 6762/6763): what a device announces about itself ------------------------------------
MDNS_PORT = 5353
# Service types that say "camera" (or a camera maker's own protocol), preferred over the generic ones (_http._tcp)
# when one announcement lists several.
CAMERA_MDNS_SERVICES = frozenset({
    "_rtsp._tcp", "_rtsp._udp", "_axis-video._tcp", "_axis-nvr._tcp", "_dhnap._tcp", "_onvif._tcp", "_psia._tcp",
    "_camera._tcp", "_ipcam._tcp", "_nvr._tcp", "_hap._tcp", "_hikvision._tcp", "_dahua._tcp", "_reolink._tcp",
})
# TXT keys (lower-cased) that name the model or the maker: DNS-SD conventions (md/ty/mf: HomeKit, Cast, IPP), and
# what camera makers use (D-Link HNAP: model_number).
_TXT_MODEL = ("model", "md", "model_number", "modelnumber", "modelname", "product", "ty", "mdl")
_TXT_MAKER = ("mf", "manufacturer", "vendor", "usb_mfg")
_TXT_FIRMWARE = ("fw", "firmware", "fwversion", "fw_version", "fv")
_META_SERVICE = "_services._dns-sd._udp"


def _service_of(name: str) -> tuple[str, str] | None:
    """(instance, service type) of a DNS-SD name `<instance>.<_service>.<_tcp|_udp>.<domain>`, the instance ""
    for the service's own name (`_http._tcp.local`); None for any other name."""
    labels = name.split(".")
    for i in range(len(labels) - 2):
        if labels[i].startswith("_") and labels[i + 1] in ("_tcp", "_udp"):
            service = labels[i] + "." + labels[i + 1]
            if i and labels[i - 1] == "_sub":       # a subtype, <sub>._sub.<service>: the service is what counts
                return "", service
            return ".".join(labels[:i]), service
    return None


def _is_reverse(name: str) -> bool:
    return name.lower().endswith((".in-addr.arpa", ".ip6.arpa"))


def parse_mdns(payload: bytes, sender: str | None = None) -> dict[str, str]:
    """What an mDNS responder says about itself: its host name (mdns_name), its service instance's name
    (mdns_instance), the most camera-like service type it offers (mdns_service), and from TXT records its model
    (mdns_model), maker and firmware. A response's records all describe the responder; of a query only the
    authority section does (a probe for the names it is about to claim), its answers being other hosts' records.
    sender (the packet's source address): a message whose address records all name other addresses speaks for
    another host (an mDNS reflector or proxy repeating it) and tells nothing about the sender."""
    msg = parse_dns(payload, every_record=True)
    if msg is None:
        return {}
    records = [r for r in msg.records if msg.is_response or r.section == DNS_AUTHORITY]
    addresses = {r.data[0] for r in records if r.rtype in (DNS_A, DNS_AAAA) and r.data}
    if not records or sender is not None and addresses and sender not in addresses:
        return {}
    out: dict[str, str] = {}
    services: list[str] = []
    for rec in records:
        _mdns_record(rec, out, services)
    camera = [s for s in services if s in CAMERA_MDNS_SERVICES]
    if camera or services:
        out["mdns_service"] = (camera or services)[0]
    return {k: v for k, v in ((k, _clean(v)) for k, v in out.items()) if v}


def _mdns_record(rec: DnsRecord, out: dict[str, str], services: list[str]) -> None:
    if rec.rtype in (DNS_A, DNS_AAAA) and not _service_of(rec.owner):
        out.setdefault("mdns_name", rec.owner)
    elif rec.rtype == DNS_PTR and rec.data and _is_reverse(rec.owner):
        out.setdefault("mdns_name", rec.data[0])    # address -> host name
    elif rec.rtype == DNS_PTR and rec.data:         # service -> instance; _services._dns-sd -> service type
        owner, target = _service_of(rec.owner), _service_of(rec.data[0])
        if owner is not None and owner[1] != _META_SERVICE and target is not None and target[0]:
            out.setdefault("mdns_instance", target[0])
        for found in (owner, target):
            if found is not None and found[1] != _META_SERVICE and found[1] not in services:
                services.append(found[1])
    elif rec.rtype in (DNS_SRV, DNS_TXT):
        found = _service_of(rec.owner)
        if found is not None:
            if found[0]:
                out.setdefault("mdns_instance", found[0])
            if found[1] not in services:
                services.append(found[1])
        if rec.rtype == DNS_SRV and rec.data:
            out.setdefault("mdns_name", rec.data[0])
        elif rec.rtype == DNS_TXT:
            _mdns_txt(rec.data, out)


def _mdns_txt(strings: tuple[str, ...], out: dict[str, str]) -> None:
    pairs: dict[str, str] = {}
    for text in strings:
        key, sep, value = text.partition("=")
        if sep and value.strip():
            pairs.setdefault(key.strip().lower(), value)
    for ours, theirs in (("mdns_model", _TXT_MODEL), ("manufacturer", _TXT_MAKER), ("firmware", _TXT_FIRMWARE)):
        for key in theirs:
            if key in pairs:
                out.setdefault(ours, pairs[key])
                break
    # Some cameras (Edimax) put a bare description where DNS-SD wants key=value pairs: "IC-3115W Network Camera".
    # One string with a letter and a digit, not a key, is kept as the model text; flags ("ssl") are not.
    if len(strings) == 1 and "=" not in strings[0] and _MODELISH().search(strings[0]) and _LETTER().search(strings[0]):
        out.setdefault("mdns_model", strings[0])


_MODELISH = _on_first_use(r"\d")
_LETTER = _on_first_use(r"[^\W\d_]")


IDENTITY_PORTS = {1900: parse_banner, 3702: parse_ws_discovery, 5353: parse_mdns, 37020: parse_sadp,
                  37810: parse_dhip}
# UDP ports whose rows the router picks by the same port table as IDENTITY_PORTS, for parsers that are not about
# identity: they are split off before the identity reader (sensor.enrich.routing).
REQUEST_PORTS = {TFTP_PORT: parse_tftp_request}
# Every parser of wire bytes the pipeline runs: the label values of camwatch_dissect_errors_total. http_host is the
# HTTP request parser (request line and Host), under the label it has always had.
WIRE_PARSERS = ("dns", "tls_sni", "http_host", "banner", "ws_discovery", "sadp", "dhip", "tftp_request", "mdns",
                "http_identity", "tls_certificate", "dhcp", "dhcpv6", "arp", "ndp")


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


# The dotted masks that are a prefix: each the text _v4 writes, so a lease's mask is one lookup (an ipaddress object
# per lease cost as much as the rest of its parse)
_MASK_PREFIX = {inet_ntoa(((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF).to_bytes(4, "big")): n for n in range(33)}


@dataclass(slots=True, eq=False, repr=False)
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
        return None if self.subnet_mask is None else _MASK_PREFIX.get(self.subnet_mask)


def _v4(raw: bytes) -> str | None:
    # inet_ntoa writes what str(IPv4Address(raw)) does, without building the object: a lease carries up to a dozen
    return inet_ntoa(raw) if len(raw) == 4 and raw != b"\0\0\0\0" else None


def _dhcp_options(msg: bytes) -> dict[int, bytes]:
    """Options after the magic cookie: code -> value (the first of each code), bounded, stopping at End or at
    the end of the bytes; a length past the end cuts the value (a total parser keeps what is there)."""
    out: dict[int, bytes] = {}
    pos, end = 240, len(msg)
    for _ in range(MAX_DHCP_OPTIONS):
        if pos >= end:
            break
        code = msg[pos]
        if code == 0:
            pos += 1
            continue
        if code == 255 or pos + 1 >= end:
            break
        length = msg[pos + 1]
        if code not in out:
            out[code] = msg[pos + 2:pos + 2 + length]
        pos += 2 + length
    return out


def parse_dhcp(msg: bytes) -> DhcpMessage | None:
    """A BOOTP/DHCP message (UDP 67/68), or None when the bytes are not one."""
    if len(msg) < 240 or msg[0] not in (1, 2) or msg[236:240] != _DHCP_COOKIE:
        return None
    chaddr = int.from_bytes(msg[28:34], "big") if msg[1] == 1 and msg[2] == 6 else 0
    opts = _dhcp_options(msg)
    get = opts.get
    kind, listed, host, vendor, asked = get(53), get(3), get(12), get(60), get(55)
    routers = [r for i in range(0, min(len(listed), 32), 4) if (r := _v4(listed[i:i + 4]))] if listed else []
    return DhcpMessage(
        msg[0], DHCP_MESSAGE_TYPES.get(kind[0]) if kind is not None and len(kind) == 1 else None, chaddr,
        _v4(msg[12:16]), _v4(msg[16:20]), _v4(get(50, b"")), _v4(get(1, b"")), routers, _v4(get(54, b"")),
        wire_text(host, MAX_IDENTITY_VALUE) if host else None,
        wire_text(vendor, MAX_IDENTITY_VALUE) if vendor else None,
        list(asked[:MAX_PARAMETER_LIST]) if asked else [])


DHCPV6_PORTS = (546, 547)
DHCPV6_TYPES = {1: "solicit", 2: "advertise", 3: "request", 4: "confirm", 5: "renew", 6: "rebind", 7: "reply",
                8: "release", 9: "decline", 10: "reconfigure", 11: "information-request"}
MAX_DHCPV6_OPTIONS = 64
MAX_DHCPV6_ADDRESSES = 8
MAX_FQDN_LABELS = 32


@dataclass(eq=False, repr=False)
class Dhcp6Message:
    """A DHCPv6 client or server message (RFC 8415), relays aside: what the link learns from it. Strings are wire
    text, escaped (wire_text)."""

    kind: str                      # DHCPV6_TYPES' values
    client_mac: int = 0            # from the client's DUID (DUID-LLT or DUID-LL of an Ethernet address), else 0
    # IA_NA / IA_TA addresses with their valid lifetime: in a reply, what the server gave (0: taken back)
    addresses: list[tuple[str, int]] = field(default_factory=list)
    host_name: str | None = None   # option 39, the client's FQDN
    vendor_class: str | None = None  # option 16, its first vendor-class data


def _dhcpv6_options(data: bytes, start: int) -> list[tuple[int, bytes]]:
    """(code, value) pairs from `start`, bounded; a length past the end cuts the value."""
    out: list[tuple[int, bytes]] = []
    pos = start
    while pos + 4 <= len(data) and len(out) < MAX_DHCPV6_OPTIONS:
        code, length = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append((code, data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return out


def _duid_mac(duid: bytes) -> int:
    """The Ethernet address in a DUID-LLT (type 1) or DUID-LL (type 3), or 0."""
    kind = int.from_bytes(duid[:2], "big") if len(duid) >= 2 else 0
    link = duid[8:] if kind == 1 else duid[4:] if kind == 3 else b""
    return int.from_bytes(link, "big") if duid[2:4] == b"\x00\x01" and len(link) == 6 else 0


def _fqdn(value: bytes) -> str | None:
    """Option 39's domain name (flags byte, then DNS wire labels; a partial name has no final empty label)."""
    labels: list[bytes] = []
    pos = 1
    while pos < len(value) and len(labels) < MAX_FQDN_LABELS:
        length = value[pos]
        if length == 0 or length > 63:
            break
        labels.append(value[pos + 1:pos + 1 + length])
        pos += 1 + length
    name = b".".join(labels)
    return wire_text(name, MAX_IDENTITY_VALUE) if name else None


def _ia_addresses(code: int, value: bytes) -> list[tuple[str, int]]:
    """The IAADDR options inside an IA_NA (code 3: IAID, T1, T2 first) or IA_TA (code 4: IAID first)."""
    found = []
    for sub, body in _dhcpv6_options(value, 12 if code == 3 else 4):
        if sub == 5 and len(body) >= 24:
            found.append((ipv6_text(body[:16]), int.from_bytes(body[20:24], "big")))
    return found


def parse_dhcpv6(msg: bytes) -> Dhcp6Message | None:
    """A DHCPv6 message (UDP 546/547) from its type byte on, or None when the bytes are not a client or server
    message (relay messages are not read: a camera VLAN's server answers on the link)."""
    if len(msg) < 4 or msg[0] not in DHCPV6_TYPES:
        return None
    out = Dhcp6Message(DHCPV6_TYPES[msg[0]])
    for code, value in _dhcpv6_options(msg, 4):
        if code == 1 and not out.client_mac:
            out.client_mac = _duid_mac(value)
        elif code in (3, 4):
            room = MAX_DHCPV6_ADDRESSES - len(out.addresses)
            out.addresses += _ia_addresses(code, value)[:max(room, 0)]
        elif code == 39 and out.host_name is None:
            out.host_name = _fqdn(value)
        elif code == 16 and out.vendor_class is None and len(value) >= 6:
            data = value[6:6 + int.from_bytes(value[4:6], "big")]
            out.vendor_class = wire_text(data, MAX_IDENTITY_VALUE) if data else None
    return out


@dataclass(eq=False, repr=False)
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


@dataclass(eq=False, repr=False)
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
        out.target = ipv6_text(message[8:24])
    pos = start
    for _ in range(MAX_NDP_OPTIONS):
        if pos + 2 > len(message) or message[pos + 1] == 0:
            break   # a zero length is invalid (RFC 4861 4.6) and would never advance
        code, end = message[pos], pos + message[pos + 1] * 8
        body = message[pos + 2:end]
        if code in (1, 2) and len(body) >= 6:
            out.link_address = out.link_address or int.from_bytes(body[:6], "big")
        elif code == 3 and len(body) >= 30 and body[1] & 0x80 and len(out.prefixes) < MAX_RA_PREFIXES:
            out.prefixes.append((ipv6_text(body[14:30]), min(body[0], 128)))
        pos = end
    return out
