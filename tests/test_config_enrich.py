"""Configuration validation and its one schema (with the shipped reference data), address scopes, allowlist
matching, manufacturer lookup and the name cache."""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import tomllib

import pytest
from conftest import REPO

from sensor.config import (
    MIN_DEFAULT_FLOWS,
    Config,
    capture_ring_mib,
    default_max_flows,
    load_config,
    parse_config,
)
from sensor.dissect import DnsMessage
from sensor.enrich import Classifier, ManufDatabase, NameCache, parse_manuf
from sensor.errors import CamwatchError, ConfigError
from sensor.reference_data import COVERED_MAKERS_FILE, INDICATORS_FILE, load_covered_makers, load_indicators
from sensor.schema import COUNT, SECONDS, Section, keys, load

ip = ipaddress.ip_address


def test_zero_config_scopes():
    c = Classifier(Config())
    assert c.address_scope(ip("192.168.1.5")) == "camera"
    assert c.address_scope(ip("fd12::5")) == "camera"
    assert c.address_scope(ip("203.0.113.5")) == "public"   # documentation ranges stand for the Internet
    assert c.address_scope(ip("8.8.8.8")) == "public"
    assert c.address_scope(ip("239.255.255.250")) == "multicast"
    assert c.address_scope(ip("255.255.255.255")) == "multicast"
    assert c.address_scope(ip("169.254.3.4")) == "link_local"
    assert c.address_scope(ip("fe80::1")) == "link_local"
    assert c.address_scope(ip("0.0.0.0")) == "other"


def test_configured_site_scopes_and_allowlist():
    config = parse_config({
        "networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]},
        "allow": [{"dst": "10.1.0.123", "port": 123, "proto": "udp"}, {"dst": "*.ntp.example.org"}],
    })
    c = Classifier(config)
    assert c.address_scope(ip("10.20.0.9")) == "camera"
    assert c.address_scope(ip("10.1.2.3")) == "core"
    assert c.address_scope(ip("10.9.9.9")) == "private"
    assert c.destination_scope(ip("10.1.0.123"), None, 123, "udp")[0] == "allowed"
    assert c.destination_scope(ip("10.1.0.123"), None, 124, "udp")[0] == "core"
    assert c.destination_scope(ip("10.1.0.123"), None, 123, "tcp")[0] == "core"
    assert c.destination_scope(ip("198.51.100.1"), "pool.ntp.example.org", 123, "udp")[0] == "allowed"
    assert c.destination_scope(ip("198.51.100.1"), "ntp.example.org", 123, "udp")[0] == "public"
    assert c.destination_scope(ip("198.51.100.1"), "evil-ntp.example.org.attacker.net", 123, "udp")[0] == "public"


def test_load_config_file_and_errors(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[sensor]\nname = "site-a"\n[flows]\nudp_idle_timeout = 30\nmax_flows = 1000\n')
    config = load_config(f)
    assert config.sensor_name == "site-a" and config.flows.udp_idle_timeout == 30 and config.flows.max_flows == 1000
    assert config.capture_buffer_mib == capture_ring_mib(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    assert parse_config({"capture": {"buffer_mib": 1024}}).capture_buffer_mib == 1024
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    for bad, needle in [({"flows": {"max_flows": -1}}, "positive integer"),
                        ({"flows": {"tcp_idle_timeout": "5m"}}, "positive number"),
                        ({"sensor": {"name": ""}}, "sensor.name"),
                        ({"allow": [{"dst": "bad name!"}]}, "neither an IP"),
                        ({"allow": [{"dst": "10.0.0.1", "proto": "sctp"}]}, "proto"),
                        ({"capture": {"buffer_mib": 0}}, "capture.buffer_mib"),
                        ({"capture": {"buffer_mib": 1 << 20}}, "capture.buffer_mib"),
                        ({"capture": {"ring": 5}}, "unknown key capture.ring")]:
        with pytest.raises(ConfigError, match=needle):
            parse_config(bad)


def test_default_capture_ring_is_a_sixteenth_of_memory_between_64_mib_and_1_gib():
    gib = 1 << 30
    assert capture_ring_mib(24 * gib) == 1024    # the reference sensor: the ring that lost nothing at 3.7 Gbit/s
    assert capture_ring_mib(8 * gib) == 512
    assert capture_ring_mib(2 * gib) == 128
    assert capture_ring_mib(gib // 2) == 64
    assert Config().capture_buffer_mib == parse_config({}).capture_buffer_mib


def test_a_cgroup_memory_limit_sizes_the_default_ring(tmp_path):
    from sensor.config import _machine_memory
    membership = tmp_path / "cgroup"
    membership.write_text("0::/system.slice/camwatch.service\n")
    unit = tmp_path / "fs/system.slice/camwatch.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text(f"{2 << 30}\n")
    assert _machine_memory(tmp_path / "fs", membership) == 2 << 30
    (unit / "memory.max").write_text("max\n")
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _machine_memory(tmp_path / "fs", membership) == physical
    assert _machine_memory(tmp_path / "fs", tmp_path / "missing") == physical


def test_manuf_prefers_the_longest_assignment():
    db = ManufDatabase(parse_manuf(
        "40:2C:76\tIEEERegi\tIEEE Registration Authority\n"
        "40:2C:76:10:00:00/28\tShanghai\tShanghai Dahua Scale Factory\n"
        "70:B3:D5:00:00:00/36\tX\tA 36-bit Holder\n"
        "04:03:12\tHangzhou\tHangzhou Hikvision Digital Technology Co.,Ltd.\n"))
    assert db.lookup(0x402C761A0015) == "Shanghai Dahua Scale Factory"
    assert db.lookup(0x402C76FF0015) is None              # inside the RA block, not assigned in this table
    assert db.lookup(0x70B3D5000ABC) == "A 36-bit Holder"
    assert db.lookup(0x70B3D5001ABC) is None
    assert db.lookup(0x040312000011).startswith("Hangzhou Hikvision")
    assert db.lookup(0x020000000001) == "(locally administered)"


def test_installed_manuf_database_knows_the_camera_makers():
    db = ManufDatabase.load()
    assert len(db) > 10_000
    assert "Hikvision" in db.lookup(0x040312000011)
    assert "Dahua Technology" in db.lookup(0x08EDED000012)
    assert db.lookup(0x402C761A0015) == "Shanghai Dahua Scale Factory"
    assert db.lookup(0x78DF7224694D) == "Shanghai Imilab Technology Co.Ltd"


def test_name_cache_honours_ttl_and_bound():
    cache = NameCache(max_entries=2)
    msg = DnsMessage(True, 0, "a.example", 1, [("a.example", 1, 60, "192.0.2.1")])
    cache.learn(msg, now=1000.0)
    assert cache.lookup(ip("192.0.2.1"), 1000.0 + 60) == "a.example"
    assert cache.lookup(ip("192.0.2.1"), 1000.0 + 60 + 3601) is None  # TTL plus the grace hour
    for k in range(5):
        cache.learn(DnsMessage(True, 0, f"n{k}.example", 1, [(f"n{k}.example", 1, 60, f"192.0.2.{10 + k}")]), 1000.0)
    assert len(cache) == 2 and cache.evicted == 4
    assert cache.lookup(ip("192.0.2.14"), 1000.0) == "n4.example"


def test_raw_address_scopes_equal_the_ipaddress_rules():
    """scope_of_raw (integer ranges, for floods) must classify exactly as address_scope does."""
    import random
    config = parse_config({"networks": {"camera": ["10.20.0.0/24", "fd20::/64"],
                                        "core": ["10.1.0.0/16", "172.20.0.0/14"]}})
    c = Classifier(config)
    rng = random.Random(3)
    special = ["10.20.0.0", "10.20.0.255", "10.20.1.0", "10.1.255.255", "10.2.0.0", "172.19.255.255", "172.20.0.0",
               "172.23.255.255", "172.24.0.0", "192.168.0.1", "100.64.0.1", "100.128.0.1", "169.254.1.1",
               "224.0.0.251", "239.255.255.250", "255.255.255.255", "127.0.0.1", "0.0.0.0", "8.8.8.8",
               "203.0.113.9", "fd20::1", "fd21::1", "fe80::1", "ff02::c", "2001:db8::1", "::1"]
    addresses = [ipaddress.ip_address(a) for a in special]
    addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20_000)]
    addresses += [ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + rng.getrandbits(24))
                  for _ in range(5_000)]
    for a in addresses:
        raw = (b"\x00" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed
        assert c.scope_of_raw(raw) == c.address_scope(a), a


# ---- one schema: the dataclasses state the keys, defaults and bounds; the README documents the same ----------
def _readme_sample_keys() -> set[str]:
    """Every key of README.md's sample camwatch.toml, commented-out ones included, as dotted paths."""
    readme = (REPO / "README.md").read_text()
    sample = re.search(r"## Configuration: `camwatch.toml`.*?```toml\n(.*?)```", readme, re.S)[1]
    found, table = set(), ""
    for line in sample.splitlines():
        if header := re.match(r"\[\[?([a-z_.]+)\]\]?", line):
            table = header[1]
            found.add(table)
        elif (key := re.match(r"(?:#\s*)?([a-z_]+)\s*=", line)) and table != "metrics.basic_auth":  # user names
            found.add(f"{table}.{key[1]}")
    return found


def test_the_readme_sample_config_documents_exactly_the_keys_of_the_schema():
    declared = {key for key, _ in keys(Config)}
    documented = _readme_sample_keys()
    assert declared - documented == set(), "declared in sensor/config.py, missing from README.md's sample"
    assert documented - declared == set(), "in README.md's sample, unknown to sensor/config.py"


def test_the_readme_states_the_bound_of_every_number():
    readme = (REPO / "README.md").read_text()
    numbers = re.search(r"- \*\*Numbers\.\*\*(.*?)\n- \*\*", readme, re.S)[1]
    stated = {}
    for names, bound, days in re.findall(r"((?:`[^`]+`[,)\s]*)+)(?:are )?at most ([0-9,]+)( days)?", numbers):
        for pattern in re.findall(r"`([^`]+)`", names):
            stated[pattern] = int(bound.replace(",", "")) * (86400 if days else 1)
    bounded = {key: s.maximum for key, s in keys(Config) if s.kind in (SECONDS, COUNT) and "." in key
               and not key.startswith("allow.")}
    assert bounded
    for key, maximum in bounded.items():
        pattern = next((p for p in stated if fnmatch.fnmatchcase(key, p)), None)
        assert pattern is not None, f"README.md's Numbers does not give the bound of {key}"
        assert stated[pattern] == maximum, key
    assert all(any(fnmatch.fnmatchcase(key, p) for key in bounded) for p in stated)


def test_defaults_are_stated_once():
    """An empty config, empty sections and the dataclasses' own defaults are one and the same."""
    assert parse_config({}, "(defaults)") == Config()
    sections = {key: s for key, s in keys(Config) if isinstance(s.kind, Section)}
    assert parse_config({name: {} for name in sections}, "(defaults)") == Config()
    for name, s in sections.items():
        assert load(s.kind.schema, {}, name) == s.kind.schema() == getattr(Config(), name)
    assert Config().flows.max_flows == default_max_flows(Config().max_devices)   # the unset rule agrees


def test_every_key_has_a_doc_line_and_every_bound_a_maximum():
    for key, s in keys(Config):
        assert s.doc, key
        if s.kind in (SECONDS, COUNT):
            assert s.maximum, key


def test_the_flat_names_read_their_sections():
    config = parse_config({"sensor": {"name": "site-a"}, "alerts": {"episode_timeout": 60},
                           "limits": {"max_devices": 5, "max_names": 7}, "detect": {"learning_period": 9},
                           "state": {"path": "/x.db"}, "capture": {"buffer_mib": 128},
                           "networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]}})
    assert (config.sensor_name, config.episode_timeout, config.max_devices, config.max_names,
            config.learning_period, config.state_path, config.capture_buffer_mib) == (
        "site-a", 60.0, 5, 7, 9.0, "/x.db", 128)
    assert [str(n) for n in config.camera_networks + config.core_networks] == ["10.20.0.0/24", "10.1.0.0/16"]
    assert config.flows.max_flows == MIN_DEFAULT_FLOWS    # unset: sized from limits.max_devices


# ---- the shipped reference data, through the same schema -------------------------------------------------------
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
