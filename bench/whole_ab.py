#!/usr/bin/env python3
"""The whole `camwatch replay` process of several trees (or settings) on one capture, interleaved, timed only while
nothing else runs on the machine.

    python bench/whole_ab.py CAPTURE NAME=TREE[;VAR=VALUE...] [NAME=TREE...] [--rounds 9] [--noise 0.02]
                             [--wait 300] [-- REPLAY OPTIONS]

Each NAME runs `TREE/.venv/bin/camwatch replay CAPTURE --quiet --alerts /dev/null [REPLAY OPTIONS]` with the
environment variables given after the tree, its modules compiled first into a bytecode cache of the tree's own (as
replay_peers.py does), the capture read once by an untimed run. On a shared machine the wall clock of a run measures
the other jobs as much as the change, so each run waits until the machine has been idle for a quarter of a second,
and afterwards compares the CPU the whole machine spent during the run (/proc/stat) with the child's own (os.wait4):
a run during which anything else used more than --noise seconds of CPU is discarded and run again (up to 20 times;
the count of discarded runs is printed). --wait bounds each wait for an idle machine (seconds; then the run goes
ahead). Rounds alternate the order of the trees. Printed per NAME: the median wall time, CPU time (user + system)
and peak resident size (ru_maxrss) over the rounds, each with its range.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")
# Each tree's modules are compiled into a private bytecode cache as replay_peers.py does it (this machine may set
# PYTHONDONTWRITEBYTECODE; an installed camwatch runs from bytecode): one way to do it for both.
_spec = importlib.util.spec_from_file_location("replay_peers", Path(__file__).resolve().parent / "replay_peers.py")
assert _spec is not None and _spec.loader is not None
_replay_peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_replay_peers)
ATTEMPTS = 20


def busy_seconds() -> float:
    """CPU time the whole machine has spent on anything but idle and I/O wait since boot."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _HZ


def wait_idle(quiet: float = 0.01, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        before = busy_seconds()
        time.sleep(0.25)
        if busy_seconds() - before < quiet:
            return
        if time.monotonic() >= deadline:
            sys.stderr.write("whole_ab: the machine did not go idle; measuring anyway\n")
            return


def parse_variant(spec: str) -> tuple[str, str, dict[str, str]]:
    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise SystemExit(f"whole_ab: {spec!r}: expected NAME=TREE[;VAR=VALUE...]")
    tree, *assignments = rest.split(";")
    env = {}
    for assignment in assignments:
        var, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"whole_ab: {assignment!r}: expected VAR=VALUE")
        env[var] = value
    return name, os.path.abspath(tree), env


def run(tree: str, env_vars: dict[str, str], argv_tail: list[str]) -> tuple[float, float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one replay, and the CPU others used meanwhile."""
    env = {**_replay_peers._bytecode_env(Path(tree)), **env_vars}
    argv = [os.path.join(tree, ".venv", "bin", "camwatch"), "replay", *argv_tail]
    machine = busy_seconds()
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if status != 0:
        raise SystemExit(f"whole_ab: {' '.join(argv)} failed ({status}): {errors[-500:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, busy_seconds() - machine - cpu


def main() -> int:
    argv = sys.argv[1:]
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture")
    ap.add_argument("variants", nargs="+", metavar="NAME=TREE[;VAR=VALUE...]")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--noise", type=float, default=0.02,
                    help="CPU seconds others may use during a run before it is run again (default 0.02)")
    ap.add_argument("--wait", type=float, default=300.0,
                    help="seconds to wait at most for an idle machine before each run (default 300)")
    args = ap.parse_args(argv)
    variants = [parse_variant(spec) for spec in args.variants]
    replay_argv = [args.capture, "--quiet", "--alerts", "/dev/null", *tail]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in variants}
    for _, tree, env in variants:   # warm: the capture in the page cache
        run(tree, env, replay_argv)
    discarded = 0
    for round_ in range(args.rounds):
        for name, tree, env in (variants if round_ % 2 == 0 else variants[::-1]):
            for _ in range(ATTEMPTS):
                wait_idle(limit=args.wait)
                wall, cpu, rss, others = run(tree, env, replay_argv)
                if others <= args.noise:
                    break
                discarded += 1
            results[name].append((wall, cpu, rss))
    print(f"{os.path.basename(args.capture)}: {args.rounds} rounds, {discarded} runs discarded (others used more "
          f"than {args.noise} s of CPU during them)")
    for name, _, _ in variants:
        columns = list(zip(*results[name], strict=True))
        cells = [f"{label} {statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"
                 for label, values, fmt in (("wall s", columns[0], ".3f"), ("cpu s", columns[1], ".3f"),
                                            ("peak RSS MiB", columns[2], ".0f"))]
        print(f"  {name:16s} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
