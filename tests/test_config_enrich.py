"""Configuration validation, address scopes, allowlist matching, manufacturer lookup and the name cache."""

from __future__ import annotations

import ipaddress
import os

import pytest

from sensor.config import Config, capture_ring_mib, load_config, parse_config
from sensor.dissect import DnsMessage
from sensor.enrich import Classifier, ManufDatabase, NameCache, parse_manuf
from sensor.errors import ConfigError

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
