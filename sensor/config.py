"""camwatch.toml: loading and strict validation.

Every key is checked; an unknown key or a wrong type is a ConfigError naming the key, because a typo in a
security allowlist must never be silently ignored.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
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

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str | None,
                port: int | None, proto: str) -> bool:
        if self.proto is not None and self.proto != proto:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.dst_network is not None:
            return ip in self.dst_network
        return name is not None and name_matches(self.dst_pattern or "", name)

    def describe(self) -> str:
        parts = [str(self.dst_network or self.dst_pattern)]
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.proto:
            parts.append(self.proto)
        return " ".join(parts)


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
    camera_networks_configured: bool = False
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
    "flows": {f for f in FlowSettings.__dataclass_fields__},
    "alerts": {"episode_timeout"},
    "limits": {"max_devices", "max_names"},
    "detect": {"learning_period"},
    "state": {"path"},
    "metrics": {"listen", "tls_cert", "tls_key", "client_ca", "basic_auth"},
    "capture": {"buffer_mib"},
}
_ALLOW_KEYS = {"dst", "port", "proto", "comment"}


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    for section, value in raw.items():
        if section == "allow":
            continue
        if section not in _SCHEMA:
            raise fail(f"unknown section [{section}] (known: {', '.join(sorted([*_SCHEMA, 'allow']))})")
        if not isinstance(value, dict):
            raise fail(f"[{section}] must be a table")
        unknown = set(value) - _SCHEMA[section]
        if unknown:
            raise fail(f"unknown key {section}.{sorted(unknown)[0]} (known: {', '.join(sorted(_SCHEMA[section]))})")

    sensor = raw.get("sensor", {})
    name = sensor.get("name", "camwatch")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise fail("sensor.name must be a non-empty string of at most 64 characters")

    networks = raw.get("networks", {})
    camera = _networks(networks.get("camera", []), "networks.camera", fail)
    core = _networks(networks.get("core", []), "networks.core", fail)

    flows_raw = raw.get("flows", {})
    flow_kwargs: dict[str, Any] = {}
    for key, value in flows_raw.items():
        if key == "max_flows":
            flow_kwargs[key] = _positive_int(value, "flows.max_flows", fail)
        else:
            flow_kwargs[key] = _positive_number(value, f"flows.{key}", fail)

    alerts = raw.get("alerts", {})
    episode_timeout = _positive_number(alerts.get("episode_timeout", 3600.0), "alerts.episode_timeout", fail)
    limits = raw.get("limits", {})
    max_devices = _positive_int(limits.get("max_devices", 10_000), "limits.max_devices", fail)
    max_names = _positive_int(limits.get("max_names", 100_000), "limits.max_names", fail)

    learning_period = _positive_number(raw.get("detect", {}).get("learning_period", 86400.0),
                                       "detect.learning_period", fail)
    state_path = raw.get("state", {}).get("path")
    if state_path is not None and (not isinstance(state_path, str) or not state_path):
        raise fail("state.path must be a file path")

    metrics = _metrics(raw.get("metrics", {}), fail)
    buffer_mib = _positive_int(raw.get("capture", {}).get("buffer_mib", capture_ring_mib(_machine_memory())),
                               "capture.buffer_mib", fail)
    if buffer_mib > 65536:
        raise fail("capture.buffer_mib must be at most 65536 (64 GiB)")

    allow_raw = raw.get("allow", [])
    if not isinstance(allow_raw, list):
        raise fail("allow must be an array of tables: [[allow]]")
    rules = tuple(_allow_rule(entry, i, fail) for i, entry in enumerate(allow_raw, 1))

    return Config(
        sensor_name=name,
        camera_networks=camera,
        camera_networks_configured="camera" in networks,
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


def _metrics(raw: dict, fail) -> MetricsSettings:
    for key in ("listen", "tls_cert", "tls_key", "client_ca"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise fail(f"metrics.{key} must be a non-empty string")
    if ("tls_cert" in raw) != ("tls_key" in raw):
        raise fail("metrics.tls_cert and metrics.tls_key go together")
    if "client_ca" in raw and "tls_cert" not in raw:
        raise fail("metrics.client_ca needs metrics.tls_cert and metrics.tls_key")
    users = raw.get("basic_auth", {})
    if not isinstance(users, dict):
        raise fail('metrics.basic_auth must be a table of user = "hash" (from camwatch hash-password)')
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith("pbkdf2_sha256$") or hashed.count("$") != 3:
            raise fail(f"metrics.basic_auth.{user} must be a hash from camwatch hash-password, not a password")
    return MetricsSettings(raw.get("listen"), raw.get("tls_cert"), raw.get("tls_key"), raw.get("client_ca"),
                           tuple(sorted(users.items())))


def _networks(value: Any, key: str, fail) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list):
        raise fail(f"{key} must be a list of CIDR strings")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise fail(f"{key}: {item!r} is not a string")
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise fail(f"{key}: {item!r} is not an IP network") from None
    return tuple(out)


def _positive_number(value: Any, key: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise fail(f"{key} must be a positive number of seconds")
    return float(value)


def _positive_int(value: Any, key: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(f"{key} must be a positive integer")
    return value


def _allow_rule(entry: Any, index: int, fail) -> AllowRule:
    where = f"allow[{index}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} must be a table")
    unknown = set(entry) - _ALLOW_KEYS
    if unknown:
        raise fail(f"unknown key {where}.{sorted(unknown)[0]} (known: {', '.join(sorted(_ALLOW_KEYS))})")
    if "dst" not in entry:
        raise fail(f"{where} needs dst (an IP, CIDR or DNS name pattern)")
    dst = entry["dst"]
    if not isinstance(dst, str) or not dst:
        raise fail(f"{where}.dst must be a non-empty string")
    network = pattern = None
    try:
        network = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        if not all(c.isalnum() or c in "-.*?_" for c in dst):
            raise fail(f"{where}.dst {dst!r} is neither an IP/CIDR nor a DNS name pattern") from None
        pattern = dst.lower()
    port = entry.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise fail(f"{where}.port must be an integer from 1 to 65535")
    proto = entry.get("proto")
    if proto is not None and proto not in PROTOCOLS:
        raise fail(f"{where}.proto must be one of {', '.join(PROTOCOLS)}")
    comment = entry.get("comment", "")
    if not isinstance(comment, str):
        raise fail(f"{where}.comment must be a string")
    return AllowRule(dst_network=network, dst_pattern=pattern, port=port, proto=proto, comment=comment)
