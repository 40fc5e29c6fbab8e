#!/usr/bin/env python3
"""Replay against the read floor: how close in-process replay comes to merely reading the file.

    python bench/read_floor.py [CAPTURE] [--repeat 5] [--whole-process]

In one process, `--repeat` rounds, each running in turn: a plain `readinto` loop over the file into one reused
8 MiB buffer (the floor: the file from the page cache, nothing done with it), then the sensor over the file read
three ways: through a memory map (sensor.mapped; off by default, capture.MAP_FROM = 0, for its SIGBUS trade-off), with
`readinto` in line (MAP_FROM = 0), and with the read-ahead thread (sensor.readahead: the next chunk read on the
second core; MAP_FROM = 0, READ_AHEAD_FROM on). The sensor is built outside the clock, as in bench/replay_ab.py.
Printed: the median of each, its spread, each replay's packets/s as a fraction of the floor's (the issue's target:
>= 0.8) and the median CPU time of the process over the run (both threads), which a shared machine stretches less
than wall time.

--whole-process adds `camwatch replay CAPTURE --quiet --alerts /dev/null` timed as a whole process (interpreter,
imports, the manuf table and the state database included), in the same rounds.

CAPTURE defaults to /tmp/camwatch-bench/vlan100-1000000.pcap, generated if missing (1,000,000 packets, 1.2 GiB:
keep such files out of the repository).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT = Path("/tmp/camwatch-bench/vlan100-1000000.pcap")

RUN = """
import gc, json, sys, time
src, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, src)
import sensor.capture as capture
from sensor.config import Config
from sensor.pipeline import Sensor

MAP_FROM = capture.MAP_FROM or capture.CHUNK_BYTES   # measured even though off by default

def floor():
    buf = bytearray(capture.CHUNK_BYTES)
    view = memoryview(buf)
    t, c = time.perf_counter(), time.process_time()
    with open(path, "rb") as fh:
        while fh.readinto(view):
            pass
    return time.perf_counter() - t, time.process_time() - c

def replay(how):
    capture.MAP_FROM = MAP_FROM if how == "mapped" else 0
    capture.READ_AHEAD_FROM = capture.CHUNK_BYTES + 1 if how == "ahead" else 0
    s = Sensor(Config(), on_alert=None)
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    reader, _ = capture.open_file(path)
    for batch in reader:
        s.process(batch)
    s.finish()
    elapsed = time.perf_counter() - t, time.process_time() - c
    s.close()
    return s.packets, elapsed

out = {"floor": [], "mapped": [], "plain": [], "ahead": []}
for _ in range(repeat):
    out["floor"].append(floor())
    for how in ("mapped", "plain", "ahead"):
        packets, t = replay(how)
        out[how].append(t)
out["packets"] = packets
print(json.dumps(out))
"""


def whole_process(capture: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sensor", "replay", str(capture), "--quiet", "--alerts", "/dev/null"],
                   cwd=REPO, check=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--whole-process", action="store_true")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.capture.is_file():
        if args.capture != DEFAULT:
            ap.error(f"{args.capture}: no such file")
        spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
        make_capture = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make_capture)
        make_capture.write(args.capture, 1_000_000, "vlan100")
    rounds: dict = {"floor": [], "mapped": [], "plain": [], "ahead": [], "whole": []}
    cpu: dict = {key: [] for key in rounds}
    # One in-process run per round, the whole-process run between them: the machine's load falls on all alike.
    for _ in range(args.repeat):
        src = str(args.camwatch_src.resolve())
        result = json.loads(subprocess.run([sys.executable, "-c", RUN, src, str(args.capture), "1"],
                                           capture_output=True, text=True, check=True).stdout)
        for key in ("floor", "mapped", "plain", "ahead"):
            rounds[key] += [wall for wall, _ in result[key]]
            cpu[key] += [seconds for _, seconds in result[key]]
        packets = result["packets"]
        if args.whole_process:
            rounds["whole"].append(whole_process(args.capture))
    size = args.capture.stat().st_size
    floor = statistics.median(rounds["floor"])
    print(f"{args.capture}: {packets:,} packets, {size / 2**20:.0f} MiB, {args.repeat} rounds (median, min-max)")
    rows = {}
    for key, label in (("floor", "readinto loop (the floor)"), ("mapped", "in-process replay, mapped (off by default)"),
                       ("plain", "in-process replay, readinto"), ("ahead", "in-process replay, read-ahead"),
                       ("whole", "whole process `camwatch replay`")):
        times = rounds[key]
        if not times:
            continue
        med = statistics.median(times)
        rows[key] = {"seconds": times, "median": med, "pps": packets / med, "of_floor": floor / med,
                     "cpu": cpu[key], "cpu_median": statistics.median(cpu[key]) if cpu[key] else None}
        print(f"  {label:<36} {med:6.3f} s ({min(times):.3f}-{max(times):.3f})  {packets / med / 1e6:5.2f} M packets/s"
              f"  {floor / med:5.2f} of the floor"
              + (f"  CPU {statistics.median(cpu[key]):.3f} s" if cpu[key] else ""))
    if args.json:
        args.json.write_text(json.dumps({"packets": packets, "bytes": size, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
