#!/usr/bin/env python3
"""The soak's churn in-process and faster than real time: what fills, and when memory stops growing.

    python bench/soak_replay.py [--minutes 120] [--pps 20000] [--report-minutes 5] [--scrape-seconds 30]

A companion to bench/soak.py, not a replacement (no dumpcap, no pump thread, no HTTP server): the demo capture's
frames looped with tcpreplay --unique-ip's address shift (per loop, the lower IPv4 address of each packet down by
one and the higher one up), timestamped at --pps, fed to a Sensor with a state database, as `camwatch run` would
(garbage collector tuned the same way). The sensor's own clock for saves and commits is the capture clock, so the
database is written as often per capture second as when live. A metrics exposition is rendered every
--scrape-seconds of capture time from a fresh thread, as the HTTP server does.

Every --report-minutes of capture time: RSS, resident memory by allocator (bench/soak.py's breakdown), Python's
allocated blocks, and the size of every container in the sensor's object graph that holds at least 1,000 entries.
At the end, each container's growth over the last two thirds: a structure still filling shows here.

With --sizes, at the end of the replay (before the run's final close lines): the bytes each bounded structure holds
on its own, per entry, and for the open incidents per field (bench/sizes.py): what one entry costs at its bound.
"""

from __future__ import annotations

import argparse
import gc
import os
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from prometheus_client.exposition import generate_latest  # noqa: E402
from soak import resident_by_kind, status_fields  # noqa: E402

from sensor import pipeline, state  # noqa: E402
from sensor.allocator import pin_malloc_for_long_run  # noqa: E402
from sensor.capture import CaptureReader  # noqa: E402
from sensor.cli.loop import tune_garbage_collector  # noqa: E402
from sensor.config import load_config  # noqa: E402
from sensor.export import build_registry  # noqa: E402
from sensor.pipeline import Sensor  # noqa: E402

PCAP = REPO / "pcaps" / "synthetic" / "camera_site.pcap"
T0 = 1_800_000_000.0


def frames_of(path: Path) -> list[tuple[bytes, int, int | None]]:
    """(frame, wire length, offset of its IPv4 addresses or None) for each record of a classic pcap."""
    data = path.read_bytes()
    out, pos = [], 24
    while pos < len(data):
        _, _, caplen, wirelen = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16:pos + 16 + caplen]
        ethertype = frame[12:14]
        tagged = ethertype == b"\x81\x00" and frame[16:18] == b"\x08\x00"
        at = 30 if tagged else 26 if ethertype == b"\x08\x00" else None
        out.append((frame, wirelen, at))
        pos += 16 + caplen
    return out


class ChurnFeed:
    """read() for CaptureReader: one loop of the capture per call, addresses shifted by the loop number."""

    def __init__(self, frames: list, total: int, pps: float):
        self.frames, self.total, self.pps = frames, total, pps
        self.sent = 0
        self.loop = 0

    def read(self) -> bytes:
        if self.sent >= self.total:
            return b""
        out = bytearray(b"" if self.sent else struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        shift = self.loop
        for frame, wirelen, at in self.frames:
            if self.sent >= self.total:
                break
            ts = T0 + self.sent / self.pps
            out += struct.pack("<IIII", int(ts), int((ts - int(ts)) * 1e6), len(frame), wirelen)
            start = len(out)
            out += frame
            if at is not None and shift:
                src, dst = struct.unpack_from(">II", frame, at)
                low, high = (src, dst) if src < dst else (dst, src)
                low, high = (low - shift) & 0xFFFFFFFF, (high + shift) & 0xFFFFFFFF
                struct.pack_into(">II", out, start + at, *((low, high) if src < dst else (high, low)))
            self.sent += 1
        self.loop += 1
        return bytes(out)


def containers(root: object, name: str, depth: int, out: dict[str, int], seen: set[int]) -> None:
    """len() of every dict, set, list or deque reachable through attributes, to `depth`."""
    if id(root) in seen or depth < 0:
        return
    seen.add(id(root))
    if isinstance(root, dict | set | frozenset | list | tuple) or type(root).__name__ in ("OrderedDict", "deque"):
        if len(root) >= 1000:   # type: ignore[arg-type]
            out[name] = len(root)   # type: ignore[arg-type]
        if isinstance(root, list | tuple) and depth > 0:
            for i, item in enumerate(root[:20]):
                containers(item, f"{name}[{i}]", depth - 1, out, seen)
        return
    attrs = getattr(root, "__dict__", None)
    items = list(attrs.items()) if isinstance(attrs, dict) else []
    items += [(s, getattr(root, s, None)) for c in type(root).__mro__ for s in getattr(c, "__slots__", ())
              if isinstance(s, str)]
    for key, value in items:
        if isinstance(value, int | float | str | bytes | bool | type(None)):
            continue
        if type(value).__module__.startswith(("numpy", "sqlite3", "threading", "_thread")):
            continue
        containers(value, f"{name}.{key}", depth - 1, out, seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=120, help="capture minutes to replay (default 120)")
    ap.add_argument("--pps", type=float, default=20000, help="packets per second of capture time (default 20000)")
    ap.add_argument("--report-minutes", type=float, default=5)
    ap.add_argument("--scrape-seconds", type=float, default=30)
    ap.add_argument("--malloc", choices=("pinned", "default"), default="pinned",
                    help="glibc malloc as `camwatch run` sets it (sensor/allocator.py), or glibc's defaults")
    ap.add_argument("--sizes", action="store_true",
                    help="at the end, bytes per entry of each bounded structure and of an open incident's fields")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="camwatch-soak-replay-"))
    (tmp / "camwatch.toml").write_text(f'[state]\npath = "{tmp}/state.db"\n')
    config = load_config(str(tmp / "camwatch.toml"))
    feed = ChurnFeed(frames_of(PCAP), int(args.minutes * 60 * args.pps), args.pps)
    sensor = Sensor(config, on_alert=lambda alert: None)

    class CaptureClock:
        """time.monotonic on the capture clock, for the pipeline's and the state store's save schedule."""

        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        @staticmethod
        def monotonic() -> float:
            return sensor.last_ts or T0

    pipeline.time = state.time = CaptureClock()   # type: ignore[assignment]
    tune_garbage_collector()
    if args.malloc == "pinned":
        pin_malloc_for_long_run()
    registry = build_registry(sensor)
    next_scrape, next_report = args.scrape_seconds, args.report_minutes
    rows: list[tuple[float, dict[str, int]]] = []
    started = time.monotonic()
    print(f"{feed.total:,} packets, {args.minutes:g} capture minutes at {args.pps:g}/s; state in {tmp}", flush=True)
    for batch in CaptureReader(feed.read, "churn"):
        sensor.process(batch)
        minute = ((sensor.last_ts or T0) - T0) / 60
        if minute * 60 >= next_scrape:
            next_scrape += args.scrape_seconds
            scrape = threading.Thread(target=generate_latest, args=(registry,))
            scrape.start()
            scrape.join()
        if minute >= next_report:
            next_report += args.report_minutes
            sizes: dict[str, int] = {}
            containers(sensor, "sensor", 5, sizes, set())
            rows.append((minute, sizes))
            kinds = resident_by_kind(os.getpid())
            rss = status_fields(os.getpid())["VmRSS"] / 1024
            print(f"{minute:6.1f} min  rss {rss:6.1f} MB  [heap {kinds['heap_mb']:.0f} threads "
                  f"{kinds['thread_arenas_mb']:.0f} anon {kinds['anon_maps_mb']:.0f}]  python blocks "
                  f"{sys.getallocatedblocks():,}  gc {gc.get_count()}  real {time.monotonic() - started:.0f} s",
                  flush=True)
    if args.sizes:
        from sizes import print_sizes
        print_sizes(sensor)
    sensor.finish()
    sensor.close()
    if len(rows) >= 3:
        (first_min, first), (last_min, last) = rows[len(rows) // 3], rows[-1]
        print(f"\ncontainers of 1,000 entries or more, {first_min:.0f} -> {last_min:.0f} capture minutes:")
        for key in sorted(set(first) | set(last), key=lambda k: -last.get(k, 0)):
            before, after = first.get(key, 0), last.get(key, 0)
            print(f"  {key:<72} {before:>9,} {after:>9,} {after - before:>+9,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
