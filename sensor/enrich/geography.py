"""Where a destination is and whose network it is: country, autonomous system and its organisation.

Two sources, both offline:

- The registry country, always: the country a Regional Internet Registry (AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC)
  recorded for the holder of the address block, from the RIRs' delegation statistics embedded in the `iptocc` wheel.
  It says where the block's holder registered it, not where the server stands: a Chinese operator's block serves
  from Frankfurt as "CN", a US cloud's block in Hong Kong as "US". For the directive's concern (whose law reaches
  the data) the holder's registration is evidence in itself; RIR and geolocation data agree on roughly 95% of IPv4
  addresses (docs/detectors.md#jurisdiction).
- A MaxMind-format database the user provides ([geo] in the config: GeoLite2 or DB-IP Lite): the network owner
  (ASN and organisation) from an ASN database, and optionally the geolocated country from a country (or city)
  database, which then wins over the registry's.

Lookups are cached per destination (a bounded LRU: the addresses come from the wire), so a flow's packets cost a
dictionary lookup, not a tree walk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iptocc

from sensor.bounded import BoundedLRU
from sensor.countries import COUNTRY_CODES
from sensor.enrich.series import ByteSeries
from sensor.errors import ConfigError
from sensor.schema import Values

# Destinations whose place is remembered; an entry is ~200 bytes. A site talks to a few thousand outside addresses;
# past this a flood of forged peers only costs lookups (~1 µs each), never memory.
CACHE_SIZE = 65536
MAX_ORG = 128   # characters of an organisation name kept: a label value and a table cell, not an essay

_COUNTRY = re.compile(r"[A-Z]{2}")
# maxminddb.InvalidDatabaseError is a RuntimeError; maxminddb itself is imported only when a database is configured
# (its import costs more than the rest of a start).
_LOOKUP_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, OSError)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Place(Values):
    """What is known of one destination; None in a field when unknown."""

    country: str | None            # ISO 3166-1 alpha-2: the country database's when it knows, else the registry's
    asn: int | None                # autonomous system number of the announcing network (ASN database)
    org: str | None                # its organisation, as the ASN database names it
    registry_country: str | None   # the RIR's country of the block's holder (iptocc)

    @property
    def owner(self) -> str | None:
        """The network's owner for people: the organisation, else the AS number."""
        if self.org:
            return self.org
        return f"AS{self.asn}" if self.asn is not None else None

    def countries(self) -> tuple[str, ...]:
        """Every country this place is attributed to (geolocated and registered), without repeats."""
        found = (self.country, self.registry_country)
        return tuple(c for i, c in enumerate(found) if c is not None and c not in found[:i])

    def describe(self) -> str:
        """`CN, <owner>` (what a summary puts after an address); "" when nothing is known."""
        return ", ".join(part for part in (self.country, self.owner) if part)


_NOWHERE = Place(None, None, None, None)   # cached for addresses nothing is known of (values are never None)


class Geography:
    """place(ip) for the sensor: the registry country always, owner and geolocated country from the user's
    databases when the config names them."""

    def __init__(self, asn_db: Any = None, country_db: Any = None, cache_size: int = CACHE_SIZE):
        self._asn_db = asn_db
        self._country_db = country_db
        self._cache: BoundedLRU[str, Place] = BoundedLRU(cache_size)
        # The last address asked and its place: the cache's newest entry, which `use` would leave where it is (an
        # observation asks for its peer's place two or three times in a row: egress by country, the detectors,
        # the detection's place)
        self._last: tuple[str | None, Place] = (None, _NOWHERE)
        self.lookup_errors = 0   # lookups a damaged user database failed on (the address is then unknown to it)
        self._registry_places: dict[str, Place] = {}   # at most one per two-letter code

    @classmethod
    def from_config(cls, asn_database: str | None, country_database: str | None) -> Geography:
        """Opens the configured databases and checks they are what their keys say; a ConfigError (one line, exit 2)
        when one is missing, unreadable, not a MaxMind database or the wrong kind."""
        asn_db = _open(asn_database, "geo.asn_database", "ASN", ("asn",)) if asn_database else None
        country_db = (_open(country_database, "geo.country_database", "country", ("country", "city"))
                      if country_database else None)
        return cls(asn_db, country_db)

    @property
    def has_owners(self) -> bool:
        return self._asn_db is not None

    def place(self, ip: str) -> Place | None:
        """The destination's place, or None when nothing is known of it (a private address, an unassigned block)."""
        last = self._last
        if last[0] == ip:
            found = last[1]
        else:
            cached = self._cache.use(ip)
            if cached is None:
                cached = self._lookup(ip)
                self._cache.put(ip, cached)
            self._last = (ip, cached)
            found = cached
        return None if found is _NOWHERE else found

    def _lookup(self, ip: str) -> Place:
        registry = iptocc.country_code(ip)
        if self._asn_db is None and self._country_db is None and isinstance(registry, str):
            # the registry's country is all there is: one Place per country, its code checked once (a flood's
            # forged peers each cost a format check and a Place of the same few countries)
            shared = self._registry_places.get(registry)
            if shared is None and _COUNTRY.fullmatch(registry):
                shared = self._registry_places[registry] = Place(registry, None, None, registry)
            if shared is not None:
                return shared
        registry = registry if isinstance(registry, str) and _COUNTRY.fullmatch(registry) else None
        asn = org = country = None
        if self._asn_db is not None:
            record = self._get(self._asn_db, ip)
            asn, org = _asn(record.get("autonomous_system_number")), _text(record.get("autonomous_system_organization"))
        if self._country_db is not None:
            country = _country(self._get(self._country_db, ip))
        if registry is None and asn is None and org is None and country is None:
            return _NOWHERE
        return Place(country or registry, asn, org, registry)

    def _get(self, db: Any, ip: str) -> dict:
        try:
            record = db.get(ip)
        except _LOOKUP_ERRORS:
            self.lookup_errors += 1
            return {}
        return record if isinstance(record, dict) else {}

    def close(self) -> None:
        """Unmaps the databases; lookups after it (a replay's endpoint still serving) get the registry country."""
        for db in (self._asn_db, self._country_db):
            if db is not None:
                db.close()
        self._asn_db = self._country_db = None


def _open(path: str, key: str, kind: str, types: tuple[str, ...]) -> Any:
    """The database at `path`, opened (memory-mapped) and checked: the right kind, and a first lookup that works."""
    if not Path(path).exists():
        raise ConfigError(f"{key}: {path}: no such file")
    if not Path(path).is_file():
        raise ConfigError(f"{key}: {path}: not a regular file")
    import maxminddb

    try:
        db = maxminddb.open_database(path)
    except OSError as exc:
        raise ConfigError(f"{key}: {path}: cannot read: {exc.strerror or exc}") from None
    except _LOOKUP_ERRORS:
        raise ConfigError(f"{key}: {path}: not a MaxMind (.mmdb) database (GeoLite2 or DB-IP Lite)") from None
    try:
        db_type = str(getattr(db.metadata(), "database_type", ""))
        # a damaged search tree or data section shows on the first walk
        db.get("1.1.1.1")
    except _LOOKUP_ERRORS as exc:
        db.close()
        raise ConfigError(f"{key}: {path}: damaged MaxMind database ({' '.join(str(exc).split())[:120]})") from None
    if not any(t in db_type.lower() for t in types):
        db.close()
        article = "an" if kind == "ASN" else "a"
        raise ConfigError(f"{key}: {path}: a {db_type[:80]!r} database, not {article} {kind} database "
                          f"(GeoLite2-{'ASN' if kind == 'ASN' else 'Country'} or DB-IP's)")
    return db


def _asn(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 32 else None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if c.isprintable())[:MAX_ORG].strip()
    return text or None


def _country(record: dict) -> str | None:
    """A GeoLite2/DB-IP country or city record's ISO code (`country.iso_code`)."""
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else None
    return code if isinstance(code, str) and _COUNTRY.fullmatch(code) else None


UNKNOWN, OTHER = "unknown", "other"


def country_label(place: Place | None) -> str:
    """A destination's country as a metric label, from a closed set: an ISO code, "other" for a code outside
    ISO 3166-1 (a user database's own), "unknown" when there is none."""
    if place is None or place.country is None:
        return UNKNOWN
    return place.country if place.country in COUNTRY_CODES else OTHER


class CountryEgress:
    """Bytes camera-side devices sent to outside destinations, by (country label, covered maker): the source of
    camwatch_egress_country_bytes_total. Bounded by the label set: at most (252 codes + 2) x 2 keys."""

    def __init__(self, geography: Geography):
        self.geography = geography
        self.bytes: dict[tuple[str, bool], int] = {}
        # The same bytes over time, by country label alone (the report's chart): a 24-hour ring per label, so at
        # most 254 rings of 1.1 KiB.
        self.series: dict[str, ByteSeries] = {}
        self.series_changed = False

    def add(self, peer: str, covered: bool, nbytes: int, public: bool, ts: float = 0.0) -> None:
        """`public`: the peer is public (unknown country counted as such); else an allowed destination, counted
        only when it has a country (an allowed core server is no egress)."""
        place = self.geography.place(peer)
        if place is None and not public:
            return
        label = country_label(place)
        key = (label, covered)
        self.bytes[key] = self.bytes.get(key, 0) + nbytes
        series = self.series.get(label)
        if series is None:
            series = self.series[label] = ByteSeries()
        series.add(ts, nbytes)
        self.series_changed = True

    def series_state(self) -> dict[str, list]:
        """{country label: ByteSeries.state()}: what the state store keeps for the report."""
        return {label: series.state() for label, series in sorted(self.series.items())}

    def restore_series(self, doc: object) -> None:
        """series_state() read back; labels outside the closed set, and damaged entries, are skipped."""
        if isinstance(doc, dict):
            for label, points in doc.items():
                if label in COUNTRY_CODES or label in (OTHER, UNKNOWN):
                    self.series[label] = ByteSeries.from_state(points)


def destinations_by_place(peers: dict, geography: Geography) -> tuple[list[dict], list[dict]]:
    """A device's outside peers ({address: [name, bytes sent]}) summed by country and by network owner, most bytes
    first: ([{"country", "bytes", "destinations"}], [{"asn", "org", "country", "bytes", "destinations"}]).
    Addresses nothing is known of (private, documentation, unassigned) are in neither."""
    countries: dict[str, list[int]] = {}
    owners: dict[tuple[int | None, str | None], list] = {}
    for ip, (_name, sent) in peers.items():
        place = geography.place(ip)
        if place is None:
            continue
        if place.country:
            entry = countries.setdefault(place.country, [0, 0])
            entry[0] += sent
            entry[1] += 1
        if place.asn is not None or place.org:
            owned = owners.setdefault((place.asn, place.org), [0, 0, place.country])
            owned[0] += sent
            owned[1] += 1
    by_country = [{"country": c, "bytes": b, "destinations": n}
                  for c, (b, n) in sorted(countries.items(), key=lambda item: (-item[1][0], item[0]))]
    by_owner = [{"asn": asn, "org": org, "country": country, "bytes": b, "destinations": n}
                for (asn, org), (b, n, country) in sorted(owners.items(), key=lambda item: (-item[1][0], str(item[0])))]
    return by_country, by_owner


# The destination fields of an alert line about a destination nothing is known of (tests, documentation).
NO_PLACE = {"country": None, "asn": None, "org": None}
