#!/usr/bin/env python3
"""Replay against the read floor: how close in-process replay comes to merely reading the file.

    python bench/read_floor.py [CAPTURE] [--repeat 5] [--whole-process] [--modes mapped,plain,...] [--against DIR]

In one process, `--repeat` rounds, each running in turn: a plain `readinto` loop over the file into one reused
8 MiB buffer (the floor: the file from the page cache, nothing done with it), then the sensor over the file read in
each of `--modes`: `mapped` through the guarded memory map (sensor.mapped, the default for files of
capture.MAP_FROM or more), `prefetch` the same with the next chunk's pages faulted in by a second thread
(sensor.mapped.PREFETCH), `plain` with `readinto` in line (MAP_FROM = 0), `ahead` with the read-ahead thread
(sensor.readahead: the next chunk read on the second core), `overlap` mapped with the next batch read and decoded on
a second thread while the current one is processed (sensor.overlap; in a tree without it, the same as `mapped`).
The sensor is built outside the clock, as in
bench/replay_ab.py. Printed: the median of each and its spread, in wall time, in CPU time of the process (every
thread; a shared machine stretches it far less than wall time) and in CPU time of the main thread (what a second,
idle core could not take over), each as a fraction of the floor's (the issue's target: >= 0.8). `--against DIR`
runs another tree (its `sensor/` with its compiled extensions; `git archive COMMIT sensor | tar -x -C DIR`) in
the same rounds, for before/after.

--whole-process adds `camwatch replay CAPTURE --quiet --alerts /dev/null` of each tree timed as a whole process
(interpreter, imports, the manuf table and the state database included; CPU from getrusage), in the same rounds.

CAPTURE defaults to /tmp/camwatch-bench/vlan100-1000000.pcap, generated if missing (1,000,000 packets, 1.2 GiB:
keep such files out of the repository).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
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
src, path, repeat, modes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
sys.path.insert(0, src)
import sensor.capture as capture
import sensor.mapped as mapped
from sensor.config import Config
from sensor.pipeline import Sensor

MAP_FROM = capture.MAP_FROM or capture.CHUNK_BYTES   # measured in a tree where it is off by default too

def floor():
    buf = bytearray(capture.CHUNK_BYTES)
    view = memoryview(buf)
    t, c = time.perf_counter(), time.process_time()
    with open(path, "rb") as fh:
        while fh.readinto(view):
            pass
    cpu = time.process_time() - c
    return time.perf_counter() - t, cpu, cpu

try:
    from sensor import overlap
except ImportError:   # a tree before sensor/overlap.py: its "overlap" rows are its mapped replay
    overlap = None

def replay(how):
    capture.MAP_FROM = MAP_FROM if how in ("mapped", "prefetch", "overlap") else 0
    capture.READ_AHEAD_FROM = capture.CHUNK_BYTES + 1 if how == "ahead" else 0
    mapped.PREFETCH = how == "prefetch"
    s = Sensor(Config(), on_alert=None)
    gc.collect()
    t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
    reader, _ = capture.open_file(path)
    batches = overlap.batches(reader, "on") if how == "overlap" and overlap is not None else iter(reader)
    for batch in batches:
        s.process(batch)
    batches.close()
    s.finish()
    elapsed = time.perf_counter() - t, time.process_time() - c, time.thread_time() - m
    s.close()
    return s.packets, elapsed

out = {how: [] for how in ["floor"] + modes}
for _ in range(repeat):
    out["floor"].append(floor())
    for how in modes:
        packets, t = replay(how)
        out[how].append(t)
out["packets"] = packets
print(json.dumps(out))
"""


def whole_process(capture: Path, src: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `camwatch replay` of the tree in `src`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sensor", "replay", str(capture), "--quiet", "--alerts", "/dev/null"],
                   cwd=src, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, every core) since boot: /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # less idle and iowait


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(cores: float, patience: float = 30.0) -> None:
    """Until the other processes use at most `cores` of the machine over half a second (or `patience` passed)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        busy = busy_seconds()
        time.sleep(0.5)
        if (busy_seconds() - busy) / 0.5 <= cores:
            return


MODES = {"mapped": "in-process replay, memory-mapped", "prefetch": "in-process replay, mapped + prefetch thread",
         "plain": "in-process replay, readinto", "ahead": "in-process replay, read-ahead thread",
         "overlap": "in-process replay, mapped + overlap thread"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--whole-process", action="store_true")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="another tree (its sensor/ and compiled extensions) run in the same rounds: before/after")
    ap.add_argument("--modes", default="mapped,plain,ahead",
                    help="in-process read modes, comma-separated: " + ", ".join(MODES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--wait-quiet", type=float, metavar="CORES",
                    help="before each tree's run, wait (30 s at most) until the other processes use at most this "
                         "many cores; each run's other load is measured either way and rounds run beside more "
                         "than this are left out of a second, quiet-rounds summary")
    args = ap.parse_args(argv)
    if not args.capture.is_file():
        if args.capture != DEFAULT:
            ap.error(f"{args.capture}: no such file")
        spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
        make_capture = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make_capture)
        make_capture.write(args.capture, 1_000_000, "vlan100")
    trees = {"": args.camwatch_src.resolve()}
    if args.against is not None:
        trees = {"before: ": args.against.resolve(), "after: ": args.camwatch_src.resolve()}
    modes = args.modes.split(",")
    rounds: dict = {}
    # One in-process run per tree and round, the whole-process runs between them: the machine's load falls on all
    # alike.
    others: dict[str, list[float]] = {}   # per tree and round: the cores other processes used meanwhile
    for _ in range(args.repeat):
        for tag, src in trees.items():
            if args.wait_quiet is not None:
                wait_for_quiet(args.wait_quiet)
            busy, ours, t = busy_seconds(), children_cpu(), time.perf_counter()
            result = json.loads(subprocess.run([sys.executable, "-c", RUN, str(src), str(args.capture), "1",
                                                args.modes], capture_output=True, text=True, check=True).stdout)
            others.setdefault(tag, []).append(max(0.0, (busy_seconds() - busy) - (children_cpu() - ours))
                                              / (time.perf_counter() - t))
            for key in ["floor"] + modes:
                rounds.setdefault(tag + key, []).extend(result[key])
            packets = result["packets"]
            if args.whole_process:
                rounds.setdefault(tag + "whole", []).append(whole_process(args.capture, src))
    size = args.capture.stat().st_size
    print(f"{args.capture}: {packets:,} packets, {size / 2**20:.0f} MiB, {args.repeat} rounds; medians (min-max); "
          "fraction of the floor by wall time, by CPU time (the process's, every thread) and by the main thread's CPU")
    rows = summarise(trees, modes, rounds, others, packets)
    if args.wait_quiet is not None:
        quiet = {tag: [load <= args.wait_quiet for load in loads] for tag, loads in others.items()}
        print(f"rounds whose runs had other processes using at most {args.wait_quiet} cores: "
              + ", ".join(f"{tag or 'this tree: '}{sum(kept)}" for tag, kept in quiet.items()))
        if all(any(kept) for kept in quiet.values()):
            kept_rounds = {name: [run for run, keep in zip(runs, quiet[name[:len(name) - len(key)]], strict=True)
                                  if keep]
                           for key in ["floor"] + modes + ["whole"] for name, runs in rounds.items()
                           if name.endswith(key) and name[:len(name) - len(key)] in quiet}
            summarise(trees, modes, kept_rounds, {tag: [x for x, k in zip(others[tag], quiet[tag], strict=True) if k]
                                                  for tag in trees}, packets)
    if args.json:
        args.json.write_text(json.dumps({"packets": packets, "bytes": size, "rows": rows, "others": others},
                                        indent=1) + "\n")
    return 0


def summarise(trees: dict, modes: list[str], rounds: dict, others: dict, packets: int) -> dict:
    rows = {}
    labels = {"floor": "readinto loop (the floor)", **MODES, "whole": "whole process `camwatch replay`"}
    for tag in trees:
        print(f"  {tag}other processes used {statistics.median(others[tag]):.2f} cores (median; "
              f"{min(others[tag]):.2f}-{max(others[tag]):.2f}) during this tree's in-process runs")
        floor_wall, floor_cpu = (statistics.median(run[i] for run in rounds[tag + "floor"]) for i in (0, 1))
        for key in ["floor"] + modes + ["whole"]:
            runs = rounds.get(tag + key)
            if not runs:
                continue
            wall, cpu = [run[0] for run in runs], [run[1] for run in runs]
            main = [run[2] for run in runs if len(run) > 2]
            med, cmed = statistics.median(wall), statistics.median(cpu)
            rows[tag + key] = {"seconds": wall, "cpu": cpu, "main_thread_cpu": main, "median": med,
                               "cpu_median": cmed, "pps": packets / med, "of_floor": floor_wall / med,
                               "of_floor_cpu": floor_cpu / cmed}
            line = (f"  {tag + labels[key]:<52} {med:6.3f} s ({min(wall):.3f}-{max(wall):.3f}) {floor_wall / med:5.2f}"
                    f" | CPU {cmed:6.3f} s ({min(cpu):.3f}-{max(cpu):.3f}) {floor_cpu / cmed:5.2f}")
            if main:   # the critical path on a machine with a core to spare
                line += f" | main thread {statistics.median(main):6.3f} s {floor_cpu / statistics.median(main):5.2f}"
            print(line)
    return rows


if __name__ == "__main__":
    sys.exit(main())
