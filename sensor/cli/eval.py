"""`camwatch eval`: detector precision, recall and time-to-detect on labelled captures."""

from __future__ import annotations

import argparse
import json
import sys

from sensor.config import load_config
from sensor.export.alert_log import AlertLog
from sensor.pipeline import Sensor

from .common import EXIT_CAPTURE, EXIT_OK, load_model, report_errors
from .loop import replay_into, tune_garbage_collector


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("eval", help="detector precision, recall and time-to-detect on labelled captures")
    parser.add_argument("pcaps", nargs="+", metavar="PCAP",
                        help="captures, in time order (e.g. baseline then mixed)")
    parser.add_argument("--labels", required=True, metavar="FILE", help="labels JSON (see pcaps/scenarios.py)")
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml of the labelled site")
    parser.add_argument("--alerts", metavar="FILE", help="also write the alerts here")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--model", metavar="FILE", help="learned baseline for the anomaly detector")
    parser.set_defaults(func=evaluate_captures)


def evaluate_captures(args: argparse.Namespace) -> int:
    from sensor.evaluate import evaluate, format_report, load_labels  # this command's alone

    labels = load_labels(args.labels)
    config = load_config(args.config)
    collected: list[dict] = []
    log = AlertLog(args.alerts) if args.alerts else None

    def on_alert(alert) -> None:
        collected.append(alert.as_dict())
        if log:
            log.write(alert)

    sensor = Sensor(config, on_alert=on_alert, model=load_model(args))
    tune_garbage_collector()
    failures = replay_into(sensor, args.pcaps)
    if log:
        log.close()
    report = evaluate(collected, labels)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_report(report))
    report_errors(failures)
    return EXIT_CAPTURE if failures else EXIT_OK
