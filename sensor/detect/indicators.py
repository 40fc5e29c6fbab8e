"""The indicator file (sensor/data/indicators.toml): vendor cloud and P2P services, each recognised by names,
payload signatures (tag bits, sensor.tags) or ports, and the evidence that matched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sensor.enrich import Observation
from sensor.reference_data import INDICATORS_FILE, Service, load_indicators
from sensor.tags import TAG_PPPP, TAG_SIGNATURE_BASE


class Indicators:
    """The shipped, versioned indicator file, checked on load (sensor.reference_data), with a cache of which
    service a name belongs to."""

    def __init__(self, services: Sequence[Service], prefixes: Sequence[bytes], version: str):
        self.services = list(services)
        self.prefixes = list(prefixes)  # index i is tag bit signature_bit(i)
        self.version = version
        self._by_name: dict[str, Service | None] = {}

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
        """The service a device's traffic belongs to, and the evidence."""
        svc = self.by_name(obs.name) if obs.initiated else None
        if svc is not None:
            return svc, f"name {obs.name}"
        tags = obs.tags
        for svc in self.services:
            if tags & svc.signature_bits:
                return svc, "its protocol signature in the payload"
        maker = obs.device.maker.name if obs.device.maker else None
        if obs.initiated and maker:
            for svc in self.services:
                if maker in svc.makers and (obs.proto, obs.port) in svc.ports:
                    return svc, f"{obs.proto}/{obs.port}, a {svc.name} port, from a {maker} device"
        return None
