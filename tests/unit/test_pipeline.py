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
                for offset in (0, 1000):   # the batch's rows from bounds[0], wherever it starts
                    at = bounds + offset
                    got, want = _running(values, at, kinds), _running_windows(values, at, kinds)
                    assert got.dtype == want.dtype == np.int64 and got.shape == (windows, kinds)
                    assert (got == want).all(), (n, windows, offset, values.tolist())
                    assert want[-1].sum() == n
                    shapes += 1
    assert shapes > 120


def _site_sensor(**kwargs):
    from sensor.config import parse_config
    from sensor.enrich import ManufDatabase
    from sensor.pipeline import Sensor

    return Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), ManufDatabase({}), **kwargs)


def _udp_frame(src: str, dst: str, sport: int, dport: int, size: int) -> bytes:
    from packets import ethernet, ipv4, mac, udp

    src_mac = mac(f"02:00:00:00:00:{int(src.rsplit('.', 1)[1]):02x}")
    dst_mac = mac(f"02:00:00:00:00:{int(dst.rsplit('.', 1)[1]):02x}")
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, b"v" * size)))


def _devices(sensor) -> dict:
    return {d["ip"]: d for d in sensor.inventory_snapshot()}


def test_a_known_flows_packets_in_one_second_count_the_same_however_the_reads_cut_it():
    """A known flow's updates wait for the end of their second of capture time and are summed there: packets and
    bytes sent by either side, in a second read by three batches, count as in one batch (and each one)."""
    from .test_export import T0, make_batch

    cam, peer = "10.20.0.11", "10.20.0.12"   # both camera-side devices: each side's packets and bytes are counted
    out = [_udp_frame(cam, peer, 5000, 6000, size) for size in (100, 300, 700)]
    back = [_udp_frame(peer, cam, 6000, 5000, size) for size in (50, 90)]
    first = [(T0 + 0.1, out[0])]
    second = [(T0 + 1.1, out[1]), (T0 + 1.2, back[0]), (T0 + 1.5, out[2]), (T0 + 1.6, back[1])]
    end = [(T0 + 2.5, out[0])]
    whole = _site_sensor()
    for records in (first, second, end):
        whole.process(make_batch(records))
    cut = _site_sensor()
    for records in (first, second[:2], second[2:3], second[3:], end):
        cut.process(make_batch(records))
    devices = _devices(cut)
    assert devices == _devices(whole)
    sent = {ip: (d["packets_sent"], d["bytes_sent"]) for ip, d in devices.items()}
    assert sent == {cam: (3, sum(len(f) for f in out)), peer: (2, sum(len(f) for f in back))}


def test_an_idle_tick_ends_the_pending_second_one_second_after_it_began():
    """Idle (no packets), the caller's clock ends a second of capture time once a whole second has passed since it
    began, and not before: its flows' updates reach the devices then."""
    from .test_export import T0, make_batch

    cam, peer = "10.20.0.11", "10.20.0.12"
    sensor = _site_sensor()
    sensor.expire(T0)   # nothing pending yet: nothing to end
    sensor.process(make_batch([(T0 + 0.2, _udp_frame(cam, peer, 5000, 6000, 10))]))
    sensor.process(make_batch([(T0 + 1.3, _udp_frame(cam, peer, 5000, 6000, 20))]))
    assert _devices(sensor)[cam]["packets_sent"] == 1   # the second packet waits for the end of its second
    sensor.expire(T0 + 1.999)
    assert _devices(sensor)[cam]["packets_sent"] == 1
    sensor.expire(T0 + 2.0)
    assert _devices(sensor)[cam]["packets_sent"] == 2


def test_the_store_is_written_once_a_second_of_the_sensors_own_clock(monkeypatch):
    """Housekeeping commits what changed (episodes, learned destinations) to the state store once a second of the
    monotonic clock has passed since the last commit, exactly at that second, and not at every call."""
    clock = _fake_clock(monkeypatch)
    sensor = _site_sensor()
    commits = _commit_times(monkeypatch, sensor, clock)
    for now in (100.5, 100.999, 101.0, 101.5, 101.999, 102.0):
        clock[0] = now
        sensor.expire(0.0)
    assert commits == [101.0, 102.0]


def test_the_end_closes_incidents_at_the_captures_last_packet_for_the_reason_given():
    """finish(reason): every open incident closes with a line at the last packet's time (not at its own last
    activity), saying why (the end of the capture or the sensor's shutdown)."""
    from sensor.detect.incidents import END, SHUTDOWN

    from .test_export import T0, make_batch

    for reason in (END, SHUTDOWN):
        sensor, alerts, syn = _live_sensor_and_syn()
        sensor.live = False
        sensor.process(make_batch([(T0 + 0.5, syn), (T0 + 9.25, _udp_frame("10.20.0.3", "10.20.0.4", 1, 2, 5))]))
        if reason == END:
            sensor.finish()
        else:
            sensor.finish(reason)
        closed = [a for a in alerts if a.extra.get("event") == "close"]
        assert [(a.dst_ip, a.ts, a.extra["reason"]) for a in closed] == [("203.0.113.77", T0 + 9.25, reason)]


def test_the_summary_counts_what_the_run_saw():
    """The run's summary (replay's last output): every count under its name, detections summed per detector over
    their severities."""
    from .test_export import T0, make_batch

    sensor, alerts, syn = _live_sensor_and_syn()
    sensor.live = False
    local = _udp_frame("10.20.0.3", "10.20.0.4", 1, 2, 5)
    sensor.process(make_batch([(T0 + 0.5, syn), (T0 + 1.5, local), (T0 + 2.5, local)]))   # the last ends second 1
    open_flows = len(sensor.flows)
    lines = dict(sensor.detection.lines)
    assert [a.extra["event"] for a in alerts] == ["open"] and lines == {"open": 1}
    detections = dict(sensor.alert_counts)
    assert len(detections) == 1
    ((detector, severity), count), = detections.items()
    sensor.alert_counts[(detector, "other severity")] += 2   # the same detector at another severity
    assert sensor.summary() == {
        "packets": 3, "bytes": len(syn) + 2 * len(local), "non_ip_packets": 0, "decode_errors": 0, "flows": 2,
        "flows_active": open_flows, "devices": 2, "external_destinations": 1, "alerts": {detector: count + 2},
        "incidents": 1, "lines": lines}
    assert open_flows == 2


def _commit_times(monkeypatch, sensor, clock: list[float]) -> list[float]:
    """The fake clock's reading at each of the sensor's commits to its state store, as they happen."""
    commits: list[float] = []
    commit = sensor.known.commit
    monkeypatch.setattr(sensor.known, "commit", lambda: (commits.append(clock[0]), commit()))
    return commits


def _fake_clock(monkeypatch) -> list[float]:
    """The pipeline's monotonic clock, set by the test (its wall clock stays 0: nothing here is live)."""
    import types

    from sensor import pipeline

    clock = [100.0]
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=lambda: 0.0))
    return clock


def test_what_the_link_and_the_egress_taught_is_stored_once_when_it_changes_and_read_back(tmp_path, monkeypatch):
    """The routers the link taught and the bytes sent out by country are written to the state store when they
    changed (once, not at every save), and a sensor started on the same store begins with them."""
    from packets import ethernet, ipv4, mac, udp
    from sensor.config import parse_config
    from sensor.enrich import ManufDatabase
    from sensor.pipeline import COUNTRY_SERIES_KEY, LINK_LEARNED_KEY, Sensor

    from .test_export import T0, make_batch

    clock = _fake_clock(monkeypatch)
    config = parse_config({"networks": {"camera": ["10.20.0.0/24"]}, "state": {"path": str(tmp_path / "s.db")}})
    sensor = Sensor(config, ManufDatabase({}))
    saved: list[str] = []
    real = sensor.known.save_meta
    monkeypatch.setattr(sensor.known, "save_meta", lambda key, doc: (saved.append(key), real(key, doc)))
    cam, peer, router = "10.20.0.11", "198.51.100.7", mac("02:00:00:00:00:fe")
    out = ethernet(router, mac("02:00:00:00:00:0b"), 0x0800, ipv4(cam, peer, 17, udp(cam, peer, 5000, 53, b"q" * 30)))
    back = ethernet(mac("02:00:00:00:00:0b"), router, 0x0800, ipv4(peer, cam, 17, udp(peer, cam, 53, 5000, b"a" * 9)))
    sensor.process(make_batch([(T0 + 0.1, out), (T0 + 0.2, back), (T0 + 1.1, out), (T0 + 2.1, out)]))
    clock[0] = 101.0
    sensor.expire(T0 + 2.2)
    assert sorted(saved) == [COUNTRY_SERIES_KEY, LINK_LEARNED_KEY]
    clock[0] = 102.0
    sensor.expire(T0 + 2.3)   # nothing new since
    assert sorted(saved) == [COUNTRY_SERIES_KEY, LINK_LEARNED_KEY]
    learned, series = sensor.enricher.link.learned_state(), sensor.country_series_snapshot()
    assert learned["routers"] == [int.from_bytes(router, "big")] and series
    sensor.close()
    again = Sensor(config, ManufDatabase({}))
    assert again.enricher.link.learned_state() == learned and again.country_series_snapshot() == series
    again.close()


def test_the_inventory_is_written_every_device_save_seconds_while_packets_come(tmp_path, monkeypatch):
    """While packets come, the small state is committed every second but the inventory only every
    DEVICE_SAVE_SECONDS of the sensor's own clock (exactly then), and at each idle tick."""
    from sensor.pipeline import DEVICE_SAVE_SECONDS

    from .test_export import T0, make_batch

    clock = _fake_clock(monkeypatch)
    sensor = _site_sensor()
    devices: list[float] = []
    save_devices = sensor.known.save_devices
    monkeypatch.setattr(sensor.known, "save_devices", lambda d: (devices.append(clock[0]), save_devices(d)))
    commits = _commit_times(monkeypatch, sensor, clock)
    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    times = [100.5, 101.0, 100.0 + DEVICE_SAVE_SECONDS, 101.0 + DEVICE_SAVE_SECONDS,
             100.0 + 2 * DEVICE_SAVE_SECONDS - 0.1]
    for k, now in enumerate(times):
        clock[0] = now
        sensor.process(make_batch([(T0 + k, frame)]))
    assert commits == times[1:]
    assert devices == [100.0 + DEVICE_SAVE_SECONDS]
    clock[0] += 1.0
    sensor.expire(T0 + len(times))
    assert devices == [100.0 + DEVICE_SAVE_SECONDS, clock[0]]


def test_a_batch_of_one_second_counts_its_bytes_and_its_last_packets_time():
    """A batch within one second of capture time (a video read) has its own tally path: its bytes and its first and
    last packets' times are the window's."""
    from .test_export import T0, make_batch

    sensor = _site_sensor()
    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    sensor.process(make_batch([(T0 + 0.1, frame, 1, 100), (T0 + 0.4, frame, 1, 200), (T0 + 0.7, frame, 1, 400)]))
    assert (sensor.packets, sensor.bytes, sensor.first_ts, sensor.last_ts) == (3, 700, T0 + 0.1, T0 + 0.7)
    sensor.process(make_batch([(T0 + 2.5, frame, 1, 50), (T0 + 1.5, frame, 1, 50)]))   # time running backwards
    assert (sensor.packets, sensor.bytes, sensor.first_ts, sensor.last_ts) == (5, 800, T0 + 0.1, T0 + 2.5)


def test_live_the_processing_lag_is_the_wall_clock_behind_the_last_packet(monkeypatch):
    """camwatch_processing_lag_seconds: how far the wall clock is past the latest packet's time when its window
    is done (never below 0: a capture clock ahead of the wall clock is no lag)."""
    import types

    from sensor import pipeline

    from .test_export import T0, make_batch

    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(monotonic=lambda: 0.0, time=lambda: T0 + 10.0))
    sensor = _site_sensor()
    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    sensor.process(make_batch([(T0 + 9.0, frame), (T0 + 9.75, frame)]))
    assert sensor.processing_lag is None   # a replay has none
    sensor.live = True
    sensor.process(make_batch([(T0 + 9.0, frame), (T0 + 9.75, frame)]))
    assert sensor.processing_lag == 0.25
    sensor.process(make_batch([(T0 + 10.5, frame)]))
    assert sensor.processing_lag == 0.0


def test_replay_paces_each_window_at_its_first_packets_time():
    from .test_export import T0, make_batch

    sensor = _site_sensor()
    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    paced: list[float] = []
    sensor.process(make_batch([(T0 + s, frame) for s in (0.25, 0.5, 1.75, 3.5, 3.75)]), pace=paced.append)
    assert paced == [T0 + 0.25, T0 + 1.75, T0 + 3.5]


def test_a_window_after_one_without_ip_packets_is_read_whole():
    """Whether a window holds IP rows is read from its own bounds: a window of ARP alone before a window of flows
    leaves that window's flows to make their devices as if each packet came alone."""
    from link_packets import arp

    from packets import mac

    from .test_export import T0, make_batch

    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    records = [(T0 + 0.1, arp(mac("02:00:00:00:00:21"), "10.20.0.33", "10.20.0.1")), (T0 + 1.2, frame),
               (T0 + 1.4, frame), (T0 + 2.5, arp(mac("02:00:00:00:00:21"), "10.20.0.33", "10.20.0.1")),
               (T0 + 3.5, frame)]
    together, apart = _site_sensor(), _site_sensor()
    together.process(make_batch(records))
    for record in records:
        apart.process(make_batch([record]))
    for sensor in (together, apart):
        sensor.finish()
    assert _devices(together) == _devices(apart)
    assert _devices(together)["10.20.0.11"]["packets_sent"] == 3
    assert _devices(together)["10.20.0.33"]["mac"] == "02:00:00:00:00:21"   # the ARP alone made its device


def test_a_batch_decoded_ahead_is_not_decoded_again(monkeypatch):
    """A batch whose slices the reading thread decoded (sensor.overlap) is taken as it is; one sliced otherwise (the
    slice size changed since) is decoded here."""
    from sensor import pipeline
    from sensor.decode import decode_batch

    from .test_export import T0, make_batch

    frame = _udp_frame("10.20.0.11", "10.20.0.12", 5000, 6000, 10)
    batch = make_batch([(T0 + 0.1, frame), (T0 + 1.1, frame)])
    ahead = decode_batch(batch)
    real = pipeline.decoded_slices
    decoded_here = []
    monkeypatch.setattr(pipeline, "decoded_slices", lambda b: (decoded_here.append(len(b)), real(b))[1])
    sensor = _site_sensor()
    batch.decoded = ahead
    sensor.process(batch)
    assert decoded_here == [] and sensor.packets == 2
    batch.decoded = ahead + ahead   # sliced otherwise: not this batch's slices
    sensor.process(batch)
    assert decoded_here == [2] and sensor.packets == 4


def test_the_inventory_document_places_destinations_with_the_sensors_geography(tmp_path):
    """/inventory places each device's outside destinations with the sensor's own databases, not the registry."""
    from mmdbs import write_asn, write_country

    from sensor.enrich.geography import Geography

    from .test_export import T0, make_batch

    peer = "110.43.0.9"   # registered in CN; the sensor's database places it in DE
    geography = Geography.from_config(str(write_asn(tmp_path / "a.mmdb")),
                                      str(write_country(tmp_path / "c.mmdb", {"110.43.0.0/16": "DE"})))
    sensor = _site_sensor(geography=geography)
    sensor.process(make_batch([(T0 + 0.1, _udp_frame("10.20.0.11", peer, 5000, 443, 100)),
                               (T0 + 1.1, _udp_frame("10.20.0.11", peer, 5000, 443, 100))]))
    device = _devices(sensor)["10.20.0.11"]
    assert [c["country"] for c in device["destination_countries"]] == ["DE"]
    assert [(o["asn"], o["country"]) for o in device["destination_owners"]] == [(4808, "DE")]


def test_the_geography_is_opened_from_the_configs_databases(tmp_path):
    """Without a geography handed in, the sensor opens the [geo] databases of its config, both of them."""
    from mmdbs import write_asn, write_country

    from sensor.config import parse_config
    from sensor.enrich import ManufDatabase
    from sensor.pipeline import Sensor

    from .test_export import T0, make_batch

    config = parse_config({"networks": {"camera": ["10.20.0.0/24"]},
                           "geo": {"asn_database": str(write_asn(tmp_path / "a.mmdb")),
                                   "country_database": str(write_country(tmp_path / "c.mmdb",
                                                                         {"110.43.0.0/16": "DE"}))}})
    sensor = Sensor(config, ManufDatabase({}))
    sensor.process(make_batch([(T0 + 0.1, _udp_frame("10.20.0.11", "110.43.0.9", 5000, 443, 100)),
                               (T0 + 1.1, _udp_frame("10.20.0.11", "110.43.0.9", 5000, 443, 100))]))
    device = _devices(sensor)["10.20.0.11"]
    assert [(o["asn"], o["country"]) for o in device["destination_owners"]] == [(4808, "DE")]
    sensor.close()


def test_at_the_end_the_last_second_is_judged_once_at_the_captures_last_time():
    """finish() ends the last second without its own tick: the final tick, at the capture's latest packet time, is
    the one that closes. With time running backwards (merged captures), an incident that went silent for the episode
    timeout within the last second's earlier time closes at that latest time, as every other does."""
    from .test_export import T0, make_batch

    sensor, alerts, syn = _live_sensor_and_syn()
    sensor.live = False
    timeout = sensor.config.alerts.episode_timeout
    local = _udp_frame("10.20.0.3", "10.20.0.4", 1, 2, 5)
    sensor.process(make_batch([(T0 + 3 * timeout, local)]))   # the capture's latest time comes first
    sensor.process(make_batch([(T0 + 0.5, syn)]))              # then an older part of it
    sensor.process(make_batch([(T0 + 2 * timeout + 0.5, local)]))
    sensor.finish()
    closed = [(a.dst_ip, a.ts, a.extra["reason"]) for a in alerts if a.extra.get("event") == "close"]
    assert closed == [("203.0.113.77", T0 + 0.5 + timeout, "silence")]


def test_what_the_sensor_is_handed_is_what_its_stages_use(tmp_path):
    """The covered makers, indicators, model, training windows and geography handed to Sensor are the ones the
    inventory, the enricher and the detectors use (not the defaults they would load), and the state store's bound
    and its forgetting follow the inventory's."""
    from sensor.config import parse_config
    from sensor.detect import Indicators
    from sensor.detect.anomaly import AnomalyDetector
    from sensor.detect.training import WindowCollector
    from sensor.enrich import CoveredMakers, ManufDatabase
    from sensor.enrich.geography import Geography
    from sensor.model import WindowFeatures
    from sensor.pipeline import Sensor

    from .test_detect_anomaly import FakeModel

    config = parse_config({"limits": {"max_devices": 7}})
    makers, indicators, model, geography = CoveredMakers.load(), Indicators.load(), FakeModel(), Geography()
    sensor = Sensor(config, ManufDatabase({}), makers=makers, indicators=indicators, model=model,
                    geography=geography)
    assert sensor.inventory.makers is makers and sensor.enricher.service_of.__self__ is indicators
    assert sensor.model is model and sensor.detection.find(AnomalyDetector).model is model
    assert sensor.detection.geography is geography and sensor.enricher.egress_countries.geography is geography
    assert sensor.known._devices.limit == 7 and sensor.inventory.on_forget == sensor.known.forget_inventory
    windows = WindowFeatures(60.0)
    training = Sensor(config, ManufDatabase({}), windows=windows)
    assert training.detection.find(WindowCollector).windows is windows


def test_a_fresh_sensor_has_seen_nothing_and_stores_nothing(monkeypatch):
    """Before its first packet a sensor reports no capture time, no drops, no lag and zero counts (what the metrics
    export), and its housekeeping writes no learned state it has not learned."""
    clock = _fake_clock(monkeypatch)
    sensor = _site_sensor()
    assert (sensor.first_ts, sensor.last_ts, sensor.capture_dropped, sensor.interface_received,
            sensor.processing_lag) == (None, None, 0, None, None)
    assert sensor.by_network.tolist() == [0] * len(sensor.by_network) and sensor.decode_errors.sum() == 0
    saved: list[str] = []
    monkeypatch.setattr(sensor.known, "save_meta", lambda key, doc: saved.append(key))
    clock[0] += 1.0
    sensor.expire(0.0)
    assert saved == []


def test_a_replays_new_flow_waits_for_the_end_of_its_second_not_for_an_idle_tick():
    """NAME_WAIT and the idle tick's settling are live only: in a replay, housekeeping on any clock leaves a new
    flow waiting for the end of its second of capture time."""
    from .test_export import T0, make_batch

    sensor, alerts, syn = _live_sensor_and_syn()
    sensor.live = False
    sensor.process(make_batch([(T0 + 0.5, syn)]))
    sensor.expire(T0 + 0.9)
    assert alerts == []
    sensor.expire(T0 + 1.0)
    assert [a.dst_ip for a in alerts] == ["203.0.113.77"]


def test_a_stretch_of_arp_alone_is_saved_once_a_second_as_any_traffic_is(monkeypatch):
    """Live, a camera VLAN can carry nothing but ARP for a while (IP quiet, devices still announcing themselves):
    the once-a-second save runs after such windows as after any other, so what the link learnt reaches the store
    without waiting for the next IP packet, an idle tick or the end."""
    from link_packets import arp

    from packets import mac

    from .test_export import T0, make_batch

    clock = _fake_clock(monkeypatch)
    sensor = _site_sensor()
    commits = _commit_times(monkeypatch, sensor, clock)
    frame = arp(mac("02:00:00:00:00:0b"), "10.20.0.11", "10.20.0.1")
    for second, now in enumerate((100.5, 101.0, 101.5, 102.0)):
        clock[0] = now
        sensor.process(make_batch([(T0 + second, frame)]))
    assert commits == [101.0, 102.0] and sensor.packets == 4


def test_at_the_end_a_minute_that_ended_in_the_last_second_is_judged_whole():
    """finish() gives the capture's last second no tick of its own, only the final one: a camera's minute that
    ended within that second is still judged as it was, as the next second's tick would have judged it, not as far
    as seen like the minute still open. Here only the whole minute is out of character: its mean packet size lies
    above everything the model was trained on, which a look at an open minute clamps to the training range."""
    import numpy as np

    from sensor.config import parse_config
    from sensor.enrich import ManufDatabase
    from sensor.model import FEATURES
    from sensor.pipeline import Sensor

    from .test_detect_anomaly import FakeModel
    from .test_export import make_batch

    mean = FEATURES.index("log_mean_packet_bytes")

    class MeanPacketModel(FakeModel):
        threshold = 6.5
        feature_stats = {"min": [1.0] * len(FEATURES), "median": [5.0] * len(FEATURES),
                         "max": [6.0] * len(FEATURES)}

        def score(self, rows):
            self.scored.extend(rows)
            return rows[:, mean]

    alerts: list = []
    model = MeanPacketModel()
    sensor = Sensor(parse_config({"networks": {"camera": ["10.20.0.0/24"]}}), ManufDatabase({}), model=model,
                    on_alert=alerts.append)
    minute = 1_699_999_980.0   # a multiple of 60: a window's start
    sensor.inventory.touch("10.20.0.11", 0, minute).evidence.add("rtsp_server")
    video = _udp_frame("10.20.0.11", "10.20.0.2", 5000, 5002, 1000)
    assert np.log1p(len(video)) > MeanPacketModel.threshold
    sensor.process(make_batch([(minute + 1.0, video), (minute + 2.0, video), (minute + 60.3, video)]))
    assert alerts == []                                # each look at the open minute clamps it to 6.0
    sensor.finish()
    # the minute's incident opens and, the capture over, closes
    assert [(a.detector, a.extra["event"]) for a in alerts] == [("anomaly", "open"), ("anomaly", "close")]
    alert = alerts[0]
    assert (alert.device_ip, alert.ts, alert.score) == ("10.20.0.11", minute + 60.3, np.log1p(len(video)))
    # the looks before the end, clamped; then each minute once: the ended one whole, the open one as far as seen
    assert [round(float(v[mean]), 3) for v in model.scored] == [6.0, round(float(np.log1p(len(video))), 3), 6.0]
    sensor.close()
