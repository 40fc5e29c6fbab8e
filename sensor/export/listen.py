"""The metrics endpoint's address, as --serve and `metrics.listen` give it: parsed without loading the HTTP server,
TLS or prometheus_client, which only a run that serves needs."""

from __future__ import annotations

from sensor.errors import CamwatchError

DEFAULT_METRICS_ADDRESS = ("127.0.0.1", 9847)


def parse_listen(value: str) -> tuple[str, int]:
    """ADDR:PORT, [V6]:PORT or :PORT (loopback)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port, printed at start
        raise CamwatchError(f"--serve {value!r}: expected ADDR:PORT, e.g. 127.0.0.1:{DEFAULT_METRICS_ADDRESS[1]}")
    host = host.strip("[]") or DEFAULT_METRICS_ADDRESS[0]
    return host, int(port)
