"""sensor/enrich/scope.py: address scopes with no config and with a configured site, allowlist matching, and the
integer-range scopes used under floods equal to the ipaddress rules."""

from __future__ import annotations

import ipaddress

from sensor.config import Config, parse_config
from sensor.enrich import Classifier

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
