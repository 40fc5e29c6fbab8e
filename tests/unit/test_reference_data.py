"""sensor/reference_data.py: the shipped indicator file, resolver file and covered-maker list load as their TOML
says, through the config's schema, and a damaged one is one line naming the key; the detectors' loaders
(Indicators.load, Resolvers.load) refuse a damaged file and ship every entry with its sources."""

from __future__ import annotations

import ipaddress
import re
import tomllib

import pytest

from sensor.detect import Indicators
from sensor.detect.indicators import Resolvers
from sensor.errors import CamwatchError
from sensor.reference_data import (
    COVERED_MAKERS_FILE,
    INDICATORS_FILE,
    RESOLVERS_FILE,
    load_covered_makers,
    load_indicators,
    load_resolvers,
)


def _indicators(path=INDICATORS_FILE):
    return load_indicators(path, pppp_bit=1 << 1, signature_base=8)


def test_indicator_file_loads_as_the_toml_says():
    """Read back against the raw TOML: every field, the prefix signatures in file order, one tag bit each."""
    raw = tomllib.loads(INDICATORS_FILE.read_text(encoding="utf-8"))
    found = _indicators()
    assert found.version == raw["version"]
    prefixes = [_expected_prefix(sig) for entry in raw["service"] for sig in entry["signatures"]
                if sig["kind"] != "cs2_pppp"]
    assert list(found.prefixes) == prefixes and (b"DHGET", b"\xff" * 5) in prefixes
    assert [s.id for s in found.services] == [entry["id"] for entry in raw["service"]]
    for svc, entry in zip(found.services, raw["service"], strict=True):
        assert svc.name == entry["name"] and svc.makers == tuple(entry["makers"])
        assert svc.domains == tuple(d.lower() for d in entry["domains"])
        assert svc.ports == frozenset((p, n) for p, n in entry["ports"])
        assert svc.sources == tuple(entry["sources"]) and svc.sources
        bits = 0
        for sig, (bit, loaded) in zip(entry["signatures"], svc.signature_rules, strict=True):
            expect = 1 << 1 if sig["kind"] == "cs2_pppp" else 1 << (8 + prefixes.index(_expected_prefix(sig)))
            # two signatures may share bytes only when they differ in where they count
            assert bit == expect or prefixes.count(_expected_prefix(sig)) > 1, svc.id
            assert (loaded.kind, loaded.name, loaded.proto) == (sig["kind"], sig.get("name"), sig.get("proto"))
            assert loaded.ports == frozenset((p, n) for p, n in sig.get("ports", []))
            bits |= bit
        assert svc.signature_bits == bits, svc.id
    hik = next(s for s in found.services if s.id == "hik-connect")
    assert ("tcp", 8555) in hik.ports and hik.matches_name("litedev.hik-connect.com")


def _expected_prefix(sig: dict) -> tuple[bytes, bytes]:
    if sig["kind"] == "prefix":
        return sig["value"].encode(), b"\xff" * len(sig["value"])
    value = bytes.fromhex(sig["value"])
    return value, bytes.fromhex(sig["mask"]) if "mask" in sig else b"\xff" * len(value)


def test_every_shipped_signature_fixes_four_bytes_and_every_resolver_has_sources():
    for value, mask in _indicators().prefixes:
        assert sum(bin(b).count("1") for b in mask) >= 32 and not any(v & ~m for v, m in zip(value, mask, strict=True))
    raw = tomllib.loads(RESOLVERS_FILE.read_text(encoding="utf-8"))
    found = load_resolvers()
    assert found.version == raw["version"] and [r.id for r in found.resolvers] == [e["id"] for e in raw["resolver"]]
    for resolver, entry in zip(found.resolvers, raw["resolver"], strict=True):
        assert resolver.sources == tuple(entry["sources"]) and resolver.sources
        assert resolver.protocols == frozenset(entry["protocols"])
        assert resolver.domains == tuple(entry.get("domains", []))
        assert resolver.addresses == frozenset(str(ipaddress.ip_address(a)) for a in entry.get("addresses", []))
    shipped = Resolvers.load()
    assert shipped.by_address("8.8.8.8").id == "google" and shipped.by_address("2620:fe::fe").id == "quad9"
    assert shipped.by_name("DNS.Google.").id == "google"
    assert shipped.by_address("10.0.0.1") is None and shipped.by_name("") is None and shipped.by_name(None) is None


def test_resolver_addresses_are_kept_as_flows_print_them(tmp_path):
    """A flow prints 2620:fe::fe; the file may write it out in full or in capitals."""
    path = tmp_path / "resolvers.toml"
    path.write_text('version = "1"\n[[resolver]]\nid = "r"\nname = "R"\nprotocols = ["dns"]\nsources = ["s"]\n'
                    'addresses = ["2620:FE:0:0:0:0:0:FE", "9.9.9.9"]\ndomains = ["DNS.Example.NET"]\n',
                    encoding="utf-8")
    found = Resolvers.load(path)
    assert found.by_address("2620:fe::fe").id == "r" and found.by_name("dns.example.net").id == "r"


def test_covered_maker_list_loads_as_the_toml_says():
    raw = tomllib.loads(COVERED_MAKERS_FILE.read_text(encoding="utf-8"))
    found = load_covered_makers()
    assert found.version == raw["version"]
    for maker, entry in zip(found.makers, raw["maker"], strict=True):
        assert (maker.name, maker.legal_name, maker.basis, maker.reason) == (
            entry["name"], entry["legal_name"], entry["basis"], entry["reason"])
        assert [p.pattern for p in maker.manuf] == entry["manuf"]
        assert [p.pattern for p in maker.banners] == entry.get("banners", [])
        assert all(p.flags & re.I for p in maker.manuf + maker.banners)
        assert maker.brands == tuple(entry["brands"]) and maker.sources == tuple(entry["sources"])
    hikvision = next(m for m in found.makers if m.name == "Hikvision")
    assert hikvision.manuf[0].search("Prama Hikvision India Private Limited")


SERVICE = 'version = "1"\n[[service]]\nid = "x"\nname = "X"\nsources = ["s"]\n'


BAD_INDICATORS = [
    (SERVICE + "domain = ['*.x.example']\n", "unknown key service[1].domain"),   # a typo drops nothing silently
    (SERVICE + 'signatures = [{ kind = "regex" }]\n', "service[1].signatures[1].kind: unknown signature kind"),
    (SERVICE + 'signatures = [{ kind = "prefix" }]\n', "service[1].signatures[1].value"),
    (SERVICE + 'signatures = [{ kind = "prefix", value = "TOOLONGPFX" }]\n', "service[1].signatures[1].value"),
    (SERVICE + 'signatures = [{ kind = "prefix", value = "DH\u00e9" }]\n', "service[1].signatures[1].value"),
    (SERVICE + 'signatures = [{ kind = "cs2_pppp", value = "x" }]\n', "service[1].signatures[1].value"),
    (SERVICE + 'signatures = [{ kind = "prefix", value = "DH" }]\n', "16 fixed bits would fire on ordinary traffic"),
    (SERVICE + 'signatures = [{ kind = "prefix", value = "DHGET", mask = "ff" }]\n', "only a hex signature takes a"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef" }]\n', "signatures[1].value: a hex signature is"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef0zz" }]\n', "signatures[1].value: a hex signature"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "000102030405060708" }]\n', "a hex signature is 1 to 8 bytes"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "ff000000", mask = "ff000000" }]\n', " 8 fixed bits"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "ff00ff00", mask = "ffff0000" }]\n', "bits set outside the"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "ff00ff00", mask = "ffff" }]\n', "mask: 2 bytes for a value"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef0", proto = "icmp" }]\n',
     "signatures[1].proto must be one of tcp, udp"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef0", proto = "udp", ports = [["tcp", 9000]] }]\n',
     "signatures[1].ports: a port of another protocol"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef0", nam = "x" }]\n',
     "unknown key service[1].signatures[1].nam"),
    (SERVICE + 'signatures = [{ kind = "hex", value = "0abcdef0", name = "a\\nb" }]\n', "signatures[1].name must be"),
    (SERVICE + 'ports = [["tcp", 70000]]\n', "service[1].ports[1]"),
    (SERVICE + 'ports = [["sctp", 80]]\n', "service[1].ports[1]"),
    (SERVICE + "makers = 'Hikvision'\n", "service[1].makers must be a list of strings"),
    ('version = "1"\n[[service]]\nid = "x"\nname = "X"\n', "service[1] needs sources"),
    ('version = "1"\n[[service]]\nid = "x"\nname = "X"\nsources = []\n', "service[1].sources must be a non-empty"),
    (SERVICE + "signatures = [" + ", ".join(f'{{ kind = "prefix", value = "P{i:04d}" }}' for i in range(49)) + "]\n",
     "at most 48 prefix signatures"),
    ('[[service]]\nid = "x"\nname = "X"\nsources = ["s"]\n', "version is missing"),
    ("not toml [", "invalid indicator file"),
]


@pytest.mark.parametrize("text,message", BAD_INDICATORS, ids=[m for _, m in BAD_INDICATORS])
def test_a_damaged_indicator_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "indicators.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CamwatchError) as caught:
        _indicators(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: invalid indicator file: ") and message in line and "\n" not in line, line


MAKER = ('version = "1"\n[[maker]]\nname = "A"\nlegal_name = "A Ltd"\nbasis = "named"\nreason = "r"\n'
         'sources = ["https://example.org"]\n')


BAD_MAKERS = [
    ('version = "x"\n[[maker]]\nname = "A"\n', "maker[1] needs legal_name"),
    (MAKER + "manuf = ['a(']\n", "maker[1].manuf[1] 'a(' is not a regular expression"),
    (MAKER + "manuf = ['a']\nbasis2 = 'named'\n", "unknown key maker[1].basis2"),
    (MAKER.replace('"named"', '"rumour"') + "manuf = ['a']\n", "maker[1].basis must be one of named, prc-nil"),
    (MAKER + "manuf = []\n", "maker[1] needs a manuf or banners pattern"),
    (MAKER + "manuf = ['a']\nbanners = 'a'\n", "maker[1].banners must be a list of regular expressions"),
]


@pytest.mark.parametrize("text,message", BAD_MAKERS, ids=[m for _, m in BAD_MAKERS])
def test_a_damaged_covered_maker_list_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "makers.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CamwatchError) as caught:
        load_covered_makers(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: invalid covered-maker list: ") and message in line and "\n" not in line, line
    path.write_text("[[maker", encoding="utf-8")
    with pytest.raises(CamwatchError, match="cannot load the covered-maker list"):
        load_covered_makers(path)


def test_indicator_file_is_validated(tmp_path):
    bad = tmp_path / "i.toml"
    bad.write_text('version = "1"\n[[service]]\nid = "x"\nname = "x"\nsignatures = [{ kind = "regex" }]\n'
                   'sources = ["s"]\n')
    with pytest.raises(CamwatchError, match="unknown signature kind"):
        Indicators.load(bad)
    bad.write_text("not toml [")
    with pytest.raises(CamwatchError, match="invalid indicator file"):
        Indicators.load(bad)
    shipped = Indicators.load()
    assert {s.id for s in shipped.services} >= {"hik-connect", "dahua-p2p", "xmeye", "cs2-pppp", "tutk-kalay",
                                                 "reolink-p2p", "uniview-ezcloud"}
    assert all(s.sources for s in shipped.services)


RESOLVER = 'version = "1"\n[[resolver]]\nid = "r"\nname = "R"\nsources = ["s"]\n'


BAD_RESOLVERS = [
    (RESOLVER + 'protocols = ["dns"]\naddresses = ["10.0.0.53"]\n', "addresses[1] '10.0.0.53' is not a public"),
    (RESOLVER + 'protocols = ["dns"]\naddresses = ["224.0.0.251"]\n', "is not a public unicast address"),
    (RESOLVER + 'protocols = ["dns"]\naddresses = ["8.8.8.256"]\n', "addresses[1] '8.8.8.256' is not an IP"),
    (RESOLVER + 'protocols = ["dns"]\naddresses = "8.8.8.8"\n', "resolver[1].addresses must be a list of IP"),
    (RESOLVER + 'protocols = ["doq"]\naddresses = ["8.8.8.8"]\n', "resolver[1].protocols must be a non-empty list"),
    (RESOLVER + 'protocols = []\naddresses = ["8.8.8.8"]\n', "resolver[1].protocols must be a non-empty list"),
    (RESOLVER + 'protocols = ["dns"]\n', "resolver[1] needs domains or addresses"),
    (RESOLVER + 'protocols = ["dns"]\naddress = ["8.8.8.8"]\n', "unknown key resolver[1].address"),
    ('version = "1"\n[[resolver]]\nid = "r"\nname = "R"\nprotocols = ["dns"]\ndomains = ["x.example"]\n',
     "resolver[1] needs sources"),
    ("[[resolver", "invalid resolver file"),
]


@pytest.mark.parametrize("text,message", BAD_RESOLVERS, ids=[m for _, m in BAD_RESOLVERS])
def test_a_damaged_resolver_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "resolvers.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CamwatchError) as caught:
        Resolvers.load(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: invalid resolver file: ") and message in line and "\n" not in line, line
