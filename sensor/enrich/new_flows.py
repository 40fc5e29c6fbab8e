"""A window's new flows settled together: what Enricher.new_flows does for a flood's (docs/reliability.md, "Floods
of forged sources").

A flood of new flows is, flow after flow, one of two kinds: a flow enrichment has nothing to do for (an inbound scan,
forged peers), or a forged camera-side source that only sent, which the new-device budget holds back. Either costs
the sensor at most a zero-config source sighting (LinkReader._note_source) and a held sighting. Here they are found
for a whole window at once from numpy columns (both addresses' scopes, the held sources' addresses), and
settled in runs: a run ends at the first flow that may change what the next ones are (one that reaches a device,
notes a router, confirms a network, or a source the budget lets in), which goes through Enricher._new_flow, the
per-flow path, as every flow of a small window does. Within a run the held sightings are counted in one step
(AdmissionBudget.holding/hold), the held sources looked up in one call (_Held.first_known) and the source sightings
noted in one call (LinkReader.note_sources_v4), each in the run's order; the two touch different state, so that is
the order the per-flow path has (tests/unit/test_enrich_new_flows.py holds the two equal). Each of those three
steps is a loop in C (sensor/_flows.c: holding, known_v4, sight) beside its reference (numpy's running sum, the
sources printed in numpy and Inventory.first_known, BoundedLRU.sight_each), chosen by compiled.held and
compiled.sightings.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

import numpy as np

from sensor import compiled
from sensor.enrich.scope import SCOPE_CAMERA, SCOPE_CORE, SCOPE_LINK_LOCAL, SCOPE_PRIVATE, SCOPE_PUBLIC, SCOPES
from sensor.flows import Flow, ip_text

if TYPE_CHECKING:
    from sensor.enrich.inventory import Inventory
    from sensor.enrich.stage import Enricher

MIN_FLOWS = 64   # fewer new flows than this in a window: one at a time (a camera's, not a flood's)
CHUNK = 16384    # flows classified at once at most (a change of scopes or routers classifies the rest again),
FIRST_CHUNK = 128   # and at first, or after such a change
COUNTED = 256    # held sources counted to guess how many of a chunk's are devices' addresses
CAMERA, PUBLIC, CORE, PRIVATE, LINK_LOCAL = (SCOPES.index(s) for s in (SCOPE_CAMERA, SCOPE_PUBLIC, SCOPE_CORE,
                                                                           SCOPE_PRIVATE, SCOPE_LINK_LOCAL))
# dotted-decimal IPv4 in numpy: each octet's digits and separator (a dot, or a comma after the last) in four bytes,
# zero-padded, as one 32-bit word
_DOTTED, _LAST = (np.frombuffer(b"".join((str(v) + end).encode().ljust(4, b"\0") for v in range(256)), np.uint32)
                  for end in (".", ","))


def settle(enricher: Enricher, flows: list[Flow]) -> None:
    """Enricher.new_flows of a window's flows: the same effects, in the same order."""
    window = _Window.of(flows)
    if window is None:
        for flow in flows:
            enricher._new_flow(flow)
        return
    at, runs, size = 0, None, max(1, FIRST_CHUNK // 2)
    while at < len(flows):
        state = (enricher.classifier.generation, len(enricher.inventory.router_macs))
        if runs is None or runs.state != state or at >= runs.stop:
            # classified ahead by as many as went by unchanged: a site learning its networks changes scopes often
            size = min(CHUNK, FIRST_CHUNK if runs is not None and at < runs.stop else 2 * size)
            runs = _Classes(enricher, window, at, min(len(flows), at + size), state)
            if 2 * runs.one_by_one > runs.stop - at:   # mostly a site's own flows: runs would be one flow long
                for flow in flows[at:runs.stop]:
                    enricher._new_flow(flow)
                at = runs.stop
                continue
        at = _run(enricher, flows, runs, at)


class _Window:
    """The columns of a window's new flows that say what each needs: both addresses, packets and MACs a side."""

    def __init__(self, orig_raw: np.ndarray, resp_raw: np.ndarray, orig_sent: np.ndarray, resp_sent: np.ndarray,
                 orig_mac: np.ndarray, resp_mac: np.ndarray, first: np.ndarray):
        self.orig_raw, self.resp_raw = orig_raw, resp_raw   # (n, 16) uint8
        self.orig_sent, self.resp_sent = orig_sent, resp_sent
        self.orig_mac, self.resp_mac = orig_mac, resp_mac
        self.first = first

    @classmethod
    def of(cls, flows: list[Flow]) -> _Window | None:
        ext = compiled.flows_extension
        raw = ext.columns(flows, Flow) if ext is not None and compiled.columns and hasattr(ext, "columns") else None
        if raw is None:   # not built, switched off, or a flow it refuses: the reference reads them
            return columns_python(flows)
        n = len(flows)
        orig_raw, resp_raw, orig_sent, resp_sent, orig_mac, resp_mac, first = raw
        return cls(np.frombuffer(orig_raw, np.uint8).reshape(n, 16), np.frombuffer(resp_raw, np.uint8).reshape(n, 16),
                   np.frombuffer(orig_sent, bool), np.frombuffer(resp_sent, bool), np.frombuffer(orig_mac, np.int64),
                   np.frombuffer(resp_mac, np.int64), np.frombuffer(first, np.float64))


def columns_python(flows: list[Flow]) -> _Window | None:
    """The reference of _flows.columns (sensor/_flows.c): a flow's attributes a list at a time. None when the keys
    are not the flow table's 40 bytes: the window then goes one flow at a time."""
    blob = b"".join([f.key for f in flows])
    if len(blob) != 40 * len(flows):
        return None
    keys = np.frombuffer(blob, np.uint8).reshape(len(flows), 40)
    orig_is_a = np.array([f.orig_is_a for f in flows], bool)[:, None]
    return _Window(np.where(orig_is_a, keys[:, 3:19], keys[:, 21:37]),
                   np.where(orig_is_a, keys[:, 21:37], keys[:, 3:19]),
                   np.array([f.orig_pkts for f in flows], np.int64) > 0,
                   np.array([f.resp_pkts for f in flows], np.int64) > 0,
                   np.array([f.orig_mac for f in flows], np.int64), np.array([f.resp_mac for f in flows], np.int64),
                   np.array([f.first for f in flows], np.float64))


class _Classes:
    """What each of the window's flows lo:hi needs, with scopes and routers as they are now (`state`): positions
    of the flows that go one at a time, of the held-back candidates (their source, MAC and time) and of the
    zero-config source sightings (their keys, times and addresses)."""

    def __init__(self, enricher: Enricher, w: _Window, lo: int, hi: int, state: tuple[int, int]):
        self.state, self.stop = state, hi
        classifier = enricher.classifier
        o_raw, r_raw = w.orig_raw[lo:hi], w.resp_raw[lo:hi]
        o_v4 = _is_v4(o_raw)
        o, r = _scopes(classifier, o_raw, o_v4), _scopes(classifier, r_raw)
        o_sent, r_sent, o_mac, r_mac = w.orig_sent[lo:hi], w.resp_sent[lo:hi], w.orig_mac[lo:hi], w.resp_mac[lo:hi]
        routers = np.fromiter(enricher.inventory.router_macs, np.int64)
        o_new_mac = (o_mac != 0) & ~np.isin(o_mac, routers)   # a MAC not already a router's
        r_new_mac = (r_mac != 0) & ~np.isin(r_mac, routers)
        r = np.where(r_sent | (o == CORE), r, -1)   # the responder's scope only where the per-flow path asks it
        camera_work = (((o == CAMERA) & o_sent)
                       | ((r == CAMERA) & (r_sent | ((o == CORE) & o_sent))))   # stage._camera_work
        held = (o == CAMERA) & o_sent & ~r_sent
        alone = (camera_work & ~held) | (~camera_work & (
            (o_sent & (o == PUBLIC) & o_new_mac) | (r_sent & (r == PUBLIC) & r_new_mac)))   # a router noted
        # an IPv6 link-local sender joins the device its MAC has (Enricher._link_local_senders); a forged one's MAC
        # has none
        if ((o == LINK_LOCAL) | (r == LINK_LOCAL)).any():
            owned = np.fromiter(enricher.inventory.macs_with_device(), np.int64)
            alone |= ((o == LINK_LOCAL) & o_sent & ~o_v4 & np.isin(o_mac, owned)) | (
                (r == LINK_LOCAL) & r_sent & ~_is_v4(r_raw) & np.isin(r_mac, owned))
        noted = np.zeros_like(held)
        if classifier.zero_config:   # LinkReader.note_flow: a v6 source may teach, a responder's sighting is rare
            alone |= (r_sent & r_new_mac) | (o_sent & o_new_mac & ~o_v4 & (o == PUBLIC))
            noted = o_sent & o_new_mac & o_v4 & ((o == PRIVATE) | ((o == CAMERA) & (not classifier.learned_v4)))
            noted &= ~alone
        self.alone = (np.flatnonzero(alone) + lo).tolist()
        at = np.flatnonzero(held)
        self.held = at + lo   # positions as arrays (searchsorted), not lists: a flood's run is thousands long
        self.lo, self.is_held = lo, held   # whether flow lo + i is a held-back candidate (_run's first test)
        first = w.first[lo:hi]
        self.held_sources = _Held(*_picked(at, hi - lo, o_raw, o_v4, o_mac))
        self.held_times = _picked(at, hi - lo, first)[0]
        # about how many go one at a time: those above and the held candidates that are devices' addresses now
        self.one_by_one = len(self.alone) + self.held_sources.count_known(enricher.inventory)
        at = np.flatnonzero(noted)
        self.noted = at + lo
        raw, macs, self.note_times, self.note_values = _picked(at, hi - lo, o_raw, o_mac, first, _words(o_raw)[:, 3])
        self.note_keys = _source_keys(raw, macs)


class _Held:
    """The held-back candidates' sources, asked whether a device holds them (or, IPv6, their MAC's box joins them)
    as Inventory.first_known answers: IPv4 ones by their text made and looked up in C (_flows.known_v4), without a
    str kept for each of a flood's sources, and not looked up at all when the inventory's marks say no address of
    theirs was ever a key (Inventory._address_is); the rest one by one. Where the C is not built or its switch is
    off, all of them printed in numpy (_texts) and asked Inventory.first_known, the reference."""

    def __init__(self, raw: np.ndarray, v4: np.ndarray, macs: np.ndarray):
        self.raw, self.v4, self.macs = raw, v4, macs
        ext = compiled.flows_extension
        in_c = ext is not None and compiled.held and hasattr(ext, "mark_v4")
        # the IPv4 words only for the C lookups; the reference asks by text
        self.words = _words(raw)[:, 3].astype(np.uint32) if in_c else np.empty(0, np.uint32)
        self.texts = None if in_c else _texts(raw, v4)

    def first_known(self, inventory: Inventory, start: int, stop: int) -> int:
        """Inventory.first_known of the sources start:stop."""
        if self.texts is None:
            ext = compiled.flows_extension
            while start < stop:
                start = ext.known_v4(inventory._by_address, inventory.v4_marks, self.words, self.v4, start, stop,
                                     False)
                if start == stop or self.v4[start] or inventory.first_known(
                        [ip_text(self.raw[start].tobytes())], [int(self.macs[start])], 0, 1) == 0:
                    return start
                start += 1   # an IPv6 source neither held nor joining its MAC's box
            return stop
        return inventory.first_known(self.texts, self.macs.tolist(), start, stop)

    def count_known(self, inventory: Inventory) -> int:
        """About how many of them are devices' addresses now: those of the first COUNTED, scaled (a guess that only
        chooses how the chunk is settled, for which counting a flood's every source cost as much as its lookup)."""
        known, n = inventory._by_address, min(len(self.v4), COUNTED)
        if self.texts is None:
            others = sum(ip_text(self.raw[at].tobytes()) in known for at in np.flatnonzero(~self.v4[:n]).tolist())
            found = others + compiled.flows_extension.known_v4(known, inventory.v4_marks, self.words, self.v4, 0, n,
                                                                 True)
        else:
            found = sum(text in known for text in self.texts[:n])
        return found * len(self.v4) // n if n else 0


def _run(enricher: Enricher, flows: list[Flow], c: _Classes, start: int) -> int:
    """Settle flows from `start` up to the first that goes one at a time, that one included; returns where the
    next run starts."""
    admission = enricher.inventory.admission
    if admission.tokens >= 1.0 and c.is_held[start - c.lo]:
        # a candidate the budget has a token for (a fresh sensor's start allowance: every source of a flood until
        # it is spent): the run below would be empty, holding nothing and noting nothing before it, so the flow
        # goes one at a time at once, without the run's searches (a few µs of each such new device)
        enricher._new_flow(flows[start])
        return start + 1
    k = bisect_left(c.alone, start)
    stop = c.alone[k] if k < len(c.alone) else c.stop
    if stop == start:   # a window of a site's own flows is mostly these: nothing to settle before it
        enricher._new_flow(flows[start])
        return start + 1
    first, end = c.held.searchsorted((start, stop)).tolist()
    # the budget first (one step): the sources are looked up only up to the first it would let in
    times = c.held_times[first:end]
    count, tokens = admission.holding(times)
    known = c.held_sources.first_known(enricher.inventory, first, first + count)
    if known < first + count:
        stop = int(c.held[known])   # a device holds it, or it joins its MAC's box
    elif count < end - first:
        stop = int(c.held[first + count])   # the budget lets this one in: a device is made
    lo, hi = c.noted.searchsorted((start, stop)).tolist()
    done = hi - lo
    if hi > lo:   # the run's zero-config source sightings, up to the first that confirms its network
        done = enricher.link.note_sources_v4(c.note_keys[lo:hi], c.note_times[lo:hi], c.note_values[lo:hi])
    if done < hi - lo:   # confirmed (noted, its network learnt): scopes may have changed from that flow on
        confirmed = int(c.noted[lo + done])
        admission.hold(times, tokens, int(c.held.searchsorted(confirmed)) - first)
        enricher._new_flow(flows[confirmed], noted=True)
        return confirmed + 1
    admission.hold(times, tokens, int(c.held.searchsorted(stop)) - first)
    if stop < c.stop:
        enricher._new_flow(flows[stop])
        return stop + 1
    return stop


def _picked(at: np.ndarray, n: int, *columns: np.ndarray) -> list[np.ndarray]:
    """column[at] of each column: the columns themselves when `at` is all their n rows (a flood's chunk, every
    flow of which is held and noted, is not copied)."""
    return list(columns) if len(at) == n else [column[at] for column in columns]


def _source_keys(raw: np.ndarray, macs: np.ndarray) -> np.ndarray:
    """link.candidate_key(b"s", MAC, the /24's three bytes) of each IPv4 source, as the rows of an (n, 12) uint8
    array: a flood's sightings go into the link's LRU without a Python object each."""
    keys = np.empty((len(raw), 12), np.uint8)
    keys[:, 0] = ord("s")
    keys[:, 1:9] = macs.astype(">i8").view(np.uint8).reshape(-1, 8)
    keys[:, 9:12] = raw[:, 12:15]
    return keys


def _scopes(classifier, raw: np.ndarray, v4: np.ndarray | None = None) -> np.ndarray:
    """Classifier.scope_of_raw of each 16-byte address, as indices into SCOPES."""
    if v4 is None:
        v4 = _is_v4(raw)
    if v4.all():   # a flood's: no mask to apply
        return classifier.scope_codes_v4(_words(raw)[:, 3].astype(np.int64))
    codes = np.empty(len(raw), np.int8)
    codes[v4] = classifier.scope_codes_v4(_words(raw)[v4, 3].astype(np.int64))
    for at in np.flatnonzero(~v4).tolist():
        codes[at] = SCOPES.index(classifier.scope_of_raw(raw[at].tobytes()))
    return codes


def _words(raw: np.ndarray) -> np.ndarray:
    """16-byte addresses as four big-endian 32-bit words each: an IPv4 address is the last (IPv4-mapped)."""
    return np.ascontiguousarray(raw).view(">u4")


def _is_v4(raw: np.ndarray) -> np.ndarray:
    """Which 16-byte addresses are IPv4-mapped (::ffff:a.b.c.d), as Flow keys hold IPv4."""
    words = _words(raw)
    return (words[:, 0] == 0) & (words[:, 1] == 0) & (words[:, 2] == 0xFFFF)


def _texts(raw: np.ndarray, v4: np.ndarray) -> list[str]:
    """Flow.orig_text of each 16-byte address: IPv4 printed in numpy (a flood's sources are seen once each, and
    formatting them one by one cost more than all the rest of a held flow), IPv6 by ip_text."""
    octets = raw[:, 12:16].astype(np.intp)
    cells = np.empty((len(raw), 4), np.uint32)
    cells[:, :3] = _DOTTED.take(octets[:, :3])
    cells[:, 3] = _LAST.take(octets[:, 3])
    flat = cells.view(np.uint8).reshape(-1)   # each address's text then its comma, zeros between
    texts = flat[flat != 0].tobytes().decode("ascii").split(",")[:-1]
    for at in np.flatnonzero(~v4).tolist():
        texts[at] = ip_text(raw[at].tobytes())
    return texts
