"""FlowTable's compiled path for a window (FlowTable._group_windows and _apply_window: _walk.group, _flows.orient
and _flows.apply handing each other bytes; with flows.Windows, a batch's windows grouped and oriented in one call
each before any is applied) against the paths it replaces: the numpy grouping and orient with the compiled table
step, and the whole Python/numpy reference. Random traffic cut into windows of 1 to 100 packets as the pipeline cuts it
(each window's IP rows of one decoded batch, non-IP frames between them), every protocol, both directions, VLANs,
IPv6, fragments, frames without a MAC, payload tags and a bounded table: the same flows in the same order with the
same values, the same updates and the same flows ended for the same reasons."""

from __future__ import annotations

import random

import numpy as np
import pytest
from link_packets import arp

from sensor import compiled, flows
from sensor.config import FlowSettings
from sensor.decode import decode
from sensor.flows import FlowTable, new_update, orient

from .builders import batch_of
from .test_flows_compiled import _conversations, _frame, _state, _updates
from .test_flows_orient import _columns

pytestmark = pytest.mark.skipif(compiled.flows_extension is None or compiled.extension is None,
                                reason="the C extensions were not built on this machine")

PATHS = {"window": (True, True), "numpy grouping, compiled table": (False, True), "reference": (False, False)}
# flows.Windows: the batch's windows grouped ahead (compiled), each grouped when it comes (compiled: windows too
# big to group ahead), or each through update_apart (the reference)
AHEAD = {"windows ahead": (True, True, 1 << 20), "windows each": (True, True, 0),
         "windows, reference": (False, False, 0)}


def _traffic(rng: random.Random) -> list[tuple]:
    """A few batches, each cut into windows of 1 to 100 packets: (batch, tags, [(start, end)], expiry clock)."""
    conversations, t, out = _conversations(rng), 1_700_000_000.0, []
    for _ in range(4):
        frames, cuts = [], []
        while len(cuts) < 6:
            n = rng.randint(1, 100)
            cuts.append((len(frames), len(frames) + n))
            frames += [(arp(bytes([2, 0, 0, 0, 0, 9]), "10.20.0.9", "10.20.0.1"), 1) if rng.random() < 0.05
                       else _frame(rng, conversations) for _ in range(n)]
        ts = sorted(t + rng.random() * 6 for _ in frames)
        t = ts[-1]
        tags = None if rng.random() < 0.3 else np.array([rng.choice([0, 1, 6, 1 << 63]) for _ in frames], np.uint64)
        out.append((batch_of([f for f, _ in frames], ts=ts, linktype=[lt for _, lt in frames]), tags, cuts,
                    t + rng.choice([0.0, 100.0, 400.0])))
    return out


def _run(monkeypatch, path: str, traffic: list, max_flows: int, apart: bool) -> tuple:
    monkeypatch.setattr(compiled, "group", {**PATHS, **AHEAD}[path][0])
    monkeypatch.setattr(compiled, "table", {**PATHS, **AHEAD}[path][1])
    if path in AHEAD:
        monkeypatch.setattr(flows, "GROUP_AHEAD_ROWS", AHEAD[path][2])
    ended: list[tuple] = []
    ft = FlowTable(FlowSettings(max_flows=max_flows), on_end=lambda f, why: ended.append((f.key, f.first, why)))
    seen = []
    for batch, tags, cuts, now in traffic:
        dec = decode(batch)   # one decoded batch for all its windows, as the pipeline does
        ip = np.flatnonzero(dec.is_ip)
        ip_tags = None if tags is None else tags[ip]
        bounds = np.searchsorted(ip, [start for start, _ in cuts] + [cuts[-1][1]]).tolist()
        windows = ft.windows(dec, ip, ip_tags, bounds) if path in AHEAD else None
        for k, (start, end) in enumerate(cuts):
            lo, hi = np.searchsorted(ip, [start, end])
            rows, row_tags = ip[lo:hi], None if tags is None else tags[ip[lo:hi]]
            if windows is not None:
                fresh, known = windows.update_apart(k)
                seen.append((_updates([new_update(f) for f in fresh]), _updates(known)))
            elif apart:
                fresh, known = ft.update_apart(dec, rows, row_tags)
                seen.append((_updates([new_update(f) for f in fresh]), _updates(known)))
            else:
                seen.append(_updates(ft.update(dec, rows, row_tags)))
            seen.append(_state(ft))
            ft.expire(float(batch.ts[end - 1]))
        ft.expire(now)
    monkeypatch.undo()
    return seen, ended, ft.created, dict(ft.expired), len(ft)


@pytest.mark.parametrize("apart", [False, True], ids=["update", "update_apart"])
@pytest.mark.parametrize("max_flows", [7, 500_000])
@pytest.mark.parametrize("seed", range(6))
def test_the_window_path_equals_the_paths_it_replaces(monkeypatch, seed, max_flows, apart):
    traffic = _traffic(random.Random(seed))
    runs = {path: _run(monkeypatch, path, traffic, max_flows, apart) for path in (*PATHS, *(AHEAD if apart else ()))}
    assert runs["window"] == runs["numpy grouping, compiled table"] == runs["reference"]
    if apart:   # the pipeline's way: a batch's windows grouped ahead, applied one by one between expiries
        assert runs["windows ahead"] == runs["windows each"] == runs["windows, reference"] == runs["reference"]
    # flows were made, updated and ended, not an empty table compared to an empty table
    assert runs["window"][2] > 10 and {why for _, _, why in runs["window"][1]} >= {"idle"}


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_orient_equals_orient(seed):
    """_flows.orient against flows.orient (its numpy and few-groups paths): every protocol, flag byte, port either
    side of 1024, fragments, ICMP types; group positions into rows into the batch's columns."""
    rng = random.Random(seed)
    for _ in range(200):
        dec = _columns(rng, 60)
        rows = np.array(sorted(rng.sample(range(60), rng.randint(1, 40))), np.int64)
        k = rng.randint(1, len(rows))
        first = np.array(rng.sample(range(len(rows)), k), np.int64)
        first_dir = np.array([rng.randrange(2) for _ in range(k)], np.uint8)
        got = compiled.flows_extension.orient(
            dec.proto, dec.fragment.view(np.uint8), dec.sport, dec.dport, dec.tcp_flags, dec.vlan, dec.batch.ts,
            rows, first, first_dir)
        want = orient(dec, rows[first], first_dir)
        for raw, column in zip(got, want, strict=True):
            assert np.frombuffer(raw, column.dtype).tolist() == column.tolist()


def test_the_compiled_orient_refuses_rows_out_of_range():
    rng = random.Random(1)
    dec = _columns(rng, 4)
    cols = (dec.proto, dec.fragment.view(np.uint8), dec.sport, dec.dport, dec.tcp_flags, dec.vlan, dec.batch.ts)
    ext = compiled.flows_extension
    one = np.zeros(1, np.uint8)
    with pytest.raises(ValueError, match="out of range"):
        ext.orient(*cols, np.array([4], np.int64), np.zeros(1, np.int64), one)   # a row past the batch
    with pytest.raises(ValueError, match="out of range"):
        ext.orient(*cols, np.array([0], np.int64), np.array([1], np.int64), one)   # a position past the rows
    with pytest.raises(ValueError, match="out of range"):
        ext.orient(*cols, np.array([-1], np.int64), np.zeros(1, np.int64), one)
    with pytest.raises(ValueError, match="different lengths"):
        ext.orient(*cols[:-1], np.zeros(3), np.zeros(1, np.int64), np.zeros(1, np.int64), one)
    empty = ext.orient(*cols, np.zeros(0, np.int64), np.zeros(0, np.int64), b"")
    assert empty == (b"", b"", b"", b"", b"")
