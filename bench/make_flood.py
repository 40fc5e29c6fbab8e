#!/usr/bin/env python3
"""Deterministic spoofed SYN flood for the new-flow benchmark: every packet a new flow.

    python bench/make_flood.py [PATH] [-n PACKETS] [--kind inbound|camera-sources]
        (default: /tmp/camwatch-bench/flood-1000000.pcap, 1000000, inbound)

inbound: SYNs from random addresses in 198.18.0.0/15 to random camera-VLAN addresses (10.20.0.0/16) and ports.
camera-sources: SYNs from a million distinct forged camera-side sources (10.0.0.0/8) to as many Internet addresses,
port 443: an identity flood, every packet a new device (docs/reliability.md).
Both at 100,000 packets/s of capture time, built by the same generator as the tests (tests/flood.py). Then, e.g.:

    python bench/replay_peers.py --capture /tmp/camwatch-bench/flood-1000000.pcap --only camwatch,nfstream
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from flood import PCAP_HEADER, spoofed_camera_sources, spoofed_flood  # noqa: E402  (the tests' generator, one copy of it)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("-n", "--packets", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("inbound", "camera-sources"), default="inbound")
    args = parser.parse_args()
    if args.packets <= 0:
        parser.error("--packets must be positive")
    suffix = "" if args.kind == "inbound" else "-camera-sources"
    path = args.path or Path(f"/tmp/camwatch-bench/flood-{args.packets}{suffix}.pcap")
    path.parent.mkdir(parents=True, exist_ok=True)
    make = spoofed_flood if args.kind == "inbound" else spoofed_camera_sources
    path.write_bytes(PCAP_HEADER + make(args.packets).tobytes())
    print(f"{path}: {args.packets:,} packets, every one a new flow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
