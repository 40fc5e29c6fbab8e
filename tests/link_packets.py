"""Frames of the link itself, built byte by byte for the one-device-per-box and zero-config scoping tests: DHCP
(RFC 2131/2132), ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861), with a pcap writer for end-to-end runs."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from packets import _checksum, ethernet, ipv4, ipv6, udp

BROADCAST = b"\xff" * 6


def mac_int(mac: bytes) -> int:
    return int.from_bytes(mac, "big")


def dhcp(op: int, kind: int, chaddr: bytes, *, ciaddr: str = "0.0.0.0", yiaddr: str = "0.0.0.0",
         options: list[tuple[int, bytes]] = (), xid: int = 0x3903F326) -> bytes:
    """A BOOTP/DHCP message: op 1 request / 2 reply, kind = option 53 (1 discover, 3 request, 5 ack...)."""
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, xid, 0, 0x8000,
                       ipaddress.IPv4Address(ciaddr).packed, ipaddress.IPv4Address(yiaddr).packed, bytes(4),
                       bytes(4), chaddr.ljust(16, b"\0"), bytes(64), bytes(128))
    opts = bytes([53, 1, kind]) + b"".join(bytes([code, len(value)]) + value for code, value in options)
    return head + b"\x63\x82\x53\x63" + opts + b"\xff"


def v4(addr: str) -> bytes:
    return ipaddress.IPv4Address(addr).packed


def dhcp_frame(src_mac: bytes, src: str, dst: str, message: bytes, client: bool) -> bytes:
    sport, dport = (68, 67) if client else (67, 68)
    return ethernet(BROADCAST, src_mac, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, message)))


def dhcp_request(mac: bytes, address: str, host_name: str | None = None, vendor: str | None = None) -> bytes:
    options = [(50, v4(address)), (55, bytes([1, 3, 6, 15]))]
    options += [(12, host_name.encode())] if host_name else []
    options += [(60, vendor.encode())] if vendor else []
    return dhcp_frame(mac, "0.0.0.0", "255.255.255.255", dhcp(1, 3, mac, options=options), client=True)


def dhcp_ack(server_mac: bytes, server: str, client_mac: bytes, address: str, mask: str = "255.255.255.0",
             router: str | None = None) -> bytes:
    options = [(54, v4(server)), (1, v4(mask)), (51, struct.pack("!I", 86400))]
    options += [(3, v4(router))] if router else []
    return dhcp_frame(server_mac, server, "255.255.255.255", dhcp(2, 5, client_mac, yiaddr=address, options=options),
                      client=False)


def arp(sender_mac: bytes, sender_ip: str, target_ip: str, reply: bool = False, target_mac: bytes = bytes(6)) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2 if reply else 1, sender_mac, v4(sender_ip), target_mac,
                       v4(target_ip))
    return ethernet(target_mac if reply else BROADCAST, sender_mac, 0x0806, body)


def _icmp6(src: str, dst: str, body: bytes) -> bytes:
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(body), 58))
    csum = _checksum(pseudo + body)
    return body[:2] + struct.pack("!H", csum) + body[4:]


def _ndp_frame(mac: bytes, src: str, dst: str, body: bytes) -> bytes:
    return ethernet(b"\x33\x33\x00\x00\x00\x01", mac, 0x86DD, ipv6(src, dst, 58, _icmp6(src, dst, body), 255))


def neighbor_advertisement(mac: bytes, src: str, target: str) -> bytes:
    body = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, ipaddress.IPv6Address(target).packed)
    body += bytes([2, 1]) + mac   # target link-layer address
    return _ndp_frame(mac, src, "ff02::1", body)


def neighbor_solicitation(mac: bytes, src: str, target: str) -> bytes:
    body = struct.pack("!BBHI16s", 135, 0, 0, 0, ipaddress.IPv6Address(target).packed)
    if src != "::":
        body += bytes([1, 1]) + mac   # source link-layer address
    return _ndp_frame(mac, src, "ff02::1:ff00:1", body)


def router_advertisement(mac: bytes, src: str, prefix: str, length: int = 64) -> bytes:
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + mac
    body += struct.pack("!BBBBIII16s", 3, 4, length, 0xC0, 86400, 14400, 0, ipaddress.IPv6Address(prefix).packed)
    return _ndp_frame(mac, src, "ff02::1", body)


def _v6_option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def duid_llt(mac: bytes) -> bytes:
    return struct.pack("!HHI", 1, 1, 0x2A5C1E00) + mac


def dhcpv6(kind: int, client_mac: bytes | None, addresses: list[tuple[str, int]] = (), host_name: str | None = None,
           vendor: str | None = None) -> bytes:
    """A DHCPv6 message (RFC 8415): kind 1 solicit, 3 request, 5 renew, 7 reply...; `addresses` (address, valid
    lifetime) in one IA_NA; the client's FQDN (option 39) and vendor class (option 16, enterprise 4491)."""
    out = bytes([kind]) + b"\x4f\x1e\x2d"
    if client_mac is not None:
        out += _v6_option(1, duid_llt(client_mac))
    if addresses:
        ia = struct.pack("!III", 1, 3600, 5400) + b"".join(
            _v6_option(5, ipaddress.IPv6Address(a).packed + struct.pack("!II", valid // 2, valid))
            for a, valid in addresses)
        out += _v6_option(3, ia)
    if host_name:
        labels = b"".join(bytes([len(p)]) + p.encode() for p in host_name.split("."))
        out += _v6_option(39, b"\x01" + labels + b"\x00")
    if vendor:
        out += _v6_option(16, struct.pack("!IH", 4491, len(vendor)) + vendor.encode())
    return out


def dhcpv6_frame(src_mac: bytes, src: str, dst: str, message: bytes, client: bool,
                 dst_mac: bytes | None = None) -> bytes:
    sport, dport = (546, 547) if client else (547, 546)
    to = dst_mac or b"\x33\x33\x00\x01\x00\x02"
    return ethernet(to, src_mac, 0x86DD, ipv6(src, dst, 17, udp(src, dst, sport, dport, message)))


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, frame in frames:
        out.append(struct.pack("<IIII", int(ts), round((ts % 1) * 1e6), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path
