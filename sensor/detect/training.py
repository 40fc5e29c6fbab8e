"""What `camwatch train` runs in place of the anomaly detector: the same windows, collected, never scored."""

from __future__ import annotations

from sensor.detect.base import Detector, DetectorContext
from sensor.enrich import SCOPES, DnsQuery, Observation


class WindowCollector(Detector):
    name = "training_windows"   # raises nothing: not in the registry, never in an alert
    interest = frozenset(SCOPES)

    @classmethod
    def wanted(cls, context: DetectorContext) -> bool:
        return context.windows is not None and context.model is None

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        if context.windows is None:
            raise ValueError("training_windows needs DetectorContext.windows")
        self.windows = context.windows

    def observe(self, obs: Observation) -> None:
        if obs.device.role == "camera":  # the same population the anomaly detector scores
            self.windows.observe(obs, obs.new_flow)

    def dns_query(self, query: DnsQuery) -> None:
        self.windows.dns_query(query.device.ip, query.ts)
