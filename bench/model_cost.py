#!/usr/bin/env python3
"""What the learned model costs replay, as the site grows: throughput with `--model` over throughput without.

    python bench/model_cost.py [--cameras 10,100,1000] [--site substream] [--seconds 130] [--repeat 5]
                               [--model models/baseline.json] [--camwatch-src DIR] [--dir /tmp/camwatch-bench]
                               [--inside] [--gc cli]

For each camera count a capture is generated (bench/make_capture.py, `--seconds` of capture time: the default
crosses two window boundaries and has 26 looks at the windows still open), then one process replays it in-process
(open_file + Sensor.process + finish, the sensor built outside the clock) alternately without and with the model,
`--repeat` times each, so the machine's load falls on both alike. Printed per capture: the median packets/s of
each, their ratio (the share of throughput the model keeps; the issue's target is >= 0.8) and the ratio of every
pair of runs, whose spread is the measurement's noise.

`--inside` also times, in the runs with the model, the anomaly detector's own hooks (observe, dns_query, tick) with
perf_counter around each call (a process-time call per hook would cost more than many hooks), and prints their
total per run beside the whole cost (with - without, CPU): what is left over is the model's effect on the rest of
the replay (its state evicting the pipeline's from the caches, the garbage collector walking its objects). The
timers add ~0.1 us per call to the runs with the model, so the kept ratio of an `--inside` run reads a little low.
(Where the detector hands the framework the hook `WindowFeatures.tallier` makes, that is what "observe" times.)

`--gc cli` runs both sides with the garbage-collector settings `camwatch replay` and `camwatch run` use (start-up
objects frozen, young collections every 20,000 allocations); the default is CPython's own, as before.

The default site, `substream`, is the hard case: ~7 packets per camera-second, so the per-device, per-second work
the model adds weighs most against the per-packet work it does not touch. `--site nvr20` is a main-stream site.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

RUN = """
import gc, json, sys, time
src, path, model_path, repeat, inside = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
tuned = sys.argv[6] == "cli"
sys.path.insert(0, src)
import sensor
assert sensor.__file__.startswith(src), sensor.__file__
from sensor.capture import open_file
from sensor.config import Config
from sensor.model import AnomalyModel
from sensor.pipeline import Sensor
model = AnomalyModel.load(model_path)
hooks = {"observe": 0.0, "dns_query": 0.0, "tick": 0.0}
if inside:
    from sensor.detect.anomaly import AnomalyDetector

    def timed(name, hook, clock=time.perf_counter):
        def run(self, *args):
            t = clock()
            out = hook(self, *args)
            hooks[name] += clock() - t
            return out
        return run

    for name in hooks:
        setattr(AnomalyDetector, name, timed(name, getattr(AnomalyDetector, name)))
    # A tree whose detector hands the framework the hook WindowFeatures.tallier makes (WindowFeatures.tally, or
    # the compiled Tally in front of it): time that hook instead.
    from sensor.model.features import WindowFeatures
    if hasattr(WindowFeatures, "tallier"):
        tallier = WindowFeatures.tallier

        def timed_tallier(self, note, clock=time.perf_counter):
            hook = tallier(self, note)

            def run(obs):
                t = clock()
                hook(obs)
                hooks["observe"] += clock() - t
            return run
        WindowFeatures.tallier = timed_tallier

def once(m):
    if tuned:   # the previous run's sensor back among the collectable objects, and collected
        gc.unfreeze()
        gc.collect()
    s = Sensor(Config(), on_alert=None, model=m)
    if tuned:
        from sensor.cli.loop import tune_garbage_collector
        tune_garbage_collector()   # as the CLI does once the sensor is built
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    reader, _ = open_file(path)
    for batch in reader:
        s.process(batch)
    s.finish()
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    s.close()
    return s.packets, elapsed, cpu, len(s.inventory)

out = {"without": [], "with": [], "without_cpu": [], "with_cpu": []}
for _ in range(repeat):
    packets, t0, c0, devices = once(None)
    _, t1, c1, _ = once(model)
    out["without"].append(t0)
    out["with"].append(t1)
    out["without_cpu"].append(c0)
    out["with_cpu"].append(c1)
out["packets"], out["devices"] = packets, devices
if inside:
    out["inside"] = {name: spent / repeat for name, spent in hooks.items()}
print(json.dumps(out))
"""


def _make_capture():
    spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(src: Path, capture: Path, model: Path, repeat: int, inside: bool = False, gc: str = "default") -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, str(src.resolve()), str(capture), str(model), str(repeat),
                          "1" if inside else "0", gc], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def report(cameras: int, result: dict) -> dict:
    packets = result["packets"]
    row = {"cameras": cameras, "devices": result["devices"], "packets": packets}
    line = f"{cameras:>6} cameras ({row['devices']} devices), {packets:>9,} packets:"
    # Wall time is what a user waits for; CPU time is steadier on a shared machine (another job's load stretches
    # wall time, not this process's CPU time). Both are reported.
    for clock, suffix in (("wall", ""), ("cpu", "_cpu")):
        without = [packets / t for t in result["without" + suffix]]
        with_model = [packets / t for t in result["with" + suffix]]
        pairs = sorted(w / o for w, o in zip(with_model, without, strict=True))
        ratio = statistics.median(with_model) / statistics.median(without)
        row[clock] = {"without_pps": statistics.median(without), "with_pps": statistics.median(with_model),
                      "ratio": ratio, "pair_ratios": pairs}
        line += (f"  {clock}: without {statistics.median(without) / 1e6:.3f} M/s, with "
                 f"{statistics.median(with_model) / 1e6:.3f} M/s, kept {ratio:.2f} "
                 f"(pairs {min(pairs):.2f}-{max(pairs):.2f})")
    if "inside" in result:
        spent = result["inside"]
        cost = statistics.median(result["with_cpu"]) - statistics.median(result["without_cpu"])
        row["inside"] = {**spent, "cost_cpu": cost}
        line += (f"\n{'':>8}model cost {cost * 1e3:.1f} ms per run (CPU), of which inside the detector's hooks "
                 + ", ".join(f"{name} {t * 1e3:.1f}" for name, t in spent.items())
                 + f" ms: {sum(spent.values()) * 1e3:.1f} ms")
    print(line, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", default="10,100,1000")
    ap.add_argument("--site", default="substream")
    ap.add_argument("--seconds", type=float, default=130.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "baseline.json")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/camwatch-bench"))
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--inside", action="store_true", help="also time the anomaly detector's own hooks")
    ap.add_argument("--gc", choices=("default", "cli"), default="default",
                    help="cli: the CLI's garbage-collector settings (sensor.cli.loop.tune_garbage_collector), as "
                         "`camwatch replay` runs")
    args = ap.parse_args(argv)
    make_capture = _make_capture()
    if args.site not in make_capture.SITES:
        ap.error(f"--site: one of {', '.join(sorted(make_capture.SITES))}")
    rows = []
    for cameras in (int(c) for c in args.cameras.split(",")):
        capture = args.dir / f"model-{args.site}-{cameras}-{args.seconds:g}s.pcap"
        if not capture.is_file():
            make_capture.write(capture, 10**9, args.site, cameras, args.seconds)
        rows.append(report(cameras, measure(args.camwatch_src, capture, args.model, args.repeat, args.inside,
                                            args.gc)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
