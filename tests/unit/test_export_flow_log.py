"""sensor/export/flow_log.py through the sensor: one record per flow that leaves the table, whatever the reason, with
Zeek's conn.log fields by value (counts, conn_state of each kind of handshake, ports, uid) and camwatch's
enrichment (device and maker, scopes, name, place, incident), wire strings escaped and bounded."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from packets import dns_response, ethernet, icmp_echo, ipv4, mac, tcp, tls_client_hello, udp
from sensor.config import parse_config
from sensor.enrich import ManufDatabase
from sensor.export.flow_log import FLOW_CONTRACT, FlowLog, conn_state
from sensor.pipeline import Sensor

from .test_export import T0, make_batch

CAM, NVR, RESOLVER, CLOUD, CORE = "10.20.0.14", "10.20.0.2", "10.20.0.1", "203.0.113.50", "10.1.0.5"
CAM_MAC, NVR_MAC, GW_MAC = mac("18:68:cb:00:00:14"), mac("00:11:32:00:00:02"), mac("02:00:00:00:00:fe")
MACS = {CAM: CAM_MAC, NVR: NVR_MAC}
MANUF = ManufDatabase({24: {0x1868CB: "Hangzhou Hikvision Digital Technology Co.,Ltd.",
                            0x001132: "Synology Incorporated"}})
SITE = {"sensor": {"name": "site-a"}, "networks": {"camera": ["10.20.0.0/24"], "core": ["10.1.0.0/16"]}}


def frame(src, dst, l4, proto, vlans=()):
    return ethernet(MACS.get(dst, GW_MAC), MACS.get(src, GW_MAC), 0x0800, ipv4(src, dst, proto, l4), vlans)


def t(src, dst, sport, dport, flags, payload=b"", **kw):
    return frame(src, dst, tcp(src, dst, sport, dport, 1, 1, flags, payload), 6, **kw)


def u(src, dst, sport, dport, payload=b"p" * 10, **kw):
    return frame(src, dst, udp(src, dst, sport, dport, payload), 17, **kw)


def replay(tmp_path, records, config=None, place=None, batches=1) -> tuple[Sensor, list[dict], list[str]]:
    """Records (ts, frame) through a sensor whose ended flows go to a flow log; the records and the raw lines."""
    sensor = Sensor(parse_config(config or SITE), manuf=MANUF)
    out = tmp_path / "flows.jsonl"
    log = FlowLog(str(out))
    log.attach(sensor, place)
    step = max(1, len(records) // batches)
    for k in range(0, len(records), step):
        sensor.process(make_batch(records[k:k + step]))
    sensor.finish()
    log.close()
    lines = out.read_text().splitlines()
    return sensor, [json.loads(line) for line in lines], lines


def handshake(client=CAM, server=CLOUD, sport=41234, dport=8555, t0=T0):
    return [(t0, t(client, server, sport, dport, "S")), (t0 + 0.1, t(server, client, dport, sport, "SA")),
            (t0 + 0.2, t(client, server, sport, dport, "A")),
            (t0 + 0.3, t(client, server, sport, dport, "PA", b"x" * 100)),
            (t0 + 0.4, t(server, client, dport, sport, "PA", b"y" * 40)),
            (t0 + 1.0, t(client, server, sport, dport, "FA")), (t0 + 1.1, t(server, client, dport, sport, "FA")),
            (t0 + 1.2, t(client, server, sport, dport, "A"))]


def test_a_tcp_connection_is_one_record_with_zeeks_fields_by_value(tmp_path):
    records = handshake()
    sensor, (rec,), _ = replay(tmp_path, records)
    sent = [f for _, f in records if f[6:12] == CAM_MAC]
    received = [f for _, f in records if f[6:12] != CAM_MAC]
    assert rec == {
        "ts": T0, "uid": rec["uid"], "id.orig_h": CAM, "id.orig_p": 41234, "id.resp_h": CLOUD, "id.resp_p": 8555,
        "proto": "tcp", "service": "hik-connect", "duration": 1.2, "orig_bytes": 100, "resp_bytes": 40,
        "conn_state": "SF", "orig_pkts": 5, "resp_pkts": 3, "ip_proto": 6, "vlan": None,
        "orig_l2_addr": "18:68:cb:00:00:14", "resp_l2_addr": "02:00:00:00:00:fe",
        "camwatch.contract": FLOW_CONTRACT, "camwatch.sensor": "site-a", "camwatch.end": "closed",
        "camwatch.orig_wire_bytes": sum(map(len, sent)), "camwatch.resp_wire_bytes": sum(map(len, received)),
        "camwatch.orig_scope": "camera", "camwatch.resp_scope": "public", "camwatch.device": CAM,
        "camwatch.device_vendor": "Hangzhou Hikvision Digital Technology Co.,Ltd.",
        "camwatch.device_maker": "Hikvision", "camwatch.covered": True, "camwatch.covered_basis": "named",
        "camwatch.device_role": "camera",
        "camwatch.name": None, "camwatch.country": None, "camwatch.asn": None, "camwatch.org": None,
        "camwatch.incident": rec["camwatch.incident"]}
    assert re.fullmatch(r"C[0-9A-Za-z]{12,18}", rec["uid"])
    # a Hikvision camera on Hik-Connect's port: the vendor service and its incident
    assert re.fullmatch(r"inc-[0-9a-f]{16}", rec["camwatch.incident"])
    assert sensor.flows.expired["end"] == 1


S0 = [(T0, "c", "S")]
REJ = [(T0, "c", "S"), (T0 + 0.1, "s", "RA")]
SF = [(T0, "c", "S"), (T0 + 0.1, "s", "SA"), (T0 + 0.2, "c", "A"), (T0 + 0.3, "c", "FA"), (T0 + 0.4, "s", "FA")]
S1 = [(T0, "c", "S"), (T0 + 0.1, "s", "SA"), (T0 + 0.2, "c", "A")]
RSTO = S1 + [(T0 + 0.5, "c", "RA")]
RSTR = S1 + [(T0 + 0.5, "s", "RA")]
RSTOS0 = [(T0, "c", "S"), (T0 + 0.2, "c", "R")]
SH = [(T0, "c", "S"), (T0 + 0.2, "c", "FA")]
S2 = S1 + [(T0 + 0.5, "c", "FA")]
S3 = S1 + [(T0 + 0.5, "s", "FA")]
OTH = [(T0, "c", "PA"), (T0 + 0.1, "s", "A")]    # midstream: no handshake seen
RSTRH = [(T0, "c", "PA"), (T0 + 0.1, "s", "R")]


@pytest.mark.parametrize("segments, state", [(S0, "S0"), (REJ, "REJ"), (SF, "SF"), (S1, "S1"), (RSTO, "RSTO"),
                                             (RSTR, "RSTR"), (RSTOS0, "RSTOS0"), (SH, "SH"), (S2, "S2"),
                                             (S3, "S3"), (OTH, "OTH"), (RSTRH, "RSTRH")],
                         ids=["S0", "REJ", "SF", "S1", "RSTO", "RSTR", "RSTOS0", "SH", "S2", "S3", "OTH", "RSTRH"])
def test_conn_state_of_generated_handshakes_and_resets(tmp_path, segments, state):
    records = [(ts, t(CAM, CLOUD, 41234, 8555, flags) if side == "c" else t(CLOUD, CAM, 8555, 41234, flags))
               for ts, side, flags in segments]
    _, recs, _ = replay(tmp_path, records)
    assert [r["conn_state"] for r in recs] == [state]
    assert recs[0]["id.orig_h"] == CAM and recs[0]["id.resp_p"] == 8555
    closed = state in ("SF", "REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH")
    assert recs[0]["camwatch.end"] == ("closed" if closed else "end")


def test_udp_and_icmp_states_and_ports(tmp_path):
    records = [(T0, u(CAM, CLOUD, 5000, 6000)),                                   # one way: S0
               (T0, u(CAM, RESOLVER, 5001, 123)), (T0 + 0.1, u(RESOLVER, CAM, 123, 5001)),   # both: SF
               (T0, frame(CAM, CLOUD, icmp_echo(7, 1), 1)), (T0 + 0.1, frame(CLOUD, CAM, icmp_echo(7, 1, True), 1))]
    _, recs, _ = replay(tmp_path, records)
    by_port = {r["id.resp_p"]: r for r in recs}
    assert by_port[6000]["conn_state"] == "S0" and by_port[6000]["service"] is None
    assert by_port[123]["conn_state"] == "SF" and by_port[123]["service"] == "ntp"
    icmp = by_port[None]
    assert (icmp["proto"], icmp["id.orig_p"], icmp["conn_state"], icmp["orig_pkts"], icmp["resp_pkts"],
            icmp["service"]) == ("icmp", None, "OTH", 1, 1, None)
    assert icmp["orig_bytes"] == icmp["resp_bytes"] == 32   # ICMP: what follows its 8-byte header
    assert len(recs) == 3


def test_conn_state_of_udp_by_who_sent():
    flow = SimpleNamespace(proto=17, orig_pkts=0, resp_pkts=2)
    assert conn_state(flow) == "SHR"   # type: ignore[arg-type]
    flow.resp_pkts = 0
    assert conn_state(flow) == "OTH"   # type: ignore[arg-type]


def test_every_way_a_flow_ends_is_one_record(tmp_path):
    config = {**SITE, "flows": {"udp_idle_timeout": 10, "active_timeout": 100, "max_flows": 3}}
    records = [(T0, u(CAM, CLOUD, 5000, 6000)), (T0 + 30, u(CAM, CLOUD, 5000, 6000))]   # idle, then a new flow
    records += [(T0 + 31 + k, u(CAM, CLOUD, 7000 + k, 6000)) for k in range(4)]          # one evicted
    records += [(T0 + 40 + 5 * k, u(CAM, NVR, 9000, 9001)) for k in range(30)]            # active timeout
    records.sort(key=lambda r: r[0])
    sensor, recs, _ = replay(tmp_path, records, config)
    assert len(recs) == sensor.flows.created == len({r["uid"] for r in recs})
    ends = sorted(r["camwatch.end"] for r in recs)
    assert {"idle", "evicted", "active", "end"} <= set(ends)
    assert sum(sensor.flows.expired.values()) == len(recs)
    assert sum(r["orig_pkts"] for r in recs) == len(records)
    assert sensor.detection.incidents.flow_links is not None and len(sensor.detection.incidents.flow_links) == 0


def test_names_scopes_device_place_and_incident(tmp_path):
    answer = dns_response(7, "litedev.hik-connect.com", [("litedev.hik-connect.com", 1, 300, CLOUD)])
    records = [(T0 - 1, u(RESOLVER, CAM, 53, 5353, answer))] + handshake(t0=T0)
    records += [(T0 + 2, t(CORE, CAM, 50000, 80, "S")), (T0 + 2.1, t(CAM, CORE, 80, 50000, "SA"))]
    places = {CLOUD: SimpleNamespace(country="CN", asn=4134, org='Chinanet "backbone"')}
    alerts = []
    sensor = Sensor(parse_config(SITE), manuf=MANUF, on_alert=lambda a: alerts.append(a.as_dict()))
    log = FlowLog(str(tmp_path / "f.jsonl"))
    log.attach(sensor, places.get)
    sensor.process(make_batch(records))
    sensor.finish()
    log.close()
    recs = {r["id.resp_p"]: r for r in map(json.loads, (tmp_path / "f.jsonl").read_text().splitlines())}
    cloud, core = recs[8555], recs[80]
    assert cloud["camwatch.name"] == "litedev.hik-connect.com" and cloud["service"] == "hik-connect"
    assert (cloud["camwatch.country"], cloud["camwatch.asn"], cloud["camwatch.org"]) == (
        "CN", 4134, 'Chinanet "backbone"')
    incidents = {a["incident"] for a in alerts if a["service"]["id"] == "hik-connect"}
    assert incidents and cloud["camwatch.incident"] in incidents
    # a core host reaching a camera: the camera is the device, the place of a private end is not looked up
    assert (core["id.orig_h"], core["camwatch.orig_scope"], core["camwatch.resp_scope"]) == (CORE, "core", "camera")
    assert core["camwatch.device"] == CAM and core["camwatch.country"] is None
    assert core["service"] == "http"   # by its port: no request was seen


def test_an_allow_rule_makes_the_destination_allowed(tmp_path):
    config = {**SITE, "allow": [{"dst": CLOUD, "port": 8555, "proto": "tcp"}]}
    _, (rec,), _ = replay(tmp_path, handshake(), config)
    assert (rec["camwatch.orig_scope"], rec["camwatch.resp_scope"], rec["camwatch.incident"]) == (
        "camera", "allowed", None)


def test_vlan_and_tls_service_and_sni_name(tmp_path):
    hello = tls_client_hello("api.example.net")
    records = [(T0, t(CAM, CLOUD, 41000, 443, "S", vlans=((0x8100, 20),))),
               (T0 + 0.1, t(CLOUD, CAM, 443, 41000, "SA", vlans=((0x8100, 20),))),
               (T0 + 0.2, t(CAM, CLOUD, 41000, 443, "PA", hello, vlans=((0x8100, 20),)))]
    _, (rec,), _ = replay(tmp_path, records)
    assert (rec["vlan"], rec["service"], rec["camwatch.name"], rec["conn_state"]) == (20, "ssl", "api.example.net",
                                                                                    "S1")


HOSTILE = ['evil"\\\x1b[31m\x07.example', "a\u00e9\u202e.example", "x" * 63 + "." + "y" * 63 + "." + "z" * 63]


@pytest.mark.parametrize("name", HOSTILE, ids=["quotes-escapes", "non-ascii", "long"])
def test_names_from_the_wire_are_escaped_one_printable_line(tmp_path, name):
    hello = tls_client_hello(name)
    records = [(T0, t(CAM, CLOUD, 41000, 443, "S")), (T0 + 0.1, t(CLOUD, CAM, 443, 41000, "SA")),
               (T0 + 0.2, t(CAM, CLOUD, 41000, 443, "PA", hello))]
    _, (rec,), (line,) = replay(tmp_path, records)
    assert line.isascii() and line.isprintable()
    got = rec["camwatch.name"]
    assert got is not None and len(got) <= 253
    assert got == name.encode().decode("ascii", "replace").lower()[:253]


def test_a_name_longer_than_a_dns_name_is_cut(tmp_path):
    long = ".".join(["a" * 63] * 3 + ["b" * 62])   # 254 characters: DNS's longest
    answer = dns_response(7, long, [(long, 1, 300, CLOUD)])
    records = [(T0, u(RESOLVER, CAM, 53, 5353, answer)), (T0 + 1, u(CAM, CLOUD, 5000, 6000))]
    _, recs, _ = replay(tmp_path, records)
    (rec,) = [r for r in recs if r["id.resp_p"] == 6000]
    assert rec["camwatch.name"] == long[:253]


def test_uids_are_stable_and_distinct(tmp_path):
    records = handshake() + handshake(sport=41235) + handshake(client=NVR, sport=41234)
    records.sort(key=lambda r: r[0])
    _, first, _ = replay(tmp_path, records)
    _, again, _ = replay(tmp_path, records, batches=5)
    assert len({r["uid"] for r in first}) == 3
    assert sorted(r["uid"] for r in first) == sorted(r["uid"] for r in again)
    assert sorted(first, key=lambda r: r["uid"]) == sorted(again, key=lambda r: r["uid"])


def test_without_a_flow_log_nothing_is_built():
    sensor = Sensor(parse_config(SITE), manuf=MANUF)
    sensor.process(make_batch(handshake()))
    sensor.finish()
    assert sensor.flows.on_end is None and sensor.detection.incidents.flow_links is None


def test_the_readme_documents_every_field_and_its_example_is_a_record(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Flow records (contract 1)", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in section.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    _, (rec,), _ = replay(tmp_path, handshake())
    assert documented == set(rec)
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    assert list(example) == list(rec)
