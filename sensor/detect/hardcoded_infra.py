"""hardcoded_infra: DNS (plain, over TLS, QUIC or HTTPS) or NTP straight to outside servers instead of the site's,
ICMP connectivity checks to public addresses, UPnP gateway discovery and port-mapping requests."""

from __future__ import annotations

from functools import cache

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.indicators import Resolvers
from sensor.detect.text import describe_destination, describe_device
from sensor.enrich import SCOPE_PUBLIC, Observation, UpnpRequest
from sensor.reference_data import Resolver
from sensor.tags import TAG_ICMP_ECHO

DOH = "DNS over HTTPS"
ICMP_ECHO = "ICMP echo"


@cache
def shipped_resolvers() -> Resolvers:
    """sensor/data/resolvers.toml, read once per process (it is the same file for every detector built)."""
    return Resolvers.load()


class HardcodedInfraDetector(Detector):
    name = "hardcoded_infra"
    # By port alone: these are name or time service whatever the address.
    SERVICES: dict[tuple[str, int | None], str] = {
        ("udp", 53): "DNS", ("tcp", 53): "DNS", ("tcp", 853): "DNS over TLS", ("udp", 853): "DNS over QUIC",
        ("udp", 123): "NTP"}
    # HTTPS ports are DNS only towards a known resolver, by name or by an address that serves DoH.
    DOH_PORTS = frozenset({("tcp", 443), ("udp", 443)})
    SEVERITY = {"NTP": "low", ICMP_ECHO: "low"}   # everything else: medium

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.resolvers = shipped_resolvers()

    def observe(self, obs: Observation) -> Alert | None:
        if not obs.external or not obs.initiated or obs.sent_packets == 0:
            return None
        found = self._service(obs)
        if found is None:
            return None
        what, resolver, how = found
        if not self.new_episode((obs.device.id, obs.peer, what), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        where = describe_destination(obs.peer, obs.name, obs.port, obs.proto)
        known = f" ({resolver.name})" if resolver is not None else ""
        if what == ICMP_ECHO:
            summary = (f"{describe_device(obs.device)} pings {obs.peer}{known} on the public Internet: a "
                       f"connectivity check to a hard-coded address.")
            evidence = f"connectivity check: ICMP echo to {obs.peer}"
        elif what == DOH:
            summary = (f"{describe_device(obs.device)} sends DNS over HTTPS to {where}{known}, recognised by {how}: "
                       f"a hard-coded encrypted resolver that bypasses the site's DNS servers and their logs.")
            evidence = f"DNS over HTTPS to {obs.name if how.startswith('name') else obs.peer}"
        else:
            summary = (f"{describe_device(obs.device)} sends {what} queries straight to {where}{known} instead of "
                       f"the site's servers: a hard-coded resolver or time source that bypasses site controls.")
            evidence = f"{what} to {obs.peer}{known}"
        extra: dict[str, object] = {"protocol": what.lower(), "evidence": evidence}
        if resolver is not None:
            extra["resolver"] = resolver.id
        return self.alert(obs, self.SEVERITY.get(what, "medium"), 0.9, summary, **extra)

    def _service(self, obs: Observation) -> tuple[str, Resolver | None, str] | None:
        """What the flow is (a SERVICES label, DOH or ICMP_ECHO), the public resolver it reaches if known, and
        what recognised it."""
        if obs.proto == "icmp":
            # Only echo the device sent itself, to the public Internet: an unreachable it returns is not a check,
            # and a ping into a core network is the segmentation detector's.
            if obs.scope == SCOPE_PUBLIC and obs.tags & TAG_ICMP_ECHO:
                return ICMP_ECHO, self.resolvers.by_address(obs.peer), "echo request"
            return None
        by_address = self.resolvers.by_address(obs.peer)
        what = self.SERVICES.get((obs.proto, obs.port))
        if what is not None:
            return what, by_address or self.resolvers.by_name(obs.name), "port"
        if (obs.proto, obs.port) not in self.DOH_PORTS:
            return None
        by_name = self.resolvers.by_name(obs.name)
        if by_name is not None:
            return DOH, by_name, f"name {obs.name}"
        if by_address is not None and "doh" in by_address.protocols:
            return DOH, by_address, f"address {obs.peer}"
        return None

    def upnp(self, request: UpnpRequest) -> Alert | None:
        dev, kind = request.device, request.kind
        if not self.new_episode((dev.id, kind), request.ts, 1, 0):
            return None
        obs = Observation(request.ts, dev, 1, 0, True, request.peer, request.port, request.proto, None,
                          request.scope, request.vlan)
        if kind == "upnp_port_mapping":
            summary = (f"{describe_device(dev)} asked the gateway {request.peer} to open a port through the "
                       f"firewall (UPnP AddPortMapping{request.detail}).")
            return self.alert(obs, "high", 1.0, summary, protocol=kind,
                              evidence=f"UPnP AddPortMapping{request.detail}")
        summary = (f"{describe_device(dev)} is searching for an Internet gateway it could open ports on "
                   f"(UPnP IGD M-SEARCH); no port mapping seen yet.")
        return self.alert(obs, "low", 0.6, summary, protocol=kind, evidence="UPnP IGD M-SEARCH")
