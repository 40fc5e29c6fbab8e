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


def _drive_deferred(traffic: list, max_flows: int, new_flows) -> tuple:
    """The pipeline's use of a window: its new flows back (new_flows(table, decoded, IP rows, their tags, window
    bounds) gives the function of (k, start, end, pending, waiting) that applies window k), then waiting as new
    until their second ends; the known flows' updates summed per flow into the second's pending updates (none for
    a waiting flow), read and cleared when the second ends (here every second window)."""
    ended: list[tuple] = []
    ft = FlowTable(FlowSettings(max_flows=max_flows), on_end=lambda f, why: ended.append((f.key, f.first, why)))
    seen, pending, waiting = [], {}, {}
    for batch, tags, cuts, now in traffic:
        dec = decode(batch)
        ip = np.flatnonzero(dec.is_ip)
        bounds = np.searchsorted(ip, [start for start, _ in cuts] + [cuts[-1][1]]).tolist()
        window = new_flows(ft, dec, ip, tags, bounds)
        for k, (start, end) in enumerate(cuts):
            fresh = window(k, start, end, pending, waiting)
            seen.append(_updates([new_update(f) for f in fresh]))
            waiting.update(dict.fromkeys(fresh))
            if k % 2:
                seen.append(("second", _updates(list(pending.values()))))
                pending.clear()
                waiting.clear()
            seen.append(_state(ft))
            ft.expire(float(batch.ts[end - 1]))
        ft.expire(now)
    return seen, ended, ft.created, dict(ft.expired), len(ft)


def _deferred(ft, dec, ip, tags, bounds):
    """Windows.update_deferred, as the pipeline calls it."""
    windows = ft.windows(dec, ip, None if tags is None else tags[ip], bounds)
    return lambda k, start, end, pending, waiting: windows.update_deferred(k, pending, waiting)


def _deferred_by_hand(ft, dec, ip, tags, bounds):
    """update_apart then defer_updates, the Python way the pipeline summed them before."""
    def window(k, start, end, pending, waiting):
        lo, hi = np.searchsorted(ip, [start, end])
        fresh, known = ft.update_apart(dec, ip[lo:hi], None if tags is None else tags[ip[lo:hi]])
        flows.defer_updates(known, pending, waiting)
        return fresh
    return window


def _run_deferred(monkeypatch, path: str, traffic: list, max_flows: int) -> tuple:
    monkeypatch.setattr(compiled, "group", AHEAD[path][0])
    monkeypatch.setattr(compiled, "table", AHEAD[path][1])
    monkeypatch.setattr(flows, "GROUP_AHEAD_ROWS", AHEAD[path][2])
    try:
        return _drive_deferred(traffic, max_flows, _deferred)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("max_flows", [7, 500_000])
@pytest.mark.parametrize("seed", range(6))
def test_deferred_updates_are_summed_in_the_table_step_as_defer_updates_sums_them(monkeypatch, seed, max_flows):
    traffic = _traffic(random.Random(seed))
    runs = {path: _run_deferred(monkeypatch, path, traffic, max_flows) for path in AHEAD}
    by_hand = _drive_deferred(traffic, max_flows, _deferred_by_hand)
    assert runs["windows ahead"] == runs["windows each"] == runs["windows, reference"] == by_hand
    seconds = [entry[1] for entry in by_hand[0] if isinstance(entry, tuple) and entry[0] == "second"]
    # known flows' updates were summed over several windows, and a second held many flows
    assert sum(len(s) for s in seconds) > 20 and max(u[3] + u[4] for s in seconds for u in s) > 1


def test_a_deferral_asks_for_dicts_and_apart():
    ft = FlowTable(FlowSettings())
    frame, linktype = _frame(random.Random(1), _conversations(random.Random(1)))
    dec = decode(batch_of([frame], ts=[1_700_000_000.0], linktype=linktype))
    grouped = ft._group_windows(dec, np.arange(1), None, [0, 1])
    for pending, waiting in (([], {}), ({}, [])):
        with pytest.raises(TypeError, match="must be dicts"):
            ft._apply_window(grouped, 0, True, (pending, waiting))
    with pytest.raises(ValueError, match="only apart"):
        ft._apply_window(grouped, 0, False, ({}, {}))


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


@pytest.mark.parametrize("n", [6, 7])
def test_windows_are_grouped_ahead_only_on_the_compiled_path_and_while_small(monkeypatch, n):
    """Windows' route, not only its results (the test above holds those equal whichever route is taken): with the
    compiled window path, a batch of three windows and at most 3 * GROUP_AHEAD_ROWS rows is grouped in one call
    when the Windows is made, one more row and each window is grouped when it comes; with compiled.group or
    compiled.table off no window is grouped by the compiled calls, and with compiled.table off no compiled table
    step runs (_flows.apply serves OrderedDict tables as well: a Windows ignoring its switch would leave the
    reference compared with the compiled path)."""
    monkeypatch.setattr(flows, "GROUP_AHEAD_ROWS", 2)
    rng = random.Random(3)
    conversations = _conversations(rng)
    frames = [_frame(rng, conversations)[0] for _ in range(n)]
    dec = decode(batch_of(frames, ts=[1_700_000_000.0 + i for i in range(n)]))
    rows, bounds = np.arange(n), np.array([0, 2, 4, n])
    grouped, compiled_steps, python_steps = [], [], []
    group_windows, applied, apply_python = FlowTable._group_windows, FlowTable._applied, FlowTable._apply_python
    monkeypatch.setattr(FlowTable, "_group_windows", lambda self, d, r, t, b: (
        grouped.append(len(b)), group_windows(self, d, r, t, b))[1])
    monkeypatch.setattr(FlowTable, "_applied", lambda self, out, apart: (
        compiled_steps.append(1), applied(self, out, apart))[1])
    monkeypatch.setattr(FlowTable, "_apply_python", lambda self, g, new, has_tags: (
        python_steps.append(1), apply_python(self, g, new, has_tags))[1])
    results = []
    for group_on, table_on in ((True, True), (False, True), (True, False), (False, False)):
        monkeypatch.setattr(compiled, "group", group_on)
        monkeypatch.setattr(compiled, "table", table_on)
        grouped.clear(), compiled_steps.clear(), python_steps.clear()
        ft = FlowTable(FlowSettings())
        windows = ft.windows(dec, rows, None, bounds)
        ahead = list(grouped)   # before any window is applied
        seen = []
        for k in range(3):
            fresh, known = windows.update_apart(k)
            seen.append((_updates([new_update(f) for f in fresh]), _updates(known)))
        results.append((seen, _state(ft)))
        if group_on and table_on:
            assert ahead == ([4] if n == 6 else []) and grouped == ([4] if n == 6 else [2, 2, 2]), n
        else:
            assert grouped == [], (group_on, table_on)
        assert (compiled_steps, python_steps) == (([1] * 3, []) if table_on else ([], [1] * 3)), (group_on, table_on)
    assert results[1:] == results[:1] * 3 and sum(len(fresh) for fresh, _ in results[0][0]) > 1


@pytest.mark.parametrize("path", list(AHEAD))
def test_a_batch_of_no_packets_makes_no_flows_on_every_path(monkeypatch, path):
    """An empty batch's columns have no bytes to view (FlowTable._batch_columns gives each an empty buffer): its
    one window, of no rows, adds nothing and ends nothing."""
    monkeypatch.setattr(compiled, "group", AHEAD[path][0])
    monkeypatch.setattr(compiled, "table", AHEAD[path][1])
    monkeypatch.setattr(flows, "GROUP_AHEAD_ROWS", AHEAD[path][2])
    ended: list = []
    ft = FlowTable(FlowSettings(), on_end=lambda f, why: ended.append(why))
    dec = decode(batch_of([]))
    windows = ft.windows(dec, np.zeros(0, np.int64), None, np.array([0, 0]))
    assert windows.update_apart(0) == ([], []) and len(ft) == 0 and ft.created == 0 and ended == []
