"""`camwatch inspect`: Wireshark's dissection of one device's control-plane packets."""

from __future__ import annotations

import argparse
import json
import sys

from sensor.dissect import printable
from sensor.errors import CamwatchError
from sensor.inspect import inspect as inspect_device

from .common import EXIT_CAPTURE, EXIT_OK, report_errors, require_files


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "inspect", help="Wireshark's dissection of one device's control-plane packets (pyshark)")
    parser.add_argument("pcaps", nargs="+", metavar="PCAP")
    parser.add_argument("--device", required=True, metavar="IP|ID",
                        help="the device to look at: any of its addresses, or its inventory id; every address the "
                             "box held in the captures is inspected")
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml of the site (default: zero-config)")
    parser.add_argument("--json", action="store_true", help="JSON instead of lines")
    parser.set_defaults(func=inspect)


def box_addresses(paths: list[str], device: str, config_path: str | None) -> list[str]:
    """Every address the box holding `device` (an address or an inventory id) had in the captures, as the
    inventory joins them (docs/identity.md): its IPv4, IPv6 and former addresses. An address of no camera-side
    device (a server) is inspected alone."""
    import dataclasses

    from sensor.config import load_config
    from sensor.pipeline import Sensor

    from .loop import replay_into

    config = load_config(config_path)
    # a throwaway, in-memory state: inspecting never writes the site's state database
    sensor = Sensor(dataclasses.replace(config, state=dataclasses.replace(config.state, path=None)))
    replay_into(sensor, paths)   # unreadable files are reported by the extraction pass
    dev = sensor.inventory.lookup(device) or sensor.inventory.devices.get(device)
    if dev is None:
        return [device]
    return sorted(set(dev.addresses) | set(dev.former_addresses))


def inspect(args: argparse.Namespace) -> int:
    require_files(args.pcaps)
    addresses = box_addresses(args.pcaps, args.device, args.config)
    if len(addresses) > 1:
        sys.stderr.write(f"camwatch: {args.device} is one box with {len(addresses)} addresses: "
                         f"{', '.join(addresses)}\n")
    rows, extracted = inspect_device(args.pcaps, addresses)
    if not extracted.of_box and not extracted.failures:
        where = "these captures" if len(args.pcaps) > 1 else "the capture"
        raise CamwatchError(f"no packet of {args.device} in {where} ({extracted.seen:,} packets read)")
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        for r in rows:
            # tshark escapes what it dissects; what reaches a terminal is made printable here all the same
            line = f"{r['time']}  {r['src']} -> {r['dst']}  {r['protocol']:<8} {r['detail'] or ''}"
            sys.stdout.write(printable(line) + "\n")
    sys.stderr.write(f"camwatch: {extracted.written:,} of {extracted.seen:,} packets were {args.device}'s control "
                     f"plane; Wireshark dissected {len(rows):,} of interest\n")
    report_errors(extracted.failures)
    return EXIT_CAPTURE if extracted.failures else EXIT_OK
