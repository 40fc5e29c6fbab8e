"""Incidents: what an alert line describes. One incident is one camera-side device and one service (the other end
as an analyst names it, sensor.detect.services); every detector's detections about that pair are evidence of it.

An incident writes a line when it opens, an `update` only when its severity rises or a detector not yet among its
evidence joins, and a `close` line with its totals when it ends: `alerts.episode_timeout` seconds of silence (no
detection and no traffic of the device with the service), the end of a replay, the sensor's shutdown, or its
eviction from the bounded table. Detections are gathered per second of capture time and written when the second
ends, so what one packet tells several detectors (an NTP query to a vendor's server: egress, vendor cloud and
hard-coded time source at once) is one line, not three.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import weakref

# hashlib's own blake2b, without hashlib loading OpenSSL's _hashlib at start-up (issue 16).
from _blake2 import blake2b
from dataclasses import dataclass, field

from sensor.bounded import BoundedLRU
from sensor.detect.alert import SEVERITIES, Alert
from sensor.detect.services import KIND_ADDRESS, KIND_DOMAIN, KIND_SITE, KIND_VENDOR, MAX_NAME, IncidentService
from sensor.detect.text import describe_device, plural, rate_text, with_place
from sensor.enrich import Device, Observation
from sensor.flows import Flow

CONTRACT_VERSION = 2
OPEN, UPDATE, CLOSE = "open", "update", "close"
EVENTS = (OPEN, UPDATE, CLOSE)
FLOOD = "flood"                          # the alert gate's summary of held-back incidents: no incident of its own
LINE_EVENTS = (*EVENTS, FLOOD)
# why an incident closed
SILENCE, END, SHUTDOWN, EVICTED = "silence", "end", "shutdown", "evicted"
CLOSE_REASONS = (SILENCE, END, SHUTDOWN, EVICTED)

MAX_EVIDENCE = 8        # phrases on a line, strongest first (more only to keep every detector's strongest)
MAX_SEEN = 16           # addresses and names listed in the totals
MAX_FLOWS = 32          # flows whose counters an incident follows; older ones are folded into its totals
# Flows all incidents together follow: each is held past the flow table's own eviction until its incident closes,
# so a flood of incidents must not hold the flows of a whole flood (65,536 flows are ~25 MB).
FOLLOWED_MAX = 1 << 16
# A device with this many incidents open on bare addresses (no name, no vendor service) in one scope is fanning
# out - a scan, a sweep, a P2P client spraying relays: what it reaches next is one "fan-out" incident of that scope,
# not one incident (and two lines) per address.
FAN_OUT = 8
# Open incidents of any services per device before the rest fold into the fan-out too: a device naming every flow
# anew (a random SNI per connection) must not fill the table and evict every other device's incidents.
MAX_PER_DEVICE = 64


@functools.lru_cache(maxsize=64)   # one per scope (a handful), asked for every detection of a bare address
def fan_out_service(scope: str) -> IncidentService:
    return IncidentService(f"fan-out-{scope}", f"many {scope} addresses", KIND_SITE)


@dataclass(slots=True, eq=False, repr=False)
class Evidence:
    """One detection's part in an incident."""

    severity: int
    score: float
    detector: str
    text: str
    # The detection's own extra keys (rate, drivers, interval...); None when it has none. Never changed once made:
    # equal small ones are one shared dict (Incidents._shared).
    details: dict | None = None

    def as_dict(self) -> dict:
        out: dict[str, object] = {"detector": self.detector, "severity": SEVERITIES[self.severity],
                                  "text": self.text}
        if self.details:
            out["details"] = self.details
        return out


# A followed flow, whether the device originated it, then the flow's counters (device's view: packets out, bytes
# out, packets in, bytes in) before the incident counted it. A tuple, not an object: incidents follow 65,536 flows.
_Followed = tuple[Flow, bool, int, int, int, int]


@dataclass(slots=True, eq=False, repr=False)
class Traffic:
    """What the device and the service exchanged while the incident was open: the flows' own counters from the
    update that first brought each one (both ways, so the close line's totals include what came back), folded into
    `retired` once more than MAX_FLOWS.

    Open incidents are many at their bound (20 per device) and most follow one flow or none, so they hold tuples,
    not dicts and lists (a dict of one flow is 184 bytes, a tuple 56), and `retired` is None until a flow is
    folded. `flows` is oldest first; looking a flow up walks it, at most MAX_FLOWS."""

    flows: tuple[_Followed, ...] = ()
    retired: tuple[int, int, int, int] | None = None   # packets out, bytes out, packets in, bytes in
    first: float | None = None
    last: float | None = None
    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    second: int = -1
    second_bytes: int = 0
    peak_bps: float = 0.0
    # Several detections of one observation count it once. Weak: a strong reference would keep the observation's
    # device and flow alive for as long as the incident stays open, long after the inventory and the flow table
    # have let them go.
    last_seen: weakref.ReferenceType[Observation] | None = None

    def add(self, obs: Observation, room: bool = True) -> int:
        """Count an observation; returns how many more flows this incident now follows (0 or 1). Without room
        (every incident together follows FOLLOWED_MAX flows), a new flow's observations are counted as they come:
        what the device sent, and what came back in the same updates."""
        if self.last_seen is not None and self.last_seen() is obs:
            return 0
        self.last_seen = weakref.ref(obs)
        added = self._follow(obs, room)
        ts = obs.ts
        # comparisons, not min() and max(): each observation of a followed device comes here (issue 16), and a
        # builtin call costs more than the test; they keep min's and max's answer (the old value unless the new one
        # is strictly beyond it)
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts
        if obs.peer not in self.addresses:
            self.addresses = _note(self.addresses, obs.peer)
        if obs.name and obs.name not in self.names:
            self.names = _note(self.names, obs.name)
        second = int(ts)
        if second != self.second:
            self.second, self.second_bytes = second, 0
        self.second_bytes += obs.sent_bytes
        bps = 8.0 * self.second_bytes
        if bps > self.peak_bps:
            self.peak_bps = bps
        return added

    def _follow(self, obs: Observation, room: bool) -> int:
        flow = obs.flow
        flows = self.flows
        if flow is None:
            return 0
        for followed in flows:   # a loop, not any() over a generator: this runs for every observation followed
            if followed[0] is flow:
                return 0
        if len(flows) < MAX_FLOWS and not room:
            self._fold((obs.sent_packets, obs.sent_bytes, obs.received_packets, obs.received_bytes))
            return 0
        added = 1
        if len(flows) >= MAX_FLOWS:
            self._fold(_since(flows[0]))
            flows = flows[1:]
            added = 0
        now = _counts(flow, obs.initiated)
        # from this update on: what the flow carried before it is not this incident's (nor counted twice when a
        # retired flow comes back)
        self.flows = (*flows, (flow, obs.initiated, now[0] - obs.sent_packets, now[1] - obs.sent_bytes,
                               now[2] - obs.received_packets, now[3] - obs.received_bytes))
        return added

    def _fold(self, counts: tuple[int, ...] | list[int]) -> None:
        old = self.retired or (0, 0, 0, 0)
        self.retired = (old[0] + counts[0], old[1] + counts[1], old[2] + counts[2], old[3] + counts[3])

    @property
    def following(self) -> int:
        """How many flows this incident follows."""
        return len(self.flows)

    def totals(self) -> list[int]:
        out = list(self.retired or (0, 0, 0, 0))
        for followed in self.flows:
            for i, value in enumerate(_since(followed)):
                out[i] += value
        return out


def _counts(flow: Flow, device_is_orig: bool) -> tuple[int, int, int, int]:
    if device_is_orig:
        return flow.orig_pkts, flow.orig_bytes, flow.resp_pkts, flow.resp_bytes
    return flow.resp_pkts, flow.resp_bytes, flow.orig_pkts, flow.orig_bytes


def _since(followed: _Followed) -> list[int]:
    return [max(0, now - base) for now, base in zip(_counts(followed[0], followed[1]), followed[2:], strict=True)]


def _note(seen: tuple[str, ...], value: str) -> tuple[str, ...]:
    if value not in seen and len(seen) < MAX_SEEN and len(value) <= MAX_NAME:
        return (*seen, value)
    return seen


@dataclass(slots=True, eq=False, repr=False)
class Incident:
    """One device's open incident with one service: its evidence, severity and traffic."""

    id: str                          # given when its open line is written (incident_id)
    # Weak, so that an open incident never keeps a device the inventory has evicted (with its peers and names):
    # open incidents outnumber devices twenty to one at their bound. None once the device is gone.
    device_ref: weakref.ReferenceType[Device] | None
    service: IncidentService
    opened: float
    last: float
    lead: Alert                      # the detection behind the current severity
    severity: int
    detectors: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    traffic: Traffic = field(default_factory=Traffic)
    written: bool = False            # its open line went out (the alert gate may hold one back)
    pending: str | None = None       # the line this second owes: OPEN or UPDATE
    pending_ts: float = 0.0
    scope: str = ""                  # of the address it opened on (for the fan-out count of bare addresses)
    second: int = -1                 # the second of capture time of its latest detection, and the earliest in it
    second_earliest: float = 0.0
    who: str = ""                    # the device's id it is open under: a renumbered device keeps its incidents

    def earliest_in(self, ts: float) -> float:
        """The earliest detection time in ts's second of capture time, this one included."""
        second = int(ts)
        if second != self.second:
            self.second, self.second_earliest = second, ts
        else:
            self.second_earliest = min(self.second_earliest, ts)
        return self.second_earliest

    def join(self, alert: Alert, evidence: Evidence) -> bool:
        """Add a detection; True when it deserves an update line (severity up, or a new detector)."""
        self.last = max(self.last, alert.ts)
        new_detector = alert.detector not in self.detectors
        if new_detector:
            self.detectors = (*self.detectors, alert.detector)
        if not any(e.detector == evidence.detector and e.text == evidence.text for e in self.evidence):
            self.evidence = tuple(_strongest([*self.evidence, evidence]))
        rises = evidence.severity > self.severity
        if rises or (evidence.severity == self.severity and _strength(evidence) < _strength(self._lead_evidence())):
            self.severity = evidence.severity
            self.lead = alert
        return rises or new_detector

    def _lead_evidence(self) -> Evidence:
        return Evidence(self.severity, self.lead.score, self.lead.detector, "")


# "Something left the site" (or "... for a watched country") says less than what it was: at equal severity the
# specific detector leads.
GENERIC_DETECTORS = frozenset({"egress_policy", "new_destination", "jurisdiction"})


def _strength(e: Evidence) -> tuple[int, bool, float]:
    """Sort key, strongest first."""
    return (-e.severity, e.detector in GENERIC_DETECTORS, -e.score)


def _strongest(evidence: list[Evidence]) -> list[Evidence]:
    """At most MAX_EVIDENCE, strongest first, but never without each detector's strongest: the line must say how
    strongly every detector among `detectors` judged the pair."""
    ranked = sorted(evidence, key=_strength)
    leaders: dict[str, Evidence] = {}
    for e in ranked:
        leaders.setdefault(e.detector, e)
    room = max(0, MAX_EVIDENCE - len(leaders))
    rest = [e for e in ranked if leaders[e.detector] is not e][:room]
    return sorted([*leaders.values(), *rest], key=_strength)


def incident_id(sensor: str, device: str, service: str, opened: float) -> str:
    """Stable across runs over the same capture: a replay and a re-run name the same incident the same way."""
    digest = blake2b(f"{sensor}|{device}|{service}|{opened:.6f}".encode(), digest_size=8).hexdigest()
    return f"inc-{digest}"


def evidence_of(alert: Alert) -> Evidence:
    """The short phrase a detection adds to its incident: the detector's own (`evidence`), or what it saw where."""
    text = alert.extra.pop("evidence", None)
    if not isinstance(text, str) or not text:
        where = alert.dst_name or alert.dst_ip
        port = f" {alert.dst_proto}/{alert.dst_port}" if alert.dst_port else f" {alert.dst_proto}"
        text = f"{where}{port}" if alert.dst_proto else where
    # vendor_cloud's own `service` (its indicator id) is what the line's `service` says already
    details = {k: v for k, v in alert.extra.items() if k != "service"}
    return Evidence(SEVERITIES.index(alert.severity), alert.score, alert.detector, text, details or None)


# Small extras whose values are plain strings, integers, booleans or None (`{"direction": "outbound"}`) repeat
# across thousands of open incidents; one dict each would be ~200 bytes apiece at the bound. Floats are left out:
# a measured rate is rarely repeated, and -0.0 == 0.0 would merge two values that print differently.
_SHAREABLE = (str, int, bool, type(None))
MAX_SHARED = 4096


def _share_key(mapping: dict) -> tuple | None:
    """A key that tells equal mappings apart by value and type (True == 1, but they print differently)."""
    if len(mapping) > 4:
        return None
    key = []
    for name, value in mapping.items():
        if type(value) not in _SHAREABLE:
            return None
        key.append((name, type(value), value))
    return tuple(key)


class Incidents:
    """The open incidents, bounded (least recently active first out), and the lines they owe."""

    def __init__(self, sensor_name: str, timeout: float, max_open: int):
        self.sensor_name = sensor_name
        self.timeout = timeout
        self._open: BoundedLRU[tuple[str, str], Incident] = BoundedLRU(max_open, self._evicted)
        self._per_device: dict[str, int] = {}     # open incidents per device: most traffic has none to follow
        self._bare: dict[tuple[str, str], int] = {}   # open bare-address incidents per (device, scope)
        self._followed = 0                          # flows the open incidents follow, all together
        self._changed: list[Incident] = []
        self._closing: list[Alert] = []
        self._shared_dicts: BoundedLRU[tuple, dict] = BoundedLRU(MAX_SHARED)
        self.opened = 0
        # Which incident each flow's traffic last counted in, kept only for the flow log (which takes each entry
        # when its flow ends): None costs nothing when no one asks.
        self.flow_links: BoundedLRU[Flow, Incident] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def open_severities(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for incident in self._open.values():
            counts[SEVERITIES[incident.severity]] += 1
        return counts

    def following(self, device_id: str) -> bool:
        return device_id in self._per_device

    # ---- what happens ----------------------------------------------------------------------------------------
    def detect(self, alert: Alert, service: IncidentService, device: Device | None, obs: Observation | None) -> None:
        """A detection about (device, service); obs, when the detection came from traffic."""
        evidence = evidence_of(alert)
        details = evidence.details
        if details is not None and len(details) == len(alert.extra) and (key := _share_key(details)) is not None:
            # the extra is the details (no "service" in it), shareable: _shared of both is one lookup, and the
            # second would find the first's dict at the map's newest end
            evidence.details = shared = self._shared_as(key, details)
            self._slim(alert, shared)
        else:
            if details is not None:
                evidence.details = self._shared(details)
            self._slim(alert)
        self._sweep(alert.ts)
        # Keyed by the device's id, as its episodes are: the address it has now may not be the one it opened with.
        who = device.id if device is not None else alert.device_ip
        if who not in self._per_device:
            # nothing open for the device (_per_device counts what _open holds; every new device of a flood): no
            # incident to adopt, to fan out to, or to join
            incident = None
            key = (who, service.id)
        else:
            if obs is not None:   # only traffic says a name is the peer's own (a lookup's name is not its resolver's)
                self._adopt(who, obs.peer, obs.name, service)
            service = self._fanned_out(who, service, alert.dst_scope)
            key = (who, service.id)
            incident = self._current(key, alert.ts)
        if incident is None:
            incident = self._open_incident(key, alert, service, device, evidence)
        else:
            # Within a second, events come by kind (payloads before flow updates), not strictly by time: a line
            # owed takes the second's earliest detection, so that how the input was cut into batches changes
            # nothing.
            earliest = incident.earliest_in(alert.ts)
            if incident.join(alert, evidence) and incident.pending is None:
                # an incident the gate held back offers its open line again when it grows stronger
                incident.pending = UPDATE if incident.written else OPEN
                self._changed.append(incident)
            if incident.pending is not None:
                incident.pending_ts = min(incident.pending_ts, earliest) if incident.pending_ts else earliest
            if incident.pending == OPEN and not incident.written:
                incident.opened = min(incident.opened, earliest)
        if obs is not None:
            self._followed += incident.traffic.add(obs, self._followed < FOLLOWED_MAX)
            self._link(obs, incident)

    def traffic(self, obs: Observation, service: IncidentService) -> None:
        """Traffic of a device that has open incidents: counted in the incident of its service, if one is open."""
        self._sweep(obs.ts)
        self._adopt(obs.device.id, obs.peer, obs.name, service)
        # The pair's own incident, when open, is the one (_fanned_out keeps a service whose incident is open): found
        # with one lookup instead of a membership test and then a second lookup (issue 16: every observation of a
        # followed device comes here).
        key = (obs.device.id, service.id)
        incident = self._open.use(key)
        if incident is None:
            service = self._fanned_out(obs.device.id, service, obs.scope)
            incident = self._current((obs.device.id, service.id), obs.ts)
        else:
            incident = self._unless_silent(key, incident, obs.ts)
        if incident is not None:
            if obs.ts > incident.last:   # max()'s answer, without its call
                incident.last = obs.ts
            self._followed += incident.traffic.add(obs, self._followed < FOLLOWED_MAX)
            self._link(obs, incident)

    def _shared(self, mapping: dict) -> dict:
        """An equal dict met before, if this one is small and plain; the caller never changes it afterwards."""
        key = _share_key(mapping)
        return mapping if key is None else self._shared_as(key, mapping)

    def _shared_as(self, key: tuple, mapping: dict) -> dict:
        """_shared, its key made already."""
        known = self._shared_dicts.use(key)
        if known is not None:
            return known
        self._shared_dicts.put(key, mapping)
        return mapping

    def _slim(self, alert: Alert, shared_extra: dict | None = None) -> None:
        """What an open incident keeps of a detection that may lead it: its extra shared when plain and repeated
        (lines copy it before adding to it; `shared_extra` when the caller shared it already), its device's MAC as
        one string however many incidents name it."""
        alert.extra = self._shared(alert.extra) if shared_extra is None else shared_extra
        if alert.device_mac is not None:
            alert.device_mac = sys.intern(alert.device_mac)

    def _link(self, obs: Observation, incident: Incident) -> None:
        if self.flow_links is not None and obs.flow is not None:
            self.flow_links.put(obs.flow, incident)

    def incident_of(self, flow: Flow) -> str | None:
        """The id of the incident the flow's traffic last counted in, if its line was written; the link is
        dropped, since this is asked once, when the flow ends."""
        if self.flow_links is None:
            return None
        incident = self.flow_links.pop(flow)
        if incident is None or not incident.id:
            return None
        return incident.id

    def _sweep(self, now: float) -> None:
        """Close the incidents silent for the timeout by `now`, least recently active first (the rest are younger).
        Also before each detection: after a gap in the capture no tick came, and the fan-out counts must not count
        incidents that are over."""
        while (oldest := self._open.oldest()) is not None and now - oldest[1].last > self.timeout:
            self._open.pop(oldest[0])
            self._close(oldest[1], oldest[1].last + self.timeout, SILENCE)

    def _adopt(self, device_id: str, peer: str, name: str | None, service: IncidentService) -> None:
        """A TLS ClientHello or HTTP request names a flow a packet after its SYN, which may have opened an incident
        on the bare address already: while that incident's open line is still owed (the same second), it takes the
        named service, so that whether SYN and request came in one batch changes nothing."""
        if service.kind not in (KIND_VENDOR, KIND_DOMAIN):
            return
        incident = self._open.get((device_id, peer))
        if (incident is None or incident.pending != OPEN or incident.service.kind != KIND_ADDRESS
                or (device_id, service.id) in self._open):
            return
        self._open.pop((device_id, peer))
        _decrement(self._bare, (device_id, incident.scope))
        incident.service = service
        if incident.lead.dst_ip == peer and incident.lead.dst_name is None:
            incident.lead.dst_name = name
        self._open.put((device_id, service.id), incident)

    def _fanned_out(self, device_id: str, service: IncidentService, scope: str) -> IncidentService:
        """The fan-out incident's service for a bare address the device has no incident of, once it has FAN_OUT
        of them open in that scope (or the fan-out incident is open already); else the service itself."""
        # A device with no incident open (every new device of a flood) has none of the counts below: one lookup
        open_here = self._per_device.get(device_id, 0)   # answers the four (_per_device counts what _open holds)
        if not open_here or service.kind == KIND_SITE or (device_id, service.id) in self._open:
            return service
        fan = fan_out_service(scope)
        crowded = open_here >= MAX_PER_DEVICE   # random names, one per flow
        if crowded or (service.kind == KIND_ADDRESS and (
                (device_id, fan.id) in self._open or self._bare.get((device_id, scope), 0) >= FAN_OUT)):
            return fan
        return service

    def _current(self, key: tuple[str, str], ts: float) -> Incident | None:
        """The open incident of the pair; one that has been silent for the timeout by `ts` closes first (the tick
        that would have closed it may not have come: a replay has no ticks between packets)."""
        incident = self._open.use(key)
        return None if incident is None else self._unless_silent(key, incident, ts)

    def _unless_silent(self, key: tuple[str, str], incident: Incident, ts: float) -> Incident | None:
        if ts - incident.last > self.timeout:
            self._open.pop(key)
            self._close(incident, incident.last + self.timeout, SILENCE)
            return None
        return incident

    def _open_incident(self, key: tuple[str, str], alert: Alert, service: IncidentService, device: Device | None,
                       evidence: Evidence) -> Incident:
        device_ref = weakref.ref(device) if device is not None else None
        incident = Incident("", device_ref, service, alert.ts, alert.ts, alert, evidence.severity, (alert.detector,),
                            (evidence,), pending=OPEN, pending_ts=alert.ts, scope=alert.dst_scope,
                            second=int(alert.ts), second_earliest=alert.ts, who=key[0])
        self._open.put(key, incident)
        self._per_device[key[0]] = self._per_device.get(key[0], 0) + 1
        if service.kind == KIND_ADDRESS:
            bare = (key[0], incident.scope)
            self._bare[bare] = self._bare.get(bare, 0) + 1
        self._changed.append(incident)
        self.opened += 1
        return incident

    # ---- lines -----------------------------------------------------------------------------------------------
    def take_changes(self) -> list[tuple[Incident, str, float]]:
        """The open and update lines this second owes: (incident, event, time). The caller builds the line
        (`line`) only for what it writes: under a flood, most open lines are held back."""
        if not self._changed:
            return []   # the usual second: asked once a second, nothing changed
        changed, self._changed = self._changed, []
        out = []
        for incident in changed:
            event, incident.pending = incident.pending, None
            ts, incident.pending_ts = incident.pending_ts, 0.0
            if event is None or (event == UPDATE and not incident.written):
                continue
            out.append((incident, event, ts))
        return out

    def take_closing(self) -> list[Alert]:
        """The close lines owed so far (silent before a detection, evicted), without looking for more."""
        if not self._closing:
            return []
        closing, self._closing = self._closing, []
        return closing

    def idle(self, now: float) -> bool:
        """Whether take_closed(now) and take_changes() would hand back nothing: no line owed, and no incident
        silent for the timeout (the one longest silent is the one _sweep looks at first). Asked once a second."""
        if self._changed or self._closing:
            return False
        oldest = self._open.oldest()
        return oldest is None or not now - oldest[1].last > self.timeout

    def take_closed(self, now: float, final_reason: str | None = None) -> list[Alert]:
        """Close lines: incidents closed since the last call (silent, evicted), then those silent for the timeout
        by `now` (all of them, when final_reason says the run ends)."""
        if final_reason is None:
            self._sweep(now)
        else:   # every one, least recently active first (_close never touches the open map)
            for _key, incident in self._open.take_all():
                self._close(incident, now, final_reason, uncount=False)
            # what each _close would have taken from the counts, at once: they count only open incidents
            self._per_device.clear()
            self._bare.clear()
        return self.take_closing()

    def _evicted(self, _key: tuple[str, str], incident: Incident) -> None:
        self._close(incident, incident.last, EVICTED)

    def _close(self, incident: Incident, now: float, reason: str, uncount: bool = True) -> None:
        """uncount: take it from the per-device counts (False: the caller empties them, every incident closing)."""
        incident.pending = None   # an evicted incident whose open line is still owed never writes it
        self._followed -= incident.traffic.following
        if uncount:
            who = incident.who   # every detection of an incident is about its one device
            _decrement(self._per_device, who)
            if incident.service.kind == KIND_ADDRESS:
                _decrement(self._bare, (who, incident.scope))
        if incident.written:
            self._closing.append(self._close_line(incident, now, reason))

    def line(self, incident: Incident, event: str, ts: float) -> Alert:
        """The line of an open or update event (take_changes)."""
        if not incident.id:
            incident.id = incident_id(self.sensor_name, incident.lead.device_ip, incident.service.id,
                                      incident.opened)
        return self._line(incident, event, ts)

    def _line(self, incident: Incident, event: str, ts: float) -> Alert:
        lead = incident.lead
        fields = self._fields(incident, event)
        extra = {**fields, **{k: v for k, v in lead.extra.items() if k not in fields}}
        # the destination's country and owner join the summary here, for the lines written only
        return dataclasses.replace(lead, ts=ts, severity=SEVERITIES[incident.severity], extra=extra,
                                   summary=with_place(lead.summary, lead.dst_ip, lead.place))

    def _fields(self, incident: Incident, event: str) -> dict:
        return {"contract": CONTRACT_VERSION, "incident": incident.id, "event": event,
                "service": incident.service.as_dict(), "detectors": list(incident.detectors),
                "evidence": [e.as_dict() for e in incident.evidence]}

    def _close_line(self, incident: Incident, now: float, reason: str) -> Alert:
        t = incident.traffic
        out_pkts, out_bytes, in_pkts, in_bytes = t.totals()
        first = min(incident.opened, t.first) if t.first is not None else incident.opened
        last = max(incident.last, t.last or incident.last)
        duration = max(0.0, last - first)
        mean_bps = 8.0 * out_bytes / duration if duration >= 1.0 else 8.0 * out_bytes
        totals = {"packets_out": out_pkts, "bytes_out": out_bytes, "packets_in": in_pkts, "bytes_in": in_bytes,
                  "first_seen": round(first, 6), "last_seen": round(last, 6), "duration_s": round(duration, 3),
                  "peak_bps": round(t.peak_bps), "mean_bps": round(mean_bps), "addresses": list(t.addresses),
                  "names": list(t.names)}
        device = incident.device_ref() if incident.device_ref is not None else None
        who = describe_device(device) if device is not None else incident.lead.device_ip
        summary = (f"Closed ({_REASON_TEXT[reason]}): {who} and {incident.service.name} over {duration:.0f} s sent "
                   f"{plural(out_pkts, 'packet')} ({plural(out_bytes, 'byte')}) and received "
                   f"{plural(in_pkts, 'packet')} ({plural(in_bytes, 'byte')}); peak {rate_text(t.peak_bps)}; "
                   f"detectors: {', '.join(incident.detectors)}.")
        line = self._line(incident, CLOSE, max(now, last))
        line.summary = summary
        line.extra.update(reason=reason, totals=totals)
        return line


def _decrement(counts: dict, key: object) -> None:
    left = counts.get(key, 1) - 1
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)


_REASON_TEXT = {SILENCE: "silent for the episode timeout", END: "end of the capture", SHUTDOWN: "sensor shutdown",
                EVICTED: "evicted: too many open incidents"}
