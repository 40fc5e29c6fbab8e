"""sensor/schema.py, as the config's one schema: the dataclasses state every key's default once, its doc line and
its bounds."""

from __future__ import annotations

from sensor.config import Config, default_max_flows, parse_config
from sensor.schema import COUNT, SECONDS, Section, keys, load


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
