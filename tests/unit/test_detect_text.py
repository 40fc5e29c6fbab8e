"""sensor/detect/text.py's with_place: the destination's country and owner follow the first mention of its address
in a summary, whatever the phrase around it, and never a longer address that merely starts or ends the same."""

from __future__ import annotations

import pytest

from sensor.detect.text import with_place
from sensor.enrich.geography import Place

CN = Place("CN", 4808, "China Unicom", "CN")


@pytest.mark.parametrize(("summary", "expected"), [
    ("opened a.example (110.43.68.240) tcp/443 on", "opened a.example (110.43.68.240, CN, China Unicom) tcp/443 on"),
    ("sent 3 kB to 110.43.68.240 udp/32100", "sent 3 kB to 110.43.68.240 (CN, China Unicom) udp/32100"),
    ("pings 110.43.68.240 (114DNS) on", "pings 110.43.68.240 (114DNS, CN, China Unicom) on"),
    ("checks in with 110.43.68.240.", "checks in with 110.43.68.240 (CN, China Unicom)."),
    ("first 110.43.68.240 then 110.43.68.240", "first 110.43.68.240 (CN, China Unicom) then 110.43.68.240"),
    ("reached 110.43.68.2400 and 1110.43.68.240", "reached 110.43.68.2400 and 1110.43.68.240"),   # not the address
    ("host-110.43.68.240.example.com", "host-110.43.68.240.example.com"),
    ("no address here", "no address here"),
])
def test_the_place_follows_the_first_mention_of_the_address(summary, expected):
    assert with_place(summary, "110.43.68.240", CN) == expected


def test_ipv6_and_what_is_not_known():
    assert with_place("to 2001:db8::1 tcp/443", "2001:db8::1", CN) == "to 2001:db8::1 (CN, China Unicom) tcp/443"
    assert with_place("to 2001:db8::10 tcp/443", "2001:db8::1", CN) == "to 2001:db8::10 tcp/443"
    assert with_place("to 110.43.68.240 x", "110.43.68.240", None) == "to 110.43.68.240 x"
    assert with_place("to 110.43.68.240 x", "110.43.68.240", Place(None, None, None, None)) == "to 110.43.68.240 x"
    assert with_place("to 110.43.68.240 x", "110.43.68.240", Place("CN", None, None, "CN")) == "to 110.43.68.240 (CN) x"
    assert with_place("to  x", "", CN) == "to  x"
