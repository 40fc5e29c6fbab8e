"""`camwatch report`: the removal-planning report (docs/report.md) from captures, state databases or running
sensors, as one self-contained HTML file and, with --csv, the removal list and inventory as CSV."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sensor.config import Config
from sensor.errors import CamwatchError

from .common import (
    EXIT_CAPTURE,
    EXIT_OK,
    add_sensor_access_options,
    refuse_input_as_output,
    report_errors,
    require_files,
    sensor_access,
    writable_target,
)

if TYPE_CHECKING:
    from sensor.report import Estate


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("report", help="removal-planning report: covered devices ranked, with evidence")
    parser.add_argument("pcaps", nargs="*", metavar="PCAP", help="captures to replay into the report")
    parser.add_argument("--state", metavar="[SITE=]DB", action="append", default=[],
                        help="a sensor's state database (read only); repeatable")
    parser.add_argument("--url", metavar="[SITE=]URL", action="append", default=[],
                        help="a running sensor, e.g. http://127.0.0.1:9847; repeatable")
    add_sensor_access_options(parser)
    parser.add_argument("--out", metavar="FILE", required=True, help="the HTML report to write")
    parser.add_argument("--csv", metavar="DIR", help="also write removal.csv and inventory.csv here")
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml, with optional [sites.NAME] tables")
    parser.add_argument("--alerts", metavar="FILE", action="append", default=[],
                        help="alert log(s) (JSON lines) to attach to the devices; repeatable")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")
    parser.set_defaults(func=report)


def _gather(args: argparse.Namespace, config: Config) -> Estate:
    from sensor.report import Estate
    from sensor.report.sources import read_alert_file, read_pcaps, read_state, read_url, split_label

    estate = Estate()
    access = sensor_access(args)   # a missing certificate is reported before minutes of replay, not after
    if args.pcaps:
        require_files(args.pcaps, regular=True)
        read_pcaps(args.pcaps, config, estate)
    for value in args.state:
        label, path = split_label(value)
        read_state(path, label or Path(path).stem, estate, config)
    for value in args.url:
        label, url = split_label(value)
        read_url(url, label or _host_port(url), estate, access)
    for path in args.alerts:
        read_alert_file(path, estate)
    return estate


def _host_port(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0] or url


def report(args: argparse.Namespace) -> int:
    if not (args.pcaps or args.state or args.url):
        raise CamwatchError("report: give capture files, --state DB or --url of a running sensor")
    # The report's modules (jinja2 among them) only for this command: every other one starts without them.
    from sensor.report import context, load_report_config, render_html, write_csv
    from sensor.report.render import CSV_FILES
    from sensor.report.sources import split_label

    writable_target(args.out, "the report")
    out = Path(args.out)
    inputs = ([(path, "a capture it reads") for path in args.pcaps]
              + [(split_label(value)[1], "a state database it reads") for value in args.state]
              + [(path, "an alert log it reads") for path in args.alerts]
              + ([(args.config, "its config")] if args.config else []))
    refuse_input_as_output("--out", args.out, inputs)
    if args.csv:
        for name in CSV_FILES:
            refuse_input_as_output("--csv", str(Path(args.csv) / name), inputs)
    config, sites = load_report_config(args.config)
    started = time.monotonic()
    estate = _gather(args, config)
    ctx = context(estate, sites, config)
    html = render_html(ctx)
    try:
        out.write_text(html, encoding="utf-8")
        written = [out] + (write_csv(ctx, Path(args.csv)) if args.csv else [])
    except OSError as exc:
        raise CamwatchError(f"cannot write the report: {exc.strerror or exc} ({exc.filename})") from None
    report_errors(estate.failures)
    if not args.quiet:
        covered = ", ".join(f"{r.record.ip} ({r.record.site})" for r in ctx["ranked"][:3]) or "none"
        sys.stderr.write(f"camwatch: report of {len(estate.devices)} devices, {len(ctx['ranked'])} covered "
                         f"(top: {covered}) in {time.monotonic() - started:.2f} s: "
                         f"{', '.join(str(p) for p in written)}\n")
    return EXIT_CAPTURE if estate.failures else EXIT_OK

