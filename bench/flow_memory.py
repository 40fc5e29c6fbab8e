#!/usr/bin/env python3
"""Memory per flow of the flow table: tracemalloc around a FlowTable (no cap) fed a whole capture.

    python bench/flow_memory.py [CAPTURE] [--camwatch-src DIR]

The capture is decoded first, outside the measurement; what is left allocated once every batch has gone through
the table, divided by the flows it holds, is the table's cost per flow (the `Flow`, its key, its first time, its
entry in the table: an `Lru`'s with the extension built, else an OrderedDict's). On bench/make_flood.py's inbound
flood every packet is a new flow.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, default=Path("/tmp/camwatch-bench/flood-200000.pcap"))
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    args = ap.parse_args()
    sys.path.insert(0, str(args.camwatch_src))
    import numpy as np

    from sensor.capture import open_file
    from sensor.config import FlowSettings
    from sensor.decode import decode
    from sensor.flows import FlowTable

    batches = [decode(batch) for batch in open_file(str(args.capture))[0]]
    gc.collect()
    tracemalloc.start()
    table = FlowTable(FlowSettings(max_flows=10_000_000))
    base = tracemalloc.get_traced_memory()[0]
    for dec in batches:
        table.update(dec, np.arange(len(dec.batch.ts)))   # the updates are dropped: only the table stays
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    print(f"{args.capture}: {len(table):,} flows, {held / max(1, len(table)):.0f} bytes per flow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
