"""camwatch inspect: Wireshark's dissectors (pyshark) on a device's control-plane packets only."""

from __future__ import annotations

import json

from conftest import REAL, SYNTHETIC, camwatch

from sensor.inspect import extract


def rows(*args):
    proc = camwatch("inspect", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_phone_home_evidence_in_wiresharks_words():
    found, err = rows(SYNTHETIC / "camera_site.pcap", "--device", "10.20.0.14")
    details = [r["detail"] or "" for r in found]
    assert "DNS query litedev.hik-connect.com" in details
    assert "DNS response litedev.hik-connect.com -> 203.0.113.50" in details
    assert "TLS ClientHello SNI dev.hik-connect.com" in details
    assert "TCP SYN to port 8555" in details
    assert any(d.startswith("RTSP method DESCRIBE") for d in details)
    assert all("10.20.0.14" in (r["src"], r["dst"]) for r in found)
    assert "Wireshark dissected" in err


def test_bulk_video_never_reaches_pyshark(tmp_path):
    out = tmp_path / "control.pcap"
    seen, written, failures = extract([str(SYNTHETIC / "camera_site.pcap")], "10.20.0.11", out)
    assert not failures and seen == 1622
    # the camera's ~300 RTP frames of 1,400 bytes stay out; its DNS, NTP, RTSP and discovery go in
    assert 0 < written < 60


def test_real_xiaobai_names():
    found, _ = rows(REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap", "--device", "192.168.1.165")
    details = " ".join(r["detail"] or "" for r in found)
    for name in ("xiaomi8.p2psy2.io.mi.com", "xiaomi8.p2psy3.io.mi.com", "business.smartcamera.api.io.mi.com"):
        assert f"DNS query {name}" in details


def test_bad_device_is_one_line():
    proc = camwatch("inspect", SYNTHETIC / "camera_site.pcap", "--device", "camera-7")
    assert proc.returncode == 2 and "is not an IP address" in proc.stderr and "Traceback" not in proc.stderr
