"""sensor/config.py: loading a camwatch.toml and its errors, the default capture ring, the flat names of the
sections, and the README's sample config and stated bounds held to the declared keys."""

from __future__ import annotations

import fnmatch
import os
import re

import pytest
from conftest import REPO

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
