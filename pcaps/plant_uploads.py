"""Planted uploads and a jittered beacon for the evaluation scenarios (pcaps/scenarios.py, issue 13 items 2 and 6):
a clip burst, a low-and-slow trickle of stills, a stream with a slow start, and a TCP beacon with ±20% jitter and
sizes varying by a factor of two. Each is an instance of its class, drawn from its own seeded generator: the
detectors must not depend on these numbers (their unit tests sweep the classes).

Cameras and slots (seconds after the mixed capture's start) given to this module: CAMERAS[3] from 390,
CAMERAS[4] from 300, CAMERAS[5] from 380, CAMERAS[9] from 470.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from generate import Host, Scene
from packets import tls_client_hello

SEGMENT = 1400           # TCP payload per segment, as over a 1500-byte path with TLS records on top
EXTERNAL = ["egress_policy", "new_destination"]
# A camera that suddenly sends hundreds of kB a minute outside is out of character for the shipped model too.
UNUSUAL = EXTERNAL + ["anomaly"]


def tls_records(nbytes: int) -> list[bytes]:
    """Application-data segments carrying `nbytes` of TLS, each opening with a record header (so the flow carries
    the TLS profile, as encrypted uploads do)."""
    out = []
    while nbytes > 0:
        size = min(SEGMENT, nbytes)
        out.append(b"\x17\x03\x03" + (size - 5).to_bytes(2, "big") + bytes(size - 5) if size > 5 else bytes(size))
        nbytes -= size
    return out


def plant(scene: Scene, start: float, label: Callable[..., None]) -> None:
    import scenarios  # here: scenarios.py calls this module, so importing it at the top would be circular

    cams, gateway = scenarios.CAMERAS, scenarios.GATEWAY
    _clip_burst(scene, start + 500, cams[9], Host("203.0.113.150", gateway.mac), label)
    _trickle(scene, start + 400, cams[5], Host("198.51.100.77", gateway.mac), label)
    _slow_start_stream(scene, start + 420, cams[3], Host("192.0.2.130", gateway.mac), label)
    _tcp_beacon(scene, start + 320, cams[4], Host("198.51.100.201", gateway.mac), label)


def _clip_burst(scene: Scene, t: float, cam: Host, cloud: Host, label: Callable[..., None]) -> None:
    """A motion clip pushed to cloud storage over TLS: 450-600 kB in 2-4 s (1-2 Mbit/s), ACK-only replies."""
    rng = random.Random(4501)
    size, seconds = rng.randrange(450_000, 600_000), rng.uniform(2.0, 4.0)
    records = tls_records(size)
    step = seconds / len(records)
    exchanges = [(0.0, True, tls_client_hello("clips.example-camcloud.net")),
                 (0.04, False, b"\x16\x03\x03" + bytes(90))]
    exchanges += [(0.1 + k * step, True, rec) for k, rec in enumerate(records)]
    scene.tcp_session(t, cam, 46100, cloud, 443, exchanges, close_at=0.2 + seconds, client_mac=cam.mac)
    label("clip-burst", "video_egress", cam, cloud.ip, t, t + seconds + 0.2, EXTERNAL, upload="burst")


def _trickle(scene: Scene, t: float, cam: Host, sink: Host, label: Callable[..., None]) -> None:
    """Stills leaving low and slow: a 15-40 kB image every 3-7 s for nine minutes over one TCP connection to port
    80 (tens of kbit/s), the server answering with ACKs only."""
    rng = random.Random(1540)
    exchanges: list[tuple[float, bool, bytes]] = []
    offset, end = 0.0, 540.0
    while offset < end:
        image = rng.randrange(15_000, 40_000)
        head = b"POST /snap HTTP/1.1\r\nHost: img.example-drop.net\r\nContent-Length: %d\r\n\r\n" % image
        body = head + bytes(image)
        for k in range(0, len(body), SEGMENT):
            exchanges.append((offset + 0.002 * (k // SEGMENT), True, body[k:k + SEGMENT]))
        offset += rng.uniform(3.0, 7.0)
    scene.tcp_session(t, cam, 47200, sink, 80, exchanges, close_at=offset, client_mac=cam.mac)
    label("still-trickle", "video_egress", cam, sink.ip, t, t + offset, UNUSUAL, upload="trickle")


def _slow_start_stream(scene: Scene, t: float, cam: Host, relay: Host, label: Callable[..., None]) -> None:
    """Live video through a TLS relay that starts slowly: about 8 s at ~0.1 Mbit/s, then 0.3-0.5 Mbit/s."""
    rng = random.Random(3050)
    exchanges: list[tuple[float, bool, bytes]] = []
    for second in range(45):
        rate = rng.uniform(0.08e6, 0.12e6) if second < 8 else rng.uniform(0.3e6, 0.5e6)
        records = tls_records(int(rate / 8))
        exchanges += [(second + k / len(records), True, rec) for k, rec in enumerate(records)]
    scene.tcp_session(t, cam, 48300, relay, 443, exchanges, close_at=45.5, client_mac=cam.mac)
    label("slow-start-stream", "video_egress", cam, relay.ip, t, t + 45.5, UNUSUAL, upload="stream")


def _tcp_beacon(scene: Scene, t: float, cam: Host, c2: Host, label: Callable[..., None]) -> None:
    """A check-in every 50 s ±20% (uniform), each a short TCP connection carrying 300-600 bytes up and a small
    answer, ten times."""
    rng = random.Random(2020)
    period, first, when = 50.0, t, t
    for k in range(10):
        request = tls_records(rng.randrange(300, 600))
        answer = b"\x17\x03\x03" + bytes(rng.randrange(40, 120))
        exchanges = [(0.0, True, request[0]), (0.06, False, answer)]
        scene.tcp_session(when, cam, 49400 + k, c2, 443, exchanges, close_at=0.3, client_mac=cam.mac)
        last = when
        when += period * rng.uniform(0.8, 1.2)
    label("jittered-tcp-beacon", "beaconing", cam, c2.ip, first, last + 0.3, EXTERNAL, period=period)
