"""The certificate a TLS server presents, read from its handshake: who it says it is (subject) and who signed it
(issuer). Cameras serve their web UI and APIs over TLS with a certificate made on the device, often self-signed and
naming the maker ("CN=IPC, O=Hikvision"), which says who made the box whatever badge it wears.

Only TLS 1.2 and earlier send the Certificate message in clear; TLS 1.3 encrypts it, so a TLS 1.3 server tells
nothing here. The first segment of the server's flight is read (no reassembly): a certificate cut short by the
segment's end is read as far as it goes, and the names sit early in it. The DER walker below reads the few fields
it needs (RFC 5280: tbsCertificate, issuer, subject; the CN, O and OU attributes), bounded in depth and count, and
never raises: every length is checked against what was captured.
"""

from __future__ import annotations

from sensor.dissect import _clean

HANDSHAKE, CERTIFICATE = 0x16, 11
MAX_RECORDS = 8          # handshake records gathered from one segment
MAX_MESSAGES = 8         # handshake messages walked to reach the Certificate
MAX_RDNS = 32            # relative distinguished names read per name
MAX_ATTRIBUTES = 4       # attributes per RDN
# Attribute type OIDs (2.5.4.x) as DER content bytes, in the order they are shown.
_ATTRIBUTES = ((b"\x55\x04\x03", "CN"), (b"\x55\x04\x0a", "O"), (b"\x55\x04\x0b", "OU"))
_SEQUENCE, _SET, _OID, _VERSION = 0x30, 0x31, 0x06, 0xA0
_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
                  0x1C: "utf-32-be", 0x1A: "ascii"}


def parse_tls_certificate(payload: bytes) -> dict[str, str]:
    """tls_subject and tls_issuer ("CN=IPC, O=Hikvision") of the first certificate in a TLS server's handshake
    flight; {} for anything else (a ClientHello, TLS 1.3, a segment that does not open a handshake record)."""
    cert = _first_certificate(_handshake(payload))
    if not cert:
        return {}
    names = _tbs_names(cert)
    out = {}
    for key, name in zip(("tls_issuer", "tls_subject"), names, strict=False):
        text = _clean(_show(name))
        if text:
            out[key] = text
    return out


def _handshake(payload: bytes) -> bytes:
    """The handshake bytes of the leading handshake records, joined (a message may span records)."""
    parts = []
    pos = 0
    for _ in range(MAX_RECORDS):
        if pos + 5 > len(payload) or payload[pos] != HANDSHAKE or payload[pos + 1] != 3:
            break
        length = int.from_bytes(payload[pos + 3:pos + 5], "big")
        parts.append(payload[pos + 5:pos + 5 + length])
        pos += 5 + length
    return b"".join(parts)


def _first_certificate(hs: bytes) -> bytes:
    """The DER of the first certificate of the Certificate message (as much of it as was captured), or b""."""
    pos = 0
    for _ in range(MAX_MESSAGES):
        if pos + 4 > len(hs):
            return b""
        kind, length = hs[pos], int.from_bytes(hs[pos + 1:pos + 4], "big")
        if kind == CERTIFICATE:
            # certificate_list length (3 bytes), then each certificate as length (3 bytes) and DER
            start = pos + 4 + 3
            if start + 3 > len(hs):
                return b""
            size = int.from_bytes(hs[start:start + 3], "big")
            return hs[start + 3:start + 3 + size]
        pos += 4 + length
    return b""


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int, bool] | None:
    """(tag, content start, content end, whole) of the DER element at pos: the end clamped to `end` (a capture
    cut short), whole when it was not. None when no element header fits or the length is not a definite one of
    at most four bytes."""
    if pos + 2 > end:
        return None
    tag, first = buf[pos], buf[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    elif 0x81 <= first <= 0x84:
        count = first & 0x7F
        start = pos + 2 + count
        if start > end:
            return None
        length = int.from_bytes(buf[pos + 2:start], "big")
    else:
        return None
    return tag, start, min(start + length, end), start + length <= end


def _children(buf: bytes, start: int, end: int, limit: int) -> list[tuple[int, int, int, bool]]:
    """The first `limit` elements inside start:end (each advances by its header at least: the loop ends)."""
    out: list[tuple[int, int, int, bool]] = []
    pos = start
    while pos < end and len(out) < limit:
        element = _tlv(buf, pos, end)
        if element is None:
            break
        out.append(element)
        pos = element[2]
    return out


def _tbs_names(cert: bytes) -> list[list[tuple[str, str]]]:
    """[issuer, subject] as (attribute, value) lists: as many as the capture holds."""
    outer = _tlv(cert, 0, len(cert))
    if outer is None or outer[0] != _SEQUENCE:
        return []
    tbs = _tlv(cert, outer[1], outer[2])
    if tbs is None or tbs[0] != _SEQUENCE:
        return []
    fields = _children(cert, tbs[1], tbs[2], 6)
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    return [_name(cert, fields[i][1], fields[i][2]) for i in (2, 4) if i < len(fields) and fields[i][0] == _SEQUENCE]


def _name(buf: bytes, start: int, end: int) -> list[tuple[str, str]]:
    """The CN/O/OU attributes of a Name (SEQUENCE OF SET OF SEQUENCE {type, value}), in the order sent."""
    out = []
    for tag, rdn_start, rdn_end, _ in _children(buf, start, end, MAX_RDNS):
        if tag != _SET:
            continue
        for atv_tag, atv_start, atv_end, _ in _children(buf, rdn_start, rdn_end, MAX_ATTRIBUTES):
            pair = _children(buf, atv_start, atv_end, 2) if atv_tag == _SEQUENCE else []
            if len(pair) < 2 or pair[0][0] != _OID:
                continue
            oid = buf[pair[0][1]:pair[0][2]]
            label = next((name for code, name in _ATTRIBUTES if code == oid), None)
            value_tag, value_start, value_end, whole = pair[1]
            if label is not None and whole:      # a value cut by the capture's end would name something else
                out.append((label, _text(value_tag, buf[value_start:value_end])))
    return out


def _text(tag: int, raw: bytes) -> str:
    return raw.decode(_STRING_CODECS.get(tag, "utf-8"), "replace")


def _show(name: list[tuple[str, str]]) -> str:
    """"CN=IPC, O=Hikvision": the first CN, O and OU, in that order (RFC 4514 order puts the most specific first;
    certificates list it last), a comma or backslash in a value escaped."""
    parts = []
    for _code, label in _ATTRIBUTES:
        value = next((v for key, v in name if key == label), None)
        if value is not None:
            parts.append(f"{label}={value.replace(chr(92), chr(92) * 2).replace(',', chr(92) + ',')}")
    return ", ".join(parts)
