"""sensor/cli/inventory.py: the table (wraps, never cuts, each name once, every address), the CSV (stable columns,
one row per device, safe from spreadsheet formulas) and the JSON held to docs/inventory.schema.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from sensor.cli.inventory import CSV_COLUMNS, format_inventory, write_csv
from sensor.config import parse_config
from sensor.pipeline import Sensor

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "inventory.schema.json"
LONG_SERVER = "Hikvision-Webs " + "x" * 150 + " tail-of-the-banner"


def _device(ip="10.20.0.5", **kw) -> dict:
    doc = {"id": ip, "ip": ip, "addresses": [ip], "former_addresses": [], "mac": "c0:56:e3:00:00:01",
           "vendor": "Hangzhou Hikvision Digital Technology Co.,Ltd.", "covered": True, "maker": "Hikvision",
           "covered_basis": "named", "maker_evidence": "mac", "role": "camera", "identity": {},
           "first_seen": 1_700_000_000.25, "last_seen": 1_700_000_100.0, "packets_sent": 3, "bytes_sent": 300,
           "egress_bytes": {"public": 200}, "dns_queries": [], "external_destinations": [],
           "maker_evidence_items": [{"source": "oui", "detail": "MAC prefix Hikvision", "maker": "Hikvision",
                                     "weight": 3}],
           "maker_note": None, "module": None, "outbound_series": {"bucket_seconds": 300, "points": [[1.7e9, 200]]},
           "destination_countries": [{"country": "CN", "bytes": 200, "destinations": 1}], "destination_owners": []}
    doc.update(kw)
    return doc


def test_the_table_lists_each_name_once_and_every_address():
    dests = [{"ip": "203.0.113.1", "name": "a.example", "bytes": 500}, {"ip": "203.0.113.2", "name": "a.example",
             "bytes": 400}, {"ip": "203.0.113.3", "name": None, "bytes": 10}]
    table = format_inventory([_device(addresses=["10.20.0.5", "2001:db8::5", "fe80::5"], external_destinations=dests)])
    assert table.count("a.example") == 1 and "203.0.113.3" in table
    lines = table.splitlines()
    assert lines[1].startswith("10.20.0.5 ") and lines[2].startswith("2001:db8::5") and lines[3].startswith("fe80::5")


def test_a_long_cell_wraps_within_the_terminal_and_nothing_is_cut():
    table = format_inventory([_device(identity={"server": LONG_SERVER})], columns=120)
    assert all(len(line) <= 120 for line in table.splitlines())
    assert "COUNTRIES" in table.splitlines()[0]
    header, *rows = table.splitlines()
    start, end = header.index("MODEL/FIRMWARE"), header.index("EXTERNAL")
    column = "".join(line[start:end].replace(" ", "") for line in rows)
    assert len(rows) > 5 and column == LONG_SERVER.replace(" ", "")   # every character, in order, none cut
    widened = format_inventory([_device(identity={"server": LONG_SERVER})])   # piped: one line per device
    assert len(widened.splitlines()) == 2 and LONG_SERVER in widened


def test_csv_has_its_documented_columns_one_row_per_device_and_no_formulas():
    devices = [_device(identity={"dhcp_hostname": "=HYPERLINK(\"http://evil\")", "model": "+1-555",
                                 "server": "@SUM(A1)", "firmware": "-2+3"}),
               _device("10.20.0.6", addresses=["10.20.0.6", "2001:db8::6"], former_addresses=["10.20.0.60"],
                       external_destinations=[{"ip": "203.0.113.1", "name": "a.example", "bytes": 5},
                                              {"ip": "203.0.113.2", "name": "a.example", "bytes": 4}])]
    out = io.StringIO()
    write_csv(devices, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["dhcp_hostname"] == "'=HYPERLINK(\"http://evil\")" and first["model"] == "'+1-555"
    assert first["server"] == "'@SUM(A1)" and first["firmware"] == "'-2+3"
    assert first["first_seen"] == "2023-11-14T22:13:20.250000Z" and first["covered"] == "yes"
    second = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert second["addresses"] == "10.20.0.6 2001:db8::6" and second["former_addresses"] == "10.20.0.60"
    assert second["external_destinations"] == "a.example"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows[1:] for cell in row)


# ---- the schema: a small checker of the JSON Schema keywords docs/inventory.schema.json uses (jsonschema is not a
# dependency), then real output held to it ------------------------------------------------------------------------
_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None), "array": list,
          "object": dict}


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _is(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def check(value, schema: dict, root: dict, where: str = "$") -> list[str]:
    schema = _resolve(schema, root)
    errors: list[str] = []
    types = schema.get("type")
    if types is not None and not any(_is(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{where}: {type(value).__name__} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: below {schema['minimum']}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)) or len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: {len(value)} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += check(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        errors += [f"{where}: no {key}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += check(item, properties[key], root, f"{where}.{key}")
            elif isinstance(extra, dict):
                errors += check(item, extra, root, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected {key}")
    return errors


def test_the_checker_rejects_what_the_schema_forbids():
    root = json.loads(SCHEMA.read_text())
    assert check([_device()], root, root) == []
    bad = _device(covered="yes", packets_sent=-1, identity={"model": 3}, covered_basis="vibes")
    del bad["first_seen"]
    errors = check([bad], root, root)
    assert any("no first_seen" in e for e in errors) and any(".covered" in e for e in errors)
    assert any(".packets_sent" in e for e in errors) and any(".identity.model" in e for e in errors)
    assert any(".covered_basis" in e for e in errors)


@pytest.mark.parametrize("capture", ["real/iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap",
                                     "synthetic/camera_site.pcap", "synthetic/links/ethernet.pcap"])
def test_real_inventory_output_follows_the_documented_schema(capture):
    from sensor.cli.loop import replay_into
    pcaps = Path(__file__).resolve().parents[2] / "pcaps"
    sensor = Sensor(parse_config({}))
    replay_into(sensor, [str(pcaps / capture)])
    devices = json.loads(json.dumps(sensor.inventory_snapshot()))
    root = json.loads(SCHEMA.read_text())
    assert devices and check(devices, root, root) == []
    assert set(root["$defs"]["device"]["required"]) <= set(devices[0])
