#!/usr/bin/env python3
"""Live capture benchmark: how fast can tcpreplay feed `camwatch run` before packets go missing?

    sudo .venv/bin/python bench/live_capture.py [--loops 50] [--pcap FILE] [--mbps N | --pps N] [--config FILE]

Two private network namespaces joined by a veth pair (no addresses, IPv6 off, so the kernel adds no frames of its
own); `camwatch run` captures on one end, tcpreplay sends the capture `--loops` times from the other, at top speed
unless --mbps or --pps caps it. The default capture is pcaps/synthetic/camera_site.pcap, repeated by tcpreplay
rather than written out larger; bench/make_capture.py makes bigger ones. Prints packets sent, counted by camwatch,
dropped by the kernel or dumpcap, and rates. Needs root; the namespaces are removed on every exit path.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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

    def __init__(self):
        pid = os.getpid()
        self.sensor_ns, self.feed_ns = f"cw-sensor-{pid}", f"cw-feed-{pid}"
        self.sensor_if, self.feed_if = f"cws{pid}", f"cwf{pid}"

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
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.sensor_ns, self.feed_ns):
            # Only our processes live here; one left running would keep the namespace alive after deletion.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Camwatch:
    def __init__(self, pair: VethPair, metrics: Path, config: str | None):
        cmd = ["ip", "netns", "exec", pair.sensor_ns, str(PYTHON), "-m", "sensor", "run",
               "--interface", pair.sensor_if, "--alerts", os.devnull, "--metrics-out", str(metrics)]
        if config:
            cmd += ["--config", config]
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
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
    ap.add_argument("--sender-nice", type=int, default=19, metavar="N",
                    help="niceness of tcpreplay (default 19: a real traffic source is not on the sensor, so it should "
                         "not take the sensor's CPU; 0 makes them compete as equals)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between the last packet and SIGTERM")
    args = ap.parse_args(argv)
    if args.loops < 1:
        ap.error("--loops must be at least 1")
    try:
        return bench(args)
    except BenchError as exc:
        sys.stderr.write(f"live_capture: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("live_capture: interrupted; namespaces removed\n")
        return 130


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

    with tempfile.TemporaryDirectory(prefix="camwatch-live-") as tmp, VethPair() as pair:
        metrics = Path(tmp) / "metrics.prom"
        cw = Camwatch(pair, metrics, args.config)
        try:
            cw.wait_capturing()
            cpu_before = cw.cpu_seconds()
            # --preload-pcap: looping from memory, so the disk never sets the pace.
            feed = subprocess.run(["ip", "netns", "exec", pair.feed_ns, "nice", "-n", str(args.sender_nice),
                                   "tcpreplay", "-i", pair.feed_if,
                                   "--preload-pcap", "--loop", str(args.loops), *speed, str(args.pcap)],
                                  capture_output=True, text=True)
            report = feed.stdout + feed.stderr
            if feed.returncode != 0:
                raise BenchError(f"tcpreplay failed: {report.strip()}")
            time.sleep(args.settle)
            cpu = cw.cpu_seconds() - cpu_before
            rc = cw.stop()
        finally:
            cw.kill()
        if rc != 0:
            raise BenchError(f"camwatch exited {rc}: {cw.stderr.strip()}")
        text = metrics.read_text()

    sent = int(number(r"Successful packets:\s+(\d+)", report, "sent count"))
    failed = int(number(r"Failed packets:\s+(\d+)", report, "failed count"))
    retried = int(number(r"Retried packets \(ENOBUFS\):\s+(\d+)", report, "ENOBUFS count"))
    seconds = number(r"^Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds", report, "send time")
    mbps = number(r"^Rated: [\d.]+ Bps, ([\d.]+) Mbps", report, "send rate")
    counted = int(number(r"^camwatch_packets_total(?:\{[^}]*\})? (\S+)$", text, "camwatch_packets_total"))
    dropped = int(number(r"^camwatch_capture_dropped_packets_total(?:\{[^}]*\})? (\S+)$", text,
                         "camwatch_capture_dropped_packets_total"))
    handed = re.search(r"dumpcap received ([\d,]+), passed on ([\d,]+)", cw.stderr)
    missing = sent - counted - dropped

    rows = [
        ("capture", f"{args.pcap.name} x {args.loops} ({' '.join(speed)}, tcpreplay at nice {args.sender_nice})"),
        ("sent (tcpreplay)", f"{sent:,} packets in {seconds:.2f} s: {sent / seconds:,.0f} packets/s, "
                             f"{mbps:,.1f} Mbit/s" + (f"; {failed:,} failed" if failed else "")
                             + (f"; {retried:,} retried on ENOBUFS" if retried else "")),
        ("counted (camwatch)", f"{counted:,} ({100 * counted / sent:.2f} %)" if sent else f"{counted:,}"),
        ("dropped (kernel/dumpcap)", f"{dropped:,}"),
        ("dumpcap received", f"{handed[1]}, passed on {handed[2]}" if handed else "not reported"),
        ("unaccounted", f"{missing:,}" + ("  <-- lost between capture and camwatch" if missing else "")),
        ("camwatch CPU", f"{cpu:.2f} s until SIGTERM, dumpcap not included"
                         + (f" ({counted / cpu:,.0f} packets per CPU second)" if cpu > 0 else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
