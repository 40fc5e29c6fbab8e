"""Which rows of a decoded batch each enrichment parser wants (DNS, flow naming, identity, banners, UPnP, TFTP),
found once per batch with one pass (compiled, with a numpy reference) instead of each parser masking every window."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sensor import compiled
from sensor.decode import NET_ARP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Decoded
from sensor.dissect import DHCP_PORTS, DHCPV6_PORTS, HTTP_METHODS, IDENTITY_PORTS, NDP_TYPES, REQUEST_PORTS

_HTTP_PREFIXES = np.array([int.from_bytes(m, "big") for m in HTTP_METHODS], dtype=np.int64)
# RTSP/HTTP heads, and the segments that open a body sent apart from its head (an XML device description, an
# HTML page): the identity reader reads what a device's own servers say (sensor.enrich.identity).
BANNER_PREFIXES = (b"RTSP", b"HTTP", b"<?xm", b"<roo", b"<!DO", b"<!do", b"<htm", b"<HTM")
_BANNER_PREFIXES = np.array([int.from_bytes(m, "big") for m in BANNER_PREFIXES], dtype=np.int64)
# Indexed by port: cheaper than np.isin on every window. The compiled router picks UDP rows to or from any port
# marked here; the request ports' rows (TFTP) are then split off the discovery rows (_split_requests).
_IDENTITY_PORT = np.zeros(1 << 16, dtype=bool)
_IDENTITY_PORT[sorted(set(IDENTITY_PORTS) | set(REQUEST_PORTS) | set(DHCP_PORTS) | set(DHCPV6_PORTS))] = True
_IDENTITY_PORT_BYTES = _IDENTITY_PORT.view(np.uint8)
_POST = int.from_bytes(b"POST", "big")


class ParserRows(NamedTuple):
    """Rows each parser wants, ascending: DNS messages, discovery (UDP identity ports), SSDP searches, TCP rows
    opening a TLS ClientHello or an HTTP request (flow names, file fetches), banners (RTSP/HTTP heads, segments
    opening an XML or HTML body, a TLS server's ServerHello or Certificate record), HTTP POSTs (UPnP), UDP
    requests to a request port (TFTP), DHCP messages, and the link's own: ARP and IPv6 neighbour discovery."""

    dns: list[int]
    identity: list[int]
    searches: list[int]
    named: list[int]
    banners: list[int]
    posts: list[int]
    requests: list[int]
    dhcp: list[int] = []
    link: list[int] = []


# What window_rows gives a window that holds no parser's row: the one object, so that the pipeline skips the
# readers of such a window by identity. Nobody adds to its lists.
NO_ROWS = ParserRows([], [], [], [], [], [], [], [], [])


def route(dec: Decoded, is_ip: np.ndarray) -> ParserRows:
    if compiled.extension is None or not compiled.route:
        return route_numpy(dec, is_ip)
    c = np.ascontiguousarray
    return _split_requests(dec, *compiled.extension.route(
        c(is_ip, np.uint8), c(dec.proto, np.uint8), c(dec.payload_len, np.int64), c(dec.head, np.uint64),
        c(dec.sport, np.int64), c(dec.dport, np.int64), _IDENTITY_PORT_BYTES, _HTTP_PREFIXES, _BANNER_PREFIXES,
        _POST))


def _split_requests(dec: Decoded, dns: list[int], identity: list[int], searches: list[int], named: list[int],
                    banners: list[int], posts: list[int]) -> ParserRows:
    """The UDP rows the port table picked that are addressed to a request port are requests (TFTP); the rest
    that came from one (a server's reply) are nobody's; DHCP rows (either port) are DHCP's; the identity rows are
    what is left, as if the table held the identity ports alone."""
    requests: list[int] = []
    dhcp: list[int] = []
    if identity:
        sport, dport = dec.sport, dec.dport
        picked, identity = identity, []
        for row in picked:
            to, source = int(dport[row]), int(sport[row])
            if to in REQUEST_PORTS:
                requests.append(row)
            elif (to in DHCP_PORTS and source in DHCP_PORTS) or (to in DHCPV6_PORTS and source in DHCPV6_PORTS):
                dhcp.append(row)
            elif to in IDENTITY_PORTS or source in IDENTITY_PORTS:
                identity.append(row)
    return ParserRows(dns, identity, searches, named, banners, posts, requests, dhcp)


def route_numpy(dec: Decoded, is_ip: np.ndarray) -> ParserRows:
    """The reference for the compiled _walk.route."""
    # Masks over the whole batch, not gathers of its IP rows: elementwise passes over contiguous columns.
    proto, plen, sport, dport = dec.proto, dec.payload_len, dec.sport, dec.dport
    udp = is_ip & (proto == PROTO_UDP) & (plen > 0)
    dns = np.flatnonzero(udp & ((sport == 53) | (dport == 53)) & (plen >= 12)).tolist()
    identity = np.flatnonzero(udp & (_IDENTITY_PORT[sport] | _IDENTITY_PORT[dport]))
    searches = identity[dport[identity] == 1900].tolist()
    # TCP rows with six or more payload bytes, by their first four bytes (as an integer) and byte 5
    tcp = np.flatnonzero(is_ip & (proto == PROTO_TCP) & (plen >= 6))
    head = dec.head[tcp]
    first4 = (head >> np.uint64(32)).astype(np.int64)
    named = ((first4 >> 24) == 0x16) & (((head >> np.uint64(16)) & np.uint64(0xFF)) == 1)
    named |= np.isin(first4, _HTTP_PREFIXES)
    # and a TLS server's flight: a handshake record (0x16 0x03) opening with a ServerHello (2) or a Certificate (11)
    handshake = (head >> np.uint64(16)) & np.uint64(0xFF)
    server_tls = ((first4 >> 16) == 0x1603) & ((handshake == 2) | (handshake == 11))
    banners = tcp[np.isin(first4, _BANNER_PREFIXES) | server_tls].tolist()
    return _split_requests(dec, dns, identity.tolist(), searches, tcp[named].tolist(), banners,
                           tcp[first4 == _POST].tolist())


def link_rows(dec: Decoded, is_ip: np.ndarray) -> list[int]:
    """ARP and IPv6 neighbour discovery rows: a few a second, so the batch is masked once for either protocol
    (two byte columns) and the other tests are made on those rows alone (tests/unit/test_enrich_routing.py
    holds them to the masks over the whole batch)."""
    maybe = np.flatnonzero((dec.network == NET_ARP) | (dec.proto == PROTO_ICMPV6))
    if not len(maybe):
        return []
    kind = dec.sport[maybe]
    ndp = is_ip[maybe] & (kind >= min(NDP_TYPES)) & (kind <= max(NDP_TYPES)) & ~dec.fragment[maybe]
    return maybe[(dec.network[maybe] == NET_ARP) | ndp].tolist()   # the rest of `maybe` is ICMPv6


def _between(rows: list[int], start: int, end: int) -> list[int]:
    return rows[bisect_left(rows, start):bisect_left(rows, end)] if rows else rows


class BatchPlan:
    """The rows of one decoded batch that each stage wants; a window of the batch takes its share by position
    (windows are contiguous and rows ascending), instead of each of a batch's one-second windows masking its rows
    again."""

    __slots__ = ("ip", "tags", "parsers", "_holds")

    def __init__(self, dec: Decoded, tags: Callable[[Decoded, np.ndarray], np.ndarray]):
        is_ip = dec.is_ip
        # a batch of video is all IP: its rows are every row (what flatnonzero gives, without its pass)
        self.ip = np.arange(len(is_ip)) if is_ip.all() else np.flatnonzero(is_ip)
        self.tags = tags(dec, self.ip)   # payload-profile bits per IP row
        self.parsers = route(dec, is_ip)._replace(link=link_rows(dec, is_ip))
        self._holds: list[bool] = []

    def cut(self, bounds: list[int]) -> None:
        """Windows at `bounds` (rows bounds[k]:bounds[k+1]): which of them hold any parser's row. A window of
        control traffic most often holds none, and window_rows then costs one lookup, not nine slices."""
        windows = len(bounds) - 1
        held = [rows for rows in self.parsers if rows]
        if not held or windows <= 0:
            self._holds = [False] * max(windows, 0)
            return
        if windows == 1:   # a video batch: whether any list has a row in it, without the arrays
            start, end = bounds[0], bounds[1]
            self._holds = [any(bisect_left(rows, start) < bisect_left(rows, end) for rows in held)]
            return
        rows = np.concatenate([np.asarray(r, np.int64) for r in held])
        window = np.searchsorted(np.asarray(bounds, np.int64), rows, side="right") - 1
        window = window[(window >= 0) & (window < windows)]
        self._holds = (np.bincount(window, minlength=windows) > 0).tolist()

    def window_rows(self, k: int, start: int, end: int) -> ParserRows:
        """parser_rows(start, end) for window k of cut's bounds (start, end: its rows); NO_ROWS itself when the
        window holds none."""
        return self.parser_rows(start, end) if self._holds[k] else NO_ROWS

    def parser_rows(self, start: int, end: int) -> ParserRows:
        """The parsers' rows among rows start:end of the batch (_between of each, inlined: asked once a window,
        97,000 times in an hour of control traffic, most of the lists empty)."""
        return ParserRows._make([rows[bisect_left(rows, start):bisect_left(rows, end)] if rows else rows
                                 for rows in self.parsers])
