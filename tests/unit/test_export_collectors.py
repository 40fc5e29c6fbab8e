# ruff: noqa: E501
# (the exposition below is held verbatim, HELP lines included, so some of its lines are long)
"""sensor/export/collectors.py: every family, its HELP text, type, labels and values, rendered exactly from a
hand-made SensorSnapshot (so each value comes from the test, not from a sensor), including the series that appear
only when known (live capture, a model) and the zeros every detector, severity and parser is exported with."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, generate_latest

from sensor import __version__
from sensor.export.collectors import (
    AlertsCollector,
    BuildCollector,
    CaptureCollector,
    DevicesCollector,
    FlowsCollector,
    HealthCollector,
    ModelCollector,
    NamingCollector,
    ReachCollector,
    SensorCollector,
    TrafficCollector,
)
from sensor.export.snapshot import DeviceSnapshot, ModelSnapshot, SensorSnapshot

CAMERA = DeviceSnapshot("10.20.0.5", "00:12:ab:00:00:01", "Hangzhou Hikvision", "Hikvision", True, "camera",
                        "DS-2CD2143G0-I", {"public": 500, "camera": 70},
                        (("cloud.example.com", "public", "CN", "Example Cloud Ltd", 400),
                         ("203.0.113.9", "core", "unknown", "", 100)), "named")
SILENT = DeviceSnapshot("10.20.0.6", "", "", "", False, "other", "", {}, ())
RECORDER = DeviceSnapshot("10.20.0.7", "", "Acme", "", False, "nvr", "", {"core": 3}, ())
SNAPSHOT = SensorSnapshot(
    sensor_name="site-a", packets=25, bytes=2500, decoded_packets={"ipv4": 20, "ipv6": 5},
    decode_errors={"truncated": 1, "bad_ip_header": 0}, dissect_errors={"dns": 2}, parses_skipped={"dns": 13, "identity": 0},
    state_write_errors=3,
    evictions={"names": 4, "episodes": 1}, flows_active=7, flows_created=9, flows_expired={"idle": 1, "end": 2},
    alerts={("egress_policy", "high"): 2, ("custom", "low"): 1}, alerts_suppressed={"egress_policy": 5},
    incidents_open={"high": 2, "low": 1}, incident_lines={"open": 4, "update": 1, "close": 1},
    devices=(CAMERA, SILENT, RECORDER), devices_evicted=6, devices_held=42, covered_list_version="2026.1",
    segmentation_violations={"camera_to_core": 1, "core_to_camera": 2}, external_destinations=8,
    egress_countries={("US", False): 7, ("CN", True): 400, ("unknown", True): 20}, dns_names=11,
    model=ModelSnapshot("iforest", "3", "2026-01-02T03:04:05Z"), capture_dropped=12, interface_received=1000,
    processing_lag=0.25, last_packet_ts=1700000000.5)

EXPOSITION = """\
# HELP camwatch_packets_total Frames read from the capture, IP or not.
# TYPE camwatch_packets_total counter
camwatch_packets_total{sensor="site-a"} 25.0
# HELP camwatch_bytes_total Bytes on the wire of the frames read (original length).
# TYPE camwatch_bytes_total counter
camwatch_bytes_total{sensor="site-a"} 2500.0
# HELP camwatch_decoded_packets_total Frames read, by network-layer protocol.
# TYPE camwatch_decoded_packets_total counter
camwatch_decoded_packets_total{network="ipv4",sensor="site-a"} 20.0
camwatch_decoded_packets_total{network="ipv6",sensor="site-a"} 5.0
# HELP camwatch_decode_errors_total Frames that could not be decoded, by reason.
# TYPE camwatch_decode_errors_total counter
camwatch_decode_errors_total{reason="truncated",sensor="site-a"} 1.0
camwatch_decode_errors_total{reason="bad_ip_header",sensor="site-a"} 0.0
# HELP camwatch_dissect_errors_total Packets a wire parser failed on (a camwatch bug, or input nobody foresaw): skipped, counted, and the sensor goes on.
# TYPE camwatch_dissect_errors_total counter
camwatch_dissect_errors_total{parser="arp",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="banner",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="dhcp",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="dhcpv6",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="dhip",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="dns",sensor="site-a"} 2.0
camwatch_dissect_errors_total{parser="http_host",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="http_identity",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="mdns",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="ndp",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="sadp",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="tftp_request",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="tls_certificate",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="tls_sni",sensor="site-a"} 0.0
camwatch_dissect_errors_total{parser="ws_discovery",sensor="site-a"} 0.0
# HELP camwatch_parses_skipped_total Packets left unread because their reader's parse budget for the capture second was spent (a flood of forged DNS answers or identity packets; a site's own traffic stays far below it).
# TYPE camwatch_parses_skipped_total counter
camwatch_parses_skipped_total{parser="dns",sensor="site-a"} 13.0
camwatch_parses_skipped_total{parser="identity",sensor="site-a"} 0.0
# HELP camwatch_state_write_errors_total Writes to the state database that failed (disk full, read-only or vanished file); camwatch goes on with what it holds in memory.
# TYPE camwatch_state_write_errors_total counter
camwatch_state_write_errors_total{sensor="site-a"} 3.0
# HELP camwatch_evictions_total Entries dropped from a bounded structure over its limit (docs/reliability.md lists them); flows and devices have their own counters.
# TYPE camwatch_evictions_total counter
camwatch_evictions_total{sensor="site-a",structure="episodes"} 1.0
camwatch_evictions_total{sensor="site-a",structure="names"} 4.0
# HELP camwatch_flows_active Flows in the flow table.
# TYPE camwatch_flows_active gauge
camwatch_flows_active{sensor="site-a"} 7.0
# HELP camwatch_flows_created_total Flows created.
# TYPE camwatch_flows_created_total counter
camwatch_flows_created_total{sensor="site-a"} 9.0
# HELP camwatch_flows_expired_total Flows removed from the table, by reason (idle timeout, active timeout, evicted over max_flows, end of capture).
# TYPE camwatch_flows_expired_total counter
camwatch_flows_expired_total{reason="idle",sensor="site-a"} 1.0
camwatch_flows_expired_total{reason="end",sensor="site-a"} 2.0
# HELP camwatch_devices Camera-side hosts seen sending traffic, by manufacturer and whether it is a covered maker (bounded by limits.max_devices).
# TYPE camwatch_devices gauge
camwatch_devices{covered="false",sensor="site-a",vendor="Acme"} 1.0
camwatch_devices{covered="true",sensor="site-a",vendor="Hikvision"} 1.0
camwatch_devices{covered="false",sensor="site-a",vendor="unknown"} 1.0
# HELP camwatch_devices_evicted_total Devices dropped from the inventory over limits.max_devices.
# TYPE camwatch_devices_evicted_total counter
camwatch_devices_evicted_total{sensor="site-a"} 6.0
# HELP camwatch_devices_held_total Sightings of new camera-side sources held back by the new-device budget (limits.new_devices_per_second, new_devices_burst): a flood of forged sources.
# TYPE camwatch_devices_held_total counter
camwatch_devices_held_total{sensor="site-a"} 42.0
# HELP camwatch_device_info Identity of each camera-side device (value 1).
# TYPE camwatch_device_info gauge
camwatch_device_info{covered="true",covered_basis="named",device="10.20.0.5",mac="00:12:ab:00:00:01",maker="Hikvision",model="DS-2CD2143G0-I",role="camera",sensor="site-a",vendor="Hangzhou Hikvision"} 1.0
camwatch_device_info{covered="false",covered_basis="",device="10.20.0.6",mac="",maker="",model="",role="other",sensor="site-a",vendor=""} 1.0
camwatch_device_info{covered="false",covered_basis="",device="10.20.0.7",mac="",maker="",model="",role="nvr",sensor="site-a",vendor="Acme"} 1.0
# HELP camwatch_device_egress_bytes_total Bytes sent by each camera-side device, by destination scope.
# TYPE camwatch_device_egress_bytes_total counter
camwatch_device_egress_bytes_total{device="10.20.0.5",scope="camera",sensor="site-a"} 70.0
camwatch_device_egress_bytes_total{device="10.20.0.5",scope="public",sensor="site-a"} 500.0
camwatch_device_egress_bytes_total{device="10.20.0.7",scope="core",sensor="site-a"} 3.0
# HELP camwatch_external_destinations Distinct public or core-network addresses camera-side devices exchanged traffic with.
# TYPE camwatch_external_destinations gauge
camwatch_external_destinations{sensor="site-a"} 8.0
# HELP camwatch_egress_country_bytes_total Bytes camera-side devices sent to public (or allowed public) destinations, by the destination's country (registry assignment, or the configured country database's; unknown, other) and whether the device is a covered maker.
# TYPE camwatch_egress_country_bytes_total counter
camwatch_egress_country_bytes_total{country="CN",covered="true",sensor="site-a"} 400.0
camwatch_egress_country_bytes_total{country="US",covered="false",sensor="site-a"} 7.0
camwatch_egress_country_bytes_total{country="unknown",covered="true",sensor="site-a"} 20.0
# HELP camwatch_segmentation_violations_total New episodes of camera VLAN and core network meeting outside the allowlist.
# TYPE camwatch_segmentation_violations_total counter
camwatch_segmentation_violations_total{direction="camera_to_core",sensor="site-a"} 1.0
camwatch_segmentation_violations_total{direction="core_to_camera",sensor="site-a"} 2.0
# HELP camwatch_covered_list_info Version of the covered-maker list in use.
# TYPE camwatch_covered_list_info gauge
camwatch_covered_list_info{sensor="site-a",version="2026.1"} 1.0
# HELP camwatch_dns_names Addresses with a DNS name learned from answers on the wire.
# TYPE camwatch_dns_names gauge
camwatch_dns_names{sensor="site-a"} 11.0
# HELP camwatch_top_destination_bytes Bytes each device sent to its top 5 outside destinations (rank 1 = most), named by DNS/SNI where known, with the destination's country and network owner (empty when unknown).
# TYPE camwatch_top_destination_bytes gauge
camwatch_top_destination_bytes{country="CN",destination="cloud.example.com",device="10.20.0.5",owner="Example Cloud Ltd",rank="1",scope="public",sensor="site-a"} 400.0
camwatch_top_destination_bytes{country="unknown",destination="203.0.113.9",device="10.20.0.5",owner="",rank="2",scope="core",sensor="site-a"} 100.0
# HELP camwatch_model_info The learned baseline in use by the anomaly detector.
# TYPE camwatch_model_info gauge
camwatch_model_info{model="iforest",sensor="site-a",trained_at="2026-01-02T03:04:05Z",version="3"} 1.0
# HELP camwatch_model_trained_timestamp_seconds When the learned baseline was trained.
# TYPE camwatch_model_trained_timestamp_seconds gauge
camwatch_model_trained_timestamp_seconds{sensor="site-a"} 1.767323045e+09
# HELP camwatch_capture_dropped_packets_total Packets the kernel or dumpcap dropped before camwatch saw them (live capture).
# TYPE camwatch_capture_dropped_packets_total counter
camwatch_capture_dropped_packets_total{sensor="site-a"} 12.0
# HELP camwatch_capture_interface_received_packets_total Frames the capture interface received since capture started, by the kernel's interface counter (live capture without a capture filter). Less camwatch_packets_total: frames camwatch has not seen, in flight or lost, visible while capturing.
# TYPE camwatch_capture_interface_received_packets_total counter
camwatch_capture_interface_received_packets_total{sensor="site-a"} 1000.0
# HELP camwatch_processing_lag_seconds Wall-clock delay between capturing the newest packet and processing it (live capture).
# TYPE camwatch_processing_lag_seconds gauge
camwatch_processing_lag_seconds{sensor="site-a"} 0.25
# HELP camwatch_last_packet_timestamp_seconds Capture timestamp of the newest packet processed.
# TYPE camwatch_last_packet_timestamp_seconds gauge
camwatch_last_packet_timestamp_seconds{sensor="site-a"} 1.7000000005e+09
# HELP camwatch_alerts_total Detections (one per detector episode), by detector and severity; each is evidence of an incident.
# TYPE camwatch_alerts_total counter
camwatch_alerts_total{detector="custom",sensor="site-a",severity="info"} 0.0
camwatch_alerts_total{detector="custom",sensor="site-a",severity="low"} 1.0
camwatch_alerts_total{detector="custom",sensor="site-a",severity="medium"} 0.0
camwatch_alerts_total{detector="custom",sensor="site-a",severity="high"} 0.0
camwatch_alerts_total{detector="custom",sensor="site-a",severity="critical"} 0.0
camwatch_alerts_total{detector="egress_policy",sensor="site-a",severity="info"} 0.0
camwatch_alerts_total{detector="egress_policy",sensor="site-a",severity="low"} 0.0
camwatch_alerts_total{detector="egress_policy",sensor="site-a",severity="medium"} 0.0
camwatch_alerts_total{detector="egress_policy",sensor="site-a",severity="high"} 2.0
camwatch_alerts_total{detector="egress_policy",sensor="site-a",severity="critical"} 0.0
camwatch_alerts_total{detector="segmentation",sensor="site-a",severity="info"} 0.0
camwatch_alerts_total{detector="segmentation",sensor="site-a",severity="low"} 0.0
camwatch_alerts_total{detector="segmentation",sensor="site-a",severity="medium"} 0.0
camwatch_alerts_total{detector="segmentation",sensor="site-a",severity="high"} 0.0
camwatch_alerts_total{detector="segmentation",sensor="site-a",severity="critical"} 0.0
# HELP camwatch_alerts_suppressed_total Incidents counted but not written: a device over its per-detector budget in one episode window, or a flood.
# TYPE camwatch_alerts_suppressed_total counter
camwatch_alerts_suppressed_total{detector="custom",sensor="site-a"} 0.0
camwatch_alerts_suppressed_total{detector="egress_policy",sensor="site-a"} 5.0
camwatch_alerts_suppressed_total{detector="segmentation",sensor="site-a"} 0.0
# HELP camwatch_incidents_open Open incidents (device and service), by current severity.
# TYPE camwatch_incidents_open gauge
camwatch_incidents_open{sensor="site-a",severity="info"} 0.0
camwatch_incidents_open{sensor="site-a",severity="low"} 1.0
camwatch_incidents_open{sensor="site-a",severity="medium"} 0.0
camwatch_incidents_open{sensor="site-a",severity="high"} 2.0
camwatch_incidents_open{sensor="site-a",severity="critical"} 0.0
# HELP camwatch_incident_lines_total Lines written to the alert log, by event (open, update, close; flood summaries).
# TYPE camwatch_incident_lines_total counter
camwatch_incident_lines_total{event="open",sensor="site-a"} 4.0
camwatch_incident_lines_total{event="update",sensor="site-a"} 1.0
camwatch_incident_lines_total{event="close",sensor="site-a"} 1.0
camwatch_incident_lines_total{event="flood",sensor="site-a"} 0.0
"""


def _exposition(snap: SensorSnapshot, *collectors) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for cls in collectors:
        registry.register(cls(lambda: snap))
    return generate_latest(registry).decode()


def test_every_family_renders_exactly_from_the_snapshot():
    registry = CollectorRegistry(auto_describe=False)
    for cls in (TrafficCollector, HealthCollector, FlowsCollector, DevicesCollector, ReachCollector, NamingCollector,
                ModelCollector, CaptureCollector):
        registry.register(cls(lambda: SNAPSHOT))
    registry.register(AlertsCollector(lambda: SNAPSHOT, ["egress_policy", "segmentation"]))
    assert generate_latest(registry).decode() == EXPOSITION


def test_the_build_info_names_camwatch_and_python():
    assert _exposition(SNAPSHOT, BuildCollector) == (
        "# HELP camwatch_build_info camwatch version running this sensor.\n"
        "# TYPE camwatch_build_info gauge\n"
        f'camwatch_build_info{{python="{sys.version.split()[0]}",sensor="site-a",version="{__version__}"}} 1.0\n')


def test_without_a_model_or_live_capture_those_series_are_absent():
    from dataclasses import replace
    quiet = replace(SNAPSHOT, model=None, interface_received=None, processing_lag=None, last_packet_ts=None)
    assert _exposition(quiet, ModelCollector) == ""
    assert _exposition(quiet, CaptureCollector) == (
        "# HELP camwatch_capture_dropped_packets_total Packets the kernel or dumpcap dropped before camwatch saw them "
        "(live capture).\n"
        "# TYPE camwatch_capture_dropped_packets_total counter\n"
        'camwatch_capture_dropped_packets_total{sensor="site-a"} 12.0\n'
        "# HELP camwatch_last_packet_timestamp_seconds Capture timestamp of the newest packet processed.\n"
        "# TYPE camwatch_last_packet_timestamp_seconds gauge\n"
        'camwatch_last_packet_timestamp_seconds{sensor="site-a"} 0.0\n')


def test_the_sensor_collector_renders_every_part_from_one_snapshot(monkeypatch):
    import sensor.export.collectors as collectors
    taken = []

    def take(sensor):
        taken.append(sensor)
        return SNAPSHOT
    monkeypatch.setattr(collectors, "take_snapshot", take)
    whole = SensorCollector("the sensor", ["egress_policy", "segmentation"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(whole)
    text = generate_latest(registry).decode()
    assert taken == ["the sensor"]
    parts = CollectorRegistry(auto_describe=False)
    for part in (BuildCollector, TrafficCollector, HealthCollector, FlowsCollector):
        parts.register(part(lambda: SNAPSHOT))
    parts.register(AlertsCollector(lambda: SNAPSHOT, ["segmentation", "egress_policy"]))
    for part in (DevicesCollector, ReachCollector, NamingCollector, ModelCollector, CaptureCollector):
        parts.register(part(lambda: SNAPSHOT))
    assert text == generate_latest(parts).decode()
    for part in whole.parts:                    # registered on its own, each part takes its own snapshot
        list(part.collect())
    assert taken == ["the sensor"] * 11
    assert [type(p).__name__ for p in whole.parts] == [
        "BuildCollector", "TrafficCollector", "HealthCollector", "FlowsCollector", "AlertsCollector",
        "DevicesCollector", "ReachCollector", "NamingCollector", "ModelCollector", "CaptureCollector"]


def test_devices_are_counted_per_vendor_and_coverage():
    from dataclasses import replace
    twins = replace(SNAPSHOT, devices=(RECORDER, replace(RECORDER, ip="10.20.0.8"), CAMERA))
    text = _exposition(twins, DevicesCollector)
    assert 'camwatch_devices{covered="false",sensor="site-a",vendor="Acme"} 2.0\n' in text
    assert 'camwatch_devices{covered="true",sensor="site-a",vendor="Hikvision"} 1.0\n' in text
