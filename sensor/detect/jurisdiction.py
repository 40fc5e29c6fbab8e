"""jurisdiction: a camera-side device sending to an address attributed to a watched country ([policy]
watch_countries, by default the directive's concern: CN, HK, MO).

The attribution is the registry's (the country where the address block's holder registered it) and, when the site
gives a country database, the geolocated one too: either makes the traffic evidence. A holder registered in a
watched country answers to its law wherever its server stands; a server standing there is within its reach whoever
holds the block. Neither says what the traffic is: that is the other detectors' evidence, on the same incident.
"""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector, DetectorContext
from sensor.detect.connectivity import only_pings
from sensor.detect.text import covered_note, describe_destination, describe_device, plural
from sensor.enrich import SCOPE_PUBLIC, Observation
from sensor.enrich.geography import Geography, Place


def watched(geography: Geography, watch: frozenset[str], ip: str) -> tuple[Place | None, tuple[str, ...]]:
    """The destination's place and the watched countries it is attributed to (none: not watched)."""
    place = geography.place(ip) if watch else None
    if place is None:
        return None, ()
    # Place.countries() filtered by `watch`, without building it: asked for every observation of an outside peer.
    country, registry = place.country, place.registry_country
    if country in watch:
        return place, (country,) if registry == country or registry not in watch else (country, registry)
    return place, (registry,) if registry in watch else ()


def attribution(place: Place, countries: tuple[str, ...]) -> str:
    """"registered in CN", "located in HK", or both, for a summary."""
    parts = []
    if place.registry_country in countries:
        parts.append(f"registered in {place.registry_country}")
    if place.country in countries and place.country != place.registry_country:
        parts.append(f"located in {place.country}")
    return " and ".join(parts)


class JurisdictionDetector(Detector):
    """One detection per (device, address) episode, like egress_policy: medium, high for a covered maker. The
    device must itself send, and more than pings (a connectivity check carries nothing out). An allow rule
    covering the destination silences it, as it does egress_policy: the site has decided about that peer."""

    name = "jurisdiction"
    interest = frozenset({SCOPE_PUBLIC})

    def __init__(self, context: DetectorContext):
        super().__init__(context)
        self.watch = frozenset(context.config.watch_countries)
        self.geography = context.geography

    @classmethod
    def wanted(cls, context: DetectorContext) -> bool:
        return bool(context.config.watch_countries)

    def observe(self, obs: Observation) -> Alert | None:
        if obs.scope != SCOPE_PUBLIC or obs.sent_packets == 0 or only_pings(obs):
            return None
        place, countries = watched(self.geography, self.watch, obs.peer)
        if place is None or not countries:
            return None
        if not self.new_episode((obs.device.id, obs.peer), obs.ts, obs.sent_packets, obs.sent_bytes):
            return None
        dev = obs.device
        where = attribution(place, countries)
        destination = describe_destination(obs.peer, obs.name, obs.port, obs.proto)
        summary = (f"{describe_device(dev)} sent {plural(obs.sent_bytes, 'byte')} to {destination}, an address "
                   f"{where}: a watched jurisdiction ([policy] watch_countries).{covered_note(dev)}")
        return self.alert(obs, "high" if dev.covered else "medium", 1.0, summary, jurisdiction=list(countries),
                          evidence=f"{destination} {where}")
