"""Decode stage: link, network and transport headers of a whole batch at once, with numpy.

Each packet's first WINDOW bytes are gathered into a matrix; every header field is then a column gather at
per-packet offsets. Positions past a packet's captured length read as zero and are flagged, so a snaplen-cut or
malformed frame becomes a counted decode error, never an exception.

Headers are followed as deep as they legally go within the captured bytes (up to MAX_VLAN_TAGS tags, IPv4 options,
MAX_EXT_HEADERS IPv6 extension headers of any size), not only within the window: the few rows whose headers reach
past it are decoded once more, by the same code reading the capture buffer itself. header_too_deep is left for what
cannot be followed: a tag stack or an extension-header chain beyond those bounds, or a chain running past the
captured bytes. Such IPv6 packets keep their addresses and protocol and count in the flows port-less, like
non-first fragments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

from sensor import compiled
from sensor.capture import Batch

# Header bytes gathered per packet for the fast path: Ethernet, two VLAN tags, IPv4 with every option and a TCP
# header (102), or IPv6 with 24 bytes of extension headers behind one tag. Rows reaching further are decoded again.
WINDOW = 104
# Bounds on what is followed; the compiled decode (_walk.c) has the same numbers.
MAX_VLAN_TAGS = 8
MAX_EXT_HEADERS = 16
# The furthest any row's decode looks: Linux cooked v2, every tag, IPv6, the longest chain of the longest extension
# headers ((255 + 1) * 8 bytes each), then a TCP header.
MAX_REACH = 20 + 4 * MAX_VLAN_TAGS + 40 + MAX_EXT_HEADERS * 2048 + 20
# Zero columns past a matrix's width: a read at a position clamped to the width, plus up to 13, stays inside.
SLACK = 16

# libpcap link types
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
RAW_LINKTYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
# IPv6 extension headers laid out as next header, then length in 8-byte units after the first 8: hop-by-hop,
# routing, destination options, Mobility, HIP, Shim6 (the fragment header, 44, and AH, 51, have their own layouts)
TLV_EXT_HEADERS = (0, 43, 60, 135, 139, 140)

# network classes (Decoded.network)
NET_OTHER, NET_IPV4, NET_IPV6, NET_ARP = 0, 1, 2, 3
NETWORK_NAMES = ("other", "ipv4", "ipv6", "arp")

# decode error reasons (Decoded.error); 0 means the packet decoded
ERROR_REASONS = ("", "truncated", "bad_ip_header", "bad_tcp_header", "unknown_linktype", "header_too_deep")
ERR_TRUNCATED, ERR_BAD_IP, ERR_BAD_TCP, ERR_LINKTYPE, ERR_TOO_DEEP = 1, 2, 3, 4, 5


@dataclass(eq=False, repr=False)
class Decoded:
    """Struct of arrays, one row per packet of the batch."""

    batch: Batch
    network: np.ndarray     # uint8 NET_*
    error: np.ndarray       # uint8 index into ERROR_REASONS
    vlan: np.ndarray        # uint16, innermost 802.1Q id, 0 when untagged
    src_mac: np.ndarray     # int64, 0 when the link layer has none
    src: np.ndarray         # (n, 16) uint8, IPv4 as IPv4-mapped IPv6
    dst: np.ndarray         # (n, 16) uint8
    proto: np.ndarray       # uint8 (an undecodable IPv6 chain: the next header where the walk stopped)
    sport: np.ndarray       # int64 (ICMP: type)
    dport: np.ndarray       # int64 (ICMP: code)
    tcp_flags: np.ndarray   # uint8
    payload_off: np.ndarray  # int64 offset of the transport payload in batch.data
    payload_len: np.ndarray  # int64 transport payload length claimed by the headers
    fragment: np.ndarray    # bool, no transport header: a non-first IP fragment, or an undecodable IPv6 chain
    head: np.ndarray        # uint64, the first eight payload bytes big-endian, zero past the capture: enough to
                            # recognise RTP, TLS, HTTP, banners and vendor signatures without touching the payload

    @property
    def is_ip(self) -> np.ndarray:
        """The rows the flows account. header_too_deep IPv6 rows are among them (flagged as fragments, so
        port-less): they are counted as decode errors and still add to their devices' packets and bytes."""
        ok = (self.error == 0) | (self.error == ERR_TOO_DEEP)
        return ((self.network == NET_IPV4) | (self.network == NET_IPV6)) & ok


def _be16(h: np.ndarray | _CaptureView, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (h[rows, pos].astype(np.int64) << 8) | h[rows, pos + 1]


def decode(batch: Batch) -> Decoded:
    if compiled.extension is None or not compiled.decode or len(batch) == 0:
        return decode_numpy(batch)
    n = len(batch)
    (network, error, vlan, src_mac, src, dst, proto, sport, dport, tcp_flags, payload_off, payload_len, fragment,
     head) = compiled.extension.decode(batch.data if len(batch.data) else b"\0",
                                       # the walk's columns as they are (an astype and a tobytes were two copies
                                       # of each, on fresh pages: a sixth of the reading thread's page faults)
                                       np.ascontiguousarray(batch.offsets, np.int64),
                                       np.ascontiguousarray(batch.caplen, np.int64),
                                       np.ascontiguousarray(batch.linktype, np.int32))
    return Decoded(batch, np.frombuffer(network, np.uint8), np.frombuffer(error, np.uint8),
                   np.frombuffer(vlan, np.uint16), np.frombuffer(src_mac, np.int64),
                   np.frombuffer(src, np.uint8).reshape(n, 16), np.frombuffer(dst, np.uint8).reshape(n, 16),
                   np.frombuffer(proto, np.uint8), np.frombuffer(sport, np.int64), np.frombuffer(dport, np.int64),
                   np.frombuffer(tcp_flags, np.uint8), np.frombuffer(payload_off, np.int64),
                   np.frombuffer(payload_len, np.int64), np.frombuffer(fragment, np.uint8).astype(bool),
                   np.frombuffer(head, np.uint64))


@dataclass(eq=False, repr=False)
class _Headers:
    """decode_numpy's working columns for a set of rows; payload_off is relative to each packet's start."""

    network: np.ndarray
    error: np.ndarray
    vlan: np.ndarray
    src_mac: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    proto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    payload_off: np.ndarray
    payload_len: np.ndarray
    fragment: np.ndarray
    reach: np.ndarray       # how far into the packet the decode looked, reads and length checks (an upper bound)

    @classmethod
    def empty(cls, n: int) -> _Headers:
        z = np.zeros
        return cls(z(n, np.uint8), z(n, np.uint8), z(n, np.int64), z(n, np.int64), z((n, 16), np.uint8),
                   z((n, 16), np.uint8), z(n, np.int64), z(n, np.int64), z(n, np.int64), z(n, np.uint8),
                   z(n, np.int64), z(n, np.int64), z(n, bool), z(n, np.int64))

    def put(self, rows: np.ndarray, part: _Headers) -> None:
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(part, f.name)


def decode_numpy(batch: Batch) -> Decoded:
    """The reference decode: every header field as a numpy column gather (see the module docstring)."""
    n = len(batch)
    data = np.frombuffer(batch.data, dtype=np.uint8) if batch.data else np.zeros(1, dtype=np.uint8)
    caplen = batch.caplen
    hd = _decode_matrix(_gather(data, batch.offsets, caplen, WINDOW), np.minimum(caplen, WINDOW), batch.linktype,
                        WINDOW)
    deep = np.flatnonzero((caplen > WINDOW) & (hd.reach > WINDOW))
    if len(deep):
        _decode_deep_rows(data, batch, deep, hd)

    payload_off = hd.payload_off + batch.offsets
    head = np.zeros(n, dtype=np.uint64)
    end = batch.offsets + caplen
    for k in range(8):
        pos = payload_off + k
        byte = np.where(pos < end, data[np.minimum(pos, len(data) - 1)], 0)
        head = (head << np.uint64(8)) | byte.astype(np.uint64)
    return Decoded(batch, hd.network, hd.error, hd.vlan.astype(np.uint16), hd.src_mac, hd.src, hd.dst,
                   hd.proto.astype(np.uint8), hd.sport, hd.dport, hd.tcp_flags, payload_off, hd.payload_len,
                   hd.fragment, head)


def _gather(data: np.ndarray, offsets: np.ndarray, caplen: np.ndarray, width: int) -> np.ndarray:
    """The first `width` bytes of each packet, then SLACK zero columns; bytes past a capture read as zero."""
    cols = np.arange(width + SLACK, dtype=np.int64)
    h = np.take(data, offsets[:, None] + cols, mode="clip")
    # Bytes past a frame's capture (the next record's header) must read as zero; only short frames have any.
    short = caplen < width + SLACK
    if short.any():
        h[short] *= cols < np.minimum(caplen[short], width)[:, None]
    if (caplen > width).any():
        h[:, width:] = 0
    return h


class _CaptureView:
    """Indexes like a gathered matrix, view[rows, columns], but reads the capture buffer itself, zero past each
    capture: the rows whose headers go past WINDOW are decoded through it, the matrix code unchanged, without
    gathering kilobytes per row for a long header."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, caplen: np.ndarray):
        self.data, self.offsets, self.caplen = data, offsets, caplen
        self._rows = np.arange(len(offsets))

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        rows = self._rows[rows]   # a slice or a mask to indices, keeping the shape of an index array
        if isinstance(cols, slice):
            cols, rows = np.arange(cols.start, cols.stop), rows[:, None]
        inside = cols < self.caplen[rows]
        return np.where(inside, self.data[np.where(inside, self.offsets[rows] + cols, 0)], 0).astype(np.uint8)


def _decode_deep_rows(data: np.ndarray, batch: Batch, rows: np.ndarray, hd: _Headers) -> None:
    """Decode again, through a _CaptureView, the rows whose headers reach past WINDOW."""
    caplen = batch.caplen[rows]
    view = _CaptureView(data, batch.offsets[rows], caplen)
    # No position a decode reads reaches MAX_REACH: as the width, it clamps nothing.
    hd.put(rows, _decode_matrix(view, caplen, batch.linktype[rows], MAX_REACH))


def _decode_matrix(h: np.ndarray | _CaptureView, limit: np.ndarray, linktype: np.ndarray, width: int) -> _Headers:
    """Decode rows gathered `width` wide plus SLACK zero columns (or a _CaptureView); limit: bytes readable per
    row, min(caplen, width). Exact for every row whose capture ends within the width or whose reach does not pass
    it: the length checks against limit then decide as they would against the capture."""
    hd = _Headers.empty(len(h))
    ethertype, l3, known = _link_layer(h, limit, linktype, hd)
    _vlan_tags(h, limit, ethertype, l3, known, hd)
    hd.network[ethertype == ETH_IPV4] = NET_IPV4
    hd.network[ethertype == ETH_IPV6] = NET_IPV6
    hd.network[ethertype == ETH_ARP] = NET_ARP
    hd.network[~known] = NET_OTHER

    l4 = np.zeros(len(h), dtype=np.int64)
    l4_len = np.zeros(len(h), dtype=np.int64)  # bytes after the IP header(s), by the IP length fields
    rows = np.arange(len(h))
    v4 = (hd.network == NET_IPV4) & (hd.error == 0)
    if v4.any():
        _ipv4(h, limit, rows[v4], l3[v4], hd, l4, l4_len)
    v6 = (hd.network == NET_IPV6) & (hd.error == 0)
    if v6.any():
        _ipv6(h, limit, rows[v6], l3[v6], width, hd, l4, l4_len)
    _transport(h, limit, width, l4, l4_len, hd)
    hd.reach = l4 + 20   # the TCP header's length check goes furthest
    return hd


def _link_layer(h: np.ndarray | _CaptureView, limit: np.ndarray, lt: np.ndarray, hd: _Headers):
    """(ethertype, start of layer 3, known link type) per row; source MAC and errors into hd."""
    n = len(h)
    rows = np.arange(n)
    error, src_mac = hd.error, hd.src_mac
    ethertype = np.zeros(n, dtype=np.int64)
    l3 = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    mac_weights = (np.int64(1) << (np.arange(5, -1, -1, dtype=np.int64) * 8))

    m = lt == LINKTYPE_ETHERNET
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.full(m.sum(), 12))
        l3[m] = 14
        src_mac[m] = h[m, 6:12].astype(np.int64) @ mac_weights
        error[m & (limit < 14)] = ERR_TRUNCATED
    m = lt == LINKTYPE_LINUX_SLL
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.full(m.sum(), 14))
        l3[m] = 16
        has_mac = m & (((h[:, 4].astype(np.int64) << 8) | h[:, 5]) == 6)
        src_mac[has_mac] = h[has_mac, 6:12].astype(np.int64) @ mac_weights
        error[m & (limit < 16)] = ERR_TRUNCATED
    m = lt == LINKTYPE_LINUX_SLL2
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.zeros(m.sum(), dtype=np.int64))
        l3[m] = 20
        has_mac = m & (h[:, 11] == 6)
        src_mac[has_mac] = h[has_mac, 12:18].astype(np.int64) @ mac_weights
        error[m & (limit < 20)] = ERR_TRUNCATED
    m = np.isin(lt, RAW_LINKTYPES)
    if m.any():
        known |= m
        version = h[:, 0] >> 4
        ethertype[m & (version == 4)] = ETH_IPV4
        ethertype[m & (version == 6)] = ETH_IPV6
    m = (lt == LINKTYPE_NULL) | (lt == LINKTYPE_LOOP)
    if m.any():
        known |= m
        # BSD loopback: address family in host order for NULL, network order for LOOP; AF_INET is 2 everywhere,
        # AF_INET6 is 10, 24, 28 or 30 depending on the OS that wrote the file.
        family = np.where(lt == LINKTYPE_NULL, h[:, 0].astype(np.int64) | h[:, 3], h[:, 3])
        family = np.where(family == 0, h[:, 0], family)
        ethertype[m & (family == 2)] = ETH_IPV4
        ethertype[m & np.isin(family, (10, 24, 28, 30))] = ETH_IPV6
        l3[m] = 4
    error[~known] = ERR_LINKTYPE
    return ethertype, l3, known


def _vlan_tags(h, limit, ethertype, l3, known, hd: _Headers) -> None:
    """Pops up to MAX_VLAN_TAGS tags (ethertype and l3 in place); the innermost is the camera VLAN."""
    rows = np.arange(len(h))
    for _ in range(MAX_VLAN_TAGS):
        tagged = np.isin(ethertype, VLAN_TPIDS) & known
        if not tagged.any():
            break
        r, p = rows[tagged], l3[tagged]
        hd.vlan[tagged] = _be16(h, r, p) & 0x0FFF
        ethertype[tagged] = _be16(h, r, p + 2)
        l3[tagged] += 4
        hd.error[tagged & (limit < l3)] = ERR_TRUNCATED
    else:
        hd.error[np.isin(ethertype, VLAN_TPIDS) & known & (hd.error == 0)] = ERR_TOO_DEEP


def _ipv4(h, limit, r, p, hd: _Headers, l4, l4_len) -> None:
    ihl = (h[r, p] & 0x0F).astype(np.int64) * 4
    bad = ((h[r, p] >> 4) != 4) | (ihl < 20)
    total = _be16(h, r, p + 2)
    bad |= total < ihl
    short = limit[r] < p + np.maximum(ihl, 20)
    frag_off = _be16(h, r, p + 6) & 0x1FFF
    hd.proto[r] = h[r, p + 9]
    addr_cols = p[:, None] + np.arange(4)
    hd.src[r, 10:12] = 0xFF
    hd.dst[r, 10:12] = 0xFF
    hd.src[r, 12:16] = h[r[:, None], addr_cols + 12]
    hd.dst[r, 12:16] = h[r[:, None], addr_cols + 16]
    l4[r] = p + ihl
    l4_len[r] = np.maximum(total - ihl, 0)
    hd.fragment[r] = frag_off > 0
    hd.error[r[short]] = ERR_TRUNCATED
    hd.error[r[bad & ~short]] = ERR_BAD_IP


def _ipv6(h, limit, r, p, width, hd: _Headers, l4, l4_len) -> None:
    bad = (h[r, p] >> 4) != 6
    short = limit[r] < p + 40
    plen = _be16(h, r, p + 4)
    addr_cols = p[:, None] + np.arange(16)
    hd.src[r] = h[r[:, None], addr_cols + 8]
    hd.dst[r] = h[r[:, None], addr_cols + 24]
    nxt, pos, ext_len, frag, deep = _ext_chain(h, limit[r], r, h[r, p + 6].astype(np.int64), p + 40, width)
    hd.proto[r] = nxt
    l4[r] = pos
    l4_len[r] = np.maximum(plen - ext_len, 0)
    hd.fragment[r] = frag
    hd.error[r[short]] = ERR_TRUNCATED
    hd.error[r[bad & ~short]] = ERR_BAD_IP
    # Still counted in the flows, port-less like a fragment (Decoded.is_ip): header options must not make a
    # packet vanish.
    too_deep = r[deep & ~short & ~bad]
    hd.error[too_deep] = ERR_TOO_DEEP
    hd.fragment[too_deep] = True


def _ext_chain(h, limit, r, nxt, pos, width):
    """Walks the IPv6 extension headers of rows r, all at once, from pos (just past the fixed header) to the
    transport header: (next header, its position, bytes walked, non-first fragment, deep). deep: the chain cannot
    be followed to its end, being longer than MAX_EXT_HEADERS or running past the captured bytes. A non-first
    fragment ends the walk: what follows its header is fragment data."""
    m = len(r)
    ext_len = np.zeros(m, dtype=np.int64)
    frag = np.zeros(m, dtype=bool)
    deep = np.zeros(m, dtype=bool)
    walking = np.ones(m, dtype=bool)
    for k in range(MAX_EXT_HEADERS + 1):
        tlv = np.isin(nxt, TLV_EXT_HEADERS)
        fr = nxt == 44
        walking &= tlv | fr | (nxt == 51)
        if not walking.any():
            break
        if k == MAX_EXT_HEADERS:
            deep |= walking
            break
        cut = walking & (pos + np.where(fr, 4, 2) > limit)
        deep |= cut
        walking &= ~cut
        hp = np.minimum(pos, width)
        length = h[r, hp + 1].astype(np.int64)
        step = np.where(tlv, (length + 1) * 8, np.where(fr, 8, (length + 2) * 4)) * walking
        nonfirst = walking & fr & ((_be16(h, r, hp + 2) & 0xFFF8) > 0)
        nxt = np.where(walking, h[r, hp], nxt)
        pos = pos + step
        ext_len += step
        frag |= nonfirst
        walking &= ~nonfirst
    deep |= ~frag & (pos > limit)
    return nxt, pos, ext_len, frag, deep


def _transport(h, limit, width, l4, l4_len, hd: _Headers) -> None:
    """Ports, TCP flags and where the payload starts; positions past the width read the matrix's zero columns."""
    hd.payload_off[:] = l4
    hd.payload_len[:] = l4_len
    l4c = np.minimum(l4, width)
    rows = np.arange(len(h))
    ip_ok = (hd.network != NET_OTHER) & (hd.network != NET_ARP) & (hd.error == 0) & ~hd.fragment
    proto = hd.proto
    tcp = ip_ok & (proto == PROTO_TCP)
    if tcp.any():
        r, p, pc = rows[tcp], l4[tcp], l4c[tcp]
        doff = (h[r, pc + 12] >> 4).astype(np.int64) * 4
        short = limit[r] < p + 20
        bad = (doff < 20) | (doff > l4_len[r])
        hd.sport[r] = _be16(h, r, pc)
        hd.dport[r] = _be16(h, r, pc + 2)
        hd.tcp_flags[r] = h[r, pc + 13]
        hd.payload_off[r] = p + doff
        hd.payload_len[r] = np.maximum(l4_len[r] - doff, 0)
        hd.error[r[short]] = ERR_TRUNCATED
        hd.error[r[bad & ~short]] = ERR_BAD_TCP
    ports = ip_ok & ((proto == PROTO_UDP) | (proto == PROTO_SCTP))
    if ports.any():
        r, p, pc = rows[ports], l4[ports], l4c[ports]
        hd.sport[r] = _be16(h, r, pc)
        hd.dport[r] = _be16(h, r, pc + 2)
        hdr = np.where(proto[r] == PROTO_UDP, 8, 12)
        hd.payload_off[r] = p + hdr
        hd.payload_len[r] = np.maximum(l4_len[r] - hdr, 0)
        hd.error[r[limit[r] < p + 8]] = ERR_TRUNCATED
    icmp = ip_ok & ((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6))
    if icmp.any():
        r, p, pc = rows[icmp], l4[icmp], l4c[icmp]
        hd.sport[r] = h[r, pc]
        hd.dport[r] = h[r, pc + 1]
        hd.payload_off[r] = p + 8
        hd.payload_len[r] = np.maximum(l4_len[r] - 8, 0)


def payload(dec: Decoded, i: int, limit: int = 65535) -> bytes:
    """Captured transport payload of packet i (cut at the capture length)."""
    b = dec.batch
    start = int(dec.payload_off[i])
    end = min(start + int(dec.payload_len[i]), int(b.offsets[i] + b.caplen[i]), start + limit)
    return bytes(b.data[start:end]) if end > start else b""


# Rows decoded at once: decoding gathers a header matrix per packet, and slices keep it bounded whatever the packet
# sizes. The pipeline takes a batch's decode a slice at a time; sensor.overlap decodes them on its thread, beside
# the reading, without importing the pipeline.
DECODE_SLICE = 16384


def batch_slice(batch: Batch, start: int) -> Batch:
    """Rows start to start + DECODE_SLICE."""
    return batch if len(batch) <= DECODE_SLICE else batch.select(slice(start, start + DECODE_SLICE))


def slice_starts(batch: Batch) -> range:
    return range(0, len(batch), DECODE_SLICE)


def decoded_slices(batch: Batch) -> Iterator[Decoded]:
    """The batch's slices decoded one at a time, as the pipeline takes them."""
    return (decode(batch_slice(batch, start)) for start in slice_starts(batch))


def decode_batch(batch: Batch) -> tuple[Decoded, ...]:
    """The batch decoded slice by slice, as Sensor.process decodes it (sensor.overlap does it on its thread)."""
    return tuple(decoded_slices(batch))
