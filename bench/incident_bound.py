#!/usr/bin/env python3
"""What the open-incident table costs at its bound: fill it to --incidents, the way a churning site does, and
measure Python's allocations (tracemalloc) and resident memory.

    python bench/incident_bound.py [--devices 10000] [--incidents 100000] [--trace]

Each device (kept alive, as the inventory would) opens the same mix the soak's churn opens: bare public addresses
it sends to over a flow of its own (egress_policy, `{"direction": "outbound"}`; fewer than the fan-out's 8 per
scope), a vendor cloud it looks up (vendor_cloud, no flow), and named services that three detectors judge (egress,
vendor cloud, jurisdiction: five phrases of evidence). Every incident's open line is built and dropped, as the
framework does for what the gate lets through. Flows are held by the incidents alone (as ended flows are), so the
65,536 followed flows are in the figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor.detect.alert import Alert  # noqa: E402
from sensor.detect.incidents import Incidents  # noqa: E402
from sensor.detect.services import KIND_DOMAIN, KIND_VENDOR, IncidentService, address_service  # noqa: E402
from sensor.enrich import Device, Observation  # noqa: E402
from sensor.flows import Flow  # noqa: E402

T0 = 1_800_000_000.0
BARE, VENDORS, NAMED = 6, 2, 2   # incidents a device opens of each kind


def _alert(ts: float, detector: str, dev: Device, dst: str, name: str | None, summary: str, **extra) -> Alert:
    mac = ":".join(f"{b:02x}" for b in dev.mac.to_bytes(6, "big"))   # each detection formats its own
    return Alert(ts, "camwatch", detector, "medium", dev.ip, mac, dev.vendor, dst, 443, "tcp", name, "public",
                 1.0, summary, 20, dict(extra))


def _open_for(inc: Incidents, dev: Device, d: int, ts: float) -> None:
    who = f"camera {dev.ip} ({dev.vendor})"
    for k in range(BARE):
        dst = f"198.{51 + k}.{d >> 8 & 255}.{d & 255}"
        flow = Flow(os.urandom(40), 20, 6, 40000 + k, 443, ts)
        flow.orig_pkts, flow.orig_bytes = 3, 282
        obs = Observation(ts, dev, 3, 282, True, dst, 443, "tcp", None, "public", 20, flow, True)
        inc.detect(_alert(ts, "egress_policy", dev, dst, None, f"{who} opened {dst} tcp/443 on the public Internet, "
                          "sending 3 packets (282 bytes) at first sight; no allow rule matches.",
                          evidence=f"opened {dst} tcp/443 on the Internet", direction="outbound"),
                   address_service(dst), dev, obs)
    for k in range(VENDORS):
        name = f"litedev.vendor{k}.example"
        svc = IncidentService(f"vendor-{k}", f"Vendor {k} cloud", KIND_VENDOR)
        inc.detect(_alert(ts, "vendor_cloud", dev, "10.20.0.1", name, f"{who} looked up {name}, a Vendor {k} cloud "
                          "name: the device is set up to reach its vendor's cloud.", evidence=f"looked up {name}",
                          service=svc.id), svc, dev, None)
    for k in range(NAMED):
        name = f"api{d}.service{k}.example.net"
        svc = IncidentService(f"service{k}.example.net", f"service{k}.example.net", KIND_DOMAIN)
        for detector, phrase in (("egress_policy", "opened"), ("vendor_cloud", "speaks to"),
                                 ("jurisdiction", "sent to"), ("egress_policy", "again opened"),
                                 ("vendor_cloud", "again speaks to")):
            inc.detect(_alert(ts, detector, dev, f"203.0.{k}.{d & 255}", name, f"{who} {phrase} {name} over tcp/443 "
                              "from a camera that should not reach the Internet at all.",
                              evidence=f"{phrase} {name} tcp/443", direction="outbound"), svc, dev, None)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--incidents", type=int, default=100_000, help="the table's bound (default 100,000)")
    ap.add_argument("--trace", action="store_true", help="also count Python's allocations (tracemalloc; slower)")
    args = ap.parse_args()
    per_device = BARE + VENDORS + NAMED
    devices = [Device(f"10.{20 + d // 65536}.{d >> 8 & 255}.{d & 255}", mac=0x402C761A0000 + d,
                      vendor="Hangzhou Hikvision Digital Technology Co.,Ltd.") for d in range(args.devices)]
    inc = Incidents("camwatch", 3600.0, args.incidents)
    gc.collect()
    rss0 = _rss_mb()
    if args.trace:
        tracemalloc.start()
    started = time.monotonic()
    for d in range(min(args.devices, -(-args.incidents // per_device))):
        _open_for(inc, devices[d], d, T0 + d * 0.01)
        for incident, event, ts in inc.take_changes():
            incident.written = True
            inc.line(incident, event, ts)
    gc.collect()
    rss = _rss_mb() - rss0
    traced = ""
    if args.trace:
        held = tracemalloc.get_traced_memory()[0]
        traced = f"{held / 2**20:.1f} MB of Python allocations ({held / max(1, len(inc)):,.0f} bytes an incident), "
    print(f"{len(inc):,} open incidents ({inc._followed:,} followed flows) of {args.devices:,} devices: {traced}"
          f"resident +{rss:.1f} MB{' (with tracemalloc)' if args.trace else ''}; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
