"""The detection stage: hands each enrichment event to the detectors that hook it, and what they raise through the
alert gate (sensor.alerting: per-device budget, flood summaries) to the sink, counting what is written.

Detectors own what they look for; the framework owns everything about how alerts reach the log: the episodes
(restored from and saved to the state store), suppression and the budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from sensor.alerting import AlertGate
from sensor.config import Config
from sensor.detect import registry
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext, hooked
from sensor.detect.episodes import Episodes, tracked_pairs
from sensor.detect.indicators import Indicators
from sensor.detect.training import WindowCollector
from sensor.enrich import SCOPES, DnsAnswer, DnsQuery, FileFetch, IdentityReport, Inventory, Observation, UpnpRequest
from sensor.state import KnownState

if TYPE_CHECKING:
    from sensor.model import AnomalyModel, WindowFeatures

D = TypeVar("D", bound=Detector)


class Detection:
    """An EventSink (sensor.enrich.events) over the registered detectors."""

    def __init__(self, config: Config, known: KnownState, on_alert: Callable[[Alert], None] | None, *,
                 indicators: Indicators, inventory: Inventory, model: AnomalyModel | None = None,
                 windows: WindowFeatures | None = None):
        self.episodes = Episodes(config.episode_timeout, tracked_pairs(config.max_devices))
        self.episodes.restore(known.load_episodes(self.episodes.max_open))
        self.episodes.on_evict = known.forget_episode
        built = DetectorContext(config.sensor_name, self.episodes, config, indicators, known, inventory, model,
                                windows)
        detectors = registry.build(built)
        if WindowCollector.wanted(built):
            detectors.append(WindowCollector(built))
        self.gate = AlertGate(config.episode_timeout, tracked_pairs(config.max_devices))
        self.alert_counts: Counter[tuple[str, str]] = Counter()   # written alerts by (detector, severity)
        self.on_alert = on_alert
        self._use(detectors)

    def _use(self, detectors: Sequence[Detector]) -> None:
        self.detectors = list(detectors)
        observers = {scope: tuple(d.observe for d in detectors if scope in d.interest and hooked(d, "observe"))
                     for scope in SCOPES}
        self._observers = {scope: found for scope, found in observers.items() if found}
        self.scopes = frozenset(self._observers)
        self._dns_query = tuple(d.dns_query for d in detectors if hooked(d, "dns_query"))
        self._dns_answer = tuple(d.dns_answer for d in detectors if hooked(d, "dns_answer"))
        self._upnp = tuple(d.upnp for d in detectors if hooked(d, "upnp"))
        self._fetch = tuple(d.fetch for d in detectors if hooked(d, "fetch"))
        self._identity = tuple(d.identity for d in detectors if hooked(d, "identity"))
        self._tick = tuple(d.tick for d in detectors if hooked(d, "tick"))

    def find(self, kind: type[D]) -> D | None:
        """The running detector of this class, if the run has one."""
        return next((d for d in self.detectors if isinstance(d, kind)), None)

    @property
    def suppressed(self) -> Counter[str]:
        return self.gate.suppressed

    # ---- events ----------------------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
        for observe in self._observers.get(obs.scope, ()):
            alert = observe(obs)
            if alert is not None:
                self.emit(alert)

    def dns_query(self, query: DnsQuery) -> None:
        for hook in self._dns_query:
            self._emit_if(hook(query))

    def dns_answer(self, answer: DnsAnswer) -> None:
        for hook in self._dns_answer:
            self._emit_if(hook(answer))

    def upnp(self, request: UpnpRequest) -> None:
        for hook in self._upnp:
            self._emit_if(hook(request))

    def fetch(self, fetch: FileFetch) -> None:
        for hook in self._fetch:
            self._emit_if(hook(fetch))

    def identity(self, report: IdentityReport) -> None:
        for hook in self._identity:
            self._emit_if(hook(report))

    def tick(self, now: float, final: bool = False) -> None:
        """The end of a second of capture time (final: of the capture): detectors' periodic work, then the flood
        summaries whose window has passed."""
        for hook in self._tick:
            for alert in hook(now, final):
                self.emit(alert)
        for summary in self.gate.flush(now, final=final):
            self._deliver(summary)

    # ---- alerts ----------------------------------------------------------------------------------------------
    def _emit_if(self, alert: Alert | None) -> None:
        if alert is not None:
            self.emit(alert)

    def emit(self, alert: Alert) -> None:
        """Through the gate: the per-device budget and flood summaries."""
        for line in self.gate.admit(alert):
            self._deliver(line)

    def _deliver(self, alert: Alert) -> None:
        self.alert_counts[(alert.detector, alert.severity)] += 1
        if self.on_alert is not None:
            self.on_alert(alert)
