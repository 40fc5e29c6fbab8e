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
