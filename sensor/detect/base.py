"""What a detector is: a class with a name, the peer scopes its observe() judges, and hooks for the events it
cares about. The framework (framework.py) calls only the hooks a detector overrides, owns the episodes, the alert
budget and the flood summaries, and builds every detector the same way, from one DetectorContext.

Modelled on nfstream's NFPlugin (hooks with empty defaults) and Zeek's notice framework (detectors say what they
saw; the framework decides what reaches the log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from sensor.config import Config
from sensor.detect.alert import Alert
from sensor.detect.episodes import Episodes
from sensor.detect.indicators import Indicators
from sensor.enrich import (
    EXTERNAL_SCOPES,
    DnsAnswer,
    DnsQuery,
    FileFetch,
    IdentityReport,
    Inventory,
    Observation,
    UpnpRequest,
    format_mac,
)
from sensor.enrich.geography import Geography
from sensor.state import KnownState

if TYPE_CHECKING:
    from sensor.model import AnomalyModel, WindowFeatures

# The hooks, in the order events reach them within a window of capture time.
HOOKS = ("dns_query", "dns_answer", "upnp", "fetch", "identity", "observe", "tick")


@dataclass(frozen=True, eq=False, repr=False)
class DetectorContext:
    """Everything a detector may be built from; every detector's constructor takes this one argument."""

    sensor_name: str
    episodes: Episodes
    config: Config = field(default_factory=Config)
    indicators: Indicators = field(default_factory=Indicators.load)
    known: KnownState | None = None          # first sightings of devices and destinations (persistent)
    inventory: Inventory | None = None
    model: AnomalyModel | None = None        # the learned model, when the run was given one
    windows: WindowFeatures | None = None    # per-device feature windows (training, or the model's own)
    geography: Geography = field(default_factory=Geography)   # destinations' country and owner (registry only)


class Detector:
    name: ClassVar[str] = ""
    # Peer scopes whose observations observe() can act on; the framework hands it no others, which spares most
    # detectors the camera VLAN's own traffic (above all the video to the recorder).
    interest: ClassVar[frozenset[str]] = EXTERNAL_SCOPES

    def __init__(self, context: DetectorContext):
        self.sensor_name = context.sensor_name
        self._episodes = context.episodes

    @classmethod
    def wanted(cls, context: DetectorContext) -> bool:
        """Whether this run should have the detector at all (one that needs a model, say, only with a model)."""
        return True

    # ---- hooks: each returns what it raises; the defaults raise nothing ----------------------------------
    def observe(self, obs: Observation) -> Alert | None:
        """A camera-side device's share of a flow update, for peers in `interest`."""
        return None

    def dns_query(self, query: DnsQuery) -> Alert | None:
        return None

    def dns_answer(self, answer: DnsAnswer) -> Alert | None:
        return None

    def upnp(self, request: UpnpRequest) -> Alert | None:
        return None

    def fetch(self, fetch: FileFetch) -> Alert | None:
        """A camera-side device fetching a file in cleartext (TFTP read request, HTTP GET of a file)."""
        return None

    def identity(self, report: IdentityReport) -> Alert | None:
        return None

    def tick(self, now: float, final: bool) -> list[Alert]:
        """Once per second of capture time (now: its last packet), and once more at the end (final)."""
        return []

    # ---- services -------------------------------------------------------------------------------------------
    def new_episode(self, key: tuple, ts: float, packets: int, nbytes: int) -> bool:
        """Record activity in this detector's story `key`; True when it starts a new episode, which deserves an
        alert (repeats within the episode only count)."""
        return self._episodes.observe((self.name, *key), ts, packets, nbytes)

    def alert(self, obs: Observation, severity: str, score: float, summary: str, **extra: object) -> Alert:
        dev = obs.device
        return Alert(obs.ts, self.sensor_name, self.name, severity, dev.ip, format_mac(dev.mac), dev.vendor,
                     obs.peer, obs.port, obs.proto, obs.name, obs.scope, score, summary, obs.vlan, extra)


def hooked(detector: Detector, hook: str) -> bool:
    """Whether the detector's class overrides the hook."""
    return getattr(type(detector), hook) is not getattr(Detector, hook)
