"""Every covered maker and brand in sensor/data/covered_makers.toml, matched from the exact organisation names
Wireshark's manuf gives its OUIs, or from a banner, with the tables below parametrised over the TOML file itself:
an entry, a brand or a pattern added there without an example here fails test_tables_cover_every_entry and
test_every_pattern_has_an_example.

The organisation strings are copied from /usr/share/wireshark/manuf (Wireshark 4.0, `tshark -G manuf` on 4.2+);
test_example_organisations_are_real checks that the installed manuf still has each of them, and the MAC tests take
a real OUI of each from it, so the chain MAC -> manuf -> covered maker is tested as the sensor runs it. The manuf
database itself (sensor/enrich/makers.py) prefers the longest assignment and knows the camera makers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from packets import ethernet, ipv4, mac, tcp, udp
from sensor.capture import Batch
from sensor.config import Config
from sensor.enrich import COVERED_MAKERS_FILE, CoveredMakers, Device, Inventory, ManufDatabase, parse_manuf
from sensor.export import build_registry
from sensor.pipeline import Sensor

TOML = tomllib.loads(COVERED_MAKERS_FILE.read_text(encoding="utf-8"))
ENTRIES = {entry["name"]: entry for entry in TOML["maker"]}
MAKERS = CoveredMakers.load()

# Maker -> the organisation names Wireshark's manuf has for its OUIs (every variant spelling in the file).
ORGANISATIONS: dict[str, list[str]] = {
    "Hikvision": ["Hangzhou Hikvision Digital Technology Co.,Ltd.", "Prama Hikvision India Private Limited"],
    "EZVIZ (Hikvision)": ["Hangzhou Ezviz Software Co.,Ltd."],
    "Dahua": ["Zhejiang Dahua Technology Co., Ltd.", "Zhejiang Dahua Technologyco.,Ltd"],
    "Imou (Dahua)": ["Hangzhou Huacheng Network Technology Co.,Ltd", "hangzhou huacheng network technology co., ltd"],
    "Huawei": ["Huawei Technologies Co.,Ltd", "Huawei Technologies Co., Ltd."],
    "ZTE": ["zte corporation"],
    "Hytera": ["Hytera Communications Co.,ltd", "Hytera Communications Corporation Limited"],
    "Tiandy": ["Tiandy Technologies CO.,LTD", "Tiandy Technologies Co.,LTD"],
    "Uniview": ["Zhejiang Uniview Technologies Co., Ltd.", "Zhejiang Uniview Technologies Co.,Ltd."],
    "Xiongmai": [],
    "Xiaomi ecosystem (Imilab)": ["Shanghai Imilab Technology Co.Ltd"],
    "Zowee (Yi)": ["Shenzhen Zowee Technology Co., Ltd", "Shenzhen Zowee Technology Co.,Ltd",
                   "Zowee Technology(Heyuan) Co., Ltd.", "ZOWEE TECHNOLOGY(HEYUAN)Co.,Ltd"],
}
# Makers whose manuf pattern has no organisation in Wireshark's manuf to match, and why; checked to be still true.
NO_MANUF_ORGANISATION = {
    "Xiongmai": "no OUI is registered under Xiongmai's name; its modules are recognised by their banners",
}

# Maker -> (identity key, text) as the dissectors fill Device.identity: RTSP/HTTP/SSDP Server headers ("server"),
# ONVIF hardware, SADP DeviceDescription or DHIP DeviceType ("model"), DHIP Vendor ("vendor"), SADP DeviceType
# ("device_type").
BANNERS: dict[str, list[tuple[str, str]]] = {
    "Hikvision": [("server", "Hikvision-Webs"), ("server", "DNVRS-Webs"), ("server", "App-webs/"),
                  ("server", "DVRDVS-Webs"), ("model", "DS-2CD2143G0-I"), ("model", "DS-2DE4425IW-DE"),
                  ("model", "HiLook IPC-B140H"), ("model", "HiWatch HWI-B121H"), ("model", "DS-7608NI-K2/8P"),
                  ("model", "DS-KV6113-WPE1")],
    "EZVIZ (Hikvision)": [("model", "EZVIZ C6CN"), ("device_type", "EZVIZ-IPC")],
    "Dahua": [("server", "Dahua Rtsp Server/3.0"), ("model", "DH-IPC-HDW1230S"), ("vendor", "Dahua"),
              ("server", "DHIP"), ("model", "Easy4IP IPC-C35")],
    "Imou (Dahua)": [("vendor", "Imou"), ("model", "IMOU Ranger 2")],
    "Huawei": [("server", "HUAWEI RTSP Server"), ("model", "HoloSens SDC 2120-10-HLI")],
    "ZTE": [],
    "Hytera": [],
    "Tiandy": [("server", "Tiandy Web Server"), ("vendor", "TIANDY")],
    "Uniview": [("server", "Uniview RTSP Server"), ("model", "UNV IPC2122LR3-PF40M-D"), ("vendor", "UNV"),
                ("name", "UNV")],
    "Xiongmai": [("server", "uc-httpd 1.0.0"), ("model", "XiongMai IPC"), ("server", "XMEye RTSP"),
                 ("server", "NETSurveillance WEB")],
    "Xiaomi ecosystem (Imilab)": [],
    "Zowee (Yi)": [],
}

# Brand -> (maker, how such a device names itself). A brand whose name no banner pattern holds is recognised by
# its maker's OUI, as its devices carry it: see test_brand_name_in_a_banner for the gap that leaves.
BRANDS: dict[str, tuple[str, str, str]] = {
    "Hikvision": ("Hikvision", "server", "Hikvision-Webs"),
    "HiLook": ("Hikvision", "model", "HiLook IPC-B140H"),
    "HiWatch": ("Hikvision", "model", "HiWatch HWI-B121H"),
    "Hik-Connect": ("Hikvision", "organisation", "Hangzhou Hikvision Digital Technology Co.,Ltd."),
    "EZVIZ": ("EZVIZ (Hikvision)", "model", "EZVIZ C6CN"),
    "Dahua": ("Dahua", "vendor", "Dahua"),
    "Easy4IP": ("Dahua", "model", "Easy4IP IPC-C35"),
    "Imou": ("Imou (Dahua)", "vendor", "Imou"),
    "Huawei": ("Huawei", "server", "HUAWEI RTSP Server"),
    "HoloSens": ("Huawei", "model", "HoloSens SDC 2120-10-HLI"),
    "ZTE": ("ZTE", "organisation", "zte corporation"),
    "Hytera": ("Hytera", "organisation", "Hytera Communications Corporation Limited"),
    "Tiandy": ("Tiandy", "vendor", "TIANDY"),
    "Uniview": ("Uniview", "server", "Uniview RTSP Server"),
    "UNV": ("Uniview", "vendor", "UNV"),
    "XMEye": ("Xiongmai", "server", "XMEye RTSP"),
    "NetSurveillance": ("Xiongmai", "server", "NETSurveillance WEB"),
    "many white-label DVRs and cameras": ("Xiongmai", "server", "uc-httpd 1.0.0"),
    "Xiaobai": ("Xiaomi ecosystem (Imilab)", "organisation", "Shanghai Imilab Technology Co.Ltd"),
    "Mi Home Security Camera": ("Xiaomi ecosystem (Imilab)", "organisation", "Shanghai Imilab Technology Co.Ltd"),
    "IMILAB": ("Xiaomi ecosystem (Imilab)", "organisation", "Shanghai Imilab Technology Co.Ltd"),
    "Yi (contract manufacturer)": ("Zowee (Yi)", "organisation", "Shenzhen Zowee Technology Co., Ltd"),
}
# Look-alikes and ordinary makers that must not be covered.
NOT_COVERED_ORGANISATIONS = ["Shanghai Dahua Scale Factory", "ZTEC Instruments, Inc.", "Aztech Electronics Pte Ltd",
                             "Shenzhen Xiongxin Technology Co.,Ltd", "Axis Communications AB", "Sony Corporation",
                             "Bosch Security Systems"]
NOT_COVERED_BANNERS = ["AXIS Media Control", "GStreamer RTSP server", "lighttpd/1.4.59", "Boa/0.94.14rc21",
                       "Sony Network Camera SNC-EB600", "Hipcam RealServer/V1.0", "Bosch VIDEOJET"]

ORG_CASES = [(maker, org) for maker, orgs in ORGANISATIONS.items() for org in orgs]
BANNER_CASES = [(maker, key, text) for maker, banners in BANNERS.items() for key, text in banners]

_MANUF: ManufDatabase | None = None


def manuf() -> ManufDatabase:
    global _MANUF
    if _MANUF is None:
        _MANUF = ManufDatabase.load()
        assert len(_MANUF) > 10_000, "Wireshark's manuf database is not installed"
    return _MANUF


def manuf_organisations() -> dict[str, list[tuple[int, int]]]:
    """organisation -> [(prefix bits, prefix value)] of the installed manuf."""
    out: dict[str, list[tuple[int, int]]] = {}
    for bits, table in manuf().tables().items():
        for prefix, name in table.items():
            out.setdefault(name, []).append((bits, prefix))
    return out


# ---- the tables cover the TOML file ------------------------------------------------------------------------
def test_tables_cover_every_entry():
    assert set(ORGANISATIONS) == set(ENTRIES), "every covered_makers.toml entry needs a row in ORGANISATIONS"
    assert set(BANNERS) == set(ENTRIES), "every covered_makers.toml entry needs a row in BANNERS"
    for name in ENTRIES:
        assert ORGANISATIONS[name] or BANNERS[name], f"{name}: no example organisation or banner"
    brands = {brand for entry in TOML["maker"] for brand in entry["brands"]}
    assert set(BRANDS) == brands, "every brand in covered_makers.toml needs a row in BRANDS"
    for brand, (maker, _, _) in BRANDS.items():
        assert brand in ENTRIES[maker]["brands"], f"{brand} is not a brand of {maker}"
    assert [m.name for m in MAKERS.makers] == list(ENTRIES)


@pytest.mark.parametrize("name", list(ENTRIES))
def test_every_pattern_has_an_example(name):
    """Each manuf and banner regular expression of the entry matches at least one example of that entry."""
    entry = ENTRIES[name]
    for pattern in entry["manuf"]:
        if name in NO_MANUF_ORGANISATION:
            continue
        assert any(re.search(pattern, org, re.I) for org in ORGANISATIONS[name]), (name, pattern)
    for pattern in entry.get("banners", []):
        assert any(re.search(pattern, text, re.I) for _, text in BANNERS[name]), (name, pattern)


# ---- organisation names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker,org", ORG_CASES)
def test_organisation_names_the_maker(maker, org):
    assert MAKERS.by_manufacturer(org).name == maker
    # the organisation matches this maker's patterns and no other maker's: the file's order does not decide
    assert [m.name for m in MAKERS.makers if any(p.search(org) for p in m.manuf)] == [maker]


@pytest.mark.parametrize("maker,org", ORG_CASES)
def test_example_organisations_are_real(maker, org):
    assert org in manuf_organisations(), f"{org!r} is not in the installed Wireshark manuf"


@pytest.mark.parametrize("maker,org", ORG_CASES)
def test_a_mac_of_the_organisation_makes_a_covered_device(maker, org):
    """A real OUI of the organisation, through ManufDatabase.lookup and Inventory.touch, as the pipeline does."""
    db = manuf()
    bits, prefix = sorted(manuf_organisations()[org])[0]
    address = (prefix << (48 - bits)) | 0x1
    assert db.lookup(address) == org
    inventory = Inventory(Config(), db, MAKERS)
    dev = inventory.touch("10.20.0.11", address, 1000.0)
    assert (dev.vendor, dev.maker.name, dev.covered) == (org, maker, True)
    assert dev.maker_evidence == f"MAC prefix {org} (oui)"
    assert dev.as_dict()["covered_basis"] == ENTRIES[maker]["basis"]


@pytest.mark.parametrize("name", sorted(NO_MANUF_ORGANISATION))
def test_makers_without_a_manuf_organisation_really_have_none(name):
    """If Wireshark's manuf gains an organisation for one of these, it needs a row in ORGANISATIONS."""
    patterns = [re.compile(p, re.I) for p in ENTRIES[name]["manuf"]]
    assert not [org for org in manuf_organisations() if any(p.search(org) for p in patterns)]


@pytest.mark.parametrize("org", NOT_COVERED_ORGANISATIONS)
def test_look_alike_organisations_are_not_covered(org):
    assert org in manuf_organisations()
    assert MAKERS.by_manufacturer(org) is None


def test_every_covered_organisation_in_manuf_is_one_of_the_examples():
    """The examples are complete: every organisation of the installed manuf that some maker's pattern matches is
    listed in ORGANISATIONS under that maker (a new spelling in a Wireshark update shows up here)."""
    found = {}
    for org in manuf_organisations():
        maker = MAKERS.by_manufacturer(org)
        if maker is not None:
            found.setdefault(maker.name, set()).add(org)
    assert found == {m: set(orgs) for m, orgs in ORGANISATIONS.items() if orgs}


# ---- banners -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker,key,text", BANNER_CASES)
def test_banner_names_the_maker(maker, key, text):
    assert MAKERS.by_banner(text).name == maker
    assert [m.name for m in MAKERS.makers if any(p.search(text) for p in m.banners)] == [maker]
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, {key: text})
    assert (dev.maker.name, dev.covered, dev.covered_basis) == (maker, True, ENTRIES[maker]["basis"])
    source = "onvif" if key == "name" else "banner"
    assert dev.maker_evidence == f"{key}: {text} ({source})"


@pytest.mark.parametrize("text", NOT_COVERED_BANNERS)
def test_ordinary_banners_are_not_covered(text):
    assert MAKERS.by_banner(text) is None


def test_identity_keys_outside_the_banner_fields_do_not_name_a_maker():
    """Only server, vendor, model and device_type are matched: a serial or firmware string never is."""
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, {"serial": "DS-2CD2143G0-I20200101", "firmware": "Hikvision V5.5.0"})
    assert dev.maker is None


def test_a_banner_outweighs_a_mac_prefix_and_the_disagreement_is_noted():
    """A Server header (weight 4) says more than a MAC prefix (3): the prefix may be a reseller's or a module's."""
    inventory = Inventory(Config(), manuf(), MAKERS)
    bits, prefix = sorted(manuf_organisations()["Zhejiang Uniview Technologies Co., Ltd."])[0]
    dev = inventory.touch("10.20.0.11", (prefix << (48 - bits)) | 1, 1000.0)
    assert dev.maker.name == "Uniview"
    inventory.add_identity(dev, {"server": "Hikvision-Webs"})
    assert (dev.maker.name, dev.covered_basis) == ("Hikvision", "named")
    assert dev.maker_evidence == ("server: Hikvision-Webs (banner); MAC prefix Zhejiang Uniview Technologies Co., "
                                  "Ltd. (oui)")
    assert dev.verdict.note == ("MAC prefix Zhejiang Uniview Technologies Co., Ltd., server: Hikvision-Webs: likely "
                                "a Hikvision OEM or relabelled unit")


def banner_frame(server: str) -> bytes:
    """An RTSP reply from a camera behind a router: its frames carry the router's (Cisco) MAC."""
    router = mac("00:1e:bd:00:00:01")
    body = f"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: {server}\r\n\r\n".encode()
    return ethernet(router, router, 0x0800, ipv4("10.30.0.5", "10.20.0.2", 6,
                                                  tcp("10.30.0.5", "10.20.0.2", 554, 40000, 1, 1, "PA", body)))


def one_frame_batch(frame: bytes, ts: float = 1_700_000_000.0) -> Batch:
    n = np.array([len(frame)], dtype=np.int64)
    return Batch(frame, np.zeros(1, dtype=np.int64), n, n.copy(), np.array([ts]), np.ones(1, dtype=np.int32))


SERVER_CASES = [(maker, text) for maker, key, text in BANNER_CASES if key == "server"]


@pytest.mark.parametrize("maker,server", SERVER_CASES)
def test_rtsp_server_header_names_the_maker_through_the_sensor(maker, server):
    sensor = Sensor(Config(), manuf=manuf(), makers=MAKERS)
    sensor.process(one_frame_batch(banner_frame(server)))
    sensor.finish()
    dev = sensor.inventory.devices.get("10.30.0.5")
    assert dev.vendor == "Cisco Systems, Inc"
    assert (dev.maker.name, dev.covered) == (maker, True)
    assert dev.maker_evidence == f"server: {server} (banner); MAC prefix Cisco Systems, Inc (oui)"


# ---- brands ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("brand", sorted(BRANDS))
def test_brand_is_recognised_as_its_maker(brand):
    maker, kind, example = BRANDS[brand]
    if kind == "organisation":
        assert example in ORGANISATIONS[maker]
        assert MAKERS.by_manufacturer(example).name == maker
    else:
        assert (kind, example) in BANNERS[maker]
        inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
        dev = Device("10.30.0.5")
        inventory.add_identity(dev, {kind: example})
        assert dev.maker.name == maker


def test_onvif_name_scope_names_the_maker():
    """A Uniview Hello names itself UNV in its name scope and gives a hardware model without the brand: the name
    scope is ONVIF evidence of Uniview."""
    from sensor.dissect import parse_ws_discovery
    hello = (b'<?xml version="1.0"?><s:Envelope><s:Body><d:Hello><d:Scopes>onvif://www.onvif.org/type/video_encoder '
             b'onvif://www.onvif.org/name/UNV onvif://www.onvif.org/hardware/IPC2122LR3-PF40M-D</d:Scopes>'
             b'</d:Hello></s:Body></s:Envelope>')
    fields = parse_ws_discovery(hello)
    assert fields == {"name": "UNV", "model": "IPC2122LR3-PF40M-D", "protocol": "onvif"}
    inventory = Inventory(Config(), ManufDatabase({}), MAKERS)
    dev = Device("10.30.0.5")
    inventory.add_identity(dev, fields)
    assert (dev.maker.name, dev.covered_basis, dev.role) == ("Uniview", "prc-nil", "camera")
    assert [(i.source, i.detail, i.maker) for i in dev.maker_items] == [("onvif", "name: UNV", "Uniview")]


def test_the_covered_list_version_is_exported():
    text = generate_latest(build_registry(Sensor(Config(), manuf=manuf()))).decode()
    assert f'camwatch_covered_list_info{{sensor="camwatch",version="{TOML["version"]}"}} 1.0' in text


def test_covered_device_counts_are_exported_per_maker():
    """Two Uniview cameras by MAC and one Xiongmai DVR by banner: camwatch_devices by maker, by value."""
    bits, prefix = sorted(manuf_organisations()["Zhejiang Uniview Technologies Co.,Ltd."])[0]
    uniview = (prefix << (48 - bits)).to_bytes(6, "big")
    frames = []
    for k, ip in enumerate(("10.20.0.21", "10.20.0.22")):
        src = uniview[:5] + bytes([k + 1])
        frames.append(ethernet(mac("00:1e:bd:00:00:01"), src, 0x0800,
                               ipv4(ip, "10.20.0.2", 17, udp(ip, "10.20.0.2", 6970, 5004, b"v" * 40))))
    frames.append(banner_frame("uc-httpd 1.0.0"))
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    batch = Batch(b"".join(frames), np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths,
                  lengths.copy(), 1_700_000_000.0 + np.arange(3.0), np.ones(3, dtype=np.int32))
    sensor = Sensor(Config(), manuf=manuf(), makers=MAKERS)
    sensor.process(batch)
    sensor.finish()
    devices = {}
    for fam in text_string_to_metric_families(generate_latest(build_registry(sensor)).decode()):
        if fam.name == "camwatch_devices":
            devices = {(s.labels["vendor"], s.labels["covered"]): s.value for s in fam.samples}
    assert devices == {("Uniview", "true"): 2, ("Xiongmai", "true"): 1}


# ---- the manuf database: longest assignment first, the installed file ---------------------------------------
def test_manuf_prefers_the_longest_assignment():
    db = ManufDatabase(parse_manuf(
        "40:2C:76\tIEEERegi\tIEEE Registration Authority\n"
        "40:2C:76:10:00:00/28\tShanghai\tShanghai Dahua Scale Factory\n"
        "70:B3:D5:00:00:00/36\tX\tA 36-bit Holder\n"
        "04:03:12\tHangzhou\tHangzhou Hikvision Digital Technology Co.,Ltd.\n"))
    assert db.lookup(0x402C761A0015) == "Shanghai Dahua Scale Factory"
    assert db.lookup(0x402C76FF0015) is None              # inside the RA block, not assigned in this table
    assert db.lookup(0x70B3D5000ABC) == "A 36-bit Holder"
    assert db.lookup(0x70B3D5001ABC) is None
    assert db.lookup(0x040312000011).startswith("Hangzhou Hikvision")
    assert db.lookup(0x020000000001) == "(locally administered)"


def test_installed_manuf_database_knows_the_camera_makers():
    db = ManufDatabase.load()
    assert len(db) > 10_000
    assert "Hikvision" in db.lookup(0x040312000011)
    assert "Dahua Technology" in db.lookup(0x08EDED000012)
    assert db.lookup(0x402C761A0015) == "Shanghai Dahua Scale Factory"
    assert db.lookup(0x78DF7224694D) == "Shanghai Imilab Technology Co.Ltd"


# ---- parsing manuf, MAC text, the covered lists' lookups (mutation testing, docs/mutation-core.md) -------------
def test_manuf_lines_are_parsed_by_prefix_length_and_name_column():
    parsed = parse_manuf(
        "# a comment\n\n"
        "no tab here\n"
        "01:00:5E/25\tMulticast\tIPv4 multicast\n"             # a length camwatch does not look up
        "zz:zz:zz\tBad\tNot hex\n"
        "00:00:0C\tCisco\tCisco Systems, Inc\n"               # long name in the third column
        "00:00:0D\tFibronics\n"                               # short name only
        "00:00:0E\tFujitsu\t   \n"                           # empty third column: the short name
        "00-00-0F\tNeXT\tNeXT, Inc.\n"                        # dashes
        "0000.10\tSytek\tSytek Inc.\n"                         # dots
        "00:1B:C5:00:00:00/36\tConverg\tConverging Systems Inc.\n"
        "8C:1F:64:F0:00:00/28\tA\tA Company\n"
        "40:2C:76\tIEEERegi\tIEEE Registration Authority\n")
    assert parsed == {24: {0x00000C: "Cisco Systems, Inc", 0x00000D: "Fibronics", 0x00000E: "Fujitsu",
                           0x00000F: "NeXT, Inc.", 0x000010: "Sytek Inc."},
                      36: {0x001BC5000: "Converging Systems Inc."}, 28: {0x8C1F64F: "A Company"}}
    db = ManufDatabase(parsed)
    assert len(db) == 7
    assert db.lookup(0) is None and db.lookup(0x00000C123456) == "Cisco Systems, Inc"
    assert db.lookup(0x001BC5000ABC) == "Converging Systems Inc." and db.lookup(0x8C1F64F12345) == "A Company"
    assert db.lookup(0x00AA00000001) is None                                  # universally administered, unknown
    assert db.lookup(0x06AA00000001) == "(locally administered)"
    assert db.lookup(0x01005E000001) is None                                  # multicast, not locally administered
    assert ManufDatabase({}).lookup(0x00000C000001) is None


def test_manuf_database_loads_a_given_file_and_survives_a_missing_one(tmp_path, monkeypatch):
    path = tmp_path / "manuf"
    path.write_text("00:00:0C\tCisco\tCisco Systems, Inc\n")
    assert ManufDatabase.load(path).lookup(0x00000C000001) == "Cisco Systems, Inc"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert len(ManufDatabase.load(tmp_path / "missing")) == 0


def test_mac_addresses_are_written_lowercase_colon_separated():
    from sensor.enrich import format_mac
    assert format_mac(0x0012AB0000FF) == "00:12:ab:00:00:ff"
    assert format_mac(0xFFFFFFFFFFFF) == "ff:ff:ff:ff:ff:ff"
    assert format_mac(0) is None


def test_nothing_names_no_maker():
    assert MAKERS.by_manufacturer(None) is None and MAKERS.by_manufacturer("") is None
    assert MAKERS.by_banner(None) is None and MAKERS.by_banner("") is None
    assert MAKERS.by_banner("nginx/1.24") is None


def test_manuf_database_tries_each_path_then_asks_tshark(tmp_path, monkeypatch):
    import sensor.enrich.makers as makers
    second = tmp_path / "manuf"
    second.write_bytes(b"00:00:0C\tCisco\tCisco \xff Systems\n")        # not UTF-8: replaced, not refused
    monkeypatch.setattr(makers, "MANUF_PATHS", (str(tmp_path / "missing"), str(second)))
    assert ManufDatabase.load().lookup(0x00000C000001) == "Cisco \ufffd Systems"
    calls = []

    def run(args, **kw):
        calls.append((args, kw))
        return type("Done", (), {"stdout": "00:00:0D\tFib\tFibronics Ltd.\n"})()
    monkeypatch.setattr(makers, "MANUF_PATHS", (str(tmp_path / "missing"),))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/tshark" if name == "tshark" else None)
    monkeypatch.setattr(subprocess, "run", run)
    assert ManufDatabase.load().lookup(0x00000D000001) == "Fibronics Ltd."
    assert calls == [(["tshark", "-G", "manuf"], {"capture_output": True, "text": True, "timeout": 30})]

    def broken(args, **kw):
        raise OSError("no tshark")
    monkeypatch.setattr(subprocess, "run", broken)
    assert len(ManufDatabase.load()) == 0


def test_the_last_mac_remembered_answers_what_the_lookup_does():
    """ManufDatabase.lookup remembers the last MAC and its organisation (a flood's new sources share one MAC): a
    MAC asked again, alternately or in runs, gets what the uncached lookup answers, none included."""
    import random

    db = ManufDatabase.load()
    table = ManufDatabase(parse_manuf("00:11:22\tAcme\n02:00:00\tLocal\n"))
    rng = random.Random(1616)
    macs = [0, 0x001122334455, 0x0211223344AA, 0x020000000001, 0xFFFFFFFFFFFF, 0x001A2B000001,
            *(rng.getrandbits(48) for _ in range(20))]
    for base in (db, table):
        for _ in range(300):
            m = rng.choice(macs)
            assert base.lookup(m) == base._lookup(m) if m else base.lookup(m) is None
