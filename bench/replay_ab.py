#!/usr/bin/env python3
"""Replay throughput of two source trees, interleaved: is a change a regression?

    python bench/replay_ab.py BEFORE_DIR AFTER_DIR CAPTURE [CAPTURE ...] [--rounds 3] [--repeat 3] [--clock cpu]
                              [--gc cli] [--budget spent] [--config TOML]

Each DIR holds a `sensor/` package (e.g. `git archive COMMIT sensor | tar -x -C DIR`, with the compiled extension
built or copied beside it). Every round runs each tree on each capture in a fresh process, the sensor over the
whole file `--repeat` times, and prints the best time; rounds alternate the trees so that the load of a shared
machine falls on both alike. `--clock cpu` times the process's CPU time instead of the wall clock: on a machine
other jobs load unevenly, the wall clock swings far more than the work done. `--gc cli` applies the CLI's
garbage-collector settings once the sensor is built, as `camwatch replay` does (a flood of new flows is measured
as the CLI runs it). `--budget spent` empties the new-device budget before the first packet: a forged-source flood
is then measured in its steady state, every new source held back but for the budget's refill (100/s by default),
not the first max_devices sources a fresh sensor makes devices of. `--config` builds the sensor from a
configuration file (e.g. `[networks] camera = ["10.0.0.0/8"]`: a known site, no zero-config learning) instead of
the defaults.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

RUN = """
import sys, time
src, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
clock = time.process_time if sys.argv[4] == "cpu" else time.perf_counter
tuned = sys.argv[5] == "cli"
spent = sys.argv[6] == "spent"
config_path = sys.argv[7] or None
sys.path.insert(0, src)
import sensor
assert sensor.__file__.startswith(src), sensor.__file__
from sensor.capture import open_file
from sensor.config import Config, load_config
from sensor.pipeline import Sensor
times = []
if tuned:
    from sensor.cli.loop import tune_garbage_collector
for _ in range(repeat):
    s = Sensor(load_config(config_path) if config_path else Config(), on_alert=None)
    if tuned:
        tune_garbage_collector()   # as the CLI does once the sensor is built
    if spent:
        s.inventory.admission.tokens = 0.0   # the steady state of a long flood: the start allowance spent
    t = clock()
    reader, _ = open_file(path)
    for batch in reader:
        s.process(batch)
    s.finish()
    times.append(clock() - t)
    s.close()
print(f"{s.packets} {min(times):.4f}")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--gc", choices=("default", "cli"), default="default",
                    help="cli: the CLI's garbage-collector settings (sensor.cli.loop.tune_garbage_collector)")
    ap.add_argument("--budget", choices=("fresh", "spent"), default="fresh",
                    help="spent: the new-device budget emptied before the first packet (a flood's steady state)")
    ap.add_argument("--config", default="", help="a configuration file to build the sensor from (default: none)")
    args = ap.parse_args()
    for round_ in range(1, args.rounds + 1):
        for label, tree in (("before", args.before), ("after", args.after)):
            for capture in args.captures:
                out = subprocess.run([sys.executable, "-c", RUN, tree, capture, str(args.repeat), args.clock, args.gc,
                                      args.budget, args.config],
                                     capture_output=True, text=True, check=True).stdout.split()
                packets, best = int(out[0]), float(out[1])
                print(f"round {round_} {label:<6} {capture}: {packets:,} packets, best {best:.3f} s "
                      f"({packets / best / 1e6:.2f} M packets/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
