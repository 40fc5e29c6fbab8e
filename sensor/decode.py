"""Decode stage: link, network and transport headers of a whole batch at once, with numpy.

Each packet's first WINDOW bytes are gathered into a matrix; every header field is then a column gather at
per-packet offsets. Positions past a packet's captured length read as zero and are flagged, so a snaplen-cut or
malformed frame becomes a counted decode error, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensor.capture import Batch

# Header bytes gathered per packet: enough for Ethernet + three VLAN tags (30) + IPv4 with every option (60) + the
# TCP fields read (14), or IPv6 with a few extension headers; deeper headers are counted as header_too_deep.
WINDOW = 104
# Plus slack, so a field read at a clipped position (l3 or l4 pinned to WINDOW for absurd headers) stays inside the
# matrix and reads zeros: the furthest read is an IPv6 address at l3 + 39.
GATHERED = WINDOW + 48

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

# network classes (Decoded.network)
NET_OTHER, NET_IPV4, NET_IPV6, NET_ARP = 0, 1, 2, 3
NETWORK_NAMES = ("other", "ipv4", "ipv6", "arp")

# decode error reasons (Decoded.error); 0 means the packet decoded
ERROR_REASONS = ("", "truncated", "bad_ip_header", "bad_tcp_header", "unknown_linktype", "header_too_deep")
ERR_TRUNCATED, ERR_BAD_IP, ERR_BAD_TCP, ERR_LINKTYPE, ERR_TOO_DEEP = 1, 2, 3, 4, 5

IPV4_MAPPED_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


@dataclass
class Decoded:
    """Struct of arrays, one row per packet of the batch."""

    batch: Batch
    network: np.ndarray     # uint8 NET_*
    error: np.ndarray       # uint8 index into ERROR_REASONS
    vlan: np.ndarray        # uint16, innermost 802.1Q id, 0 when untagged
    src_mac: np.ndarray     # int64, 0 when the link layer has none
    src: np.ndarray         # (n, 16) uint8, IPv4 as IPv4-mapped IPv6
    dst: np.ndarray         # (n, 16) uint8
    proto: np.ndarray       # uint8
    sport: np.ndarray       # int64 (ICMP: type)
    dport: np.ndarray       # int64 (ICMP: code)
    tcp_flags: np.ndarray   # uint8
    payload_off: np.ndarray  # int64 offset of the transport payload in batch.data
    payload_len: np.ndarray  # int64 transport payload length claimed by the headers
    fragment: np.ndarray    # bool, a non-first IP fragment (no transport header)
    head: np.ndarray        # uint64, the first eight payload bytes big-endian, zero past the capture: enough to
                            # recognise RTP, TLS, HTTP, banners and vendor signatures without touching the payload

    @property
    def is_ip(self) -> np.ndarray:
        return ((self.network == NET_IPV4) | (self.network == NET_IPV6)) & (self.error == 0)


def _be16(h: np.ndarray, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (h[rows, pos].astype(np.int64) << 8) | h[rows, pos + 1]


try:
    from sensor import _walk as _compiled
except ImportError:  # no C compiler at install time: the numpy decode below gives the same results
    _compiled = None
# Tests switch this off to hold the compiled decode to the numpy reference.
USE_C_DECODE = True


def decode(batch: Batch) -> Decoded:
    if _compiled is None or not USE_C_DECODE or len(batch) == 0:
        return decode_numpy(batch)
    n = len(batch)
    (network, error, vlan, src_mac, src, dst, proto, sport, dport, tcp_flags, payload_off, payload_len, fragment,
     head) = _compiled.decode(batch.data if len(batch.data) else b"\0", batch.offsets.astype(np.int64).tobytes(),
                              batch.caplen.astype(np.int64).tobytes(), batch.linktype.astype(np.int32).tobytes(),
                              WINDOW)
    return Decoded(batch, np.frombuffer(network, np.uint8), np.frombuffer(error, np.uint8),
                   np.frombuffer(vlan, np.uint16), np.frombuffer(src_mac, np.int64),
                   np.frombuffer(src, np.uint8).reshape(n, 16), np.frombuffer(dst, np.uint8).reshape(n, 16),
                   np.frombuffer(proto, np.uint8), np.frombuffer(sport, np.int64), np.frombuffer(dport, np.int64),
                   np.frombuffer(tcp_flags, np.uint8), np.frombuffer(payload_off, np.int64),
                   np.frombuffer(payload_len, np.int64), np.frombuffer(fragment, np.uint8).astype(bool),
                   np.frombuffer(head, np.uint64))


def decode_numpy(batch: Batch) -> Decoded:
    """The reference decode: every header field as a numpy column gather (see the module docstring)."""
    n = len(batch)
    data = np.frombuffer(batch.data, dtype=np.uint8) if batch.data else np.zeros(1, dtype=np.uint8)
    cols = np.arange(GATHERED, dtype=np.int64)
    h = np.take(data, batch.offsets[:, None] + cols, mode="clip")
    # Bytes past a frame's capture (the next record's header) must read as zero; only short frames have any.
    short = batch.caplen < GATHERED
    if short.any():
        h[short] *= cols < np.minimum(batch.caplen[short], WINDOW)[:, None]
    if (batch.caplen > WINDOW).any():
        h[:, WINDOW:] = 0
    caplen = batch.caplen
    rows = np.arange(n)

    error = np.zeros(n, dtype=np.uint8)
    ethertype = np.zeros(n, dtype=np.int64)
    l3 = np.zeros(n, dtype=np.int64)
    src_mac = np.zeros(n, dtype=np.int64)
    lt = batch.linktype
    known = np.zeros(n, dtype=bool)

    mac_weights = (np.int64(1) << (np.arange(5, -1, -1, dtype=np.int64) * 8))

    m = lt == LINKTYPE_ETHERNET
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.full(m.sum(), 12))
        l3[m] = 14
        src_mac[m] = h[m, 6:12].astype(np.int64) @ mac_weights
        error[m & (caplen < 14)] = ERR_TRUNCATED
    m = lt == LINKTYPE_LINUX_SLL
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.full(m.sum(), 14))
        l3[m] = 16
        has_mac = m & (((h[:, 4].astype(np.int64) << 8) | h[:, 5]) == 6)
        src_mac[has_mac] = h[has_mac, 6:12].astype(np.int64) @ mac_weights
        error[m & (caplen < 16)] = ERR_TRUNCATED
    m = lt == LINKTYPE_LINUX_SLL2
    if m.any():
        known |= m
        ethertype[m] = _be16(h, rows[m], np.zeros(m.sum(), dtype=np.int64))
        l3[m] = 20
        has_mac = m & (h[:, 11] == 6)
        src_mac[has_mac] = h[has_mac, 12:18].astype(np.int64) @ mac_weights
        error[m & (caplen < 20)] = ERR_TRUNCATED
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

    vlan = np.zeros(n, dtype=np.int64)
    for _ in range(3):  # up to QinQ plus one; the innermost tag is the camera VLAN
        tagged = np.isin(ethertype, VLAN_TPIDS) & known
        if not tagged.any():
            break
        r, p = rows[tagged], l3[tagged]
        vlan[tagged] = _be16(h, r, p) & 0x0FFF
        ethertype[tagged] = _be16(h, r, p + 2)
        l3[tagged] += 4
        error[tagged & (caplen < l3)] = ERR_TRUNCATED
    np.minimum(l3, WINDOW, out=l3)

    network = np.full(n, NET_OTHER, dtype=np.uint8)
    network[ethertype == ETH_IPV4] = NET_IPV4
    network[ethertype == ETH_IPV6] = NET_IPV6
    network[ethertype == ETH_ARP] = NET_ARP
    network[~known] = NET_OTHER

    src = np.zeros((n, 16), dtype=np.uint8)
    dst = np.zeros((n, 16), dtype=np.uint8)
    proto = np.zeros(n, dtype=np.int64)
    l4 = np.zeros(n, dtype=np.int64)
    l4_len = np.zeros(n, dtype=np.int64)  # bytes after the IP header(s), by the IP length fields
    fragment = np.zeros(n, dtype=bool)

    v4 = (network == NET_IPV4) & (error == 0)
    if v4.any():
        r, p = rows[v4], l3[v4]
        ihl = (h[r, p] & 0x0F).astype(np.int64) * 4
        bad = ((h[r, p] >> 4) != 4) | (ihl < 20)
        total = _be16(h, r, p + 2)
        bad |= total < ihl
        short = caplen[r] < p + np.maximum(ihl, 20)
        frag_off = _be16(h, r, p + 6) & 0x1FFF
        proto[r] = h[r, p + 9]
        addr_cols = p[:, None] + np.arange(4)
        src[r, 10:12] = 0xFF
        dst[r, 10:12] = 0xFF
        src[r, 12:16] = h[r[:, None], addr_cols + 12]
        dst[r, 12:16] = h[r[:, None], addr_cols + 16]
        l4[r] = p + ihl
        l4_len[r] = np.maximum(total - ihl, 0)
        fragment[r] = frag_off > 0
        error[r[short]] = ERR_TRUNCATED
        error[r[bad & ~short]] = ERR_BAD_IP

    v6 = (network == NET_IPV6) & (error == 0)
    if v6.any():
        r, p = rows[v6], l3[v6]
        bad = (h[r, p] >> 4) != 6
        short = caplen[r] < p + 40
        nxt = h[r, p + 6].astype(np.int64)
        plen = _be16(h, r, p + 4)
        addr_cols = p[:, None] + np.arange(16)
        src[r] = h[r[:, None], addr_cols + 8]
        dst[r] = h[r[:, None], addr_cols + 24]
        pos = p + 40
        ext_len = np.zeros(len(r), dtype=np.int64)
        frag6 = np.zeros(len(r), dtype=bool)
        for _ in range(4):
            hop = np.isin(nxt, (0, 43, 60))
            fr = nxt == 44
            ah = nxt == 51
            step = np.zeros(len(r), dtype=np.int64)
            hp = np.minimum(pos, WINDOW)
            step[hop] = (h[r[hop], hp[hop] + 1].astype(np.int64) + 1) * 8
            step[fr] = 8
            frag6 |= fr & ((_be16(h, r, hp + 2) & 0xFFF8) > 0)
            step[ah] = (h[r[ah], hp[ah] + 1].astype(np.int64) + 2) * 4
            moving = hop | fr | ah
            if not moving.any():
                break
            nxt = np.where(moving, h[r, hp], nxt)
            pos += step
            ext_len += step
        deep = np.isin(nxt, (0, 43, 44, 51, 60)) | (pos + 20 > WINDOW)
        proto[r] = nxt
        l4[r] = pos
        l4_len[r] = np.maximum(plen - ext_len, 0)
        fragment[r] = frag6
        error[r[short]] = ERR_TRUNCATED
        error[r[bad & ~short]] = ERR_BAD_IP
        error[r[deep & ~short & ~bad & ~frag6]] = ERR_TOO_DEEP

    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    tcp_flags = np.zeros(n, dtype=np.uint8)
    payload_off = l4.copy()
    payload_len = l4_len.copy()
    np.minimum(l4, WINDOW, out=l4)

    ip_ok = (network != NET_OTHER) & (network != NET_ARP) & (error == 0) & ~fragment
    tcp = ip_ok & (proto == PROTO_TCP)
    if tcp.any():
        r, p = rows[tcp], l4[tcp]
        doff = (h[r, p + 12] >> 4).astype(np.int64) * 4
        short = caplen[r] < p + 20
        bad = (doff < 20) | (doff > l4_len[r])
        sport[r] = _be16(h, r, p)
        dport[r] = _be16(h, r, p + 2)
        tcp_flags[r] = h[r, p + 13]
        payload_off[r] = p + doff
        payload_len[r] = np.maximum(l4_len[r] - doff, 0)
        error[r[short]] = ERR_TRUNCATED
        error[r[bad & ~short]] = ERR_BAD_TCP
    ports = ip_ok & ((proto == PROTO_UDP) | (proto == PROTO_SCTP))
    if ports.any():
        r, p = rows[ports], l4[ports]
        sport[r] = _be16(h, r, p)
        dport[r] = _be16(h, r, p + 2)
        hdr = np.where(proto[r] == PROTO_UDP, 8, 12)
        payload_off[r] = p + hdr
        payload_len[r] = np.maximum(l4_len[r] - hdr, 0)
        error[r[caplen[r] < p + 8]] = ERR_TRUNCATED
    icmp = ip_ok & ((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6))
    if icmp.any():
        r, p = rows[icmp], l4[icmp]
        sport[r] = h[r, p]
        dport[r] = h[r, p + 1]
        payload_off[r] = p + 8
        payload_len[r] = np.maximum(l4_len[r] - 8, 0)
    # Fragments keep the IP addresses for flow accounting but have no transport fields.
    payload_off += batch.offsets

    head = np.zeros(n, dtype=np.uint64)
    end = batch.offsets + caplen
    for k in range(8):
        pos = payload_off + k
        byte = np.where(pos < end, data[np.minimum(pos, len(data) - 1)], 0)
        head = (head << np.uint64(8)) | byte.astype(np.uint64)

    return Decoded(batch, network, error, vlan.astype(np.uint16), src_mac, src, dst, proto.astype(np.uint8),
                   sport, dport, tcp_flags, payload_off, payload_len, fragment, head)


def payload(dec: Decoded, i: int, limit: int = 65535) -> bytes:
    """Captured transport payload of packet i (cut at the capture length)."""
    b = dec.batch
    start = int(dec.payload_off[i])
    end = min(start + int(dec.payload_len[i]), int(b.offsets[i] + b.caplen[i]), start + limit)
    return bytes(b.data[start:end]) if end > start else b""
