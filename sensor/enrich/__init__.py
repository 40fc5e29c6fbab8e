"""Enrich stage: who each camera-side host is (MAC, manufacturer, role, identity) and what each destination is
(scope, name). The pipeline drives it through Enricher (stage.py); the rest of camwatch imports the names below."""

from sensor.enrich.events import (
    DnsAnswer,
    DnsQuery,
    EventSink,
    FileFetch,
    IdentityReport,
    Observation,
    UpnpRequest,
)
from sensor.enrich.inventory import (
    MAX_PEERS_PER_DEVICE,
    MAX_QUERIES_PER_DEVICE,
    Device,
    Inventory,
    top_destinations,
)
from sensor.enrich.makers import CoveredMakers, ManufDatabase, format_mac, parse_manuf
from sensor.enrich.naming import NameCache
from sensor.enrich.scope import (
    EXTERNAL_SCOPES,
    SCOPE_ALLOWED,
    SCOPE_CAMERA,
    SCOPE_CORE,
    SCOPE_LINK_LOCAL,
    SCOPE_MULTICAST,
    SCOPE_OTHER,
    SCOPE_PRIVATE,
    SCOPE_PUBLIC,
    SCOPES,
    Classifier,
)
from sensor.enrich.stage import Enricher
from sensor.reference_data import COVERED_MAKERS_FILE, Maker

__all__ = [
    "COVERED_MAKERS_FILE", "EXTERNAL_SCOPES", "MAX_PEERS_PER_DEVICE", "MAX_QUERIES_PER_DEVICE", "SCOPES",
    "SCOPE_ALLOWED", "SCOPE_CAMERA", "SCOPE_CORE", "SCOPE_LINK_LOCAL", "SCOPE_MULTICAST", "SCOPE_OTHER",
    "SCOPE_PRIVATE", "SCOPE_PUBLIC", "Classifier", "CoveredMakers", "Device", "DnsAnswer", "DnsQuery", "Enricher",
    "EventSink", "FileFetch", "IdentityReport", "Inventory", "Maker", "ManufDatabase", "NameCache", "Observation",
    "UpnpRequest", "format_mac", "parse_manuf", "top_destinations",
]
