"""The detectors, in the order they see each event (and so the order of alerts raised by one event).

Adding one: write sensor/detect/<name>.py with a Detector subclass, import it here and add it to DETECTORS.
Everything else (the pipeline, the metrics' detector labels, the docs check, the tests) reads this tuple.
"""

from __future__ import annotations

from sensor.detect.anomaly import AnomalyDetector
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.beaconing import BeaconingDetector
from sensor.detect.cleartext_fetch import CleartextFetchDetector
from sensor.detect.egress_policy import EgressPolicyDetector
from sensor.detect.hardcoded_infra import HardcodedInfraDetector
from sensor.detect.jurisdiction import JurisdictionDetector
from sensor.detect.lateral_movement import LateralMovementDetector
from sensor.detect.new_destination import NewDestinationDetector
from sensor.detect.segmentation import SegmentationDetector
from sensor.detect.vendor_cloud import VendorCloudDetector
from sensor.detect.video_egress import VideoEgressDetector

DETECTORS: tuple[type[Detector], ...] = (
    EgressPolicyDetector,
    SegmentationDetector,
    LateralMovementDetector,
    VendorCloudDetector,
    HardcodedInfraDetector,
    CleartextFetchDetector,
    VideoEgressDetector,
    BeaconingDetector,
    NewDestinationDetector,
    JurisdictionDetector,
    AnomalyDetector,
)


def names() -> tuple[str, ...]:
    return tuple(cls.name for cls in DETECTORS)


def build(context: DetectorContext) -> list[Detector]:
    """One instance of every registered detector this run wants, in registry order."""
    return [cls(context) for cls in DETECTORS if cls.wanted(context)]
