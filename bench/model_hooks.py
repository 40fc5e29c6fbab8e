#!/usr/bin/env python3
"""The anomaly detector's hooks alone, replayed: for counting their instructions (callgrind) without the pipeline.

    python bench/model_hooks.py record CAPTURE RECORDING [--camwatch-src DIR] [--model FILE]
    python bench/model_hooks.py play RECORDING REPEAT [--camwatch-src DIR] [--model FILE]

`record` replays CAPTURE with the model and writes every call the framework made to the anomaly detector's hooks
(observe, dns_query, tick), in order, to RECORDING (a pickle made here, for this script only: each observation
without its flow, each device as a bare Device with its final evidence, so its role is its last). `play` builds a
sensor once, then replays the calls REPEAT times, each into a fresh AnomalyDetector, and prints the CPU time of
each. Under `valgrind --tool=callgrind`, the instructions of `play ... 2` less those of `play ... 1` are one replay
of the hooks (plus one `gc.collect()` of the heap before it). Alerts need the devices in the inventory, which a
play's fresh sensor does not have: the ticks score and judge, but raise nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import pickle
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("record", "play"))
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "baseline.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.camwatch_src.resolve()))
    import sensor
    assert sensor.__file__.startswith(str(args.camwatch_src.resolve())), sensor.__file__
    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.detect import registry
    from sensor.detect.anomaly import AnomalyDetector
    from sensor.enrich import Device
    from sensor.model import AnomalyModel
    from sensor.pipeline import Sensor
    model = AnomalyModel.load(args.model)
    if args.mode == "record":
        calls: list = []
        s = Sensor(Config(), on_alert=None, model=model)
        det = next(d for d in s.detection.detectors if isinstance(d, AnomalyDetector))
        devices: dict[int, Device] = {}

        def bare(d):
            if id(d) not in devices:
                devices[id(d)] = Device(ip=d.ip)
                devices[id(d)].evidence = d.evidence   # the live set: copied at the end, as it ended
            return devices[id(d)]

        def mine(hook) -> bool:
            return getattr(hook, "__self__", None) in (det, det.windows)

        def rec_observe(hook):
            return lambda o: (calls.append((0, dataclasses.replace(o, flow=None, device=bare(o.device)))), hook(o))[1]

        def rec_dns(hook):
            return lambda q: (calls.append((1, dataclasses.replace(q, device=bare(q.device)))), hook(q))[1]

        def rec_tick(hook):
            return lambda now, final: (calls.append((2, (now, final))), hook(now, final))[1]

        fw = s.detection
        fw._observers = {k: tuple(rec_observe(h) if mine(h) else h for h in v) for k, v in fw._observers.items()}
        fw._dns_query = tuple(rec_dns(h) if mine(h) else h for h in fw._dns_query)
        fw._tick = tuple(rec_tick(h) if mine(h) else h for h in fw._tick)
        reader, _ = open_file(args.first)
        for batch in reader:
            s.process(batch)
        s.finish()
        for d in devices.values():
            d.evidence = set(d.evidence)
        with open(args.second, "wb") as f:
            pickle.dump(calls, f, protocol=5)
        counts = [sum(1 for k, _ in calls if k == kind) for kind in range(3)]
        print(f"observe {counts[0]}, dns_query {counts[1]}, tick {counts[2]} calls; {len(devices)} devices")
        return 0
    contexts: list = []
    build = registry.build
    registry.build = lambda ctx: (contexts.append(ctx), build(ctx))[1]   # type: ignore[assignment]
    Sensor(Config(), on_alert=None, model=model)
    with open(args.first, "rb") as f:
        calls = pickle.load(f)   # made by `record` above, never a model file

    def once() -> float:
        d = AnomalyDetector(contexts[0])
        observe, dns_query, tick = d.observe, d.dns_query, d.tick
        gc.collect()
        t = time.process_time()
        for kind, a in calls:
            if kind == 0:
                observe(a)
            elif kind == 1:
                dns_query(a)
            else:
                tick(*a)
        return time.process_time() - t

    gc.disable()
    times = [once() for _ in range(int(args.second))]
    print("CPU ms per replay:", ", ".join(f"{t * 1e3:.1f}" for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
