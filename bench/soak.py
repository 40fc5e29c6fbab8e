#!/usr/bin/env python3
"""Live soak: an hour (or more) of steady camera traffic with churn; is camwatch's memory flat after warm-up?

    sudo .venv/bin/python bench/soak.py [--minutes 65] [--pps 20000] [--warmup-minutes 10] [--sample-seconds 30]
                                        [--out /tmp/camwatch-soak.csv] [--pcap FILE]

A bench script, not a test. Two private network namespaces joined by a veth pair, as in bench/live_capture.py (no
addresses, IPv6 off, loopback up in the sensor's namespace for the metrics). `camwatch run` captures on one end
with a state database (`[state] path`) and otherwise zero-config networks, so every private address is camera-side;
tcpreplay sends the capture from the other end `--loop 0 --unique-ip --pps N` until the soak ends. `--unique-ip`
shifts the IPv4 addresses by one per loop (the lower address of each packet down, the higher one up, checksums
unchanged), so every loop brings new flows and new camera-side devices: with the demo capture the cameras, NVR
and gateway drift from 10.20.0.0/24 through 10.19.x.x and 10.20.x.x (a ~35,000-address spread an hour at 20,000
packets/s), always inside 10.0.0.0/8 and so always camera-side; the Internet peers drift through public space and
the SSDP group out of 239.255.255.250 into 240.x.x.x. The soak checks at the end that every device in the state
database is camera-side.

Every --sample-seconds: the camwatch process's RSS, VmHWM and open descriptors (from /proc, the process found
among the namespace's pids by its command line), the state database's and its WAL's sizes and each table's rows
(read-only), and a scrape of /metrics from inside the sensor's namespace (flows, devices, packets, drops, lag,
evictions, state write errors, and how long the scrape took). A line per sample, a CSV row per sample (--out), and
at the end a summary: RSS after warm-up and its least-squares growth in MB/hour, descriptor range, WAL and database
bounds, drops, scrape times. Then tcpreplay stops, camwatch gets SIGTERM and must exit 0, and the soak reports
whether the WAL is gone after the clean stop. The summary is also written as JSON next to the CSV. Ctrl-C ends
the sampling early and still stops, summarises and removes the namespaces.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_capture import DEFAULT_PCAP, PYTHON, REPO, BenchError, VethPair, run_script, sh

CAMWATCH = REPO / ".venv" / "bin" / "camwatch"
MB = 1e6
# What the sensor's zero-config camera side is (sensor/config.py DEFAULT_CAMERA_NETWORKS, IPv4 part).
CAMERA_SIDE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                       "100.64.0.0/10"))

SCRAPE = """
import sys, time, urllib.request
t = time.perf_counter()
body = urllib.request.urlopen(sys.argv[1], timeout=60).read()
sys.stdout.write(f"#scrape {time.perf_counter() - t:.6f} {len(body)}\\n")
sys.stdout.write(body.decode())
"""

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.M)

COLUMNS = [
    "t_s", "phase", "wall", "rss_mb", "hwm_mb", "rss_anon_mb", "heap_mb", "thread_arenas_mb", "anon_maps_mb",
    "fds", "threads", "cpu_pct", "dumpcap_rss_mb",
    "db_mb", "wal_mb", "alerts_mb",
    "flows_active", "devices", "external_destinations", "packets_total", "pps", "dropped_total", "lag_s",
    "evictions_total", "evictions",
    "flows_evicted_total", "devices_evicted_total", "state_write_errors_total", "process_rss_mb",
    "scrape_s", "scrape_wall_s", "scrape_kb", "errors",
]


def status_fields(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, Threads ... of /proc/PID/status, in kB (Threads as is)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


# glibc gives each thread that mallocs a heap of its own: a 64 MiB-aligned reservation (HEAP_MAX_SIZE) whose used
# part is read-write and the rest, just above it, PROT_NONE. Python's object arenas, numpy arrays and the capture
# slabs are the other anonymous mappings (the kernel merges neighbours, so only that shape tells a heap apart).
THREAD_HEAP_ALIGN = 64 << 20
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+ *(.*)$")


def resident_by_kind(pid: int) -> dict[str, float]:
    """Resident MB of the main malloc heap, of the per-thread malloc heaps, and of the other anonymous mappings
    (/proc/PID/smaps): which allocator a growth is in."""
    maps: list[list] = []   # [start, end, perms, path, rss kB]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = MAPPING.match(line)
        if head:
            maps.append([int(head[1], 16), int(head[2], 16), head[3], head[4], 0])
        elif maps and line.startswith("Rss:"):
            maps[-1][4] = int(line.split()[1])
    out = {"heap_mb": 0.0, "thread_arenas_mb": 0.0, "anon_maps_mb": 0.0}
    for i, (start, end, perms, path, rss) in enumerate(maps):
        if path == "[heap]":
            out["heap_mb"] += rss * 1024 / MB
        elif not path and perms.startswith("rw"):
            above = maps[i + 1] if i + 1 < len(maps) else None
            reserve_above = above is not None and above[0] == end and above[2].startswith("---") and not above[3]
            thread_heap = start % THREAD_HEAP_ALIGN == 0 and (reserve_above or end - start == THREAD_HEAP_ALIGN)
            out["thread_arenas_mb" if thread_heap else "anon_maps_mb"] += rss * 1024 / MB
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def namespace_processes(ns: str) -> dict[int, list[bytes]]:
    """pid -> command line of every process in the namespace."""
    found = {}
    for pid in sh("ip", "netns", "pids", ns).split():
        try:
            found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return found


def metric_values(text: str) -> dict[str, list[tuple[str, float]]]:
    """name -> [(labels, value)] of a Prometheus text exposition."""
    out: dict[str, list[tuple[str, float]]] = {}
    for name, labels, value in METRIC_LINE.findall(text):
        try:
            out.setdefault(name, []).append((labels or "", float(value)))
        except ValueError:
            pass
    return out


def total(values: dict, name: str, label: str | None = None) -> float | None:
    """Sum of a metric over its label sets (only those containing `label` if given); None if absent."""
    rows = [v for labels, v in values.get(name, []) if label is None or label in labels]
    return sum(rows) if rows else None


def open_ro(db: Path, immutable: bool = False) -> sqlite3.Connection:
    """Read-only. `immutable` once camwatch has stopped and left no WAL: then reading creates no -wal or -shm file
    of its own either (a plain read-only open of a WAL database does), which would spoil the check for leftovers."""
    return sqlite3.connect(f"file:{db}?mode=ro" + ("&immutable=1" if immutable else ""), uri=True, timeout=10)


def table_rows(db: Path, immutable: bool = False) -> dict[str, int]:
    """Rows of each table, read-only, in a transaction kept as short as possible (a reader holding the WAL would
    make camwatch's TRUNCATE checkpoint fail)."""
    con = open_ro(db, immutable)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def header(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(100)


def file_mb(path: Path) -> float | None:
    try:
        return path.stat().st_size / MB
    except FileNotFoundError:
        return None


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return slope, my - slope * mx


def fmt(value, spec: str = ",.1f", none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


class Soak:
    def __init__(self, args, pair: VethPair, tmp: Path):
        self.args, self.pair, self.tmp = args, pair, tmp
        self.db = tmp / "state.db"
        self.wal = tmp / "state.db-wal"
        self.alerts = tmp / "alerts.jsonl"
        self.metrics_out = tmp / "metrics.prom"
        self.config = tmp / "camwatch.toml"
        self.stderr_path = tmp / "camwatch.stderr"
        self.feed_log = tmp / "tcpreplay.log"
        self.cw: subprocess.Popen | None = None
        self.exited_before_sigterm = False
        self.feed: subprocess.Popen | None = None
        self.pid: int | None = None
        self.dumpcap_pid: int | None = None
        self.url: str | None = None
        self.samples: list[dict] = []
        self.rows_seen: list[dict[str, int]] = []
        self.t0 = 0.0
        self._last_cpu: tuple[float, float] | None = None
        self._last_packets: tuple[float, float] | None = None
        self._csv = None
        self._writer = None

    # ---- processes -------------------------------------------------------------------------------------------

    def start_camwatch(self) -> None:
        # Zero-config networks: every private address is camera-side. Only the state database is configured.
        self.config.write_text(f"[state]\npath = {json.dumps(str(self.db))}\n")
        sh("ip", "-n", self.pair.sensor_ns, "link", "set", "lo", "up")   # where the metrics are served
        cmd = ["ip", "netns", "exec", self.pair.sensor_ns, str(CAMWATCH), "run", "--interface", self.pair.sensor_if,
               "--serve", "127.0.0.1:0", "--config", str(self.config), "--alerts", str(self.alerts),
               "--metrics-out", str(self.metrics_out)]
        self.stderr_file = open(self.stderr_path, "w")
        self.cw = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr_file)
        deadline = time.monotonic() + 30
        while True:
            text = self.stderr_path.read_text()
            served = re.search(r"serving metrics on (http://\S+)", text)
            if "camwatch: capturing on" in text and served:
                self.url = served[1]
                break
            if self.cw.poll() is not None:
                raise BenchError(f"camwatch exited {self.cw.returncode} before capturing: {text.strip()}")
            if time.monotonic() > deadline:
                raise BenchError(f"camwatch not capturing and serving after 30 s: {text.strip()}")
            time.sleep(0.1)
        # The python process and its dumpcap, found by command line among the namespace's processes.
        for pid, cmdline in namespace_processes(self.pair.sensor_ns).items():
            words = [w.decode(errors="replace") for w in cmdline]
            if any(w.endswith("camwatch") for w in words) and "run" in words and Path(words[0]).name.startswith(
                    "python"):
                self.pid = pid
            elif words and Path(words[0]).name == "dumpcap":
                self.dumpcap_pid = pid
        if self.pid is None:
            raise BenchError(f"no camwatch python process among the pids of {self.pair.sensor_ns}")
        if self.pid != self.cw.pid:   # `ip netns exec` execs in place, so they should be the same process
            print(f"note: camwatch python pid {self.pid}, launched pid {self.cw.pid}", flush=True)

    def start_feed(self) -> None:
        # --preload-pcap: looping from memory. --loop 0: until stopped. --unique-ip: new addresses every loop.
        cmd = ["ip", "netns", "exec", self.pair.feed_ns, "nice", "-n", str(self.args.sender_nice),
               "tcpreplay", "-i", self.pair.feed_if, "--preload-pcap", "--loop", "0", "--unique-ip",
               "--pps", f"{self.args.pps:g}", str(self.args.pcap)]
        self.feed_file = open(self.feed_log, "w")
        self.feed = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.feed_file, stderr=subprocess.STDOUT)
        self.t0 = time.monotonic()
        time.sleep(0.5)
        if self.feed.poll() is not None:
            raise BenchError(f"tcpreplay exited {self.feed.returncode}: {self.feed_log.read_text().strip()}")

    def stop_feed(self) -> dict:
        """SIGINT, as Ctrl-C: tcpreplay prints its statistics and exits."""
        if self.feed is None:
            return {}
        if self.feed.poll() is None:
            self.feed.send_signal(signal.SIGINT)
            try:
                self.feed.wait(30)
            except subprocess.TimeoutExpired:
                self.feed.kill()
                self.feed.wait()
        self.feed_file.close()
        report = self.feed_log.read_text()
        out = {"tcpreplay_exit": self.feed.returncode}
        # "Actual", not "Successful packets": interrupted mid-send, the latter has come out one short.
        for key, pattern in (("sent", r"^Actual: (\d+) packets"), ("successful", r"Successful packets:\s+(\d+)"),
                             ("failed", r"Failed packets:\s+(\d+)"),
                             ("seconds", r"^Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds"),
                             ("pps", r"^Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps"),
                             ("enobufs", r"Retried packets \(ENOBUFS\):\s+(\d+)")):
            m = re.search(pattern, report, re.M)
            out[key] = float(m[1]) if m else None
        return out

    def stop_camwatch(self, timeout: float = 120) -> tuple[int | None, float]:
        started = time.monotonic()
        self.exited_before_sigterm = self.cw.poll() is not None
        self.cw.send_signal(signal.SIGTERM)
        try:
            rc = self.cw.wait(timeout)
        except subprocess.TimeoutExpired:
            self.cw.kill()
            self.cw.wait()
            rc = None
        self.stderr_file.close()
        return rc, time.monotonic() - started

    def kill_all(self) -> None:
        for proc in (self.feed, self.cw):
            if proc is not None and proc.poll() is None:
                proc.terminate()   # SIGTERM first, so camwatch takes its dumpcap down with it
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # ---- sampling --------------------------------------------------------------------------------------------

    def scrape(self) -> tuple[str, float, float, int]:
        """(exposition, seconds the HTTP request took, seconds including the helper's start-up, bytes)."""
        started = time.monotonic()
        proc = subprocess.run(["ip", "netns", "exec", self.pair.sensor_ns, str(PYTHON), "-c", SCRAPE, self.url],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BenchError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
        text = proc.stdout
        wall = time.monotonic() - started
        head, _, body = text.partition("\n")
        _, seconds, size = head.split()
        return body, float(seconds), wall, int(size)

    def sample(self, phase: str) -> dict:
        row: dict = {"t_s": round(time.monotonic() - self.t0, 1), "phase": phase,
                     "wall": time.strftime("%Y-%m-%dT%H:%M:%S")}
        errors = []
        try:
            st = status_fields(self.pid)
            row.update(rss_mb=st["VmRSS"] * 1024 / MB, hwm_mb=st["VmHWM"] * 1024 / MB,
                       rss_anon_mb=st.get("RssAnon", 0) * 1024 / MB, threads=st.get("Threads"),
                       fds=len(os.listdir(f"/proc/{self.pid}/fd")))
            row.update(resident_by_kind(self.pid))
            now, cpu = time.monotonic(), cpu_seconds(self.pid)
            if self._last_cpu:
                row["cpu_pct"] = 100 * (cpu - self._last_cpu[1]) / max(now - self._last_cpu[0], 1e-9)
            self._last_cpu = (now, cpu)
        except (OSError, KeyError) as exc:
            errors.append(f"proc: {exc}")
        if self.dumpcap_pid:
            try:
                row["dumpcap_rss_mb"] = status_fields(self.dumpcap_pid)["VmRSS"] * 1024 / MB
            except (OSError, KeyError):
                pass
        row.update(db_mb=file_mb(self.db), wal_mb=file_mb(self.wal) or 0.0, alerts_mb=file_mb(self.alerts))
        if self.cw.poll() is not None:
            # Gone already (a Ctrl-C reaches the whole process group): nothing to scrape, and opening its database
            # now would create the -wal and -shm files whose absence the end of the soak checks.
            row["errors"] = f"camwatch has exited ({self.cw.returncode})"
            self.samples.append(row)
            self.write_row(row)
            self.progress(row)
            return row
        try:
            rows = table_rows(self.db)
            self.rows_seen.append(rows)
            for table, count in rows.items():
                row[f"rows_{table}"] = count
        except sqlite3.Error as exc:
            errors.append(f"sqlite: {exc}")
        try:
            body, seconds, wall, size = self.scrape()
            v = metric_values(body)
            packets = total(v, "camwatch_packets_total")
            now = time.monotonic()
            if packets is not None and self._last_packets:
                row["pps"] = (packets - self._last_packets[1]) / max(now - self._last_packets[0], 1e-9)
            if packets is not None:
                self._last_packets = (now, packets)
            evictions = {re.search(r'structure="([^"]*)"', labels)[1]: value
                         for labels, value in v.get("camwatch_evictions_total", []) if "structure=" in labels}
            prss = total(v, "process_resident_memory_bytes")
            row.update(flows_active=total(v, "camwatch_flows_active"), devices=total(v, "camwatch_devices"),
                       external_destinations=total(v, "camwatch_external_destinations"),
                       packets_total=packets, dropped_total=total(v, "camwatch_capture_dropped_packets_total"),
                       lag_s=total(v, "camwatch_processing_lag_seconds"),
                       evictions_total=total(v, "camwatch_evictions_total"),
                       evictions=" ".join(f"{k}={int(n)}" for k, n in sorted(evictions.items())),
                       flows_evicted_total=total(v, "camwatch_flows_expired_total", 'reason="evicted"'),
                       devices_evicted_total=total(v, "camwatch_devices_evicted_total"),
                       state_write_errors_total=total(v, "camwatch_state_write_errors_total"),
                       process_rss_mb=prss / MB if prss is not None else None,
                       scrape_s=seconds, scrape_wall_s=wall, scrape_kb=size / 1000)
        except (BenchError, subprocess.TimeoutExpired, ValueError) as exc:
            errors.append(f"scrape: {str(exc)[:200]}")
        row["errors"] = "; ".join(errors)
        self.samples.append(row)
        self.write_row(row)
        self.progress(row)
        return row

    def write_row(self, row: dict) -> None:
        if self._writer is None:
            tables = sorted(k for k in row if k.startswith("rows_"))
            self._csv = open(self.args.out, "w", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=COLUMNS[:13] + tables + COLUMNS[13:],
                                          extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        self._csv.flush()

    @staticmethod
    def progress(r: dict) -> None:
        rows = " ".join(f"{k[5:]}={v:,}" for k, v in sorted(r.items()) if k.startswith("rows_") and k != "rows_meta")
        print(f"{r['t_s'] / 60:6.1f} min {r['phase']:<7} rss {fmt(r.get('rss_mb'))} MB (hwm {fmt(r.get('hwm_mb'))}) "
              f"[heap {fmt(r.get('heap_mb'))} threads {fmt(r.get('thread_arenas_mb'))} "
              f"anon {fmt(r.get('anon_maps_mb'))}] fds {fmt(r.get('fds'), 'd')} cpu {fmt(r.get('cpu_pct'), '.0f')}% | "
              f"flows {fmt(r.get('flows_active'), ',.0f')} devices {fmt(r.get('devices'), ',.0f')} "
              f"pps {fmt(r.get('pps'), ',.0f')} drops {fmt(r.get('dropped_total'), ',.0f')} "
              f"lag {fmt(r.get('lag_s'), '.2f')} s evictions {fmt(r.get('evictions_total'), ',.0f')} "
              f"write_errors {fmt(r.get('state_write_errors_total'), ',.0f')} | "
              f"db {fmt(r.get('db_mb'))} MB wal {fmt(r.get('wal_mb'), ',.2f')} MB {rows} | "
              f"scrape {fmt(r.get('scrape_s'), '.2f')} s {fmt(r.get('scrape_kb'), ',.0f')} kB"
              + (f" | ERRORS {r['errors']}" if r.get("errors") else ""), flush=True)

    def run(self) -> dict:
        args = self.args
        self.start_camwatch()
        self.start_feed()
        print(f"soak: camwatch pid {self.pid} (dumpcap {self.dumpcap_pid}) in {self.pair.sensor_ns}, metrics "
              f"{self.url}; tcpreplay {args.pps:g} packets/s --unique-ip in {self.pair.feed_ns}; "
              f"{args.minutes:g} min, warm-up {args.warmup_minutes:g} min, a sample every {args.sample_seconds:g} s; "
              f"state {self.db}", flush=True)
        end = self.t0 + args.minutes * 60
        interrupted = False
        try:
            k = 0
            while True:
                k += 1
                due = self.t0 + k * args.sample_seconds
                if due > end + 1e-6:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                if self.cw.poll() is not None:
                    raise BenchError(f"camwatch exited {self.cw.returncode} during the soak: "
                                     f"{self.stderr_path.read_text()[-2000:].strip()}")
                if self.feed.poll() is not None:
                    raise BenchError(f"tcpreplay exited {self.feed.returncode}: "
                                     f"{self.feed_log.read_text()[-2000:].strip()}")
                self.sample("warmup" if time.monotonic() - self.t0 < args.warmup_minutes * 60 else "soak")
        except KeyboardInterrupt:
            interrupted = True
            print("soak: interrupted; stopping and summarising what was sampled", flush=True)
        feed = self.stop_feed()
        time.sleep(args.settle)
        try:
            self.sample("drained")
        except KeyboardInterrupt:
            interrupted = True
        rc, stop_seconds = self.stop_camwatch()
        return self.summary(feed, rc, stop_seconds, interrupted)

    # ---- summary ---------------------------------------------------------------------------------------------

    def summary(self, feed: dict, rc: int | None, stop_seconds: float, interrupted: bool) -> dict:
        args = self.args
        stderr = self.stderr_path.read_text()
        soak = [s for s in self.samples if s["phase"] == "soak" and s.get("rss_mb") is not None]
        live = [s for s in self.samples if s["phase"] != "drained"]
        after = {"wal_exists": self.wal.exists(), "wal_mb": file_mb(self.wal),
                 "shm_exists": Path(f"{self.db}-shm").exists(), "db_mb": file_mb(self.db)}
        try:
            clean = not after["wal_exists"] and not after["shm_exists"]
            after["rows"] = table_rows(self.db, immutable=clean)
            con = open_ro(self.db, immutable=clean)
            try:
                ips = [r[0] for r in con.execute("SELECT ip FROM device UNION SELECT ip FROM inventory")]
                after["integrity"] = con.execute("PRAGMA quick_check").fetchone()[0]
                # From the header (bytes 18-19 are 2 in WAL mode): an immutable open reports "delete" whatever it is.
                after["journal_mode"] = "wal" if header(self.db)[18:20] == b"\2\2" else "rollback"
            finally:
                con.close()
            addresses = [ipaddress.ip_address(ip) for ip in ips]
            outside = [str(a) for a in addresses if not any(a in n for n in CAMERA_SIDE)]
            v4 = sorted(a for a in addresses if a.version == 4)
            after["device_addresses"] = {"count": len(addresses), "not_camera_side": outside[:10],
                                         "not_camera_side_count": len(outside),
                                         "lowest": str(v4[0]) if v4 else None, "highest": str(v4[-1]) if v4 else None}
            after["wal_exists_after_read"] = self.wal.exists()
        except (sqlite3.Error, ValueError) as exc:
            after["error"] = str(exc)

        final = self.metrics_out.read_text() if self.metrics_out.exists() else ""
        fv = metric_values(final)
        counted, dropped = total(fv, "camwatch_packets_total"), total(fv, "camwatch_capture_dropped_packets_total")
        out: dict = {
            "command": " ".join([sys.argv[0]] + sys.argv[1:]),
            "pps": args.pps, "minutes": args.minutes, "warmup_minutes": args.warmup_minutes,
            "samples": len(self.samples), "interrupted": interrupted,
            "soak_minutes_sampled": (live[-1]["t_s"] / 60) if live else 0.0,
            "tcpreplay": feed, "camwatch_exit": rc, "stop_seconds": round(stop_seconds, 2),
            "exited_before_sigterm": self.exited_before_sigterm,
            "final_packets_total": counted, "final_dropped_total": dropped,
            "unaccounted": (feed.get("sent") - counted - dropped) if None not in (feed.get("sent"), counted, dropped)
            else None,
            "stderr_warnings": [line for line in stderr.splitlines() if "warning" in line.lower()][:20],
            "stderr_tail": stderr.splitlines()[-12:],
            "after_stop": after,
            "alerts_mb": file_mb(self.alerts),
        }
        if soak:
            first, last = soak[0], soak[-1]
            slope, _ = least_squares([(s["t_s"] / 3600, s["rss_mb"]) for s in soak]) if len(soak) > 1 else (0.0, 0)
            anon_slope, _ = (least_squares([(s["t_s"] / 3600, s["rss_anon_mb"]) for s in soak])
                             if len(soak) > 1 else (0.0, 0))
            out.update({
                "rss_end_of_warmup_mb": first["rss_mb"], "rss_end_mb": last["rss_mb"],
                "rss_min_after_warmup_mb": min(s["rss_mb"] for s in soak),
                "rss_max_after_warmup_mb": max(s["rss_mb"] for s in soak),
                "rss_growth_mb_per_hour": slope, "rss_anon_growth_mb_per_hour": anon_slope,
                **{f"{kind}_growth_per_hour": least_squares([(s["t_s"] / 3600, s[kind]) for s in soak])[0]
                   for kind in ("heap_mb", "thread_arenas_mb", "anon_maps_mb")
                   if len(soak) > 1 and all(s.get(kind) is not None for s in soak)},
                "hwm_end_mb": last["hwm_mb"],
                "fit_window_minutes": (first["t_s"] / 60, last["t_s"] / 60), "fit_samples": len(soak),
            })
            # The second half on its own: bounds that fill only after the warm-up (episodes, say) show up as growth
            # in the first half and none in the second.
            half = [s for s in soak if s["t_s"] >= (first["t_s"] + last["t_s"]) / 2]
            if len(half) > 1:
                out["rss_growth_second_half_mb_per_hour"] = least_squares([(s["t_s"] / 3600, s["rss_mb"])
                                                                           for s in half])[0]
                out["second_half_window_minutes"] = (half[0]["t_s"] / 60, half[-1]["t_s"] / 60)
        keyed = lambda key, pool: [s[key] for s in pool if s.get(key) is not None]  # noqa: E731
        if keyed("fds", live):
            out["fds_range"] = (min(keyed("fds", live)), max(keyed("fds", live)))
        for key in ("wal_mb", "db_mb", "scrape_s", "scrape_wall_s", "scrape_kb", "lag_s", "flows_active", "devices",
                    "dumpcap_rss_mb", "cpu_pct", "pps"):
            values = keyed(key, live)
            if values:
                out[f"{key}_max"] = max(values)
                out[f"{key}_min"] = min(values)
        if self.rows_seen:
            tables = sorted({t for rows in self.rows_seen for t in rows})
            out["rows_max"] = {t: max(rows.get(t, 0) for rows in self.rows_seen) for t in tables}
            out["rows_last_live"] = self.rows_seen[-1]
        out["state_write_errors_last"] = keyed("state_write_errors_total", self.samples)[-1:] or None
        out["evictions_last"] = self.samples[-1].get("evictions") if self.samples else None

        self.print_summary(out)
        Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=2, default=str) + "\n")
        return out

    @staticmethod
    def print_summary(o: dict) -> None:
        rows = [
            ("samples", f"{o['samples']} over {o['soak_minutes_sampled']:.1f} min"
                        + (" (interrupted)" if o["interrupted"] else "")),
            ("RSS at end of warm-up", f"{fmt(o.get('rss_end_of_warmup_mb'))} MB"),
            ("RSS at end", f"{fmt(o.get('rss_end_mb'))} MB (VmHWM {fmt(o.get('hwm_end_mb'))} MB)"),
            ("RSS after warm-up", f"min {fmt(o.get('rss_min_after_warmup_mb'))} MB, "
                                  f"max {fmt(o.get('rss_max_after_warmup_mb'))} MB"),
            ("RSS growth after warm-up", f"{fmt(o.get('rss_growth_mb_per_hour'), '+.2f')} MB/hour (least squares "
                                         f"over {o.get('fit_samples', 0)} samples); anonymous memory "
                                         f"{fmt(o.get('rss_anon_growth_mb_per_hour'), '+.2f')} MB/hour"),
            ("growth by allocator", ", ".join(f"{label} {fmt(o.get(key + '_growth_per_hour'), '+.2f')}"
                                              for label, key in (("main heap", "heap_mb"),
                                                                 ("thread heaps", "thread_arenas_mb"),
                                                                 ("other anonymous", "anon_maps_mb")))
                                    + " MB/hour"),
            ("RSS growth, second half", f"{fmt(o.get('rss_growth_second_half_mb_per_hour'), '+.2f')} MB/hour"
                                        + (" (minutes {:.1f}-{:.1f})".format(*o["second_half_window_minutes"])
                                           if "second_half_window_minutes" in o else "")),
            ("open descriptors", f"{o['fds_range'][0]}-{o['fds_range'][1]}" if "fds_range" in o else "-"),
            ("flows active", f"{fmt(o.get('flows_active_min'), ',.0f')}-{fmt(o.get('flows_active_max'), ',.0f')}"),
            ("devices", f"{fmt(o.get('devices_min'), ',.0f')}-{fmt(o.get('devices_max'), ',.0f')}"),
            ("WAL size max", f"{fmt(o.get('wal_mb_max'), ',.2f')} MB"),
            ("DB size", f"{fmt(o.get('db_mb_min'), ',.2f')}-{fmt(o.get('db_mb_max'), ',.2f')} MB while running"),
            ("table rows max", ", ".join(f"{t} {n:,}" for t, n in o.get("rows_max", {}).items())),
            ("table rows at end", ", ".join(f"{t} {n:,}" for t, n in o["after_stop"].get("rows", {}).items())),
            ("evictions", o.get("evictions_last") or "-"),
            ("state write errors", fmt((o.get("state_write_errors_last") or [None])[0], ",.0f")),
            ("rate counted", f"{fmt(o.get('pps_min'), ',.0f')}-{fmt(o.get('pps_max'), ',.0f')} packets/s per sample"),
            ("camwatch CPU", f"{fmt(o.get('cpu_pct_min'), '.0f')}-{fmt(o.get('cpu_pct_max'), '.0f')}% per sample"),
            ("processing lag max", f"{fmt(o.get('lag_s_max'), '.2f')} s"),
            ("scrape time max", f"{fmt(o.get('scrape_s_max'), '.3f')} s HTTP, "
                                f"{fmt(o.get('scrape_wall_s_max'), '.2f')} s with the helper's start-up; "
                                f"up to {fmt(o.get('scrape_kb_max'), ',.0f')} kB"),
            ("sent (tcpreplay)", f"{fmt(o['tcpreplay'].get('sent'), ',.0f')} packets at "
                                 f"{fmt(o['tcpreplay'].get('pps'), ',.0f')} packets/s"),
            ("counted / dropped", f"{fmt(o['final_packets_total'], ',.0f')} / {fmt(o['final_dropped_total'], ',.0f')}"
                                  f" (unaccounted {fmt(o['unaccounted'], ',.0f')})"),
            ("camwatch exit", f"{o['camwatch_exit']} " + ("(it had stopped on the interrupt itself)"
                                                          if o["exited_before_sigterm"]
                                                          else f"after SIGTERM, in {o['stop_seconds']:.1f} s")),
            ("after the clean stop", f"state.db {fmt(o['after_stop'].get('db_mb'), ',.2f')} MB; state.db-wal "
                                     + ("remains, " + fmt(o['after_stop'].get('wal_mb'), ',.2f') + " MB"
                                        if o["after_stop"].get("wal_exists") else "gone")
                                     + f"; -shm {'remains' if o['after_stop'].get('shm_exists') else 'gone'}; "
                                     f"quick_check {o['after_stop'].get('integrity', '-')}"),
            ("device addresses", (lambda d: f"{d['count']:,} in the DB, {d['lowest']} .. {d['highest']}, "
                                            f"{d['not_camera_side_count']} not camera-side")(
                                                o["after_stop"]["device_addresses"])
                                 if "device_addresses" in o["after_stop"] else "-"),
            ("alert log", f"{fmt(o.get('alerts_mb'), ',.2f')} MB"),
            ("stderr warnings", str(len(o["stderr_warnings"]))),
        ]
        width = max(len(k) for k, _ in rows)
        print("\nsoak summary")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        if o["stderr_warnings"]:
            print("  " + "\n  ".join(o["stderr_warnings"]))
        print("camwatch's own summary:\n  " + "\n  ".join(o["stderr_tail"]), flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=65, help="length of the soak (default 65)")
    ap.add_argument("--pps", type=float, default=20000, help="tcpreplay's rate in packets/s (default 20000)")
    ap.add_argument("--warmup-minutes", type=float, default=10,
                    help="samples before this are warm-up, left out of the growth figures (default 10)")
    ap.add_argument("--sample-seconds", type=float, default=30, help="seconds between samples (default 30)")
    ap.add_argument("--out", default="/tmp/camwatch-soak.csv", help="CSV of the samples (default "
                    "/tmp/camwatch-soak.csv); the summary goes to the same name with .json")
    ap.add_argument("--pcap", type=Path, default=DEFAULT_PCAP, help="capture to loop (default: "
                    "pcaps/synthetic/camera_site.pcap)")
    ap.add_argument("--sender-nice", type=int, default=19, metavar="N",
                    help="niceness of tcpreplay (default 19, as bench/live_capture.py)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between stopping the feed and the last "
                    "sample (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (state DB, alerts, stderr)")
    args = ap.parse_args(argv)
    if not (args.minutes > 0 and args.sample_seconds > 0 and args.pps > 0 and 0 <= args.warmup_minutes < args.minutes):
        ap.error("--minutes, --sample-seconds and --pps must be positive, --warmup-minutes below --minutes")
    if not args.pcap.is_absolute():
        args.pcap = (Path.cwd() / args.pcap) if (Path.cwd() / args.pcap).exists() else REPO / args.pcap
    # SIGTERM to the soak itself ends it like Ctrl-C: processes stopped, namespaces removed.
    signal.signal(signal.SIGTERM, _interrupt)
    return run_script("soak", lambda: soak(args))


def soak(args) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root: creates network namespaces and a veth pair")
    for tool in ("ip", "tcpreplay", "dumpcap"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not installed")
    if not CAMWATCH.exists():
        raise BenchError(f"{CAMWATCH} missing: run scripts/bootstrap.sh first")
    if not args.pcap.is_file():
        raise BenchError(f"{args.pcap}: no such file")
    tmp = Path(tempfile.mkdtemp(prefix="camwatch-soak-"))
    soaker = None
    try:
        with VethPair() as pair:
            soaker = Soak(args, pair, tmp)
            try:
                result = soaker.run()
            finally:
                # Before the namespaces go: a process left inside would keep its namespace alive.
                soaker.kill_all()
    finally:
        if soaker is not None and soaker._csv:
            soaker._csv.close()
        if args.keep:
            print(f"soak: kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    ok = (result["camwatch_exit"] == 0 and not result["after_stop"].get("wal_exists")
          and not result["after_stop"].get("device_addresses", {}).get("not_camera_side_count"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
