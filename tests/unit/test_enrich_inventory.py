"""sensor/enrich/inventory.py: what a device is (role, maker by MAC or banner), what it keeps (bounded queries and
peers), the state it saves and reads back (damaged rows skipped), and the bound that keeps forged one-packet sources
from pushing established devices out."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from sensor.config import parse_config
from sensor.enrich import CoveredMakers, Device, Inventory, ManufDatabase
from sensor.enrich.inventory import MAX_PEERS_PER_DEVICE, MAX_QUERIES_PER_DEVICE, top_destinations
from sensor.enrich.maker_evidence import Verdict

MAKERS = CoveredMakers.load()
BY_NAME = {m.name: m for m in MAKERS.makers}
HIK_MAC = 0xC0_56_E3_00_00_01
ACME_MAC = 0x00_40_8C_00_00_01
MANUF = ManufDatabase({24: {0xC056E3: "Hangzhou Hikvision Digital Technology Co.,Ltd.", 0x00408C: "Axis"}})


def _inventory(max_devices=10) -> Inventory:
    return Inventory(parse_config({"limits": {"max_devices": max_devices}}), MANUF, MAKERS)


@pytest.mark.parametrize("evidence,maker,role", [
    ({"rtsp_server"}, None, "camera"), ({"video_sender"}, None, "camera"), ({"camera_discovery"}, None, "camera"),
    ({"rtsp_client"}, None, "nvr"), ({"video_receiver"}, None, "nvr"), ({"rtsp_client", "rtsp_server"}, None, "camera"),
    ({"dns_server"}, None, "gateway"), ({"ntp_server"}, None, "gateway"), ({"router_mac"}, None, "gateway"),
    ({"video_receiver", "dns_server"}, None, "nvr"), (set(), "Hikvision", "camera"), (set(), "Uniview", "other"),
    ({"dns_server"}, "Hikvision", "gateway"), (set(), None, "other")])
def test_the_role_follows_the_evidence_then_a_named_maker(evidence, maker, role):
    dev = Device("10.20.0.5", evidence=set(evidence))
    if maker is not None:
        dev.verdict = Verdict(maker, BY_NAME[maker], BY_NAME[maker].basis, None)
    assert dev.role == role and dev.covered == (maker is not None)


def test_external_peers_sum_bytes_keep_the_latest_name_and_are_bounded():
    dev = Device("10.20.0.5")
    dev.note_external_peer("203.0.113.1", None, 10)
    dev.note_external_peer("203.0.113.1", "a.example", 5)
    dev.note_external_peer("203.0.113.1", None, 1)
    assert dev.external_peers == {"203.0.113.1": ["a.example", 16]}
    for i in range(MAX_PEERS_PER_DEVICE + 5):
        dev.note_external_peer(f"p{i}", None, 1)
    assert len(dev.external_peers) == MAX_PEERS_PER_DEVICE == 4096
    assert "p4094" in dev.external_peers and "p4095" not in dev.external_peers
    assert top_destinations(dev, 2) == [("a.example", "203.0.113.1", 16), ("p0", "p0", 1)]


def test_a_mac_names_vendor_and_maker_and_only_the_link_moves_an_address_to_another_mac():
    inventory = _inventory()
    dev = inventory.touch("10.20.0.5", HIK_MAC, 100.0)
    assert (dev.vendor, dev.maker.name, dev.maker_evidence) == (
        "Hangzhou Hikvision Digital Technology Co.,Ltd.", "Hikvision",
        "MAC prefix Hangzhou Hikvision Digital Technology Co.,Ltd. (oui)")
    assert inventory.touch("10.20.0.5", 0, 101.0).maker.name == "Hikvision"   # no MAC seen: nothing changes
    # One frame with another MAC (forged, or a router's) does not take the camera's device over
    assert inventory.touch("10.20.0.5", ACME_MAC, 102.0) is dev and dev.mac == HIK_MAC
    # The link handing the address to another box (an ARP reply, a DHCP lease) does: a new device, the old one
    # keeps its history
    other = inventory.claim("10.20.0.5", ACME_MAC, 103.0)
    assert other is not dev and (other.vendor, other.maker, other.mac) == ("Axis", None, ACME_MAC)
    assert (other.maker_evidence, other.maker_label) == ("MAC prefix Axis (oui)", "Axis")
    assert inventory.lookup("10.20.0.5") is other and dev.former_addresses == ["10.20.0.5"]
    assert other.id != dev.id and len(inventory) == 2


def _facts(dev: Device) -> tuple:
    return dev.vendor, dev.module, dev.maker_items, dev.verdict, dev.evidence, dev.maker_label


def test_new_devices_of_one_vendor_share_its_facts_and_not_each_others_later_evidence():
    inventory = _inventory()
    # thousands of cameras are a few makers' MACs: interleaved, each new device is judged as if it were alone
    first_hik = inventory.touch("10.20.0.5", HIK_MAC, 100.0)
    axis = inventory.touch("10.20.0.6", ACME_MAC, 100.0)
    second_hik = inventory.touch("10.20.0.7", HIK_MAC + 1, 100.0)
    for dev, mac in ((first_hik, HIK_MAC), (axis, ACME_MAC), (second_hik, HIK_MAC + 1)):
        assert _facts(dev) == _facts(_inventory().touch("10.20.0.9", mac, 100.0))
    assert (axis.vendor, axis.maker, second_hik.maker.name) == ("Axis", None, "Hikvision")
    inventory.add_identity(first_hik, {"server": "Hikvision-Webs"})
    assert len(first_hik.maker_items) == 2 and len(second_hik.maker_items) == 1


def test_the_facts_remembered_per_vendor_are_bounded(monkeypatch):
    monkeypatch.setattr("sensor.enrich.inventory.MAX_OUI_FACTS", 8)
    vendors = {oui: f"Vendor {oui}" for oui in range(0x100000, 0x100000 + 30)}
    inventory = Inventory(parse_config({"limits": {"max_devices": 100}}), ManufDatabase({24: vendors}), MAKERS)
    for n, oui in enumerate(vendors):   # forged MACs of ever new vendors
        dev = inventory.touch(f"10.20.1.{n}", oui << 24 | 1, 100.0)
        assert dev.vendor == vendors[oui] and dev.maker_label == vendors[oui]
    assert len(inventory._facts_by_vendor) <= 8


def test_a_banner_maker_survives_a_mac_of_an_ordinary_vendor():
    inventory = _inventory()
    dev = inventory.touch("10.20.0.5", 0, 100.0)
    inventory.add_identity(dev, {"server": "Hikvision-Webs", "model": "X"})
    assert (dev.maker.name, dev.maker_evidence) == ("Hikvision", "server: Hikvision-Webs (banner)")
    inventory.touch("10.20.0.5", ACME_MAC, 101.0)
    assert (dev.vendor, dev.maker.name, dev.maker_evidence) == (
        "Axis", "Hikvision", "server: Hikvision-Webs (banner); MAC prefix Axis (oui)")


def test_identity_keeps_first_values_and_banner_fields_are_read_in_order():
    inventory = _inventory()
    dev = inventory.touch("10.20.0.5", 0, 100.0)
    inventory.add_identity(dev, {"firmware": "1.0", "serial": "DS-2CD2143G0-I"})
    assert dev.maker is None                                   # serial is not a banner field
    inventory.add_identity(dev, {"firmware": "2.0", "device_type": "EZVIZ-IPC", "model": "DS-2CD2143G0-I"})
    assert dev.identity == {"firmware": "1.0", "serial": "DS-2CD2143G0-I", "device_type": "EZVIZ-IPC",
                            "model": "DS-2CD2143G0-I"}
    # one banner item per maker: the EZVIZ device type and the Hikvision model weigh the same, the first wins
    assert (dev.maker.name, dev.maker_evidence) == (
        "Hikvision", "model: DS-2CD2143G0-I (banner); device_type: EZVIZ-IPC (banner)")
    other = inventory.touch("10.20.0.6", 0, 100.0)
    inventory.add_identity(other, {"device_type": "EZVIZ-IPC", "vendor": "TIANDY"})
    assert other.maker.name == "Tiandy"   # vendor is read first, and a tie goes to the first


def test_queries_are_remembered_once_each_and_bounded_to_the_latest_256():
    inventory = _inventory()
    dev = inventory.touch("10.20.0.5", 0, 100.0)
    inventory.record_query(dev, "a.example", 1.0)
    inventory.record_query(dev, "a.example", 2.0)
    assert dev.dns_queries == OrderedDict([("a.example", 1.0)])
    for i in range(MAX_QUERIES_PER_DEVICE):
        inventory.record_query(dev, f"n{i}.example", 3.0)
    assert len(dev.dns_queries) == MAX_QUERIES_PER_DEVICE == 256
    assert next(iter(dev.dns_queries)) == "n0.example"


def test_a_device_sending_in_two_seconds_is_established_and_outlives_newcomers():
    inventory = _inventory(max_devices=5)
    assert inventory.touch("10.20.0.1", 0, 100.0).first_seen == 100.0
    inventory.touch("10.20.0.1", 0, 100.999)
    assert not inventory.devices.is_protected("10.20.0.1")
    inventory.touch("10.20.0.1", 0, 101.0)
    assert inventory.devices.is_protected("10.20.0.1")
    assert inventory.touch("10.20.0.1", 0, 50.0).last_seen == 101.0          # late packets do not move it back
    for i in range(10):
        inventory.touch(f"10.20.1.{i}", 0, 102.0)
    assert "10.20.0.1" in inventory.devices and len(inventory) == 5 and inventory.evicted == 6


def test_dirty_devices_are_saved_once_and_an_evicted_one_is_forgotten():
    inventory = _inventory(max_devices=2)
    forgotten = []
    inventory.on_forget = forgotten.append
    inventory.touch("10.20.0.1", 0, 1.0)
    inventory.touch("10.20.0.2", 0, 2.0)
    assert sorted(doc["ip"] for doc in inventory.take_dirty()) == ["10.20.0.1", "10.20.0.2"]
    assert list(inventory.take_dirty()) == []
    inventory.touch("10.20.0.2", 0, 3.0)
    inventory.touch("10.20.0.3", 0, 3.0)
    assert forgotten == ["10.20.0.1"]
    assert sorted(doc["ip"] for doc in inventory.take_dirty()) == ["10.20.0.2", "10.20.0.3"]


def test_state_round_trip_and_the_maker_rederived_from_the_mac():
    inventory = _inventory()
    dev = inventory.touch("10.20.0.5", HIK_MAC, 10.0)
    inventory.touch("10.20.0.5", HIK_MAC, 20.0)
    dev.packets_sent, dev.bytes_sent, dev.egress_bytes = 3, 300, {"public": 300}
    inventory.record_query(dev, "a.example", 10.0)
    dev.note_external_peer("203.0.113.1", "a.example", 300)
    dev.identity["model"], dev.evidence = "DS-2CD2143G0-I", {"rtsp_server", "video_sender"}
    saved = dev.state()
    assert saved == {"ip": "10.20.0.5", "mac": HIK_MAC, "first_seen": 10.0, "last_seen": 20.0, "packets_sent": 3,
                     "bytes_sent": 300, "egress_bytes": {"public": 300}, "dns_queries": ["a.example"],
                     "external_peers": [["203.0.113.1", "a.example", 300]], "identity": {"model": "DS-2CD2143G0-I"},
                     "evidence": ["rtsp_server", "video_sender"], "outbound": [],
                     "maker_evidence": [["oui", "MAC prefix Hangzhou Hikvision Digital Technology Co.,Ltd.",
                                         "Hikvision"]], "id": "10.20.0.5", "addresses": ["10.20.0.5"],
                     "former_addresses": [], "link_claimed": False}
    restored = _inventory()
    restored.restore([saved])
    again = restored.devices.get("10.20.0.5")
    # the identity read again: the model is banner evidence and a camera's model string
    assert again.state() == {**saved, "evidence": ["camera_maker", "camera_model", "named_maker", "rtsp_server",
                                                   "video_sender"],
                             "maker_evidence": [*saved["maker_evidence"], ["banner", "model: DS-2CD2143G0-I",
                                                                            "Hikvision"]]}
    assert (again.vendor, again.maker.name, again.covered_basis) == (
        "Hangzhou Hikvision Digital Technology Co.,Ltd.", "Hikvision", "named")
    assert restored.devices.is_protected("10.20.0.5")
    assert again.as_dict() == {
        "id": "10.20.0.5", "ip": "10.20.0.5", "addresses": ["10.20.0.5"], "former_addresses": [],
        "mac": "c0:56:e3:00:00:01", "vendor": "Hangzhou Hikvision Digital Technology Co.,Ltd.",
        "covered": True, "maker": "Hikvision", "covered_basis": "named",
        "maker_evidence": "model: DS-2CD2143G0-I (banner); MAC prefix Hangzhou Hikvision Digital Technology "
                          "Co.,Ltd. (oui)",
        "maker_evidence_items": [{"source": "banner", "detail": "model: DS-2CD2143G0-I", "maker": "Hikvision",
                                  "weight": 4},
                                 {"source": "oui", "detail": "MAC prefix Hangzhou Hikvision Digital Technology "
                                  "Co.,Ltd.", "maker": "Hikvision", "weight": 3}],
        "maker_note": None, "module": None, "role": "camera",
        "identity": {"model": "DS-2CD2143G0-I"}, "first_seen": 10.0, "last_seen": 20.0, "packets_sent": 3,
        "bytes_sent": 300, "egress_bytes": {"public": 300}, "dns_queries": ["a.example"],
        "external_destinations": [{"ip": "203.0.113.1", "name": "a.example", "bytes": 300}],
        "outbound_series": {"bucket_seconds": 300, "points": []},
        "destination_countries": [], "destination_owners": []}   # a documentation address has no country


def _doc(ip="10.20.0.5", **kw) -> dict:
    doc = {"ip": ip, "mac": 0, "first_seen": 1.0, "last_seen": 1.5, "packets_sent": 1, "bytes_sent": 1,
           "egress_bytes": {}, "dns_queries": [], "external_peers": [], "identity": {}, "evidence": []}
    return {**doc, **kw}


def test_restore_skips_damaged_rows_keeps_the_latest_and_reads_banners():
    inventory = _inventory(max_devices=2)
    inventory.restore([
        "not a dict", _doc("not an address"), _doc(mac=1 << 48), _doc(mac=-1), _doc(first_seen=float("nan")),
        _doc(last_seen=float("inf")), _doc(egress_bytes=[1]), {"ip": "10.20.0.9"},
        _doc("10.20.0.1", last_seen=5.0), _doc("10.20.0.2", last_seen=3.0, identity={"server": "Hikvision-Webs",
                                                                                     "n": 5}),
        _doc("10.20.0.3", last_seen=4.0, external_peers=[["203.0.113.1", 7, 9]], evidence=["rtsp_server", 3]),
        _doc("10.20.0.4", mac=(1 << 48) - 1, last_seen=1.0)])
    assert sorted(inventory.devices) == ["10.20.0.1", "10.20.0.3"]         # the two seen last
    third = inventory.devices.get("10.20.0.3")
    assert third.external_peers == {"203.0.113.1": [None, 9]} and third.evidence == {"rtsp_server"}
    # both established (1.0 to 4.0 and 5.0); the protected segment of a 2-device inventory holds one, the latest
    assert inventory.devices.is_protected("10.20.0.1") and not inventory.devices.is_protected("10.20.0.3")
    banner = _inventory()
    banner.restore([_doc("10.20.0.2", identity={"server": "Hikvision-Webs", "n": 5})])
    dev = banner.devices.get("10.20.0.2")
    assert (dev.identity, dev.maker.name, dev.maker_evidence) == (
        {"server": "Hikvision-Webs"}, "Hikvision", "server: Hikvision-Webs (banner)")
    assert not banner.devices.is_protected("10.20.0.2")                    # 1.0 to 1.5: not established


def test_restore_refuses_each_damaged_row_with_room_to_spare():
    inventory = _inventory(max_devices=50)
    inventory.restore([_doc("10.20.0.1", mac=(1 << 48) - 1), _doc("10.20.0.2", mac=1 << 48), _doc("10.20.0.3", mac=-1),
                       _doc("10.20.0.4", first_seen=float("nan")), _doc("10.20.0.5", last_seen=float("-inf")),
                       _doc("10.20.0.6", first_seen=0.0, last_seen=1.0), _doc("10.20.0.7", first_seen=0.0,
                                                                               last_seen=0.999)])
    assert sorted(inventory.devices) == ["10.20.0.1", "10.20.0.6", "10.20.0.7"]
    assert inventory.devices.is_protected("10.20.0.6") and not inventory.devices.is_protected("10.20.0.7")
    plain = inventory.devices.get("10.20.0.7")
    assert (plain.maker, plain.maker_evidence) == (None, None)
    line = plain.as_dict()
    assert (line["mac"], line["vendor"], line["covered"], line["maker"], line["covered_basis"], line["role"]) == (
        None, None, False, None, None, "other")


def test_the_inventory_uses_the_covered_list_it_is_given():
    assert _inventory().makers is MAKERS
    assert Inventory(parse_config({}), MANUF, CoveredMakers([], "test")).makers.version == "test"


def test_a_new_device_takes_its_macs_facts_as_judging_the_mac_would_give_them():
    """_note_mac of a device without maker evidence remembers its last MAC's facts (a flood's sources behind one
    router MAC): each new device gets what _judge_mac, the reference, makes of a fresh device, whichever MAC came
    before (a covered maker's, a camera-only maker's, a module maker's, an unknown prefix, a locally administered
    one), and lists of its own."""
    manuf = ManufDatabase({24: {0xC056E3: "Hangzhou Hikvision Digital Technology Co.,Ltd.", 0x00408C: "Axis",
                                0x240AC4: "Espressif Inc.", 0x001EBD: "Cisco Systems, Inc"}})
    inventory = Inventory(parse_config({"limits": {"max_devices": 100}}), manuf, MAKERS)
    reference = Inventory(parse_config({"limits": {"max_devices": 100}}), manuf, MAKERS)
    macs = [HIK_MAC, HIK_MAC, ACME_MAC, 0x24_0A_C4_00_00_07, 0x00_1E_BD_00_00_01, 0x00_1E_BD_00_00_01,
            0x02_00_00_00_00_09, 0x7C_00_00_00_00_01, HIK_MAC, 0x24_0A_C4_00_00_08]
    made = []
    for n, mac in enumerate(macs):
        dev = inventory.touch(f"10.20.1.{n + 1}", mac, 1.0)
        assert dev is not None
        expected = Device(dev.ip, mac)
        reference._judge_mac(expected)
        assert (dev.vendor, dev.module, dev.maker_items, dev.verdict, dev.evidence, dev.role) == (
            expected.vendor, expected.module, expected.maker_items, expected.verdict, expected.evidence, expected.role)
        made.append(dev)
    assert any(d.covered for d in made) and any(d.module for d in made) and any(not d.maker_items for d in made)
    made[0].maker_items.append(made[2].maker_items[0])   # one device's list is its own
    assert len(made[1].maker_items) == 1 and len(made[8].maker_items) == 1


def test_the_dirty_documents_are_made_as_they_are_taken_from_the_devices_dirty_at_the_call():
    """take_dirty takes the dirty set at once (a device changed afterwards is dirty again, for the next flush)
    and makes each document as the caller takes it: the devices' state() documents, one each."""
    inventory = _inventory(max_devices=10)
    for n in range(1, 6):
        inventory.touch(f"10.20.0.{n}", 0x00408C000000 + n, float(n))
    taken = inventory.take_dirty()
    assert inventory.dirty == set()
    inventory.touch("10.20.0.6", 0, 6.0)
    assert inventory.dirty == {"10.20.0.6"}
    docs = list(taken)
    assert sorted(doc["ip"] for doc in docs) == [f"10.20.0.{n}" for n in range(1, 6)]
    assert all(doc == inventory.devices.get(doc["id"]).state() for doc in docs)
    assert [doc["ip"] for doc in inventory.take_dirty()] == ["10.20.0.6"]
