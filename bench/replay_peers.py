#!/usr/bin/env python3
"""Replay throughput of camwatch against peers, side by side on one capture, in one run.

    pip install -r bench/requirements.txt          # nfstream, dpkt (pyshark comes with camwatch; tshark via apt)
    python bench/replay_peers.py [--packets 200000] [--repeat 5] [--json OUT] [--camwatch-src DIR]
    python bench/replay_peers.py --capture FILE --repeat 3 --row "LABEL"   # one row of the issue-16 table
    python bench/replay_peers.py --capture FILE --page-cache from-disk ...   # the capture as read from disk

Every measurement runs in a fresh subprocess, one at a time, so each tool pays its own imports and page-cache
state is the same for all (the capture is read once before the first run; with --page-cache from-disk it is first
dropped from the page cache, so that it is cached as a file read from disk is, whatever wrote or read it before:
what a memory map of it costs, printed with the results, depends on that); the runs go round by round (each tool
once, then each tool again), so a machine's drifting load falls on all of them alike. "seconds" is wall time from
opening the capture to the last flow updated (library start-up and imports excluded; for tshark and
`camwatch replay`, which are whole programs, their start-up is included). "whole process" is every run's wall time
from spawning the process to reaping it, and the CPU time of it and its descendants: the interpreter, imports,
building the sensor or the streamer, and for nfstream its meter process. `floor` is bench/read_floor.py's plain
`readinto` loop over the file (the limit any reader of it has); `camwatch-cli` is the command a user runs,
`camwatch replay FILE --quiet --alerts /dev/null`. --row prints the issue-16 row (docs/benchmarks.md): camwatch
in-process and whole-process beside the floor and nfstream's whole process, with camwatch/nfstream ratios taken
round by round (median and range). Peak RSS is the resident high-water mark of the measuring process plus the
largest of its child processes (nfstream's meter, pyshark's tshark); CPU is user+system time of the timed region
including those children, so CPU/seconds above 1 means a tool used more than one core.

pyshark is timed on the first --slice packets of the same capture (a separate file) and its rate extrapolated to
the full capture: at its speed the full file would take far longer than the benchmark's time budget. Every other
tool also runs once on that slice; "marginal packets/s" is (N - slice) / (t_N - t_slice), the rate with fixed
start-up cost taken out.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import mmap
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DIR = Path("/tmp/camwatch-bench")
TSHARK_FIELDS = ["-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "udp.srcport"]


# ==== workers: each runs in its own process and prints one JSON object ==========================================

def _hwm_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _run_worker(name: str, path: str, src: str) -> dict:
    import resource

    # Ahead of the editable install, so --camwatch-src can pin the measured sensor/ to a snapshot.
    sys.path.insert(0, src)

    result = WORKERS[name](path)   # packets, flows, seconds and cpu of its own timed region, extra
    result.update(self_hwm_kib=_hwm_kib(),
                  children_maxrss_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return result


def _start() -> tuple[float, float, float]:
    import resource
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time(), kids.ru_utime + kids.ru_stime


def _stop(start: tuple[float, float, float]) -> dict:
    """Wall and CPU seconds since _start; CPU includes child processes reaped meanwhile (meters, tshark)."""
    import resource
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": time.perf_counter() - start[0],
            "cpu": time.process_time() - start[1] + kids.ru_utime + kids.ru_stime - start[2]}


def w_camwatch(path: str) -> dict:
    import numpy

    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.pipeline import Sensor

    sensor = Sensor(Config(), on_alert=None)   # built before the clock: loading Wireshark's manuf is start-up
    try:
        from sensor.cli.loop import tune_garbage_collector
    except ImportError:
        try:   # a --camwatch-src from before the CLI was a package
            from sensor.cli import tune_garbage_collector
        except ImportError:   # or from before it tuned the collector
            tune_garbage_collector = None
    if tune_garbage_collector is not None:
        tune_garbage_collector()   # as `camwatch replay` and `camwatch run` do
    t = _start()
    reader, _size = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    spent = _stop(t)
    import sensor as package
    return dict(packets=sensor.packets, flows=sensor.flows.created, **spent,
                extra={"numpy": numpy.__version__, "sensor": str(Path(package.__file__).parent)})


def w_camwatch_core(path: str) -> dict:
    """Capture + decode + FlowTable.update, cut into the same one-second windows as Sensor.process, without the
    DNS/naming/enrich/detect work; per-stage clocks show where the time goes."""
    import numpy as np

    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.decode import decode
    from sensor.flows import FlowTable

    flows = FlowTable(Config().flows)
    clock = time.perf_counter
    read_s = decode_s = flows_s = 0.0
    packets = 0
    t = _start()
    reader, _size = open_file(path)
    it = iter(reader)
    while True:
        t0 = clock()
        batch = next(it, None)
        t1 = clock()
        read_s += t1 - t0
        if batch is None:
            break
        n = len(batch)
        if n == 0:
            continue
        packets += n
        dec = decode(batch)
        ip = dec.is_ip
        t2 = clock()
        decode_s += t2 - t1
        seconds = np.floor(batch.ts)
        cuts = np.flatnonzero(seconds[1:] != seconds[:-1]) + 1
        bounds = np.concatenate(([0], cuts, [n]))
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            flows.expire(float(batch.ts[start]))
            rows = np.flatnonzero(ip[start:end]) + start
            if len(rows):
                flows.update(dec, rows)
        flows_s += clock() - t2
    flows.flush()
    return dict(packets=packets, flows=flows.created, **_stop(t),
                extra={"read_s": read_s, "decode_s": decode_s, "flows_s": flows_s})


def w_nfstream(path: str) -> dict:
    import nfstream
    from nfstream import NFStreamer

    t = _start()
    # n_dissections=0 turns nDPI off (no DPI, as camwatch has none at this stage); one meter process = one core
    # of metering, which is also what nfstream picks by itself on a 2-core machine.
    streamer = NFStreamer(source=path, statistical_analysis=True, n_dissections=0, n_meters=1)
    flows = packets = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    return dict(packets=packets, flows=flows, **_stop(t), extra={"version": nfstream.__version__})


def w_dpkt(path: str) -> dict:
    import dpkt

    IP, IP6, TCP, UDP = dpkt.ip.IP, dpkt.ip6.IP6, dpkt.tcp.TCP, dpkt.udp.UDP
    Ethernet = dpkt.ethernet.Ethernet
    t = _start()
    flows: dict[tuple, list] = {}
    packets = 0
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            packets += 1
            eth = Ethernet(buf)   # also walks 802.1Q/QinQ tags into eth.vlan_tags
            ip = eth.data
            if not isinstance(ip, (IP, IP6)):
                continue
            l4 = ip.data
            if isinstance(l4, (TCP, UDP)):
                a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            else:
                a, b = (ip.src, 0), (ip.dst, 0)
            vlan = eth.vlan_tags[-1].id if hasattr(eth, "vlan_tags") else 0
            # Bidirectional, like camwatch and nfstream: both directions land on one canonical key.
            key = (vlan, ip.p, a, b) if a <= b else (vlan, ip.p, b, a)
            rec = flows.get(key)
            if rec is None:
                flows[key] = [1, len(buf), ts, ts]
            else:
                rec[0] += 1
                rec[1] += len(buf)
                rec[3] = ts
    return dict(packets=packets, flows=len(flows), **_stop(t), extra={"version": dpkt.__version__})


def _pyshark(path: str, use_json: bool) -> dict:
    import pyshark

    t = _start()
    cap = pyshark.FileCapture(path, keep_packets=False, use_json=use_json)
    flows: dict[tuple, list] = {}
    packets = 0
    try:
        for pkt in cap:
            packets += 1
            if "IP" not in pkt:
                continue
            tl = pkt.transport_layer
            a = (pkt.ip.src, pkt[tl].srcport if tl else "0")
            b = (pkt.ip.dst, pkt[tl].dstport if tl else "0")
            vlan = pkt.vlan.id if "VLAN" in pkt else "0"
            key = (vlan, pkt.ip.proto, a, b) if a <= b else (vlan, pkt.ip.proto, b, a)
            rec = flows.setdefault(key, [0, 0])
            rec[0] += 1
            rec[1] += int(pkt.length)
    finally:
        cap.close()
    return dict(packets=packets, flows=len(flows), **_stop(t),
                extra={"version": getattr(pyshark, "__version__", None)})


def w_pyshark(path: str) -> dict:
    return _pyshark(path, use_json=False)


def w_pyshark_json(path: str) -> dict:
    return _pyshark(path, use_json=True)


def w_floor(path: str) -> dict:
    """The read floor: bench/read_floor.py's loop, `readinto` over the file into one reused buffer of the reader's
    chunk size, nothing done with the bytes."""
    from sensor.capture import CHUNK_BYTES

    view = memoryview(bytearray(CHUNK_BYTES))
    t = _start()
    with open(path, "rb") as fh:
        while fh.readinto(view):
            pass
    return dict(packets=None, flows=None, **_stop(t), extra={"chunk_bytes": CHUNK_BYTES})


WORKERS = {
    "floor": w_floor,
    "camwatch": w_camwatch,
    "camwatch-core": w_camwatch_core,
    "nfstream": w_nfstream,
    "dpkt": w_dpkt,
    "pyshark": w_pyshark,
    "pyshark-json": w_pyshark_json,
}


# ==== orchestration ==============================================================================================

TOOLS = [
    # name, label, kind, needs (python module or program)
    ("floor", "readinto loop over the file (the read floor)", "worker", "numpy"),
    ("camwatch", "camwatch pipeline (open_file + Sensor.process)", "worker", "numpy"),
    ("camwatch-cli", "camwatch replay FILE --quiet --alerts /dev/null", "program", "numpy"),
    ("camwatch-core", "camwatch capture+decode+flows only", "worker", "numpy"),
    ("nfstream", "nfstream (statistical_analysis, no DPI, 1 meter)", "worker", "nfstream"),
    ("dpkt", "dpkt loop (Ethernet/VLAN/IP/TCP/UDP + flow dict)", "worker", "dpkt"),
    ("tshark", "tshark -T fields > /dev/null", "program", "tshark"),
    ("pyshark", "pyshark FileCapture (default, PDML)", "slice", "pyshark"),
    ("pyshark-json", "pyshark FileCapture (use_json=True)", "slice", "pyshark"),
]
INSTALL_HINT = {"nfstream": "pip install -r bench/requirements.txt", "dpkt": "pip install -r bench/requirements.txt",
                "pyshark": "pip install pyshark", "numpy": "pip install -e ."}


def count_records(path: Path) -> int:
    """Record count of a classic pcap, by walking the record headers."""
    with open(path, "rb") as fh:
        head = fh.read(24)
        endian = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<"}.get(head[:4], ">")
        if head[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            raise SystemExit(f"{path}: not a classic pcap file")
        rec = struct.Struct(endian + "IIII")
        n = 0
        while True:
            hdr = fh.read(16)
            if len(hdr) < 16:
                return n
            fh.seek(rec.unpack(hdr)[2], os.SEEK_CUR)
            n += 1


def head_pcap(src: Path, dst: Path, count: int) -> int:
    """Copy the file header and the first `count` records of a classic pcap."""
    with open(src, "rb") as fh, open(dst, "wb") as out:
        head = fh.read(24)
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        out.write(head)
        n = 0
        while n < count:
            hdr = fh.read(16)
            if len(hdr) < 16:
                break
            caplen = struct.unpack(endian + "IIII", hdr)[2]
            out.write(hdr + fh.read(caplen))
            n += 1
    return n


def warm(path: Path) -> None:
    # The first tool would otherwise pay for the disk read that every later one gets from the page cache.
    with open(path, "rb") as fh:
        while fh.read(8 << 20):
            pass


def from_disk(path: Path) -> None:
    """Leave the capture in the page cache as a plain read from disk does: dropped from the cache, then read once.
    How the cached file's pages came there sets what a memory map of it costs: the kernel (6.18 here) caches a file
    read from disk with `read` in 2 MiB pages, but a file just written, or first read through a map, in pages down
    to 4 KiB, which take far longer to map (see map_cost). Both camwatch and nfstream are faster on the former."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)   # dirty pages (a capture just written) cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    warm(path)


def map_cost(path: Path) -> float:
    """Seconds of CPU to map the whole cached file into this process and out again, 8 MiB at a time, as
    sensor.mapped does: a measure of the state of the page cache the runs below find (a few ms for a file held in
    2 MiB pages, ~80 ms for 1.2 GiB in 4 KiB pages on this VM)."""
    populate = getattr(mmap, "MADV_POPULATE_READ", 22)   # Linux 5.14
    chunk = 8 << 20
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        start = time.process_time()
        for offset in range(0, len(mapped), chunk):
            length = min(chunk, len(mapped) - offset)
            mapped.madvise(populate, offset, length)
            mapped.madvise(mmap.MADV_DONTNEED, offset, length)
        return time.process_time() - start


def missing(need: str) -> str | None:
    """Why a tool cannot run here, or None."""
    if need in ("tshark", "pyshark") and shutil.which("tshark") is None:
        return "not installed (apt-get install tshark)"
    if need != "tshark" and importlib.util.find_spec(need) is None:
        return f"not installed ({INSTALL_HINT[need]})"
    return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass   # it ended on its own just in time


@functools.cache
def _bytecode_env(src: Path) -> dict[str, str]:
    """The environment every run gets: camwatch's modules compiled once, up front, into a private bytecode cache.
    An installed camwatch runs from the bytecode pip compiled, as nfstream and dpkt here do from theirs; an
    editable checkout under PYTHONDONTWRITEBYTECODE=1 would otherwise compile ~100 modules on every run (~75 ms
    of a whole process, 1 December) and charge only camwatch for it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(DEFAULT_DIR / "pycache" / str(src.resolve()).strip("/").replace("/", "_"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src.resolve() / "sensor")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env


def spawn(cmd: list[str], timeout: float, stdout, env: dict[str, str] | None = None
          ) -> tuple[int, object, float, str, str]:
    """Run cmd; returns exit code, its rusage (wait4: the child plus its reaped descendants), wall seconds, stdout
    and stderr."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        # Own process group, so a timeout also takes down helpers it started (pyshark's tshark, nfstream's meter).
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, cwd=REPO, env=env, start_new_session=True)
        killer = threading.Timer(timeout, _kill_group, (proc.pid,))
        killer.start()
        try:
            out = proc.stdout.read() if proc.stdout else b""
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped by wait4: keep Popen from waiting again
        timed_out = proc.returncode == -signal.SIGKILL and wall >= timeout
        if proc.stdout:
            proc.stdout.close()
        err.seek(0)
        message = err.read().decode("utf-8", "replace").strip()
    if timed_out:
        message = f"killed after the {timeout:g} s timeout (--timeout)"
    return proc.returncode, usage, wall, out.decode("utf-8", "replace"), message


def _program(name: str, path: Path, src: Path) -> list[str]:
    if name == "camwatch-cli":
        # The command a user runs, start to finish: interpreter, imports, manuf table, state database, summary.
        # -c puts --camwatch-src ahead of the editable install, as the workers do.
        return [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from sensor.cli import main; sys.exit(main())",
                str(src.resolve()), "replay", str(path), "--quiet", "--alerts", "/dev/null"]
    return ["tshark", "-n", "-r", str(path), "-T", "fields", *TSHARK_FIELDS]


def measure(name: str, kind: str, path: Path, timeout: float, src: Path) -> dict:
    """One run. Besides the tool's own figures ("seconds", "cpu"), every run has its whole process: wall seconds
    from spawning it to reaping it and the CPU of it and its reaped descendants (nfstream's meter, tshark)."""
    env = _bytecode_env(src)
    if kind == "program":
        code, usage, wall, _out, err = spawn(_program(name, path, src), timeout, subprocess.DEVNULL, env)
        if code != 0:
            return {"error": f"exit {code}: {err[-300:]}"}
        version = None
        if name == "tshark":
            version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        cpu = usage.ru_utime + usage.ru_stime
        return {"packets": None, "flows": None, "seconds": wall, "cpu": cpu, "whole_seconds": wall,
                "whole_cpu": cpu, "rss_kib": usage.ru_maxrss, "extra": {"version": version}}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--capture", str(path),
           "--camwatch-src", str(src)]
    code, usage, wall, out, err = spawn(cmd, timeout, subprocess.PIPE, env)
    if code != 0:
        return {"error": f"exit {code}: {err[-600:]}"}
    result = json.loads(out.strip().splitlines()[-1])
    # Concurrent helper processes (nfstream's meter, pyshark's tshark) hold memory at the same time as the worker.
    kids = result.pop("children_maxrss_kib")
    result["rss_kib"] = result.pop("self_hwm_kib") + kids if kids else usage.ru_maxrss
    result["whole_seconds"], result["whole_cpu"] = wall, usage.ru_utime + usage.ru_stime
    return result


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import numpy
        np_version = numpy.__version__
    except ImportError:
        np_version = None
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "numpy": np_version,
            "kernel": platform.release()}


def camwatch_revision(src: Path) -> str:
    """Which sensor/ was measured: the numbers move with every change to it."""
    if src.resolve() != REPO:
        return f"sensor/ from {src}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sensor"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"sensor/ from {src}"
    return f"sensor/ at git {head}" + (" plus uncommitted changes" if dirty else "")


def fmt_int(v) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _make_capture():
    spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# C901 debt, complexity 22 (limit 15, pyproject.toml [tool.ruff.lint.mccabe]): one branch per peer and option;
# split it before it grows.
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="camwatch replay throughput against peers")
    ap.add_argument("--capture", type=Path, help="classic pcap to replay (default: generated, see --packets)")
    ap.add_argument("--packets", type=int, default=200_000,
                    help="size of the generated capture, when --capture is not given (default 200000)")
    ap.add_argument("--site", choices=sorted(_make_capture().SITES), default="nvr20",
                    help="site of the generated capture (bench/make_capture.py): nvr20, 20 cameras at ~60 Mbit/s, "
                         "or vlan100, the issue's 100 cameras at 4-8 Mbit/s")
    ap.add_argument("--slice", type=int, default=2_000, help="packets for the pyshark runs (default 2000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per tool, median reported (pyshark: 1)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(t[0] for t in TOOLS))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a single run is killed")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR",
                    help="directory holding the sensor/ package to measure (default: this checkout)")
    ap.add_argument("--row", metavar="LABEL",
                    help="print the issue-16 table row for this capture (docs/benchmarks.md), labelled LABEL; "
                         "runs " + ", ".join(ROW_TOOLS) + " unless --only says otherwise")
    ap.add_argument("--page-cache", choices=("as-is", "from-disk"), default="as-is",
                    help="as-is (default): the capture stays in the page cache as it is (read once if it is not "
                         "there); from-disk: dropped from the page cache and read once, as a file read from disk "
                         "is cached, whoever wrote or read it before")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    return ap


def _capture_path(args, ap: argparse.ArgumentParser) -> Path:
    if args.capture:
        if not args.capture.is_file():
            ap.error(f"{args.capture}: no such file")
        return args.capture
    # nvr20 keeps its historical file name, so earlier results and commands still apply
    name = f"replay-{args.packets}" if args.site == "nvr20" else f"{args.site}-{args.packets}"
    path = DEFAULT_DIR / f"{name}.pcap"
    if not path.is_file():
        print(f"writing {path} ({args.packets:,} packets, site {args.site}) ...", file=sys.stderr)
        _make_capture().write(path, args.packets, args.site)
    return path


def _collect(tools: list[tuple], args, path: Path, slice_path: Path) -> dict[str, list | str]:
    """Every tool's runs, or why it cannot run. Round by round (A, B, C, A, B, C, ...), not tool by tool: on a
    shared machine the load drifts over minutes, and interleaving makes it fall on every tool alike, so the
    ratios of one round are comparable."""
    runs: dict[str, list | str] = {}
    for name, _label, _kind, need in tools:
        why = missing(need)
        runs[name] = why if why else []
        if why:
            print(f"{name}: {why}", file=sys.stderr)
    for i in range(max(1, args.repeat)):
        for name, _label, kind, _need in tools:
            done = runs[name]
            if isinstance(done, str) or (kind == "slice" and i > 0):   # unavailable/failed; pyshark: once
                continue
            print(f"{name}: run {i + 1} ...", file=sys.stderr, flush=True)
            res = measure(name, kind, slice_path if kind == "slice" else path, args.timeout, args.camwatch_src)
            if "error" in res:
                runs[name] = f"failed: {res['error']}"
                print(f"{name}: {runs[name]}", file=sys.stderr)
                continue
            done.append(res)
    return runs


def _summarize(tool: tuple, runs: list | str, args, path: Path, total: int, slice_path: Path,
               slice_n: int) -> dict:
    """One tool's row: median of its runs on the capture (or on the slice, for the slow ones), and for the whole
    file also its marginal rate once the fixed start-up is priced on the slice."""
    name, label, kind, _need = tool
    row: dict = {"tool": name, "label": label}
    if isinstance(runs, str):
        row["status"] = runs
        return row
    n_file = slice_n if kind == "slice" else total
    secs = [r["seconds"] for r in runs]
    best = runs[secs.index(min(secs))]
    row.update(
        status="ok", file_packets=n_file, packets=runs[-1]["packets"], flows=runs[-1]["flows"],
        seconds=statistics.median(secs), seconds_all=secs, pps=n_file / statistics.median(secs),
        cpu=statistics.median(r["cpu"] for r in runs), rss_mib=max(r["rss_kib"] for r in runs) / 1024,
        whole_seconds_all=[r["whole_seconds"] for r in runs], whole_cpu_all=[r["whole_cpu"] for r in runs],
        whole_seconds=statistics.median(r["whole_seconds"] for r in runs),
        whole_cpu=statistics.median(r["whole_cpu"] for r in runs), extra=best.get("extra", {}),
    )
    if kind == "slice":
        row["extrapolated_seconds"] = row["seconds"] * total / n_file
    elif slice_n < total and not args.row:
        # Fixed start-up (tshark's dissector tables, nfstream's meter process) weighs on a short capture;
        # the same run on the slice prices it, and the difference gives the per-packet rate alone.
        small = measure(name, kind, slice_path, args.timeout, args.camwatch_src)
        if "error" not in small:
            row["slice_seconds"] = small["seconds"]
            extra_s = row["seconds"] - small["seconds"]
            row["marginal_pps"] = (total - slice_n) / extra_s if extra_s > 0 else None
    print(f"{name}: {row['pps']:,.0f} packets/s", file=sys.stderr)
    return row


ROW_TOOLS = ("floor", "camwatch", "camwatch-cli", "nfstream")
ROW_HEADER = ("| capture (generator) | packets | bytes | camwatch in-process packets/s: wall (CPU) "
              "| camwatch whole-process s: wall (CPU) | read floor s: wall (CPU) | floor / camwatch whole: wall (CPU) "
              "| nfstream whole-process s: wall (CPU) | camwatch/nfstream, whole process: wall (range) "
              "| CPU (range) |\n"
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")


def _rate(pps: float) -> str:
    if pps >= 1e6:
        return f"{pps / 1e6:.2f} M"
    return f"{pps / 1e3:,.0f} k" if pps >= 1e4 else f"{pps / 1e3:.1f} k"


def _pair_ratio(peer: dict, ours: dict, key: str) -> str:
    """Median and range of the per-round ratios peer/ours: each round's two runs ran minutes apart at most."""
    ratios = [p / o for p, o in zip(peer[key + "_all"], ours[key + "_all"], strict=True) if o > 0]
    if not ratios:
        return "—"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def _print_row(rows: list[dict], label: str, total: int, size: int) -> None:
    """The issue-16 table's row for this capture (docs/benchmarks.md): camwatch in-process and whole-process
    beside the read floor and nfstream's whole process, the ratios paired round by round."""
    by = {r["tool"]: r for r in rows if r.get("status") == "ok"}
    lacking = [t for t in ROW_TOOLS if t not in by]
    if lacking:
        print(f"--row needs {', '.join(ROW_TOOLS)}; missing or failed: {', '.join(lacking)}", file=sys.stderr)
        return
    floor, inproc, cli, nf = (by[t] for t in ROW_TOOLS)
    # Wall and CPU side by side: on a shared machine wall time is stretched by whatever else runs, CPU time far less.
    print(ROW_HEADER)
    print(f"| {label} | {total:,} | {size / 1e6:,.0f} MB | {_rate(inproc['pps'])} ({_rate(total / inproc['cpu'])}) | "
          f"{cli['whole_seconds']:.2f} ({cli['whole_cpu']:.2f}) | {floor['seconds']:.3f} ({floor['cpu']:.3f}) | "
          f"{floor['seconds'] / cli['whole_seconds']:.2g} ({floor['cpu'] / cli['whole_cpu']:.2g}) | "
          f"{nf['whole_seconds']:.2f} ({nf['whole_cpu']:.2f}) | "
          f"{_pair_ratio(nf, cli, 'whole_seconds')} | {_pair_ratio(nf, cli, 'whole_cpu')} |")


def _print_table(rows: list[dict], total: int) -> None:
    ref = next((r["pps"] for r in rows if r["tool"] == "camwatch" and r.get("status") == "ok"), None)
    print("| tool | packets | seconds | packets/s | camwatch/peer | peak RSS MiB | CPU s | flows "
          "| marginal packets/s | whole process s (CPU s) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        if r.get("status") != "ok":
            print(f"| {r['label']} | {r.get('status', '')} | | | | | | | | |")
            continue
        seconds = f"{r['seconds']:.2f}"
        if "extrapolated_seconds" in r:
            seconds += f" (≈{r['extrapolated_seconds']:,.0f} for {total:,}, extrapolated)"
        ratio = f"{ref / r['pps']:,.2f}" if ref else "—"
        pk = fmt_int(r["file_packets"])
        if r["packets"] is not None and r["packets"] != r["file_packets"]:
            pk += f" ({r['packets']:,} counted)"
        print(f"| {r['label']} | {pk} | {seconds} | {r['pps']:,.0f} | {ratio} | {r['rss_mib']:.0f} | "
              f"{r['cpu']:.2f} | {fmt_int(r['flows'])} | {fmt_int(r.get('marginal_pps'))} | "
              f"{r['whole_seconds']:.2f} ({r['whole_cpu']:.2f}) |")
    core = next((r for r in rows if r["tool"] == "camwatch-core" and r.get("status") == "ok"), None)
    if core:
        e = core["extra"]
        print()
        print("camwatch stage split (capture+decode+flows run): " + ", ".join(
            f"{k[:-2]} {e[k]:.2f} s ({core['file_packets'] / e[k] / 1e6:.2f} M packets/s)"
            for k in ("read_s", "decode_s", "flows_s") if e.get(k)))


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_run_worker(args.worker, str(args.capture), str(args.camwatch_src))))
        return 0

    path = _capture_path(args, ap)
    total = count_records(path)
    slice_path = DEFAULT_DIR / f"{path.stem}-head{args.slice}.pcap"
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    slice_n = head_pcap(path, slice_path, args.slice)
    if args.page_cache == "from-disk":
        from_disk(path)
    else:
        warm(path)
    mapping = map_cost(path)

    load = os.getloadavg()[0]
    if load > 0.5:
        # Two cores: anything else running skews every wall-clock number here, peers and camwatch alike.
        print(f"warning: load average {load:.2f} before the first run; results will be noisy", file=sys.stderr)
    wanted = set(args.only.split(",")) if args.only else None
    if wanted and wanted - {t[0] for t in TOOLS}:
        ap.error(f"unknown tool(s): {', '.join(sorted(wanted - {t[0] for t in TOOLS}))}")
    if args.row and not wanted:
        wanted = set(ROW_TOOLS)
    tools = [tool for tool in TOOLS if not wanted or tool[0] in wanted]
    runs = _collect(tools, args, path, slice_path)
    rows = [_summarize(tool, runs[tool[0]], args, path, total, slice_path, slice_n) for tool in tools]

    revision = camwatch_revision(args.camwatch_src)
    print()
    print(f"capture: {path} ({total:,} packets, {path.stat().st_size / 2**20:.0f} MiB); "
          f"pyshark slice: first {slice_n:,} packets; median of {args.repeat} runs; camwatch: {revision}; "
          f"load average before: {load:.2f}; page cache {args.page_cache}: mapping the file costs "
          f"{mapping * 1000:.0f} ms of CPU")
    print()
    _print_table(rows, total)
    if args.row:
        print()
        _print_row(rows, args.row, total, path.stat().st_size)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "capture": {"path": str(path), "packets": total, "bytes": path.stat().st_size,
                                              "slice_packets": slice_n},
            "repeat": args.repeat, "camwatch": revision, "loadavg_before": load,
            "page_cache": {"state": args.page_cache, "map_cpu_seconds": mapping}, "results": rows,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
