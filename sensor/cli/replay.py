"""`camwatch replay`: capture files through the whole sensor, optionally paced and served."""

from __future__ import annotations

import argparse
import sys

from sensor.config import load_config
from sensor.errors import CamwatchError

from .common import (
    EXIT_CAPTURE,
    EXIT_OK,
    EXIT_USAGE,
    add_output_options,
    load_model,
    metrics_listen,
    report_errors,
    require_files,
)
from .loop import CaptureFiles, Pacer, Session, print_summary


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("replay", help="process capture files (pcap or pcapng)")
    parser.add_argument("pcaps", nargs="+", metavar="PCAP")
    add_output_options(parser)
    parser.add_argument("--pace", default="fast", metavar="fast|realtime|Nx",
                        help="replay speed: as fast as possible (default), capture time, or N times faster")
    parser.add_argument("--overlap", choices=("auto", "on", "off"),
                        help="read and decode the next batch on a second thread while the current one is "
                             "processed: auto where two CPUs are available; default: capture.overlap (auto)")
    parser.set_defaults(func=replay)


def parse_pace(value: str) -> float | None:
    """None for as-fast-as-possible, else the speed-up factor over capture time."""
    v = value.strip().lower()
    if v == "fast":
        return None
    if v == "realtime":
        return 1.0
    if v.endswith("x"):
        try:
            factor = float(v[:-1])
        except ValueError:
            factor = 0.0
        if factor > 0:
            return factor
    raise CamwatchError(f"--pace {value!r}: expected fast, realtime or a factor like 10x")


def replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    speed = parse_pace(args.pace)
    listen = metrics_listen(args, config)
    require_files(args.pcaps, regular=True)
    session = Session(args, config, load_model(args), listen)
    session.announce_server()
    sensor = session.sensor
    files = CaptureFiles(args.pcaps, session.stop, pace=Pacer(speed, session.stop) if speed else None,
                         packets=None if args.quiet else lambda: sensor.packets,
                         overlap=args.overlap or config.capture.overlap)
    session.run(files)
    if not args.quiet and (sensor.packets or not files.failures):   # nothing read, only a fault: the fault alone
        print_summary(sensor, session.elapsed, len(args.pcaps), session.flow_log)
    if files.files_read < len(args.pcaps):
        # said even with --quiet: the outputs are complete for what was read, and the exit code is still 0
        sys.stderr.write(f"camwatch: replay stopped by {session.stop.signal_name or 'a signal'} before the end of "
                         f"the captures: {files.files_read} of {len(args.pcaps)} file"
                         f"{'s' if len(args.pcaps) != 1 else ''} read to the end\n")
    report_errors(files.failures)
    report_errors(session.output_failures)
    if session.server and not session.stop.is_set():
        if not args.quiet:
            sys.stderr.write("camwatch: replay finished; still serving metrics (Ctrl-C or SIGTERM to stop)\n")
        # Waking up now and then: a signal the kernel hands to a server thread only runs its handler once the
        # main thread next runs Python code, which an untimed wait never does.
        while not session.stop.wait(0.5):
            pass
    session.close_server()
    return EXIT_USAGE if session.output_failures else EXIT_CAPTURE if files.failures else EXIT_OK
