#!/usr/bin/env python3
"""The pcapng record walk alone: CPU seconds to read a capture through CaptureReader with the compiled walk of
packet blocks (compiled.walk_pcapng, sensor/_walk.c) and with its Python reference, alternated round by round.

    python bench/pcapng_walk.py CAPTURE [CAPTURE ...] [--rounds 3]

Nothing but the reader runs (no decode, no flows), so the difference is the walk's; a classic pcap beside the
pcapng gives the compiled pcap walk's time for the same packets. Make a pcapng of a classic capture with
`editcap -F pcapng IN.pcap OUT.pcapng` (as dumpcap and mergecap write it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sensor import compiled
from sensor.capture import open_file


def read(path: str, fast: bool) -> tuple[int, float]:
    compiled.walk_pcapng = fast
    start = time.process_time()
    reader, _ = open_file(path)
    packets = sum(len(batch) for batch in reader)
    return packets, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if compiled.extension is None:
        raise SystemExit("the C extension is not built: nothing to compare")
    for r in range(args.rounds):
        for path in args.captures:
            for fast in (False, True):
                packets, cpu = read(path, fast)
                walk = "compiled" if fast else "python  "
                print(f"round {r + 1} {Path(path).name} {walk}: {packets:,} packets, {cpu:.3f} CPU s", flush=True)


if __name__ == "__main__":
    main()
