"""sensor/detect/anomaly.py (and training.py): which devices' minutes are scored (cameras that sent), when (closed
windows, partial ones every 5 s lifted to the training median, everything at the end), and the alert an
out-of-character window raises: the features that drove it (the model's attribution) and the peers that carried
the first of them, which name its destination: new peers for a burst of peers, new ports for a spread of ports, the
peers that took the bytes for volume."""

from __future__ import annotations

import numpy as np
import pytest

from sensor.config import Config
from sensor.detect.anomaly import AnomalyDetector
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.training import WindowCollector
from sensor.enrich import CoveredMakers, Device, DnsQuery, Inventory, ManufDatabase, Observation
from sensor.enrich.geography import NO_PLACE
from sensor.model import FEATURES, WindowFeatures

T0 = 1_699_999_980.0        # a multiple of 60
BYTES = FEATURES.index("log_bytes_sent")
MEAN = FEATURES.index("log_mean_packet_bytes")
SHARE = FEATURES.index("external_byte_share")


class FakeModel:
    """Scores a window by its log_bytes_sent; anomalous from 9.0; above 10, `driver` drove it (bytes by default)."""

    name, version, threshold, window_seconds = "fake", "7", 9.0, 60.0
    features = FEATURES
    feature_stats = {"min": [1.0] * len(FEATURES), "median": [5.0] * len(FEATURES), "max": [8.0] * len(FEATURES)}

    def __init__(self, driver: str | None = "bytes_sent"):
        self.scored: list[np.ndarray] = []
        self.driver = driver
        self.skipped: list[frozenset] = []

    def score(self, rows):
        self.scored.extend(rows)
        return rows[:, BYTES]

    def is_anomalous(self, score):
        return score >= self.threshold

    def drivers(self, vector, limit=3, skip=frozenset()):
        self.skipped.append(skip)
        if vector[BYTES] <= 10 or self.driver is None or f"log_{self.driver}" in skip or self.driver in skip:
            return []
        return [{"feature": self.driver, "value": 42.0, "typical": 2.0}]

    def explain(self, vector, limit=3, skip=frozenset()):
        return [f"{d['feature']} {d['value']:g}" for d in self.drivers(vector, limit, skip)] + ["and more"] \
            if vector[BYTES] > 10 else []


def _setup(windows=None, driver="bytes_sent"):
    inventory = Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))
    model = FakeModel(driver)
    context = DetectorContext("site", Episodes(3600.0), model=model, inventory=inventory, windows=windows)
    detector = AnomalyDetector(context)
    camera = inventory.touch("10.20.0.5", 0, T0)
    camera.evidence.add("rtsp_server")
    return detector, model, camera


def _obs(dev, ts, nbytes, peer="203.0.113.7", scope="public", port=443, packets=10, name=None,
         new_flow=True) -> Observation:
    return Observation(ts, dev, packets, nbytes, True, peer, port, "tcp", name, scope, 20, None, new_flow)


def test_only_a_model_makes_the_detector_wanted_and_it_needs_the_inventory():
    assert AnomalyDetector.wanted(DetectorContext("s", Episodes(1.0))) is False
    assert AnomalyDetector.wanted(DetectorContext("s", Episodes(1.0), model=FakeModel())) is True
    with pytest.raises(ValueError, match=r"^anomaly needs a model and the inventory \(DetectorContext.model, "
                                         r"\.inventory\)$"):
        AnomalyDetector(DetectorContext("s", Episodes(1.0), model=FakeModel()))
    detector, _, _ = _setup()
    assert detector.windows.window == 60.0 and detector.windows.max_devices == 10_000
    assert detector.interest == frozenset({"camera", "allowed", "core", "private", "multicast", "link_local",
                                           "public", "other"})


def test_a_closed_out_of_character_window_names_its_drivers_and_the_peers_that_carried_them():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 3_000_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, T0 + 2, 20_000, name="cloud.example.com"))
    detector.observe(_obs(camera, T0 + 3, 50_000, peer="198.51.100.1", name="top.example"))
    [alert] = detector.tick(T0 + 60.0, False)                    # the window closes: scored once, as it ended
    assert alert.as_dict() == {
        "ts": T0 + 60.0, "sensor": "site", "detector": "anomaly", "severity": "medium",
        "device": {"ip": "10.20.0.5", "mac": None, "vendor": None},
        # bytes drove it: the peer that took the bytes, here the recorder, is its destination
        "destination": {"ip": "10.20.0.2", "port": 554, "proto": "tcp", "name": None, "scope": "camera", **NO_PLACE},
        "score": pytest.approx(np.log1p(3_070_000)), "summary": "10.20.0.5 behaved out of character in the "
        "minute from 22:13:00 UTC: bytes_sent 42; and more, carried by 10.20.0.2, 198.51.100.1, 203.0.113.7 "
        "(anomaly score 14.94, threshold 9.00, model fake).",
        "vlan": 20, "model": "fake", "model_version": "7",
        "drivers": [{"feature": "bytes_sent", "value": 42.0, "typical": 2.0}],
        "peers": [{"ip": "10.20.0.2", "port": 554, "proto": "tcp"},
                  {"ip": "198.51.100.1", "port": 443, "proto": "tcp", "name": "top.example"},
                  {"ip": "203.0.113.7", "port": 443, "proto": "tcp", "name": "cloud.example.com"}],
        "evidence": "bytes_sent 42 (typical 2): 10.20.0.2, 198.51.100.1, 203.0.113.7"}
    assert detector._sent == {} and model.skipped[-1] == frozenset()
    assert model.scored[0][FEATURES.index("log_new_flows")] == pytest.approx(np.log1p(3))
    assert list(detector._episodes.take_dirty()) == [(("anomaly", "10.20.0.5"), T0 + 60.0, T0 + 60.0, 0, 0)]
    detector.observe(_obs(camera, T0 + 61, 3_000_000))
    assert detector.tick(T0 + 120.0, False) == []                # the same episode: no second alert


def _quiet_minute(detector, camera, start):
    """An ordinary minute: video to the recorder, DNS and NTP to the gateway."""
    detector.observe(_obs(camera, start + 1, 5_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, start + 2, 80, peer="10.20.0.1", scope="camera", port=53, new_flow=True))
    detector.observe(_obs(camera, start + 3, 90, peer="10.20.0.1", scope="camera", port=123, new_flow=True))


def _sweep(detector, camera, start, targets=12, port=23):
    for k in range(targets):
        detector.observe(_obs(camera, start + 5 + k, 60, peer=f"198.51.100.{20 + k}", port=port, packets=1,
                              new_flow=True))
    detector.observe(_obs(camera, start + 30, 9_000_000, peer="10.20.0.2", scope="camera", port=554))


@pytest.mark.parametrize("driver", ["peers", "external_peers", "new_flows", "initiated_share"])
def test_a_burst_of_new_peers_is_carried_by_them_not_by_the_usual_big_peer(driver):
    """The recorder took the bytes, but the window stood out for its new peers: the first of them is the
    destination, the usual ones are not listed."""
    detector, _, camera = _setup(driver=driver)
    _quiet_minute(detector, camera, T0)
    assert detector.tick(T0 + 60.0, False) == []
    _sweep(detector, camera, T0 + 60)
    [alert] = detector.tick(T0 + 120.0, False)
    assert (alert.dst_ip, alert.dst_port, alert.dst_scope) == ("198.51.100.20", 23, "public")
    assert [p["ip"] for p in alert.extra["peers"]] == [f"198.51.100.{20 + k}" for k in range(5)]
    assert alert.extra["evidence"] == f"{driver} 42 (typical 2): 198.51.100.20, 198.51.100.21, 198.51.100.22 and 9 more"
    assert ", carried by 198.51.100.20, 198.51.100.21, 198.51.100.22 and 9 more (" in alert.summary


def test_a_spread_of_service_ports_is_carried_by_the_new_ports():
    detector, _, camera = _setup(driver="service_ports")
    _quiet_minute(detector, camera, T0)
    detector.tick(T0 + 60.0, False)
    _quiet_minute(detector, camera, T0 + 60)
    for k, port in enumerate((22, 23, 80, 8080, 37777)):
        detector.observe(_obs(camera, T0 + 70 + k, 60, peer="10.20.0.9", scope="camera", port=port, packets=1))
    detector.observe(_obs(camera, T0 + 90, 9_000_000, peer="10.20.0.2", scope="camera", port=554))
    [alert] = detector.tick(T0 + 120.0, False)
    assert [(p["ip"], p["port"]) for p in alert.extra["peers"]] == [("10.20.0.9", p) for p in (22, 23, 80, 8080, 37777)]
    assert alert.extra["evidence"] == "service_ports 42 (typical 2): tcp/22, tcp/23, tcp/80 and 2 more"


def test_volume_and_outside_share_are_carried_by_the_peers_that_took_the_bytes():
    detector, _, camera = _setup(driver="external_byte_share")
    detector.observe(_obs(camera, T0 + 1, 9_000_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, T0 + 2, 1_000, peer="203.0.113.8"))
    detector.observe(_obs(camera, T0 + 3, 900_000, peer="203.0.113.9", port=10000))
    [alert] = detector.tick(T0 + 60.0, False)
    assert [p["ip"] for p in alert.extra["peers"]] == ["203.0.113.9", "203.0.113.8"]   # outside peers, by bytes
    detector, _, camera = _setup(driver="packets_sent")
    detector.observe(_obs(camera, T0 + 1, 9_000_000, peer="10.20.0.2", scope="camera", port=554, packets=10))
    detector.observe(_obs(camera, T0 + 2, 50_000, peer="203.0.113.8", packets=900))
    [alert] = detector.tick(T0 + 60.0, False)
    assert alert.dst_ip == "203.0.113.8"


def test_a_burst_of_lookups_is_carried_by_the_resolvers_asked():
    detector, _, camera = _setup(driver="dns_queries")
    detector.observe(_obs(camera, T0 + 1, 9_000_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, T0 + 2, 500, peer="8.8.8.8", port=53))
    for k in range(5):
        detector.dns_query(DnsQuery(T0 + 2, camera, f"n{k}.example", "8.8.8.8", "public", 20, False))
    detector.dns_query(DnsQuery(T0 + 3, camera, "a.example", "10.20.0.1", "camera", 20, False))
    [alert] = detector.tick(T0 + 60.0, False)
    assert [p["ip"] for p in alert.extra["peers"]] == ["8.8.8.8", "10.20.0.1"]
    assert (alert.dst_ip, alert.dst_port, alert.dst_proto, alert.dst_scope) == ("8.8.8.8", 53, "udp", "public")


def test_without_a_driver_the_outside_peer_it_sent_most_to_stands_in():
    detector, _, camera = _setup(driver=None)
    detector.observe(_obs(camera, T0 + 1, 3_000_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, T0 + 2, 20_000))
    detector.observe(_obs(camera, T0 + 3, 50_000, peer="198.51.100.1"))
    [alert] = detector.tick(T0 + 60.0, False)
    assert alert.dst_ip == "198.51.100.1" and alert.extra["drivers"] == []
    assert alert.extra["evidence"] == "out of character"


def test_a_partial_windows_lifted_or_clamped_features_are_no_drivers():
    detector, model, camera = _setup(driver="bytes_sent")
    detector.observe(_obs(camera, T0 + 1, 3_000_000, packets=1))
    [alert] = detector.tick(T0 + 5.0, False)                     # a partial look: the mean size is clamped
    assert model.skipped[-1] == {"log_mean_packet_bytes", "log_packets_sent", "log_new_flows", "log_peers",
                                 "log_external_peers", "log_service_ports", "log_dns_queries"}   # counts lifted
    assert alert.extra["drivers"] == [{"feature": "bytes_sent", "value": 42.0, "typical": 2.0}]
    detector2, model2, camera2 = _setup(driver="mean_packet_bytes")
    detector2.observe(_obs(camera2, T0 + 1, 3_000_000, packets=1))
    [alert2] = detector2.tick(T0 + 5.0, False)
    assert alert2.extra["drivers"] == [] and alert2.extra["evidence"] == "out of character"


def test_an_ordinary_window_or_a_forgotten_device_raises_nothing():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 100))
    assert detector.tick(T0 + 60.0, False) == [] and len(model.scored) == 1   # closed, so not also partial
    stranger = Device("10.20.0.9", evidence={"rtsp_server"})
    detector.observe(_obs(stranger, T0 + 61, 3_000_000))
    assert detector.tick(T0 + 120.0, False) == []                # not in the inventory
    assert detector.tick(T0 + 180.0, False) == []                # nothing left to score


def test_without_peers_the_alert_names_no_destination_and_a_plain_explanation():
    detector, _, camera = _setup()
    detector.windows.observe(_obs(camera, T0 + 1, 20_000), True)  # scored, but no peer recorded by observe
    [alert] = detector.tick(T0 + 60.0, True)
    assert (alert.dst_ip, alert.dst_port, alert.dst_proto, alert.dst_name, alert.dst_scope, alert.vlan) == (
        "", None, "", None, "other", 0)
    assert "9.90 " not in alert.summary and ": an unusual mix of its usual features (anomaly score 9.90" in \
        alert.summary


def test_only_cameras_that_send_are_modelled_and_peers_are_bounded():
    detector, _, camera = _setup()
    other = Device("10.20.0.6")
    detector.observe(_obs(other, T0 + 1, 100))
    detector.observe(_obs(camera, T0 + 1, 0, packets=0))
    assert len(detector.windows) == 0 and detector._sent == {}
    for i in range(AnomalyDetector.MAX_PEERS_TRACKED + 3):
        detector.observe(_obs(camera, T0 + 2, 10, peer=f"10.20.1.{i}", scope="camera"))
    detector.observe(_obs(camera, T0 + 3, 5, peer="10.20.1.0", scope="camera"))
    sent = detector._sent["10.20.0.5"][T0]
    assert len(sent.conversations) == 256 and sent.conversations[("10.20.1.0", 443, "tcp")].bytes == 15
    detector.observe(_obs(camera, T0 + 3, 5, peer="203.0.113.1"))
    assert ("203.0.113.1", 443, "tcp") not in sent.conversations
    detector.dns_query(DnsQuery(T0 + 4, camera, "a.example", "10.20.0.1", "camera", 20, False))
    assert detector.windows._open[("10.20.0.5", T0)].dns == 1
    assert [(r, c.packets, c.scope) for r, c in sent.resolvers.items()] == [("10.20.0.1", 1, "camera")]
    for k in range(AnomalyDetector.MAX_PEERS_TRACKED + 3):
        detector.dns_query(DnsQuery(T0 + 4, camera, "a.example", f"10.20.2.{k}", "camera", 20, False))
    assert len(sent.resolvers) == 256
    detector.tick(T0 + 60.0, False)                             # retired: its peers become the usual ones, bounded
    peers, ports = detector._usual.get("10.20.0.5")
    assert len(peers) == AnomalyDetector.USUAL_PEERS and "10.20.1.0" in peers and ports == {("tcp", 443)}
    assert detector._sent == {}


def test_a_window_of_lookups_alone_leaves_no_record_behind():
    """WindowFeatures emits nothing for a window in which the device only looked names up; its record goes when
    the window ends all the same, so a long run does not pile them up."""
    detector, _, camera = _setup()
    detector.dns_query(DnsQuery(T0 + 4, camera, "a.example", "10.20.0.1", "camera", 20, False))
    detector.dns_query(DnsQuery(T0 + 4, Device("10.20.0.6"), "a.example", "10.20.0.1", "camera", 20, False))
    assert set(detector._sent) == {"10.20.0.5"}                   # cameras only
    assert detector.tick(T0 + 59.0, False) == [] and set(detector._sent) == {"10.20.0.5"}
    assert detector.tick(T0 + 60.0, False) == [] and detector._sent == {}
    assert detector._usual.get("10.20.0.5") == (frozenset({"10.20.0.1"}), frozenset())


def test_what_a_device_sent_is_kept_only_for_windows_the_features_keep():
    """WindowFeatures bounds the devices with open windows; a device it refuses gets no record here either."""
    from sensor.config import parse_config
    inventory = Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))
    detector = AnomalyDetector(DetectorContext("s", Episodes(1.0), config=parse_config({"limits": {"max_devices": 2}}),
                                               model=FakeModel(), inventory=inventory))
    for k in range(5):
        dev = inventory.touch(f"10.20.0.{10 + k}", 0, T0)
        dev.evidence.add("rtsp_server")
        detector.observe(_obs(dev, T0 + 1, 100))
        detector.dns_query(DnsQuery(T0 + 2, dev, "a.example", "10.20.0.1", "camera", 20, False))
    assert set(detector._sent) == {"10.20.0.10", "10.20.0.11"}


def test_partial_windows_are_looked_at_every_5_s_lifted_to_the_median_and_clamped():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 100))
    detector.tick(T0 + 1.0, False)
    assert len(model.scored) == 1
    lifted = model.scored[0]
    assert lifted[BYTES] == 5.0                       # log1p(100) lifted to the median
    assert lifted[MEAN] == pytest.approx(np.log1p(10.0)) and lifted[SHARE] == 1.0   # clamped to [1, 8]; as is
    detector.observe(_obs(camera, T0 + 2, 100))
    detector.tick(T0 + 5.99, False)
    assert len(model.scored) == 1                     # under 5 s since the last look
    detector.tick(T0 + 6.0, False)
    assert len(model.scored) == 2
    detector.observe(_obs(camera, T0 + 7, 10_000_000, packets=1))
    detector.tick(T0 + 11.0, False)
    assert model.scored[-1][MEAN] == 8.0              # the mean packet size, clamped to the training maximum


def test_lifting_and_clamping_the_whole_matrix_equals_doing_it_column_by_column():
    """_as_far_as_seen takes one floor and one ceiling per column; the column-by-column lift (the median) and clamp
    (the training range) is the reference: the same floats, whatever the values (below, inside, above the range,
    signed zeros, infinities, NaN)."""
    detector, _, _ = _setup()
    rng = np.random.default_rng(3)
    special = [0.0, -0.0, 1.0, 5.0, 8.0, np.inf, -np.inf, np.nan, 4.999999999999999, 8.000000000000002]
    rows = np.vstack([rng.uniform(-20, 30, (300, len(FEATURES))),
                      rng.choice(special, (300, len(FEATURES)))])
    fast, reference = detector._as_far_as_seen(rows), detector._as_far_as_seen_by_column(rows)
    assert fast.tobytes() == reference.tobytes()
    assert not np.shares_memory(fast, rows)
    seen = ~np.isnan(rows)   # NaN stays NaN, as before
    assert (fast[seen[:, BYTES], BYTES] >= 5.0).all() and (fast[seen[:, MEAN], MEAN] <= 8.0).all()
    assert (fast[seen[:, MEAN], MEAN] >= 1.0).all() and np.array_equal(fast[:, SHARE], rows[:, SHARE], equal_nan=True)


def test_the_training_collector_gathers_camera_minutes_only_without_a_model():
    windows = WindowFeatures(60.0)
    context = DetectorContext("s", Episodes(1.0), windows=windows)
    assert WindowCollector.wanted(context) is True
    assert WindowCollector.wanted(DetectorContext("s", Episodes(1.0), windows=windows, model=FakeModel())) is False
    assert WindowCollector.wanted(DetectorContext("s", Episodes(1.0))) is False
    with pytest.raises(ValueError, match=r"^training_windows needs DetectorContext.windows$"):
        WindowCollector(DetectorContext("s", Episodes(1.0)))
    collector = WindowCollector(context)
    camera = Device("10.20.0.5", evidence={"rtsp_server"})
    collector.observe(_obs(Device("10.20.0.6"), T0 + 1, 100))
    collector.observe(_obs(camera, T0 + 1, 100))
    collector.dns_query(DnsQuery(T0 + 2, camera, "a.example", "10.20.0.1", "camera", 20, False))
    collector.dns_query(DnsQuery(T0 + 2, Device("10.20.0.6"), "a.example", "10.20.0.1", "camera", 20, False))
    [(ip, start, vector)] = windows.flush()
    assert (ip, start) == ("10.20.0.5", T0) and vector[FEATURES.index("log_dns_queries")] == pytest.approx(np.log1p(1))
    assert vector[FEATURES.index("log_new_flows")] == pytest.approx(np.log1p(1))


def test_peers_seen_before_a_partial_look_still_name_the_closed_windows_alert():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 8000))                          # log1p(8000) < 9: ordinary so far
    assert detector.tick(T0 + 5.0, False) == []
    detector.observe(_obs(camera, T0 + 30, 200, peer="10.20.0.2", scope="camera"))
    [alert] = detector.tick(T0 + 60.0, False)
    assert alert.dst_ip == "203.0.113.7"
    assert [round(float(v[BYTES]), 3) for v in model.scored] == [round(float(np.log1p(8000)), 3),
                                                                 round(float(np.log1p(8200)), 3)]


def test_a_window_closes_as_it_was_even_after_a_partial_look_and_the_bound_comes_from_the_config():
    from sensor.config import parse_config
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 100))
    detector.tick(T0 + 5.0, False)                                       # partial: lifted to the median
    detector.tick(T0 + 60.0, False)                                      # closed: its own value
    assert [float(v[BYTES]) for v in model.scored] == [5.0, pytest.approx(np.log1p(100))]
    inventory = Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))
    small = AnomalyDetector(DetectorContext("s", Episodes(1.0), config=parse_config({"limits": {"max_devices": 7}}),
                                            model=FakeModel(), inventory=inventory))
    assert small.windows.max_devices == 7


def test_at_the_end_every_open_window_is_scored_as_it_stands():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 100))
    detector.tick(T0 + 2.0, False)                                       # a partial look, lifted
    detector.tick(T0 + 3.0, True)                                        # the end: flushed, judged as far as seen
    assert [float(v[BYTES]) for v in model.scored] == [5.0, 5.0]
    assert len(detector.windows) == 0


def test_at_the_end_a_window_that_ended_by_then_is_judged_as_it_was_and_only_the_open_ones_as_far_as_seen():
    """The final tick comes at the capture's last packet time, and that second has no tick of its own: a minute
    that ended within it is whole, judged on its own values as a later second would have judged it, while the
    minute still open is lifted to the training median."""
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 100))
    detector.tick(T0 + 1.0, False)                                       # a partial look, lifted
    detector.observe(_obs(camera, T0 + 60.2, 100))                        # the next minute, in the last second
    detector.tick(T0 + 60.5, True)
    assert [float(v[BYTES]) for v in model.scored] == [5.0, pytest.approx(np.log1p(100)), 5.0]
    assert len(detector.windows) == 0 and detector._sent == {}


@pytest.mark.parametrize("seen", [None, 0])
def test_the_conversation_records_are_the_sums_of_what_each_device_sent(monkeypatch, seen):
    """The detector keeps each window's conversations (for an alert's carriers) through the window's memo of
    variants; recomputed naively from the observations, with the per-window cap on conversations and first-seen
    order, they must be the same (also with the memo off: every observation looks its record up again)."""
    import sensor.model.features as features
    if seen is not None:
        monkeypatch.setattr(features, "MAX_SEEN", seen)
    monkeypatch.setattr(AnomalyDetector, "MAX_PEERS_TRACKED", 5)
    detector, _, camera = _setup()
    rng = np.random.default_rng(3)
    expected: dict = {}
    for k in range(3000):
        o = Observation(T0 + k * 0.03, camera, int(rng.integers(0, 3)), int(rng.integers(0, 900)),
                        bool(rng.integers(2)), f"198.51.100.{int(rng.integers(7))}", int(rng.choice([443, 554])),
                        "tcp", str(rng.choice(["a.example", ""])) if rng.random() < 0.3 else None,
                        str(rng.choice(["public", "camera"])), 20, None, bool(rng.random() < 0.2))
        detector.observe(o)
        if o.sent_packets:
            convs = expected.setdefault(detector.windows.window * (o.ts // detector.windows.window), {})
            key = (o.peer, o.port, o.proto)
            if key not in convs and len(convs) < 5:
                convs[key] = [o.name, o.scope, 0, 0, 0, False]
            if key in convs:
                c = convs[key]
                c[0] = c[0] or o.name
                c[2:] = [c[2] + o.sent_bytes, c[3] + o.sent_packets, c[4] + o.new_flow, c[5] or o.initiated]
    got = {start: {key: [c.name, c.scope, c.bytes, c.packets, c.new_flows, c.initiated]
                   for key, c in sent.conversations.items()} for start, sent in detector._sent[camera.ip].items()}
    assert got == expected and len(got) == 2
    assert [list(v) for v in got.values()] == [list(v) for v in expected.values()]   # first-seen order
