"""sensor/export/snapshot.py: take_snapshot copies every value the metrics render from the sensor, and a device's
snapshot names its maker, model, MAC and its top five outside destinations with their scopes."""

from __future__ import annotations

from types import SimpleNamespace

from sensor.enrich import CoveredMakers
from sensor.enrich.maker_evidence import Verdict
from sensor.export.snapshot import TOP_DESTINATIONS, ModelSnapshot, take_snapshot

from .test_export import T0, make_batch, sensor_with, v4_udp

HIKVISION = next(m for m in CoveredMakers.load().makers if m.name == "Hikvision")


def test_a_device_snapshot_carries_its_identity_and_top_destinations():
    sensor = sensor_with({"networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]}})
    dev = sensor.inventory.touch("10.20.0.5", 0x0012AB000001, T0)
    dev.vendor, dev.verdict = "Hangzhou Hikvision", Verdict("Hikvision", HIKVISION, "behaviour", None)
    dev.identity.update({"model": "DS-2CD2143G0-I", "server": "App-webs/"})
    dev.egress_bytes.update({"public": 900, "core": 40})
    for i, sent in enumerate((10, 600, 50, 70, 20, 90, 5)):
        # the cloud is a real public address (its registry country is CN); documentation addresses have none
        dev.note_external_peer("110.43.68.240" if i == 1 else f"203.0.113.{i}", "cloud.example.com" if i == 1 else None,
                               sent)
    dev.note_external_peer("10.1.0.9", None, 400)
    sensor.inventory.touch("10.20.0.6", 0, T0)
    snap = take_snapshot(sensor)
    first, second = snap.devices
    assert TOP_DESTINATIONS == 5
    assert (first.ip, first.mac, first.vendor, first.maker, first.covered, first.role, first.model) == (
        "10.20.0.5", "00:12:ab:00:00:01", "Hangzhou Hikvision", "Hikvision", True, "camera", "DS-2CD2143G0-I")
    assert (first.covered_basis, second.covered_basis) == ("behaviour", "")
    assert first.egress_bytes == {"public": 900, "core": 40} and first.egress_bytes is not dev.egress_bytes
    assert first.top_destinations == (("cloud.example.com", "public", "CN", "", 600),
                                      ("10.1.0.9", "core", "unknown", "", 400),
                                      ("203.0.113.5", "public", "unknown", "", 90),
                                      ("203.0.113.3", "public", "unknown", "", 70),
                                      ("203.0.113.2", "public", "unknown", "", 50))
    assert (second.mac, second.vendor, second.maker, second.covered, second.role, second.model) == (
        "", "", "", False, "other", "")
    assert second.top_destinations == () and dict(second.egress_bytes) == {}


def test_the_sensor_counters_are_copied_by_value():
    sensor = sensor_with({"sensor": {"name": "site-b"}})
    sensor.process(make_batch([(T0, v4_udp()), (T0 + 1, v4_udp(sport=5001))]))
    sensor.capture_dropped, sensor.interface_received, sensor.processing_lag = 4, 99, 0.5
    snap = take_snapshot(sensor)
    assert (snap.sensor_name, snap.packets, snap.flows_active, snap.flows_created) == ("site-b", 2, 2, 2)
    assert snap.bytes == 2 * len(v4_udp())
    assert snap.decoded_packets == {"ipv4": 2, "ipv6": 0, "arp": 0, "other": 0}
    assert snap.decode_errors == {"truncated": 0, "bad_ip_header": 0, "bad_tcp_header": 0, "unknown_linktype": 0,
                                  "header_too_deep": 0}
    assert (snap.capture_dropped, snap.interface_received, snap.processing_lag) == (4, 99, 0.5)
    assert snap.last_packet_ts == T0 + 1 and snap.model is None
    assert snap.evictions == {"dns_names": 0, "episodes": 0, "alert_budgets": 0, "known_devices": 0,
                              "learned_networks": 0}
    assert snap.segmentation_violations == {"camera_to_core": 0, "core_to_camera": 0}
    assert (snap.external_destinations, snap.dns_names, snap.devices_evicted, snap.state_write_errors) == (0, 0, 0, 0)
    assert snap.covered_list_version == sensor.inventory.makers.version
    assert snap.flows_expired == {"idle": 0, "active": 0, "evicted": 0, "end": 0}
    assert (snap.alerts, snap.alerts_suppressed, snap.dissect_errors) == ({}, {}, {})
    sensor.model = SimpleNamespace(name="iforest", version="3", trained_at="2026-01-02T03:04:05Z")
    assert take_snapshot(sensor).model == ModelSnapshot("iforest", "3", "2026-01-02T03:04:05Z")
