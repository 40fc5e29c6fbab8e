"""lateral_movement: a camera-side device opening connections to many other hosts of the camera VLAN or of other
private networks on admin and service ports within a short window: a worm or an intruder spreading from a
compromised camera (Mirai and its kin try telnet on every neighbour; others try web logins and vendor SDK ports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sensor.bounded import BoundedLRU
from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.services import KIND_SITE, IncidentService
from sensor.detect.text import covered_note, describe_device
from sensor.enrich import SCOPE_CAMERA, SCOPE_PRIVATE, Device, Observation

NEIGHBOURS = IncidentService("lateral-movement", "hosts of the camera VLAN and other private networks", KIND_SITE)

# The ports whose opening on a neighbour is worth counting, with the service an analyst knows them by.
ADMIN_PORTS: dict[int, str] = {
    21: "FTP", 22: "SSH", 23: "telnet", 80: "HTTP", 81: "HTTP", 443: "HTTPS", 445: "SMB", 554: "RTSP",
    2323: "telnet", 3389: "RDP", 5900: "VNC", 8000: "Hikvision SDK/HTTP", 8080: "HTTP", 8081: "HTTP",
    8443: "HTTPS", 8554: "RTSP", 8899: "ONVIF", 9527: "Xiongmai console", 34567: "Xiongmai DVRIP",
    37777: "Dahua SDK",
}
# A recorder opens RTSP, HTTP (ONVIF, ISAPI, CGI) and SDK ports on every camera it records, and a gateway may
# check on them; neither has a reason to open a remote shell on a row of them.
SHELL_PORTS = frozenset({22, 23, 2323, 9527})
# Behaviours (sensor.enrich.roles) that make a device a recorder whatever else it does: an NVR that also serves
# RTSP to a viewing client has camera evidence too, so Device.role alone would call it a camera. They are read when
# a device's sweep starts, so that a camera whose RTSP probes are answered mid-sweep stays a camera; Device.role
# (which puts camera evidence first) is read again when the threshold is reached.
RECORDER_EVIDENCE = frozenset({"rtsp_client", "video_receiver"})
INFRASTRUCTURE_ROLES = ("nvr", "gateway")
SAMPLE_TARGETS = 5


@dataclass(slots=True, eq=False, repr=False)
class _Sweep:
    """One device's recent connections: target -> (time of its latest, answered), oldest first."""

    infrastructure: bool                  # a recorder or gateway when the sweep began: only shell ports count
    targets: dict[str, tuple[float, bool]] = field(default_factory=dict)
    ports: dict[int, float] = field(default_factory=dict)   # port -> time of its latest connection


class LateralMovementDetector(Detector):
    """Counts distinct targets of new TCP connections a device opens on ADMIN_PORTS within `detect.lateral_window`
    seconds, answered or not; `detect.lateral_targets` of them is a sweep, one alert per episode per device."""

    name = "lateral_movement"
    interest = frozenset({SCOPE_CAMERA, SCOPE_PRIVATE})

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.threshold = context.config.detect.lateral_targets
        self.window = context.config.detect.lateral_window
        self._sweeps: BoundedLRU[str, _Sweep] = BoundedLRU(context.config.max_devices)

    def observe(self, obs: Observation) -> Alert | None:
        # Called for every second of every flow on the VLAN (the video to the recorder too): only a new flow the
        # device opened itself can be a connection attempt, and those tests cost nothing.
        port = obs.port
        if not obs.new_flow or not obs.initiated or obs.proto != "tcp" or port is None or port not in ADMIN_PORTS:
            return None
        sweep = self._current(obs.device, obs.ts)
        if sweep.infrastructure and port not in SHELL_PORTS:
            return None
        # answered within the flow's first second (SYN-ACK or RST): shown, never required
        answered = obs.flow is not None and obs.flow.resp_pkts > 0
        sweep.targets.pop(obs.peer, None)
        sweep.targets[obs.peer] = (obs.ts, answered)
        if len(sweep.targets) > self.threshold:   # the threshold is all an alert needs: the bound per device
            del sweep.targets[next(iter(sweep.targets))]
        sweep.ports.pop(port, None)
        sweep.ports[port] = obs.ts
        if len(sweep.targets) < self.threshold:
            return None
        if not sweep.infrastructure and obs.device.role in INFRASTRUCTURE_ROLES:
            # A recorder that polled its cameras before its first RTSP session was answered (a sensor's first
            # minutes): its RTSP, HTTP and SDK connections were its job after all; from now on shells only count.
            self._sweeps.put(obs.device.ip, _Sweep(True))
            return None
        if not self.new_episode((obs.device.id,), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        return self._alert(obs, sweep)

    def _current(self, dev: Device, now: float) -> _Sweep:
        """The device's sweep with what fell out of the window dropped; a new one when nothing is left of it."""
        sweep = self._sweeps.use(dev.ip)
        since = now - self.window
        if sweep is not None:
            for stale in [t for t, (ts, _) in sweep.targets.items() if ts < since]:
                del sweep.targets[stale]
            for stale_port in [p for p, ts in sweep.ports.items() if ts < since]:
                del sweep.ports[stale_port]
        if sweep is None or not sweep.targets:
            infrastructure = dev.role in INFRASTRUCTURE_ROLES or bool(dev.evidence & RECORDER_EVIDENCE)
            sweep = _Sweep(infrastructure)
            self._sweeps.put(dev.ip, sweep)
        return sweep

    def _alert(self, obs: Observation, sweep: _Sweep) -> Alert:
        dev = obs.device
        first = min(ts for ts, _ in sweep.targets.values())
        span = max(obs.ts - first, 0.0)
        sample = list(sweep.targets)[:SAMPLE_TARGETS]
        ports = sorted(sweep.ports)
        services = ", ".join(f"{ADMIN_PORTS[p]} tcp/{p}" for p in ports)
        answered = sum(1 for _, ok in sweep.targets.values() if ok)
        count = len(sweep.targets)
        more = f" and {count - len(sample)} more" if count > len(sample) else ""
        summary = (f"{describe_device(dev)} opened connections to {count} other hosts of the camera VLAN and private "
                   f"networks within {span:.0f} s on admin and service ports ({services}): {', '.join(sample)}"
                   f"{more} ({answered} answered): the way a compromised device probes and spreads to its "
                   f"neighbours.{covered_note(dev)}")
        evidence = f"connections to {count} hosts in {span:.0f} s on {', '.join(f'tcp/{p}' for p in ports)}"
        alert = self.alert(obs, "high", 0.9, summary, targets=count, answered=answered, ports=ports,
                           sample_targets=sample, window_s=round(span, 3), evidence=evidence)
        alert.service = NEIGHBOURS   # a sweep is one story, not one incident per host it reached
        return alert
