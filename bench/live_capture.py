#!/usr/bin/env python3
"""Live capture benchmark: how fast can tcpreplay feed `camwatch run` before packets go missing?

    sudo .venv/bin/python bench/live_capture.py [--loops 50] [--pcap FILE] [--mbps N | --pps N] [--config FILE]
        [--engine dumpcap|tpacket | --compare [--rounds N]]

Two private network namespaces joined by a veth pair (no addresses, IPv6 off, so the kernel adds no frames of its
own); `camwatch run` captures on one end, tcpreplay sends the capture `--loops` times from the other, at top speed
unless --mbps or --pps caps it. The default capture is pcaps/synthetic/camera_site.pcap, repeated by tcpreplay
rather than written out larger; bench/make_capture.py makes bigger ones. Prints packets sent, counted by camwatch,
dropped by the kernel or dumpcap, and rates. Needs root; the namespaces are removed on every exit path.

--engine picks camwatch's capture engine (dumpcap, or its own TPACKET_V3 ring); --compare runs both, alternating,
--rounds times each, on the same veth pair, and ends with one table. Each run reports the loss, the processing lag
(camwatch_processing_lag_seconds, scraped from camwatch's endpoint every 0.25 s: its peak and its mean) and CPU
per packet: the sensor's (camwatch's process, plus dumpcap's for the dumpcap engine) and the capture's alone
(dumpcap's, plus the camwatch thread draining its pipe; or the tpacket engine's ring reads).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PCAP = REPO / "pcaps" / "synthetic" / "camera_site.pcap"
PYTHON = REPO / ".venv" / "bin" / "python"


class BenchError(Exception):
    """Something the user can fix; printed as one line."""


def sh(*cmd: str, timeout: float = 30) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip() or f'exit {proc.returncode}'}")
    return proc.stdout


class VethPair:
    """Two namespaces of our own, one veth end in each; deleted on exit, whatever happened."""

    def __init__(self, prefix: str = "cw"):
        pid = os.getpid()
        self.sensor_ns, self.feed_ns = f"{prefix}-sensor-{pid}", f"{prefix}-feed-{pid}"
        self.sensor_if, self.feed_if = f"{prefix}s{pid}", f"{prefix}f{pid}"
        if len(self.sensor_if) > 15:   # IFNAMSIZ
            raise BenchError(f"--netns-prefix {prefix!r} is too long for interface names")

    def __enter__(self) -> VethPair:
        try:
            sh("ip", "netns", "add", self.sensor_ns)
            sh("ip", "netns", "add", self.feed_ns)
            # Created in place: neither end ever appears in the host's namespace.
            sh("ip", "link", "add", self.sensor_if, "netns", self.sensor_ns, "type", "veth",
               "peer", "name", self.feed_if, "netns", self.feed_ns)
            for ns, ifname in ((self.sensor_ns, self.sensor_if), (self.feed_ns, self.feed_if)):
                # Before the link goes up, or IPv6 autoconfiguration sends frames the sensor would count.
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1")
                sh("ip", "-n", ns, "link", "set", ifname, "up")
            # camwatch's metrics endpoint, for the lag, on the sensor namespace's own loopback.
            sh("ip", "-n", self.sensor_ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        remove_namespaces(self.sensor_ns, self.feed_ns)


def remove_namespaces(*names: str) -> None:
    """Namespaces of our own deleted, whatever was left running in them (also bench/make_encoded.py's)."""
    for ns in names:
        # Only our processes live here; one left running would keep the namespace alive after deletion.
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


METRICS_PORT = 9847


class Camwatch:
    def __init__(self, pair: VethPair, metrics: Path, config: str | None, engine: str | None = None):
        cmd = ["ip", "netns", "exec", pair.sensor_ns, str(PYTHON), "-m", "sensor", "run",
               "--interface", pair.sensor_if, "--alerts", os.devnull, "--metrics-out", str(metrics),
               "--serve", f"127.0.0.1:{METRICS_PORT}"]
        if config:
            cmd += ["--config", config]
        if engine:
            cmd += ["--engine", engine]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.capturing = threading.Event()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("camwatch: capturing on"):
                self.capturing.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_capturing(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.capturing.wait(0.05):
            if self.proc.poll() is not None:
                self.thread.join(2)
                raise BenchError(f"camwatch exited before capturing: {self.stderr.strip()}")
            if time.monotonic() > deadline:
                raise BenchError(f"camwatch not capturing after {timeout:g} s")

    def cpu_seconds(self) -> float:
        """User + system CPU of the camwatch process (not dumpcap) so far."""
        return process_cpu(self.proc.pid)

    def dumpcap_cpu_seconds(self) -> float:
        """User + system CPU of camwatch's dumpcap so far; 0 when there is none (the tpacket engine)."""
        total = 0.0
        for child in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "dumpcap":
                    total += process_cpu(int(child))
            except OSError:
                pass   # ended meanwhile
        return total

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"camwatch still running {timeout:g} s after SIGTERM") from None
        self.thread.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM first, so camwatch takes its dumpcap down with it.
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LagProbe:
    """Scrapes camwatch_processing_lag_seconds from camwatch's endpoint in the sensor namespace every `period`
    seconds, from a thread that joins that namespace (setns is per thread); keeps every sample."""

    CLONE_NEWNET = 0x40000000

    def __init__(self, namespace: str, period: float = 0.25):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._namespace = namespace
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self._namespace}") as ns:
            if libc.setns(ns.fileno(), self.CLONE_NEWNET) != 0:
                return
        # only the lag: a whole scrape at 10,000 devices is ~0.3 s of the sensor's CPU, which would be measured too
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics?name[]=camwatch_processing_lag_seconds"
        while not self._stop.wait(self._period):
            try:
                text = urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                continue
            m = re.search(r"^camwatch_processing_lag_seconds(?:\{[^}]*\})? (\S+)$", text, re.M)
            if m:
                self.samples.append(float(m[1]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text, re.M)
    if not m:
        raise BenchError(f"no {what} in:\n{text.strip()}")
    return float(m[1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", type=Path, default=DEFAULT_PCAP, help=f"capture to send (default: {DEFAULT_PCAP.name})")
    ap.add_argument("--loops", type=int, default=50, help="times tcpreplay sends the capture (default 50)")
    rate = ap.add_mutually_exclusive_group()
    rate.add_argument("--mbps", type=float, help="cap the send rate in Mbit/s (default: top speed)")
    rate.add_argument("--pps", type=float, help="cap the send rate in packets/s (default: top speed)")
    ap.add_argument("--config", help="camwatch.toml for the sensor (default: zero-config)")
    engine = ap.add_mutually_exclusive_group()
    engine.add_argument("--engine", choices=ENGINES, help="camwatch's capture engine (default: the config's, dumpcap)")
    engine.add_argument("--compare", action="store_true", help="run both engines, alternating, and compare them")
    ap.add_argument("--rounds", type=int, default=1, help="with --compare: runs of each engine (default 1)")
    ap.add_argument("--sender-nice", type=int, default=19, metavar="N",
                    help="niceness of tcpreplay (default 19: a real traffic source is not on the sensor, so it should "
                         "not take the sensor's CPU; 0 makes them compete as equals)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between the last packet and SIGTERM")
    ap.add_argument("--netns-prefix", default="cw", metavar="PREFIX",
                    help="names of the namespaces (PREFIX-sensor-PID, PREFIX-feed-PID; default cw)")
    args = ap.parse_args(argv)
    if args.loops < 1:
        ap.error("--loops must be at least 1")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return run_script("live_capture", lambda: bench(args))


def run_script(prog: str, work: Callable[[], int]) -> int:
    """The end of every namespace-making bench script (this one, make_encoded.py, soak.py): work's exit code, or one
    line and 2 for a BenchError, 130 for Ctrl-C. The namespaces are gone by then: work removes them on its way out."""
    try:
        return work()
    except BenchError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; namespaces removed\n")
        return 130


ENGINES = ("dumpcap", "tpacket")


def bench(args) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root: creates network namespaces and a veth pair")
    for tool in ("ip", "tcpreplay", "dumpcap"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not installed")
    if not PYTHON.exists():
        raise BenchError(f"{PYTHON} missing: run scripts/bootstrap.sh first")
    if not args.pcap.is_file():
        raise BenchError(f"{args.pcap}: no such file")
    speed = (["--mbps", f"{args.mbps:g}"] if args.mbps else ["--pps", f"{args.pps:g}"] if args.pps
             else ["--topspeed"])
    engines = list(ENGINES) * args.rounds if args.compare else [args.engine]
    results = []
    with VethPair(args.netns_prefix) as pair:
        for engine in engines:
            result = one_run(args, pair, engine, speed)
            results.append(result)
            print_run(args, speed, result)
            print()
    if len(results) > 1:
        print_table(results)
    return 0 if all(r["missing"] == 0 for r in results) else 1


def one_run(args, pair: VethPair, engine: str | None, speed: list[str]) -> dict:
    """One camwatch run fed by one tcpreplay run: the counts, rates, lag and CPU."""
    with tempfile.TemporaryDirectory(prefix="camwatch-live-") as tmp:
        metrics = Path(tmp) / "metrics.prom"
        cw = Camwatch(pair, metrics, args.config, engine)
        try:
            cw.wait_capturing()
            cpu_before, dumpcap_before = cw.cpu_seconds(), cw.dumpcap_cpu_seconds()
            probe = LagProbe(pair.sensor_ns)
            # --preload-pcap: looping from memory, so the disk never sets the pace.
            feed = subprocess.run(["ip", "netns", "exec", pair.feed_ns, "nice", "-n", str(args.sender_nice),
                                   "tcpreplay", "-i", pair.feed_if,
                                   "--preload-pcap", "--loop", str(args.loops), *speed, str(args.pcap)],
                                  capture_output=True, text=True)
            report = feed.stdout + feed.stderr
            if feed.returncode != 0:
                raise BenchError(f"tcpreplay failed: {report.strip()}")
            probe.stop()
            time.sleep(args.settle)
            cpu = cw.cpu_seconds() - cpu_before
            dumpcap_cpu = cw.dumpcap_cpu_seconds() - dumpcap_before
            rc = cw.stop()
        finally:
            cw.kill()
        if rc != 0:
            raise BenchError(f"camwatch exited {rc}: {cw.stderr.strip()}")
        text = metrics.read_text()
    sent = int(number(r"Successful packets:\s+(\d+)", report, "sent count"))
    counted = int(number(r"^camwatch_packets_total(?:\{[^}]*\})? (\S+)$", text, "camwatch_packets_total"))
    dropped = int(number(r"^camwatch_capture_dropped_packets_total(?:\{[^}]*\})? (\S+)$", text,
                         "camwatch_capture_dropped_packets_total"))
    handed = re.search(r"(\w+) received ([\d,]+), passed on ([\d,]+)", cw.stderr)
    return {
        "engine": engine or "config's", "sent": sent, "counted": counted, "dropped": dropped,
        "missing": sent - counted - dropped, "handed": handed,
        "failed": int(number(r"Failed packets:\s+(\d+)", report, "failed count")),
        "retried": int(number(r"Retried packets \(ENOBUFS\):\s+(\d+)", report, "ENOBUFS count")),
        "seconds": number(r"^Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds", report, "send time"),
        "mbps": number(r"^Rated: [\d.]+ Bps, ([\d.]+) Mbps", report, "send rate"),
        "cpu": cpu, "dumpcap_cpu": dumpcap_cpu, "lags": probe.samples,
        # camwatch's own threads' share of taking packets in: the ring's reads, or the pump draining dumpcap's pipe
        "intake_cpu": number(r"capture CPU in camwatch:\s+([\d.]+) s", cw.stderr, "capture CPU"),
    }


def print_run(args, speed: list[str], r: dict) -> None:
    sent, counted, cpu, dcpu = r["sent"], r["counted"], r["cpu"], r["dumpcap_cpu"]
    lags = r["lags"]
    handed = r["handed"]
    rows = [
        ("engine", r["engine"]),
        ("capture", f"{args.pcap.name} x {args.loops} ({' '.join(speed)}, tcpreplay at nice {args.sender_nice})"),
        ("sent (tcpreplay)", f"{sent:,} packets in {r['seconds']:.2f} s: {sent / r['seconds']:,.0f} packets/s, "
                             f"{r['mbps']:,.1f} Mbit/s" + (f"; {r['failed']:,} failed" if r["failed"] else "")
                             + (f"; {r['retried']:,} retried on ENOBUFS" if r["retried"] else "")),
        ("counted (camwatch)", f"{counted:,} ({100 * counted / sent:.2f} %)" if sent else f"{counted:,}"),
        ("dropped (kernel/dumpcap)", f"{r['dropped']:,}"),
        ("engine received", f"{handed[2]}, passed on {handed[3]} ({handed[1]})" if handed else "not reported"),
        ("unaccounted", f"{r['missing']:,}" + ("  <-- lost between capture and camwatch" if r["missing"] else "")),
        ("processing lag", f"peak {max(lags):.2f} s, mean {sum(lags) / len(lags):.2f} s ({len(lags)} samples)"
                           if lags else "no samples"),
        ("camwatch CPU", f"{cpu:.2f} s until SIGTERM" + (f" ({counted / cpu:,.0f} packets per CPU second)"
                                                         if cpu > 0 else "")),
        ("dumpcap CPU", f"{dcpu:.2f} s" if r["engine"] != "tpacket" else "none (no capture process)"),
        ("sensor CPU per packet", f"{1e6 * (cpu + dcpu) / counted:.2f} µs (camwatch + dumpcap)" if counted else "-"),
        ("capture CPU per packet", f"{1e6 * (r['intake_cpu'] + dcpu) / counted:.2f} µs (dumpcap + camwatch's "
                                   f"{r['intake_cpu']:.2f} s taking packets in)" if counted else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def print_table(results: list[dict]) -> None:
    print("| engine | sent | packets/s | lost (sent - counted) | dropped | unaccounted | lag peak / mean | "
          "camwatch CPU | dumpcap CPU | sensor µs CPU per packet | capture µs CPU per packet |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        lags = r["lags"]
        lag = f"{max(lags):.2f} / {sum(lags) / len(lags):.2f} s" if lags else "-"
        lost = r["sent"] - r["counted"]
        per = 1e6 * (r["cpu"] + r["dumpcap_cpu"]) / r["counted"] if r["counted"] else float("nan")
        intake = 1e6 * (r["intake_cpu"] + r["dumpcap_cpu"]) / r["counted"] if r["counted"] else float("nan")
        print(f"| {r['engine']} | {r['sent']:,} | {r['sent'] / r['seconds']:,.0f} | {lost:,} "
              f"({100 * lost / max(1, r['sent']):.2f}%) | {r['dropped']:,} | {r['missing']:,} | {lag} | "
              f"{r['cpu']:.2f} s | {r['dumpcap_cpu']:.2f} s | {per:.2f} | {intake:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
