"""Export stage: Prometheus metrics (a collector that snapshots sensor state at scrape time), the alert log,
and the HTTP endpoint serving /metrics, /healthz and /readyz.

Nothing on the packet path touches prometheus_client: the collector reads the sensor's own counters under its
lock when Prometheus scrapes, so instrumentation costs nothing per packet.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import IO, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app,
                               write_to_textfile)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from sensor import __version__
from sensor.decode import ERROR_REASONS, NETWORK_NAMES
from sensor.detect import SEVERITIES, Alert
from sensor.enrich import SCOPES, format_mac
from sensor.errors import CamwatchError

DETECTORS = ("egress_policy", "segmentation", "vendor_cloud", "hardcoded_infra", "video_egress", "beaconing",
             "new_destination", "anomaly")
DEFAULT_METRICS_ADDRESS = ("127.0.0.1", 9847)


class SensorCollector(Collector):
    def __init__(self, sensor):
        self.sensor = sensor

    def collect(self) -> Iterable:
        s = self.sensor
        name = s.config.sensor_name
        with s.lock:
            packets, nbytes = s.packets, s.bytes
            by_network = s.by_network.tolist()
            errors = s.decode_errors.tolist()
            flows_active = len(s.flows)
            flows_created = s.flows.created
            expired = dict(s.flows.expired)
            alert_counts = dict(s.alert_counts)
            devices = [(d.ip, d.mac, d.vendor, dict(d.egress_bytes), d.covered, d.role, d.identity.get("model", ""),
                        d.maker.name if d.maker else "") for d in s.inventory.devices.values()]
            violations = dict(s.segmentation.violations)
            makers_version = s.inventory.makers.version
            devices_evicted = s.inventory.evicted
            external = len(s.external_destinations)
            names = len(s.names)
            last_ts = s.last_ts

        info = InfoMetricFamily("camwatch_build", "camwatch version running this sensor.", labels=["sensor"])
        info.add_metric([name], {"version": __version__, "python": sys.version.split()[0]})
        yield info

        def counter(metric, doc, value, labels=(), label_values=()):
            fam = CounterMetricFamily(metric, doc, labels=["sensor", *labels])
            fam.add_metric([name, *label_values], value)
            return fam

        yield counter("camwatch_packets", "Frames read from the capture, IP or not.", packets)
        yield counter("camwatch_bytes", "Bytes on the wire of the frames read (original length).", nbytes)
        fam = CounterMetricFamily("camwatch_decoded_packets", "Frames read, by network-layer protocol.",
                                  labels=["sensor", "network"])
        for label, value in zip(NETWORK_NAMES, by_network):
            fam.add_metric([name, label], value)
        yield fam
        fam = CounterMetricFamily("camwatch_decode_errors", "Frames that could not be decoded, by reason.",
                                  labels=["sensor", "reason"])
        for label, value in zip(ERROR_REASONS[1:], errors[1:]):
            fam.add_metric([name, label], value)
        yield fam

        yield _gauge("camwatch_flows_active", "Flows in the flow table.", name, flows_active)
        yield counter("camwatch_flows_created", "Flows created.", flows_created)
        fam = CounterMetricFamily("camwatch_flows_expired", "Flows removed from the table, by reason "
                                  "(idle timeout, active timeout, evicted over max_flows, end of capture).",
                                  labels=["sensor", "reason"])
        for reason, value in expired.items():
            fam.add_metric([name, reason], value)
        yield fam

        fam = CounterMetricFamily("camwatch_alerts", "Alerts raised (one per episode), by detector and severity.",
                                  labels=["sensor", "detector", "severity"])
        detectors = sorted(set(DETECTORS) | {d for d, _ in alert_counts})
        for det in detectors:
            for sev in SEVERITIES:
                fam.add_metric([name, det, sev], alert_counts.get((det, sev), 0))
        yield fam

        fam = GaugeMetricFamily("camwatch_devices", "Camera-side hosts seen sending traffic, by manufacturer and "
                                "whether it is a covered maker (bounded by limits.max_devices).",
                                labels=["sensor", "vendor", "covered"])
        by_vendor: dict[tuple[str, str], int] = {}
        for _ip, _mac, vendor, _e, covered, _role, _model, maker in devices:
            k = (maker or vendor or "unknown", "true" if covered else "false")
            by_vendor[k] = by_vendor.get(k, 0) + 1
        for (vendor, covered), count in sorted(by_vendor.items()):
            fam.add_metric([name, vendor, covered], count)
        yield fam
        yield counter("camwatch_devices_evicted", "Devices dropped from the inventory over limits.max_devices.",
                      devices_evicted)
        fam = GaugeMetricFamily("camwatch_device_info", "Identity of each camera-side device (value 1).",
                                labels=["sensor", "device", "mac", "vendor", "maker", "covered", "role", "model"])
        egress = CounterMetricFamily("camwatch_device_egress_bytes",
                                     "Bytes sent by each camera-side device, by destination scope.",
                                     labels=["sensor", "device", "scope"])
        for ip, mac, vendor, by_scope, covered, role, model, maker in devices:
            fam.add_metric([name, ip, format_mac(mac) or "", vendor or "", maker, "true" if covered else "false",
                            role, model], 1)
            for scope in SCOPES:
                if scope in by_scope:
                    egress.add_metric([name, ip, scope], by_scope[scope])
        yield fam
        yield egress
        yield _gauge("camwatch_external_destinations",
                     "Distinct public or core-network addresses camera-side devices exchanged traffic with.",
                     name, external)
        fam = CounterMetricFamily("camwatch_segmentation_violations",
                                  "New episodes of camera VLAN and core network meeting outside the allowlist.",
                                  labels=["sensor", "direction"])
        for direction, count in sorted(violations.items()):
            fam.add_metric([name, direction], count)
        yield fam
        info = InfoMetricFamily("camwatch_covered_list", "Version of the covered-maker list in use.",
                                labels=["sensor"])
        info.add_metric([name], {"version": makers_version})
        yield info
        yield _gauge("camwatch_dns_names", "Addresses with a DNS name learned from answers on the wire.", name, names)
        yield _gauge("camwatch_last_packet_timestamp_seconds", "Capture timestamp of the newest packet processed.",
                     name, last_ts or 0.0)


def _gauge(metric: str, doc: str, sensor: str, value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(metric, doc, labels=["sensor"])
    fam.add_metric([sensor], value)
    return fam


def build_registry(sensor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SensorCollector(sensor))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class AlertLog:
    """Alert JSON lines; each line is flushed as written so a crash never loses an alert already raised."""

    def __init__(self, target: str | None, append: bool = False):
        self._own = False
        self.count = 0
        if target is None:
            self._fh: IO[str] | None = None
        elif target == "-":
            self._fh = sys.stdout
        else:
            try:
                self._fh = open(target, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise CamwatchError(f"{target}: cannot write alerts: {exc.strerror}") from None
            self._own = True
        self._lock = threading.Lock()

    def write(self, alert: Alert) -> None:
        self.count += 1
        if self._fh is None:
            return
        line = json.dumps(alert.as_dict(), separators=(",", ":"), sort_keys=False)
        with self._lock:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except BrokenPipeError:
                self._fh = None

    def close(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()


# ---- HTTP ----------------------------------------------------------------------------------------------
class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


def parse_listen(value: str) -> tuple[str, int]:
    """ADDR:PORT, [V6]:PORT or :PORT (loopback)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CamwatchError(f"--serve {value!r}: expected ADDR:PORT, e.g. 127.0.0.1:{DEFAULT_METRICS_ADDRESS[1]}")
    host = host.strip("[]") or DEFAULT_METRICS_ADDRESS[0]
    return host, int(port)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, listen: tuple[str, int], ready=lambda: True,
                 inventory=lambda: []):
        metrics_app = make_wsgi_app(registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/healthz":
                return _text(start_response, "200 OK", "ok\n")
            if path == "/readyz":
                if ready():
                    return _text(start_response, "200 OK", "ready\n")
                return _text(start_response, "503 Service Unavailable", "not ready\n")
            if path == "/inventory":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps(inventory()).encode()]
            if path == "/":
                return _text(start_response, "200 OK", "camwatch: see /metrics, /inventory, /healthz, /readyz\n")
            return _text(start_response, "404 Not Found", "not found\n")

        host, port = listen
        server_class = type("Server", (_ThreadingWSGIServer,),
                            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        except OSError as exc:
            raise CamwatchError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.address = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _text(start_response, status: str, body: str):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def write_metrics_file(registry: CollectorRegistry, path: str) -> None:
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot write metrics: {exc.strerror}") from None


def wait_forever(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.2)
