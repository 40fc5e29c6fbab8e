"""Per-device, per-window traffic features: the vectors the model is trained on and scores.

One vector per camera-side device per fixed window of sensor time, built only from what the device itself sent.
Features describe behaviour, not identity: no addresses, MACs or names enter a vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from sensor import compiled
from sensor.enrich import SCOPE_CORE, SCOPE_PUBLIC, Observation
from sensor.enrich.inventory import CAMERA_EVIDENCE, NOT_CAMERA_EVIDENCE, NVR_MODEL_EVIDENCE

WINDOW_SECONDS = 60.0
MAX_DISTINCT = 4096           # per device and window: a scanning device saturates here and still scores as extreme
_EXTERNAL = (SCOPE_PUBLIC, SCOPE_CORE)


@dataclass(frozen=True)
class Feature:
    name: str
    log: bool      # stored as log1p(x): counts and sizes span orders of magnitude, and splits are drawn uniformly
    high: float    # top of the feature's plausible domain (bottom is 0), where the reference background is drawn
    meaning: str


_LOG_DISTINCT = math.log1p(MAX_DISTINCT)
FEATURE_SPECS: tuple[Feature, ...] = (
    Feature("log_bytes_sent", True, math.log1p(1e10), "log1p of the bytes (on the wire) the device sent"),
    Feature("log_packets_sent", True, math.log1p(1e8), "log1p of the packets the device sent"),
    Feature("log_mean_packet_bytes", True, math.log1p(65535), "log1p of the mean size of the packets it sent"),
    Feature("log_new_flows", True, math.log1p(1e6), "log1p of the flows first seen in the window in which it sent"),
    Feature("log_peers", True, _LOG_DISTINCT, "log1p of the distinct addresses it sent to"),
    Feature("log_external_peers", True, _LOG_DISTINCT,
            "log1p of the distinct public or core-network addresses (outside the allowlist) it sent to"),
    Feature("log_service_ports", True, _LOG_DISTINCT,
            "log1p of the distinct (protocol, service port) pairs of the flows it sent in"),
    Feature("external_byte_share", False, 1.0,
            "share of its bytes that went to public or core-network addresses outside the allowlist"),
    Feature("log_dns_queries", True, math.log1p(1e5), "log1p of the DNS queries it sent"),
    Feature("initiated_share", False, 1.0,
            "share of its conversations (peer, protocol, service port) that it opened"),
)
FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURE_SPECS)
N_FEATURES = len(FEATURES)
FEATURE_HIGH = np.array([f.high for f in FEATURE_SPECS])


MAX_SEEN = 4 * MAX_DISTINCT   # per window: the observation variants whose set updates are known to be done
_UNSEEN = object()
_floor = math.floor


class _Window:
    __slots__ = ("bytes", "packets", "new_flows", "peers", "external_peers", "ports", "external_bytes", "dns",
                 "conversations", "initiated", "seen", "touched", "start", "key")

    def __init__(self, start: float = 0.0, key: tuple[str, float] = ("", 0.0)):
        self.start = start     # of the window: WindowFeatures._latest is checked against it
        self.key = key         # (device, start): its key in WindowFeatures._open
        self.bytes = 0
        self.packets = 0
        self.new_flows = 0
        self.peers: set[str] = set()
        self.external_peers: set[str] = set()
        self.ports: set[tuple] = set()
        self.external_bytes = 0
        self.dns = 0
        self.conversations: set[tuple] = set()
        self.initiated = 0
        # (peer, proto, port, initiated, external) already applied: the sets only grow in a window (and one that
        # is full stays full), so the same variant again changes none of them and needs only the sums. Each maps to
        # what the caller's `note` returned for it (see WindowFeatures.observe).
        self.seen: dict[tuple, Any] = {}
        self.touched = False   # in WindowFeatures._touched: the list is written once per window between looks

    def vector(self) -> np.ndarray:
        return np.array(self.row(), dtype=np.float64)

    def row(self, log1p=math.log1p) -> tuple[float, ...]:
        sent, packets, conversations = self.bytes, self.packets, len(self.conversations)
        return (
            log1p(sent),
            log1p(packets),
            log1p(sent / packets),
            log1p(self.new_flows),
            log1p(len(self.peers)),
            log1p(len(self.external_peers)),
            log1p(len(self.ports)),
            self.external_bytes / sent if sent else 0.0,
            log1p(self.dns),
            self.initiated / conversations if conversations else 0.0,
        )


def _rows(windows: list[_Window]) -> np.ndarray:
    """The windows' rows as one matrix (only windows that sent: a mean needs packets), each computed by _Window.row
    and read straight into the matrix (np.fromiter: no list per window). Row by row is the faster build here: a
    column-by-column one (numpy over the counts, a log1p table for small ones) cost 1.2-1.7x as much on the looks
    of real replays at 100 and 1,000 cameras (docs/benchmarks.md, the model's cost, fourth pass)."""
    return np.fromiter(chain.from_iterable(map(_Window.row, windows)), np.float64,
                       len(windows) * N_FEATURES).reshape(len(windows), N_FEATURES)


def _add_bounded(s: set, item) -> bool:
    if item in s or len(s) >= MAX_DISTINCT:
        return False
    s.add(item)
    return True


class WindowFeatures:
    """Accumulates per-device features over fixed windows of sensor time (aligned to multiples of window).

    Only what the device itself sends counts: an observation in which it sent nothing (a core host knocking on a
    camera that never answers) is the peer's behaviour, which the segmentation detector already covers.

    Sensor time only moves forward through close(): an observation older than the last close is folded into the
    oldest window still open, so each (device, window) pair is emitted at most once.
    """

    def __init__(self, window: float = WINDOW_SECONDS, max_devices: int = 10_000):
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        self.window = float(window)
        self.max_devices = max_devices
        self._open: dict[tuple[str, float], _Window] = {}
        self._devices: dict[str, int] = {}   # device -> open windows, to bound memory by device count
        self._closed_until = -math.inf
        self.dropped = 0                      # observations refused because max_devices devices had open windows
        # Open windows changed since the last partial(), in the order they changed: each once (its `touched` flag),
        # and one emitted since is unflagged and passed over. A list of the windows themselves: no (device, start)
        # key built, hashed and stored per window and look, and none looked up again in _open by the look.
        self._touched: list[_Window] = []
        self._first_end = math.inf            # no open window ends before this: close() has nothing to do until
        # device -> the open window its latest observation went to: a device's observations nearly all go to the
        # same window, found by its address alone (no (address, start) key built, hashed and compared).
        self._latest: dict[str, _Window] = {}
        self._tally_note: Callable[[Any, float], Any] | None = None   # tallier's

    def _get(self, ip: str, start: float) -> _Window | None:
        key = (ip, start)
        acc = self._open.get(key)
        if acc is None:
            if ip not in self._devices and len(self._devices) >= self.max_devices:
                self.dropped += 1
                return None
            acc = self._open[key] = _Window(start, key)
            self._devices[ip] = self._devices.get(ip, 0) + 1
            self._first_end = min(self._first_end, start + self.window)
        return acc

    def observe(self, obs, new_flow: bool, note: Callable[[Any, float], Any] | None = None) -> Any:
        """Fold one observation in. Returns None if it was refused or sent nothing, else what `note` returned when
        the window first saw the observation's variant (peer, proto, port, initiated, external): `note(obs, start)`
        is called then, with the start of the window the observation went to, and lets a caller keep its own
        per-conversation record without a lookup of its own per observation. Without `note`, True.

        Called once per flow and second of traffic, so the common case, a variant the window has already seen,
        takes only the sums and two lookups (tally is this step for the anomaly detector, plus its sums)."""
        if obs.sent_packets <= 0:
            return None
        ip = obs.device.ip
        window = self.window
        start = _floor(obs.ts / window) * window
        if start < self._closed_until:   # max(), without the call
            start = self._closed_until
        acc = self._latest.get(ip)
        if acc is None or acc.start != start:
            acc = self._window(ip, start)
            if acc is None:
                return None
        if not acc.touched:
            acc.touched = True
            self._touched.append(acc)
        sent_bytes = obs.sent_bytes
        acc.packets += obs.sent_packets
        acc.bytes += sent_bytes
        if new_flow:
            acc.new_flows += 1
        external = obs.scope in _EXTERNAL
        if external:
            acc.external_bytes += sent_bytes
        found = acc.seen.get((obs.peer, obs.proto, obs.port, obs.initiated, external), _UNSEEN)
        if found is _UNSEEN:
            found = self._first_sight(acc, obs, start, external, note)
        return found

    def tallier(self, note: Callable[[Any, float], Any]) -> Callable[[Any], None]:
        """tally with `note` as a one-argument hook: the anomaly detector's observe. `note` returns None or a
        tally: an object with `bytes`, `packets`, `new_flows` and `name`. Where the extension is built, the hook is
        its Tally (sensor/_tally.c): the common case, a camera's variant its window has seen, in C (the sums at the
        slots' offsets, no interpreter work), and everything else handed to tally, the reference."""
        self._tally_note = note
        if compiled.tally and compiled.tally_extension is not None:
            return compiled.tally_extension.Tally(self, self.tally, Observation, _Window, _EXTERNAL, CAMERA_EVIDENCE,
                                                  NOT_CAMERA_EVIDENCE, NVR_MODEL_EVIDENCE)
        return self.tally

    def tally(self, obs) -> None:
        """For a camera's observation, observe(obs, obs.new_flow, note) with the `note` given to tallier, then the
        observation's sums added to the tally it returned (and its name, if the tally has none yet): the anomaly
        detector's per-conversation sums in the same step. The same as the detector's filter, observe and those
        sums one after another (tested)."""
        # The anomaly detector's population: cameras (see AnomalyDetector.observe). Device.role's first four steps,
        # without the property's frame: its evidence names no recorder and some camera behaviour (nearly every
        # camera, once it has sent video), or it names a recorder's or the gateway's behaviour (the NVR and the
        # gateway, a third of the observations on a camera VLAN); anything else asks Device.role itself.
        if obs.sent_packets <= 0:
            return
        device = obs.device
        evidence = device.evidence
        if NVR_MODEL_EVIDENCE in evidence or evidence.isdisjoint(CAMERA_EVIDENCE):
            if (NVR_MODEL_EVIDENCE in evidence or not evidence.isdisjoint(NOT_CAMERA_EVIDENCE)
                    or device.role != "camera"):
                return
        new_flow = obs.new_flow
        found = self.observe(obs, new_flow, self._tally_note)
        if found is not None:
            found.bytes += obs.sent_bytes
            found.packets += obs.sent_packets
            found.new_flows += new_flow
            if not found.name:
                found.name = obs.name

    def _window(self, ip: str, start: float) -> _Window | None:
        """The device's open window at `start`, made if need be (None: refused), now its latest."""
        acc = self._get(ip, start)
        if acc is None:
            return None
        self._latest[ip] = acc
        return acc

    def _first_sight(self, acc: _Window, obs, start: float, external: bool,
                     note: Callable[[Any, float], Any] | None) -> Any:
        """The window's sets take a variant it has not seen (observe's uncommon step); returns what `note` did."""
        found = True if note is None else note(obs, start)
        seen = acc.seen
        if len(seen) < MAX_SEEN:
            seen[(obs.peer, obs.proto, obs.port, obs.initiated, external)] = found
        _add_bounded(acc.peers, obs.peer)
        _add_bounded(acc.ports, (obs.proto, obs.port))
        if external:
            _add_bounded(acc.external_peers, obs.peer)
        if _add_bounded(acc.conversations, (obs.peer, obs.proto, obs.port, obs.initiated)) and obs.initiated:
            acc.initiated += 1
        return found

    def dns_query(self, device_ip: str, ts: float) -> float | None:
        """Count a DNS query; returns the start of the window it went to (None: refused)."""
        start = _floor(ts / self.window) * self.window
        if start < self._closed_until:
            start = self._closed_until
        acc = self._latest.get(device_ip)
        if acc is None or acc.start != start:
            acc = self._window(device_ip, start)
            if acc is None:
                return None
        acc.dns += 1
        return start

    def _emit(self, keys: list[tuple[str, float]]) -> tuple[list[tuple[str, float]], np.ndarray]:
        out, windows = [], []
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            acc = self._open.pop(key)
            acc.touched = False   # no longer open: the next look passes it over
            ip, start = key
            if self._latest.get(ip) is acc:
                del self._latest[ip]
            left = self._devices[ip] - 1
            if left:
                self._devices[ip] = left
            else:
                del self._devices[ip]
            # DNS queries alone open a window, but the query's own flow update carries its packets; a window
            # with nothing sent has no behaviour to score.
            if acc.packets > 0:
                out.append(key)
                windows.append(acc)
        self._first_end = min((k[1] for k in self._open), default=math.inf) + self.window
        if self._touched:   # the emitted windows out of the list (bounded by the open windows without looks too)
            self._touched = [acc for acc in self._touched if acc.touched]
        return out, _rows(windows)

    def partial_rows(self) -> tuple[list[tuple[str, float]], np.ndarray]:
        """Open windows that changed since the last call, as they stand: lets a detector act before a window
        ends (a sweep is out of character long before its minute is over). (device_ip, window_start) of each,
        and their feature vectors as the rows of one matrix (what the caller scores), not one array per window."""
        keys, windows = [], []
        for acc in self._touched:
            if acc.touched:   # still open
                acc.touched = False
                if acc.packets > 0:
                    keys.append(acc.key)
                    windows.append(acc)
        self._touched = []
        return keys, _rows(windows)

    def close_rows(self, now: float) -> tuple[list[tuple[str, float]], np.ndarray]:
        """Windows that ended at or before `now`, as partial_rows gives them."""
        self._closed_until = max(self._closed_until, math.floor(now / self.window) * self.window)
        if now < self._first_end:   # called every second of capture time: most calls end here
            return [], _NO_ROWS
        return self._emit([k for k in self._open if k[1] + self.window <= now])

    def flush_rows(self) -> tuple[list[tuple[str, float]], np.ndarray]:
        """Everything still open (end of capture), including partial windows, as partial_rows gives them."""
        if self._open:
            self._closed_until = max(self._closed_until, max(k[1] for k in self._open) + self.window)
        return self._emit(list(self._open))

    def partial(self) -> list[tuple[str, float, np.ndarray]]:
        """partial_rows as (device_ip, window_start, feature vector) triples."""
        return _triples(*self.partial_rows())

    def close(self, now: float) -> list[tuple[str, float, np.ndarray]]:
        """Windows that ended at or before `now`: (device_ip, window_start, feature vector)."""
        return _triples(*self.close_rows(now))

    def flush(self) -> list[tuple[str, float, np.ndarray]]:
        """Everything still open (end of capture), including partial windows."""
        return _triples(*self.flush_rows())

    def __len__(self) -> int:
        return len(self._open)


_NO_ROWS = np.zeros((0, N_FEATURES))
_NO_ROWS.flags.writeable = False


def _triples(keys: list[tuple[str, float]], matrix: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
    return [(ip, start, matrix[i]) for i, (ip, start) in enumerate(keys)]


def training_summary(rows: list[tuple[str, float, np.ndarray]], captures: list[str],
                     window: float = WINDOW_SECONDS) -> dict:
    """The `training` dict for AnomalyModel.train from the rows WindowFeatures emitted."""
    starts = [r[1] for r in rows]
    return {
        "captures": [str(c) for c in captures],
        "windows": len(rows),
        "devices": len({r[0] for r in rows}),
        "start": min(starts) if starts else None,
        "end": max(starts) + window if starts else None,
    }
