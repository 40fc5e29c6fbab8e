"""Services: what an analyst calls the other end of a camera's traffic, the second half of an incident's key.

In order of preference: the vendor service the indicator file recognises (by name, payload signature or a maker's
port), else the registrable domain of the name seen (DNS answer, TLS SNI, HTTP Host; public-suffix aware, so
`litedev.example.co.uk` and `api.example.co.uk` are one service, `example.co.uk`), else the address itself.
Once an address has been seen as part of a named or recognised service, later traffic to it without a name (a
second flow after the DNS answer expired, a connection without SNI) stays with that service.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from sensor.bounded import BoundedLRU
from sensor.detect.indicators import Indicators
from sensor.enrich import Observation
from sensor.enrich.naming import is_address
from sensor.schema import Values

KIND_VENDOR = "vendor"      # a service of the indicator file
KIND_DOMAIN = "domain"      # the registrable domain of a name seen on the wire
KIND_ADDRESS = "address"    # no name, no signature: the address is all there is
KIND_SITE = "site"          # a detector's own grouping of many peers (a sweep of the VLAN, say)

MAX_NAME = 253              # the longest DNS name; anything longer from the wire is not a name
MAX_REMEMBERED = 1 << 16    # addresses and names remembered: chosen by the wire, so bounded


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class IncidentService(Values):
    """What an incident is about: a vendor service, a domain, an address or a site-wide finding."""

    id: str      # stable key: indicator id, registrable domain, address, or a detector's site-wide id
    name: str    # for people: the indicator's name, the domain, the address
    kind: str

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind}


@functools.lru_cache(maxsize=1 << 12)   # asked for every observation of a bare address: frozen, so shared
def address_service(address: str) -> IncidentService:
    return IncidentService(address, address, KIND_ADDRESS)


class ServiceResolver:
    def __init__(self, indicators: Indicators, suffixes: PublicSuffixList | None = None):
        self.indicators = indicators
        self._suffixes = suffixes   # parsed on first use (~50 ms): many captures name nothing
        self._by_address: BoundedLRU[str, IncidentService] = BoundedLRU(MAX_REMEMBERED)
        self._by_name: BoundedLRU[str, IncidentService] = BoundedLRU(MAX_REMEMBERED)
        self._vendor: dict[str, IncidentService] = {}   # one per service of the indicator file, not of the wire

    def of_observation(self, obs: Observation) -> IncidentService:
        found = self.indicators.match(obs)
        if found is not None:
            svc = found[0]
            service = self._vendor.get(svc.id)
            if service is None or service.name != svc.name:
                service = self._vendor[svc.id] = IncidentService(svc.id, svc.name, KIND_VENDOR)
            return self._remember(obs.peer, service)
        if obs.name:
            named = self.of_name(obs.name)
            if named is not None:
                return self._remember(obs.peer, named)
        return self._by_address.get(obs.peer) or address_service(obs.peer)

    def of_destination(self, address: str, name: str | None) -> IncidentService:
        """For detections that come without a flow (a DNS lookup, an UPnP request, a window the model scored)."""
        named = self.of_name(name) if name else None
        if named is not None:
            return named
        return self._by_address.get(address) or address_service(address)

    def of_name(self, name: str) -> IncidentService | None:
        """The service a DNS name belongs to; None when the wire's string is not a usable host name."""
        known = self._by_name.get(name)
        if known is not None:
            return known
        if not _host_name(name):   # before the indicators' patterns: `*.vendor.com` matches any junk before it
            return None
        svc = self.indicators.by_name(name)
        if svc is not None:
            service = IncidentService(svc.id, svc.name, KIND_VENDOR)
        else:
            domain = self.registrable_domain(name)
            if domain is None:
                return None
            service = IncidentService(domain, domain, KIND_DOMAIN)
        self._by_name.put(name, service)
        return service

    def registrable_domain(self, name: str) -> str | None:
        host = name.strip().rstrip(".").lower()
        if not _host_name(host) or is_address(host):
            return None
        try:
            suffixes = self._suffixes if self._suffixes is not None else _shared_suffix_list()
            return suffixes.privatesuffix(host)
        except (ValueError, IndexError):   # the list's parser on labels no DNS name has
            return None

    def _remember(self, address: str, service: IncidentService) -> IncidentService:
        self._by_address.put(address, service)
        return service


# A host name's label: letters, digits, hyphens inside, underscores (service labels, and names in the wild).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII | re.IGNORECASE)


def _host_name(name: str) -> bool:
    host = name.rstrip(".")
    return 0 < len(host) <= MAX_NAME and all(_LABEL.fullmatch(label) for label in host.split("."))


_SUFFIXES: PublicSuffixList | None = None


def _shared_suffix_list() -> PublicSuffixList:
    """Parsing the list takes ~50 ms; every sensor of the process shares one."""
    global _SUFFIXES
    if _SUFFIXES is None:
        _SUFFIXES = PublicSuffixList()
    return _SUFFIXES
