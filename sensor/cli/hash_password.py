"""`camwatch hash-password`: the hash of a password for [metrics.basic_auth]."""

from __future__ import annotations

import argparse
import getpass
import sys

from sensor.errors import CamwatchError
from sensor.export import hash_password as hash_for_config

from .common import EXIT_OK


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("hash-password",
                                    help="hash a password for [metrics] basic_auth (reads it from stdin)")
    parser.set_defaults(func=hash_password)


def hash_password(args: argparse.Namespace) -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        raise CamwatchError("hash-password: empty password")
    print(hash_for_config(password))
    return EXIT_OK
