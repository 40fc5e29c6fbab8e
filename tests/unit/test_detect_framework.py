"""sensor/detect/framework.py: each event reaches exactly the detectors that hook it (observe only for the scopes
of their interest), alerts pass the gate and are counted by (detector, severity), ticks flush flood summaries, and
the episodes are sized, restored and forgotten through the state store."""

from __future__ import annotations

from collections import Counter

from sensor.alerting import FLOOD_DEVICES
from sensor.config import parse_config
from sensor.detect import Alert, Detector, DetectorContext, Indicators, registry
from sensor.detect.framework import Detection
from sensor.detect.segmentation import SegmentationDetector
from sensor.detect.vendor_cloud import VendorCloudDetector
from sensor.enrich import (
    SCOPES,
    CoveredMakers,
    Device,
    DnsAnswer,
    DnsQuery,
    FileFetch,
    IdentityReport,
    Inventory,
    ManufDatabase,
    Observation,
    UpnpRequest,
)
from sensor.state import KnownState

INDICATORS = Indicators.load()
MAKERS = CoveredMakers.load()


def _alert(ts: float, detector: str, severity: str, device_ip: str = "10.20.0.5") -> Alert:
    return Alert(ts, "site", detector, severity, device_ip, None, None, "203.0.113.7", 443, "tcp", None, "public",
                 1.0, "s", 20)


class Everything(Detector):
    """Hooks every event, records it, and raises one alert per call of observe and dns_query."""

    name = "everything"
    interest = frozenset({"public", "core"})

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.calls: Counter[str] = Counter()

    def observe(self, obs):
        self.calls[f"observe:{obs.scope}"] += 1
        return _alert(obs.ts, self.name, "high")

    def dns_query(self, query):
        self.calls["dns_query"] += 1
        return _alert(query.ts, self.name, "low")

    def dns_answer(self, answer):
        self.calls["dns_answer"] += 1
        self.seen = [*getattr(self, "seen", []), answer]

    def upnp(self, request):
        self.calls["upnp"] += 1

    def fetch(self, fetch):
        self.calls["fetch"] += 1
        return _alert(fetch.ts, self.name, "medium")

    def identity(self, report):
        self.calls["identity"] += 1
        self.seen = [*getattr(self, "seen", []), report]

    def tick(self, now, final):
        self.calls["final" if final else "tick"] += 1
        return [_alert(now, self.name, "medium")] if final else []


class ObserveOnly(Detector):
    name = "observe_only"
    interest = frozenset({"camera"})

    def observe(self, obs):
        return None


def _detection(config=None, known=None, plugins=None):
    config = config or parse_config({"limits": {"max_devices": 501}, "alerts": {"episode_timeout": 77}})
    written: list[Alert] = []
    inventory = Inventory(config, ManufDatabase({}), MAKERS)
    detection = Detection(config, known or KnownState(None), written.append, indicators=INDICATORS,
                          inventory=inventory)
    if plugins is not None:
        detection._use([cls(DetectorContext("site", detection.episodes)) for cls in plugins])
    return detection, written


def _obs(scope: str, ts: float = 1.0) -> Observation:
    return Observation(ts, Device("10.20.0.5"), 1, 100, True, "203.0.113.7", 443, "tcp", None, scope, 20)


def test_the_registered_detectors_are_built_with_the_configured_bounds():
    detection, _ = _detection()
    assert [d.name for d in detection.detectors] == [n for n in registry.names() if n != "anomaly"]
    assert detection.episodes.timeout == 77.0 and detection.episodes.max_open == 10_020
    assert detection.gate.episode_timeout == 77.0 and detection.gate.max_budgets == 10_020
    assert isinstance(detection.find(SegmentationDetector), SegmentationDetector)
    assert detection.find(Everything) is None
    assert detection.scopes == frozenset({"public", "core", "camera", "private"})   # lateral_movement's too


def test_each_event_reaches_the_hooks_that_want_it_and_alerts_are_counted():
    detection, written = _detection(plugins=[Everything, ObserveOnly])
    everything = detection.find(Everything)
    assert detection.scopes == frozenset({"public", "core", "camera"})
    for scope in SCOPES:
        detection.observe(_obs(scope))
    dev = Device("10.20.0.5")
    detection.dns_query(DnsQuery(2.0, dev, "a.example", "10.20.0.1", "camera", 20, False))
    answer, report = DnsAnswer(2.0, None, "10.20.0.5", 20), IdentityReport(2.0, dev, {})
    detection.dns_answer(answer)
    detection.upnp(UpnpRequest(2.0, dev, "upnp_igd_discovery", "239.255.255.250", 1900, "udp", "multicast", 20, ""))
    detection.fetch(FileFetch(2.5, dev, "192.0.2.9", 69, "udp", "public", 20, "tftp", "RRQ", "x.sh", "x.sh", "script"))
    detection.identity(report)
    detection.tick(3.0)
    detection.tick(4.0, final=True)
    assert everything.calls == {"observe:public": 1, "observe:core": 1, "dns_query": 1, "dns_answer": 1, "upnp": 1,
                                "fetch": 1, "identity": 1, "tick": 1, "final": 1}
    # Both observations raise about one (device, service) pair: one incident, opened at the first; the lookup is
    # another service; the fetch's and the final tick's medium detections join the first incident without raising
    # its severity (and make it the more recently active, so it closes last).
    assert [(a.detector, a.severity, a.ts, a.extra["event"]) for a in written] == [
        ("everything", "high", 1.0, "open"), ("everything", "low", 2.0, "open"),
        ("everything", "low", 4.0, "close"), ("everything", "high", 4.0, "close")]
    assert [a.extra["service"]["id"] for a in written[:2]] == ["203.0.113.7", "a.example"]
    assert detection.alert_counts == {("everything", "high"): 2, ("everything", "low"): 1,
                                      ("everything", "medium"): 2}
    assert detection.lines == {"open": 2, "close": 2}
    assert detection.suppressed == Counter()
    assert everything.seen[0] is answer and everything.seen[1] is report


def test_ticks_release_the_flood_summaries_and_count_them():
    detection, written = _detection(plugins=[ObserveOnly])
    for i in range(FLOOD_DEVICES + 2):
        detection.emit(_alert(10.0 + i * 0.1, "egress_policy", "medium", f"10.20.1.{i}"))
    assert written == []   # lines go out when the second ends
    detection.tick(15.0)
    assert len(written) == FLOOD_DEVICES and detection.suppressed == {"egress_policy": 2}
    detection.tick(20.0)
    assert len(written) == FLOOD_DEVICES
    detection.tick(20.0, final=True)
    floods = [a for a in written if "flood" in a.extra]
    assert len(floods) == 1 and floods[0].extra["flood"]["alerts"] == 2
    assert floods[0].extra["event"] == "flood" and floods[0].extra["incident"] is None
    # the incidents held back at the gate write no close line either
    assert detection.lines == {"open": FLOOD_DEVICES, "flood": 1, "close": FLOOD_DEVICES}
    assert detection.alert_counts == {("egress_policy", "medium"): FLOOD_DEVICES + 2}


def test_episodes_are_restored_from_and_forgotten_in_the_state_store(tmp_path):
    earlier = KnownState(tmp_path / "state.db")
    earlier.save_episodes([(("vendor_cloud", "10.20.0.5", "hik-connect"), 1.0, 5.0, 3, 300)])
    earlier.close()
    known = KnownState(tmp_path / "state.db")
    detection, _ = _detection(known=known)
    assert list(detection.episodes.take_dirty()) == []
    assert len(detection.episodes) == 1
    vendor = detection.find(VendorCloudDetector)
    assert vendor.new_episode(("10.20.0.5", "hik-connect"), 50.0, 1, 1) is False   # within 77 s of the last
    assert detection.episodes.on_evict == known.forget_episode


def test_a_model_or_training_windows_reach_the_detectors_built():
    from sensor.detect.anomaly import AnomalyDetector
    from sensor.detect.training import WindowCollector
    from sensor.model import WindowFeatures

    from .test_detect_anomaly import FakeModel
    config = parse_config({})
    inventory = Inventory(config, ManufDatabase({}), MAKERS)
    model = FakeModel()
    with_model = Detection(config, KnownState(None), None, indicators=INDICATORS, inventory=inventory, model=model)
    anomaly = with_model.find(AnomalyDetector)
    assert anomaly.model is model and anomaly.inventory is inventory and with_model.find(WindowCollector) is None
    windows = WindowFeatures(60.0)
    training = Detection(config, KnownState(None), None, indicators=INDICATORS, inventory=inventory, windows=windows)
    collector = training.find(WindowCollector)
    assert collector.windows is windows and training.detectors[-1] is collector
    assert training.find(AnomalyDetector) is None


def test_an_alert_line_rounds_time_to_microseconds_and_score_to_four_places():
    alert = Alert(1.23456789, "s", "d", "low", "10.20.0.5", None, None, "203.0.113.7", None, "udp", None, "public",
                  0.123456, "x", 0, {"k": 1})
    line = alert.as_dict()
    assert (line["ts"], line["score"], line["k"]) == (1.234568, 0.1235, 1)


def test_gate_probe_is_the_lead_at_the_lines_time_and_severity():
    """The probe the alert gate judges is the lead, field for field (copy.copy's answer), but for the line's time
    and severity and an extra of its own: a field added to Alert and forgotten here would fail this."""
    import copy
    import dataclasses

    from sensor.detect.framework import _probe
    from sensor.detect.services import address_service
    from sensor.enrich.geography import Place

    values = {}
    for i, f in enumerate(dataclasses.fields(Alert)):
        values[f.name] = f"v{i}"   # a distinct value per field
    values.update(extra={"k": 1}, service=address_service("1.2.3.4"), place=object.__new__(Place))
    lead = Alert(**values)
    probe = _probe(lead, 42.5, "high")
    expected = copy.copy(lead)
    expected.ts, expected.severity, expected.extra = 42.5, "high", dict(lead.extra)
    assert [getattr(probe, f.name) for f in dataclasses.fields(Alert)] == [
        getattr(expected, f.name) for f in dataclasses.fields(Alert)]
    assert probe.extra == lead.extra and probe.extra is not lead.extra
    probe.extra["suppressing"] = True
    assert "suppressing" not in lead.extra
