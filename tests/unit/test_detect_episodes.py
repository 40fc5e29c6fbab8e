"""sensor/detect/episodes.py: alerts.episode_timeout at its boundary (at, just before and just after by 1/1024 s),
silence measured from the last activity, episodes per key, and the timeout read from the config through the sensor."""

from __future__ import annotations

import pytest

from sensor.config import parse_config
from sensor.detect import Episodes
from sensor.pipeline import Sensor

from .test_export import make_batch, v4_udp

T0 = 1_700_000_000.0
EPS = 1 / 1024
OFFSETS = {"just_before": -EPS, "at": 0.0, "just_after": EPS}
PEER = "198.51.100.7"


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
def test_episode_timeout_boundary(offset):
    """Silence of exactly episode_timeout continues the episode; silence EPS longer starts a new one."""
    ep = Episodes(100.0)
    assert ep.observe(("d", "x"), T0, 1, 10) is True
    assert ep.observe(("d", "x"), T0 + 100.0 + offset, 2, 20) is (offset > 0)
    state = ep._open.get(("d", "x"))
    if offset > 0:
        assert (state.first, state.last, state.packets, state.bytes) == (T0 + 100.0 + offset,) * 2 + (2, 20)
    else:
        assert (state.first, state.last, state.packets, state.bytes) == (T0, T0 + 100.0 + offset, 3, 30)


def test_episode_silence_is_measured_from_the_last_activity():
    ep = Episodes(100.0)
    news = [ep.observe(("d", "x"), T0 + 100.0 * k, 1, 5) for k in range(5)]   # every 100 s: one episode
    assert news == [True, False, False, False, False]
    assert ep.observe(("d", "x"), T0 + 50.0, 1, 5) is False   # late, out of order: does not move `last` back
    assert ep._open.get(("d", "x")).last == T0 + 400.0 and ep._open.get(("d", "x")).packets == 6
    assert ep.observe(("d", "x"), T0 + 500.0 + EPS, 1, 5) is True


def test_episodes_are_per_key():
    ep = Episodes(100.0)
    assert [ep.observe(k, T0, 1, 1) for k in (("a", 1), ("a", 2), ("b", 1), ("a", 1))] == [True, True, True, False]
    assert len(ep) == 3


@pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
def test_episode_timeout_from_the_config_file_through_the_sensor(offset):
    """alerts.episode_timeout = 100: a camera talking to one public address again after exactly 100 s of silence
    is the same episode (one egress_policy alert); after 100 s + EPS it is a new one (two). The UDP flow itself
    ends after 60 s, so the second packet opens a new flow and reaches the detectors at once."""
    alerts = []
    sensor = Sensor(parse_config({"alerts": {"episode_timeout": 100}}), on_alert=alerts.append)
    frame = v4_udp(dst=PEER, dport=9000)
    sensor.process(make_batch([(T0, frame), (T0 + 100.0 + offset, frame)]))
    sensor.finish()
    assert [(a.detector, a.ts) for a in alerts] == [("egress_policy", T0)] + (
        [("egress_policy", T0 + 100.0 + offset)] if offset > 0 else [])
    assert sensor.alert_counts[("egress_policy", "medium")] == len(alerts)
