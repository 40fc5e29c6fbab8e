"""sensor/alerting.py: the alert budget per device, its window equal to alerts.episode_timeout at the boundary,
and the line that says it is suppressing."""

from __future__ import annotations

import pytest

from sensor.alerting import ALERTS_PER_DEVICE, FLOOD_DEVICES, AlertGate
from sensor.detect import Alert
from sensor.enrich.geography import NO_PLACE

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


# ---- flood summaries (mutation testing, docs/mutation-core.md) ------------------------------------------------
def _flood_alert(ts: float, device_ip: str, severity: str = "low", vlan: int = 20, summary: str = "s") -> Alert:
    return Alert(ts, "camwatch", "egress_policy", severity, device_ip, None, None, PEER, 443, "tcp", None, "public",
                 1.0, summary, vlan, {"k": 1})


def _flood(gate: AlertGate, devices: int, start: float = T0, vlan: int = 20) -> list:
    out = []
    for i in range(devices):
        severity = "high" if i == FLOOD_DEVICES + 1 else "low"
        out += gate.admit(_flood_alert(start + i * 0.5, f"10.20.1.{i}", severity, vlan, f"alert {i}"))
    return out


def test_fifty_devices_are_written_and_the_rest_summarised_once_the_window_has_passed():
    gate = AlertGate(3600.0)
    written = _flood(gate, FLOOD_DEVICES + 3)
    assert len(written) == FLOOD_DEVICES and gate.suppressed == {"egress_policy": 3}
    assert gate.admit(_flood_alert(T0 + 30.0, "10.20.1.7")) != []      # a device already writing goes on
    assert gate.flush(T0 + 60.0) == []                                  # the window is 60 s, exclusive
    [summary] = gate.flush(T0 + 60.0 + 1 / 1024)
    assert summary.as_dict() == {
        "ts": T0 + 26.0, "sensor": "camwatch", "detector": "egress_policy", "severity": "high",
        "device": {"ip": "10.20.1.50", "mac": None, "vendor": None},
        "destination": {"ip": PEER, "port": 443, "proto": "tcp", "name": None, "scope": "public", **NO_PLACE},
        "score": 1.0, "summary": "Flood on VLAN 20: 3 further egress_policy alerts from 3 camera-side devices within "
        "26 s were counted, not written, after 50 devices had raised one (forged sources, a scan or a worm). The first "
        "held back: alert 50", "vlan": 20, "k": 1,
        "flood": {"alerts": 3, "devices": 3, "window_start": T0, "window_end": T0 + 26.0}}
    assert gate.flush(T0 + 1000.0, final=True) == []                    # summarised once


def test_the_next_alert_of_the_pair_releases_the_summary_and_opens_a_new_window():
    gate = AlertGate(3600.0)
    _flood(gate, FLOOD_DEVICES + 1)
    out = gate.admit(_flood_alert(T0 + 61.0, "10.20.2.1"))
    assert [line.extra.get("flood", {}).get("alerts") for line in out] == [1, None]
    assert out[1].device_ip == "10.20.2.1"


def test_floods_are_per_vlan_and_final_flushes_every_window():
    gate = AlertGate(3600.0)
    _flood(gate, FLOOD_DEVICES + 2, vlan=20)
    _flood(gate, FLOOD_DEVICES, vlan=30)                                # at the bound, nothing held back
    assert gate.suppressed == {"egress_policy": 2}
    assert gate.flush(T0 + 1.0) == []
    assert [s.vlan for s in gate.flush(T0 + 1.0, final=True)] == [20]
    assert gate.flush(T0 + 1.0, final=True) == []


def test_a_device_over_its_budget_is_counted_per_detector_and_device():
    gate = AlertGate(100.0)
    for _ in range(ALERTS_PER_DEVICE + 1):
        gate.admit(_alert(T0))
    assert gate.admit(_alert(T0, "10.20.0.12")) != []                   # another device has its own budget
    assert gate.suppressed == {}
    assert gate.budgets_evicted == 0
    small = AlertGate(100.0, max_budgets=1)
    small.admit(_alert(T0))
    small.admit(_alert(T0, "10.20.0.12"))
    assert small.budgets_evicted == 1


def test_the_notice_is_appended_to_the_summary_and_a_new_window_has_a_full_budget():
    gate = AlertGate(100.0)
    lines = [line for _ in range(ALERTS_PER_DEVICE + 1) for line in gate.admit(_alert(T0))]
    assert lines[-1].summary == (f"s This device has raised {ALERTS_PER_DEVICE} egress_policy alerts within 100 s; "
                                 "further ones are counted, not written, until that time has passed.")
    later = [line for _ in range(ALERTS_PER_DEVICE + 2) for line in gate.admit(_alert(T0 + 101.0))]
    assert [bool(line.extra.get("suppressing")) for line in later] == [False] * ALERTS_PER_DEVICE + [True]


def test_a_flood_within_one_second_spans_0_s():
    gate = AlertGate(3600.0)
    for i in range(FLOOD_DEVICES + 2):
        gate.admit(_flood_alert(T0, f"10.20.1.{i}"))
    [summary] = gate.flush(T0, final=True)
    assert "from 2 camera-side devices within 0 s were counted" in summary.summary
    assert summary.extra["flood"] == {"alerts": 2, "devices": 2, "window_start": T0, "window_end": T0}


def test_a_pair_releases_only_its_own_summary_and_a_flush_looks_at_every_window():
    gate = AlertGate(3600.0)
    _flood(gate, FLOOD_DEVICES + 1, start=T0 + 30.0, vlan=30)      # its window started 30 s later
    _flood(gate, FLOOD_DEVICES + 1, start=T0, vlan=20)
    released = gate.admit(_flood_alert(T0 + 61.0, "10.20.9.9", vlan=40))
    assert released == [released[0]] and released[0].vlan == 40 and "flood" not in released[0].extra
    assert [s.vlan for s in gate.flush(T0 + 61.0)] == [20]          # VLAN 30's window is younger: not yet
    assert [s.vlan for s in gate.flush(T0 + 91.0)] == [30]


def test_lazy_admission_writes_what_admit_writes_and_builds_only_what_it_keeps():
    """admit_lazily against admit on one random storm (a flood of devices, repeat offenders past their budget, two
    detectors and VLANs, windows passing): the same lines field for field, the same counts, the same flood
    summaries; and an alert is built only when written, amended, or kept as a window's first example."""
    import random

    rng = random.Random(16)
    eager, lazy = AlertGate(300.0), AlertGate(300.0)
    eager_lines: list[dict] = []
    lazy_lines: list[dict] = []
    built = kept = 0
    ts = T0
    for i in range(3000):
        ts += rng.choice([0.0, 0.001, 0.01, 0.05]) if i % 1000 else 70.0   # a new flood window now and then
        device = f"10.20.{rng.randrange(4)}.{rng.randrange(120 if i % 3 else 3)}"
        detector, vlan = rng.choice(["egress_policy", "jurisdiction"]), rng.choice([20, 30])
        severity = rng.choice(["low", "medium", "high"])

        def make(ts=ts, device=device, detector=detector, vlan=vlan, severity=severity, i=i) -> Alert:
            return Alert(ts, "camwatch", detector, severity, device, None, None, PEER, 443, "tcp", None, "public",
                         1.0, f"alert {i}", vlan, {"k": i})

        eager_lines += [a.as_dict() for a in eager.admit(make())]
        calls = []

        def counted(make=make, calls=calls) -> Alert:
            calls.append(1)
            return make()

        summaries, admitted = lazy.admit_lazily(ts, detector, vlan, device, severity, counted)
        lazy_lines += [a.as_dict() for a in summaries] + ([admitted.as_dict()] if admitted is not None else [])
        built += len(calls)
        kept += admitted is not None
    eager_lines += [a.as_dict() for a in eager.flush(ts, final=True)]
    lazy_lines += [a.as_dict() for a in lazy.flush(ts, final=True)]
    assert lazy_lines == eager_lines
    assert lazy.suppressed == eager.suppressed and sum(lazy.suppressed.values()) > 1000
    assert any("flood" in line for line in lazy_lines) and any(line.get("suppressing") for line in lazy_lines)
    assert kept <= built < kept + 200   # the held-back thousands were counted, not built
