"""anomaly: the learned model scores each camera's one-minute windows; an out-of-character window is an alert that
says which features drove its score (the model's attribution) and which peers carried them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.text import describe_device
from sensor.enrich import EXTERNAL_SCOPES, SCOPES, Device, DnsQuery, Observation

Key = tuple[str, int | None, str]   # (peer, service port, protocol): one conversation


@dataclass(slots=True, eq=False, repr=False)
class _Conversation:
    """What a device sent in one conversation during one window."""

    name: str | None
    scope: str
    vlan: int
    bytes: int = 0
    packets: int = 0
    new_flows: int = 0
    initiated: bool = False


class _Sent:
    """One device's window, per conversation in first-seen order, and the resolvers it sent DNS queries to."""

    __slots__ = ("conversations", "resolvers")

    def __init__(self):
        self.conversations: dict[Key, _Conversation] = {}
        self.resolvers: dict[str, _Conversation] = {}   # packets: the queries sent to it


class AnomalyDetector(Detector):
    """The destination reported is the peer most responsible for the feature that drove the score: for a burst of
    new peers, the first of them; for many service ports, a peer on the first new port; for volume, the peer that
    took the most bytes. Only camera-role devices are modelled (see observe)."""

    name = "anomaly"
    interest = frozenset(SCOPES)   # a device's whole minute is what gets scored
    MAX_PEERS_TRACKED = 256        # conversations remembered per device and window
    USUAL_PEERS = 256              # peers and ports remembered from a device's recent windows
    PEERS_SHOWN = 5
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
        # imported here: a run without a model never loads the model package (start-up)
        from sensor.model import WindowFeatures
        self.model = context.model
        self.windows = context.windows or WindowFeatures(self.model.window_seconds, context.config.max_devices)
        self.inventory = context.inventory
        self._sent: dict[str, dict[float, _Sent]] = {}   # device -> open window start -> what it sent
        # device -> (peers, (proto, port) pairs) of its recent windows: what is new in a window is what stands out
        self._usual: BoundedLRU[str, tuple[frozenset, frozenset]] = BoundedLRU(context.config.max_devices)
        self._last_partial = float("-inf")
        self._retired_until = float("-inf")
        # What _as_far_as_seen lifts and clamps, worked out once: it runs every PARTIAL_EVERY seconds.
        stats = self.model.feature_stats
        self._lo, self._median, self._hi = (np.asarray(stats[k], dtype=np.float64) for k in ("min", "median", "max"))
        self._monotone = [i for i, n in enumerate(self.model.features) if n in self.MONOTONE]
        self._bounded = [i for i, n in enumerate(self.model.features) if n in self.BOUNDED]
        # The same as one floor and one ceiling per column (-inf and +inf leave a column as it is): two whole-matrix
        # calls instead of eight on gathered columns, the look's largest fixed cost at a small site.
        self._floor = np.full(len(self.model.features), -np.inf)
        self._ceiling = np.full(len(self.model.features), np.inf)
        self._floor[self._monotone] = self._median[self._monotone]
        self._floor[self._bounded] = self._lo[self._bounded]
        self._ceiling[self._bounded] = self._hi[self._bounded]
        # The hook the framework calls once per observation is WindowFeatures.tally itself (what observe below
        # does, one Python frame fewer per flow and second of traffic).
        self.observe = self.windows.tallier(self._conversation)  # type: ignore[method-assign,assignment]

    def observe(self, obs: Observation) -> None:
        # Cameras only: the gateway and the NVR are one of a kind on a camera VLAN, so their normal minutes look
        # isolated to a forest trained on the site, and they are not what the model is for. tally filters them:
        # once per flow and second of camera traffic, the window adds the observation to the conversation's record
        # too (it is looked up only the first time the window sees the observation's variant, by _conversation).
        self.windows.tally(obs)
        return None

    def _conversation(self, obs: Observation, start: float) -> _Conversation | None:
        """The record of the observation's conversation in the device's window at `start` (None once the window
        tracks MAX_PEERS_TRACKED of them): made on its first observation, which it is told whether it opened."""
        sent = self._record(obs.device.ip, start)
        key = (obs.peer, obs.port, obs.proto)
        conv = sent.conversations.get(key)
        if conv is None:
            if len(sent.conversations) >= self.MAX_PEERS_TRACKED:
                return None
            conv = sent.conversations[key] = _Conversation(obs.name, obs.scope, obs.vlan)
        conv.initiated |= obs.initiated
        return conv

    def _record(self, ip: str, start: float) -> _Sent:
        """The device's record of its window at `start` (open in WindowFeatures), made on first use."""
        windows = self._sent.get(ip)
        if windows is None:
            windows = self._sent[ip] = {}
        sent = windows.get(start)
        if sent is None:
            sent = windows[start] = _Sent()
        return sent

    def dns_query(self, query: DnsQuery) -> None:
        device = query.device
        start = self.windows.dns_query(device.ip, query.ts)
        if start is None or device.role != "camera":
            return
        # The window WindowFeatures just counted the query in is open: its record may be made.
        sent = self._record(device.ip, start)
        resolver = sent.resolvers.get(query.resolver)
        if resolver is None:
            if len(sent.resolvers) >= self.MAX_PEERS_TRACKED:
                return
            resolver = sent.resolvers[query.resolver] = _Conversation(None, query.resolver_scope, query.vlan)
        resolver.packets += 1

    def tick(self, now: float, final: bool) -> list[Alert]:
        """Score windows that closed, and every PARTIAL_EVERY seconds the ones still open; alert at `now`. The
        windows of every device are scored together, as one matrix."""
        keys, vectors, raw = self._windows_to_score(now, final)
        alerts = []
        if keys:
            scores = self.model.score(vectors)
            for i in np.flatnonzero(scores > self.model.threshold).tolist():
                ip, start = keys[i]
                # A partial window's lifted or clamped features hold values this detector chose, not the device's.
                adjusted = frozenset(n for n, a, b in zip(self.model.features, vectors[i], raw[i], strict=True)
                                     if a != b)
                alert = self._judge(now, ip, start, vectors[i], adjusted, float(scores[i]))
                if alert is not None:
                    alerts.append(alert)
        self._retire_ended(now, final)
        return alerts

    def _retire_ended(self, now: float, final: bool) -> None:
        """Once per window boundary (and at the end), retire every record of a window that has ended, scored or
        not: a window WindowFeatures emits nothing for (lookups only) must not stay here."""
        boundary = float("inf") if final else (now // self.windows.window) * self.windows.window
        if boundary <= self._retired_until:
            return
        self._retired_until = boundary
        for ip in list(self._sent):
            for start in [s for s in self._sent[ip] if final or s + self.windows.window <= now]:
                self._retire(ip, start)

    def _retire(self, ip: str, start: float) -> None:
        """A window is over: what it sent becomes part of what is usual for the device."""
        windows = self._sent.get(ip, {})
        sent = windows.pop(start, None)
        if not windows:
            self._sent.pop(ip, None)
        if sent is None:
            return
        peers, ports = self._usual.get(ip) or (frozenset(), frozenset())
        new_peers = list(dict.fromkeys(k[0] for k in sent.conversations)) + list(sent.resolvers)
        new_ports = [(k[2], k[1]) for k in sent.conversations]
        limit = self.USUAL_PEERS
        self._usual.put(ip, (_bounded(new_peers, peers, limit), _bounded(new_ports, ports, limit)))

    def _windows_to_score(self, now: float, final: bool) -> tuple[list[tuple[str, float]], np.ndarray, np.ndarray]:
        """(device, window start) of each window to score, the vectors to score and the vectors as measured: a
        window still open is scored as far as it has been seen (see MONOTONE, BOUNDED). Every window's row comes
        from WindowFeatures already in one matrix: the open ones are its last rows."""
        empty: tuple[list[tuple[str, float]], np.ndarray] = ([], np.zeros((0, len(self.model.features))))
        # At the end too, a window that ended by `now` is whole and judged as it was: the capture's last second
        # gets no tick of its own (Sensor.finish), so a minute that ended within it closes here, not in a later
        # second's tick as it would have had the capture gone on; only the rest are judged as far as seen.
        closed_keys, closed = self.windows.close_rows(now)
        open_keys, still_open = self.windows.flush_rows() if final else empty
        if not final and now - self._last_partial >= self.PARTIAL_EVERY:
            self._last_partial = now
            open_keys, still_open = self.windows.partial_rows()
        if not closed_keys and not open_keys:   # most seconds: nothing ended and no look is due
            return [], closed, closed
        raw = np.concatenate((closed, still_open))
        vectors = raw.copy()
        if open_keys:
            vectors[len(closed_keys):] = self._as_far_as_seen(still_open)
        return closed_keys + open_keys, vectors, raw

    def _as_far_as_seen(self, vectors: np.ndarray) -> np.ndarray:
        """Rows of open windows with each MONOTONE feature lifted to at least the training median and each BOUNDED
        one clamped to the training range (_as_far_as_seen_by_column, column by column, is the reference)."""
        return np.minimum(np.maximum(vectors, self._floor), self._ceiling)

    def _as_far_as_seen_by_column(self, vectors: np.ndarray) -> np.ndarray:
        mono, bounded = self._monotone, self._bounded
        v = vectors.copy()
        v[:, mono] = np.maximum(v[:, mono], self._median[mono])
        v[:, bounded] = np.minimum(np.maximum(v[:, bounded], self._lo[bounded]), self._hi[bounded])
        return v

    def _judge(self, now: float, ip: str, start: float, vector: np.ndarray, adjusted: frozenset[str],
               score: float) -> Alert | None:
        dev = self.inventory.lookup(ip)
        if dev is None or not self.model.is_anomalous(score):
            return None
        if not self.new_episode((dev.id,), now, 0, 0):
            return None
        # A partial window's lifted or clamped features hold values this detector chose, not the device's.
        drivers = self.model.drivers(vector, skip=adjusted)
        sent = self._sent.get(ip, {}).get(start, _Sent())
        usual = self._usual.get(ip) or (frozenset(), frozenset())
        carriers = _carriers(drivers[0]["feature"] if drivers else None, sent, usual)
        why = "; ".join(self.model.explain(vector, skip=adjusted)) or "an unusual mix of its usual features"
        return self._alert(now, dev, start, why, score, drivers, carriers)

    def _alert(self, now: float, dev: Device, start: float, why: str, score: float, drivers: list[dict],
               carriers: list[tuple[Key, _Conversation]]) -> Alert:
        if carriers:
            (peer, port, proto), conv = carriers[0]
            obs = Observation(now, dev, 0, 0, True, peer, port, proto, conv.name, conv.scope, conv.vlan)
        else:
            obs = Observation(now, dev, 0, 0, True, "", None, "", None, "other", 0)
        by = _peer_text(drivers[0]["feature"] if drivers else None, carriers)
        summary = (f"{describe_device(dev)} behaved out of character in the minute from "
                   f"{time.strftime('%H:%M:%S', time.gmtime(start))} UTC: {why}{f', carried by {by}' if by else ''} "
                   f"(anomaly score {score:.2f}, threshold {self.model.threshold:.2f}, model {self.model.name}).")
        evidence = "out of character"
        if drivers:
            top = drivers[0]
            evidence = f"{top['feature']} {top['value']:g} (typical {top['typical']:g})" + (f": {by}" if by else "")
        peers = [{"ip": k[0], "port": k[1], "proto": k[2], **({"name": c.name} if c.name else {})}
                 for k, c in carriers[:self.PEERS_SHOWN]]
        return self.alert(obs, "medium", score, summary, model=self.model.name, model_version=self.model.version,
                          drivers=drivers, peers=peers, evidence=evidence)


def _bounded(newest: list, older: frozenset, limit: int) -> frozenset:
    """The newest items first, then older ones, at most `limit` of them."""
    merged = list(dict.fromkeys(newest))[:limit]
    room = limit - len(merged)
    if room > 0:
        have = set(merged)   # once, not once per older item
        merged += [item for item in older if item not in have][:room]
    return frozenset(merged)


def _carriers(feature: str | None, sent: _Sent, usual: tuple[frozenset, frozenset]) -> list[tuple[Key, _Conversation]]:
    """The conversations that carried the driving feature, most responsible first, one per peer (one per port for
    service ports). What is new against the device's recent windows stands out first."""
    convs = list(sent.conversations.items())
    usual_peers, usual_ports = usual
    if feature == "dns_queries" and sent.resolvers:
        return [((r, 53, "udp"), c) for r, c in sorted(sent.resolvers.items(), key=lambda rc: -rc[1].packets)]
    if feature in ("peers", "external_peers", "new_flows", "initiated_share"):
        pool = [c for c in convs if feature != "external_peers" or c[1].scope in EXTERNAL_SCOPES]
        pool = [c for c in pool if feature != "initiated_share" or c[1].initiated]
        # the new peers are what the count grew by; only when none is new do the usual ones, by volume, stand in
        new = [c for c in pool if c[0][0] not in usual_peers]
        if feature == "new_flows":
            new.sort(key=lambda c: -c[1].new_flows)
        rest = sorted((c for c in pool if c[0][0] in usual_peers), key=lambda c: -c[1].bytes)
        return _one_per(new or rest, lambda k: k[0])
    if feature == "service_ports":
        new = [c for c in convs if (c[0][2], c[0][1]) not in usual_ports]
        rest = sorted((c for c in convs if (c[0][2], c[0][1]) in usual_ports), key=lambda c: -c[1].bytes)
        return _one_per(new or rest, lambda k: (k[2], k[1]))
    pool = convs
    if feature == "external_byte_share":
        pool = [c for c in convs if c[1].scope in EXTERNAL_SCOPES]
    weight = (lambda c: -c[1].packets) if feature == "packets_sent" else (lambda c: -c[1].bytes)
    if feature is None:   # no driver: the outside peer it sent most to, as before explanations
        weight = lambda c: (c[1].scope not in EXTERNAL_SCOPES, -c[1].bytes)  # noqa: E731
    return _one_per(sorted(pool, key=weight), lambda k: k[0])


def _one_per(ranked: list[tuple[Key, _Conversation]], by) -> list[tuple[Key, _Conversation]]:
    seen: set = set()
    out = []
    for key, conv in ranked:
        if by(key) not in seen:
            seen.add(by(key))
            out.append((key, conv))
    return out


def _peer_text(feature: str | None, carriers: list[tuple[Key, _Conversation]]) -> str:
    """The first three carriers (ports, for service ports) for the summary and evidence, and how many more."""
    if feature == "service_ports":
        shown = [f"{k[2]}/{k[1]}" if k[1] is not None else k[2] for k, _ in carriers[:3]]
    else:
        shown = [k[0] for k, _ in carriers[:3]]
    rest = len(carriers) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")
