"""Packet builders and capture writers for the deterministic fixture generators.

Standalone on purpose (standard library only): the fixtures must not depend on the code they test.
"""

from __future__ import annotations

import ipaddress
import struct

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return s.packed + d.packed + struct.pack("!IxxxB", length, proto)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = _checksum(_pseudo(src, dst, 17, length) + hdr + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: str, payload: bytes = b"",
        window: int = 64240) -> bytes:
    bits = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}
    f = sum(bits[c] for c in flags)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, f, window, 0, 0)
    csum = _checksum(_pseudo(src, dst, 6, len(hdr) + len(payload)) + hdr + payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


def icmp_echo(ident: int, seq: int, reply: bool = False, payload: bytes = b"\0" * 32) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, ttl: int = 64,
         frag_offset: int = 0, more_fragments: bool = False, total_length: int | None = None) -> bytes:
    flags_frag = (0x2000 if more_fragments else 0) | (frag_offset // 8)
    length = total_length if total_length is not None else 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident, flags_frag, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def ip(src: str, dst: str, proto: int, l4: bytes, ident: int = 0) -> bytes:
    if ipaddress.ip_address(src).version == 6:
        return ipv6(src, dst, proto, l4)
    return ipv4(src, dst, proto, l4, ident)


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    frame = dst + src + tags + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))  # pad to the Ethernet minimum, as a NIC does


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def dns_response(ident: int, name: str, answers: list[tuple[str, int, int, str]], qtype: int = 1) -> bytes:
    """answers: (owner, type, ttl, value) with type 1 (A), 28 (AAAA) or 5 (CNAME)."""
    out = struct.pack("!HHHHHH", ident, 0x8180, 1, len(answers), 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)
    for owner, rtype, ttl, value in answers:
        if rtype == 1:
            rdata = ipaddress.IPv4Address(value).packed
        elif rtype == 28:
            rdata = ipaddress.IPv6Address(value).packed
        else:
            rdata = dns_name(value)
        out += dns_name(owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return out


def tls_client_hello(server_name: str) -> bytes:
    sni = server_name.encode()
    ext_sni = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack("!H", 4) + b"\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack("!H", len(ext_sni)) + ext_sni)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


class _Writer:
    fh = None

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PcapWriter(_Writer):
    def __init__(self, path, linktype: int = LINKTYPE_ETHERNET, nanoseconds: bool = False,
                 big_endian: bool = False, snaplen: int = 65535):
        self.e = ">" if big_endian else "<"
        self.nanos = nanoseconds
        self.snaplen = snaplen
        self.fh = open(path, "wb")
        magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
        self.fh.write(struct.pack(self.e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    def write(self, ts: float, frame: bytes, wirelen: int | None = None) -> None:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if self.nanos else 1e6))
        data = frame[: self.snaplen]
        self.fh.write(struct.pack(self.e + "IIII", sec, frac, len(data), wirelen or len(frame)) + data)
        self.count += 1


class PcapNgWriter(_Writer):
    """pcapng with one interface per (linktype, tsresol) pair given at construction."""

    def __init__(self, path, interfaces: list[tuple[int, int]]):
        self.fh = open(path, "wb")
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        self._block(0x0A0D0D0A, shb_body)
        self.resolutions = []
        for linktype, tsresol in interfaces:
            opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
            self._block(1, struct.pack("<HHI", linktype, 0, 0) + opts)
            self.resolutions.append(tsresol)
        self.count = 0

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\0" * (-len(body) % 4)
        length = len(body) + 12
        self.fh.write(struct.pack("<II", btype, length) + body + struct.pack("<I", length))

    def write(self, ts: float, frame: bytes, interface: int = 0) -> None:
        units = round(ts * 10 ** self.resolutions[interface])
        body = struct.pack("<IIIII", interface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)) + frame
        self._block(6, body)
        self.count += 1

    def comment(self) -> None:
        """A name-resolution block: readers must skip block types they do not use."""
        self._block(4, struct.pack("<HH", 0, 0))


def sll(frame_l3: bytes, ethertype: int, src_mac: bytes, packet_type: int = 0) -> bytes:
    return struct.pack("!HHH", packet_type, 1, 6) + src_mac + b"\0\0" + struct.pack("!H", ethertype) + frame_l3


def sll2(frame_l3: bytes, ethertype: int, src_mac: bytes, ifindex: int = 2) -> bytes:
    return struct.pack("!HHIHBB", ethertype, 0, ifindex, 1, 0, 6) + src_mac + b"\0\0" + frame_l3
