"""sensor/reference_data.py: the shipped indicator file and covered-maker list load as their TOML says, through the
config's schema, and a damaged one is one line naming the key; the detectors' loader (Indicators.load) refuses a
damaged file and ships every service with its sources."""

from __future__ import annotations

import re
import tomllib

import pytest

from sensor.detect import Indicators
from sensor.errors import CamwatchError
from sensor.reference_data import COVERED_MAKERS_FILE, INDICATORS_FILE, load_covered_makers, load_indicators


def _indicators(path=INDICATORS_FILE):
    return load_indicators(path, pppp_bit=1 << 1, signature_base=8)


def test_indicator_file_loads_as_the_toml_says():
    """Read back against the raw TOML: every field, the prefix signatures in file order, one tag bit each."""
    raw = tomllib.loads(INDICATORS_FILE.read_text(encoding="utf-8"))
    found = _indicators()
    assert found.version == raw["version"]
    prefixes = [sig["value"].encode() for entry in raw["service"] for sig in entry["signatures"]
                if sig["kind"] == "prefix"]
    assert list(found.prefixes) == prefixes and b"DHGET" in prefixes
    assert [s.id for s in found.services] == [entry["id"] for entry in raw["service"]]
    for svc, entry in zip(found.services, raw["service"], strict=True):
        assert svc.name == entry["name"] and svc.makers == tuple(entry["makers"])
        assert svc.domains == tuple(d.lower() for d in entry["domains"])
        assert svc.ports == frozenset((p, n) for p, n in entry["ports"])
        assert svc.sources == tuple(entry["sources"]) and svc.sources
        bits = 0
        for sig in entry["signatures"]:
            bits |= (1 << 1) if sig["kind"] == "cs2_pppp" else 1 << (8 + prefixes.index(sig["value"].encode()))
        assert svc.signature_bits == bits, svc.id
    hik = next(s for s in found.services if s.id == "hik-connect")
    assert ("tcp", 8555) in hik.ports and hik.matches_name("litedev.hik-connect.com")


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
    (SERVICE + 'ports = [["tcp", 70000]]\n', "service[1].ports[1]"),
    (SERVICE + 'ports = [["sctp", 80]]\n', "service[1].ports[1]"),
    (SERVICE + "makers = 'Hikvision'\n", "service[1].makers must be a list of strings"),
    ('version = "1"\n[[service]]\nid = "x"\nname = "X"\n', "service[1] needs sources"),
    ('version = "1"\n[[service]]\nid = "x"\nname = "X"\nsources = []\n', "service[1].sources must be a non-empty"),
    (SERVICE + "signatures = [" + ", ".join(f'{{ kind = "prefix", value = "P{i}" }}' for i in range(49)) + "]\n",
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
