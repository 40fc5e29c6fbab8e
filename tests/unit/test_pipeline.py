"""sensor/pipeline.py: the pipeline spares detectors interested only in the public and core scopes every other
observation, which is sound only if they really ignore them."""

from __future__ import annotations


def test_detectors_marked_external_only_ignore_every_other_scope():
    """The pipeline spares detectors whose `interest` is the public and core scopes observations of other peers
    (most of all the video to the recorder); that is only sound if those detectors really do nothing with them."""
    from collections import deque
    from ipaddress import ip_address

    from sensor.config import Config
    from sensor.detect import DETECTORS, Observation
    from sensor.enrich import EXTERNAL_SCOPES, SCOPE_CORE, SCOPE_PUBLIC, SCOPES
    from sensor.pipeline import Sensor

    sensor = Sensor(Config())
    dev = sensor.inventory.touch(ip_address("10.20.0.9"), 0x04031200_0009, 1_700_000_000.0)
    external_only = [d for d in sensor.detectors if d.interest <= EXTERNAL_SCOPES]
    assert [d.name for d in external_only] == [c.name for c in DETECTORS if c.interest <= EXTERNAL_SCOPES]

    def state():
        sized = {(d.name, k): len(v) for d in external_only for k, v in vars(d).items()
                 if isinstance(v, (dict, set, list, deque))}
        return sized, len(sensor.episodes._open), dict(sensor.known._destinations)

    before = state()
    ports = [(proto, port) for proto in ("tcp", "udp") for port in (53, 80, 123, 443, 554, 8000, 32100, 37810)]
    for scope in set(SCOPES) - {SCOPE_PUBLIC, SCOPE_CORE}:
        for k, (proto, port) in enumerate(ports):
            for initiated in (True, False):
                obs = Observation(1_700_000_000.0 + k, dev, 500, 700_000, initiated, "198.51.100.7", port, proto,
                                  "p2p.example.com", scope, 20, None, True)
                assert all(d.observe(obs) is None for d in external_only), (scope, proto, port)
    assert state() == before


def test_the_packet_counters_advance_window_by_window_over_a_batch():
    """Packets, bytes, networks and decode errors are counted per one-second window from tallies made for the
    whole batch: after each window the counters hold exactly the windows before it and that one."""
    import numpy as np
    from link_packets import arp

    from packets import ethernet, ipv4, mac, udp
    from sensor.config import Config
    from sensor.decode import decode
    from sensor.pipeline import Sensor

    from .builders import batch_of

    cam, nvr = mac("02:00:00:00:00:09"), mac("02:00:00:00:00:01")
    good = ethernet(nvr, cam, 0x0800, ipv4("10.20.0.9", "10.20.0.1", 17, udp("10.20.0.9", "10.20.0.1", 5000, 554,
                                                                              b"x" * 40)))
    frames = [good, arp(cam, "10.20.0.9", "10.20.0.1"), good[:20], good, good, arp(cam, "10.20.0.9", "10.20.0.2"),
              good[:30], good]
    seconds = [0.1, 0.2, 0.3, 1.5, 1.6, 4.0, 4.1, 4.2]
    wirelen = [100 + 7 * i for i in range(len(frames))]
    batch = batch_of(frames, ts=[1_700_000_000.0 + s for s in seconds], wirelen=wirelen)
    dec = decode(batch)
    sensor = Sensor(Config())
    seen: list[tuple] = []
    sensor.process(batch, pace=lambda _ts: seen.append(
        (sensor.packets, sensor.bytes, sensor.by_network.tolist(), sensor.decode_errors.tolist())))
    seen.append((sensor.packets, sensor.bytes, sensor.by_network.tolist(), sensor.decode_errors.tolist()))
    expected = []
    for end in (0, 3, 5, 8):   # the windows start at rows 0, 3 and 5
        expected.append((end, sum(wirelen[:end]),
                         np.bincount(dec.network[:end], minlength=len(sensor.by_network)).tolist(),
                         np.bincount(dec.error[:end], minlength=len(sensor.decode_errors)).tolist()))
    assert seen == expected
    assert sum(sensor.decode_errors[1:]) == 2 and sensor.by_network.sum() == 8


def test_the_packet_counters_carry_over_batches_and_a_window_that_fails():
    """A batch's running tallies are folded into the counters when the batch is done, even when one of its windows
    raises: the next batch counts on from them, and a reader between batches sees every packet accounted."""
    import numpy as np
    import pytest
    from link_packets import arp

    from packets import ethernet, ipv4, mac, udp
    from sensor.config import Config
    from sensor.decode import decode
    from sensor.pipeline import Sensor

    from .builders import batch_of

    cam, nvr = mac("02:00:00:00:00:09"), mac("02:00:00:00:00:01")
    good = ethernet(nvr, cam, 0x0800, ipv4("10.20.0.9", "10.20.0.1", 17, udp("10.20.0.9", "10.20.0.1", 5000, 554,
                                                                              b"x" * 40)))
    first = batch_of([good, good[:20], arp(cam, "10.20.0.9", "10.20.0.1")], ts=[1_700_000_000.1, 1_700_000_000.2,
                                                                                1_700_000_001.5])
    second = batch_of([good[:30], good, good], ts=[1_700_000_002.0, 1_700_000_003.0, 1_700_000_004.0])
    sensor = Sensor(Config())

    def counted(*batches) -> tuple:
        network = np.concatenate([decode(b).network for b in batches])
        error = np.concatenate([decode(b).error for b in batches])
        return (sum(len(b) for b in batches), np.bincount(network, minlength=len(sensor.by_network)).tolist(),
                np.bincount(error, minlength=len(sensor.decode_errors)).tolist())

    def now() -> tuple:
        return sensor.packets, sensor.by_network.tolist(), sensor.decode_errors.tolist()

    sensor.process(first)
    assert now() == counted(first)
    windows = 0
    real = sensor._window

    def failing(*args):
        nonlocal windows
        windows += 1
        if windows == 2:
            raise RuntimeError("a window that fails")
        real(*args)

    sensor._window = failing
    with pytest.raises(RuntimeError):
        sensor.process(second)
    assert now() == counted(first, second.select(slice(0, 1)))   # the failed window counted nothing
    sensor._window = real
    sensor.process(second.select(slice(2, 3)))
    assert now() == counted(first, second.select(slice(0, 1)), second.select(slice(2, 3)))


def _live_sensor_and_syn():
    from packets import ethernet, ipv4, mac, tcp
    from sensor.config import parse_config
    from sensor.enrich import ManufDatabase
    from sensor.pipeline import Sensor

    alerts: list = []
    sensor = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), ManufDatabase({}),
                    on_alert=alerts.append)
    sensor.live = True
    syn = ethernet(mac("02:00:00:00:00:fe"), mac("00:40:8c:00:00:11"), 0x0800,
                   ipv4("10.20.0.11", "203.0.113.77", 6, tcp("10.20.0.11", "203.0.113.77", 40123, 443, 1, 0, "S")))
    return sensor, alerts, syn


def test_live_a_new_flow_waits_for_its_name_at_most_name_wait_of_capture_time():
    """Live, a brand-new flow is judged once a read brings a packet NAME_WAIT after its first (what names it has
    come by then), not at the end of the read that brought it; its line goes out with that read."""
    from packets import ethernet, ipv4, mac, udp
    from sensor.pipeline import NAME_WAIT

    from .test_export import T0, make_batch

    sensor, alerts, syn = _live_sensor_and_syn()
    sensor.process(make_batch([(T0 + 0.5, syn)]))
    other = ethernet(mac("02:00:00:00:00:01"), mac("00:40:8c:00:00:12"), 0x0800,
                     ipv4("10.20.0.12", "10.20.0.2", 17, udp("10.20.0.12", "10.20.0.2", 5000, 5000, b"x")))
    sensor.process(make_batch([(T0 + 0.5 + NAME_WAIT / 2, other)]))
    assert alerts == []
    sensor.process(make_batch([(T0 + 0.5 + NAME_WAIT, other)]))
    assert [(a.dst_ip, a.ts) for a in alerts] == [("203.0.113.77", T0 + 0.5)]


def test_live_an_idle_tick_judges_a_waiting_new_flow_once_its_packets_cannot_still_be_on_their_way():
    from sensor.pipeline import IDLE_SLACK, NAME_WAIT

    from .test_export import T0, make_batch

    sensor, alerts, syn = _live_sensor_and_syn()
    sensor.process(make_batch([(T0 + 0.5, syn)]))
    sensor.expire(T0 + 0.5 + NAME_WAIT + IDLE_SLACK - 0.01)
    assert alerts == []
    sensor.expire(T0 + 0.5 + NAME_WAIT + IDLE_SLACK)
    assert [a.dst_ip for a in alerts] == ["203.0.113.77"]


def test_the_running_tallies_shortcuts_are_the_general_count():
    """_running's shortcuts (a batch of one kind, a batch of one window) give what counting every window gives,
    for batches of one and of many windows, of one kind (each kind, not only the first) and of several."""
    import numpy as np

    from sensor.pipeline import _running, _running_windows

    rng = np.random.default_rng(16)
    kinds = 6
    shapes = 0
    for n in (1, 2, 7, 300):
        for windows in (1, 2, 5):
            if windows > n:
                continue
            bounds = np.concatenate(([0], np.sort(rng.choice(np.arange(1, n), windows - 1, replace=False)),
                                     [n])).astype(np.int64)
            for values in [np.full(n, kind, np.uint8) for kind in range(kinds)] + \
                          [rng.integers(0, kinds, n, dtype=np.uint8) for _ in range(3)]:
                got, want = _running(values, bounds, kinds), _running_windows(values, bounds, kinds)
                assert got.dtype == want.dtype == np.int64 and got.shape == (windows, kinds)
                assert (got == want).all(), (n, windows, values.tolist())
                assert want[-1].sum() == n
                shapes += 1
    assert shapes > 60
