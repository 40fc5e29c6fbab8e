"""Scopes: where an address sits relative to this site (camera VLAN, core, allowed, public...), and the scope of the
peer a camera-side device talks to in a flow, remembered per flow."""

from __future__ import annotations

import ipaddress
from _socket import AF_INET, AF_INET6, inet_pton  # not socket: its enums and selectors cost start-up (issue 16)
from bisect import bisect_right
from functools import lru_cache

import numpy as np

from sensor.config import DEFAULT_CAMERA_NETWORKS, AllowRule, Config, IPNetwork, name_matches
from sensor.flows import PROTO_NAMES, Flow, IPAddress

SCOPE_CAMERA = "camera"
SCOPE_ALLOWED = "allowed"
SCOPE_CORE = "core"
SCOPE_PRIVATE = "private"
SCOPE_MULTICAST = "multicast"
SCOPE_LINK_LOCAL = "link_local"
SCOPE_PUBLIC = "public"
SCOPE_OTHER = "other"
SCOPES = (SCOPE_CAMERA, SCOPE_ALLOWED, SCOPE_CORE, SCOPE_PRIVATE, SCOPE_MULTICAST, SCOPE_LINK_LOCAL,
          SCOPE_PUBLIC, SCOPE_OTHER)
# Peers outside the camera VLAN that no allow rule covers: what most detectors judge.
EXTERNAL_SCOPES = frozenset({SCOPE_PUBLIC, SCOPE_CORE})

# Addresses beyond the camera VLAN's own broadcast domain but not the Internet either.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in DEFAULT_CAMERA_NETWORKS)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
# What IPv6 the link may teach as camera-side: global unicast and unique local, nothing else (::/0, multicast...)
_UNICAST_V6 = (ipaddress.IPv6Network("2000::/3"), ipaddress.IPv6Network("fc00::/7"))


# Zero-config scoping learns the camera side from the link (docs/identity.md, "Zero-config scoping"): at most this
# many networks; an IPv4 network learned from a lease is at least this wide at most (a forged DHCP mask of /0 must
# not make the Internet camera-side), and only private space is ever learned for IPv4.
MAX_LEARNED_NETWORKS = 64
MIN_LEARNED_PREFIX = {4: 16, 6: 48}
LEARNED_HOST_PREFIX = {4: 24, 6: 64}   # the network assumed around an address seen on the link without a mask


def _ranges(networks) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.network_address), int(n.broadcast_address)) for n in networks)


# Per family, as integer ranges: what may be learnt (a learnt network lies wholly within one of the first), and
# what never is (wholly within link-local, multicast or loopback space: ipaddress's is_link_local, is_multicast
# and is_loopback of a network ask that of its first and last address).
_LEARNABLE = {
    4: (_ranges(n for n in _PRIVATE if n.version == 4),
        _ranges(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "224.0.0.0/4", "127.0.0.0/8"))),
    6: (_ranges(_UNICAST_V6), _ranges(ipaddress.ip_network(n) for n in ("fe80::/10", "ff00::/8", "::1/128"))),
}


class Classifier:
    """Scope of an address relative to this site's configuration, or, with no camera networks configured, to the
    networks learned from the link (learn(); configured networks always win)."""

    def __init__(self, config: Config):
        self.config = config
        self.zero_config = not config.camera_networks
        self._core = config.core_networks
        # network -> the MAC whose traffic alone taught it (0: link evidence: DHCP, ARP, NDP), so that a MAC later
        # found to be a router's takes back what the hosts behind it taught (forget_taught_by)
        self.learned: dict[IPNetwork, int] = {}
        self.learned_dropped = 0   # networks not learned: the bound was reached
        self.generation = 0        # bumped whenever scopes change: cached scopes of older generations are stale
        self.address_scope = lru_cache(maxsize=1 << 16)(self._address_scope)
        self.scope_of_text = lru_cache(maxsize=1 << 12)(self._scope_of_text)
        self._rebuild()

    def _rebuild(self) -> None:
        """The camera networks in force, the integer ranges scope_of_raw reads, and fresh caches."""
        config = self.config
        if config.camera_networks:
            self._camera: tuple[IPNetwork, ...] = config.camera_networks
        else:
            # Per family: what the link taught, or, until it taught something, every private network (as before)
            camera: list[IPNetwork] = []
            for version in (4, 6):
                learned = [n for n in self.learned if n.version == version]
                camera += learned or [n for n in config.effective_camera_networks if n.version == version]
            self._camera = tuple(camera)
        # The same rules for IPv4 as integer ranges, checked in _address_scope's order: a flow's raw address can
        # be classified without building an ipaddress object (floods bring millions of addresses seen once).
        v4 = [(ipaddress.ip_network("224.0.0.0/4"), SCOPE_MULTICAST), (ipaddress.ip_network("255.255.255.255/32"),
              SCOPE_MULTICAST), (ipaddress.ip_network("127.0.0.0/8"), SCOPE_OTHER),
              (ipaddress.ip_network("0.0.0.0/32"), SCOPE_OTHER), (_LINK_LOCAL[0], SCOPE_LINK_LOCAL)]
        v4 += [(n, SCOPE_CAMERA) for n in self._camera if n.version == 4]
        v4 += [(n, SCOPE_CORE) for n in self._core if n.version == 4]
        v4 += [(n, SCOPE_PRIVATE) for n in _PRIVATE if n.version == 4]
        self._v4_ranges = [(int(n.network_address), int(n.broadcast_address), scope) for n, scope in v4]
        self._v4_bounds, self._v4_scopes = _elementary(self._v4_ranges)
        self._raw_cache: dict[bytes, str] = {}
        self._v4_arrays: tuple[np.ndarray, np.ndarray] | None = None   # scope_codes_v4's, made when first asked
        self.learned_v4 = any(n.version == 4 for n in self.learned)
        # The learnt networks by (family, prefix length): link evidence asks "already covered?" for every
        # confirmed source, thousands of times on a busy site; each prefix length learnt answers with one lookup.
        self._learned_order = list(self.learned)
        index: dict[tuple[int, int], tuple[int, dict[int, int]]] = {}
        for at, n in enumerate(self._learned_order):
            index.setdefault((n.version, n.prefixlen), (int(n.netmask), {}))[1][int(n.network_address)] = at
        self._learned_index = [(family, length, mask, starts) for (family, length), (mask, starts) in index.items()]
        self._judged: dict[tuple[int, int, int], IPNetwork | bool] = {}
        self.address_scope.cache_clear()
        self.scope_of_text.cache_clear()
        self.generation += 1

    def learn(self, network: IPNetwork, taught_by: int = 0) -> bool:
        """A camera-side network seen on the link (zero-config only); taught_by: the MAC whose traffic alone
        showed it, 0 for link evidence. True when scopes changed."""
        return self.learn_range(network.version, int(network.network_address), network.prefixlen, taught_by)

    def learn_range(self, version: int, address: int, prefixlen: int, taught_by: int = 0) -> bool:
        """learn() of the network of prefixlen around an address given as an integer (as ip_network(strict=False)
        takes it), judged on integers: every confirmed source on the link comes here, and on a site of more networks
        than the bound every one of them was an ipaddress network built and compared with the 64 learnt ones."""
        bits = 32 if version == 4 else 128
        if not (0 <= prefixlen <= bits and 0 <= address < 1 << bits):
            raise ValueError(f"not an IPv{version} network: {address}/{prefixlen}")
        if not self.zero_config or prefixlen < MIN_LEARNED_PREFIX[version]:
            return False
        first = address & ~((1 << (bits - prefixlen)) - 1)
        judged = self._judged.get((version, first, prefixlen))
        if judged is None:
            judged = self._judge(version, first, prefixlen)
        if judged is not True:
            if judged is not False and not taught_by and self.learned[judged]:
                self.learned[judged] = 0   # now shown by the link itself: no router can take it back
            return False
        if len(self.learned) >= MAX_LEARNED_NETWORKS:
            self.learned_dropped += 1
            return False
        family = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        self.learned[family((first, prefixlen))] = taught_by
        self._rebuild()
        return True

    def _judge(self, version: int, first: int, prefixlen: int) -> IPNetwork | bool:
        """False: never learnt (outside the learnable space); the learnt network that holds it; True: neither.
        Remembered until the learnt networks change: the same confirmed sources come back flow after flow."""
        last = first | ((1 << ((32 if version == 4 else 128) - prefixlen)) - 1)
        allowed, refused = _LEARNABLE[version]
        judged: IPNetwork | bool
        if not any(lo <= first and last <= hi for lo, hi in allowed) \
                or any(lo <= first and last <= hi for lo, hi in refused):
            judged = False
        else:
            known = self._covering(version, first, prefixlen)
            judged = True if known is None else known
        if len(self._judged) >= 1 << 12:
            self._judged.clear()   # a flood of new networks: bounded, and the site's own come straight back
        self._judged[(version, first, prefixlen)] = judged
        return judged

    def _covering(self, version: int, first: int, prefixlen: int) -> IPNetwork | None:
        """The first learnt network (in learning order) that holds this one: one lookup per prefix length learnt
        rather than a scan of every learnt network."""
        best: int | None = None
        for family, length, mask, starts in self._learned_index:
            if family == version and length <= prefixlen:
                at = starts.get(first & mask)
                if at is not None and (best is None or at < best):
                    best = at
        return None if best is None else self._learned_order[best]

    def forget_taught_by(self, mac: int) -> None:
        """mac turned out to be a router's: what its traffic alone taught came from hosts behind it."""
        gone = [n for n, by in self.learned.items() if by and by == mac]
        for network in gone:
            del self.learned[network]
        if gone:
            self._rebuild()

    def _address_scope(self, ip: IPAddress) -> str:
        if ip.is_multicast or ip == _BROADCAST:
            return SCOPE_MULTICAST
        if ip.is_loopback or ip.is_unspecified:
            return SCOPE_OTHER
        if any(ip in n for n in _LINK_LOCAL):
            return SCOPE_LINK_LOCAL
        if any(ip in n for n in self._camera):
            return SCOPE_CAMERA
        if any(ip in n for n in self._core):
            return SCOPE_CORE
        if any(ip in n for n in _PRIVATE):
            return SCOPE_PRIVATE
        return SCOPE_PUBLIC

    def _scope_of_text(self, text: str) -> str:
        """address_scope of an address in its printed form, without an ipaddress object: the link's parsers give
        addresses as text (DHCP, ARP, NDP, claimed again and again), and a scrape asks for every top destination
        of every device (scope_of_text remembers them, until scopes change)."""
        try:
            raw = _V4_MAPPED + inet_pton(AF_INET, text)
        except OSError:
            try:
                raw = inet_pton(AF_INET6, text)
            except OSError:   # not an address (a damaged state file): nowhere camwatch knows
                return SCOPE_OTHER
            if raw[:12] == _V4_MAPPED:   # written as IPv6, judged as IPv6 (scope_of_raw would take it for IPv4)
                return self.address_scope(ipaddress.IPv6Address(raw))
        return self.scope_of_raw(raw)

    def is_camera_side(self, ip: IPAddress) -> bool:
        return self.address_scope(ip) == SCOPE_CAMERA

    def scope_of_raw(self, raw: bytes) -> str:
        """address_scope of a 16-byte address (IPv4 as IPv4-mapped), from integer ranges for IPv4. Remembered per
        /24 where no range starts or ends inside it (its first 15 bytes are the key: no IPv6 address has them), so
        a flood of addresses each seen once mostly hits; per address otherwise."""
        cache = self._raw_cache
        scope = cache.get(raw[:15])
        if scope is None:
            scope = cache.get(raw)
            if scope is None:
                scope = self._scope_miss(raw)
        return scope

    def scope_codes_v4(self, values: np.ndarray) -> np.ndarray:
        """scope_of_raw of many IPv4 addresses (as integers) at once, as indices into SCOPES: the same bisection of
        the elementary intervals, one numpy call for a window's new flows (sensor.enrich.new_flows)."""
        if self._v4_arrays is None:
            self._v4_arrays = (np.array(self._v4_bounds, np.int64),
                               np.array([SCOPES.index(scope) for scope in self._v4_scopes], np.int8))
        bounds, codes = self._v4_arrays
        return codes[np.searchsorted(bounds, values, side="right") - 1]

    def _scope_miss(self, raw: bytes) -> str:
        cache = self._raw_cache
        if len(cache) >= 1 << 16:
            cache.clear()  # floods: bounded, and the hot addresses come straight back
        if raw[:12] == _V4_MAPPED:
            value = int.from_bytes(raw[12:], "big")
            bounds = self._v4_bounds
            i = bisect_right(bounds, value) - 1
            scope = self._v4_scopes[i]
            # no range starts or ends inside the /24: the first match is the same for all of it
            if bounds[i] <= value & ~0xFF and value | 0xFF < bounds[i + 1]:
                cache[raw[:15]] = scope
                return scope
        else:
            scope = self.address_scope(ipaddress.IPv6Address(raw))
        cache[raw] = scope
        return scope

    def name_allowed(self, name: str) -> bool:
        """Whether some allow rule names this DNS name (whatever its port), so looking it up is expected."""
        return any(r.dst_pattern and name_matches(r.dst_pattern, name) for r in self.config.allow)

    def destination_scope(self, ip: IPAddress, name: str | None, port: int | None,
                          proto: str) -> tuple[str, AllowRule | None]:
        """(scope, matching allow rule or None) of a destination a camera-side device talks to."""
        scope = self.address_scope(ip)
        if scope in (SCOPE_CAMERA, SCOPE_MULTICAST, SCOPE_OTHER):
            return scope, None
        for rule in self.config.allow:
            if rule.matches(ip, name, port, proto):
                return SCOPE_ALLOWED, rule
        return scope, None


def _elementary(ranges: list[tuple[int, int, str]]) -> tuple[list[int], list[str]]:
    """The IPv4 space cut wherever a range starts or ends: the intervals' starts (then 2**32) and the scope of the
    first range, in order, that holds each (public where none does). A forged source's scope is then a bisection,
    not a scan of every range (~150 with 64 learnt networks)."""
    bounds = sorted({0, 1 << 32} | {lo for lo, _, _ in ranges} | {hi + 1 for _, hi, _ in ranges})
    scopes = [next((sc for lo, hi, sc in ranges if lo <= start <= hi), SCOPE_PUBLIC) for start in bounds[:-1]]
    return bounds, scopes


# What enrichment knows of a flow that never changes lives in Flow.context, as a tuple of strings and numbers
# (which the garbage collector stops tracking): (originator's scope, responder's scope, protocol name, service
# port, then per side the last destination scope computed and the name it was for, or None).
def flow_context(classifier: Classifier, flow: Flow, orig: str | None = None, resp: str | None = None) -> tuple:
    """... and, last, the classifier's generation it was computed in (scopes learned since make it stale).
    `orig`, `resp`: the two addresses' scopes where the caller has just worked them out (Enricher._new_flow)."""
    # Flow.orig_raw, resp_raw and proto_name, inlined: every new flow of a flood comes through here.
    key, scope_of, orig_is_a = flow.key, classifier.scope_of_raw, flow.orig_is_a
    if orig is None:
        orig = scope_of(key[3:19] if orig_is_a else key[21:37])
    if resp is None:
        resp = scope_of(key[21:37] if orig_is_a else key[3:19])
    return (orig, resp, PROTO_NAMES.get(flow.proto) or str(flow.proto), flow.resp_port or None, None, None,
            classifier.generation)


def peer_scope(classifier: Classifier, flow: Flow, ctx: tuple, is_orig: bool, name: str | None) -> tuple[str, tuple]:
    """Classifier.destination_scope of the flow's other side, recomputed only when the name changes: the address,
    port and protocol of a flow do not. Returns the scope and the context that remembers it."""
    side = 4 if is_orig else 5
    cached = ctx[side]
    if cached is not None and cached[0] == name:
        return cached[1], ctx
    if not classifier.config.allow and ctx[6] == classifier.generation:
        # No allow rule to match: the destination scope is the peer's address scope, which the context holds
        # (from the raw address, so a flood of new peers makes no ipaddress objects here).
        scope = ctx[1] if is_orig else ctx[0]
    else:
        scope, _rule = classifier.destination_scope(flow.resp_ip if is_orig else flow.orig_ip, name, ctx[3], ctx[2])
    return scope, ctx[:side] + ((name, scope),) + ctx[side + 1:]
