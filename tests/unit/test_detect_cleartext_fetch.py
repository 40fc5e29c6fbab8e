"""sensor/detect/cleartext_fetch.py: a TFTP read request or an HTTP GET of a file is one medium alert per (device,
server) episode, in every scope, naming the file (as the enrichment escaped it) and the server; and end to end, from
generated packets, hostile names stay escaped in the alert line and benign look-alikes raise nothing."""

from __future__ import annotations

import json

from packets import ethernet, ipv4, mac, tcp, udp
from sensor.config import parse_config
from sensor.detect import DetectorContext, Episodes
from sensor.detect.cleartext_fetch import CleartextFetchDetector
from sensor.enrich import FileFetch, ManufDatabase
from sensor.pipeline import Sensor

from .observations import device as _device
from .test_export import T0, make_batch


def _fetch(dev, ts=100.0, peer="192.168.77.10", port=69, proto="udp", scope="private", transport="tftp",
           method="RRQ", path="/pub/x.sh", filename="x.sh", kind="script", name=None) -> FileFetch:
    return FileFetch(ts, dev, peer, port, proto, scope, 30, transport, method, path, filename, kind, name)


def _detector() -> CleartextFetchDetector:
    return CleartextFetchDetector(DetectorContext("site", Episodes(3600.0)))


def test_a_tftp_read_request_is_a_medium_alert_naming_file_and_server():
    alert = _detector().fetch(_fetch(_device("10.20.0.5", maker="Dahua")))
    assert (alert.detector, alert.severity, alert.score, alert.dst_ip, alert.dst_port, alert.dst_proto,
            alert.dst_scope, alert.vlan) == ("cleartext_fetch", "medium", 0.8, "192.168.77.10", 69, "udp", "private",
                                             30)
    assert alert.extra == {"transport": "tftp", "file": "x.sh", "file_kind": "script",
                           "evidence": "TFTP read request for /pub/x.sh"}
    assert alert.summary == (
        'camera 10.20.0.5 (Dahua) asked the TFTP server 192.168.77.10 udp/69 in another private network for the '
        'script "/pub/x.sh": this is how droppers load their payload onto cameras. Dahua is a covered maker (named).')


def test_an_http_get_names_the_file_the_path_and_the_host():
    fetch = _fetch(_device(), peer="203.0.113.66", port=8080, proto="tcp", scope="public", transport="http",
                   method="GET", path="/fw/General_IPC.bin", filename="General_IPC.bin", kind="firmware image",
                   name="dl.example")
    alert = _detector().fetch(fetch)
    assert alert.dst_name == "dl.example" and alert.extra["evidence"] == "HTTP GET /fw/General_IPC.bin"
    assert alert.summary == (
        '10.20.0.5 downloaded the firmware image "General_IPC.bin" over plain HTTP from dl.example (203.0.113.66) '
        'tcp/8080 on the public Internet (GET "/fw/General_IPC.bin"): a firmware image fetched in cleartext is one '
        'anybody on the path can swap.')


def test_one_alert_per_device_and_server_in_every_scope():
    detector, dev = _detector(), _device()
    assert detector.fetch(_fetch(dev)) is not None
    assert detector.fetch(_fetch(dev, ts=101.0, path="/pub/y.arm7", filename="y.arm7", kind="executable")) is None
    assert detector.fetch(_fetch(_device("10.20.0.6"), ts=102.0)) is not None
    for i, scope in enumerate(("camera", "core", "public", "allowed", "other")):
        alert = detector.fetch(_fetch(dev, ts=103.0, peer=f"10.9.9.{i}", scope=scope))
        assert alert is not None and alert.dst_scope == scope
    assert "(other)" in alert.summary
    assert detector.fetch(_fetch(dev, ts=101.0 + 3601)) is not None       # a new episode after the timeout


# ---- end to end ---------------------------------------------------------------------------------------------------
CAM, CAM_MAC, ROUTER_MAC = "10.20.0.11", mac("00:40:8c:00:00:11"), mac("02:00:00:00:00:fe")


def _u(dst, sport, dport, payload):
    return ethernet(ROUTER_MAC, CAM_MAC, 0x0800, ipv4(CAM, dst, 17, udp(CAM, dst, sport, dport, payload)))


def _t(dst, sport, dport, payload):
    return ethernet(ROUTER_MAC, CAM_MAC, 0x0800, ipv4(CAM, dst, 6, tcp(CAM, dst, sport, dport, 1, 1, "PA", payload)))


def _lines(frames):
    alerts = []
    sensor = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), on_alert=alerts.append,
                    manuf=ManufDatabase({}))
    sensor.process(make_batch([(T0 + i, f) for i, f in enumerate(frames)]))
    sensor.finish()
    return [json.loads(json.dumps(a.as_dict())) for a in alerts
            if a.detector == "cleartext_fetch" and a.extra["event"] == "open"]


def _own(line: dict) -> str:
    """The detector's own evidence phrase on an incident line."""
    return next(e["text"] for e in line["evidence"] if e["detector"] == "cleartext_fetch")


def test_benign_look_alikes_raise_nothing():
    assert _lines([_t("203.0.113.9", 40000, 80, b"GET /index.html HTTP/1.1\r\nHost: cam.example\r\n\r\n"),
                   _t("203.0.113.9", 40001, 80, b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\n\r\n"),
                   _t("203.0.113.9", 40002, 80, b"POST /upgrade.bin HTTP/1.1\r\n\r\n"),
                   _u("192.168.77.10", 41000, 69, b"\x00\x02/pub/backup.sh\x00octet\x00"),     # a write request
                   _u("192.168.77.10", 41001, 50000, b"\x00\x03\x00\x01x.sh\x00octet\x00"),   # data
                   _u("192.168.77.10", 41002, 69, b"\x00\x04\x00\x01")]) == []


def test_hostile_names_reach_the_alert_escaped_and_cut():
    huge = b"/" + b"A" * 70_000 + b".sh"
    lines = _lines([_u("192.168.77.10", 41000, 69, b"\x00\x01\x1b[2J\r\nfake: line\xff\xfe.sh\x00octet\x00"),
                    _u("192.168.77.11", 41001, 69, b"\x00\x01" + huge[:65000] + b"\x00octet\x00"),
                    _t("203.0.113.9", 40000, 80, b"GET /\xe2\x80\xaepayload\"x.sh?\x00 HTTP/1.1\r\n\r\n")])
    assert [_own(line) for line in lines] == [
        "TFTP read request for \\x1b[2J\\x0d\\x0afake: line\\xff\\xfe.sh",
        "TFTP read request for /" + "A" * 159 + "\u2026",
        'HTTP GET /\\u202epayload\\"x.sh']
    assert lines[0]["file"] == "\\x1b[2J\\x0d\\x0afake: line\\xff\\xfe.sh"
    for line in lines:
        assert line["summary"].isprintable() and len(line["summary"]) < 600
