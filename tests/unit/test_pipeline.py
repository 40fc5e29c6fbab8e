"""sensor/pipeline.py: the pipeline spares detectors interested only in the public and core scopes every other
observation, which is sound only if they really ignore them."""

from __future__ import annotations


def test_detectors_marked_external_only_ignore_every_other_scope():
    """The pipeline spares detectors whose `interest` is the public and core scopes observations of other peers
    (most of all the video to the recorder); that is only sound if those detectors really do nothing with them."""
    from collections import deque
    from ipaddress import ip_address

    from sensor.config import Config
    from sensor.detect import DETECTORS, Observation
    from sensor.enrich import EXTERNAL_SCOPES, SCOPE_CORE, SCOPE_PUBLIC, SCOPES
    from sensor.pipeline import Sensor

    sensor = Sensor(Config())
    dev = sensor.inventory.touch(ip_address("10.20.0.9"), 0x04031200_0009, 1_700_000_000.0)
    external_only = [d for d in sensor.detectors if d.interest <= EXTERNAL_SCOPES]
    assert [d.name for d in external_only] == [c.name for c in DETECTORS if c.interest <= EXTERNAL_SCOPES]

    def state():
        sized = {(d.name, k): len(v) for d in external_only for k, v in vars(d).items()
                 if isinstance(v, (dict, set, list, deque))}
        return sized, len(sensor.episodes._open), dict(sensor.known._destinations)

    before = state()
    ports = [(proto, port) for proto in ("tcp", "udp") for port in (53, 80, 123, 443, 554, 8000, 32100, 37810)]
    for scope in set(SCOPES) - {SCOPE_PUBLIC, SCOPE_CORE}:
        for k, (proto, port) in enumerate(ports):
            for initiated in (True, False):
                obs = Observation(1_700_000_000.0 + k, dev, 500, 700_000, initiated, "198.51.100.7", port, proto,
                                  "p2p.example.com", scope, 20, None, True)
                assert all(d.observe(obs) is None for d in external_only), (scope, proto, port)
    assert state() == before
