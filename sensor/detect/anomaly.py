"""anomaly: the learned model scores each camera's one-minute windows; an out-of-character window is an alert."""

from __future__ import annotations

import time

import numpy as np

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import describe_device
from sensor.enrich import SCOPES, DnsQuery, Observation
from sensor.model import WindowFeatures


class AnomalyDetector(Detector):
    """The destination reported is the outside (or, failing that, any) peer the device sent most to in that
    window. Only camera-role devices are modelled (see observe)."""

    name = "anomaly"
    interest = frozenset(SCOPES)   # a device's whole minute is what gets scored
    MAX_PEERS_TRACKED = 256
    PARTIAL_EVERY = 5.0   # seconds of sensor time between looks at windows still filling
    # Counts only grow as a window fills: part-way through, what matters is whether they already exceed a typical
    # minute, so they are lifted to the training median (the most ordinary value) and judged above it.
    MONOTONE = ("log_bytes_sent", "log_packets_sent", "log_new_flows", "log_peers", "log_external_peers",
                "log_service_ports", "log_dns_queries")
    BOUNDED = ("log_mean_packet_bytes",)   # settles as the window fills: judged only once it is outside training

    @classmethod
    def wanted(cls, context: DetectorContext) -> bool:
        return context.model is not None

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        if context.model is None or context.inventory is None:
            raise ValueError("anomaly needs a model and the inventory (DetectorContext.model, .inventory)")
        self.model = context.model
        self.windows = context.windows or WindowFeatures(self.model.window_seconds, context.config.max_devices)
        self.inventory = context.inventory
        self._peers: dict[str, dict[tuple, int]] = {}  # device -> (peer, port, proto, name, scope, vlan) -> bytes
        self._last_partial = float("-inf")

    def observe(self, obs: Observation) -> None:
        # Cameras only: the gateway and the NVR are one of a kind on a camera VLAN, so their normal minutes look
        # isolated to a forest trained on the site, and they are not what the model is for.
        if obs.sent_packets == 0 or obs.device.role != "camera":
            return None
        self.windows.observe(obs, obs.new_flow)
        peers = self._peers.setdefault(obs.device.ip, {})
        key = (obs.peer, obs.port, obs.proto, obs.name, obs.scope, obs.vlan)
        if key in peers or len(peers) < self.MAX_PEERS_TRACKED:
            peers[key] = peers.get(key, 0) + obs.sent_bytes + (1 << 40 if obs.external else 0)
        return None

    def dns_query(self, query: DnsQuery) -> None:
        self.windows.dns_query(query.device.ip, query.ts)

    def tick(self, now: float, final: bool) -> list[Alert]:
        """Score windows that closed, and every PARTIAL_EVERY seconds the ones still open; alert at `now`."""
        rows = self._windows_to_score(now, final)
        if not rows:
            return []
        scores = self.model.score(np.vstack([r[2] for r in rows]))
        alerts = []
        for (ip, start, vector), score in zip(rows, scores, strict=True):
            alert = self._judge(now, ip, start, vector, float(score))
            if alert is not None:
                alerts.append(alert)
        for ip, start, _ in rows:
            if start + self.windows.window <= now:
                self._peers.pop(ip, None)
        return alerts

    def _windows_to_score(self, now: float, final: bool) -> list[tuple[str, float, np.ndarray]]:
        rows = [] if final else self.windows.close(now)
        partial = self.windows.flush() if final else []
        if not final and now - self._last_partial >= self.PARTIAL_EVERY:
            self._last_partial = now
            partial = self.windows.partial()
        return rows + [(ip, start, self._as_far_as_seen(v)) for ip, start, v in partial]

    def _as_far_as_seen(self, vector: np.ndarray) -> np.ndarray:
        lo = np.asarray(self.model.feature_stats["min"])
        med = np.asarray(self.model.feature_stats["median"])
        hi = np.asarray(self.model.feature_stats["max"])
        v = vector.copy()
        for i, name in enumerate(self.model.features):
            if name in self.MONOTONE:
                v[i] = max(v[i], med[i])
            elif name in self.BOUNDED:
                v[i] = min(max(v[i], lo[i]), hi[i])
        return v

    def _judge(self, now: float, ip: str, start: float, vector: np.ndarray, score: float) -> Alert | None:
        dev = self.inventory.devices.get(ip)
        if dev is None or not self.model.is_anomalous(score):
            return None
        if not self.new_episode((ip,), now, 0, 0):
            return None
        peers = self._peers.get(ip, {})
        if peers:
            peer, port, proto, name, scope, vlan = max(peers, key=peers.__getitem__)
        else:
            peer, port, proto, name, scope, vlan = ("", None, "", None, "other", 0)
        why = "; ".join(self.model.explain(vector)) or "an unusual mix of its usual features"
        summary = (f"{describe_device(dev)} behaved out of character in the minute from "
                   f"{time.strftime('%H:%M:%S', time.gmtime(start))} UTC: {why} "
                   f"(anomaly score {score:.2f}, threshold {self.model.threshold:.2f}, model {self.model.name}).")
        obs = Observation(now, dev, 0, 0, True, peer, port, proto, name, scope, vlan)
        return self.alert(obs, "medium", score, summary, model=self.model.name, model_version=self.model.version)
