"""sensor/enrich/scope.py: zero-config learning judged on integers (Classifier.learn_range) gives exactly what the
ipaddress version it replaced gave, on random and hostile networks (forged masks down to /0, IPv6, link-local,
multicast, loopback, IPv4-mapped), through the bound, nested networks and routers taking back what they taught."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import DEFAULT_CAMERA_NETWORKS, Config, parse_config
from sensor.enrich import Classifier
from sensor.enrich.scope import MAX_LEARNED_NETWORKS, MIN_LEARNED_PREFIX

_PRIVATE = tuple(ipaddress.ip_network(n) for n in DEFAULT_CAMERA_NETWORKS)
_UNICAST_V6 = (ipaddress.IPv6Network("2000::/3"), ipaddress.IPv6Network("fc00::/7"))


class Reference:
    """Classifier.learn and forget_taught_by as they were: ipaddress's subnet_of and a scan of every learnt
    network."""

    def __init__(self, zero_config: bool = True):
        self.zero_config = zero_config
        self.learned: dict = {}
        self.learned_dropped = 0

    def learn(self, network, taught_by: int = 0) -> bool:
        if not self.zero_config or network.prefixlen < MIN_LEARNED_PREFIX[network.version]:
            return False
        if network.version == 4 and not any(network.subnet_of(n) for n in _PRIVATE if n.version == 4):
            return False
        if network.version == 6 and not any(network.subnet_of(n) for n in _UNICAST_V6):
            return False
        if network.is_link_local or network.is_multicast or network.is_loopback:
            return False
        for known in self.learned:
            if known.version == network.version and network.subnet_of(known):
                if not taught_by and self.learned[known]:
                    self.learned[known] = 0
                return False
        if len(self.learned) >= MAX_LEARNED_NETWORKS:
            self.learned_dropped += 1
            return False
        self.learned[network] = taught_by
        return True

    def forget_taught_by(self, mac: int) -> None:
        for network in [n for n, by in self.learned.items() if by and by == mac]:
            del self.learned[network]


# Where the rules have edges: private space and its neighbours, link-local, multicast, loopback, the ends.
V4_SEEDS = ["10.0.0.0", "10.255.255.255", "9.255.255.255", "11.0.0.0", "172.16.0.0", "172.31.255.255",
            "172.15.255.255", "172.32.0.0", "192.168.0.0", "192.168.255.255", "192.167.255.255", "192.169.0.0",
            "100.64.0.0", "100.127.255.255", "100.63.255.255", "100.128.0.0", "169.254.1.1", "224.0.0.251",
            "239.255.255.250", "127.0.0.1", "0.0.0.0", "255.255.255.255", "8.8.8.8"]
V6_SEEDS = ["::", "::1", "fe80::1", "febf::1", "ff02::1", "fc00::", "fdff:ffff::1", "fbff::1", "fe00::1", "2000::",
            "3fff:ffff::1", "4000::", "1fff::1", "2001:db8::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::"]


def _address(rng: random.Random) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    pick = rng.random()
    if pick < 0.35:
        seed = ipaddress.ip_address(rng.choice(V4_SEEDS + V6_SEEDS))
        bits = 32 if seed.version == 4 else 128
        return ipaddress.ip_address(seed._ip ^ rng.getrandbits(rng.choice((0, 4, 8, 16, 24))) % (1 << bits))
    if pick < 0.65:   # many networks inside private space: the bound and nesting are reached
        return ipaddress.IPv4Address(0x0A000000 | rng.getrandbits(rng.choice((8, 12, 18, 24))))
    if pick < 0.8:
        return ipaddress.IPv4Address(rng.getrandbits(32))
    if pick < 0.9:
        return ipaddress.IPv6Address(0xFD00 << 112 | rng.getrandbits(rng.choice((8, 24, 80))))
    return ipaddress.IPv6Address(rng.getrandbits(128))


def _prefix(rng: random.Random, version: int) -> int:
    bits = 32 if version == 4 else 128
    return rng.choice((0, 1, 7, 8, 15, 16, 17, 23, 24, 25, 30, 31, 32, 47, 48, 49, 63, 64, 65, 127, 128,
                       rng.randint(0, bits)))


def _config(zero_config: bool) -> Config:
    return Config() if zero_config else parse_config({"networks": {"camera": ["10.0.0.0/8"]}})


def _run(seed: int, zero_config: bool = True) -> Reference:
    rng = random.Random(seed)
    c = Classifier(_config(zero_config))
    ref = Reference(zero_config)
    for _ in range(rng.choice((40, 200, 600))):
        if rng.random() < 0.03:
            mac = rng.randint(1, 3)
            c.forget_taught_by(mac)
            ref.forget_taught_by(mac)
            continue
        address = _address(rng)
        bits = 32 if address.version == 4 else 128
        prefix = min(_prefix(rng, address.version), bits)
        by = rng.choice((0, 0, 1, 2, 3))
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)   # as the link's text path built it
        expected = ref.learn(network, by)
        if rng.random() < 0.5:
            got = c.learn_range(address.version, int(address), prefix, by)
        else:
            got = c.learn(network, by)
        assert got is expected, (address, prefix, by)
        assert list(c.learned.items()) == list(ref.learned.items())
        assert c.learned_dropped == ref.learned_dropped
        if rng.random() < 0.1:
            probe = _address(rng)
            assert c.scope_of_text(str(probe)) == c.address_scope(probe), probe
    # and the scopes in force are those the reference's networks give
    expect = Classifier(_config(zero_config))
    for network, by in ref.learned.items():
        expect.learned[network] = by
    expect._rebuild()
    for _ in range(200):
        address = _address(rng)
        assert c.address_scope(address) == expect.address_scope(address), address
        # the link's text path: remembered by the text, IPv4 from the integer ranges, cleared as scopes change
        assert c.scope_of_text(str(address)) == expect.address_scope(address), address
    return ref


def test_learn_range_equals_the_ipaddress_reference():
    runs = [_run(seed) for seed in range(40)]
    # not vacuous: the runs reach the bound, keep nested networks and networks taught by a MAC
    assert any(r.learned_dropped for r in runs) and any(len(r.learned) == MAX_LEARNED_NETWORKS for r in runs)
    assert any(a != b and a.version == b.version and a.subnet_of(b) for r in runs for a in r.learned for b in r.learned)
    assert any(by for r in runs for by in r.learned.values()) and any(n.version == 6 for r in runs for n in r.learned)


def test_learn_range_configured_site_learns_nothing():
    for seed in range(5):
        _run(seed, zero_config=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, 32), st.integers(0, 2)), max_size=90))
def test_learn_range_v4_any_address_any_mask(steps):
    c, ref = Classifier(Config()), Reference()
    for value, prefix, by in steps:
        network = ipaddress.IPv4Network((value, prefix), strict=False)
        assert c.learn_range(4, value, prefix, by) is ref.learn(network, by)
    assert list(c.learned.items()) == list(ref.learned.items()) and c.learned_dropped == ref.learned_dropped


def test_learn_range_refuses_what_is_not_a_network():
    """As ipaddress refused it: the link's callers only hand in what its parsers produced."""
    c = Classifier(Config())
    for version, value, prefix in ((4, 0, 33), (4, 1 << 32, 24), (4, -1, 24), (6, 0, 129), (6, 1 << 128, 64),
                                   (4, 0, -1)):
        with pytest.raises(ValueError):
            c.learn_range(version, value, prefix)
    assert not c.learned
