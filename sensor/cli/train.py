"""`camwatch train`: fit the learned-behaviour model on baseline captures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sensor.config import load_config
from sensor.errors import CamwatchError
from sensor.model import WINDOW_SECONDS, WindowFeatures, training_summary
from sensor.pipeline import Sensor

from .common import EXIT_CAPTURE, EXIT_OK, report_errors
from .loop import replay_into, tune_garbage_collector


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "train", help="learn per-device behaviour from baseline captures (IsolationForest)")
    parser.add_argument("pcaps", nargs="+", metavar="PCAP", help="baseline captures: normal traffic only")
    parser.add_argument("--out", required=True, metavar="PREFIX",
                        help="writes PREFIX.json and the model card PREFIX.md")
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml of the site")
    parser.add_argument("--contamination", type=float, default=0.002, metavar="FRACTION",
                        help="share of training windows allowed above the threshold (default 0.002: the threshold "
                             "sits at the edge of what the baseline ever did)")
    parser.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not 0 < args.contamination < 0.5:
        raise CamwatchError("--contamination must be between 0 and 0.5")
    windows = WindowFeatures(WINDOW_SECONDS, config.max_devices)
    sensor = Sensor(config, windows=windows)
    tune_garbage_collector()
    failures = replay_into(sensor, args.pcaps)
    if failures:
        report_errors(failures)
        return EXIT_CAPTURE
    rows = windows.flush()
    if not rows:
        raise CamwatchError("train: the captures hold no camera-side traffic to learn from")
    from sensor.model import AnomalyModel  # the model file's code (and scikit-learn) for this command alone

    model = AnomalyModel.train(np.vstack([r[2] for r in rows]), Path(args.out).name,
                               training_summary(rows, [Path(p).name for p in args.pcaps]),
                               contamination=args.contamination)
    json_path, card_path = model.save(args.out)
    sys.stderr.write(f"camwatch: trained on {len(rows)} device-minutes of {len({r[0] for r in rows})} devices; "
                     f"threshold {model.threshold:.3f}; wrote {json_path} and {card_path}\n")
    return EXIT_OK
