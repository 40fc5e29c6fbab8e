#!/usr/bin/env python3
"""The model's outputs from two source trees, compared: a speed-up of the model must not change what it says.

    python bench/model_ab.py BEFORE_DIR AFTER_DIR CAPTURE[:CONFIG] [CAPTURE[:CONFIG] ...] [--model FILE]

Each DIR holds a `sensor/` package (e.g. `git archive COMMIT sensor | tar -x -C DIR`, with the compiled extension
beside it). Each tree replays each capture with the model (AFTER_DIR's models/baseline.json by default) in a fresh
process with the same PYTHONHASHSEED (trees before 2026-12-01 score open windows in set iteration order), recording
every alert and every array of scores. Printed per capture: whether the alerts are identical (as a multiset),
whether the same windows were scored, the largest difference between scores (each look's compared sorted; the
bar: 1e-9) and whether alerts and scores also came in the same order. Exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUN = """
import json, sys
src, path, config, model_path = sys.argv[1:5]
sys.path.insert(0, src)
import sensor
assert sensor.__file__.startswith(src), sensor.__file__
from sensor.capture import open_file
from sensor.config import Config, load_config
from sensor.model import AnomalyModel
from sensor.pipeline import Sensor
model = AnomalyModel.load(model_path)
scores = []
score = AnomalyModel.score
def recording(self, vectors):
    out = score(self, vectors)
    scores.append(out.tolist())
    return out
AnomalyModel.score = recording
alerts = []
s = Sensor(load_config(config) if config else Config(), on_alert=lambda a: alerts.append(a.as_dict()), model=model)
reader, _ = open_file(path)
for batch in reader:
    s.process(batch)
s.finish()
s.close()
json.dump({"alerts": alerts, "scores": scores}, sys.stdout, default=str)
"""


def run(tree: Path, capture: str, config: str, model: Path) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, "-c", RUN, str(tree.resolve()), capture, config, str(model)], env=env,
                         capture_output=True, text=True, check=True, cwd="/").stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("captures", nargs="+", metavar="CAPTURE[:CONFIG]")
    ap.add_argument("--model", type=Path)
    args = ap.parse_args(argv)
    model = (args.model or args.after / "models" / "baseline.json").resolve()
    differ = False
    for spec in args.captures:
        capture, _, config = spec.partition(":")
        capture = str(Path(capture).resolve())
        config = str(Path(config).resolve()) if config else ""
        a, b = run(args.before, capture, config, model), run(args.after, capture, config, model)
        # A look's rows, and so a tick's alerts, come in the order the windows changed (before 2026-12-01: the hash
        # order of a set of keys): each look is compared as a multiset of scores, the alerts as a multiset too,
        # and whether the order is also the same is printed beside.
        same_windows = [len(x) for x in a["scores"]] == [len(x) for x in b["scores"]]
        pairs = zip(a["scores"], b["scores"], strict=False)
        diff = max((abs(x - y) for xs, ys in pairs for x, y in zip(sorted(xs), sorted(ys), strict=False)),
                   default=0.0)
        as_text = lambda alerts: sorted(json.dumps(x, sort_keys=True, default=str) for x in alerts)  # noqa: E731
        same_alerts = as_text(a["alerts"]) == as_text(b["alerts"])
        in_order = a["alerts"] == b["alerts"] and a["scores"] == b["scores"]
        anomaly = sum(1 for alert in a["alerts"] if alert.get("detector") == "anomaly")
        ok = same_alerts and same_windows and diff <= 1e-9
        differ |= not ok
        print(f"{'same' if ok else 'DIFFERENT'}  {capture}: alerts identical {same_alerts} "
              f"({len(a['alerts'])}, {anomaly} anomaly), same windows scored {same_windows} "
              f"({sum(len(x) for x in a['scores'])} scores), largest score difference {diff:.3g}, "
              f"in the same order {in_order}", flush=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
