"""sensor/detect/lateral_movement.py: a device opening admin/service ports on several neighbours within the window is
one high alert per episode, answered or not; what is not a sweep (repeats to one host, other ports, UDP, flows it
did not open, updates of old flows, a slow trickle of connections) stays quiet; recorders and gateways count only
remote-shell ports; the thresholds come from the config and every per-device structure is bounded. Then through the
sensor on generated packets: an NVR pulling RTSP from every camera raises nothing, a camera sweeping them does."""

from __future__ import annotations

import pytest

from packets import ethernet, ipv4, mac, tcp
from sensor.config import parse_config
from sensor.detect import DetectorContext, Episodes
from sensor.detect.lateral_movement import ADMIN_PORTS, SHELL_PORTS, LateralMovementDetector
from sensor.enrich import ManufDatabase
from sensor.pipeline import Sensor

from .observations import device as _device
from .observations import observation as _obs
from .test_export import T0, make_batch


def _detector(**detect) -> LateralMovementDetector:
    config = parse_config({"detect": detect, "limits": {"max_devices": 3}})
    return LateralMovementDetector(DetectorContext("site", Episodes(3600.0), config))


def _open(detector, dev, host: int, ts: float, port: int | None = 23, **kw):
    """The device opening a new TCP flow to 10.20.0.<host>."""
    kw.setdefault("scope", "camera")
    obs = _obs(dev, ts=ts, peer=f"10.20.0.{host}", port=port, sent_packets=1, sent_bytes=60, **kw)
    obs.new_flow = True
    return detector.observe(obs)


def test_five_neighbours_within_the_window_are_one_high_alert_naming_them():
    detector, dev = _detector(), _device("10.20.0.5", maker="Hikvision")
    out = [_open(detector, dev, 10 + k, 100.0 + 2 * k, port=(23, 80)[k % 2]) for k in range(5)]
    assert out[:4] == [None] * 4
    alert = out[4]
    assert (alert.detector, alert.severity, alert.score, alert.dst_ip, alert.dst_port, alert.dst_scope) == (
        "lateral_movement", "high", 0.9, "10.20.0.14", 23, "camera")
    assert alert.extra == {"targets": 5, "answered": 0, "ports": [23, 80],
                           "sample_targets": ["10.20.0.10", "10.20.0.11", "10.20.0.12", "10.20.0.13", "10.20.0.14"],
                           "window_s": 8.0, "evidence": "connections to 5 hosts in 8 s on tcp/23, tcp/80"}
    assert alert.summary == (
        "camera 10.20.0.5 (Hikvision) opened connections to 5 other hosts of the camera VLAN and private networks "
        "within 8 s on admin and service ports (telnet tcp/23, HTTP tcp/80): 10.20.0.10, 10.20.0.11, 10.20.0.12, "
        "10.20.0.13, 10.20.0.14 (0 answered): the way a compromised device probes and spreads to its neighbours. "
        "Hikvision is a covered maker (named).")
    # the sweep goes on: the same episode, no second line
    assert [_open(detector, dev, 20 + k, 110.0 + k) for k in range(20)] == [None] * 20


def test_private_hosts_count_like_camera_side_ones():
    detector, dev = _detector(), _device()
    out = [_open(detector, dev, k, 100.0 + k, port=22, scope="private" if k % 2 else "camera") for k in range(5)]
    assert out[4] is not None and out[4].extra["ports"] == [22] and "SSH tcp/22" in out[4].summary


def test_what_is_not_a_sweep_stays_quiet():
    detector, dev = _detector(), _device()
    assert [_open(detector, dev, 10, 100.0 + k) for k in range(20)] == [None] * 20           # one host, many times
    assert [_open(detector, dev, 20 + k, 100.0, port=9000) for k in range(10)] == [None] * 10   # not an admin port
    assert [_open(detector, dev, 30 + k, 100.0, proto="udp") for k in range(10)] == [None] * 10
    assert [_open(detector, dev, 40 + k, 100.0, initiated=False) for k in range(10)] == [None] * 10
    assert [detector.observe(_obs(dev, ts=100.0, peer=f"10.20.0.{50 + k}", port=23, scope="camera"))
            for k in range(10)] == [None] * 10                                             # not a new flow
    assert [_open(detector, dev, 60 + k, 100.0, port=None) for k in range(10)] == [None] * 10


def test_connections_spread_wider_than_the_window_are_not_a_sweep():
    detector, dev = _detector(), _device()
    assert [_open(detector, dev, 10 + k, 100.0 + 8 * k) for k in range(30)] == [None] * 30   # 4 per 30 s at most
    # the window and the count are the config's
    wide = _detector(lateral_window=40.0)
    assert [_open(wide, dev, 10 + k, 100.0 + 8 * k) is not None for k in range(6)] == [False] * 4 + [True, False]
    few = _detector(lateral_targets=2)
    assert _open(few, dev, 10, 100.0) is None and _open(few, dev, 11, 101.0).extra["targets"] == 2


def test_a_new_episode_after_the_episode_timeout_is_a_new_alert():
    detector, dev = _detector(), _device()
    first = [_open(detector, dev, 10 + k, 100.0 + k) for k in range(5)]
    again = [_open(detector, dev, 10 + k, 100.0 + 3601 + 10 + k) for k in range(5)]
    assert first[4] is not None and again[4] is not None and again[:4] == [None] * 4


def test_devices_are_judged_apart():
    detector = _detector()
    a, b = _device("10.20.0.5"), _device("10.20.0.6")
    out = [_open(detector, (a, b)[k % 2], 10 + k // 2, 100.0 + k) for k in range(9)]
    assert [o is not None for o in out] == [False] * 8 + [True]
    assert out[8].device_ip == "10.20.0.5"


@pytest.mark.parametrize("evidence, role", [({"rtsp_client"}, "nvr"), ({"video_receiver"}, "nvr"),
                                            ({"dns_server"}, "gateway"), ({"rtsp_client", "rtsp_server"}, "camera")])
def test_recorders_and_gateways_count_only_remote_shell_ports(evidence, role):
    detector, dev = _detector(), _device()
    dev.evidence |= evidence
    assert dev.role == role
    for port in sorted(set(ADMIN_PORTS) - SHELL_PORTS):
        assert [_open(detector, dev, 10 + k, 100.0 + k, port=port) for k in range(10)] == [None] * 10
    assert [_open(detector, dev, 30 + k, 200.0 + k, port=23) is not None for k in range(5)] == [False] * 4 + [True]


def test_a_camera_whose_rtsp_probes_are_answered_mid_sweep_stays_a_camera():
    detector, dev = _detector(), _device()
    dev.evidence.add("video_sender")
    assert _open(detector, dev, 10, 100.0, port=554) is None
    dev.evidence.add("rtsp_client")     # its RTSP probe was answered
    assert dev.role == "camera"
    out = [_open(detector, dev, 11 + k, 101.0 + k, port=554) for k in range(4)]
    assert out[3] is not None and out[3].extra["ports"] == [554]


def test_a_recorder_found_out_mid_window_is_not_a_sweep_and_then_counts_only_shells():
    detector, dev = _detector(), _device()
    assert [_open(detector, dev, 10 + k, 100.0 + k, port=80) for k in range(4)] == [None] * 4
    dev.evidence.add("rtsp_client")     # its first RTSP session, answered: a recorder, no camera evidence
    assert dev.role == "nvr"
    assert [_open(detector, dev, 14 + k, 104.0 + k, port=(80, 554)[k % 2]) for k in range(10)] == [None] * 10
    assert [_open(detector, dev, 30 + k, 120.0 + k, port=22) is not None for k in range(5)] == [False] * 4 + [True]


def test_per_device_state_is_bounded():
    detector = _detector(lateral_targets=3)   # limits.max_devices = 3
    devices = [_device(f"10.20.1.{i}") for i in range(10)]
    for i, dev in enumerate(devices):
        _open(detector, dev, 10, 100.0 + i)
        _open(detector, dev, 11, 100.0 + i)
    assert len(detector._sweeps) == 3 and detector._sweeps.evicted == 7
    dev = devices[-1]
    for k in range(50):
        _open(detector, dev, k, 200.0 + k / 100, port=(22, 23, 80, 443)[k % 4])
    sweep = detector._sweeps.get(dev.ip)
    assert len(sweep.targets) == 3 and set(sweep.ports) == {22, 23, 80, 443}


def test_the_config_bounds_are_enforced():
    from sensor.config import load_config
    from sensor.errors import ConfigError
    for bad in ({"lateral_targets": 1}, {"lateral_targets": 65}, {"lateral_targets": 2.5},
                {"lateral_window": 0}, {"lateral_window": 3601}, {"lateral_window": True}):
        with pytest.raises(ConfigError):
            parse_config({"detect": bad})
    assert load_config(None).detect.lateral_targets == 5 and load_config(None).detect.lateral_window == 30.0


# ---- through the sensor, on generated packets -------------------------------------------------------------------
NVR, NVR_MAC = "10.20.0.2", mac("00:11:32:00:00:02")
CAMERAS = [(f"10.20.0.{11 + i}", mac(f"00:40:8c:00:00:{11 + i:02x}")) for i in range(10)]


def _tcp(src, smac, dst, dmac, sport, dport, flags, payload=b""):
    return ethernet(dmac, smac, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, flags, payload)))


def _session(t, client, cmac, server, smac, cport, sport, request=b""):
    """A handshake, and a request answered: what a client that means it does."""
    frames = [(t, _tcp(client, cmac, server, smac, cport, sport, "S")),
              (t + 0.001, _tcp(server, smac, client, cmac, sport, cport, "SA")),
              (t + 0.002, _tcp(client, cmac, server, smac, cport, sport, "A"))]
    if request:
        answer = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"
        frames += [(t + 0.003, _tcp(client, cmac, server, smac, cport, sport, "PA", request)),
                   (t + 0.01, _tcp(server, smac, client, cmac, sport, cport, "PA", answer))]
    return frames


def _alerts(records):
    alerts = []
    sensor = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), on_alert=alerts.append,
                    manuf=ManufDatabase({}))
    sensor.process(make_batch(sorted(records, key=lambda r: r[0])))
    sensor.finish()
    return [a for a in alerts if a.detector == "lateral_movement" and a.extra["event"] == "open"]


@pytest.mark.parametrize("rtsp_at, http_at", [(0.0, 5.0), (1.1, 0.0)], ids=["rtsp-first", "four-http-first"])
def test_a_recorder_pulling_rtsp_and_polling_http_on_every_camera_raises_nothing(rtsp_at, http_at):
    """Also when a sensor starting without state sees the recorder poll four cameras over HTTP before its first
    RTSP session is answered."""
    records = []
    for i, (cam, cmac) in enumerate(CAMERAS):
        records += _session(T0 + rtsp_at + 0.2 * i, NVR, NVR_MAC, cam, cmac, 40000 + i, 554,
                            f"OPTIONS rtsp://{cam}/ RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        records += _session(T0 + http_at + 0.3 * i, NVR, NVR_MAC, cam, cmac, 41000 + i, 80,
                            b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\n\r\n")
        records += _session(T0 + 10 + 0.2 * i, NVR, NVR_MAC, cam, cmac, 42000 + i, 8000)
    assert _alerts(records) == []


def test_a_camera_opening_telnet_and_http_on_its_neighbours_is_one_alert():
    scanner, smac = "10.20.0.40", mac("00:40:8c:00:00:40")
    records = []
    for i, (cam, cmac) in enumerate(CAMERAS):
        t = T0 + 1.9 * i
        records.append((t, _tcp(scanner, smac, cam, cmac, 50000 + i, 23, "S")))
        records.append((t + 0.002, _tcp(cam, cmac, scanner, smac, 23, 50000 + i, "RA")))
        records += _session(t + 0.4, scanner, smac, cam, cmac, 51000 + i, 80)
    (alert,) = _alerts(records)
    assert (alert.device_ip, alert.ts, alert.extra["targets"], alert.extra["answered"], alert.extra["ports"]) == (
        scanner, T0 + 1.9 * 4, 5, 5, [23, 80])
