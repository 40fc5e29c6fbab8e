"""The sensor: wires capture batches through decode -> flows -> enrich -> detect, and holds the state export reads.

A batch is cut into windows of at most one second of packet time, so flow expiry and detection see time advance
in small steps even when one batch holds half an hour of a quiet camera.
"""

from __future__ import annotations

import enum
import math
import re
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable

import numpy as np

from sensor import compiled
from sensor.alerting import AlertGate
from sensor.capture import Batch
from sensor.config import Config
from sensor.decode import ERROR_REASONS, NETWORK_NAMES, PROTO_TCP, PROTO_UDP, WINDOW, Decoded, decode, payload
from sensor.detect import (
    TAG_PPPP,
    TAG_PPPP_DRW,
    TAG_RTP,
    TAG_SIGNATURE_BASE,
    TAG_TLS,
    Alert,
    AnomalyDetector,
    BeaconingDetector,
    EgressPolicyDetector,
    Episodes,
    HardcodedInfraDetector,
    Indicators,
    NewDestinationDetector,
    Observation,
    Observer,
    SegmentationDetector,
    VendorCloudDetector,
    VideoEgressDetector,
    tracked_pairs,
)
from sensor.dissect import (
    HTTP_METHODS,
    IDENTITY_PORTS,
    DnsMessage,
    ParserGuard,
    parse_banner,
    parse_dns,
    parse_http_host,
    parse_tls_sni,
)
from sensor.enrich import (
    MAX_PEERS_PER_DEVICE,
    SCOPE_CAMERA,
    SCOPE_CORE,
    SCOPE_PUBLIC,
    Classifier,
    CoveredMakers,
    Inventory,
    ManufDatabase,
    NameCache,
)
from sensor.errors import warn
from sensor.flows import Flow, FlowTable, FlowUpdate, flow_keys, ip_from16
from sensor.model import WindowFeatures
from sensor.state import KnownState

# Counted exactly up to here: the gauge is a site's reach, and a flood of forged peers must not buy memory.
MAX_EXTERNAL_DESTINATIONS = 100_000
DECODE_SLICE = 16384
DEVICE_SAVE_SECONDS = 30.0
MAX_ROUTER_MACS = 64
_HTTP_PREFIXES = np.array([int.from_bytes(m, "big") for m in HTTP_METHODS], dtype=np.int64)
_BANNER_PREFIXES = np.array([int.from_bytes(m, "big") for m in (b"RTSP", b"HTTP")], dtype=np.int64)
_IDENTITY_PORT = np.zeros(1 << 16, dtype=bool)   # indexed by port: cheaper than np.isin on every window
_IDENTITY_PORT[sorted(IDENTITY_PORTS)] = True
_IDENTITY_PORT_BYTES = _IDENTITY_PORT.view(np.uint8)


class _Unparsed(enum.Enum):
    """The DNS parse cache's "not parsed yet" (None is a cached "not a DNS message"); an enum so mypy can narrow."""

    TOKEN = 0


_UNPARSED = _Unparsed.TOKEN

DNS_PARSE_CACHE = 4096
RTSP_PORTS = (554, 8554)
_BANNER_KEYS = frozenset({"server"})
_DISCOVERY_KEYS = frozenset({"protocol", "model"})
_POST = int.from_bytes(b"POST", "big")
_IGD_TARGETS = re.compile(rb"(?i)ST:\s*urn:schemas-upnp-org:"
                          rb"(device:InternetGatewayDevice|service:WAN(IP|PPP)Connection)")
_PORT_MAPPING = re.compile(rb"<NewExternalPort>\s*(\d{1,5})\s*<")
# A one-way UDP flow this large, with almost nothing coming back, is a media stream.
VIDEO_MIN_BYTES = 100_000
VIDEO_MIN_RATIO = 20


class _Plan:
    """The rows of one decoded batch that each stage wants, found once per batch with numpy; a window of the batch
    takes its share by position (windows are contiguous and rows ascending), instead of each of a batch's one-second
    windows masking its rows again."""

    __slots__ = ("ip", "tags", "dns", "named", "identity", "banners", "searches", "posts")

    def __init__(self, dec: Decoded, tags: Callable[[Decoded, np.ndarray], np.ndarray]):
        is_ip = dec.is_ip
        ip = np.flatnonzero(is_ip)
        self.ip = ip
        self.tags = tags(dec, ip)   # payload-profile bits per IP row
        self.dns, self.identity, self.searches, self.named, self.banners, self.posts = route(dec, is_ip)


def route(dec: Decoded, is_ip: np.ndarray) -> tuple[list[int], ...]:
    """(dns, identity, searches, named, banners, posts): the rows each parser wants, ascending."""
    if compiled.extension is None or not compiled.route:
        return route_numpy(dec, is_ip)
    c = np.ascontiguousarray
    return compiled.extension.route(c(is_ip, np.uint8), c(dec.proto, np.uint8), c(dec.payload_len, np.int64),
                                    c(dec.head, np.uint64), c(dec.sport, np.int64), c(dec.dport, np.int64),
                                    _IDENTITY_PORT_BYTES, _HTTP_PREFIXES, _BANNER_PREFIXES, _POST)


def route_numpy(dec: Decoded, is_ip: np.ndarray) -> tuple[list[int], ...]:
    """The reference for the compiled _walk.route."""
    # Masks over the whole batch, not gathers of its IP rows: elementwise passes over contiguous columns.
    proto, plen, sport, dport = dec.proto, dec.payload_len, dec.sport, dec.dport
    udp = is_ip & (proto == PROTO_UDP) & (plen > 0)
    dns = np.flatnonzero(udp & ((sport == 53) | (dport == 53)) & (plen >= 12)).tolist()
    identity = np.flatnonzero(udp & (_IDENTITY_PORT[sport] | _IDENTITY_PORT[dport]))
    searches = identity[dport[identity] == 1900].tolist()
    # TCP rows with six or more payload bytes, by their first four bytes (as an integer) and byte 5
    tcp = np.flatnonzero(is_ip & (proto == PROTO_TCP) & (plen >= 6))
    head = dec.head[tcp]
    first4 = (head >> np.uint64(32)).astype(np.int64)
    named = ((first4 >> 24) == 0x16) & (((head >> np.uint64(16)) & np.uint64(0xFF)) == 1)
    named |= np.isin(first4, _HTTP_PREFIXES)
    banners = tcp[(first4 == _BANNER_PREFIXES[0]) | (first4 == _BANNER_PREFIXES[1])].tolist()
    return dns, identity.tolist(), searches, tcp[named].tolist(), banners, tcp[first4 == _POST].tolist()


def _between(rows: list[int], start: int, end: int) -> list[int]:
    return rows[bisect_left(rows, start):bisect_left(rows, end)] if rows else rows


class _WindowCollector:
    """Feeds observations to a WindowFeatures without scoring: what `camwatch train` learns from."""

    external_only = False

    def __init__(self, windows):
        self.windows = windows

    def observe(self, obs: Observation) -> None:
        if obs.device.role == "camera":  # the same population the anomaly detector scores
            self.windows.observe(obs, obs.new_flow)


class Sensor:
    def __init__(self, config: Config, manuf: ManufDatabase | None = None,
                 on_alert: Callable[[Alert], None] | None = None, makers: CoveredMakers | None = None,
                 indicators: Indicators | None = None, model=None, windows=None):
        self.config = config
        self.lock = threading.Lock()
        self.packets = 0
        self.bytes = 0
        self.by_network = np.zeros(len(NETWORK_NAMES), dtype=np.int64)
        self.decode_errors = np.zeros(len(ERROR_REASONS), dtype=np.int64)
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.flows = FlowTable(config.flows)
        # Updates of flows already known are summed per flow over each second of capture time and reach the
        # detectors when that second ends, as does the anomaly detector's tick: a VLAN's hundreds of long video
        # flows then cost the same, and detect the same, whatever the batch size (replay chunks, live pipe
        # reads). A flow's first packets go to the detectors at once.
        self._pending: dict[Flow, FlowUpdate] = {}
        self._pending_second: float | None = None
        self._second_last_ts = 0.0   # the latest packet time seen in that second
        self.classifier = Classifier(config)
        self.names = NameCache(config.max_names)
        self._dns_parsed: dict[bytes, DnsMessage | None] = {}
        self.parsers = ParserGuard(warn)
        self.inventory = Inventory(config, manuf if manuf is not None else ManufDatabase.load(), makers)
        self.episodes = Episodes(config.episode_timeout, tracked_pairs(config.max_devices))
        self.indicators = indicators if indicators is not None else Indicators.load()
        self.known = KnownState(config.state_path, config.max_devices)
        self.inventory.restore(self.known.load_devices())
        self.episodes.restore(self.known.load_episodes(self.episodes.max_open))
        self.inventory.on_forget = self.known.forget_inventory
        self.episodes.on_evict = self.known.forget_episode
        self._last_save = self._last_device_save = time.monotonic()
        name, ep = config.sensor_name, self.episodes
        self.segmentation = SegmentationDetector(name, ep)
        self.vendor_cloud = VendorCloudDetector(name, ep, self.indicators)
        self.hardcoded = HardcodedInfraDetector(name, ep)
        self.detectors: list[Observer] = [
            EgressPolicyDetector(name, ep), self.segmentation, self.vendor_cloud, self.hardcoded,
            VideoEgressDetector(name, ep), BeaconingDetector(name, ep),
            NewDestinationDetector(name, ep, self.known, config.learning_period)]
        # The learned model scores windows when given; `windows` alone (training) only collects them.
        self.model = model
        self.windows = windows
        self.anomaly = None
        if model is not None:
            self.windows = windows or WindowFeatures(model.window_seconds, config.max_devices)
            self.anomaly = AnomalyDetector(name, ep, model, self.windows, self.inventory)
            self.detectors.append(self.anomaly)
        elif windows is not None:
            self.detectors.append(_WindowCollector(windows))
        self._detectors_of_internal_peers = [d for d in self.detectors if not d.external_only]
        prefixes = self.indicators.prefixes
        self._prefix_values = np.array([int.from_bytes(p.ljust(8, b"\0"), "big") for p in prefixes],
                                       dtype=np.uint64)
        self._prefix_masks = np.array([int.from_bytes(b"\xff" * len(p) + b"\0" * (8 - len(p)), "big")
                                       for p in prefixes], dtype=np.uint64)
        self.router_macs: set[int] = set()
        self.alert_counts: Counter[tuple[str, str]] = Counter()
        self.alert_gate = AlertGate(config.episode_timeout, tracked_pairs(config.max_devices))
        self.suppressed = self.alert_gate.suppressed
        self.external_destinations: set[str] = set()
        self.on_alert = on_alert
        self.live = False                    # set by `run`: wall clock and capture clock are comparable
        self.processing_lag: float | None = None
        self.capture_dropped = 0             # packets the kernel or dumpcap dropped (live)
        self.interface_received: int | None = None   # frames the interface received (live, no capture filter)

    # ---- input -----------------------------------------------------------------------------------------
    def process(self, batch: Batch, pace: Callable[[float], None] | None = None) -> None:
        # Decoding gathers a header matrix per packet: slices keep it bounded whatever the packet sizes.
        for start in range(0, len(batch), DECODE_SLICE):
            self._process(batch if len(batch) <= DECODE_SLICE else batch.select(slice(start, start + DECODE_SLICE)),
                          pace)

    def _process(self, batch: Batch, pace: Callable[[float], None] | None) -> None:
        n = len(batch)
        if n == 0:
            return
        dec = decode(batch)
        ts = batch.ts
        seconds = np.floor(ts)
        bounds = [0, *(np.flatnonzero(seconds[1:] != seconds[:-1]) + 1).tolist(), n]
        plan = _Plan(dec, self._payload_tags)
        ip_bounds = np.searchsorted(plan.ip, bounds).tolist()
        for k in range(len(bounds) - 1):
            start, end = bounds[k], bounds[k + 1]
            if pace is not None:
                pace(float(ts[start]))
            with self.lock:
                self._window(dec, start, end, plan, ip_bounds[k], ip_bounds[k + 1])

    def expire(self, now: float) -> None:
        """Housekeeping on the caller's clock (wall-clock when live and idle)."""
        with self.lock:
            if self._pending_second is not None and now >= self._pending_second + 1:
                self._end_second()
                self._pending_second = None
            self.flows.expire(now)
            if time.monotonic() - self._last_save >= 1.0:
                self._save()

    def finish(self) -> None:
        with self.lock:
            self._end_second(tick=False)
            self.flows.flush()
            if self.anomaly is not None:
                for alert in self.anomaly.tick(self.last_ts or 0.0, final=True):
                    self._emit(alert)
            for summary in self.alert_gate.flush(self.last_ts or 0.0, final=True):
                self._deliver(summary)
            self._save()

    def _save(self, devices_too: bool = True) -> None:
        """Episodes and learned destinations every second; the inventory (bigger, less precious: counters and
        identity that traffic re-establishes) every DEVICE_SAVE_SECONDS and at the end."""
        now = time.monotonic()
        if devices_too or now - self._last_device_save >= DEVICE_SAVE_SECONDS:
            self.known.save_devices(self.inventory.take_dirty())
            self._last_device_save = now
        self.known.save_episodes(self.episodes.take_dirty())
        self.known.commit()
        self._last_save = now

    def close(self) -> None:
        self.known.close()

    # ---- one window ------------------------------------------------------------------------------------
    def _window(self, dec: Decoded, start: int, end: int, plan: _Plan, lo: int, hi: int) -> None:
        """Packets start:end of the batch, one second of capture time; plan.ip[lo:hi] are its IP rows."""
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
        if self.live:
            self.processing_lag = max(0.0, time.time() - t1)
        second = math.floor(t0)
        if second != self._pending_second:
            self._end_second()
            self._pending_second = second
            self._second_last_ts = t1
        else:
            self._second_last_ts = max(self._second_last_ts, t1)
        self.flows.expire(t0)

        if lo == hi:
            return
        self._learn_dns(dec, _between(plan.dns, start, end))
        updates = self.flows.update(dec, plan.ip[lo:hi], plan.tags[lo:hi])
        self._name_flows(dec, _between(plan.named, start, end))
        self._identify(dec, _between(plan.identity, start, end), _between(plan.banners, start, end),
                       _between(plan.searches, start, end), _between(plan.posts, start, end))
        pending = self._pending
        for upd in updates:
            if upd.new:
                self._enrich_and_detect(upd)
                continue
            acc = pending.get(upd.flow)
            if acc is None:
                pending[upd.flow] = upd
            else:
                acc.orig_pkts += upd.orig_pkts
                acc.resp_pkts += upd.resp_pkts
                acc.orig_bytes += upd.orig_bytes
                acc.resp_bytes += upd.resp_bytes
        if time.monotonic() - self._last_save >= 1.0:
            self._save(devices_too=False)

    def _end_second(self, tick: bool = True) -> None:
        pending, self._pending = self._pending, {}
        for upd in pending.values():
            self._enrich_and_detect(upd)
        if tick and self.anomaly is not None and self._pending_second is not None:
            for alert in self.anomaly.tick(self._second_last_ts):
                self._emit(alert)
        if tick and self._pending_second is not None:
            for summary in self.alert_gate.flush(self._second_last_ts):
                self._deliver(summary)

    def _learn_dns(self, dec: Decoded, dns: list[int]) -> None:
        for row in dns:
            body = payload(dec, row)
            # Cameras ask the same questions all day and get the same answers: only the 2-byte ID differs, and
            # the parse does not depend on it.
            key = body[2:]
            msg = self._dns_parsed.get(key, _UNPARSED)
            if msg is _UNPARSED:
                msg = self.parsers.run(parse_dns, body, None)
                if len(self._dns_parsed) >= DNS_PARSE_CACHE:
                    self._dns_parsed.clear()   # bounded; the repeated messages come straight back
                self._dns_parsed[key] = msg
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
                    if self.windows is not None:
                        self.windows.dns_query(dev.ip, ts)
                    if self.classifier.name_allowed(msg.qname):
                        continue
                    resolver = ip_from16(dec.dst[row].tobytes())
                    alert = self.vendor_cloud.dns_query(ts, dev, msg.qname, str(resolver),
                                                        self.classifier.address_scope(resolver), int(dec.vlan[row]))
                    if alert is not None:
                        self._emit(alert)

    def _payload_tags(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """Per-row payload-profile bits (detect.TAG_*): media framing and vendor protocol signatures."""
        if compiled.extension is None or not compiled.tags:
            return self._payload_tags_numpy(dec, rows)
        c = np.ascontiguousarray
        return np.frombuffer(compiled.extension.tags(c(dec.proto, np.uint8), c(dec.payload_len, np.int64),
                                                     c(dec.head, np.uint64), c(rows, np.int64),
                                                     self._prefix_values, self._prefix_masks, TAG_RTP, TAG_PPPP,
                                                     TAG_PPPP_DRW, TAG_TLS, TAG_SIGNATURE_BASE), np.uint64)

    def _payload_tags_numpy(self, dec: Decoded, rows: np.ndarray) -> np.ndarray:
        """The reference for the compiled _walk.tags."""
        tags = np.zeros(len(rows), dtype=np.uint64)
        has = dec.payload_len[rows] >= 4
        sel = rows[has]
        if not len(sel):
            return tags
        head = dec.head[sel]
        b = [((head >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)).astype(np.int64) for k in range(4)]
        plen = dec.payload_len[sel]
        udp = dec.proto[sel] == PROTO_UDP
        t = np.zeros(len(sel), dtype=np.uint64)
        pt = b[1] & 0x7F
        rtp = udp & ((b[0] & 0xC0) == 0x80) & (plen >= 12) & ((pt <= 34) | ((pt >= 96) & (pt <= 127)))
        t[rtp] |= np.uint64(TAG_RTP)
        pppp = udp & (b[0] == 0xF1) & (((b[2] << 8) | b[3]) == plen - 4)
        t[pppp] |= np.uint64(TAG_PPPP)
        t[pppp & (b[1] == 0xD0)] |= np.uint64(TAG_PPPP_DRW)
        tls = (dec.proto[sel] == PROTO_TCP) & ((b[0] == 0x16) | (b[0] == 0x17)) & (b[1] == 0x03)
        t[tls] |= np.uint64(TAG_TLS)
        if len(self._prefix_values):
            for i, (value, mask) in enumerate(zip(self._prefix_values, self._prefix_masks, strict=True)):
                t[(head & mask) == value] |= np.uint64(1 << (TAG_SIGNATURE_BASE + i))
        tags[has] = t
        return tags

    def _name_flows(self, dec: Decoded, picked: list[int]) -> None:
        """TLS SNI and HTTP Host name the flow they travel in (picked: TCP rows opening a ClientHello or a request)."""
        if not picked:
            return
        keys, _ = flow_keys(dec, np.array(picked, dtype=np.int64))
        for row, key in zip(picked, keys, strict=True):
            body = payload(dec, row, limit=WINDOW * 64)
            name = self.parsers.run(parse_tls_sni if body[:1] == b"\x16" else parse_http_host, body, None)
            if name:
                flow = self.flows.get(key.tobytes(), PROTO_TCP)
                if flow is not None and flow.name is None:
                    flow.name = name

    def _identify(self, dec: Decoded, udp: list[int], banners: list[int], searches: list[int],
                  posts: list[int]) -> None:
        """Discovery announcements and RTSP/HTTP/SSDP banners name a device's maker, model and firmware."""
        self._upnp(dec, searches, posts)
        for row in udp + banners:
            raw = dec.src[row].tobytes()
            if self.classifier.scope_of_raw(raw) != SCOPE_CAMERA:
                continue
            sender = ip_from16(raw)
            known = self.inventory.devices.get(str(sender))
            is_udp = dec.proto[row] == PROTO_UDP
            # A camera repeats its banners and announcements all day: once its identity holds what this kind of
            # packet can tell, parsing it again changes nothing.
            if known is not None and (_DISCOVERY_KEYS if is_udp else _BANNER_KEYS) <= known.identity.keys():
                continue
            body = payload(dec, row, limit=16384)
            if is_udp:
                sport, dport = int(dec.sport[row]), int(dec.dport[row])
                parser = IDENTITY_PORTS.get(dport if dport in IDENTITY_PORTS else sport)
                fields: dict[str, str] = self.parsers.run(parser, body, {}) if parser else {}
            else:
                fields = self.parsers.run(parse_banner, body, {})
            if not fields:
                continue
            dev = self.inventory.touch(sender, int(dec.src_mac[row]), float(dec.batch.ts[row]))
            if fields.get("protocol") in ("onvif", "sadp", "dhip"):
                dev.evidence.add("camera_discovery")
            self.inventory.add_identity(dev, fields)

    def _upnp(self, dec: Decoded, searches: list[int], posts: list[int]) -> None:
        """A camera looking for an Internet gateway, or asking one to open a port, is trying to be reachable."""
        for row, kind in [(r, "upnp_igd_discovery") for r in searches] + [(r, "upnp_port_mapping") for r in posts]:
            sender = ip_from16(dec.src[row].tobytes())
            if not self.classifier.is_camera_side(sender):
                continue
            body = payload(dec, row, limit=8192)
            if kind == "upnp_igd_discovery":
                if not body.startswith(b"M-SEARCH") or not _IGD_TARGETS.search(body):
                    continue
                detail = ""
            else:
                if b"AddPortMapping" not in body:
                    continue
                port = _PORT_MAPPING.search(body)
                detail = f" for external port {int(port.group(1))}" if port else ""
            ts = float(dec.batch.ts[row])
            dev = self.inventory.touch(sender, int(dec.src_mac[row]), ts)
            peer = ip_from16(dec.dst[row].tobytes())
            alert = self.hardcoded.upnp(ts, dev, kind, str(peer), int(dec.dport[row]),
                                        "udp" if dec.proto[row] == PROTO_UDP else "tcp",
                                        self.classifier.address_scope(peer), int(dec.vlan[row]), detail)
            if alert is not None:
                self._emit(alert)

    # What enrichment knows of a flow that never changes lives in Flow.context, as a tuple of strings and numbers
    # (which the garbage collector stops tracking): (originator's scope, responder's scope, protocol name, service
    # port, then per side the last destination scope computed and the name it was for, or None).
    def _destination_scope(self, flow: Flow, ctx: tuple, is_orig: bool, name: str | None) -> tuple[str, tuple]:
        """classify.destination_scope of the flow's other side, recomputed only when the name changes: the
        address, port and protocol of a flow do not. Returns the scope and the context that remembers it."""
        side = 4 if is_orig else 5
        cached = ctx[side]
        if cached is not None and cached[0] == name:
            return cached[1], ctx
        scope, _rule = self.classifier.destination_scope(flow.resp_ip if is_orig else flow.orig_ip, name, ctx[3],
                                                         ctx[2])
        return scope, ctx[:side] + ((name, scope),) + ctx[side + 1:]

    def _enrich_and_detect(self, upd: FlowUpdate) -> None:
        flow = upd.flow
        ts = upd.ts
        ctx = flow.context
        if ctx is None:
            classify = self.classifier
            ctx = (classify.scope_of_raw(flow.orig_raw), classify.scope_of_raw(flow.resp_raw), flow.proto_name,
                   flow.resp_port or None, None, None)
        proto, port = ctx[2], ctx[3]
        scopes = ctx[:2]
        for is_orig in (True, False):
            local_scope, peer_scope = scopes if is_orig else scopes[::-1]
            sent_pkts = upd.orig_pkts if is_orig else upd.resp_pkts
            if local_scope != SCOPE_CAMERA:
                if sent_pkts and local_scope == SCOPE_PUBLIC:
                    self._note_router_mac(flow.orig_mac if is_orig else flow.resp_mac)
                continue
            inbound_from_core = not is_orig and peer_scope == SCOPE_CORE and upd.orig_pkts
            if not sent_pkts and not inbound_from_core:
                continue
            local, peer = (flow.orig_text, flow.resp_text) if is_orig else (flow.resp_text, flow.orig_text)
            sent_bytes = upd.orig_bytes if is_orig else upd.resp_bytes
            dev = self.inventory.touch(local, flow.orig_mac if is_orig else flow.resp_mac, flow.last)
            self.known.device_first_seen(dev.ip, ts)
            dev.packets_sent += sent_pkts
            dev.bytes_sent += sent_bytes
            self._role_evidence(dev, flow, is_orig, bool(sent_pkts))
            name = flow.name if is_orig and flow.name else self.names.lookup(peer, ts)
            scope, ctx = self._destination_scope(flow, ctx, is_orig, name)
            if sent_bytes:
                dev.egress_bytes[scope] = dev.egress_bytes.get(scope, 0) + sent_bytes
            if scope in (SCOPE_PUBLIC, SCOPE_CORE):
                if len(self.external_destinations) < MAX_EXTERNAL_DESTINATIONS:
                    self.external_destinations.add(peer)
                entry = dev.external_peers.get(peer)
                if entry is not None:
                    entry[0] = name or entry[0]
                    entry[1] += sent_bytes
                elif len(dev.external_peers) < MAX_PEERS_PER_DEVICE:
                    dev.external_peers[peer] = [name, sent_bytes]
            detectors = self.detectors if scope in (SCOPE_PUBLIC, SCOPE_CORE) else self._detectors_of_internal_peers
            if not detectors:
                continue
            obs = Observation(ts, dev, sent_pkts, sent_bytes, is_orig, peer, port, proto, name, scope,
                              flow.vlan, flow, upd.new)
            for detector in detectors:
                alert = detector.observe(obs)
                if alert is not None:
                    self._emit(alert)
        if not upd.new:   # remembered from a flow's second second on: most flows of a flood have none
            flow.context = ctx

    def _role_evidence(self, dev, flow, is_orig: bool, sent: bool) -> None:
        if not sent:
            return
        if flow.proto == PROTO_TCP and flow.resp_port in RTSP_PORTS and flow.resp_pkts:
            dev.evidence.add("rtsp_client" if is_orig else "rtsp_server")
        elif flow.proto == PROTO_UDP:
            if not is_orig and flow.resp_port == 53:
                dev.evidence.add("dns_server")
            elif not is_orig and flow.resp_port == 123 and flow.orig_port != 123:
                dev.evidence.add("ntp_server")
            elif flow.orig_payload >= VIDEO_MIN_BYTES and flow.orig_payload > VIDEO_MIN_RATIO * flow.resp_payload:
                dev.evidence.add("video_sender" if is_orig else "video_receiver")
        if dev.mac in self.router_macs:
            dev.evidence.add("router_mac")

    def _note_router_mac(self, mac: int) -> None:
        """Frames from Internet hosts carry the site router's MAC: whoever owns it is the gateway."""
        if mac and mac not in self.router_macs and len(self.router_macs) < MAX_ROUTER_MACS:
            self.router_macs.add(mac)
            for dev in self.inventory.devices.values():
                if dev.mac == mac:
                    dev.evidence.add("router_mac")

    def _emit(self, alert: Alert) -> None:
        """Deliver an alert through the gate (alerting.AlertGate): per-device budget and flood summaries."""
        for line in self.alert_gate.admit(alert):
            self._deliver(line)

    def _deliver(self, alert: Alert) -> None:
        self.alert_counts[(alert.detector, alert.severity)] += 1
        if self.on_alert is not None:
            self.on_alert(alert)

    def evictions(self) -> dict[str, int]:
        """Entries dropped from each bounded structure that is not a flow or a device (those have their own
        counters): what a flood pushed out, by the structure's name in docs/reliability.md."""
        return {"dns_names": self.names.evicted, "episodes": self.episodes.evicted,
                "alert_budgets": self.alert_gate.budgets_evicted, "known_devices": self.known.devices_evicted}

    def inventory_snapshot(self) -> list[dict]:
        with self.lock:
            return [d.as_dict() for d in self.inventory.devices.values()]

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
