"""Payload-profile tags: bits on each flow side (Flow.orig_tags / resp_tags) saying what its packets' first payload
bytes looked like, computed per batch before the flow stage ORs them into the flows.

The bits are defined here and nowhere else: the compiled _walk.tags takes every one of them as an argument, so the
C code has no copy that could drift (tests/unit/test_tags.py holds it to that).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensor import compiled
from sensor.decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Decoded

TAG_RTP = 1 << 0         # RTP version 2 with an audio/video payload type
TAG_PPPP = 1 << 1        # CS2 PPPP framing: 0xF1, type, big-endian length of the rest
TAG_PPPP_DRW = 1 << 2    # PPPP DRW (data) frames, which carry the media
TAG_TLS = 1 << 3         # TLS records
# ICMP flows are keyed without their message type (a ping and its replies are one flow), so the type is kept here:
TAG_ICMP_ECHO = 1 << 4   # ICMP/ICMPv6 echo request or reply (ping)
TAG_ICMP_OTHER = 1 << 5  # any other ICMP message (unreachable, time exceeded, redirect...)
# A CS2 PPPP device login (MSG_DEV_LGN and its CRC, KEY and DSK forms: types 0x10, 0x12, 0x14, 0x16): only the
# device end of a P2P camera registers its UID with the P2P servers; a viewing app never sends these.
TAG_PPPP_LOGIN = 1 << 6
PPPP_LOGIN_TYPES = (0x10, 0x12, 0x14, 0x16)
TAG_SIGNATURE_BASE = 8   # bit 8 + i: the i-th prefix signature of the indicator file
PROFILE_NAMES = {TAG_RTP: "RTP", TAG_PPPP_DRW: "PPPP DRW frames", TAG_TLS: "TLS", TAG_PPPP: "PPPP"}
_ECHO_TYPES = {PROTO_ICMP: (8, 0), PROTO_ICMPV6: (128, 129)}   # request, reply


def signature_bit(index: int) -> int:
    """The tag bit of the index-th prefix signature."""
    return 1 << (TAG_SIGNATURE_BASE + index)


class PayloadTagger:
    """Tags rows of a decoded batch: media framing, TLS, ICMP echo, and the indicator file's prefix signatures
    ((leading bytes, mask) pairs of at most eight bytes, matched against the first eight payload bytes)."""

    def __init__(self, prefixes: Sequence[tuple[bytes, bytes]]):
        for value, mask in prefixes:
            if len(value) != len(mask) or len(value) > 8:
                raise ValueError("a prefix signature is a (value, mask) pair of at most 8 bytes each")
        self.values = np.array([int.from_bytes(v.ljust(8, b"\0"), "big") for v, _ in prefixes], dtype=np.uint64)
        self.masks = np.array([int.from_bytes(m.ljust(8, b"\0"), "big") for _, m in prefixes], dtype=np.uint64)
        self.values &= self.masks   # a value bit outside its mask could never match

    def tags(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """The bits of each row in `rows` (IP rows of the batch), as uint64."""
        if compiled.extension is None or not compiled.tags:
            return self.tags_numpy(dec, rows)
        c = np.ascontiguousarray
        out = np.frombuffer(compiled.extension.tags(c(dec.proto, np.uint8), c(dec.payload_len, np.int64),
                                                    c(dec.head, np.uint64), c(rows, np.int64), self.values,
                                                    self.masks, TAG_RTP, TAG_PPPP, TAG_PPPP_DRW, TAG_TLS,
                                                    TAG_SIGNATURE_BASE), np.uint64)
        return icmp_tags(dec, rows, pppp_login_tags(dec, rows, out))

    def tags_numpy(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """The reference for the compiled _walk.tags (and icmp_tags, which both paths share)."""
        tags = np.zeros(len(rows), dtype=np.uint64)
        has = dec.payload_len[rows] >= 4
        sel = rows[has]
        if not len(sel):
            return icmp_tags(dec, rows, tags)
        head = dec.head[sel]
        b = [((head >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)).astype(np.int64) for k in range(4)]
        plen = dec.payload_len[sel]
        udp = dec.proto[sel] == PROTO_UDP
        t = np.zeros(len(sel), dtype=np.uint64)
        pt = b[1] & 0x7F
        rtp = udp & ((b[0] & 0xC0) == 0x80) & (plen >= 12) & ((pt <= 34) | ((pt >= 96) & (pt <= 127)))
        t[rtp] |= np.uint64(TAG_RTP)
        pppp = udp & (b[0] == 0xF1) & (((b[2] << 8) | b[3]) == plen - 4)
        t[pppp] |= np.uint64(TAG_PPPP)
        t[pppp & (b[1] == 0xD0)] |= np.uint64(TAG_PPPP_DRW)
        tls = (dec.proto[sel] == PROTO_TCP) & ((b[0] == 0x16) | (b[0] == 0x17)) & (b[1] == 0x03)
        t[tls] |= np.uint64(TAG_TLS)
        for i, (value, mask) in enumerate(zip(self.values, self.masks, strict=True)):
            t[(head & mask) == value] |= np.uint64(signature_bit(i))
        tags[has] = t
        return icmp_tags(dec, rows, pppp_login_tags(dec, rows, tags))


def pppp_login_tags(dec: Decoded, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` with TAG_PPPP_LOGIN on the PPPP rows whose message type is a device login. Outside both payload
    taggers (which it leaves equal), like icmp_tags: PPPP rows are few, so it costs one pass over the bits."""
    found = np.flatnonzero(out & np.uint64(TAG_PPPP))
    if not len(found):
        return out
    kind = (dec.head[rows[found]] >> np.uint64(48)) & np.uint64(0xFF)
    login = found[np.isin(kind, np.array(PPPP_LOGIN_TYPES, dtype=np.uint64))]
    if len(login):
        out = out if out.flags.writeable else out.copy()
        out[login] |= np.uint64(TAG_PPPP_LOGIN)
    return out


def icmp_tags(dec: Decoded, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` with the ICMP echo / other bits of the ICMP rows added (rows: IP rows of the batch, ascending). Read
    from the decoded type (dec.sport), not the payload, so it sits outside both payload taggers (which it leaves
    equal). A later fragment has no type. Costs one pass over the batch's protocol column unless ICMP is there."""
    proto = dec.proto
    found = np.flatnonzero(((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)) & ~dec.fragment)
    if not len(found) or not len(rows):
        return out
    at = np.minimum(np.searchsorted(rows, found), len(rows) - 1)
    keep = rows[at] == found      # ICMP rows the caller did not ask about stay out
    at, found = at[keep], found[keep]
    if not len(found):
        return out
    out = out if out.flags.writeable else out.copy()
    kind, p = dec.sport[found], proto[found]
    echo = np.zeros(len(found), dtype=bool)
    for number, types in _ECHO_TYPES.items():
        echo |= (p == number) & np.isin(kind, types)
    out[at] |= np.where(echo, np.uint64(TAG_ICMP_ECHO), np.uint64(TAG_ICMP_OTHER))
    return out
