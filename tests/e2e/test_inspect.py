"""camwatch inspect: Wireshark's dissectors (pyshark) on a device's control-plane packets only."""

from __future__ import annotations

import ipaddress
import json
import os

from conftest import REAL, SYNTHETIC, camwatch
from link_packets import dhcp_ack, dhcp_request, mac_int, neighbor_advertisement, router_advertisement, write_pcap

from packets import ethernet, ipv4, ipv6, mac, tcp
from sensor.enrich.addresses import eui64
from sensor.inspect import extract

T0 = 1_700_000_000.0


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
    seen, of_box, written, failures = extract([str(SYNTHETIC / "camera_site.pcap")], "10.20.0.11", out)
    assert not failures and seen == 1622 and of_box > written
    # the camera's ~300 RTP frames of 1,400 bytes stay out; its DNS, NTP, RTSP and discovery go in
    assert 0 < written < 60


def test_real_xiaobai_names():
    found, _ = rows(REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap", "--device", "192.168.1.165")
    details = " ".join(r["detail"] or "" for r in found)
    for name in ("xiaomi8.p2psy2.io.mi.com", "xiaomi8.p2psy3.io.mi.com", "business.smartcamera.api.io.mi.com"):
        assert f"DNS query {name}" in details


def test_bad_device_is_one_line():
    proc = camwatch("inspect", SYNTHETIC / "camera_site.pcap", "--device", "camera-7")
    assert proc.returncode == 2 and "is not an IP address or a device id" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_box_is_inspected_whole_whichever_address_or_id_names_it(tmp_path):
    """A dual-stack camera: asked for by its IPv4 address, its IPv6 address or its id, inspect shows the control
    plane of both (its IPv6 DNS and TLS are as much evidence as its IPv4 ones)."""
    cam, router = mac("c0:56:e3:00:00:10"), mac("02:00:5e:00:00:01")
    cam_v4, cam_v6, gw_v4 = "192.168.1.10", "2001:db8:1::10", "192.168.1.1"
    cam_ll = str(ipaddress.IPv6Address((0xFE80 << 112) | eui64(mac_int(cam))))
    frames = [(T0, router_advertisement(router, "fe80::1", "2001:db8:1::")),
              (T0 + 0.1, neighbor_advertisement(cam, cam_ll, cam_v6)),
              (T0 + 0.2, dhcp_request(cam, cam_v4)), (T0 + 0.21, dhcp_ack(router, gw_v4, cam, cam_v4, router=gw_v4))]
    for k, (src, dst, port) in enumerate([(cam_v4, "203.0.113.5", 40000), (cam_v6, "2606:4700::1111", 40001)]):
        syn = tcp(src, dst, port, 443, 1, 0, "S", b"")
        version = ipaddress.ip_address(src).version
        frames.append((T0 + 1 + k, ethernet(router, cam, 0x0800 if version == 4 else 0x86DD,
                                            ipv4(src, dst, 6, syn) if version == 4 else ipv6(src, dst, 6, syn))))
    path = write_pcap(tmp_path / "box.pcap", frames)
    inventory = camwatch("inventory", path, "--json")
    (box,) = [d for d in json.loads(inventory.stdout) if d["mac"] == "c0:56:e3:00:00:10"]
    for device in (cam_v4, cam_v6, box["id"]):
        found, err = rows(path, "--device", device)
        assert {r["detail"] for r in found} >= {"TCP SYN to port 443"} and len(
            [r for r in found if r["detail"] == "TCP SYN to port 443"]) == 2, found
        assert {r["src"] for r in found if r["detail"] == "TCP SYN to port 443"} == {cam_v4, cam_v6}
        assert "one box with" in err
    proc = camwatch("inspect", path, "--device", "203.0.113.5", "--json")   # not a camera-side device: alone
    assert proc.returncode == 0 and "one box with" not in proc.stderr


def test_an_address_the_captures_never_carry_is_one_error_line():
    """Asking for a box the captures do not hold is a mistake to be told, not an empty answer: exit 2, one line."""
    proc = camwatch("inspect", SYNTHETIC / "camera_site.pcap", "--device", "10.9.9.9")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "camwatch: error: no packet of 10.9.9.9 in the capture (1,622 packets read)\n"


def test_sip_registrations_are_shown_and_wire_text_never_reaches_the_terminal_raw(tmp_path):
    """A door station's SIP REGISTER to an outside server is evidence as a DNS question is: its request line and
    user agent are shown. Whatever a header holds (terminal escapes, a bell, a bidi override), the text output is
    printable."""
    from packets import PcapWriter, ethernet, ip, tcp, udp
    cam, server = "10.20.0.11", "203.0.113.9"
    cam_mac, router = mac("00:40:8c:00:00:11"), mac("02:00:00:00:00:fe")
    sip = (b"REGISTER sip:sip.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.20.0.11:5060\r\nFrom: <sip:door@sip.example>\r\n"
           b"To: <sip:door@sip.example>\r\nCall-ID: 1@10.20.0.11\r\nCSeq: 1 REGISTER\r\n"
           b"User-Agent: DoorStation \x1b]0;pwned\x07\xe2\x80\xae\r\nContent-Length: 0\r\n\r\n")
    http = b"GET / HTTP/1.1\r\nHost: cloud.example\r\nUser-Agent: \x1b[31mred\x1b[0m\r\n\r\n"
    capture = tmp_path / "door.pcap"
    writer = PcapWriter(capture)
    writer.write(1_700_000_000.0, ethernet(router, cam_mac, 0x0800, ip(cam, server, 17, udp(cam, server, 5060, 5060,
                                                                                              sip))))
    writer.write(1_700_000_001.0, ethernet(router, cam_mac, 0x0800, ip(cam, server, 6, tcp(cam, server, 40000, 80, 1,
                                                                                             1, "PA", http))))
    writer.fh.close()
    proc = camwatch("inspect", capture, "--device", cam)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.isprintable() for line in lines), lines
    assert "SIP request REGISTER sip:sip.example SIP/2.0" in lines[0] and "SIP user agent DoorStation" in lines[0]
    assert "HTTP user agent" in lines[1]


def _descheduled_at_cleanup(monkeypatch, tmp_path):
    """The race a loaded machine hits now and then, made certain: tshark outlives its output by 50 ms (a wrapper
    first on PATH), and the process is held 0.2 s at the start of pyshark's cleanup after EOF, where it decides to
    kill or wait; tshark has exited by then, a zombie nobody has reaped."""
    import shutil
    import time

    from pyshark.capture.capture import Capture

    real = shutil.which("tshark")
    assert real
    wrapper = tmp_path / "bin" / "tshark"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n"{real}" "$@"; rc=$?\nexec >&- 2>&-\nsleep 0.05\nexit $rc\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    original = Capture._cleanup_subprocess

    async def held(self, process):
        time.sleep(0.2)
        return await original(self, process)

    monkeypatch.setattr(Capture, "_cleanup_subprocess", held)


def test_a_tshark_that_exits_while_the_process_is_held_is_not_taken_for_a_crash(monkeypatch, tmp_path):
    """pyshark's own cleanup kill()s the exited tshark, whose poll reaps it behind asyncio's child watcher: close()
    then raises TSharkCrashException (returncode 255) for a tshark that exited 0, and `inspect` failed. The capture
    camwatch uses waits for tshark instead (sensor.inspect.waited_capture); pyshark's is shown to fail the same way."""
    import pyshark
    import pytest
    from pyshark.capture.capture import TSharkCrashException

    from sensor.inspect import inspect

    _descheduled_at_cleanup(monkeypatch, tmp_path)
    found, _ = inspect([str(SYNTHETIC / "camera_site.pcap")], "10.20.0.14")
    assert any((r["detail"] or "") == "DNS query litedev.hik-connect.com" for r in found)
    plain = pyshark.FileCapture(str(SYNTHETIC / "camera_site.pcap"), display_filter="dns", keep_packets=False)
    with pytest.raises(TSharkCrashException, match="255"):
        try:
            for _ in plain:
                pass
            plain.close()
        finally:
            plain._running_processes.clear()   # not raised again by its __del__ in a later test
