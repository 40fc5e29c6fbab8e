"""Hostile maker evidence: whatever a device says about itself (banners, mDNS, DHCP, certificate names) and whatever
a damaged state row holds, the maker evidence is bounded, never raises, and what it shows is escaped: no line break,
bidi override or control character reaches an alert summary or the inventory."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.config import Config
from sensor.enrich import CoveredMakers, Device, Inventory, ManufDatabase
from sensor.enrich.maker_evidence import IDENTITY_SOURCES, MAX_DETAIL, MAX_ITEMS

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAKERS = CoveredMakers.load()
KEYS = st.sampled_from([*IDENTITY_SOURCES, "protocol", "serial", "firmware"])
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
BAD = ("\n", "\r", "\x1b", "\u202e", "\u2066", "\x00")


def _shown_ok(text: str) -> bool:
    return not any(c in text for c in BAD)


@EXAMPLES
@given(st.lists(st.dictionaries(KEYS, TEXT, max_size=6), max_size=8))
def test_any_identity_is_bounded_and_escaped(reports):
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    for fields in reports:
        inventory.add_identity(dev, fields)
    assert len(dev.maker_items) <= MAX_ITEMS
    for item in dev.maker_items:
        assert _shown_ok(item.detail) and len(item.detail) <= MAX_DETAIL + 1
    line = dev.as_dict()
    assert _shown_ok(line["maker_evidence"] or "") and _shown_ok(line["maker_note"] or "")
    json.dumps(line)


def test_a_banner_with_a_bidi_override_and_a_line_break_is_escaped():
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, {"server": "Hikvision-Webs\u202e\r\nX-Injected: 1", "mdns_name": "cam\x1b[31m"})
    assert dev.maker.name == "Hikvision"
    assert dev.maker_items[0].detail == "server: Hikvision-Webs\\u202e\\x0d\\x0aX-Injected: 1"
    assert dev.role == "camera"
    from sensor.detect.text import covered_note, describe_device
    assert _shown_ok(covered_note(dev)) and _shown_ok(describe_device(dev))


@EXAMPLES
@given(st.one_of(st.none(), st.integers(), TEXT, st.lists(st.one_of(
    st.lists(st.one_of(TEXT, st.integers(), st.none()), max_size=4), TEXT, st.integers()), max_size=40)))
def test_any_stored_maker_evidence_is_read_or_dropped(rows):
    doc = {"ip": "10.30.0.5", "mac": 0, "first_seen": 1.0, "last_seen": 2.0, "packets_sent": 1, "bytes_sent": 1,
           "egress_bytes": {}, "dns_queries": [], "external_peers": [], "identity": {}, "evidence": [],
           "maker_evidence": rows}
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    inventory.restore([doc])
    dev = inventory.devices.get("10.30.0.5")
    assert dev is not None and len(dev.maker_items) <= MAX_ITEMS
    assert all(_shown_ok(i.detail) and _shown_ok(i.maker) for i in dev.maker_items)
    json.dumps(dev.as_dict())
