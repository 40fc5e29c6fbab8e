"""sensor/enrich/identity.py, the reader of what devices say about themselves, through the sensor: which packets it
reads (mDNS, SSDP, a device's own web server and TLS service), which it leaves (a certificate or body the device
sends as a client, packets of a kind whose fields the device already has) and what reaches the inventory."""

from __future__ import annotations

from identity_packets import (
    PTR,
    SRV,
    TXT,
    A,
    der_certificate,
    http_response,
    mdns_message,
    mdns_record,
    tls_server_flight,
)
from sensor.enrich.identity import MAX_SENDER_PARSES_PER_SECOND
from sensor.enrich.parse_budget import ParseBudget

from .test_dissect_identity import AXIS_DESCRIPTION, DLINK_ANNOUNCEMENT
from .test_enrich_stage import CAM, CLOUD, NVR, ROUTER_MAC, T0, _run, _t, _u

MDNS_GROUP = "224.0.0.251"
# The DCS-935L's announcement, its address record naming CAM (a device announces its own address)
DLINK_ANNOUNCEMENT_AT_CAM = DLINK_ANNOUNCEMENT.replace(bytes([10, 10, 10, 37]), bytes([10, 20, 0, 11]))


def identities(events):
    return [(e[1], e[2], e[3]) for e in events if e[0] == "identity"]


def test_mdns_announcements_fill_the_identity_and_stop_being_read_once_complete(monkeypatch):
    host_only = mdns_message(answers=[mdns_record("DCS-935L-B0C554255B0E.local", A, CAM)])
    records = [(T0, _u(CAM, MDNS_GROUP, 5353, 5353, host_only)),
               (T0 + 0.1, _u(CAM, MDNS_GROUP, 5353, 5353, DLINK_ANNOUNCEMENT_AT_CAM)),    # adds service, model
               (T0 + 0.2, _u(CAM, MDNS_GROUP, 5353, 5353, DLINK_ANNOUNCEMENT_AT_CAM)),    # nothing new: not read
               (T0 + 0.3, _u(CLOUD, MDNS_GROUP, 5353, 5353, DLINK_ANNOUNCEMENT, src_mac=ROUTER_MAC))]  # not ours
    sensor, events = _run(monkeypatch, records)
    assert [ts for ts, _, _ in identities(events)] == [T0, T0 + 0.1]
    assert sensor.inventory.devices.get(CAM).identity == {
        "mdns_name": "DCS-935L-B0C554255B0E.local", "mdns_instance": "D-Link HNAP Service",
        "mdns_service": "_dhnap._tcp", "mdns_model": "DCS-935L"}
    assert sensor.inventory.devices.get(CLOUD) is None


def test_a_unicast_mdns_reply_from_port_5353_is_read(monkeypatch):
    reply = mdns_message(answers=[mdns_record("cam-1._rtsp._tcp.local", SRV, "cam-1.local"),
                                  mdns_record("cam-1._rtsp._tcp.local", TXT, ["model=IPC-HFW1230S"]),
                                  mdns_record("_rtsp._tcp.local", PTR, "cam-1._rtsp._tcp.local")])
    sensor, _ = _run(monkeypatch, [(T0, _u(CAM, NVR, 5353, 40000, reply))])
    assert sensor.inventory.devices.get(CAM).identity == {
        "mdns_instance": "cam-1", "mdns_service": "_rtsp._tcp", "mdns_name": "cam-1.local",
        "mdns_model": "IPC-HFW1230S"}


def _https_session(server, client, flight, server_mac=None, client_mac=None):
    """SYN, SYN-ACK, the client's first bytes, then the server's flight."""
    s_kw = {"src_mac": server_mac} if server_mac else {}
    c_kw = {"src_mac": client_mac} if client_mac else {}
    return [(T0, _t(client, server, 40000, 443, "S", **c_kw)),
            (T0 + 0.01, _t(server, client, 443, 40000, "SA", **s_kw)),
            (T0 + 0.02, _t(client, server, 40000, 443, "PA", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", **c_kw)),
            (T0 + 0.03, _t(server, client, 443, 40000, "PA", flight, **s_kw))]


HIK = [("C", "CN"), ("O", "Hikvision"), ("CN", "IPC")]


def test_the_certificate_of_the_cameras_own_tls_service(monkeypatch):
    sensor, events = _run(monkeypatch, _https_session(CAM, NVR, tls_server_flight([der_certificate(HIK)])))
    assert identities(events) == [(T0 + 0.03, CAM, {"tls_issuer": "CN=IPC, O=Hikvision",
                                                    "tls_subject": "CN=IPC, O=Hikvision"})]


def test_a_certificate_the_camera_sends_as_a_client_is_not_its_services(monkeypatch):
    """Mutual TLS: after the server's flight the client sends its own Certificate record. The camera opened the
    flow, so that certificate is not the one of a service it runs; and the cloud's is not camera-side."""
    chain = der_certificate(HIK)
    body = len(chain).to_bytes(3, "big") + chain
    message = b"\x0b" + (len(body) + 3).to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    client_cert = b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message
    cloud_flight = tls_server_flight([der_certificate([("O", "Cloud"), ("CN", "api.example")])])
    records = [(T0, _t(CAM, CLOUD, 40000, 443, "S")),
               (T0 + 0.01, _t(CLOUD, CAM, 443, 40000, "SA", src_mac=ROUTER_MAC)),
               (T0 + 0.02, _t(CLOUD, CAM, 443, 40000, "PA", cloud_flight, src_mac=ROUTER_MAC)),
               (T0 + 0.03, _t(CAM, CLOUD, 40000, 443, "PA", client_cert))]
    sensor, events = _run(monkeypatch, records)
    assert identities(events) == []
    assert "tls_subject" not in sensor.inventory.devices.get(CAM).identity


def test_a_description_body_from_the_cameras_web_server(monkeypatch):
    get = b"GET /description.xml HTTP/1.1\r\nHost: 10.20.0.11:49152\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nServer: Linux/2.6 UPnP/1.0\r\n\r\n"
    records = [(T0, _t(NVR, CAM, 40000, 49152, "S")), (T0 + 0.01, _t(CAM, NVR, 49152, 40000, "SA")),
               (T0 + 0.02, _t(NVR, CAM, 40000, 49152, "PA", get)),
               (T0 + 0.03, _t(CAM, NVR, 49152, 40000, "PA", head)),
               (T0 + 0.04, _t(CAM, NVR, 49152, 40000, "PA", AXIS_DESCRIPTION))]
    sensor, events = _run(monkeypatch, records)
    identity = sensor.inventory.devices.get(CAM).identity
    assert identity["server"] == "Linux/2.6 UPnP/1.0"
    assert (identity["manufacturer"], identity["model_name"], identity["serial"]) == (
        "AXIS", "AXIS M1014", "ACCC8E270AD8")


def test_a_body_the_camera_posts_as_a_client_is_not_its_own(monkeypatch):
    post = b"POST /upload HTTP/1.1\r\nHost: x\r\n\r\n"
    page = b"<html><head><title>Someone else's page</title></head>"
    records = [(T0, _t(CAM, CLOUD, 40000, 80, "S")), (T0 + 0.01, _t(CLOUD, CAM, 80, 40000, "SA",
                                                                      src_mac=ROUTER_MAC)),
               (T0 + 0.02, _t(CAM, CLOUD, 40000, 80, "PA", post)),
               (T0 + 0.03, _t(CAM, CLOUD, 40000, 80, "PA", page)),
               (T0 + 0.04, _t(CAM, CLOUD, 40000, 80, "PA", AXIS_DESCRIPTION))]
    sensor, events = _run(monkeypatch, records)
    assert identities(events) == []


def test_web_ui_title_and_the_reader_stops_once_the_kind_has_told_all(monkeypatch):
    page = http_response(b"<html><head><title>NETSurveillance WEB</title>", headers=b"Server: uc-httpd 1.0.0\r\n")
    description = http_response(AXIS_DESCRIPTION.replace(b"AXIS", b"XM"), headers=b"Content-Type: text/xml\r\n")
    records = [(T0, _t(CAM, NVR, 80, 40000, "PA", page)),
               (T0 + 0.1, _t(CAM, NVR, 80, 40001, "PA", description)),
               (T0 + 0.2, _t(CAM, NVR, 80, 40002, "PA", page))]      # server, title, manufacturer known: not read
    sensor, events = _run(monkeypatch, records)
    assert [ts for ts, _, _ in identities(events)] == [T0, T0 + 0.1]
    identity = sensor.inventory.devices.get(CAM).identity
    assert (identity["title"], identity["server"], identity["manufacturer"]) == (
        "NETSurveillance WEB", "uc-httpd 1.0.0", "XM")


def test_an_mdns_reflector_repeating_another_hosts_records_is_not_that_host(monkeypatch):
    """A router reflecting mDNS between VLANs sends the camera's announcement from its own address: the address
    records name the camera, not the sender, so the reflector's identity stays empty."""
    reflector = "10.20.0.1"
    sensor, events = _run(monkeypatch, [(T0, _u(reflector, MDNS_GROUP, 5353, 5353, DLINK_ANNOUNCEMENT_AT_CAM))])
    assert identities(events) == [] and sensor.inventory.devices.get(reflector).identity == {}
    sensor, _ = _run(monkeypatch, [(T0, _u(CAM, MDNS_GROUP, 5353, 5353, DLINK_ANNOUNCEMENT_AT_CAM))])
    assert sensor.inventory.devices.get(CAM).identity["mdns_model"] == "DCS-935L"



def test_the_parse_budget_per_second_in_all_and_per_sender():
    budget = ParseBudget(total=5, per_sender=2)
    assert [budget.allow("a", 10.1) for _ in range(3)] == [True, True, False]
    assert [budget.allow(s, 10.5) for s in "bcde"] == [True, True, True, False]   # 5 in all this second
    assert budget.allow("a", 11.0) and budget.refused == 2   # a new second, a new budget
    assert not budget.allow("b", 11.0, cost=3) and budget.allow("b", 11.0, cost=2)   # a cost beyond a share, then one
    assert budget.allow("c", 11.0, cost=2) and not budget.allow("d", 11.0)   # 5 of 5 in all now
    assert budget.refused == 4


def test_a_flood_of_identity_packets_is_parsed_only_within_its_budget(monkeypatch):
    """One camera-side sender floods pages that name nothing (so its identity never completes) within one second:
    32 are parsed, the rest left unread; the next second it has a budget again."""
    flood = http_response(b"<html><body>nothing to name</body></html>")
    records = [(T0 + i / 1000, _t(CAM, NVR, 80, 40000 + i, "PA", flood)) for i in range(500)]
    records.append((T0 + 1.5, _t(CAM, NVR, 80, 41000, "PA", http_response(b"<title>IPCamera</title>"))))
    sensor, _ = _run(monkeypatch, records)
    assert sensor.enricher._identity.budget.refused == 500 - MAX_SENDER_PARSES_PER_SECOND
    assert sensor.inventory.devices.get(CAM).identity == {"title": "IPCamera"}


def test_mdns_answers_kept_are_the_parsers_own(monkeypatch):
    """identity.mdns_fields keeps parse_mdns's answers by payload and sender: the same dict as a fresh parse for every
    payload (kept or too long to keep) and sender (a reflector's own address is no announcer), a new dict each call,
    and a parse that raised raises again (ParserGuard counts each)."""
    import random

    import sensor.enrich.identity as identity
    from sensor.dissect import parse_mdns

    rng = random.Random(7)
    base = [DLINK_ANNOUNCEMENT, DLINK_ANNOUNCEMENT_AT_CAM, DLINK_ANNOUNCEMENT_AT_CAM + b"\x00" * 1600]
    payloads = base + [bytes(b ^ (rng.random() < 0.02) * rng.randrange(256) for b in rng.choice(base))
                       for _ in range(200)]
    identity._mdns_remembered.cache_clear()
    for _ in range(2):
        for data in payloads:
            for sender in (CAM, "10.20.0.1", "10.10.10.37"):
                got = identity.mdns_fields(data, sender)
                assert got == parse_mdns(data, sender)
                got["mdns_model"] = "changed"   # the caller's own dict: the next answer is not this one
    assert identity.mdns_fields(DLINK_ANNOUNCEMENT_AT_CAM, CAM)["mdns_model"] == "DCS-935L"
    assert identity.mdns_fields(DLINK_ANNOUNCEMENT_AT_CAM, "10.20.0.1") == {}
    calls = []

    def failing(data, sender):
        calls.append(data)
        raise ValueError("a parser bug")

    monkeypatch.setattr(identity, "parse_mdns", failing)
    identity._mdns_remembered.cache_clear()
    for _ in range(2):
        try:
            identity.mdns_fields(b"\x00" * 12, CAM)
        except ValueError:
            pass
    assert len(calls) == 2
    identity._mdns_remembered.cache_clear()
