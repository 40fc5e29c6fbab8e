"""camwatch command line: `replay` captures, `run` live on an interface, and the tools around them. One module per
command, each adding its parser and its function (`set_defaults(func=...)`); `loop` is the loop replay and run
share.

Exit codes: 0 success; 1 a capture could not be read to its end (everything before the fault was processed and
all outputs were still written); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys

from sensor import __version__
from sensor.errors import CamwatchError, ConfigError

from . import eval as eval_command  # plain `eval` would shadow the builtin
from . import hash_password, inspect, inventory, replay, report, run, train
from .common import EXIT_OK, EXIT_USAGE, UsageParser

__all__ = ["build_parser", "main"]

# In the order `camwatch --help` lists them.
COMMANDS = (replay, inventory, eval_command, train, inspect, hash_password, run, report)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="camwatch", description="Passive sensor for CCTV camera VLANs.")
    parser.add_argument("--version", action="version", version=f"camwatch {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    for command in COMMANDS:
        command.register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
