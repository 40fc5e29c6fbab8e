"""sensor/dissect.py, the link's messages: parse_dhcp (every field the link reader uses), parse_arp and parse_ndp,
and the same DHCP messages read by Wireshark where tshark is installed."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest
from link_packets import (
    arp,
    dhcp,
    dhcp_ack,
    dhcp_request,
    dhcpv6,
    dhcpv6_frame,
    mac_int,
    neighbor_advertisement,
    neighbor_solicitation,
    router_advertisement,
    write_pcap,
)

from packets import mac
from sensor.dissect import DhcpMessage, parse_arp, parse_dhcp, parse_dhcpv6, parse_ndp

CAM, ROUTER = mac("c0:56:e3:00:00:10"), mac("02:00:5e:00:00:01")


def _udp_payload(frame: bytes) -> bytes:
    return frame[14 + 20 + 8:]


def test_a_dhcp_request_names_the_client_and_the_address_it_asks_for():
    msg = parse_dhcp(_udp_payload(dhcp_request(CAM, "192.168.1.10", "cam-entrance", "udhcp 1.22.1")))
    assert (msg.op, msg.message_type, msg.chaddr) == (1, "request", mac_int(CAM))
    assert (msg.requested, msg.ciaddr, msg.yiaddr) == ("192.168.1.10", None, None)
    assert (msg.host_name, msg.vendor_class, msg.parameters) == ("cam-entrance", "udhcp 1.22.1", [1, 3, 6, 15])


def test_a_dhcp_ack_gives_the_lease_its_mask_and_router():
    msg = parse_dhcp(_udp_payload(dhcp_ack(ROUTER, "192.168.1.1", CAM, "192.168.1.10", "255.255.254.0",
                                           router="192.168.1.1")))
    assert (msg.op, msg.message_type, msg.chaddr, msg.yiaddr) == (2, "ack", mac_int(CAM), "192.168.1.10")
    assert (msg.subnet_mask, msg.prefix_length, msg.routers, msg.server_id) == (
        "255.255.254.0", 23, ["192.168.1.1"], "192.168.1.1")


def test_dhcp_options_pad_end_and_first_value_kept():
    message = dhcp(1, 8, CAM, ciaddr="10.0.0.9", options=[(0, b""), (12, b"first"), (12, b"second")])
    msg = parse_dhcp(message.replace(b"\x00\x00\x0cfirst", b"\x00\x0cfirst"))
    assert (msg.message_type, msg.ciaddr, msg.host_name) == ("inform", "10.0.0.9", "first")
    assert parse_dhcp(message[:239]) is None and parse_dhcp(b"\x03" + message[1:]) is None
    no_mac = bytearray(message)
    no_mac[1] = 6   # IEEE 802 is htype 1: any other hardware address is not a MAC
    assert parse_dhcp(bytes(no_mac)).chaddr == 0


@pytest.mark.parametrize("length", range(33))
def test_every_contiguous_mask_is_its_prefix_length(length):
    mask = ipaddress.IPv4Network(f"0.0.0.0/{length}").netmask
    ack = dhcp(2, 5, CAM, yiaddr="10.1.2.3", options=[(1, mask.packed)])
    assert parse_dhcp(ack).prefix_length == (length if length else None)   # 0.0.0.0 is no mask: absent


def test_a_mask_with_a_hole_or_written_by_hand_is_no_prefix():
    for mask in ("255.255.255.253", "255.255.0.255", "128.0.0.1", "0.0.0.255"):
        ack = dhcp(2, 5, CAM, yiaddr="10.1.2.3", options=[(1, ipaddress.IPv4Address(mask).packed)])
        assert parse_dhcp(ack).prefix_length is None
    hand = DhcpMessage(2, "ack", 0, None, "10.1.2.3", subnet_mask="255.255.255.000")
    assert hand.prefix_length is None   # not the text the parser writes: no prefix, and no exception


def test_arp_requests_and_replies_name_their_sender():
    req = parse_arp(arp(CAM, "192.168.1.10", "192.168.1.1")[14:])
    assert (req.op, req.sender_mac, req.sender_ip, req.target_ip) == (1, mac_int(CAM), "192.168.1.10", "192.168.1.1")
    probe = parse_arp(arp(CAM, "0.0.0.0", "192.168.1.10")[14:])
    assert probe.sender_ip is None and probe.target_ip == "192.168.1.10"
    assert parse_arp(arp(CAM, "192.168.1.10", "192.168.1.1")[14:40]) is None


def _icmp6(frame: bytes) -> bytes:
    return frame[14 + 40:]


def test_neighbour_discovery_messages():
    na = parse_ndp(_icmp6(neighbor_advertisement(CAM, "fe80::1", "2001:db8::10")))
    assert (na.kind, na.target, na.link_address) == ("neighbor_advertisement", "2001:db8::10", mac_int(CAM))
    dad = parse_ndp(_icmp6(neighbor_solicitation(CAM, "::", "fe80::10")))
    assert (dad.kind, dad.target, dad.link_address) == ("neighbor_solicitation", "fe80::10", 0)
    ra = parse_ndp(_icmp6(router_advertisement(ROUTER, "fe80::1", "2001:db8:1::")))
    assert (ra.kind, ra.link_address, ra.prefixes) == ("router_advertisement", mac_int(ROUTER), [("2001:db8:1::", 64)])
    assert parse_ndp(bytes([128, 0, 0, 0, 0, 0, 0, 0])) is None   # an echo request is not NDP


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_dhcp_fields_agree_with_wireshark(tmp_path):
    frames = [dhcp_request(CAM, "192.168.1.10", "cam-entrance", "udhcp 1.22.1"),
              dhcp_ack(ROUTER, "192.168.1.1", CAM, "192.168.1.10", "255.255.255.0", router="192.168.1.1")]
    path = write_pcap(tmp_path / "dhcp.pcap", [(1_700_000_000.0 + i, f) for i, f in enumerate(frames)])
    fields = ["dhcp.hw.mac_addr", "dhcp.option.requested_ip_address", "dhcp.option.hostname",
              "dhcp.option.vendor_class_id", "dhcp.ip.your", "dhcp.option.subnet_mask", "dhcp.option.router"]
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    ours = [parse_dhcp(_udp_payload(f)) for f in frames]
    theirs = [dict(zip(fields, line.split("\t"), strict=True)) for line in out]
    for msg, wire in zip(ours, theirs, strict=True):
        assert wire["dhcp.hw.mac_addr"] == "c0:56:e3:00:00:10" and msg.chaddr == mac_int(CAM)
        assert (msg.requested or "") == wire["dhcp.option.requested_ip_address"]
        assert (msg.host_name or "") == wire["dhcp.option.hostname"]
        assert (msg.vendor_class or "") == wire["dhcp.option.vendor_class_id"]
        assert (msg.yiaddr or "0.0.0.0") == wire["dhcp.ip.your"]
        assert (msg.subnet_mask or "") == wire["dhcp.option.subnet_mask"]
        assert ",".join(msg.routers) == wire["dhcp.option.router"]


# ---- DHCPv6 ------------------------------------------------------------------------------------------------------
GLOBAL, LINK_LOCAL = "2001:db8:1::7a3f:91c2", "fe80::c256:e3ff:fe00:10"


def test_a_dhcpv6_reply_gives_the_client_its_addresses():
    msg = parse_dhcpv6(dhcpv6(7, CAM, [(GLOBAL, 7200), ("2001:db8:1::dead", 0)]))
    assert (msg.kind, msg.client_mac) == ("reply", mac_int(CAM))
    assert msg.addresses == [(GLOBAL, 7200), ("2001:db8:1::dead", 0)]   # lifetime 0: the server takes it back


def test_a_dhcpv6_client_names_itself():
    msg = parse_dhcpv6(dhcpv6(1, CAM, host_name="ipc-lobby.site.example", vendor="HIKVISION DS-2CD2T47"))
    assert (msg.kind, msg.host_name, msg.vendor_class) == ("solicit", "ipc-lobby.site.example", "HIKVISION DS-2CD2T47")
    assert parse_dhcpv6(dhcpv6(5, None)).client_mac == 0   # no client identifier, no MAC
    assert parse_dhcpv6(b"\x0c" + bytes(40)) is None        # a relay message is not read
    assert parse_dhcpv6(b"\x07\x00") is None


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_dhcpv6_fields_agree_with_wireshark(tmp_path):
    frames = [dhcpv6_frame(CAM, LINK_LOCAL, "ff02::1:2", dhcpv6(1, CAM, host_name="ipc-lobby.site.example",
                                                                  vendor="HIKVISION"), client=True),
              dhcpv6_frame(ROUTER, "fe80::1", LINK_LOCAL, dhcpv6(7, CAM, [(GLOBAL, 7200)]), client=False,
                           dst_mac=CAM)]
    path = write_pcap(tmp_path / "dhcpv6.pcap", [(1_700_000_000.0 + i, f) for i, f in enumerate(frames)])
    fields = ["dhcpv6.msgtype", "dhcpv6.duidllt.link_layer_addr", "dhcpv6.iaaddr.ip", "dhcpv6.iaaddr.valid_lifetime",
              "dhcpv6.client_domain", "dhcpv6.vendorclass.data"]
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    theirs = [dict(zip(fields, line.split("\t"), strict=True)) for line in out]
    ours = [parse_dhcpv6(f[14 + 40 + 8:]) for f in frames]
    assert [w["dhcpv6.msgtype"] for w in theirs] == ["1", "7"] and [m.kind for m in ours] == ["solicit", "reply"]
    for msg, wire in zip(ours, theirs, strict=True):
        assert wire["dhcpv6.duidllt.link_layer_addr"] == "c0:56:e3:00:00:10" and msg.client_mac == mac_int(CAM)
        assert ",".join(a for a, _ in msg.addresses) == wire["dhcpv6.iaaddr.ip"]
        assert ",".join(str(v) for _, v in msg.addresses) == wire["dhcpv6.iaaddr.valid_lifetime"]
        assert (msg.host_name or "") == wire["dhcpv6.client_domain"].rstrip(".")   # a full name ends in the root
    assert ours[0].vendor_class == "HIKVISION"
    assert theirs[0]["dhcpv6.vendorclass.data"] in ("HIKVISION", "48494b564953494f4e")   # text or hex by version


def test_v4_text_is_ipaddress_text_for_every_length_and_value():
    """dissect._v4 writes an IPv4 address as ipaddress does (the link's claims and learnt networks key on it)."""
    import ipaddress
    import random

    from sensor.dissect import _v4
    rng = random.Random(4)
    edges = [b"\0\0\0\1", b"\xff\xff\xff\xff", b"\x0a\0\0\0", b"\x7f\0\0\1", b"\xc0\xa8\x01\xfe", b"\x01\x02\x03\x04"]
    for raw in edges + [rng.randbytes(4) for _ in range(20_000)]:
        assert _v4(raw) == (str(ipaddress.IPv4Address(raw)) if raw != b"\0\0\0\0" else None)
    assert _v4(b"\0\0\0\0") is None
    for n in (0, 1, 3, 5, 16):
        assert _v4(rng.randbytes(n)) is None
