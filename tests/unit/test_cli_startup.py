"""Start-up guards (issue 16): a command imports what it needs, not every command's modules, and the manuf
table is indexed rather than parsed. Checked on sys.modules in a fresh interpreter, not timed: a shared machine's
timings cannot fail a test reliably; bench/startup.py measures the time itself."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.cli import BLAS_THREAD_VARIABLES, COMMANDS, build_parser, main
from sensor.cli.common import terminal_columns

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, os, sys
parsed = []
if sys.argv.pop(1) == "watch-manuf":   # else importing the makers module here would load what is checked
    import sensor.enrich.makers as makers
    real_parse = makers.parse_manuf
    makers.parse_manuf = lambda text: parsed.append(len(text)) or real_parse(text)
from sensor.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:   # --help
    code = exc.code
blas = None
if "numpy" in sys.modules:   # the thread count OpenBLAS took when numpy was loaded (threadpoolctl asks it)
    import threadpoolctl
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
print(json.dumps({"code": code, "modules": sorted(sys.modules), "parsed": parsed, "blas": blas,
                  "blas_env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}}))
"""
# Imported by no replay: the other commands, live capture, the metrics server, the report, the model's trainer,
# the model package (a replay without --model).
NOT_FOR_REPLAY = ("sensor.cli.eval", "sensor.cli.run", "sensor.cli.report", "sensor.cli.train", "sensor.cli.inspect",
                  "sensor.cli.inventory", "sensor.cli.hash_password", "sensor.evaluate", "sensor.inspect",
                  "sensor.live", "sensor.allocator", "sensor.export.server", "sensor.export.auth", "sensor.report",
                  "sensor.export.csv_cells", "sensor.export.client", "prometheus_client", "sklearn", "subprocess",
                  "tempfile", "http.server", "ssl", "sensor.model")
# Standard modules a 1-packet replay does not need before its first packet, imported where they are used (issue 16):
# socket (its enum conversions; the functions come from _socket), html (its entity table: dissect unescapes on first
# use), hashlib (OpenSSL; blake2b comes from _blake2), statistics (random, fractions, decimal; beacon scoring),
# base64 (a [metrics] password hash), the flow log (--flows; test_flows_still_bring_the_flow_log) and shutil (with
# bz2 and lzma: argparse's own help width; sensor.cli.common.HelpFormatter).
LAZY_FOR_REPLAY = ("socket", "html", "hashlib", "statistics", "base64", "sensor.export.flow_log", "shutil", "bz2",
                   "lzma")


def _run(tmp_path: Path, *argv: str, watch_manuf: bool = True, **env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMWATCH") and k not in BLAS_THREAD_VARIABLES}
    env.update(env_vars)
    env["PYTHONPATH"] = str(REPO)
    probe = [sys.executable, "-c", PROBE, "watch-manuf" if watch_manuf else "plain", *argv]
    out = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_packet(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import make_capture
    finally:
        sys.path.remove(str(REPO / "bench"))
    path = tmp_path_factory.mktemp("startup") / "one.pcap"
    make_capture.write(path, 1)
    return path


def test_replay_imports_only_what_it_needs(one_packet, tmp_path):
    done = _run(tmp_path, "replay", str(one_packet), "--quiet", "--alerts", "/dev/null")
    assert done["code"] == 0
    loaded = set(done["modules"])
    assert "sensor.pipeline" in loaded and "sensor.enrich.manuf_index" in loaded   # the probe saw a real replay
    assert not [m for m in loaded for name in NOT_FOR_REPLAY if m == name or m.startswith(name + ".")]
    assert done["parsed"] == [], "the manuf file was parsed whole instead of indexed"
    assert not [m for m in loaded for name in LAZY_FOR_REPLAY if m == name or m.startswith(name + ".")]


def test_every_dataclass_a_replay_imports_has_a_docstring(one_packet, tmp_path):
    # dataclass() gives a class without a docstring one made from inspect.signature, at import: 30-200 µs a class,
    # ~1.9 ms of every start for the 26 that had none (issue 16). A made one starts with the class's name and "(".
    done = _run(tmp_path, "replay", str(one_packet), "--quiet", "--alerts", "/dev/null", watch_manuf=False)
    made = []
    for name in done["modules"]:
        if name == "sensor" or name.startswith("sensor."):
            for cls in vars(importlib.import_module(name)).values():
                if (isinstance(cls, type) and cls.__module__ == name and dataclasses.is_dataclass(cls)
                        and (cls.__doc__ or "").startswith(cls.__name__ + "(")):
                    made.append(f"{name}.{cls.__qualname__}")
    assert len(done["modules"]) > 100 and not made, f"give these a docstring: {made}"


# The dataclasses a replay imports that keep the value methods dataclass() generates (__eq__, __hash__ if frozen,
# __repr__), and why. Every other one is declared eq=False, repr=False: generating the three cost ~1.4 M
# instructions of every start per class, ~6% of a 1-packet replay for the 37 that nothing compared, hashed or
# printed (issue 16; found by recording every call of the generated methods over the whole suite, the goldens and
# the benchmark captures). Frozen ones compared by value elsewhere (the configuration's sections, records the tests
# compare) inherit the same methods, written once, from sensor.schema.Values.
VALUE_DATACLASSES = {
    "sensor.enrich.maker_evidence.MakerEvidence": "a dict key on the new-device path: the generated hash is faster",
    "sensor.dissect.DnsMessage": "compared in the tests, and mutable: unhashable, which Values is not",
}


def test_a_replay_generates_value_methods_only_where_something_uses_them(one_packet, tmp_path):
    from sensor.schema import Values

    done = _run(tmp_path, "replay", str(one_packet), "--quiet", "--alerts", "/dev/null", watch_manuf=False)
    generated, seen = [], set()
    for name in done["modules"]:
        if name == "sensor" or name.startswith("sensor."):
            for cls in vars(importlib.import_module(name)).values():
                if isinstance(cls, type) and cls.__module__ == name and dataclasses.is_dataclass(cls):
                    qualname = f"{name}.{cls.__qualname__}"
                    seen.add(qualname)
                    params = cls.__dataclass_params__  # type: ignore[attr-defined]
                    if (params.eq or params.repr) and qualname not in VALUE_DATACLASSES:
                        generated.append(qualname)
                    if issubclass(cls, Values) and (params.eq or params.repr):
                        generated.append(f"{qualname} (a Values section: its own would replace Values')")
    assert len(seen) > 50 and not generated, f"declare these eq=False, repr=False or list them: {generated}"
    assert set(VALUE_DATACLASSES) <= seen


@pytest.mark.parametrize("argv", [["report", "--help"], ["hash-password", "--help"]])
def test_commands_without_the_pipeline_do_not_load_it(argv, tmp_path):
    done = _run(tmp_path, *argv, watch_manuf=False)
    assert done["code"] == 0
    loaded = set(done["modules"])
    assert "sensor.cli" in loaded
    assert not loaded & {"numpy", "sensor.pipeline", "sensor.detect", "sensor.detect.registry", "sensor.enrich"}


def test_metrics_out_still_brings_prometheus_client(one_packet, tmp_path):
    done = _run(tmp_path, "replay", str(one_packet), "--quiet", "--alerts", "/dev/null",
                "--metrics-out", str(tmp_path / "metrics.prom"))
    assert done["code"] == 0 and "prometheus_client" in done["modules"]
    assert "camwatch_packets_total" in (tmp_path / "metrics.prom").read_text()


def test_flows_still_bring_the_flow_log(one_packet, tmp_path):
    done = _run(tmp_path, "replay", str(one_packet), "--quiet", "--alerts", "/dev/null",
                "--flows", str(tmp_path / "flows.jsonl"), watch_manuf=False)
    assert done["code"] == 0 and "sensor.export.flow_log" in done["modules"]
    assert '"uid":"C' in (tmp_path / "flows.jsonl").read_text()


def test_replay_runs_one_blas_thread_unless_told_otherwise(one_packet, tmp_path):
    # OpenBLAS's threads spin at numpy's import (~0.05 s of CPU of every start) and camwatch does no BLAS: one
    # thread, unless the user set a count, in any of the variables OpenBLAS reads.
    replay = ("replay", str(one_packet), "--quiet", "--alerts", "/dev/null")
    assert _run(tmp_path, *replay, watch_manuf=False)["blas"] == [1]
    assert _run(tmp_path, *replay, watch_manuf=False, OPENBLAS_NUM_THREADS="2")["blas"] == [2]
    told = _run(tmp_path, *replay, watch_manuf=False, OMP_NUM_THREADS="2")
    assert told["blas"] == [2] and told["blas_env"] == {"OMP_NUM_THREADS": "2"}


def test_train_keeps_blas_threads(tmp_path):
    # scikit-learn fits the model and may use BLAS: train is left to OpenBLAS's own default (a thread per core).
    done = _run(tmp_path, "train", "--help", watch_manuf=False)
    assert done["code"] == 0 and "numpy" in done["modules"] and done["blas_env"] == {}


def test_the_cli_loads_the_command_only_in_main():
    # main() sets the BLAS thread count and keeps the collector off while the command's modules load: both only
    # work if importing sensor.cli (what `python -m sensor` and the console script do first) loads none of them.
    code = "import json, sys; import sensor.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60, check=True)
    assert not set(json.loads(out.stdout)) & {"numpy", "sensor.config", "sensor.pipeline", "dataclasses"}


def test_main_leaves_the_collector_as_it_found_it():
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            with pytest.raises(SystemExit):
                main(["report", "--help"])
            assert gc.isenabled() is enabled
        finally:
            gc.enable()


def test_a_command_parser_alone_parses_as_the_whole_one(one_packet):
    whole = build_parser()
    subparsers = next(a for a in whole._actions if a.dest == "command")
    assert list(subparsers.choices) == list(COMMANDS), "COMMANDS must list every registered command, in order"
    lines = {"replay": ["replay", str(one_packet), "--pace", "10x", "--quiet"],
             "inventory": ["inventory", str(one_packet), "--json"], "hash-password": ["hash-password"],
             "report": ["report", str(one_packet), "--out", "r.html"], "run": ["run", "-i", "eth0"]}
    for name, argv in lines.items():
        try:
            expected = vars(whole.parse_args(argv))
        except SystemExit:   # an option spelled differently than guessed: compare the refusal instead
            with pytest.raises(SystemExit):
                build_parser(name).parse_args(argv)
            continue
        alone = vars(build_parser(name).parse_args(argv))
        assert alone == expected, name


LEFT_AT_EXIT = """
import gc, json, sys
from sensor.cli import main
how, sys.argv = sys.argv[1], ["camwatch", *sys.argv[2:]]
code = main(None if how == "program" else sys.argv[1:])
print(json.dumps({"code": code, "collectable": len(gc.get_objects())}))
"""


@pytest.mark.parametrize("how", ["program", "in-process"])
def test_a_replay_run_as_the_program_leaves_the_exit_nothing_to_collect(one_packet, tmp_path, how):
    # The interpreter's finalization walked every object left (~0.06 s after a 1 M-source flood): a replay from the
    # command line freezes them out of it, its outputs closed and whole before; a caller of main(argv) keeps its
    # collector as it was.
    config = tmp_path / "camwatch.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n')
    argv = ["replay", str(one_packet), "--quiet", "--config", str(config), "--alerts", str(tmp_path / "alerts"),
            "--metrics-out", str(tmp_path / "metrics")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", LEFT_AT_EXIT, how, *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    done = json.loads(out.stdout.strip().splitlines()[-1])
    assert done["code"] == 0
    if how == "program":
        assert done["collectable"] < 100
    else:
        assert done["collectable"] > 1000
    assert "camwatch_packets" in (tmp_path / "metrics").read_text()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("select count(*) from inventory").fetchone()[0] >= 1


PROGRAM = """
import atexit, sys, threading
atexit.register(lambda: sys.stderr.write("finalized\\n"))   # runs only if the interpreter finalizes
what = sys.argv.pop(1)
if what == "thread":   # a thread that is not a daemon, still running when main returns
    threading.Thread(target=threading.Event().wait, args=(2,)).start()
elif what == "tracer":   # as coverage's, whose data is written at exit
    sys.settrace(lambda *event: None)
from sensor.cli import program
program()
"""


@pytest.mark.parametrize("what, command, finalized", [
    ("plain", "replay", False), ("plain", "report", True), ("thread", "replay", True), ("tracer", "replay", True)])
def test_the_program_ends_without_finalization_only_after_a_replay_that_left_nothing(one_packet, tmp_path, what,
                                                                                       command, finalized):
    # After a replay or a run the program ends at once (os._exit, ~4 ms of a 1-packet replay): its outputs are
    # whole when main returns. Anything else, or anything that may still have work at exit, ends as before.
    argv = (["replay", str(one_packet), "--alerts", "-", "--flows", str(tmp_path / "flows"), "--metrics-out",
             str(tmp_path / "metrics")] if command == "replay" else ["report", "--help"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROGRAM, what, *argv], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("finalized" in out.stderr) is finalized
    if command == "replay":   # written and flushed all the same: the summary on stderr, the flow log, the metrics
        assert "packets" in out.stderr
        assert '"uid":"C' in (tmp_path / "flows").read_text()
        assert "camwatch_packets_total" in (tmp_path / "metrics").read_text()


def test_python_m_sensor_and_the_console_script_run_the_program():
    assert (REPO / "sensor" / "__main__.py").read_text().strip().endswith("program()")
    assert 'camwatch = "sensor.cli:program"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("columns", [None, "", "abc", "-5", "0", "37", "100", "200"])
def test_help_is_as_wide_as_argparse_makes_it(monkeypatch, columns):
    import shutil

    monkeypatch.delenv("COLUMNS", raising=False)
    if columns is not None:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns
    for command in (None, *COMMANDS):
        ours = build_parser(command)
        theirs = build_parser(command)
        for parser in (theirs, *_subparsers(theirs)):
            parser.formatter_class = argparse.HelpFormatter
        for a, b in zip((ours, *_subparsers(ours)), (theirs, *_subparsers(theirs)), strict=True):
            assert a.format_help() == b.format_help() and a.format_usage() == b.format_usage()


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for sub in action.choices.values()]
