"""Detect stage: detectors over enrichment events, one module each, run by the framework (framework.py) in the
order of the registry (registry.py). See docs/detectors.md for what each looks for and how to add one."""

from sensor.detect.alert import SEVERITIES, Alert
from sensor.detect.anomaly import AnomalyDetector
from sensor.detect.base import HOOKS, Detector, DetectorContext
from sensor.detect.beacon import beacon_score
from sensor.detect.beaconing import BeaconingDetector
from sensor.detect.egress_policy import EgressPolicyDetector
from sensor.detect.episodes import MAX_EPISODES, Episodes, tracked_pairs
from sensor.detect.hardcoded_infra import HardcodedInfraDetector
from sensor.detect.indicators import Indicators
from sensor.detect.new_destination import NewDestinationDetector
from sensor.detect.registry import DETECTORS
from sensor.detect.segmentation import SegmentationDetector
from sensor.detect.vendor_cloud import VendorCloudDetector
from sensor.detect.video_egress import VideoEgressDetector
from sensor.enrich import Observation
from sensor.reference_data import INDICATORS_FILE, Service

__all__ = [
    "DETECTORS", "HOOKS", "INDICATORS_FILE", "MAX_EPISODES", "SEVERITIES", "Alert", "AnomalyDetector",
    "BeaconingDetector", "Detector", "DetectorContext", "EgressPolicyDetector", "Episodes", "HardcodedInfraDetector",
    "Indicators", "NewDestinationDetector", "Observation", "SegmentationDetector", "Service", "VendorCloudDetector",
    "VideoEgressDetector", "beacon_score", "tracked_pairs",
]
