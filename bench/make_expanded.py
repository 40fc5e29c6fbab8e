#!/usr/bin/env python3
"""A >= 1 M-packet capture built from the REAL camera captures in pcaps/real by Wireshark and tcpreplay tools alone.

    python bench/make_expanded.py [PATH] [-n PACKETS] [--layout sequential|concurrent]
        (default: /tmp/camwatch-bench/expanded-1000000.pcap, at least 1,000,000 packets, sequential)

Why: every other replay capture in bench/ comes from camwatch's own generator (bench/make_capture.py), whose
idea of camera traffic is the same as the sensor's. This one is made only of packets that real cameras sent
(attribution in pcaps/README.md) and only by third-party tools, so nothing in it was shaped by camwatch:

1. One "site" is the real captures laid over each other: the Yi camera (neu-intl-iot), the Xiaobai Y2 camera's
   setup, idle (app on the LAN and remote), two-way audio and removal (nku-lifecycle), and the D-Link DCS-935L,
   DCS-930L and Edimax setups (iot-sentinel). Each camera's captures are shifted (`editcap -t`) to start at the
   same instant, the Xiaobai's five one after another (its lifecycle, in order), and merged by timestamp (`mergecap`): 9
   captures of 5 cameras (and the phones and routers they talk to), 7,913 packets, 3,645 s.
2. Site k is a copy of it with every private address moved into its own subnet, 10.k.0.0/16 (`tcprewrite --pnat`,
   host bits kept: 192.168.1.165 becomes 10.k.1.165), and every MAC address replaced by a seeded random one that
   keeps its OUI (`--enet-mac-seed=k+1 --enet-mac-seed-keep-bytes=3`: the maker stays recognisable, multicast and
   broadcast stay as they are). Public addresses (the vendors' clouds, 8.8.8.8) are left alone: cameras of one
   make at many sites talk to the same servers.
3. Copies are shifted in time (`editcap -t`) and joined (`mergecap`):
   * sequential (default): copy k starts when copy k-1 has ended (plus 60 s) and they are concatenated
     (`mergecap -a`): 127 sites for 1 M packets, one after another, 5.4 days of capture time;
   * concurrent: copy k starts k * 7 s after the first and they are merged by timestamp: 127 sites (635
     cameras) seen at once by one sensor, 75 minutes of capture time.
   As many copies as it takes to reach --packets (whole sites: the count is a multiple of 7,913).

What it resembles: the control plane of consumer cameras — cloud heartbeats and P2P (PPPP/CS2) keep-alives, DNS,
NTP, DHCP, ARP, mDNS/SSDP announcements, TLS sessions to vendor clouds, a local live view over UDP, a two-way audio
session — at the rates real devices send it (mostly well under 10 packets/s per camera), so it is many small
packets (292 bytes on average, headers included), many short and idle flows, and many distinct seconds with few
packets each. What it does not resemble: a site's bulk video (RTSP/RTP streams of 2-8 Mbit/s per camera to an NVR,
1,400-byte frames: bench/make_capture.py's sites), 802.1Q tags (these captures were taken untagged), or a site's
own variety (every site is the same five cameras doing the same things; only addresses and MACs differ). tcprewrite
moves the headers' addresses only: the original private addresses stay where the packets carry them as data (the
header an ICMP error quotes, DHCP fields, SSDP LOCATION URLs, mDNS answers).
Left out: ndpi/rtsp.pcap (Linux cooked capture: tcprewrite 4.4.3's conversion to Ethernet writes a corrupt
header, and it is a PC talking to a VLC server, not a camera), ndpi/rtp.pcapng (snippets, not a device's
traffic), ndpi/nest_log_sink.pcap (a Nest device of unstated model; 112 minutes would stretch every site).

Deterministic: the same command gives the same bytes (no clock, seeded MACs); needs editcap, mergecap, capinfos
(Wireshark) and tcprewrite (tcpreplay) on PATH. The output is a classic pcap, microsecond timestamps; the
intermediate files are removed.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL = HERE.parent / "pcaps" / "real"
DEFAULT_DIR = Path("/tmp/camwatch-bench")
# One track per device; a track's captures play one after another (the Xiaobai's are one camera's lifecycle, in
# its order: the same address and MAC throughout), the tracks side by side.
TRACKS = [
    ["neu-intl-iot/yi_camera_sample.pcap"],
    ["nku-lifecycle/xiaobai_Y2camera_setup.pcap", "nku-lifecycle/xiaobai_Y2camera_idle_local.pcap",
     "nku-lifecycle/xiaobai_Y2camera_speak_local.pcap", "nku-lifecycle/xiaobai_Y2camera_idle_remote.pcap",
     "nku-lifecycle/xiaobai_Y2camera_delete.pcap"],
    ["iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap"],
    ["iot-sentinel/D-LinkDayCam/Setup-A-1-STA.pcap"],
    ["iot-sentinel/EdimaxCam1/Setup-A-1-STA.pcap"],
]
PAUSE = 1   # seconds between the end of one capture of a track and the start of the next
# Every private network the sources use (checked with tshark over ip.src/ip.dst/ARP), each to its own place in the
# site's 10.k.0.0/16. tcprewrite maps host bits, so a /16 needs a /16 and a /24 a /24.
PNAT = [("192.168.0.0/16", "10.{k}.0.0/16"), ("10.10.10.0/24", "10.{k}.210.0/24")]
T0 = 1_700_000_000   # every site template starts here (2023-11-14), before the shifts
GAP = 60             # sequential: seconds of silence between one site's end and the next one's start
STAGGER = 7          # concurrent: seconds between the starts of consecutive sites
MAX_SITES = 256      # one 10.k.0.0/16 per site


def tool(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout


def times(path: Path) -> tuple[float, float, int]:
    """First and last timestamp and packet count, from capinfos' table output (-T: one row, tab-separated)."""
    out = tool("capinfos", "-T", "-r", "-a", "-e", "-c", "-S", str(path)).strip().split("\t")
    return float(out[2]), float(out[3]), int(out[1])


def site_template(work: Path) -> tuple[Path, float, int]:
    """The real captures, each track starting at T0, merged by timestamp; returns its path, span and count."""
    parts = []
    for t, track in enumerate(TRACKS):
        start = float(T0)
        for i, rel in enumerate(track):
            src = REAL / rel
            first, last, _n = times(src)
            # editcap -t takes a decimal offset; whole microseconds keep the arithmetic exact.
            out = work / f"track{t}-{i}.pcap"
            tool("editcap", "-F", "pcap", "-t", f"{start - first:.6f}", str(src), str(out))
            parts.append(str(out))
            start += last - first + PAUSE
    template = work / "site.pcap"
    tool("mergecap", "-F", "pcap", "-w", str(template), *parts)
    first, last, n = times(template)
    return template, last - first, n


def site_copy(template: Path, work: Path, k: int, shift: float) -> Path:
    moved = work / f"site{k}-moved.pcap"
    pnat = ",".join(f"{a}:{b.format(k=k)}" for a, b in PNAT)
    tool("tcprewrite", f"--pnat={pnat}", f"--enet-mac-seed={k + 1}", "--enet-mac-seed-keep-bytes=3",
         "-i", str(template), "-o", str(moved))
    out = work / f"site{k}.pcap"
    tool("editcap", "-F", "pcap", "-t", f"{shift:.6f}", str(moved), str(out))
    moved.unlink()
    return out


def build(path: Path, packets: int, layout: str) -> tuple[int, int, int]:
    """Writes the capture; returns sites, packets and bytes."""
    for program in ("editcap", "mergecap", "capinfos", "tcprewrite"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} not found (apt-get install wireshark-common tcpreplay)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix="expanded-") as tmp:
        work = Path(tmp)
        template, span, per_site = site_template(work)
        sites = -(-packets // per_site)
        if sites > MAX_SITES:
            raise SystemExit(f"{packets:,} packets need {sites} sites; at most {MAX_SITES} (one 10.k/16 each)")
        period = (span + GAP) if layout == "sequential" else STAGGER
        copies = [str(site_copy(template, work, k, k * period)) for k in range(sites)]
        part = path.with_name(path.name + ".part")
        join = ["-a"] if layout == "sequential" else []   # concatenated in order, or merged by timestamp
        tool("mergecap", "-F", "pcap", *join, "-w", str(part), *copies)
        part.replace(path)   # a reader never sees a half-written capture under the final name
    _first, _last, n = times(path)
    return sites, n, path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path)
    ap.add_argument("-n", "--packets", type=int, default=1_000_000, help="at least this many (whole sites)")
    ap.add_argument("--layout", choices=("sequential", "concurrent"), default="sequential")
    ap.add_argument("--sha256", action="store_true", help="also print the output's SHA-256 (determinism check)")
    args = ap.parse_args(argv)
    if args.packets <= 0:
        ap.error("--packets must be positive")
    suffix = "" if args.layout == "sequential" else "-concurrent"
    path = args.path or DEFAULT_DIR / f"expanded-{args.packets}{suffix}.pcap"
    sites, n, size = build(path, args.packets, args.layout)
    print(f"{path}: {n:,} packets, {size / 2**20:.0f} MiB, {sites} sites ({args.layout})")
    if args.sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(8 << 20):
                digest.update(chunk)
        print(f"sha256 {digest.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
