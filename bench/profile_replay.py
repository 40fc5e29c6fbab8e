#!/usr/bin/env python3
"""Where camwatch's replay spends its time: the in-process pipeline under a profiler.

    python bench/profile_replay.py [--packets 200000 | --capture PATH] [--profiler cprofile|pyinstrument]

Three views, because each distorts differently:
  clocks        (default) wall-clock timers around a dozen coarse functions, each called at most a few thousand
                times in the run, so the timers cost nothing measurable; the run is also timed bare for comparison.
  cprofile      every call counted: code making many tiny calls per packet (the pcap record walk calls
                struct.unpack_from and list.append four times per record) looks far slower than it is.
  pyinstrument  stack sampling; less skew than cProfile, but at this run length its own overhead is large too.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import importlib.util
import io
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--profiler", choices=("clocks", "cprofile", "pyinstrument"), default="clocks")
    ap.add_argument("--repeat", type=int, default=3, help="clocks: runs, best reported")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", type=Path, help="cProfile: also save the raw stats (for snakeviz, pstats)")
    ap.add_argument("--camwatch-src", type=Path, default=REPO, metavar="DIR")
    args = ap.parse_args(argv)

    path = args.capture or Path("/tmp/camwatch-bench") / f"replay-{args.packets}.pcap"
    if not path.is_file():
        if args.capture:
            ap.error(f"{path}: no such file")
        spec = importlib.util.spec_from_file_location("make_capture", HERE / "make_capture.py")
        make_capture = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make_capture)
        make_capture.write(path, args.packets)

    sys.path.insert(0, str(args.camwatch_src))
    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.pipeline import Sensor

    if args.profiler == "clocks":
        return clocks(path, args.repeat)
    sensor = Sensor(Config(), on_alert=None)

    def replay() -> None:
        reader, _ = open_file(path)
        for batch in reader:
            sensor.process(batch)
        sensor.finish()

    t = time.perf_counter()
    if args.profiler == "cprofile":
        prof = cProfile.Profile()
        prof.runcall(replay)
        wall = time.perf_counter() - t
        if args.out:
            prof.dump_stats(args.out)
        for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key)
            stats.print_stats(args.top)
            print(f"==== by {title} ====")
            # Skip pstats' preamble; keep the table.
            print(buf.getvalue()[buf.getvalue().index("   ncalls"):])
    else:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        replay()
        profiler.stop()
        wall = time.perf_counter() - t
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"{sensor.packets:,} packets, {sensor.flows.created:,} flows in {wall:.2f} s under {args.profiler} "
          f"({sensor.packets / wall:,.0f} packets/s with the profiler's overhead)")
    return 0


class _Clocks:
    """Accumulated wall time per wrapped function, and how many calls it took."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn):
        spent, calls, clock = self.spent, self.calls, time.perf_counter
        spent[name] = 0.0
        calls[name] = 0

        def timed(*a, **kw):
            t = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += clock() - t
                calls[name] += 1
        return timed


def _found(module: str, name: str | None = None):
    """A module of the tree under test, or one of its attributes; None where that tree has no such thing."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return mod if name is None else getattr(mod, name, None)


def clocks(path: Path, repeat: int) -> int:
    import sensor.flows as flows_mod
    import sensor.pipeline as pipeline_mod
    from sensor.capture import CaptureReader, _Records, open_file
    from sensor.config import Config
    from sensor.flows import FlowTable
    from sensor.pipeline import Sensor

    def run() -> tuple[float, int, float]:
        sensor = Sensor(Config(), on_alert=None)
        t = time.perf_counter()
        reader, _ = open_file(path)
        read_s = 0.0
        it = iter(reader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            read_s += time.perf_counter() - t0
            if batch is None:
                break
            sensor.process(batch)
        sensor.finish()
        return time.perf_counter() - t, sensor.packets, read_s

    bare = min(run()[0] for _ in range(repeat))

    # (owner, attribute, label); wrapped in place for the clocked runs, restored afterwards.
    targets = [
        (CaptureReader, "_parse_pcap", "capture: CaptureReader._parse_pcap (per-record loop)"),
        (_Records, "batch", "capture: _Records.batch (lists -> arrays)"),
        # the pipeline's own name for it in older trees; since 1 December (night) the pipeline decodes through
        # sensor.decode.decoded_slices, which looks it up in sensor.decode
        (pipeline_mod if "decode" in vars(pipeline_mod) else _found("sensor.decode"), "decode", "decode.decode"),
        (FlowTable, "update", "flows: FlowTable.update"),
        # since 2026-11-30 the pipeline takes a batch's new flows apart (one of the two is called)
        (FlowTable, "update_apart", "flows: FlowTable.update_apart"),
        # the per-batch grouping: compiled `group` since 2026-11, flow_keys + np.unique in older trees
        (flows_mod, "group", "flows:   group"),
        (flows_mod, "flow_keys", "flows:   flow_keys"),
        (FlowTable, "expire", "flows: FlowTable.expire"),
        # rows each stage wants, once per batch (older trees masked them in each stage, per window)
        (getattr(pipeline_mod, "_Plan", None), "__init__", "pipeline: _Plan (candidate rows per batch)"),
        (Sensor, "_learn_dns", "pipeline: _learn_dns"),
        (Sensor, "_payload_tags", "pipeline: _payload_tags"),
        (Sensor, "_name_flows", "pipeline: _name_flows"),
        (Sensor, "_identify", "pipeline: _identify"),
        (Sensor, "_enrich_and_detect", "pipeline: _enrich_and_detect"),
        # the same work since enrichment became a package and detection a framework
        (_found("sensor.enrich.routing", "BatchPlan"), "__init__", "enrich: BatchPlan (parser rows per batch)"),
        (_found("sensor.enrich.naming", "DnsReader"), "read", "enrich: DnsReader.read"),
        (_found("sensor.tags", "PayloadTagger"), "tags", "tags: PayloadTagger.tags"),
        (_found("sensor.enrich.stage"), "name_flows", "enrich: name_flows"),
        (_found("sensor.enrich.identity", "UpnpReader"), "read", "enrich: UpnpReader.read"),
        (_found("sensor.enrich.identity", "IdentityReader"), "read", "enrich: IdentityReader.read"),
        (_found("sensor.enrich.stage", "Enricher"), "flow_update", "enrich: Enricher.flow_update (and detect)"),
        (_found("sensor.enrich.stage", "Enricher"), "new_flows", "enrich: Enricher.new_flows (and detect)"),
        (_found("sensor.detect.framework", "Detection"), "observe", "detect:   Detection.observe"),
    ]
    grouped = "group" in flows_mod.__dict__
    targets = [t for t in targets if t[0] is not None and t[1] in t[0].__dict__
               and not (t[1] == "flow_keys" and grouped)]
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in targets]
    best: tuple[float, dict, dict, float, int] | None = None
    try:
        for _ in range(repeat):
            c = _Clocks()
            for owner, attr, label in targets:
                setattr(owner, attr, c.wrap(label, owner.__dict__[attr]))
            total, packets, read_s = run()
            for owner, attr, fn in saved:
                setattr(owner, attr, fn)
            if best is None or total < best[0]:
                best = (total, dict(c.spent), dict(c.calls), read_s, packets)
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)

    total, spent, calls, read_s, packets = best
    parse = spent["capture: CaptureReader._parse_pcap (per-record loop)"]
    to_arrays = spent["capture: _Records.batch (lists -> arrays)"]
    rows = [("capture: whole reader iteration", read_s, None),
            ("capture: CaptureReader._parse_pcap (per-record loop)", parse, calls[
                "capture: CaptureReader._parse_pcap (per-record loop)"]),
            ("capture: _Records.batch (lists -> arrays)", to_arrays,
             calls["capture: _Records.batch (lists -> arrays)"]),
            ("capture: file read + buffer copies (rest)", read_s - parse - to_arrays, None)]
    rows += [(label, spent[label], calls[label]) for _, _, label in targets[2:]]
    # nested labels (indented) are inside FlowTable.update
    accounted = read_s + sum(spent[label] for _, _, label in targets[2:] if not label.startswith("flows:   "))
    rows.append(("other (windowing, counters, finish)", total - accounted, None))
    print(f"{packets:,} packets; best of {repeat}: {total:.3f} s with clocks, {bare:.3f} s bare "
          f"({packets / bare:,.0f} packets/s)")
    print()
    print("| stage / function | seconds | share | calls |")
    print("|---|--:|--:|--:|")
    for label, sec, n in rows:
        print(f"| {label} | {sec:.3f} | {100 * sec / total:.0f}% | {'' if n is None else f'{n:,}'} |")
    print()
    print(_split(spent, read_s, total))
    return 0


def _split(spent: dict[str, float], read_s: float, total: float) -> str:
    """The coarse split (docs/benchmarks.md, issue 16): read, decode, flows, enrichment and detection, the rest
    (windowing, counters, finish); start-up is not in an in-process run (bench/startup.py)."""
    decode_s = spent.get("decode.decode", 0.0)
    flows_s = sum(v for k, v in spent.items() if k.startswith("flows: ") and not k.startswith("flows:   "))
    enrich_s = sum(v for k, v in spent.items() if k.split(":")[0] in ("enrich", "tags", "pipeline"))
    parts = [("read", read_s), ("decode", decode_s), ("flows", flows_s), ("enrich+detect", enrich_s)]
    parts.append(("rest", total - sum(v for _, v in parts)))
    return "split: " + ", ".join(f"{name} {sec:.2f} s ({100 * sec / total:.0f}%)" for name, sec in parts) + \
        f"; total {total:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
