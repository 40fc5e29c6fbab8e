"""sensor/detect/anomaly.py (and training.py): which devices' minutes are scored (cameras that sent), when (closed
windows, partial ones every 5 s lifted to the training median, everything at the end), and the alert an
out-of-character window raises: its destination is the peer the device sent most to, outside peers first."""

from __future__ import annotations

import numpy as np
import pytest

from sensor.config import Config
from sensor.detect.anomaly import AnomalyDetector
from sensor.detect.base import DetectorContext
from sensor.detect.episodes import Episodes
from sensor.detect.training import WindowCollector
from sensor.enrich import CoveredMakers, Device, DnsQuery, Inventory, ManufDatabase, Observation
from sensor.model import FEATURES, WindowFeatures

T0 = 1_699_999_980.0        # a multiple of 60
BYTES = FEATURES.index("log_bytes_sent")
MEAN = FEATURES.index("log_mean_packet_bytes")
SHARE = FEATURES.index("external_byte_share")


class FakeModel:
    """Scores a window by its log_bytes_sent; anomalous from 9.0; explains with the feature values it was given."""

    name, version, threshold, window_seconds = "fake", "7", 9.0, 60.0
    features = FEATURES
    feature_stats = {"min": [1.0] * len(FEATURES), "median": [5.0] * len(FEATURES), "max": [8.0] * len(FEATURES)}

    def __init__(self):
        self.scored: list[np.ndarray] = []

    def score(self, rows):
        self.scored.extend(rows)
        return rows[:, BYTES]

    def is_anomalous(self, score):
        return score >= self.threshold

    def explain(self, vector):
        return [f"bytes {vector[BYTES]:.1f}", "and more"] if vector[BYTES] > 10 else []


def _setup(windows=None):
    inventory = Inventory(Config(), ManufDatabase({}), CoveredMakers([], "0"))
    model = FakeModel()
    context = DetectorContext("site", Episodes(3600.0), model=model, inventory=inventory, windows=windows)
    detector = AnomalyDetector(context)
    camera = inventory.touch("10.20.0.5", 0, T0)
    camera.evidence.add("rtsp_server")
    return detector, model, camera


def _obs(dev, ts, nbytes, peer="203.0.113.7", scope="public", port=443, packets=10, name=None) -> Observation:
    return Observation(ts, dev, packets, nbytes, True, peer, port, "tcp", name, scope, 20, None, True)


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


def test_a_closed_out_of_character_window_alerts_with_its_top_peer():
    detector, model, camera = _setup()
    detector.observe(_obs(camera, T0 + 1, 3_000_000, peer="10.20.0.2", scope="camera", port=554))
    detector.observe(_obs(camera, T0 + 2, 20_000, name="cloud.example.com"))
    detector.observe(_obs(camera, T0 + 3, 50_000, peer="198.51.100.1", name="top.example"))
    [alert] = detector.tick(T0 + 60.0, False)                    # the window closes: scored once, as it ended
    assert alert.as_dict() == {
        "ts": T0 + 60.0, "sensor": "site", "detector": "anomaly", "severity": "medium",
        "device": {"ip": "10.20.0.5", "mac": None, "vendor": None},
        "destination": {"ip": "198.51.100.1", "port": 443, "proto": "tcp", "name": "top.example", "scope": "public"},
        "score": pytest.approx(np.log1p(3_070_000)), "summary": "10.20.0.5 behaved out of character in the "
        "minute from 22:13:00 UTC: bytes 14.9; and more (anomaly score 14.94, threshold 9.00, model fake).",
        "vlan": 20, "model": "fake", "model_version": "7"}
    assert detector._peers == {}
    assert model.scored[0][FEATURES.index("log_new_flows")] == pytest.approx(np.log1p(3))
    assert detector._episodes.take_dirty() == [(("anomaly", "10.20.0.5"), T0 + 60.0, T0 + 60.0, 0, 0)]
    detector.observe(_obs(camera, T0 + 61, 3_000_000))
    assert detector.tick(T0 + 120.0, False) == []                # the same episode: no second alert


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
    assert len(detector.windows) == 0 and detector._peers == {}
    for i in range(AnomalyDetector.MAX_PEERS_TRACKED + 3):
        detector.observe(_obs(camera, T0 + 2, 10, peer=f"10.20.1.{i}", scope="camera"))
    detector.observe(_obs(camera, T0 + 3, 5, peer="10.20.1.0", scope="camera"))
    peers = detector._peers["10.20.0.5"]
    assert len(peers) == 256 and peers[("10.20.1.0", 443, "tcp", None, "camera", 20)] == 15
    detector.observe(_obs(camera, T0 + 3, 5, peer="203.0.113.1"))
    assert ("203.0.113.1", 443, "tcp", None, "public", 20) not in peers
    detector.dns_query(DnsQuery(T0 + 4, camera, "a.example", "10.20.0.1", "camera", 20, False))
    assert detector.windows._open[("10.20.0.5", T0)].dns == 1


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
