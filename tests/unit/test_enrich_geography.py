"""sensor/enrich/geography.py: the registry country of well-known addresses from the embedded RIR data, owner and
geolocated country from MaxMind-format databases the test writes itself (mmdb-writer), the bounded per-destination
cache, the checks at start (missing, corrupt, wrong kind: one ConfigError line), and the bounded metric labels."""

from __future__ import annotations

import pytest
from mmdbs import write_asn, write_country

from sensor.config import parse_config
from sensor.countries import COUNTRY_CODES
from sensor.enrich.geography import (
    _NOWHERE,
    MAX_ORG,
    OTHER,
    UNKNOWN,
    CountryEgress,
    Geography,
    Place,
    country_label,
    destinations_by_place,
)
from sensor.errors import ConfigError

REGISTRY = Geography()


@pytest.mark.parametrize(("ip", "country"), [
    ("8.8.8.8", "US"),                       # Google Public DNS: ARIN, US
    ("110.43.68.240", "CN"),                 # the example: APNIC, CN
    ("114.114.114.114", "CN"),               # 114DNS
    ("1.0.16.1", "JP"),                      # APNIC, JP
    ("2001:4860:4860::8888", "US"),          # IPv6 too
])
def test_registry_country_of_well_known_addresses(ip, country):
    place = REGISTRY.place(ip)
    assert place == Place(country, None, None, country)
    assert place.describe() == country and place.owner is None


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.1.165", "172.16.5.5", "100.64.0.1", "fd00::1", "127.0.0.1",
                                "224.0.0.251", "203.0.113.50", "198.51.100.20", "not an address", ""])
def test_private_documentation_and_junk_have_no_place(ip):
    assert REGISTRY.place(ip) is None
    assert country_label(REGISTRY.place(ip)) == UNKNOWN


def test_owner_from_an_asn_database_and_the_registry_country_beside_it(tmp_path):
    geo = Geography.from_config(str(write_asn(tmp_path / "asn.mmdb")), None)
    assert geo.has_owners
    cn = geo.place("110.43.68.240")
    assert cn == Place("CN", 4808, "China Unicom Beijing Province Network", "CN")
    assert cn.describe() == "CN, China Unicom Beijing Province Network"
    assert geo.place("2001:4860:4860::8888") == Place("US", 15169, "GOOGLE", "US")
    # a US-registered block of a Chinese company: the registry says US; the owner says who
    assert geo.place("47.88.59.209") == Place("US", 45102, "Alibaba US Technology Co., Ltd.", "US")
    # an address the ASN database does not know keeps its registry country
    assert geo.place("1.0.16.1") == Place("JP", None, None, "JP")
    assert geo.place("10.0.0.1") is None


def test_an_owner_with_only_a_number_is_named_by_it(tmp_path):
    geo = Geography.from_config(str(write_asn(tmp_path / "asn.mmdb", {"110.43.0.0/16": (4808, "")})), None)
    place = geo.place("110.43.68.240")
    assert (place.asn, place.org, place.owner, place.describe()) == (4808, None, "AS4808", "CN, AS4808")


def test_a_geolocated_country_wins_and_both_are_kept(tmp_path):
    db = write_country(tmp_path / "country.mmdb", {"47.88.0.0/14": "HK", "8.8.8.0/24": "US"},
                       database_type="DBIP-Country-Lite")
    geo = Geography.from_config(None, str(db))
    hk = geo.place("47.88.59.209")
    assert (hk.country, hk.registry_country, hk.countries()) == ("HK", "US", ("HK", "US"))
    assert geo.place("8.8.8.8").countries() == ("US",)
    assert geo.place("110.43.68.240").country == "CN"   # not in the country database: the registry's


def test_a_city_database_is_a_country_database_too(tmp_path):
    db = write_country(tmp_path / "city.mmdb", {"110.43.0.0/16": "SG"}, database_type="GeoLite2-City")
    assert Geography.from_config(None, str(db)).place("110.43.68.240").country == "SG"


def test_lookups_are_cached_per_destination_and_the_cache_is_bounded():
    calls = []

    class CountingDb:
        def get(self, ip):
            calls.append(ip)
            if ip.startswith("10."):
                return None
            return {"autonomous_system_number": 64500, "autonomous_system_organization": "Example"}

    geo = Geography(asn_db=CountingDb(), cache_size=2)
    for _ in range(3):
        assert geo.place("8.8.8.8").asn == 64500
    assert calls == ["8.8.8.8"]
    geo.place("1.1.1.1")
    geo.place("110.43.68.240")          # a third destination pushes the least recently used out
    assert len(geo._cache) == 2
    geo.place("8.8.8.8")
    assert calls == ["8.8.8.8", "1.1.1.1", "110.43.68.240", "8.8.8.8"]
    geo.place("10.0.0.1")               # nothing known is cached too (as such), and still answers None
    geo.place("10.0.0.1")
    assert calls.count("10.0.0.1") == 1 and geo.place("10.0.0.1") is None


def test_what_a_user_database_holds_is_checked_not_trusted():
    records = {
        "8.8.8.8": {"autonomous_system_number": "15169", "autonomous_system_organization": 7},   # wrong types
        "1.1.1.1": {"autonomous_system_number": True, "autonomous_system_organization": "A\x00B\nC" + "x" * 500},
        "110.43.68.240": ["not", "a", "record"],
        "1.0.16.1": {"country": {"iso_code": "cn"}},
    }

    class OddDb:
        def get(self, ip):
            if ip == "114.114.114.114":
                raise RuntimeError("damaged data section")   # maxminddb.InvalidDatabaseError is one
            return records.get(ip)

    geo = Geography(asn_db=OddDb(), country_db=OddDb())
    assert geo.place("8.8.8.8") == Place("US", None, None, "US")
    odd = geo.place("1.1.1.1")
    assert odd.asn is None and odd.org == "ABC" + "x" * (MAX_ORG - 3)
    assert geo.place("110.43.68.240") == Place("CN", None, None, "CN")
    assert geo.place("1.0.16.1").country == "JP"       # "cn" is no ISO code as a database writes it
    assert geo.place("114.114.114.114") == Place("CN", None, None, "CN") and geo.lookup_errors == 2


# ---- checked at start -------------------------------------------------------------------------------------------
def _error(asn=None, country=None) -> str:
    with pytest.raises(ConfigError) as info:
        Geography.from_config(asn, country)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_missing_database_is_one_line_naming_the_key(tmp_path):
    assert _error(asn=str(tmp_path / "nope.mmdb")) == f"geo.asn_database: {tmp_path / 'nope.mmdb'}: no such file"
    assert _error(country=str(tmp_path)) == f"geo.country_database: {tmp_path}: not a regular file"


@pytest.mark.parametrize("content", [b"", b"not a database at all\n" * 40, b"\xab\xcd\xefMaxMind.com" + b"\0" * 64])
def test_a_file_that_is_no_maxmind_database_is_refused(tmp_path, content):
    path = tmp_path / "junk.mmdb"
    path.write_bytes(content)
    assert _error(asn=str(path)) == f"geo.asn_database: {path}: not a MaxMind (.mmdb) database (GeoLite2 or DB-IP Lite)"


def test_a_truncated_database_is_refused(tmp_path):
    whole = write_asn(tmp_path / "asn.mmdb").read_bytes()
    cut = tmp_path / "cut.mmdb"
    cut.write_bytes(whole[: len(whole) // 3])
    assert "not a MaxMind (.mmdb) database" in _error(asn=str(cut))


def test_a_corrupt_database_never_escapes_as_a_traceback(tmp_path):
    """Random damage anywhere in the file: refused at start, or answering lookups without raising."""
    import random

    whole = write_asn(tmp_path / "asn.mmdb").read_bytes()
    for seed in range(200):
        rng = random.Random(seed)
        damaged = bytearray(whole)
        for _ in range(8):
            damaged[rng.randrange(len(damaged) - 100)] = rng.randrange(256)
        path = tmp_path / f"damaged{seed}.mmdb"
        path.write_bytes(bytes(damaged))
        try:
            geo = Geography.from_config(str(path), None)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            continue
        for ip in ("8.8.8.8", "110.43.68.240", "47.88.59.209", "2001:4860::1", "1.2.3.4"):
            place = geo.place(ip)
            assert place is None or isinstance(place, Place)


def test_the_wrong_kind_of_database_is_refused(tmp_path):
    asn = write_asn(tmp_path / "asn.mmdb")
    country = write_country(tmp_path / "country.mmdb", {"8.8.8.0/24": "US"})
    assert _error(country=str(asn)) == (f"geo.country_database: {asn}: a 'GeoLite2-ASN' database, not a country "
                                        "database (GeoLite2-Country or DB-IP's)")
    assert _error(asn=str(country)) == (f"geo.asn_database: {country}: a 'GeoLite2-Country' database, not an ASN "
                                        "database (GeoLite2-ASN or DB-IP's)")


def test_the_config_keys_are_paths_and_nothing_else():
    config = parse_config({"geo": {"asn_database": "/x/asn.mmdb", "country_database": "/x/c.mmdb"}})
    assert (config.geo.asn_database, config.geo.country_database) == ("/x/asn.mmdb", "/x/c.mmdb")
    assert parse_config({}).geo.asn_database is None
    for raw, message in (({"geo": {"asn_database": 7}}, "geo.asn_database must be a file path"),
                         ({"geo": {"asn_database": "a\0b"}}, "geo.asn_database must be a file path"),
                         ({"geo": {"asn": "x"}}, "unknown key geo.asn (known: asn_database, country_database)")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config(raw)


# ---- what the metrics and the inventory make of places -----------------------------------------------------------
def test_country_labels_are_a_closed_set():
    assert country_label(Place("CN", None, None, "CN")) == "CN"
    assert country_label(Place("EU", None, None, "EU")) == "EU"      # a RIR's regional code
    assert country_label(Place("ZZ", 1, None, None)) == OTHER       # a user database's own code
    assert country_label(Place(None, 1, "x", None)) == UNKNOWN
    assert country_label(None) == UNKNOWN


def test_egress_by_country_counts_public_bytes_and_allowed_ones_with_a_country():
    egress = CountryEgress(REGISTRY)
    egress.add("110.43.68.240", True, 1000, public=True)
    egress.add("110.43.87.34", True, 500, public=True)
    egress.add("8.8.8.8", False, 70, public=True)
    egress.add("203.0.113.5", True, 30, public=True)       # public scope, no country: unknown
    egress.add("10.1.5.10", False, 999, public=False)      # an allowed core server: no egress
    egress.add("8.8.4.4", False, 5, public=False)          # an allowed public resolver: counted
    assert egress.bytes == {("CN", True): 1500, ("US", False): 75, ("unknown", True): 30}


def test_a_devices_destinations_by_country_and_owner(tmp_path):
    geo = Geography.from_config(str(write_asn(tmp_path / "asn.mmdb")), None)
    peers = {"110.43.68.240": ["a.example", 700], "120.92.65.240": [None, 300], "8.8.8.8": [None, 50],
             "1.0.16.1": [None, 20], "203.0.113.5": [None, 9999], "10.1.0.9": [None, 5]}
    countries, owners = destinations_by_place(peers, geo)
    assert countries == [{"country": "CN", "bytes": 1000, "destinations": 2},
                         {"country": "US", "bytes": 50, "destinations": 1},
                         {"country": "JP", "bytes": 20, "destinations": 1}]
    assert owners == [{"asn": 4808, "org": "China Unicom Beijing Province Network", "country": "CN", "bytes": 1000,
                       "destinations": 2},
                      {"asn": 15169, "org": "GOOGLE", "country": "US", "bytes": 50, "destinations": 1}]


def test_a_flood_of_destinations_stays_within_the_cache_and_the_label_set():
    """Every address a forged flood chooses costs a lookup, never memory past the cache, and the per-country
    metric keys stay within the closed label set."""
    from sensor.enrich.geography import CACHE_SIZE

    geo = Geography()
    egress = CountryEgress(geo)
    for i in range(CACHE_SIZE + 5000):
        egress.add(f"{1 + i % 223}.{(i >> 8) & 255}.{i & 255}.{7 + i % 200}", i % 2 == 0, 1, public=True)
    assert len(geo._cache) == CACHE_SIZE and geo._cache.evicted == 5000
    assert len(egress.bytes) <= 2 * (len(COUNTRY_CODES) + 2)
    assert all(c in COUNTRY_CODES or c in (UNKNOWN, OTHER) for c, _ in egress.bytes)
    assert sum(egress.bytes.values()) == CACHE_SIZE + 5000


def test_the_last_address_remembered_leaves_the_cache_as_use_would():
    """place() remembers the last address and its place (an observation asks two or three times in a row): same
    answers, and the cache's entries, order and evictions the same as a Geography asking its cache every time."""
    import random

    rng = random.Random(1616)
    addresses = ["8.8.8.8", "1.1.1.1", "10.0.0.1", "2001:db8::1", "203.0.113.9", "", "not an address",
                 "223.5.5.5", "114.114.114.114", "9.9.9.9"]
    plain, remembering = Geography(cache_size=4), Geography(cache_size=4)
    for _ in range(2_000):
        ip = rng.choice(addresses[:rng.choice([2, 4, 10])])
        asked = plain._cache.use(ip)
        if asked is None:
            asked = plain._lookup(ip)
            plain._cache.put(ip, asked)
        assert remembering.place(ip) == (None if asked is _NOWHERE else asked)
        assert remembering._cache.items() == plain._cache.items()
        assert remembering._cache.evicted == plain._cache.evicted


def test_registry_only_places_are_shared_per_country_and_equal_to_looking_each_up(monkeypatch):
    """Without databases a place is its registry country alone: one Place per country, its code's format checked
    once. On random addresses (public, private, unassigned, IPv6) and on whatever the registry answers (valid
    codes, lower case, three letters, empty, not a string) each place equals the one made afresh, nothing known
    stays _NOWHERE, and only well-formed codes are remembered."""
    import random
    import re

    import iptocc

    from sensor.enrich import geography as mod

    def afresh(registry):
        registry = registry if isinstance(registry, str) and re.fullmatch(r"[A-Z]{2}", registry) else None
        return mod._NOWHERE if registry is None else mod.Place(registry, None, None, registry)

    rng = random.Random(1630)
    geo = mod.Geography()
    addresses = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                 for _ in range(3000)] + ["10.0.0.1", "192.168.1.1", "2001:db8::1", "2400:cb00::1", "240e::1"]
    for ip in addresses:
        found = geo._lookup(ip)
        assert found == afresh(iptocc.country_code(ip)) and (found is mod._NOWHERE) == (afresh(
            iptocc.country_code(ip)) is mod._NOWHERE)
    assert 10 < len(geo._registry_places) <= 26 * 26
    answers = ["US", "us", "USA", "", None, 5, "CN", "C1", "US"]
    monkeypatch.setattr(iptocc, "country_code", lambda ip: answers[int(ip.rsplit(".", 1)[1]) % len(answers)])
    geo = mod.Geography()
    for n in range(40):
        answer = answers[n % len(answers)]
        found = geo._lookup(f"198.51.100.{n}")
        assert found == afresh(answer) and (found is mod._NOWHERE) == (afresh(answer) is mod._NOWHERE)
    assert set(geo._registry_places) == {"US", "CN"}
    assert geo._lookup("198.51.100.0") is geo._lookup("198.51.100.8")   # one Place per country
