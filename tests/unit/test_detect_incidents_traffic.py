"""Traffic.add counts each observation of a followed device; it compares instead of calling min() and max() (issue
16: it runs for every such observation). The reference below is the version it replaced; both must leave every
field equal, to the bit, on random streams: time running backwards and repeating, ties, tiny and huge byte counts,
names and addresses past the listed bound, repeated observations, flows past MAX_FLOWS and without room."""

from __future__ import annotations

import copy
import random
import weakref
from dataclasses import fields

from sensor.detect import Alert, Indicators
from sensor.detect.incidents import FAN_OUT, FOLLOWED_MAX, MAX_FLOWS, Incidents, Traffic, _note
from sensor.detect.services import ServiceResolver
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


# Incidents.traffic finds the pair's own open incident with one lookup, and asks _fanned_out only when there is none.
# The reference is the version it replaced; both must write the same lines on random days of detections and
# traffic: bare addresses past FAN_OUT, names arriving after the SYN (adoption), silences past the timeout, time
# running backwards (an incident the sweep, going by recency, leaves open after its silence),
# evictions at a small bound.

class OldIncidents(Incidents):
    def traffic(self, obs, service):
        self._sweep(obs.ts)
        self._adopt(obs.device.id, obs.peer, obs.name, service)
        service = self._fanned_out(obs.device.id, service, obs.scope)
        incident = self._current((obs.device.id, service.id), obs.ts)
        if incident is not None:
            incident.last = max(incident.last, obs.ts)
            self._followed += incident.traffic.add(obs, self._followed < FOLLOWED_MAX)
            self._link(obs, incident)


def _lines(incidents: Incidents, now: float) -> list[dict]:
    out = [incidents.line(incident, event, ts).as_dict() for incident, event, ts in incidents.take_changes()]
    for incident in list(incidents._open.values()):
        incident.written = True
    return out + [a.as_dict() for a in incidents.take_closed(now)]


def test_traffic_writes_what_the_two_lookups_wrote():
    rng = random.Random(1612)
    resolver = ServiceResolver(Indicators.load())
    devices = [device(f"10.20.0.{i}") for i in range(1, 4)]
    peers = [f"203.0.113.{i}" for i in range(FAN_OUT + 4)]
    names = [None, None, "clips.example-oem.net", "litedev.hik-connect.com"]
    compared = 0
    for _ in range(300):
        bound = rng.choice([4, 12, 1000])
        old, new = OldIncidents("site", 50.0, bound), Incidents("site", 50.0, bound)
        ts = 1_700_000_000.0
        for _ in range(rng.randint(20, 120)):
            ts += rng.choice([0.0, 0.3, 1.0, 7.0, 49.9, 50.0, 50.5, 400.0, -3.0, -10.0])   # and backwards
            dev, peer, name = rng.choice(devices), rng.choice(peers), rng.choice(names)
            service = resolver.of_destination(peer, name)
            obs = observation(dev, ts=ts, peer=peer, name=name, sent_bytes=rng.choice([0, 60, 1500]))
            if rng.random() < 0.3:
                alert = Alert(ts, "site", rng.choice(["egress_policy", "beaconing"]), rng.choice(["low", "high"]),
                              dev.ip, None, None, peer, 443, "tcp", name, "public", 1.0, "seen", 20, {})
                old.detect(alert, service, dev, obs)
                new.detect(copy.copy(alert), service, dev, obs)
            else:
                old.traffic(obs, service)
                new.traffic(obs, service)
            if rng.random() < 0.3:   # lines are not owed every step: an open line may wait (and adoption with it)
                got, want = _lines(new, ts), _lines(old, ts)
                assert got == want
                compared += len(got)
        assert [a.as_dict() for a in new.take_closed(ts + 1e6, "end")] == \
            [a.as_dict() for a in old.take_closed(ts + 1e6, "end")]
    assert compared > 500
