"""sensor/enrich/new_flows.py: a window's new flows settled together do what flow_update does for each in turn (the
reference), and its pieces (the budget's held run, the LRU's sightings, scopes and printed addresses in numpy) each
equal the one-at-a-time step they stand for."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest

from packets import ethernet, ip, mac, tcp, udp
from sensor import compiled
from sensor.bounded import BoundedLRU
from sensor.config import FlowSettings, parse_config
from sensor.decode import decode
from sensor.enrich import inventory
from sensor.enrich import new_flows as batch
from sensor.enrich.admission import AdmissionBudget
from sensor.enrich.inventory import Inventory
from sensor.enrich.makers import ManufDatabase
from sensor.enrich.scope import SCOPES, Classifier
from sensor.enrich.stage import Enricher
from sensor.flows import Flow, FlowTable, ip_text, new_update

from .test_enrich_stage import SITE, T0, _mixed_flows, _outcome, _run
from .test_flows_compiled import _random_batches

FORGER = mac("00:de:ad:00:00:01")
ROUTER = mac("02:00:00:00:00:fe")
CAMERA_V6_MAC = mac("00:40:8c:00:00:66")


def _frame(src, dst, l4, proto, src_mac, dst_mac=ROUTER):
    return ethernet(dst_mac, src_mac, 0x86DD if ":" in src else 0x0800, ip(src, dst, proto, l4))


def _syn(src, dst, sport, dport, src_mac, flags="S"):
    return _frame(src, dst, tcp(src, dst, sport, dport, 1, 1, flags), 6, src_mac)


def _flood(seed: int, zero_config: bool) -> list[tuple]:
    """A forged-source flood of ~1,000 new flows a second for 3 s among a site's traffic: sources that come back
    (known once let in, or their /24 confirmed a second later), sources that are answered, IPv6 sources (a known
    camera's link-local address joins its box), inbound peers from new router MACs, and the mixed flows of
    test_enrich_stage."""
    rng = random.Random(seed)
    records = list(_mixed_flows(seed))
    records.append((T0, _syn("fe80::40:8cff:fe00:66", "fe80::1", 1000, 80, CAMERA_V6_MAC)))   # a box, then its
    records.append((T0 + 0.001, _syn("10.20.0.66", "203.0.113.9", 1001, 443, CAMERA_V6_MAC)))   # IPv4 address
    for i in range(3000):
        ts = T0 + i / 1000 + 0.0005
        kind = rng.random()
        if zero_config:
            src = f"10.{rng.randrange(4)}.{rng.randrange(8)}.{rng.randrange(1, 255)}"   # /24s seen again
        else:
            src = f"10.20.0.{rng.randrange(30, 250)}"
        dst, sport = f"11.0.{i >> 8}.{i & 0xFF}", 20000 + i
        if kind < 0.05:
            src = f"fd00::{rng.randrange(1, 1 << 16):x}"
            records.append((ts, _frame(src, "2001:db8::1", udp(src, "2001:db8::1", sport, 53, b"x"), 17, FORGER)))
        elif kind < 0.07:   # the camera's link-local address, new port pairs: joins the box with its MAC
            src = "fe80::40:8cff:fe00:66"
            records.append((ts, _syn(src, "fe80::2", sport, 80, CAMERA_V6_MAC)))
        elif kind < 0.10:   # inbound, from a router MAC seen for the first time
            records.append((ts, _syn("198.51.100.7", src, sport, 554, mac(f"02:00:00:00:01:{i % 7:02x}"))))
        else:
            records.append((ts, _syn(src, dst, sport, 443, FORGER)))
            if kind > 0.97:   # answered: both sides sent
                records.append((ts + 0.0001, _syn(dst, src, 443, sport, mac("02:00:00:00:00:fe"), "SA")))
    records.sort(key=lambda r: r[0])
    return records


def _reference(monkeypatch):
    monkeypatch.setattr(Enricher, "new_flows", lambda self, flows: [self.flow_update(new_update(f)) for f in flows])


def _state(sensor) -> tuple:
    link = sensor.enricher.link
    return (_outcome(sensor), sensor.inventory.admission.held, sensor.inventory.admission.tokens,
            sensor.inventory.evicted, link._candidates.items(), link._candidates.evicted,
            sorted(map(str, sensor.classifier.learned)))


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("min_flows,chunk", [(1, 16384), (1, 5), (64, 300)])
@pytest.mark.parametrize("compiled_paths", [True, False], ids=["compiled", "reference"])
def test_a_flood_settled_a_window_at_a_time_is_what_flow_update_makes_of_it(monkeypatch, config, seed, min_flows,
                                                                            chunk, compiled_paths):
    """Devices, events, routers, learnt networks, held sightings, the budget's tokens and the link's sightings of
    sources: the same as flow_update one flow at a time, whatever the window is cut into (chunks of 5 flows make a
    new classification at every turn), its flows read as columns, its held sources looked up and its sightings made
    in C or by the references (the per-flow path, compared against, keeps its sightings in an OrderedDict)."""
    monkeypatch.setattr(compiled, "columns", compiled_paths)
    monkeypatch.setattr(compiled, "sightings", compiled_paths)
    monkeypatch.setattr(compiled, "held", compiled_paths)
    monkeypatch.setattr(batch, "MIN_FLOWS", min_flows)
    monkeypatch.setattr(batch, "CHUNK", chunk)
    monkeypatch.setattr(batch, "FIRST_CHUNK", min(chunk, batch.FIRST_CHUNK) // 2 or 1)
    records = _flood(seed, not config)
    tight = {**config, "limits": {"max_devices": 40, "new_devices_burst": 3, "new_devices_per_second": 20}}
    calls = []
    settle = batch.settle
    monkeypatch.setattr(batch, "settle", lambda e, flows: (calls.append(len(flows)), settle(e, flows)))
    fast = _state(_run(monkeypatch, records, tight)[0])
    assert calls and max(calls) >= 500   # the windows were settled together
    _reference(monkeypatch)
    monkeypatch.setattr(compiled, "sightings", False)
    reference = _state(_run(monkeypatch, records, tight)[0])
    assert fast == reference
    outcome, held = reference[0], reference[1]
    assert held > 1000 and len(outcome[1]) >= 20   # held sightings, and devices the budget let in meanwhile
    if not config:
        assert reference[6] and reference[4]   # networks confirmed from sources seen again, sightings waiting


@pytest.mark.parametrize("in_c", [True, False], ids=["c-refill", "numpy-refill"])
def test_the_budget_holds_a_run_of_sightings_as_would_hold_one_by_one(monkeypatch, in_c):
    monkeypatch.setattr(compiled, "held", in_c)
    rng = random.Random(7)
    for _ in range(300):
        rate, burst = rng.choice([1, 3, 100, 997]), rng.choice([1, 2, 1000])
        one, many = (AdmissionBudget(rate, burst, start=0) for _ in range(2))
        tokens, clock = rng.choice([0.0, 0.25, 0.999999, 1.0, 5.0]), rng.choice([None, 99.0, 100.5])
        for budget in (one, many):
            budget.tokens, budget._clock = tokens, clock
        times = np.array(sorted(100 + rng.random() * 0.05 for _ in range(rng.randrange(0, 40))))
        if rng.random() < 0.3:   # time running backwards (merged captures) and repeated stamps
            times = np.array([rng.choice([99.0, 100.0, 100.0000001, 101.0]) for _ in range(len(times))])
        count, after = many.holding(times)
        expected = 0
        for ts in times.tolist():
            if not one.would_hold(ts):
                break
            expected += 1
        assert count == expected
        cut = rng.randrange(count + 1)
        reference = AdmissionBudget(rate, burst, start=0)
        reference.tokens, reference._clock = many.tokens, many._clock
        many.hold(times, after, cut)
        for ts in times[:cut].tolist():
            assert reference.would_hold(ts)
        assert (many.tokens, many._clock, many.held) == (reference.tokens, reference._clock, reference.held)


def test_the_budget_refilled_in_c_is_numpys_running_sum_float_for_float(monkeypatch):
    """_flows.holding against AdmissionBudget.holding's numpy steps: the same count and the same floats (compared
    exactly) up to the first sighting let in, on times forward, repeated, backwards, far apart and NaN."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    rng = random.Random(11)
    compared = let_in = 0
    for _ in range(500):
        rate = rng.choice([1, 3, 100, 997, 10**6])
        tokens, clock = rng.choice([0.0, 0.25, 0.999999, 1e-300]), rng.choice([None, 99.0, 100.5, 1e9])
        n = rng.randrange(1, 60)
        times = np.array(sorted(100 + rng.random() * rng.choice([1e-6, 1e-5, 1e-3, 0.05, 3]) for _ in range(n)))
        if rng.random() < 0.3:
            times = np.array([rng.choice([99.0, 100.0, 100.0000001, 101.0, float("nan")]) for _ in range(n)])
        answers = []
        for in_c in (True, False):
            monkeypatch.setattr(compiled, "held", in_c)
            budget = AdmissionBudget(rate, 1000, start=0)
            budget.tokens, budget._clock = tokens, clock
            answers.append(budget.holding(times))
        (count, c_after), (ref_count, ref_after) = answers
        assert count == ref_count
        upto = min(count + 1, n)
        assert c_after[:upto].tobytes() == ref_after[:upto].tobytes() and len(c_after) == upto
        compared += upto
        let_in += count < n
    assert compared > 2000 and 10 < let_in < 490   # runs let in part-way, and runs held whole
    with pytest.raises(ValueError):   # not float64s
        compiled.flows_extension.holding(b"\0" * 7, 0.0, 0.0, 100.0)


def test_the_budgets_run_is_refilled_in_c_only_while_its_switch_is_on(monkeypatch):
    """compiled.held off (or no extension) takes numpy's running sum, the reference the test above holds the C to:
    a switch the C ignored would leave that comparison comparing the C with itself."""
    import types

    asked = []
    real = compiled.flows_extension

    def holding(*args):
        asked.append(len(args[0]))
        return real.holding(*args) if real is not None else (0, np.empty(0).tobytes())

    times = np.array([100.0, 100.001, 100.002])
    answers = []
    for ext, on in ((types.SimpleNamespace(holding=holding), False), (None, True), (None, False),
                    (types.SimpleNamespace(holding=holding), True)):
        monkeypatch.setattr(compiled, "flows_extension", ext)
        monkeypatch.setattr(compiled, "held", on)
        budget = AdmissionBudget(10, 1000, start=0)
        budget.tokens, budget._clock = 0.5, 100.0
        answers.append(budget.holding(times))
    assert asked == [3]   # only the last: an extension and its switch on
    assert all(count == answers[0][0] for count, _after in answers[:3])


def test_below_one_token_of_burst_the_run_is_held_one_at_a_time():
    budget = AdmissionBudget(per_second=5, burst=1, start=0)
    budget.burst = 0   # not a configurable value: the class's own arithmetic still answers
    budget.tokens, budget._clock = 0.0, 10.0
    count, tokens = budget.holding(np.array([10.5, 11.0, 20.0]))
    assert count == 3 and list(tokens) == [0.0, 0.0, 0.0] and budget.held == 0


def test_sightings_in_one_call_leave_the_lru_as_use_then_put_would():
    rng = random.Random(3)
    for limit in (1, 4, 50):
        evicted: list = []
        one, many = (BoundedLRU(limit, lambda k, v, who=who, out=evicted: out.append((who, k, v)))
                     for who in ("one", "many"))
        keys = [rng.randrange(30) for _ in range(400)]
        values = [float(i) for i in range(400)]
        again = lambda first, ts: ts - first > 100   # noqa: E731
        at = stop = 0
        while at < len(keys):
            stop = many.sight_each(keys[at:], values[at:], again) + at
            for k, v in zip(keys[at:stop + 1], values[at:stop + 1], strict=False):
                first = one.use(k)
                if first is None:
                    one.put(k, v)
                else:
                    assert again(first, v) == (stop < len(keys) and v == values[stop])   # stopped there
            at = stop + 1
        assert one.items() == many.items() and one.evicted == many.evicted
        assert [e[1:] for e in evicted if e[0] == "one"] == [e[1:] for e in evicted if e[0] == "many"]


def _sightings_table(compiled_table: bool):
    if compiled_table and compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    return BoundedLRU(1, entries=compiled.flows_extension.Lru() if compiled_table else None)


@pytest.mark.parametrize("seed", range(4))
def test_sightings_in_c_leave_the_lru_as_the_reference_does(seed):
    """_flows.sight (BoundedLRU.sight_rows on an Lru) against sight_rows on an OrderedDict, its reference: the same
    stops, entries in the same order, the same evictions, on keys that come back within and after a second, time
    running back, limits of 1 to 50, and tables the per-flow path has put into and used between the calls."""
    rng = random.Random(seed)
    for limit in (1, 2, 7, 50):
        c, py = _sightings_table(True), _sightings_table(False)
        c.limit = py.limit = limit
        for _ in range(40):
            n = rng.randrange(0, 30)
            keys = np.array([[rng.randrange(3), *b"\0" * 7, rng.randrange(12), 0, 0, 1] for _ in range(n)],
                            np.uint8).reshape(n, 12)
            times = np.array([rng.choice([100.0, 100.5, 101.0, 102.0, 99.0, 100.0 + rng.random()])
                              for _ in range(n)], np.float64)
            at = 0
            while True:
                got = c.sight_rows(keys[at:], times[at:], 1.0)
                assert got == py.sight_rows(keys[at:], times[at:], 1.0)
                assert c.items() == py.items() and c.evicted == py.evicted
                at += got + 1
                if at >= n:
                    break
            key = bytes(rng.choice(keys)) if n else b"x"
            for lru in (c, py):   # the per-flow path between two windows
                if lru.use(key) is None:
                    lru.put(key, 100.25)
            assert c.items() == py.items() and c.evicted == py.evicted
        assert c.evicted > 0 or limit == 50


def test_a_sighting_the_c_walk_cannot_compare_goes_on_in_the_reference():
    """A value that is not a float (no path puts one, the table would allow it) stops _flows.sight before that key,
    and sight_rows goes on by the reference: the result is the reference's."""
    c, py = _sightings_table(True), _sightings_table(False)
    c.limit = py.limit = 10
    keys = np.array([[i % 4] * 12 for i in range(8)], np.uint8)
    for lru in (c, py):
        lru.put(bytes(keys[1]), 100)   # an int where a time was
    times = np.array([100.0 + i / 10 for i in range(8)])
    # key 1 (the int) at 100.1 stops the C walk; the reference takes it on to key 0 again at 100.4
    assert c.sight_rows(keys, times, 0.25) == py.sight_rows(keys, times, 0.25) == 4
    assert c.items() == py.items() and list(c._entries)[-1] == bytes(keys[0])


def test_the_sightings_table_is_compiled_only_while_its_switch_is_on(monkeypatch):
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    from sensor.enrich.link import _candidate_table
    for on in (False, True):
        monkeypatch.setattr(compiled, "sightings", on)
        assert (type(_candidate_table()) is compiled.flows_extension.Lru) == on


def test_the_c_sightings_refuse_what_is_not_rows_of_keys():
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ext = compiled.flows_extension
    for args in ((np.zeros(11, np.uint8), 12, np.zeros(1)), (np.zeros(12, np.uint8), 0, np.zeros(1)),
                 (np.zeros(12, np.uint8), 12, np.zeros(1, np.float32)),
                 (np.zeros(12, np.uint8), 2**62 + 3, np.zeros(4))):   # 4 rows of that width wrap round to 12 bytes
        with pytest.raises(ValueError):
            ext.sight(ext.Lru(), args[0], args[1], args[2], 5, 1.0)
    with pytest.raises(TypeError):
        ext.sight({}, np.zeros(12, np.uint8), 12, np.zeros(1), 5, 1.0)


class _Addresses:
    """An inventory's addresses and its answer for a new IPv6 address (its MAC's box joins it), all that
    Inventory.first_known reads."""

    first_known = Inventory.first_known

    def __init__(self, by_address: dict[str, str]):
        self._by_address = by_address
        self.v4_marks = _marks(by_address)

    def _joined_owner(self, ip_: str, mac_: int) -> str | None:
        return "box" if ":" in ip_ and mac_ == int.from_bytes(CAMERA_V6_MAC, "big") else None


def _marks(texts) -> bytearray:
    """Inventory.v4_marks of these addresses (_flows.mark_v4 of each)."""
    ext = compiled.flows_extension
    marks = bytearray(getattr(ext, "V4_MARKS", 0))
    for text in texts:
        ext.mark_v4(marks, text)
    return marks


@pytest.mark.parametrize("seed", range(3))
def test_held_sources_looked_up_in_c_are_the_references(monkeypatch, seed):
    """_flows.known_v4 through _Held (first_known over any range, count_known's guess) against the reference
    (_texts and Inventory.first_known): IPv4 sources of every octet width, the inventory's addresses among them,
    IPv6 sources that are known or that join their MAC's box in between."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    rng = random.Random(seed)
    octets = [rng.choice([0, 1, 9, 10, 99, 100, 199, 200, 255, rng.randrange(256)]) for _ in range(4 * 400)]
    sources = [".".join(map(str, octets[i:i + 4])) for i in range(0, len(octets), 4)]
    sources[::37] = ["fd00::7"] * len(sources[::37])
    sources[5::41] = ["fe80::40:8cff:fe00:66"] * len(sources[5::41])
    macs = [int.from_bytes(CAMERA_V6_MAC if ":" in s and rng.random() < 0.5 else FORGER, "big") for s in sources]
    raw = np.frombuffer(b"".join(ipaddress.ip_address(s).packed if ":" in s else
                                 b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(s).packed for s in sources),
                        np.uint8).reshape(len(sources), 16)
    is_v4 = batch._is_v4(raw)
    known = set(rng.sample(sources, 30)) | {"0.0.0.0", "255.255.255.255", "fd00::7"}
    inventory = _Addresses(dict.fromkeys(known, "dev"))
    helds = {}
    for on in (True, False):
        monkeypatch.setattr(compiled, "held", on)
        helds[on] = batch._Held(raw, is_v4, np.array(macs, np.int64))
    assert helds[True].texts is None and helds[False].texts == [ip_text(bytes(r)) for r in raw]
    for counted in (1, 100, len(sources), 10_000):   # the guess counts the first COUNTED, scaled
        monkeypatch.setattr(batch, "COUNTED", counted)
        n = min(counted, len(sources))
        assert helds[True].count_known(inventory) == helds[False].count_known(inventory) \
            == sum(s in known for s in sources[:n]) * len(sources) // n
    assert helds[True].count_known(inventory) > 0
    stops = set()
    for _ in range(300):
        start = rng.randrange(len(sources) + 1)
        stop = rng.randrange(start, min(len(sources), start + 60) + 1)
        found = helds[True].first_known(inventory, start, stop)
        assert found == helds[False].first_known(inventory, start, stop)
        stops.add("none" if found == stop else "v4" if is_v4[found] else "v6")
    assert stops == {"none", "v4", "v6"}
    ext = compiled.flows_extension
    words = helds[True].words
    every = bytearray(b"\xff" * ext.V4_MARKS)   # each address looked up: the marks only ever skip a lookup
    for at, s in enumerate(sources):   # each address's own answer: the text the per-flow path looks up
        if ":" not in s:
            for marks in (_marks([s]), every):
                assert ext.known_v4({s: 1}, marks, words, is_v4, at, at + 1, False) == at
                assert ext.known_v4({s + "0": 1, "x": 2}, marks, words, is_v4, at, at + 1, False) == at + 1
            # its mark clear: not looked up, not found though it is a key (a key added past the marks is not seen)
            assert ext.known_v4({s: 1}, _marks([]), words, is_v4, at, at + 1, False) == at + 1
            assert ext.known_v4({s: 1}, _marks([]), words, is_v4, at, at + 1, True) == 0


def test_the_marks_are_set_for_each_dotted_quad_and_nothing_else():
    """_flows.mark_v4 marks what known_v4 would look up for the address of each IPv4 text, and no bit for a text
    that is not four decimal octets (an IPv6 address, too few or too many octets, an octet over 255 or of four
    digits, spaces, digits other than ASCII's)."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ext = compiled.flows_extension
    rng = random.Random(7)
    for _ in range(2000):
        w = rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(8) << 24])
        text = str(ipaddress.IPv4Address(w))
        words, v4 = np.array([w], np.uint32), np.ones(1, bool)
        assert ext.known_v4({text: 1}, _marks([text]), words, v4, 0, 1, True) == 1
        if len(text.split(".")[0]) < 3:   # a leading zero reads as the same address: a superset does no harm
            assert ext.known_v4({text: 1}, _marks(["0" + text]), words, v4, 0, 1, True) == 1
    for junk in ("fd00::7", "::ffff:10.0.0.1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.1000", "0001.2.3.4",
                 " 1.2.3.4", "1.2.3.4 ", "1..2.3", ".1.2.3", "1.2.3.", "", "\u0661.2.3.4", "1.2.3.\u00b9", "a.b.c.d"):
        assert _marks([junk]) == bytearray(ext.V4_MARKS), junk
    with pytest.raises(ValueError):
        ext.mark_v4(bytearray(10), "1.2.3.4")
    with pytest.raises(TypeError):
        ext.mark_v4(bytes(ext.V4_MARKS), "1.2.3.4")   # read-only
    with pytest.raises(TypeError):
        ext.mark_v4(bytearray(ext.V4_MARKS), b"1.2.3.4")


def test_every_address_the_inventory_holds_is_marked():
    """Inventory._address_is is the only way into _by_address: after new devices, addresses moved between devices
    (claims), detached ones and a restore, each IPv4 key's mark is set, so known_v4 finds it."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ext = compiled.flows_extension
    cfg = parse_config({})
    manuf = ManufDatabase({24: {0x00408C: "Axis"}})
    inv = Inventory(cfg, manuf)
    rng = random.Random(3)
    for i in range(3000):
        address = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
        mac_ = 0x02_00_00_00_00_00 + rng.randrange(64)
        if i % 3:
            inv.touch(address, mac_, T0 + i)
        else:
            inv.claim(address, mac_, T0 + i, primary=bool(i % 2))
    restored = Inventory(cfg, manuf)
    restored.restore(list(inv.take_dirty()))
    for held in (inv, restored):
        keys = [k for k in held._by_address if ":" not in k]
        assert len(keys) > 1000
        words = np.array([int(ipaddress.IPv4Address(k)) for k in keys], np.uint32)
        assert ext.known_v4(held._by_address, held.v4_marks, words, np.ones(len(keys), bool), 0, len(keys),
                            True) == len(keys)


def test_the_marks_of_addresses_that_left_do_not_fill_the_table_under_a_long_flood():
    """A long flood admits devices that are evicted later; their addresses' marks are dropped at each rebuild, so the
    marks stay a small superset of the current keys (a filled table would send every held source to the dict)."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ext = compiled.flows_extension
    inv = Inventory(parse_config({}), ManufDatabase({}))
    marks = inv.v4_marks
    live = [f"10.9.{i >> 8}.{i & 255}" for i in range(2000)]
    for i, ip_ in enumerate(live):
        inv._address_is(ip_, f"live{i}")
    for i in range(5 * inventory.REMARK_AFTER_NEW_KEYS):   # admitted, then gone, as a flood's devices are
        ip_ = f"172.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        inv._address_is(ip_, "flood")
        del inv._by_address[ip_]
    assert inv.v4_marks is marks   # rebuilt in place: new_flows reads inventory.v4_marks at each call
    set_bits = sum(bin(b).count("1") for b in marks)
    assert set_bits < 0.08 * len(marks) * 8   # without the rebuild: ~28% of the bits after these 327,680 addresses
    words = np.array([int(ipaddress.IPv4Address(k)) for k in live], np.uint32)
    assert ext.known_v4(inv._by_address, marks, words, np.ones(len(live), bool), 0, len(live), True) == len(live)


def test_the_c_lookup_of_held_sources_refuses_what_it_cannot_read():
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ext = compiled.flows_extension
    words, v4, m = np.zeros(3, np.uint32), np.ones(3, bool), _marks(["0.0.0.0"])
    for args in (({}, m, words[:2], v4, 0, 2), ({}, m, words, v4, 2, 1), ({}, m, words, v4, 0, 4),
                 ({}, m, words, v4, -1, 2), ({}, m[:-1], words, v4, 0, 3)):
        with pytest.raises(ValueError):
            ext.known_v4(*args, False)
    with pytest.raises(TypeError):
        ext.known_v4([], m, words, v4, 0, 3, False)
    assert ext.known_v4({"0.0.0.0": 1}, m, words, v4, 0, 3, True) == 3
    assert ext.known_v4({}, m, words, v4, 0, 3, True) == 0


def test_scopes_and_printed_addresses_in_numpy_are_the_one_at_a_time_ones():
    rng = np.random.default_rng(5)
    classifier = Classifier(parse_config({}))
    classifier.learn(ipaddress.ip_network("10.9.8.0/24"))
    classifier.learn(ipaddress.ip_network("fd12::/64"))
    v4 = rng.integers(0, 1 << 32, 3000, dtype=np.int64)
    v4[:600] = (10 << 24) + rng.integers(0, 1 << 24, 600)   # private, some of it learnt
    v4[600:700] = (10 << 24) + (9 << 16) + (8 << 8) + rng.integers(0, 256, 100)
    v4[700:800] = rng.integers(0, 256, 100) << 24   # octets of 0 and short numbers
    raws = [b"\0" * 10 + b"\xff\xff" + int(v).to_bytes(4, "big") for v in v4]
    raws += [ipaddress.IPv6Address(a).packed for a in ("fd12::5", "fe80::1", "2001:db8::9", "::1", "ff02::1")]
    # IPv6 that is IPv4-mapped in all but one word: no camera-side IPv4 address for it
    raws += [ipaddress.IPv6Address(a).packed for a in ("2001:db8::ffff:10.9.8.7", "::1:0:ffff:10.9.8.7")]
    raw = np.frombuffer(b"".join(raws), np.uint8).reshape(len(raws), 16)
    codes = batch._scopes(classifier, raw)
    assert [SCOPES[c] for c in codes] == [classifier.scope_of_raw(r) for r in raws]
    is_v4 = np.array([r[:12] == b"\0" * 10 + b"\xff\xff" for r in raws])
    assert batch._texts(raw, is_v4) == [ip_text(r) for r in raws]


def _columns(window) -> tuple | None:
    """A _Window's columns with their dtypes, for exact comparison."""
    if window is None:
        return None
    cols = (window.orig_raw, window.resp_raw, window.orig_sent, window.resp_sent, window.orig_mac, window.resp_mac,
            window.first)
    return tuple((c.dtype.str, c.shape, c.tolist()) for c in cols)


def _compiled_columns(monkeypatch, flows) -> tuple | None:
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    monkeypatch.setattr(compiled, "columns", True)
    return _columns(batch._Window.of(flows))


@pytest.mark.parametrize("table", [True, False], ids=["compiled-table", "reference-table"])
@pytest.mark.parametrize("seed", range(6))
def test_a_windows_columns_read_in_c_are_the_references(monkeypatch, table, seed):
    """_flows.columns against columns_python on the flows of random traffic, new and added to (replies, closes,
    MACs changed, IPv6, VLANs), as the compiled table step and its reference make them."""
    monkeypatch.setattr(compiled, "table", table)
    ft = FlowTable(FlowSettings(max_flows=500_000))
    compared = 0
    for dec_batch, tags, _ in _random_batches(random.Random(seed)):
        rows = np.arange(len(dec_batch))
        fresh, _updates = ft.update_apart(decode(dec_batch), rows, tags)
        for flows in (fresh, list(ft.flows())):
            reference = _columns(batch.columns_python(flows))
            assert _compiled_columns(monkeypatch, flows) == reference
            compared += len(flows)
    flows = list(ft.flows())
    assert compared > 100 and any(f.resp_pkts for f in flows) and any(not f.orig_is_a for f in flows)
    assert len({f.orig_mac for f in flows}) > 2


def test_a_window_the_c_columns_refuse_is_read_by_the_reference(monkeypatch):
    """What the table never makes (another object, a short key, a huge counter, an int time, an int for a bool)
    is refused by _flows.columns and read by columns_python, which decides as it always did."""
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ft = FlowTable(FlowSettings())
    for dec_batch, tags, _ in _random_batches(random.Random(1))[:3]:
        ft.update(decode(dec_batch), np.arange(len(dec_batch)), tags)
    good = list(ft.flows())
    ext = compiled.flows_extension
    assert ext.columns(good, Flow) is not None and ext.columns([], Flow) is not None

    def odd(**slots) -> list:
        flow = Flow(good[0].key, 0, 6, 1, 2, 5.0)
        for name, value in slots.items():
            setattr(flow, name, value)
        return [*good[:3], flow, *good[3:]]

    cases = [odd(key=good[0].key[:39]), odd(key=bytearray(good[0].key)), odd(first=7), odd(orig_is_a=1),
             odd(orig_mac=-1 << 70), odd(resp_pkts=True), [*good, object()]]
    for flows in cases:
        assert ext.columns(flows, Flow) is None
        try:
            reference = _columns(batch.columns_python(flows))
        except (OverflowError, AttributeError) as exc:
            with pytest.raises(type(exc)):
                batch._Window.of(flows)
        else:
            assert _compiled_columns(monkeypatch, flows) == reference
    short = odd(key=good[0].key[:39])
    assert batch._Window.of(short) is None   # not the table's keys: one at a time, as before
    with pytest.raises(TypeError):
        ext.columns(tuple(good), Flow)


def test_a_window_that_cannot_be_read_as_columns_goes_one_flow_at_a_time(monkeypatch):
    """A window settle cannot read as columns (a flow with a short key among the table's: no path makes one, settle
    is handed any list) is handed to the per-flow path whole, every flow in its order, on either columns path."""
    ft = FlowTable(FlowSettings())
    for dec_batch, tags, _ in _random_batches(random.Random(1))[:3]:
        ft.update(decode(dec_batch), np.arange(len(dec_batch)), tags)
    good = list(ft.flows())
    flows = [*good[:3], Flow(good[0].key[:39], 0, 6, 1, 2, 5.0), *good[3:]]
    seen: list = []
    new_flow = Enricher._new_flow
    monkeypatch.setattr(Enricher, "_new_flow", lambda self, flow, noted=False: (seen.append(flow),
                                                                                new_flow(self, flow, noted))[1])
    for on in (True, False):
        monkeypatch.setattr(compiled, "columns", on)
        enricher = _run(monkeypatch, [(T0, _syn("10.20.0.5", "203.0.113.9", 1000, 443, FORGER))])[0].enricher
        seen.clear()
        batch.settle(enricher, flows)
        assert seen == flows


@pytest.mark.parametrize("compiled_paths", [True, False], ids=["compiled", "reference"])
def test_a_public_responder_answering_within_the_window_marks_its_router(monkeypatch, compiled_paths):
    """A site's window of new flows none of which reaches a camera (a core host's, to public peers that answer
    within the window, from a router MAC not seen before): the first such flow goes one at a time and marks the
    router, as flow_update does, and the rest are settled together."""
    for switch in ("columns", "sightings", "held"):
        monkeypatch.setattr(compiled, switch, compiled_paths)
    core, core_mac, router = "10.1.0.5", mac("3c:ef:8c:00:00:05"), mac("02:00:00:00:02:01")
    records = []
    for i in range(2 * batch.MIN_FLOWS):
        peer, ts = f"11.0.0.{i + 1}", T0 + i / 1000
        records.append((ts, _frame(core, peer, udp(core, peer, 40000 + i, 53, b"q"), 17, core_mac, router)))
        records.append((ts + 0.0001, _frame(peer, core, udp(peer, core, 53, 40000 + i, b"a"), 17, router, core_mac)))
    calls: list[int] = []
    settle = batch.settle
    monkeypatch.setattr(batch, "settle", lambda e, flows: (calls.append(len(flows)), settle(e, flows)))
    fast = _state(_run(monkeypatch, records)[0])
    assert calls == [2 * batch.MIN_FLOWS]
    _reference(monkeypatch)
    reference = _state(_run(monkeypatch, records)[0])
    assert fast == reference
    assert reference[0][2] == [int.from_bytes(router, "big")]   # the router's MAC, marked


def test_the_c_columns_are_read_only_while_their_switch_is_on(monkeypatch):
    if compiled.flows_extension is None:
        pytest.skip("the C extension sensor._flows was not built on this machine")
    ft = FlowTable(FlowSettings())
    for dec_batch, tags, _ in _random_batches(random.Random(2))[:3]:
        ft.update(decode(dec_batch), np.arange(len(dec_batch)), tags)
    flows, calls = list(ft.flows()), []
    columns = compiled.flows_extension.columns
    monkeypatch.setattr(compiled.flows_extension, "columns", lambda *a: (calls.append(1), columns(*a))[1])
    for on in (False, True):
        monkeypatch.setattr(compiled, "columns", on)
        assert _columns(batch._Window.of(flows)) == _columns(batch.columns_python(flows))
        assert len(calls) == on


@pytest.mark.parametrize("config", [SITE, {}], ids=["site", "zero-config"])
@pytest.mark.parametrize("compiled_paths", [True, False], ids=["compiled", "reference"])
def test_a_floods_held_sources_are_settled_in_runs_not_one_at_a_time(monkeypatch, config, compiled_paths):
    """What the batch exists for: once the budget's tokens are spent, a forged-source flood's held sightings are
    counted in runs, and only the flows that may change what follows (a device reached, a router noted, a network
    confirmed, a source let in) go through the per-flow path: a path that sent every flow one at a time would give
    the same effects (the test above) at the per-flow cost, and fails here."""
    from sensor.enrich.stage import Enricher

    monkeypatch.setattr(compiled, "columns", compiled_paths)
    monkeypatch.setattr(compiled, "sightings", compiled_paths)
    monkeypatch.setattr(compiled, "held", compiled_paths)
    one_by_one = []
    per_flow = Enricher._new_flow
    monkeypatch.setattr(Enricher, "_new_flow", lambda self, flow, noted=False: (one_by_one.append(flow),
                                                                                 per_flow(self, flow, noted)))
    tight = {**config, "limits": {"max_devices": 40, "new_devices_burst": 3, "new_devices_per_second": 20}}
    sensor = _run(monkeypatch, _flood(0, not config), tight)[0]
    held = sensor.inventory.admission.held
    assert held > 1000
    assert len(one_by_one) < held / 2, (len(one_by_one), held)   # one at a time, each held one would be too
