"""The report as one self-contained HTML file (Jinja2, autoescaped) and as CSV files.

Every string from the wire (DNS names, banners, model strings, vendor names from MAC lookups of forged frames) is
attacker-controlled. HTML: Jinja2's autoescape on every template, charts escaped in charts.py, and a
Content-Security-Policy that forbids scripts, fetches and frames outright, so even a missed escape could not run
anything or call out. CSV: a cell a spreadsheet would read as a formula is neutralised (OWASP's rule).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from sensor import __version__
from sensor.config import Config
from sensor.enrich.geography import Geography
from sensor.enrich.series import BUCKET_SECONDS
from sensor.export.csv_cells import safe_cell
from sensor.reference_data import COVERED_MAKERS_FILE, load_covered_makers
from sensor.units import byte_size

from . import charts
from .ranking import FINDINGS, LABELS, Ranked, rank, utc
from .sites import Site
from .sources import DeviceRecord, Estate

TEMPLATES = Path(__file__).with_name("templates")
# What a passive sensor on a mirror port cannot see; stated in every report.
LIMITS = (
    "Encrypted payloads: what a camera sends inside TLS or a vendor's own encryption is not visible, only where "
    "it goes, when and how much.",
    "Traffic that does not cross the mirrored link: other VLANs, a camera's own 4G/Wi-Fi uplink, and anything "
    "before the sensor started or while it was down.",
    "Intent and configuration: a device that has not yet reached its cloud, or only does so on events, looks "
    "clean until it does; absence of evidence here is not evidence of a safe device.",
    "Hardware and firmware: the maker comes from the MAC address block and what the device announces; an OEM "
    "device sold under another brand with its own MAC block is not recognised as covered.",
    "Destinations behind shared infrastructure (CDNs, cloud providers) are named by DNS/SNI where seen; their country "
    "is where the address block is registered (or, with a MaxMind database, where it is geolocated), not where the "
    "data ends up.",
)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = utc
    env.filters["bytes"] = byte_size
    return env


def _scoper(config: Config) -> Callable[[str], str]:
    """The sensor's own scope rules (sensor.enrich.Classifier), so a card says `public` where the alerts do."""
    from sensor.enrich import Classifier

    classifier = Classifier(config)
    return lambda ip: classifier.address_scope(ipaddress.ip_address(ip))


def _services(record: DeviceRecord) -> dict[str, str]:
    """Destination (name or address) -> the vendor service an alert or episode recognised there."""
    out: dict[str, str] = {}
    for incident in record.alerts + record.episodes:
        if incident.service:
            out.setdefault(incident.destination.split(" ")[0], incident.service)
    return out


def _card(record: DeviceRecord, ranked: Ranked | None, scope: Callable[[str], str],
          window: tuple[float, float] | None, geography: Geography) -> dict:
    services = _services(record)
    destinations = [dict(d, scope=scope(d["ip"]), service=services.get(d["name"] or "", services.get(d["ip"], "")),
                         place=geography.place(d["ip"]))
                    for d in sorted(record.doc["external_destinations"], key=lambda d: -d["bytes"])]
    spans = [(f"{e.detector} {e.destination}", e.first, e.last, e.bytes) for e in record.episodes]
    if not spans:
        spans = [(f"{a.detector} {a.destination}", a.first, a.last, None) for a in record.alerts]
    incidents = sorted(record.alerts or record.episodes, key=lambda i: i.first)
    return {"r": record, "d": record.doc, "ranked": ranked, "destinations": destinations[:50],
            "more_destinations": max(0, len(destinations) - 50), "incidents": incidents[:100],
            "more_incidents": max(0, len(incidents) - 100), "anchor": f"dev-{record.site}-{record.ip}",
            "timeline": charts.timeline(spans, window, "Outbound traffic in alert episodes (UTC)"),
            "activity": charts.activity([("public and core", record.doc["outbound"])], _series_window(window),
                                        "Bytes sent to the public Internet and the core network over time (UTC)")}


def _series_window(window: tuple[float, float] | None) -> tuple[float, float] | None:
    """The traffic window widened to whole sensor buckets: a bucket's bytes are stamped at its start, which can
    precede the first sighting by up to a bucket."""
    if window is None:
        return None
    return (window[0] - window[0] % BUCKET_SECONDS, window[1] - window[1] % BUCKET_SECONDS + BUCKET_SECONDS)


def _data_versions() -> str:
    """The versions of the lists behind the findings, as the report's reader may need to cite them; read by the
    loaders the sensor uses, so the report names the version the sensor would have run with."""
    from importlib.metadata import PackageNotFoundError, version

    from sensor.detect.indicators import Indicators, Resolvers
    from sensor.errors import CamwatchError
    from sensor.reference_data import load_brands

    loaders: dict[str, Callable[[], Any]] = {
        "indicators": Indicators.load, "brands": load_brands, "resolvers": Resolvers.load}
    out = []
    for name, load in loaders.items():
        try:
            out.append(f"{name} {load().version}")
        except CamwatchError:
            out.append(f"{name} ?")
    try:
        out.append(f"iptocc (registry countries) {version('iptocc')}")
    except PackageNotFoundError:
        pass
    return ", ".join(out)


COUNTRY_ROWS = 8   # the countries that received most; the table has them all


def _summary(estate: Estate, ranked: list[Ranked]) -> dict[str, Any]:
    makers: Counter[tuple[str, str, str]] = Counter()
    egress: Counter[str] = Counter()
    scopes: Counter[str] = Counter()
    services: Counter[str] = Counter()
    for record in estate.devices:
        doc = record.doc
        makers[(doc["maker"] or doc["vendor"] or "unknown", "yes" if doc["covered"] else "no",
                doc["covered_basis"] or "-")] += 1
        public = doc["egress_bytes"].get("public", 0)
        egress["covered" if doc["covered"] else "not covered"] += public
        for scope, nbytes in doc["egress_bytes"].items():
            scopes[scope] += nbytes
        clouds = {i.service for i in record.alerts + record.episodes if i.service and i.detector == "vendor_cloud"}
        for service in clouds:
            services[service] += 1
    counts = {f: sum(1 for r in ranked if f in r.findings) for f in FINDINGS}
    countries: dict[str, list[int]] = {}   # country -> [bytes, devices, covered devices]
    for record in estate.devices:
        for c in record.doc["destination_countries"]:
            entry = countries.setdefault(c["country"] or "?", [0, 0, 0])
            entry[0] += c["bytes"]
            entry[1] += 1
            entry[2] += 1 if record.doc["covered"] else 0
    over_time = [(label, [p for r in estate.devices if r.doc["covered"] is covered for p in r.doc["outbound"]])
                 for label, covered in (("covered", True), ("not covered", False))]
    reach = sum(1 for r in estate.devices if r.doc["egress_bytes"].get("public", 0))
    return {"makers": sorted(makers.items(), key=lambda kv: (-kv[1], kv[0])), "counts": counts,
            "devices": len(estate.devices), "covered": sum(1 for r in estate.devices if r.doc["covered"]),
            "relabelled": sum(1 for r in estate.devices if r.doc["covered_basis"] in ("oem", "behaviour")),
            "internet": reach, "services": sorted(services.items(), key=lambda kv: (-kv[1], kv[0])),
            "scope_chart": charts.bar_chart(sorted(scopes.items()), "Bytes sent by destination scope (all devices)"),
            "service_chart": charts.bar_chart(sorted(services.items()), "Devices per vendor cloud / P2P service",
                                              unit="devices"),
            "egress_chart": charts.bar_chart(sorted(egress.items()),
                                             "Bytes sent to the public Internet: covered vs not covered"),
            "countries": sorted(((c, *v) for c, v in countries.items()), key=lambda row: (-row[1], row[0])),
            "country_chart": charts.bar_chart([(c, v[0]) for c, v in countries.items()],
                                              "Bytes sent by destination country (registry or geolocated)"),
            "countries_over_time": charts.activity(
                sorted(estate.country_series.items(), key=lambda kv: -sum(n for _, n in kv[1]))[:COUNTRY_ROWS],
                _series_window(estate.window()), "Bytes sent outside by destination country over time (UTC)"),
            "egress_over_time": charts.activity(over_time, _series_window(estate.window()),
                                                "Bytes sent to the public Internet and the core network over time "
                                                "(UTC): covered vs not covered")}


def context(estate: Estate, sites: tuple[Site, ...], config: Config) -> dict[str, Any]:
    ranked, scope = rank(estate.devices, sites, frozenset(config.watch_countries)), _scoper(config)
    by_record = {id(r.record): r for r in ranked}
    window = estate.window()
    order = [r.record for r in ranked] + sorted(
        (d for d in estate.devices if not d.doc["covered"]),
        key=lambda d: (d.site, ipaddress.ip_address(d.ip).version, ipaddress.ip_address(d.ip)))
    geography = Geography.from_config(config.geo.asn_database, config.geo.country_database)
    return {"version": __version__, "covered_list": load_covered_makers(COVERED_MAKERS_FILE).version,
            "data_lists": _data_versions(),
            "generated": utc(time.time()), "estate": estate, "window": window, "ranked": ranked,
            "labels": LABELS, "findings": FINDINGS, "summary": _summary(estate, ranked), "limits": LIMITS,
            "sites": sites, "cards": [_card(d, by_record.get(id(d)), scope, window, geography) for d in order],
            "watch": ", ".join(config.watch_countries) or "none (switched off)",
            "owners_known": geography.has_owners}


def render_html(ctx: dict[str, Any]) -> str:
    # The one stylesheet is allowed by its hash rather than 'unsafe-inline': nothing injected could add styles.
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return environment().get_template("report.html.j2").render(ctx, style=Markup(css), style_hash=f"sha256-{digest}")


# ---- CSV -----------------------------------------------------------------------------------------------------
def _csv_time(ts: float | None) -> str:
    return utc(ts) if ts is not None else ""


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([safe_cell(c) for c in row] for row in rows)


CSV_FILES = ("removal.csv", "inventory.csv")   # what write_csv writes in its directory


def write_csv(ctx: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    removal, inventory = (directory / name for name in CSV_FILES)
    _write_csv(removal, ["rank", "site", "ip", "mac", "maker", "covered_basis", "role", "model", "firmware",
                         *FINDINGS, "reasons", "evidence", "public_bytes"],
               [[r.rank, r.record.site, r.record.ip, r.record.doc["mac"] or "", r.record.doc["maker"] or "",
                 r.record.doc["covered_basis"] or "", r.record.doc["role"],
                 r.record.doc["identity"].get("model", ""), r.record.doc["identity"].get("firmware", ""),
                 *("yes" if f in r.findings else "no" for f in FINDINGS),
                 "; ".join(LABELS[f] for f in FINDINGS if f in r.findings),
                 " | ".join(e for f in FINDINGS for e in r.findings.get(f, [])),
                 r.record.doc["egress_bytes"].get("public", 0)] for r in ctx["ranked"]])
    _write_csv(inventory, ["site", "ip", "mac", "vendor", "covered", "maker", "covered_basis", "maker_evidence",
                           "role", "model", "firmware", "server", "first_seen", "last_seen", "bytes_sent",
                           "public_bytes", "core_bytes", "external_destinations", "destination_countries"],
               [[d.site, d.ip, d.doc["mac"] or "", d.doc["vendor"] or "", "yes" if d.doc["covered"] else "no",
                 d.doc["maker"] or "", d.doc["covered_basis"] or "", d.doc["maker_evidence"] or "", d.doc["role"],
                 d.doc["identity"].get("model", ""), d.doc["identity"].get("firmware", ""),
                 d.doc["identity"].get("server", ""), _csv_time(d.doc["first_seen"]), _csv_time(d.doc["last_seen"]),
                 d.doc["bytes_sent"], d.doc["egress_bytes"].get("public", 0), d.doc["egress_bytes"].get("core", 0),
                 " ".join(e["name"] or e["ip"] for e in d.doc["external_destinations"]),
                 " ".join(f"{c['country']}:{c['bytes']}" for c in d.doc["destination_countries"])]
                for d in (c["r"] for c in ctx["cards"])])
    return [removal, inventory]
