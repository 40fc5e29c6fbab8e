"""The detection stage: hands each enrichment event to the detectors that hook it, files what they detect under
its incident (sensor.detect.incidents: one per device and service), and writes the incidents' lines through the
alert gate (sensor.alerting: per-device budget, flood summaries) to the sink, counting detections and lines.

Detectors own what they look for; the framework owns everything about how it reaches the log: the episodes
(restored from and saved to the state store), the incidents, suppression and the budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from sensor.alerting import AlertGate
from sensor.config import Config
from sensor.detect import registry
from sensor.detect.alert import SEVERITIES, Alert
from sensor.detect.base import Detector, DetectorContext, hooked
from sensor.detect.episodes import Episodes, tracked_pairs
from sensor.detect.incidents import CONTRACT_VERSION, END, FLOOD, Incidents
from sensor.detect.indicators import Indicators
from sensor.detect.services import KIND_SITE, IncidentService, ServiceResolver, address_service
from sensor.detect.text import with_place
from sensor.detect.training import WindowCollector
from sensor.enrich import (
    SCOPE_CAMERA,
    SCOPES,
    Device,
    DnsAnswer,
    DnsQuery,
    FileFetch,
    IdentityReport,
    Inventory,
    Observation,
    UpnpRequest,
)
from sensor.enrich.geography import Geography
from sensor.state import KnownState

if TYPE_CHECKING:
    from sensor.model import AnomalyModel, WindowFeatures

D = TypeVar("D", bound=Detector)
UPNP_GATEWAY = IncidentService("upnp-igd", "the site gateway's UPnP (IGD)", KIND_SITE)


class Detection:
    """An EventSink (sensor.enrich.events) over the registered detectors."""

    def __init__(self, config: Config, known: KnownState, on_alert: Callable[[Alert], None] | None, *,
                 indicators: Indicators, inventory: Inventory, model: AnomalyModel | None = None,
                 windows: WindowFeatures | None = None, geography: Geography | None = None):
        self.geography = geography if geography is not None else Geography()
        self.episodes = Episodes(config.episode_timeout, tracked_pairs(config.max_devices))
        self.episodes.restore(known.load_episodes(self.episodes.max_open))
        self.episodes.on_evict = known.forget_episode
        built = DetectorContext(config.sensor_name, self.episodes, config, indicators, known, inventory, model,
                                windows, self.geography)
        detectors = registry.build(built)
        if WindowCollector.wanted(built):
            detectors.append(WindowCollector(built))
        self.inventory = inventory
        self.services = ServiceResolver(indicators)
        self.incidents = Incidents(config.sensor_name, config.episode_timeout, tracked_pairs(config.max_devices))
        self.gate = AlertGate(config.episode_timeout, tracked_pairs(config.max_devices))
        self.alert_counts: Counter[tuple[str, str]] = Counter()   # detections by (detector, severity)
        self.lines: Counter[str] = Counter()                      # lines written, by event
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
        # A loop, not a list comprehension: in Python 3.11 a comprehension is a function call of its own, and this
        # runs for every observation, almost all of which raise nothing (no list is made for them).
        raised = None
        for observe in self._observers.get(obs.scope, ()):
            alert = observe(obs)
            if alert is not None:
                if raised is None:
                    raised = [alert]
                else:
                    raised.append(alert)
        if raised is not None:
            service = self.services.of_observation(obs)
            for alert in raised:
                self._detected(alert, service, obs.device, obs)
        elif obs.scope != SCOPE_CAMERA and self.incidents.following(obs.device.id):
            self.incidents.traffic(obs, self.services.of_observation(obs))

    def dns_query(self, query: DnsQuery) -> None:
        for hook in self._dns_query:
            alert = hook(query)
            if alert is not None:
                service = self.services.of_name(query.qname) or address_service(query.resolver)
                self._detected(alert, service, query.device, None)

    def dns_answer(self, answer: DnsAnswer) -> None:
        for hook in self._dns_answer:
            self.emit(hook(answer))

    def upnp(self, request: UpnpRequest) -> None:
        # The search (to the SSDP group) and the port mapping (to the gateway) are one story: the gateway's UPnP.
        for hook in self._upnp:
            alert = hook(request)
            if alert is not None:
                self._detected(alert, UPNP_GATEWAY, request.device, None)

    def fetch(self, fetch: FileFetch) -> None:
        for hook in self._fetch:
            self.emit(hook(fetch))

    def identity(self, report: IdentityReport) -> None:
        for hook in self._identity:
            self.emit(hook(report))

    def tick(self, now: float, final: bool = False, reason: str = END) -> None:
        """The end of a second of capture time (final: of the capture, or of the sensor's run, as `reason` says):
        detectors' periodic work, then the lines the incidents owe, then the flood summaries whose window has
        passed."""
        if self._tick:   # only the model's detectors tick: most runs have none, and this is once a second
            for hook in self._tick:
                for alert in hook(now, final):
                    self.emit(alert)
        if final or not self.incidents.idle(now):   # most seconds owe no line
            self.write_lines(now)
        if final:
            for line in self.incidents.take_closed(now, reason):
                self._deliver(line)
        for summary in self.gate.flush(now, final=final):
            self._deliver(summary)

    def write_lines(self, now: float | None = None) -> None:
        """The lines owed so far: closes first (a closed pair may reopen in the same second), then opens and
        updates. `now`: also close the incidents silent for the timeout by then."""
        for line in self.incidents.take_closed(now) if now is not None else self.incidents.take_closing():
            self._deliver(line)
        self._write_changes()

    # ---- detections and lines --------------------------------------------------------------------------------
    def emit(self, alert: Alert | None) -> None:
        """A detection that came without an observation in hand: its service from its destination."""
        if alert is None:
            return
        service = alert.service or self.services.of_destination(alert.dst_ip, alert.dst_name)
        self._detected(alert, service, self.inventory.lookup(alert.device_ip), None)

    def _detected(self, alert: Alert, service: IncidentService, device: Device | None, obs: Observation | None) -> None:
        self.alert_counts[(alert.detector, alert.severity)] += 1
        # Every detection says where its destination is and whose network it is (the line's summary too, when
        # the incident builds a line: sensor.detect.incidents).
        alert.place = self.geography.place(alert.dst_ip) if alert.dst_ip else None
        self.incidents.detect(alert, alert.service or service, device, obs)

    def _write_changes(self) -> None:
        """Open lines pass the alert gate (per-device budget, flood summaries); an incident whose open line it
        held back writes nothing more, not even its close."""
        for incident, event, ts in self.incidents.take_changes():
            if incident.written:
                self._deliver(self.incidents.line(incident, event, ts))
                continue
            # The gate judges the leading detection; the whole line is built only for what it lets through.
            lead, severity = incident.lead, SEVERITIES[incident.severity]
            summaries, probe = self.gate.admit_lazily(ts, lead.detector, lead.vlan, lead.device_ip, severity,
                                                      lambda: _probe(lead, ts, severity))   # noqa: B023 (called now)
            for summary in summaries:
                self._deliver(summary)   # a flood summary a new window released
            if probe is not None:
                incident.written = True
                line = self.incidents.line(incident, event, ts)
                if probe.extra.get("suppressing"):
                    line.summary, line.extra["suppressing"] = with_place(probe.summary, line.dst_ip, line.place), True
                self._deliver(line)

    def _deliver(self, line: Alert) -> None:
        if "flood" in line.extra:
            line.extra.update(contract=CONTRACT_VERSION, event=FLOOD, incident=None)
        self.lines[line.extra.get("event", "")] += 1
        if self.on_alert is not None:
            self.on_alert(line)


def _probe(lead: Alert, ts: float, severity: str) -> Alert:
    """A shallow copy of the lead at the line's time and severity, with its own extra (the gate may add to it):
    built field by field, as copy.copy's pickling protocol and dataclasses.replace's field walk cost more than the
    rest of a held-back detection (every new device of a forged-source flood makes one)."""
    return Alert(ts, lead.sensor, lead.detector, severity, lead.device_ip, lead.device_mac, lead.device_vendor,
                 lead.dst_ip, lead.dst_port, lead.dst_proto, lead.dst_name, lead.dst_scope, lead.score, lead.summary,
                 lead.vlan, dict(lead.extra), lead.service, lead.place)
