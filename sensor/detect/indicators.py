"""The indicator file (sensor/data/indicators.toml): vendor cloud and P2P services, each recognised by names,
payload signatures (tag bits, sensor.tags) or ports, and the evidence that matched; and the resolver file
(sensor/data/resolvers.toml): well-known public DNS, DoT and DoH resolvers by name and address."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sensor.enrich import Observation
from sensor.enrich.events import UNASKED
from sensor.reference_data import INDICATORS_FILE, RESOLVERS_FILE, Resolver, Service, load_indicators, load_resolvers
from sensor.tags import TAG_PPPP, TAG_SIGNATURE_BASE


class Indicators:
    """The shipped, versioned indicator file, checked on load (sensor.reference_data), with a cache of which
    service a name belongs to."""

    def __init__(self, services: Sequence[Service], prefixes: Sequence[tuple[bytes, bytes]], version: str):
        self.services = list(services)
        self.prefixes = list(prefixes)  # index i is tag bit signature_bit(i)
        # the tag bits of signatures only a camera sends (`device = true`): a device sending one is a camera
        self.device_bits = 0
        for svc in self.services:
            for bit, sig in svc.signature_rules:
                if sig.device:
                    self.device_bits |= bit
        self.version = version
        self._by_name: dict[str, Service | None] = {}
        # Every observation asks for a signature and a maker's port; most match none, which these tell at once.
        self._signature_bits = 0
        for svc in self.services:
            self._signature_bits |= svc.signature_bits
        self._port_makers = frozenset(maker for svc in self.services if svc.ports for maker in svc.makers)

    @classmethod
    def load(cls, path: Path = INDICATORS_FILE) -> Indicators:
        found = load_indicators(path, pppp_bit=TAG_PPPP, signature_base=TAG_SIGNATURE_BASE)
        return cls(found.services, found.prefixes, found.version)

    def by_name(self, name: str | None) -> Service | None:
        if not name:
            return None
        try:
            return self._by_name[name]
        except KeyError:
            pass
        found = next((svc for svc in self.services if svc.matches_name(name)), None)
        if len(self._by_name) >= 1 << 14:
            self._by_name.clear()  # bounded: a DNS flood of unique names must not grow it
        self._by_name[name] = found
        return found

    def match(self, obs: Observation) -> tuple[Service, str] | None:
        """The service a device's traffic belongs to, and the evidence; worked out once per observation."""
        if obs.service_match is UNASKED:
            obs.service_match = self._match(obs)
        return obs.service_match   # type: ignore[return-value]

    def _match(self, obs: Observation) -> tuple[Service, str] | None:
        svc = self.by_name(obs.name) if obs.initiated else None
        if svc is not None:
            return svc, f"name {obs.name}"
        found = self.by_signature(obs.tags, obs.proto, obs.port)
        if found is not None:
            return found
        maker = obs.device.maker.name if obs.device.maker else None
        if obs.initiated and maker and maker in self._port_makers:
            for svc in self.services:
                if maker in svc.makers and (obs.proto, obs.port) in svc.ports:
                    return svc, f"{obs.proto}/{obs.port}, a {svc.name} port, from a {maker} device"
        return None

    def by_signature(self, tags: int, proto: str, port: int | None) -> tuple[Service, str] | None:
        """The service whose payload signature one side of a flow sent (`tags`, sensor.tags), and the evidence."""
        if not tags & self._signature_bits:
            return None
        for svc in self.services:
            hit = tags & svc.signature_bits
            if not hit:
                continue
            for bit, sig in svc.signature_rules:
                # a signature narrowed to a transport or service port counts only there (DVRIP's four bytes
                # are distinctive on tcp/34567, not in the middle of any TCP stream)
                if hit & bit and sig.applies(proto, port):
                    return svc, sig.evidence
        return None


class Resolvers:
    """The shipped resolver file, checked on load, with lookups by address and by name (bounded cache)."""

    def __init__(self, resolvers: Sequence[Resolver], version: str):
        self.resolvers = list(resolvers)
        self.version = version
        self._by_address = {a: r for r in self.resolvers for a in r.addresses}
        self._by_name: dict[str, Resolver | None] = {}

    @classmethod
    def load(cls, path: Path = RESOLVERS_FILE) -> Resolvers:
        found = load_resolvers(path)
        return cls(found.resolvers, found.version)

    def by_address(self, address: str) -> Resolver | None:
        return self._by_address.get(address)

    def by_name(self, name: str | None) -> Resolver | None:
        if not name:
            return None
        if name in self._by_name:
            return self._by_name[name]
        found = next((r for r in self.resolvers if r.matches_name(name)), None)
        if len(self._by_name) >= 1 << 12:
            self._by_name.clear()  # bounded: names come from the wire
        self._by_name[name] = found
        return found
