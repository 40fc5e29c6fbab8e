"""hardcoded_infra: DNS or NTP straight to outside servers instead of the site's; UPnP gateway discovery and
port-mapping requests."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector
from sensor.detect.text import describe_destination, describe_device
from sensor.enrich import Observation, UpnpRequest


class HardcodedInfraDetector(Detector):
    name = "hardcoded_infra"
    SERVICES: dict[tuple[str, int | None], str] = {
        ("udp", 53): "DNS", ("tcp", 53): "DNS", ("tcp", 853): "DNS over TLS", ("udp", 123): "NTP"}

    def observe(self, obs: Observation) -> Alert | None:
        what = self.SERVICES.get((obs.proto, obs.port))
        if what is None or not obs.external or not obs.initiated or obs.sent_packets == 0:
            return None
        if not self.new_episode((obs.device.ip, obs.peer, what), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        summary = (f"{describe_device(obs.device)} sends {what} queries straight to "
                   f"{describe_destination(obs.peer, obs.name, obs.port, obs.proto)} instead of the site's "
                   f"servers: a hard-coded resolver or time source that bypasses site controls.")
        return self.alert(obs, "medium" if what != "NTP" else "low", 0.9, summary, service=what.lower())

    def upnp(self, request: UpnpRequest) -> Alert | None:
        dev, kind = request.device, request.kind
        if not self.new_episode((dev.ip, kind), request.ts, 1, 0):
            return None
        obs = Observation(request.ts, dev, 1, 0, True, request.peer, request.port, request.proto, None,
                          request.scope, request.vlan)
        if kind == "upnp_port_mapping":
            summary = (f"{describe_device(dev)} asked the gateway {request.peer} to open a port through the "
                       f"firewall (UPnP AddPortMapping{request.detail}).")
            return self.alert(obs, "high", 1.0, summary, service=kind)
        summary = (f"{describe_device(dev)} is searching for an Internet gateway it could open ports on "
                   f"(UPnP IGD M-SEARCH); no port mapping seen yet.")
        return self.alert(obs, "low", 0.6, summary, service=kind)
