"""The curated data files shipped in sensor/data, declared and checked the way camwatch.toml is (sensor.schema):
indicators.toml (vendor cloud and P2P services), resolvers.toml (well-known public DNS, DoT and DoH resolvers) and
covered_makers.toml (makers flagged as covered) and brands.toml (OEM brands, module makers, other camera makers,
role words: sensor.enrich.maker_evidence).

A mistake in either is a CamwatchError naming the file and the key (`service[3].signatures[1].value`), at start:
a misspelt key would otherwise drop an indicator silently, as a misspelt allowlist key would a rule.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from sensor.config import PROTOCOLS, name_matches
from sensor.errors import CamwatchError
from sensor.schema import (
    FLAG,
    STRINGS,
    Choice,
    Frozen,
    Invalid,
    Kind,
    Section,
    Setting,
    Tables,
    Text,
    load,
    quoted,
    record,
    setting,
)

DATA = Path(__file__).with_name("data")
INDICATORS_FILE = DATA / "indicators.toml"
RESOLVERS_FILE = DATA / "resolvers.toml"
COVERED_MAKERS_FILE = DATA / "covered_makers.toml"
BRANDS_FILE = DATA / "brands.toml"

SIGNATURE_KINDS = ("cs2_pppp", "prefix", "hex")
MAX_PREFIX_BYTES = 8            # the payload taggers compare at most this many leading bytes
MAX_PREFIX_SIGNATURES = 48      # each takes one tag bit, above the fixed payload-profile bits
# A prefix or hex signature must fix at least this many bits: 32 fixed bits match a random payload once in four
# billion packets, where two fixed bytes would fire on every video flow of a site within minutes.
MIN_FIXED_BITS = 32
RESOLVER_PROTOCOLS = ("dns", "dot", "doh")


class _Ports(Kind):
    """[proto, port] pairs, as a frozenset of (proto, port) tuples."""

    def check(self, value: Any, s: Setting, key: str) -> frozenset[tuple[str, int]]:
        if not isinstance(value, list):
            raise s.wrong(key)
        out = set()
        for i, pair in enumerate(value, 1):
            if (not isinstance(pair, list) or len(pair) != 2 or pair[0] not in PROTOCOLS
                    or isinstance(pair[1], bool) or not isinstance(pair[1], int) or not 0 < pair[1] < 65536):
                raise Invalid(f"{key}[{i}] must be a [protocol, port] pair, as in [\"tcp\", 8555] (protocols: "
                              f"{', '.join(PROTOCOLS)}; ports 1 to 65535)")
            out.add((pair[0], pair[1]))
        return frozenset(out)

    def describe(self, s: Setting) -> str:
        return "a list of [protocol, port] pairs"


class _Patterns(Kind):
    """Regular expressions, matched case-insensitively, compiled at load so a broken one fails at start."""

    def check(self, value: Any, s: Setting, key: str) -> tuple[re.Pattern, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise s.wrong(key)
        out = []
        for i, pattern in enumerate(value, 1):
            try:
                out.append(re.compile(pattern, re.I))
            except re.error as exc:
                raise Invalid(f"{key}[{i}] {quoted(pattern)} is not a regular expression: {exc}") from None
        return tuple(out)

    def describe(self, s: Setting) -> str:
        return "a list of regular expressions"


_NAMES = Text()


def _sources() -> Any:
    return setting(kind=STRINGS, minimum=1, doc="where the entry comes from, for review")


# ---- indicators.toml ----------------------------------------------------------------------------------------
@record
class Signature(Frozen):
    """A payload shape of a service's own protocol, in the first payload bytes a device sends. cs2_pppp: 0xF1, then
    a big-endian length equal to the rest of the payload; prefix: the payload starts with `value` (ASCII); hex: the
    payload's first bytes, under `mask` (both hex), equal `value`. `proto` and `ports` narrow where it counts."""

    # not a Choice: what a value must be depends on the kind, so after_load checks the two together
    kind: str = setting(kind=_NAMES, doc="cs2_pppp, prefix or hex")
    value: str | None = setting(None, kind=_NAMES, doc="a prefix signature's leading bytes (ASCII), or hex digits")
    mask: str | None = setting(None, kind=_NAMES, doc="hex only: which bits of value are fixed (hex, same length)")
    proto: str | None = setting(None, kind=Choice(("tcp", "udp")), doc="counts only in flows of this transport")
    ports: frozenset[tuple[str, int]] = setting(frozenset(), kind=_Ports(),
                                                doc="counts only in flows with one of these service ports")
    name: str | None = setting(None, kind=Text(max_length=120, printable=True),
                               doc="what the evidence calls it (\"the Reolink BCUDP P2P header\")")
    device: bool = setting(False, kind=FLAG, doc="only the camera end of the protocol sends it: role evidence")
    # derived: the leading bytes and their mask, at most MAX_PREFIX_BYTES each (prefix and hex kinds)
    pattern: bytes = b""
    pattern_mask: bytes = b""

    def after_load(self, where: str) -> Signature:
        if self.kind not in SIGNATURE_KINDS:
            raise Invalid(f"{where}.kind: unknown signature kind {quoted(self.kind)} "
                          f"(known: {', '.join(SIGNATURE_KINDS)})")
        if self.kind != "hex" and self.mask is not None:
            raise Invalid(f"{where}.mask: only a hex signature takes a mask")
        if self.proto is not None and any(p != self.proto for p, _ in self.ports):
            raise Invalid(f"{where}.ports: a port of another protocol than proto = {quoted(self.proto)}")
        if self.kind == "cs2_pppp":
            if self.value is not None:
                raise Invalid(f"{where}.value: a cs2_pppp signature takes no value")
            return self
        pattern, mask = self._prefix(where) if self.kind == "prefix" else self._hex(where)
        fixed = sum(bin(b).count("1") for b in mask)
        if fixed < MIN_FIXED_BITS:
            raise Invalid(f"{where}.value: {fixed} fixed bits would fire on ordinary traffic (at least "
                          f"{MIN_FIXED_BITS}, four bytes)")
        return replace(self, pattern=pattern, pattern_mask=mask)

    def _prefix(self, where: str) -> tuple[bytes, bytes]:
        if self.value is None or not self.value.isascii() or len(self.value) > MAX_PREFIX_BYTES:
            raise Invalid(f"{where}.value: a prefix signature is 1 to {MAX_PREFIX_BYTES} ASCII characters")
        pattern = self.value.encode("ascii")
        return pattern, b"\xff" * len(pattern)

    def _hex(self, where: str) -> tuple[bytes, bytes]:
        pattern = _hex_bytes(self.value, f"{where}.value")
        if self.mask is None:
            return pattern, b"\xff" * len(pattern)
        mask = _hex_bytes(self.mask, f"{where}.mask")
        if len(mask) != len(pattern):
            raise Invalid(f"{where}.mask: {len(mask)} bytes for a value of {len(pattern)}")
        if any(v & ~m for v, m in zip(pattern, mask, strict=True)):
            raise Invalid(f"{where}.value: bits set outside the mask could never match")
        return pattern, mask

    def applies(self, proto: str, port: int | None) -> bool:
        """Whether a match in a flow of this transport and service port counts."""
        if self.proto is not None and proto != self.proto:
            return False
        return not self.ports or (proto, port) in self.ports

    @property
    def evidence(self) -> str:
        return f"{self.name} in the payload" if self.name else "its protocol signature in the payload"


def _hex_bytes(text: str | None, key: str) -> bytes:
    digits = (text or "").replace(" ", "")
    if not re.fullmatch(rf"(?:[0-9A-Fa-f]{{2}}){{1,{MAX_PREFIX_BYTES}}}", digits):
        raise Invalid(f"{key}: a hex signature is 1 to {MAX_PREFIX_BYTES} bytes as hex digits (\"0abcdef0\")")
    return bytes.fromhex(digits)


@record(kw_only=True)
class Service(Frozen):
    """A vendor cloud or P2P service cameras phone home to; any one of its names, signatures or (from one of
    its makers' devices) ports is enough to recognise it."""

    id: str = setting(kind=_NAMES, doc="short stable name, the `service` field of alerts")
    name: str = setting(kind=_NAMES, doc="what alert summaries call it")
    makers: tuple[str, ...] = setting((), kind=STRINGS, doc="covered-maker names whose devices its ports identify")
    maker: str | None = setting(None, kind=_NAMES, doc="who makes the devices that use it: a covered maker's or a "
                                "brands.toml maker's name (maker evidence, docs/identity.md)")
    domains: tuple[str, ...] = setting((), kind=STRINGS, doc="DNS name patterns (query, TLS SNI, HTTP Host)")
    ports: frozenset[tuple[str, int]] = setting(frozenset(), kind=_Ports(), doc="[protocol, port] pairs it uses")
    signatures: tuple[Signature, ...] = setting((), kind=Tables(Signature), doc="payload shapes")
    sources: tuple[str, ...] = _sources()
    # The payload tag bits its signatures set (load_indicators numbers the prefix signatures file-wide), and each
    # bit with the signature it stands for (its proto/ports narrow where it counts; its name is the evidence).
    signature_bits: int = 0
    signature_rules: tuple[tuple[int, Signature], ...] = ()

    def after_load(self, where: str) -> Service:
        return replace(self, domains=tuple(d.lower() for d in self.domains))

    def matches_name(self, name: str | None) -> bool:
        if not name:
            return False
        return any(name_matches(p, name) for p in self.domains)


@record
class IndicatorFile(Frozen):
    """indicators.toml: its version and services."""

    version: str = setting(kind=_NAMES, doc="the file's date, exported with the metrics")
    service: tuple[Service, ...] = setting(kind=Tables(Service), doc="the services, as [[service]] tables")
    # every prefix or hex signature's (leading bytes, mask), in file order: index i is payload tag bit
    # `signature_base + i`
    prefixes: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def services(self) -> tuple[Service, ...]:
        return self.service


def load_indicators(path: Path = INDICATORS_FILE, *, pppp_bit: int, signature_base: int) -> IndicatorFile:
    """The indicator file, checked, with each service's `signature_bits`: `pppp_bit` for a cs2_pppp signature,
    bit `signature_base + i` for the i-th prefix or hex signature of the file."""
    try:
        found = load(IndicatorFile, _read_toml(path))
        prefixes: list[tuple[bytes, bytes]] = []
        services = []
        for svc in found.service:
            rules = []
            for sig in svc.signatures:
                if sig.kind == "cs2_pppp":
                    rules.append((pppp_bit, sig))
                else:
                    prefixes.append((sig.pattern, sig.pattern_mask))
                    rules.append((1 << (signature_base + len(prefixes) - 1), sig))
            bits = 0
            for bit, _ in rules:
                bits |= bit
            services.append(replace(svc, signature_bits=bits, signature_rules=tuple(rules)))
        if len(prefixes) > MAX_PREFIX_SIGNATURES:
            raise Invalid(f"at most {MAX_PREFIX_SIGNATURES} prefix signatures (found {len(prefixes)})")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, Invalid) as exc:
        raise CamwatchError(f"{path}: invalid indicator file: {_reason(exc)}") from None
    return replace(found, service=tuple(services), prefixes=tuple(prefixes))


# ---- resolvers.toml -------------------------------------------------------------------------------------------
class _Addresses(Kind):
    """Public unicast IP addresses, as a frozenset of their printed form (as flows print them). A private, loopback
    or reserved address is refused: naming a site's own resolver a public one would mislabel every lookup."""

    def check(self, value: Any, s: Setting, key: str) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise s.wrong(key)
        out = set()
        for i, text in enumerate(value, 1):
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise Invalid(f"{key}[{i}] {quoted(text)} is not an IP address") from None
            if not address.is_global or address.is_multicast:
                raise Invalid(f"{key}[{i}] {quoted(text)} is not a public unicast address")
            out.add(str(address))
        return frozenset(out)

    def describe(self, s: Setting) -> str:
        return "a list of IP addresses"


class _Protocols(Kind):
    def check(self, value: Any, s: Setting, key: str) -> frozenset[str]:
        if not isinstance(value, list) or not value or not all(v in RESOLVER_PROTOCOLS for v in value):
            raise s.wrong(key)
        return frozenset(value)

    def describe(self, s: Setting) -> str:
        return f"a non-empty list of {', '.join(RESOLVER_PROTOCOLS)}"


@record(kw_only=True)
class Resolver(Frozen):
    """A public resolver service: the names its DoH/DoT endpoints present (TLS SNI) and its anycast addresses."""

    id: str = setting(kind=_NAMES, doc="short stable name")
    name: str = setting(kind=_NAMES, doc="what evidence calls it (\"Google Public DNS\")")
    domains: tuple[str, ...] = setting((), kind=STRINGS, doc="DoH/DoT host name patterns (TLS SNI, DNS name)")
    addresses: frozenset[str] = setting(frozenset(), kind=_Addresses(), doc="its resolver addresses")
    protocols: frozenset[str] = setting(kind=_Protocols(),
                                        doc="what its addresses serve: dns (port 53), dot (853), doh (443)")
    sources: tuple[str, ...] = _sources()

    def after_load(self, where: str) -> Resolver:
        if not self.domains and not self.addresses:
            raise Invalid(f"{where} needs domains or addresses: it could never be recognised")
        return replace(self, domains=tuple(d.lower() for d in self.domains))

    def matches_name(self, name: str | None) -> bool:
        return bool(name) and any(name_matches(p, name or "") for p in self.domains)


@record
class ResolverFile(Frozen):
    """resolvers.toml: its version and resolvers."""

    version: str = setting(kind=_NAMES, doc="the file's date")
    resolver: tuple[Resolver, ...] = setting(kind=Tables(Resolver), doc="the resolvers, as [[resolver]] tables")

    @property
    def resolvers(self) -> tuple[Resolver, ...]:
        return self.resolver


def load_resolvers(path: Path = RESOLVERS_FILE) -> ResolverFile:
    try:
        return load(ResolverFile, _read_toml(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, Invalid) as exc:
        raise CamwatchError(f"{path}: invalid resolver file: {_reason(exc)}") from None


# ---- covered_makers.toml ------------------------------------------------------------------------------------
@record(kw_only=True)
class Maker(Frozen):
    """A maker camwatch flags as covered, and how its devices are recognised."""

    name: str = setting(kind=_NAMES, doc="short name, as inventories and alerts show it")
    legal_name: str = setting(kind=_NAMES, doc="the company's registered name")
    basis: str = setting(kind=Choice(("named", "prc-nil")),
                         doc="named in a government restriction, or subject to the PRC National Intelligence Law")
    manuf: tuple[re.Pattern, ...] = setting(kind=_Patterns(), doc="patterns for Wireshark's manuf organisations")
    banners: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for Server headers, discovery")
    brands: tuple[str, ...] = setting((), kind=STRINGS, doc="product brands, for readers of the list")
    cameras: bool = setting(False, kind=FLAG, doc="makes cameras and recorders only: its devices are cameras")
    reason: str = setting(kind=_NAMES, doc="why it is covered")
    sources: tuple[str, ...] = _sources()

    def after_load(self, where: str) -> Maker:
        if not self.manuf and not self.banners:
            raise Invalid(f"{where} needs a manuf or banners pattern: it could never be recognised")
        return self


@record
class CoveredMakerFile(Frozen):
    """covered_makers.toml: its version and makers."""

    version: str = setting(kind=_NAMES, doc="the list's date, exported as camwatch_covered_list_info")
    maker: tuple[Maker, ...] = setting(kind=Tables(Maker), doc="the makers, as [[maker]] tables")

    @property
    def makers(self) -> tuple[Maker, ...]:
        return self.maker


def load_covered_makers(path: Path = COVERED_MAKERS_FILE) -> CoveredMakerFile:
    try:
        raw = _read_toml(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CamwatchError(f"{path}: cannot load the covered-maker list: {_reason(exc)}") from None
    try:
        return load(CoveredMakerFile, raw)
    except Invalid as exc:
        raise CamwatchError(f"{path}: invalid covered-maker list: {exc}") from None


# ---- brands.toml --------------------------------------------------------------------------------------------
@record(kw_only=True)
class Oem(Frozen):
    """A brand known to sell a covered maker's hardware under its own name."""

    name: str = setting(kind=_NAMES, doc="the brand")
    maker: str = setting(kind=_NAMES, doc="the covered maker whose hardware it sells (covered_makers.toml name)")
    alone: bool = setting(kind=FLAG, doc="the badge alone makes a device covered (else behaviour must agree)")
    manuf: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for manuf organisations")
    banners: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for names the device gives")
    sources: tuple[str, ...] = _sources()


@record(kw_only=True)
class Module(Frozen):
    """A maker of radio or SoC modules: its MAC prefix does not name the device's maker."""

    name: str = setting(kind=_NAMES, doc="the module maker")
    manuf: tuple[re.Pattern, ...] = setting(kind=_Patterns(), doc="patterns for manuf organisations")
    sources: tuple[str, ...] = _sources()


@record(kw_only=True)
class OtherMaker(Frozen):
    """A camera maker that is not covered, named so that its devices read alike whatever the evidence."""

    name: str = setting(kind=_NAMES, doc="short name")
    manuf: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for manuf organisations")
    banners: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for names the device gives")
    cameras: bool = setting(False, kind=FLAG, doc="makes cameras and recorders only: its devices are cameras")
    sources: tuple[str, ...] = _sources()


@record
class RoleWords(Frozen):
    """brands.toml's [roles]: words in names and model strings that say camera or recorder."""

    camera: tuple[re.Pattern, ...] = setting(kind=_Patterns(), doc="names and model strings of cameras")
    nvr: tuple[re.Pattern, ...] = setting(kind=_Patterns(), doc="names and model strings of recorders")


@record
class BrandFile(Frozen):
    """brands.toml: OEM brands, module makers, other camera makers and role words."""

    version: str = setting(kind=_NAMES, doc="the file's date")
    oem: tuple[Oem, ...] = setting(kind=Tables(Oem), doc="OEM brands, as [[oem]] tables")
    module: tuple[Module, ...] = setting(kind=Tables(Module), doc="module makers, as [[module]] tables")
    maker: tuple[OtherMaker, ...] = setting(kind=Tables(OtherMaker), doc="other camera makers, as [[maker]]")
    roles: RoleWords = setting(kind=Section(RoleWords), doc="role words, as the [roles] table")


def load_brands(path: Path = BRANDS_FILE) -> BrandFile:
    try:
        return load(BrandFile, _read_toml(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, Invalid) as exc:
        raise CamwatchError(f"{path}: invalid brand file: {_reason(exc)}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return " ".join(str(exc).split())   # one line, whatever the parser said
