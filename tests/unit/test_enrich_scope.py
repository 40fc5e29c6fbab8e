"""sensor/enrich/scope.py: address scopes with no config and with a configured site, allowlist matching, and the
integer-range scopes used under floods equal to the ipaddress rules."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

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



def test_raw_scopes_equal_the_ipaddress_rules_with_many_overlapping_networks():
    """The bisection over the cut-up IPv4 space (scope.py _elementary) against address_scope, on sites of up to 40
    overlapping camera and core networks of any length, asked at and around every network's edges in random
    order (so the per-/24 cache is filled by whichever address comes first)."""
    import random
    rng = random.Random(11)
    for _ in range(30):
        nets = [ipaddress.IPv4Network((rng.choice([0x0A000000, 0xAC100000, 0xC0A80000, 0x0B000000])
                                       + rng.getrandbits(16), rng.randint(8, 32)), strict=False)
                for _ in range(rng.randint(1, 40))]
        cut = rng.randint(0, len(nets))
        config = parse_config({"networks": {"camera": [str(n) for n in nets[:cut]] or ["10.99.0.0/16"],
                                            "core": [str(n) for n in nets[cut:]]}})
        c = Classifier(config)
        probes = set()
        for n in nets:
            lo, hi = int(n.network_address), int(n.broadcast_address)
            probes |= {v & 0xFFFFFFFF for v in (lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, rng.randint(lo, hi))}
        probes |= {rng.getrandbits(32) for _ in range(200)}
        for value in rng.sample(sorted(probes), len(probes)):
            a = ipaddress.IPv4Address(value)
            assert c.scope_of_raw(b"\x00" * 10 + b"\xff\xff" + a.packed) == c.address_scope(a), (a, nets)


def test_scopes_of_printed_addresses_equal_the_ipaddress_rules():
    import random
    rng = random.Random(7)
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.0/24", "fd20::/64"], "core": ["10.1.0.0/16"]}}))
    texts = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(3_000)]
    texts += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(1_000)]
    texts += ["10.20.0.7", "10.1.9.9", "fd20::5", "fe80::1", "::ffff:10.20.0.7", "::", "::1", "255.255.255.255"]
    for text in texts:
        assert c.scope_of_text(text) == c.address_scope(ipaddress.ip_address(text)), text
    assert c.scope_of_text("not an address") == c.scope_of_text("10.20.0.300") == "other"

# ---- every scope, allow rules, the raw cache and the per-flow context (mutation testing) -----------------------
def test_every_scope_in_rule_order_with_a_configured_site():
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.0/24", "fd20::/64"], "core": ["10.1.0.0/16",
                                                                                           "fd01::/64"]}}))
    cases = {"224.0.0.251": "multicast", "ff02::c": "multicast", "255.255.255.255": "multicast",
             "127.0.0.1": "other", "::1": "other", "0.0.0.0": "other", "::": "other",
             "169.254.1.1": "link_local", "fe80::1": "link_local", "10.20.0.9": "camera", "fd20::9": "camera",
             "10.1.2.3": "core", "fd01::3": "core", "10.9.9.9": "private", "fd99::1": "private",
             "100.64.0.1": "private", "172.16.0.1": "private", "192.168.0.1": "private",
             "8.8.8.8": "public", "2001:db8::1": "public", "100.128.0.1": "public"}
    assert {a: c.address_scope(ip(a)) for a in cases} == cases
    assert c.is_camera_side(ip("10.20.0.9")) and not c.is_camera_side(ip("10.1.2.3"))
    for a, scope in cases.items():
        address = ip(a)
        raw = (b"\x00" * 10 + b"\xff\xff" + address.packed) if address.version == 4 else address.packed
        assert c.scope_of_raw(raw) == scope, a


def test_raw_scopes_are_cached_per_whole_block_else_per_address_and_the_cache_is_bounded():
    v4 = b"\x00" * 10 + b"\xff\xff"
    c = Classifier(Config())
    raw = v4 + bytes([8, 8, 8, 8])
    assert c.scope_of_raw(raw) == "public" and c._raw_cache == {raw[:15]: "public"}
    c._raw_cache[raw[:15]] = "sentinel"
    assert c.scope_of_raw(v4 + bytes([8, 8, 8, 200])) == "sentinel"   # the same /24, answered from the cache
    edge = v4 + bytes([255, 255, 255, 254])   # 255.255.255.255/32 sits inside its /24: that block is per address
    assert c.scope_of_raw(edge) == "public" and edge in c._raw_cache and edge[:15] not in c._raw_cache
    assert c.scope_of_raw(v4 + bytes([255, 255, 255, 255])) == "multicast"
    for i in range((1 << 16) - 3):
        c.scope_of_raw(v4 + ((11 << 24) + (i << 8)).to_bytes(4, "big"))
    assert len(c._raw_cache) == 1 << 16
    c.scope_of_raw(v4 + bytes([9, 9, 9, 9]))
    assert len(c._raw_cache) == 1


def test_raw_scopes_of_blocks_split_by_a_narrow_network_are_exact_in_any_order():
    """A camera /25 and /32 split their /24s: every address of those blocks, asked in either order, is classified
    as address_scope does, never as the first address of its block was."""
    v4 = b"\x00" * 10 + b"\xff\xff"
    config = parse_config({"networks": {"camera": ["10.20.0.128/25", "10.30.0.7/32"], "core": ["10.1.0.0/16"]}})
    for order in (range(256), range(255, -1, -1)):
        c = Classifier(config)
        for prefix in ((10, 20, 0), (10, 30, 0), (10, 1, 5)):
            for last in order:
                a = ipaddress.IPv4Address(bytes([*prefix, last]))
                assert c.scope_of_raw(v4 + a.packed) == c.address_scope(a), a
        assert c.scope_of_raw(v4 + bytes([10, 1, 5, 1])[:4]) == "core" and v4 + bytes([10, 1, 5]) in c._raw_cache


def test_destinations_inside_the_vlan_multicast_or_loopback_are_never_allowed_by_a_rule():
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.0/24"]},
                                 "allow": [{"dst": "0.0.0.0/0", "allow_all": True}]}))
    rule = c.config.allow[0]
    assert c.destination_scope(ip("10.20.0.9"), None, 80, "tcp") == ("camera", None)
    assert c.destination_scope(ip("239.1.1.1"), None, 80, "udp") == ("multicast", None)
    assert c.destination_scope(ip("127.0.0.1"), None, 80, "tcp") == ("other", None)
    assert c.destination_scope(ip("169.254.1.1"), None, 80, "tcp") == ("allowed", rule)
    assert c.destination_scope(ip("10.9.9.9"), None, 80, "tcp") == ("allowed", rule)
    assert c.destination_scope(ip("8.8.8.8"), None, 80, "tcp") == ("allowed", rule)


def test_the_first_matching_rule_is_returned():
    c = Classifier(parse_config({"allow": [{"dst": "8.8.8.0/24", "port": 53}, {"dst": "8.8.8.8"},
                                           {"dst": "*.example.com"}]}))
    first, second, third = c.config.allow
    assert c.destination_scope(ip("8.8.8.8"), None, 53, "udp") == ("allowed", first)
    assert c.destination_scope(ip("8.8.8.8"), None, 443, "tcp") == ("allowed", second)
    assert c.destination_scope(ip("8.8.4.4"), "a.example.com", 443, "tcp") == ("allowed", third)
    assert c.destination_scope(ip("8.8.4.4"), None, 443, "tcp") == ("public", None)


def test_a_name_is_allowed_only_by_a_name_rule():
    c = Classifier(parse_config({"allow": [{"dst": "8.8.8.8"}, {"dst": "*.example.com", "port": 443}]}))
    assert c.name_allowed("cam.example.com") and c.name_allowed("CAM.example.com.")
    assert not c.name_allowed("example.com") and not c.name_allowed("8.8.8.8")
    assert not Classifier(Config()).name_allowed("cam.example.com")


def test_the_flow_context_remembers_each_sides_peer_scope_until_the_name_changes():
    from sensor.enrich.scope import flow_context, peer_scope
    from sensor.flows import Flow
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.0/24"]},
                                 "allow": [{"dst": "*.example.com"}]}))
    v4 = b"\x00" * 10 + b"\xff\xff"
    flow = Flow(bytes(3) + v4 + bytes([10, 20, 0, 9]) + bytes(2) + v4 + bytes([8, 8, 8, 8]), 20, 6, 40000, 443, 0.0)
    ctx = flow_context(c, flow)
    assert ctx == ("camera", "public", "tcp", 443, None, None, c.generation)
    assert flow_context(c, Flow(flow.key, 20, 6, 40000, 0, 0.0))[3] is None     # no service port
    scope, ctx = peer_scope(c, flow, ctx, True, None)
    assert (scope, ctx) == ("public", ("camera", "public", "tcp", 443, (None, "public"), None, c.generation))
    scope, ctx2 = peer_scope(c, flow, ctx, True, None)
    assert scope == "public" and ctx2 is ctx                                  # unchanged: the same context
    scope, ctx = peer_scope(c, flow, ctx, True, "a.example.com")
    assert (scope, ctx[4]) == ("allowed", ("a.example.com", "allowed"))
    scope, ctx = peer_scope(c, flow, ctx, False, None)
    assert (scope, ctx[4], ctx[5]) == ("camera", ("a.example.com", "allowed"), (None, "camera"))


def test_the_flow_context_judges_allow_rules_by_the_flows_port_and_protocol():
    from sensor.enrich.scope import flow_context, peer_scope
    from sensor.flows import Flow
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.0/24"]},
                                 "allow": [{"dst": "8.8.8.8", "port": 443, "proto": "tcp"}]}))
    v4 = b"\x00" * 10 + b"\xff\xff"
    key = bytes(3) + v4 + bytes([10, 20, 0, 9]) + bytes(2) + v4 + bytes([8, 8, 8, 8])
    tcp, udp = Flow(key, 20, 6, 40000, 443, 0.0), Flow(key, 20, 17, 40000, 443, 0.0)
    assert peer_scope(c, tcp, flow_context(c, tcp), True, None)[0] == "allowed"
    assert peer_scope(c, udp, flow_context(c, udp), True, None)[0] == "public"
    other_port = Flow(key, 20, 6, 40000, 8443, 0.0)
    assert peer_scope(c, other_port, flow_context(c, other_port), True, None)[0] == "public"


def test_without_allow_rules_a_peers_scope_is_its_destination_scope_from_a_fresh_or_stale_context():
    """With no allow rule, peer_scope takes the peer's scope from the flow context rather than from an ipaddress
    object: the same answer as destination_scope, both ways round; a context from before the scopes changed is
    not trusted (destination_scope answers with the scopes now in force)."""
    import random

    from sensor.enrich.scope import flow_context, peer_scope
    from sensor.flows import Flow
    c = Classifier(parse_config({"networks": {"camera": ["10.20.0.128/25", "fd20::/64"], "core": ["10.1.0.0/16"]}}))
    rng = random.Random(9)
    pool = ["10.20.0.9", "10.20.0.200", "10.1.2.3", "192.168.1.1", "8.8.8.8", "224.0.0.251", "255.255.255.255",
            "127.0.0.1", "169.254.3.3", "fd20::5", "2001:db8::1", "fe80::1"]
    for _ in range(300):
        a, b = (ipaddress.ip_address(x) for x in rng.sample(pool, 2))
        if a.version != b.version:
            continue
        raw = [(b"\x00" * 10 + b"\xff\xff" + x.packed) if x.version == 4 else x.packed for x in (a, b)]
        flow = Flow(bytes(3) + raw[0] + bytes(2) + raw[1] + bytes(3), 0, 6, 40000, 443, 0.0)
        flow.orig_is_a = rng.random() < 0.5
        for is_orig in (True, False):
            peer = flow.resp_ip if is_orig else flow.orig_ip
            assert peer_scope(c, flow, flow_context(c, flow), is_orig, None)[0] == \
                c.destination_scope(peer, None, 443, "tcp")[0], (peer, is_orig)
    stale = ("public", "public", "tcp", 443, None, None, c.generation - 1)
    v4 = b"\x00" * 10 + b"\xff\xff"
    flow = Flow(bytes(3) + v4 + bytes([10, 20, 0, 200]) + bytes(2) + v4 + bytes([10, 1, 2, 3]) + bytes(3), 0, 6,
                40000, 443, 0.0)
    assert peer_scope(c, flow, stale, True, None)[0] == "core" and peer_scope(c, flow, stale, False, None)[0] == \
        "camera"


private_v4 = st.builds(lambda third, second, plen: ipaddress.ip_network(f"10.{second}.{third}.0/{plen}", strict=False),
                       st.integers(0, 255), st.integers(0, 3), st.integers(16, 30))
global_v6 = st.builds(lambda word, plen: ipaddress.ip_network(f"2001:db8:{word:x}::/{plen}", strict=False),
                      st.integers(0, 7), st.integers(48, 80))


@settings(max_examples=200, deadline=None)
@given(networks=st.lists(st.one_of(private_v4, global_v6), max_size=80), taught=st.lists(st.integers(0, 2)))
def test_learning_covers_exactly_what_subnet_of_says(networks, taught):
    """The integer "already covered" test gives the answers ipaddress's subnet_of gives, the bound and the MAC that
    taught a network included."""
    c = Classifier(Config())
    reference: dict = {}
    for k, network in enumerate(networks):
        by = taught[k % len(taught)] if taught else 0
        covering = [n for n in reference if n.version == network.version and network.subnet_of(n)]
        expected = not covering and len(reference) < 64
        if covering and not by and reference[covering[0]]:
            reference[covering[0]] = 0
        if expected:
            reference[network] = by
        assert c.learn(network, by) is expected
    assert c.learned == reference
