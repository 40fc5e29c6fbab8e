"""orient (sensor/flows.py) decides a new flow's originator and ports; a window of a few groups takes a scalar
path (_orient_few) and a bigger one the whole-column path. Both must give the same flows for any first packet:
every protocol, flag byte, port either side of 1024, fragments, ICMP types."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from sensor import flows
from sensor.flows import orient

PORTS = (0, 1, 53, 80, 554, 1023, 1024, 1025, 8000, 50000, 65535)


def _columns(rng: random.Random, n: int) -> SimpleNamespace:
    proto = [rng.choice((1, 6, 6, 17, 17, 58, 47, 132)) for _ in range(n)]
    sport = [rng.choice(PORTS) if p not in (1, 58) else rng.randrange(256) for p in proto]
    return SimpleNamespace(
        proto=np.array(proto, np.uint8), sport=np.array(sport, np.int64),
        dport=np.array([rng.choice(PORTS) for _ in range(n)], np.int64),
        tcp_flags=np.array([rng.randrange(256) for _ in range(n)], np.uint8),
        fragment=np.array([rng.random() < 0.15 for _ in range(n)], bool),
        vlan=np.array([rng.randrange(4096) for _ in range(n)], np.uint16),
        batch=SimpleNamespace(ts=np.array([1.7e9 + rng.random() * 100 for _ in range(n)], np.float64)))


@pytest.mark.parametrize("seed", range(10))
def test_the_few_groups_path_orients_as_the_whole_column_one(seed, monkeypatch):
    rng = random.Random(seed)
    for _ in range(200):
        dec = _columns(rng, 40)
        k = rng.randint(1, flows.FEW_GROUPS)
        rows = np.array(rng.sample(range(40), k), np.int64)
        first_dir = np.array([rng.randrange(2) for _ in range(k)], np.uint8)
        few = orient(dec, rows, first_dir)
        monkeypatch.setattr(flows, "FEW_GROUPS", 0)
        whole = orient(dec, rows, first_dir)
        monkeypatch.undo()
        for got, want in zip(few, whole, strict=True):
            assert got.dtype == want.dtype
            assert got.tolist() == want.tolist()


def test_a_syn_ack_and_an_icmp_reply_are_turned_round_on_both_paths(monkeypatch):
    dec = SimpleNamespace(proto=np.array([6, 1, 17], np.uint8), sport=np.array([554, 0, 53], np.int64),
                          dport=np.array([50000, 0, 40000], np.int64), tcp_flags=np.array([0x12, 0, 0], np.uint8),
                          fragment=np.zeros(3, bool), vlan=np.zeros(3, np.uint16),
                          batch=SimpleNamespace(ts=np.zeros(3)))
    for few in (8, 0):
        monkeypatch.setattr(flows, "FEW_GROUPS", few)
        new = orient(dec, np.arange(3), np.zeros(3, np.uint8))
        assert new.orig_is_a.tolist() == [0, 0, 0]              # each first packet came from the responder
        assert new.orig_port.tolist() == [50000, 0, 40000] and new.resp_port.tolist() == [554, 0, 53]


def test_no_groups_give_empty_columns_of_their_types_on_both_paths(monkeypatch):
    """NewFlows' documented types hold for no groups too: the compiled apply reads orig_port and resp_port as raw
    int64 buffers, and an empty list given to numpy without a type becomes float64."""
    dec = _columns(random.Random(0), 4)
    for few in (8, 0):
        monkeypatch.setattr(flows, "FEW_GROUPS", few)
        new = orient(dec, np.zeros(0, np.int64), np.zeros(0, np.uint8))
        assert [column.dtype for column in new] == [np.uint8, np.int64, np.int64, np.int64, np.float64], few
        assert [len(column) for column in new] == [0] * 5
