"""The stored model: AnomalyModel (training and calibration, scoring, explanations), its JSON file, its model card
and the strict loader.

A model file is plain JSON (format FORMAT, version FORMAT_VERSION): loading validates every field and never
unpickles, so nothing in the file is executed. The version is a hash of the features and trees only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np

from sensor.errors import CamwatchError
from sensor.model.features import FEATURE_HIGH, FEATURE_SPECS, FEATURES, N_FEATURES, WINDOW_SECONDS
from sensor.model.forest import BACKGROUND_FRACTION, LEAF, Forest, Tree, forest_scores, grow
from sensor.schema import FLAG, INTEGER, LIST, NUMBER, TABLE, Invalid, Section, Text, load, setting

FORMAT = "camwatch-anomaly-model"
FORMAT_VERSION = 1
MIN_TRAINING_WINDOWS = 2      # below this c(n) = 0 and every score is a constant
MAX_TREES = 10_000
MAX_MAX_SAMPLES = 1 << 20
MAX_FILE_BYTES = 256 << 20


def _utc_now() -> str:
    # SOURCE_DATE_EPOCH pins the timestamp so a retrain on the same data reproduces the same file byte for byte.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        when = datetime.fromtimestamp(int(epoch), UTC)
    except (ValueError, OverflowError, OSError):
        raise CamwatchError(f"SOURCE_DATE_EPOCH must be seconds since 1970, not {epoch!r}") from None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value, where: str = "training"):
    """JSON-safe copy of caller-supplied metadata (numpy scalars and paths are common there)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValueError(f"{where}: cannot store a {type(value).__name__} in a model file")


def _content_version(features, max_samples: int, trees: list[dict]) -> str:
    blob = json.dumps({"features": list(features), "max_samples": max_samples, "trees": trees},
                      sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _library_versions() -> dict:
    import sklearn
    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__}


class AnomalyModel:
    """A trained forest plus everything its card states. Construct with train() or load()."""

    def __init__(self, *, name: str, version: str, trained_at: str, threshold: float, features: tuple[str, ...],
                 training: dict, window_seconds: float, max_samples: int, trees: list[Tree], algorithm: dict,
                 calibration: dict, environment: dict, feature_stats: dict):
        self.name = name
        self.version = version
        self.trained_at = trained_at
        self.threshold = threshold
        self.features = features
        self.training = training
        self.window_seconds = window_seconds
        self.max_samples = max_samples
        self.trees = trees
        self._forest: Forest | None = None   # the trees stacked for scoring, built on first use
        self.algorithm = algorithm
        self.calibration = calibration
        self.environment = environment
        self.feature_stats = feature_stats

    def __repr__(self) -> str:
        return (f"AnomalyModel(name={self.name!r}, version={self.version!r}, trees={len(self.trees)}, "
                f"threshold={self.threshold:.4f})")

    # ---- training ---------------------------------------------------------------------------------------
    @classmethod
    def train(cls, vectors: np.ndarray, name: str, training: dict, contamination: float = 0.01,
              random_state: int = 0, *, n_estimators: int = 100, max_samples: int | str = "auto",
              background: float = BACKGROUND_FRACTION, window: float = WINDOW_SECONDS,
              trained_at: str | None = None) -> AnomalyModel:
        """Fit the forest on `vectors` (rows from WindowFeatures) and calibrate the threshold on them.

        `background` is the size of the reference background (see reference_background) as a fraction of the
        training windows; 0 gives a plain Isolation Forest. The threshold is calibrated on the real windows only.
        """
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"training vectors must have shape (n, {N_FEATURES}), not {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("training vectors contain NaN or infinite values")
        if len(x) < MIN_TRAINING_WINDOWS:
            raise CamwatchError(f"cannot train on {len(x)} device window(s): at least {MIN_TRAINING_WINDOWS} are "
                                f"needed, and a useful baseline needs hours of normal traffic")
        if not 0.0 < contamination <= 0.5:
            raise CamwatchError(f"contamination must be in (0, 0.5], not {contamination}")
        if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
            raise ValueError("random_state must be an integer: the model file must be reproducible")
        random_state = int(random_state)
        if not 0.0 <= background <= 1.0:
            raise CamwatchError(f"background must be in [0, 1], not {background}")
        if not 1 <= n_estimators <= MAX_TREES:
            raise CamwatchError(f"n_estimators must be between 1 and {MAX_TREES}, not {n_estimators}")
        training = _plain(dict(training))
        training["windows"] = len(x)

        n_background = math.ceil(background * len(x))
        trees, used = grow(x, n_estimators=n_estimators, max_samples=max_samples, contamination=contamination,
                           random_state=random_state, n_background=n_background)
        scores = forest_scores(trees, used, x)
        quantile = 1.0 - contamination
        # "higher" makes the threshold an actual training score, and only scores beyond it count: with a small
        # contamination the baseline's most unusual minute marks the edge instead of falling just outside it.
        threshold = float(np.quantile(scores, quantile, method="higher"))
        model = cls(
            name=str(name),
            version=_content_version(FEATURES, used, [t.as_json() for t in trees]),
            trained_at=trained_at or _utc_now(),
            threshold=threshold,
            features=FEATURES,
            training=training,
            window_seconds=float(window),
            max_samples=used,
            trees=trees,
            algorithm={"name": "IsolationForest", "library": "scikit-learn", "n_estimators": n_estimators,
                       "max_samples": max_samples, "max_samples_used": used, "max_features": 1.0,
                       "bootstrap": False, "contamination": contamination, "random_state": random_state,
                       "background_fraction": background, "background_points": n_background,
                       "background_high": FEATURE_HIGH.tolist()},
            calibration={"method": "quantile of training scores", "quantile": quantile,
                         "contamination": contamination, "training_windows": len(x),
                         "flagged_training_windows": int((scores > threshold).sum())},
            environment=_library_versions(),
            feature_stats={"min": x.min(axis=0).tolist(), "median": np.median(x, axis=0).tolist(),
                           "p99": np.quantile(x, 0.99, axis=0).tolist(), "max": x.max(axis=0).tolist()},
        )
        return model

    # ---- scoring ----------------------------------------------------------------------------------------
    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Anomaly score per vector, in (0, 1]: higher is more anomalous; compare with `threshold`."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"vectors must have shape (n, {len(self.features)}), not {np.shape(vectors)}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinite values")
        if len(x) == 0:
            return np.zeros(0)
        return self._stacked().scores(x)

    def _stacked(self) -> Forest:
        if self._forest is None:
            self._forest = Forest(self.trees, self.max_samples)
        return self._forest

    def is_anomalous(self, score: float) -> bool:
        return bool(score > self.threshold)

    def attribute(self, vector: np.ndarray) -> np.ndarray:
        """Per feature, how much its splits shortened the window's paths through the forest (forest_credit): the
        features' shares of what made the score high. They sum to c(max_samples) - E[h(x)]; a feature at an
        ordinary value, whose splits do not isolate the window, gets zero or less."""
        return self._stacked().credit(np.asarray(vector, dtype=np.float64).reshape(-1))

    def drivers(self, vector: np.ndarray, limit: int = 3, skip: frozenset[str] = frozenset()) -> list[dict]:
        """The features that drove the window's score, strongest first: those whose splits shortened its paths,
        each with its value and the training median, in natural units (counts, bytes, shares). `skip` names
        features whose value the caller set itself (a partial window's), which are no finding."""
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        credit = self.attribute(v)
        median = np.asarray(self.feature_stats["median"])
        out: list[dict] = []
        for i in np.argsort(-credit, kind="stable"):
            if credit[i] <= 0 or len(out) >= limit:
                break
            if FEATURE_SPECS[i].name in skip:
                continue
            spec = FEATURE_SPECS[i]
            out.append({"feature": spec.name.removeprefix("log_"), "value": _natural(spec, v[i]),
                        "typical": _natural(spec, median[i])})
        return out

    def explain(self, vector: np.ndarray, limit: int = 3, skip: frozenset[str] = frozenset()) -> list[str]:
        """The drivers of one window, strongest first, against the training range, for alert text."""
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        lo = np.asarray(self.feature_stats["min"])
        hi = np.asarray(self.feature_stats["max"])
        index = {spec.name.removeprefix("log_"): i for i, spec in enumerate(FEATURE_SPECS)}
        out = []
        for driver in self.drivers(v, limit, skip):
            i = index[driver["feature"]]
            spec = FEATURE_SPECS[i]
            low, high = _natural(spec, lo[i]), _natural(spec, hi[i])
            seen = f"always {low:.4g}" if lo[i] == hi[i] else f"range {low:.4g} to {high:.4g}"
            out.append(f"{driver['feature']} {driver['value']:.4g} ({seen} in training)")
        return out

    # ---- persistence ------------------------------------------------------------------------------------
    def as_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "trained_at": self.trained_at,
            "features": list(self.features),
            "window_seconds": self.window_seconds,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "algorithm": self.algorithm,
            "environment": self.environment,
            "training": self.training,
            "feature_stats": self.feature_stats,
            "forest": {"max_samples": self.max_samples, "trees": [t.as_json() for t in self.trees]},
        }

    def to_json_text(self) -> str:
        doc = self.as_json()
        forest = doc.pop("forest")
        dump = lambda v: json.dumps(v, sort_keys=True, allow_nan=False)  # noqa: E731
        # One tree per line keeps the file diffable and greppable without putting every number on its own line.
        lines = [f"  {json.dumps(k)}: {dump(v)}," for k, v in doc.items()]
        lines.append(f'  "forest": {{"max_samples": {forest["max_samples"]}, "trees": [')
        lines.append(",\n".join(f"    {dump(t)}" for t in forest["trees"]))
        lines.append("  ]}")
        return "{\n" + "\n".join(lines) + "\n}\n"

    def save(self, path_prefix: str | Path) -> tuple[Path, Path]:
        """Write PREFIX.json (the model) and PREFIX.md (its card); returns both paths."""
        prefix = Path(path_prefix)
        if prefix.suffix in (".json", ".md"):
            prefix = prefix.with_suffix("")
        json_path, card_path = Path(f"{prefix}.json"), Path(f"{prefix}.md")
        try:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(json_path, self.to_json_text())
            _write_atomic(card_path, self.card())
        except OSError as exc:
            raise CamwatchError(f"{json_path}: cannot write the model: {exc.strerror or exc}") from None
        return json_path, card_path

    @classmethod
    def load(cls, path: str | Path) -> AnomalyModel:
        """Read and strictly validate a model file (the .json). Nothing in it is executed."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise CamwatchError(f"{path}: cannot read the model: {exc.strerror or exc}") from None
        try:
            return _parse(raw)
        except _Invalid as exc:
            raise CamwatchError(f"{path}: {exc}") from None

    # ---- model card -------------------------------------------------------------------------------------
    def card(self) -> str:
        """The model card (Markdown): what the model is, what it was trained on, how, and its limits."""
        return "\n".join(self._card_features() + self._card_training() + self._card_method() + self._card_use())

    def _card_features(self) -> list[str]:
        lines = [
            f"# Model card: {self.name}",
            "",
            f"- **Version:** `{self.version}` (first 16 hex digits of the SHA-256 of the features and trees)",
            f"- **Trained:** {self.trained_at}",
            f"- **Model file format:** {FORMAT} v{FORMAT_VERSION}",
            "- **Kind:** unsupervised per-device behaviour baseline for camwatch",
            "",
            "## Features",
            "",
            f"One vector per camera-side device per {self.window_seconds:g}-second window of capture time "
            "(windows aligned to multiples of the window length); windows in which the device sent nothing are "
            "not scored. Features describe behaviour, not identity: no addresses, MACs or names enter the model.",
            "",
            "| # | Feature | Meaning | Training min | median | max |",
            "|---|---------|---------|---|---|---|",
        ]
        stats = self.feature_stats
        for i, spec in enumerate(FEATURE_SPECS):
            lines.append(f"| {i} | `{spec.name}` | {spec.meaning} | {stats['min'][i]:.4g} | "
                         f"{stats['median'][i]:.4g} | {stats['max'][i]:.4g} |")
        return lines

    def _card_training(self) -> list[str]:
        t = self.training
        captures = t.get("captures") or []
        span = _span_text(t.get("start"), t.get("end"))
        lines = [
            "",
            "## Training data",
            "",
            f"- **Device windows:** {t.get('windows')}",
            f"- **Devices:** {t.get('devices', 'not recorded')}",
            f"- **Time span:** {span}",
            f"- **Captures ({len(captures)}):**" + ("" if captures else " not recorded"),
        ]
        lines += [f"  - `{c}`" for c in captures]
        other = {k: v for k, v in t.items() if k not in ("captures", "windows", "devices", "start", "end")}
        lines += [f"- **{k}:** {json.dumps(v)}" for k, v in sorted(other.items())]
        if (t.get("windows") or 0) < 256:
            lines += ["", f"> Trained on fewer device windows ({t.get('windows')}) than one tree's subsample "
                          "(256): the baseline is thin and scores will be noisy."]
        return lines

    def _card_method(self) -> list[str]:
        alg = self.algorithm
        cal = self.calibration
        env = self.environment
        return [
            "",
            "## Algorithm",
            "",
            "Isolation Forest (Liu, Ting and Zhou, 2008) fitted with scikit-learn's `IsolationForest`, then "
            "exported as plain arrays and scored by camwatch in numpy (no pickle).",
            "",
            f"- `n_estimators` = {alg['n_estimators']}",
            f"- `max_samples` = {alg['max_samples']!r} ({alg['max_samples_used']} windows per tree, "
            "drawn without replacement)",
            f"- `max_features` = {alg['max_features']}, `bootstrap` = {alg['bootstrap']}",
            f"- `contamination` = {alg['contamination']}, `random_state` = {alg['random_state']}",
            f"- Reference background: {alg['background_points']} points ({alg['background_fraction']:g} of the "
            "training windows) drawn uniformly from the box [0, high] of each feature's plausible domain and added "
            "to the training windows when growing the trees, not when calibrating the threshold. An Isolation "
            "Forest only splits within the range of its training samples; the background gives it splits beyond "
            "that range, so a window far outside it (or off on a feature that never varied in training) is "
            "isolated quickly instead of scoring like the most extreme training window.",
            "- Score: `2 ** (-mean_path_length / c(max_samples))` in (0, 1], higher is more anomalous; equal to "
            "scikit-learn's `-score_samples`.",
            "",
            "## Threshold",
            "",
            f"- **Score threshold:** {self.threshold:.6f} (a window is anomalous when its score is above it)",
            f"- **Calibration:** the {cal['quantile']:g} quantile (1 - contamination; the next actual training score "
            f"up) of the scores of the {cal['training_windows']} training windows; "
            f"{cal['flagged_training_windows']} of them score above it.",
            "- The threshold can be raised by editing `threshold` in the model file; the version covers only the "
            "features and trees, so that edit does not invalidate it.",
            "",
            "## Environment",
            "",
            f"- Python {env.get('python')}, numpy {env.get('numpy')}, scikit-learn {env.get('scikit-learn')} "
            "(scikit-learn is needed to train, not to score)",
        ]

    def _card_use(self) -> list[str]:
        cal = self.calibration
        return [
            "",
            "## Intended use",
            "",
            "Flag camera-side devices whose traffic in a window departs from what this site's devices did during "
            "training: new destinations, fan-out to many external peers, unusual volumes, port spread, DNS bursts. "
            "An anomaly is a prompt to look, not a verdict; the rule-based egress and segmentation detectors remain "
            "the policy checks.",
            "",
            "## Limits",
            "",
            f"- By construction about {cal['contamination']:.2%} of windows like the training data score above the "
            "threshold: at one window per device per "
            f"{self.window_seconds:g} s that is a steady trickle of false positives on a large site. Raise the "
            "threshold or train with a lower contamination to trade recall for fewer alerts.",
            "- The model is only as clean as its training data: traffic of an already compromised or misbehaving "
            "camera in the training captures becomes normal.",
            "- Site-specific: features depend on this site's allowlist and core-network configuration (allowlisted "
            "destinations are not external), so retrain after changing them, after firmware updates, or when "
            "adding cameras of a new model.",
            "- Everything outside what the training captures covered is novel: train over the site's full cycle "
            "(day and night, weekdays and weekends, motion and none) or quiet hours will score as anomalies.",
            "- Per-window features cannot see slow behaviour spread over many windows (low-and-slow exfiltration) "
            "or behaviour that looks like the training data.",
            "- Scores of windows cut short by the start or end of a capture are less reliable.",
            "",
        ]


def _natural(spec, value: float) -> float:
    """A feature value in the units a reader thinks in (counts and bytes rather than log1p), 4 significant digits."""
    raw = float(np.expm1(value)) if spec.log else float(value)
    return float(f"{raw:.4g}")


def _span_text(start, end) -> str:
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)) or isinstance(start, bool):
        return "not recorded"
    fmt = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    hours = (end - start) / 3600
    return f"{fmt(start)} to {fmt(end)} ({hours:.3g} h)"


def _write_atomic(path: Path, text: str) -> None:
    # A crash mid-write must not leave a truncated model where the sensor will look for one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model and its card are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- strict loading ---------------------------------------------------------------------------------------------

class _Invalid(Exception):
    pass


def _reject_constant(name: str):
    raise _Invalid(f"not a valid model: contains {name}, which is not a number")


# The model file's fields, declared as camwatch.toml's are (sensor.schema). Its sections carry more metadata than
# this (the card prints it), so keys beyond these are kept; what is declared here is what the card and the sensor
# rely on, and the version hash does not cover it.
@dataclass(frozen=True)
class _Training:
    other_keys: ClassVar[bool] = True
    windows: int = setting(kind=INTEGER, doc="device windows trained on")


@dataclass(frozen=True)
class _Calibration:
    other_keys: ClassVar[bool] = True
    quantile: float = setting(kind=NUMBER, doc="quantile of the training scores taken as the threshold")
    contamination: float = setting(kind=NUMBER, doc="share of training windows expected above the threshold")
    training_windows: int = setting(kind=INTEGER, doc="windows the threshold was calibrated on")
    flagged_training_windows: int = setting(kind=INTEGER, doc="of those, the ones scoring above it")


@dataclass(frozen=True)
class _Algorithm:
    other_keys: ClassVar[bool] = True
    n_estimators: int = setting(kind=INTEGER, doc="trees")
    max_samples_used: int = setting(kind=INTEGER, doc="windows per tree")
    max_features: float = setting(kind=NUMBER, doc="share of features per tree")
    bootstrap: bool = setting(kind=FLAG, doc="whether windows were drawn with replacement")
    contamination: float = setting(kind=NUMBER, doc="as trained")
    random_state: int = setting(kind=INTEGER, doc="seed: the file is reproducible")
    background_points: int = setting(kind=INTEGER, doc="points of the reference background")
    background_fraction: float = setting(kind=NUMBER, doc="their share of the training windows")


@dataclass(frozen=True)
class _ModelFile:
    """Everything but `format` and `format_version` (checked first, to say which file this is)."""

    other_keys: ClassVar[bool] = True
    features: list = setting(kind=LIST, expect="a list of feature names", doc="feature names, in order")
    name: str = setting(kind=Text(empty=True), expect="a string", doc="the model's name")
    version: str = setting(kind=Text(empty=True), expect="a string", doc="hash of the features and trees")
    trained_at: str = setting(kind=Text(empty=True), expect="a string", doc="UTC time of training")
    threshold: float = setting(kind=NUMBER, doc="in [0, 1]; a window scoring above it is anomalous")
    window_seconds: float = setting(kind=NUMBER, unit="s", doc="window length, positive")
    training: _Training = setting(kind=Section(_Training), expect="an object", doc="what it was trained on")
    calibration: _Calibration = setting(kind=Section(_Calibration), expect="an object", doc="the threshold's")
    algorithm: _Algorithm = setting(kind=Section(_Algorithm), expect="an object", doc="forest parameters")
    environment: dict = setting(kind=TABLE, expect="an object", doc="library versions at training")
    feature_stats: dict = setting(kind=TABLE, expect="an object",
                                  doc="min, median, p99 and max of each feature over the training windows")
    forest: dict = setting(kind=TABLE, expect="an object", doc="max_samples and the trees")

    def after_load(self, where: str) -> _ModelFile:
        if self.features != list(FEATURES):
            raise _Invalid(f"model features {self.features} differ from this camwatch's {list(FEATURES)}; "
                           "retrain the model with this version of camwatch")
        if not 0.0 <= self.threshold <= 1.0:
            raise _Invalid(f"not a valid model: threshold {self.threshold} is outside [0, 1]")
        if self.window_seconds <= 0:
            raise _Invalid("not a valid model: `window_seconds` must be positive")
        for key in ("min", "median", "p99", "max"):
            values = self.feature_stats.get(key)
            if (not isinstance(values, list) or len(values) != N_FEATURES
                    or not all(type(v) in (int, float) and math.isfinite(v) for v in values)):
                raise _Invalid(f"not a valid model: feature_stats `{key}` must be {N_FEATURES} finite numbers")
        return self


def _fields(doc: dict) -> _ModelFile:
    try:
        return load(_ModelFile, doc)
    except Invalid as exc:
        if "." in exc.key:   # a field of a section
            raise _Invalid(f"not a valid model: `{exc.key}` is missing or not a valid value") from None
        raise _Invalid(f"not a valid model: `{exc.key}` " + ("is missing" if exc.missing else
                                                             f"must be {exc.expect}")) from None


def _int_array(tree: dict, key: str, i: int) -> np.ndarray:
    values = tree.get(key)
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise _Invalid(f"not a valid model: tree {i} `{key}` must be a list of integers")
    if any(abs(v) >= 1 << 62 for v in values):
        raise _Invalid(f"not a valid model: tree {i} `{key}` holds an integer out of range")
    return np.array(values, dtype=np.int64)


def _parse(raw: bytes) -> AnomalyModel:
    doc = _document(raw)
    fields = _fields(doc)
    # Optional, and worded apart from the declared fields (which are "missing or not a valid value").
    captures = doc["training"].get("captures", [])
    if not isinstance(captures, list) or not all(isinstance(c, str) for c in captures):
        raise _Invalid("not a valid model: `training.captures` must be a list of file names")
    max_samples, trees = _forest(fields.forest)

    # Checked after the structure, so a damaged tree is reported as what it is rather than as a hash mismatch.
    if _content_version(fields.features, max_samples, fields.forest["trees"]) != fields.version:
        raise _Invalid(f"model content does not match its version {fields.version!r} (edited or corrupted); "
                       "retrain or restore the model")
    # The sections stay as written: the card prints metadata beyond the declared fields.
    return AnomalyModel(name=fields.name, version=fields.version, trained_at=fields.trained_at,
                        threshold=fields.threshold, features=FEATURES, training=doc["training"],
                        window_seconds=fields.window_seconds, max_samples=max_samples, trees=trees,
                        algorithm=doc["algorithm"], calibration=doc["calibration"], environment=fields.environment,
                        feature_stats=fields.feature_stats)


def _document(raw: bytes) -> dict:
    """The file's JSON object, once it is known to be a camwatch model of the version this camwatch reads."""
    if len(raw) > MAX_FILE_BYTES:
        raise _Invalid(f"not a valid model: larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("not a camwatch model file (not UTF-8 JSON; pickled models are not accepted)") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"not a valid model: corrupt or truncated JSON ({exc.msg} at line {exc.lineno} column "
                       f"{exc.colno})") from None
    except RecursionError:
        raise _Invalid("not a valid model: JSON nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _Invalid(f"not a camwatch model file (no \"format\": \"{FORMAT}\")")
    fv = doc.get("format_version")
    if fv != FORMAT_VERSION or isinstance(fv, bool):
        raise _Invalid(f"unsupported model format version {fv!r} (this camwatch reads {FORMAT_VERSION}); "
                       "retrain the model with this version of camwatch")
    return doc


def _forest(forest: dict) -> tuple[int, list[Tree]]:
    max_samples = forest.get("max_samples")
    if type(max_samples) is not int or not 1 <= max_samples <= MAX_MAX_SAMPLES:
        raise _Invalid(f"not a valid model: forest `max_samples` must be an integer in [1, {MAX_MAX_SAMPLES}]")
    raw_trees = forest.get("trees")
    if not isinstance(raw_trees, list) or not 1 <= len(raw_trees) <= MAX_TREES:
        raise _Invalid(f"not a valid model: forest `trees` must be a list of 1 to {MAX_TREES} trees")
    return max_samples, [_parse_tree(t, i, max_samples) for i, t in enumerate(raw_trees)]


def _parse_tree(tree, i: int, max_samples: int) -> Tree:
    if not isinstance(tree, dict):
        raise _Invalid(f"not a valid model: tree {i} must be an object")
    left = _int_array(tree, "children_left", i)
    right = _int_array(tree, "children_right", i)
    feature = _int_array(tree, "feature", i)
    counts = _int_array(tree, "n_node_samples", i)
    thr = tree.get("threshold")
    if not isinstance(thr, list) or not all(type(v) in (int, float) for v in thr):
        raise _Invalid(f"not a valid model: tree {i} `threshold` must be a list of numbers")
    threshold = np.array(thr, dtype=np.float64)
    n = len(left)
    if n == 0 or n > 2 * max_samples - 1:
        raise _Invalid(f"not a valid model: tree {i} has {n} nodes (must be 1 to {2 * max_samples - 1})")
    if not len(right) == len(feature) == len(threshold) == len(counts) == n:
        raise _Invalid(f"not a valid model: tree {i} arrays have different lengths")
    if not np.isfinite(threshold).all():
        raise _Invalid(f"not a valid model: tree {i} has a non-finite threshold")
    leaf = left == LEAF
    if not np.array_equal(leaf, right == LEAF):
        raise _Invalid(f"not a valid model: tree {i} has a node with only one child")
    inner = ~leaf
    idx = np.arange(n)
    # Children after their parent: traversal then always moves forward and must end at a leaf.
    for side, kids in (("left", left), ("right", right)):
        if ((kids[inner] <= idx[inner]) | (kids[inner] >= n)).any():
            raise _Invalid(f"not a valid model: tree {i} has a {side} child index out of range")
    refs = np.bincount(np.concatenate((left[inner], right[inner])), minlength=n)
    if refs[0] != 0 or (refs[1:] != 1).any():
        raise _Invalid(f"not a valid model: tree {i} is not a tree (a node has no parent or several)")
    if ((feature[inner] < 0) | (feature[inner] >= N_FEATURES)).any():
        raise _Invalid(f"not a valid model: tree {i} splits on a feature index out of range")
    if (counts < 1).any() or counts[0] > max_samples:
        raise _Invalid(f"not a valid model: tree {i} has node sample counts out of range")
    if (counts[inner] != counts[left[inner]] + counts[right[inner]]).any():
        raise _Invalid(f"not a valid model: tree {i} node sample counts do not add up")
    return Tree(left, right, feature, threshold, counts)
