"""The one loop that feeds the sensor, for `camwatch replay` (capture files) and `camwatch run` (dumpcap's pipe),
and what both need around it: signals, the alert log, the metrics and their endpoint, pacing, progress, the
summary, and closing everything in order. `replay_into` is the same file reading without any of that, for the
commands that only want the sensor's result (inventory, eval, train)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Protocol

from sensor import overlap
from sensor.capture import Batch, open_file
from sensor.config import Config
from sensor.detect.incidents import END, SHUTDOWN
from sensor.enrich.geography import Geography
from sensor.errors import CamwatchError, CaptureError
from sensor.export import build_registry, write_metrics_file
from sensor.export.alert_log import AlertLog
from sensor.export.lines import Flusher
from sensor.pipeline import Sensor

from .common import distinct_outputs, format_address, writable_target

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sensor.export.flow_log import FlowLog
    from sensor.model import AnomalyModel


class Source(Protocol):
    """Where the loop's packets come from."""

    # Called with each packet's capture time before it is processed; None for as fast as possible.
    pace: Callable[[float], None] | None
    # One line per capture that could not be read to its end; the loop carries on without it.
    failures: list[str]

    def batches(self) -> Generator[Batch, None, None]:
        """Batches in capture order; an empty batch is an idle tick with no packets."""
        ...

    def close(self) -> None:
        """Once the loop has ended, however it ended."""
        ...


class Pacer:
    """Replays at `speed` times capture time, measured from the first packet."""

    def __init__(self, speed: float, stop: threading.Event):
        self.speed = speed
        self.stop = stop
        self.origin: tuple[float, float] | None = None  # (capture ts, wall clock)

    def __call__(self, ts: float) -> None:
        if self.origin is None:
            self.origin = (ts, time.monotonic())
            return
        due = self.origin[1] + (ts - self.origin[0]) / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


class Progress:
    """A one-line progress indicator on a terminal; silent when stderr is not a TTY."""

    def __init__(self, total_bytes: int, enabled: bool):
        self.total = max(total_bytes, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done_bytes: int, packets: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        pct = min(100.0, 100.0 * done_bytes / self.total)
        bar = "#" * int(pct / 4)
        sys.stderr.write(f"\r[{bar:<25}] {pct:5.1f}%  {packets:,} packets")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


class CaptureFiles:
    """Capture files read in order as one stream. A file that cannot be read to its end is a failure, and the
    files after it are still read: everything before a fault counts."""

    def __init__(self, paths: Sequence[str], stop: threading.Event | None = None,
                 pace: Callable[[float], None] | None = None, packets: Callable[[], int] | None = None,
                 overlap: str = "off"):
        """`stop` ends the stream after the current batch; `packets`, the count processed so far, turns on the
        progress bar; `overlap` (auto, on, off: capture.overlap) reads and decodes the next batch on a second
        thread while the current one is processed (sensor.overlap)."""
        self.overlap = overlap
        self.paths = paths
        self.stop = stop
        self.pace = pace
        self.packets = packets
        self.failures: list[str] = []
        self.files_read = 0    # files read to their end (or to a fault)

    def batches(self) -> Generator[Batch, None, None]:
        for path in self.paths:
            if self._stopped():
                break
            reader, size = open_file(path)
            progress = Progress(size, self.packets is not None)
            batches = overlap.batches(reader, self.overlap)
            try:
                for batch in batches:
                    yield batch
                    progress.update(reader.bytes_consumed, self.packets() if self.packets else 0)
                    if self._stopped():
                        break
            except CaptureError as exc:
                self.failures.append(str(exc))
            finally:
                batches.close()   # the reading thread stopped before the reader closes under it
                reader.close()
                progress.done()
            if not self._stopped():
                self.files_read += 1

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def close(self) -> None:
        pass


def replay_into(sensor: Sensor, paths: list[str]) -> list[str]:
    """Process capture files in order; returns the one-line errors of files that could not be read to the end."""
    files = CaptureFiles(paths, overlap=sensor.config.capture.overlap)
    for batch in files.batches():
        sensor.process(batch)
    sensor.finish()
    sensor.close()
    return files.failures


def tune_garbage_collector() -> None:
    """Once the sensor is built. Every new flow allocates a few objects and almost none form reference cycles, yet
    CPython's default (a young collection every 700 allocations, a full one every 100 young ones) had the collector
    walk the whole flow table and the start-up tables over and over under a flood of new flows: a third of the
    time. The start-up objects (Wireshark's manuf table, the indicators) are frozen out of collection and young
    collections run every 20,000 allocations; a million-flow flood runs ~1.4x faster in the same memory
    (docs/benchmarks.md)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


class StopRequest(threading.Event):
    """Set by SIGINT or SIGTERM (install_stop_handlers); `signal_name` says which."""

    signal_name: str | None = None


def install_stop_handlers(stop: StopRequest) -> None:
    def handler(signum, frame):
        stop.signal_name = signal.Signals(signum).name
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def install_reopen_handler(flusher: Flusher) -> None:
    """SIGHUP reopens the output files at their paths (logrotate's postrotate): the handler only asks, the
    flusher does it within a second. With no file to reopen (everything on stdout) a hang-up keeps its default
    meaning: the terminal is gone, stop."""
    if flusher.reopenable:
        signal.signal(signal.SIGHUP, lambda signum, frame: flusher.request_reopen())


def print_summary(sensor: Sensor, elapsed: float, files: int | None = None,
                  flow_log: FlowLog | None = None) -> None:
    s = sensor.summary()
    alerts = s["alerts"]
    total_alerts = sum(alerts.values())
    by_type = ", ".join(f"{k}: {v}" for k, v in sorted(alerts.items())) or "none"
    rate = s["packets"] / elapsed if elapsed > 0 else 0.0
    source = f" from {files} file{'s' if files != 1 else ''}" if files is not None else ""
    lines = [
        f"camwatch: {s['packets']:,} packets ({s['bytes']:,} bytes){source} in {elapsed:.2f} s"
        f" ({rate:,.0f} packets/s)",
        f"  non-IP packets:        {s['non_ip_packets']:,}   decode errors: {s['decode_errors']:,}",
        f"  flows:                 {s['flows']:,}",
        f"  devices:               {s['devices']:,}",
        f"  external destinations: {s['external_destinations']:,}",
        f"  incidents:             {s['incidents']:,} ({lines_text(s['lines'])})",
        f"  detections:            {total_alerts:,} ({by_type})",
    ]
    if flow_log is not None:
        written = flow_log.file.lines - flow_log.file.dropped
        lost = f" ({flow_log.file.dropped:,} lost: the file could not be written)" if flow_log.file.dropped else ""
        lines.append(f"  flow records:          {written:,}{lost}")
    sys.stderr.write("\n".join(lines) + "\n")


def lines_text(lines: dict[str, int]) -> str:
    written = sum(lines.values())
    parts = ", ".join(f"{event}: {lines[event]}" for event in sorted(lines))
    return f"{written:,} lines written: {parts}" if written else "no lines written"


class Session:
    """One replay or live run: the signals that stop it, the alert log, the sensor, its metrics and their HTTP
    endpoint, and the loop between them."""

    def __init__(self, args: argparse.Namespace, config: Config, model: AnomalyModel | None,
                 listen: tuple[str, int] | None, *, append: bool = False,
                 ready: Callable[[], bool] = lambda: True):
        """append: the output files are added to (live), not started afresh (replay)."""
        self.args = args
        distinct_outputs(args, config)
        if args.metrics_out:
            writable_target(args.metrics_out, "metrics")
        self.output_failures: list[str] = []   # outputs that could not be written at the end (their messages)
        self.stop = StopRequest()
        install_stop_handlers(self.stop)
        # The [geo] databases are checked before any output is created: a bad path is one line and nothing else.
        geography = Geography.from_config(config.geo.asn_database, config.geo.country_database)
        self.alerts = AlertLog(args.alerts, append=append)
        self.flow_log: FlowLog | None = None
        try:
            if getattr(args, "flows", None):
                # imported only with --flows: a replay without it never writes a flow record (start-up, issue 16)
                from sensor.export.flow_log import FlowLog
                self.flow_log = FlowLog(args.flows, append=append)
        except BaseException:
            self.alerts.close()
            raise
        self.sensor = Sensor(config, on_alert=self.alerts.write, model=model, geography=geography)
        if self.flow_log is not None:
            self.flow_log.attach(self.sensor, place=self.sensor.geography.place)
        self.flusher = Flusher([self.alerts.file] + ([self.flow_log.file] if self.flow_log else []))
        install_reopen_handler(self.flusher)
        tune_garbage_collector()
        # Metrics only where they go somewhere: the registry (prometheus_client) and the endpoint are not even
        # imported by a replay that neither serves nor writes them.
        self.registry: CollectorRegistry | None = (build_registry(self.sensor) if listen or args.metrics_out
                                                   else None)
        self.elapsed = 0.0
        try:
            self.server = self._serve(listen, ready, config) if listen and self.registry else None
        except BaseException:
            self._close_files()
            raise

    def _serve(self, listen: tuple[str, int], ready: Callable[[], bool], config: Config):
        from sensor.export.server import MetricsServer
        assert self.registry is not None
        return MetricsServer(self.registry, listen, ready=ready, inventory=self.sensor.inventory_snapshot,
                             settings=config.metrics, countries=self.sensor.country_series_snapshot)

    def announce_server(self) -> None:
        if self.server and not self.args.quiet:
            sys.stderr.write(f"camwatch: serving metrics on {'https' if self.server.tls else 'http'}://"
                             f"{format_address(self.server.address)}/metrics\n")

    def abandon(self) -> None:
        """Before the loop ever ran: a capture that would not start."""
        self.close_server()
        self._close_files()

    def _close_files(self) -> None:
        self.flusher.stop()
        self.alerts.close()
        if self.flow_log is not None:
            self.flow_log.close()

    def run(self, source: Source) -> None:
        """Feed the sensor until the source ends or is stopped, flush it, and close the outputs. The HTTP endpoint
        stays up: replay goes on serving the final metrics."""
        started = time.monotonic()
        batches = source.batches()
        try:
            try:
                for batch in batches:
                    if len(batch):
                        self.sensor.process(batch, source.pace)
                    else:
                        # Nothing arrived within the live pump's tick: flows still expire, on wall-clock time.
                        self.sensor.expire(time.time())
            finally:
                batches.close()
                source.close()
            # A live sensor, or a replay cut short by a signal, stops; a replay that read its files to the end ends.
            self.sensor.finish(SHUTDOWN if self.sensor.live or self.stop.is_set() else END)
        finally:
            self.elapsed = time.monotonic() - started
            self._close_outputs()

    def _close_outputs(self) -> None:
        """The metrics file written, then the alert log and the state database closed, whatever went before. A
        metrics file that cannot be written now (the disk filled, the directory went) is reported with the
        summary, not instead of it (output_failures)."""
        try:
            if self.args.metrics_out and self.registry is not None:
                write_metrics_file(self.registry, self.args.metrics_out)
        except CamwatchError as exc:
            self.output_failures.append(str(exc))
        finally:
            self._close_files()
            self.sensor.close()

    def close_server(self) -> None:
        if self.server:
            self.server.close()
