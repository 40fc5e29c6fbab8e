"""Detectors are plugins: one file and one registry entry add a detector, which then receives every hook it
overrides and whose alerts go out like any other's (sensor/detect/registry.py, framework.py). The registry is the one
list of detector names: the docs and the metrics take them from it."""

from __future__ import annotations

import re
from collections import Counter

from conftest import REAL, REPO

from sensor.capture import open_file
from sensor.config import Config
from sensor.detect import DETECTORS, HOOKS, Detector, DetectorContext, registry
from sensor.enrich import (
    SCOPE_CAMERA,
    SCOPES,
    DnsAnswer,
    DnsQuery,
    FileFetch,
    IdentityReport,
    Observation,
    UpnpRequest,
)
from sensor.pipeline import Sensor

# DNS questions and answers, a UPnP port-mapping request, banners and traffic to the Internet, in one small capture
HOOKED_CAPTURE = REAL / "iot-sentinel" / "D-LinkCam" / "Setup-A-1-STA.pcap"


class HookRecorder(Detector):
    """A test-only detector: counts what reaches each hook and raises one low alert per new (device, peer)."""

    name = "hook_recorder"
    interest = frozenset(SCOPES)

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.calls: Counter[str] = Counter()
        self.scopes: set[str] = set()

    def observe(self, obs: Observation):
        self.calls["observe"] += 1
        self.scopes.add(obs.scope)
        if obs.sent_packets and self.new_episode((obs.device.ip, obs.peer), obs.ts, obs.sent_packets,
                                                 obs.sent_bytes):
            return self.alert(obs, "low", 0.1, f"{obs.device.ip} sent to {obs.peer}")
        return None

    def dns_query(self, query: DnsQuery):
        self.calls["dns_query"] += 1

    def dns_answer(self, answer: DnsAnswer):
        self.calls["dns_answer"] += 1

    def upnp(self, request: UpnpRequest):
        self.calls["upnp"] += 1

    def fetch(self, fetch: FileFetch):
        self.calls["fetch"] += 1

    def identity(self, report: IdentityReport):
        self.calls["identity"] += 1

    def tick(self, now: float, final: bool):
        self.calls["final" if final else "tick"] += 1
        return []


class CameraOnly(Detector):
    """Overrides observe alone, for camera-VLAN peers alone."""

    name = "camera_only"
    interest = frozenset({SCOPE_CAMERA})

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.scopes: set[str] = set()

    def observe(self, obs: Observation):
        self.scopes.add(obs.scope)


def replay(path, plugins=()):
    alerts = []
    sensor = Sensor(Config(), on_alert=alerts.append)
    reader, _ = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    sensor.close()
    found = {type(d): d for d in sensor.detectors if type(d) in plugins}
    return sensor, alerts, found


def test_a_registered_detector_gets_every_hook_and_its_alerts_go_out(monkeypatch):
    before, before_lines, _ = replay(HOOKED_CAPTURE)
    monkeypatch.setattr(registry, "DETECTORS", (*registry.DETECTORS, HookRecorder, CameraOnly))
    sensor, alerts, found = replay(HOOKED_CAPTURE, (HookRecorder, CameraOnly))
    recorder, camera_only = found[HookRecorder], found[CameraOnly]
    assert set(recorder.calls) == {"observe", "dns_query", "dns_answer", "upnp", "identity", "tick", "final"}
    assert recorder.calls["final"] == 1
    assert camera_only.scopes == {SCOPE_CAMERA} and len(recorder.scopes) > 1
    mine = [a for a in alerts if a.extra["detectors"] == ["hook_recorder"]]
    assert mine and all(a.severity == "low" and a.sensor == "camwatch" for a in mine)
    opened = [a for a in mine if a.extra["event"] == "open"]
    assert sensor.alert_counts[("hook_recorder", "low")] >= len(opened) > 0
    assert sensor.summary()["alerts"]["hook_recorder"] == sensor.alert_counts[("hook_recorder", "low")]
    # the registered detectors detect exactly what they detected alone, and every incident they opened alone
    # opens again, now with the newcomer's evidence too where it saw the same pair
    assert {k: v for k, v in sensor.alert_counts.items() if k[0] != "hook_recorder"} == before.alert_counts
    pairs = {(a.device_ip, a.extra["service"]["id"]) for a in alerts if a.extra["event"] == "open"}
    assert {(a.device_ip, a.extra["service"]["id"]) for a in before_lines if a.extra["event"] == "open"} <= pairs


def test_the_hooks_are_the_base_class_methods():
    assert all(callable(getattr(Detector, hook)) for hook in HOOKS)
    assert {hook for hook in HOOKS if getattr(HookRecorder, hook) is getattr(Detector, hook)} == set()


def test_every_registered_detector_is_documented_in_registry_order():
    text = (REPO / "docs" / "detectors.md").read_text(encoding="utf-8")
    names = [cls.name for cls in DETECTORS]
    assert re.findall(r"^## ([a-z_]+)$", text, re.M) == names   # a detector's section is headed by its name


def test_registry_names_are_unique_and_the_metrics_label_every_one():
    from sensor.export import DETECTORS as EXPORTED

    names = registry.names()
    assert len(set(names)) == len(names) == len(DETECTORS) and EXPORTED == names
    assert all(issubclass(cls, Detector) and cls.interest <= set(SCOPES) for cls in DETECTORS)


def test_the_alert_contract_lists_every_registered_detector():
    """The README's `detector` field row names what the field can hold: every registered detector, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `detector` |"))
    assert re.findall(r"`([a-z_]+)`", row.split("|")[2].rsplit(": ", 1)[1]) == [cls.name for cls in DETECTORS]
