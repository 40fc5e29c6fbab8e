"""The sensor: wires capture batches through decode -> flows -> enrich -> detect, and holds the state export reads.

A batch is cut into windows of at most one second of packet time, so flow expiry and detection see time advance
in small steps even when one batch holds half an hour of a quiet camera. Within a window, enrichment reads DNS
before the flow stage and the other payloads after it (sensor.enrich.stage), then every flow update.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from sensor.capture import Batch
from sensor.config import Config
from sensor.decode import ERROR_REASONS, NETWORK_NAMES, Decoded, decoded_slices, slice_starts
from sensor.detect import Alert, Detector, Episodes, Indicators, SegmentationDetector
from sensor.detect.framework import Detection
from sensor.detect.incidents import END
from sensor.dissect import ParserGuard
from sensor.enrich import Classifier, CoveredMakers, Enricher, Inventory, ManufDatabase, NameCache
from sensor.enrich.geography import Geography
from sensor.enrich.routing import NO_ROWS, BatchPlan
from sensor.flows import Flow, FlowTable, FlowUpdate, Windows
from sensor.state import COUNTRY_SERIES_KEY, KnownState
from sensor.tags import PayloadTagger

if TYPE_CHECKING:
    # only a run given a model, or train, loads the model package (a plain replay needs none of it: start-up)
    from sensor.model import AnomalyModel, WindowFeatures

# Live, a new flow waits this long (capture time) for the packets that name it before its verdict: a TLS
# ClientHello or HTTP request comes a round trip after the SYN, often in the next read. Short enough that a
# camera's first packet to the Internet is still a line within a second (with the live sources' idle tick).
NAME_WAIT = 0.1
# Idle, the live sources tick on the wall clock while packets of that wait may still be on their way (dumpcap's
# libpcap hands them over in blocks retired every 250 ms): an idle tick settles only once that much more passed.
IDLE_SLACK = 0.25
DEVICE_SAVE_SECONDS = 30.0
LINK_LEARNED_KEY = "link_learned"   # routers and camera-side networks learnt from the link (zero-config)


class _Tallies:
    """A batch's packet counters per one-second window, worked out for the whole batch at once: counting a window's
    few rows costs microseconds a call whatever their number, and control traffic is ~10 packets a second.
    networks and errors are running totals: row k counts the batch's packets up to the end of window k, so a
    window's accounting is noting k (Sensor._window), not adding counts."""

    __slots__ = ("bytes", "networks", "errors", "first_ts", "last_ts")

    def __init__(self, dec: Decoded, bounds: np.ndarray):
        """bounds: int64, window k is rows bounds[k]:bounds[k + 1] (an array: a list is converted by every numpy
        step, at a cost per window)."""
        ts, wirelen = dec.batch.ts, dec.batch.wirelen
        if len(bounds) == 2:
            # a video batch is ~6,500 packets of one second: no per-window gathers (the same values, as Python's)
            self.bytes: list[int] = [int(wirelen[bounds[0]:bounds[1]].sum())]
            self.first_ts: list[float] = [float(ts[bounds[0]])]   # each window's first and last packet times
            self.last_ts: list[float] = [float(ts[bounds[1] - 1])]
        else:
            starts = bounds[:-1]
            self.bytes = np.add.reduceat(wirelen, starts).tolist()
            self.first_ts = ts[starts].tolist()
            self.last_ts = ts[bounds[1:] - 1].tolist()
        self.networks = _running(dec.network, bounds, len(NETWORK_NAMES))
        self.errors = _running(dec.error, bounds, len(ERROR_REASONS))


def _running(values: np.ndarray, bounds: np.ndarray, kinds: int) -> np.ndarray:
    """Per window (row), the packets of each kind (column) in it and the windows before it in the batch (values:
    the batch's rows bounds[0]:bounds[-1], each below kinds)."""
    windows = len(bounds) - 1
    # Most batches are of one kind (no decode error, all IPv4): its column is the windows' ends, the rest naught.
    if values.min() == values.max():
        running = np.zeros((windows, kinds), dtype=np.int64)
        running[:, values[0]] = bounds[1:] - bounds[0]
        return running
    if windows == 1:
        return np.bincount(values, minlength=kinds).astype(np.int64).reshape(1, kinds)
    return _running_windows(values, bounds, kinds)


def _running_windows(values: np.ndarray, bounds: np.ndarray, kinds: int) -> np.ndarray:
    """_running for any batch (the reference its shortcuts are held to)."""
    windows = len(bounds) - 1
    window = np.repeat(np.arange(windows), np.diff(bounds))
    counts = np.bincount(window * kinds + values, minlength=windows * kinds).astype(np.int64)
    return counts.reshape(windows, kinds).cumsum(axis=0)


class Sensor:
    def __init__(self, config: Config, manuf: ManufDatabase | None = None,
                 on_alert: Callable[[Alert], None] | None = None, makers: CoveredMakers | None = None,
                 indicators: Indicators | None = None, model: AnomalyModel | None = None,
                 windows: WindowFeatures | None = None, geography: Geography | None = None):
        """model: score behaviour with the learned model; windows alone (training): only collect its windows.
        geography: where destinations are; by default opened from the config's [geo] (a ConfigError if its
        databases are missing or not what they should be, before anything else is opened)."""
        self.config = config
        self.geography = geography if geography is not None else Geography.from_config(
            config.geo.asn_database, config.geo.country_database)
        self.lock = threading.Lock()
        self.packets = 0
        self.bytes = 0
        # Packets by network and by decode outcome: the batches before the current one, plus the current batch's
        # running totals up to its last window accounted (_counted: -1 before its first), folded in when the batch
        # is done (by_network, decode_errors).
        self._networks = np.zeros(len(NETWORK_NAMES), dtype=np.int64)
        self._errors = np.zeros(len(ERROR_REASONS), dtype=np.int64)
        self._tallies: _Tallies | None = None
        self._counted = -1
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.flows = FlowTable(config.flows)
        # Updates of flows already known are summed per flow over each second of capture time and reach the
        # detectors when that second ends, as does their tick: a VLAN's hundreds of long video flows then cost
        # the same, and detect the same, whatever the batch size (replay chunks, live pipe reads). A new flow waits
        # for the end of its second too (live, at most NAME_WAIT), settled before the second's updates: what names
        # it (a ClientHello, the answering MAC) may come in the next batch, and a flow is judged on its first
        # second however the input was cut.
        self._pending: dict[Flow, FlowUpdate] = {}
        # Flows made in the current second, waiting for its end in the order they came (a dict: the deferral asks
        # of each known flow's update whether its flow is one of them, for every window of the second).
        self._fresh: dict[Flow, None] = {}
        self._fresh_due = math.inf   # live: when the oldest waiting new flow is settled at the latest
        self._pending_second: float | None = None
        self._second_last_ts = 0.0   # the latest packet time seen in that second
        self.inventory = Inventory(config, manuf if manuf is not None else ManufDatabase.load(), makers)
        indicators = indicators if indicators is not None else Indicators.load()
        self.known = KnownState(config.state_path, config.max_devices)
        self.inventory.restore(self.known.load_devices())
        self.inventory.on_forget = self.known.forget_inventory
        self.model = model
        self.detection = Detection(config, self.known, on_alert, indicators=indicators, inventory=self.inventory,
                                   model=model, windows=windows, geography=self.geography)
        self.enricher = Enricher(config, self.inventory, self.known, self.detection, self.geography)
        # Maker evidence from behaviour: the vendor services a device looks up and talks to (docs/identity.md).
        self.enricher.service_of = indicators.match
        self.inventory.service_of_name = indicators.by_name
        self.enricher.roles.device_bits |= indicators.device_bits
        self.enricher.egress_countries.restore_series(self.known.load_meta(COUNTRY_SERIES_KEY))
        self.enricher.link.restore_learned(self.known.load_meta(LINK_LEARNED_KEY))
        self._saved_link_state = self.enricher.link.learned_state()
        self.tagger = PayloadTagger(indicators.prefixes)
        self._last_save = self._last_device_save = time.monotonic()
        self.live = False                    # set by `run`: wall clock and capture clock are comparable
        self.processing_lag: float | None = None
        self.capture_dropped = 0             # packets the kernel or dumpcap dropped (live)
        self.interface_received: int | None = None   # frames the interface received (live, no capture filter)

    # ---- input -----------------------------------------------------------------------------------------
    def process(self, batch: Batch, pace: Callable[[float], None] | None = None) -> None:
        """A batch through the pipeline; its decode done already (batch.decoded, sensor.overlap) or done here."""
        decoded = batch.decoded
        # not decoded yet, or sliced otherwise (DECODE_SLICE changed since): decoded here, a slice at a time
        slices: Iterable[Decoded] = decoded if decoded is not None and len(decoded) == len(slice_starts(batch)) \
            else decoded_slices(batch)
        for dec in slices:
            self._process(dec, pace)
        if self.live:
            # Live, an incident's line goes out when the read that brought it is done, not when its second of
            # capture time ends: a camera's first packet to the Internet is a line within a second of capture.
            with self.lock:
                if self._fresh and (self.last_ts or 0.0) >= self._fresh_due:
                    self._settle_fresh()
                self.detection.write_lines()

    def _process(self, dec: Decoded, pace: Callable[[float], None] | None) -> None:
        batch = dec.batch
        n = len(batch)
        if n == 0:
            return
        ts = batch.ts
        seconds = np.floor(ts)
        # the windows' bounds as an array for the numpy steps and as a list for the loop's indexing
        cuts = np.concatenate(([0], np.flatnonzero(seconds[1:] != seconds[:-1]) + 1, [n]))
        bounds = cuts.tolist()
        plan = BatchPlan(dec, self.tagger.tags)
        plan.cut(bounds)
        ip_cuts = np.searchsorted(plan.ip, cuts)
        ip_bounds = ip_cuts.tolist()
        windows = self.flows.windows(dec, plan.ip, plan.tags, ip_cuts)
        tallies = _Tallies(dec, cuts)
        with self.lock:
            self._tallies, self._counted = tallies, -1
        try:
            lock, window = self.lock, self._window
            for k in range(len(bounds) - 1):
                if pace is not None:
                    pace(tallies.first_ts[k])
                with lock:
                    window(dec, k, bounds[k], bounds[k + 1], plan, ip_bounds[k] == ip_bounds[k + 1], windows, tallies)
        finally:
            with self.lock:
                self._networks, self._errors = self.by_network, self.decode_errors
                self._tallies, self._counted = None, -1

    def expire(self, now: float) -> None:
        """Housekeeping on the caller's clock (wall-clock when live and idle)."""
        with self.lock:
            if self._pending_second is not None and now >= self._pending_second + 1:
                self._end_second()
                self._pending_second = None
            elif self._fresh and now >= self._fresh_due + IDLE_SLACK:
                self._settle_fresh()
                self.detection.write_lines()
            self.flows.expire(now)
            if time.monotonic() - self._last_save >= 1.0:
                self._save()

    def finish(self, reason: str = END) -> None:
        """The end of the input (`reason`: incidents.END for a capture's end, SHUTDOWN for a stopped sensor):
        what is pending is judged, then every open incident closes with its totals."""
        with self.lock:
            self._end_second(tick=False)
            # Incidents first: their last lines name them, so the flows flushed after (the flow log) can too.
            self.detection.tick(self.last_ts or 0.0, final=True, reason=reason)
            self.flows.flush()
            self._save()

    def _save(self, devices_too: bool = True) -> None:
        """Episodes and learned destinations every second; the inventory (bigger, less precious: counters and
        identity that traffic re-establishes) every DEVICE_SAVE_SECONDS and at the end."""
        now = time.monotonic()
        if devices_too or now - self._last_device_save >= DEVICE_SAVE_SECONDS:
            self.known.save_devices(self.inventory.take_dirty())
            egress = self.enricher.egress_countries
            if egress.series_changed:
                self.known.save_meta(COUNTRY_SERIES_KEY, egress.series_state())
                egress.series_changed = False
            link_state = self.enricher.link.learned_state()
            if link_state != self._saved_link_state:
                self.known.save_meta(LINK_LEARNED_KEY, link_state)
                self._saved_link_state = link_state
            self._last_device_save = now
        self.known.save_episodes(self.episodes.take_dirty())
        self.known.commit()
        self._last_save = now

    def close(self) -> None:
        self.known.close()
        self.geography.close()

    # ---- one window ------------------------------------------------------------------------------------
    def _window(self, dec: Decoded, k: int, start: int, end: int, plan: BatchPlan, no_ip: bool, windows: Windows,
                tallies: _Tallies) -> None:
        """Packets start:end of the batch, its window k, one second of capture time (no_ip: none of them is IP;
        windows: the batch's IP rows by window, for the flow table). Asked 97,000 times for an hour of control
        traffic one site after another, so its bookkeeping is inline (the counters, the clock)."""
        # Counters and the capture clock: the window's first and last packet times.
        self.packets += end - start
        self.bytes += tallies.bytes[k]
        self._counted = k
        t0 = tallies.first_ts[k]
        t1 = tallies.last_ts[k]
        last = self.last_ts
        if last is None:   # the first window (first_ts and last_ts are set together)
            self.first_ts, self.last_ts = t0, t1
        elif t1 > last:
            self.last_ts = t1
        if self.live:
            self.processing_lag = max(0.0, time.time() - t1)
        second = math.floor(t0)
        if second != self._pending_second:
            self._end_second()
            self._pending_second = second
            self._second_last_ts = t1
        elif t1 > self._second_last_ts:
            self._second_last_ts = t1
        flows = self.flows
        flows.expire(t0)
        # Most windows of control traffic hold no row any parser wants: then no reader is asked.
        rows = plan.window_rows(k, start, end)
        held = rows is not NO_ROWS
        if held and (rows.link or rows.dhcp):   # ARP can be all a second holds
            self.enricher.read_link(dec, rows)
        if not no_ip:
            if held and rows.dns:
                self.enricher.read_dns(dec, rows.dns)
            # New flows come back, to go to the enricher together; the updates of the others wait for the second's
            # end, summed per flow (a flow still waiting as new holds these packets already): they are only summed,
            # so the two need not interleave.
            fresh = windows.update_deferred(k, self._pending, self._fresh)
            if held:
                self.enricher.read_payloads(dec, rows, flows)
            if fresh:
                if not self._fresh and self.live:
                    self._fresh_due = t0 + NAME_WAIT
                self._fresh.update(dict.fromkeys(fresh))
        # after a window of ARP alone too: live, a stretch of them would otherwise leave what the link learnt unsaved
        if time.monotonic() - self._last_save >= 1.0:
            self._save(devices_too=False)

    def _settle_fresh(self) -> None:
        fresh, self._fresh, self._fresh_due = self._fresh, {}, math.inf
        self.enricher.new_flows(list(fresh))

    def _end_second(self, tick: bool = True) -> None:
        if self._fresh:
            self._settle_fresh()
        pending = self._pending
        if pending:   # a quiet second carried no update of a known flow
            self._pending = {}
            flow_update = self.enricher.flow_update
            for upd in pending.values():
                flow_update(upd)
        if tick and self._pending_second is not None:
            self.detection.tick(self._second_last_ts)

    # ---- what export and the tests read ------------------------------------------------------------------
    @property
    def by_network(self) -> np.ndarray:
        """Packets decoded, by network (decode.NETWORK_NAMES order)."""
        tallies, k = self._tallies, self._counted
        return self._networks + tallies.networks[k] if tallies is not None and k >= 0 else self._networks.copy()

    @property
    def decode_errors(self) -> np.ndarray:
        """Packets by decode outcome (decode.ERROR_REASONS order; the first is none)."""
        tallies, k = self._tallies, self._counted
        return self._errors + tallies.errors[k] if tallies is not None and k >= 0 else self._errors.copy()

    @property
    def classifier(self) -> Classifier:
        return self.enricher.classifier

    @property
    def names(self) -> NameCache:
        return self.enricher.names

    @property
    def parsers(self) -> ParserGuard:
        return self.enricher.parsers

    @property
    def external_destinations(self) -> set[str]:
        return self.enricher.external_destinations

    @property
    def episodes(self) -> Episodes:
        return self.detection.episodes

    @property
    def detectors(self) -> list[Detector]:
        return self.detection.detectors

    @property
    def alert_counts(self) -> Counter[tuple[str, str]]:
        return self.detection.alert_counts

    @property
    def suppressed(self) -> Counter[str]:
        return self.detection.suppressed

    @property
    def segmentation(self) -> SegmentationDetector:
        """For camwatch_segmentation_violations_total; segmentation is always registered."""
        found = self.detection.find(SegmentationDetector)
        assert found is not None
        return found

    def evictions(self) -> dict[str, int]:
        """Entries dropped from each bounded structure that is not a flow or a device (those have their own
        counters): what a flood pushed out, by the structure's name in docs/reliability.md."""
        return {"dns_names": self.names.evicted, "episodes": self.episodes.evicted,
                "alert_budgets": self.detection.gate.budgets_evicted, "known_devices": self.known.devices_evicted,
                "learned_networks": self.classifier.learned_dropped}

    def inventory_snapshot(self) -> list[dict]:
        with self.lock:
            return [d.as_dict(self.geography) for d in self.inventory.devices.values()]

    def country_series_snapshot(self) -> dict[str, list]:
        """Bytes sent outside by destination country over time, as the state store keeps them (/countries)."""
        with self.lock:
            return self.enricher.egress_countries.series_state()

    # ---- summaries -------------------------------------------------------------------------------------
    def summary(self) -> dict:
        """`alerts`: detections by detector; `incidents`: incidents opened; `lines`: lines written, by event."""
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
                "incidents": self.detection.incidents.opened,
                "lines": dict(self.detection.lines),
            }
