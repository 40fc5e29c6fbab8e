"""sensor/detect/incidents.py and services.py: one incident per (device, service); what opens, updates and closes
one; the totals on the close line; what names the service (indicators, registrable domain, address); bounds."""

from __future__ import annotations

import pytest

from sensor.config import parse_config
from sensor.detect import Alert, Indicators
from sensor.detect.framework import Detection
from sensor.detect.incidents import CONTRACT_VERSION, MAX_EVIDENCE, MAX_FLOWS, Incidents
from sensor.detect.services import KIND_ADDRESS, KIND_DOMAIN, KIND_VENDOR, ServiceResolver
from sensor.enrich import CoveredMakers, Inventory, ManufDatabase
from sensor.flows import Flow
from sensor.state import KnownState
from sensor.tags import TAG_PPPP

from .observations import device, observation

INDICATORS = Indicators.load()
T0 = 1_700_000_000.0


def _alert(ts, detector="egress_policy", severity="medium", device_ip="10.20.0.5", dst="203.0.113.7", name=None,
           score=1.0, **extra) -> Alert:
    return Alert(ts, "site", detector, severity, device_ip, None, None, dst, 443, "tcp", name, "public", score,
                 f"{detector} saw it", 20, dict(extra))


def _incidents(timeout=100.0, max_open=1000) -> Incidents:
    return Incidents("site", timeout, max_open)


def _flow(orig_pkts, orig_bytes, resp_pkts, resp_bytes, first=T0) -> Flow:
    flow = Flow(b"k", 20, 6, 40000, 443, first)
    flow.orig_pkts, flow.orig_bytes, flow.resp_pkts, flow.resp_bytes = orig_pkts, orig_bytes, resp_pkts, resp_bytes
    return flow


def _written(incidents: Incidents) -> list[Alert]:
    out = [incidents.line(incident, event, ts) for incident, event, ts in incidents.take_changes()]
    for incident in list(incidents._open.values()):
        incident.written = True
    return out


RESOLVER = ServiceResolver(INDICATORS)
SERVICE = RESOLVER.of_destination("203.0.113.7", None)


# ---- services --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected", "kind"), [
    ("litedev.hik-connect.com", "hik-connect", KIND_VENDOR),          # an indicator's domain
    ("ntp.ys7.com", "hik-connect", KIND_VENDOR),
    ("clips.example-oem.net", "example-oem.net", KIND_DOMAIN),
    ("a.b.example.co.uk", "example.co.uk", KIND_DOMAIN),              # public-suffix aware
    ("Upload.Example.COM.", "example.com", KIND_DOMAIN),              # case and the root's dot
    ("bucket.s3.amazonaws.com", "bucket.s3.amazonaws.com", KIND_DOMAIN),   # a private suffix: the tenant
])
def test_a_name_belongs_to_its_vendor_service_or_registrable_domain(name, expected, kind):
    found = ServiceResolver(INDICATORS).of_name(name)
    assert (found.id, found.kind) == (expected, kind)


@pytest.mark.parametrize("name", ["com", "co.uk", "192.0.2.7", "2001:db8::1", "", "x" * 300, "caf\u00e9.example",
                                  "..", "a..b"])
def test_strings_that_are_no_usable_host_name_name_no_service(name):
    assert ServiceResolver(INDICATORS).of_name(name) is None


def test_an_address_keeps_the_service_it_was_seen_with():
    resolver = ServiceResolver(INDICATORS)
    dev = device()
    named = resolver.of_observation(observation(dev, peer="198.51.100.9", name="cdn.clips.example.org"))
    assert named.id == "example.org"
    later = resolver.of_observation(observation(dev, peer="198.51.100.9", name=None))   # a flow without SNI
    assert later is named
    other = resolver.of_observation(observation(dev, peer="198.51.100.10"))
    assert (other.id, other.kind) == ("198.51.100.10", KIND_ADDRESS)


def test_a_payload_signature_names_the_vendor_service_of_an_ip_literal():
    flow = _flow(3, 60, 1, 20)
    flow.orig_tags = TAG_PPPP
    found = ServiceResolver(INDICATORS).of_observation(observation(device(), peer="192.0.2.45", port=32100,
                                                                   proto="udp", flow=flow))
    assert (found.id, found.kind) == ("cs2-pppp", KIND_VENDOR)


def test_the_resolver_memory_is_bounded(monkeypatch):
    import sensor.detect.services as services
    monkeypatch.setattr(services, "MAX_REMEMBERED", 8)
    resolver = services.ServiceResolver(INDICATORS)
    dev = device()
    for i in range(100):
        resolver.of_observation(observation(dev, peer=f"198.51.100.{i}", name=f"h{i}.example{i}.com"))
    assert len(resolver._by_address) == 8 and len(resolver._by_name) == 8


# ---- lines -----------------------------------------------------------------------------------------------------
def test_what_one_second_tells_several_detectors_is_one_open_line():
    inc = _incidents()
    dev = device()
    for det, sev in (("egress_policy", "high"), ("vendor_cloud", "high"), ("hardcoded_infra", "low")):
        inc.detect(_alert(T0, det, sev, evidence=f"{det} phrase"), SERVICE, dev, None)
    [line] = _written(inc)
    d = line.as_dict()
    assert (d["event"], d["contract"], d["severity"]) == ("open", CONTRACT_VERSION, "high")
    assert d["detector"] == "vendor_cloud"   # at equal severity the specific detector leads the generic one
    assert d["detectors"] == ["egress_policy", "vendor_cloud", "hardcoded_infra"]
    assert d["evidence"] == [{"detector": "vendor_cloud", "severity": "high", "text": "vendor_cloud phrase"},
                             {"detector": "egress_policy", "severity": "high", "text": "egress_policy phrase"},
                             {"detector": "hardcoded_infra", "severity": "low", "text": "hardcoded_infra phrase"}]
    assert d["incident"].startswith("inc-") and d["service"] == {"id": "203.0.113.7", "name": "203.0.113.7",
                                                                 "kind": "address"}


def test_updates_only_when_severity_rises_or_a_new_detector_joins():
    inc = _incidents()
    dev = device()
    inc.detect(_alert(T0, "egress_policy", "medium"), SERVICE, dev, None)
    assert [line.extra["event"] for line in _written(inc)] == ["open"]
    inc.detect(_alert(T0 + 5, "egress_policy", "medium", dst="203.0.113.7"), SERVICE, dev, None)   # a repeat
    assert _written(inc) == []
    inc.detect(_alert(T0 + 6, "beaconing", "medium"), SERVICE, dev, None)                        # new detector
    inc.detect(_alert(T0 + 6.5, "video_egress", "critical"), SERVICE, dev, None)                 # and higher
    [update] = _written(inc)
    assert (update.extra["event"], update.severity, update.detector, update.ts) == (
        "update", "critical", "video_egress", T0 + 6)
    inc.detect(_alert(T0 + 9, "beaconing", "high"), SERVICE, dev, None)                          # not above
    assert _written(inc) == []


def test_the_close_line_carries_the_totals_both_ways():
    """Counted from the update that first brought each flow (what it carried before is not the incident's), both
    ways, from the flows' own counters."""
    inc = _incidents()
    dev = device()
    flow = _flow(10, 5000, 4, 300)
    first = observation(dev, ts=T0, sent_packets=10, sent_bytes=5000, received_bytes=300, received_packets=4,
                        flow=flow, name="x.example.com")
    inc.detect(_alert(T0), SERVICE, dev, first)
    inc.detect(_alert(T0, "beaconing"), SERVICE, dev, first)   # two detections of one update count it once
    _written(inc)
    for k in range(1, 4):
        flow.orig_pkts, flow.orig_bytes = flow.orig_pkts + 10, flow.orig_bytes + 125_000
        flow.resp_pkts, flow.resp_bytes = flow.resp_pkts + 1, flow.resp_bytes + 50
        inc.traffic(observation(dev, ts=T0 + k, sent_packets=10, sent_bytes=125_000, received_bytes=50,
                                received_packets=1, flow=flow), SERVICE)
        if k == 2:   # a second flow in the same second adds to that second's rate
            second = _flow(1, 100, 1, 50, first=T0 + 2)
            inc.traffic(observation(dev, ts=T0 + 2.5, sent_packets=1, sent_bytes=100, received_bytes=50,
                                    received_packets=1, flow=second), SERVICE)
    [close] = inc.take_closed(T0 + 10, "end")
    d = close.as_dict()
    t = d["totals"]
    assert (d["event"], d["reason"]) == ("close", "end")
    assert (t["packets_out"], t["bytes_out"], t["packets_in"], t["bytes_in"]) == (41, 380_100, 8, 500)
    assert (t["first_seen"], t["last_seen"], t["duration_s"]) == (T0, T0 + 3, 3.0)
    assert t["peak_bps"] == 8 * 125_100 and t["mean_bps"] == round(8 * 380_100 / 3)
    assert t["addresses"] == ["203.0.113.7"] and t["names"] == ["x.example.com"]
    assert "sent 41 packets (380100 bytes) and received 8 packets (500 bytes)" in d["summary"]


def test_a_flow_that_leaves_and_comes_back_is_not_counted_twice(monkeypatch):
    import sensor.detect.incidents as incidents
    monkeypatch.setattr(incidents, "MAX_FLOWS", 2)
    inc = _incidents()
    dev = device()
    flows = [_flow(0, 0, 0, 0) for _ in range(3)]
    inc.detect(_alert(T0), SERVICE, dev, None)
    for k in range(9):   # three flows taking turns, 100 bytes each time
        flow = flows[k % 3]
        flow.orig_pkts, flow.orig_bytes = flow.orig_pkts + 1, flow.orig_bytes + 100
        inc.traffic(observation(dev, ts=T0 + k, sent_packets=1, sent_bytes=100, flow=flow), SERVICE)
    _written(inc)
    [close] = inc.take_closed(T0 + 10, "end")
    assert close.extra["totals"]["bytes_out"] == 900   # each update once, not a returning flow's history again


def test_silence_closes_and_the_next_detection_opens_a_new_incident():
    inc = _incidents(timeout=100.0)
    dev = device()
    inc.detect(_alert(T0), SERVICE, dev, None)
    first = _written(inc)[0].extra["incident"]
    assert inc.take_closed(T0 + 100) == []
    [close] = inc.take_closed(T0 + 100.5)
    assert (close.extra["reason"], close.ts) == ("silence", T0 + 100)
    inc.detect(_alert(T0 + 300), SERVICE, dev, None)
    [again] = _written(inc)
    assert again.extra["event"] == "open" and again.extra["incident"] != first


def test_traffic_keeps_an_incident_open():
    inc = _incidents(timeout=100.0)
    dev = device()
    inc.detect(_alert(T0), SERVICE, dev, None)
    _written(inc)
    for k in range(1, 5):
        inc.traffic(observation(dev, ts=T0 + 90 * k), SERVICE)
        assert inc.take_closed(T0 + 90 * k + 1) == []
    assert len(inc) == 1


def test_evicted_incidents_close_and_an_unwritten_one_writes_nothing():
    inc = _incidents(max_open=2)
    dev = device()
    for i in range(2):
        inc.detect(_alert(T0 + i, dst=f"203.0.113.{i}"), RESOLVER.of_destination(f"203.0.113.{i}", None), dev,
                   None)
    _written(inc)
    inc.detect(_alert(T0 + 5, dst="203.0.113.9"), RESOLVER.of_destination("203.0.113.9", None), dev, None)
    [evicted] = inc.take_closed(T0 + 5)
    assert evicted.extra["reason"] == "evicted" and evicted.dst_ip == "203.0.113.0"
    inc.detect(_alert(T0 + 6, dst="203.0.113.8"), RESOLVER.of_destination("203.0.113.8", None), dev, None)
    inc.detect(_alert(T0 + 6, dst="203.0.113.10"), RESOLVER.of_destination("203.0.113.10", None), dev, None)
    # .8 evicted the written .1 (a close line); .10 evicted .9, whose open line was still owed: it writes neither
    assert [line.dst_ip for line in _written(inc)] == ["203.0.113.8", "203.0.113.10"]
    assert [line.dst_ip for line in inc.take_closed(T0 + 6)] == ["203.0.113.1"]


def test_evidence_and_followed_flows_are_bounded():
    inc = _incidents()
    dev = device()
    for i in range(MAX_EVIDENCE + 10):
        inc.detect(_alert(T0, evidence=f"phrase {i}"), SERVICE, dev,
                   observation(dev, sent_packets=1, sent_bytes=10, flow=_flow(1, 10, 0, 0)))
    for _ in range(MAX_FLOWS * 3):
        inc.traffic(observation(dev, ts=T0 + 1, sent_packets=1, sent_bytes=10, received_bytes=5,
                                flow=_flow(1, 10, 1, 5)), SERVICE)
    inc.detect(_alert(T0, "beaconing", "low", evidence="weakest, but beaconing's only word"), SERVICE, dev, None)
    [incident] = inc._open.values()
    assert len(incident.traffic.flows) == MAX_FLOWS
    assert len(incident.evidence) == MAX_EVIDENCE and incident.evidence[-1].detector == "beaconing"
    totals = incident.traffic.totals()
    assert totals[:2] == [MAX_EVIDENCE + 10 + MAX_FLOWS * 3, 10 * (MAX_EVIDENCE + 10 + MAX_FLOWS * 3)]


def test_incident_ids_are_stable_across_runs_and_differ_by_pair():
    lines = []
    for _ in range(2):
        inc = _incidents()
        inc.detect(_alert(T0), SERVICE, device(), None)
        inc.detect(_alert(T0, device_ip="10.20.0.6"), SERVICE, device("10.20.0.6"), None)
        lines.append([line.extra["incident"] for line in _written(inc)])
    assert lines[0] == lines[1] and len(set(lines[0])) == 2


# ---- through the detection stage -------------------------------------------------------------------------------
def _detection(**config):
    lines: list[Alert] = []
    cfg = parse_config({"alerts": {"episode_timeout": 100}, **config})
    inventory = Inventory(cfg, ManufDatabase({}), CoveredMakers.load())
    return Detection(cfg, KnownState(None), lines.append, indicators=INDICATORS, inventory=inventory), lines


def test_a_lookup_and_the_connection_to_a_vendor_cloud_are_one_incident():
    from sensor.enrich import DnsQuery
    detection, lines = _detection()
    dev = device(maker="Hikvision")
    detection.dns_query(DnsQuery(T0, dev, "litedev.hik-connect.com", "10.20.0.1", "camera", 20, False))
    flow = _flow(3, 400, 2, 200)
    detection.observe(observation(dev, ts=T0 + 0.2, name="litedev.hik-connect.com", port=8555, flow=flow))
    detection.tick(T0 + 1)
    [line] = lines
    assert line.extra["service"]["id"] == "hik-connect" and line.severity == "high"
    assert set(line.extra["detectors"]) >= {"vendor_cloud", "egress_policy"}
    assert line.detector == "vendor_cloud"


def test_a_device_that_holds_no_open_incident_costs_no_service_lookup(monkeypatch):
    detection, _ = _detection()
    calls = []
    monkeypatch.setattr(detection.services, "of_observation", lambda obs: calls.append(obs))
    detection.observe(observation(device(), scope="camera", peer="10.20.0.2"))
    assert calls == []


def test_a_device_fanning_out_to_bare_addresses_becomes_one_fan_out_incident():
    from sensor.detect.incidents import FAN_OUT
    inc = _incidents()
    dev = device()
    for i in range(FAN_OUT + 12):
        ip = f"198.51.100.{i}"
        inc.detect(_alert(T0 + i * 0.5, dst=ip), RESOLVER.of_destination(ip, None), dev, None)
    lines = _written(inc)
    assert len(lines) == FAN_OUT + 1
    fan = lines[-1]
    assert fan.extra["service"] == {"id": "fan-out-public", "name": "many public addresses", "kind": "site"}
    # a named service, an address with its own incident, and another device are not folded
    named = RESOLVER.of_name("clips.example.org")
    inc.detect(_alert(T0 + 20, dst="203.0.113.99", name="clips.example.org"), named, dev, None)
    inc.detect(_alert(T0 + 20, "video_egress", "high", dst="198.51.100.0"), RESOLVER.of_destination(
        "198.51.100.0", None), dev, None)
    inc.detect(_alert(T0 + 20, device_ip="10.20.0.6", dst="198.51.100.50"), RESOLVER.of_destination(
        "198.51.100.50", None), device("10.20.0.6"), None)
    assert [(line.extra["event"], line.extra["service"]["id"]) for line in _written(inc)] == [
        ("open", "example.org"), ("update", "198.51.100.0"), ("open", "198.51.100.50")]
    # the fan-out's close lists the addresses it folded, as far as it saw traffic to them
    inc.traffic(observation(dev, ts=T0 + 21, peer="198.51.100.17"), RESOLVER.of_destination("198.51.100.17", None))
    closed = {line.extra["service"]["id"]: line for line in inc.take_closed(T0 + 30, "end")}
    assert closed["fan-out-public"].extra["totals"]["addresses"] == ["198.51.100.17"]
    # once the bare-address incidents close, the count starts again
    inc.detect(_alert(T0 + 40, dst="198.51.100.200"), RESOLVER.of_destination("198.51.100.200", None), dev, None)
    assert _written(inc)[0].extra["service"]["id"] == "198.51.100.200"


def test_an_incident_opened_on_a_bare_address_takes_the_name_that_arrives_in_the_same_second():
    """SYN first (no name yet), then the ClientHello names the flow: one incident, of the named service, whether
    the two came in one batch or not."""
    inc = _incidents()
    dev = device()
    resolver = ServiceResolver(INDICATORS)
    inc.detect(_alert(T0), resolver.of_destination("203.0.113.7", None), dev, None)
    named = observation(dev, ts=T0 + 0.05, name="clips.example-drop.net")
    inc.traffic(named, resolver.of_observation(named))
    [line] = _written(inc)
    assert line.extra["service"]["id"] == "example-drop.net" and line.dst_name == "clips.example-drop.net"
    # once its open line is out, an incident keeps the service it was written with
    inc.detect(_alert(T0 + 2, dst="203.0.113.8"), resolver.of_destination("203.0.113.8", None), dev, None)
    _written(inc)
    later = observation(dev, ts=T0 + 3, peer="203.0.113.8", name="other.example.org")
    inc.traffic(later, resolver.of_observation(later))
    assert {k[1] for k in inc._open} == {"example-drop.net", "203.0.113.8"}


def test_the_flows_all_incidents_follow_are_bounded_and_counted_without_room(monkeypatch):
    import sensor.detect.incidents as incidents
    monkeypatch.setattr(incidents, "FOLLOWED_MAX", 3)
    inc = _incidents()
    for i in range(5):
        dev = device(f"10.20.0.{10 + i}")
        flow = _flow(4, 400, 2, 100)
        inc.detect(_alert(T0, device_ip=dev.ip), SERVICE, dev,
                   observation(dev, sent_packets=4, sent_bytes=400, received_bytes=100, flow=flow))
    assert inc._followed == 3 and sum(i.traffic.following for i in inc._open.values()) == 3
    _written(inc)
    totals = [line.extra["totals"] for line in inc.take_closed(T0 + 1, "end")]
    # the two without room counted what their observations carried: sent both ways as the updates told it
    assert [(t["packets_out"], t["bytes_out"], t["bytes_in"]) for t in totals] == [(4, 400, 100)] * 5
    assert inc._followed == 0


# ---- found in review: growth, order, gaps, crowding --------------------------------------------------------------
def test_an_incident_the_gate_held_back_offers_its_open_again_when_it_grows_stronger():
    """Forged sources fill one detector's flood window; the real camera's low incident is held back. Its video
    leaving the site later is critical and led by another detector: that open line goes out."""
    from sensor.alerting import FLOOD_DEVICES
    detection, lines = _detection()
    for i in range(FLOOD_DEVICES):
        detection.emit(_alert(T0, "new_destination", "low", device_ip=f"10.20.1.{i}"))
    detection.emit(_alert(T0 + 0.5, "new_destination", "low", device_ip="10.20.0.5"))
    detection.tick(T0 + 1)
    assert not [a for a in lines if a.device_ip == "10.20.0.5"]
    detection.emit(_alert(T0 + 10, "video_egress", "critical", device_ip="10.20.0.5"))
    detection.tick(T0 + 11)
    [line] = [a for a in lines if a.device_ip == "10.20.0.5"]
    assert (line.extra["event"], line.severity, line.detector) == ("open", "critical", "video_egress")
    assert line.extra["detectors"] == ["new_destination", "video_egress"]


@pytest.mark.parametrize("order", [(5.2, 5.8), (5.8, 5.2)], ids=["repeat-first", "new-detector-first"])
def test_an_update_takes_the_seconds_earliest_detection_whatever_the_order(order):
    inc = _incidents()
    dev = device()
    inc.detect(_alert(T0), SERVICE, dev, None)
    _written(inc)
    events = {5.2: _alert(T0 + 5.2), 5.8: _alert(T0 + 5.8, "beaconing")}
    for ts in order:
        inc.detect(events[ts], SERVICE, dev, None)
    [update] = _written(inc)
    assert (update.extra["event"], update.ts) == ("update", T0 + 5.2)


def test_after_a_gap_the_fan_out_counts_only_what_is_still_open():
    from sensor.detect.incidents import FAN_OUT
    inc = _incidents(timeout=100.0)
    dev = device()
    for i in range(FAN_OUT):
        inc.detect(_alert(T0, dst=f"198.51.100.{i}"), RESOLVER.of_destination(f"198.51.100.{i}", None), dev, None)
    _written(inc)
    inc.detect(_alert(T0 + 5000, dst="198.51.100.99"), RESOLVER.of_destination("198.51.100.99", None), dev, None)
    assert [line.extra["service"]["id"] for line in _written(inc)] == ["198.51.100.99"]
    assert len(inc.take_closed(T0 + 5000)) == FAN_OUT


def test_a_device_naming_every_flow_anew_is_held_to_its_share_of_the_table():
    from sensor.detect.incidents import MAX_PER_DEVICE
    inc = _incidents()
    dev = device()
    resolver = ServiceResolver(INDICATORS)
    for i in range(MAX_PER_DEVICE + 30):
        name = f"r{i}.random{i}.example"
        inc.detect(_alert(T0, dst=f"203.0.113.{i % 250}", name=name), resolver.of_name(name), dev, None)
    services = [line.extra["service"]["id"] for line in _written(inc)]
    assert len(services) == MAX_PER_DEVICE + 1 and services[-1] == "fan-out-public"
    other = device("10.20.0.9")
    inc.detect(_alert(T0, device_ip=other.ip), SERVICE, other, None)   # other devices are not crowded out
    assert [line.extra["service"]["id"] for line in _written(inc)] == ["203.0.113.7"]


def test_a_site_grouping_does_not_adopt_a_bare_address_incident():
    from sensor.detect.lateral_movement import NEIGHBOURS
    inc = _incidents()
    dev = device()
    peer = observation(dev, ts=T0, peer="10.20.0.30", scope="private")
    inc.detect(_alert(T0, "new_destination", "low", dst="10.20.0.30"), RESOLVER.of_destination("10.20.0.30", None),
               dev, peer)
    inc.detect(_alert(T0, "lateral_movement", "high", dst="10.20.0.30"), NEIGHBOURS, dev, peer)
    assert sorted(line.extra["service"]["id"] for line in _written(inc)) == ["10.20.0.30", "lateral-movement"]


@pytest.mark.parametrize("name", ["a b.com", "a\x00.com", "-.com", "a.-", "x" * 64 + ".com",
                                  "y" * 300 + ".hik-connect.com"])
def test_junk_and_overlong_names_are_no_service_even_under_a_vendor_pattern(name):
    assert ServiceResolver(INDICATORS).of_name(name) is None


def test_an_open_incident_does_not_keep_what_the_inventory_and_flow_table_let_go():
    """Open incidents outnumber devices twenty to one at their bound: one that held its device (with its peers and
    names) or its last observation (with a flow) would keep every evicted device and ended flow alive for as long
    as it stays open. The close line then names the device by address."""
    import gc
    import weakref

    inc = _incidents()
    dev = device(maker="Hikvision")
    obs = observation(dev, ts=T0, flow=_flow(3, 300, 0, 0))
    inc.detect(_alert(T0), SERVICE, dev, obs)
    _written(inc)
    assert "Hikvision" in inc.take_closed(T0 + 1, "end")[0].summary   # while the device lives, it is described
    inc.detect(_alert(T0 + 2), SERVICE, dev, obs)
    _written(inc)
    device_alive, obs_alive = weakref.ref(dev), weakref.ref(obs)
    del dev, obs
    gc.collect()
    assert device_alive() is None and obs_alive() is None
    [close] = inc.take_closed(T0 + 3, "end")
    assert "10.20.0.5 and" in close.summary
    assert close.as_dict()["totals"]["packets_out"] == 3   # the flow itself is followed (FOLLOWED_MAX bounds it)


# ---- what an open incident holds at the bound ------------------------------------------------------------------
def test_open_incidents_share_equal_plain_extras_and_lines_never_change_them():
    """A thousand incidents whose detections say {"direction": "outbound"} hold one dict between them; writing an
    incident's open, update and close lines (which add contract, incident, event, reason, totals to their extra)
    leaves what the others hold as it was."""
    inc = _incidents()
    for k in range(3):
        inc.detect(_alert(T0, device_ip=f"10.20.0.{k + 1}", direction="outbound"), SERVICE, None, None)
    leads = [i.lead for i in inc._open.values()]
    assert leads[0].extra is leads[1].extra is leads[2].extra
    opened = _written(inc)
    inc.detect(_alert(T0 + 1, "beaconing", device_ip="10.20.0.1", direction="outbound"), SERVICE, None, None)
    [update] = _written(inc)
    closes = inc.take_closed(T0 + 5, "end")
    assert [line.extra["event"] for line in [*opened, update, *closes]] == ["open"] * 3 + ["update"] + ["close"] * 3
    assert all(line.extra["direction"] == "outbound" for line in [*opened, update, *closes])
    assert leads[2].extra == {"direction": "outbound"}


def test_extras_equal_in_python_but_written_differently_are_not_merged():
    """True == 1 and "1" is neither: each line writes its own detection's value, of its own type."""
    inc = _incidents()
    for k, value in enumerate([1, True, "1", None, 1]):
        inc.detect(_alert(T0, device_ip=f"10.20.0.{k + 1}", flag=value), SERVICE, None, None)
    written = [line.as_dict()["flag"] for line in _written(inc)]
    assert [(v, type(v)) for v in written] == [(1, int), (True, bool), ("1", str), (None, type(None)), (1, int)]
    evidence = [line.as_dict()["evidence"][0]["details"]["flag"] for line in inc.take_closed(T0 + 5, "end")]
    assert [(v, type(v)) for v in evidence] == [(1, int), (True, bool), ("1", str), (None, type(None)), (1, int)]


def test_evidence_without_details_holds_none_and_writes_no_details():
    inc = _incidents()
    inc.detect(_alert(T0, "vendor_cloud", service="hik-connect"), SERVICE, None, None)   # `service` is not detail
    [line] = _written(inc)
    [incident] = inc._open.values()
    assert incident.evidence[0].details is None
    assert "details" not in line.as_dict()["evidence"][0] and line.as_dict()["service"]["id"] == SERVICE.id


def test_an_incident_that_follows_no_flow_holds_no_flow_container():
    inc = _incidents()
    dev = device()
    inc.detect(_alert(T0), SERVICE, dev, None)
    [incident] = inc._open.values()
    assert incident.traffic.flows == () and incident.traffic.retired is None and incident.traffic.following == 0
    inc.traffic(observation(dev, ts=T0 + 1, sent_packets=2, sent_bytes=200, flow=_flow(2, 200, 0, 0)), SERVICE)
    assert incident.traffic.following == 1 and inc._followed == 1
    _written(inc)
    [close] = inc.take_closed(T0 + 5, "end")
    assert close.extra["totals"]["packets_out"] == 2 and inc._followed == 0


def test_the_open_counts_match_the_open_table_so_a_device_without_any_skips_the_fan_out_rule():
    """_fanned_out answers a device with no open incident from _per_device alone: on random detections and traffic
    (bare addresses, names, site groupings, silences, evictions, names adopted in the same second, the run's end
    closing every one at once) the per-device and bare-address counts stay those of the open table, and its answer
    is the full rule's for every device."""
    import random
    from collections import Counter

    from sensor.detect.incidents import KIND_SITE, fan_out_service

    def full_rule(inc, device_id, service, scope):   # _fanned_out before its shortcut
        if service.kind == KIND_SITE or (device_id, service.id) in inc._open:
            return service
        fan = fan_out_service(scope)
        crowded = inc._per_device.get(device_id, 0) >= MAX_PER_DEVICE
        if crowded or (service.kind == KIND_ADDRESS and ((device_id, fan.id) in inc._open
                                                         or inc._bare.get((device_id, scope), 0) >= FAN_OUT)):
            return fan
        return service

    from sensor.detect.incidents import FAN_OUT, MAX_PER_DEVICE
    from sensor.detect.services import IncidentService

    rng = random.Random(1616)
    inc = _incidents(timeout=30.0, max_open=60)
    devices = [device(f"10.20.0.{i}") for i in range(1, 4)]
    resolver = ServiceResolver(INDICATORS)
    site = IncidentService("sweep", "the VLAN", KIND_SITE)
    ts, answered = T0, Counter()
    for _ in range(3000):
        ts += rng.choice([0.0, 0.1, 0.1, 0.1, 1.0, 40.0]) if rng.random() < 0.3 else 0.0
        dev = rng.choice(devices)
        ip = f"198.51.100.{rng.randint(1, 30)}"
        name = rng.choice([None, None, f"h{rng.randint(1, 5)}.example.org"])
        service = rng.choice([resolver.of_destination(ip, name), site])
        if rng.random() < 0.2:
            inc.traffic(observation(dev, ts=ts, peer=ip, name=name), service)
        else:
            obs = observation(dev, ts=ts, peer=ip, name=name) if rng.random() < 0.5 else None
            inc.detect(_alert(ts, device_ip=dev.ip, dst=ip, name=name), service, dev, obs)
        if rng.random() < 0.1:
            _written(inc)
        if rng.random() < 0.05:
            inc.take_closed(ts, rng.choice([None, None, "end"]))   # silent ones, or every one (the run's end)
        assert inc._per_device == Counter(key[0] for key in inc._open)
        assert inc._bare == Counter((key[0], i.scope) for key, i in inc._open.items()
                                    if i.service.kind == KIND_ADDRESS)
        for other in devices:
            probe = resolver.of_destination(f"198.51.100.{rng.randint(1, 30)}", None)
            got = inc._fanned_out(other.id, probe, "public")
            assert got == full_rule(inc, other.id, probe, "public")
            answered[other.id in inc._per_device, got.kind] += 1
    assert answered[False, KIND_ADDRESS] and answered[True, KIND_ADDRESS] and answered[True, KIND_SITE]
    # the fan-out incident alone left open (its bare-address incidents closed, traffic kept it): still the fan-out
    inc = _incidents(timeout=30.0)
    dev = device()
    for i in range(FAN_OUT + 1):
        ip = f"198.51.100.{i}"
        inc.detect(_alert(T0, dst=ip), RESOLVER.of_destination(ip, None), dev, None)
    inc.traffic(observation(dev, ts=T0 + 25, peer="198.51.100.99"), RESOLVER.of_destination("198.51.100.99", None))
    inc.take_closed(T0 + 40)
    assert inc._per_device == {dev.id: 1}
    assert inc._fanned_out(dev.id, RESOLVER.of_destination("198.51.100.77", None), "public").id == "fan-out-public"
