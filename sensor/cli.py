"""camwatch command line: `replay` captures, `run` live on an interface.

Exit codes: 0 success; 1 a capture could not be read to its end (everything before the fault was processed and
all outputs were still written); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import ipaddress
import json
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from sensor import __version__
from sensor.capture import open_file
from sensor.config import load_config
from sensor.errors import CamwatchError, CaptureError, ConfigError
from sensor.evaluate import evaluate, format_report, load_labels
from sensor.export import (
    DEFAULT_METRICS_ADDRESS,
    AlertLog,
    MetricsServer,
    build_registry,
    hash_password,
    parse_listen,
    write_metrics_file,
)
from sensor.inspect import inspect as inspect_device
from sensor.live import LiveCapture
from sensor.model import WINDOW_SECONDS, AnomalyModel, WindowFeatures, training_summary
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
        sp.add_argument("--model", metavar="FILE", help="learned baseline (models/NAME.json) for the anomaly detector")

    rp = sub.add_parser("replay", help="process capture files (pcap or pcapng)")
    rp.add_argument("pcaps", nargs="+", metavar="PCAP")
    common(rp)
    rp.add_argument("--pace", default="fast", metavar="fast|realtime|Nx",
                    help="replay speed: as fast as possible (default), capture time, or N times faster")

    ip = sub.add_parser("inventory", help="list camera-side devices: maker, covered flag, role, identity")
    ip.add_argument("pcaps", nargs="*", metavar="PCAP", help="captures to build the inventory from")
    ip.add_argument("--url", metavar="URL", help="read it from a running sensor instead, e.g. http://127.0.0.1:9847")
    ip.add_argument("--config", metavar="FILE", help="camwatch.toml (default: zero-config)")
    ip.add_argument("--json", action="store_true", help="JSON instead of a table")

    ep = sub.add_parser("eval", help="detector precision, recall and time-to-detect on labelled captures")
    ep.add_argument("pcaps", nargs="+", metavar="PCAP", help="captures, in time order (e.g. baseline then mixed)")
    ep.add_argument("--labels", required=True, metavar="FILE", help="labels JSON (see pcaps/scenarios.py)")
    ep.add_argument("--config", metavar="FILE", help="camwatch.toml of the labelled site")
    ep.add_argument("--alerts", metavar="FILE", help="also write the alerts here")
    ep.add_argument("--json", action="store_true", help="the report as JSON")
    ep.add_argument("--model", metavar="FILE", help="learned baseline for the anomaly detector")

    tp = sub.add_parser("train", help="learn per-device behaviour from baseline captures (IsolationForest)")
    tp.add_argument("pcaps", nargs="+", metavar="PCAP", help="baseline captures: normal traffic only")
    tp.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.json and the model card PREFIX.md")
    tp.add_argument("--config", metavar="FILE", help="camwatch.toml of the site")
    tp.add_argument("--contamination", type=float, default=0.002, metavar="FRACTION",
                    help="share of training windows allowed above the threshold (default 0.002: the threshold "
                         "sits at the edge of what the baseline ever did)")

    xp = sub.add_parser("inspect", help="Wireshark's dissection of one device's control-plane packets (pyshark)")
    xp.add_argument("pcaps", nargs="+", metavar="PCAP")
    xp.add_argument("--device", required=True, metavar="IP", help="the camera-side device to look at")
    xp.add_argument("--json", action="store_true", help="JSON instead of lines")

    hp = sub.add_parser("hash-password", help="hash a password for [metrics] basic_auth (reads it from stdin)")
    hp.set_defaults(command="hash-password")

    lp = sub.add_parser("run", help="capture live from an interface through dumpcap")
    lp.add_argument("--interface", "-i", required=True, metavar="IFACE")
    lp.add_argument("--bpf", metavar="FILTER", help="capture filter in libpcap syntax")
    lp.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    common(lp)
    return p


def _listen(args, config) -> tuple[str, int] | None:
    """--serve wins over the config's metrics.listen; neither means no HTTP endpoint."""
    value = args.serve or config.metrics.listen
    return parse_listen(value) if value else None


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


def tune_garbage_collector() -> None:
    """Once the sensor is built. Every new flow allocates a few objects and almost none form reference cycles, yet
    CPython's default (a young collection every 700 allocations, a full one every 100 young ones) had the collector
    walk the whole flow table and the start-up tables over and over under a flood of new flows: a third of the
    time. The start-up objects (Wireshark's manuf table, the indicators) are frozen out of collection and young
    collections run every 20,000 allocations; a million-flow flood runs ~1.4x faster in the same memory
    (docs/benchmarks.md)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _close_outputs(args, registry, alerts, sensor) -> None:
    """The metrics file written, then the alert log and the state database closed, whatever went before."""
    try:
        if args.metrics_out:
            write_metrics_file(registry, args.metrics_out)
    finally:
        alerts.close()
        sensor.close()


def cmd_replay(args) -> int:
    config = load_config(args.config)
    speed = parse_pace(args.pace)
    listen = _listen(args, config)
    for path in args.pcaps:
        if not Path(path).is_file():
            raise CamwatchError(f"{path}: no such file" if not Path(path).exists()
                                else f"{path}: not a regular file")
    model = _model(args)
    stop = threading.Event()
    _install_stop_handlers(stop)
    alerts = AlertLog(args.alerts)
    sensor = Sensor(config, on_alert=alerts.write, model=model)
    tune_garbage_collector()
    registry = build_registry(sensor)
    server = (MetricsServer(registry, listen, inventory=sensor.inventory_snapshot, settings=config.metrics)
              if listen else None)
    if server and not args.quiet:
        sys.stderr.write(f"camwatch: serving metrics on {'https' if server.tls else 'http'}://"
                         f"{_fmt(server.address)}/metrics\n")
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
                reader.close()
                progress.done()
        sensor.finish()
    finally:
        elapsed = time.monotonic() - started
        _close_outputs(args, registry, alerts, sensor)
    if not args.quiet:
        print_summary(sensor, elapsed, len(args.pcaps))
    for message in failures:
        sys.stderr.write(f"camwatch: error: {message}\n")
    if server:
        if not stop.is_set():
            if not args.quiet:
                sys.stderr.write("camwatch: replay finished; still serving metrics (Ctrl-C or SIGTERM to stop)\n")
            # Waking up now and then: a signal the kernel hands to a server thread only runs its handler once the
            # main thread next runs Python code, which an untimed wait never does.
            while not stop.wait(0.5):
                pass
        server.close()
    return EXIT_CAPTURE if failures else EXIT_OK


# C901 debt, complexity 19 (limit 15, pyproject.toml [tool.ruff.lint.mccabe]): the live-run wiring (capture,
# model, server, signals, shutdown); split it before it grows.
def cmd_run(args) -> int:  # noqa: C901
    config = load_config(args.config)
    listen = _listen(args, config)
    if args.duration is not None and not args.duration > 0:
        raise CamwatchError(f"--duration {args.duration:g}: expected a positive number of seconds")
    stop = threading.Event()
    _install_stop_handlers(stop)
    alerts = AlertLog(args.alerts, append=args.alerts != "-")
    sensor = Sensor(config, on_alert=alerts.write, model=_model(args))
    tune_garbage_collector()
    registry = build_registry(sensor)
    capturing = threading.Event()
    server = None
    live = None
    try:
        # Serving first: a port already in use is reported before dumpcap starts, and /readyz says "not ready"
        # until the capture really runs.
        server = (MetricsServer(registry, listen, ready=capturing.is_set, inventory=sensor.inventory_snapshot,
                                settings=config.metrics) if listen else None)
        live = LiveCapture(args.interface, args.bpf, buffer_mib=config.capture_buffer_mib)
    except BaseException:
        if server:
            server.close()
        alerts.close()
        raise
    capturing.set()
    sensor.live = True
    if not args.quiet:
        sys.stderr.write(f"camwatch: capturing on {args.interface} "
                         f"(kernel capture ring {config.capture_buffer_mib} MiB)\n")
        if server:
            sys.stderr.write(f"camwatch: serving metrics on {'https' if server.tls else 'http'}://"
                             f"{_fmt(server.address)}/metrics\n")
    deadline = time.monotonic() + args.duration if args.duration else None
    started = time.monotonic()
    # With a capture filter the interface also counts what the filter leaves out: no comparison to make.
    watch_interface = not args.bpf
    interface_read_at = 0.0
    failure = None
    try:
        # After a stop request the loop goes on until dumpcap has written out what it captured and closed the
        # pipe: packets that reached the interface before the signal are counted, not dropped on the floor.
        for batch in live.reader:
            if len(batch):
                sensor.process(batch)
            else:
                sensor.expire(time.time())
            if not live.stopping and (stop.is_set() or (deadline is not None and time.monotonic() >= deadline)):
                live.request_stop()
            sensor.capture_dropped = live.dropped
            if watch_interface and time.monotonic() - interface_read_at >= 1.0:
                interface_read_at = time.monotonic()
                received = live.interface_received()
                with sensor.lock:
                    sensor.interface_received = received
    except CaptureError as exc:
        failure = str(exc)
    finally:
        # A service manager stopping the whole cgroup signals dumpcap too, which may then close the pipe before
        # this loop has seen camwatch's own signal: that is still a requested stop.
        stopped_by_us = live.stopping or stop.is_set()
        live.stop()
        # dumpcap reports its drop statistics as it exits, so only now is the count final.
        with sensor.lock:
            sensor.capture_dropped = live.dropped
            if watch_interface:
                sensor.interface_received = live.interface_received()
        capturing.clear()
        sensor.finish()
        try:
            _close_outputs(args, registry, alerts, sensor)
        finally:
            if server:
                server.close()
    if not args.quiet:
        print_summary(sensor, time.monotonic() - started)
        received = live.received
        sys.stderr.write(f"  capture drops:         {live.dropped:,}"
                         + (f" (dumpcap received {received:,}, passed on {live.captured:,})"
                            if received is not None else "")
                         + (f"; interface drops: {live.interface_dropped:,}" if live.interface_dropped else "")
                         + "\n")
    if live.received is not None and live.captured != sensor.packets:
        # Not expected: the pipe and the reader lose nothing. Said even with --quiet, since it makes every count
        # of this run suspect.
        sys.stderr.write(f"camwatch: warning: dumpcap passed on {live.captured:,} packets but camwatch read "
                         f"{sensor.packets:,}\n")
    if failure is None and not stopped_by_us:
        # dumpcap closed the pipe without being asked: the interface went away, or someone killed it.
        failure = f"capture on {args.interface} ended unexpectedly: {live.error_message()}"
    elif failure is None and live.killed:
        failure = "dumpcap did not stop on SIGTERM and was killed; packets it still held are lost"
    if failure:
        sys.stderr.write(f"camwatch: error: {failure}\n")
        return EXIT_CAPTURE
    return EXIT_OK


def _fmt(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_inspect(args) -> int:
    for path in args.pcaps:
        if not Path(path).is_file():
            raise CamwatchError(f"{path}: no such file")
    rows, seen, written, failures = inspect_device(args.pcaps, args.device)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r['time']}  {r['src']} -> {r['dst']}  {r['protocol']:<8} {r['detail'] or ''}\n")
    sys.stderr.write(f"camwatch: {written:,} of {seen:,} packets were {args.device}'s control plane; "
                     f"Wireshark dissected {len(rows):,} of interest\n")
    for message in failures:
        sys.stderr.write(f"camwatch: error: {message}\n")
    return EXIT_CAPTURE if failures else EXIT_OK


def cmd_inventory(args) -> int:
    if bool(args.pcaps) == bool(args.url):
        raise CamwatchError("inventory: give capture files or --url of a running sensor (one of them)")
    if args.url:
        devices = _fetch_inventory(args.url)
    else:
        sensor = Sensor(load_config(args.config))
        failures = replay_into(sensor, args.pcaps)
        devices = sensor.inventory_snapshot()
        for message in failures:
            sys.stderr.write(f"camwatch: error: {message}\n")
    devices.sort(key=lambda d: (ipaddress.ip_address(d["ip"]).version, ipaddress.ip_address(d["ip"])))
    if args.json:
        sys.stdout.write(json.dumps(devices, indent=2) + "\n")
    else:
        sys.stdout.write(format_inventory(devices))
    return EXIT_CAPTURE if not args.url and failures else EXIT_OK


def _model(args):
    return AnomalyModel.load(args.model) if getattr(args, "model", None) else None


def cmd_train(args) -> int:
    config = load_config(args.config)
    if not 0 < args.contamination < 0.5:
        raise CamwatchError("--contamination must be between 0 and 0.5")
    windows = WindowFeatures(WINDOW_SECONDS, config.max_devices)
    sensor = Sensor(config, windows=windows)
    tune_garbage_collector()
    failures = replay_into(sensor, args.pcaps)
    if failures:
        for message in failures:
            sys.stderr.write(f"camwatch: error: {message}\n")
        return EXIT_CAPTURE
    rows = windows.flush()
    if not rows:
        raise CamwatchError("train: the captures hold no camera-side traffic to learn from")
    model = AnomalyModel.train(np.vstack([r[2] for r in rows]), Path(args.out).name,
                               training_summary(rows, [Path(p).name for p in args.pcaps]),
                               contamination=args.contamination)
    json_path, card_path = model.save(args.out)
    sys.stderr.write(f"camwatch: trained on {len(rows)} device-minutes of {len({r[0] for r in rows})} devices; "
                     f"threshold {model.threshold:.3f}; wrote {json_path} and {card_path}\n")
    return EXIT_OK


def replay_into(sensor: Sensor, paths: list[str]) -> list[str]:
    """Process capture files in order; returns the one-line errors of files that could not be read to the end."""
    failures = []
    for path in paths:
        reader, _ = open_file(path)
        try:
            for batch in reader:
                sensor.process(batch)
        except CaptureError as exc:
            failures.append(str(exc))
        finally:
            reader.close()
    sensor.finish()
    sensor.close()
    return failures


def cmd_eval(args) -> int:
    labels = load_labels(args.labels)
    config = load_config(args.config)
    collected: list[dict] = []
    log = AlertLog(args.alerts) if args.alerts else None

    def on_alert(alert):
        collected.append(alert.as_dict())
        if log:
            log.write(alert)

    sensor = Sensor(config, on_alert=on_alert, model=_model(args))
    tune_garbage_collector()
    failures = replay_into(sensor, args.pcaps)
    if log:
        log.close()
    report = evaluate(collected, labels)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_report(report))
    for message in failures:
        sys.stderr.write(f"camwatch: error: {message}\n")
    return EXIT_CAPTURE if failures else EXIT_OK


def _fetch_inventory(url: str) -> list[dict]:
    target = url.rstrip("/") + "/inventory"
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise CamwatchError(f"cannot read the inventory from {target}: {exc}") from None


def format_inventory(devices: list[dict]) -> str:
    cols = [("IP", lambda d: d["ip"]), ("MAC", lambda d: d["mac"] or "-"),
            ("MANUFACTURER", lambda d: d["vendor"] or "-"),
            ("COVERED", lambda d: f"yes ({d['maker']}, {d['covered_basis']})" if d["covered"] else "no"),
            ("ROLE", lambda d: d["role"]),
            ("MODEL/FIRMWARE", lambda d: " ".join(filter(None, [d["identity"].get("model"), d["identity"].get(
                "firmware"), d["identity"].get("server")])) or "-"),
            ("EXTERNAL DESTINATIONS", lambda d: ", ".join(
                e["name"] or e["ip"] for e in sorted(d["external_destinations"], key=lambda e: -e["bytes"])[:4])
                + (f" (+{len(d['external_destinations']) - 4})" if len(d["external_destinations"]) > 4 else "")
                or "-")]
    rows = [[str(get(d))[:60] for _, get in cols] for d in devices]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "inventory":
            return cmd_inventory(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "hash-password":
            password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            if not password:
                raise CamwatchError("hash-password: empty password")
            print(hash_password(password))
            return EXIT_OK
    except ConfigError as exc:
        sys.stderr.write(f"camwatch: config error: {exc}\n")
        return EXIT_USAGE
    except CamwatchError as exc:
        sys.stderr.write(f"camwatch: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_USAGE
