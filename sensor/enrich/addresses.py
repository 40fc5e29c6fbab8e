"""What an address itself says about the box that uses it: its family, whether it is link-local (never routed, so
the frame's MAC is its holder's), and whether its IPv6 interface identifier is the modified EUI-64 of a MAC
(RFC 4291 appendix A: the MAC is written into the address, so the two belong to one interface)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


@lru_cache(maxsize=4096)
def parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def version(ip: str) -> int:
    """4 or 6 for the canonical text of an address (what ip_text and str() write), 0 for anything else. By its
    characters, not by parsing: every new address of a flood comes through here."""
    if ":" in ip:
        return 6 if parse(ip) is not None else 0
    return 4 if ip[:1].isdigit() else 0


def is_link_local_v6(ip: str) -> bool:
    """fe80::/10 in canonical (lowercase, compressed) text: fe8x to febx."""
    return ip[:3] in ("fe8", "fe9", "fea", "feb") and ":" in ip[:5]


def eui64(mac: int) -> int:
    """The modified EUI-64 interface identifier of a 48-bit MAC: ff:fe in the middle, universal/local bit flipped."""
    raw = mac.to_bytes(6, "big")
    return int.from_bytes(bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:], "big")


def is_eui64_of(ip: str, mac: int) -> bool:
    addr = parse(ip)
    return bool(mac) and addr is not None and addr.version == 6 and int(addr) & 0xFFFFFFFFFFFFFFFF == eui64(mac)


def interface_id(ip: str) -> int | None:
    addr = parse(ip)
    return int(addr) & 0xFFFFFFFFFFFFFFFF if addr is not None and addr.version == 6 else None


def on_link_evidence(ip: str, mac: int) -> bool:
    """The address alone proves that the frame's MAC is its holder's: IPv6 link-local, or EUI-64 of that MAC."""
    return bool(mac) and ":" in ip and (is_link_local_v6(ip) or is_eui64_of(ip, mac))


def preference(ip: str) -> int:
    """Which address names a device (Device.ip), lowest first: IPv4, then IPv6 global, then IPv6 link-local."""
    v = version(ip)
    return 0 if v == 4 else 2 if is_link_local_v6(ip) else 1
