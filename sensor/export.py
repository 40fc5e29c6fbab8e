"""Export stage: Prometheus metrics (a collector that snapshots sensor state at scrape time), the alert log,
and the HTTP endpoint serving /metrics, /healthz and /readyz.

Nothing on the packet path touches prometheus_client: the collector reads the sensor's own counters under its
lock when Prometheus scrapes, so instrumentation costs nothing per packet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import ssl
import sys
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import IO
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

from sensor import __version__
from sensor.config import PBKDF2_MAX_ITERATIONS, PBKDF2_MIN_ITERATIONS, parse_password_hash
from sensor.decode import ERROR_REASONS, NETWORK_NAMES
from sensor.detect import SEVERITIES, Alert
from sensor.dissect import WIRE_PARSERS
from sensor.enrich import SCOPES, format_mac, top_destinations
from sensor.errors import CamwatchError

DETECTORS = ("egress_policy", "segmentation", "vendor_cloud", "hardcoded_infra", "video_egress", "beaconing",
             "new_destination", "anomaly")
DEFAULT_METRICS_ADDRESS = ("127.0.0.1", 9847)
TOP_DESTINATIONS = 5   # per device: the bound on camwatch_top_destination_bytes series


class SensorCollector(Collector):
    def __init__(self, sensor):
        self.sensor = sensor

    # C901 debt, complexity 21 (limit 15, pyproject.toml [tool.ruff.lint.mccabe]): every metric family from one
    # snapshot taken under the lock; split it before it grows.
    def collect(self) -> Iterable:  # noqa: C901
        s = self.sensor
        name = s.config.sensor_name
        with s.lock:
            packets, nbytes = s.packets, s.bytes
            by_network = s.by_network.tolist()
            errors = s.decode_errors.tolist()
            dissect_errors = dict(s.parsers.errors)
            state_write_errors = s.known.write_errors
            evictions = s.evictions()
            flows_active = len(s.flows)
            flows_created = s.flows.created
            expired = dict(s.flows.expired)
            alert_counts = dict(s.alert_counts)
            suppressed = dict(s.suppressed)
            devices = [(d.ip, d.mac, d.vendor, dict(d.egress_bytes), d.covered, d.role, d.identity.get("model", ""),
                        d.maker.name if d.maker else "") for d in s.inventory.devices.values()]
            violations = dict(s.segmentation.violations)
            ranked_peers = [(d.ip, top_destinations(d, TOP_DESTINATIONS), s.classifier.address_scope)
                            for d in s.inventory.devices.values() if d.external_peers]
            top = [(ip, [(label, scope_of(ipaddress.ip_address(addr)), sent) for label, addr, sent in ranked])
                   for ip, ranked, scope_of in ranked_peers]
            lag = s.processing_lag
            anomaly_model = s.model
            dropped = s.capture_dropped
            interface_received = s.interface_received
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
        fam: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(
            "camwatch_decoded_packets", "Frames read, by network-layer protocol.", labels=["sensor", "network"])
        for label, value in zip(NETWORK_NAMES, by_network, strict=True):
            fam.add_metric([name, label], value)
        yield fam
        fam = CounterMetricFamily("camwatch_decode_errors", "Frames that could not be decoded, by reason.",
                                  labels=["sensor", "reason"])
        for label, value in zip(ERROR_REASONS[1:], errors[1:], strict=True):
            fam.add_metric([name, label], value)
        yield fam

        fam = CounterMetricFamily("camwatch_dissect_errors", "Packets a wire parser failed on (a camwatch bug, or "
                                  "input nobody foresaw): skipped, counted, and the sensor goes on.",
                                  labels=["sensor", "parser"])
        for parser in sorted(set(WIRE_PARSERS) | set(dissect_errors)):
            fam.add_metric([name, parser], dissect_errors.get(parser, 0))
        yield fam

        yield counter("camwatch_state_write_errors", "Writes to the state database that failed (disk full, read-only "
                      "or vanished file); camwatch goes on with what it holds in memory.", state_write_errors)

        fam = CounterMetricFamily("camwatch_evictions", "Entries dropped from a bounded structure over its limit "
                                  "(docs/reliability.md lists them); flows and devices have their own counters.",
                                  labels=["sensor", "structure"])
        for structure, value in sorted(evictions.items()):
            fam.add_metric([name, structure], value)
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

        fam = CounterMetricFamily("camwatch_alerts_suppressed", "Alerts counted but not written: a device over its "
                                  "per-detector budget in one episode window.", labels=["sensor", "detector"])
        for det in detectors:
            fam.add_metric([name, det], suppressed.get(det, 0))
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
        fam = GaugeMetricFamily("camwatch_top_destination_bytes",
                                f"Bytes each device sent to its top {TOP_DESTINATIONS} outside destinations "
                                "(rank 1 = most), named by DNS/SNI where known.",
                                labels=["sensor", "device", "rank", "destination", "scope"])
        for ip, ranked in top:
            for rank, (label, scope, sent) in enumerate(ranked, 1):
                fam.add_metric([name, ip, str(rank), label, scope], sent)
        yield fam
        if anomaly_model is not None:
            info = InfoMetricFamily("camwatch_model", "The learned baseline in use by the anomaly detector.",
                                    labels=["sensor"])
            info.add_metric([name], {"model": anomaly_model.name, "version": anomaly_model.version,
                                     "trained_at": anomaly_model.trained_at})
            yield info
            trained = datetime.fromisoformat(anomaly_model.trained_at.replace("Z", "+00:00")).timestamp()
            yield _gauge("camwatch_model_trained_timestamp_seconds", "When the learned baseline was trained.", name,
                         trained)
        yield counter("camwatch_capture_dropped_packets", "Packets the kernel or dumpcap dropped before camwatch "
                      "saw them (live capture).", dropped)
        if interface_received is not None:
            yield counter("camwatch_capture_interface_received_packets", "Frames the capture interface received "
                          "since capture started, by the kernel's interface counter (live capture without a "
                          "capture filter). Less camwatch_packets_total: frames camwatch has not seen, in flight "
                          "or lost, visible while capturing.", interface_received)
        if lag is not None:
            yield _gauge("camwatch_processing_lag_seconds", "Wall-clock delay between capturing the newest packet "
                         "and processing it (live capture).", name, lag)
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
# The server and handler are prometheus_client's own, as its start_wsgi_server uses them (a thread per request,
# daemon threads; no access log); TLS is layered on the listening socket and basic auth in the WSGI app, below.
def parse_listen(value: str) -> tuple[str, int]:
    """ADDR:PORT, [V6]:PORT or :PORT (loopback)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port, printed at start
        raise CamwatchError(f"--serve {value!r}: expected ADDR:PORT, e.g. 127.0.0.1:{DEFAULT_METRICS_ADDRESS[1]}")
    host = host.strip("[]") or DEFAULT_METRICS_ADDRESS[0]
    return host, int(port)


PBKDF2_ITERATIONS = 200_000


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    if not PBKDF2_MIN_ITERATIONS <= iterations <= PBKDF2_MAX_ITERATIONS:
        raise ValueError(f"iterations must be from {PBKDF2_MIN_ITERATIONS} to {PBKDF2_MAX_ITERATIONS}")
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        iterations, salt, expected = parse_password_hash(hashed)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations), expected)


class BasicAuth:
    """HTTP basic auth against pbkdf2 hashes. Verified credentials are remembered by their SHA-256, so a
    scrape every few seconds does not pay for pbkdf2 each time; the comparison stays constant-time.

    Every attempt not in that memory costs exactly one pbkdf2 run of the configured cost, whether the user
    exists or not: an unknown user is checked against a decoy, so timing does not tell which names exist."""

    def __init__(self, users: tuple[tuple[str, str], ...]):
        # parsed once, so that a known and an unknown user do the same work per request
        self.users = {user: parse_password_hash(hashed) for user, hashed in users}
        cost = max((iterations for iterations, _, _ in self.users.values()), default=PBKDF2_ITERATIONS)
        # a random digest, which no password derives to (a chance of 2**-256)
        self._decoy = (cost, os.urandom(16), os.urandom(32))
        self._verified: set[bytes] = set()

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        token = hashlib.sha256(header.encode()).digest()
        if any(hmac.compare_digest(token, known) for known in self._verified):
            return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        iterations, salt, expected = self.users.get(user, self._decoy)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        if hmac.compare_digest(got, expected) and user in self.users:
            if len(self._verified) < 64:
                self._verified.add(token)
            return True
        return False


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, listen: tuple[str, int], ready=lambda: True,
                 inventory=list, settings=None):
        metrics_app = make_wsgi_app(registry)
        auth = BasicAuth(settings.basic_auth) if settings is not None and settings.basic_auth else None

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "/")
            if path in ("/metrics", "/inventory") and auth and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
                start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                    ("WWW-Authenticate", 'Basic realm="camwatch"')])
                return [b"unauthorized\n"]
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
        server_class: type[ThreadingWSGIServer] = type(
            "Server", (ThreadingWSGIServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        except OSError as exc:
            raise CamwatchError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.tls = bool(settings is not None and settings.tls_cert)
        if self.tls:
            # the handshake happens in the request thread, so a slow or silent client cannot stall accept()
            self.httpd.socket = _tls_context(settings).wrap_socket(self.httpd.socket, server_side=True,
                                                                   do_handshake_on_connect=False)
        self.address = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _tls_context(settings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.client_ca:
            ctx.load_verify_locations(settings.client_ca)
            # Required in the handshake, not optional with per-route checks: a client without a certificate never
            # reaches the HTTP layer, so no route (/healthz included) depends on the application remembering to
            # check. docs/deploy.md tells health checks to present a certificate.
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CamwatchError(f"metrics TLS: cannot load certificate, key or CA: {exc}") from None
    return ctx


def _text(start_response, status: str, body: str):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def write_metrics_file(registry: CollectorRegistry, path: str) -> None:
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot write metrics: {exc.strerror}") from None
