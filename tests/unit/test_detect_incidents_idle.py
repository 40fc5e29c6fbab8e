"""sensor/detect/incidents.py: Incidents.idle(now), which lets the detection stage skip a second's line-writing,
says idle only when take_closed(now) and take_changes() would hand back nothing; and the detection stage's tick
writes the same lines with the shortcut as without it."""

from __future__ import annotations

import random

import pytest

from sensor.detect import Alert
from sensor.detect.framework import Detection
from sensor.detect.incidents import Incidents
from sensor.detect.indicators import Indicators
from sensor.detect.services import ServiceResolver

from .observations import device, observation
from .test_detect_incidents import _detection

T0 = 1_700_000_000.0


def _alert(ts: float, dst: str, detector: str = "egress_policy", severity: str = "medium") -> Alert:
    return Alert(ts, "site", detector, severity, "10.20.0.5", None, None, dst, 443, "tcp", None, "public", 1.0,
                 f"{detector} saw it", 20, {})


def _steps(rng: random.Random, n: int):
    """Detections, traffic and seconds passing, with gaps past the timeout now and then."""
    now = T0
    for _ in range(n):
        now += rng.choice((0.0, 0.3, 1.0, 1.0, 5.0, 40.0, 120.0))
        yield now, rng.random(), f"203.0.113.{rng.randint(1, 6)}"


@pytest.mark.parametrize("seed", range(12))
def test_idle_means_nothing_to_take(seed):
    rng = random.Random(seed)
    resolver = ServiceResolver(Indicators.load())
    inc = Incidents("site", 100.0, rng.choice((2, 3, 1000)))
    devices = [device(), device("10.20.0.6")]
    seen = {True: 0, False: 0}
    for now, pick, dst in _steps(rng, 300):
        dev = rng.choice(devices)
        if pick < 0.25:
            inc.detect(_alert(now, dst, severity=rng.choice(("low", "medium", "high"))),
                       resolver.of_destination(dst, None), dev, None)
        elif pick < 0.5:
            inc.traffic(observation(dev, ts=now, peer=dst), resolver.of_destination(dst, None))
        idle = inc.idle(now)
        seen[idle] += 1
        closed, changes = inc.take_closed(now), inc.take_changes()
        if idle:
            assert closed == [] and changes == []
        for incident, _event, _ts in changes:
            incident.written = True
    assert seen[True] and seen[False]


def _lines(detection: Detection, seed: int, shortcut: bool) -> list[tuple]:
    rng = random.Random(seed)
    lines: list[tuple] = []
    detection.on_alert = lambda a: lines.append((a.ts, a.extra.get("event"), a.dst_ip, a.extra.get("reason")))
    if not shortcut:
        detection.incidents.idle = lambda now: False   # every second writes as before the shortcut
    dev = device()
    for now, pick, dst in _steps(rng, 200):
        if pick < 0.3:
            detection.emit(_alert(now, dst, detector=rng.choice(("egress_policy", "beaconing"))))
        elif pick < 0.5:
            detection.incidents.traffic(observation(dev, ts=now, peer=dst),
                                        detection.services.of_destination(dst, None))
        detection.tick(now)
    detection.tick(now + 1, final=True)
    return lines


@pytest.mark.parametrize("seed", range(6))
def test_tick_writes_the_same_lines_with_the_shortcut(seed):
    with_shortcut = _lines(_detection()[0], seed, True)
    assert with_shortcut == _lines(_detection()[0], seed, False)
    assert any(event == "close" for _ts, event, _dst, _reason in with_shortcut)
