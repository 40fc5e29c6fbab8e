"""Types of sensor/_tally.c, the optional C extension of the anomaly detector's per-observation step, for mypy only."""

from collections.abc import Callable
from typing import Any

class Tally:
    """WindowFeatures.tally's common case compiled; everything else handed to `fallback`."""

    def __init__(
        self, features: Any, fallback: Callable[[Any], None], observation_type: type, window_type: type,
        external: tuple[str, ...], camera_evidence: frozenset[str], not_camera_evidence: frozenset[str],
        nvr_evidence: str, /
    ) -> None: ...
    def __call__(self, obs: Any, /) -> None: ...
