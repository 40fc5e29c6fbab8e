"""sensor/enrich/roles.py: each behaviour that makes a device a camera, a recorder or the gateway, at its edges
(RTSP ports, DNS and NTP answers, the one-way UDP volume and ratio of a media stream, the router's MAC)."""

from __future__ import annotations

import pytest

from sensor.config import Config
from sensor.decode import PROTO_TCP, PROTO_UDP
from sensor.enrich import CoveredMakers, Device, Inventory, ManufDatabase
from sensor.enrich.roles import MAX_ROUTER_MACS, RoleEvidence
from sensor.flows import Flow


def _flow(proto, orig_port, resp_port, resp_pkts=1, orig_payload=0, resp_payload=0) -> Flow:
    flow = Flow(b"k" * 37, 0, proto, orig_port, resp_port, 0.0)
    flow.resp_pkts, flow.orig_payload, flow.resp_payload = resp_pkts, orig_payload, resp_payload
    return flow


def _evidence(flow, is_orig) -> set:
    dev = Device("10.20.0.5")
    RoleEvidence(Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))).from_flow(dev, flow, is_orig)
    return dev.evidence


@pytest.mark.parametrize("flow,is_orig,evidence", [
    (_flow(PROTO_TCP, 40000, 554), True, {"rtsp_client"}),
    (_flow(PROTO_TCP, 40000, 8554), False, {"rtsp_server"}),
    (_flow(PROTO_TCP, 40000, 554, resp_pkts=0), True, set()),               # unanswered: no RTSP session
    (_flow(PROTO_TCP, 40000, 555), True, set()),
    (_flow(PROTO_UDP, 40000, 554), True, set()),
    (_flow(PROTO_UDP, 5353, 53), False, {"dns_server"}),
    (_flow(PROTO_UDP, 5353, 53), True, set()),
    (_flow(PROTO_UDP, 40000, 123), False, {"ntp_server"}),
    (_flow(PROTO_UDP, 123, 123), False, set()),                              # NTP peers: symmetric, not a server
    (_flow(PROTO_UDP, 40000, 123), True, set()),
    (_flow(PROTO_UDP, 5000, 6000, orig_payload=100_000, resp_payload=4999), True, {"video_sender"}),
    (_flow(PROTO_UDP, 5000, 6000, orig_payload=100_000, resp_payload=4999), False, {"video_receiver"}),
    (_flow(PROTO_UDP, 5000, 6000, orig_payload=100_000, resp_payload=5000), True, set()),   # exactly 20x: not
    (_flow(PROTO_UDP, 5000, 6000, orig_payload=99_999, resp_payload=0), True, set()),
    (_flow(PROTO_TCP, 5000, 6000, orig_payload=200_000, resp_payload=0), True, set()),
])
def test_flow_evidence(flow, is_orig, evidence):
    assert _evidence(flow, is_orig) == evidence


def test_the_router_mac_marks_its_owner_now_and_later_and_is_bounded():
    inventory = Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))
    roles = RoleEvidence(inventory)
    gateway = inventory.touch("10.20.0.1", 0xFE, 1.0)
    other = inventory.touch("10.20.0.5", 0x11, 1.0)
    roles.note_router_mac(0)
    assert roles.router_macs == set()
    roles.note_router_mac(0xFE)
    assert gateway.evidence == {"router_mac"} and other.evidence == set() and gateway.role == "gateway"
    # Its own address claimed on the link later (an ARP reply) is the same gateway ...
    assert inventory.claim("10.20.0.254", 0xFE, 2.0) is gateway
    roles.from_flow(gateway, _flow(PROTO_TCP, 1, 2), True)
    assert gateway.evidence == {"router_mac"} and set(gateway.addresses) == {"10.20.0.1", "10.20.0.254"}
    # ... but a host behind the router carries the router's MAC without being the router (issue 14)
    behind = inventory.touch("10.30.0.9", 0xFE, 2.0)
    roles.from_flow(behind, _flow(PROTO_TCP, 1, 2), True)
    assert behind is not gateway and behind.evidence == set() and behind.role == "other"
    for mac in range(0x100, 0x100 + MAX_ROUTER_MACS + 5):
        roles.note_router_mac(mac)
    assert len(roles.router_macs) == MAX_ROUTER_MACS == 64
