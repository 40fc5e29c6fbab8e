"""sensor/_walk.c decode_fast: the compiled decode's shortcut for the usual camera packet (Ethernet, untagged or one
tag, IPv4 without options, captured to 8 bytes past the IP header, for TCP to the end of its header) gives what
the numpy decode, the reference, gives, for the packets it takes and for those next to them that it must leave to
the general path."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import sensor.decode as d
from sensor import compiled

from .builders import batch_of, decoded_fields

pytestmark = pytest.mark.skipif(compiled.extension is None, reason="the C extension sensor._walk was not built")

DST, SRC = bytes.fromhex("001132000002"), bytes.fromhex("4419b6000007")
TPIDS = (0x8100, 0x88A8, 0x9100)


def _same(frames: list[bytes], caplens: list[int], linktype: int | list[int] = 1) -> None:
    batch = batch_of(frames, linktype=linktype, caplen=caplens)
    got, want = decoded_fields(d.decode(batch)), decoded_fields(d.decode_numpy(batch))
    for name in want:
        assert got[name] == want[name], name


def frame(tags=((0x8100, 20),), ethertype=0x0800, first=0x45, total=None, frag=0, proto=17, l4=b"", size=200,
          rng=None) -> bytes:
    """An Ethernet frame with `tags` ((tpid, vid) each), then an IPv4 header of first byte `first`, total length
    `total` (the IP packet's length by default), fragment field `frag`, protocol `proto`, then `l4` and filler to
    `size` bytes (random from `rng`, else a counting pattern)."""
    head = DST + SRC
    for tpid, vid in tags:
        head += struct.pack(">HH", tpid, vid)
    head += struct.pack(">H", ethertype)
    rest = size - len(head) - 20
    filler = (rng.integers(0, 256, max(rest - len(l4), 0), dtype=np.uint8).tobytes() if rng is not None
              else bytes(i % 251 for i in range(max(rest - len(l4), 0))))
    body = (l4 + filler)[:max(rest, 0)]
    ip = struct.pack(">BBHHHBBH4s4s", first, 0, 20 + len(body) if total is None else total, 1, frag, 64, proto, 0,
                     bytes((10, 20, 0, 7)), bytes((203, 0, 113, 80)))
    return head + ip + body


def tcp(doff=5, flags=0x18) -> bytes:
    return struct.pack(">HHIIBBHHH", 50000, 443, 1, 1, doff << 4, flags, 1000, 0, 0)


def udp() -> bytes:
    return struct.pack(">HHHH", 50000, 554, 100, 0)


def test_the_usual_packets_and_their_neighbours_decode_as_the_reference_does():
    """Every way the shortcut reads a field, and every way a packet misses it by one thing."""
    frames, caplens = [], []

    def add(f: bytes, caplen: int | None = None) -> None:
        frames.append(f)
        caplens.append(len(f) if caplen is None else caplen)

    for tags in ((), ((0x8100, 20),), ((0x88A8, 4095),), ((0x9100, 0xF123),), ((0x8100, 1), (0x8100, 2))):
        for proto, l4 in ((17, udp()), (132, udp() + bytes(4)), (6, tcp()), (6, tcp(doff=15)), (6, tcp(doff=4)),
                          (6, tcp(doff=0)), (1, b"\x08\x00"), (58, b"\x80\x01"), (47, b"\x00" * 8), (0, b"")):
            add(frame(tags, proto=proto, l4=l4))
            add(frame(tags, proto=proto, l4=l4, total=19))          # bad IP header: no transport
            add(frame(tags, proto=proto, l4=l4, total=20))          # no room for the transport header
            add(frame(tags, proto=proto, l4=l4, total=27))          # UDP's header cut by the IP length
            add(frame(tags, proto=proto, l4=l4, frag=0x2000))       # more fragments, offset 0: still a first one
            add(frame(tags, proto=proto, l4=l4, frag=0x0001))       # a later fragment: no transport header
            add(frame(tags, proto=proto, l4=l4, frag=0x4000))       # don't fragment
        for first in (0x46, 0x4F, 0x44, 0x40, 0x55, 0x65, 0x05, 0x00):   # options, short, other versions
            add(frame(tags, first=first, proto=6, l4=tcp()))
        for ethertype in (0x86DD, 0x0806, 0x8100, 0x88A8, 0x0801, 0x0000):
            add(frame(tags, ethertype=ethertype, proto=6, l4=tcp()))
    # at and around the shortest frames the shortcut takes (42 and 54 bytes untagged, 46 and 58 behind a tag)
    for size in range(30, 80):
        for tags in ((), ((0x8100, 20),)):
            for proto, l4 in ((6, tcp()), (17, udp()), (1, b"\x08\x00")):
                f = frame(tags, proto=proto, l4=l4, size=max(size, 80))
                add(f, size)
    _same(frames, caplens)


def test_a_frame_of_another_link_type_is_left_to_the_general_path():
    f = frame(proto=17, l4=udp())
    _same([f, f, f, f], [len(f)] * 4, linktype=[1, 113, 276, 101])


def test_random_frames_in_and_around_the_shortcut():
    """4,000 frames, a third of them the shortcut's kind, with random headers and bytes where the shortcut reads
    fields (ports, flags, data offset, lengths, fragment field, addresses behind random tags)."""
    rng = np.random.default_rng(16)
    frames, caplens = [], []
    for _ in range(4000):
        ntags = int(rng.choice([0, 1, 1, 1, 2]))
        tags = tuple((int(rng.choice(TPIDS + (0x0800,))), int(rng.integers(0, 1 << 16))) for _ in range(ntags))
        proto = int(rng.choice([6, 6, 17, 17, 132, 1, 58, 2, 47]))
        l4 = rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
        size = int(rng.integers(30, 300))
        f = frame(tags, ethertype=int(rng.choice([0x0800] * 8 + [0x86DD, 0x0806])),
                  first=int(rng.choice([0x45] * 8 + [0x46, 0x44, 0x65])),
                  total=int(rng.integers(0, 400)) if rng.random() < 0.5 else None,
                  frag=int(rng.choice([0, 0, 0, 0x2000, 0x4000, int(rng.integers(0, 1 << 16))])),
                  proto=proto, l4=l4, size=size, rng=rng)
        frames.append(f)
        caplens.append(int(rng.integers(min(30, len(f)), len(f) + 1)) if rng.random() < 0.3 else len(f))
    taken = sum(1 for f, c in zip(frames, caplens, strict=True) if _fast_kind(f, c))
    assert taken > 1000   # a good share of the comparison is of packets the shortcut decodes
    _same(frames, caplens)


def _fast_kind(f: bytes, caplen: int) -> bool:
    """Whether decode_fast takes the frame (its conditions, read in Python)."""
    if caplen < 42:
        return False
    et, l3 = int.from_bytes(f[12:14], "big"), 14
    if et in TPIDS:
        et, l3 = int.from_bytes(f[16:18], "big"), 18
    return et == 0x0800 and caplen >= l3 + 28 and f[l3] == 0x45 and (f[l3 + 9] != 6 or caplen >= l3 + 40)
