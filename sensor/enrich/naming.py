"""Names: addresses learned from DNS answers seen on the wire, and the TLS SNI or HTTP Host that names the flow it
travels in. Camera-side DNS questions also go into the inventory and on to the detectors."""

from __future__ import annotations

import enum
import ipaddress

from sensor.bounded import BoundedLRU
from sensor.decode import PROTO_TCP, WINDOW, Decoded, payload
from sensor.dissect import (
    DnsMessage,
    HttpRequest,
    ParserGuard,
    dns_answer_cost,
    parse_dns,
    parse_http_request,
    parse_tls_sni,
)
from sensor.enrich.events import DnsAnswer, DnsQuery, EventSink
from sensor.enrich.inventory import Inventory
from sensor.enrich.parse_budget import ParseBudget
from sensor.enrich.scope import SCOPE_CAMERA, Classifier
from sensor.flows import FlowTable, IPAddress, flow_key, ip_text

# Grace after a DNS record's TTL: cameras keep long-lived connections to addresses resolved long ago.
NAME_GRACE_SECONDS = 3600.0
DNS_PARSE_CACHE = 4096
# Only messages up to this size are remembered: a camera's questions and their answers fit (EDNS's safe UDP size),
# while unique jumbo answers (a flood's) would otherwise hold ~37 MB of keys at the bound; they are parsed each time.
MAX_CACHED_DNS_BYTES = 1232
# A message's answer records cost ~4 us each to read and learn, 64 at most: unique answers forged at wire speed
# (~260 us each) would take a core at ~45 Mbit/s. Each capture second reads at most this many answer records of
# messages not seen before, in all and per sender; messages past that are left unread and counted
# (camwatch_parses_skipped_total{parser="dns"}). A site's resolver answers a camera a few records a minute, and a
# question, which carries none, is always read.
DNS_RECORDS_PER_SECOND = 16384
DNS_SENDER_RECORDS_PER_SECOND = 4096


class NameCache:
    """Address -> DNS name learned from answers seen on the wire, TTL-aware and bounded (LRU)."""

    def __init__(self, max_entries: int):
        self._names: BoundedLRU[str, tuple[str, float]] = BoundedLRU(max_entries)

    @property
    def evicted(self) -> int:
        return self._names.evicted

    def learn(self, msg: DnsMessage, now: float) -> None:
        if not msg.is_response or not msg.qname:
            return
        # one answer's addresses all go in before any is evicted
        qname = msg.qname
        self._names.put_many((address, (qname, now + ttl + NAME_GRACE_SECONDS)) for address, ttl in msg.addresses())

    def lookup(self, ip: IPAddress | str, now: float) -> str | None:
        entry = self._names.get(str(ip))
        if entry is None or entry[1] < now:
            return None
        return entry[0]

    def __len__(self) -> int:
        return len(self._names)


class _Unparsed(enum.Enum):
    """The DNS parse cache's "not parsed yet" (None is a cached "not a DNS message"); an enum so mypy can narrow."""

    TOKEN = 0


_UNPARSED = _Unparsed.TOKEN


class DnsReader:
    """DNS messages of a batch: answers teach the name cache; camera-side questions are recorded on the device
    and handed on as DnsQuery events."""

    def __init__(self, names: NameCache, classifier: Classifier, inventory: Inventory, parsers: ParserGuard,
                 sink: EventSink):
        self.names = names
        self.classifier = classifier
        self.inventory = inventory
        self.parsers = parsers
        self.sink = sink
        self._parsed: dict[bytes, DnsMessage | None] = {}
        self.budget = ParseBudget(DNS_RECORDS_PER_SECOND, DNS_SENDER_RECORDS_PER_SECOND)

    def read(self, dec: Decoded, rows: list[int]) -> None:
        for row in rows:
            ts = float(dec.batch.ts[row])
            msg = self._parse(payload(dec, row), dec, row, ts)
            if msg is None:
                continue
            if msg.is_response:
                self.names.learn(msg, ts)
                self.sink.dns_answer(DnsAnswer(ts, msg, ip_text(dec.dst[row].tobytes()), int(dec.vlan[row])))
            elif msg.qname and int(dec.dport[row]) == 53:
                self._query(dec, row, msg.qname, ts)

    def _parse(self, body: bytes, dec: Decoded, row: int, ts: float) -> DnsMessage | None:
        """The row's message, None when it is not one or the parse budget leaves it unread. Cameras ask the same
        questions all day and get the same answers: only the 2-byte ID differs, and the parse does not depend on it,
        so a message seen before is not parsed (nor charged) again."""
        key = body[2:] if len(body) <= MAX_CACHED_DNS_BYTES else None
        msg = self._parsed.get(key, _UNPARSED) if key is not None else _UNPARSED
        if msg is not _UNPARSED:
            return msg
        cost = dns_answer_cost(body)
        if cost and not self.budget.allow(ip_text(dec.src[row].tobytes()), ts, cost):
            return None
        msg = self.parsers.run(parse_dns, body, None)
        if key is not None:
            if len(self._parsed) >= DNS_PARSE_CACHE:
                self._parsed.clear()   # bounded; the repeated messages come straight back
            self._parsed[key] = msg
        return msg

    def _query(self, dec: Decoded, row: int, qname: str, ts: float) -> None:
        # scoped and printed from the raw bytes, as flows are: no ipaddress object for each camera's every question
        client = dec.src[row].tobytes()
        if self.classifier.scope_of_raw(client) != SCOPE_CAMERA:
            return
        dev = self.inventory.touch(ip_text(client), int(dec.src_mac[row]), ts)
        if dev is None:
            return
        self.inventory.record_query(dev, qname, ts)
        resolver = dec.dst[row].tobytes()
        self.sink.dns_query(DnsQuery(ts, dev, qname, ip_text(resolver), self.classifier.scope_of_raw(resolver),
                                     int(dec.vlan[row]), self.classifier.name_allowed(qname)))


def name_flows(dec: Decoded, rows: list[int], flows: FlowTable, parsers: ParserGuard) -> list[tuple[int, HttpRequest]]:
    """TLS SNI and HTTP Host name the flow they travel in (rows: TCP rows opening a ClientHello or a request).
    Returns the HTTP requests read, by row, for the readers that want more of them than the Host."""
    requests: list[tuple[int, HttpRequest]] = []
    for row in rows:
        body = payload(dec, row, limit=WINDOW * 64)
        if body[:1] == b"\x16":
            name = parsers.run(parse_tls_sni, body, None)
        else:
            request = parsers.run(parse_http_request, body, None, label="http_host")
            if request is None:
                continue
            requests.append((row, request))
            name = request.host
        # "Host: 198.51.100.66" names nothing the address does not; a 4 kB SNI names no host either
        if name and len(name) <= MAX_HOST_NAME and not is_address(name):
            flow = flows.get(flow_key(dec, row)[0], PROTO_TCP)
            if flow is not None and flow.name is None:
                flow.name = name
    return requests


MAX_HOST_NAME = 253   # the longest DNS name


def is_address(text: str) -> bool:
    """Whether a string from the wire is an IP literal rather than a name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
