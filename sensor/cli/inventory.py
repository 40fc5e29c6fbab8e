"""`camwatch inventory`: every camera-side device, from capture files or a running sensor."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from sensor.config import load_config
from sensor.errors import CamwatchError
from sensor.pipeline import Sensor

from .common import EXIT_CAPTURE, EXIT_OK, report_errors
from .loop import replay_into


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("inventory", help="list camera-side devices: maker, covered flag, role, identity")
    parser.add_argument("pcaps", nargs="*", metavar="PCAP", help="captures to build the inventory from")
    parser.add_argument("--url", metavar="URL",
                        help="read it from a running sensor instead, e.g. http://127.0.0.1:9847")
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml (default: zero-config)")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.set_defaults(func=inventory)


def inventory(args: argparse.Namespace) -> int:
    if bool(args.pcaps) == bool(args.url):
        raise CamwatchError("inventory: give capture files or --url of a running sensor (one of them)")
    failures: list[str] = []
    if args.url:
        devices = fetch_inventory(args.url)
    else:
        sensor = Sensor(load_config(args.config))
        failures = replay_into(sensor, args.pcaps)
        devices = sensor.inventory_snapshot()
        report_errors(failures)
    devices.sort(key=lambda d: (ipaddress.ip_address(d["ip"]).version, ipaddress.ip_address(d["ip"])))
    if args.json:
        sys.stdout.write(json.dumps(devices, indent=2) + "\n")
    else:
        sys.stdout.write(format_inventory(devices))
    return EXIT_CAPTURE if failures else EXIT_OK


def fetch_inventory(url: str) -> list[dict]:
    import urllib.request  # HTTP (and TLS) only for --url: every other command starts without them

    target = url.rstrip("/") + "/inventory"
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise CamwatchError(f"cannot read the inventory from {target}: {exc}") from None


def format_inventory(devices: list[dict]) -> str:
    cols = [("IP", lambda d: d["ip"]), ("MAC", lambda d: d["mac"] or "-"),
            ("MANUFACTURER", lambda d: d["vendor"] or "-"),
            ("COVERED", lambda d: f"yes ({d['maker']}, {d['covered_basis']})" if d["covered"] else "no"),
            ("ROLE", lambda d: d["role"]),
            ("MODEL/FIRMWARE", lambda d: " ".join(filter(None, [d["identity"].get("model"), d["identity"].get(
                "firmware"), d["identity"].get("server")])) or "-"),
            ("EXTERNAL DESTINATIONS", lambda d: ", ".join(
                e["name"] or e["ip"] for e in sorted(d["external_destinations"], key=lambda e: -e["bytes"])[:4])
                + (f" (+{len(d['external_destinations']) - 4})" if len(d["external_destinations"]) > 4 else "")
                or "-")]
    rows = [[str(get(d))[:60] for _, get in cols] for d in devices]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"
