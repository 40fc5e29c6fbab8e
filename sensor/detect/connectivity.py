"""Connectivity checks: the small ICMP echo requests a camera sends to a public address to learn whether it is
online. They carry nothing out, are regular by design, and hardcoded_infra reports them (low); egress and beacon
rules leave them alone."""

from __future__ import annotations

from sensor.enrich import Observation
from sensor.tags import TAG_ICMP_ECHO, TAG_ICMP_OTHER

# Mean wire size per packet up to which an ICMP flow of echo alone is a connectivity check: ping's defaults make
# 74 to 98 bytes, and a tunnel over ICMP (ptunnel, icmpsh) fills its packets with far more than this.
ICMP_ECHO_MAX_BYTES = 256


def only_pings(obs: Observation) -> bool:
    """The device's own echo requests and nothing else in the flow, each small."""
    if obs.proto != "icmp" or not obs.initiated or obs.tags & TAG_ICMP_OTHER or not obs.tags & TAG_ICMP_ECHO:
        return False
    return obs.sent_bytes <= ICMP_ECHO_MAX_BYTES * obs.sent_packets
