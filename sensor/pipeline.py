"""The sensor: wires capture batches through decode -> flows -> enrich -> detect, and holds the state export reads.

A batch is cut into windows of at most one second of packet time, so flow expiry and detection see time advance
in small steps even when one batch holds half an hour of a quiet camera.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

import numpy as np

from sensor.capture import Batch
from sensor.config import Config
from sensor.decode import (ERROR_REASONS, NETWORK_NAMES, PROTO_TCP, PROTO_UDP, WINDOW, Decoded, decode,
                           payload)
from sensor.detect import Alert, EgressPolicyDetector, Episodes
from sensor.dissect import HTTP_METHODS, parse_dns, parse_http_host, parse_tls_sni
from sensor.enrich import (SCOPE_CORE, SCOPE_PUBLIC, Classifier, Inventory, ManufDatabase, NameCache)
from sensor.flows import FlowTable, FlowUpdate, flow_keys, ip_from16

MAX_EXTERNAL_DESTINATIONS = 1_000_000
_HTTP_PREFIXES = np.array([int.from_bytes(m, "big") for m in HTTP_METHODS], dtype=np.int64)


class Sensor:
    def __init__(self, config: Config, manuf: ManufDatabase | None = None,
                 on_alert: Callable[[Alert], None] | None = None):
        self.config = config
        self.lock = threading.Lock()
        self.packets = 0
        self.bytes = 0
        self.by_network = np.zeros(len(NETWORK_NAMES), dtype=np.int64)
        self.decode_errors = np.zeros(len(ERROR_REASONS), dtype=np.int64)
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.flows = FlowTable(config.flows)
        self.classifier = Classifier(config)
        self.names = NameCache(config.max_names)
        self.inventory = Inventory(config, manuf if manuf is not None else ManufDatabase.load())
        self.episodes = Episodes(config.episode_timeout)
        self.detectors = [EgressPolicyDetector(config.sensor_name, self.episodes)]
        self.alert_counts: Counter[tuple[str, str]] = Counter()
        self.external_destinations: set[str] = set()
        self.on_alert = on_alert
        self.started_at = time.time()

    # ---- input -----------------------------------------------------------------------------------------
    def process(self, batch: Batch, pace: Callable[[float], None] | None = None) -> None:
        n = len(batch)
        if n == 0:
            return
        dec = decode(batch)
        ts = batch.ts
        seconds = np.floor(ts)
        cuts = np.flatnonzero(seconds[1:] != seconds[:-1]) + 1
        bounds = np.concatenate(([0], cuts, [n]))
        ip = dec.is_ip
        for start, end in zip(bounds[:-1], bounds[1:]):
            if pace is not None:
                pace(float(ts[start]))
            with self.lock:
                self._window(dec, int(start), int(end), ip)

    def expire(self, now: float) -> None:
        """Housekeeping on the caller's clock (wall-clock when live and idle)."""
        with self.lock:
            self.flows.expire(now)

    def finish(self) -> None:
        with self.lock:
            self.flows.flush()

    # ---- one window ------------------------------------------------------------------------------------
    def _window(self, dec: Decoded, start: int, end: int, ip: np.ndarray) -> None:
        b = dec.batch
        sl = slice(start, end)
        self.packets += end - start
        self.bytes += int(b.wirelen[sl].sum())
        self.by_network += np.bincount(dec.network[sl], minlength=len(NETWORK_NAMES))
        self.decode_errors += np.bincount(dec.error[sl], minlength=len(ERROR_REASONS))
        t0 = float(b.ts[start])
        t1 = float(b.ts[end - 1])
        if self.first_ts is None:
            self.first_ts = t0
        self.last_ts = t1 if self.last_ts is None else max(self.last_ts, t1)
        self.flows.expire(t0)

        rows = np.flatnonzero(ip[sl]) + start
        if len(rows) == 0:
            return
        self._learn_dns(dec, rows)
        updates = self.flows.update(dec, rows)
        self._name_flows(dec, rows)
        for upd in updates:
            self._enrich_and_detect(dec, upd)

    def _learn_dns(self, dec: Decoded, rows: np.ndarray) -> None:
        proto = dec.proto[rows]
        dns = rows[(proto == PROTO_UDP) & ((dec.sport[rows] == 53) | (dec.dport[rows] == 53))
                   & (dec.payload_len[rows] >= 12)]
        for row in dns:
            msg = parse_dns(payload(dec, int(row)))
            if msg is None:
                continue
            ts = float(dec.batch.ts[row])
            if msg.is_response:
                self.names.learn(msg, ts)
            elif msg.qname and int(dec.dport[row]) == 53:
                client = ip_from16(dec.src[row].tobytes())
                if self.classifier.is_camera_side(client):
                    dev = self.inventory.touch(client, int(dec.src_mac[row]), ts)
                    self.inventory.record_query(dev, msg.qname, ts)

    def _name_flows(self, dec: Decoded, rows: np.ndarray) -> None:
        """TLS SNI and HTTP Host name the flow they travel in."""
        b = dec.batch
        tcp = rows[(dec.proto[rows] == PROTO_TCP) & (dec.payload_len[rows] >= 6)]
        if len(tcp) == 0:
            return
        data = np.frombuffer(b.data, dtype=np.uint8)
        off = dec.payload_off[tcp]
        captured_end = b.offsets[tcp] + b.caplen[tcp]
        head = np.zeros(len(tcp), dtype=np.int64)
        for k in range(4):
            pos = np.minimum(off + k, len(data) - 1)
            head = (head << 8) | np.where(off + k < captured_end, data[pos], 0)
        b5 = np.where(off + 5 < captured_end, data[np.minimum(off + 5, len(data) - 1)], 0)
        tls = ((head >> 24) == 0x16) & (b5 == 0x01)
        http = np.isin(head, _HTTP_PREFIXES)
        picked = tcp[tls | http]
        if len(picked) == 0:
            return
        keys, _ = flow_keys(dec, picked)
        for row, key in zip(picked, keys):
            body = payload(dec, int(row), limit=WINDOW * 64)
            name = parse_tls_sni(body) if body[:1] == b"\x16" else parse_http_host(body)
            if name:
                flow = self.flows.get(key.tobytes(), PROTO_TCP)
                if flow is not None and flow.name is None:
                    flow.name = name

    def _enrich_and_detect(self, dec: Decoded, upd: FlowUpdate) -> None:
        flow = upd.flow
        ts = float(dec.batch.ts[upd.index])
        for is_orig in (True, False):
            sent_pkts = upd.orig_pkts if is_orig else upd.resp_pkts
            if not sent_pkts:
                continue
            local, peer = (flow.orig_ip, flow.resp_ip) if is_orig else (flow.resp_ip, flow.orig_ip)
            if not self.classifier.is_camera_side(local):
                continue
            sent_bytes = upd.orig_bytes if is_orig else upd.resp_bytes
            dev = self.inventory.touch(local, flow.orig_mac if is_orig else flow.resp_mac, flow.last)
            dev.packets_sent += sent_pkts
            dev.bytes_sent += sent_bytes
            name = flow.name if is_orig and flow.name else self.names.lookup(peer, ts)
            port = flow.resp_port or None
            proto = flow.proto_name
            scope, _rule = self.classifier.destination_scope(peer, name, port, proto)
            dev.egress_bytes[scope] = dev.egress_bytes.get(scope, 0) + sent_bytes
            if scope in (SCOPE_PUBLIC, SCOPE_CORE):
                peer_s = str(peer)
                if len(self.external_destinations) < MAX_EXTERNAL_DESTINATIONS:
                    self.external_destinations.add(peer_s)
                if len(dev.external_peers) < 4096:
                    dev.external_peers.add(peer_s)
            for detector in self.detectors:
                alert = detector.check(ts, dev, sent_pkts, sent_bytes, is_orig, str(peer), port, proto, name,
                                       scope, flow.vlan)
                if alert is not None:
                    self._emit(alert)

    def _emit(self, alert: Alert) -> None:
        self.alert_counts[(alert.detector, alert.severity)] += 1
        if self.on_alert is not None:
            self.on_alert(alert)

    # ---- summaries -------------------------------------------------------------------------------------
    def summary(self) -> dict:
        with self.lock:
            by_detector: Counter[str] = Counter()
            for (det, _sev), count in self.alert_counts.items():
                by_detector[det] += count
            return {
                "packets": self.packets,
                "bytes": self.bytes,
                "non_ip_packets": int(self.packets - self.by_network[1] - self.by_network[2]),
                "decode_errors": int(self.decode_errors[1:].sum()),
                "flows": self.flows.created,
                "flows_active": len(self.flows),
                "devices": len(self.inventory),
                "external_destinations": len(self.external_destinations),
                "alerts": dict(by_detector),
            }
