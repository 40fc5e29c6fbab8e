"""What several commands share: exit codes, the parser class, the output options, and small helpers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sensor.errors import CamwatchError
from sensor.export.listen import DEFAULT_METRICS_ADDRESS, parse_listen

if TYPE_CHECKING:
    from sensor.config import Config
    from sensor.export.client import SensorAccess
    from sensor.model import AnomalyModel

EXIT_OK, EXIT_CAPTURE, EXIT_USAGE = 0, 1, 2


def terminal_columns() -> int:
    """The terminal's width as argparse sizes its help (shutil.get_terminal_size's columns: $COLUMNS, else the
    terminal of sys.__stdout__, else 80), without importing shutil (see HelpFormatter)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, as wide as argparse makes it. argparse makes one for every option added (to check its
    nargs), and its own sizing imports shutil, which imports bz2, lzma and zlib: ~1.4 ms of every start
    (issue 16) for the width of help that a replay never prints."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)


class UsageParser(argparse.ArgumentParser):
    """argparse with camwatch's usage errors: one line and exit 2, like every other usage error; help sized by
    HelpFormatter."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"camwatch: {message} (see camwatch {self.prog.split()[-1]} --help)\n"
                  if " " in self.prog else f"camwatch: {message} (see camwatch --help)\n")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that run the whole sensor (replay and run)."""
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml (default: zero-config)")
    parser.add_argument("--alerts", metavar="FILE", default="-",
                        help="write alert JSON lines here; '-' is stdout (default)")
    parser.add_argument("--flows", metavar="FILE",
                        help="write a JSON line per ended flow here (Zeek conn.log fields); '-' is stdout")
    parser.add_argument("--metrics-out", metavar="FILE", help="write the final Prometheus text exposition here")
    parser.add_argument("--serve", metavar="ADDR:PORT",
                        help="serve /metrics, /inventory, /countries, /healthz, /readyz "
                             f"(e.g. {DEFAULT_METRICS_ADDRESS[0]}:{DEFAULT_METRICS_ADDRESS[1]})")
    parser.add_argument("--quiet", action="store_true", help="no summary or progress on stderr")
    parser.add_argument("--model", metavar="FILE", help="learned baseline (models/NAME.json) for the anomaly detector")


def add_sensor_access_options(parser: argparse.ArgumentParser) -> None:
    """How --url reaches a sensor behind TLS, mutual TLS or basic auth (sensor/export/client.py)."""
    # Imported here and in sensor_access, not at the top: replay and run never reach a sensor by URL (issue 16).
    from sensor.export.client import PASSWORD_ENV

    parser.add_argument("--url-ca", metavar="FILE", help="CA (PEM) the sensor's certificate must chain to")
    parser.add_argument("--url-cert", metavar="FILE", help="client certificate (PEM) for a mutual-TLS sensor")
    parser.add_argument("--url-key", metavar="FILE", help="its private key, if not in --url-cert's file")
    parser.add_argument("--url-user", metavar="NAME",
                        help=f"basic-auth user; the password is read from ${PASSWORD_ENV}")


def sensor_access(args: argparse.Namespace) -> SensorAccess:
    from sensor.export.client import SensorAccess

    if args.url_key and not args.url_cert:
        raise CamwatchError("--url-key needs --url-cert")
    for path in (args.url_ca, args.url_cert, args.url_key):
        if path is not None and not Path(path).is_file():
            raise CamwatchError(f"{path}: no such file")
    return SensorAccess(ca=args.url_ca, cert=args.url_cert, key=args.url_key, user=args.url_user)


def metrics_listen(args: argparse.Namespace, config: Config) -> tuple[str, int] | None:
    """--serve wins over the config's metrics.listen; neither means no HTTP endpoint."""
    value = args.serve or config.metrics.listen
    return parse_listen(value) if value else None


def load_model(args: argparse.Namespace) -> AnomalyModel | None:
    if not args.model:
        return None
    from sensor.model import AnomalyModel
    return AnomalyModel.load(args.model)


def distinct_outputs(args: argparse.Namespace, config: Config) -> None:
    """Each output its own file, and none of them a file the command reads. Two outputs on one file write over
    each other; an output on an input destroys it: the alert and flow logs are started afresh when the sensor is
    built (a capture named as --alerts was empty by the time it was read), and the metrics file replaces its target
    at the end (a capture, the config or the state database gone, without a word). Refused before anything is
    opened. Standard output ('-') and what is not a regular file once it exists (/dev/null, a terminal, a pipe)
    may be named by several."""
    outputs = [(flag, path) for flag, path in (("--alerts", args.alerts), ("--flows", getattr(args, "flows", None)),
                                               ("--metrics-out", getattr(args, "metrics_out", None)))
               if path and path != "-" and _may_be_clobbered(path)]
    inputs = ([(path, "a capture it reads") for path in getattr(args, "pcaps", ())]
              + [(path, what) for path, what in ((getattr(args, "config", None), "its config"),
                                                 (getattr(args, "model", None), "its model"),
                                                 (config.state_path, "its state database")) if path])
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[:i]:
            if _same_file(path, other):
                raise CamwatchError(f"{other_flag} and {flag} both name {other}: give each output its own file"
                                    if {flag, other_flag} != {"--alerts", "--flows"} else
                                    f"--alerts and --flows both name {other}: give each log its own file")
        refuse_input_as_output(flag, path, inputs)


def refuse_input_as_output(flag: str, path: str, inputs: Iterable[tuple[str, str]]) -> None:
    """An output on one of the command's inputs ((path, what it is) pairs) would destroy it: refused."""
    for source, what in inputs:
        if _same_file(path, source):
            raise CamwatchError(f"{flag} names {path}, {what}: the output would destroy it")


def _may_be_clobbered(path: str) -> bool:
    """A regular file, or nothing yet (it would be made one)."""
    target = Path(path)
    return target.is_file() or not target.exists()


def _same_file(a: str, b: str) -> bool:
    """One file by two names: the same resolved path, or (both existing) the same inode, as a hard link is."""
    first, second = Path(a), Path(b)
    if first.resolve() == second.resolve():
        return True
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def writable_target(path: str, what: str) -> None:
    """Refuse, before any work, a file that will only be written at the end (replay's --metrics-out, report's
    --out): a directory that does not exist, or a path that is one, would otherwise be found after the whole run."""
    target = Path(path)
    folder = target.parent
    reason = ("No such file or directory" if not folder.is_dir() else "Is a directory" if target.is_dir()
              else "Permission denied" if not os.access(folder, os.W_OK | os.X_OK) else None)
    if reason is not None:
        raise CamwatchError(f"{path}: cannot write {what}: {reason}")


def require_files(paths: Iterable[str], *, regular: bool = False) -> None:
    """Refuse a missing capture before anything is opened or written. `regular` also names what exists but is not
    a regular file (a directory, a device), which replay, unlike inspect, tells apart."""
    for path in paths:
        if not Path(path).is_file():
            missing = not regular or not Path(path).exists()
            raise CamwatchError(f"{path}: no such file" if missing else f"{path}: not a regular file")


def report_errors(messages: Iterable[str]) -> None:
    for message in messages:
        sys.stderr.write(f"camwatch: error: {message}\n")


def format_address(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
