"""sensor/enrich/naming.py: the DNS name cache honours TTLs and its bound."""

from __future__ import annotations

from ipaddress import ip_address as ip

from sensor.dissect import DnsMessage
from sensor.enrich import NameCache


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


def test_a_name_lasts_exactly_ttl_plus_the_grace_hour_and_only_answers_teach():
    from sensor.enrich.naming import NAME_GRACE_SECONDS
    assert NAME_GRACE_SECONDS == 3600.0
    cache = NameCache(max_entries=10)
    cache.learn(DnsMessage(False, 0, "q.example", 1, [("q.example", 1, 60, "192.0.2.9")]), 1000.0)   # a question
    cache.learn(DnsMessage(True, 0, None, 1, [("x.example", 1, 60, "192.0.2.8")]), 1000.0)         # no query name
    assert len(cache) == 0
    cache.learn(DnsMessage(True, 0, "a.example", 1, [("a.example", 5, 30, "cdn.example"),
                                                     ("cdn.example", 1, 60, "192.0.2.1"),
                                                     ("cdn.example", 28, 90, "2001:db8::1")]), 1000.0)
    assert cache.lookup("192.0.2.1", 1000.0 + 60 + 3600) == "a.example"
    assert cache.lookup(ip("192.0.2.1"), 1000.0 + 60 + 3600 + 1 / 1024) is None
    assert cache.lookup("2001:db8::1", 1000.0 + 90 + 3600) == "a.example"
    assert cache.lookup("192.0.2.99", 1000.0) is None and len(cache) == 2 and cache.evicted == 0
