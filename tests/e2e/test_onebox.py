"""One device per box and zero-config scoping learnt from the link (issue 14), end to end: generated captures of each
case (a dual-stack camera, DHCP renumbering, a router with two addresses, a routed segment, a forged-MAC flood, a
camera fetching from another private subnet, a global IPv6 camera), a real capture, and the state store."""

from __future__ import annotations

import ipaddress
import json
import random
import sqlite3

import pytest
from conftest import REAL
from link_packets import (
    arp,
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

from packets import ethernet, ipv4, ipv6, mac, tcp, udp
from sensor.cli.loop import replay_into
from sensor.config import parse_config
from sensor.enrich.addresses import eui64
from sensor.pipeline import Sensor
from sensor.report.sources import Estate, read_state

T0 = 1_700_000_000.0
CAM, ROUTER = mac("c0:56:e3:00:00:10"), mac("02:00:5e:00:00:01")   # a Hikvision camera: role camera
CAM_V4, GW_V4, GW_V4_2 = "192.168.1.10", "192.168.1.1", "192.168.1.254"
PREFIX = "2001:db8:1::"
CAM_V6, GW_LL = "2001:db8:1::10", "fe80::1"
CAM_LL = str(ipaddress.IPv6Address((0xFE80 << 112) | eui64(mac_int(CAM))))
CLOUD_V4, CLOUD_V6 = "203.0.113.5", "2606:4700::1111"


def _tcp(src_mac, src, dst, sport, dport, flags="PA", payload=b"x" * 40, dst_mac=ROUTER):
    l4 = tcp(src, dst, sport, dport, 1, 1, flags, payload)
    version = ipaddress.ip_address(src).version
    return ethernet(dst_mac, src_mac, 0x0800 if version == 4 else 0x86DD,
                    ipv4(src, dst, 6, l4) if version == 4 else ipv6(src, dst, 6, l4))


def _udp(src_mac, src, dst, sport, dport, payload=b"q" * 30, dst_mac=ROUTER):
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)))


def _conversation(ts, cam_mac, cam, peer, sport=40000, seconds=4, port=443):
    """A device talking to a peer (replies through the router) once a second for `seconds` seconds."""
    out = []
    for k in range(seconds):
        out.append((ts + k, _tcp(cam_mac, cam, peer, sport, port)))
        out.append((ts + k + 0.01, _tcp(ROUTER, peer, cam, port, sport, dst_mac=cam_mac)))
    return out


def _run(tmp_path, frames, config=None, name="case.pcap", state=None):
    alerts = []
    cfg = dict(config or {})
    if state is not None:
        cfg["state"] = {"path": str(state)}
    sensor = Sensor(parse_config(cfg), on_alert=alerts.append)
    assert replay_into(sensor, [str(write_pcap(tmp_path / name, sorted(frames, key=lambda f: f[0])))]) == []
    return sensor, alerts


def _devices(sensor):
    return {d["ip"]: d for d in sensor.inventory_snapshot()}


def _dual_stack_site():
    frames = [(T0, router_advertisement(ROUTER, GW_LL, PREFIX)),
              (T0 + 0.1, neighbor_solicitation(CAM, "::", CAM_LL)),                 # duplicate address detection
              (T0 + 0.2, neighbor_advertisement(CAM, CAM_LL, CAM_V6)),
              (T0 + 0.3, dhcp_request(CAM, CAM_V4, "cam-entrance", "udhcp 1.22.1")),
              (T0 + 0.31, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4)),
              (T0 + 0.4, arp(CAM, CAM_V4, GW_V4)),
              (T0 + 0.41, arp(ROUTER, GW_V4, CAM_V4, reply=True, target_mac=CAM))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, CLOUD_V4)
    frames += _conversation(T0 + 1.5, CAM, CAM_V6, CLOUD_V6, sport=40001)
    return frames


def test_a_dual_stack_camera_is_one_device_and_its_ipv6_traffic_is_its_own(tmp_path):
    sensor, alerts = _run(tmp_path, _dual_stack_site())
    devices = _devices(sensor)
    cam = devices[CAM_V4]
    assert set(cam["addresses"]) == {CAM_V4, CAM_V6, CAM_LL} and cam["addresses"][0] == CAM_V4
    assert cam["mac"] == "c0:56:e3:00:00:10" and cam["first_seen"] == pytest.approx(T0 + 0.1, abs=1e-5)
    assert {e["ip"] for e in cam["external_destinations"]} == {CLOUD_V4, CLOUD_V6}
    assert cam["identity"]["dhcp_hostname"] == "cam-entrance" and cam["identity"]["dhcp_vendor_class"] == \
        "udhcp 1.22.1"
    # the IPv6 address is camera-side (learnt from the router's prefix and the camera's own NDP), its peer public
    assert sensor.classifier.address_scope(ipaddress.ip_address(CAM_V6)) == "camera"
    assert sensor.classifier.address_scope(ipaddress.ip_address(CLOUD_V6)) == "public"
    v6_alerts = [a for a in alerts if a.dst_ip == CLOUD_V6]
    assert v6_alerts and {a.device_ip for a in v6_alerts} == {CAM_V4}
    # the router: one gateway with its IPv4 and link-local addresses
    gateway = devices[GW_V4]
    assert set(gateway["addresses"]) == {GW_V4, GW_LL} and gateway["role"] == "gateway"
    assert len(devices) == 2


def test_the_dual_stack_cameras_ipv6_windows_are_scored_as_that_camera(tmp_path):
    from sensor.model import WindowFeatures
    windows = WindowFeatures()
    sensor = Sensor(parse_config({}), windows=windows)
    replay_into(sensor, [str(write_pcap(tmp_path / "d.pcap", sorted(_dual_stack_site(), key=lambda f: f[0])))])
    rows = windows.flush()
    assert rows and {ip for ip, _start, _vector in rows} == {CAM_V4}


def test_dhcp_renumbering_keeps_the_device_with_its_history(tmp_path):
    frames = _conversation(T0, CAM, CAM_V4, CLOUD_V4)
    frames += [(T0 + 10, dhcp_request(CAM, "192.168.1.20")),
               (T0 + 10.01, dhcp_ack(ROUTER, GW_V4, CAM, "192.168.1.20", router=GW_V4))]
    frames += _conversation(T0 + 11, CAM, "192.168.1.20", CLOUD_V4, sport=40100)
    sensor, alerts = _run(tmp_path, frames, state=tmp_path / "state.db")
    cams = [d for d in sensor.inventory_snapshot() if d["mac"] == "c0:56:e3:00:00:10"]
    assert len(cams) == 1
    cam = cams[0]
    assert (cam["ip"], cam["addresses"], cam["former_addresses"]) == ("192.168.1.20", ["192.168.1.20"], [CAM_V4])
    assert cam["id"] == CAM_V4 and cam["first_seen"] == T0 and cam["packets_sent"] == 8
    assert sensor.inventory.lookup("192.168.1.20") is sensor.inventory.devices.get(CAM_V4)
    # its story with the cloud goes on through the new address: one episode under the device's id, one detection
    lines = [a.as_dict() for a in alerts if a.detector == "egress_policy"]
    assert [line["event"] for line in lines] == ["open", "close"]
    # the incident follows the device, not the address: the second conversation is in its totals
    assert (lines[1]["totals"]["packets_out"], lines[1]["totals"]["last_seen"]) == (8, T0 + 14)
    sensor.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        keys = [json.loads(key) for (key,) in db.execute("SELECT key FROM episode")]
    assert [k for k in keys if k[0] == "egress_policy"] == [["egress_policy", CAM_V4, CLOUD_V4]]
    # and the report finds that story under the device, now at its new address
    estate = Estate()
    read_state(str(tmp_path / "state.db"), "site", estate, parse_config({}))
    (record,) = [r for r in estate.devices if r.doc["mac"] == "c0:56:e3:00:00:10"]
    assert record.ip == "192.168.1.20" and [e.detector for e in record.episodes] == ["egress_policy"]


def test_an_address_change_with_the_same_mac_keeps_the_device(tmp_path):
    frames = _conversation(T0, CAM, CAM_V4, CLOUD_V4) + _conversation(T0 + 30, CAM, "192.168.1.33", CLOUD_V4)
    sensor, _alerts = _run(tmp_path, frames)
    (cam,) = sensor.inventory_snapshot()
    assert (cam["ip"], cam["former_addresses"], cam["packets_sent"]) == ("192.168.1.33", [CAM_V4], 8)


def test_a_router_with_two_addresses_is_one_gateway(tmp_path):
    frames = [(T0, arp(CAM, CAM_V4, GW_V4)), (T0 + 0.01, arp(ROUTER, GW_V4, CAM_V4, reply=True, target_mac=CAM)),
              (T0 + 0.5, arp(ROUTER, GW_V4_2, CAM_V4)), (T0 + 1.5, arp(ROUTER, GW_V4_2, CAM_V4))]
    for k in range(3):   # DNS from the first address, NTP from the second, Internet traffic through both
        frames += [(T0 + 1 + k, _udp(CAM, CAM_V4, GW_V4, 5353, 53)),
                   (T0 + 1.01 + k, _udp(ROUTER, GW_V4, CAM_V4, 53, 5353, dst_mac=CAM)),
                   (T0 + 1.2 + k, _udp(CAM, CAM_V4, GW_V4_2, 123, 123)),
                   (T0 + 1.21 + k, _udp(ROUTER, GW_V4_2, CAM_V4, 123, 123, dst_mac=CAM))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, CLOUD_V4)
    sensor, _alerts = _run(tmp_path, frames)
    gateways = [d for d in sensor.inventory_snapshot() if d["mac"] == "02:00:5e:00:00:01"]
    assert len(gateways) == 1 and set(gateways[0]["addresses"]) == {GW_V4, GW_V4_2}
    assert gateways[0]["role"] == "gateway" and len(sensor.inventory) == 2


def test_hosts_behind_a_router_stay_separate_devices(tmp_path):
    """A routed segment: every host behind the router reaches the sensor with the router's MAC."""
    hosts = [f"10.30.1.{i}" for i in range(1, 13)]
    frames = []
    for i, host in enumerate(hosts):
        frames += _conversation(T0 + i * 0.05, ROUTER, host, CLOUD_V4, sport=41000 + i, seconds=5)
    sensor, alerts = _run(tmp_path, frames, {"networks": {"camera": ["10.30.0.0/16"]}})
    devices = _devices(sensor)
    assert set(devices) == set(hosts)
    assert all(d["addresses"] == [d["ip"]] and d["role"] != "gateway" for d in devices.values())
    assert {a.device_ip for a in alerts if a.detector == "egress_policy"} == set(hosts)


def test_hosts_behind_a_router_without_internet_traffic_stay_separate(tmp_path):
    hosts = [f"10.30.1.{i}" for i in range(1, 9)]
    frames = []
    for i, host in enumerate(hosts):
        for k in range(5):
            frames.append((T0 + k + i * 0.01, _udp(ROUTER, host, "10.30.0.5", 5000 + i, 554)))
    sensor, _alerts = _run(tmp_path, frames, {"networks": {"camera": ["10.30.0.0/16"]}})
    assert {d["ip"] for d in sensor.inventory_snapshot()} == set(hosts)
    assert mac_int(ROUTER) in sensor.inventory.router_macs   # more addresses than a box has


def test_a_forged_mac_flood_neither_merges_into_nor_hijacks_the_camera(tmp_path):
    rng = random.Random(14)
    frames = [(T0, arp(CAM, CAM_V4, GW_V4)), (T0 + 0.5, dhcp_request(CAM, CAM_V4, "cam-entrance"))]
    frames += _conversation(T0, CAM, CAM_V4, CLOUD_V4, seconds=6)
    for k in range(3000):
        ts = T0 + 2 + k / 1000
        if k % 3 == 0:     # the camera's MAC with forged addresses
            frames.append((ts, _udp(CAM, f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}", CLOUD_V4, k, 80)))
        elif k % 3 == 1:   # the camera's address with forged MACs
            forged = bytes([2, rng.randrange(256), rng.randrange(256), 0, k >> 8 & 0xFF, k & 0xFF])
            frames.append((ts, _udp(forged, CAM_V4, CLOUD_V4, k, 80)))
        else:              # a forged ARP claim of the camera's address
            forged = bytes([2, 9, 9, 0, k >> 8 & 0xFF, k & 0xFF])
            frames.append((ts, arp(forged, CAM_V4, GW_V4)))
    sensor, _alerts = _run(tmp_path, frames, {"limits": {"max_devices": 64}})
    cam = sensor.inventory.lookup(CAM_V4)
    assert cam is not None and cam.mac == mac_int(CAM) and cam.identity["dhcp_hostname"] == "cam-entrance"
    assert list(cam.addresses) == [CAM_V4] and cam.id == CAM_V4
    assert len(sensor.inventory) <= 64


def test_a_camera_fetching_from_another_private_subnet_is_seen_with_no_config(tmp_path):
    server = "10.50.0.5"
    frames = [(T0, dhcp_request(CAM, CAM_V4)), (T0 + 0.01, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4)),
              (T0 + 0.02, arp(ROUTER, GW_V4, CAM_V4, reply=True, target_mac=CAM))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, GW_V4, port=53, seconds=2)
    get = b"GET /bins/x86.sh HTTP/1.1\r\nHost: 10.50.0.5\r\n\r\n"
    frames += [(T0 + 5, _tcp(CAM, CAM_V4, server, 40200, 80, "S", b"")),
               (T0 + 5.01, _tcp(ROUTER, server, CAM_V4, 80, 40200, "SA", b"", dst_mac=CAM)),
               (T0 + 5.02, _tcp(CAM, CAM_V4, server, 40200, 80, "PA", get)),
               (T0 + 5.03, _tcp(ROUTER, server, CAM_V4, 80, 40200, "PA", b"HTTP/1.1 200 OK\r\n\r\n#!/bin/sh\n",
                                dst_mac=CAM))]
    sensor, alerts = _run(tmp_path, frames)
    fetch = [a for a in alerts if a.detector == "cleartext_fetch"]
    assert fetch and {(a.dst_scope, a.device_ip) for a in fetch} == {("private", CAM_V4)}
    assert "in another private network" in fetch[0].summary
    assert server not in _devices(sensor) and sensor.inventory.lookup(server) is None
    assert ipaddress.ip_network("192.168.1.0/24") in sensor.classifier.learned


def test_configured_networks_still_win(tmp_path):
    frames = [(T0, dhcp_request(CAM, CAM_V4)), (T0 + 0.01, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, "10.50.0.5", port=8080)
    sensor, _alerts = _run(tmp_path, frames, {"networks": {"camera": ["10.0.0.0/8", "192.168.0.0/16"]}})
    assert sensor.classifier.learned == {}
    assert sensor.classifier.address_scope(ipaddress.ip_address("10.50.0.5")) == "camera"


def test_a_global_ipv6_camera_talking_to_the_internet_is_seen(tmp_path):
    """No NDP in the capture: the address carries the camera's MAC (EUI-64), so it is the camera's and on the link."""
    cam_v6 = str(ipaddress.IPv6Address((0x20010DB8_0005_0000 << 64) | eui64(mac_int(CAM))))
    frames = _conversation(T0, CAM, cam_v6, CLOUD_V6, seconds=4)
    sensor, alerts = _run(tmp_path, frames)
    devices = _devices(sensor)
    assert set(devices) == {str(ipaddress.ip_address(cam_v6))}
    (cam,) = devices.values()
    assert cam["egress_bytes"].get("public", 0) > 0 and cam["external_destinations"][0]["ip"] == CLOUD_V6
    assert any(a.detector == "egress_policy" and a.dst_ip == CLOUD_V6 for a in alerts)


def test_the_state_store_keeps_every_address_of_a_box(tmp_path):
    state = tmp_path / "state.db"
    frames = _dual_stack_site()
    sensor, _alerts = _run(tmp_path, frames, state=state)
    before = {d["id"]: d for d in sensor.inventory_snapshot()}
    again = Sensor(parse_config({"state": {"path": str(state)}}))
    after = {d["id"]: d for d in again.inventory_snapshot()}
    assert after == before
    cam = again.inventory.lookup(CAM_V4)
    assert set(cam.addresses) == {CAM_V4, CAM_V6, CAM_LL} and cam.ip == CAM_V4 and cam.link_claimed
    assert again.inventory.lookup(CAM_V6) is again.inventory.lookup(CAM_LL) is cam
    # traffic after the restart from the IPv6 address is the same device, and the camera's MAC is still its own
    assert again.inventory.touch(CAM_V6, mac_int(CAM), T0 + 100) is cam and len(again.inventory) == len(before)
    assert again.inventory.touch("192.168.1.77", mac_int(CAM), T0 + 100) is not cam
    assert again.inventory.device_of_mac(mac_int(CAM)) is cam
    again.close()


def test_a_restarted_sensor_keeps_what_the_link_taught(tmp_path):
    """The routers and the learnt camera side survive a restart: a fetch from another private subnet after it is
    still a fetch from another network, not from a camera-side host, before any new ARP or DHCP is seen."""
    state = tmp_path / "state.db"
    frames = [(T0, dhcp_request(CAM, CAM_V4)), (T0 + 0.01, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4)),
              (T0 + 0.02, arp(ROUTER, GW_V4, CAM_V4, reply=True, target_mac=CAM))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, CLOUD_V4, seconds=3)
    sensor, _alerts = _run(tmp_path, frames, state=state)
    assert set(sensor.classifier.learned) == {ipaddress.ip_network("192.168.1.0/24")}
    assert sensor.inventory.router_macs == {mac_int(ROUTER)}
    sensor.close()
    again = Sensor(parse_config({"state": {"path": str(state)}}))
    assert again.classifier.learned == sensor.classifier.learned
    assert again.inventory.router_macs == {mac_int(ROUTER)}
    assert again.classifier.address_scope(ipaddress.ip_address("10.50.0.5")) == "private"
    assert again.classifier.address_scope(ipaddress.ip_address(CAM_V4)) == "camera"
    again.close()


@pytest.mark.parametrize("doc", [
    {"networks": [["0.0.0.0/0", 0], ["203.0.113.0/24", 0], ["10.0.0.0/8", 0], ["fe80::/64", 0]], "routers": [0]},
    {"networks": [["192.168.7.0/24", True], ["192.168.8.0/24", -1], ["not a net", 0], [1, 2, 3]],
     "routers": ["x", 1 << 48, True]},
    {"networks": "192.168.1.0/24", "routers": {}},
    ["192.168.1.0/24"],
])
def test_a_damaged_state_teaches_no_more_than_the_link_could(tmp_path, doc):
    """The saved routers and networks go through the wire's own rules: no /0, no public IPv4, no prefix shorter
    than /16, nothing that is not a network or a MAC."""
    state = tmp_path / "state.db"
    sensor = Sensor(parse_config({"state": {"path": str(state)}}))
    sensor.known.save_meta("link_learned", doc)
    sensor.known.commit()
    sensor.close()
    again = Sensor(parse_config({"state": {"path": str(state)}}))
    assert again.classifier.learned == {} and again.inventory.router_macs == set()
    assert again.classifier.address_scope(ipaddress.ip_address("203.0.113.9")) == "public"
    again.close()


def test_an_address_given_by_dhcpv6_joins_the_camera_whatever_its_interface_identifier(tmp_path):
    """No router advertisement, no neighbour discovery: the server's DHCPv6 reply alone says the random-looking
    address is the camera's, so its IPv6 Internet traffic is the camera's, and the client's FQDN names it."""
    given = "2001:db8:7::7a3f:91c2"
    frames = [(T0, dhcp_request(CAM, CAM_V4)), (T0 + 0.01, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4)),
              (T0 + 0.5, dhcpv6_frame(CAM, CAM_LL, "ff02::1:2", dhcpv6(1, CAM, host_name="ipc-lobby.site.example"),
                                      client=True)),
              (T0 + 0.6, dhcpv6_frame(ROUTER, GW_LL, CAM_LL, dhcpv6(7, CAM, [(given, 7200)]), client=False,
                                      dst_mac=CAM))]
    frames += _conversation(T0 + 1, CAM, CAM_V4, CLOUD_V4, seconds=2)
    frames += _conversation(T0 + 4, CAM, given, CLOUD_V6, seconds=3)
    sensor, alerts = _run(tmp_path, frames)
    cam = sensor.inventory.lookup(CAM_V4)
    assert sensor.inventory.lookup(given) is cam and given in cam.addresses
    assert ipaddress.ip_network("2001:db8:7::/64") in sensor.classifier.learned
    (doc,) = [d for d in sensor.inventory_snapshot() if d["ip"] == CAM_V4]
    assert doc["identity"].get("dhcp_hostname") == "ipc-lobby.site.example"
    assert any(a.detector == "egress_policy" and a.dst_ip == CLOUD_V6 and a.device_ip == CAM_V4 for a in alerts)


def test_a_dhcpv6_address_given_back_or_declined_is_not_claimed(tmp_path):
    given = "2001:db8:7::7a3f:91c2"
    frames = [(T0, dhcp_request(CAM, CAM_V4)), (T0 + 0.01, dhcp_ack(ROUTER, GW_V4, CAM, CAM_V4, router=GW_V4)),
              (T0 + 0.6, dhcpv6_frame(ROUTER, GW_LL, CAM_LL, dhcpv6(7, CAM, [(given, 0)]), client=False,
                                      dst_mac=CAM)),
              (T0 + 0.7, dhcpv6_frame(CAM, CAM_LL, "ff02::1:2", dhcpv6(9, CAM, [(given, 7200)]), client=True))]
    sensor, _alerts = _run(tmp_path, frames)
    assert sensor.inventory.lookup(given) is None and sensor.classifier.learned.keys() == {
        ipaddress.ip_network("192.168.1.0/24")}


def test_a_real_camera_renumbered_by_dhcp_is_one_device():
    """iot-sentinel D-Link DCS-935L: 192.168.0.20 (an old address, ARP) then 10.10.10.37 (DHCP), one MAC."""
    sensor = Sensor(parse_config({}))
    replay_into(sensor, [str(REAL / "iot-sentinel" / "D-LinkCam" / "Setup-A-1-STA.pcap")])
    cams = [d for d in sensor.inventory_snapshot() if d["mac"] == "b0:c5:54:25:5b:0e"]
    assert len(cams) == 1
    cam = cams[0]
    assert cam["ip"] == "10.10.10.37" and "192.168.0.20" in cam["former_addresses"]
    assert cam["identity"]["dhcp_hostname"] == "DCS-935L"
    assert cam["first_seen"] == pytest.approx(1460732918.942161, abs=1e-5)   # its first frame (mDNS)


def test_a_link_local_address_alone_makes_no_device(tmp_path):
    """A trunk: every host has a link-local address; only those of camera-side boxes join their device."""
    pc = mac("3c:52:82:00:00:99")
    frames = [(T0, neighbor_solicitation(pc, "fe80::99", "fe80::1")),
              (T0 + 0.1, neighbor_solicitation(CAM, "fe80::10", "fe80::1"))]   # heard before the camera's IPv4
    frames += _conversation(T0 + 1, CAM, "10.20.0.5", CLOUD_V4)
    sensor, _alerts = _run(tmp_path, frames, {"networks": {"camera": ["10.20.0.0/24"]}})
    (cam,) = sensor.inventory_snapshot()
    assert cam["addresses"] == ["10.20.0.5", "fe80::10"] and sensor.inventory.lookup("fe80::99") is None
