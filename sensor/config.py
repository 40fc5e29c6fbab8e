"""camwatch.toml: loading and strict validation.

Every key is checked; an unknown key or a wrong type is a ConfigError naming the key, because a typo in a
security allowlist must never be silently ignored. Beyond types, whatever a typo could turn into a silent hole is
refused too: addresses that are not valid addresses, CIDRs with host bits set, allow rules covering public space
wholesale (unless the rule says `allow_all = true`), NaN/infinite/out-of-range numbers, password hashes that are
malformed or would cost absurd work, and nesting deep enough to exhaust the parser's stack.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Zero-config camera side: RFC 1918, RFC 6598 shared space and IPv6 ULA. Python's `is_private` is not used
# because it also covers documentation ranges, which in a capture stand for the Internet.
DEFAULT_CAMERA_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")

PROTOCOLS = ("tcp", "udp", "icmp")

DAY = 86400.0
MAX_TIMEOUT = 30 * DAY            # flow, episode timeouts: longer is a typo (an extra digit), not a policy
MAX_LEARNING_PERIOD = 365 * DAY
# Upper bounds that still fit a sensor's memory: ~520 B per flow (docs/benchmarks.md) makes 10M flows ~5 GiB.
MAX_FLOWS = 10_000_000
MAX_DEVICES = 1_000_000
MAX_NAMES = 10_000_000
MAX_CONFIG_BYTES = 1 << 20        # a camwatch.toml is a few KiB; a pcap or a log passed by mistake is not

# PBKDF2 cost accepted in [metrics] basic_auth. Below the floor a stolen config is cheap to brute-force; above
# the ceiling each scrape (or each attacker's guess) would pin a core for seconds.
PBKDF2_MIN_ITERATIONS = 10_000
PBKDF2_MAX_ITERATIONS = 10_000_000
PBKDF2_SALT_BYTES = (16, 64)
PBKDF2_DIGEST_BYTES = 32          # SHA-256

# A network wider than this (more than one IPv4 /8, or than a /16 of IPv6 - wider than any single organisation's
# allocation) covers public space wholesale: an allow rule needs `allow_all = true`, a camera network is refused.
BROAD_PREFIX = {4: 8, 6: 16}
_WIDE_BUT_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("224.0.0.0/4", "fc00::/7", "fe80::/10", "ff00::/8"))


def capture_ring_mib(memory_bytes: int) -> int:
    """The default kernel capture ring: a sixteenth of the machine's memory, between 64 MiB and 1 GiB.

    1 GiB rode out a minute at ~3.7 Gbit/s without loss where 256 MiB sometimes did not (docs/benchmarks.md), but
    the ring is kernel memory held for the whole capture, which a small box cannot spare."""
    return max(64, min(1024, memory_bytes // 16 >> 20))


def _machine_memory(cgroups: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int:
    """Physical memory, or the process's cgroup (v2) limit when lower: a container, or a systemd unit with
    MemoryMax, would otherwise be sized by the whole host."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 4 << 30   # unknown: size as for a small sensor
    try:
        own = next(line[3:] for line in membership.read_text().splitlines() if line.startswith("0::"))
        limit = (cgroups / own.lstrip("/") / "memory.max").read_text().strip()
    except (OSError, StopIteration):
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


@dataclass(frozen=True)
class AllowRule:
    """One MUD-like allowlist entry: a camera may reach `dst` (network or DNS pattern) on `port`/`proto`."""

    dst_network: IPNetwork | None = None
    dst_pattern: str | None = None
    port: int | None = None
    proto: str | None = None
    comment: str = ""
    allow_all: bool = False    # acknowledged in the config as covering public space wholesale

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str | None,
                port: int | None, proto: str) -> bool:
        if self.proto is not None and self.proto != proto:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.dst_network is not None:
            return ip in self.dst_network
        return name is not None and name_matches(self.dst_pattern or "", name)


def name_matches(pattern: str, name: str) -> bool:
    """DNS pattern match: `*.example.com` matches any name below example.com (not example.com itself)."""
    return fnmatch.fnmatchcase(name.lower().rstrip("."), pattern.lower().rstrip("."))


@dataclass(frozen=True)
class FlowSettings:
    tcp_idle_timeout: float = 300.0
    udp_idle_timeout: float = 60.0
    icmp_idle_timeout: float = 60.0
    tcp_closed_timeout: float = 5.0
    active_timeout: float = 1800.0
    max_flows: int = 500_000


# Without flows.max_flows, the flow table is sized from limits.max_devices: a camera holds a handful of flows, a
# recorder a few per camera, so 50 per device is generous, and a site that bounds its devices bounds the memory a
# flood can take (a flow costs ~500 bytes). Between these two, whatever max_devices says.
FLOWS_PER_DEVICE = 50
MIN_DEFAULT_FLOWS = 100_000


def default_max_flows(max_devices: int) -> int:
    return max(MIN_DEFAULT_FLOWS, min(FlowSettings.max_flows, FLOWS_PER_DEVICE * max_devices))


@dataclass(frozen=True)
class MetricsSettings:
    """The HTTP endpoint. Loopback by default: metrics name every camera and where it talks, which is
    reconnaissance gold; exposing them is a decision, made by setting `listen` (and ideally TLS and auth)."""

    listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None          # set: clients must present a certificate it signed (mutual TLS)
    basic_auth: tuple[tuple[str, str], ...] = ()   # (user, pbkdf2 hash from `camwatch hash-password`)


@dataclass(frozen=True)
class Config:
    sensor_name: str = "camwatch"
    camera_networks: tuple[IPNetwork, ...] = ()
    core_networks: tuple[IPNetwork, ...] = ()
    allow: tuple[AllowRule, ...] = ()
    flows: FlowSettings = field(default_factory=FlowSettings)
    episode_timeout: float = 3600.0
    max_devices: int = 10_000
    max_names: int = 100_000
    learning_period: float = 86400.0
    state_path: str | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    capture_buffer_mib: int = field(default_factory=lambda: capture_ring_mib(_machine_memory()))
    source: str = "(defaults)"

    @property
    def effective_camera_networks(self) -> tuple[IPNetwork, ...]:
        if self.camera_networks:
            return self.camera_networks
        return tuple(ipaddress.ip_network(n) for n in DEFAULT_CAMERA_NETWORKS)


_SCHEMA: dict[str, set[str]] = {
    "sensor": {"name"},
    "networks": {"camera", "core"},
    "flows": set(FlowSettings.__dataclass_fields__),
    "alerts": {"episode_timeout"},
    "limits": {"max_devices", "max_names"},
    "detect": {"learning_period"},
    "state": {"path"},
    "metrics": {"listen", "tls_cert", "tls_key", "client_ca", "basic_auth"},
    "capture": {"buffer_mib"},
}
_ALLOW_KEYS = {"dst", "port", "proto", "comment", "allow_all"}


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB: not a camwatch.toml")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): not a camwatch.toml") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        # tomllib recurses once per level of [ or {: a few hundred levels exhaust the stack
        found = _deepest_statement(text)
        where = f"{found[0]} (line {found[1]})" if found else "a value"
        raise ConfigError(f"{path}: {where} is nested too deeply") from None
    except ValueError as exc:
        # tomllib lets int()'s digit limit escape as a plain ValueError
        big = re.search(r"[0-9][0-9_]{4300,}", text)
        found = _deepest_statement(text, stop_at=big.start()) if big else None
        if found:
            raise ConfigError(f"{path}: {found[0]} (line {found[1]}): an integer of over 4300 digits") from None
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    try:
        return _parse(raw, source, fail)
    except RecursionError:
        # nothing below walks values recursively; this stays a one-line error if that ever changes
        raise fail("a value is nested too deeply") from None


def _parse(raw: dict[str, Any], source: str, fail) -> Config:
    for section, value in raw.items():
        if section == "allow":
            continue
        if section not in _SCHEMA:
            raise fail(f"unknown section [{_name(section)}] (known: {', '.join(sorted([*_SCHEMA, 'allow']))})")
        if not isinstance(value, dict):
            raise fail(f"[{section}] must be a table")
        unknown = set(value) - _SCHEMA[section]
        if unknown:
            raise fail(f"unknown key {section}.{_name(sorted(unknown)[0])} "
                       f"(known: {', '.join(sorted(_SCHEMA[section]))})")

    sensor = raw.get("sensor", {})
    name = sensor.get("name", "camwatch")
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise fail("sensor.name must be a non-empty string of at most 64 printable characters")

    networks = raw.get("networks", {})
    camera = _networks(networks.get("camera", []), "networks.camera", fail, refuse_broad=True)
    core = _networks(networks.get("core", []), "networks.core", fail, refuse_broad=False)

    flows_raw = raw.get("flows", {})
    flow_kwargs: dict[str, Any] = {}
    for key, value in flows_raw.items():
        if key == "max_flows":
            flow_kwargs[key] = _positive_int(value, "flows.max_flows", MAX_FLOWS, fail)
        else:
            flow_kwargs[key] = _seconds(value, f"flows.{key}", MAX_TIMEOUT, fail)

    alerts = raw.get("alerts", {})
    episode_timeout = _seconds(alerts.get("episode_timeout", 3600.0), "alerts.episode_timeout", MAX_TIMEOUT, fail)
    limits = raw.get("limits", {})
    max_devices = _positive_int(limits.get("max_devices", 10_000), "limits.max_devices", MAX_DEVICES, fail)
    max_names = _positive_int(limits.get("max_names", 100_000), "limits.max_names", MAX_NAMES, fail)

    flow_kwargs.setdefault("max_flows", default_max_flows(max_devices))

    learning_period = _seconds(raw.get("detect", {}).get("learning_period", 86400.0), "detect.learning_period",
                               MAX_LEARNING_PERIOD, fail)
    state_path = raw.get("state", {}).get("path")
    if state_path is not None and (not isinstance(state_path, str) or not state_path or "\0" in state_path):
        raise fail("state.path must be a file path")

    metrics = _metrics(raw.get("metrics", {}), fail)
    capture = raw.get("capture", {})
    if "buffer_mib" in capture:
        buffer_mib = _positive_int(capture["buffer_mib"], "capture.buffer_mib", 65536, fail, "MiB (64 GiB)")
    else:
        buffer_mib = capture_ring_mib(_machine_memory())

    allow_raw = raw.get("allow", [])
    if not isinstance(allow_raw, list):
        raise fail("allow must be an array of tables: [[allow]]")
    rules = tuple(_allow_rule(entry, i, fail) for i, entry in enumerate(allow_raw, 1))

    return Config(
        sensor_name=name,
        camera_networks=camera,
        core_networks=core,
        allow=rules,
        flows=FlowSettings(**flow_kwargs),
        episode_timeout=episode_timeout,
        max_devices=max_devices,
        max_names=max_names,
        learning_period=learning_period,
        state_path=state_path,
        metrics=metrics,
        capture_buffer_mib=buffer_mib,
        source=source,
    )


# ---- messages ----------------------------------------------------------------------------------------------
def _name(key: str) -> str:
    """A key from the file as it may appear in a one-line message: bare if it is a plain TOML bare key, quoted
    (newlines and control characters escaped, length capped) if not."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else _quote(key)


def _quote(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


# C901 debt, complexity 16 (limit 15, pyproject.toml [tool.ruff.lint.mccabe]): a one-pass TOML scanner (strings,
# comments, brackets); split it before it grows.
def _deepest_statement(text: str, stop_at: int | None = None) -> tuple[str, int] | None:  # noqa: C901
    """(dotted key, line) of the TOML statement nesting [ and { deepest, or of the statement at offset `stop_at`.

    Only for naming the key in an error after tomllib has refused the text: a scan that knows strings, comments
    and table headers, not a parser, and it never recurses."""
    table = key = ""
    line, depth, in_value, statement = 1, 0, False, 0
    best: tuple[int, str, int] | None = None
    i, n = 0, len(text)

    def dotted() -> str:
        return ".".join(filter(None, (table, key)))

    def shown(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) else _quote(name) if name else "(top level)"

    while i < n:
        if stop_at is not None and i >= stop_at:
            return shown(dotted()), line
        c = text[i]
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j) and (len(quote) == 3 or text[j] != "\n"):
                j += 2 if c == '"' and text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        if c == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if c == "\n":
            line += 1
            if depth == 0:
                in_value, statement = False, i + 1
        elif not in_value and depth == 0 and c == "[":
            end = text.find("\n", i)
            end = n if end < 0 else end
            table, key = text[i:end].split("#")[0].strip().strip("[]").strip(), ""
            i = end
            continue
        elif not in_value and c == "=":
            key, in_value = text[statement:i].strip(), True
        elif in_value and c in "[{":
            depth += 1
            if best is None or depth > best[0]:
                best = (depth, dotted(), line)
        elif in_value and c in "]}":
            depth = max(0, depth - 1)
        i += 1
    if best is None or stop_at is not None:
        return None
    return shown(best[1]), best[2]


# ---- values ------------------------------------------------------------------------------------------------
def _seconds(value: Any, key: str, maximum: float, fail) -> float:
    # NaN compares false with everything, so "value <= 0" alone let it through; inf never expires anything
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value)) or not 0 < value <= maximum):
        raise fail(f"{key} must be a positive number of seconds, at most {maximum:.0f} ({maximum / DAY:.0f} days)")
    return float(value)


def _positive_int(value: Any, key: str, maximum: int, fail, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise fail(f"{key} must be a positive integer, at most {maximum}{' ' + unit if unit else ''}")
    return value


def _network(text: str, key: str, fail, broad_hint: str = "") -> IPNetwork:
    """A strict IP network: a typo that still parses with host bits set (10.1.5.10/8) would silently widen it."""
    if "%" in text:
        raise fail(f"{key} {_quote(text)}: scoped addresses (%zone) are not supported")
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise fail(f"{key} {_quote(text)} is not an IP network (an address or CIDR)") from None
    host = ipaddress.ip_interface(text).ip
    if _covers_public_space(loose):
        raise fail(f"{key} {_quote(text)} has host bits set: write {host} for the one host; {loose} would cover "
                   f"public address space wholesale{broad_hint}")
    raise fail(f"{key} {_quote(text)} has host bits set: write {loose} for the network, "
               f"or {host} for the one host")


def _covers_public_space(net: IPNetwork) -> bool:
    # subnet_of wants the same IP version, which the version test gives; mypy cannot pair the two unions.
    return net.prefixlen < BROAD_PREFIX[net.version] and not any(
        net.version == w.version and net.subnet_of(w) for w in _WIDE_BUT_NOT_PUBLIC)  # type: ignore[arg-type]


def _networks(value: Any, key: str, fail, refuse_broad: bool) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list):
        raise fail(f"{key} must be a list of CIDR strings")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise fail(f"{key}: every entry must be a CIDR string, not a {type(item).__name__}")
        net = _network(item, key, fail)
        # Every address inside the camera networks is camera-side, so traffic to it is never egress: a public
        # range here silences the egress alerts for all of it. A wide core network only makes more alerts.
        if refuse_broad and _covers_public_space(net):
            raise fail(f"{key} {_quote(item)} covers public address space wholesale (wider than "
                       f"/{BROAD_PREFIX[net.version]}): camera-side traffic to it would never be egress")
        out.append(net)
    return tuple(out)


_WILDCARD = re.compile(r"[*?]")


def _dns_pattern(dst: str, where: str, allow_all: bool, fail) -> tuple[str, bool]:
    """A DNS name pattern, lowercased, and whether it is broad enough to need `allow_all`.

    A wildcard must be followed by at least two whole literal labels ('*.example.com'): fnmatch's '*' also
    crosses dots and label boundaries, so '*example.com' matches 'evilexample.com', and '*', '*.*' or '*.com'
    allow every name, or a whole TLD."""
    pattern = dst.lower()
    if not re.fullmatch(r"[a-z0-9_*?.-]+", pattern):
        raise fail(f"{where}.dst {_quote(dst)} is neither an IP/CIDR nor a DNS name pattern (letters, digits, "
                   "'-', '_', '.', and the wildcards '*' and '?'; internationalised names in punycode)")
    body = pattern[:-1] if pattern.endswith(".") else pattern
    labels = body.split(".")
    if "" in labels or len(body) > 253 or any(len(label) > 63 for label in labels):
        raise fail(f"{where}.dst {_quote(dst)} is not a DNS name pattern (empty label, or a label over 63 "
                   "characters, or a name over 253)")
    # No top-level domain is all digits: such a name is an address typo, and as a name pattern it would only
    # ever match DNS names, never the address meant.
    if all(re.fullmatch(r"[0-9*?]+", label) for label in labels) and re.search(r"[0-9]", body):
        if _WILDCARD.search(body):
            raise fail(f"{where}.dst {_quote(dst)} looks like an address with wildcards: write a CIDR, "
                       "e.g. 10.1.5.0/24")
        raise fail(f"{where}.dst {_quote(dst)} looks like an IP address or CIDR but is not a valid one")
    wild = [i for i, label in enumerate(labels) if _WILDCARD.search(label)]
    broad = bool(wild) and len(labels) - wild[-1] - 1 < 2
    if broad and not allow_all:
        raise fail(f"{where}.dst {_quote(dst)} is too broad: a wildcard must be followed by at least two whole "
                   "labels, as in '*.example.com' (so not '*', '*.com' or '*example.com'); if this rule really "
                   "must allow that much, say so with allow_all = true on it")
    return pattern, broad


def _allow_rule(entry: Any, index: int, fail) -> AllowRule:
    where = f"allow[{index}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} must be a table")
    unknown = set(entry) - _ALLOW_KEYS
    if unknown:
        raise fail(f"unknown key {where}.{_name(sorted(unknown)[0])} (known: {', '.join(sorted(_ALLOW_KEYS))})")
    if "dst" not in entry:
        raise fail(f"{where} needs dst (an IP, CIDR or DNS name pattern)")
    dst = entry["dst"]
    if not isinstance(dst, str) or not dst:
        raise fail(f"{where}.dst must be a non-empty string")
    allow_all = entry.get("allow_all", False)
    if not isinstance(allow_all, bool):
        raise fail(f"{where}.allow_all must be true or false")
    network = pattern = None
    # Whatever could be meant as an address is parsed as one, strictly: "10.1.5.300" or "10.1.5.0/33" must not
    # fall through to a DNS name pattern that silently matches nothing.
    if "/" in dst or ":" in dst or "%" in dst:
        network = _network(dst, f"{where}.dst", fail, " (and needs allow_all = true on the rule)")
        broad = _covers_public_space(network)
        if broad and not allow_all:
            raise fail(f"{where}.dst {_quote(dst)} covers public address space wholesale (wider than "
                       f"/{BROAD_PREFIX[network.version]}); if this rule really must allow that much, say so "
                       "with allow_all = true on it")
    else:
        try:
            network = ipaddress.ip_network(dst)   # a bare address: always one host
            broad = False
        except ValueError:
            pattern, broad = _dns_pattern(dst, where, allow_all, fail)
    if allow_all and not broad:
        raise fail(f"{where}.allow_all = true, but dst {_quote(dst)} is not a rule that needs it: remove "
                   "allow_all (it acknowledges /0-like networks and patterns like '*' only)")
    port = entry.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise fail(f"{where}.port must be an integer from 1 to 65535")
    proto = entry.get("proto")
    if proto is not None and proto not in PROTOCOLS:
        raise fail(f"{where}.proto must be one of {', '.join(PROTOCOLS)}")
    comment = entry.get("comment", "")
    if not isinstance(comment, str):
        raise fail(f"{where}.comment must be a string")
    return AllowRule(dst_network=network, dst_pattern=pattern, port=port, proto=proto, comment=comment,
                     allow_all=allow_all)


# ---- metrics -----------------------------------------------------------------------------------------------
def parse_password_hash(hashed: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, digest) of a `camwatch hash-password` hash; ValueError saying what is wrong.

    Checked at load so that a damaged or hostile hash is a config error, not a per-request surprise: a huge
    iteration count would make every scrape, and every guess, cost minutes of CPU."""
    parts = hashed.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2_sha256":
        raise ValueError("must be a hash from camwatch hash-password (pbkdf2_sha256$...), not a password")
    iterations, salt, digest = parts[1:]
    if not re.fullmatch(r"[1-9][0-9]{0,8}", iterations) or not (
            PBKDF2_MIN_ITERATIONS <= int(iterations) <= PBKDF2_MAX_ITERATIONS):
        raise ValueError(f"iterations must be a whole number from {PBKDF2_MIN_ITERATIONS} to "
                         f"{PBKDF2_MAX_ITERATIONS}")
    raw_salt, raw_digest = _base64(salt), _base64(digest)
    if raw_salt is None or not PBKDF2_SALT_BYTES[0] <= len(raw_salt) <= PBKDF2_SALT_BYTES[1]:
        raise ValueError(f"salt must be {PBKDF2_SALT_BYTES[0]} to {PBKDF2_SALT_BYTES[1]} bytes in base64")
    if raw_digest is None or len(raw_digest) != PBKDF2_DIGEST_BYTES:
        raise ValueError(f"digest must be {PBKDF2_DIGEST_BYTES} bytes (SHA-256) in base64")
    return int(iterations), raw_salt, raw_digest


def _base64(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode() == text else None   # one spelling per value


def _metrics(raw: dict, fail) -> MetricsSettings:
    for key in ("listen", "tls_cert", "tls_key", "client_ca"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key] or "\0" in raw[key]):
            raise fail(f"metrics.{key} must be a non-empty string")
    if ("tls_cert" in raw) != ("tls_key" in raw):
        raise fail("metrics.tls_cert and metrics.tls_key go together")
    if "client_ca" in raw and "tls_cert" not in raw:
        raise fail("metrics.client_ca needs metrics.tls_cert and metrics.tls_key")
    users = raw.get("basic_auth", {})
    if not isinstance(users, dict):
        raise fail('metrics.basic_auth must be a table of user = "hash" (from camwatch hash-password)')
    costs = {}
    for user, hashed in users.items():
        key = f"metrics.basic_auth.{_name(user)}"
        # HTTP basic auth splits user from password at the first colon: such a user could never log in
        if not user or len(user) > 64 or ":" in user or not user.isprintable():
            raise fail(f"{key}: a user name is 1 to 64 printable characters without ':'")
        if not isinstance(hashed, str):
            raise fail(f"{key} must be a hash from camwatch hash-password, not a password")
        try:
            costs[user] = parse_password_hash(hashed)[0]
        except ValueError as exc:
            raise fail(f"{key} {exc}") from None
    # An unknown user name is checked against a decoy hash of this same cost; with mixed costs, the time a
    # wrong password takes would tell which names exist.
    if len(set(costs.values())) > 1:
        first = min(costs)
        user = min(u for u in costs if costs[u] != costs[first])
        raise fail(f"metrics.basic_auth.{_name(user)}: every basic_auth hash must use the same iteration count "
                   f"(found {', '.join(map(str, sorted(set(costs.values()))))}); make them all with "
                   "camwatch hash-password")
    return MetricsSettings(raw.get("listen"), raw.get("tls_cert"), raw.get("tls_key"), raw.get("client_ca"),
                           tuple(sorted(users.items())))
