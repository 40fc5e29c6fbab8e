"""The learned behaviour model: sklearn equivalence of the numpy scorer, strict loading, window features."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from sensor import compiled
from sensor.detect import Observation
from sensor.enrich import SCOPE_ALLOWED, SCOPE_CAMERA, SCOPE_CORE, SCOPE_PUBLIC, Device
from sensor.errors import CamwatchError
from sensor.model import (
    FEATURE_HIGH,
    FEATURE_SPECS,
    FEATURES,
    WINDOW_SECONDS,
    AnomalyModel,
    WindowFeatures,
    average_path_length,
    reference_background,
    training_summary,
)

N = len(FEATURES)
T0 = 1_699_999_980.0   # a multiple of 60, so window boundaries are easy to read
STAMP = "2024-01-01T00:00:00Z"


def mixed_data(rng: np.random.Generator, n: int) -> np.ndarray:
    """Continuous, heavy-tailed and small-integer columns: integers give duplicate rows, and so leaves holding
    several samples before max depth, which exercises the c(n) correction at leaves."""
    cols = []
    for i in range(N):
        if i % 3 == 0:
            cols.append(rng.integers(0, 3, n))
        elif i % 3 == 1:
            cols.append(rng.lognormal(3, 2, n))
        else:
            cols.append(rng.normal(0, 1, n))
    return np.column_stack(cols).astype(np.float64)


def sklearn_forest(x, background=0.1, **kw) -> IsolationForest:
    """The estimator train() fits, built independently: same data (windows plus background), same parameters."""
    params = {"n_estimators": 100, "max_samples": "auto", "contamination": 0.01, "max_features": 1.0,
              "bootstrap": False, "random_state": 0}
    params.update(kw)
    extra = math.ceil(background * len(x))
    data = np.vstack([x, reference_background(extra, params["random_state"])]) if extra else x
    return IsolationForest(**params).fit(data)


# ---- equivalence with scikit-learn ------------------------------------------------------------------------

@pytest.mark.parametrize("n,kw", [
    (1000, {}),                                    # subsampled: 256 per tree
    (1000, {"background": 0.0}),                   # plain Isolation Forest
    (40, {"random_state": 7}),                     # max_samples = n
    (2, {"n_estimators": 10, "background": 0.0}),  # smallest trainable set
    (500, {"n_estimators": 30, "max_samples": 64, "random_state": 3, "background": 0.5}),
])
def test_scores_equal_sklearn(n, kw):
    rng = np.random.default_rng(n)
    x = mixed_data(rng, n)
    ours = AnomalyModel.train(x, "eq", {}, contamination=0.01, trained_at=STAMP, **kw)
    ref = sklearn_forest(x, **kw)
    assert len(ours.trees) == len(ref.estimators_)
    for t_ours, est in zip(ours.trees, ref.estimators_, strict=True):
        assert np.array_equal(t_ours.left, est.tree_.children_left)
        assert np.array_equal(t_ours.threshold, est.tree_.threshold)
    fresh = np.vstack([mixed_data(rng, 2000), rng.normal(0, 1e4, (500, N)), np.zeros((3, N)),
                       rng.uniform(0, 1, (500, N)) * FEATURE_HIGH,
                       x[:5] + 1e-7])   # the last rows sit right next to training values and thresholds
    for data in (x, fresh):
        np.testing.assert_allclose(ours.score(data), -ref.score_samples(data), rtol=0, atol=1e-9)
    # sklearn calibrates its offset on everything it was fitted on, interpolating between scores; camwatch on the
    # real windows only, and on an actual training score (the "higher" quantile).
    assert ours.threshold == pytest.approx(np.quantile(-ref.score_samples(x), 0.99, method="higher"), abs=1e-9)


def test_scores_equal_sklearn_after_round_trip(tmp_path):
    x = mixed_data(np.random.default_rng(9), 700)
    path, _ = AnomalyModel.train(x, "rt", {}, random_state=2, trained_at=STAMP).save(tmp_path / "rt")
    loaded = AnomalyModel.load(path)
    probe = np.vstack([x, mixed_data(np.random.default_rng(10), 700)])
    np.testing.assert_allclose(loaded.score(probe), -sklearn_forest(x, random_state=2).score_samples(probe),
                               rtol=0, atol=1e-9)


def test_average_path_length_matches_sklearn():
    from sklearn.ensemble._iforest import _average_path_length
    n = np.array([0, 1, 2, 3, 4, 10, 256, 100_000])
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))


def test_threshold_is_training_quantile(tmp_path):
    x = mixed_data(np.random.default_rng(5), 800)
    model = AnomalyModel.train(x, "q", {}, contamination=0.05, trained_at=STAMP)
    scores = model.score(x)
    assert model.threshold == pytest.approx(np.quantile(scores, 0.95, method="higher"))
    assert model.threshold in scores  # an actual training score marks the edge; only scores beyond it count
    assert 0.04 <= np.mean([model.is_anomalous(s) for s in scores]) <= 0.06
    assert not model.is_anomalous(model.threshold)
    assert model.calibration["quantile"] == pytest.approx(0.95)
    assert np.all((scores > 0) & (scores <= 1))


def test_score_input_checks():
    model = AnomalyModel.train(mixed_data(np.random.default_rng(0), 50), "s", {}, trained_at=STAMP)
    assert model.score(np.zeros(N)).shape == (1,)
    assert model.score(np.zeros((0, N))).shape == (0,)
    with pytest.raises(ValueError):
        model.score(np.zeros((3, N + 1)))
    with pytest.raises(ValueError):
        model.score(np.full((1, N), np.nan))


def test_train_rejects_unusable_input():
    with pytest.raises(CamwatchError):
        AnomalyModel.train(np.zeros((1, N)), "one", {})
    with pytest.raises(CamwatchError):
        AnomalyModel.train(np.zeros((10, N)), "c", {}, contamination=0.7)
    with pytest.raises(ValueError):
        AnomalyModel.train(np.zeros((10, N - 1)), "shape", {})


# ---- persistence --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained() -> tuple[AnomalyModel, np.ndarray]:
    x = mixed_data(np.random.default_rng(11), 600)
    training = {"captures": ["site-a.pcap", "site-b.pcapng"], "devices": 12, "start": T0, "end": T0 + 36_000}
    return AnomalyModel.train(x, "site-a", training, trained_at=STAMP), x


def test_round_trip(tmp_path, trained):
    model, x = trained
    json_path, card_path = model.save(tmp_path / "models" / "site-a")
    assert (json_path.name, card_path.name) == ("site-a.json", "site-a.md")
    loaded = AnomalyModel.load(json_path)
    for attr in ("name", "version", "trained_at", "threshold", "features", "training", "window_seconds"):
        assert getattr(loaded, attr) == getattr(model, attr), attr
    assert loaded.features == FEATURES
    assert loaded.training["windows"] == 600
    probe = np.vstack([x, mixed_data(np.random.default_rng(12), 300)])
    np.testing.assert_array_equal(loaded.score(probe), model.score(probe))
    # Saving what was loaded reproduces the file: nothing is lost or reinterpreted on the way through.
    again, _ = loaded.save(tmp_path / "again")
    assert again.read_text() == json_path.read_text()
    # A ".json" prefix is not doubled.
    assert model.save(tmp_path / "x.json")[0].name == "x.json"


def test_json_is_plain_numbers(tmp_path, trained):
    model, _ = trained
    path, _ = model.save(tmp_path / "m")
    doc = json.loads(path.read_text())
    assert doc["format"] == "camwatch-anomaly-model" and doc["format_version"] == 1
    tree = doc["forest"]["trees"][0]
    assert set(tree) == {"children_left", "children_right", "feature", "threshold", "n_node_samples"}
    for key, values in tree.items():
        assert all(type(v) in (int, float) for v in values), key
    assert b"\x80" not in path.read_bytes()


def test_model_card(tmp_path, trained):
    model, _ = trained
    _, card_path = model.save(tmp_path / "m")
    card = card_path.read_text()
    for needle in ("site-a", model.version, STAMP, "site-b.pcapng", "600", "Devices:** 12", "10 h",
                   "IsolationForest", "n_estimators", "contamination", f"{model.threshold:.6f}",
                   "0.99 quantile", "scikit-learn", "numpy", "Python", "Intended use", "Limits"):
        assert needle in card, needle
    for name in FEATURES:
        assert f"`{name}`" in card


def test_training_is_deterministic(tmp_path, monkeypatch):
    x = mixed_data(np.random.default_rng(2), 400)
    a = AnomalyModel.train(x, "d", {"captures": ["a.pcap"]}, random_state=4, trained_at=STAMP)
    b = AnomalyModel.train(x.copy(), "d", {"captures": ["a.pcap"]}, random_state=4, trained_at=STAMP)
    assert a.to_json_text() == b.to_json_text()
    assert AnomalyModel.train(x, "d", {}, random_state=5, trained_at=STAMP).version != a.version
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = AnomalyModel.train(x, "d", {"captures": ["a.pcap"]}, random_state=4)
    d = AnomalyModel.train(x, "d", {"captures": ["a.pcap"]}, random_state=4)
    assert c.trained_at == "2023-11-14T22:13:20Z"
    assert c.save(tmp_path / "c")[0].read_bytes() == d.save(tmp_path / "d")[0].read_bytes()


# ---- rejected files --------------------------------------------------------------------------------------------

def saved_doc(tmp_path, model) -> tuple[dict, object]:
    path, _ = model.save(tmp_path / "good")
    return json.loads(path.read_text()), path


def expect_rejected(path, *needles: str) -> str:
    with pytest.raises(CamwatchError) as info:
        AnomalyModel.load(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def write_doc(tmp_path, doc, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_rejects_wrong_features(tmp_path, trained):
    doc, _ = saved_doc(tmp_path, trained[0])
    doc["features"] = list(FEATURES[:-1]) + ["bytes_to_china"]
    expect_rejected(write_doc(tmp_path, doc), "retrain", "bytes_to_china")


def test_rejects_out_of_range_child(tmp_path, trained):
    doc, _ = saved_doc(tmp_path, trained[0])
    tree = doc["forest"]["trees"][3]
    tree["children_left"][0] = len(tree["children_left"]) + 5
    expect_rejected(write_doc(tmp_path, doc), "tree 3", "out of range")


def test_rejects_cycle(tmp_path, trained):
    # A child pointing back at the root would loop a naive traversal forever.
    doc, _ = saved_doc(tmp_path, trained[0])
    doc["forest"]["trees"][0]["children_right"][0] = 0
    expect_rejected(write_doc(tmp_path, doc), "tree 0")


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["forest"]["trees"][1]["feature"].__setitem__(0, N), "feature index"),
    (lambda d: d["forest"]["trees"][1]["threshold"].pop(), "different lengths"),
    (lambda d: d["forest"]["trees"][1]["n_node_samples"].__setitem__(0, 10**6), "sample counts"),
    (lambda d: d["forest"]["trees"][1]["children_left"].__setitem__(0, "1"), "integers"),
    (lambda d: d["forest"]["trees"][1]["threshold"].__setitem__(0, 0.123456), "does not match its version"),
    (lambda d: d.__setitem__("format_version", 99), "format version 99"),
    (lambda d: d.__setitem__("format", "something-else"), "not a camwatch model"),
    (lambda d: d.pop("threshold"), "`threshold` is missing"),
    (lambda d: d.__setitem__("threshold", 7.0), "outside [0, 1]"),
    (lambda d: d["forest"].__setitem__("trees", []), "trees"),
    (lambda d: d["feature_stats"]["max"].pop(), "feature_stats"),
    (lambda d: d["algorithm"].__setitem__("n_estimators", "many"), "algorithm.n_estimators"),
    (lambda d: d["calibration"].pop("quantile"), "calibration.quantile"),
    (lambda d: d["training"].__setitem__("captures", "a.pcap"), "training.captures"),
])
def test_rejects_damaged_fields(tmp_path, trained, mutate, needle):
    doc, _ = saved_doc(tmp_path, trained[0])
    mutate(doc)
    expect_rejected(write_doc(tmp_path, doc), needle)


def test_threshold_edit_is_allowed(tmp_path, trained):
    doc, _ = saved_doc(tmp_path, trained[0])
    doc["threshold"] = 0.75
    assert AnomalyModel.load(write_doc(tmp_path, doc)).threshold == 0.75


def test_rejects_nan(tmp_path, trained):
    _, path = saved_doc(tmp_path, trained[0])
    text = path.read_text()
    bad = tmp_path / "nan.json"
    bad.write_text(text.replace(f'"threshold": {json.dumps(trained[0].threshold)}', '"threshold": NaN', 1))
    assert "NaN" in bad.read_text()
    expect_rejected(bad, "NaN")


def test_rejects_truncated_json(tmp_path, trained):
    _, path = saved_doc(tmp_path, trained[0])
    raw = path.read_bytes()
    for cut in (0, 1, len(raw) // 2, len(raw) - 3):
        bad = tmp_path / f"cut{cut}.json"
        bad.write_bytes(raw[:cut])
        expect_rejected(bad, "not a valid model")


class Boom:
    """Unpickling this would create a marker file: proof that load() never unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_rejects_pickle_renamed_json(tmp_path, trained):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.json"
    bad.write_bytes(pickle.dumps({"model": Boom(marker), "forest": trained[0].trees[0].as_json()}))
    expect_rejected(bad, "not a camwatch model", "pickle")
    assert not marker.exists()
    bad.write_bytes(pickle.dumps([1, 2, 3], protocol=0))   # protocol 0 is ASCII, so this one reaches the parser
    expect_rejected(bad, "not a valid model")


def test_rejects_other_garbage(tmp_path):
    expect_rejected(tmp_path / "missing.json", "cannot read")
    for i, text in enumerate(("[]", "42", '"model"', "[" * 100_000, '{"format": "camwatch-anomaly-model"}')):
        bad = tmp_path / f"g{i}.json"
        bad.write_text(text)
        expect_rejected(bad)


# ---- window features ------------------------------------------------------------------------------------------

def obs(ts, ip="10.0.0.5", peer="10.0.0.2", *, pkts=10, nbytes=5000, initiated=False, port=554, proto="tcp",
        scope=SCOPE_CAMERA) -> Observation:
    return Observation(ts, Device(ip), pkts, nbytes, initiated, peer, port, proto, None, scope, 0)


def as_dict(vec) -> dict:
    return dict(zip(FEATURES, vec, strict=True))


def test_windows_align_and_close_on_sensor_time():
    wf = WindowFeatures(window=60)
    wf.observe(obs(T0 + 10), new_flow=True)
    wf.observe(obs(T0 + 59.5, ip="10.0.0.6"), new_flow=False)
    wf.observe(obs(T0 + 61), new_flow=False)
    assert wf.close(T0 + 59.9) == []            # the first window ends at T0 + 60
    rows = wf.close(T0 + 60)                      # "ended at or before now"
    assert [(ip, start) for ip, start, _ in rows] == [("10.0.0.5", T0), ("10.0.0.6", T0)]
    assert len(wf) == 1
    assert wf.close(T0 + 60) == []                # never emitted twice
    rows = wf.close(T0 + 10_000)
    assert [(ip, start) for ip, start, _ in rows] == [("10.0.0.5", T0 + 60)]
    assert wf.flush() == []


def test_windows_come_out_oldest_first_and_by_device_within_a_window():
    wf = WindowFeatures()
    for ip, ts in (("10.0.0.9", T0 + 1), ("10.0.0.6", T0 + 61), ("10.0.0.5", T0 + 62), ("10.0.0.7", T0 + 2)):
        wf.observe(obs(ts, ip=ip), new_flow=True)
    assert [(ip, start) for ip, start, _ in wf.flush()] == [
        ("10.0.0.7", T0), ("10.0.0.9", T0), ("10.0.0.5", T0 + 60), ("10.0.0.6", T0 + 60)]


def test_a_window_is_a_positive_finite_number_of_seconds():
    for window in (0, -60.0, math.inf, math.nan):
        with pytest.raises(ValueError) as refused:
            WindowFeatures(window=window)
        assert str(refused.value) == f"window must be a positive number of seconds, not {window!r}"
    wf = WindowFeatures(window=0.5)   # under a second is a window all the same
    wf.observe(obs(T0 + 0.7), new_flow=True)
    assert [(ip, start) for ip, start, _ in wf.flush()] == [("10.0.0.5", T0 + 0.5)]


def test_window_start_is_a_multiple_of_the_window():
    wf = WindowFeatures(window=30)
    wf.observe(obs(T0 + 47.3), new_flow=True)
    [(ip, start, _)] = wf.flush()
    assert start == T0 + 30 and start % 30 == 0


def test_feature_values():
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1, peer="10.0.0.2", pkts=100, nbytes=100_000), new_flow=True)          # RTSP to the NVR
    wf.observe(obs(T0 + 2, peer="10.0.0.2", pkts=100, nbytes=100_000), new_flow=False)         # same flow again
    wf.observe(obs(T0 + 3, peer="8.8.8.8", pkts=2, nbytes=200, initiated=True, port=443,
                   scope=SCOPE_PUBLIC), new_flow=True)
    wf.observe(obs(T0 + 4, peer="192.168.1.9", pkts=3, nbytes=300, initiated=True, port=22,
                   scope=SCOPE_CORE), new_flow=True)
    wf.observe(obs(T0 + 5, peer="1.2.3.4", pkts=5, nbytes=500, initiated=True, port=123, proto="udp",
                   scope=SCOPE_ALLOWED), new_flow=True)
    wf.observe(obs(T0 + 6, peer="192.168.1.9", pkts=0, nbytes=0, port=80, scope=SCOPE_CORE), new_flow=True)
    wf.dns_query("10.0.0.5", T0 + 3)
    wf.dns_query("10.0.0.5", T0 + 4)
    [(_, _, vec)] = wf.close(T0 + 60)
    f = as_dict(vec)
    sent_bytes, sent_pkts = 201_000, 210
    assert f["log_bytes_sent"] == pytest.approx(math.log1p(sent_bytes))
    assert f["log_packets_sent"] == pytest.approx(math.log1p(sent_pkts))
    assert f["log_mean_packet_bytes"] == pytest.approx(math.log1p(sent_bytes / sent_pkts))
    assert f["log_new_flows"] == pytest.approx(math.log1p(4))          # the unanswered probe is not the camera's
    assert f["log_peers"] == pytest.approx(math.log1p(4))
    assert f["log_external_peers"] == pytest.approx(math.log1p(2))     # public + core, not the allowlisted one
    assert f["log_service_ports"] == pytest.approx(math.log1p(4))
    assert f["external_byte_share"] == pytest.approx(500 / sent_bytes)
    assert f["log_dns_queries"] == pytest.approx(math.log1p(2))
    assert f["initiated_share"] == pytest.approx(3 / 4)


def test_the_distinct_counts_stop_at_max_distinct():
    """A scan saturates the sets at exactly MAX_DISTINCT (memory bounded); the sums, new flows among them, go on."""
    from sensor.model.features import MAX_DISTINCT
    wf = WindowFeatures()
    for k in range(MAX_DISTINCT + 3):
        wf.observe(obs(T0 + 1, peer=f"203.0.{k >> 8}.{k & 255}", port=1024 + k, initiated=True, scope=SCOPE_PUBLIC),
                   new_flow=True)
    f = as_dict(wf.flush()[0][2])
    assert f["log_peers"] == f["log_external_peers"] == f["log_service_ports"] == math.log1p(MAX_DISTINCT)
    assert f["log_new_flows"] == math.log1p(MAX_DISTINCT + 3)
    assert f["initiated_share"] == 1.0   # of the conversations the window holds


def test_packets_of_no_bytes_make_no_outside_share():
    """Lengths are the wire's to choose: a window that sent packets but no bytes has shares and means of 0, not NaN
    and not all of nothing."""
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1, peer="8.8.8.8", nbytes=0, scope=SCOPE_PUBLIC), new_flow=True)
    f = as_dict(wf.flush()[0][2])
    assert f["external_byte_share"] == f["log_bytes_sent"] == f["log_mean_packet_bytes"] == 0.0
    assert f["log_external_peers"] == math.log1p(1)


def test_silent_devices_are_not_emitted():
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1, pkts=0, nbytes=0, scope=SCOPE_CORE), new_flow=True)
    wf.dns_query("10.0.0.9", T0 + 2)   # a query whose packet never showed up as a flow update
    assert wf.close(T0 + 120) == []
    assert len(wf) == 0


def test_late_observation_joins_the_open_window():
    wf = WindowFeatures()
    wf.observe(obs(T0 + 5), new_flow=True)
    assert len(wf.close(T0 + 60)) == 1
    wf.observe(obs(T0 + 30, pkts=7), new_flow=False)   # reordered packet from the closed window
    rows = wf.flush()
    assert [(ip, start) for ip, start, _ in rows] == [("10.0.0.5", T0 + 60)]
    assert as_dict(rows[0][2])["log_packets_sent"] == pytest.approx(math.log1p(7))


def test_a_flushed_window_is_never_emitted_again():
    """flush() ends sensor time after the latest open window: an observation older than that goes to the window
    after it, as after close()."""
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1), new_flow=True)
    wf.observe(obs(T0 + 61, ip="10.0.0.6"), new_flow=True)
    assert [(ip, start) for ip, start, _ in wf.flush()] == [("10.0.0.5", T0), ("10.0.0.6", T0 + 60)]
    wf.observe(obs(T0 + 30, pkts=7), new_flow=False)
    rows = wf.flush()
    assert [(ip, start) for ip, start, _ in rows] == [("10.0.0.5", T0 + 120)]
    assert as_dict(rows[0][2])["log_packets_sent"] == math.log1p(7)


def test_a_lookup_counts_in_the_window_of_its_time():
    """A DNS query goes to the window its time falls in, not to the device's latest one, and says which."""
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1), new_flow=True)
    assert wf.dns_query("10.0.0.5", T0 + 61) == T0 + 60   # the device's latest window is still T0's
    assert wf.dns_query("10.0.0.5", T0 + 62) == T0 + 60
    wf.observe(obs(T0 + 63), new_flow=False)
    assert [(start, as_dict(v)["log_dns_queries"]) for _, start, v in wf.flush()] == [
        (T0, 0.0), (T0 + 60, math.log1p(2))]


def test_max_devices_bounds_memory():
    wf = WindowFeatures(max_devices=2)
    for i in range(5):
        wf.observe(obs(T0 + 1, ip=f"10.0.0.{i}"), new_flow=True)
    wf.observe(obs(T0 + 61, ip="10.0.0.0"), new_flow=True)   # a known device may open its next window
    assert wf.dropped == 3
    assert len(wf.flush()) == 3
    wf = WindowFeatures()   # 10,000 devices by default
    for i in range(10_001):
        wf.observe(obs(T0 + 1, ip=f"10.0.{i >> 8}.{i & 255}"), new_flow=True)
    assert wf.dropped == 1 and len(wf) == 10_000


def test_a_device_counts_against_the_bound_while_it_has_a_window_open():
    wf = WindowFeatures(max_devices=2)
    wf.observe(obs(T0 + 1, ip="10.0.0.1"), new_flow=True)
    wf.observe(obs(T0 + 61, ip="10.0.0.1"), new_flow=True)   # two windows of one device
    wf.observe(obs(T0 + 1, ip="10.0.0.2"), new_flow=True)
    assert len(wf.close(T0 + 60)) == 2                        # 10.0.0.2 has none left, 10.0.0.1 one
    wf.observe(obs(T0 + 62, ip="10.0.0.3"), new_flow=True)   # takes 10.0.0.2's place
    wf.observe(obs(T0 + 63, ip="10.0.0.4"), new_flow=True)   # refused
    assert wf.dropped == 1
    assert [ip for ip, _, _ in wf.flush()] == ["10.0.0.1", "10.0.0.3"]
    for ip in ("10.0.0.4", "10.0.0.5"):                        # every window closed: two places free
        wf.observe(obs(T0 + 130, ip=ip), new_flow=True)
    assert wf.dropped == 1 and len(wf) == 2


def test_training_summary():
    rows = [("10.0.0.5", T0, np.zeros(N)), ("10.0.0.6", T0 + 60, np.zeros(N))]
    s = training_summary(rows, ["a.pcap"])
    assert s == {"captures": ["a.pcap"], "windows": 2, "devices": 2, "start": T0, "end": T0 + 120}
    assert training_summary([], ["a.pcap"]) == {"captures": ["a.pcap"], "windows": 0, "devices": 0, "start": None,
                                                "end": None}


# ---- end to end: steady cameras, then one that fans out -------------------------------------------------------

def periodic_minute(wf: WindowFeatures, rng, ip: str, start: float, minute: int, cam: int) -> None:
    """A camera's ordinary minute: video to the NVR and a vendor-cloud heartbeat every minute, NTP every fifth
    minute, a DNS lookup every tenth, each camera on its own phase; volumes jitter. The external peer count never
    varies, which a plain Isolation Forest cannot split on at all."""
    for s in range(0, 60, 5):
        wf.observe(obs(start + s + rng.uniform(0, 1), ip, "10.0.0.2", pkts=int(rng.integers(400, 600)),
                       nbytes=int(rng.integers(500_000, 700_000)), port=554), new_flow=minute == 0 and s == 0)
    wf.observe(obs(start + 15, ip, "52.1.2.3", pkts=int(rng.integers(2, 5)), nbytes=int(rng.integers(300, 500)),
                   initiated=True, port=443, scope=SCOPE_PUBLIC), new_flow=minute == 0)
    if (minute + cam) % 5 == 0:
        wf.observe(obs(start + 20, ip, "10.0.0.1", pkts=1, nbytes=90, initiated=True, port=123, proto="udp",
                       scope=SCOPE_ALLOWED), new_flow=True)
    if (minute + cam) % 10 == 3:
        wf.dns_query(ip, start + 30)
        wf.observe(obs(start + 30, ip, "10.0.0.1", pkts=1, nbytes=80, initiated=True, port=53, proto="udp"),
                   new_flow=True)


def random_minute(wf: WindowFeatures, rng, ip: str, start: float, minute: int, cam: int) -> None:
    """Video every minute; NTP, DNS and a cloud keepalive at random. The rare minutes with all three are the
    busiest normal windows, in the same corner (more peers, flows, ports) a fan-out pushes towards."""
    for s in range(0, 60, 5):
        wf.observe(obs(start + s + rng.uniform(0, 1), ip, "10.0.0.2", pkts=int(rng.integers(400, 600)),
                       nbytes=int(rng.integers(500_000, 700_000)), port=554), new_flow=minute == 0 and s == 0)
    if rng.random() < 0.3:
        wf.observe(obs(start + 20, ip, "10.0.0.1", pkts=1, nbytes=90, initiated=True, port=123, proto="udp",
                       scope=SCOPE_ALLOWED), new_flow=True)
    if rng.random() < 0.2:
        wf.dns_query(ip, start + 30)
        wf.observe(obs(start + 30, ip, "10.0.0.1", pkts=1, nbytes=80, initiated=True, port=53, proto="udp"),
                   new_flow=True)
    if rng.random() < 0.1:
        wf.observe(obs(start + 40, ip, "52.1.2.3", pkts=3, nbytes=400, initiated=True, port=443,
                       scope=SCOPE_PUBLIC), new_flow=True)


def simulate(minute_fn, rng, minutes: int, cameras: int, start: float) -> list:
    wf = WindowFeatures()
    rows = []
    for m in range(minutes):
        t = start + m * WINDOW_SECONDS
        for c in range(cameras):
            minute_fn(wf, rng, f"10.0.0.{10 + c}", t, m, c)
        rows += wf.close(t + WINDOW_SECONDS)
    return rows + wf.flush()


def fan_out_window(minute_fn, rng, peers: int) -> np.ndarray:
    wf = WindowFeatures()
    t = T0 + 90_000
    minute_fn(wf, rng, "10.0.0.10", t, 7, 0)
    for k in range(peers):
        wf.observe(obs(t + k, "10.0.0.10", f"203.0.113.{k}", pkts=2, nbytes=120, initiated=True, port=23,
                       scope=SCOPE_PUBLIC), new_flow=True)
    [(_, _, vec)] = wf.close(t + 60)
    return vec


@pytest.mark.parametrize("minute_fn", [periodic_minute, random_minute])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fan_out_to_external_peers_is_anomalous(minute_fn, seed):
    rows = simulate(minute_fn, np.random.default_rng(seed), minutes=120, cameras=10, start=T0)
    model = AnomalyModel.train(np.array([r[2] for r in rows]), "steady", training_summary(rows, ["sim"]),
                               random_state=seed, trained_at=STAMP)

    normal = simulate(minute_fn, np.random.default_rng(seed + 100), minutes=30, cameras=10, start=T0 + 86_400)
    normal_scores = model.score(np.array([r[2] for r in normal]))
    assert np.mean(normal_scores < model.threshold) >= 0.97
    assert np.median(normal_scores) < model.threshold

    vec = fan_out_window(minute_fn, np.random.default_rng(seed + 200), peers=50)
    [score] = model.score(vec)
    assert model.is_anomalous(score), (score, model.threshold)
    assert score > normal_scores.max()
    # A fan-out moves four features at once (peers, external peers, new flows, the share of conversations it
    # opened); the fan-out ones carry most of the score between them, whichever of the four splits isolate first.
    drivers = [d["feature"] for d in model.drivers(vec)]
    assert set(drivers) <= {"external_peers", "peers", "new_flows", "initiated_share"}, drivers
    assert {"external_peers", "peers", "new_flows"} & set(drivers[:2]), drivers
    credit = dict(zip(FEATURES, model.attribute(vec), strict=True))
    fan_out = credit["log_peers"] + credit["log_external_peers"] + credit["log_new_flows"]
    assert fan_out > 2 * max(credit["initiated_share"], 0.0)
    assert model.explain(vec)[0].startswith(f"{drivers[0]} ")


# ---- explanations: which features drove a score ------------------------------------------------------------------

def test_the_attribution_divides_exactly_what_made_the_score_high(trained):
    """The features' credits sum to c(max_samples) - E[h(x)], so the score is 2 ** -(1 - sum / c): nothing of the
    score is left unexplained or explained twice."""
    model, x = trained
    c = float(average_path_length([model.max_samples])[0])
    probe = np.vstack([x[:50], mixed_data(np.random.default_rng(5), 20) * 3.0])
    for vec, score in zip(probe, model.score(probe), strict=True):
        total = model.attribute(vec).sum()
        assert 2.0 ** -(1.0 - total / c) == pytest.approx(score, rel=1e-9)


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "baseline.json"


@pytest.mark.parametrize("feature", [f for f in FEATURES if f != "initiated_share"])
def test_the_one_feature_that_makes_a_window_odd_is_named_first(feature):
    """An ordinary minute of the shipped baseline (every feature at its training median) with one feature pushed
    far out: that feature is the first driver, with its value and its typical value in natural units."""
    model = AnomalyModel.load(SHIPPED)
    median = np.asarray(model.feature_stats["median"])
    vec = median.copy()
    i = FEATURES.index(feature)
    spec = FEATURE_SPECS[i]
    vec[i] = median[i] + math.log1p(50) if spec.log else min(median[i] + 0.6, 1.0)
    first = model.drivers(vec)[0]
    natural = (lambda a: float(np.expm1(a))) if spec.log else float
    assert first == {"feature": feature.removeprefix("log_"), "value": pytest.approx(natural(vec[i]), rel=1e-3),
                     "typical": pytest.approx(natural(median[i]), rel=1e-3, abs=1e-9)}
    assert model.explain(vec)[0].startswith(f"{first['feature']} ")


def test_an_ordinary_window_has_no_drivers():
    """At the training median no feature's splits isolate the window faster than an ordinary point's."""
    model = AnomalyModel.load(SHIPPED)
    median = np.asarray(model.feature_stats["median"])
    assert model.drivers(median) == [] and model.explain(median) == []


# ---- the stacked forest: one walk over every tree, compiled or numpy, equal to the per-tree reference --------

@pytest.mark.parametrize("compiled_walk", [True, False])
@pytest.mark.parametrize("n,kw", [
    (1000, {}),
    (2, {"n_estimators": 10, "background": 0.0}),   # trees of a single leaf or two
    (500, {"n_estimators": 30, "max_samples": 64, "random_state": 3, "background": 0.5}),
])
def test_stacked_forest_scores_equal_the_per_tree_walk_exactly(monkeypatch, compiled_walk, n, kw):
    from sensor import compiled
    from sensor.model.forest import forest_scores_per_tree
    if compiled_walk and compiled.extension is None:
        pytest.skip("built without the C extension")
    monkeypatch.setattr(compiled, "forest", compiled_walk)
    rng = np.random.default_rng(n + 1)
    x = mixed_data(rng, n)
    model = AnomalyModel.train(x, "eq", {}, trained_at=STAMP, **kw)
    fresh = np.vstack([x, mixed_data(rng, 5000), rng.uniform(0, 1, (500, N)) * FEATURE_HIGH, x[:5] + 1e-7,
                       np.zeros((1, N))])
    expected = forest_scores_per_tree(model.trees, model.max_samples, fresh)
    assert np.array_equal(model.score(fresh), expected)          # bit for bit, not merely close
    assert np.array_equal(model.score(fresh[:1]), expected[:1])
    assert model.score(np.zeros((0, N))).shape == (0,)


def test_compiled_forest_refuses_a_child_before_its_parent():
    from sensor import compiled
    from sensor.model.forest import Forest
    if compiled.extension is None:
        pytest.skip("built without the C extension")
    model = AnomalyModel.train(mixed_data(np.random.default_rng(5), 200), "eq", {}, trained_at=STAMP)
    forest = Forest(model.trees, model.max_samples)
    forest.left = forest.left.copy()
    forest.left[forest.roots[1]] = forest.roots[1] - 1   # a loop back into the tree before
    with pytest.raises(ValueError, match="stacked forest"):
        forest.scores(np.zeros((3, N)))


def test_compiled_forest_refuses_unaligned_arrays():
    """The node arrays and the rows are read as int64, float64 and float32: an array that starts at an odd byte (a
    sliced memoryview) is refused, not read through a misaligned pointer (undefined behaviour)."""
    from sensor import compiled
    from sensor.model.forest import Forest
    if compiled.extension is None:
        pytest.skip("built without the C extension")
    model = AnomalyModel.train(mixed_data(np.random.default_rng(5), 200), "eq", {}, trained_at=STAMP)
    forest = Forest(model.trees, model.max_samples)
    arrays = [np.ascontiguousarray(a) for a in (forest.left, forest.right, forest.feature, forest.threshold,
                                                  forest.leaf_value, forest.roots)]
    x = np.zeros((3, N), np.float32)
    assert len(compiled.extension.forest(*arrays, x, N)) == 3 * 8
    for k in range(7):
        args = [*arrays, x]
        args[k] = memoryview(bytearray(1) + args[k].tobytes())[1:]
        with pytest.raises(ValueError, match="stacked forest"):
            compiled.extension.forest(*args, N)


@pytest.mark.parametrize("breakage", ["feature", "child_past_end", "right_before_parent", "root"])
def test_compiled_forest_checks_every_node_before_the_walks(breakage):
    """With as many rows as nodes, the compiled walk checks the stacked forest node by node once per call, then
    walks with no check per step: a broken inner node (here the last one of the last tree) is refused whether or
    not a row reaches it, and so is a broken root. (Few rows: every step is checked, as
    test_compiled_forest_refuses_a_child_before_its_parent holds.)"""
    from sensor import compiled
    from sensor.model.forest import Forest
    if compiled.extension is None:
        pytest.skip("built without the C extension")
    model = AnomalyModel.train(mixed_data(np.random.default_rng(5), 200), "eq", {}, trained_at=STAMP)
    forest = Forest(model.trees, model.max_samples)
    x = np.zeros((len(forest.left), N))
    before = forest.scores(x)
    inner = int(np.flatnonzero(forest.left != np.arange(len(forest.left)))[-1])
    for name in ("left", "right", "feature", "roots"):
        setattr(forest, name, getattr(forest, name).copy())
    if breakage == "feature":
        forest.feature[inner] = N
    elif breakage == "child_past_end":
        forest.left[inner] = len(forest.left)
    elif breakage == "right_before_parent":
        forest.right[inner] = inner
    else:
        forest.roots[-1] = -1
    assert before.shape == (len(x),)
    with pytest.raises(ValueError, match="stacked forest"):
        forest.scores(x)


def _random_stream(rng: np.random.Generator, n: int) -> list[tuple[str, Observation]]:
    """Observations of a few devices over a few windows, with peers, ports and scopes drawn from small pools so
    that the same flow comes back again and again (the common case) and the distinct sets fill up."""
    devices = [Device(f"10.20.0.{i}", mac=i) for i in range(1, 5)]
    scopes = (SCOPE_PUBLIC, SCOPE_CORE, SCOPE_CAMERA, SCOPE_ALLOWED)
    out = []
    for k in range(n):
        kind = "dns" if rng.random() < 0.05 else "obs"
        dev = devices[int(rng.integers(len(devices)))]
        ts = T0 + k * 150.0 / n + float(rng.normal(0, 3))   # some late: folded into the oldest open window
        out.append((kind, Observation(ts, dev, int(rng.integers(0, 4)), int(rng.integers(0, 2000)),
                                      bool(rng.integers(2)), f"198.51.100.{int(rng.integers(15))}",
                                      int(rng.choice([443, 554])), str(rng.choice(["tcp", "udp"])),
                                      None, str(rng.choice(scopes)), 20, None, bool(rng.random() < 0.2))))
    return out


def _replay_windows(stream, close_every: int) -> list:
    wf = WindowFeatures(max_devices=3)   # one of the four devices is refused while the others have windows open
    rows = []
    for k, (kind, obs) in enumerate(stream):
        if kind == "dns":
            wf.dns_query(obs.device.ip, obs.ts)
        else:
            wf.observe(obs, obs.new_flow)
        if k % close_every == 0:
            rows += wf.close(obs.ts) + sorted(wf.partial(), key=lambda r: (r[1], r[0]))
    return [(ip, start, v.tolist()) for ip, start, v in rows + wf.flush()] + [wf.dropped]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_repeated_flows_take_the_short_path_to_the_same_vectors(monkeypatch, seed):
    """The per-window memo of flows already applied (MAX_SEEN) changes no vector: turned off, every observation
    goes through every set, and the windows come out the same, with the sets saturating (MAX_DISTINCT small)."""
    import sensor.model.features as features
    stream = _random_stream(np.random.default_rng(seed), 4000)
    monkeypatch.setattr(features, "MAX_DISTINCT", 12)
    fast = _replay_windows(stream, 97)
    monkeypatch.setattr(features, "MAX_SEEN", 0)
    assert _replay_windows(stream, 97) == fast
    assert any(math.expm1(r[2][4]) >= 11.5 for r in fast[:-1])   # some peer sets saturated


def test_stacked_credit_equals_the_per_tree_walk_exactly():
    """AnomalyModel.attribute walks every tree at once; Tree.path_credit one at a time is the reference."""
    from sensor.model.forest import forest_credit
    rng = np.random.default_rng(11)
    x = mixed_data(rng, 600)
    model = AnomalyModel.train(x, "eq", {}, trained_at=STAMP)
    probes = np.vstack([x[:50], rng.uniform(0, 1, (200, N)) * FEATURE_HIGH, np.zeros((1, N)), x[:5] + 1e-7])
    for v in probes:
        assert np.array_equal(model.attribute(v), forest_credit(model.trees, v))


@pytest.mark.parametrize("seed", [4, 5])
def test_the_open_windows_matrix_holds_each_windows_own_row_bit_for_bit(seed):
    """partial() and close() build every row of the matrix at once (_rows): each must be exactly the row the
    window computes alone, with empty shares (no bytes, no conversations) and late observations among them."""
    wf = WindowFeatures()
    looked = 0
    for k, (kind, o) in enumerate(_random_stream(np.random.default_rng(seed), 3000)):
        if kind == "dns":
            wf.dns_query(o.device.ip, o.ts)
        else:
            wf.observe(o, o.new_flow)
        if k % 41 == 0:
            expected = {(ip, start): acc.vector() for (ip, start), acc in wf._open.items() if acc.touched}
            for ip, start, vec in wf.partial():
                assert vec.tobytes() == expected.pop((ip, start)).tobytes()
                looked += 1
            assert all(v[1] == 0 for v in expected.values())   # only a window with nothing sent goes unlooked
    assert looked > 100


def _window(rng: np.random.Generator, big: bool):
    from sensor.model.features import MAX_DISTINCT, _Window
    w = _Window()
    # counts around the lookup table's end (MAX_DISTINCT) and far beyond it; bytes from none to terabytes
    w.packets = int(rng.choice([1, 2, 7, MAX_DISTINCT, MAX_DISTINCT + 1, int(rng.integers(1, 10**9))]))
    w.bytes = int(rng.choice([0, 1, 60, int(rng.integers(0, 10**13))]))
    if big:   # beyond float64's exact integers (forged lengths over a long window)
        w.bytes = (1 << 53) + int(rng.integers(1, 1000))
    w.external_bytes = int(rng.integers(0, w.bytes + 1))
    w.new_flows = int(rng.choice([0, 1, MAX_DISTINCT, int(rng.integers(0, 10**6))]))
    w.dns = int(rng.choice([0, 3, MAX_DISTINCT + 7, int(rng.integers(0, 10**5))]))
    for name in ("peers", "external_peers", "ports", "conversations"):
        getattr(w, name).update(range(int(rng.choice([0, 1, 5, MAX_DISTINCT]))))
    w.initiated = int(rng.integers(0, len(w.conversations) + 1))
    return w


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_the_rows_matrix_holds_each_windows_own_row_bit_for_bit(seed):
    """_rows reads every window's row into one matrix: each must be exactly the row the window computes alone,
    with counts around and far past MAX_DISTINCT and sums past float64's exact integers."""
    from sensor.model.features import _rows
    rng = np.random.default_rng(seed)
    windows = [_window(rng, big=False) for _ in range(500)] + [_window(rng, big=True) for _ in range(5)]
    assert _rows(windows).tobytes() == np.array([w.row() for w in windows]).tobytes()
    assert _rows(windows[:3]).tobytes() == np.array([w.row() for w in windows[:3]]).tobytes()
    assert _rows([]).shape == (0, N)


def test_a_variant_is_noted_once_per_window_and_the_note_comes_back_with_each_repeat():
    wf = WindowFeatures()
    notes: list[tuple[str, float]] = []

    def note(o, start):
        notes.append((o.peer, start))
        return f"record {len(notes)}"

    first = wf.observe(obs(T0 + 1), True, note)
    assert first == "record 1" and wf.observe(obs(T0 + 2), False, note) == "record 1"      # the same flow again
    assert wf.observe(obs(T0 + 3, initiated=True), False, note) == "record 2"              # the other direction
    assert wf.observe(obs(T0 + 4, pkts=0), False, note) is None                            # sent nothing
    assert wf.observe(obs(T0 + 61), False, note) == "record 3"                             # the next window
    assert wf.observe(obs(T0 + 5), False) == "record 1"   # a repeat returns what was noted, with or without a note
    assert notes == [("10.0.0.2", T0), ("10.0.0.2", T0), ("10.0.0.2", T0 + 60)]
    fresh = WindowFeatures()
    assert fresh.observe(obs(T0 + 1), True) is True and fresh.observe(obs(T0 + 2), False) is True


def test_a_full_memo_notes_every_observation_again(monkeypatch):
    """Past MAX_SEEN variants a window no longer remembers them: the caller's note is asked each time, so its
    record stays right (it must find, not make, what it noted before)."""
    import sensor.model.features as features
    monkeypatch.setattr(features, "MAX_SEEN", 0)
    wf = WindowFeatures()
    calls = []
    for s in range(3):
        wf.observe(obs(T0 + s), s == 0, lambda o, start: calls.append(start) or len(calls))
    assert calls == [T0, T0, T0]


class _Tally:
    __slots__ = ("bytes", "packets", "new_flows", "name", "peer", "start")

    def __init__(self, peer, start):
        self.bytes = self.packets = self.new_flows = 0
        self.name, self.peer, self.start = None, peer, start

    def sums(self):
        return (self.peer, self.start, self.bytes, self.packets, self.new_flows, self.name)


def _tallied(stream, close_every: int, fused: bool, monkeypatch=None) -> tuple[list, list]:
    """The windows and every noted tally's sums, the stream fed through tally (fused) or through the anomaly
    detector's former steps one after another (the reference): its camera filter, observe, then the sums."""
    wf = WindowFeatures(max_devices=3)
    tallies: list[_Tally] = []

    def note(o, start):
        if len(tallies) % 7 == 6:   # a record the caller no longer keeps (its MAX_PEERS_TRACKED): no sums
            tallies.append(_Tally(None, None))
            return None
        tallies.append(_Tally(o.peer, start))
        return tallies[-1]

    hook = wf.tallier(note)
    rows = []
    for k, (kind, o) in enumerate(stream):
        if kind == "dns":
            wf.dns_query(o.device.ip, o.ts)
        elif fused:
            hook(o)
        elif o.sent_packets != 0 and o.device.role == "camera":
            found = wf.observe(o, o.new_flow, note)
            if found is not None:
                found.bytes += o.sent_bytes
                found.packets += o.sent_packets
                found.new_flows += o.new_flow
                if not found.name:
                    found.name = o.name
        if k % close_every == 0:
            rows += wf.close(o.ts) + sorted(wf.partial(), key=lambda r: (r[1], r[0]))
            # the latest-window shortcut holds open windows only: bounded by them, never keeping a closed one
            assert all(wf._open.get((ip, w.start)) is w for ip, w in wf._latest.items())
    rows += wf.flush()
    assert not wf._latest
    return [(ip, start, v.tolist()) for ip, start, v in rows] + [wf.dropped], [t.sums() for t in tallies]


@pytest.fixture(params=["compiled", "python"])
def tally_impl(request, monkeypatch) -> str:
    """Runs a test twice: the tallier's hook as the compiled Tally (sensor/_tally.c) and as WindowFeatures.tally,
    its reference."""
    on = request.param == "compiled"
    if on and compiled.tally_extension is None:
        pytest.skip("the C extension sensor._tally was not built on this machine")
    monkeypatch.setattr(compiled, "tally", on)
    return request.param


def _count_handed_over(monkeypatch) -> list[int]:
    """How many calls reach WindowFeatures.tally (all of them without the extension; with it, what Tally hands
    over): counted in the list returned."""
    calls = [0]
    tally = WindowFeatures.tally

    def counted(self, o):
        calls[0] += 1
        return tally(self, o)
    monkeypatch.setattr(WindowFeatures, "tally", counted)
    return calls


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tally_is_the_detectors_filter_observe_and_sums_in_one_step(seed, tally_impl, monkeypatch):
    """WindowFeatures.tally (the anomaly detector's observe hook), and the compiled Tally in its place, against
    the steps it fuses, on cameras and other devices, late observations folded into the oldest open window, a
    device refused (max_devices), windows that close and reopen (its latest-window shortcut must never hand back
    a closed one), DNS queries, names that arrive late and records the caller does not keep."""
    handed_over = _count_handed_over(monkeypatch)
    rng = np.random.default_rng(seed)
    stream = _random_stream(rng, 4000)
    for _kind, o in stream:
        if o.device.ip != "10.20.0.4":
            o.device.evidence.add("rtsp_server")   # cameras; the fourth device stays "other" and is filtered
        if rng.random() < 0.3:
            o.name = f"name{int(rng.integers(3))}.example"
    for close_every in (1, 13, 97):
        fused = _tallied(stream, close_every, fused=True)
        assert fused == _tallied(stream, close_every, fused=False)
        assert sum(1 for t in fused[1] if t[2]) > 50 and fused[0][-1] > 0   # tallies kept, a device refused
        assert any(t[5] for t in fused[1]) and len(fused[0]) > 20
    if tally_impl == "compiled":   # the compiled path did the common case: most calls never reached Python
        assert 0 < handed_over[0] < 3 * len(stream) // 2


class _Unslotted:
    """A record without slots: Tally hands every observation of it to the Python step."""

    def __init__(self):
        self.bytes = self.packets = self.new_flows = 0
        self.name = None


def _through_the_hook(stream, close_every: int) -> tuple[list, list]:
    """Every partial and closing look (in the order the windows changed), every record's sums and what the
    window's sets hold, the stream fed through the tallier's hook."""
    wf = WindowFeatures(max_devices=4)
    records: list = []

    def note(o, start):
        kind = len(records) % 5
        records.append(None if kind == 4 else _Unslotted() if kind == 3 else _Tally(o.peer, start))
        return records[-1]

    hook = wf.tallier(note)
    looks = []
    for k, o in enumerate(stream):
        hook(o)
        if k % close_every == 0:
            looks.append([(ip, start, v.tolist()) for ip, start, v in wf.close(o.ts) + wf.partial()])
    looks.append([(ip, start, v.tolist()) for ip, start, v in wf.flush()])
    sums = [None if r is None else (type(r).__name__, r.bytes, r.packets, r.new_flows, r.name) for r in records]
    return looks, sums


@pytest.mark.parametrize("seed", [1, 2])
def test_the_compiled_tally_is_the_python_step_for_every_role_record_and_time(seed, monkeypatch):
    """The compiled Tally against WindowFeatures.tally on devices whose evidence settles the role and devices
    whose role property must be asked (a maker's camera, an NVR with camera evidence, a gateway, a device with
    nothing), records with and without slots and none, names that are empty or None or arrive late, sent nothing,
    late observations, timestamps that are ints: the same looks in the same order, the same sums."""
    if compiled.tally_extension is None:
        pytest.skip("the C extension sensor._tally was not built on this machine")
    rng = np.random.default_rng(seed)
    evidence = ({"rtsp_server"}, {"camera_maker"}, {"rtsp_server", "nvr_model"}, {"dns_server"}, set(),
                {"video_sender", "camera_discovery"})
    devices = [Device(f"10.20.0.{i}", mac=i, evidence=set(e)) for i, e in enumerate(evidence, 1)]
    stream = []
    for k in range(3000):
        ts = T0 + k * 200.0 / 3000 + float(rng.normal(0, 2))
        stream.append(Observation(int(ts) if rng.random() < 0.05 else ts, devices[int(rng.integers(len(devices)))],
                                  int(rng.integers(-1, 4)), int(rng.integers(0, 3000)), bool(rng.integers(2)),
                                  f"198.51.100.{int(rng.integers(6))}", int(rng.choice([443, 554, 2**70])),
                                  str(rng.choice(["tcp", "udp"])), rng.choice([None, None, None, "", "cam.example"]),
                                  str(rng.choice((SCOPE_PUBLIC, SCOPE_CORE, SCOPE_CAMERA, SCOPE_ALLOWED))), 20,
                                  None, bool(rng.random() < 0.2)))
    handed_over = _count_handed_over(monkeypatch)
    for close_every in (1, 29, 500):
        monkeypatch.setattr(compiled, "tally", True)
        fast = _through_the_hook(stream, close_every)
        calls = handed_over[0]
        monkeypatch.setattr(compiled, "tally", False)
        assert fast == _through_the_hook(stream, close_every)
        assert calls < len(stream) // 2 and any(r and r[0] == "_Unslotted" and r[1] for r in fast[1])
        handed_over[0] = 0


def test_the_tally_filter_is_device_role_for_every_mix_of_evidence(tally_impl):
    """The filter answers from the evidence where it can (a recorder's model, camera behaviour, a recorder's or the
    gateway's behaviour) and asks Device.role otherwise: for every mix of evidence of each kind, a device's
    observation is tallied exactly when its role is camera. Each device is a camera by its maker first (its window
    open, so that the second observation takes the common case), then has the mix added."""
    from itertools import combinations

    from sensor.enrich.inventory import CAMERA_EVIDENCE, GATEWAY_EVIDENCE, NVR_EVIDENCE
    kinds = ["nvr_model", "unrelated", *sorted(CAMERA_EVIDENCE)[:2], *sorted(NVR_EVIDENCE)[:1],
             *sorted(GATEWAY_EVIDENCE)[:1]]
    mixes = [set(c) for n in range(len(kinds) + 1) for c in combinations(kinds, n)]
    wf = WindowFeatures(max_devices=len(mixes))
    hook = wf.tallier(lambda o, start: None)
    devices = [Device(f"10.1.{i >> 8}.{i & 255}", evidence={"camera_maker"}) for i in range(len(mixes))]
    for device, mix in zip(devices, mixes, strict=True):
        hook(Observation(T0 + 1, device, 3, 300, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))
        device.evidence |= mix
        hook(Observation(T0 + 2, device, 5, 500, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))
    packets = {ip: round(math.expm1(v[1])) for ip, _start, v in wf.flush()}
    assert packets == {d.ip: 8 if d.role == "camera" else 3 for d in devices}
    assert set(packets.values()) == {3, 8}


def test_the_compiled_tally_raises_what_python_does(tally_impl):
    """A camera's observation at a time with no window (NaN) raises as the Python step does; a device that is no
    camera is passed over before its time is looked at, in both."""
    camera, other = Device("10.0.0.5", evidence={"rtsp_server"}), Device("10.0.0.6")
    hook = WindowFeatures().tallier(lambda o, start: None)
    assert (type(hook) is compiled.tally_extension.Tally) == (tally_impl == "compiled")
    for _ in range(2):
        hook(Observation(math.nan, other, 3, 300, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))
        with pytest.raises(ValueError):
            hook(Observation(math.nan, camera, 3, 300, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))


def test_a_closed_window_is_not_the_devices_latest_any_more():
    """After its window is emitted, a device's next observation (a late one, folded forward by the close) goes to
    a new window, never to the emitted one."""
    wf = WindowFeatures()
    hook = wf.tallier(lambda o, start: None)
    camera = Device("10.0.0.5", evidence={"rtsp_server"})
    hook(Observation(T0 + 1, camera, 3, 300, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))
    assert [r[0:2] for r in wf.close(T0 + 60)] == [("10.0.0.5", T0)]
    hook(Observation(T0 + 59, camera, 2, 200, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))   # late
    (ip, start, vector), = wf.flush()
    assert (ip, start) == ("10.0.0.5", T0 + 60) and math.expm1(vector[1]) == pytest.approx(2)


def test_the_shortcuts_skip_the_work_they_are_for(monkeypatch):
    """What issue 16 made cheap stays cheap (a lost shortcut changes no vector, only the cost of every second of
    traffic): a device's next observations and lookups in its latest window find it without a search
    (WindowFeatures._window), and close() looks at no window before the earliest open one has ended."""
    searched, emitted = [], []
    window, emit = WindowFeatures._window, WindowFeatures._emit

    def search(self, ip, start):
        searched.append(start)
        return window(self, ip, start)

    def emitting(self, keys):
        emitted.append(len(keys))
        return emit(self, keys)
    monkeypatch.setattr(WindowFeatures, "_window", search)
    monkeypatch.setattr(WindowFeatures, "_emit", emitting)
    wf = WindowFeatures()
    wf.observe(obs(T0 + 1), new_flow=True)
    wf.observe(obs(T0 + 2, peer="10.0.0.3"), new_flow=True)
    assert wf.dns_query("10.0.0.5", T0 + 3) == T0
    assert searched == [T0]
    assert wf.close(T0 + 59.9) == [] and emitted == []
    wf.observe(obs(T0 + 61), new_flow=False)
    assert searched == [T0, T0 + 60]
    assert len(wf.close(T0 + 60)) == 1 and emitted == [1]
    assert wf.close(T0 + 119.9) == [] and emitted == [1]   # the window at T0 + 60 is open until T0 + 120
    assert len(wf.close(T0 + 120)) == 1 and emitted == [1, 1]


def test_after_a_look_the_compiled_step_takes_the_windows_repeats_again(monkeypatch):
    """A look (partial) leaves the window flagged as not touched, which the compiled Tally flags again itself: only
    the first sight of the variant goes to the Python step, and each look still sees the window."""
    if compiled.tally_extension is None:
        pytest.skip("the C extension sensor._tally was not built on this machine")
    monkeypatch.setattr(compiled, "tally", True)
    handed_over = _count_handed_over(monkeypatch)
    wf = WindowFeatures()
    hook = wf.tallier(lambda o, start: _Tally(o.peer, start))
    camera = Device("10.0.0.5", evidence={"rtsp_server"})
    for k in range(4):
        hook(Observation(T0 + 1 + k, camera, 3, 300, True, "10.0.0.2", 554, "tcp", None, SCOPE_CAMERA, 20))
        [(ip, start, vector)] = wf.partial()
        assert (ip, start, round(math.expm1(vector[1]))) == ("10.0.0.5", T0, 3 * (k + 1))
    assert handed_over[0] == 1


def test_the_python_filter_asks_device_role_only_where_the_evidence_leaves_it_open(monkeypatch):
    """WindowFeatures.tally answers from the evidence where it settles the role (a recorder's model, a gateway's
    behaviour, a camera's) and asks the property only otherwise, and not for an observation that sent nothing."""
    from sensor.enrich.inventory import GATEWAY_EVIDENCE
    monkeypatch.setattr(compiled, "tally", False)
    asked = []
    role = Device.role

    def asking(device):
        asked.append(device.ip)
        return role.fget(device)
    monkeypatch.setattr(Device, "role", property(asking))
    hook = WindowFeatures().tallier(lambda o, start: None)
    for i, evidence in enumerate(({"nvr_model"}, set(sorted(GATEWAY_EVIDENCE)[:1]), {"camera_maker"},
                                  {"rtsp_server"}), 1):
        device = Device(f"10.0.0.{i}", evidence=evidence)
        for packets in (3, 0):
            hook(Observation(T0 + 1, device, packets, 100 * packets, True, "10.0.0.2", 554, "tcp", None,
                             SCOPE_CAMERA, 20))
    assert asked == ["10.0.0.3"]   # the maker's camera, once
