"""The enrich stage: names and scopes every destination, keeps the inventory of camera-side devices, and hands the
detection stage one event per fact (sensor.enrich.events).

Per window the pipeline calls read_dns (before the flow stage, so a flow opened right after its DNS answer is
named), then read_payloads (after it, so a ClientHello names the flow it opened), then new_flows with the window's
new flows; the updates of known flows come to flow_update when their second of capture time ends. new_flows must
do what flow_update does for a new flow (tests/unit/test_enrich_stage.py holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable

from sensor.config import Config
from sensor.decode import Decoded
from sensor.dissect import ParserGuard
from sensor.enrich import new_flows as new_flow_batch
from sensor.enrich.events import EventSink, Observation
from sensor.enrich.fetches import FetchReader
from sensor.enrich.geography import CountryEgress, Geography
from sensor.enrich.identity import IdentityReader, UpnpReader
from sensor.enrich.inventory import MAX_ROUTER_MACS, Inventory
from sensor.enrich.link import LinkReader
from sensor.enrich.naming import DnsReader, NameCache, name_flows
from sensor.enrich.roles import RoleEvidence
from sensor.enrich.routing import ParserRows
from sensor.enrich.scope import (
    EXTERNAL_SCOPES,
    MAX_LEARNED_NETWORKS,
    SCOPE_ALLOWED,
    SCOPE_CAMERA,
    SCOPE_CORE,
    SCOPE_LINK_LOCAL,
    SCOPE_PRIVATE,
    SCOPE_PUBLIC,
    Classifier,
    flow_context,
    peer_scope,
)
from sensor.errors import warn
from sensor.flows import Flow, FlowTable, FlowUpdate, ip_text, new_update
from sensor.reference_data import Service
from sensor.state import KnownState

# Counted exactly up to here: the gauge is a site's reach, and a flood of forged peers must not buy memory.
MAX_EXTERNAL_DESTINATIONS = 100_000


class Enricher:
    def __init__(self, config: Config, inventory: Inventory, known: KnownState, sink: EventSink,
                 geography: Geography | None = None):
        self.classifier = Classifier(config)
        self.names = NameCache(config.max_names)
        self.parsers = ParserGuard(warn)
        self.inventory = inventory
        self.known = known   # where each device's first sighting is kept (its learning period starts there)
        self.sink = sink
        self.roles = RoleEvidence(inventory)
        # The vendor service a device's traffic belongs to (the pipeline hands in the indicator file's match).
        self.service_of: Callable[[Observation], tuple[Service, str] | None] | None = None
        self.external_destinations: set[str] = set()
        self.egress_countries = CountryEgress(geography if geography is not None else Geography())
        self._dns = DnsReader(self.names, self.classifier, inventory, self.parsers, sink)
        self._identity = IdentityReader(self.classifier, inventory, self.parsers, sink)
        self._upnp = UpnpReader(self.classifier, inventory, sink)
        self._fetches = FetchReader(self.classifier, inventory, self.parsers, sink)
        self._link = LinkReader(self.classifier, inventory, self.parsers, sink)

    @property
    def link(self) -> LinkReader:
        return self._link

    @property
    def parses_skipped(self) -> dict[str, int]:
        """Packets a parse budget left unread, by reader (camwatch_parses_skipped_total's parser label)."""
        return {"dns": self._dns.budget.refused, "identity": self._identity.budget.refused}

    def read_link(self, dec: Decoded, rows: ParserRows) -> None:
        """DHCP, ARP and neighbour discovery: who holds which address, and (zero-config) the camera side. Read
        first, so that the window's flows are scoped and their devices found with what the link just said."""
        self._link.read(dec, rows.dhcp, rows.link)

    def read_dns(self, dec: Decoded, rows: list[int]) -> None:
        self._dns.read(dec, rows)

    def read_payloads(self, dec: Decoded, rows: ParserRows, flows: FlowTable) -> None:
        """Flow names (SNI, Host), UPnP requests, file fetches (TFTP, HTTP GET), then banners and discovery."""
        requests = name_flows(dec, rows.named, flows, self.parsers)
        self._upnp.read(dec, rows.searches, rows.posts)
        self._fetches.read(dec, rows.requests, requests)
        self._identity.read(dec, rows.identity, rows.banners, flows)

    def flow_update(self, upd: FlowUpdate) -> None:
        flow, classifier = upd.flow, self.classifier
        if upd.new and classifier.zero_config:
            self._link.note_flow(upd)
        ctx = flow.context
        if ctx is None or ctx[6] != classifier.generation:
            ctx = flow_context(classifier, flow)
        orig, resp = ctx[0], ctx[1]
        if (not upd.new and (orig == SCOPE_PRIVATE or resp == SCOPE_PRIVATE) and classifier.zero_config
                and len(classifier.learned) < MAX_LEARNED_NETWORKS):
            # A later second of a known flow is a later sighting of its senders: the one that confirms a network
            # whose hosts each keep one long flow (a camera streaming to its recorder, a device that only
            # broadcasts), which the flows' first seconds alone never would. Not once the learnt networks are at
            # their bound: no sighting can teach then, and a site of more private networks than that would pay
            # for one in every update of their flows (+21% of the instructions of 127 real sites in a row).
            self._link.note_flow(upd)
            if ctx[6] != classifier.generation:
                ctx = flow_context(classifier, flow)
                orig, resp = ctx[0], ctx[1]
        if orig == SCOPE_CAMERA or resp == SCOPE_CAMERA:
            ctx = self._side(upd, ctx, True)
            ctx = self._side(upd, ctx, False)
        else:
            # _side of both sides without a camera side (most updates where the camera side is not known, as on
            # a zero-config site with more networks than it learns): a public sender's MAC is the router's.
            if upd.orig_pkts and orig == SCOPE_PUBLIC and self._router_news(flow.orig_mac):
                self.roles.note_router_mac(flow.orig_mac)
            if upd.resp_pkts and resp == SCOPE_PUBLIC and self._router_news(flow.resp_mac):
                self.roles.note_router_mac(flow.resp_mac)
            if upd.new and SCOPE_LINK_LOCAL in (orig, resp):
                self._link_local_senders(flow, upd.orig_pkts, upd.resp_pkts, orig, resp)
        if not upd.new:   # remembered from a flow's second second on: most flows of a flood have none
            flow.context = ctx

    def new_flows(self, flows: list[Flow]) -> None:
        """flow_update of each of a batch's brand-new flows (FlowTable.update_apart), in their order, with the same
        effects. A flood of new flows is mostly flows no camera-side device sends in (an inbound scan, forged
        peers) or forged camera-side sources the new-device budget holds back: a window of many is settled
        together (sensor.enrich.new_flows), a few one at a time."""
        if len(flows) >= new_flow_batch.MIN_FLOWS:
            new_flow_batch.settle(self, flows)
            return
        for flow in flows:
            self._new_flow(flow)

    def _new_flow(self, flow: Flow, noted: bool = False) -> None:
        """flow_update of one new flow (noted: its zero-config sighting, LinkReader.note_flow, is made already).
        For those no camera-side device sends in, the only possible work is noting a public sender's MAC as the
        router's, so they are settled from the two addresses' scopes, without an update object or a flow context,
        and the calls that could not change anything are not made."""
        classifier, router_macs = self.classifier, self.inventory.router_macs
        # a new flow holds exactly what its first update brought (new_update)
        orig_pkts, resp_pkts, orig_mac, resp_mac = flow.orig_pkts, flow.resp_pkts, flow.orig_mac, flow.resp_mac
        # LinkReader.note_flow notes a side only if it sent and has a MAC not already a router's
        upd = None   # the flow's first update, made once for note_flow and _side (nothing changes it)
        if not noted and classifier.zero_config and ((orig_pkts and orig_mac and orig_mac not in router_macs)
                                                     or (resp_pkts and resp_mac and resp_mac not in router_macs)):
            upd = new_update(flow)
            self._link.note_flow(upd)
        # flow_context's scopes (Flow.orig_raw, resp_raw inlined), after note_flow as there; a responder's only
        # when it can matter: it sent, or a core host reached it (an inbound flood's are neither)
        key, orig_is_a, scope_of = flow.key, flow.orig_is_a, classifier.scope_of_raw
        orig = scope_of(key[3:19] if orig_is_a else key[21:37])
        resp = scope_of(key[21:37] if orig_is_a else key[3:19]) if resp_pkts or orig == SCOPE_CORE else None
        if (orig == SCOPE_CAMERA or resp == SCOPE_CAMERA) and _camera_work(orig, resp, orig_pkts, resp_pkts):
            # a new source that only sent, held back by the new-device budget (a forged-source flood): what
            # _side would do for it ends in touch() holding it, and its silent peer has nothing to do
            if orig == SCOPE_CAMERA and not resp_pkts and self.inventory.holds_back(flow.orig_text, orig_mac,
                                                                                   flow.first):
                return
            if upd is None:
                upd = new_update(flow)
            # the scopes just worked out (nothing since could change them): the context's, not asked again
            ctx = self._side(upd, flow_context(classifier, flow, orig, resp), True)
            self._side(upd, ctx, False)
            return
        # _side without a camera side: a public sender's MAC is the router's
        if orig_pkts and orig == SCOPE_PUBLIC and self._router_news(orig_mac):
            self.roles.note_router_mac(orig_mac)
        if resp_pkts and resp == SCOPE_PUBLIC and self._router_news(resp_mac):
            self.roles.note_router_mac(resp_mac)
        if orig == SCOPE_LINK_LOCAL or resp == SCOPE_LINK_LOCAL:
            self._link_local_senders(flow, orig_pkts, resp_pkts, orig, resp)

    def _link_local_senders(self, flow: Flow, orig_pkts: int, resp_pkts: int, orig: str, resp: str | None) -> None:
        """A new flow's IPv6 link-local senders join the device their MAC has: such an address is never routed, so
        the frame's MAC is its holder's, link evidence as neighbour discovery is (docs/identity.md). A camera doing
        ONVIF discovery from fe80:: before any neighbour discovery was otherwise never its address."""
        for sent, scope, raw, mac in ((orig_pkts, orig, flow.orig_raw, flow.orig_mac),
                                      (resp_pkts, resp, flow.resp_raw, flow.resp_mac)):
            if sent and mac and scope == SCOPE_LINK_LOCAL and raw[0] == 0xFE and raw[1] & 0xC0 == 0x80:
                self.inventory.join_link_local(ip_text(raw), mac, flow.first)

    def _side(self, upd: FlowUpdate, ctx: tuple, is_orig: bool) -> tuple:
        """One side of a flow update (is_orig: the originator's); returns the flow context, possibly updated."""
        if is_orig:
            local_scope, remote_scope, sent_pkts = ctx[0], ctx[1], upd.orig_pkts
        else:
            local_scope, remote_scope, sent_pkts = ctx[1], ctx[0], upd.resp_pkts
        if local_scope != SCOPE_CAMERA:
            if sent_pkts and local_scope == SCOPE_PUBLIC:
                mac = upd.flow.orig_mac if is_orig else upd.flow.resp_mac
                if self._router_news(mac):
                    self.roles.note_router_mac(mac)
            return ctx
        # A core host reaching into the camera VLAN matters even when the camera stays silent (_camera_work: the
        # same rule for both sides at once).
        if not sent_pkts and (is_orig or remote_scope != SCOPE_CORE or not upd.orig_pkts):
            return ctx
        return self._camera_side(upd, ctx, is_orig, sent_pkts)

    def _router_news(self, mac: int) -> bool:
        """Whether Inventory.mark_router would do anything with this MAC: not one it has, and room for it (at its
        bound, reached on sites with many routers, every Internet packet's MAC would otherwise cost a call)."""
        router_macs = self.inventory.router_macs
        return bool(mac) and mac not in router_macs and len(router_macs) < MAX_ROUTER_MACS

    def _camera_side(self, upd: FlowUpdate, ctx: tuple, is_orig: bool, sent_pkts: int) -> tuple:
        flow, ts = upd.flow, upd.ts
        if is_orig:
            local, peer, mac, sent_bytes, received = (flow.orig_text, flow.resp_text, flow.orig_mac, upd.orig_bytes,
                                                      upd.resp_bytes)
            received_pkts = upd.resp_pkts
        else:
            local, peer, mac, sent_bytes, received = (flow.resp_text, flow.orig_text, flow.resp_mac, upd.resp_bytes,
                                                      upd.orig_bytes)
            received_pkts = upd.orig_pkts
        # The update's first packet, not the flow's latest: a device's first_seen is its first packet.
        dev = self.inventory.touch(local, mac, ts, flow.last)
        if dev is None:   # a new source the new-device budget holds back (sensor.enrich.admission)
            return ctx
        self.known.device_first_seen(dev.id, dev.first_seen)
        dev.packets_sent += sent_pkts
        dev.bytes_sent += sent_bytes
        if sent_pkts:
            self.roles.from_flow(dev, flow, is_orig)
        name = flow.name if is_orig and flow.name else self.names.lookup(peer, ts)
        scope, ctx = peer_scope(self.classifier, flow, ctx, is_orig, name)
        if sent_bytes:
            dev.egress_bytes[scope] = dev.egress_bytes.get(scope, 0) + sent_bytes
            if scope == SCOPE_PUBLIC or scope == SCOPE_ALLOWED:
                self.egress_countries.add(peer, dev.covered, sent_bytes, scope == SCOPE_PUBLIC, ts)
        # each asked once (nothing below changes the scope or the detectors' scopes)
        external = scope in EXTERNAL_SCOPES
        if external:
            if len(self.external_destinations) < MAX_EXTERNAL_DESTINATIONS:
                self.external_destinations.add(peer)
            dev.note_external_peer(peer, name, sent_bytes)
            if sent_bytes:
                dev.note_outbound(ts, sent_bytes)
        services = self.service_of if sent_pkts and external else None
        observed = scope in self.sink.scopes
        if observed or services is not None:
            obs = Observation(ts, dev, sent_pkts, sent_bytes, is_orig, peer, ctx[3], ctx[2], name, scope, flow.vlan,
                              flow, upd.new, received, received_pkts)
            if services is not None:
                self._note_service(obs, services)
            if observed:
                self.sink.observe(obs)
        return ctx

    def _note_service(self, obs: Observation, services: Callable[[Observation], tuple[Service, str] | None]) -> None:
        """Traffic with a maker's cloud or P2P service is evidence of who made the device (docs/identity.md)."""
        found = services(obs)
        if found is not None:
            self.inventory.note_service(obs.device, found[0], "service", found[1])


def _camera_work(orig_scope: str, resp_scope: str | None, orig_pkts: int, resp_pkts: int) -> bool:
    """Whether either side of a flow update reaches Enricher._camera_side (_side's rule, both sides at once): a
    camera-side originator that sent, or a camera-side responder that sent or that a core host reached."""
    return bool((orig_scope == SCOPE_CAMERA and orig_pkts)
                or (resp_scope == SCOPE_CAMERA and (resp_pkts or (orig_scope == SCOPE_CORE and orig_pkts))))
