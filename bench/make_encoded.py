#!/usr/bin/env python3
"""A >= 1 M-packet VIDEO capture that camwatch's generator did not make: real H.264 from ffmpeg, sent by real
network stacks between network namespaces, captured by dumpcap.

    sudo python bench/make_encoded.py [PATH] [-n PACKETS] [--cameras N]
        (default: /tmp/camwatch-bench/encoded-1000000.pcap, 1,000,000 packets, 16 cameras)

Why: bench/make_capture.py's video sites are camwatch's own idea of a camera (1,400-byte frames, fixed packets per
frame, its own RTSP session), and bench/make_expanded.py's real cameras send almost no video. This one is video as
an encoder packetises it and as a kernel sends it, so its packet sizes (RTP's FU-A fragments of x264's frames, a
key frame every two seconds, the last fragment of each frame short), its timing (ffmpeg's real-time pacing, the
scheduler's jitter), its TCP (windows, delayed ACKs, segments coalesced or split by the stack) and its background
(ARP, IPv6 neighbour discovery and MLD from the kernels) come from tools that know nothing of camwatch.

What it builds (as root; every address is inside namespaces this script makes and removes, nothing leaves them):
* a switch namespace with a Linux bridge; an NVR namespace (10.20.0.2/24); one namespace per camera
  (10.20.0.11, .12, ...), each joined to the bridge by a veth pair whose camera end carries a MAC with a real
  camera maker's OUI (Hikvision, Dahua, Axis, Hanwha, Uniview in turn);
* two clips encoded once by ffmpeg/x264 from its test source with noise (main stream 1080p25 at 6 Mbit/s CBR,
  sub-stream 640x360 at 15 fps, 1 Mbit/s; 40 s each, --clip-seconds), looped without re-encoding (`-c copy`);
* every camera sends its main and its sub-stream to the NVR at real-time pace (`-re`): three in four as RTP over
  UDP (RTCP sender reports beside it; the NVR has a socket on every port, so no ICMP unreachables), one in four
  its main stream as RTSP with RTP interleaved over TCP (`-rtsp_transport tcp`, pushed to an ffmpeg on the NVR
  that listens: ANNOUNCE/SETUP/RECORD, then the stream, as a pulled camera's stream looks after PLAY);
* dumpcap on the NVR's interface writes the first --packets packets (classic pcap, microsecond timestamps) and
  the rest is stopped.
About 12,500 packets a second with 16 cameras: a million packets take ~80 s of capture (~90 s in all). Not
deterministic (real timing); its packet counts and sizes vary little from run to run.

Needs: root, ip (iproute2), ffmpeg (Debian `ffmpeg`: not a camwatch dependency, only this script's) and dumpcap.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PATH = Path("/tmp/camwatch-bench/encoded-1000000.pcap")
NVR = "10.20.0.2"
MAKER_OUIS = ("44:19:b6", "3c:ef:8c", "00:40:8c", "00:09:18", "48:ea:63")   # Hikvision, Dahua, Axis, Hanwha, Uniview
RTP_BASE = 20_000     # camera k's main stream to NVR port RTP_BASE + 4k, its sub-stream to + 2 (RTCP one above each)
RTSP_BASE = 8_554     # camera k's RTSP push (one in four cameras) to NVR port RTSP_BASE + k

SINK = r"""
import select, socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.setblocking(False)
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        try:
            while True:
                s.recv(65536)
        except BlockingIOError:
            pass
"""


# The live benchmark's command runner (a failure is one line naming the command) and namespace removal.
_spec = importlib.util.spec_from_file_location("live_capture", Path(__file__).resolve().parent / "live_capture.py")
live_capture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(live_capture)
run, BenchError = live_capture.sh, live_capture.BenchError


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def encode_clips(folder: Path, seconds: int) -> tuple[Path, Path]:
    main, sub = folder / "main.mp4", folder / "sub.mp4"
    common = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-x264-params", "nal-hrd=cbr",
            "-pix_fmt", "yuv420p"]
    run(*common, "-i", "testsrc2=size=1920x1080:rate=25,noise=alls=12:allf=t", "-t", str(seconds), *x264, "-g", "50",
        "-b:v", "6M", "-maxrate", "6M", "-bufsize", "3M", str(main))
    run(*common, "-i", "testsrc2=size=640x360:rate=15,noise=alls=12:allf=t", "-t", str(seconds), *x264, "-g", "30",
        "-b:v", "1M", "-maxrate", "1M", "-bufsize", "1M", str(sub))
    return main, sub


class Site:
    def __init__(self, cameras: int):
        self.tag = f"cwenc{os.getpid()}"
        self.link = f"ce{os.getpid() % 100_000}"   # interface names: at most 15 characters
        self.switch, self.nvr = f"{self.tag}-sw", f"{self.tag}-nvr"
        self.cameras = [f"{self.tag}-c{k}" for k in range(cameras)]
        self.procs: list[subprocess.Popen] = []

    def build(self) -> None:
        run("ip", "netns", "add", self.switch)
        run(*in_ns(self.switch, "ip", "link", "add", "br0", "type", "bridge"))
        run(*in_ns(self.switch, "ip", "link", "set", "br0", "up"))
        self._join(self.nvr, f"{NVR}/24", None, "nvr")
        for k, ns in enumerate(self.cameras):
            oui = MAKER_OUIS[k % len(MAKER_OUIS)]
            self._join(ns, f"10.20.0.{11 + k}/24", f"{oui}:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}",
                       f"c{k}")

    def _join(self, ns: str, address: str, mac: str | None, short: str) -> None:
        run("ip", "netns", "add", ns)
        inner, outer = f"{self.link}{short}", f"{self.link}{short}s"
        run("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", self.switch)
        run(*in_ns(ns, "ip", "link", "set", inner, "name", "eth0"))
        if mac:
            run(*in_ns(ns, "ip", "link", "set", "eth0", "address", mac))
        run(*in_ns(ns, "ip", "addr", "add", address, "dev", "eth0"))
        run(*in_ns(ns, "ip", "link", "set", "eth0", "up"))
        run(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        run(*in_ns(self.switch, "ip", "link", "set", outer, "master", "br0"))
        run(*in_ns(self.switch, "ip", "link", "set", outer, "up"))

    def start(self, *cmd: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def teardown(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        live_capture.remove_namespaces(self.nvr, *self.cameras, self.switch)


def make(path: Path, packets: int, cameras: int, clip_seconds: int = 40) -> None:
    for tool in ("ip", "ffmpeg", "dumpcap"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not on PATH")
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="camwatch-encoded-") as tmp:
        main_clip, sub_clip = encode_clips(Path(tmp), clip_seconds)
        site = Site(cameras)
        try:
            site.build()
            udp_ports = []
            for k in range(cameras):
                udp_ports += [RTP_BASE + 4 * k + i for i in range(4)]
                if k % 4 == 3:   # the NVR's RTSP listener for this camera's pushed main stream
                    site.start(*in_ns(site.nvr, "ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_flags",
                                      "listen", "-i", f"rtsp://0.0.0.0:{RTSP_BASE + k}/live", "-c", "copy", "-f",
                                      "null", "-"))
            site.start(*in_ns(site.nvr, sys.executable, "-c", SINK, *map(str, udp_ports)))
            partial = Path(tmp) / "capture.pcap"
            capture = site.start(*in_ns(site.nvr, "dumpcap", "-q", "-i", "eth0", "-P", "-c", str(packets), "-w",
                                        str(partial)))
            time.sleep(1.0)   # the listeners and dumpcap ready before the first packet
            senders = []
            for k, ns in enumerate(site.cameras):
                send = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1"]
                if k % 4 == 3:
                    senders.append(site.start(*in_ns(ns, *send, "-i", str(main_clip), "-c", "copy", "-f", "rtsp",
                                                     "-rtsp_transport", "tcp", f"rtsp://{NVR}:{RTSP_BASE + k}/live")))
                else:
                    senders.append(site.start(*in_ns(ns, *send, "-i", str(main_clip), "-c", "copy", "-f", "rtp",
                                                     f"rtp://{NVR}:{RTP_BASE + 4 * k}?pkt_size=1400")))
                senders.append(site.start(*in_ns(ns, *send, "-i", str(sub_clip), "-c", "copy", "-f", "rtp",
                                                 f"rtp://{NVR}:{RTP_BASE + 4 * k + 2}?pkt_size=1400")))
            started = time.monotonic()
            while capture.poll() is None:
                # a sender that stopped (an RTSP listener not up in time) would leave a capture of fewer cameras
                stopped = [proc.returncode for proc in senders if proc.poll() is not None]
                if stopped:
                    raise BenchError(f"{len(stopped)} of the cameras' ffmpeg stopped ({stopped[0]})")
                if time.monotonic() - started > 3600:
                    raise BenchError("dumpcap did not reach the packet count in an hour")
                time.sleep(0.2)
            if capture.returncode != 0:
                raise BenchError(f"dumpcap exited {capture.returncode}")
        finally:
            site.teardown()
        shutil.move(str(partial), path)
    print(f"{path}: {packets} packets, {path.stat().st_size} bytes, {cameras} cameras")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    ap.add_argument("-n", "--packets", type=int, default=1_000_000)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--clip-seconds", type=int, default=40,
                    help="length of the encoded clips each camera loops (the tests use a short one)")
    args = ap.parse_args(argv)
    if not 1 <= args.cameras <= 200:
        ap.error("--cameras is 1 to 200")
    if args.clip_seconds < 2:
        ap.error("--clip-seconds is at least 2 (a main-stream GOP)")
    if args.packets < 1:
        ap.error("--packets is at least 1")

    def work() -> int:
        make(args.path, args.packets, args.cameras, args.clip_seconds)
        return 0

    return live_capture.run_script("make_encoded", work)


if __name__ == "__main__":
    sys.exit(main())
