"""sensor/config.py: loading a camwatch.toml and its errors, the default capture ring, the flat names of the
sections, and the README's sample config and stated bounds held to the declared keys."""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import os
import re

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import MIN_DEFAULT_FLOWS, Config, capture_ring_mib, load_config, parse_config
from sensor.errors import ConfigError
from sensor.schema import COUNT, SECONDS, keys


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


# ---- the README documents the keys and bounds the dataclasses declare -----------------------------------------
def _readme_sample_keys() -> set[str]:
    """Every key of README.md's sample camwatch.toml, commented-out ones included, as dotted paths."""
    readme = (REPO / "README.md").read_text()
    sample = re.search(r"## Configuration: `camwatch.toml`.*?```toml\n(.*?)```", readme, re.S)[1]
    found, table = set(), ""
    for line in sample.splitlines():
        if header := re.match(r"\[\[?([a-z_.-]+)\]\]?", line):
            table = re.sub(r"^(sites)\.[^.]+", r"\1.*", header[1])   # named tables: any name stands for *
            found.add(table.removesuffix(".*"))
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


def test_detector_tuning_reads_its_nested_sections():
    config = parse_config({"detect": {"uploads": {"burst_bytes": 400_000, "trickle_window": 300},
                                      "beaconing": {"min_checkins": 6, "threshold": 0.9, "checkin_gap": 2.5}}})
    uploads, beaconing = config.detect.uploads, config.detect.beaconing
    assert (uploads.burst_bytes, uploads.trickle_window, uploads.stream_rate) == (400_000, 300, 200_000)
    assert (beaconing.min_checkins, beaconing.threshold, beaconing.checkin_gap) == (6, 0.9, 2.5)
    assert beaconing.timing_threshold == 0.8 and config.learning_period == 86400.0


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


# ---- exact outcomes of every check (mutation testing, docs/mutation-core.md) -----------------------------------
_Z16 = base64.b64encode(bytes(16)).decode()
_Z32 = base64.b64encode(bytes(32)).decode()


def _hash(iterations="200000", salt=_Z16, digest=_Z32) -> str:
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


REFUSED = [
    ({'networks': {'camera': '10.0.0.0/8'}},
     'config: networks.camera must be a list of CIDR strings'),
    ({'networks': {'camera': [5]}},
     'config: networks.camera: every entry must be a CIDR string, not a int'),
    ({'networks': {'camera': ['0.0.0.0/0']}},
     "config: networks.camera '0.0.0.0/0' covers public address space wholesale (wider than "
     "/8): camera-side traffic to it would never be egress"),
    ({'networks': {'camera': ['::/0']}},
     "config: networks.camera '::/0' covers public address space wholesale (wider than /16): "
     "camera-side traffic to it would never be egress"),
    ({'networks': {'camera': ['2000::/15']}},
     "config: networks.camera '2000::/15' covers public address space wholesale (wider than "
     "/16): camera-side traffic to it would never be egress"),
    ({'networks': {'camera': ['224.0.0.0/3']}},
     "config: networks.camera '224.0.0.0/3' covers public address space wholesale (wider than "
     "/8): camera-side traffic to it would never be egress"),
    ({'networks': {'camera': ['fe80::1%eth0']}},
     "config: networks.camera 'fe80::1%eth0': scoped addresses (%zone) are not supported"),
    ({'networks': {'camera': ['10.1']}},
     "config: networks.camera '10.1' is not an IP network (an address or CIDR)"),
    ({'networks': {'camera': ['10.20.0.5/24']}},
     "config: networks.camera '10.20.0.5/24' has host bits set: write 10.20.0.0/24 for the network, "
     "or 10.20.0.5 for the one host"),
    ({'networks': {'core': ['203.0.113.50/0']}},
     "config: networks.core '203.0.113.50/0' has host bits set: write 203.0.113.50 for the one "
     "host; 0.0.0.0/0 would cover public address space wholesale"),
    ({'allow': [{'dst': '203.0.113.50/0'}]},
     "config: allow[1].dst '203.0.113.50/0' has host bits set: write 203.0.113.50 for the one "
     "host; 0.0.0.0/0 would cover public address space wholesale (and needs allow_all = true "
     "on the rule)"),
    ({'allow': [{'dst': '0.0.0.0/0'}]},
     "config: allow[1].dst '0.0.0.0/0' covers public address space wholesale (wider than /8); "
     "if this rule really must allow that much, say so with allow_all = true on it"),
    ({'allow': [{'dst': '::/0'}]},
     "config: allow[1].dst '::/0' covers public address space wholesale (wider than /16); if "
     "this rule really must allow that much, say so with allow_all = true on it"),
    ({'allow': [{'dst': '10.1.5.0/24', 'allow_all': True}]},
     "config: allow[1].allow_all = true, but dst '10.1.5.0/24' is not a rule that needs it: "
     "remove allow_all (it acknowledges /0-like networks and patterns like '*' only)"),
    ({'allow': [{'dst': '203.0.113.5', 'allow_all': True}]},
     "config: allow[1].allow_all = true, but dst '203.0.113.5' is not a rule that needs it: "
     "remove allow_all (it acknowledges /0-like networks and patterns like '*' only)"),
    ({'allow': [{'dst': '*.example.com', 'allow_all': True}]},
     "config: allow[1].allow_all = true, but dst '*.example.com' is not a rule that needs it: "
     "remove allow_all (it acknowledges /0-like networks and patterns like '*' only)"),
    ({'allow': [{'dst': 'bad name!'}]},
     "config: allow[1].dst 'bad name!' is neither an IP/CIDR nor a DNS name pattern (letters, "
     "digits, '-', '_', '.', and the wildcards '*' and '?'; internationalised names in punycode)"),
    ({'allow': [{'dst': 'a..example.com'}]},
     "config: allow[1].dst 'a..example.com' is not a DNS name pattern (empty label, or a label "
     "over 63 characters, or a name over 253)"),
    ({'allow': [{'dst': "a" * 64 + ".example.com"}]},
     f"config: allow[1].dst '{'a' * 64}.example.com' is not a DNS name pattern (empty label, "
     "or a label over 63 characters, or a name over 253)"),
    ({'allow': [{'dst': ("a" * 63 + ".") * 4}]},
     f"config: allow[1].dst '{('a' * 63 + '.' + 'a' * 16)}'... is not a DNS name pattern (empty "
     "label, or a label over 63 characters, or a name over 253)"),
    ({'allow': [{'dst': '2001:db8::zz'}]},
     "config: allow[1].dst '2001:db8::zz' is not an IP network (an address or CIDR)"),
    ({'allow': [{'dst': '10.0.0.1%eth0'}]},
     "config: allow[1].dst '10.0.0.1%eth0': scoped addresses (%zone) are not supported"),
    ({'allow': [{'dst': ".".join(["a" * 63] * 3 + ["b" * 62])}]},
     f"config: allow[1].dst '{'a' * 63 + '.' + 'a' * 16}'... is not a DNS name pattern (empty label, or a label "
     "over 63 characters, or a name over 253)"),
    ({'allow': [{'dst': '10.1.5.300'}]},
     "config: allow[1].dst '10.1.5.300' looks like an IP address or CIDR but is not a valid one"),
    ({'allow': [{'dst': '10.1.5.*'}]},
     "config: allow[1].dst '10.1.5.*' looks like an address with wildcards: write a CIDR, e.g. 10.1.5.0/24"),
    ({'allow': [{'dst': '*'}]},
     "config: allow[1].dst '*' is too broad: a wildcard must be followed by at least two whole "
     "labels, as in '*.example.com' (so not '*', '*.com' or '*example.com'); if this rule really "
     "must allow that much, say so with allow_all = true on it"),
    ({'allow': [{'dst': '*.com'}]},
     "config: allow[1].dst '*.com' is too broad: a wildcard must be followed by at least two "
     "whole labels, as in '*.example.com' (so not '*', '*.com' or '*example.com'); if this rule "
     "really must allow that much, say so with allow_all = true on it"),
    ({'allow': [{'dst': 'www.*.com'}]},
     "config: allow[1].dst 'www.*.com' is too broad: a wildcard must be followed by at least "
     "two whole labels, as in '*.example.com' (so not '*', '*.com' or '*example.com'); if this "
     "rule really must allow that much, say so with allow_all = true on it"),
    ({'allow': [{'dst': '10.1.5.0/33'}]},
     "config: allow[1].dst '10.1.5.0/33' is not an IP network (an address or CIDR)"),
    ({'metrics': {'basic_auth': 'x'}},
     'config: metrics.basic_auth must be a table of user = "hash" (from camwatch hash-password)'),
    ({'metrics': {'basic_auth': {'': _hash()}}},
     "config: metrics.basic_auth.'': a user name is 1 to 64 printable characters without ':'"),
    ({'metrics': {'basic_auth': {"u" * 65: _hash()}}},
     f"config: metrics.basic_auth.'{'u' * 65}': a user name is 1 to 64 printable characters without ':'"),
    ({'metrics': {'basic_auth': {'a:b': _hash()}}},
     "config: metrics.basic_auth.'a:b': a user name is 1 to 64 printable characters without ':'"),
    ({'metrics': {'basic_auth': {'a\tb': _hash()}}},
     "config: metrics.basic_auth.'a\\tb': a user name is 1 to 64 printable characters without ':'"),
    ({'metrics': {'basic_auth': {'alice': 5}}},
     'config: metrics.basic_auth.alice must be a hash from camwatch hash-password, not a password'),
    ({'metrics': {'basic_auth': {'alice': 'plaintext'}}},
     'config: metrics.basic_auth.alice must be a hash from camwatch hash-password (pbkdf2_sha256$...), not a password'),
    ({'metrics': {'basic_auth': {'alice': _hash('9999')}}},
     'config: metrics.basic_auth.alice iterations must be a whole number from 10000 to 10000000'),
    ({'metrics': {'basic_auth': {'alice': _hash(salt="!!")}}},
     'config: metrics.basic_auth.alice salt must be 16 to 64 bytes in base64'),
    ({'metrics': {'basic_auth': {'alice': _hash(digest=_Z16)}}},
     'config: metrics.basic_auth.alice digest must be 32 bytes (SHA-256) in base64'),
    ({'metrics': {'basic_auth': {'carol': _hash('10000'), 'alice': _hash('20000'), 'bob': _hash('20000'),
                                 'dave': _hash('10000')}}},
     'config: metrics.basic_auth.carol: every basic_auth hash must use the same iteration count '
     '(found 10000, 20000); make them all with camwatch hash-password'),
    ({'metrics': {'tls_cert': 'c'}},
     'config: metrics.tls_cert and metrics.tls_key go together'),
    ({'metrics': {'tls_key': 'k'}},
     'config: metrics.tls_cert and metrics.tls_key go together'),
    ({'metrics': {'client_ca': 'ca'}},
     'config: metrics.client_ca needs metrics.tls_cert and metrics.tls_key'),
    ({'detect': {'uploads': {'burst_window': 0}}},
     'config: detect.uploads.burst_window must be a positive integer, at most 60 s'),
    ({'detect': {'uploads': {'stream_rate': 2.5e5}}},
     'config: detect.uploads.stream_rate must be a positive integer, at most 10000000000 bit/s'),
    ({'detect': {'uploads': {'trickle': 1}}},
     'config: unknown key detect.uploads.trickle (known: burst_bytes, burst_window, min_packet, stream_rate, '
     'stream_window, trickle_rate, trickle_window, up_down_ratio)'),
    ({'detect': {'beaconing': {'min_checkins': 3}}},
     'config: detect.beaconing.min_checkins must be an integer from 4 to 64'),
    ({'detect': {'beaconing': {'threshold': 80}}},
     'config: detect.beaconing.threshold must be a number above 0 and at most 1'),
]


@pytest.mark.parametrize("raw,message", REFUSED, ids=[m[8:60] for _, m in REFUSED])
def test_each_refused_value_gives_its_exact_one_line_message(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message


def test_networks_at_the_broad_bound_and_wide_special_ranges_are_camera_networks():
    """Prefix /8 (IPv4) and /16 (IPv6) are the widest accepted; multicast, ULA, link-local and IPv6 multicast
    are wider but not public."""
    wide = ["11.0.0.0/8", "2001::/16", "224.0.0.0/4", "fc00::/7", "fe80::/10", "ff00::/8", "192.168.1.7"]
    assert parse_config({"networks": {"camera": [], "core": []}}).camera_networks == ()
    config = parse_config({"networks": {"camera": wide, "core": ["0.0.0.0/0", "::/0"]}})
    assert [str(n) for n in config.camera_networks] == wide[:-1] + ["192.168.1.7/32"]
    assert [str(n) for n in config.core_networks] == ["0.0.0.0/0", "::/0"]
    assert config.effective_camera_networks == config.camera_networks
    assert [str(n) for n in Config().effective_camera_networks] == [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]


def test_allow_rules_read_as_network_or_lowercased_pattern():
    config = parse_config({"allow": [
        {"dst": "10.1.5.10"}, {"dst": "10.1.5.0/24", "port": 554, "proto": "tcp", "comment": "nvr"},
        {"dst": "2001:db8::/32"}, {"dst": "*.Example.COM"}, {"dst": "cam?.site.example.com."},
        {"dst": "0.0.0.0/0", "allow_all": True}, {"dst": "*", "allow_all": True}, {"dst": "ntp"},
        {"dst": "*.*.example.com"}]})
    rules = config.allow
    assert [(str(r.dst_network) if r.dst_network else None, r.dst_pattern) for r in rules] == [
        ("10.1.5.10/32", None), ("10.1.5.0/24", None), ("2001:db8::/32", None), (None, "*.example.com"),
        (None, "cam?.site.example.com."), ("0.0.0.0/0", None), (None, "*"), (None, "ntp"),
        (None, "*.*.example.com")]
    assert parse_config({"allow": [{"dst": "a.b."}]}).allow[0].dst_pattern == "a.b."
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])                               # 253 characters, 63 per label
    assert parse_config({"allow": [{"dst": longest}, {"dst": longest + "."}]}).allow[0].dst_pattern == longest
    assert (rules[1].port, rules[1].proto, rules[1].comment) == (554, "tcp", "nvr")
    assert (rules[0].port, rules[0].proto, rules[0].comment, rules[0].allow_all) == (None, None, "", False)
    assert [r.allow_all for r in rules] == [False] * 5 + [True, True, False, False]


def test_allow_rule_matches_on_protocol_port_network_and_name():
    rules = parse_config({"allow": [{"dst": "10.1.5.0/24", "port": 554, "proto": "tcp"},
                                    {"dst": "*.example.com"}]}).allow
    ip = ipaddress.ip_address
    net, pattern = rules
    assert net.matches(ip("10.1.5.9"), None, 554, "tcp")
    assert not net.matches(ip("10.1.5.9"), None, 554, "udp")
    assert not net.matches(ip("10.1.5.9"), None, 555, "tcp")
    assert not net.matches(ip("10.1.6.9"), "x.example.com", 554, "tcp")     # a network rule ignores names
    assert pattern.matches(ip("192.0.2.1"), "Cam.EXAMPLE.com.", 1, "udp")
    assert not pattern.matches(ip("192.0.2.1"), "example.com", 1, "udp")
    assert not pattern.matches(ip("192.0.2.1"), None, 1, "udp")


def test_name_pattern_matching_ignores_case_and_a_trailing_dot():
    from sensor.config import name_matches
    assert name_matches("*.Example.com.", "a.example.COM")
    assert name_matches("a.example.com", "A.Example.Com.")
    assert not name_matches("*.example.com", "example.com")
    assert not name_matches("a?.example.com", "a.example.com")


_NAME_ALPHABET = "ab.*?[]!-E\n"


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(_NAME_ALPHABET, max_size=8), name=st.text(_NAME_ALPHABET, max_size=10))
def test_name_pattern_matching_is_fnmatch_of_the_folded_name_and_pattern(pattern, name):
    """The shortcuts for plain names and `*` + a plain suffix answer what fnmatch answers, whatever either holds."""
    from sensor.config import name_matches
    want = fnmatch.fnmatchcase(name.lower().rstrip("."), pattern.lower().rstrip("."))
    assert name_matches(pattern, name) == want


def test_name_patterns_of_each_kind_match_as_written():
    from sensor.config import name_matches
    assert name_matches("*", "anything.at.all") and name_matches("*", "")
    assert name_matches("*.example.com", ".example.com")           # fnmatch's * matches nothing too
    assert name_matches("*example.com", "notexample.com")          # no dot: any name ending so
    assert name_matches("p2p*.reolink.com", "p2p3.reolink.com") and not name_matches("p2p*.reolink.com",
                                                                                         "x.reolink.com")
    assert name_matches("dns*.quad9.net", "dns11.quad9.net")
    assert not name_matches("example.com", "a.example.com")
    assert name_matches("*.cam[0-9].example", "a.cam7.example") and name_matches("cam[0-9].example", "cam7.example")
    assert name_matches("*.cam?.example", "a.cam7.example") and name_matches("*.a*.example", "x.ab.example")


def test_basic_auth_users_are_sorted_pairs():
    config = parse_config({"metrics": {"basic_auth": {"zed": _hash(), "amy": _hash()},
                                       "tls_cert": "c.pem", "tls_key": "k.pem", "client_ca": "ca.pem"}})
    assert config.metrics.basic_auth == (("amy", _hash()), ("zed", _hash()))
    assert (config.metrics.tls_cert, config.metrics.tls_key, config.metrics.client_ca) == ("c.pem", "k.pem", "ca.pem")
    user = "u" * 64    # the longest name allowed
    assert parse_config({"metrics": {"basic_auth": {user: _hash()}}}).metrics.basic_auth == ((user, _hash()),)


def test_password_hash_parts_and_their_bounds():
    from sensor.config import parse_password_hash
    salt64 = base64.b64encode(bytes(range(64))).decode()
    assert parse_password_hash(_hash("10000")) == (10000, bytes(16), bytes(32))
    assert parse_password_hash(_hash("10000000", salt64)) == (10_000_000, bytes(range(64)), bytes(32))
    wrong = {
        "pbkdf2_sha1$200000$AAAA$AAAA": "must be a hash from camwatch hash-password (pbkdf2_sha256$...), "
                                        "not a password",
        _hash() + "$x": "must be a hash from camwatch hash-password (pbkdf2_sha256$...), not a password",
        _hash("9999"): "iterations must be a whole number from 10000 to 10000000",
        _hash("10000001"): "iterations must be a whole number from 10000 to 10000000",
        _hash("0200000"): "iterations must be a whole number from 10000 to 10000000",
        _hash("1000000000"): "iterations must be a whole number from 10000 to 10000000",
        _hash(salt=base64.b64encode(bytes(15)).decode()): "salt must be 16 to 64 bytes in base64",
        _hash(salt=base64.b64encode(bytes(65)).decode()): "salt must be 16 to 64 bytes in base64",
        _hash(salt="AAAAAAAAAAAAAAAAAAAAAB=="): "salt must be 16 to 64 bytes in base64",   # padding bits set
        _hash(digest=base64.b64encode(bytes(33)).decode()): "digest must be 32 bytes (SHA-256) in base64",
        _hash(digest="!" * 44): "digest must be 32 bytes (SHA-256) in base64",
    }
    for hashed, message in wrong.items():
        with pytest.raises(ValueError) as caught:
            parse_password_hash(hashed)
        assert str(caught.value) == message, hashed


def test_base64_takes_only_the_one_canonical_spelling():
    from sensor.config import _base64
    assert _base64("AAAA") == bytes(3) and _base64("AAA=") == bytes(2) and _base64("") == b""
    assert _base64("A A=") is None and _base64("AB==") is None and _base64("AAA") is None


def test_machine_memory_without_sysconf_is_sized_as_a_small_sensor(tmp_path, monkeypatch):
    from sensor.config import _machine_memory

    def broken(name):
        raise ValueError(name)
    monkeypatch.setattr(os, "sysconf", broken)
    membership = tmp_path / "cgroup"
    membership.write_text("1:name=systemd:/x\n0::/a\n")
    (tmp_path / "fs/a").mkdir(parents=True)
    (tmp_path / "fs/a/memory.max").write_text(f"{8 << 30}\n")
    assert _machine_memory(tmp_path / "fs", membership) == 4 << 30    # the limit is higher than the fallback
    (tmp_path / "fs/a/memory.max").write_text(f"{1 << 30}\n")
    assert _machine_memory(tmp_path / "fs", membership) == 1 << 30
    (tmp_path / "fs/Xa").mkdir()
    (tmp_path / "fs/Xa/memory.max").write_text(f"{2 << 30}\n")
    membership.write_text("0::/Xa\n")
    assert _machine_memory(tmp_path / "fs", membership) == 2 << 30
    membership.write_text("1:name=systemd:/a\n")                      # no cgroup v2 line
    assert _machine_memory(tmp_path / "fs", membership) == 4 << 30


def test_capture_ring_bounds_exactly():
    mib = 1 << 20
    assert capture_ring_mib(16 * 64 * mib) == 64
    assert capture_ring_mib(16 * 64 * mib - 16) == 64
    assert capture_ring_mib(16 * 65 * mib) == 65
    assert capture_ring_mib(16 * 1024 * mib) == 1024
    assert capture_ring_mib(16 * 1025 * mib) == 1024
    assert capture_ring_mib(0) == 64


def test_default_flow_table_is_50_flows_per_device_between_100k_and_500k():
    from sensor.config import default_max_flows
    assert [default_max_flows(n) for n in (1, 2000, 2001, 10_000, 10_001, 1_000_000)] == [
        100_000, 100_000, 100_050, 500_000, 500_000, 500_000]
    assert parse_config({"limits": {"max_devices": 3000}}).flows.max_flows == 150_000
    assert parse_config({"limits": {"max_devices": 3000}, "flows": {"max_flows": 7}}).flows.max_flows == 7


def test_timeouts_defaults_units_and_bounds():
    from sensor.config import MAX_TIMEOUT
    declared = dict(keys(Config))
    defaults = Config()
    for name, default in [("tcp_idle_timeout", 300.0), ("udp_idle_timeout", 60.0), ("icmp_idle_timeout", 60.0),
                          ("tcp_closed_timeout", 5.0), ("active_timeout", 1800.0)]:
        s = declared[f"flows.{name}"]
        assert (s.kind, s.unit, s.maximum, s.minimum) == (SECONDS, "s", MAX_TIMEOUT, None), name
        assert getattr(defaults.flows, name) == default
    assert MAX_TIMEOUT == 30 * 86400 and defaults.episode_timeout == 3600.0
    s = declared["alerts.episode_timeout"]
    assert (s.kind, s.unit, s.maximum) == (SECONDS, "s", MAX_TIMEOUT)
    assert parse_config({"flows": {"tcp_idle_timeout": 30 * 86400}}).flows.tcp_idle_timeout == 30 * 86400
    with pytest.raises(ConfigError, match=r"^config: flows.tcp_idle_timeout must be a positive number of seconds, "
                                          r"at most 2592000 \(30 days\)$"):
        parse_config({"flows": {"tcp_idle_timeout": 30 * 86400 + 1}})


FILE_ERRORS = [
    (b"[sensor]\nname = 5\n", "c.toml: sensor.name must be a non-empty string of at most 64 printable characters"),
    (b"a = [1,\n", "c.toml: not valid TOML: Invalid value (at end of document)"),
    (b"\xff\xfe", "c.toml: not UTF-8 text (byte 0): not a camwatch.toml"),
    (b"# x\n" + b"\xe9", "c.toml: not UTF-8 text (byte 4): not a camwatch.toml"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "c.toml: a (line 1) is nested too deeply"),
    (b"[flows]\nmax_flows = " + b"9" * 5000 + b"\n",
     "c.toml: flows.max_flows (line 2): an integer of over 4300 digits"),
]


@pytest.mark.parametrize("data,message", FILE_ERRORS, ids=[m[8:40] for _, m in FILE_ERRORS])
def test_config_file_errors_are_exact_one_line_messages(tmp_path, data, message):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_a_config_file_at_the_size_limit_loads_and_one_byte_more_does_not(tmp_path):
    from sensor.config import MAX_CONFIG_BYTES
    path = tmp_path / "c.toml"
    path.write_bytes(b"#" + b"x" * (MAX_CONFIG_BYTES - 2) + b"\n")
    assert load_config(path).source == str(path)
    path.write_bytes(b"#" + b"x" * (MAX_CONFIG_BYTES - 1) + b"\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: larger than 1024 KiB: not a camwatch.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read config: Is a directory"
    assert load_config(None) == Config() and Config().source == "(defaults)"
    assert parse_config({}).source == "config" and parse_config({}, "x.toml").source == "x.toml"


DEEPEST = [
    ("a = [[1]]\nb = [[[2]]]\n", ("b", 2)),
    ("a = [[1]]\n[t]\nb = {x = [1]}\n", ("a", 1)),     # the first of equal depth
    ('# [[[[ \na = "[[[" \nb = [1]\n', ("b", 3)),      # brackets in comments and strings do not count
    ("a = '''\n[[[\n'''\nb = [[1]]\n", ("b", 4)),
    ('[[allow]]\ndst = "x"\nport = [[1]]\n', ("allow.port", 3)),
    ('a = "\\"[[" \nb = [1]\n', ("b", 2)),
    ("[t] # c\nk = {a = {b = 1}}\n", ("t.k", 2)),
    ("a = [1, [2, [3]], [4]]\nb = [[1]]\n", ("a", 1)),
    ('[ "we ird" ]\n"k\\n" = [[1]]\n', ("'\"we ird\".\"k\\\\n\"'", 2)),
    ("x = 1\n", None),
    ("a = [[], [[]]]\nb = [[[]]]\n", ("a", 1)),          # a closing bracket lowers the depth by one
    ("a = [X]\nb = [[1]]\n", ("b", 2)),                 # letters are not brackets
    ("a = [X[[1]]]\nb = [[[1]]]\n", ("a", 1)),
    ("[Xt]\nk = [[1]]\n", ("Xt.k", 2)),
    ("a = [[1]]\n[t]", ("a", 1)),                       # a header on the last line, without a newline
]


@pytest.mark.parametrize("text,found", DEEPEST)
def test_the_deepest_statement_is_named_with_its_line(text, found):
    from sensor.config import _deepest_statement
    assert _deepest_statement(text) == found


def test_the_statement_at_an_offset_is_named_with_its_line():
    from sensor.config import _deepest_statement
    text = "a = 1\nbb = 22222\n[t]\ncc = 3\n"
    assert _deepest_statement(text, stop_at=12) == ("bb", 2)
    assert _deepest_statement(text, stop_at=text.index("3")) == ("t.cc", 4)
    assert _deepest_statement(text, stop_at=len(text) + 5) is None
    assert _deepest_statement(text, stop_at=text.index("\n", 6)) == ("bb", 2)   # at the newline: still line 2
    assert _deepest_statement("[t]\nk = 1\n", stop_at=4) == ("t", 2)           # after a header, before a key


@pytest.mark.parametrize("text,end", [("# c\nx", 3), ("#c", 2), ('"ab"x', 4), ("'ab'x", 4), ('"""a"b"""x', 9),
                                      ("'''a\n'b'''x", 10), ('"a\\"b"x', 6), ("'a\\'b'x", 4), ('"ab\nc"', 4),
                                      ("x", None), ('"ab', 4), ("Xab", None)])
def test_strings_and_comments_are_skipped_to_their_end(text, end):
    from sensor.config import _skip_string_or_comment
    assert _skip_string_or_comment(text, 0) == end


def test_a_comment_after_the_first_line_ends_at_its_own_newline():
    from sensor.config import _skip_string_or_comment
    assert _skip_string_or_comment("x\n# c\ny", 2) == 5


def test_keys_in_messages_are_bare_quoted_or_top_level():
    from sensor.config import _one_line, _shown_key
    assert _shown_key("flows.max_flows") == "flows.max_flows"
    assert _shown_key("x" * 100) == "x" * 100
    assert _shown_key("x" * 101) == repr("x" * 80) + "..."
    assert _shown_key("a b") == "'a b'"
    assert _shown_key("Flows.Max") == "Flows.Max"
    assert _shown_key("") == "(top level)"
    assert _one_line(" a\n  b\tc ") == "a b c"
