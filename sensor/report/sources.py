"""Where a report's devices come from: capture files (replayed through the sensor), sensors' state databases (read
only) and running sensors' /inventory endpoints, plus alert logs. Everything here is normalised into DeviceRecord,
whatever the source, so ranking and rendering never see a source's quirks.

A state database or an /inventory answer is outside camwatch's control (a row damaged by hand, a proxy in front of
the sensor): each document is checked field by field, and one that cannot be read is skipped and counted, never
allowed to stop the report or to smuggle a non-string into the templates.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import math
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sensor.config import Config
from sensor.dissect import printable
from sensor.errors import CamwatchError
from sensor.export.client import SensorAccess, fetch_country_series, fetch_inventory
from sensor.state import COUNTRY_SERIES_KEY

MAX_TEXT = 512            # longer strings from the wire are cut: a report is for people, not a dump
MAX_ALERT_LINE = 1 << 20  # an alert line is a few hundred bytes; a megabyte is not one
LABELLED = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


@dataclass
class Incident:
    """An alert line, or an episode from a state database (no severity or summary there)."""
    detector: str
    first: float
    last: float
    destination: str
    severity: str | None = None
    summary: str | None = None
    service: str | None = None
    packets: int | None = None
    bytes: int | None = None


@dataclass
class DeviceRecord:
    site: str
    doc: dict[str, Any]
    alerts: list[Incident] = field(default_factory=list)
    episodes: list[Incident] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return str(self.doc["ip"])


@dataclass
class Estate:
    devices: list[DeviceRecord] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)   # captures not read to their end: the report still comes
    skipped: int = 0                                     # documents or lines that could not be read
    # bytes sent outside by destination country over time, every input summed: {country label: [(start, bytes)]}
    country_series: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def window(self) -> tuple[float, float] | None:
        times = [t for d in self.devices for t in (d.doc["first_seen"], d.doc["last_seen"]) if t is not None]
        return (min(times), max(times)) if times else None


def split_label(value: str) -> tuple[str | None, str]:
    """`site-a=/var/lib/camwatch/state.db` -> ("site-a", path); without a label, (None, value)."""
    found = LABELLED.match(value)
    if found and "/" not in found.group(1) and ":" not in found.group(1):
        return found.group(1), found.group(2)
    return None, value


# ---- checking documents --------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None or not isinstance(value, (str, int, float)):
        return None
    return printable(str(value)[:MAX_TEXT])


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else 0


def _destinations(value: Any) -> list[dict[str, Any]]:
    out = []
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, dict) and _valid_ip(entry.get("ip")):
            out.append({"ip": str(entry["ip"]), "name": _text(entry.get("name")), "bytes": _count(entry.get("bytes"))})
    return out


def _valid_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _of_type(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) else kind()


def clean_doc(doc: Any) -> dict[str, Any] | None:
    """An inventory document as sensor.enrich's Device.as_dict writes it, or None when it is not one."""
    if not isinstance(doc, dict) or not _valid_ip(doc.get("ip")):
        return None
    identity = _of_type(doc.get("identity"), dict)
    egress = _of_type(doc.get("egress_bytes"), dict)
    queries = _of_type(doc.get("dns_queries"), list)
    return {
        "ip": str(doc["ip"]), "id": _text(doc.get("id")) or str(doc["ip"]),
        "addresses": [str(a) for a in _of_type(doc.get("addresses"), list)[:MAX_ADDRESSES] if _valid_ip(a)],
        "former_addresses": [str(a) for a in _of_type(doc.get("former_addresses"), list)[:MAX_ADDRESSES]
                             if _valid_ip(a)],
        "mac": _text(doc.get("mac")), "vendor": _text(doc.get("vendor")),
        "covered": doc.get("covered") is True, "maker": _text(doc.get("maker")),
        "covered_basis": _text(doc.get("covered_basis")), "maker_evidence": _text(doc.get("maker_evidence")),
        "maker_note": _text(doc.get("maker_note")), "module": _text(doc.get("module")),
        "maker_evidence_items": _maker_items(doc.get("maker_evidence_items")),
        "role": _text(doc.get("role")) or "other",
        "identity": {(_text(k) or "")[:64]: t for k, v in identity.items() if (t := _text(v)) is not None},
        "first_seen": _number(doc.get("first_seen")), "last_seen": _number(doc.get("last_seen")),
        "packets_sent": _count(doc.get("packets_sent")), "bytes_sent": _count(doc.get("bytes_sent")),
        "egress_bytes": {(_text(k) or "")[:32]: _count(v) for k, v in egress.items()},
        "dns_queries": [t for q in queries[:256] if (t := _text(q)) is not None],
        "external_destinations": _destinations(doc.get("external_destinations")),
        "outbound": _series(doc.get("outbound_series")),
        "destination_countries": _places(doc.get("destination_countries"), ("country",)),
        "destination_owners": _places(doc.get("destination_owners"), ("org", "country")),
    }


MAX_PLACES = 256   # countries (fewer than 250) or owners per device


def _places(value: Any, texts: tuple[str, ...]) -> list[dict[str, Any]]:
    """destination_countries / destination_owners entries: their text fields cleaned, counts counted."""
    out = []
    for entry in _of_type(value, list)[:MAX_PLACES]:
        if isinstance(entry, dict):
            place: dict[str, Any] = {key: _text(entry.get(key)) for key in texts}
            if "org" in texts:
                asn = _number(entry.get("asn"))
                place["asn"] = int(asn) if asn is not None and asn >= 0 else None
            place.update(bytes=_count(entry.get("bytes")), destinations=_count(entry.get("destinations")))
            out.append(place)
    return out


MAX_ADDRESSES = 16   # a box has a handful (the sensor keeps 8 current and 8 former)
MAX_MAKER_ITEMS = 32  # the sensor keeps 16


def _maker_items(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in _of_type(value, list)[:MAX_MAKER_ITEMS]:
        if isinstance(item, dict) and (source := _text(item.get("source"))) and (detail := _text(item.get("detail"))):
            out.append({"source": source[:32], "detail": detail, "maker": _text(item.get("maker")),
                        "weight": _count(item.get("weight"))})
    return out


MAX_SERIES_POINTS = 288 * 2   # the sensor keeps 288; a hand-made document gets no more than twice that


def _series(value: Any) -> list[tuple[float, int]]:
    """Device.as_dict's outbound_series points: (bucket start, bytes), finite, non-negative, in time order."""
    points = value.get("points") if isinstance(value, dict) else None
    out = []
    for entry in points[:MAX_SERIES_POINTS] if isinstance(points, list) else []:
        if isinstance(entry, list) and len(entry) == 2:
            start, nbytes = _number(entry[0]), _count(entry[1])
            if start is not None and start >= 0 and nbytes:
                out.append((start, nbytes))
    return sorted(out)


def _add_docs(estate: Estate, site: str, docs: Any) -> dict[str, DeviceRecord]:
    added: dict[str, DeviceRecord] = {}
    for raw in docs if isinstance(docs, list) else []:
        doc = clean_doc(raw)
        if doc is None:
            estate.skipped += 1
            continue
        record = DeviceRecord(site, doc)
        estate.devices.append(record)
        added[doc["id"]] = record
    # Episodes name their device by its id (stable through renumbering); a database older than that, by the address
    # it had then: an id wins over another device's current address.
    for record in list(added.values()):
        added.setdefault(record.ip, record)
    return added


# ---- state databases -----------------------------------------------------------------------------------------
def _open_readonly(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise CamwatchError(f"{path}: no such state database" if not Path(path).exists()
                            else f"{path}: not a regular file")
    # mode=ro never creates or changes anything; a database on a read-only disk needs immutable=1 to be read at all
    last: sqlite3.Error | None = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"file:{quote(path)}?{mode}", uri=True)
            db.execute("SELECT doc FROM inventory LIMIT 1").fetchall()
            db.execute("SELECT key, first, last, packets, bytes FROM episode LIMIT 1").fetchall()
            return db
        except sqlite3.Error as exc:
            last = exc
    raise CamwatchError(f"{path}: not a camwatch state database ({last})")


def _episode(key: Any, first: Any, last: Any, packets: Any, nbytes: Any) -> tuple[str, Incident] | None:
    try:
        parts = json.loads(key)
    except (TypeError, ValueError, RecursionError):
        return None
    if (not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, (str, int)) for p in parts)
            or _number(first) is None or _number(last) is None):
        return None
    # Keys are (detector, device, destination-ish...): vendor_cloud's third part is the service it recognised.
    detector, device, rest = str(parts[0]), str(parts[1]), [_text(p) or "" for p in parts[2:]]
    service = rest.pop(0) if detector == "vendor_cloud" and rest else None
    return device, Incident((_text(detector) or "")[:64], float(first), float(last), " ".join(rest)[:MAX_TEXT],
                            service=service, packets=_count(packets), bytes=_count(nbytes))


MAX_COUNTRY_LABELS = 256


def _stored_country_series(db: sqlite3.Connection) -> object:
    """The sensor's bytes by country over time as its state database keeps them (absent from older databases)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (COUNTRY_SERIES_KEY,)).fetchone()
    try:
        return json.loads(row[0]) if row else None
    except (TypeError, ValueError, RecursionError):
        return None


def _add_country_series(estate: Estate, doc: object) -> None:
    """One sensor's bytes by country over time ({label: ByteSeries state}, from its database or /countries),
    summed into the estate's by label; whatever is not that shape is skipped."""
    if not isinstance(doc, dict):
        return
    for label, points in list(doc.items())[:MAX_COUNTRY_LABELS]:
        name = (_text(label) or "")[:16]
        cleaned = _series({"points": points})
        if name and cleaned:
            merged = dict(estate.country_series.get(name, []))
            for start, nbytes in cleaned:
                merged[start] = merged.get(start, 0) + nbytes
            estate.country_series[name] = sorted(merged.items())


def _restored(docs: list[Any], config: Config) -> list[dict[str, Any]]:
    """Rows as the sensor stores them (MAC as an integer, no maker) made into inventory documents by the sensor's
    own restore, so maker, covered flag and role are derived exactly as a running sensor derives them."""
    from sensor.enrich import CoveredMakers, Inventory

    inventory = Inventory(config, _manuf(), CoveredMakers.load())
    inventory.restore(docs)
    return [device.as_dict() for device in inventory.devices.values()]


@functools.cache
def _manuf() -> Any:
    from sensor.enrich import ManufDatabase

    return ManufDatabase.load()


def read_state(path: str, site: str, estate: Estate, config: Config) -> None:
    db = _open_readonly(path)
    try:
        docs = []
        for (text,) in db.execute("SELECT doc FROM inventory"):
            try:
                docs.append(json.loads(text))
            except (TypeError, ValueError, RecursionError):
                estate.skipped += 1
        added = _add_docs(estate, site, _restored(docs, config))
        _add_country_series(estate, _stored_country_series(db))
        for row in db.execute("SELECT key, first, last, packets, bytes FROM episode"):
            found = _episode(*row)
            if found is None:
                estate.skipped += 1
            elif found[0] in added:
                added[found[0]].episodes.append(found[1])
    except sqlite3.Error as exc:
        raise CamwatchError(f"{path}: cannot read the state database: {exc}") from None
    finally:
        db.close()
    estate.inputs.append(f"state database {path} (site {site})")


# ---- running sensors -----------------------------------------------------------------------------------------
def read_url(url: str, site: str, estate: Estate, access: SensorAccess) -> None:
    docs = fetch_inventory(url, access)
    _add_docs(estate, site, docs)
    _add_country_series(estate, fetch_country_series(url, access))
    estate.inputs.append(f"running sensor {url.rstrip('/')}/inventory (site {site}; its /inventory carries no "
                         f"alerts: see --alerts)")


# ---- capture files -------------------------------------------------------------------------------------------
def read_pcaps(paths: list[str], config: Config, estate: Estate) -> None:
    """Replays the captures through the sensor into a throwaway state database, so captures yield exactly what a
    sensor's own database would (inventory and episodes), plus the alert lines it wrote."""
    # the CLI's loop, imported late: the report's other inputs need none of it
    from sensor.cli.loop import replay_into
    from sensor.pipeline import Sensor

    alerts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="camwatch-report-") as tmp:
        db = str(Path(tmp) / "state.db")
        replayed = dataclasses.replace(config, state=dataclasses.replace(config.state, path=db))
        sensor = Sensor(replayed, on_alert=lambda alert: alerts.append(alert.as_dict()))
        estate.failures += replay_into(sensor, paths)
        site = config.sensor_name
        read_state(db, site, estate, config)
        estate.inputs.pop()   # the throwaway database is not an input
    estate.inputs.append(f"captures {', '.join(paths)} replayed as site {site}")
    add_alerts(estate, alerts, source=None)


# ---- alert logs ----------------------------------------------------------------------------------------------
def alert_incident(line: Any) -> tuple[str, str | None, Incident] | None:
    """(device ip, sensor name, finding) from one alert line of contract 1 (one line per detector episode), or
    None."""
    if not isinstance(line, dict) or not isinstance(line.get("device"), dict):
        return None
    device = line["device"]
    ts = _number(line.get("ts"))
    if not _valid_ip(device.get("ip")) or ts is None or not isinstance(line.get("detector"), str):
        return None
    return str(device["ip"]), _text(line.get("sensor")), Incident(
        (_text(line["detector"]) or "")[:64], ts, ts, _destination(line), severity=_text(line.get("severity")),
        summary=_text(line.get("summary")), service=_text(line.get("service")))


def _destination(line: dict) -> str:
    dest = _of_type(line.get("destination"), dict)
    where = _text(dest.get("name")) or _text(dest.get("ip")) or ""
    port = dest.get("port") if isinstance(dest.get("port"), int) else None
    return (f"{where} {_text(dest.get('proto')) or ''}/{port}" if port is not None else where).strip()


def incident_findings(lines: list[dict]) -> list[Incident]:
    """What one incident's lines (contract 2: open, updates, close) say each of its detectors found: one finding
    per detector, its strongest evidence, over the incident's whole span."""
    told = [a for a in lines if a.get("event") in ("open", "update")] or lines
    last, lead = lines[-1], told[-1]
    totals = _of_type(last.get("totals"), dict)
    times = [t for a in lines if (t := _number(a.get("ts"))) is not None]
    if not times:
        return []   # no line of it says when: not a finding anyone could place
    first = _number(totals.get("first_seen")) or min(times)
    until = _number(totals.get("last_seen")) or max(times)
    service = _of_type(last.get("service"), dict)
    vendor = _text(service.get("id")) if service.get("kind") == "vendor" else None
    out: dict[str, Incident] = {}
    for e in _of_type(last.get("evidence"), list):
        if not isinstance(e, dict) or not isinstance(e.get("detector"), str) or e["detector"] in out:
            continue
        detector = (_text(e["detector"]) or "")[:64]
        leads = detector == lead.get("detector")
        out[detector] = Incident(detector, first, until, _destination(lead) if leads else _text(e.get("text")) or "",
                                 severity=_text(e.get("severity")), summary=_text(lead.get("summary")),
                                 service=vendor, packets=_count(totals.get("packets_out")),
                                 bytes=_count(totals.get("bytes_out")))
    return list(out.values())


def add_alerts(estate: Estate, lines: list[Any], source: str | None) -> None:
    """Alerts go to the device with that address; with several sites, to the one whose name the line carries.
    Lines of contract 2 are read per incident (its open, updates and close together)."""
    by_ip: dict[str, list[DeviceRecord]] = {}
    for record in estate.devices:
        by_ip.setdefault(record.ip, []).append(record)
    incidents: dict[str, list[dict]] = {}
    for line in lines:
        if isinstance(line, dict) and line.get("contract") == 2 and isinstance(line.get("incident"), str):
            incidents.setdefault(line["incident"], []).append(line)
            continue
        found = alert_incident(line)
        if found is None or not _file(by_ip, *found):
            estate.skipped += 1
    for told in incidents.values():
        head = told[0]
        device = _of_type(head.get("device"), dict)
        findings = incident_findings(told)
        if not findings or not _valid_ip(device.get("ip")) or not all(
                _file(by_ip, str(device["ip"]), _text(head.get("sensor")), f) for f in findings):
            estate.skipped += len(told)
    if source:
        estate.inputs.append(f"alert log {source}")


def _file(by_ip: dict[str, list[DeviceRecord]], ip: str, sensor_name: str | None, finding: Incident) -> bool:
    candidates = by_ip.get(ip, [])
    if not candidates:
        return False
    chosen = next((r for r in candidates if r.site == sensor_name), candidates[0])
    chosen.alerts.append(finding)
    return True


def read_alert_file(path: str, estate: Estate) -> None:
    lines: list[Any] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for text in fh:
                if not text.strip():
                    continue
                try:
                    lines.append(json.loads(text[:MAX_ALERT_LINE]))
                except (ValueError, RecursionError):
                    estate.skipped += 1
    except FileNotFoundError:
        raise CamwatchError(f"{path}: no such alert log") from None
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot read the alert log: {exc.strerror or exc}") from None
    add_alerts(estate, lines, source=path)
