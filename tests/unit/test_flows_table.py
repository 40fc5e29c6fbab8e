"""sensor/_flows.c's Lru, the flow table's LRU tables in C, against the OrderedDict it stands in for (the reference,
and what FlowTable uses without the extension): random sequences of every operation FlowTable and its tests use
(insert, replace, look up, pop, pop oldest or newest, move to either end, delete, clear, iterate), on few keys so
that they meet again, on keys of every length, on many keys so the index grows and deletions shift runs back; then
whole flow tables on Lru against flow tables on OrderedDicts, bounded, expiring and evicting."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sensor import compiled
from sensor.config import FlowSettings
from sensor.decode import decode
from sensor.flows import Flow, FlowTable

from .builders import batch_of
from .test_flows_compiled import _conversations, _frame, _state, _updates

pytestmark = pytest.mark.skipif(compiled.flows_extension is None or not hasattr(compiled.flows_extension, "Lru"),
                                reason="the C extension was not built on this machine")

MISSING = object()


def _lru():
    assert compiled.flows_extension is not None
    return compiled.flows_extension.Lru()


def _outcome(fn):
    """What a call gives: its value, or the type of what it raised."""
    try:
        return ("=", fn())
    except Exception as exc:   # noqa: BLE001 - the two must raise alike
        return ("!", type(exc))


def _same(lru, ref) -> None:
    assert len(lru) == len(ref) and bool(lru) == bool(ref)
    assert list(lru.items()) == list(ref.items())
    assert list(lru) == list(ref) and list(lru.values()) == list(ref.values())


def _key(rng: random.Random, pool: list[bytes]) -> object:
    r = rng.random()
    if r < 0.9:
        return rng.choice(pool)
    if r < 0.97:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 8, 9, 40, 41])))
    return rng.choice([1, "k", None, 2.5, (b"k",)])   # not bytes: absent, never stored


def _step(rng: random.Random, lru, ref, pool: list[bytes], serial: list[int]) -> None:
    k = _key(rng, pool)
    op = rng.randrange(13)
    if op <= 3:   # insert or replace: the most common
        serial[0] += 1
        v = serial[0]
        if isinstance(k, bytes):
            lru[k] = v
            ref[k] = v
        else:
            with pytest.raises(TypeError):
                lru[k] = v
    elif op == 4:
        assert _outcome(lambda: lru[k]) == _outcome(lambda: ref[k])
    elif op == 5:
        assert lru.get(k) == ref.get(k) and lru.get(k, MISSING) is ref.get(k, MISSING)
        assert (k in lru) == (k in ref)
    elif op == 6:
        assert _outcome(lambda: lru.pop(k)) == _outcome(lambda: ref.pop(k))
    elif op == 7:
        assert lru.pop(k, MISSING) is ref.pop(k, MISSING) or lru.pop(k, None) == ref.pop(k, None)
    elif op == 8:
        last = rng.random() < 0.5
        assert _outcome(lambda: lru.popitem(last=last)) == _outcome(lambda: ref.popitem(last=last))
    elif op == 9:
        last = rng.random() < 0.5
        assert _outcome(lambda: lru.move_to_end(k, last=last)) == _outcome(lambda: ref.move_to_end(k, last=last))
    elif op == 10:
        def delete(table):
            del table[k]
        assert _outcome(lambda: delete(lru)) == _outcome(lambda: delete(ref))
    elif op == 11:
        if rng.random() < 0.02:
            lru.clear()
            ref.clear()
    else:   # the head, as expire reads it
        assert next(iter(lru.values()), None) == next(iter(ref.values()), None)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("keys", [3, 40, 2000])
def test_lru_equals_an_ordered_dict_on_random_operations(seed, keys):
    from collections import OrderedDict
    rng = random.Random(seed * 1000 + keys)
    pool = [bytes(rng.randrange(256) for _ in range(40)) for _ in range(keys)]
    lru, ref = _lru(), OrderedDict()
    serial = [0]
    for i in range(4000):
        _step(rng, lru, ref, pool, serial)
        if i % 97 == 0:
            _same(lru, ref)
    _same(lru, ref)


def test_lru_grows_and_shrinks_back_through_many_keys():
    """Enough keys that the index doubles many times and its runs are long; deleted in a random order, so every
    backward shift case is met; then the order is the insertion order throughout."""
    from collections import OrderedDict
    rng = random.Random(7)
    keys = [rng.randbytes(40) for _ in range(50_000)]
    lru, ref = _lru(), OrderedDict()
    for i, k in enumerate(keys):
        lru[k] = ref[k] = i
    _same(lru, ref)
    gone = rng.sample(keys, 30_000)
    for k in gone:
        assert lru.pop(k) == ref.pop(k)
    _same(lru, ref)
    assert all(lru[k] == ref[k] for k in keys if k in ref) and not any(k in lru for k in gone)
    for k in gone[:10_000]:   # the freed entries reused
        lru[k] = ref[k] = -1
    _same(lru, ref)
    while ref:
        assert lru.popitem(last=False) == ref.popitem(last=False)
    assert len(lru) == 0 and list(lru) == []


def test_keys_of_one_home_slot_are_all_found():
    """Keys that share a prefix and differ in their last byte (as a flood's port pairs do) in a table kept small,
    taken out in the middle of their runs: each is found until it is deleted, never after."""
    lru = _lru()
    keys = [b"\0\0\x06" + b"a" * 35 + bytes([i >> 8, i & 0xFF]) for i in range(600)]
    for i, k in enumerate(keys):
        lru[k] = i
    for k in keys[::3]:
        del lru[k]
    for i, k in enumerate(keys):
        assert lru.get(k) == (None if i % 3 == 0 else i)


def test_lru_iteration_refuses_a_table_changed_meanwhile():
    lru = _lru()
    for i in range(5):
        lru[bytes([i])] = i
    it = iter(lru.items())
    assert next(it) == (b"\0", 0)
    lru[b"\0"] = 9   # a value replaced: not a change of order
    assert next(it) == (b"\1", 1)
    del lru[b"\3"]
    with pytest.raises(RuntimeError):
        next(it)
    with pytest.raises(TypeError):
        hash(lru)
    with pytest.raises(TypeError):
        compiled.flows_extension.Lru(1)   # type: ignore[union-attr]


def _feed(monkeypatch, on: bool, batches: list, max_flows: int) -> tuple:
    monkeypatch.setattr(compiled, "table", on)
    ended: list[tuple] = []
    ft = FlowTable(FlowSettings(max_flows=max_flows), on_end=lambda f, why: ended.append((why, f.key)))
    assert isinstance(ft._tcp, dict) is not on
    seen = []
    for batch, tags, now in batches:
        seen.append(_updates(ft.update(decode(batch), np.arange(len(batch)), tags)))
        assert len(ft) <= max_flows   # bounded after every batch
        seen.append(_state(ft))
        seen.append([f.key for f in ft.expire(now)])
    seen.append([f.key for f in ft.flush()])
    return seen, ended, ft.created, dict(ft.expired)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("max_flows", [1, 5, 40, 500_000])
def test_flow_tables_on_lru_equal_flow_tables_on_ordered_dicts(monkeypatch, seed, max_flows):
    """Same updates, same flows in the same tables in the same order, same expiry and eviction order, same ends."""
    rng = random.Random(seed)
    conversations = _conversations(rng) + _conversations(rng) + _conversations(rng)
    batches, t = [], 1_700_000_000.0
    for _ in range(15):
        frames = [_frame(rng, conversations) for _ in range(rng.randint(1, 80))]
        ts = sorted(t + rng.random() * 3 for _ in frames)
        t = ts[-1]
        tags = None if rng.random() < 0.5 else np.array([rng.choice([0, 6, 1 << 63]) for _ in frames], np.uint64)
        batches.append((batch_of([f for f, _ in frames], ts=ts, linktype=[lt for _, lt in frames]), tags,
                        t + rng.choice([0.0, 0.0, 50.0, 400.0])))
    on, off = _feed(monkeypatch, True, batches, max_flows), _feed(monkeypatch, False, batches, max_flows)
    assert on == off
    assert on[2] > 10 and on[1] and (max_flows >= 40 or on[3]["evicted"] > 0)


def test_a_flood_of_new_flows_stays_within_the_bound(monkeypatch):
    """A batch of thousands of new port pairs into a table bounded at 100: evicted oldest first down to the bound,
    in the reference's order."""
    from packets import ethernet, ipv4, udp
    frames = [ethernet(b"\x02" + bytes(5), b"\x02" + bytes(4) + b"\x01", 0x0800,
                       ipv4("203.0.113.9", "10.20.0.11", 17, udp("203.0.113.9", "10.20.0.11", 1024 + i, 554, b"")))
              for i in range(3000)]
    batches = [(batch_of(frames[i:i + 1000], ts=[1e9 + i + j * 1e-3 for j in range(1000)]), None, 1e9 + i)
               for i in range(0, 3000, 1000)]
    on, off = _feed(monkeypatch, True, batches, 100), _feed(monkeypatch, False, batches, 100)
    assert on == off and on[3]["evicted"] == 2900
    assert isinstance(Flow, type)


def test_an_lru_in_a_reference_cycle_is_collected():
    """Values are visited by the cyclic collector (Flows never form cycles, but an Lru holds anything)."""
    import gc
    import weakref

    class Holder:
        pass

    lru, holder = _lru(), Holder()
    lru[b"a"] = 1
    lru[b"k"] = holder
    del lru[b"a"]   # a free entry in the array
    holder.lru = lru   # type: ignore[attr-defined]
    gone = weakref.ref(holder)
    del lru, holder
    gc.collect()
    assert gone() is None


def test_the_hash_is_keyed_by_a_secret_of_each_process():
    """Whoever sends packets chooses the keys: with a hash known in advance they could choose keys of one probe run.
    The secret is drawn from os.urandom when the extension loads, whatever PYTHONHASHSEED says."""
    import os
    import subprocess
    import sys
    key = b"\0\0\x06" + bytes(range(37))
    code = f"from sensor import _flows; print(_flows.key_hash({key!r}))"
    env = dict(os.environ, PYTHONHASHSEED="0")
    seen = {subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout for _ in range(3)}
    assert len(seen) == 3
    ext = compiled.flows_extension
    assert ext.key_hash(key) == ext.key_hash(bytes(key)) and ext.key_hash(key) != ext.key_hash(key[:-1])  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        ext.key_hash("text")  # type: ignore[union-attr, arg-type]



@pytest.mark.parametrize("kinds", ["oooo", "lolo", "olll"], ids=["ordered-dicts", "mixed", "closed-ordered"])
@pytest.mark.parametrize("seed", range(4))
def test_the_compiled_step_on_ordered_dicts_or_a_mix_equals_it_on_lrus(monkeypatch, kinds, seed):
    """_flows.apply takes OrderedDicts too (through the mapping protocol), and a mix of the two kinds, with the same
    results as on four Lrus; _flows.evict takes four of either kind and refuses a mix (FlowTable never makes one).
    Bounded at 6 on four OrderedDicts, unbounded on a mix."""
    from collections import OrderedDict

    import sensor.flows as fl
    rng = random.Random(seed)
    conversations = _conversations(rng) + _conversations(rng)
    batches, t = [], 1_700_000_000.0
    for _ in range(10):
        frames = [_frame(rng, conversations) for _ in range(rng.randint(1, 60))]
        ts = sorted(t + rng.random() * 3 for _ in frames)
        t = ts[-1]
        batches.append((batch_of([f for f, _ in frames], ts=ts, linktype=[lt for _, lt in frames]), None,
                        t + rng.choice([0.0, 50.0, 400.0])))
    bound = 6 if kinds == "oooo" else 500_000
    on = _feed(monkeypatch, True, batches, bound)
    made = iter(kinds)   # _tcp, _closed, _udp, _other: FlowTable.__init__'s order
    monkeypatch.setattr(fl, "_new_table", lambda: OrderedDict() if next(made) == "o" else _lru())
    ended: list[tuple] = []
    ft = FlowTable(FlowSettings(max_flows=bound), on_end=lambda f, why: ended.append((why, f.key)))
    assert [isinstance(tb, dict) for tb in (ft._tcp, ft._closed, ft._udp, ft._other)] == [k == "o" for k in kinds]
    seen = []
    for batch, tags, now in batches:
        seen.append(_updates(ft.update(decode(batch), np.arange(len(batch)), tags)))
        seen.append(_state(ft))
        seen.append([f.key for f in ft.expire(now)])
    if kinds != "oooo":
        with pytest.raises(TypeError, match="four OrderedDicts or four Lrus"):
            compiled.flows_extension.evict((ft._closed, ft._tcp, ft._udp, ft._other), 1, Flow)  # type: ignore[union-attr]
    seen.append([f.key for f in ft.flush()])
    assert (seen, ended, ft.created, dict(ft.expired)) == on


@pytest.mark.parametrize("kind", ["lru", "ordered-dict"])
def test_eviction_refuses_a_flow_without_its_last_time(kind):
    """Total: a flow whose slot was emptied from Python is refused with an error, on either kind of table, never
    read through a null pointer."""
    from collections import OrderedDict
    tables = [_lru() if kind == "lru" else OrderedDict() for _ in range(4)]
    flow = Flow(b"\0\0\x06" + bytes(37), 0, 6, 1, 2, 1.0)
    tables[1][flow.key] = flow
    del flow.last
    with pytest.raises(AttributeError):
        compiled.flows_extension.evict(tuple(tables), 1, Flow)  # type: ignore[union-attr]
    flow.last = 2.0
    assert compiled.flows_extension.evict(tuple(tables), 1, Flow) == [flow]  # type: ignore[union-attr]
    assert len(tables[1]) == 0


def _expire_reference(tables, timeouts, now):
    out = []
    for table, timeout in zip(tables, timeouts, strict=True):
        while table and not now - next(iter(table.values())).last <= timeout:
            out.append(table.popitem(last=False)[1])
    return out


@pytest.mark.parametrize("seed", range(20))
def test_expiry_in_c_takes_what_the_loop_takes_from_each_head(seed):
    """_flows.expire against FlowTable's loop (its reference) on four tables whose flows' last times are in no
    order (a head that stays hides an older flow behind it, in both), at times that expire none, some or all of a
    table, and at NaN and the infinities; int last times read as the loop reads them."""
    from collections import OrderedDict
    rng = random.Random(seed)
    flows = []
    for i in range(rng.randint(0, 60)):
        flow = Flow(i.to_bytes(40, "big"), 0, 17, 1, 2, 0.0)
        flow.last = rng.choice([rng.uniform(0, 1000), float(rng.randrange(1000)), rng.randrange(1000)])
        flows.append(flow)
    lrus, refs = [_lru() for _ in range(4)], [OrderedDict() for _ in range(4)]
    for flow in flows:
        k = rng.randrange(4)
        lrus[k][flow.key] = refs[k][flow.key] = flow
    timeouts = [rng.choice([0, 30, 120.0, 3600.0]) for _ in range(4)]
    spec = (Flow, *(part for pair in zip(lrus, timeouts, strict=True) for part in pair))
    for now in sorted(rng.uniform(0, 2000) for _ in range(6)) + [float("-inf"), float("nan"), float("inf")]:
        assert compiled.flows_extension.expire(spec, now) == _expire_reference(refs, timeouts, now)  # type: ignore[union-attr]
        for lru, ref in zip(lrus, refs, strict=True):
            _same(lru, ref)
    assert all(len(lru) == 0 for lru in lrus) or not flows   # NaN expires every head, and so every flow


def test_expiry_in_c_refuses_what_it_cannot_read():
    """Total: a non-flow, a flow without its last time or with one that is not a number, an OrderedDict table and
    a malformed spec are errors, never a wrong read; a table read before the error keeps what was not taken."""
    from collections import OrderedDict
    ext = compiled.flows_extension
    lru = _lru()
    flow = Flow(b"\0\0\x06" + bytes(37), 0, 6, 1, 2, 1.0)
    lru[flow.key] = flow
    with pytest.raises(TypeError, match="flow type"):
        ext.expire((lru, 1.0), 5.0)  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="must be Lrus"):
        ext.expire((Flow, OrderedDict(), 1.0), 5.0)  # type: ignore[union-attr]
    flow.last = "soon"   # type: ignore[assignment]
    with pytest.raises(TypeError, match="not a number"):
        ext.expire((Flow, lru, 1.0), 5.0)  # type: ignore[union-attr]
    del flow.last
    with pytest.raises(AttributeError):
        ext.expire((Flow, lru, 1.0), 5.0)  # type: ignore[union-attr]
    flow.last = 1.0
    stranger = _lru()
    stranger[b"x" * 40] = object()
    with pytest.raises(TypeError, match="other than a flow"):
        ext.expire((Flow, lru, 10.0, stranger, 1.0), 5.0)  # type: ignore[union-attr]
    assert list(lru.values()) == [flow]   # idle 4 s of its 10: kept
    assert ext.expire((Flow, lru, 4), 5.0) == [] and len(lru) == 1   # idle exactly its timeout: kept  # type: ignore[union-attr]
    assert ext.expire((Flow, lru, 1.0), 5.0) == [flow] and len(lru) == 0  # type: ignore[union-attr]


def test_a_flow_table_expires_through_c_only_on_lrus(monkeypatch):
    """FlowTable hands _flows.expire its tables when they are Lrus, and keeps its own loop for OrderedDicts."""
    monkeypatch.setattr(compiled, "table", True)
    assert FlowTable(FlowSettings())._expiry is not None
    monkeypatch.setattr(compiled, "table", False)
    assert FlowTable(FlowSettings())._expiry is None
