#!/usr/bin/env python3
"""What the flow log (`--flows`) costs a replay: the same capture through the sensor without it and with it writing
to a file, interleaved in fresh processes, median of the runs.

    nice -n 10 python bench/flow_log_cost.py CAPTURE [CAPTURE ...] [--runs 5] [--out /tmp/flows.jsonl]

Pass `--src DIR` (a `sensor/` tree, e.g. `git archive COMMIT sensor | tar -x -C DIR`, with its compiled extension)
to time another commit's sensor without a flow log: the "off" cost against the code before the flow log existed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

RUN = """
import gc, sys, time
src, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
if src:
    sys.path.insert(0, src)
import sensor
from sensor.capture import open_file
from sensor.config import Config
from sensor.pipeline import Sensor
s = Sensor(Config(), on_alert=None)
log = None
if out:
    from sensor.export.flow_log import FlowLog
    log = FlowLog(out)
    log.attach(s)
gc.freeze()
gc.set_threshold(20_000, 20, 10)   # the CLI's settings (sensor.cli.loop.tune_garbage_collector)
t, cpu = time.perf_counter(), time.process_time()
reader, _ = open_file(path)
for batch in reader:
    s.process(batch)
s.finish()
if log is not None:
    log.close()
elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
print(s.packets, s.flows.created, f"{elapsed:.4f}", f"{cpu:.4f}", log.file.lines if log else 0)
"""


def run(src: str, capture: str, out: str) -> tuple[int, int, float, float, int]:
    """packets, flows, wall seconds, CPU seconds of the process, records written"""
    fields = subprocess.run([sys.executable, "-c", RUN, src, capture, out], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parent.parent).stdout.split()
    return int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3]), int(fields[4])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="/tmp/camwatch-bench-flows.jsonl")
    ap.add_argument("--src", default="", help="another tree's sensor/ for an extra 'before' column (no flow log)")
    args = ap.parse_args()
    variants = [("off", "", ""), ("on", "", args.out)] + ([("before", args.src, "")] if args.src else [])
    for capture in args.captures:
        wall: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        written = 0
        for _ in range(args.runs):
            for name, src, out in variants:
                packets, flows, elapsed, used, lines = run(src, capture, out)
                wall[name].append(elapsed)
                cpu[name].append(used)
                written = max(written, lines)
        print(f"{capture}: {packets:,} packets, {flows:,} flows, {written:,} records; median of {args.runs}, "
              f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)
        for name in wall:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"  {name:<6} wall {w:.3f} s ({packets / w / 1e6:.2f} M packets/s), CPU {c:.3f} s; "
                  f"CPU runs {', '.join(f'{x:.3f}' for x in cpu[name])}", flush=True)
        on_off = statistics.median(cpu["on"]) / statistics.median(cpu["off"])
        print(f"  on/off CPU {on_off:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
