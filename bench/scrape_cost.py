#!/usr/bin/env python3
"""What a /metrics scrape costs at a given inventory size: prometheus_client's writers against camwatch's.

    python bench/scrape_cost.py [--devices 10000] [--rounds 9]

Builds a sensor holding DEVICES camera-side devices (one forged source each, from the flood generator the tests
use, under `[networks] camera = ["10.0.0.0/8"]`), then times each writer over the sensor's registry (the sensor's
collectors, not the process's) in rounds, alternating, by CPU time: the snapshot, the families and the text.
Prints the median and the best of the rounds, and checks that both writers wrote the same bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    from flood import PCAP_HEADER, spoofed_camera_sources
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics

    from sensor.capture import open_file
    from sensor.cli.loop import tune_garbage_collector
    from sensor.config import parse_config
    from sensor.export import build_registry
    from sensor.export.exposition import render_openmetrics, render_text
    from sensor.pipeline import Sensor

    tune_garbage_collector()
    config = parse_config({"networks": {"camera": ["10.0.0.0/8"]}, "limits": {"max_devices": args.devices}})
    sensor = Sensor(config, on_alert=None)
    with tempfile.NamedTemporaryFile(suffix=".pcap") as capture:
        capture.write(PCAP_HEADER + spoofed_camera_sources(args.devices).tobytes())
        capture.flush()
        reader, _ = open_file(capture.name)
        for batch in reader:
            sensor.process(batch)
    registry = build_registry(sensor, process=False)
    writers = {"prometheus_client text": generate_latest, "camwatch text": render_text,
               "prometheus_client OpenMetrics": library_openmetrics, "camwatch OpenMetrics": render_openmetrics}
    times: dict[str, list[float]] = {name: [] for name in writers}
    outputs: dict[str, bytes] = {}
    for _ in range(args.rounds):
        for name, write in writers.items():
            start = time.process_time()
            outputs[name] = write(registry)
            times[name].append(time.process_time() - start)
    print(f"{len(sensor.inventory)} devices, {len(outputs['camwatch text']) / 1e6:.1f} MB of exposition, "
          f"{args.rounds} rounds, CPU seconds per scrape:")
    for name, spent in times.items():
        print(f"  {name:30s} median {statistics.median(spent):.3f}  best {min(spent):.3f}")
    same = (outputs["camwatch text"] == outputs["prometheus_client text"]
            and outputs["camwatch OpenMetrics"] == outputs["prometheus_client OpenMetrics"])
    print("same bytes as prometheus_client:", "yes" if same else "NO")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
