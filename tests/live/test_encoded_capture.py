"""bench/make_encoded.py, the video capture no camwatch code shaped: real x264 video from ffmpeg between network
namespaces it makes (and removes), captured by dumpcap. Small here (4 cameras, a short clip); what it measures is
in docs/benchmarks.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO, camwatch, capinfos, tshark_fields

from .test_live import _unavailable

pytestmark = pytest.mark.root

_SKIP = _unavailable() or (None if shutil.which("ffmpeg") else "ffmpeg not installed (scripts/bootstrap.sh --test)")
CAMERAS = 4
PACKETS = 4_000


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    if _SKIP:
        pytest.skip(_SKIP)
    path = tmp_path_factory.mktemp("encoded") / "encoded.pcap"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "make_encoded.py"), str(path), "-n", str(PACKETS),
                        "--cameras", str(CAMERAS), "--clip-seconds", "4"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return path


def test_the_capture_is_the_cameras_video_to_the_nvr_and_nothing_is_left_behind(encoded):
    assert capinfos(encoded)["packets"] == PACKETS
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "cwenc" not in namespaces
    rows = tshark_fields(encoded, "ip.src", "ip.dst", "ip.proto", "tcp.dstport", "frame.len",
                         display_filter="ip.dst == 10.20.0.2")
    by_camera = Counter(src for src, *_ in rows)
    assert set(by_camera) == {f"10.20.0.{11 + k}" for k in range(CAMERAS)}
    # UDP video is packetised by the encoder's RTP muxer at up to 1,400 bytes; most of it is full-size fragments
    udp_sizes = [int(size) for _src, _dst, proto, _port, size in rows if proto == "17"]
    assert sum(1400 <= size <= 1400 + 42 for size in udp_sizes) > len(udp_sizes) / 2
    # the fourth camera pushes its main stream over RTSP, RTP interleaved in TCP
    rtsp = {src for src, _dst, proto, port, _size in rows if proto == "6" and port == str(8554 + 3)}
    assert rtsp == {"10.20.0.14"}
    payloads = [payload for (payload,) in tshark_fields(encoded, "tcp.payload",
                                                         display_filter="ip.src == 10.20.0.14 and tcp.len > 0")]
    method, url, version = bytes.fromhex(payloads[0]).split(b"\r\n")[0].split(b" ")   # OPTIONS or ANNOUNCE
    assert (url, version) == (b"rtsp://10.20.0.2:8557/live", b"RTSP/1.0") and method in (b"OPTIONS", b"ANNOUNCE")
    # '$' frames, which the stack's segments cut anywhere: some segments start on one, many inside one. How many of
    # each is the kernel's choice (it coalesces more under load: 19% started on one in a loaded CI run, ~half idle)
    on_frame = sum(payload.startswith("24") for payload in payloads)
    assert len(payloads) / 20 < on_frame < len(payloads) * 19 / 20


def test_camwatch_names_each_camera_by_its_makers_oui(encoded):
    proc = camwatch("inventory", "--json", encoded)
    assert proc.returncode == 0, proc.stderr
    devices = {d["ip"]: d for d in json.loads(proc.stdout)}
    makers = {ip: devices[ip]["maker"] for ip in devices if ip != "10.20.0.2"}
    assert makers == {"10.20.0.11": "Hikvision", "10.20.0.12": "Dahua", "10.20.0.13": "Axis",
                      "10.20.0.14": "Samsung Techwin Co.,Ltd"}
    assert all(devices[ip]["role"] == "camera" and devices[ip]["packets_sent"] > 100 for ip in makers)
