#!/usr/bin/env python3
"""Deterministic spoofed SYN flood for the new-flow benchmark: every packet a new flow.

    python bench/make_flood.py [PATH] [-n PACKETS]     (default: /tmp/camwatch-bench/flood-1000000.pcap, 1000000)

SYNs from random addresses in 198.18.0.0/15 to random camera-VLAN addresses (10.20.0.0/16) and ports, 100,000
packets/s of capture time, built by the same generator as tests/test_flood.py (tests/flood.py). Then, e.g.:

    python bench/replay_peers.py --capture /tmp/camwatch-bench/flood-1000000.pcap --only camwatch,nfstream
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from flood import PCAP_HEADER, spoofed_flood  # noqa: E402  (the tests' generator, one copy of it)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("-n", "--packets", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.packets <= 0:
        parser.error("--packets must be positive")
    path = args.path or Path(f"/tmp/camwatch-bench/flood-{args.packets}.pcap")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PCAP_HEADER + spoofed_flood(args.packets).tobytes())
    print(f"{path}: {args.packets:,} packets, every one a new flow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
