"""camwatch command line: `replay` captures, `run` live on an interface.

Exit codes: 0 success; 1 a capture could not be read to its end (everything before the fault was processed and
all outputs were still written); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from sensor import __version__
from sensor.capture import LiveCapture, open_file
from sensor.config import load_config
from sensor.errors import CamwatchError, CaptureError, ConfigError
from sensor.export import (DEFAULT_METRICS_ADDRESS, AlertLog, MetricsServer, build_registry, parse_listen,
                           write_metrics_file)
from sensor.pipeline import Sensor

EXIT_OK, EXIT_CAPTURE, EXIT_USAGE = 0, 1, 2


class _Usage(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other usage error
        self.exit(EXIT_USAGE, f"camwatch: {message} (see camwatch {self.prog.split()[-1]} --help)\n"
                  if " " in self.prog else f"camwatch: {message} (see camwatch --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Usage(prog="camwatch", description="Passive sensor for CCTV camera VLANs.")
    p.add_argument("--version", action="version", version=f"camwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Usage)

    def common(sp):
        sp.add_argument("--config", metavar="FILE", help="camwatch.toml (default: zero-config)")
        sp.add_argument("--alerts", metavar="FILE", default="-",
                        help="write alert JSON lines here; '-' is stdout (default)")
        sp.add_argument("--metrics-out", metavar="FILE", help="write the final Prometheus text exposition here")
        sp.add_argument("--serve", metavar="ADDR:PORT",
                        help=f"serve /metrics, /healthz, /readyz (e.g. {DEFAULT_METRICS_ADDRESS[0]}:"
                             f"{DEFAULT_METRICS_ADDRESS[1]})")
        sp.add_argument("--quiet", action="store_true", help="no summary or progress on stderr")

    rp = sub.add_parser("replay", help="process capture files (pcap or pcapng)")
    rp.add_argument("pcaps", nargs="+", metavar="PCAP")
    common(rp)
    rp.add_argument("--pace", default="fast", metavar="fast|realtime|Nx",
                    help="replay speed: as fast as possible (default), capture time, or N times faster")

    lp = sub.add_parser("run", help="capture live from an interface through dumpcap")
    lp.add_argument("--interface", "-i", required=True, metavar="IFACE")
    lp.add_argument("--bpf", metavar="FILTER", help="capture filter in libpcap syntax")
    lp.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    common(lp)
    return p


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


class Pacer:
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


def print_summary(sensor: Sensor, elapsed: float, files: int | None = None) -> None:
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
        f"  alerts:                {total_alerts:,} ({by_type})",
    ]
    sys.stderr.write("\n".join(lines) + "\n")


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_replay(args) -> int:
    config = load_config(args.config)
    speed = parse_pace(args.pace)
    listen = parse_listen(args.serve) if args.serve else None
    for path in args.pcaps:
        if not Path(path).is_file():
            raise CamwatchError(f"{path}: no such file" if not Path(path).exists()
                                else f"{path}: not a regular file")
    stop = threading.Event()
    _install_stop_handlers(stop)
    alerts = AlertLog(args.alerts)
    sensor = Sensor(config, on_alert=alerts.write)
    registry = build_registry(sensor)
    server = MetricsServer(registry, listen, ready=lambda: True) if listen else None
    if server and not args.quiet:
        sys.stderr.write(f"camwatch: serving metrics on http://{_fmt(server.address)}/metrics\n")
    pacer = Pacer(speed, stop) if speed else None
    failures: list[str] = []
    started = time.monotonic()
    try:
        for path in args.pcaps:
            if stop.is_set():
                break
            reader, size = open_file(path)
            progress = Progress(size, not args.quiet)
            try:
                for batch in reader:
                    sensor.process(batch, pacer)
                    progress.update(reader.bytes_consumed, sensor.packets)
                    if stop.is_set():
                        break
            except CaptureError as exc:
                failures.append(str(exc))
            finally:
                progress.done()
        sensor.finish()
    finally:
        elapsed = time.monotonic() - started
        if args.metrics_out:
            write_metrics_file(registry, args.metrics_out)
        alerts.close()
    if not args.quiet:
        print_summary(sensor, elapsed, len(args.pcaps))
    for message in failures:
        sys.stderr.write(f"camwatch: error: {message}\n")
    if server:
        if not stop.is_set():
            if not args.quiet:
                sys.stderr.write("camwatch: replay finished; still serving metrics (Ctrl-C or SIGTERM to stop)\n")
            stop.wait()
        server.close()
    return EXIT_CAPTURE if failures else EXIT_OK


def cmd_run(args) -> int:
    config = load_config(args.config)
    listen = parse_listen(args.serve) if args.serve else None
    stop = threading.Event()
    _install_stop_handlers(stop)
    alerts = AlertLog(args.alerts, append=args.alerts != "-")
    sensor = Sensor(config, on_alert=alerts.write)
    registry = build_registry(sensor)
    live = LiveCapture(args.interface, args.bpf)
    server = MetricsServer(registry, listen) if listen else None
    deadline = time.monotonic() + args.duration if args.duration else None
    started = time.monotonic()
    failure = None
    try:
        for batch in live.reader:
            if len(batch):
                sensor.process(batch)
            else:
                sensor.expire(time.time())
            if stop.is_set() or (deadline and time.monotonic() >= deadline):
                break
    except CaptureError as exc:
        failure = str(exc)
    finally:
        dumpcap_said = live.stop()
        sensor.finish()
        if args.metrics_out:
            write_metrics_file(registry, args.metrics_out)
        alerts.close()
        if server:
            server.close()
    if not args.quiet:
        print_summary(sensor, time.monotonic() - started)
    if live.proc.returncode not in (0, None, -signal.SIGTERM) and sensor.packets == 0:
        raise CamwatchError(f"dumpcap failed on {args.interface}: {_last_line(dumpcap_said)}")
    if failure:
        sys.stderr.write(f"camwatch: error: {failure}\n")
        return EXIT_CAPTURE
    return EXIT_OK


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _fmt(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "run":
            return cmd_run(args)
    except ConfigError as exc:
        sys.stderr.write(f"camwatch: config error: {exc}\n")
        return EXIT_USAGE
    except CamwatchError as exc:
        sys.stderr.write(f"camwatch: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_USAGE
