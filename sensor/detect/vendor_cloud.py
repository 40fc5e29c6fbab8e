"""vendor_cloud: cameras reaching vendor cloud / P2P services, recognised by DNS query, SNI/Host name, payload
signature or service port (indicators.py)."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import covered_note, describe_destination, describe_device, severity_for
from sensor.enrich import DnsQuery, Observation


class VendorCloudDetector(Detector):
    name = "vendor_cloud"

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.indicators = context.indicators

    def dns_query(self, query: DnsQuery) -> Alert | None:
        if query.allowed:
            return None
        dev = query.device
        svc = self.indicators.by_name(query.qname)
        if svc is None or not self.new_episode((dev.id, svc.id, "dns"), query.ts, 1, 0):
            return None
        obs = Observation(query.ts, dev, 1, 0, True, query.resolver, 53, "udp", query.qname, query.resolver_scope,
                          query.vlan)
        summary = (f"{describe_device(dev)} looked up {query.qname}, a {svc.name} name: the device is set up to "
                   f"reach its vendor's cloud.{covered_note(dev)}")
        return self.alert(obs, "medium", 0.8, summary, service=svc.id, evidence=f"looked up {query.qname}")

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or obs.sent_packets == 0:
            return None
        found = self.indicators.match(obs)
        if found is None:
            return None
        svc, evidence = found
        # One episode per way of recognising it (each name, the signature, each port): the registration by the
        # vendor's signalling name is evidence of its own next to the NTP query that came first. They all join the
        # one incident of the device and the service.
        if not self.new_episode((obs.device.id, svc.id, evidence), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        dev = obs.device
        summary = (f"{describe_device(dev)} is talking to {svc.name} at "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)}, recognised by {evidence}."
                   f"{covered_note(dev)}")
        return self.alert(obs, severity_for(dev, "high", "medium"), 0.95, summary, service=svc.id,
                          evidence=evidence)
