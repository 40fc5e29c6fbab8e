"""`camwatch inventory`: every camera-side device, from capture files or a running sensor."""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import shutil
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from sensor.config import load_config
from sensor.errors import CamwatchError
from sensor.export.client import fetch_inventory
from sensor.export.csv_cells import safe_cell
from sensor.pipeline import Sensor
from sensor.units import byte_size

from .common import EXIT_CAPTURE, EXIT_OK, add_sensor_access_options, report_errors, sensor_access
from .loop import replay_into


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("inventory", help="list camera-side devices: maker, covered flag, role, identity")
    parser.add_argument("pcaps", nargs="*", metavar="PCAP", help="captures to build the inventory from")
    parser.add_argument("--url", metavar="URL",
                        help="read it from a running sensor instead, e.g. http://127.0.0.1:9847")
    add_sensor_access_options(parser)
    parser.add_argument("--config", metavar="FILE", help="camwatch.toml (default: zero-config)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="JSON instead of a table (docs/inventory.schema.json)")
    output.add_argument("--csv", action="store_true", help="CSV, one row per device (columns: README)")
    parser.set_defaults(func=inventory)


def inventory(args: argparse.Namespace) -> int:
    if bool(args.pcaps) == bool(args.url):
        raise CamwatchError("inventory: give capture files or --url of a running sensor (one of them)")
    failures: list[str] = []
    if args.url:
        devices = _checked(fetch_inventory(args.url, sensor_access(args)), args.json)
    else:
        sensor = Sensor(load_config(args.config))
        failures = replay_into(sensor, args.pcaps)
        devices = sensor.inventory_snapshot()
        report_errors(failures)
    devices.sort(key=_address_key)
    if args.json:
        sys.stdout.write(json.dumps(devices, indent=2) + "\n")
    elif args.csv:
        write_csv(devices, sys.stdout)
    else:
        # On a terminal the table fits its width, wrapping cells; piped, it widens to its widest cells.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        sys.stdout.write(format_inventory(devices, width))
    return EXIT_CAPTURE if failures else EXIT_OK


def _checked(docs: list, as_json: bool) -> list[dict]:
    """What a sensor (or whatever answers at its address) sent, kept only where it is a device document: as sent
    for --json, normalised for the table, which would otherwise trip over a missing or mistyped field."""
    from sensor.report.sources import clean_doc  # the report's checker: one definition of a valid document

    checked = [(doc, cleaned) for doc in docs if (cleaned := clean_doc(doc)) is not None]
    return [doc if as_json else cleaned for doc, cleaned in checked]


def _address_key(device: dict) -> tuple:
    try:
        address = ipaddress.ip_address(device["ip"])
    except (KeyError, TypeError, ValueError):   # a sensor of another version: listed last, not a crash
        return (9, 0, str(device.get("ip")))
    return (address.version, int(address), "")


# ---- the table ------------------------------------------------------------------------------------------------
MAX_SHOWN_DESTINATIONS = 6
MIN_COLUMN = 12


def destination_names(device: dict) -> list[str]:
    """The device's outside destinations by name (address when unnamed), most bytes first, each name once."""
    ranked = sorted(device.get("external_destinations", []), key=lambda e: -e["bytes"])
    return list(dict.fromkeys(e["name"] or e["ip"] for e in ranked))


def _identity_text(device: dict) -> str:
    identity = device["identity"]
    values = [identity.get(k) for k in ("model", "firmware", "server", "dhcp_hostname")]
    return " ".join(dict.fromkeys(v for v in values if v)) or "-"


def _countries_text(device: dict) -> str:
    countries = device.get("destination_countries", [])[:4]
    return ", ".join(f"{c['country']} {byte_size(c['bytes'])}" for c in countries) or "-"


def _destinations_text(device: dict) -> str:
    names = destination_names(device)
    more = len(names) - MAX_SHOWN_DESTINATIONS
    return ", ".join(names[:MAX_SHOWN_DESTINATIONS]) + (f" (+{more} more)" if more > 0 else "") or "-"


# (header, cell, whether the column may give way and wrap). Addresses are one per line, the primary first; a MAC,
# a role or a covered flag is never broken.
COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("IP", lambda d: "\n".join(d.get("addresses") or [d["ip"]]), False),
    ("MAC", lambda d: d["mac"] or "-", False),
    ("MANUFACTURER", lambda d: d["vendor"] or "-", True),
    ("COVERED", lambda d: f"yes ({d['maker']}, {d['covered_basis']})" if d["covered"] else "no", True),
    ("ROLE", lambda d: d["role"], False),
    ("MODEL/FIRMWARE", _identity_text, True),
    ("EXTERNAL DESTINATIONS", _destinations_text, True),
    ("COUNTRIES", _countries_text, True),
]


def _column_widths(cells: list[list[list[str]]], total: int | None) -> list[int]:
    """Each column as wide as its widest line; when the row is wider than `total` (the terminal), the widest
    columns that may give way do (to no less than MIN_COLUMN) and their cells wrap: nothing is cut."""
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(COLUMNS))]
    if total is None:
        return widths
    budget = total - 2 * (len(widths) - 1)
    while sum(widths) > budget:
        flexible = [i for i, (_h, _g, wraps) in enumerate(COLUMNS) if wraps and widths[i] > MIN_COLUMN]
        if not flexible:
            break   # the table is wider than the terminal: the terminal wraps what is left
        widths[max(flexible, key=widths.__getitem__)] -= 1   # the widest gives way first: widths even out
    return widths


def format_inventory(devices: list[dict], columns: int | None = None) -> str:
    """One row per device; a cell wider than its column goes on over the next lines (never cut)."""
    cells = [[[name] for name, _g, _w in COLUMNS]]
    cells += [[get(d).split("\n") for _h, get, _w in COLUMNS] for d in devices]
    widths = _column_widths(cells, columns)
    lines = []
    for row in cells:
        wrapped = [[piece for line in cell for piece in textwrap.wrap(line, width, break_on_hyphens=False) or [""]]
                   for cell, width in zip(row, widths, strict=True)]
        for k in range(max(len(w) for w in wrapped)):
            parts = [(w[k] if k < len(w) else "").ljust(width) for w, width in zip(wrapped, widths, strict=True)]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


# ---- CSV ---------------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("id", "ip", "addresses", "former_addresses", "mac", "vendor", "covered", "maker", "covered_basis",
               "maker_evidence", "role", "model", "firmware", "server", "dhcp_hostname", "dhcp_vendor_class",
               "first_seen", "last_seen", "packets_sent", "bytes_sent", "public_bytes", "external_destinations")


def _csv_row(d: dict) -> list[object]:
    identity = d["identity"]
    return [d.get("id", d["ip"]), d["ip"], " ".join(d.get("addresses") or [d["ip"]]),
            " ".join(d.get("former_addresses", [])), d["mac"] or "", d["vendor"] or "",
            "yes" if d["covered"] else "no", d["maker"] or "", d["covered_basis"] or "", d["maker_evidence"] or "",
            d["role"], *(identity.get(k, "") for k in ("model", "firmware", "server", "dhcp_hostname",
                                                       "dhcp_vendor_class")),
            _utc(d["first_seen"]), _utc(d["last_seen"]), d["packets_sent"], d["bytes_sent"],
            d["egress_bytes"].get("public", 0), " ".join(destination_names(d))]


def _utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_csv(devices: list[dict], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([safe_cell(cell) for cell in _csv_row(d)] for d in devices)
