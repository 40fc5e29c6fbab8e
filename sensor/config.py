"""camwatch.toml: its sections, their keys and defaults (declared once, with sensor.schema), and strict loading.

Every key is checked; an unknown key or a wrong type is a ConfigError naming the key, because a typo in a
security allowlist must never be silently ignored. Beyond types, whatever a typo could turn into a silent hole is
refused too: addresses that are not valid addresses, CIDRs with host bits set, allow rules covering public space
wholesale (unless the rule says `allow_all = true`), NaN/infinite/out-of-range numbers, password hashes that are
malformed or would cost absurd work, and nesting deep enough to exhaust the parser's stack.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from sensor.countries import COUNTRY_CODES
from sensor.errors import ConfigError
from sensor.schema import (
    COUNT,
    DAY,
    FLAG,
    FRACTION,
    SECONDS,
    Choice,
    Frozen,
    Invalid,
    Kind,
    NamedTables,
    Setting,
    Tables,
    Text,
    Values,
    key_text,
    load,
    quoted,
    record,
    section,
    setting,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Zero-config camera side: RFC 1918, RFC 6598 shared space and IPv6 ULA. Python's `is_private` is not used
# because it also covers documentation ranges, which in a capture stand for the Internet.
DEFAULT_CAMERA_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")

PROTOCOLS = ("tcp", "udp", "icmp")

MAX_TIMEOUT = 30 * DAY            # flow, episode timeouts: longer is a typo (an extra digit), not a policy
MAX_LEARNING_PERIOD = 365 * DAY
# lateral_movement: its threshold is also how many targets it keeps per device, so it is bounded; a sweep is a
# matter of seconds or minutes, and a window of hours would count a recorder-like device's routine reconnections.
MAX_LATERAL_TARGETS = 64
MAX_LATERAL_WINDOW = 3600.0
# Upper bounds that still fit a sensor's memory: ~520 B per flow (docs/benchmarks.md) makes 10M flows ~5 GiB.
MAX_FLOWS = 10_000_000
MAX_DEVICES = 1_000_000
MAX_NAMES = 10_000_000
MAX_CAPTURE_BUFFER_MIB = 65536    # 64 GiB of kernel ring: beyond any mirror port's need
# Detector thresholds: past these a value is a typo (an extra digit), not a policy.
MAX_UPLOAD_BYTES = 1_000_000_000   # a burst of a gigabyte is no longer a clip
MAX_RATE = 10_000_000_000          # bit/s: 10 Gbit/s, beyond any camera's link
MAX_SHORT_WINDOW = 60              # s, burst and stream windows: one per-second bucket each per (device, peer)
MAX_TRICKLE_WINDOW = 3600          # s; a trickle's window is kept in 12 slots whatever its length
MAX_CONFIG_BYTES = 1 << 20        # a camwatch.toml is a few KiB; a pcap or a log passed by mistake is not

# PBKDF2 cost accepted in [metrics] basic_auth. Below the floor a stolen config is cheap to brute-force; above
# the ceiling each scrape (or each attacker's guess) would pin a core for seconds.
PBKDF2_MIN_ITERATIONS = 10_000
PBKDF2_MAX_ITERATIONS = 10_000_000
PBKDF2_SALT_BYTES = (16, 64)
PBKDF2_DIGEST_BYTES = 32          # SHA-256

# A network wider than this (more than one IPv4 /8, or than a /16 of IPv6 - wider than any single organisation's
# allocation) covers public space wholesale: an allow rule needs `allow_all = true`, a camera network is refused.
BROAD_PREFIX = {4: 8, 6: 16}
_WIDE_BUT_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("224.0.0.0/4", "fc00::/7", "fe80::/10", "ff00::/8"))


def capture_ring_mib(memory_bytes: int) -> int:
    """The default kernel capture ring: a sixteenth of the machine's memory, between 64 MiB and 1 GiB.

    1 GiB rode out a minute at ~3.7 Gbit/s without loss where 256 MiB sometimes did not (docs/benchmarks.md), but
    the ring is kernel memory held for the whole capture, which a small box cannot spare."""
    return max(64, min(1024, memory_bytes // 16 >> 20))


def _machine_memory(cgroups: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int:
    """Physical memory, or the process's cgroup (v2) limit when lower: a container, or a systemd unit with
    MemoryMax, would otherwise be sized by the whole host."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 4 << 30   # unknown: size as for a small sensor
    try:
        own = next(line[3:] for line in membership.read_text().splitlines() if line.startswith("0::"))
        limit = (cgroups / own.lstrip("/") / "memory.max").read_text().strip()
    except (OSError, StopIteration):
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


def _default_capture_ring() -> int:
    return capture_ring_mib(_machine_memory())


# ---- camwatch.toml, section by section -----------------------------------------------------------------------
# Each section is a dataclass whose fields are its keys (sensor.schema): the key names, kinds, defaults, bounds
# and doc lines below are the only statement of them. README.md's sample config documents the same keys
# (tests/unit/test_config.py holds the two together).

class _Networks(Kind):
    """A list of strict IP networks. `refuse_broad`: every address inside the camera networks is camera-side, so
    traffic to it is never egress, and a public range there would silence the egress alerts for all of it; a wide
    core network only makes more alerts."""

    __slots__ = ("refuse_broad",)

    def __init__(self, *, refuse_broad: bool):
        self.refuse_broad = refuse_broad

    def check(self, value: Any, s: Setting, key: str) -> tuple[IPNetwork, ...]:
        if not isinstance(value, list) or len(value) < (s.minimum or 0):
            raise s.wrong(key)
        out = []
        for item in value:
            if not isinstance(item, str):
                raise Invalid(f"{key}: every entry must be a CIDR string, not a {type(item).__name__}")
            net = _network(item, key)
            if self.refuse_broad and _covers_public_space(net):
                raise Invalid(f"{key} {quoted(item)} covers public address space wholesale (wider than "
                              f"/{BROAD_PREFIX[net.version]}): camera-side traffic to it would never be egress")
            out.append(net)
        return tuple(out)

    def describe(self, s: Setting) -> str:
        return "a list of CIDR strings"


class _PasswordHashes(Kind):
    """user = "hash" pairs, checked at load (see parse_password_hash), as sorted (user, hash) pairs."""

    def check(self, value: Any, s: Setting, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise s.wrong(key)
        costs = {}
        for user, hashed in value.items():
            where = f"{key}.{key_text(user)}"
            # HTTP basic auth splits user from password at the first colon: such a user could never log in
            if not user or len(user) > 64 or ":" in user or not user.isprintable():
                raise Invalid(f"{where}: a user name is 1 to 64 printable characters without ':'")
            if not isinstance(hashed, str):
                raise Invalid(f"{where} must be a hash from camwatch hash-password, not a password")
            try:
                costs[user] = parse_password_hash(hashed)[0]
            except ValueError as exc:
                raise Invalid(f"{where} {exc}") from None
        # An unknown user name is checked against a decoy hash of this same cost; with mixed costs, the time a
        # wrong password takes would tell which names exist.
        if len(set(costs.values())) > 1:
            first = min(costs)
            user = min(u for u in costs if costs[u] != costs[first])
            raise Invalid(f"{key}.{key_text(user)}: every basic_auth hash must use the same iteration count "
                          f"(found {', '.join(map(str, sorted(set(costs.values()))))}); make them all with "
                          "camwatch hash-password")
        return tuple(sorted(value.items()))

    def describe(self, s: Setting) -> str:
        return 'a table of user = "hash" (from camwatch hash-password)'


class _Countries(Kind):
    """A list of ISO 3166-1 alpha-2 country codes (either case), as an upper-case tuple; empty is allowed. A code
    that is no country is refused: a typo here would silently watch nothing."""

    def check(self, value: Any, s: Setting, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise s.wrong(key)
        out: list[str] = []
        for item in value:
            code = item.upper()
            if code not in COUNTRY_CODES:
                raise Invalid(f"{key}: {quoted(item)} is not an ISO 3166-1 alpha-2 country code (such as \"CN\")")
            if code not in out:
                out.append(code)
        return tuple(out)

    def describe(self, s: Setting) -> str:
        return 'a list of ISO 3166-1 alpha-2 country codes, e.g. ["CN", "HK", "MO"]'


def _timeout(default: float, doc: str) -> Any:
    return setting(default, kind=SECONDS, maximum=MAX_TIMEOUT, unit="s", doc=doc)


_PATH = Text(nul=False)   # also for listen: whatever reaches the OS must not carry a NUL


@record
class SensorSettings(Values, Frozen):
    """[sensor]: what this sensor is called."""

    name: str = setting("camwatch", kind=Text(max_length=64, printable=True),
                        doc="the `sensor` label on every metric and alert")


@record
class NetworkSettings(Values, Frozen):
    """[networks]: which addresses are the cameras' side and which are core networks."""

    camera: tuple[IPNetwork, ...] = setting((), kind=_Networks(refuse_broad=True),
                                            doc="camera VLAN subnets; empty: the private ranges")
    core: tuple[IPNetwork, ...] = setting((), kind=_Networks(refuse_broad=False),
                                          doc="networks cameras must never reach")


@record
class FlowSettings(Values, Frozen):
    """[flows]: when a flow ends and how many the table holds."""

    tcp_idle_timeout: float = _timeout(300.0, "idle TCP flows end")
    udp_idle_timeout: float = _timeout(60.0, "idle UDP flows end")
    icmp_idle_timeout: float = _timeout(60.0, "idle ICMP and other flows end")
    tcp_closed_timeout: float = _timeout(5.0, "after FIN both ways or RST")
    active_timeout: float = _timeout(1800.0, "long flows are cut and continue as new ones")
    # Unset in a config file: sized from limits.max_devices (default_max_flows); this is the largest such size.
    max_flows: int = setting(500_000, kind=COUNT, maximum=MAX_FLOWS,
                             doc="hard cap; the least recently active flow is evicted")


# Without flows.max_flows, the flow table is sized from limits.max_devices: a camera holds a handful of flows, a
# recorder a few per camera, so 50 per device is generous, and a site that bounds its devices bounds the memory a
# flood can take (a flow costs ~500 bytes). Between these two, whatever max_devices says.
FLOWS_PER_DEVICE = 50
MIN_DEFAULT_FLOWS = 100_000


def default_max_flows(max_devices: int) -> int:
    return max(MIN_DEFAULT_FLOWS, min(FlowSettings.max_flows, FLOWS_PER_DEVICE * max_devices))


@record
class AlertSettings(Values, Frozen):
    """[alerts]: how long an alert's episode lasts."""

    episode_timeout: float = _timeout(3600.0, "silence that ends an episode; the next activity is a new alert")


@record
class LimitSettings(Values, Frozen):
    """[limits]: the bounds on what the sensor keeps in memory."""

    max_devices: int = setting(10_000, kind=COUNT, maximum=MAX_DEVICES, doc="camera-side devices tracked")
    max_names: int = setting(100_000, kind=COUNT, maximum=MAX_NAMES, doc="DNS answers remembered (LRU)")
    # The new-device budget (sensor.enrich.admission): past the start (max_devices at once), new devices are made
    # at this rate, in bursts of this many; a forged-source flood beyond it is counted, not inventoried.
    new_devices_per_second: int = setting(100, kind=COUNT, maximum=MAX_DEVICES, unit="/s",
                                          doc="new devices made per second once the site is known")
    new_devices_burst: int = setting(1_000, kind=COUNT, maximum=MAX_DEVICES,
                                     doc="new devices made at once once the site is known")


@record
class UploadSettings(Values, Frozen):
    """video_egress: what a device sends to one outside peer, judged on sliding windows of its sent bytes per
    second. The defaults and the behaviour behind them are in docs/detectors.md#video_egress."""

    burst_bytes: int = setting(256_000, kind=COUNT, maximum=MAX_UPLOAD_BYTES, unit="bytes",
                               doc="a burst: at least this much sent within burst_window, mostly one-way")
    burst_window: int = setting(5, kind=COUNT, maximum=MAX_SHORT_WINDOW, unit="s", doc="a burst's window")
    stream_rate: int = setting(200_000, kind=COUNT, maximum=MAX_RATE, unit="bit/s",
                               doc="a stream: at least this rate over stream_window, media-like or one-way")
    stream_window: int = setting(5, kind=COUNT, maximum=MAX_SHORT_WINDOW, unit="s",
                                 doc="a stream's window; it must be sending in all but one of its seconds")
    trickle_rate: int = setting(8_000, kind=COUNT, maximum=MAX_RATE, unit="bit/s",
                                doc="a trickle: at least this rate averaged over trickle_window, one-way")
    trickle_window: int = setting(120, kind=COUNT, maximum=MAX_TRICKLE_WINDOW, unit="s",
                                  doc="a trickle's window; it must be sending through at least half of it")
    up_down_ratio: int = setting(5, kind=COUNT, maximum=1000,
                                 doc="one-way: at least this many bytes sent per byte received in the window")
    min_packet: int = setting(400, kind=COUNT, maximum=65535, unit="bytes",
                              doc="bulk: the window's sent packets average at least this size")


@record
class BeaconSettings(Values, Frozen):
    """beaconing: check-ins of a device with one outside peer, scored RITA-style (docs/detectors.md#beaconing)."""

    min_checkins: int = setting(5, kind=COUNT, minimum=4, maximum=64,
                                doc="check-ins before a pair is scored (at least 4: three intervals)")
    checkin_gap: float = setting(5.0, kind=SECONDS, maximum=3600, unit="s",
                                 doc="silence that separates two check-ins; closer sending is one check-in")
    threshold: float = setting(0.8, kind=FRACTION, doc="beacon score (timing and sizes) that alerts")
    timing_threshold: float = setting(0.8, kind=FRACTION, doc="timing score that alerts, whatever the sizes")


@record
class DetectSettings(Values, Frozen):
    """[detect]: the detectors' thresholds and windows."""

    learning_period: float = setting(DAY, kind=SECONDS, maximum=MAX_LEARNING_PERIOD, unit="s",
                                     doc="new_destination stays quiet for a device's first this long")
    lateral_targets: int = setting(5, kind=COUNT, minimum=2, maximum=MAX_LATERAL_TARGETS,
                                   expect=f"an integer from 2 to {MAX_LATERAL_TARGETS}",
                                   doc="lateral_movement: distinct hosts a device opens admin/service ports on")
    lateral_window: float = setting(30.0, kind=SECONDS, maximum=MAX_LATERAL_WINDOW, unit="s",
                                    doc="lateral_movement: ... within this many seconds")
    uploads: UploadSettings = section(UploadSettings, "video_egress: bursts, streams and trickles")
    beaconing: BeaconSettings = section(BeaconSettings, "beaconing: check-ins and their score")


@record
class PolicySettings(Values, Frozen):
    """What the site treats as a concern in itself, whatever the detectors' thresholds."""

    # The directive's concern: the reach of the PRC's National Intelligence Law (mainland China, Hong Kong, Macao).
    watch_countries: tuple[str, ...] = setting(("CN", "HK", "MO"), kind=_Countries(),
                                               doc="jurisdiction: countries whose traffic from camera-side devices "
                                                   "is evidence; empty: off")


@record
class GeoSettings(Values, Frozen):
    """MaxMind-format databases the user provides (GeoLite2 or DB-IP Lite), opened and checked at start. Without
    them every public destination still has its registry country (sensor/enrich/geography.py)."""

    asn_database: str | None = setting(None, kind=_PATH, expect="a file path",
                                       doc="ASN database (GeoLite2-ASN, DB-IP ASN Lite): each destination's network "
                                           "owner")
    country_database: str | None = setting(None, kind=_PATH, expect="a file path",
                                           doc="country or city database: geolocated country, preferred over the "
                                               "registry's")


@record
class StateSettings(Values, Frozen):
    """[state]: where learned state is kept between runs."""

    path: str | None = setting(None, kind=_PATH, expect="a file path",
                               doc="SQLite file of learned state; unset: in memory only")


@record
class MetricsSettings(Values, Frozen):
    """The HTTP endpoint. Loopback by default: metrics name every camera and where it talks, which is
    reconnaissance gold; exposing them is a decision, made by setting `listen` (and ideally TLS and auth)."""

    listen: str | None = setting(None, kind=_PATH, doc="ADDR:PORT to serve on; unset: no endpoint")
    tls_cert: str | None = setting(None, kind=_PATH, doc="server certificate (PEM); with tls_key: HTTPS")
    tls_key: str | None = setting(None, kind=_PATH, doc="its private key (PEM)")
    client_ca: str | None = setting(None, kind=_PATH, doc="CA whose client certificates are required (mutual TLS)")
    basic_auth: tuple[tuple[str, str], ...] = setting((), kind=_PasswordHashes(),
                                                      doc="user = hash from camwatch hash-password")

    def after_load(self, where: str) -> MetricsSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise Invalid(f"{where}.tls_cert and {where}.tls_key go together")
        if self.client_ca is not None and self.tls_cert is None:
            raise Invalid(f"{where}.client_ca needs {where}.tls_cert and {where}.tls_key")
        return self


CAPTURE_ENGINES = ("dumpcap", "tpacket")
OVERLAP_MODES = ("auto", "on", "off")   # sensor.overlap.MODES


@record
class CaptureSettings(Values, Frozen):
    """[capture]: how live traffic is captured and files are read."""

    buffer_mib: int = setting(kind=COUNT, maximum=MAX_CAPTURE_BUFFER_MIB, unit="MiB",
                              default_factory=_default_capture_ring,
                              doc="the kernel capture ring; default: a sixteenth of memory, 64 to 1024")
    engine: str = setting("dumpcap", kind=Choice(CAPTURE_ENGINES),
                          doc="dumpcap (a separate capturing process) or tpacket (a memory-mapped ring read by "
                              "camwatch itself, which needs CAP_NET_RAW at start; docs/deploy.md)")
    fanout_group: int | None = setting(None, kind=COUNT, maximum=65535,
                                       doc="tpacket: camwatch processes in one group share the interface's "
                                           "flows (PACKET_FANOUT by flow hash); unset: this one sees all")
    user: str | None = setting(None, kind=Text(printable=True, max_length=64, nul=False),
                               doc="tpacket, started as root: the user to run on as once the capture is open")
    # auto by default: whole process on two quiet cores, vlan100's 1 M packets replayed in 0.505 s against 0.598 s in
    # line, the real cameras' control traffic in the same time either way; with the second core busy, 6% slower
    # (docs/benchmarks.md, "Issue 16, 2026-12-01 (late morning): reading beside processing, second pass"); with one
    # CPU it would only take turns.
    overlap: str = setting("auto", kind=Choice(OVERLAP_MODES),
                           doc="capture files: the next batch read and decoded on a second thread while the "
                               "current one is processed; auto: where two CPUs are available (sensor/overlap.py)")

    def after_load(self, where: str) -> CaptureSettings:
        if self.engine != "tpacket" and (self.fanout_group is not None or self.user is not None):
            raise Invalid(f"{where}.fanout_group and {where}.user apply to engine = \"tpacket\" only")
        return self


@record
class SiteSettings(Values, Frozen):
    """One site of the estate, [sites.NAME]: the subnets it covers and whether it is a sensitive site in the
    directive's sense. `camwatch report` ranks covered devices on sensitive sites higher."""

    subnets: tuple[IPNetwork, ...] = setting(kind=_Networks(refuse_broad=False), minimum=1,
                                             expect='a non-empty array of subnets, e.g. ["10.20.0.0/24"]',
                                             doc="the subnets the site covers (CIDR, no host bits)")
    sensitive: bool = setting(False, kind=FLAG, doc="a sensitive site (the directive's term)")
    comment: str = setting("", kind=Text(), doc="free text for the reader")


@record(kw_only=True)
class AllowRule(Values, Frozen):
    """One MUD-like allowlist entry: a camera may reach `dst` (network or DNS pattern) on `port`/`proto`."""

    dst: str = setting(kind=Text(), doc="an IP, CIDR or DNS name pattern")
    allow_all: bool = setting(False, kind=FLAG, doc="acknowledges a rule covering public space wholesale")
    port: int | None = setting(None, kind=COUNT, maximum=65535, expect="an integer from 1 to 65535",
                               doc="the flow's service (responder) port")
    proto: str | None = setting(None, kind=Choice(PROTOCOLS), doc="the flow's protocol")
    comment: str = setting("", kind=Text(empty=True), doc="why the rule exists")
    # dst, read: exactly one of the two is set
    dst_network: IPNetwork | None = None
    dst_pattern: str | None = None

    def after_load(self, where: str) -> AllowRule:
        dst, allow_all = self.dst, self.allow_all
        network = pattern = None
        # Whatever could be meant as an address is parsed as one, strictly: "10.1.5.300" or "10.1.5.0/33" must
        # not fall through to a DNS name pattern that silently matches nothing.
        if "/" in dst or ":" in dst or "%" in dst:
            network = _network(dst, f"{where}.dst", " (and needs allow_all = true on the rule)")
            broad = _covers_public_space(network)
            if broad and not allow_all:
                raise Invalid(f"{where}.dst {quoted(dst)} covers public address space wholesale (wider than "
                              f"/{BROAD_PREFIX[network.version]}); if this rule really must allow that much, say "
                              "so with allow_all = true on it")
        else:
            try:
                network = ipaddress.ip_network(dst)   # a bare address: always one host
                broad = False
            except ValueError:
                pattern, broad = _dns_pattern(dst, where, allow_all)
        if allow_all and not broad:
            raise Invalid(f"{where}.allow_all = true, but dst {quoted(dst)} is not a rule that needs it: remove "
                          "allow_all (it acknowledges /0-like networks and patterns like '*' only)")
        return replace(self, dst_network=network, dst_pattern=pattern)

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str | None,
                port: int | None, proto: str) -> bool:
        if self.proto is not None and self.proto != proto:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.dst_network is not None:
            return ip in self.dst_network
        return name is not None and name_matches(self.dst_pattern or "", name)


def name_matches(pattern: str, name: str) -> bool:
    """DNS pattern match: `*.example.com` matches any name below example.com (not example.com itself)."""
    kind, text = _name_rule(pattern)
    name = name.lower().rstrip(".")
    if kind == _EXACT:
        return name == text
    if kind == _BELOW:
        return name.endswith(text)
    return fnmatch.fnmatchcase(name, text)


_EXACT, _BELOW, _GLOB = "exact", "below", "glob"


@functools.lru_cache(maxsize=1024)
def _name_rule(pattern: str) -> tuple[str, str]:
    """How a pattern is matched: a plain name by equality, `*` followed by a plain suffix by the suffix (what
    fnmatch's `*` means there), anything else by fnmatch. Each name a DNS flood makes up is asked of every
    indicator's patterns, and fnmatch builds and compiles a regex per pattern; the first two are most patterns."""
    pattern = pattern.lower().rstrip(".")
    if not any(c in pattern for c in "*?["):
        return _EXACT, pattern
    if pattern.startswith("*") and not any(c in pattern[1:] for c in "*?["):
        return _BELOW, pattern[1:]
    return _GLOB, pattern


@record
class Config(Values, Frozen):
    """camwatch.toml: one field per section, in the order they are checked. The rest of camwatch reads the
    properties below (config.episode_timeout, config.max_devices...), so a key can move between sections without
    touching its readers."""

    sensor: SensorSettings = section(SensorSettings, "who this sensor is")
    networks: NetworkSettings = section(NetworkSettings, "where the cameras are, and the core networks")
    flows: FlowSettings = section(FlowSettings, "flow timeouts (Zeek-like) and the flow table's cap")
    alerts: AlertSettings = section(AlertSettings, "alert episodes")
    limits: LimitSettings = section(LimitSettings, "memory bounds")
    detect: DetectSettings = section(DetectSettings, "detector tuning")
    policy: PolicySettings = section(PolicySettings, "what the site treats as a concern in itself")
    geo: GeoSettings = section(GeoSettings, "destination owner and geolocation databases")
    state: StateSettings = section(StateSettings, "learned state across restarts")
    metrics: MetricsSettings = section(MetricsSettings, "the HTTP endpoint; see docs/deploy.md before exposing it")
    capture: CaptureSettings = section(CaptureSettings, "live capture (camwatch run) and reading capture files")
    allow: tuple[AllowRule, ...] = setting((), kind=Tables(AllowRule), expect="an array of tables: [[allow]]",
                                           doc="MUD-like allowlist (RFC 8520 in spirit)")
    sites: tuple[tuple[str, SiteSettings], ...] = setting((), kind=NamedTables(SiteSettings),
                                                          expect="tables: [sites.NAME]",
                                                          doc="the sites of the estate, for camwatch report")
    source: str = "(defaults)"

    @property
    def sensor_name(self) -> str:
        return self.sensor.name

    @property
    def camera_networks(self) -> tuple[IPNetwork, ...]:
        return self.networks.camera

    @property
    def core_networks(self) -> tuple[IPNetwork, ...]:
        return self.networks.core

    @property
    def episode_timeout(self) -> float:
        return self.alerts.episode_timeout

    @property
    def max_devices(self) -> int:
        return self.limits.max_devices

    @property
    def max_names(self) -> int:
        return self.limits.max_names

    @property
    def learning_period(self) -> float:
        return self.detect.learning_period

    @property
    def watch_countries(self) -> tuple[str, ...]:
        return self.policy.watch_countries

    @property
    def state_path(self) -> str | None:
        return self.state.path

    @property
    def capture_buffer_mib(self) -> int:
        return self.capture.buffer_mib

    @property
    def effective_camera_networks(self) -> tuple[IPNetwork, ...]:
        if self.camera_networks:
            return self.camera_networks
        return tuple(ipaddress.ip_network(n) for n in DEFAULT_CAMERA_NETWORKS)


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB: not a camwatch.toml")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): not a camwatch.toml") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        # tomllib recurses once per level of [ or {: a few hundred levels exhaust the stack
        found = _deepest_statement(text)
        where = f"{found[0]} (line {found[1]})" if found else "a value"
        raise ConfigError(f"{path}: {where} is nested too deeply") from None
    except ValueError as exc:
        # tomllib lets int()'s digit limit escape as a plain ValueError
        big = re.search(r"[0-9][0-9_]{4300,}", text)
        found = _deepest_statement(text, stop_at=big.start()) if big else None
        if found:
            raise ConfigError(f"{path}: {found[0]} (line {found[1]}): an integer of over 4300 digits") from None
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        config = load(Config, raw)
    except Invalid as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        # nothing in the schema walks values recursively; this stays a one-line error if that ever changes
        raise ConfigError(f"{source}: a value is nested too deeply") from None
    if "max_flows" not in raw.get("flows", {}):
        config = replace(config, flows=replace(config.flows, max_flows=default_max_flows(config.max_devices)))
    return replace(config, source=source)


# ---- the config file's text: naming the key after tomllib refused it -------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.split())


def _deepest_statement(text: str, stop_at: int | None = None) -> tuple[str, int] | None:
    """(dotted key, line) of the TOML statement nesting [ and { deepest, or of the statement at offset `stop_at`.

    Only for naming the key in an error after tomllib has refused the text: a scan that knows strings, comments
    and table headers, not a parser, and it never recurses."""
    table = key = ""
    line, depth, in_value, statement = 1, 0, False, 0
    best: tuple[int, str, int] | None = None
    i, n = 0, len(text)

    def dotted() -> str:
        return ".".join(filter(None, (table, key)))

    while i < n:
        if stop_at is not None and i >= stop_at:
            return _shown_key(dotted()), line
        c = text[i]
        skipped = _skip_string_or_comment(text, i)
        if skipped is not None:
            line += text.count("\n", i, skipped)
            i = skipped
            continue
        if c == "\n":
            line += 1
            if depth == 0:
                in_value, statement = False, i + 1
        elif not in_value and depth == 0 and c == "[":
            end = text.find("\n", i)
            end = n if end < 0 else end
            table, key = text[i:end].split("#")[0].strip().strip("[]").strip(), ""
            i = end
            continue
        elif not in_value and c == "=":
            key, in_value = text[statement:i].strip(), True
        elif in_value and c in "[{":
            depth += 1
            if best is None or depth > best[0]:
                best = (depth, dotted(), line)
        elif in_value and c in "]}":
            depth = max(0, depth - 1)
        i += 1
    if best is None or stop_at is not None:
        return None
    return _shown_key(best[1]), best[2]


def _skip_string_or_comment(text: str, i: int) -> int | None:
    """The offset just past the string or comment that starts at `i` (a comment ends before its newline), or None
    when neither starts there. An unterminated string runs to the end of the text (or of its line)."""
    c = text[i]
    if c == "#":
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if c not in "\"'":
        return None
    quote = c * 3 if text.startswith(c * 3, i) else c
    j, n = i + len(quote), len(text)
    while j < n and not text.startswith(quote, j) and (len(quote) == 3 or text[j] != "\n"):
        j += 2 if c == '"' and text[j] == "\\" else 1
    return j + len(quote)


def _shown_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) else quoted(name) if name else "(top level)"


# ---- values ------------------------------------------------------------------------------------------------
def _network(text: str, key: str, broad_hint: str = "") -> IPNetwork:
    """A strict IP network: a typo that still parses with host bits set (10.1.5.10/8) would silently widen it."""
    if "%" in text:
        raise Invalid(f"{key} {quoted(text)}: scoped addresses (%zone) are not supported")
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Invalid(f"{key} {quoted(text)} is not an IP network (an address or CIDR)") from None
    host = ipaddress.ip_interface(text).ip
    if _covers_public_space(loose):
        raise Invalid(f"{key} {quoted(text)} has host bits set: write {host} for the one host; {loose} would cover "
                      f"public address space wholesale{broad_hint}")
    raise Invalid(f"{key} {quoted(text)} has host bits set: write {loose} for the network, "
                  f"or {host} for the one host")


def _covers_public_space(net: IPNetwork) -> bool:
    # subnet_of wants the same IP version, which the version test gives; mypy cannot pair the two unions.
    return net.prefixlen < BROAD_PREFIX[net.version] and not any(
        net.version == w.version and net.subnet_of(w) for w in _WIDE_BUT_NOT_PUBLIC)  # type: ignore[arg-type]


_WILDCARD = re.compile(r"[*?]")


def _dns_pattern(dst: str, where: str, allow_all: bool) -> tuple[str, bool]:
    """A DNS name pattern, lowercased, and whether it is broad enough to need `allow_all`.

    A wildcard must be followed by at least two whole literal labels ('*.example.com'): fnmatch's '*' also
    crosses dots and label boundaries, so '*example.com' matches 'evilexample.com', and '*', '*.*' or '*.com'
    allow every name, or a whole TLD."""
    pattern = dst.lower()
    if not re.fullmatch(r"[a-z0-9_*?.-]+", pattern):
        raise Invalid(f"{where}.dst {quoted(dst)} is neither an IP/CIDR nor a DNS name pattern (letters, digits, "
                      "'-', '_', '.', and the wildcards '*' and '?'; internationalised names in punycode)")
    body = pattern[:-1] if pattern.endswith(".") else pattern
    labels = body.split(".")
    if "" in labels or len(body) > 253 or any(len(label) > 63 for label in labels):
        raise Invalid(f"{where}.dst {quoted(dst)} is not a DNS name pattern (empty label, or a label over 63 "
                      "characters, or a name over 253)")
    # No top-level domain is all digits: such a name is an address typo, and as a name pattern it would only
    # ever match DNS names, never the address meant.
    if all(re.fullmatch(r"[0-9*?]+", label) for label in labels) and re.search(r"[0-9]", body):
        if _WILDCARD.search(body):
            raise Invalid(f"{where}.dst {quoted(dst)} looks like an address with wildcards: write a CIDR, "
                          "e.g. 10.1.5.0/24")
        raise Invalid(f"{where}.dst {quoted(dst)} looks like an IP address or CIDR but is not a valid one")
    wild = [i for i, label in enumerate(labels) if _WILDCARD.search(label)]
    broad = bool(wild) and len(labels) - wild[-1] - 1 < 2
    if broad and not allow_all:
        raise Invalid(f"{where}.dst {quoted(dst)} is too broad: a wildcard must be followed by at least two whole "
                      "labels, as in '*.example.com' (so not '*', '*.com' or '*example.com'); if this rule really "
                      "must allow that much, say so with allow_all = true on it")
    return pattern, broad


# ---- metrics -----------------------------------------------------------------------------------------------
def parse_password_hash(hashed: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, digest) of a `camwatch hash-password` hash; ValueError saying what is wrong.

    Checked at load so that a damaged or hostile hash is a config error, not a per-request surprise: a huge
    iteration count would make every scrape, and every guess, cost minutes of CPU."""
    parts = hashed.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2_sha256":
        raise ValueError("must be a hash from camwatch hash-password (pbkdf2_sha256$...), not a password")
    iterations, salt, digest = parts[1:]
    if not re.fullmatch(r"[1-9][0-9]{0,8}", iterations) or not (
            PBKDF2_MIN_ITERATIONS <= int(iterations) <= PBKDF2_MAX_ITERATIONS):
        raise ValueError(f"iterations must be a whole number from {PBKDF2_MIN_ITERATIONS} to "
                         f"{PBKDF2_MAX_ITERATIONS}")
    raw_salt, raw_digest = _base64(salt), _base64(digest)
    if raw_salt is None or not PBKDF2_SALT_BYTES[0] <= len(raw_salt) <= PBKDF2_SALT_BYTES[1]:
        raise ValueError(f"salt must be {PBKDF2_SALT_BYTES[0]} to {PBKDF2_SALT_BYTES[1]} bytes in base64")
    if raw_digest is None or len(raw_digest) != PBKDF2_DIGEST_BYTES:
        raise ValueError(f"digest must be {PBKDF2_DIGEST_BYTES} bytes (SHA-256) in base64")
    return int(iterations), raw_salt, raw_digest


def _base64(text: str) -> bytes | None:
    # imported here: only a [metrics] password hash is base64, and few configs have one (start-up, issue 16)
    import base64

    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode() == text else None   # one spelling per value
