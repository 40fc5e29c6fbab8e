"""The indicator file's payload signatures are distinctive: random payloads and the ordinary traffic of a camera
VLAN (RTP, RTCP, TLS, DNS, NTP, STUN, QUIC, HTTP, RTSP, SSDP) set none of their tag bits, in the compiled tagger
or its numpy reference, and random payloads to the P2P protocols' own ports raise no vendor_cloud alert."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from unit.builders import batch_of

from packets import dns_query, dns_response, ethernet, ip, mac, tcp, tls_client_hello, udp
from sensor import compiled
from sensor.config import Config
from sensor.decode import decode
from sensor.enrich import ManufDatabase
from sensor.pipeline import Sensor
from sensor.tags import TAG_SIGNATURE_BASE

CAM, PEER = "10.20.0.5", "203.0.113.140"
CAM_MAC, GATEWAY_MAC = mac("00:12:34:00:00:05"), mac("00:0c:29:00:00:01")
SIGNATURE_BITS = np.uint64(((1 << 64) - 1) ^ ((1 << TAG_SIGNATURE_BASE) - 1))
# The protocols' own ports, where the port-narrowed DVRIP signature counts, and P2P servers' usual ones.
P2P_PORTS = [("tcp", 34567), ("tcp", 15002), ("tcp", 9000), ("udp", 9999), ("udp", 10240), ("udp", 32100)]


def _frame(proto: int, payload: bytes, sport: int, dport: int) -> bytes:
    l4 = udp(CAM, PEER, sport, dport, payload) if proto == 17 else tcp(CAM, PEER, sport, dport, 1, 1, "PA", payload)
    return ethernet(GATEWAY_MAC, CAM_MAC, 0x0800, ip(CAM, PEER, proto, l4))


def _benign(rng: random.Random) -> list[tuple[int, bytes]]:
    """What a camera VLAN carries all day, with random identifiers, sequence numbers and timestamps."""
    out: list[tuple[int, bytes]] = []
    for _ in range(300):
        r32 = rng.getrandbits(32)
        out += [
            (17, struct.pack("!BBHII", 0x80, rng.choice((0, 8, 26, 96, 97, 98, 111, 0xE0)), rng.getrandbits(16),
                             r32, rng.getrandbits(32)) + rng.randbytes(rng.randrange(0, 1400))),       # RTP
            (17, struct.pack("!BBHI", 0x80, rng.choice((200, 201, 202, 203)), 6, r32) + rng.randbytes(20)),  # RTCP
            (6, b"\x17\x03\x03" + struct.pack("!H", 300) + rng.randbytes(300)),                             # TLS
            (6, tls_client_hello(f"h{r32}.example.com")),
            (17, dns_query(rng.getrandbits(16), f"n{r32}.example.net", 1)),
            (17, dns_response(rng.getrandbits(16), "cloud.example.net", [("cloud.example.net", 1, 60, "192.0.2.7")],
                              1)),
            (17, bytes([rng.choice((0x1B, 0x23, 0xE3, 0x24)), rng.randrange(0, 16), 6, 0xE9]) + rng.randbytes(44)),
            (17, struct.pack("!HHI", 0x0001, 8, 0x2112A442) + rng.randbytes(20)),                        # STUN
            (17, bytes([0xC0 | rng.getrandbits(4)]) + b"\x00\x00\x00\x01" + rng.randbytes(1200)),       # QUIC
            (6, b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\nHost: 10.20.0.5\r\n\r\n"),
            (6, b"POST / HTTP/1.1\r\nHost: 54.193.123.32\r\nContent-Length: 303\r\n\r\n{}"),
            (6, b"OPTIONS rtsp://10.20.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
            (6, b"$\x00" + struct.pack("!H", 1000) + rng.randbytes(1000)),                              # interleaved
            (17, b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n"),
        ]
    return out


@pytest.mark.parametrize("on", [True, False], ids=["compiled", "numpy"])
def test_random_and_ordinary_payloads_set_no_signature_bit(on, monkeypatch):
    if on and compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    monkeypatch.setattr(compiled, "tags", on)
    rng = random.Random(13)
    packets = [(rng.choice((6, 17)), rng.randbytes(rng.randrange(4, 48))) for _ in range(40_000)] + _benign(rng)
    tagger = Sensor(Config(), ManufDatabase({})).tagger
    hits = []
    for start in range(0, len(packets), 8192):
        chunk = packets[start:start + 8192]
        frames = [_frame(p, pay, 40000 + i % 20000, 1024 + i % 60000) for i, (p, pay) in enumerate(chunk)]
        dec = decode(batch_of(frames))
        rows = np.flatnonzero(dec.is_ip)
        found = tagger.tags(dec, rows) & SIGNATURE_BITS
        hits += [chunk[int(r)][1][:8].hex() for r in rows[found != 0]]
    assert hits == []
    # the control: the same tagger does see the signatures themselves
    signed = decode(batch_of([_frame(17, b"\x3a\xcf\x87\x2a" + bytes(20), 5000, 9999),
                              _frame(6, b"\xff\x00\x00\x00" + bytes(20), 5000, 34567)]))
    assert np.all(tagger.tags(signed, np.flatnonzero(signed.is_ip)) & SIGNATURE_BITS)


@pytest.mark.parametrize("proto,port", P2P_PORTS, ids=[f"{p}-{n}" for p, n in P2P_PORTS])
def test_random_payloads_to_p2p_ports_raise_no_vendor_cloud_alert(proto, port):
    rng = random.Random(port)
    number = 6 if proto == "tcp" else 17
    frames = [_frame(number, rng.randbytes(rng.randrange(4, 600)), 30000 + k, port) for k in range(3000)]
    alerts: list = []
    sensor = Sensor(Config(), ManufDatabase({}), on_alert=alerts.append)
    sensor.process(batch_of(frames, ts=[1_700_000_000.0 + 0.01 * k for k in range(len(frames))]))
    sensor.finish()
    assert [a.summary for a in alerts if a.detector == "vendor_cloud"] == []
