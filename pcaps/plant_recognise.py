"""Planted behaviours for recognition without DNS (issue 13, deliverable 3): camera P2P platforms reached by IP
literal (ThroughTek Kalay, Reolink, Xiongmai XMEye), DNS over HTTPS to a well-known resolver, and an ICMP
connectivity check. Called at the end of scenarios.mixed().

The payload builders follow the public write-ups of each protocol (sources in sensor/data/indicators.toml), so the
tests can build the same packets: they are written from those descriptions, not from camwatch's signatures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from packets import icmp_echo, tls_client_hello

# ---- ThroughTek Kalay (TUTK IOTC) ---------------------------------------------------------------------------------
# The SDK's keyless "Charlie" scrambler, as go2rtc's pkg/tutk/crypto.go (TransCodePartial) describes it: per
# 16-byte block, rotate each little-endian 32-bit word right by 1, 5, 9, 13 bits, XOR with the first 16 bytes of
# "Charlie is the designer of P2P!!", permute the bytes, rotate each word right by 3, 7, 11, 15; a tail shorter
# than a block is XORed with the key and byte-swapped.
CHARLIE = b"Charlie is the designer of P2P!!"[:16]
_PERMUTATION = (11, 9, 8, 15, 13, 10, 12, 14, 2, 1, 5, 0, 6, 4, 7, 3)
_TAIL_SWAP = {2: (1, 0), 4: (2, 3, 0, 1), 8: (7, 4, 3, 2, 1, 6, 5, 0)}


def _ror32(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF


def charlie_scramble(data: bytes) -> bytes:
    out = bytearray()
    full = len(data) - len(data) % 16
    for off in range(0, full, 16):
        words = struct.unpack("<4I", data[off:off + 16])
        block = bytes(b ^ k for b, k in zip(struct.pack("<4I", *(_ror32(w, 4 * i + 1) for i, w in enumerate(words))),
                                            CHARLIE, strict=True))
        block = bytes(block[j] for j in _PERMUTATION)
        out += struct.pack("<4I", *(_ror32(w, 4 * i + 3) for i, w in enumerate(struct.unpack("<4I", block))))
    tail = bytes(b ^ k for b, k in zip(data[full:], CHARLIE, strict=False))
    swap = _TAIL_SWAP.get(len(tail))
    return bytes(out) + (bytes(tail[j] for j in swap) if swap else tail)


def kalay_iotc(command: int, flags: int, body: bytes, session: bytes = b"\x5a\x17\xc3\x09", sequence: int = 0,
               version: int = 0x19) -> bytes:
    """An IOTC packet as a device sends it: the 16-byte header (04 02, version, stage, body length, sequence,
    command, flags, four session bytes) and the body, all scrambled (go2rtc pkg/tutk/session0.go builds the same
    header; 0x0012 in the flags is device-to-client)."""
    header = struct.pack("<BBBBHHHH4s", 0x04, 0x02, version, 0x02, len(body), sequence, command, flags, session)
    return charlie_scramble(header[:16]) + charlie_scramble(body)


def kalay_cc51(command: int, payload: bytes) -> bytes:
    """The unscrambled newer IOTC framing (go2rtc pkg/wyze/tutk/README.md): magic 0xCC51 and zero flags, command
    and payload size, little-endian."""
    return struct.pack("<HHHH", 0xCC51, 0, command, len(payload)) + payload


# ---- Reolink --------------------------------------------------------------------------------------------------------
def reolink_bcudp_discovery(tid: int, encrypted_xml: bytes) -> bytes:
    """neolink dissector/udp.md: magic 3acf872a, payload size, 01000000, transmission id, checksum, payload."""
    return struct.pack("<IIIII", 0x2A87CF3A, len(encrypted_xml), 1, tid, 0) + encrypted_xml


def reolink_bcudp_data(connection: int, packet_id: int, payload: bytes) -> bytes:
    """neolink bcudp/model.rs UdpData: magic 0x2a87cf10, connection id, 0, packet id, 0, payload size, payload."""
    return struct.pack("<IiIIII", 0x2A87CF10, connection, 0, packet_id, 0, len(payload)) + payload


def baichuan(msg_id: int, body: bytes, msg_num: int = 1) -> bytes:
    """neolink bc/de.rs: magic 0x0abcdef0, message id, body length, channel, stream, number, response code, class
    (little-endian), then the body."""
    return struct.pack("<IIIBBHHH", 0x0ABCDEF0, msg_id, len(body), 0, 0, msg_num, 0, 0x6414) + body


# ---- Xiongmai DVRIP -------------------------------------------------------------------------------------------------
def dvrip(message: int, body: bytes, session: int = 0, sequence: int = 0, version: int = 0) -> bytes:
    """python-dvr's header (struct 'BB2xII2xHI': 0xFF, version, session, sequence, message id, length), then the
    JSON body and its \\n\\0 terminator."""
    tail = body + b"\x0a\x00"
    return struct.pack("<BB2xII2xHI", 0xFF, version, session, sequence, message, len(tail)) + tail


def plant(scene: Any, start: float, label: Callable[..., None], *, cameras: list, gateway: Any,
          host: Callable[[str, bytes], Any]) -> None:
    """Plants on cameras[6] (after +680), [7] (after +640), [8] (after +460) and [0] (before +780). `label` is
    scenarios.mixed()'s, `host(ip, mac)` makes a peer behind the gateway."""
    external = ["egress_policy", "new_destination"]
    _kalay(scene, start + 700, cameras[6], host("203.0.113.140", gateway.mac), label, external)
    _reolink(scene, start + 660, cameras[7], host("198.51.100.171", gateway.mac), label, external)
    _xmeye(scene, start + 480, cameras[8], host("203.0.113.156", gateway.mac), label, external)
    _doh(scene, start + 560, cameras[0], host("8.8.8.8", gateway.mac), label, external)
    _ping(scene, start + 680, cameras[0], host("1.1.1.1", gateway.mac), label)


def _kalay(scene, t, cam, server, label, external) -> None:
    """A Kalay device by IP literal: keep-alives to its P2P server, then a data message, no DNS at all."""
    for k in range(4):
        scene.udp(t + 9.5 * k, cam, 24680, server, 10240, kalay_iotc(0x0428, 0x0012, bytes(8), sequence=k))
        scene.udp(t + 9.5 * k + 0.06, server, 10240, cam, 24680, kalay_iotc(0x0427, 0x0021, bytes(8), sequence=k))
    scene.udp(t + 40, cam, 24680, server, 10240, kalay_iotc(0x0408, 0x0012, bytes(range(36)), sequence=5))
    # four keep-alives 9.5 s apart and a data message at the fifth beat: a P2P heartbeat is a beacon too
    label("kalay-p2p", "vendor_cloud", cam, server.ip, t, t + 41, [*external, "beaconing"])


def _reolink(scene, t, cam, server, label, external) -> None:
    """Reolink P2P registration with p2p*.reolink.com's address on UDP 9999 (no lookup: a cached address)."""
    for k in range(3):
        scene.udp(t + 7.0 * k, cam, 53521, server, 9999, reolink_bcudp_discovery(k + 1, bytes(range(64, 200))))
        scene.udp(t + 7.0 * k + 0.08, server, 9999, cam, 53521, reolink_bcudp_discovery(k + 1, bytes(96)))
    scene.udp(t + 22, cam, 53521, server, 9999, reolink_bcudp_data(-4711, 0, baichuan(93, bytes(40))))
    label("reolink-p2p", "vendor_cloud", cam, server.ip, t, t + 23, external)


def _xmeye(scene, t, cam, server, label, external) -> None:
    """A Xiongmai device pushing an alarm in DVRIP to its alarm server (tcp/15002), by address."""
    alarm = (b'{ "Address" : "0x0B1E10AC", "Channel" : 0, "Descrip" : "", "Event" : "MotionDetect", '
             b'"SerialID" : "9f3b5c0e1d2a4b6c", "StartTime" : "2024-03-09 17:08:00", "Status" : "Start", '
             b'"Type" : "Alarm" }')
    scene.tcp_session(t, cam, 40622, server, 15002, [(0.0, True, dvrip(1504, alarm, session=0x5A))], close_at=0.4,
                      client_mac=cam.mac)
    scene.tcp_session(t + 31, cam, 40623, server, 15002, [(0.0, True, dvrip(1504, alarm, session=0x5A))],
                      close_at=31.4, client_mac=cam.mac)
    label("xmeye-dvrip", "vendor_cloud", cam, server.ip, t, t + 32, external)


def _doh(scene, t, cam, resolver, label, external) -> None:
    """DNS over HTTPS to Google's resolver by its address, SNI dns.google: TLS only, nothing on port 53."""
    for k, sport in enumerate((47811, 47812)):
        scene.tcp_session(t + 45 * k, cam, sport, resolver, 443,
                          [(0.0, True, tls_client_hello("dns.google")),
                           (0.04, False, b"\x16\x03\x03" + bytes(90)),
                           (0.09, True, b"\x17\x03\x03" + bytes(120)),
                           (0.14, False, b"\x17\x03\x03" + bytes(160))], close_at=1.0, client_mac=cam.mac)
    label("doh-resolver", "hardcoded_infra", cam, resolver.ip, t, t + 46, external)


def _ping(scene, t, cam, target, label) -> None:
    """A connectivity check: four pings of a public resolver's address, answered."""
    for k in range(4):
        scene.ip_packet(t + k, cam, target, 1, icmp_echo(0x4D2, k + 1, payload=bytes(range(56))))
        scene.ip_packet(t + k + 0.02, target, cam, 1, icmp_echo(0x4D2, k + 1, reply=True, payload=bytes(range(56))),
                        cam.mac)
    label("ping-check", "hardcoded_infra", cam, target.ip, t, t + 4, ["new_destination"], severity="low")
