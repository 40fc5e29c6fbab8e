"""sensor/enrich/fetches.py: which paths name a file worth an event (every suffix class, case, percent-encoding,
query strings, absolute-form targets), and through the sensor which packets become FileFetch events: TFTP read
requests and HTTP GETs of such files from camera-side devices, and not writes, data, other methods, ordinary pages
or requests from outside the camera VLAN."""

from __future__ import annotations

import pytest

from packets import ethernet, ipv4, mac, tcp, udp
from sensor.config import parse_config
from sensor.detect import Detector, DetectorContext, registry
from sensor.enrich import ManufDatabase
from sensor.enrich.fetches import ARCHIVE, EXECUTABLE, FIRMWARE, SCRIPT, SUFFIXES, file_kind, last_segment, request_path
from sensor.pipeline import Sensor

from .test_export import T0, make_batch

CAM, NVR, SERVER, CORE, PRIVATE = "10.20.0.11", "10.20.0.2", "203.0.113.66", "10.1.0.5", "192.168.77.10"
CAM_MAC, ROUTER_MAC = mac("00:40:8c:00:00:11"), mac("02:00:00:00:00:fe")
SITE = {"networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]},
        "allow": [{"dst": "fw.allowed.example", "port": 80, "proto": "tcp"}]}


@pytest.mark.parametrize("segment, kind", [
    (b"x.sh", SCRIPT), (b"INSTALL.SH", SCRIPT), (b"a.b.py", SCRIPT), (b"run.pl", SCRIPT), (b"x.bash", SCRIPT),
    (b"mirai.arm7", EXECUTABLE), (b"sora.x86_64", EXECUTABLE), (b"bot.mipsel", EXECUTABLE), (b"b.mpsl", EXECUTABLE),
    (b"k.armv7l", EXECUTABLE), (b"k.aarch64", EXECUTABLE), (b"k.i686", EXECUTABLE), (b"k.m68k", EXECUTABLE),
    (b"k.ppc", EXECUTABLE), (b"k.sh4", EXECUTABLE), (b"k.spc", EXECUTABLE), (b"tool.elf", EXECUTABLE),
    (b"setup.exe", EXECUTABLE), (b"libx.so", EXECUTABLE),
    (b"digicap.dav", FIRMWARE), (b"digicap", FIRMWARE), (b"General_IPC.bin", FIRMWARE), (b"rootfs.img", FIRMWARE),
    (b"fw.squashfs", FIRMWARE),
    (b"update.tar.gz", ARCHIVE), (b"p.tgz", ARCHIVE), (b"p.zip", ARCHIVE),
    (b"x.s%68", SCRIPT), (b"x%2Esh", SCRIPT), (b"%78.BIN", FIRMWARE),          # percent-encoded, as a server decodes
    (b"index.html", None), (b"app.js", None), (b"style.css", None), (b"snap.jpg", None), (b"x.cgi", None),
    (b"index.php", None), (b"deviceInfo", None), (b"", None), (b".", None), (b"sh", None), (b"x.shtml", None),
    (b"x.armory", None), (b"x.sh.txt", None), (b"\xff\xfe.sh", SCRIPT), (b"%zz.sh", SCRIPT),
])
def test_file_kind_of_a_last_segment(segment, kind):
    assert file_kind(segment) == kind


def test_every_listed_suffix_is_recognised_whatever_its_case():
    for suffix, kind in SUFFIXES.items():
        assert file_kind(b"f" + suffix.encode()) == kind
        assert file_kind(b"F" + suffix.upper().encode()) == kind


def test_a_huge_segment_is_judged_by_its_end():
    assert file_kind(b"a" * 100_000 + b".sh") == SCRIPT
    assert file_kind(b"a" * 100_000) is None


@pytest.mark.parametrize("target, path, segment", [
    (b"/bins/x.arm7", b"/bins/x.arm7", b"x.arm7"),
    (b"/a.sh?x=1&y=/b.html", b"/a.sh", b"a.sh"),
    (b"/index.html?f=/x.sh", b"/index.html", b"index.html"),       # a script named in the query is not fetched
    (b"/a.sh#frag", b"/a.sh", b"a.sh"),
    (b"http://dl.example/p/f.bin?t=1", b"/p/f.bin", b"f.bin"),
    (b"http://dl.example", b"/", b""),
    (b"/dir/", b"/dir/", b""),
    (b"\\\\share\\\\x.exe", b"\\\\share\\\\x.exe", b"x.exe"),
    (b"x.sh", b"x.sh", b"x.sh"),
])
def test_request_path_and_its_last_segment(target, path, segment):
    assert request_path(target) == path
    assert last_segment(path) == segment


class FetchRecorder(Detector):
    name = "fetch_recorder"

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.fetches: list[tuple] = []

    def fetch(self, fetch):
        self.fetches.append((fetch.ts, fetch.device.ip, fetch.peer, fetch.port, fetch.proto, fetch.scope,
                             fetch.transport, fetch.method, fetch.path, fetch.filename, fetch.kind, fetch.name))


def _u(src, dst, sport, dport, payload, src_mac=CAM_MAC, dst_mac=ROUTER_MAC):
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)))


def _t(src, dst, sport, dport, payload, src_mac=CAM_MAC, dst_mac=ROUTER_MAC):
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sport, dport, 1, 1, "PA", payload)))


def _fetches(monkeypatch, frames, finish=True):
    monkeypatch.setattr(registry, "DETECTORS", (FetchRecorder,))
    sensor = Sensor(parse_config(SITE), manuf=ManufDatabase({}))
    sensor.process(make_batch([(T0 + i / 10, f) for i, f in enumerate(frames)]))
    if finish:
        sensor.finish()
    return sensor, sensor.detection.find(FetchRecorder).fetches


def test_tftp_read_requests_from_camera_side_devices_are_fetches(monkeypatch):
    frames = [_u(CAM, PRIVATE, 41069, 69, b"\x00\x01/pub/x.sh\x00octet\x00"),
              _u(CAM, SERVER, 41070, 69, b"\x00\x01config.txt\x00netascii\x00tsize\x000\x00"),
              _u(CAM, PRIVATE, 41071, 69, b"\x00\x02/pub/upload.bin\x00octet\x00"),      # a write: not a fetch
              _u(PRIVATE, CAM, 50000, 41069, b"\x00\x03\x00\x01#!/bin/sh"),              # data
              _u(CAM, PRIVATE, 41069, 50000, b"\x00\x04\x00\x01"),                       # its ACK
              _u(CAM, PRIVATE, 41072, 69, b"\x00\x03\x00\x01x.sh\x00octet\x00"),         # data to port 69
              _u(CAM, PRIVATE, 41073, 69, b"\x00\x01/no/terminator.sh"),                 # not a request
              _u(SERVER, CAM, 41074, 69, b"\x00\x01/x.sh\x00octet\x00", ROUTER_MAC, CAM_MAC),   # to the camera
              _u(CAM, CORE, 41075, 69, b"\x00\x01\x1b]0;pwn\x07\xff.sh\x00octet\x00")]
    sensor, fetches = _fetches(monkeypatch, frames)
    assert fetches == [
        (T0, CAM, PRIVATE, 69, "udp", "private", "tftp", "RRQ", "/pub/x.sh", "x.sh", "script", None),
        (T0 + 0.1, CAM, SERVER, 69, "udp", "public", "tftp", "RRQ", "config.txt", "config.txt", "file", None),
        (T0 + 0.8, CAM, CORE, 69, "udp", "core", "tftp", "RRQ", "\\x1b]0;pwn\\x07\\xff.sh", "\\x1b]0;pwn\\x07\\xff.sh",
         "script", None)]
    assert sensor.parsers.errors == {}


def test_http_gets_of_files_from_camera_side_devices_are_fetches(monkeypatch):
    frames = [_t(CAM, SERVER, 40000, 80, b"GET /bins/mirai.arm7 HTTP/1.0\r\nHost: 203.0.113.66\r\n\r\n"),
              _t(CAM, CORE, 40001, 8080, b"GET /t/Provision.SH?id=1 HTTP/1.1\r\nHost: deploy.corp:8080\r\n\r\n"),
              _t(CAM, SERVER, 40002, 80, b"GET /index.html HTTP/1.1\r\nHost: x.example\r\n\r\n"),   # a page
              _t(CAM, SERVER, 40003, 80, b"POST /upload.sh HTTP/1.1\r\nHost: x.example\r\n\r\n"),   # not a GET
              _t(CAM, SERVER, 40004, 80, b"HEAD /fw.bin HTTP/1.1\r\n\r\n"),
              _t(SERVER, CAM, 40005, 80, b"GET /x.sh HTTP/1.1\r\n\r\n", ROUTER_MAC, CAM_MAC),      # into the VLAN
              _t(NVR, CAM, 40006, 80, b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\n\r\n"),           # a recorder
              _t(CAM, SERVER, 40007, 80, b"GET /fw.bin HTTP/1.1\r\nHost: fw.allowed.example\r\n\r\n"),
              _t(CAM, SERVER, 40008, 80, b"GET /a%2Fb/x%2Esh HTTP/1.1\r\nHost: \x1b[2Jevil\r\n\r\n")]
    _, fetches = _fetches(monkeypatch, frames)
    assert fetches == [
        (T0, CAM, SERVER, 80, "tcp", "public", "http", "GET", "/bins/mirai.arm7", "mirai.arm7", "executable", None),
        (T0 + 0.1, CAM, CORE, 8080, "tcp", "core", "http", "GET", "/t/Provision.SH", "Provision.SH", "script",
         "deploy.corp"),
        (T0 + 0.7, CAM, SERVER, 80, "tcp", "allowed", "http", "GET", "/fw.bin", "fw.bin", "firmware image",
         "fw.allowed.example"),
        (T0 + 0.8, CAM, SERVER, 80, "tcp", "public", "http", "GET", "/a%2Fb/x%2Esh", "x%2Esh", "script",
         "\\x1b[2jevil")]


def test_a_fetch_touches_its_device_and_a_bad_request_line_only_costs_the_fetch(monkeypatch):
    frames = [_t("10.20.0.12", SERVER, 40000, 80, b"GET /x.sh HTTP/1.1\r\nHost: dl.example\r\n\r\n"),
              _t(CAM, SERVER, 40001, 80, b"GET /x y.sh HTTP/1.1\r\nHost: named.example\r\n\r\n")]
    sensor, fetches = _fetches(monkeypatch, frames, finish=False)
    assert [f[1] for f in fetches] == ["10.20.0.12"]
    assert sensor.inventory.devices.get("10.20.0.12").mac == int.from_bytes(CAM_MAC, "big")
    # the request line of four words is no fetch, but its Host still names the flow (as parse_http_host did)
    assert {f.name for f in sensor.flows.flows()} == {"dl.example", "named.example"}
