"""The estate's sites as the report uses them: `[sites.NAME]` in camwatch.toml (sensor/config.py declares and checks
it, as it does every key), the subnets each covers and whether it is sensitive (the directive's "sensitive sites").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sensor.config import Config, load_config

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Site:
    name: str
    sensitive: bool
    subnets: tuple[IPNetwork, ...]

    def covers(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in net for net in self.subnets)


def load_report_config(path: str | None) -> tuple[Config, tuple[Site, ...]]:
    config = load_config(path) if path is not None else Config()
    return config, tuple(Site(name, site.sensitive, site.subnets) for name, site in config.sites)
