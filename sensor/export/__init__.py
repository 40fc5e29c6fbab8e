"""Export stage: Prometheus metrics, the alert log, and the HTTP endpoint serving /metrics, /inventory, /countries,
/healthz and /readyz.

Nothing on the packet path touches prometheus_client: at scrape time `snapshot.take_snapshot` copies the sensor's
own counters under its lock, and the collectors in `collectors` render that copy, so instrumentation costs nothing
per packet.

    snapshot.py    SensorSnapshot, and take_snapshot: the one reader of the sensor's internals
    collectors.py  small prometheus_client collectors over a snapshot; SensorCollector runs them all from one
    listen.py      the endpoint's address (--serve, metrics.listen), parsed without loading the server
    server.py      the HTTP endpoint (prometheus_client's server, with camwatch's routes and TLS)
    auth.py        basic auth with pbkdf2 hashes
    alert_log.py   alert JSON lines
    flow_log.py    flow records (--flows): a JSON line per ended flow, Zeek conn.log fields and camwatch's own
    lines.py       the one JSON-lines writer under both: buffering, reopening on SIGHUP, riding out a full disk
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from sensor.errors import CamwatchError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sensor.export.alert_log import AlertLog
    from sensor.export.auth import PBKDF2_ITERATIONS, BasicAuth, hash_password, verify_password
    from sensor.export.collectors import SensorCollector
    from sensor.export.listen import DEFAULT_METRICS_ADDRESS, parse_listen
    from sensor.export.server import MetricsServer
    from sensor.export.snapshot import TOP_DESTINATIONS, SensorSnapshot, take_snapshot
    from sensor.pipeline import Sensor

# Each name is imported from its module on first use (PEP 562): a replay that neither serves nor writes metrics
# never loads prometheus_client, the HTTP server or TLS, which is most of camwatch's start-up otherwise.
_HOMES = {"AlertLog": "alert_log", "PBKDF2_ITERATIONS": "auth", "BasicAuth": "auth", "hash_password": "auth",
          "verify_password": "auth", "SensorCollector": "collectors", "DEFAULT_METRICS_ADDRESS": "listen",
          "MetricsServer": "server", "parse_listen": "listen", "TOP_DESTINATIONS": "snapshot",
          "SensorSnapshot": "snapshot", "take_snapshot": "snapshot"}


def __getattr__(name: str):
    if name == "DETECTORS":
        return _detectors()
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"sensor.export.{home}"), name)

__all__ = [
    "DEFAULT_METRICS_ADDRESS", "DETECTORS", "PBKDF2_ITERATIONS", "TOP_DESTINATIONS", "AlertLog", "BasicAuth",
    "MetricsServer", "SensorCollector", "SensorSnapshot", "build_registry", "hash_password", "parse_listen",
    "take_snapshot", "verify_password", "write_metrics_file",
]

_DETECTORS: tuple[str, ...] | None = None


def _detectors() -> tuple[str, ...]:
    """Every registered detector's name (DETECTORS): each has its alert series, at zero until it fires. Read from
    the registry on first use, not at import: the registry imports every detector, and with them numpy and the
    pipeline, which commands that only parse an address or hash a password do not need."""
    global _DETECTORS
    if _DETECTORS is None:
        from sensor.detect.registry import names
        _DETECTORS = names()
    return _DETECTORS


def build_registry(sensor: Sensor, process: bool = True) -> CollectorRegistry:
    """The sensor's collectors and (process) the Python process's own: CPU, memory, descriptors."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    from sensor.export.collectors import SensorCollector

    # Not described up front (that would take a snapshot at registration), so /metrics?name[]=... must be told
    # to look in collectors that name nothing in advance.
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(SensorCollector(sensor, _detectors()))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


def write_metrics_file(registry: CollectorRegistry, path: str) -> None:
    """A regular file (or a new one) is replaced whole, through a temporary file and a rename
    (prometheus_client's write_to_textfile), so a textfile collector never reads half of it. Anything else that
    exists (/dev/null, a pipe, a terminal) is written in place: a rename would put a regular file where the
    device was, and as root /dev/null itself would be gone."""
    from prometheus_client import generate_latest, write_to_textfile

    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "wb") as out:
                out.write(generate_latest(registry))
        else:
            write_to_textfile(path, registry)
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot write metrics: {exc.strerror}") from None
