"""`camwatch run`: live capture through dumpcap or camwatch's own TPACKET_V3 ring, until SIGTERM, Ctrl-C or
--duration."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from sensor.allocator import pin_malloc_for_long_run
from sensor.capture import Batch
from sensor.config import Config, load_config
from sensor.errors import CamwatchError, CaptureError, StartCancelled
from sensor.pipeline import Sensor

from .common import EXIT_CAPTURE, EXIT_OK, EXIT_USAGE, add_output_options, load_model, metrics_listen, report_errors
from .loop import Session, print_summary

if TYPE_CHECKING:
    from sensor.live import LiveCapture
    from sensor.tpacket import TpacketCapture


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("run", help="capture live from an interface (dumpcap, or a TPACKET_V3 ring)")
    parser.add_argument("--interface", "-i", required=True, metavar="IFACE")
    parser.add_argument("--bpf", metavar="FILTER", help="capture filter in libpcap syntax")
    parser.add_argument("--engine", choices=("dumpcap", "tpacket"),
                        help="capture engine; overrides the config's capture.engine (default dumpcap)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    add_output_options(parser)
    parser.set_defaults(func=run)


class LiveSource:
    """dumpcap's pipe as the loop's source. It asks dumpcap to stop on a signal or at the deadline, and keeps the
    sensor's capture counters current."""

    pace: Callable[[float], None] | None = None

    def __init__(self, live: LiveCapture | TpacketCapture, sensor: Sensor, stop: threading.Event,
                 capturing: threading.Event, *, duration: float | None, watch_interface: bool):
        self.live = live
        self.sensor = sensor
        self.stop = stop
        self.capturing = capturing
        self.deadline = time.monotonic() + duration if duration else None
        self.watch_interface = watch_interface
        self.interface_read_at = 0.0
        self.failures: list[str] = []
        self.stopped_by_us = False

    def batches(self) -> Generator[Batch, None, None]:
        try:
            # After a stop request the loop goes on until dumpcap has written out what it captured and closed the
            # pipe: packets that reached the interface before the signal are counted, not dropped on the floor.
            for batch in self.live.reader:
                yield batch
                self._after_batch()
        except CaptureError as exc:
            self.failures.append(str(exc))

    def _after_batch(self) -> None:
        live = self.live
        if not live.stopping and (self.stop.is_set() or
                                  (self.deadline is not None and time.monotonic() >= self.deadline)):
            live.request_stop()
        self.sensor.capture_dropped = live.dropped
        if self.watch_interface and time.monotonic() - self.interface_read_at >= 1.0:
            self.interface_read_at = time.monotonic()
            received = live.interface_received()
            with self.sensor.lock:
                self.sensor.interface_received = received

    def close(self) -> None:
        # A service manager stopping the whole cgroup signals dumpcap too, which may then close the pipe before
        # the loop has seen camwatch's own signal: that is still a requested stop.
        self.stopped_by_us = self.live.stopping or self.stop.is_set()
        self.live.stop()
        # dumpcap reports its drop statistics as it exits, so only now is the count final.
        with self.sensor.lock:
            self.sensor.capture_dropped = self.live.dropped
            if self.watch_interface:
                self.sensor.interface_received = self.live.interface_received()
        self.capturing.clear()


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    listen = metrics_listen(args, config)
    if args.duration is not None and not args.duration > 0:
        raise CamwatchError(f"--duration {args.duration:g}: expected a positive number of seconds")
    pin_malloc_for_long_run()
    capturing = threading.Event()
    # The tpacket engine's socket is made first of all, and every privilege dropped, before the rest of the sensor
    # (model, state, endpoint) is set up; it is bound to the interface after that.
    early = _open_tpacket(args, config)
    try:
        # The endpoint starts next: a port already in use is reported before capture starts, and /readyz says
        # "not ready" until the capture really runs.
        session = Session(args, config, load_model(args), listen, append=True,
                          ready=capturing.is_set)
    except BaseException:
        if early is not None:
            early.stop()
        raise
    try:
        live = early.start() if early is not None else _open_dumpcap(args, config, session.stop)
    except StartCancelled as exc:
        # Asked to stop before there was anything to capture: an orderly stop, not a failure.
        session.abandon()
        if not args.quiet:
            sys.stderr.write(f"camwatch: {exc}\n")
        return EXIT_OK
    except BaseException:
        session.abandon()
        raise
    capturing.set()
    session.sensor.live = True
    if not args.quiet:
        sys.stderr.write(f"camwatch: capturing on {args.interface} "
                         f"(kernel capture ring {config.capture_buffer_mib} MiB, {live.name})\n")
    session.announce_server()
    # With a capture filter the interface also counts what the filter leaves out, and in a fanout group what the
    # other members take: no comparison to make.
    source = LiveSource(live, session.sensor, session.stop, capturing, duration=args.duration,
                        watch_interface=not args.bpf and not getattr(live, "fanout_group", 0))
    try:
        session.run(source)
    finally:
        session.close_server()
    return _report(args, session, live, source)


def _open_tpacket(args: argparse.Namespace, config: Config) -> TpacketCapture | None:
    """With the tpacket engine, its capture opened and every privilege given up, not yet bound; None otherwise."""
    settings = config.capture
    if (args.engine or settings.engine) != "tpacket":
        return None
    from sensor.tpacket import TpacketCapture  # the live capture's code only for `run`
    return TpacketCapture(args.interface, args.bpf, buffer_mib=settings.buffer_mib,
                          fanout_group=settings.fanout_group or 0, user=settings.user, start=False)


def _open_dumpcap(args: argparse.Namespace, config: Config, stop: threading.Event) -> LiveCapture:
    from sensor.live import LiveCapture  # the live capture's code only for `run`
    buffer_mib = config.capture.buffer_mib

    def waiting(seconds: float) -> None:
        if not args.quiet:
            sys.stderr.write(f"camwatch: waiting for dumpcap to start capturing on {args.interface} "
                             f"({seconds:.0f} s so far; it opens the interface and has the kernel allocate its "
                             f"{buffer_mib} MiB capture ring first; giving up at {LiveCapture.START_LIMIT:g} s)\n")
    return LiveCapture(args.interface, args.bpf, buffer_mib=buffer_mib, waiting=waiting, cancelled=stop.is_set)


def _capture_cpu(live: LiveCapture | TpacketCapture) -> str:
    """What taking packets in cost camwatch's own threads (dumpcap's process not included)."""
    if live.name == "tpacket":
        return f"{getattr(live, 'read_cpu', 0.0):.2f} s (reading the ring)"
    return f"{getattr(live, 'pump_cpu', 0.0):.2f} s (reading dumpcap's pipe; dumpcap's own CPU not included)"


def _report(args: argparse.Namespace, session: Session, live: LiveCapture | TpacketCapture,
            source: LiveSource) -> int:
    """The summary with dumpcap's counts, then the exit code: a capture that ended without being asked fails."""
    sensor = session.sensor
    if not args.quiet:
        print_summary(sensor, session.elapsed, flow_log=session.flow_log)
        received = live.received
        freezes = getattr(live, "freezes", 0)
        sys.stderr.write(f"  capture drops:         {live.dropped:,}"
                         + (f" ({live.name} received {received:,}, passed on {live.captured:,})"
                            if received is not None else "")
                         + (f"; interface drops: {live.interface_dropped:,}" if live.interface_dropped else "")
                         # tpacket: times the kernel found the ring full (tp_freeze_q_cnt)
                         + (f"; ring full {freezes:,} times" if freezes else "")
                         + "\n")
        sys.stderr.write(f"  capture CPU in camwatch: {_capture_cpu(live)}\n")
    if live.received is not None and live.captured != sensor.packets:
        # Not expected: the pipe and the reader lose nothing. Said even with --quiet, since it makes every count
        # of this run suspect.
        sys.stderr.write(f"camwatch: warning: {live.name} passed on {live.captured:,} packets but camwatch read "
                         f"{sensor.packets:,}\n")
    damaged = getattr(live, "damaged_blocks", 0)
    if damaged:
        sys.stderr.write(f"camwatch: warning: {damaged:,} capture ring blocks held frame headers pointing "
                         "outside them; the rest of each was skipped\n")
    failures = source.failures
    if not failures and not source.stopped_by_us:
        # dumpcap closed the pipe without being asked: the interface went away, or someone killed it.
        failures = [f"capture on {args.interface} ended unexpectedly: {live.error_message()}"]
    elif not failures and live.killed:
        failures = ["dumpcap did not stop on SIGTERM and was killed; packets it still held are lost"]
    report_errors(failures)
    report_errors(session.output_failures)
    return EXIT_USAGE if session.output_failures else EXIT_CAPTURE if failures else EXIT_OK
