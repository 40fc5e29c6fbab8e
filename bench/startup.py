#!/usr/bin/env python3
"""Start-up: the whole `camwatch replay` process over a 1-packet capture, against `python -c pass` in the same run.

    python bench/startup.py [--repeat 15] [--camwatch-src DIR] [--against DIR]

Each round runs, in turn: `python -c pass`, `python -c "import numpy"` (the one import replay cannot do without),
the same with one OpenBLAS thread (as camwatch starts it) and `python -m sensor replay ONE.pcap --quiet --alerts
/dev/null` (interpreter, imports, configuration, the manuf table, the state database, one packet, the summary and
exit). Printed: the median wall time of each (and its spread), camwatch's time less the interpreter's, and the
median CPU time (user + system of the child), which a shared machine stretches less than wall time. The issue's
target: <= 0.15 s of wall time before the first packet.

--against DIR adds the same replay run from another source tree (a checkout before a change) in the same rounds,
interleaved, so that a shared machine's load falls on both alike.

Bytecode is cached under a private prefix (PYTHONPYCACHEPREFIX) and warmed by a first, untimed round: an installed
camwatch runs from compiled bytecode, and PYTHONDONTWRITEBYTECODE would otherwise compile every module every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    ap.add_argument("--against", type=Path, metavar="DIR", help="another source tree, run in the same rounds")
    args = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
    make_capture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_capture)
    with tempfile.TemporaryDirectory(prefix="camwatch-startup-") as tmp:
        one = Path(tmp) / "one.pcap"
        make_capture.write(one, 1)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env["PYTHONPATH"] = str(args.camwatch_src)
        replay = [sys.executable, "-m", "sensor", "replay", str(one), "--quiet", "--alerts", "/dev/null"]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
            "  ... one BLAS thread": [sys.executable, "-c", "import numpy"],
            "camwatch replay (1 packet)": replay,
        }
        envs = dict.fromkeys(commands, env)
        # what numpy costs camwatch, which starts OpenBLAS with one thread (sensor/cli/__init__.py)
        envs["  ... one BLAS thread"] = {**env, "OPENBLAS_NUM_THREADS": "1"}
        if args.against:
            name = f"  ... from {args.against}"
            commands[name] = replay
            envs[name] = {**env, "PYTHONPATH": str(args.against),
                          "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache-against")}
        for name, cmd in commands.items():   # warm: bytecode written, files in the page cache
            timed(cmd, envs[name], Path(tmp))
        walls: dict[str, list[float]] = {k: [] for k in commands}
        cpus: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                wall, cpu = timed(cmd, envs[name], Path(tmp))
                walls[name].append(wall)
                cpus[name].append(cpu)
    base = statistics.median(walls["python -c pass"])
    print(f"{args.repeat} rounds, median (min-max) wall seconds; median CPU seconds")
    for name in commands:
        w, c = walls[name], cpus[name]
        print(f"  {name:<28} {statistics.median(w):.3f} ({min(w):.3f}-{max(w):.3f})  "
              f"beyond the interpreter {statistics.median(w) - base:+.3f}  CPU {statistics.median(c):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
