"""Payload-profile tags: bits on each flow side (Flow.orig_tags / resp_tags) saying what its packets' first payload
bytes looked like, computed per batch before the flow stage ORs them into the flows.

The bits are defined here and nowhere else: the compiled _walk.tags takes every one of them as an argument, so the
C code has no copy that could drift (tests/unit/test_tags.py holds it to that).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensor import compiled
from sensor.decode import PROTO_TCP, PROTO_UDP, Decoded

TAG_RTP = 1 << 0         # RTP version 2 with an audio/video payload type
TAG_PPPP = 1 << 1        # CS2 PPPP framing: 0xF1, type, big-endian length of the rest
TAG_PPPP_DRW = 1 << 2    # PPPP DRW (data) frames, which carry the media
TAG_TLS = 1 << 3         # TLS records
TAG_SIGNATURE_BASE = 8   # bit 8 + i: the i-th prefix signature of the indicator file
PROFILE_NAMES = {TAG_RTP: "RTP", TAG_PPPP_DRW: "PPPP DRW frames", TAG_TLS: "TLS", TAG_PPPP: "PPPP"}


def signature_bit(index: int) -> int:
    """The tag bit of the index-th prefix signature."""
    return 1 << (TAG_SIGNATURE_BASE + index)


class PayloadTagger:
    """Tags rows of a decoded batch: media framing, TLS, and the indicator file's prefix signatures (at most eight
    bytes each, matched against the first eight payload bytes)."""

    def __init__(self, prefixes: Sequence[bytes]):
        self.values = np.array([int.from_bytes(p.ljust(8, b"\0"), "big") for p in prefixes], dtype=np.uint64)
        self.masks = np.array([int.from_bytes(b"\xff" * len(p) + b"\0" * (8 - len(p)), "big") for p in prefixes],
                              dtype=np.uint64)

    def tags(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """The bits of each row in `rows` (IP rows of the batch), as uint64."""
        if compiled.extension is None or not compiled.tags:
            return self.tags_numpy(dec, rows)
        c = np.ascontiguousarray
        return np.frombuffer(compiled.extension.tags(c(dec.proto, np.uint8), c(dec.payload_len, np.int64),
                                                     c(dec.head, np.uint64), c(rows, np.int64), self.values,
                                                     self.masks, TAG_RTP, TAG_PPPP, TAG_PPPP_DRW, TAG_TLS,
                                                     TAG_SIGNATURE_BASE), np.uint64)

    def tags_numpy(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """The reference for the compiled _walk.tags."""
        tags = np.zeros(len(rows), dtype=np.uint64)
        has = dec.payload_len[rows] >= 4
        sel = rows[has]
        if not len(sel):
            return tags
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
        return tags
