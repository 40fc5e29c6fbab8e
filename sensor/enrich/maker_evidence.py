"""Who made a device, from everything it shows: its MAC prefix, what it says about itself (banners, discovery
replies, mDNS, SSDP, DHCP, certificates, web titles) and what it does (the vendor clouds it uses, the names it
looks up). Each piece is an item of evidence with a weight (SOURCES, documented in docs/identity.md); the maker is
the best-supported one, and a covered maker reached through an OEM badge or against its MAC prefix says so
(`covered_basis` "oem" or "behaviour").

Badges are not makers: a module maker's prefix (Texas Instruments, Espressif, ...) names the radio, and an OEM
brand (brands.toml) names the reseller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sensor.dissect import wire_text
from sensor.enrich.makers import CoveredMakers
from sensor.reference_data import BRANDS_FILE, BrandFile, Maker, Oem, Service, load_brands
from sensor.schema import Values

# source -> weight. Self-descriptions a device gives in its own protocols weigh most; a DNS lookup least, since
# an app on a phone looks up the same names.
SOURCES: dict[str, int] = {
    "discovery": 5,   # a maker's own discovery protocol answered (SADP: Hikvision, DHIP: Dahua) and its fields
    "onvif": 4,       # ONVIF scopes: name, hardware
    "ssdp": 4,        # UPnP device description: manufacturer, modelName
    "banner": 4,      # HTTP/RTSP/SSDP Server header
    "oui": 3,         # the MAC prefix's organisation (Wireshark manuf); a module maker's weighs nothing
    "service": 3,     # traffic with a maker's cloud or P2P service (name, signature or port)
    "mdns": 3,        # mDNS host/instance names, TXT model
    "title": 3,       # the web UI's <title>
    "tls": 3,         # the subject or issuer of the certificate of the device's own TLS service
    "dhcp": 2,        # DHCP host name (option 12) and vendor class (option 60)
    "dns": 1,         # a lookup of a maker's cloud name
}
# Sources that are the device describing itself; the rest is behaviour. A covered maker found only by behaviour
# has basis "behaviour".
SELF_SOURCES = frozenset({"discovery", "onvif", "ssdp", "banner", "oui", "mdns", "title", "tls", "dhcp"})
# Device.identity key -> the source it is evidence of. Keys not listed (serial, firmware, location, protocol) never
# name a maker: a serial number that happens to contain "DS-2CD" says nothing about who answers.
IDENTITY_SOURCES: dict[str, str] = {
    "server": "banner", "model": "banner", "vendor": "banner", "device_type": "banner", "name": "onvif",
    "manufacturer": "ssdp", "model_name": "ssdp", "friendly_name": "ssdp", "model_description": "ssdp",
    "upnp_device_type": "ssdp", "mdns_name": "mdns", "mdns_instance": "mdns", "mdns_model": "mdns",
    "mdns_service": "mdns",
    "title": "title", "tls_subject": "tls", "tls_issuer": "tls", "dhcp_hostname": "dhcp", "dhcp_vendor_class": "dhcp",
}
# Discovery protocols that only one maker speaks (identity["protocol"] from sensor.dissect) and what the model,
# vendor and device-type fields they carry count as.
PROTOCOL_MAKERS = {"sadp": "Hikvision", "dhip": "Dahua"}
PROTOCOL_SOURCES = {"sadp": "discovery", "dhip": "discovery", "onvif": "onvif"}
MAX_ITEMS = 16        # per device; one per (source, maker), the first detail kept
MAX_DETAIL = 96
# Organisations come from the manuf list, not the wire, but a forged-MAC flood can name thousands of them: the cache
# of what each says starts over when full rather than grow.
MAX_OUI_FACTS = 4096


@dataclass(frozen=True, slots=True)
class MakerEvidence:
    """One item of evidence of who made a device."""

    source: str    # a SOURCES key
    detail: str    # what was seen, as seen (escaped, cut)
    maker: str     # the maker it points to: a covered maker's, an OEM brand's, a brands.toml maker's or a manuf name
    weight: int

    def as_dict(self) -> dict:
        return {"source": self.source, "detail": self.detail, "maker": self.maker, "weight": self.weight}


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Verdict(Values):
    """What the evidence says: the maker (covered or not), the covered maker if any and why."""

    name: str | None            # best-supported maker; None when only a module (or nothing) speaks
    covered: Maker | None
    basis: str | None           # the maker's own basis ("named", "prc-nil"), "oem" or "behaviour"
    note: str | None            # a relabel or OEM finding, in words
    cameras: bool = False       # the maker makes cameras and recorders only


NOTHING = Verdict(None, None, None, None)


def shown(text: str) -> str:
    return wire_text(text.encode("utf-8", "surrogateescape"), MAX_DETAIL)


class MakerJudge:
    """The covered-maker list and brands.toml, as evidence items and a verdict over them."""

    def __init__(self, covered: CoveredMakers, brands: BrandFile):
        self.covered = covered
        self.brands = brands
        self.version = brands.version
        self._covered_by_name = {m.name: m for m in covered.makers}
        self._oem_by_name = {o.name: o for o in brands.oem}
        self._camera_makers = {m.name for m in brands.maker if m.cameras}
        self._oui_facts: dict[str | None, tuple[str | None, MakerEvidence | None]] = {}
        self._single_verdicts: dict[MakerEvidence, Verdict] = {}

    @classmethod
    def load(cls, covered: CoveredMakers, path: Path = BRANDS_FILE) -> MakerJudge:
        return cls(covered, load_brands(path))

    # ---- items ------------------------------------------------------------------------------------------------
    def module_of(self, organisation: str | None) -> str | None:
        if organisation:
            for module in self.brands.module:
                if any(p.search(organisation) for p in module.manuf):
                    return module.name
        return None

    def oui_facts(self, organisation: str | None) -> tuple[str | None, MakerEvidence | None]:
        """module_of and from_oui together, remembered per organisation: a new device with a known MAC prefix (a
        flood of forged sources behind one switch) would otherwise run every module, OEM and maker pattern again."""
        facts = self._oui_facts.get(organisation)
        if facts is None:
            if len(self._oui_facts) >= MAX_OUI_FACTS:
                self._oui_facts.clear()
            facts = self._oui_facts[organisation] = (self.module_of(organisation), self.from_oui(organisation))
        return facts

    def from_oui(self, organisation: str | None) -> MakerEvidence | None:
        """The MAC prefix's organisation as evidence; None for a module maker, an unknown or a local address."""
        if not organisation or organisation.startswith("(") or self.module_of(organisation):
            return None
        found = self.covered.by_manufacturer(organisation)
        name = (found.name if found else self._oem(organisation, "manuf")
                or self._other(organisation, "manuf") or organisation)
        return MakerEvidence("oui", shown(f"MAC prefix {organisation}"), name, SOURCES["oui"])

    def from_text(self, source: str, label: str, text: str) -> MakerEvidence | None:
        """A name or model string the device gave (label: what it is, "server", "mDNS name", ...)."""
        if not text:
            return None
        found = self.covered.by_banner(text)
        name = found.name if found else self._oem(text, "banners") or self._other(text, "banners")
        if name is None:
            return None
        return MakerEvidence(source, shown(f"{label}: {text}"), name, SOURCES[source])

    def from_identity(self, identity: dict[str, str]) -> list[MakerEvidence]:
        protocol = identity.get("protocol", "")
        out = []
        for key, source in IDENTITY_SOURCES.items():
            value = identity.get(key)
            if isinstance(value, str):
                if key in ("model", "vendor", "device_type"):
                    source = PROTOCOL_SOURCES.get(protocol, source)
                item = self.from_text(source, key, value)
                if item is not None:
                    out.append(item)
        if protocol in PROTOCOL_MAKERS:   # after the fields: a model the reply names is the better detail
            out.append(MakerEvidence("discovery", f"answers {protocol.upper()} discovery", PROTOCOL_MAKERS[protocol],
                                     SOURCES["discovery"]))
        return out

    @staticmethod
    def from_service(svc: Service, how: str, seen: str) -> MakerEvidence | None:
        """Traffic with a maker's service (how: "dns" for a lookup of its name `seen`, else "service", recognised
        by `seen`)."""
        if not svc.maker:
            return None
        if how == "dns":
            return MakerEvidence(how, shown(f"looked up {seen}, a name of {svc.name}"), svc.maker, SOURCES[how])
        return MakerEvidence(how, shown(f"speaks {svc.name} ({seen})"), svc.maker, SOURCES[how])

    def _oem(self, text: str, field: str) -> str | None:
        for oem in self.brands.oem:
            if any(p.search(text) for p in getattr(oem, field)):
                return oem.name
        return None

    def _other(self, text: str, field: str) -> str | None:
        for maker in self.brands.maker:
            if any(p.search(text) for p in getattr(maker, field)):
                return maker.name
        return None

    # ---- the verdict ------------------------------------------------------------------------------------------
    def verdict(self, items: list[MakerEvidence]) -> Verdict:
        """The best-supported maker: summed weights per maker, an OEM badge counting for its covered maker when
        its entry stands alone or other evidence names that maker. Ties go to a covered maker, then to the
        maker whose evidence came first."""
        if len(items) != 1:
            return self._verdict(items)
        # One item is what a new device has (its MAC prefix): a flood of them asks the same few questions.
        found = self._single_verdicts.get(items[0])
        if found is None:
            if len(self._single_verdicts) >= MAX_OUI_FACTS:
                self._single_verdicts.clear()
            found = self._single_verdicts[items[0]] = self._verdict(items)
        return found

    def _verdict(self, items: list[MakerEvidence]) -> Verdict:
        if not items:
            return NOTHING
        scores: dict[str, int] = {}
        for item in items:
            scores[item.maker] = scores.get(item.maker, 0) + item.weight
        counted = self._counted_oems(items, scores)
        for oem in counted:
            scores[oem.maker] = scores.get(oem.maker, 0) + scores.pop(oem.name, 0)
        order = {item.maker: i for i, item in reversed(list(enumerate(items)))}
        best = min((m for m in scores if scores[m] > 0),
                   key=lambda m: (-scores[m], m not in self._covered_by_name, order.get(m, len(items))),
                   default=None)
        if best is None:
            return NOTHING
        covered = self._covered_by_name.get(best)
        if covered is None:
            return Verdict(best, None, None, None, best in self._camera_makers)
        basis, note = self._basis(items, covered, counted)
        return Verdict(best, covered, basis, note, covered.cameras)

    def _counted_oems(self, items: list[MakerEvidence], scores: dict[str, int]) -> list[Oem]:
        out = []
        for name in {i.maker for i in items if i.maker in self._oem_by_name}:
            oem = self._oem_by_name[name]
            if oem.alone or scores.get(oem.maker, 0) > 0:
                out.append(oem)
        return out

    def _basis(self, items: list[MakerEvidence], maker: Maker, oems: list[Oem]) -> tuple[str, str | None]:
        """Why the covered maker: named by the device itself (its own basis), through an OEM badge ("oem"), or by
        behaviour alone ("behaviour"); and the relabel or OEM finding in words."""
        oem_names = {o.name for o in oems if o.maker == maker.name}
        oui = next((i for i in items if i.source == "oui"), None)
        behaviour = max((i for i in items if i.maker == maker.name and i.source not in SELF_SOURCES),
                        key=lambda i: i.weight, default=None)
        direct = any(i.maker == maker.name and i.source in SELF_SOURCES for i in items)
        if oui is not None and oui.maker in oem_names:
            return "oem", f"{oui.detail}: {oui.maker} is a {maker.name} OEM brand"
        badge = oui if oui is not None and oui.maker != maker.name else None
        note = None
        if badge is not None:
            why = behaviour.detail if behaviour is not None else _first_detail(items, maker.name)
            note = f"{badge.detail}, {why}: likely a {maker.name} OEM or relabelled unit"
        if oui is not None and oui.maker == maker.name:
            return maker.basis, None
        if direct:
            return maker.basis, note
        if oem_names:
            brand = next(i for i in items if i.maker in oem_names)
            return "oem", note or f"{brand.detail}: {brand.maker} is a {maker.name} OEM brand"
        return "behaviour", note

    def role_of(self, texts: Iterable[str]) -> str | None:
        """"nvr" or "camera" when a name or model string says so (a recorder's words first: an NVR's banner
        often says "camera" too)."""
        values = [t for t in texts if t]
        if any(p.search(t) for t in values for p in self.brands.roles.nvr):
            return "nvr"
        if any(p.search(t) for t in values for p in self.brands.roles.camera):
            return "camera"
        return None


def _first_detail(items: list[MakerEvidence], maker: str) -> str:
    return next((i.detail for i in items if i.maker == maker and i.source != "oui"), maker)


# Role words are read from every name a device gives and the SSDP location it announces (an Edimax camera's
# /IPCamDesc.xml), which names no maker.
ROLE_KEYS = (*IDENTITY_SOURCES, "location")
