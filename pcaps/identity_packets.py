"""Builders for the packets a device names itself in: mDNS announcements, a TLS server's certificate flight (with a
DER certificate built field by field), HTTP responses. Shapes follow real devices (see tests/unit/test_dissect.py
and tests/unit/test_certificate.py for where each example comes from)."""

from __future__ import annotations

import ipaddress
import struct

A, PTR, TXT, AAAA, SRV = 1, 12, 16, 28, 33


def mdns_name(name: str) -> bytes:
    """A name whose labels may hold dots' neighbours, spaces and UTF-8 (instance names are text for people):
    split on dots that separate labels, as dns_name does, but encode each label as UTF-8."""
    return b"".join(bytes([len(p.encode())]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def mdns_record(owner: str, rtype: int, value: str | list[str], ttl: int = 120, cls: int = 0x8001) -> bytes:
    """One record: A/AAAA an address, PTR a name, SRV a target host (port 80), TXT a list of strings."""
    if rtype == A:
        rdata = ipaddress.IPv4Address(value).packed
    elif rtype == AAAA:
        rdata = ipaddress.IPv6Address(value).packed
    elif rtype == PTR:
        rdata = mdns_name(str(value))
    elif rtype == SRV:
        rdata = struct.pack("!HHH", 0, 0, 80) + mdns_name(str(value))
    else:
        strings = [value] if isinstance(value, str) else value
        rdata = b"".join(bytes([len(s.encode())]) + s.encode() for s in strings) or b"\0"
    return mdns_name(owner) + struct.pack("!HHIH", rtype, cls, ttl, len(rdata)) + rdata


def mdns_message(answers: list[bytes] = (), authority: list[bytes] = (), additional: list[bytes] = (),
                 questions: list[str] = (), response: bool = True) -> bytes:
    flags = 0x8400 if response else 0x0000
    out = struct.pack("!HHHHHH", 0, flags, len(questions), len(answers), len(authority), len(additional))
    out += b"".join(mdns_name(q) + struct.pack("!HH", 255, 0x8001) for q in questions)
    return out + b"".join(answers) + b"".join(authority) + b"".join(additional)


# ---- DER, as much of X.509 as a parser of names needs ------------------------------------------------------------
def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


OIDS = {"C": b"\x55\x04\x06", "ST": b"\x55\x04\x08", "L": b"\x55\x04\x07", "O": b"\x55\x04\x0a",
        "OU": b"\x55\x04\x0b", "CN": b"\x55\x04\x03"}


def der_name(attributes: list[tuple[str, str]], string_tag: int = 0x0C) -> bytes:
    """A Name: one RDN per attribute, in the order given (certificates list C first and CN last)."""
    rdns = b"".join(der(0x31, der(0x30, der(0x06, OIDS[key]) + der(
        0x13 if key == "C" else string_tag, value.encode("utf-16-be" if string_tag == 0x1E else "utf-8"))))
        for key, value in attributes)
    return der(0x30, rdns)


def der_certificate(subject: list[tuple[str, str]], issuer: list[tuple[str, str]] | None = None,
                    version: bool = True, key_bytes: int = 270, string_tag: int = 0x0C) -> bytes:
    """A certificate laid out as RFC 5280 has it (self-signed when issuer is None); the key and signature are
    filler of realistic size: a parser of names must get past them, not check them."""
    sha256_rsa = der(0x30, der(0x06, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")
    validity = der(0x30, der(0x17, b"160101000000Z") + der(0x17, b"360101000000Z"))
    spki = der(0x30, der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
               + der(0x03, b"\x00" + b"\x5a" * key_bytes))
    tbs = (der(0xA0, der(0x02, b"\x02")) if version else b"") + der(0x02, bytes.fromhex("00e3c5a1b2")) + sha256_rsa
    tbs += der_name(issuer or subject, string_tag) + validity + der_name(subject, string_tag) + spki
    return der(0x30, der(0x30, tbs) + sha256_rsa + der(0x03, b"\x00" + b"\xa5" * 256))


def tls_server_flight(certificates: list[bytes], version: bytes = b"\x03\x03", one_record: bool = True) -> bytes:
    """ServerHello, Certificate, ServerHelloDone: in one handshake record, or each in its own."""
    hello_body = version + bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    chain = b"".join(len(c).to_bytes(3, "big") + c for c in certificates)
    messages = [b"\x02" + len(hello_body).to_bytes(3, "big") + hello_body,
                b"\x0b" + (len(chain) + 3).to_bytes(3, "big") + len(chain).to_bytes(3, "big") + chain,
                b"\x0e\x00\x00\x00"]
    if one_record:
        body = b"".join(messages)
        return b"\x16" + version + struct.pack("!H", len(body)) + body
    return b"".join(b"\x16" + version + struct.pack("!H", len(m)) + m for m in messages)


def http_response(body: bytes, status: bytes = b"200 OK", headers: bytes = b"Content-Type: text/html\r\n") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\n" + headers + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)
