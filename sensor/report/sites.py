"""The report's own part of camwatch.toml: `[sites.<name>]` tables saying which subnets a site covers and whether
it is sensitive (the directive's "sensitive sites").

sensor/config.py does not know `[sites]` yet, so `camwatch report` takes it out of the file before the rest goes
through the sensor's own strict loading, and checks it here the same way: an unknown key, a wrong type or a loose
subnet is an error naming the key. The sensor commands (replay, run) still refuse a file with `[sites]`; until
they learn it, keep the sites in the copy of the config given to `camwatch report`.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor.config import MAX_CONFIG_BYTES, Config, load_config, parse_config
from sensor.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SITE_KEYS = ("sensitive", "subnets", "comment")


@dataclass(frozen=True)
class Site:
    name: str
    sensitive: bool
    subnets: tuple[IPNetwork, ...]

    def covers(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in net for net in self.subnets)


def load_report_config(path: str | None) -> tuple[Config, tuple[Site, ...]]:
    if path is None:
        return Config(), ()
    raw = _read_toml(path)
    sites = _sites(raw.pop("sites", {}), path)
    return parse_config(raw, path), sites


def _read_toml(path: str) -> dict[str, Any]:
    # Whatever fails here fails again in load_config, which words every such error the way the sensor does.
    try:
        data = Path(path).read_bytes()
        if len(data) <= MAX_CONFIG_BYTES:
            return tomllib.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        pass
    load_config(path)
    raise ConfigError(f"{path}: cannot read config")   # not reached: load_config refused the same file


def _sites(value: Any, path: str) -> tuple[Site, ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: sites must be tables: [sites.NAME]")
    return tuple(_site(name, table, path) for name, table in value.items())


def _site(name: str, table: Any, path: str) -> Site:
    where = f"sites.{name}" if name.replace("-", "").replace("_", "").isalnum() else f'sites."{name[:64]}"'
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {where} must be a table: [{where}]")
    for key in table:
        if key not in SITE_KEYS:
            raise ConfigError(f"{path}: unknown key {where}.{key} (known: {', '.join(SITE_KEYS)})")
    sensitive = table.get("sensitive", False)
    if not isinstance(sensitive, bool):
        raise ConfigError(f"{path}: {where}.sensitive must be true or false")
    subnets = table.get("subnets", [])
    if not isinstance(subnets, list) or not subnets:
        raise ConfigError(f"{path}: {where}.subnets must be a non-empty array of subnets, e.g. [\"10.20.0.0/24\"]")
    return Site(name, sensitive, tuple(_subnet(s, f"{where}.subnets[{i}]", path) for i, s in enumerate(subnets)))


def _subnet(text: Any, key: str, path: str) -> IPNetwork:
    if not isinstance(text, str):
        raise ConfigError(f"{path}: {key} must be a string (an address or CIDR)")
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{path}: {key} {text[:64]!r} is not an IP network (an address or CIDR)") from None
    # As in [networks]: a typo with host bits set must not silently widen what counts as a sensitive site.
    raise ConfigError(f"{path}: {key} {text!r} has host bits set: write {loose} for the network, "
                      f"or {ipaddress.ip_interface(text).ip} for the one host")
