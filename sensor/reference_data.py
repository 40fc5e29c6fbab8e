"""The curated data files shipped in sensor/data, declared and checked the way camwatch.toml is (sensor.schema):
indicators.toml (vendor cloud and P2P services) and covered_makers.toml (makers flagged as covered).

A mistake in either is a CamwatchError naming the file and the key (`service[3].signatures[1].value`), at start:
a misspelt key would otherwise drop an indicator silently, as a misspelt allowlist key would a rule.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sensor.config import PROTOCOLS, name_matches
from sensor.errors import CamwatchError
from sensor.schema import STRINGS, Choice, Invalid, Kind, Setting, Tables, Text, load, quoted, setting

DATA = Path(__file__).with_name("data")
INDICATORS_FILE = DATA / "indicators.toml"
COVERED_MAKERS_FILE = DATA / "covered_makers.toml"

SIGNATURE_KINDS = ("cs2_pppp", "prefix")
MAX_PREFIX_BYTES = 8            # the payload taggers compare at most this many leading bytes
MAX_PREFIX_SIGNATURES = 48      # each takes one tag bit, above the fixed payload-profile bits


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
@dataclass(frozen=True)
class Signature:
    """A payload shape of a service's own protocol. cs2_pppp: 0xF1, then a big-endian length equal to the rest
    of the payload; prefix: the payload starts with `value` (ASCII)."""

    # not a Choice: what a value must be depends on the kind, so after_load checks the two together
    kind: str = setting(kind=_NAMES, doc="cs2_pppp or prefix")
    value: str | None = setting(None, kind=_NAMES, doc="a prefix signature's leading bytes, ASCII")

    def after_load(self, where: str) -> Signature:
        if self.kind not in SIGNATURE_KINDS:
            raise Invalid(f"{where}.kind: unknown signature kind {quoted(self.kind)} "
                          f"(known: {', '.join(SIGNATURE_KINDS)})")
        if self.kind == "cs2_pppp" and self.value is not None:
            raise Invalid(f"{where}.value: a cs2_pppp signature takes no value")
        if self.kind == "prefix" and (self.value is None or not self.value.isascii()
                                      or len(self.value) > MAX_PREFIX_BYTES):
            raise Invalid(f"{where}.value: a prefix signature is 1 to {MAX_PREFIX_BYTES} ASCII characters")
        return self


@dataclass(frozen=True, kw_only=True)
class Service:
    """A vendor cloud or P2P service cameras phone home to; any one of its names, signatures or (from one of
    its makers' devices) ports is enough to recognise it."""

    id: str = setting(kind=_NAMES, doc="short stable name, the `service` field of alerts")
    name: str = setting(kind=_NAMES, doc="what alert summaries call it")
    makers: tuple[str, ...] = setting((), kind=STRINGS, doc="covered-maker names whose devices its ports identify")
    domains: tuple[str, ...] = setting((), kind=STRINGS, doc="DNS name patterns (query, TLS SNI, HTTP Host)")
    ports: frozenset[tuple[str, int]] = setting(frozenset(), kind=_Ports(), doc="[protocol, port] pairs it uses")
    signatures: tuple[Signature, ...] = setting((), kind=Tables(Signature), doc="payload shapes")
    sources: tuple[str, ...] = _sources()
    # The payload tag bits its signatures set (load_indicators numbers the prefix signatures file-wide).
    signature_bits: int = 0

    def after_load(self, where: str) -> Service:
        return replace(self, domains=tuple(d.lower() for d in self.domains))

    def matches_name(self, name: str | None) -> bool:
        if not name:
            return False
        return any(name_matches(p, name) for p in self.domains)


@dataclass(frozen=True)
class IndicatorFile:
    version: str = setting(kind=_NAMES, doc="the file's date, exported with the metrics")
    service: tuple[Service, ...] = setting(kind=Tables(Service), doc="the services, as [[service]] tables")
    # every prefix signature's bytes, in file order: index i is payload tag bit `signature_base + i`
    prefixes: tuple[bytes, ...] = ()

    @property
    def services(self) -> tuple[Service, ...]:
        return self.service


def load_indicators(path: Path = INDICATORS_FILE, *, pppp_bit: int, signature_base: int) -> IndicatorFile:
    """The indicator file, checked, with each service's `signature_bits`: `pppp_bit` for a cs2_pppp signature,
    bit `signature_base + i` for the i-th prefix signature of the file."""
    try:
        found = load(IndicatorFile, _read_toml(path))
        prefixes: list[bytes] = []
        services = []
        for svc in found.service:
            bits = 0
            for sig in svc.signatures:
                if sig.kind == "cs2_pppp":
                    bits |= pppp_bit
                else:
                    prefixes.append((sig.value or "").encode("ascii"))
                    bits |= 1 << (signature_base + len(prefixes) - 1)
            services.append(replace(svc, signature_bits=bits))
        if len(prefixes) > MAX_PREFIX_SIGNATURES:
            raise Invalid(f"at most {MAX_PREFIX_SIGNATURES} prefix signatures (found {len(prefixes)})")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, Invalid) as exc:
        raise CamwatchError(f"{path}: invalid indicator file: {_reason(exc)}") from None
    return replace(found, service=tuple(services), prefixes=tuple(prefixes))


# ---- covered_makers.toml ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Maker:
    """A maker camwatch flags as covered, and how its devices are recognised."""

    name: str = setting(kind=_NAMES, doc="short name, as inventories and alerts show it")
    legal_name: str = setting(kind=_NAMES, doc="the company's registered name")
    basis: str = setting(kind=Choice(("named", "prc-nil")),
                         doc="named in a government restriction, or subject to the PRC National Intelligence Law")
    manuf: tuple[re.Pattern, ...] = setting(kind=_Patterns(), doc="patterns for Wireshark's manuf organisations")
    banners: tuple[re.Pattern, ...] = setting((), kind=_Patterns(), doc="patterns for Server headers, discovery")
    brands: tuple[str, ...] = setting((), kind=STRINGS, doc="product brands, for readers of the list")
    reason: str = setting(kind=_NAMES, doc="why it is covered")
    sources: tuple[str, ...] = _sources()

    def after_load(self, where: str) -> Maker:
        if not self.manuf and not self.banners:
            raise Invalid(f"{where} needs a manuf or banners pattern: it could never be recognised")
        return self


@dataclass(frozen=True)
class CoveredMakerFile:
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


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return " ".join(str(exc).split())   # one line, whatever the parser said
