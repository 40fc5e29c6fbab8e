"""Hostile and mistyped configuration: whatever a typo could turn into a silent hole is a one-line exit 2 naming
the key, through the CLI and in process; values at the bounds and the documented and shipped configs still load.
(The password check's timing is in unit/test_export_auth.py; the endpoint's scheme and mutual TLS in
e2e/test_metrics_server.py.)"""

from __future__ import annotations

import base64
import ipaddress
import re
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, SYNTHETIC, alerts_of, camwatch, evidence_of

from sensor.config import Config, parse_config
from sensor.enrich import Classifier
from sensor.errors import ConfigError
from sensor.schema import keys

SITE = SYNTHETIC / "camera_site.pcap"


_ZERO_SALT = base64.b64encode(bytes(16)).decode()
_ZERO_DIGEST = base64.b64encode(bytes(32)).decode()


def _hash(iterations="200000", salt=_ZERO_SALT, digest=_ZERO_DIGEST) -> str:
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


ADDRESSES = [   # look like an address or CIDR, are not valid ones: must not become DNS name patterns
    ('[[allow]]\ndst = "10.1.5.300"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "1.2.3"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "10.1.5.0/33"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "10.1.5.*"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "10.1.5.10."\n', "allow[1].dst"),
    ('[[allow]]\ndst = "2001:db8::zz"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "fe80::1%eth0"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "a..example.com"\n', "allow[1].dst"),
    ('[networks]\ncamera = ["10.20.0.300/24"]\n', "networks.camera"),
    ('[networks]\ncore = ["10.1.0.0/33"]\n', "networks.core"),
    ('[networks]\ncore = ["10.1"]\n', "networks.core"),
]
HOST_BITS = [   # a CIDR typo that would silently widen (or move) the network
    ('[[allow]]\ndst = "10.1.5.10/8"\n', "allow[1].dst '10.1.5.10/8' has host bits set: write 10.0.0.0/8"),
    ('[[allow]]\ndst = "2001:db8::1/32"\n', "allow[1].dst '2001:db8::1/32' has host bits set: write 2001:db8::/32"),
    ('[networks]\ncamera = ["10.20.0.5/24"]\n', "networks.camera '10.20.0.5/24' has host bits set: write 10.20.0.0/24"),
    ('[networks]\ncore = ["10.1.5.10/8"]\n', "networks.core '10.1.5.10/8' has host bits set: write 10.0.0.0/8"),
    ('[[allow]]\ndst = "203.0.113.50/0"\n', "allow[1].dst '203.0.113.50/0' has host bits set"),
]
ALLOW_EVERYTHING = [   # refused without allow_all = true, and the message says so
    ('[[allow]]\ndst = "0.0.0.0/0"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "0.0.0.0/1"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "::/0"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "2000::/3"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "*"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "*.*"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "?*"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "*.com"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "*hik-connect.com"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "www.*.com"\nport = 443\n', "allow[1].dst"),
    ('[[allow]]\ndst = "*.example.com"\n[[allow]]\ndst = "*.net."\n', "allow[2].dst"),
]
OTHER_BROAD = [
    ('[networks]\ncamera = ["0.0.0.0/0"]\n', "networks.camera '0.0.0.0/0' covers public address space"),
    ('[networks]\ncamera = ["::/0"]\n', "networks.camera '::/0' covers public address space"),
    ('[[allow]]\ndst = "203.0.113.5"\nallow_all = true\n', "allow[1].allow_all"),
    ('[[allow]]\ndst = "*.example.com"\nallow_all = true\n', "allow[1].allow_all"),
    ('[[allow]]\ndst = "0.0.0.0/0"\nallow_all = "yes"\n', "allow[1].allow_all"),
]
SECONDS = {"flows.tcp_idle_timeout": 30, "flows.udp_idle_timeout": 30, "flows.icmp_idle_timeout": 30,
           "flows.tcp_closed_timeout": 30, "flows.active_timeout": 30, "alerts.episode_timeout": 30,
           "detect.learning_period": 365}   # upper bound, in days
COUNTS = {"flows.max_flows": 10_000_000, "limits.max_devices": 1_000_000, "limits.max_names": 10_000_000,
          "capture.buffer_mib": 65536}


def _number(key: str, value: str) -> str:
    section, name = key.split(".")
    return f"[{section}]\n{name} = {value}\n"


ALL_NUMBERS = [(_number(key, v), key) for key, days in SECONDS.items() for v in (
    "nan", "inf", "-inf", "+nan", "-1", "0", "0.0", str(days * 86400 + 1), "1e400", "9" * 400, "true", '"5m"')]
ALL_NUMBERS += [(_number(key, v), key) for key, top in COUNTS.items()
                for v in ("nan", "inf", "-5", "0", str(top + 1), "1.5", "1e6", "9" * 400, "false")]
# through the command line (a process each), every key with a sample; all of them in process below
NUMBERS = [(toml, key) for toml, key in ALL_NUMBERS if toml.endswith(("= nan\n", "= inf\n", "= -1\n", "= -5\n"))]
HASHES = [(f'[metrics.basic_auth]\nprometheus = "{h}"\n', "metrics.basic_auth.prometheus") for h in (
    _hash(iterations="999999999999"),
    _hash(iterations="9999"),
    _hash(iterations="abc"),
    _hash(iterations="+200000"),
    _hash(iterations="200_000"),
    _hash(iterations=" 200000"),
    _hash(salt="!!!not-base64!!!"),
    _hash(salt=base64.b64encode(bytes(8)).decode()),
    _hash(salt=""),
    _hash(digest=base64.b64encode(bytes(16)).decode()),
    _hash(digest=base64.b64encode(bytes(32)).decode().rstrip("=")),
    _hash(digest="A" * 42 + "B="),   # decodes, but not canonically: padding bits set
    "pbkdf2_sha1$200000$AAAA$AAAA",
    "plaintext",
)]
HASHES += [
    ('[metrics.basic_auth]\nprometheus = 5\n', "metrics.basic_auth.prometheus"),
    (f'[metrics.basic_auth]\n"scraper:x" = "{_hash()}"\n', "metrics.basic_auth.'scraper:x'"),
    (f'[metrics.basic_auth]\nalice = "{_hash("100000")}"\nbob = "{_hash()}"\n', "metrics.basic_auth.bob"),
]
NESTING = [   # deeper than tomllib's recursion allows, and deep values where a string or list belongs
    ("a = " + "[" * 100_000 + "]" * 100_000, "a (line 1) is nested too deeply"),
    ('[sensor]\nname = "x"\n[metrics]\n# [[[ a comment\nlisten = "127.0.0.1:1"  # [\nbasic_auth = '
     + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "metrics.basic_auth (line 6) is nested too deeply"),
    ('[[allow]]\ndst = "a.example.com"\ncomment = """two\n[[[ lines"""\nport = ' + "[" * 2000 + "]" * 2000,
     "allow.port (line 5) is nested too deeply"),
    ("[networks]\ncamera = " + "[" * 300 + "]" * 300 + "\n", "networks.camera"),
    ('[[allow]]\ndst = "a.example.com"\ncomment = ' + "[" * 300 + "]" * 300 + "\n", "allow[1].comment"),
    ("[flows]\nmax_flows = " + "9" * 5000 + "\n", "flows.max_flows (line 2)"),
]
KEYS = [   # user-supplied key names and values stay on one line
    ('["sensor\\nextra"]\n', "unknown section ['sensor\\nextra']"),
    ('[sensor]\n"na\\nme" = 1\n', "unknown key sensor.'na\\nme'"),
    ('[sensor]\nname = "two\\nlines"\n', "sensor.name"),
    ('[[allow]]\ndst = "evil\\n.example.com"\n', "allow[1].dst"),
    ('[[allow]]\ndst = "' + "a" * 100_000 + '.example.com"\n', "allow[1].dst"),
    ('[state]\npath = "a\\u0000b"\n', "state.path"),
    ('[metrics]\ntls_cert = "a\\u0000"\ntls_key = "k"\n', "metrics.tls_cert"),
]


def _ids(cases):
    return [re.sub(r"\s+", " ", toml)[:60] for toml, _ in cases]


def _refused(tmp_path: Path, toml: str) -> str:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    proc = camwatch("replay", SITE, "--config", config, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("camwatch: config error: "), proc.stderr[:2000]
    assert len(lines[0]) < 600, lines[0][:2000]
    return lines[0]


@pytest.mark.parametrize("toml,key", ADDRESSES, ids=_ids(ADDRESSES))
def test_invalid_addresses_are_refused(tmp_path, toml, key):
    line = _refused(tmp_path, toml)
    assert key in line and ("not an IP network" in line or "not a valid one" in line or "CIDR" in line
                            or "not a DNS name" in line or "scoped" in line)


@pytest.mark.parametrize("toml,message", HOST_BITS, ids=_ids(HOST_BITS))
def test_host_bits_are_refused_with_the_network_meant(tmp_path, toml, message):
    assert message in _refused(tmp_path, toml)


@pytest.mark.parametrize("toml,key", ALLOW_EVERYTHING, ids=_ids(ALLOW_EVERYTHING))
def test_allow_everything_needs_the_acknowledgement_key(tmp_path, toml, key):
    line = _refused(tmp_path, toml)
    assert key in line and "allow_all = true" in line


@pytest.mark.parametrize("toml,message", OTHER_BROAD, ids=_ids(OTHER_BROAD))
def test_broad_camera_networks_and_misplaced_acknowledgements_are_refused(tmp_path, toml, message):
    assert message in _refused(tmp_path, toml)


@pytest.mark.parametrize("toml,key", NUMBERS, ids=_ids(NUMBERS))
def test_numbers_must_be_finite_positive_and_bounded(tmp_path, toml, key):
    line = _refused(tmp_path, toml)
    assert f"{key} must be a positive" in line or f"{key} (line" in line, line


@pytest.mark.parametrize("toml,key", HASHES, ids=_ids(HASHES))
def test_password_hashes_are_verified_at_load(tmp_path, toml, key):
    assert key in _refused(tmp_path, toml)


@pytest.mark.parametrize("toml,message", NESTING, ids=_ids(NESTING))
def test_pathological_nesting_is_one_line_naming_the_key(tmp_path, toml, message):
    assert message in _refused(tmp_path, toml)


@pytest.mark.parametrize("toml,message", KEYS, ids=_ids(KEYS))
def test_hostile_names_and_values_stay_on_one_line(tmp_path, toml, message):
    assert message in _refused(tmp_path, toml)


def test_oversized_and_binary_files_are_not_configs(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    assert "larger than 1024 KiB" in _refused(tmp_path, big.read_text())
    proc = camwatch("replay", SITE, "--config", SITE, "--quiet")   # a pcap passed as the config
    assert proc.returncode == 2 and "not a camwatch.toml" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_good_values_at_the_bounds_still_load():
    config = parse_config({
        "flows": {"tcp_idle_timeout": 30 * 86400, "udp_idle_timeout": 0.5, "max_flows": 10_000_000},
        "alerts": {"episode_timeout": 30 * 86400.0}, "detect": {"learning_period": 365 * 86400},
        "limits": {"max_devices": 1_000_000, "max_names": 10_000_000},
        "networks": {"camera": ["10.0.0.0/8", "fc00::/7", "192.168.1.7"], "core": ["0.0.0.0/0"]},
        "allow": [{"dst": "10.1.5.10"}, {"dst": "10.1.5.0/24"}, {"dst": "2001:db8::/32"}, {"dst": "*.example.com"},
                  {"dst": "cam?.site.example.com."}, {"dst": "*.*.example.com"}, {"dst": "ntp"},
                  {"dst": "fe80::/10"}, {"dst": "100.64.0.0/10"}, {"dst": "_sip._udp.example.com"}],
        "metrics": {"basic_auth": {"a": _hash("10000"), "b": _hash("10000", base64.b64encode(bytes(64)).decode())}},
    })
    assert config.flows.tcp_idle_timeout == 30 * 86400 and config.max_devices == 1_000_000
    assert [str(n) for n in config.camera_networks] == ["10.0.0.0/8", "fc00::/7", "192.168.1.7/32"]
    assert config.allow[4].dst_pattern == "cam?.site.example.com."
    assert not any(rule.allow_all for rule in config.allow)


def test_acknowledged_allow_all_rules_are_accepted_and_match_everything(tmp_path):
    ip = ipaddress.ip_address
    config = parse_config({"allow": [{"dst": "0.0.0.0/0", "allow_all": True, "comment": "lab: anything goes"},
                                     {"dst": "::/0", "allow_all": True},
                                     {"dst": "*", "allow_all": True, "port": 443, "proto": "tcp"}]})
    assert all(rule.allow_all for rule in config.allow)
    c = Classifier(config)
    for address in ("8.8.8.8", "203.0.113.50", "198.51.100.20", "1.1.1.1", "2001:db8::1", "2a00:1450::1"):
        assert c.destination_scope(ip(address), None, 12345, "udp")[0] == "allowed", address
    assert config.allow[2].matches(ip("192.0.2.1"), "anything.at.all", 443, "tcp")
    assert not config.allow[2].matches(ip("192.0.2.1"), None, 443, "tcp")   # names only
    assert c.name_allowed("whatever.example")

    # End to end: the site's public destinations are allowed, so the egress alerts are silenced.
    site = tmp_path / "c.toml"
    site.write_text('[networks]\ncamera = ["10.20.0.0/24"]\n[[allow]]\ndst = "0.0.0.0/0"\nallow_all = true\n')
    proc = camwatch("replay", SITE, "--config", site, "--quiet")
    assert proc.returncode == 0, proc.stderr
    baseline = alerts_of(camwatch("replay", SITE, "--quiet").stdout)
    alerts = alerts_of(proc.stdout)
    assert any(det == "egress_policy" for _, det, _, _ in evidence_of(baseline))
    assert not any(det == "egress_policy" for _, det, _, _ in evidence_of(alerts))
    assert all(a["destination"]["scope"] == "allowed" for a in alerts if a["destination"]["scope"] != "camera")


def _toml_blocks(path: Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("path", [REPO / "README.md", REPO / "docs/deploy.md"], ids=lambda p: p.name)
def test_documented_examples_load(path):
    blocks = _toml_blocks(path)
    assert blocks
    for block in blocks:
        parse_config(tomllib.loads(block), str(path))


def test_shipped_configs_load():
    from sensor.config import load_config
    for path in [*REPO.glob("pcaps/**/*.toml"), *REPO.glob("bench/*.toml")]:
        load_config(path)
    import scenarios  # pcaps/ is on sys.path (conftest)
    parse_config(tomllib.loads(scenarios.SITE_TOML))


def test_config_errors_name_the_key_in_process():
    for toml, key in ADDRESSES + ALLOW_EVERYTHING + HASHES + ALL_NUMBERS:
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_config(tomllib.loads(toml))


def _holding(key: str, value) -> tuple[dict, str]:
    """A config whose schema key `key` holds `value` (an allow rule's other keys valid), and the key's name as an
    error gives it."""
    section, _, name = key.partition(".")
    if not name:
        return {section: value}, key
    if section == "allow":
        rule = {"dst": "a.example.com", name: value}
        return {"allow": [rule]}, f"allow[1].{name}"
    if section == "sites":   # a named table: sites.*.KEY, with the site's other keys valid
        site = {"subnets": ["10.0.0.0/8"], name.removeprefix("*."): value}
        return {"sites": {"hq": site}}, f"sites.hq.{name.removeprefix('*.')}"
    table: dict = {}
    inner = table
    *parents, last = key.split(".")            # nested sections ([detect.uploads]) as tables within tables
    for part in parents:
        inner = inner.setdefault(part, {})
    inner[last] = value
    return table, key


@pytest.mark.parametrize("key", [key for key, _ in keys(Config)])
def test_every_key_of_the_schema_refuses_a_wrong_type_naming_it(key):
    """Generated from the schema, so a key added there is covered here without a new case."""
    for wrong in ({"x": {"y": 1}}, [{"x": 1}], float("nan"), float("inf")):
        raw, shown = _holding(key, wrong)
        with pytest.raises(ConfigError) as caught:
            parse_config(raw)
        line = str(caught.value)
        assert line.startswith("config: ") and shown in line and "\n" not in line, (wrong, line)
