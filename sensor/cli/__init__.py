"""camwatch command line: `replay` captures, `run` live on an interface, and the tools around them. One module per
command, each adding its parser and its function (`set_defaults(func=...)`); `loop` is the loop replay and run
share.

Exit codes: 0 success; 1 a capture could not be read to its end (everything before the fault was processed and
all outputs were still written); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sensor import __version__
from sensor.errors import CamwatchError, ConfigError

from .common import EXIT_OK, EXIT_USAGE, UsageParser

__all__ = ["build_parser", "main"]

# Command name -> the module under sensor.cli that registers it, in the order `camwatch --help` lists them.
# Imported only when needed: `camwatch replay` need not import the report's renderer, the live capture or the
# evaluation harness (start-up time, issue 16; tests/unit/test_cli_startup.py).
COMMANDS = {"replay": "replay", "inventory": "inventory", "eval": "eval", "train": "train", "inspect": "inspect",
            "hash-password": "hash_password", "run": "run", "report": "report"}


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
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words[0] if words and words[0] in COMMANDS else None).parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"camwatch: config error: {exc}\n")
        return EXIT_USAGE
    except CamwatchError as exc:
        sys.stderr.write(f"camwatch: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
