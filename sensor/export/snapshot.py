"""The sensor's state at one instant, as plain values: what the metrics collectors render.

`take_snapshot` is the only code in the export stage that reads the sensor's internals, so when the pipeline's
structure changes (where the detectors, the inventory or the name cache live) this is the one function to follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sensor.decode import ERROR_REASONS, NETWORK_NAMES
from sensor.enrich import Device, format_mac, top_destinations
from sensor.enrich.geography import Geography, country_label

if TYPE_CHECKING:
    from sensor.pipeline import Sensor

TOP_DESTINATIONS = 5   # per device: the bound on camwatch_top_destination_bytes series


@dataclass(frozen=True)
class DeviceSnapshot:
    ip: str
    mac: str                                # "" when no frame showed it
    vendor: str                             # the MAC's organisation in Wireshark's manuf; "" when unknown
    maker: str                              # the covered maker; "" when not covered
    covered: bool
    role: str
    model: str                              # from its banners or discovery replies; "" when none told
    egress_bytes: Mapping[str, int]         # by destination scope
    # (name or address, scope, country label, owner or "", bytes sent), most first
    top_destinations: tuple[tuple[str, str, str, str, int], ...]
    covered_basis: str = ""                 # named, prc-nil, oem, behaviour; "" when not covered


@dataclass(frozen=True)
class ModelSnapshot:
    name: str
    version: str
    trained_at: str                         # ISO 8601, as the model file states it


@dataclass(frozen=True)
class SensorSnapshot:
    """Copies, never shared with the sensor: rendering one needs no lock."""

    sensor_name: str
    packets: int
    bytes: int
    decoded_packets: Mapping[str, int]      # by network-layer protocol, in decode.NETWORK_NAMES order
    decode_errors: Mapping[str, int]        # by reason, in decode.ERROR_REASONS order
    dissect_errors: Mapping[str, int]       # by wire parser, only those that failed
    parses_skipped: Mapping[str, int]       # by budgeted reader (dns, identity): packets left unread in a flood
    state_write_errors: int
    evictions: Mapping[str, int]            # by bounded structure
    flows_active: int
    flows_created: int
    flows_expired: Mapping[str, int]        # by reason
    alerts: Mapping[tuple[str, str], int]   # by (detector, severity)
    alerts_suppressed: Mapping[str, int]    # by detector
    incidents_open: Mapping[str, int]       # by current severity
    incident_lines: Mapping[str, int]       # lines written, by event
    devices: tuple[DeviceSnapshot, ...]
    devices_evicted: int
    devices_held: int   # sightings of new sources the new-device budget held back
    covered_list_version: str
    segmentation_violations: Mapping[str, int]   # by direction
    external_destinations: int
    egress_countries: Mapping[tuple[str, bool], int]   # bytes sent outside, by (country label, covered)
    dns_names: int
    model: ModelSnapshot | None
    capture_dropped: int
    interface_received: int | None          # None: not known (replay, or a capture filter in use)
    processing_lag: float | None            # None: not live
    last_packet_ts: float | None


def take_snapshot(sensor: Sensor) -> SensorSnapshot:
    """Everything the metrics tell, read under the sensor's lock in one go, so that one scrape's families agree
    with each other (the packets by network add up to the packets) even while capture goes on."""
    s = sensor
    with s.lock:
        return SensorSnapshot(
            sensor_name=s.config.sensor_name,
            packets=s.packets,
            bytes=s.bytes,
            decoded_packets=dict(zip(NETWORK_NAMES, s.by_network.tolist(), strict=True)),
            decode_errors=dict(zip(ERROR_REASONS[1:], s.decode_errors[1:].tolist(), strict=True)),
            dissect_errors=dict(s.parsers.errors),
            parses_skipped=s.enricher.parses_skipped,
            state_write_errors=s.known.write_errors,
            evictions=s.evictions(),
            flows_active=len(s.flows),
            flows_created=s.flows.created,
            flows_expired=dict(s.flows.expired),
            alerts=dict(s.alert_counts),
            alerts_suppressed=dict(s.suppressed),
            incidents_open=s.detection.incidents.open_severities(),
            incident_lines=dict(s.detection.lines),
            devices=tuple(_device(d, s.classifier.scope_of_text, s.geography) for d in s.inventory.devices.values()),
            devices_evicted=s.inventory.evicted,
            devices_held=s.inventory.admission.held,
            covered_list_version=s.inventory.makers.version,
            segmentation_violations=dict(s.segmentation.violations),
            external_destinations=len(s.external_destinations),
            egress_countries=dict(s.enricher.egress_countries.bytes),
            dns_names=len(s.names),
            model=ModelSnapshot(s.model.name, s.model.version, s.model.trained_at) if s.model is not None else None,
            capture_dropped=s.capture_dropped,
            interface_received=s.interface_received,
            processing_lag=s.processing_lag,
            last_packet_ts=s.last_ts,
        )


def _device(d: Device, scope_of: Callable[[str], str], geography: Geography) -> DeviceSnapshot:
    top = tuple((label, scope_of(addr), country_label(place := geography.place(addr)),
                 (place.owner if place is not None else None) or "", sent)
                for label, addr, sent in top_destinations(d, TOP_DESTINATIONS))
    return DeviceSnapshot(ip=d.ip, mac=format_mac(d.mac) or "", vendor=d.vendor or "",
                          maker=d.maker.name if d.maker else "", covered=d.covered, role=d.role,
                          model=d.identity.get("model", ""), egress_bytes=dict(d.egress_bytes), top_destinations=top,
                          covered_basis=d.covered_basis or "")
