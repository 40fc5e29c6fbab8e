"""Small MaxMind-format databases the tests write themselves (mmdb-writer), shaped like GeoLite2's and DB-IP Lite's
records: an ASN database and a country database over a few networks."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# Owners of well-known networks, as GeoLite2-ASN names them (the test's own data, not a copy of MaxMind's).
OWNERS = {
    "110.43.0.0/16": (4808, "China Unicom Beijing Province Network"),
    "120.92.0.0/16": (4808, "China Unicom Beijing Province Network"),
    "60.29.0.0/16": (17638, "ASN for TIANJIN Provincial Net of CT"),
    "8.8.8.0/24": (15169, "GOOGLE"),
    "47.88.0.0/14": (45102, "Alibaba US Technology Co., Ltd."),
    "2001:4860::/32": (15169, "GOOGLE"),
}


def write_asn(path: Path, owners: dict[str, tuple[int, str]] | None = None,
              database_type: str = "GeoLite2-ASN") -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"],
                        description="camwatch test ASN database")
    for network, (asn, org) in (OWNERS if owners is None else owners).items():
        writer.insert_network(IPSet([network]), {"autonomous_system_number": asn,
                                                 "autonomous_system_organization": org})
    writer.to_db_file(str(path))
    return path


def write_country(path: Path, countries: dict[str, str], database_type: str = "GeoLite2-Country") -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"],
                        description="camwatch test country database")
    for network, code in countries.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code, "names": {"en": code}}})
    writer.to_db_file(str(path))
    return path
