"""`camwatch inspect`: Wireshark's dissection of one device's control-plane packets."""

from __future__ import annotations

import argparse
import json
import sys

from sensor.inspect import inspect as inspect_device

from .common import EXIT_CAPTURE, EXIT_OK, report_errors, require_files


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "inspect", help="Wireshark's dissection of one device's control-plane packets (pyshark)")
    parser.add_argument("pcaps", nargs="+", metavar="PCAP")
    parser.add_argument("--device", required=True, metavar="IP", help="the camera-side device to look at")
    parser.add_argument("--json", action="store_true", help="JSON instead of lines")
    parser.set_defaults(func=inspect)


def inspect(args: argparse.Namespace) -> int:
    require_files(args.pcaps)
    rows, seen, written, failures = inspect_device(args.pcaps, args.device)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r['time']}  {r['src']} -> {r['dst']}  {r['protocol']:<8} {r['detail'] or ''}\n")
    sys.stderr.write(f"camwatch: {written:,} of {seen:,} packets were {args.device}'s control plane; "
                     f"Wireshark dissected {len(rows):,} of interest\n")
    report_errors(failures)
    return EXIT_CAPTURE if failures else EXIT_OK
