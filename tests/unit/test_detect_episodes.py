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
    is the same episode and incident (one open line, one close at the end); after 100 s + EPS it is a new one: the
    first incident closes when its silence ran out, and a second opens. The UDP flow itself ends after 60 s, so
    the second packet opens a new flow and reaches the detectors at once."""
    alerts = []
    sensor = Sensor(parse_config({"alerts": {"episode_timeout": 100}}), on_alert=alerts.append)
    frame = v4_udp(dst=PEER, dport=9000)
    sensor.process(make_batch([(T0, frame), (T0 + 100.0 + offset, frame)]))
    sensor.finish()
    again = T0 + 100.0 + offset
    lines = [(a.detector, a.extra["event"], a.ts, a.extra.get("reason")) for a in alerts]
    if offset > 0:
        assert lines == [("egress_policy", "open", T0, None), ("egress_policy", "close", T0 + 100.0, "silence"),
                         ("egress_policy", "open", again, None), ("egress_policy", "close", again, "end")]
    else:
        assert lines == [("egress_policy", "open", T0, None), ("egress_policy", "close", again, "end")]
    assert sensor.alert_counts[("egress_policy", "medium")] == (2 if offset > 0 else 1)
    opened = [a for a in alerts if a.extra["event"] == "open"]
    assert len({a.extra["incident"] for a in opened}) == len(opened)


# ---- bounds, restore and what the state store is handed (mutation testing, docs/mutation-core.md) -------------
def test_tracked_pairs_are_20_per_device_between_10k_and_100k():
    from sensor.detect.episodes import tracked_pairs
    assert [tracked_pairs(n) for n in (1, 500, 501, 4999, 5000, 5001, 10**6)] == [
        10_000, 10_000, 10_020, 99_980, 100_000, 100_000, 100_000]
    assert Episodes(1.0).max_open == 100_000


def test_a_new_episode_restarts_its_counters_and_the_dirty_rows_are_taken_once():
    ep = Episodes(100.0)
    ep.observe(("d", "x"), T0, 2, 20)
    ep.observe(("d", "x"), T0 + 10, 3, 30)
    assert list(ep.take_dirty()) == [(("d", "x"), T0, T0 + 10, 5, 50)]
    assert list(ep.take_dirty()) == []
    ep.observe(("d", "x"), T0 + 200, 1, 7)
    assert list(ep.take_dirty()) == [(("d", "x"), T0 + 200, T0 + 200, 1, 7)]


def test_restored_episodes_continue_and_a_repeated_key_keeps_its_last_values():
    ep = Episodes(100.0)
    ep.restore([(("d", "x"), T0 - 50, T0 - 40, 1, 1), (("d", "y"), T0, T0, 1, 1), (("d", "x"), T0 - 30, T0 - 20, 4, 9)])
    assert len(ep) == 2 and list(ep.take_dirty()) == []
    assert ep.observe(("d", "x"), T0 + 80, 1, 1) is False         # 100 s after the restored last activity
    assert list(ep.take_dirty()) == [(("d", "x"), T0 - 30, T0 + 80, 5, 10)]


def test_an_evicted_episode_is_forgotten_by_the_state_store_and_counted():
    forgotten = []
    ep = Episodes(100.0, max_open=2)
    ep.on_evict = forgotten.append
    for key in (("a",), ("b",), ("c",)):
        ep.observe(key, T0, 1, 1)
    assert forgotten == [("a",)] and ep.evicted == 1 and len(ep) == 2
    assert sorted(k for k, *_ in ep.take_dirty()) == [("b",), ("c",)]
    assert ep.observe(("a",), T0 + 1, 1, 1) is True                # a new episode: its story was dropped
    lone = Episodes(100.0, max_open=1)                                # without a callback, eviction needs none
    lone.observe(("y",), T0, 1, 1)
    lone.observe(("z",), T0, 1, 1)
    assert lone.evicted == 1 and list(lone.take_dirty()) == [(("z",), T0, T0, 1, 1)]


def test_the_dirty_rows_are_made_as_they_are_taken_from_the_episodes_dirty_at_the_call():
    """take_dirty takes the dirty set at once (an episode changed afterwards is dirty again, for the next flush)
    and makes each row as the caller takes it; an episode evicted meanwhile has none."""
    ep = Episodes(timeout=100.0, max_open=3)
    for key in ("a", "b", "c"):
        ep.observe((key,), T0, 1, 10)
    taken = ep.take_dirty()
    assert ep.dirty == set()
    ep.observe(("d",), T0 + 1, 2, 20)   # evicts ("a",), and is dirty for the next flush
    assert ep.dirty == {("d",)}
    assert sorted(taken) == [(("b",), T0, T0, 1, 10), (("c",), T0, T0, 1, 10)]
    assert list(ep.take_dirty()) == [(("d",), T0 + 1, T0 + 1, 2, 20)]
