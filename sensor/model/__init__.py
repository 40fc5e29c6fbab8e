"""Learned per-device behaviour model: an Isolation Forest over per-device, per-window traffic features.

Training uses scikit-learn's IsolationForest; the fitted trees are then exported as plain numeric arrays to JSON
and scored here in numpy, so loading a model never unpickles (never runs code from the file) and the sensor does not
depend on scikit-learn's private estimator state staying compatible across versions.

Scores follow the original paper, s = 2^(-E[h(x)] / c(n)), in (0, 1]: higher is more anomalous. They equal
scikit-learn's `-IsolationForest.score_samples(X)` for the same trees.

  features.py  per-device, per-window feature vectors (WindowFeatures) and the training summary
  forest.py    the Isolation Forest maths on plain arrays: c(n), trees, the reference background, scoring, growing
  store.py     AnomalyModel: training and calibration, scoring, the JSON file, the model card, strict loading
"""

import importlib
from typing import TYPE_CHECKING

from sensor.model.features import (
    FEATURE_HIGH,
    FEATURE_SPECS,
    FEATURES,
    MAX_DISTINCT,
    WINDOW_SECONDS,
    Feature,
    WindowFeatures,
    training_summary,
)

if TYPE_CHECKING:
    from sensor.model.forest import BACKGROUND_FRACTION, average_path_length, reference_background
    from sensor.model.store import (
        FORMAT,
        FORMAT_VERSION,
        MAX_FILE_BYTES,
        MAX_MAX_SAMPLES,
        MAX_TREES,
        MIN_TRAINING_WINDOWS,
        AnomalyModel,
    )

# The forest and the model file are imported on first use (PEP 562): every run collects windows' features, only
# runs given a model (or training one) score them.
_HOMES = {"BACKGROUND_FRACTION": "forest", "average_path_length": "forest", "reference_background": "forest",
          "FORMAT": "store", "FORMAT_VERSION": "store", "MAX_FILE_BYTES": "store", "MAX_MAX_SAMPLES": "store",
          "MAX_TREES": "store", "MIN_TRAINING_WINDOWS": "store", "AnomalyModel": "store"}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"sensor.model.{home}"), name)

__all__ = [
    "BACKGROUND_FRACTION",
    "FEATURES",
    "FEATURE_HIGH",
    "FEATURE_SPECS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_DISTINCT",
    "MAX_FILE_BYTES",
    "MAX_MAX_SAMPLES",
    "MAX_TREES",
    "MIN_TRAINING_WINDOWS",
    "WINDOW_SECONDS",
    "AnomalyModel",
    "Feature",
    "WindowFeatures",
    "average_path_length",
    "reference_background",
    "training_summary",
]
