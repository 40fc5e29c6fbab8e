"""sensor/enrich/maker_evidence.py through the inventory: each evidence source names the maker with its weight, the
verdict sums them (ties to a covered maker), OEM badges and relabels get their basis, module MAC prefixes never
count, roles come from model strings and behaviour and never go back, and the items survive a restart, bounded.
The MAC prefixes are real OUIs of the installed Wireshark manuf (checked here)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from packets import dns_query, ethernet, ipv4, mac, tcp, tls_client_hello, udp
from sensor.capture import Batch
from sensor.config import Config
from sensor.detect.indicators import Indicators
from sensor.enrich import CoveredMakers, Device, Inventory, ManufDatabase
from sensor.enrich.maker_evidence import MAX_ITEMS, SOURCES, MakerEvidence
from sensor.pipeline import Sensor
from sensor.reference_data import BRANDS_FILE, INDICATORS_FILE, load_brands
from sensor.tags import TAG_PPPP_LOGIN, PayloadTagger

MAKERS = CoveredMakers.load()
INDICATORS = Indicators.load()
MANUF = ManufDatabase.load()
HIK_CONNECT = INDICATORS.by_name("litedev.hik-connect.com")
AXIS, APPLE, TI = 0xACCC8E000005, 0x3C22FB000001, 0x00124B000001
AMCREST, LOREX, SWANN, DLINK = 0x9C8ECD000001, 0x001F54000001, 0xBC51FE000001, 0xB0C554000001


def _inventory() -> Inventory:
    inventory = Inventory(Config(), MANUF, MAKERS)
    inventory.service_of_name = INDICATORS.by_name
    return inventory


def test_the_example_prefixes_are_what_the_tests_say():
    assert [MANUF.lookup(m) for m in (AXIS, APPLE, TI, AMCREST, LOREX, SWANN, DLINK)] == [
        "Axis Communications AB", "Apple, Inc.", "Texas Instruments", "Amcrest Technologies",
        "Lorex Technology Inc.", "Swann communications Pty Ltd", "D-Link International"]


# ---- each source --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,source,maker", [
    ({"server": "App-webs/"}, "banner", "Hikvision"),
    ({"protocol": "sadp", "model": "DS-2CD2143G0-I"}, "discovery", "Hikvision"),
    ({"protocol": "dhip", "model": "IPC-HFW1230S"}, "discovery", "Dahua"),     # the protocol itself is Dahua's
    ({"protocol": "onvif", "name": "UNV"}, "onvif", "Uniview"),
    ({"protocol": "onvif", "model": "DS-2DE4425IW-DE"}, "onvif", "Hikvision"),
    ({"manufacturer": "Hikvision"}, "ssdp", "Hikvision"),
    ({"model_name": "DH-IPC-HDW1230S"}, "ssdp", "Dahua"),
    ({"mdns_name": "HiLook-IPC-B140H"}, "mdns", "Hikvision"),
    ({"mdns_model": "TIANDY TC-C32"}, "mdns", "Tiandy"),
    ({"title": "Hikvision Web Client"}, "title", "Hikvision"),
    ({"tls_subject": "CN=IPC, O=Dahua"}, "tls", "Dahua"),
    ({"tls_issuer": "CN=Hikvision Root CA"}, "tls", "Hikvision"),
    ({"dhcp_hostname": "DS-2CD2143G0-I"}, "dhcp", "Hikvision"),
    ({"dhcp_vendor_class": "dahua"}, "dhcp", "Dahua"),
])
def test_each_identity_source_names_the_maker_with_its_weight(fields, source, maker):
    inventory = _inventory()
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, fields)
    assert dev.maker.name == maker and dev.covered
    top = dev.ranked_evidence()[0]
    assert (top.source, top.maker, top.weight) == (source, maker, SOURCES[source])


def test_serial_firmware_and_location_never_name_a_maker():
    inventory = _inventory()
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, {"serial": "DS-2CD2143G0-I2020", "firmware": "Hikvision V5",
                                 "location": "http://10.30.0.5/hikvision.xml"})
    assert dev.maker is None and dev.maker_items == []


def test_a_vendor_service_and_a_lookup_of_its_name_are_behaviour():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", 0, 1.0)
    inventory.record_query(dev, "litedev.hik-connect.com", 1.0)
    assert (dev.maker.name, dev.covered_basis) == ("Hikvision", "behaviour")
    assert [(i.source, i.detail, i.weight) for i in dev.maker_items] == [
        ("dns", "looked up litedev.hik-connect.com, a name of Hik-Connect / EZVIZ cloud (Hikvision)", 1)]
    inventory.record_query(dev, "api.hik-connect.com", 2.0)        # one item per source and maker
    inventory.note_service(dev, HIK_CONNECT, "service", "name litedev.hik-connect.com")
    assert [i.source for i in dev.ranked_evidence()] == ["service", "dns"]


def test_services_without_a_maker_name_none():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", 0, 1.0)
    inventory.note_service(dev, INDICATORS.by_name("x.iotcplatform.com"), "service", "name x.iotcplatform.com")
    inventory.record_query(dev, "www.example.com", 1.0)
    assert dev.maker_items == [] and dev.maker_label is None


# ---- conflicts -----------------------------------------------------------------------------------------------
def test_an_axis_prefix_that_speaks_hik_connect_is_a_covered_relabel():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", AXIS, 1.0)
    assert (dev.maker_label, dev.covered) == ("Axis", False)
    inventory.note_service(dev, HIK_CONNECT, "service", "name litedev.hik-connect.com")
    assert (dev.maker.name, dev.covered_basis, dev.role) == ("Hikvision", "behaviour", "camera")
    assert dev.verdict.note == ("MAC prefix Axis Communications AB, speaks Hik-Connect / EZVIZ cloud (Hikvision) "
                                "(name litedev.hik-connect.com): likely a Hikvision OEM or relabelled unit")


def test_an_axis_camera_that_only_looks_up_a_hik_connect_name_stays_axis():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", AXIS, 1.0)
    dev.evidence.add("rtsp_server")
    inventory.record_query(dev, "litedev.hik-connect.com", 2.0)
    assert (dev.maker_label, dev.covered, dev.covered_basis, dev.role) == ("Axis", False, None, "camera")


def test_a_phone_that_looks_up_hik_connect_names_is_neither_hikvision_nor_a_camera():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.7", APPLE, 1.0)
    for name in ("api.hik-connect.com", "apiieu.hik-connect.com", "litedev.hik-connect.com"):
        inventory.record_query(dev, name, 2.0)
    assert (dev.maker_label, dev.covered, dev.role) == ("Apple, Inc.", False, "other")


def test_an_oem_badge_alone_counts_when_its_entry_says_so():
    inventory = _inventory()
    amcrest = inventory.touch("10.30.0.5", AMCREST, 1.0)
    assert (amcrest.maker.name, amcrest.covered_basis) == ("Dahua", "oem")
    assert amcrest.verdict.note == "MAC prefix Amcrest Technologies: Amcrest is a Dahua OEM brand"
    lorex = inventory.touch("10.30.0.6", LOREX, 1.0)                  # Lorex also sells others' hardware
    assert (lorex.maker_label, lorex.covered) == ("Lorex", False)
    inventory.add_identity(lorex, {"server": "Dahua Rtsp Server/3.0"})
    assert (lorex.maker.name, lorex.covered_basis) == ("Dahua", "oem")


def test_an_oem_brand_name_counts_with_behaviour_that_agrees():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", 0, 1.0)
    inventory.add_identity(dev, {"mdns_name": "Swann-NVR-8580"})
    assert (dev.maker_label, dev.covered, dev.role) == ("Swann", False, "nvr")
    inventory.note_service(dev, HIK_CONNECT, "service", "tcp/8555")
    assert (dev.maker.name, dev.covered_basis) == ("Hikvision", "oem")


def test_a_covered_maker_named_directly_keeps_its_own_basis_against_another_prefix():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", SWANN, 1.0)
    inventory.add_identity(dev, {"protocol": "sadp", "model": "DS-7608NI-K2"})
    assert (dev.maker.name, dev.covered_basis, dev.role) == ("Hikvision", "oem", "nvr")
    plain = inventory.touch("10.30.0.6", DLINK, 1.0)
    inventory.add_identity(plain, {"protocol": "sadp", "model": "DS-2CD2143G0-I"})
    assert (plain.maker.name, plain.covered_basis) == ("Hikvision", "named")
    assert plain.verdict.note.startswith("MAC prefix D-Link International, ")


def test_ties_go_to_the_covered_maker_then_to_the_first_seen():
    judge = _inventory().judge
    axis = MakerEvidence("oui", "MAC prefix Axis", "Axis", 3)
    hik = MakerEvidence("service", "speaks Hik-Connect", "Hikvision", 3)
    assert judge.verdict([axis, hik]).name == judge.verdict([hik, axis]).name == "Hikvision"
    dlink = MakerEvidence("service", "speaks mydlink", "D-Link", 3)
    assert judge.verdict([axis, dlink]).name == "Axis" and judge.verdict([dlink, axis]).name == "D-Link"
    assert judge.verdict([]).name is None


# ---- modules -------------------------------------------------------------------------------------------------
def test_a_module_prefix_is_never_the_maker():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", TI, 1.0)
    assert (dev.vendor, dev.module, dev.maker_name, dev.maker_label) == (
        "Texas Instruments", "Texas Instruments", None, "unknown (module: Texas Instruments)")
    assert dev.as_dict()["maker"] == "unknown (module: Texas Instruments)" and dev.maker_items == []
    inventory.record_query(dev, "rest-prod.immedia-semi.com", 2.0)      # a Blink camera
    assert (dev.maker_label, dev.covered, dev.role, dev.module) == ("Amazon Blink", False, "camera",
                                                                     "Texas Instruments")


def test_a_module_prefix_gives_way_to_a_model_string():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", 0x00124B000002, 1.0)
    inventory.add_identity(dev, {"dhcp_hostname": "DCS-930LB"})
    assert (dev.maker_label, dev.role) == ("D-Link", "camera")


# ---- roles ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,role", [
    ({"mdns_name": "DCS-930LB1_1C7185"}, "camera"), ({"mdns_model": "IC-3115W Network Camera"}, "camera"),
    ({"dhcp_hostname": "IPCam-livingroom"}, "camera"), ({"server": "Linux, UPnP/1.0 DCS-935L/1.0"}, "camera"),
    ({"mdns_name": "localcam"}, "camera"), ({"model_name": "DS-7608NI-K2/8P"}, "nvr"),
    ({"title": "NVR Web Service"}, "nvr"), ({"dhcp_hostname": "Dahua-XVR5104"}, "nvr"),
    ({"dhcp_hostname": "Johns-iPhone"}, "other"), ({"server": "lighttpd/1.4.59"}, "other"),
    ({"serial": "IPCam-123"}, "other")])
def test_names_and_model_strings_give_the_role(fields, role):
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, fields)
    assert dev.role == role


def test_a_role_is_never_downgraded():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", 0, 1.0)
    inventory.add_identity(dev, {"server": "Hikvision-Webs"})
    assert dev.role == "camera"
    inventory.touch("10.30.0.5", AXIS, 2.0)                  # a later frame with another prefix: still Hikvision
    inventory.add_identity(dev, {"mdns_name": "axis-accc8e"})
    inventory.note_service(dev, INDICATORS.by_name("x.mydlink.com"), "service", "name x.mydlink.com")
    assert dev.role == "camera"


def test_a_pppp_device_login_is_tagged_and_makes_a_camera():
    """Types 0x10-0x16 (even: the device's login forms) from the device; a client's P2P request (0x20) is not."""
    from sensor.decode import decode
    frames = []
    for kind in (0x12, 0x14, 0x20, 0x11):
        body = bytes([0xF1, kind, 0, 4]) + b"\0" * 4
        frames.append(ethernet(mac("00:12:4b:00:00:09"), mac("78:df:72:24:69:4d"), 0x0800,
                               ipv4("192.168.1.165", "203.0.113.9", 17, udp("192.168.1.165", "203.0.113.9", 40000,
                                                                            32100, body))))
    batch = _batch(frames)
    dec = decode(batch)
    rows = np.flatnonzero(dec.is_ip)
    tagger = PayloadTagger(INDICATORS.prefixes)
    got = tagger.tags(dec, rows)
    assert np.array_equal(got, tagger.tags_numpy(dec, rows))
    assert [bool(t & TAG_PPPP_LOGIN) for t in got.tolist()] == [True, True, False, False]
    sensor = Sensor(Config(), manuf=MANUF, makers=MAKERS)
    sensor.process(_batch(frames[:1]))
    sensor.finish()
    dev = sensor.inventory.devices.get("192.168.1.165")
    assert "p2p_device" in dev.evidence and dev.role == "camera"


# ---- state ---------------------------------------------------------------------------------------------------
def test_maker_evidence_survives_a_restart_bounded_and_rederived():
    inventory = _inventory()
    dev = inventory.touch("10.30.0.5", AXIS, 1.0)
    inventory.note_service(dev, HIK_CONNECT, "service", "name litedev.hik-connect.com")
    saved = dev.state()
    assert saved["maker_evidence"] == [["oui", "MAC prefix Axis Communications AB", "Axis"],
                                       ["service", "speaks Hik-Connect / EZVIZ cloud (Hikvision) (name "
                                        "litedev.hik-connect.com)", "Hikvision"]]
    again = _inventory()
    again.restore([saved])
    back = again.devices.get("10.30.0.5")
    assert (back.maker.name, back.covered_basis, back.verdict.note) == ("Hikvision", "behaviour", dev.verdict.note)
    flood = {**saved, "maker_evidence": [["service", f"x{i}", f"Maker {i}"] for i in range(100)]
             + [["bogus", "x", "y"], [1, 2, 3], "row"]}
    flooded = _inventory()   # a restore never replaces a device already held: each row into a fresh inventory
    flooded.restore([flood])
    assert len(flooded.lookup("10.30.0.5").maker_items) == MAX_ITEMS
    junk = {**saved, "maker_evidence": "not a list"}
    damaged = _inventory()
    damaged.restore([junk])
    assert [i.source for i in damaged.lookup("10.30.0.5").maker_items] == ["oui"]


def test_items_are_bounded_per_device():
    dev = Device("10.30.0.5")
    for i in range(MAX_ITEMS + 5):
        dev.add_maker_evidence(MakerEvidence("service", "x", f"M{i}", 3))
    assert len(dev.maker_items) == MAX_ITEMS == 16


# ---- through the sensor: alerts and metrics ------------------------------------------------------------------
def _batch(frames: list[bytes], t0: float = 1_700_000_000.0) -> Batch:
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    return Batch(b"".join(frames), np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths,
                 lengths.copy(), t0 + np.arange(len(frames)) * 0.1, np.ones(len(frames), dtype=np.int32))


def test_a_relabelled_camera_gets_the_covered_severity_and_says_why():
    """An Axis-prefixed camera opens TLS to litedev.hik-connect.com: the vendor-cloud alert is high (covered), its
    summary gives the basis and the relabel finding, and camwatch_device_info carries covered_basis."""
    from prometheus_client import generate_latest

    from sensor.export import build_registry
    cam, gw = mac("ac:cc:8e:00:00:05"), mac("00:1e:bd:00:00:01")
    hello = tls_client_hello("litedev.hik-connect.com")
    frames = [ethernet(gw, cam, 0x0800, ipv4("10.30.0.5", "203.0.113.50", 6,
                                             tcp("10.30.0.5", "203.0.113.50", 40001, 443, 1, 0, "S"))),
              ethernet(gw, cam, 0x0800, ipv4("10.30.0.5", "203.0.113.50", 6,
                                             tcp("10.30.0.5", "203.0.113.50", 40001, 443, 2, 1, "PA", hello)))]
    alerts = []
    sensor = Sensor(Config(), manuf=MANUF, makers=MAKERS, on_alert=alerts.append)
    sensor.process(_batch(frames))
    sensor.finish()
    dev = sensor.inventory.devices.get("10.30.0.5")
    assert (dev.maker.name, dev.covered_basis) == ("Hikvision", "behaviour")
    cloud = [a for a in alerts if a.detector == "vendor_cloud"]
    assert cloud and cloud[0].severity == "high"
    assert ("Hikvision is a covered maker (behaviour). MAC prefix Axis Communications AB, speaks Hik-Connect / "
            "EZVIZ cloud (Hikvision) (name litedev.hik-connect.com): likely a Hikvision OEM or relabelled unit."
            ) in cloud[0].summary
    text = generate_latest(build_registry(sensor)).decode()
    assert 'covered="true",covered_basis="behaviour",device="10.30.0.5"' in text


def test_a_dns_lookup_on_the_wire_is_evidence():
    cam, gw = mac("00:12:4b:00:00:07"), mac("00:1e:bd:00:00:01")
    frame = ethernet(gw, cam, 0x0800, ipv4("10.30.0.7", "10.30.0.1", 17,
                                           udp("10.30.0.7", "10.30.0.1", 5353, 53,
                                               dns_query(7, "rest-prod.immedia-semi.com"))))
    sensor = Sensor(Config(), manuf=MANUF, makers=MAKERS)
    sensor.process(_batch([frame]))
    sensor.finish()
    line = sensor.inventory.devices.get("10.30.0.7").as_dict()
    assert (line["maker"], line["module"], line["role"], line["covered"]) == (
        "Amazon Blink", "Texas Instruments", "camera", False)
    assert line["maker_evidence_items"] == [{"source": "dns", "maker": "Amazon Blink", "weight": 1,
                                             "detail": "looked up rest-prod.immedia-semi.com, a name of Amazon "
                                                       "Blink camera cloud (Immedia)"}]


# ---- the data files ------------------------------------------------------------------------------------------
def test_every_oem_and_service_maker_is_known():
    brands = load_brands()
    covered = {m.name for m in MAKERS.makers}
    assert {o.maker for o in brands.oem} <= covered
    known = covered | {m.name for m in brands.maker}
    assert {svc.maker for svc in INDICATORS.services if svc.maker} <= known
    raw = tomllib.loads(INDICATORS_FILE.read_text(encoding="utf-8"))
    assert {s["id"] for s in raw["service"] if "maker" not in s} == {"cs2-pppp", "tutk-kalay"}


def test_every_oem_and_module_pattern_matches_a_real_organisation():
    """A pattern that matches nothing in the installed manuf would never fire (a typo, a renamed company)."""
    orgs = {name for table in MANUF.tables().values() for name in table.values()}
    brands = load_brands(BRANDS_FILE)
    for entry in [*brands.oem, *brands.module]:
        for pattern in entry.manuf:
            assert any(pattern.search(org) for org in orgs), (entry.name, pattern.pattern)
        assert entry.sources


def test_module_makers_are_not_covered_makers_nor_oems():
    orgs = {name for table in MANUF.tables().values() for name in table.values()}
    judge = _inventory().judge
    for org in orgs:
        if judge.module_of(org):
            assert MAKERS.by_manufacturer(org) is None and judge.from_oui(org) is None, org


def test_a_kalay_message_only_a_device_sends_makes_a_camera():
    """The indicator file's device-only signatures (ThroughTek IOTC keep-alive from a device) are role evidence; a
    Kalay client's traffic is not (here: the same service's payload without the device-only shape)."""
    assert INDICATORS.device_bits
    src, gw = mac("00:12:4b:00:00:0a"), mac("00:1e:bd:00:00:01")

    def sent(ip: str, head: str) -> bytes:
        body = bytes.fromhex(head) + b"\x11" * 24
        return ethernet(gw, src, 0x0800, ipv4(ip, "203.0.113.77", 17, udp(ip, "203.0.113.77", 40000, 10240, body)))
    sensor = Sensor(Config(), manuf=MANUF, makers=MAKERS)
    sensor.process(_batch([sent("10.30.0.8", "4c6f0d0040000000"), sent("10.30.0.9", "0402190a00000000")]))
    sensor.finish()
    camera, client = sensor.inventory.devices.get("10.30.0.8"), sensor.inventory.devices.get("10.30.0.9")
    assert ("p2p_device" in camera.evidence, camera.role) == (True, "camera")
    assert ("p2p_device" in client.evidence, client.role) == (False, "other")


def test_alerts_name_the_maker_or_the_module():
    from sensor.detect.text import describe_device
    inventory = _inventory()
    module = inventory.touch("10.30.0.5", TI, 1.0)
    assert describe_device(module) == "10.30.0.5 (unknown maker, Texas Instruments module)"
    dlink = inventory.touch("10.30.0.6", DLINK, 1.0)
    inventory.add_identity(dlink, {"server": "Linux, UPnP/1.0 DCS-935L/1.0"})
    assert describe_device(dlink) == "camera 10.30.0.6 (D-Link)"


def test_a_gateway_forwarding_lookups_is_not_judged_by_them():
    inventory = _inventory()
    router = inventory.touch("10.30.0.1", 0x00124B000003, 1.0)     # a router on a Texas Instruments module
    router.evidence.add("dns_server")
    inventory.record_query(router, "litedev.hik-connect.com", 2.0)
    inventory.note_service(router, HIK_CONNECT, "service", "tcp/8555")
    assert (router.maker_items, router.covered, router.role) == ([], False, "gateway")


def test_oui_facts_are_module_of_and_from_oui_remembered_within_a_bound(monkeypatch):
    """The per-organisation cache a new device's MAC prefix is judged through says what the uncached calls say,
    for every organisation in the installed manuf (a covered maker, an OEM, a module maker, anyone else), and starts
    over when full instead of growing."""
    import sensor.enrich.maker_evidence as maker_evidence
    orgs = sorted({name for table in MANUF._by_bits.values() for name in table.values()})
    judge = _inventory().judge
    monkeypatch.setattr(maker_evidence, "MAX_OUI_FACTS", 64)
    for org in [*orgs[:300], None, "", "(local)", *orgs[:10]]:
        assert judge.oui_facts(org) == (judge.module_of(org), judge.from_oui(org)), org
        assert len(judge._oui_facts) <= 64
    named = [org for org in orgs if judge.oui_facts(org)[1] is not None]
    modules = [org for org in orgs if judge.oui_facts(org)[0] is not None]
    assert named and modules   # both kinds were compared above, not only the empty answers


def test_a_single_items_verdict_is_remembered_and_equals_the_verdict_worked_out():
    judge = _inventory().judge
    orgs = sorted({name for table in MANUF._by_bits.values() for name in table.values()})[:400]
    items = [item for org in orgs if (item := judge.from_oui(org)) is not None]
    items += [MakerEvidence("dns", "looked up x", "Hikvision", SOURCES["dns"]),
              MakerEvidence("banner", "server: y", "Dahua", SOURCES["banner"])]
    for item in [*items, *items[:20]]:
        assert judge.verdict([item]) == judge._verdict([item]), item
    assert judge.verdict(items[:3]) == judge._verdict(items[:3])
    assert any(judge.verdict([i]).covered is not None for i in items)   # covered makers were among them
