#!/usr/bin/env python3
"""A capture of nothing but one-second windows of one packet each: the per-window fixed cost, alone.

    python bench/make_sparse.py [--packets 100000] [--flows 4] [OUT]

One UDP packet a second from a camera-side address to the recorder's, cycling over a few source ports, so every
window holds one packet of a flow the table already knows (after the first few) and nothing any parser wants. A
replay of it (`bench/replay_ab.py BEFORE AFTER OUT --clock cpu`) divided by its packets is what a window costs on
top of the packets in it: the share of sparse control traffic (real cameras one site after another,
`make_expanded.py`: ~97,000 windows of ~10 packets) that does not shrink with fewer packets.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

CAMERA, RECORDER = bytes([192, 168, 50, 10]), bytes([192, 168, 50, 20])
START = 1_700_000_000


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def frame(i: int, flows: int) -> bytes:
    payload = b"x" * 40
    udp = struct.pack("!HHHH", 40000 + i % flows, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, CAMERA, RECORDER)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("020000000014" "020000000010" "0800") + ip + udp


def write(path: Path, packets: int, flows: int) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))   # classic pcap, Ethernet
        for i in range(packets):
            data = frame(i, flows)
            out.write(struct.pack("<IIII", START + i, 250_000, len(data), len(data)) + data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--flows", type=int, default=4)
    args = ap.parse_args(argv)
    path = args.out or Path("/tmp/camwatch-bench") / f"sparse-{args.packets}.pcap"
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, args.packets, max(1, args.flows))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
