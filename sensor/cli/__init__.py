"""camwatch command line: `replay` captures, `run` live on an interface, and the tools around them. One module per
command, each adding its parser and its function (`set_defaults(func=...)`); `loop` is the loop replay and run
share.

Exit codes: 0 success; 1 a capture could not be read to its end (everything before the fault was processed and
all outputs were still written); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from typing import NoReturn

from sensor import __version__
from sensor.errors import CamwatchError, ConfigError

from .common import EXIT_OK, EXIT_USAGE, UsageParser

__all__ = ["build_parser", "main", "program"]

# Command name -> the module under sensor.cli that registers it, in the order `camwatch --help` lists them.
# Imported only when needed: `camwatch replay` need not import the report's renderer, the live capture or the
# evaluation harness (start-up time, issue 16; tests/unit/test_cli_startup.py).
COMMANDS = {"replay": "replay", "inventory": "inventory", "eval": "eval", "train": "train", "inspect": "inspect",
            "hash-password": "hash_password", "run": "run", "report": "report"}

# OpenBLAS (numpy's BLAS) starts a thread per core beyond the first when numpy is imported, and each spins waiting
# for work before it sleeps: ~0.06 s of CPU on a 2-core machine, about as much as the rest of `import numpy`, in
# every start, and on a busy machine it takes a core from the main thread. camwatch's own numpy does no linear
# algebra (its one matrix product is of integers, which numpy does without BLAS), so a command runs with one BLAS
# thread unless the user set a count (any of the variables OpenBLAS reads) or the command is `train`, whose
# scikit-learn may use BLAS. Set in the environment, since OpenBLAS reads it once, when numpy is first imported:
# children inherit it (dumpcap and tshark, which do not read it).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
MANY_BLAS_THREADS = ("train",)

# The commands whose outputs a loop Session closes before main returns: run from the command line (main's argv
# None), main freezes what is left out of the collector for the interpreter's exit (main), and the program ends
# without that exit's teardown (program).
ENDED_BY_EXIT = ("replay", "run")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, given a command's name, a parser that knows only that command: parsing a
    command line that starts with it gives the same result either way, since the commands share nothing but
    --version and --help, which come before the name."""
    parser = UsageParser(prog="camwatch", description="Passive sensor for CCTV camera VLANs.")
    parser.add_argument("--version", action="version", version=f"camwatch {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"{__name__}.{module}").register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = _command(sys.argv[1:] if argv is None else argv)
    if (command not in MANY_BLAS_THREADS and "numpy" not in sys.modules
            and not any(name in os.environ for name in BLAS_THREAD_VARIABLES)):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    # Importing the command's modules (numpy, the detectors, ~70 dataclasses) leaves ~16,000 objects that live as
    # long as the process, and CPython's collector ran ~55 times on the way (~0.01 s, 5% of a replay's start).
    # Collection is off while they load and they are then frozen out of it, as tune_garbage_collector freezes the
    # built sensor: enabled again unfrozen, the first young collection would walk them all at once.
    collecting = gc.isenabled()
    gc.disable()
    try:
        args = build_parser(command).parse_args(argv)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    try:
        code = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"camwatch: config error: {exc}\n")
        return EXIT_USAGE
    except CamwatchError as exc:
        sys.stderr.write(f"camwatch: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    if argv is None and command in ENDED_BY_EXIT:
        # The process ends now. The interpreter's finalization would run the collector over every object left
        # (after a replay, the built sensor's: frozen when built, with its 10,000 devices of a forged-source flood
        # held in a cycle through it), ~0.06 s of a 2 s replay; frozen out of it, they are freed with the process.
        # These commands close their outputs themselves (Session.run: alerts, flow log, state store), so nothing
        # left to the collector has anything to write.
        gc.freeze()
    return code


def program() -> NoReturn:
    """camwatch as a program: the console script and `python -m sensor`. After a replay or a run, whose outputs are
    written and closed when main returns (Session.run: alerts, flow log, metrics file, state store), the process
    ends at once: the interpreter's finalization would only tear down the modules and objects a 1-packet replay
    built, ~4 ms of its ~0.14 s (issue 16, start-up). camwatch registers no atexit function; the interpreter ends
    as usual when something else may still have work at exit: a tracer or profiler (coverage writes its data
    then), a thread that is not a daemon, `python -i`, or standard streams that cannot be flushed (their error is
    then reported the usual way)."""
    code = main()
    if _command(sys.argv[1:]) in ENDED_BY_EXIT and _nothing_left_for_exit():
        os._exit(code)
    sys.exit(code)


def _command(words: list[str]) -> str | None:
    """The command a command line names, if its first word is one."""
    return words[0] if words and words[0] in COMMANDS else None


def _nothing_left_for_exit() -> bool:
    import threading  # loaded by replay and run already; not by importing sensor.cli (test_cli_startup.py)

    if sys.gettrace() is not None or sys.getprofile() is not None or sys.flags.inspect:
        return False
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        return False
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):   # a closed pipe or stream
        return False
    return True
