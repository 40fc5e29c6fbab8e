"""Flows stage: bidirectional flows keyed by VLAN, protocol, address pair and port pair.

A batch is grouped by canonical key in one pass (compiled, or numpy's np.unique as the reference), so the Python
work per batch is one step per distinct flow, not per packet. Expiry runs on whatever clock the caller passes:
packet time in replay, wall-clock time live.
"""

from __future__ import annotations

import ipaddress
from _socket import AF_INET, inet_ntop  # not socket: its enums and selectors cost start-up (issue 16)
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast

import numpy as np

from sensor import compiled
from sensor.config import FlowSettings
from sensor.decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Decoded
from sensor.dissect import ipv6_text

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmp"}
ICMP_REPLY_TYPES = (0, 14, 16, 18, 129)  # echo/timestamp/info/mask replies (v4), echo reply (v6)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


@lru_cache(maxsize=1 << 16)
def ip_from16(raw: bytes) -> IPAddress:
    if raw[:12] == _V4_MAPPED_PREFIX:
        return ipaddress.IPv4Address(raw[12:])
    return ipaddress.IPv6Address(raw)


@lru_cache(maxsize=1 << 16)
def ip_text(raw: bytes) -> str:
    """The printed form of a 16-byte address: the hot destinations are formatted once, not once per window. IPv4
    straight from its bytes (ipaddress's object and formatting cost ~5 µs, and floods bring addresses seen once)."""
    if raw[:12] == _V4_MAPPED_PREFIX:
        return inet_ntop(AF_INET, raw[12:])
    return ipv6_text(raw)


# A site has a few hundred MACs and every flow names two, as do its ports: one int object each, shared by all the
# flows that carry it, instead of one per flow (56 bytes a side, a tenth of a flow).
_PORTS = tuple(range(1 << 16))
_MACS: dict[int, int] = {}
MAX_SHARED_MACS = 1 << 16


def _shared_mac(mac: int) -> int:
    shared = _MACS.get(mac)
    if shared is None:
        if len(_MACS) >= MAX_SHARED_MACS:
            _MACS.clear()   # forged MACs: bounded, and the site's own come straight back
        _MACS[mac] = shared = mac
    return shared


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


class Flow:
    __slots__ = ("key", "vlan", "proto", "orig_port", "resp_port", "first", "last",
                 "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes", "orig_payload", "resp_payload",
                 "orig_flags", "resp_flags", "orig_mac", "resp_mac", "name", "closed", "context", "orig_is_a",
                 "orig_tags", "resp_tags")

    def __init__(self, key: bytes, vlan: int, proto: int, orig_port: int, resp_port: int, first: float):
        self.key = key
        self.vlan = vlan
        self.proto = proto
        self.orig_port = orig_port
        self.resp_port = resp_port
        self.first = first
        self.last = first
        self.orig_pkts = self.resp_pkts = 0
        self.orig_bytes = self.resp_bytes = 0
        self.orig_payload = self.resp_payload = 0
        self.orig_flags = self.resp_flags = 0
        self.orig_mac = self.resp_mac = 0
        self.name: str | None = None   # SNI / HTTP Host seen inside the flow
        self.closed = False
        self.context: tuple | None = None   # per-flow state owned by the enrich/detect stages
        self.orig_is_a = True         # whether the originator is the canonical key's A side
        self.orig_tags = self.resp_tags = 0  # payload-profile bits (sensor.tags TAG_*) seen from each side

    # Addresses live in the canonical key (A at 3:19, B at 21:37); ipaddress objects are made only when asked for,
    # so a flood of flows nobody looks at never pays for them.
    @property
    def orig_raw(self) -> bytes:
        return self.key[3:19] if self.orig_is_a else self.key[21:37]

    @property
    def resp_raw(self) -> bytes:
        return self.key[21:37] if self.orig_is_a else self.key[3:19]

    @property
    def orig_ip(self) -> IPAddress:
        return ip_from16(self.orig_raw)

    @property
    def resp_ip(self) -> IPAddress:
        return ip_from16(self.resp_raw)

    @property
    def orig_text(self) -> str:
        return ip_text(self.orig_raw)

    @property
    def resp_text(self) -> str:
        return ip_text(self.resp_raw)

    @property
    def proto_name(self) -> str:
        return proto_name(self.proto)

    @property
    def state(self) -> str:
        """Zeek's connection state for TCP, decided in the order of Zeek's conn_state() from the flags each side
        ever sent (camwatch keeps their union, not their order: README, Flow records); '-' for other protocols."""
        if self.proto != PROTO_TCP:
            return "-"
        o, r = self.orig_flags, self.resp_flags
        handshake = bool(o & SYN and r & SYN and r & ACK)
        # Zeek's "inactive" endpoint: it sent nothing, or only midstream segments (no SYN, FIN or RST)
        o_quiet, r_quiet = not o & (SYN | FIN | RST), not r & (SYN | FIN | RST)
        if r & RST:
            if o & RST:
                return "REJ" if not (self.orig_payload or self.resp_payload) else "RSTR"
            if o & SYN and not handshake and not o & FIN:
                return "REJ"
            return "RSTRH" if o_quiet else "RSTR"
        if o & RST:
            if r_quiet:
                return "RSTOS0" if o & SYN else "OTH"
            return "RSTO"
        if o & FIN and r & FIN:
            return "SF"
        if o & FIN:
            return "SH" if r_quiet else "S2"
        if r & FIN:
            return "SHR" if o_quiet else "S3"
        if o & SYN and not r:
            return "S0"
        return "S1" if handshake else "OTH"

    def as_dict(self) -> dict:
        return {
            "vlan": self.vlan, "proto": self.proto_name,
            "orig_ip": str(self.orig_ip), "orig_port": self.orig_port,
            "resp_ip": str(self.resp_ip), "resp_port": self.resp_port,
            "first": self.first, "last": self.last,
            "orig_pkts": self.orig_pkts, "resp_pkts": self.resp_pkts,
            "orig_bytes": self.orig_bytes, "resp_bytes": self.resp_bytes,
            "state": self.state, "name": self.name,
        }


def _lazy_ports() -> None:
    """With the compiled table, a new flow's ports are read from its key when first asked (sensor/_flows.c,
    lazy_port): a flood's flows are mostly never asked, and setting them cost two cache misses a flow. The slots stay,
    and keep the value once read or set; the Python path (the reference) sets them in __init__ as before."""
    ext = compiled.flows_extension
    if ext is not None and hasattr(ext, "lazy_port"):   # an extension built before lazy_port: ports set eagerly
        for name, orig in (("orig_port", True), ("resp_port", False)):
            setattr(Flow, name, ext.lazy_port(Flow, name, _PORTS, orig))


_lazy_ports()


@dataclass(slots=True, eq=False, repr=False)
class FlowUpdate:
    """What some packets added to one flow; `ts` is the time of the first of them."""

    flow: Flow
    new: bool
    ts: float
    orig_pkts: int
    resp_pkts: int
    orig_bytes: int
    resp_bytes: int


def new_update(flow: Flow) -> FlowUpdate:
    """A new flow's first update, from the flow: everything it holds came from that update's packets."""
    return FlowUpdate(flow, True, flow.first, flow.orig_pkts, flow.resp_pkts, flow.orig_bytes, flow.resp_bytes)


def defer_updates(updates: list[FlowUpdate], pending: dict[Flow, FlowUpdate], waiting: dict[Flow, None]) -> None:
    """Known flows' updates added to what each flow carried so far in the current second (`pending`, in the order
    the flows first came); none for a flow still `waiting` to be settled as new, which holds these packets already
    (its settling reads the flow whole). The reference of the compiled deferral (FlowTable.update_deferred)."""
    for upd in updates:
        if upd.flow in waiting:
            continue
        acc = pending.get(upd.flow)
        if acc is None:
            pending[upd.flow] = upd
        else:
            acc.orig_pkts += upd.orig_pkts
            acc.resp_pkts += upd.resp_pkts
            acc.orig_bytes += upd.orig_bytes
            acc.resp_bytes += upd.resp_bytes


# A second's pending updates and the flows waiting to be settled as new (FlowTable.update_deferred), or () for none
Deferred = tuple[dict[Flow, FlowUpdate], dict[Flow, None]] | tuple[()]


def flow_keys(dec: Decoded, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical 40-byte keys for the given rows, and whether each packet's source is the key's A side."""
    n = len(rows)
    proto = dec.proto[rows]
    portless = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6) | dec.fragment[rows]
    sport = np.where(portless, 0, dec.sport[rows])
    dport = np.where(portless, 0, dec.dport[rows])
    src = np.empty((n, 18), dtype=np.uint8)
    dst = np.empty((n, 18), dtype=np.uint8)
    src[:, :16] = dec.src[rows]
    dst[:, :16] = dec.dst[rows]
    src[:, 16], src[:, 17] = sport >> 8, sport & 0xFF
    dst[:, 16], dst[:, 17] = dport >> 8, dport & 0xFF
    differs = src != dst
    first_diff = differs.argmax(axis=1)
    r = np.arange(n)
    a_is_src = src[r, first_diff] <= dst[r, first_diff]
    keys = np.zeros((n, 40), dtype=np.uint8)
    vlan = dec.vlan[rows]
    keys[:, 0], keys[:, 1] = vlan >> 8, vlan & 0xFF
    keys[:, 2] = proto
    keys[:, 3:21] = np.where(a_is_src[:, None], src, dst)
    keys[:, 21:39] = np.where(a_is_src[:, None], dst, src)
    return keys, a_is_src


def flow_key(dec: Decoded, row: int) -> tuple[bytes, bool]:
    """flow_keys of one row: its key as bytes, and whether the sender is the key's A side. For the readers that look
    up a handful of rows' flows a window (a name, a banner's responder), where flow_keys' twenty numpy calls cost
    ~60 us whatever the count (tests/unit/test_flows.py holds the two equal)."""
    proto = int(dec.proto[row])
    if proto == PROTO_ICMP or proto == PROTO_ICMPV6 or dec.fragment[row]:
        src, dst = dec.src[row].tobytes() + b"\0\0", dec.dst[row].tobytes() + b"\0\0"
    else:
        src = dec.src[row].tobytes() + int(dec.sport[row]).to_bytes(2, "big")
        dst = dec.dst[row].tobytes() + int(dec.dport[row]).to_bytes(2, "big")
    a_is_src = src <= dst   # the first byte that differs decides; equal ends, the sender is A
    return (int(dec.vlan[row]).to_bytes(2, "big") + bytes((proto,)) + (src + dst if a_is_src else dst + src)
            + b"\0", a_is_src)


class Groups(NamedTuple):
    """One batch's packets summed per flow key, groups in the order of their first packet; a key reopened by a SYN
    (_parts) is a group per part. Per-direction columns: 0 is A->B (the key's first address sends), 1 is B->A."""

    keys: np.ndarray       # (u, 40) uint8
    first: np.ndarray      # int64, position in `rows` of each group's first packet
    first_dir: np.ndarray  # uint8, that packet's direction
    pkts: np.ndarray       # (u, 2) int64
    bytes: np.ndarray      # (u, 2) int64, on the wire
    payload: np.ndarray    # (u, 2) int64, transport payload
    last: np.ndarray       # float64, latest packet time
    flags: np.ndarray      # (u, 2) uint8, OR of TCP flags
    tags: np.ndarray       # (u, 2) uint64, OR of payload-profile tags
    macs: np.ndarray       # (u, 2) int64, source MAC of the direction's last packet that has one, else 0


def _parts(inv: np.ndarray, flags: np.ndarray) -> np.ndarray | None:
    """Each packet's part of its key's packets (`inv`: its key's number), numbered over all keys: a key's packets
    are one part but for a SYN after, in its key, a packet other than a plain SYN, which opens the next part
    (sensor/_walk.c, group, says why). None when no packet does."""
    syn = (flags & SYN) != 0
    if not syn[1:].any():
        return None
    by_key = np.argsort(inv, kind="stable")   # each key's packets together, in their order
    k, f = inv[by_key], flags[by_key]
    opens = np.empty(len(inv), dtype=bool)
    opens[0] = True
    opens[1:] = (k[1:] != k[:-1]) | (syn[by_key[1:]] & ((f[:-1] & (SYN | RST | FIN)) != SYN))
    if np.count_nonzero(opens) == k[-1] + 1:
        return None
    part = np.empty(len(inv), dtype=np.int64)
    part[by_key] = np.cumsum(opens) - 1
    return part


def _first_order(inv: np.ndarray, first_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups renumbered in the order of their first packets: (each packet's group, each group's first packet)."""
    order = np.argsort(first_idx, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inv], first_idx[order]


def group_numpy(dec: Decoded, rows: np.ndarray, tags: np.ndarray | None) -> Groups:
    """The reference grouping, in numpy; `group` gives the same arrays from the compiled helper."""
    keys, a_is_src = flow_keys(dec, rows)
    kv = np.ascontiguousarray(keys).view(np.dtype((np.void, 40))).ravel()
    _, first_idx, inv = np.unique(kv, return_index=True, return_inverse=True)
    # np.unique sorts by key; groups are wanted in the order their first packets came
    inv, first_idx = _first_order(inv, first_idx)
    part = _parts(inv, dec.tcp_flags[rows])
    if part is not None:   # a key split where a SYN may reopen it: each part a group
        _, first_idx, inv = np.unique(part, return_index=True, return_inverse=True)
        inv, first_idx = _first_order(inv, first_idx)
    u = len(first_idx)
    direction = (~a_is_src).astype(np.int64)
    g2 = inv * 2 + direction
    b = dec.batch
    pkts = np.bincount(g2, minlength=2 * u).reshape(u, 2).astype(np.int64)
    nbytes = np.bincount(g2, weights=b.wirelen[rows], minlength=2 * u).reshape(u, 2).astype(np.int64)
    payload = np.bincount(g2, weights=dec.payload_len[rows], minlength=2 * u).reshape(u, 2).astype(np.int64)
    last = np.full(u, -np.inf)
    np.maximum.at(last, inv, b.ts[rows])
    flags = np.zeros(2 * u, dtype=np.uint8)
    np.bitwise_or.at(flags, g2, dec.tcp_flags[rows])
    side_tags = np.zeros(2 * u, dtype=np.uint64)
    if tags is not None:
        np.bitwise_or.at(side_tags, g2, tags)
    macs = np.zeros(2 * u, dtype=np.int64)
    src_mac = dec.src_mac[rows]
    framed = src_mac != 0   # a frame without a link layer leaves the last MAC seen, as it does across batches
    macs[g2[framed]] = src_mac[framed]   # repeated indices: the last packet's value stays
    return Groups(np.ascontiguousarray(keys[first_idx]), first_idx.astype(np.int64),
                  direction[first_idx].astype(np.uint8), pkts, nbytes, payload, last, flags.reshape(u, 2),
                  side_tags.reshape(u, 2), macs.reshape(u, 2))


def group(dec: Decoded, rows: np.ndarray, tags: np.ndarray | None) -> Groups:
    if compiled.extension is None or not compiled.group:
        return group_numpy(dec, rows, tags)
    b = dec.batch
    c = np.ascontiguousarray
    (keys, first, first_dir, pkts, nbytes, payload, last, flags, side_tags, macs) = compiled.extension.group(
        c(dec.vlan, np.uint16), c(dec.proto, np.uint8), c(dec.fragment, np.uint8), c(dec.src, np.uint8),
        c(dec.dst, np.uint8), c(dec.sport, np.int64), c(dec.dport, np.int64), c(dec.tcp_flags, np.uint8),
        c(dec.payload_len, np.int64), c(dec.src_mac, np.int64), c(b.wirelen, np.int64), c(b.ts, np.float64),
        b"" if tags is None else c(tags, np.uint64), c(rows, np.int64))
    u = len(first) // 8
    return Groups(np.frombuffer(keys, np.uint8).reshape(u, 40), np.frombuffer(first, np.int64),
                  np.frombuffer(first_dir, np.uint8), np.frombuffer(pkts, np.int64).reshape(u, 2),
                  np.frombuffer(nbytes, np.int64).reshape(u, 2), np.frombuffer(payload, np.int64).reshape(u, 2),
                  np.frombuffer(last, np.float64), np.frombuffer(flags, np.uint8).reshape(u, 2),
                  np.frombuffer(side_tags, np.uint64).reshape(u, 2), np.frombuffer(macs, np.int64).reshape(u, 2))


class NewFlows(NamedTuple):
    """How each group's flow starts if it is new, from the group's first packet: who originates and the ports."""

    orig_is_a: np.ndarray   # uint8: the originator is the canonical key's A side
    orig_port: np.ndarray   # int64
    resp_port: np.ndarray   # int64
    vlan: np.ndarray        # int64
    first_ts: np.ndarray    # float64, the group's first packet's time (a new flow's `first`, each update's `ts`)


def orient(dec: Decoded, first_row: np.ndarray, first_dir: np.ndarray) -> NewFlows:
    """Per group, the originator and ports a new flow gets (docs/architecture.md, flow orientation): the sender of
    the first packet, unless that packet is a SYN-ACK, a TCP segment without SYN from a low port to a high one, a
    UDP datagram from a low port to a high one, or an ICMP reply. Whole columns at once; used for every group, new
    or not, because a batch's groups are mostly new when it matters (a flood)."""
    if len(first_row) <= FEW_GROUPS:
        return _orient_few(dec, first_row, first_dir)
    proto = dec.proto[first_row]
    sport = dec.sport[first_row]   # fancy indexing copies: the int64 columns need no astype
    dport = dec.dport[first_row]
    flags = dec.tcp_flags[first_row]
    low_to_high = (sport < 1024) & (dport >= 1024)
    # A window of camera traffic is a few groups: each whole-column step costs about a microsecond whatever its
    # length, so the steps are as few as the rule allows, and ICMP's only when the window has ICMP.
    swap = (((proto == PROTO_TCP) & (((flags & (SYN | ACK)) == (SYN | ACK)) | (((flags & SYN) == 0) & low_to_high)))
            | ((proto == PROTO_UDP) & low_to_high))
    portless = dec.fragment[first_row]
    icmp = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
    if icmp.any():
        swap |= icmp & np.isin(sport, ICMP_REPLY_TYPES)
        portless = portless | icmp
    if portless.any():
        sport = np.where(portless, 0, sport)
        dport = np.where(portless, 0, dport)
    return NewFlows(((first_dir == 0) != swap).astype(np.uint8), np.where(swap, dport, sport),
                    np.where(swap, sport, dport), dec.vlan[first_row].astype(np.int64), dec.batch.ts[first_row])


FEW_GROUPS = 8   # a window of camera traffic: a few flows a second, as a camera's control traffic has


def _orient_few(dec: Decoded, first_row: np.ndarray, first_dir: np.ndarray) -> NewFlows:
    """orient one group at a time, for a window of a few: each whole-column step of orient costs about a
    microsecond however short the column, and a second of ordinary camera traffic has a few flows (over a long
    capture of few packets a second, orient's steps cost more than all else the flows do). The same rule."""
    is_a, orig_ports, resp_ports = [], [], []
    for r, d in zip(first_row.tolist(), first_dir.tolist(), strict=True):
        proto, sport, dport = int(dec.proto[r]), int(dec.sport[r]), int(dec.dport[r])
        low_to_high = sport < 1024 and dport >= 1024
        portless = bool(dec.fragment[r])
        if proto == PROTO_TCP:
            flags = int(dec.tcp_flags[r])
            swap = (flags & (SYN | ACK)) == (SYN | ACK) or (not flags & SYN and low_to_high)
        elif proto == PROTO_UDP:
            swap = low_to_high
        elif proto == PROTO_ICMP or proto == PROTO_ICMPV6:
            swap, portless = sport in ICMP_REPLY_TYPES, True
        else:
            swap = False
        if portless:
            sport = dport = 0
        is_a.append((d == 0) != swap)
        orig_ports.append(dport if swap else sport)
        resp_ports.append(sport if swap else dport)
    return NewFlows(np.array(is_a, np.uint8), np.array(orig_ports, np.int64), np.array(resp_ports, np.int64),
                    dec.vlan[first_row].astype(np.int64), dec.batch.ts[first_row])


def _add(flow: Flow, proto: int, last: float, sums: tuple, has_tags: bool) -> None:
    """One group's counters, flags, tags and MACs into its flow, oriented to originator/responder (column 0 of
    the sums is A->B); then its last time and whether it is now closed."""
    g_pkts, g_bytes, g_payload, g_flags, g_tags, g_macs = sums
    o = 0 if flow.orig_is_a else 1
    r = 1 - o
    flow.orig_pkts += g_pkts[o]
    flow.resp_pkts += g_pkts[r]
    flow.orig_bytes += g_bytes[o]
    flow.resp_bytes += g_bytes[r]
    flow.orig_payload += g_payload[o]
    flow.resp_payload += g_payload[r]
    flow.orig_flags |= g_flags[o]
    flow.resp_flags |= g_flags[r]
    if has_tags:
        flow.orig_tags |= g_tags[o]
        flow.resp_tags |= g_tags[r]
    if g_macs[o] and g_macs[o] != flow.orig_mac:
        flow.orig_mac = _shared_mac(g_macs[o])
    if g_macs[r] and g_macs[r] != flow.resp_mac:
        flow.resp_mac = _shared_mac(g_macs[r])
    if last > flow.last:
        flow.last = last
    if proto == PROTO_TCP and (flow.orig_flags | flow.resp_flags) & RST or (
            flow.orig_flags & FIN and flow.resp_flags & FIN):
        flow.closed = True


_TYPES = (Flow, FlowUpdate, _PORTS, _MACS, _shared_mac)   # what _flows.apply makes flows and updates with
_ALL_BITS = (1 << 64) - 1   # _walk.group's hash mask: every bit (the tests clear them to make keys collide)


def _compiled_window() -> bool:
    """A window's groups made and applied by the compiled calls (FlowTable._group_windows, _apply_window)."""
    return compiled.extension is not None and compiled.group and compiled.flows_extension is not None \
        and compiled.table


class _Grouped(NamedTuple):
    """A batch's windows grouped and oriented at once: _flows.apply's columns for all their groups, and where each
    window's groups start (the groups' number last)."""

    columns: tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
    offsets: list[int]


def _new_table() -> OrderedDict[bytes, Flow]:
    """One of the flow table's LRU tables: the compiled Lru (sensor/_flows.c) when built and the table step is on,
    else an OrderedDict, its reference. An Lru has the OrderedDict methods FlowTable uses (len, in, [], get, pop,
    popitem, move_to_end, clear, keys/values/items oldest first), with the key hashed by a keyed SipHash and apply
    and evict reaching its entries directly (docs/architecture.md, flows); tests/unit/test_flows_table.py holds
    the two to each other."""
    ext = compiled.flows_extension
    if ext is not None and compiled.table and hasattr(ext, "Lru"):   # an extension built before Lru: OrderedDict
        return cast("OrderedDict[bytes, Flow]", ext.Lru())
    return OrderedDict()


class FlowTable:
    """`on_end` is called with every flow that leaves the table, whatever the reason."""

    def __init__(self, settings: FlowSettings, on_end: Callable[[Flow, str], None] | None = None):
        self.settings = settings
        self.on_end = on_end
        # One LRU-ordered table per idle timeout, so an expiry sweep stops at the first flow still alive.
        self._tcp = _new_table()
        self._closed = _new_table()
        self._udp = _new_table()
        self._other = _new_table()
        self._timeouts = (
            (self._closed, settings.tcp_closed_timeout),
            (self._tcp, settings.tcp_idle_timeout),
            (self._udp, settings.udp_idle_timeout),
            (self._other, settings.icmp_idle_timeout),
        )
        self.created = 0
        self.expired: dict[str, int] = {"idle": 0, "active": 0, "evicted": 0, "end": 0}
        self._last_active_sweep = float("-inf")
        self._tables = (self._tcp, self._closed, self._udp, self._other)   # _flows.apply's order
        # _flows.expire's argument, when the tables are Lrus (else expire's own loop, the reference, reads them)
        ext = compiled.flows_extension
        self._expiry: tuple | None = (
            (Flow, *(part for pair in self._timeouts for part in pair))
            if ext is not None and hasattr(ext, "expire") and all(isinstance(t, ext.Lru) for t in self._tables)
            else None)
        self._columns_of: Decoded | None = None   # the batch whose columns _columns holds (_batch_columns)
        self._columns: tuple[memoryview, ...] = ()

    def __len__(self) -> int:
        return len(self._tcp) + len(self._closed) + len(self._udp) + len(self._other)

    def flows(self):
        for table, _ in self._timeouts:
            yield from table.values()

    def _table(self, proto: int) -> OrderedDict[bytes, Flow]:
        if proto == PROTO_TCP:
            return self._tcp
        if proto == PROTO_UDP:
            return self._udp
        return self._other

    def get(self, key: bytes, proto: int) -> Flow | None:
        flow = self._table(proto).get(key)
        if flow is None and proto == PROTO_TCP:
            flow = self._closed.get(key)
        return flow

    def _end(self, flows: list[Flow], reason: str) -> list[Flow]:
        self.expired[reason] += len(flows)
        if self.on_end is not None:
            for flow in flows:
                self.on_end(flow, reason)
        return flows

    def update(self, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None = None) -> list[FlowUpdate]:
        """Add the packets `rows` of a decoded batch; returns what the batch added to each flow.

        `tags` (uint64 per row, optional) are payload-profile bits OR-ed into the sending side of each flow."""
        return self._update(dec, rows, tags, False)[1]

    def update_apart(self, dec: Decoded, rows: np.ndarray,
                     tags: np.ndarray | None = None) -> tuple[list[Flow], list[FlowUpdate]]:
        """update, with the batch's new flows apart: (the new flows, the updates of the others). A new flow's
        update is what the flow holds (new_update makes it when it is wanted), so a flood's new flows cost no
        update object each; it stands for all of update's updates of that flow (a key reopened by a SYN within
        the batch is more than one group)."""
        return self._update(dec, rows, tags, True)

    def update_deferred(self, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None,
                        pending: dict[Flow, FlowUpdate], waiting: dict[Flow, None]) -> list[Flow]:
        """update_apart, the known flows' updates then added to `pending` as defer_updates does; returns the new
        flows. Compiled, a known flow's group goes straight into its pending update: a second of video from a
        thousand cameras is some 60,000 groups, each an update object made, listed and summed in Python before."""
        return self._update(dec, rows, tags, True, (pending, waiting))[0]

    def _update(self, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None, apart: bool,
                deferred: Deferred = ()) -> tuple[list[Flow], list[FlowUpdate]]:
        """(new flows, updates) of update_apart, or of update (apart False: no new flows); with `deferred` (pending,
        waiting) the updates go there instead (update_deferred), in the compiled window step or by defer_updates."""
        if len(rows) == 0:
            return [], []
        if _compiled_window():
            return self._apply_window(self._group_windows(dec, rows, tags, [0, len(rows)]), 0, apart, deferred)
        grp = group(dec, rows, tags)
        new = orient(dec, rows[grp.first], grp.first_dir)
        fresh: list[Flow] = []
        if compiled.flows_extension is not None and compiled.table:
            c = np.ascontiguousarray
            fresh, updates = self._applied(compiled.flows_extension.apply(
                self._tables, self._end, _TYPES, c(grp.keys), c(grp.first_dir, np.uint8),
                c(new.orig_is_a), c(new.orig_port), c(new.resp_port), c(new.vlan), c(new.first_ts), c(grp.pkts),
                c(grp.bytes), c(grp.payload), c(grp.flags), b"" if tags is None else c(grp.tags), c(grp.macs),
                c(grp.last), apart), apart)
        else:
            updates = self._apply_python(grp, new, tags is not None)
            if apart:
                # a new flow stands for all the batch added to it, a key reopened by a SYN (more than one group)
                # included: no update of its own
                fresh = [upd.flow for upd in updates if upd.new]
                made = set(fresh)
                updates = [upd for upd in updates if upd.flow not in made]
        self._evict()
        if deferred:
            defer_updates(updates, *deferred)
            updates = []
        return fresh, updates

    def _batch_columns(self, dec: Decoded) -> tuple[memoryview, ...]:
        """The columns the compiled group and orient read, contiguous and of their C types, once per decoded batch
        (a batch's columns do not change once decoded): a batch is cut into one-second windows, and camera control
        traffic is ~10 packets a window, where a dozen ascontiguousarray calls cost more than the grouping."""
        if dec is not self._columns_of:
            c, b = np.ascontiguousarray, dec.batch
            # decode's fragment column is bool: its bytes, without a copy
            frag = dec.fragment.view(np.uint8) if dec.fragment.dtype == np.bool_ else dec.fragment
            columns = (c(dec.vlan, np.uint16), c(dec.proto, np.uint8), c(frag, np.uint8), c(dec.src, np.uint8),
                       c(dec.dst, np.uint8), c(dec.sport, np.int64), c(dec.dport, np.int64), c(dec.tcp_flags, np.uint8),
                       c(dec.payload_len, np.int64), c(dec.src_mac, np.int64), c(b.wirelen, np.int64),
                       c(b.ts, np.float64))
            # as flat byte views: the compiled calls take a memoryview's buffer for a third of a numpy array's cost
            # (an empty column cannot be cast, and has no bytes)
            self._columns = tuple(col.data.cast("B") if col.size else memoryview(b"") for col in columns)
            self._columns_of = dec
        return self._columns

    def windows(self, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None, bounds: np.ndarray) -> Windows:
        """The rows of a decoded batch cut into windows (window k: rows[bounds[k]:bounds[k + 1]]), for
        Windows.update_apart a window at a time."""
        return Windows(self, dec, rows, tags, bounds)

    def _group_windows(self, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None,
                       bounds: np.ndarray | list[int]) -> _Grouped:
        """Every window's groups and their orientation, in two compiled calls for all the windows: the same groups as
        group + orient of each window alone (tests/unit/test_flows_window.py holds them equal), without the numpy
        steps whose fixed cost, paid per one-second window, was most of the flow stage on sparse traffic."""
        vlan, proto, frag, src, dst, sport, dport, tcp_flags, payload_len, src_mac, wirelen, ts = \
            self._columns if dec is self._columns_of else self._batch_columns(dec)
        rows = np.ascontiguousarray(rows, np.int64)
        side = b"" if tags is None else np.ascontiguousarray(tags, np.uint64)
        keys, first, first_dir, pkts, nbytes, payload, last, flags, side_tags, macs, offsets = compiled.extension.group(
            vlan, proto, frag, src, dst, sport, dport, tcp_flags, payload_len, src_mac, wirelen, ts, side, rows,
            _ALL_BITS, np.asarray(bounds, np.int64))
        orig_is_a, orig_port, resp_port, new_vlan, first_ts = compiled.flows_extension.orient(
            proto, frag, sport, dport, tcp_flags, vlan, ts, rows, first, first_dir)
        return _Grouped((keys, first_dir, orig_is_a, orig_port, resp_port, new_vlan, first_ts, pkts, nbytes, payload,
                         flags, b"" if tags is None else side_tags, macs, last),
                        np.frombuffer(offsets, np.int64).tolist())

    def _apply_window(self, grouped: _Grouped, k: int, apart: bool,
                      deferred: Deferred = ()) -> tuple[list[Flow], list[FlowUpdate]]:
        """Window k's groups into the table: one _flows.apply (deferred: update_deferred's pending and waiting)."""
        offsets = grouped.offsets
        fresh, updates = self._applied(compiled.flows_extension.apply(
            self._tables, self._end, _TYPES, *grouped.columns, apart, offsets[k], offsets[k + 1], *deferred), apart)
        # _evict's test inlined: asked once a window, and a table past max_flows is rare
        if len(self._tcp) + len(self._closed) + len(self._udp) + len(self._other) > self.settings.max_flows:
            self._evict()
        return fresh, updates

    def _applied(self, out: tuple, apart: bool) -> tuple[list[Flow], list[FlowUpdate]]:
        """_flows.apply's answer as (new flows, updates), the flows it made counted."""
        if apart:
            fresh, updates, made = out
        else:
            fresh, (updates, made) = [], out
        self.created += made
        return fresh, updates

    def _apply_python(self, grp: Groups, new: NewFlows, has_tags: bool) -> list[FlowUpdate]:
        """The reference of the compiled step (sensor/_flows.c): each group finds or makes its flow, adds to it
        and goes back to the recent end of its table."""
        # Python values once per column: indexing numpy scalars per group would cost more than the grouping.
        key_bytes = grp.keys.tobytes()
        first_dir, last, first_ts = grp.first_dir.tolist(), grp.last.tolist(), new.first_ts.tolist()
        pkts, nbytes = grp.pkts.tolist(), grp.bytes.tolist()
        starts = list(zip(new.orig_is_a.tolist(), new.orig_port.tolist(), new.resp_port.tolist(),
                          new.vlan.tolist(), first_ts, strict=True))
        sums = list(zip(pkts, nbytes, grp.payload.tolist(), grp.flags.tolist(), grp.tags.tolist(),
                        grp.macs.tolist(), strict=True))
        updates: list[FlowUpdate] = []
        for g in range(len(first_dir)):
            key = key_bytes[40 * g:40 * g + 40]
            proto = key[2]
            table = self._table(proto)
            flow = table.pop(key, None)
            if flow is None and proto == PROTO_TCP:
                flow = self._closed.pop(key, None)
                # a group holds a SYN only if it opens with one (group: a SYN after anything but a plain SYN
                # opens a group), so the port pair is reused by the same SYN however the batches were cut
                if flow is not None and sums[g][3][first_dir[g]] & SYN:
                    self._end([flow], "idle")   # the port pair was reused for a new connection
                    flow = None
            is_new = flow is None
            if flow is None:
                orig_is_a, orig_port, resp_port, vlan, first = starts[g]
                flow = Flow(key, vlan, proto, _PORTS[orig_port], _PORTS[resp_port], first)
                flow.orig_is_a = bool(orig_is_a)
                self.created += 1
            _add(flow, proto, last[g], sums[g], has_tags)
            (self._closed if flow.closed else table)[key] = flow
            # column 0 of the aggregates is A->B; orient it to originator/responder
            o = 0 if flow.orig_is_a else 1
            updates.append(FlowUpdate(flow, is_new, first_ts[g], pkts[g][o], pkts[g][1 - o], nbytes[g][o],
                                      nbytes[g][1 - o]))
        return updates

    def expire(self, now: float) -> list[Flow]:
        """Flows idle longer than their timeout, or active longer than the active timeout, at time `now`."""
        out = (compiled.flows_extension.expire(self._expiry, now) if self._expiry is not None
               else self._expire_python(now))
        if out:   # most windows expire nothing: no call
            self._end(out, "idle")
        active = self.settings.active_timeout
        if now - self._last_active_sweep >= (active if active < 60.0 else 60.0):
            self._last_active_sweep = now
            for table, _ in self._timeouts:
                stale = [k for k, f in table.items() if now - f.first > active]
                out.extend(self._end([table.pop(k) for k in stale], "active"))
        return out

    def _expire_python(self, now: float) -> list[Flow]:
        """The idle part of expire: each table's head taken out while it has been idle past the table's timeout.
        The reference of _flows.expire (sensor/_flows.c), which does it for Lru tables."""
        out: list[Flow] = []
        for table, timeout in self._timeouts:
            # the head's flow alone, and popped from the front: asked once a window, most often of tables whose
            # head stays (an item's tuple and key cost a third of the call)
            while table and not now - next(iter(table.values())).last <= timeout:
                out.append(table.popitem(last=False)[1])
        return out

    def _evict(self) -> list[Flow]:
        """The least recently active flows over max_flows: each table's oldest is its head, the oldest head goes
        (the first table in _timeouts order on a tie). A flood past max_flows evicts a flow per new flow: the
        compiled loop (sensor/_flows.c evict) when built, else _evict_python, its reference."""
        excess = len(self) - self.settings.max_flows
        if excess <= 0:
            return []
        if compiled.flows_extension is not None and compiled.table:
            (closed, _), (tcp, _), (udp, _), (other, _) = self._timeouts
            out = compiled.flows_extension.evict((closed, tcp, udp, other), excess, Flow)
        else:
            out = self._evict_python(excess)
        return self._end(out, "evicted")

    def _evict_python(self, excess: int) -> list[Flow]:
        """Heads are read once and again only for the table that lost one."""
        out: list[Flow] = []
        tables = [t for t, _ in self._timeouts]
        heads = [next(iter(t.values())).last if t else None for t in tables]
        while excess > 0:
            best, oldest = -1, 0.0
            for i, head in enumerate(heads):
                if head is not None and (best < 0 or head < oldest):
                    best, oldest = i, head
            table = tables[best]
            out.append(table.popitem(last=False)[1])
            heads[best] = next(iter(table.values())).last if table else None
            excess -= 1
        return out

    def flush(self) -> list[Flow]:
        out: list[Flow] = []
        for table, _ in self._timeouts:
            # an OrderedDict through dict's view, not its own (whose iteration looks every key up again): the same
            # order, because the tables are only ever added to at the end and taken from (never move_to_end)
            out.extend(dict.values(table) if isinstance(table, dict) else table.values())
        for table, _ in self._timeouts:
            table.clear()
        self._columns_of, self._columns = None, ()   # the last batch's columns need not outlive the input
        return self._end(out, "end")


# Windows of this many rows or fewer on average are grouped ahead, all at once (Windows); bigger ones each when it
# comes, so that its groups are still in the cache when the table step reads them (a flood's window of thousands
# of new flows: grouped ahead, the flood-1000000 capture took 6% more CPU).
GROUP_AHEAD_ROWS = 32


class Windows:
    """A decoded batch's rows cut into windows of capture time (window k: rows[bounds[k]:bounds[k + 1]]), added to
    the flow table a window at a time (update_apart(k), what FlowTable.update_apart of the window's rows gives).
    With the compiled path and small windows (GROUP_AHEAD_ROWS), every window is grouped and oriented when the
    Windows is made, in one call each for the batch (pure functions of its rows), and a window's step is one
    _flows.apply of its groups: a _walk.group and an _flows.orient call per window cost ~6,000 instructions
    whatever the window held, and real cameras' control traffic is ~10 packets a window (97,000 windows for 127
    sites one after another). Otherwise each window goes through update_apart."""

    __slots__ = ("_table", "_dec", "_rows", "_tags", "_bounds", "_grouped")

    def __init__(self, table: FlowTable, dec: Decoded, rows: np.ndarray, tags: np.ndarray | None,
                 bounds: np.ndarray):
        self._table, self._dec, self._rows, self._tags, self._bounds = table, dec, rows, tags, bounds
        ahead = _compiled_window() and len(rows) <= GROUP_AHEAD_ROWS * (len(bounds) - 1)
        self._grouped = table._group_windows(dec, rows, tags, bounds) if ahead else None

    def update_apart(self, k: int) -> tuple[list[Flow], list[FlowUpdate]]:
        return self._window(k)

    def update_deferred(self, k: int, pending: dict[Flow, FlowUpdate], waiting: dict[Flow, None]) -> list[Flow]:
        """Window k as FlowTable.update_deferred: its new flows returned, the known flows' updates into pending."""
        return self._window(k, (pending, waiting))[0]

    def _window(self, k: int, deferred: Deferred = ()) -> tuple[list[Flow], list[FlowUpdate]]:
        if self._grouped is not None:
            return self._table._apply_window(self._grouped, k, True, deferred)
        lo, hi = self._bounds[k], self._bounds[k + 1]
        tags = self._tags
        return self._table._update(self._dec, self._rows[lo:hi], None if tags is None else tags[lo:hi], True,
                                   deferred)
