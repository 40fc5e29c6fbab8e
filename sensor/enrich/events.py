"""What the enrichment stage hands on: each one a fact about one camera-side device, with its peer already named
and scoped. The detection stage (sensor.detect) implements EventSink; detectors receive these through its hooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sensor.dissect import DnsMessage
from sensor.enrich.inventory import Device
from sensor.enrich.scope import EXTERNAL_SCOPES
from sensor.flows import Flow

UNASKED = object()


@dataclass(slots=True, weakref_slot=True, eq=False, repr=False)
class Observation:
    """One camera-side device's share of a flow update."""

    ts: float            # capture time of the first packet of this update
    device: Device
    sent_packets: int
    sent_bytes: int
    initiated: bool      # the device originated the flow
    peer: str            # the other end's address
    port: int | None     # the flow's service (responder) port
    proto: str
    name: str | None     # DNS/SNI/Host name of the peer, if known
    scope: str           # scope of the peer (enrich.SCOPES)
    vlan: int
    flow: Flow | None = None
    new_flow: bool = False
    # What the peer sent back in the same update: the up:down balance of an upload. Seconds in which the device
    # itself sent nothing are not observations, so a reply arriving alone is not counted here.
    received_bytes: int = 0
    received_packets: int = 0
    # The vendor service this traffic belongs to and the evidence (sensor.detect.indicators), once something asked:
    # maker evidence, vendor_cloud and the incident's service all ask about the same observation.
    service_match: object = UNASKED

    @property
    def tags(self) -> int:
        """Payload-profile bits (sensor.tags) the device itself sent in this flow."""
        if self.flow is None:
            return 0
        return self.flow.orig_tags if self.initiated else self.flow.resp_tags

    @property
    def external(self) -> bool:
        return self.scope in EXTERNAL_SCOPES


@dataclass(slots=True, eq=False, repr=False)
class DnsQuery:
    """A camera-side device asking a resolver for a name."""

    ts: float
    device: Device
    qname: str
    resolver: str
    resolver_scope: str
    vlan: int
    allowed: bool        # an allow rule names it: looking it up is expected


@dataclass(slots=True, eq=False, repr=False)
class DnsAnswer:
    """A DNS response seen on the wire (its addresses already name the flows that follow)."""

    ts: float
    message: DnsMessage
    client: str          # the address the answer went to
    vlan: int


@dataclass(slots=True, eq=False, repr=False)
class UpnpRequest:
    """A camera-side device looking for an Internet gateway (upnp_igd_discovery) or asking one to open a port
    (upnp_port_mapping)."""

    ts: float
    device: Device
    kind: str
    peer: str
    port: int
    proto: str
    scope: str
    vlan: int
    detail: str          # e.g. " for external port 8000", or ""


@dataclass(slots=True, eq=False, repr=False)
class FileFetch:
    """A camera-side device fetching a file in cleartext: a TFTP read request, or an HTTP GET whose path names a
    script, executable, firmware image or archive (sensor.enrich.fetches). `path` and `filename` come from the
    wire: already escaped and cut (sensor.dissect.wire_text), safe to quote."""

    ts: float
    device: Device
    peer: str            # the server
    port: int
    proto: str
    scope: str           # of the server, allow rules applied (Classifier.destination_scope)
    vlan: int
    transport: str       # "tftp" or "http"
    method: str          # "RRQ" (TFTP read request) or "GET"
    path: str            # the file or path as requested (HTTP: without the query string)
    filename: str        # its last segment
    kind: str            # script, executable, firmware image, archive, or file (TFTP, anything else)
    name: str | None = None   # the HTTP Host header, if any


@dataclass(slots=True, eq=False, repr=False)
class IdentityReport:
    """What a device's banner or discovery announcement said about it (maker, model, firmware...)."""

    ts: float
    device: Device
    fields: dict[str, str]


class EventSink(Protocol):
    """Where enrichment delivers its events: the detection stage."""

    # Peer scopes some consumer judges: observations of any other scope are not built at all.
    scopes: frozenset[str]

    def observe(self, obs: Observation) -> None: ...

    def dns_query(self, query: DnsQuery) -> None: ...

    def dns_answer(self, answer: DnsAnswer) -> None: ...

    def upnp(self, request: UpnpRequest) -> None: ...

    def fetch(self, fetch: FileFetch) -> None: ...

    def identity(self, report: IdentityReport) -> None: ...
