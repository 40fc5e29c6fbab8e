"""The removal list's ranking rule (docs/report.md, "Ranking"; tests/e2e/test_report.py holds it to that text).

Covered devices only. Each is checked for six findings, in this order of weight:

1. video_egress   - video leaving the site (a video_egress alert or episode)
2. vendor_cloud   - vendor-cloud or P2P registration (a vendor_cloud alert or episode: lookup or connection)
3. watched        - sends to a watched jurisdiction (`[policy] watch_countries`: a jurisdiction alert or episode,
                    or bytes to a destination whose country is on the list)
4. core_contact   - contact with a core network (a segmentation alert or episode, or bytes sent to `core` scope)
5. internet       - reaches the public Internet (bytes sent to `public` scope, or an egress_policy alert/episode)
6. sensitive_site - sits on a site marked `sensitive = true` in `[sites.<name>]`

Devices with any of findings 1-5 ("acting") come first; the rest, whatever their site, at the bottom. Within each
group devices compare finding by finding, in the order above (lexicographically: one with video egress outranks
every one without, whatever else either does), then by covered basis (`named`, `prc-nil`, `oem`, `behaviour`),
then by bytes sent to the public Internet (more first), then by site and address for a stable order.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from .sites import Site
from .sources import DeviceRecord, Incident

FINDINGS = ("video_egress", "vendor_cloud", "watched", "core_contact", "internet", "sensitive_site")
ACTING = FINDINGS[:5]
LABELS = {
    "video_egress": "video leaving the site",
    "vendor_cloud": "vendor-cloud / P2P registration",
    "watched": "sends to a watched jurisdiction",
    "core_contact": "contact with a core network",
    "internet": "reaches the public Internet",
    "sensitive_site": "on a sensitive site",
}
BASIS_ORDER = {"named": 0, "prc-nil": 1, "oem": 2, "behaviour": 3}
MAX_EVIDENCE = 4   # per finding: the rest is on the device's card


def utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


@dataclass
class Ranked:
    record: DeviceRecord
    findings: dict[str, list[str]] = field(default_factory=dict)   # finding -> evidence lines
    site: Site | None = None
    rank: int = 0

    @property
    def acting(self) -> bool:
        return any(f in self.findings for f in ACTING)

    def key(self) -> tuple:
        doc = self.record.doc
        address = ipaddress.ip_address(doc["ip"])
        return (not self.acting, *(f not in self.findings for f in FINDINGS),
                BASIS_ORDER.get(doc["covered_basis"] or "", len(BASIS_ORDER)), -doc["egress_bytes"].get("public", 0),
                self.record.site, address.version, address)


def _incidents(record: DeviceRecord, detector: str) -> list[Incident]:
    """The alert lines of that detector; a state database has none, only its episodes."""
    found = [i for i in record.alerts if i.detector == detector] or [
        i for i in record.episodes if i.detector == detector]
    return sorted(found, key=lambda i: i.first)


def _incident_evidence(incidents: list[Incident]) -> list[str]:
    lines = []
    for i in incidents[:MAX_EVIDENCE]:
        amount = f", {i.bytes:,} bytes" if i.bytes else ""
        what = f"{i.severity} " if i.severity else ""
        lines.append(f"{i.detector} {what}{'alert' if i.summary is not None else 'episode'} at {utc(i.first)}: "
                     f"{': '.join(filter(None, (i.service, i.destination)))}{amount}")
    return lines


def evaluate(record: DeviceRecord, sites: tuple[Site, ...], watch: frozenset[str] = frozenset()) -> Ranked:
    doc, ranked = record.doc, Ranked(record)
    for finding, detector in (("video_egress", "video_egress"), ("vendor_cloud", "vendor_cloud")):
        if found := _incidents(record, detector):
            ranked.findings[finding] = _incident_evidence(found)
    if watched := _watched(record, watch):
        ranked.findings["watched"] = watched
    core = _incident_evidence(_incidents(record, "segmentation"))
    if doc["egress_bytes"].get("core", 0):
        core.insert(0, f"{doc['egress_bytes']['core']:,} bytes sent to core networks")
    if core:
        ranked.findings["core_contact"] = core
    internet = _incident_evidence(_incidents(record, "egress_policy"))
    if public := doc["egress_bytes"].get("public", 0):
        names = [d["name"] or d["ip"] for d in sorted(doc["external_destinations"], key=lambda d: -d["bytes"])]
        shown = ", ".join(names[:MAX_EVIDENCE]) + (f" (+{len(names) - MAX_EVIDENCE} more)" if len(names) > 4 else "")
        internet.insert(0, f"{public:,} bytes sent to the public Internet" + (f": {shown}" if names else ""))
    if internet:
        ranked.findings["internet"] = internet
    ranked.site = next((s for s in sites if s.covers(doc["ip"])), None)
    if ranked.site is not None and ranked.site.sensitive:
        nets = ", ".join(str(n) for n in ranked.site.subnets if ipaddress.ip_address(doc["ip"]) in n)
        ranked.findings["sensitive_site"] = [f"site {ranked.site.name} is marked sensitive ({nets})"]
    return ranked


def _watched(record: DeviceRecord, watch: frozenset[str]) -> list[str]:
    """Evidence of traffic to a watched jurisdiction: the bytes by watched country, then jurisdiction alerts."""
    lines = [f"{c['bytes']:,} bytes sent to {c['destinations']} destination(s) registered or located in {c['country']}"
             for c in record.doc.get("destination_countries", []) if c["country"] in watch and c["bytes"]]
    return lines + _incident_evidence(_incidents(record, "jurisdiction")) if watch else []


def rank(records: list[DeviceRecord], sites: tuple[Site, ...] = (), watch: frozenset[str] = frozenset()
         ) -> list[Ranked]:
    """The removal list: covered devices in the documented order, numbered from 1."""
    ranked = sorted((evaluate(r, sites, watch) for r in records if r.doc["covered"]), key=Ranked.key)
    for number, entry in enumerate(ranked, 1):
        entry.rank = number
    return ranked
