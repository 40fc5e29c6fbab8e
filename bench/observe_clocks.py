#!/usr/bin/env python3
"""Where the per-observation time goes: wall clocks around each detector's observe hook, the incidents' traffic
count, enrichment's camera side and flow updates, over one replay of a capture.

    python bench/observe_clocks.py CAPTURE [--camwatch-src DIR]

Every wrapped call pays ~0.3 µs for its clock, so the figures are a little high and only compare with each other
(or with another tree's run of this script, on the same capture, in the same minute). The total is the run's CPU
time with the clocks on.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", type=Path)
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.camwatch_src))
    from sensor.capture import open_file
    from sensor.cli.loop import tune_garbage_collector
    from sensor.config import Config
    from sensor.pipeline import Sensor

    spent: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def wrap(name: str, fn: Callable) -> Callable:
        clock = time.perf_counter_ns

        def timed(*a, **kw):
            t = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += clock() - t
                calls[name] += 1
        return timed

    sensor = Sensor(Config(), on_alert=None)
    tune_garbage_collector()
    detection, enricher = sensor.detection, sensor.enricher
    for scope, hooks in list(detection._observers.items()):
        detection._observers[scope] = tuple(wrap(f"observe: {hook.__self__.name}", hook) for hook in hooks)
    detection.incidents.traffic = wrap("incidents.traffic", detection.incidents.traffic)
    detection.services.of_observation = wrap("services.of_observation", detection.services.of_observation)
    detection.observe = wrap("Detection.observe (all of the above)", detection.observe)
    enricher._camera_side = wrap("Enricher._camera_side (and detection)", enricher._camera_side)
    enricher.flow_update = wrap("Enricher.flow_update (and the camera side)", enricher.flow_update)
    enricher._link.note_flow = wrap("LinkReader.note_flow", enricher._link.note_flow)
    cpu = time.process_time()
    reader, _ = open_file(args.capture)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    print(f"{sensor.packets:,} packets, {time.process_time() - cpu:.2f} CPU s with the clocks on\n")
    print("| function | seconds | calls | µs a call |\n|---|--:|--:|--:|")
    for name, ns in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {ns / 1e9:.3f} | {calls[name]:,} | {ns / calls[name] / 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
