"""Prometheus collectors, in the style of prometheus_client's own (ProcessCollector, PlatformCollector): each
yields a few metric families, rendered from a SensorSnapshot and never from the sensor itself.

The order of the families here is the order of the exposition: tests/golden.py holds it to the recorded one.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sensor import __version__
from sensor.detect import SEVERITIES
from sensor.detect.incidents import LINE_EVENTS
from sensor.dissect import WIRE_PARSERS
from sensor.enrich import SCOPES
from sensor.export.snapshot import TOP_DESTINATIONS, SensorSnapshot, take_snapshot

if TYPE_CHECKING:
    from sensor.pipeline import Sensor

Family = type[CounterMetricFamily] | type[GaugeMetricFamily]
Row = tuple[Sequence[str], float]


def _single(kind: Family, metric: str, doc: str, snap: SensorSnapshot, value: float) -> Metric:
    fam = kind(metric, doc, labels=["sensor"])
    fam.add_metric([snap.sensor_name], value)
    return fam


def _labelled(kind: Family, metric: str, doc: str, snap: SensorSnapshot, labels: Sequence[str],
              rows: Iterable[Row]) -> Metric:
    fam = kind(metric, doc, labels=["sensor", *labels])
    for label_values, value in rows:
        fam.add_metric([snap.sensor_name, *label_values], value)
    return fam


def _info(metric: str, doc: str, snap: SensorSnapshot, values: dict[str, str]) -> Metric:
    fam = InfoMetricFamily(metric, doc, labels=["sensor"])
    fam.add_metric([snap.sensor_name], values)
    return fam


def _by_key(counts: Iterable[tuple[str, int]]) -> Iterator[Row]:
    return (((key,), value) for key, value in counts)


class SnapshotCollector(Collector):
    """Registered on its own, a collector takes a fresh snapshot per scrape; SensorCollector instead renders
    all of them from one."""

    def __init__(self, source: Callable[[], SensorSnapshot]):
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return self.render(self._source())

    @abstractmethod
    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        ...


class BuildCollector(SnapshotCollector):
    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _info("camwatch_build", "camwatch version running this sensor.", snap,
                    {"version": __version__, "python": sys.version.split()[0]})


class TrafficCollector(SnapshotCollector):
    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _single(CounterMetricFamily, "camwatch_packets", "Frames read from the capture, IP or not.", snap,
                      snap.packets)
        yield _single(CounterMetricFamily, "camwatch_bytes", "Bytes on the wire of the frames read (original length).",
                      snap, snap.bytes)
        yield _labelled(CounterMetricFamily, "camwatch_decoded_packets", "Frames read, by network-layer protocol.",
                        snap, ["network"], _by_key(snap.decoded_packets.items()))
        yield _labelled(CounterMetricFamily, "camwatch_decode_errors", "Frames that could not be decoded, by reason.",
                        snap, ["reason"], _by_key(snap.decode_errors.items()))


class HealthCollector(SnapshotCollector):
    """What camwatch failed at or had to drop, while going on."""

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        # every parser exported, zero or not, as docs/reliability.md promises
        parsers = sorted(set(WIRE_PARSERS) | set(snap.dissect_errors))
        yield _labelled(CounterMetricFamily, "camwatch_dissect_errors", "Packets a wire parser failed on (a camwatch "
                        "bug, or input nobody foresaw): skipped, counted, and the sensor goes on.", snap, ["parser"],
                        _by_key((p, snap.dissect_errors.get(p, 0)) for p in parsers))
        yield _labelled(CounterMetricFamily, "camwatch_parses_skipped", "Packets left unread because their reader's "
                        "parse budget for the capture second was spent (a flood of forged DNS answers or identity "
                        "packets; a site's own traffic stays far below it).", snap, ["parser"],
                        _by_key(sorted(snap.parses_skipped.items())))
        yield _single(CounterMetricFamily, "camwatch_state_write_errors", "Writes to the state database that failed "
                      "(disk full, read-only or vanished file); camwatch goes on with what it holds in memory.", snap,
                      snap.state_write_errors)
        yield _labelled(CounterMetricFamily, "camwatch_evictions", "Entries dropped from a bounded structure over its "
                        "limit (docs/reliability.md lists them); flows and devices have their own counters.", snap,
                        ["structure"], _by_key(sorted(snap.evictions.items())))


class FlowsCollector(SnapshotCollector):
    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _single(GaugeMetricFamily, "camwatch_flows_active", "Flows in the flow table.", snap, snap.flows_active)
        yield _single(CounterMetricFamily, "camwatch_flows_created", "Flows created.", snap, snap.flows_created)
        yield _labelled(CounterMetricFamily, "camwatch_flows_expired", "Flows removed from the table, by reason "
                        "(idle timeout, active timeout, evicted over max_flows, end of capture).", snap, ["reason"],
                        _by_key(snap.flows_expired.items()))


class AlertsCollector(SnapshotCollector):
    def __init__(self, source: Callable[[], SensorSnapshot], detectors: Sequence[str]):
        super().__init__(source)
        self.detectors = tuple(detectors)

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        # every detector and severity exported, zeros included, as the README's metrics table promises
        detectors = sorted(set(self.detectors) | {d for d, _ in snap.alerts})
        yield _labelled(CounterMetricFamily, "camwatch_alerts", "Detections (one per detector episode), by detector "
                        "and severity; each is evidence of an incident.", snap, ["detector", "severity"],
                        (((d, sev), snap.alerts.get((d, sev), 0)) for d in detectors for sev in SEVERITIES))
        yield _labelled(CounterMetricFamily, "camwatch_alerts_suppressed", "Incidents counted but not written: a "
                        "device over its per-detector budget in one episode window, or a flood.", snap, ["detector"],
                        _by_key((d, snap.alerts_suppressed.get(d, 0)) for d in detectors))
        yield _labelled(GaugeMetricFamily, "camwatch_incidents_open", "Open incidents (device and service), by "
                        "current severity.", snap, ["severity"],
                        _by_key((sev, snap.incidents_open.get(sev, 0)) for sev in SEVERITIES))
        yield _labelled(CounterMetricFamily, "camwatch_incident_lines", "Lines written to the alert log, by event "
                        "(open, update, close; flood summaries).", snap, ["event"],
                        _by_key((event, snap.incident_lines.get(event, 0)) for event in LINE_EVENTS))


class DevicesCollector(SnapshotCollector):
    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        by_vendor: dict[tuple[str, str], int] = {}
        for d in snap.devices:
            key = (d.maker or d.vendor or "unknown", _bool(d.covered))
            by_vendor[key] = by_vendor.get(key, 0) + 1
        yield _labelled(GaugeMetricFamily, "camwatch_devices", "Camera-side hosts seen sending traffic, by "
                        "manufacturer and whether it is a covered maker (bounded by limits.max_devices).", snap,
                        ["vendor", "covered"], sorted(by_vendor.items()))
        yield _single(CounterMetricFamily, "camwatch_devices_evicted", "Devices dropped from the inventory over "
                      "limits.max_devices.", snap, snap.devices_evicted)
        yield _single(CounterMetricFamily, "camwatch_devices_held", "Sightings of new camera-side sources held back "
                      "by the new-device budget (limits.new_devices_per_second, new_devices_burst): a flood of "
                      "forged sources.", snap, snap.devices_held)
        yield _labelled(GaugeMetricFamily, "camwatch_device_info", "Identity of each camera-side device (value 1).",
                        snap, ["device", "mac", "vendor", "maker", "covered", "covered_basis", "role", "model"],
                        (((d.ip, d.mac, d.vendor, d.maker, _bool(d.covered), d.covered_basis, d.role, d.model), 1)
                         for d in snap.devices))
        yield _labelled(CounterMetricFamily, "camwatch_device_egress_bytes", "Bytes sent by each camera-side device, "
                        "by destination scope.", snap, ["device", "scope"],
                        (((d.ip, scope), d.egress_bytes[scope])
                         for d in snap.devices for scope in SCOPES if scope in d.egress_bytes))


class ReachCollector(SnapshotCollector):
    """Where camera-side traffic goes beyond the camera VLAN."""

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _single(GaugeMetricFamily, "camwatch_external_destinations", "Distinct public or core-network "
                      "addresses camera-side devices exchanged traffic with.", snap, snap.external_destinations)
        yield _labelled(CounterMetricFamily, "camwatch_egress_country_bytes", "Bytes camera-side devices sent to "
                        "public (or allowed public) destinations, by the destination's country (registry assignment, "
                        "or the configured country database's; unknown, other) and whether the device is a covered "
                        "maker.", snap, ["country", "covered"],
                        (((country, _bool(covered)), sent)
                         for (country, covered), sent in sorted(snap.egress_countries.items())))
        yield _labelled(CounterMetricFamily, "camwatch_segmentation_violations", "New episodes of camera VLAN and "
                        "core network meeting outside the allowlist.", snap, ["direction"],
                        _by_key(sorted(snap.segmentation_violations.items())))


class NamingCollector(SnapshotCollector):
    """What camwatch names makers and addresses by, and the top destinations so named."""

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _info("camwatch_covered_list", "Version of the covered-maker list in use.", snap,
                    {"version": snap.covered_list_version})
        yield _single(GaugeMetricFamily, "camwatch_dns_names", "Addresses with a DNS name learned from answers on "
                      "the wire.", snap, snap.dns_names)
        yield _labelled(GaugeMetricFamily, "camwatch_top_destination_bytes", f"Bytes each device sent to its top "
                        f"{TOP_DESTINATIONS} outside destinations (rank 1 = most), named by DNS/SNI where known, "
                        "with the destination's country and network owner (empty when unknown).",
                        snap, ["device", "rank", "destination", "scope", "country", "owner"],
                        (((d.ip, str(rank), label, scope, country, owner), sent)
                         for d in snap.devices
                         for rank, (label, scope, country, owner, sent) in enumerate(d.top_destinations, 1)))


class ModelCollector(SnapshotCollector):
    """The learned baseline, when the anomaly detector has one; nothing otherwise."""

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        model = snap.model
        if model is None:
            return
        yield _info("camwatch_model", "The learned baseline in use by the anomaly detector.", snap,
                    {"model": model.name, "version": model.version, "trained_at": model.trained_at})
        trained = datetime.fromisoformat(model.trained_at.replace("Z", "+00:00")).timestamp()
        yield _single(GaugeMetricFamily, "camwatch_model_trained_timestamp_seconds", "When the learned baseline was "
                      "trained.", snap, trained)


class CaptureCollector(SnapshotCollector):
    """Losses and delay between the wire and camwatch; the live-only series appear only when known."""

    def render(self, snap: SensorSnapshot) -> Iterator[Metric]:
        yield _single(CounterMetricFamily, "camwatch_capture_dropped_packets", "Packets the kernel or dumpcap "
                      "dropped before camwatch saw them (live capture).", snap, snap.capture_dropped)
        if snap.interface_received is not None:
            yield _single(CounterMetricFamily, "camwatch_capture_interface_received_packets", "Frames the capture "
                          "interface received since capture started, by the kernel's interface counter (live "
                          "capture without a capture filter). Less camwatch_packets_total: frames camwatch has not "
                          "seen, in flight or lost, visible while capturing.", snap, snap.interface_received)
        if snap.processing_lag is not None:
            yield _single(GaugeMetricFamily, "camwatch_processing_lag_seconds", "Wall-clock delay between capturing "
                          "the newest packet and processing it (live capture).", snap, snap.processing_lag)
        yield _single(GaugeMetricFamily, "camwatch_last_packet_timestamp_seconds", "Capture timestamp of the newest "
                      "packet processed.", snap, snap.last_packet_ts or 0.0)


def _bool(value: bool) -> str:
    return "true" if value else "false"


class SensorCollector(Collector):
    """All the collectors above, from one snapshot per scrape: one lock hold, and families that agree."""

    def __init__(self, sensor: Sensor, detectors: Sequence[str]):
        self.sensor = sensor
        source = partial(take_snapshot, sensor)
        self.parts: tuple[SnapshotCollector, ...] = (
            BuildCollector(source), TrafficCollector(source), HealthCollector(source), FlowsCollector(source),
            AlertsCollector(source, detectors), DevicesCollector(source), ReachCollector(source),
            NamingCollector(source), ModelCollector(source), CaptureCollector(source))

    def collect(self) -> Iterator[Metric]:
        snap = take_snapshot(self.sensor)
        for part in self.parts:
            yield from part.render(snap)
