#!/usr/bin/env python3
"""Deterministic camera-VLAN capture for the replay throughput benchmark.

    python bench/make_capture.py [PATH] [-n PACKETS] [--site nvr20|vlan100]
                                           (default: /tmp/camwatch-bench/replay.pcap, 200000, nvr20)

Classic pcap, Ethernet with an 802.1Q tag (camera VLAN 20), microsecond timestamps. Two sites (--site):
  * nvr20: 20 cameras (10.20.0.11-30), 8-14 packets per video frame (2.2-3.9 Mbps each, about 60 Mbps in all);
  * vlan100: the issue's camera VLAN, 100 cameras (10.20.0.11-110) at 4-8 Mbps each, 15-28 packets per video
    frame (about 0.6 Gbps);
and in both:
  * RTP/UDP video from every camera to an NVR (10.20.0.2), 1400-byte frames, 25 fps, RTCP sender/receiver
    reports every 5 s;
  * every fifth camera (indexes 3, 8, 13, ...) delivers its video interleaved in the RTSP TCP session instead
    (RTP over RTSP), with the NVR acknowledging every second segment;
  * one RTSP control session (TCP 554) per camera: handshake, OPTIONS/DESCRIBE/SETUP/PLAY, GET_PARAMETER
    keep-alives;
  * DNS (A queries for the NTP and NVR names) and NTP from every camera to the site server 10.20.0.1, ARP.

Output is a pure function of the site and the packet count (no clock, no unseeded randomness), and the first K
packets of an N-packet capture are the K-packet capture: sources are endless time-ordered streams merged by
timestamp and cut at N. Bulk frames are prebuilt templates whose changing fields (RTP sequence/timestamp, TCP
sequence/ack) are patched per packet with an incremental checksum update, so 200,000 packets take about a second
to write.
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import itertools
import math
import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
DEFAULT_PATH = Path("/tmp/camwatch-bench/replay.pcap")
DEFAULT_PACKETS = 200_000


def _load_packets():
    # By path, not by package: pcaps/ is a fixture folder, not an importable package, and packets.py must stay
    # standard-library only so fixtures never depend on the code under test.
    spec = importlib.util.spec_from_file_location("camwatch_fixture_packets", HERE.parent / "pcaps" / "packets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pk = _load_packets()

T0 = 1_700_000_000.0
SEED = 20_240_601
VLAN = ((0x8100, 20),)
ETH_IPV4, ETH_ARP = 0x0800, 0x0806
FRAME_BYTES = 1400
FPS = 25
RTP_CLOCK = 90_000


class Site(NamedTuple):
    cameras: int
    packets_per_frame: tuple[int, int]   # inclusive range, drawn per camera
    fps: int = FPS


# substream: a camera's low-rate second stream (1 packet per frame, 5 fps, ~12 packets/s with its control
# traffic): the site where per-device work weighs most against per-packet work.
SITES = {"nvr20": Site(20, (8, 14)), "vlan100": Site(100, (15, 28)), "substream": Site(20, (1, 1), 5)}
DEFAULT_SITE = "nvr20"


def tcp_video(i: int) -> bool:
    """Whether camera i's video rides its RTSP TCP connection (RTP over RTSP) instead of UDP."""
    return i % 5 == 3
KEEPALIVE_S = 10.0
DNS_EVERY_S = 4.0
NTP_EVERY_S = 8.0
RTCP_EVERY_S = 5.0
ARP_EVERY_S = 3.0

NVR = ("10.20.0.2", pk.mac("00:1b:21:0a:0b:02"))
SERVER = ("10.20.0.1", pk.mac("00:1b:21:0a:0b:01"))
BROADCAST = pk.mac("ff:ff:ff:ff:ff:ff")
# Real OUIs (Hikvision, Dahua, Axis, Uniview) so the sensor's vendor lookup does its normal work.
OUIS = ("44:19:b6", "3c:ef:8c", "ac:cc:8e", "48:ea:63")


def camera(i: int) -> tuple[str, bytes]:
    # Past 245 cameras the addresses go on into 10.20.1.0 and up (--cameras); below that they are as they were.
    return f"10.20.{(11 + i) >> 8}.{(11 + i) & 0xFF}", pk.mac(f"{OUIS[i % len(OUIS)]}:00:{i >> 8:02x}:{i & 0xFF:02x}")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


class Template:
    """A prebuilt frame whose 16/32-bit fields at fixed offsets change per packet.

    The transport checksum is patched incrementally: the ones'-complement sum of the frame with every variable
    field zeroed is kept, and each packet adds only its variable words (all variable fields sit on even offsets
    of the transport header, so they are whole checksum words).
    """

    def __init__(self, src: tuple[str, bytes], dst: tuple[str, bytes], proto: int, l4: bytes,
                 fields: tuple[tuple[int, int], ...]):
        # `l4` is built with every variable field zero; `fields` are (offset in l4, size 2 or 4).
        ip_hdr = pk.ipv4(src[0], dst[0], proto, l4)
        self.frame = pk.ethernet(dst[1], src[1], ETH_IPV4, ip_hdr, VLAN)
        l4_start = 14 + 4 * len(VLAN) + 20
        self.csum_at = l4_start + (6 if proto == 17 else 16)
        csum = struct.unpack_from("!H", self.frame, self.csum_at)[0]
        self.base = ~csum & 0xFFFF
        self.udp = proto == 17
        self.fields = tuple((l4_start + off, size) for off, size in fields)
        self.fmt = "!" + "".join("H" if size == 2 else "I" for _, size in fields)
        assert all(off % 2 == 0 for off, _ in fields)

    def make(self, *values: int) -> bytes:
        buf = bytearray(self.frame)
        total = self.base
        for (at, size), value in zip(self.fields, values, strict=True):
            if size == 2:
                struct.pack_into("!H", buf, at, value)
                total += value
            else:
                struct.pack_into("!I", buf, at, value)
                total += (value >> 16) + (value & 0xFFFF)
        csum = ~_fold(total) & 0xFFFF
        if self.udp and csum == 0:
            csum = 0xFFFF   # 0 means "no checksum" in UDP over IPv4
        struct.pack_into("!H", buf, self.csum_at, csum)
        return bytes(buf)


def rtp_header(marker: bool, seq: int, ts: int, ssrc: int, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc)


# Stream generators yield (timestamp, frame); each is endless and strictly time-ordered.
Stream = Iterator[tuple[float, bytes]]


def video_udp(i: int, rng: random.Random, site: Site) -> Stream:
    cam = camera(i)
    sport, dport = 50_000 + 2 * i, 30_000 + 2 * i
    ssrc = rng.getrandbits(32)
    per_frame = rng.randrange(site.packets_per_frame[0], site.packets_per_frame[1] + 1)
    start = T0 + 1.0 + rng.random() / site.fps
    overhead = 14 + 4 + 20 + 8
    body = bytes(rng.getrandbits(8) for _ in range(FRAME_BYTES - overhead - 12))
    templates = []
    for marker in (False, True):
        header = bytearray(rtp_header(marker, 0, 0, ssrc))
        l4 = pk.udp(cam[0], NVR[0], sport, dport, bytes(header) + body)
        templates.append(Template(cam, NVR, 17, l4, ((8 + 2, 2), (8 + 4, 4))))
    seq0, ts0 = rng.getrandbits(16), rng.getrandbits(32)
    for n in itertools.count():
        frame_no, j = divmod(n, per_frame)
        t = start + frame_no / site.fps + j * 0.0002
        marker = j == per_frame - 1
        yield t, templates[marker].make((seq0 + n) & 0xFFFF, (ts0 + frame_no * RTP_CLOCK // site.fps) & 0xFFFFFFFF)


def rtcp(i: int, rng: random.Random) -> Stream:
    cam = camera(i)
    sport, dport = 50_001 + 2 * i, 30_001 + 2 * i
    ssrc = rng.getrandbits(32)
    start = T0 + 1.5 + rng.random()
    for n in itertools.count():
        t = start + n * RTCP_EVERY_S
        m = 0xFFFFFFFF
        sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, (int(t) + 2_208_988_800) & m, 0, (n * 450_000) & m,
                         (n * 1800) & m, (n * 2_000_000) & m)
        yield t, _ip_frame(cam, NVR, 17, pk.udp(cam[0], NVR[0], sport, dport, sr))
        rr = struct.pack("!BBHII", 0x81, 201, 7, 0x4E565201, ssrc) + b"\0" * 20
        yield t + 0.003, _ip_frame(NVR, cam, 17, pk.udp(NVR[0], cam[0], dport, sport, rr))


def _ip_frame(src, dst, proto: int, l4: bytes) -> bytes:
    return pk.ethernet(dst[1], src[1], ETH_IPV4, pk.ipv4(src[0], dst[0], proto, l4), VLAN)


def rtsp_session(i: int, rng: random.Random, site: Site) -> Stream:
    """NVR (client) <-> camera (server, TCP 554); for tcp_video cameras, video follows PLAY."""
    cam = camera(i)
    cport = 40_000 + i
    url = f"rtsp://{cam[0]}/Streaming/Channels/101"
    c_seq, s_seq = rng.getrandbits(32), rng.getrandbits(32)
    t = T0 + 0.05 + i * 0.01

    def seg(src, dst, sport, dport, seq, ack, flags, payload=b""):
        return _ip_frame(src, dst, 6, pk.tcp(src[0], dst[0], sport, dport, seq, ack, flags, payload))

    yield t, seg(NVR, cam, cport, 554, c_seq, 0, "S")
    yield t + 0.0004, seg(cam, NVR, 554, cport, s_seq, c_seq + 1, "SA")
    yield t + 0.0008, seg(NVR, cam, cport, 554, c_seq + 1, s_seq + 1, "A")
    c_seq += 1
    s_seq += 1
    t += 0.001
    sdp = (b"v=0\r\no=- 0 0 IN IP4 " + cam[0].encode() + b"\r\ns=Media Presentation\r\nm=video 0 RTP/AVP 96\r\n"
           b"a=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n")
    transport = (b"RTP/AVP/TCP;unicast;interleaved=0-1" if tcp_video(i)
                 else f"RTP/AVP;unicast;client_port={30_000 + 2 * i}-{30_001 + 2 * i}".encode())
    exchanges = [
        (f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(),
         b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n\r\n"),
        (f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n".encode(),
         b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: "
         + str(len(sdp)).encode() + b"\r\n\r\n" + sdp),
        (f"SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: ".encode() + transport + b"\r\n\r\n",
         b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 7A3F19C2;timeout=60\r\nTransport: " + transport + b"\r\n\r\n"),
        (f"PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: 7A3F19C2\r\n\r\n".encode(),
         b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 7A3F19C2\r\nRange: npt=0.000-\r\n\r\n"),
    ]
    for request, response in exchanges:
        yield t, seg(NVR, cam, cport, 554, c_seq, s_seq, "PA", request)
        c_seq += len(request)
        yield t + 0.002, seg(cam, NVR, 554, cport, s_seq, c_seq, "PA", response)
        s_seq += len(response)
        yield t + 0.0025, seg(NVR, cam, cport, 554, c_seq, s_seq, "A")
        t += 0.003

    if not tcp_video(i):
        cseq = 5
        while True:
            t += KEEPALIVE_S
            request = f"GET_PARAMETER {url} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: 7A3F19C2\r\n\r\n".encode()
            response = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 7A3F19C2\r\n\r\n".encode()
            yield t, seg(NVR, cam, cport, 554, c_seq, s_seq, "PA", request)
            c_seq += len(request)
            yield t + 0.002, seg(cam, NVR, 554, cport, s_seq, c_seq, "PA", response)
            s_seq += len(response)
            yield t + 0.0025, seg(NVR, cam, cport, 554, c_seq, s_seq, "A")
            cseq += 1

    # RTP interleaved on the RTSP connection: '$', channel 0, length, then the RTP packet.
    ssrc = rng.getrandbits(32)
    per_frame = rng.randrange(site.packets_per_frame[0], site.packets_per_frame[1] + 1)
    overhead = 14 + 4 + 20 + 20
    rtp_len = FRAME_BYTES - overhead - 4
    body = bytes(rng.getrandbits(8) for _ in range(rtp_len - 12))
    data_templates = []
    for marker in (False, True):
        payload = struct.pack("!BBH", 0x24, 0, rtp_len) + rtp_header(marker, 0, 0, ssrc) + body
        l4 = pk.tcp(cam[0], NVR[0], 554, cport, 0, 0, "PA", payload)
        # TCP seq (4), TCP ack (8), RTP seq (20 + 4 + 2), RTP timestamp (20 + 4 + 4)
        data_templates.append(Template(cam, NVR, 6, l4, ((4, 4), (8, 4), (26, 2), (28, 4))))
    ack_template = Template(NVR, cam, 6, pk.tcp(NVR[0], cam[0], cport, 554, 0, 0, "A"), ((4, 4), (8, 4)))
    seg_len = 4 + rtp_len
    seq0, ts0 = rng.getrandbits(16), rng.getrandbits(32)
    start = t + 0.01
    for n in itertools.count():
        frame_no, j = divmod(n, per_frame)
        pt = start + frame_no / site.fps + j * 0.0002
        marker = j == per_frame - 1
        yield pt, data_templates[marker].make(s_seq, c_seq, (seq0 + n) & 0xFFFF,
                                              (ts0 + frame_no * RTP_CLOCK // site.fps) & 0xFFFFFFFF)
        s_seq = (s_seq + seg_len) & 0xFFFFFFFF
        if n % 2:
            yield pt + 0.00005, ack_template.make(c_seq, s_seq)


def dns(i: int, rng: random.Random) -> Stream:
    cam = camera(i)
    names = ("pool.ntp.org", "nvr.site.local")
    start = T0 + 0.2 + rng.random() * DNS_EVERY_S
    for n in itertools.count():
        t = start + n * DNS_EVERY_S
        name = names[n % 2]
        answer = "162.159.200.1" if n % 2 == 0 else NVR[0]
        ident, sport = rng.randrange(1, 65535), rng.randrange(20_000, 60_000)
        yield t, _ip_frame(cam, SERVER, 17, pk.udp(cam[0], SERVER[0], sport, 53, pk.dns_query(ident, name)))
        response = pk.dns_response(ident, name, [(name, 1, 300, answer)])
        yield t + 0.0015, _ip_frame(SERVER, cam, 17, pk.udp(SERVER[0], cam[0], 53, sport, response))


def ntp(i: int, rng: random.Random) -> Stream:
    cam = camera(i)
    start = T0 + 0.5 + rng.random() * NTP_EVERY_S
    request = bytes([0x23]) + b"\0" * 47
    reply = bytes([0x24, 2, 6, 0xE9]) + b"\0" * 44
    ask = _ip_frame(cam, SERVER, 17, pk.udp(cam[0], SERVER[0], 123, 123, request))
    answer = _ip_frame(SERVER, cam, 17, pk.udp(SERVER[0], cam[0], 123, 123, reply))
    for n in itertools.count():
        t = start + n * NTP_EVERY_S
        yield t, ask
        yield t + 0.001, answer


def arp(rng: random.Random, site: Site) -> Stream:
    import ipaddress
    for n in itertools.count():
        target = camera(n % site.cameras)[0]
        body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, NVR[1], ipaddress.IPv4Address(NVR[0]).packed,
                           b"\0" * 6, ipaddress.IPv4Address(target).packed)
        yield T0 + 0.3 + n * ARP_EVERY_S, pk.ethernet(BROADCAST, NVR[1], ETH_ARP, body, VLAN)


def streams(site: Site) -> list[Stream]:
    rng = random.Random(SEED)
    out: list[Stream] = []
    for i in range(site.cameras):
        if not tcp_video(i):
            out.append(video_udp(i, rng, site))
            out.append(rtcp(i, rng))
        out.append(rtsp_session(i, rng, site))
        out.append(dns(i, rng))
        out.append(ntp(i, rng))
    out.append(arp(rng, site))
    return out


def packets(count: int, site: str = DEFAULT_SITE, cameras: int | None = None,
            seconds: float | None = None) -> Iterator[tuple[float, bytes]]:
    """The first `count` packets of the merged capture, in time order (and only those of its first `seconds`);
    `cameras` replaces the site's camera count."""
    chosen = SITES[site] if cameras is None else SITES[site]._replace(cameras=cameras)
    # The stream index breaks timestamp ties, so the order never depends on comparing frame bytes.
    tagged = [((t, k, frame) for t, frame in s) for k, s in enumerate(streams(chosen))]
    end = math.inf if seconds is None else T0 + seconds
    for t, _k, frame in itertools.islice(heapq.merge(*tagged), count):
        if t >= end:
            return
        yield t, frame


def write(path: Path, count: int, site: str = DEFAULT_SITE, cameras: int | None = None,
          seconds: float | None = None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with pk.PcapWriter(tmp) as writer:
        for t, frame in packets(count, site, cameras, seconds):
            writer.write(t, frame)
        written = writer.count
    tmp.replace(path)   # a reader never sees a half-written capture under the final name
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    ap.add_argument("-n", "--packets", type=int, default=DEFAULT_PACKETS)
    ap.add_argument("--site", choices=sorted(SITES), default=DEFAULT_SITE)
    ap.add_argument("--cameras", type=int, help="instead of the site's camera count (1 to 60,000)")
    ap.add_argument("--seconds", type=float, help="stop after this much capture time, whatever the packet count")
    args = ap.parse_args(argv)
    if args.packets <= 0:
        ap.error("--packets must be positive")
    if args.cameras is not None and not 1 <= args.cameras <= 60_000:
        ap.error("--cameras must be between 1 and 60,000")
    t = time.perf_counter()
    n = write(args.path, args.packets, args.site, args.cameras, args.seconds)
    print(f"{args.path}: {n} packets, {args.path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - t:.2f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
