#!/usr/bin/env python3
"""Deterministic generator for camwatch's synthetic fixtures.

    python pcaps/generate.py [OUTDIR]     (default: pcaps/synthetic)

Same code, same bytes: every value comes from arithmetic or a seeded random.Random, so the committed fixtures can
be regenerated and compared byte for byte (tests/e2e/test_fixtures.py does). Addresses outside the camera VLAN are
from the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); hostnames of
vendor services are real names, used only inside these files.
"""

from __future__ import annotations

import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from packets import (  # noqa: E402
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    PcapNgWriter,
    PcapWriter,
    dns_query,
    dns_response,
    ethernet,
    icmp_echo,
    ip,
    ipv4,
    mac,
    sll,
    sll2,
    tcp,
    tls_client_hello,
    udp,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
BROADCAST = mac("ff:ff:ff:ff:ff:ff")


@dataclass(frozen=True)
class Host:
    ip: str
    mac: bytes


class Scene:
    """Collects timestamped frames from several hosts, then writes them in time order."""

    def __init__(self, seed: int, vlans: tuple[tuple[int, int], ...] = ()):
        self.rng = random.Random(seed)
        self.vlans = vlans
        self.frames: list[tuple[float, int, bytes, int, bytes]] = []  # ts, seq, l3, ethertype, src mac + dst mac
        self._seq = 0
        self._ip_id = 1

    def add(self, ts: float, src: Host, dst_mac: bytes, ethertype: int, l3: bytes) -> None:
        self._seq += 1
        self.frames.append((ts, self._seq, l3, ethertype, src.mac + dst_mac))

    def ip_packet(self, ts: float, src: Host, dst: Host, proto: int, l4: bytes, dst_mac: bytes | None = None) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        v6 = ":" in src.ip
        self.add(ts, src, dst_mac or dst.mac, ETH_IPV6 if v6 else ETH_IPV4, ip(src.ip, dst.ip, proto, l4, self._ip_id))

    def udp(self, ts: float, src: Host, sport: int, dst: Host, dport: int, payload: bytes,
            dst_mac: bytes | None = None) -> None:
        self.ip_packet(ts, src, dst, 17, udp(src.ip, dst.ip, sport, dport, payload), dst_mac)

    def arp(self, ts: float, sender: Host, target_ip: str) -> None:
        import ipaddress
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender.mac, ipaddress.IPv4Address(sender.ip).packed,
                           b"\0" * 6, ipaddress.IPv4Address(target_ip).packed)
        self.add(ts, sender, BROADCAST, ETH_ARP, body)

    def dns(self, ts: float, client: Host, resolver: Host, name: str, answers: list[tuple[str, int, int, str]],
            qtype: int = 1) -> None:
        ident = self.rng.randrange(1, 65535)
        sport = self.rng.randrange(20000, 60000)
        self.udp(ts, client, sport, resolver, 53, dns_query(ident, name, qtype))
        self.udp(ts + 0.004, resolver, 53, client, sport, dns_response(ident, name, answers, qtype))

    def ntp(self, ts: float, client: Host, server: Host) -> None:
        sport = 123
        request = bytes([0x23]) + b"\0" * 47
        reply = bytes([0x24, 2, 6, 0xE9]) + b"\0" * 44
        self.udp(ts, client, sport, server, 123, request)
        self.udp(ts + 0.002, server, 123, client, sport, reply)

    def tcp_session(self, ts: float, client: Host, cport: int, server: Host, sport: int,
                    exchanges: list[tuple[float, bool, bytes]], close_at: float | None = None,
                    server_mac: bytes | None = None, client_mac: bytes | None = None) -> None:
        """Handshake at ts, then (offset, from_client, payload) exchanges, each ACKed; FIN at close_at."""
        cseq, sseq = self.rng.randrange(1 << 31), self.rng.randrange(1 << 31)
        rtt = 0.01

        def send(t, from_client, flags, payload=b""):
            nonlocal cseq, sseq
            if from_client:
                seg = tcp(client.ip, server.ip, cport, sport, cseq, sseq if "A" in flags else 0, flags, payload)
                self.ip_packet(t, client, server, 6, seg, server_mac)
                cseq += len(payload) + (1 if "S" in flags or "F" in flags else 0)
            else:
                seg = tcp(server.ip, client.ip, sport, cport, sseq, cseq, flags, payload)
                self.ip_packet(t, server, client, 6, seg, client_mac)
                sseq += len(payload) + (1 if "S" in flags or "F" in flags else 0)

        send(ts, True, "S")
        send(ts + rtt, False, "SA")
        send(ts + 2 * rtt, True, "A")
        for offset, from_client, payload in exchanges:
            t = ts + 2 * rtt + offset
            send(t, from_client, "PA", payload)
            send(t + rtt / 2, not from_client, "A")
        if close_at is not None:
            t = ts + close_at
            send(t, True, "FA")
            send(t + rtt, False, "FA")
            send(t + 2 * rtt, True, "A")

    def write_ethernet(self, path: Path) -> int:
        with PcapWriter(path, LINKTYPE_ETHERNET) as w:
            for ts, _seq, l3, etype, macs in sorted(self.frames):
                w.write(ts, ethernet(macs[6:], macs[:6], etype, l3, self.vlans))
            return w.count


# ---- camera site: the bundled demo ------------------------------------------------------------------------
GATEWAY = Host("10.20.0.1", mac("00:1e:bd:00:00:01"))        # site router: DNS and NTP for the VLAN
NVR = Host("10.20.0.2", mac("00:11:32:00:00:02"))            # Synology NVR
CAMERAS = [
    Host("10.20.0.11", mac("04:03:12:00:00:11")),            # Hikvision, LAN only
    Host("10.20.0.12", mac("08:ed:ed:00:00:12")),            # Dahua, LAN only
    Host("10.20.0.13", mac("ac:cc:8e:00:00:13")),            # Axis, LAN only
    Host("10.20.0.14", mac("18:68:cb:00:00:14")),            # Hikvision, phones home
    Host("10.20.0.15", mac("40:2c:76:1a:00:15")),            # OUI lookalike: a /28 of Shanghai Dahua Scale Factory
]
PHONE_HOME = CAMERAS[3]
HIK_CLOUD = Host("203.0.113.50", GATEWAY.mac)                # behind the router: frames carry its MAC
HIK_TLS = Host("203.0.113.60", GATEWAY.mac)
HIK_P2P = Host("198.51.100.20", GATEWAY.mac)
RTSP_SERVERS = ["Hikvision-Webs", "Rtsp Server/3.0", "AXIS Media Control", "Hikvision-Webs", "RTSP/1.0 server"]
ONVIF_MULTICAST = Host("239.255.255.250", mac("01:00:5e:7f:ff:fa"))


def rtsp_exchanges(cam: Host, index: int, client_rtp: int, server: str) -> list[tuple[float, bool, bytes]]:
    url = f"rtsp://{cam.ip}:554/Streaming/Channels/101"
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {cam.ip}\r\ns=Media Presentation\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
           "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n")
    steps = [
        (f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: NVR/2.0\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: {server}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"),
        (f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 2\r\nServer: {server}\r\nContent-Type: application/sdp\r\n"
         f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"),
        (f"SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
         f"Transport: RTP/AVP;unicast;client_port={client_rtp}-{client_rtp + 1}\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: {server}\r\nSession: {1000 + index};timeout=60\r\n"
         f"Transport: RTP/AVP;unicast;client_port={client_rtp}-{client_rtp + 1};server_port=6970-6971\r\n\r\n"),
        (f"PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: {1000 + index}\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 4\r\nServer: {server}\r\nSession: {1000 + index}\r\n\r\n"),
    ]
    out: list[tuple[float, bool, bytes]] = []
    t = 0.0
    for request, response in steps:
        out.append((t, True, request.encode()))
        out.append((t + 0.02, False, response.encode()))
        t += 0.05
    return out


def rtp_stream(scene: Scene, cam: Host, index: int, start: float, end: float, client_rtp: int, fps: int) -> None:
    ssrc = 0x10000000 + index
    seq = scene.rng.randrange(65536)
    t = start
    n = 0
    while t < end:
        size = 1400 if n % fps else 1400  # steady 1400-byte frames, as a camera's packetiser emits
        header = struct.pack("!BBHII", 0x80, 96 | (0x80 if n % 5 == 4 else 0), seq & 0xFFFF,
                             int(t * 90000) & 0xFFFFFFFF, ssrc)
        scene.udp(t, cam, 6970, NVR, client_rtp, header + scene.rng.randbytes(size - 12 - 42))
        seq += 1
        n += 1
        t = start + n / fps
    for k in range(int(start) + 5, int(end), 5):  # RTCP sender and receiver reports
        scene.udp(k + 0.5, cam, 6971, NVR, client_rtp + 1, struct.pack("!BBHI", 0x80, 200, 6, ssrc) + b"\0" * 20)
        scene.udp(k + 0.6, NVR, client_rtp + 1, cam, 6971, struct.pack("!BBHI", 0x81, 201, 7, 0x2000) + b"\0" * 24)


def onvif_probe(scene: Scene, ts: float) -> None:
    probe = ('<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
             'xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
             'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
             'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><e:Header><w:MessageID>uuid:'
             '0a6dc791-2be6-4991-9af1-454778a1917a</w:MessageID><w:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery'
             '</w:To><w:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action></e:Header>'
             '<e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>')
    scene.udp(ts, NVR, 3702, ONVIF_MULTICAST, 3702, probe.encode(), dst_mac=ONVIF_MULTICAST.mac)
    for i, cam in enumerate(CAMERAS):
        match = ('<?xml version="1.0" encoding="UTF-8"?><env:Envelope><env:Body><d:ProbeMatches><d:ProbeMatch>'
                 f'<d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>onvif://www.onvif.org/type/video_encoder '
                 f'onvif://www.onvif.org/hardware/CAM-{i + 1}</d:Scopes><d:XAddrs>http://{cam.ip}/onvif/device_service'
                 '</d:XAddrs></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>')
        scene.udp(ts + 0.05 + 0.01 * i, cam, 3702, NVR, 3702, match.encode())


def camera_site(path: Path, duration: float = 30.0, fps: int = 10) -> int:
    scene = Scene(seed=2022, vlans=((0x8100, 20),))
    for i, host in enumerate([NVR, *CAMERAS]):
        scene.arp(T0 + 0.01 * i, host, GATEWAY.ip)
    onvif_probe(scene, T0 + 0.2)
    for i, cam in enumerate(CAMERAS):
        base = T0 + 1.0 + 0.3 * i
        scene.dns(base, cam, GATEWAY, "nvr.site.internal", [("nvr.site.internal", 1, 3600, NVR.ip)])
        scene.ntp(base + 0.1, cam, GATEWAY)
        client_rtp = 50000 + 2 * i
        scene.tcp_session(base + 0.2, NVR, 40000 + i, cam, 554,
                          rtsp_exchanges(cam, i, client_rtp, RTSP_SERVERS[i])
                          + [(t, True, f"GET_PARAMETER rtsp://{cam.ip}/ RTSP/1.0\r\nCSeq: {5 + k}\r\n\r\n".encode())
                             for k, t in enumerate(range(20, int(duration), 20))])
        rtp_stream(scene, cam, i, base + 0.5, T0 + duration, client_rtp, fps)
        scene.ntp(T0 + duration - 2 + 0.1 * i, cam, GATEWAY)

    # The phone-home camera: resolves its vendor's cloud, registers over TCP 8555, keeps a UDP P2P heartbeat to
    # an address it never looked up, and opens TLS whose only name is the SNI.
    cam = PHONE_HOME
    t = T0 + 3.0
    scene.dns(t, cam, GATEWAY, "litedev.hik-connect.com",
              [("litedev.hik-connect.com", 5, 300, "litedev-eu.hik-connect.com"),
               ("litedev-eu.hik-connect.com", 1, 300, HIK_CLOUD.ip)])
    keepalives = [(float(k), k % 20 == 0, scene.rng.randbytes(120 if k % 20 else 300))
                  for k in range(0, int(duration) - 5, 10)]
    scene.tcp_session(t + 0.1, cam, 41234, HIK_CLOUD, 8555, keepalives, close_at=duration - 5,
                      client_mac=cam.mac)
    for k in range(int(duration // 10)):
        scene.udp(t + 0.5 + 10 * k, cam, 6002, HIK_P2P, 6002, b"\x00\x01" + scene.rng.randbytes(46))
        scene.udp(t + 0.55 + 10 * k, HIK_P2P, 6002, cam, 6002, b"\x00\x02" + scene.rng.randbytes(30))
    scene.tcp_session(t + 5.0, cam, 41500, HIK_TLS, 443,
                      [(0.0, True, tls_client_hello("dev.hik-connect.com")),
                       (0.05, False, b"\x16\x03\x03" + scene.rng.randbytes(200))], close_at=2.0)
    return scene.write_ethernet(path)


# ---- segmentation: camera VLAN and core network ------------------------------------------------------------
CORE_FILESERVER = Host("10.1.4.20", GATEWAY.mac)
CORE_WORKSTATION = Host("10.1.8.30", GATEWAY.mac)
CORE_SCANNER = Host("10.1.8.31", GATEWAY.mac)
CORE_VMS = Host("10.1.5.10", GATEWAY.mac)


def segmentation(path: Path) -> int:
    """Camera VLAN 10.20.0.0/24 beside core 10.1.0.0/16 (see segmentation.toml):
    - allowed: the core VMS 10.1.5.10 pulls RTSP from camera .11 (an allow rule covers it);
    - violation: camera .11 (Hikvision) opens SMB to core file server 10.1.4.20;
    - violation: core workstation 10.1.8.30 browses camera .12's web UI, and the camera answers;
    - violation: core host 10.1.8.31 probes camera .13 on telnet; the camera never answers.
    """
    scene = Scene(seed=445, vlans=((0x8100, 20),))
    t = T0 + 500
    cam_hik, cam_dahua, cam_axis = CAMERAS[0], CAMERAS[1], CAMERAS[2]
    scene.tcp_session(t, CORE_VMS, 45000, cam_hik, 554, rtsp_exchanges(cam_hik, 0, 52000, RTSP_SERVERS[0]),
                      server_mac=cam_hik.mac, client_mac=GATEWAY.mac)
    scene.tcp_session(t + 2, cam_hik, 49152, CORE_FILESERVER, 445,
                      [(0.0, True, b"\x00\x00\x00\x2f\xfeSMB" + b"\0" * 40)], close_at=1.0)
    scene.tcp_session(t + 4, CORE_WORKSTATION, 51000, cam_dahua, 80,
                      [(0.0, True, b"GET / HTTP/1.1\r\nHost: 10.20.0.12\r\n\r\n"),
                       (0.02, False, b"HTTP/1.1 200 OK\r\nServer: Webs\r\nContent-Length: 0\r\n\r\n")],
                      close_at=1.0, server_mac=cam_dahua.mac)
    for k in range(3):
        seg = tcp(CORE_SCANNER.ip, cam_axis.ip, 52000 + k, 23, 1000, 0, "S")
        scene.ip_packet(t + 6 + k, CORE_SCANNER, cam_axis, 6, seg, cam_axis.mac)
    return scene.write_ethernet(path)


# ---- link-type and encapsulation variants ------------------------------------------------------------------
MINI_CAMERA = Host("192.168.50.10", mac("04:03:12:00:50:10"))
MINI_ROUTER = Host("192.168.50.1", mac("00:1e:bd:00:50:01"))
MINI_CLOUD = Host("198.51.100.7", MINI_ROUTER.mac)
MINI_CAMERA6 = Host("fd00:50::10", MINI_CAMERA.mac)
MINI_CLOUD6 = Host("2001:db8::7", MINI_ROUTER.mac)


def mini_scene() -> Scene:
    """Small mixed traffic for encapsulation tests: TCP with SNI, DNS, ICMP, IPv6 UDP, fragments, ARP.

    Flows it holds: DNS (udp), TLS (tcp), ICMP echo, IPv6 NTP (udp), fragmented UDP (first fragment keyed by
    ports, the second by addresses alone) -> 6 flows; 2 external destinations, both reached by the camera.
    """
    scene = Scene(seed=7)
    t = T0 + 100
    scene.arp(t, MINI_CAMERA, MINI_ROUTER.ip)
    scene.dns(t + 0.1, MINI_CAMERA, MINI_ROUTER, "cloud.example.net", [("cloud.example.net", 1, 60, MINI_CLOUD.ip)])
    scene.tcp_session(t + 0.2, MINI_CAMERA, 43000, MINI_CLOUD, 443,
                      [(0.0, True, tls_client_hello("api.example.net")), (0.05, False, b"\x16\x03\x03" + b"\x11" * 90)],
                      close_at=0.5)
    scene.ip_packet(t + 1.0, MINI_CAMERA, MINI_CLOUD, 1, icmp_echo(7, 1))
    scene.ip_packet(t + 1.02, MINI_CLOUD, MINI_CAMERA, 1, icmp_echo(7, 1, reply=True))
    scene.udp(t + 1.5, MINI_CAMERA6, 123, MINI_CLOUD6, 123, bytes([0x23]) + b"\0" * 47)
    scene.udp(t + 1.52, MINI_CLOUD6, 123, MINI_CAMERA6, 123, bytes([0x24]) + b"\0" * 47)
    # one UDP datagram of 1600 bytes in two IPv4 fragments
    datagram = udp(MINI_CAMERA.ip, MINI_CLOUD.ip, 5000, 6000, bytes(range(256)) * 6 + b"\x55" * 64)
    scene.add(t + 2.0, MINI_CAMERA, MINI_CLOUD.mac, ETH_IPV4,
              ipv4(MINI_CAMERA.ip, MINI_CLOUD.ip, 17, datagram[:1480], ident=99, more_fragments=True))
    scene.add(t + 2.0001, MINI_CAMERA, MINI_CLOUD.mac, ETH_IPV4,
              ipv4(MINI_CAMERA.ip, MINI_CLOUD.ip, 17, datagram[1480:], ident=99, frag_offset=1480))
    return scene


def write_variants(scene: Scene, outdir: Path) -> dict[str, int]:
    frames = sorted(scene.frames)
    counts = {}
    with PcapWriter(outdir / "ethernet.pcap") as w:
        for ts, _s, l3, etype, macs in frames:
            w.write(ts, ethernet(macs[6:], macs[:6], etype, l3))
    counts["ethernet.pcap"] = w.count
    with PcapWriter(outdir / "qinq_nanosecond_bigendian.pcap", nanoseconds=True, big_endian=True) as w:
        for ts, _s, l3, etype, macs in frames:
            w.write(ts, ethernet(macs[6:], macs[:6], etype, l3, ((0x88A8, 300), (0x8100, 20))))
    counts["qinq_nanosecond_bigendian.pcap"] = w.count
    with PcapWriter(outdir / "linux_sll.pcap", LINKTYPE_LINUX_SLL) as w:
        for ts, _s, l3, etype, macs in frames:
            w.write(ts, sll(l3, etype, macs[:6]))
    counts["linux_sll.pcap"] = w.count
    with PcapWriter(outdir / "linux_sll2.pcap", LINKTYPE_LINUX_SLL2) as w:
        for ts, _s, l3, etype, macs in frames:
            w.write(ts, sll2(l3, etype, macs[:6]))
    counts["linux_sll2.pcap"] = w.count
    with PcapWriter(outdir / "raw_ip.pcap", LINKTYPE_RAW) as w:
        for ts, _s, l3, etype, _macs in frames:
            if etype != ETH_ARP:
                w.write(ts, l3)
    counts["raw_ip.pcap"] = w.count
    with PcapNgWriter(outdir / "two_interfaces.pcapng", [(LINKTYPE_ETHERNET, 6), (LINKTYPE_RAW, 9)]) as w:
        w.comment()
        for k, (ts, _s, l3, etype, macs) in enumerate(frames):
            if k % 2 and etype != ETH_ARP:
                w.write(ts, l3, interface=1)
            else:
                w.write(ts, ethernet(macs[6:], macs[:6], etype, l3), interface=0)
    counts["two_interfaces.pcapng"] = w.count
    return counts


def generate(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    camera_site(outdir / "camera_site.pcap")
    segmentation(outdir / "segmentation.pcap")
    links = outdir / "links"
    links.mkdir(exist_ok=True)
    write_variants(mini_scene(), links)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "synthetic")
