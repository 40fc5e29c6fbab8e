"""sensor/alerting.py: the alert budget per device, its window equal to alerts.episode_timeout at the boundary,
and the line that says it is suppressing."""

from __future__ import annotations

import pytest

from sensor.alerting import ALERTS_PER_DEVICE, AlertGate
from sensor.detect import Alert

T0 = 1_700_000_000.0
EPS = 1 / 1024
OFFSETS = {"just_before": -EPS, "at": 0.0, "just_after": EPS}
PEER = "198.51.100.7"


def _alert(ts: float, device_ip: str = "10.20.0.11") -> Alert:
    return Alert(ts, "camwatch", "egress_policy", "medium", device_ip, None, None, PEER, 443, "tcp", None,
                 "public", 1.0, "s", 20)


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
def test_alert_budget_window_is_the_episode_timeout(offset):
    """ALERTS_PER_DEVICE alerts are written, the next one says it is suppressing, further ones are counted only,
    until episode_timeout has passed since the window started: at it still counted, just after written again."""
    gate = AlertGate(100.0)
    written = [len(gate.admit(_alert(T0))) for _ in range(ALERTS_PER_DEVICE + 3)]
    assert written == [1] * (ALERTS_PER_DEVICE + 1) + [0, 0]
    assert gate.suppressed["egress_policy"] == 2
    out = gate.admit(_alert(T0 + 100.0 + offset))
    if offset > 0:
        assert len(out) == 1 and "suppressing" not in out[0].extra and gate.suppressed["egress_policy"] == 2
    else:
        assert out == [] and gate.suppressed["egress_policy"] == 3


def test_the_alert_past_the_budget_is_marked_suppressing():
    gate = AlertGate(100.0)
    lines = [line for _ in range(ALERTS_PER_DEVICE + 1) for line in gate.admit(_alert(T0))]
    assert [bool(line.extra.get("suppressing")) for line in lines] == [False] * ALERTS_PER_DEVICE + [True]
    assert f"raised {ALERTS_PER_DEVICE} egress_policy alerts within 100 s" in lines[-1].summary
