"""Traffic.add counts each observation of a followed device; it compares instead of calling min() and max() (issue
16: it runs for every such observation). The reference below is the version it replaced; both must leave every
field equal, to the bit, on random streams: time running backwards and repeating, ties, tiny and huge byte counts,
names and addresses past the listed bound, repeated observations, flows past MAX_FLOWS and without room."""

from __future__ import annotations

import random
import weakref
from dataclasses import fields

from sensor.detect.incidents import MAX_FLOWS, Traffic, _note
from sensor.flows import Flow

from .observations import device, observation


class OldTraffic(Traffic):
    __slots__ = ()

    def add(self, obs, room=True):
        if self.last_seen is not None and self.last_seen() is obs:
            return 0
        self.last_seen = weakref.ref(obs)
        added = self._follow(obs, room)
        self.first = obs.ts if self.first is None else min(self.first, obs.ts)
        self.last = obs.ts if self.last is None else max(self.last, obs.ts)
        self.addresses = _note(self.addresses, obs.peer)
        if obs.name:
            self.names = _note(self.names, obs.name)
        second = int(obs.ts)
        if second != self.second:
            self.second, self.second_bytes = second, 0
        self.second_bytes += obs.sent_bytes
        self.peak_bps = max(self.peak_bps, 8.0 * self.second_bytes)
        return added


def _state(traffic: Traffic) -> dict:
    out = {f.name: getattr(traffic, f.name) for f in fields(Traffic) if f.name != "last_seen"}
    out["flows"] = tuple((id(f[0]), *f[1:]) for f in traffic.flows)
    return out


def test_add_leaves_what_min_and_max_left():
    rng = random.Random(1611)
    dev = device()
    kinds = 0
    for _ in range(300):
        old, new = OldTraffic(), Traffic()
        flows = [Flow(b"k%d" % i, 20, 6, 40000 + i, 443, 0.0) for i in range(MAX_FLOWS + 3)]
        ts = rng.uniform(0, 2e9)
        obs = None
        for _ in range(rng.randint(1, 60)):
            if obs is not None and rng.random() < 0.1:
                pass   # the same observation again (several detections of it): counted once
            else:
                ts = rng.choice([ts, ts + rng.uniform(0, 2), ts - rng.uniform(0, 3), ts + 5e-324, ts + 1e6])
                flow = rng.choice([None, *flows])
                if flow is not None:
                    flow.orig_pkts += rng.randint(0, 5)
                    flow.orig_bytes += rng.choice([0, 1, 1500, 2**40])
                name = rng.choice([None, "", "a.example", f"n{rng.randrange(40)}.example", "x" * 300])
                obs = observation(dev, ts=ts, sent_bytes=rng.choice([0, 1, 60, 1500, 2**50]), name=name,
                                  peer=f"203.0.113.{rng.randrange(40)}", flow=flow)
            room = rng.random() < 0.8
            assert old.add(obs, room) == new.add(obs, room)
            assert _state(old) == _state(new)
            kinds += len(new.addresses) == 16
    assert kinds > 0   # the listed bound was reached, so it was compared too
