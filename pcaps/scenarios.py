#!/usr/bin/env python3
"""Labelled evaluation scenarios for camwatch's detectors.

    python pcaps/scenarios.py OUTDIR

writes OUTDIR/baseline.pcap (20 minutes of a quiet camera site), OUTDIR/mixed.pcap (the next 20 minutes with
planted behaviours on several cameras and benign cameras alongside), OUTDIR/labels.json (what was planted, on which
device, when) and OUTDIR/site.toml (the site's configuration). Deterministic: same code, same bytes.

The site deliberately differs from the demo capture (addresses, VLAN, makers, timings): detectors must work on
behaviour, not on one fixture's numbers.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import Host, Scene, rtsp_exchanges  # noqa: E402
from packets import mac, tcp, tls_client_hello  # noqa: E402
from plant_fetch import plant as plant_fetch  # noqa: E402
from plant_recognise import plant as plant_recognise  # noqa: E402
from plant_uploads import plant as plant_uploads  # noqa: E402

T0 = 1_710_000_000.0
BASELINE = 1200.0
VLAN = ((0x8100, 30),)

GATEWAY = Host("172.16.30.1", mac("00:0c:29:30:00:01"))
NVR = Host("172.16.30.2", mac("00:11:32:30:00:02"))
MAKERS = [  # (MAC prefix, label) — covered and non-covered makers mixed
    ("44:19:b6", "hikvision"), ("3c:ef:8c", "dahua"), ("00:40:8c", "axis"), ("bc:ad:28", "hikvision"),
    ("e0:50:8b", "dahua"), ("00:12:34", "unknown-oem"), ("8c:e7:48", "hikvision"), ("00:0f:7c", "unknown-oem"),
    ("38:af:29", "dahua"), ("e4:30:22", "hanwha"), ("ac:cc:8e", "axis"), ("00:80:f0", "panasonic"),
    ("c0:56:e3", "hikvision"), ("00:1a:07", "arecont"), ("90:02:a9", "dahua"),
]
CAMERAS = [Host(f"172.16.30.{11 + i}", mac(f"{prefix}:30:{i:02x}:{11 + i:02x}"))
           for i, (prefix, _) in enumerate(MAKERS)]
UPDATE_SERVER = Host("192.0.2.200", GATEWAY.mac)   # allowed by site.toml: firmware updates
CORE_FILESERVER = Host("10.50.3.4", GATEWAY.mac)

SITE_TOML = """# The site of the evaluation scenarios (pcaps/scenarios.py).
[sensor]
name = "eval-site"

[networks]
camera = ["172.16.30.0/24"]
core = ["10.50.0.0/16"]

[detect]
learning_period = 1200   # the baseline capture's length

[[allow]]
dst = "updates.example-cctv.com"
port = 443
proto = "tcp"
comment = "firmware updates"
"""


def benign(scene: Scene, start: float, end: float, cameras: list[Host]) -> None:
    """What every camera does on a quiet day: video to the NVR, site NTP and DNS, allowed update checks."""
    for i, cam in enumerate(cameras):
        offset = 3.0 * i
        client_rtp = 52000 + 2 * i
        if start == T0:
            scene.tcp_session(start + offset, NVR, 41000 + i, cam, 554, rtsp_exchanges(cam, i, client_rtp, "Server"))
        t = start + offset + 0.5
        seq = 0
        while t < end:  # a 1 fps substream in 300-byte packets keeps the files small
            header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, int(t * 90000) & 0xFFFFFFFF, 0x300 + i)
            scene.udp(t, cam, 6970, NVR, client_rtp, header + bytes(288))
            seq += 1
            t += 1.0 + 0.001 * (i % 7)
        for t in range(int(start + 20 + 7 * i), int(end), 300):
            scene.ntp(t + 0.25, cam, GATEWAY)
            scene.dns(t + 0.5, cam, GATEWAY, "nvr.site.example", [("nvr.site.example", 1, 3600, NVR.ip)])
        if i % 3 == 0:
            t = start + 60 + 11 * i
            scene.dns(t, cam, GATEWAY, "updates.example-cctv.com",
                      [("updates.example-cctv.com", 1, 300, UPDATE_SERVER.ip)])
            scene.tcp_session(t + 0.1, cam, 43000 + i, UPDATE_SERVER, 443,
                              [(0.0, True, tls_client_hello("updates.example-cctv.com")),
                               (0.05, False, b"\x16\x03\x03" + bytes(120))], close_at=1.0, client_mac=cam.mac)


def write_labels(path: Path, labels: list[dict], benign_devices: list[str]) -> None:
    path.write_text(json.dumps({"capture": "mixed.pcap", "benign_devices": benign_devices,
                                "start": T0 + BASELINE, "end": T0 + 2 * BASELINE,
                                "behaviours": labels}, indent=2) + "\n")


def mixed(scene: Scene) -> list[dict]:
    start = T0 + BASELINE
    labels: list[dict] = []
    external = ["egress_policy", "new_destination"]

    def label(ident, kind, cam, destination, t0, t1, also=(), **extra):
        labels.append({"id": ident, "kind": kind, "device": cam.ip, "destination": destination,
                       "start": round(t0, 6), "end": round(t1, 6), "also": list(also), **extra})

    # 1. Hik-Connect registration by name: DNS lookup then TCP 8555 with irregular keep-alives
    cam = CAMERAS[3]
    t = start + 120
    cloud = Host("203.0.113.71", GATEWAY.mac)
    scene.dns(t, cam, GATEWAY, "dev.ys7.com", [("dev.ys7.com", 1, 600, cloud.ip)])
    scene.tcp_session(t + 0.2, cam, 45000, cloud, 8555,
                      [(d, True, bytes(140)) for d in (0.0, 37.0, 151.0, 260.0)], client_mac=cam.mac)
    label("hik-connect", "vendor_cloud", cam, cloud.ip, t, t + 262, external)

    # 2. Dahua P2P by payload signature, IP literal, no DNS
    cam = CAMERAS[4]
    t = start + 200
    p2p = Host("198.51.100.88", GATEWAY.mac)
    for d in (0.0, 13.0, 95.0):
        scene.udp(t + d, cam, 37500, p2p, 8800, b"DHGET /probe/p2psrv HTTP/1.1\r\nCSeq: 1\r\n\r\n")
        scene.udp(t + d + 0.05, p2p, 8800, cam, 37500, b"HTTP/1.1 200 OK\r\nCSeq: 1\r\n\r\n")
    label("dahua-p2p", "vendor_cloud", cam, p2p.ip, t, t + 96, external)

    # 3. CS2 PPPP hello from a white-label camera, no DNS
    cam = CAMERAS[5]
    t = start + 300
    cs2 = Host("192.0.2.45", GATEWAY.mac)
    for d in (0.0, 4.0, 71.0):
        scene.udp(t + d, cam, 40100, cs2, 32100, b"\xf1\x00\x00\x00")
        scene.udp(t + d + 0.08, cs2, 32100, cam, 40100, b"\xf1\x01\x00\x10" + bytes(16))
    label("cs2-hello", "vendor_cloud", cam, cs2.ip, t, t + 72, external)

    # 4. RTP video to the Internet from a covered camera
    cam = CAMERAS[8]
    t = start + 400
    sink = Host("203.0.113.90", GATEWAY.mac)
    for k in range(40 * 45):
        ts = t + k / 40
        header = struct.pack("!BBHII", 0x80, 96, k & 0xFFFF, int(ts * 90000) & 0xFFFFFFFF, 0x777)
        scene.udp(ts, cam, 6970, sink, 10000, header + bytes(788))
    # a camera that suddenly sends a megabit to the Internet is also out of character
    label("rtp-out", "video_egress", cam, sink.ip, t, t + 45, external + ["anomaly"])

    # 5. PPPP DRW video frames from a non-covered camera
    cam = CAMERAS[7]
    t = start + 600
    relay = Host("192.0.2.60", GATEWAY.mac)
    for k in range(40 * 30):
        scene.udp(t + k / 40, cam, 11784, relay, 19512, b"\xf1\xd0" + struct.pack("!H", 1020) + bytes(1020))
        if k % 20 == 0:
            scene.udp(t + k / 40 + 0.01, relay, 19512, cam, 11784, b"\xf1\xd1\x00\x06" + bytes(6))
    label("pppp-drw-out", "video_egress", cam, relay.ip, t, t + 30, external + ["vendor_cloud", "anomaly"])

    # 6. A beacon: 72 bytes every 30 s (half a second of jitter) to one address
    cam = CAMERAS[6]
    t = start + 100
    c2 = Host("198.51.100.140", GATEWAY.mac)
    for k in range(20):
        jitter = ((k * 7) % 11 - 5) / 10
        scene.udp(t + 30 * k + jitter, cam, 41999, c2, 9999, bytes(72))
    label("beacon", "beaconing", cam, c2.ip, t, t + 30 * 19, external, period=30)

    # 7. DNS straight to a public resolver
    cam = CAMERAS[9]
    t = start + 150
    resolver = Host("8.8.8.8", GATEWAY.mac)
    for d in (0.0, 97.0, 311.0):
        scene.dns(t + d, cam, resolver, "time.example.com", [("time.example.com", 1, 60, "192.0.2.9")])
    label("public-dns", "hardcoded_infra", cam, resolver.ip, t, t + 312, external)

    # 8. NTP straight to a public server
    cam = CAMERAS[10]
    t = start + 250
    ntp = Host("198.51.100.123", GATEWAY.mac)
    scene.ntp(t, cam, ntp)
    label("public-ntp", "hardcoded_infra", cam, ntp.ip, t, t + 1, external)

    # 9. UPnP: find the gateway, then ask it to forward a port to the camera
    cam = CAMERAS[11]
    t = start + 500
    ssdp = Host("239.255.255.250", mac("01:00:5e:7f:ff:fa"))
    search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n"
              b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")
    scene.udp(t, cam, 50123, ssdp, 1900, search, dst_mac=ssdp.mac)
    soap = (b'<?xml version="1.0"?><s:Envelope><s:Body><u:AddPortMapping '
            b'xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewRemoteHost></NewRemoteHost>'
            b"<NewExternalPort>8000</NewExternalPort><NewProtocol>TCP</NewProtocol><NewInternalPort>8000"
            b"</NewInternalPort><NewInternalClient>172.16.30.22</NewInternalClient></u:AddPortMapping>"
            b"</s:Body></s:Envelope>")
    request = (b"POST /ctl/IPConn HTTP/1.1\r\nHOST: 172.16.30.1:5000\r\nCONTENT-TYPE: text/xml\r\n"
               b'SOAPACTION: "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"\r\n'
               + f"CONTENT-LENGTH: {len(soap)}\r\n\r\n".encode() + soap)
    scene.tcp_session(t + 2, cam, 49001, GATEWAY, 5000, [(0.0, True, request),
                      (0.05, False, b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 0\r\n\r\n")], close_at=0.5,
                      client_mac=cam.mac)
    label("upnp-mapping", "hardcoded_infra", cam, GATEWAY.ip, t, t + 3)

    # 10. A camera reaching a core file server
    cam = CAMERAS[12]
    t = start + 700
    scene.tcp_session(t, cam, 49152, CORE_FILESERVER, 445, [(0.0, True, b"\x00\x00\x00\x2f\xfeSMB" + bytes(40))],
                      close_at=1.0, client_mac=cam.mac)
    label("smb-to-core", "segmentation", cam, CORE_FILESERVER.ip, t, t + 1, ["new_destination"])

    # 11. After learning, a benign-looking camera starts using a new outside service (TLS, SNI only)
    cam = CAMERAS[0]
    t = start + 800
    telemetry = Host("203.0.113.200", GATEWAY.mac)
    scene.tcp_session(t, cam, 44444, telemetry, 443, [(0.0, True, tls_client_hello("telemetry.example-oem.net")),
                                                      (0.05, False, b"\x16\x03\x03" + bytes(200))], close_at=2.0,
                      client_mac=cam.mac)
    label("new-telemetry", "new_destination", cam, telemetry.ip, t, t + 2, ["egress_policy"])

    # 12. Behaviour out of character: telnet to 40 outside addresses in 30 s
    cam = CAMERAS[1]
    t = start + 900
    for k in range(40):
        target = Host(f"198.51.100.{10 + k}", GATEWAY.mac)
        seg = tcp(cam.ip, target.ip, 50000 + k, 23, 7000 + k, 0, "S")
        scene.ip_packet(t + 0.75 * k, cam, target, 6, seg, GATEWAY.mac)
    label("telnet-sweep", "anomaly", cam, None, t, t + 30, external)
    plant_recognise(scene, start, label, cameras=CAMERAS, gateway=GATEWAY, host=Host)
    plant_fetch(scene, start, label)
    plant_uploads(scene, start, label)
    return labels


def generate(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    base = Scene(seed=30, vlans=VLAN)
    benign(base, T0, T0 + BASELINE, CAMERAS)
    base.write_ethernet(outdir / "baseline.pcap")
    scene = Scene(seed=31, vlans=VLAN)
    benign(scene, T0 + BASELINE, T0 + 2 * BASELINE, CAMERAS)
    labels = mixed(scene)
    scene.write_ethernet(outdir / "mixed.pcap")
    planted = {lab["device"] for lab in labels}
    write_labels(outdir / "labels.json", labels, [c.ip for c in CAMERAS if c.ip not in planted])
    (outdir / "site.toml").write_text(SITE_TOML)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scenarios.py OUTDIR")
    generate(Path(sys.argv[1]))
