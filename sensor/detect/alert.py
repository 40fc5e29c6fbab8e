"""What a detector raises: one alert line, as it is written out (as_dict) and counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensor.detect.services import IncidentService
    from sensor.enrich.geography import Place

SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(slots=True, eq=False, repr=False)
class Alert:
    """One alert: a line of the alert log."""

    ts: float
    sensor: str
    detector: str
    severity: str
    device_ip: str
    device_mac: str | None
    device_vendor: str | None
    dst_ip: str
    dst_port: int | None
    dst_proto: str
    dst_name: str | None
    dst_scope: str
    score: float
    summary: str
    vlan: int = 0
    extra: dict = field(default_factory=dict)
    # The incident's other end when the detector knows better than the destination does (a sweep of many hosts);
    # None: the framework names it (sensor.detect.services). Not written: the line's `service` says it.
    service: IncidentService | None = None
    # Where the destination is and whose network it is (sensor.enrich.geography), set by the framework for every
    # detection; None when nothing is known (a private address). Written as destination.country, .asn, .org.
    place: Place | None = None

    def as_dict(self) -> dict:
        place = self.place
        out = {
            "ts": round(self.ts, 6),
            "sensor": self.sensor,
            "detector": self.detector,
            "severity": self.severity,
            "device": {"ip": self.device_ip, "mac": self.device_mac, "vendor": self.device_vendor},
            "destination": {"ip": self.dst_ip, "port": self.dst_port, "proto": self.dst_proto,
                            "name": self.dst_name, "scope": self.dst_scope,
                            "country": place.country if place else None, "asn": place.asn if place else None,
                            "org": place.org if place else None},
            "score": round(self.score, 4),
            "summary": self.summary,
            "vlan": self.vlan,
        }
        out.update(self.extra)
        return out
