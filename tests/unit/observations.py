"""What the detector unit tests feed a detector: a camera-side device (with a covered maker when named) and one
observation of its traffic, every field defaulted to an ordinary camera-to-Internet TCP/443 update."""

from __future__ import annotations

from sensor.enrich import CoveredMakers, Device, Observation
from sensor.enrich.maker_evidence import Verdict

MAKERS = {m.name: m for m in CoveredMakers.load().makers}


def device(ip="10.20.0.5", maker=None, vendor=None) -> Device:
    dev = Device(ip, mac=0x0012AB000001, vendor=vendor)
    found = MAKERS.get(maker)
    if found is not None:
        dev.verdict = Verdict(found.name, found, found.basis, None)
    return dev


def observation(dev, ts=100.0, sent_packets=3, sent_bytes=300, initiated=True, peer="203.0.113.7", port=443,
                proto="tcp", name=None, scope="public", vlan=20, flow=None, new_flow=False,
                received_bytes=0, received_packets=0) -> Observation:
    return Observation(ts, dev, sent_packets, sent_bytes, initiated, peer, port, proto, name, scope, vlan, flow,
                       new_flow, received_bytes, received_packets)
