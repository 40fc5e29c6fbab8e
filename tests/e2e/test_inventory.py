"""Device inventory, covered makers, roles, identity, segmentation and naming, end to end."""

from __future__ import annotations

import json

import pytest
from conftest import REAL, SYNTHETIC, alerts_of, camwatch, metric_values, value

from sensor.enrich import CoveredMakers


def inventory(*args) -> dict[str, dict]:
    proc = camwatch("inventory", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return {d["ip"]: d for d in json.loads(proc.stdout)}


# Every camera of pcaps/real: (capture, address, MAC vendor, maker, covered_basis, strongest evidence source).
REAL_CAMERAS = [
    ("iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap", "10.10.10.37", "D-Link International", "D-Link", None, "ssdp"),
    ("iot-sentinel/D-LinkDayCam/Setup-A-1-STA.pcap", "10.10.10.58", "D-Link International", "D-Link", None, "oui"),
    ("iot-sentinel/EdimaxCam1/Setup-A-1-STA.pcap", "10.10.10.51", "Edimax Technology Co. Ltd.", "Edimax", None, "oui"),
    ("neu-intl-iot/yi_camera_sample.pcap", "192.168.10.204", "Shenzhen Zowee Technology Co., Ltd", "Zowee (Yi)",
     "prc-nil", "oui"),
    *[(f"nku-lifecycle/xiaobai_Y2camera_{phase}.pcap", "192.168.1.165", "Shanghai Imilab Technology Co.Ltd",
       "Xiaomi ecosystem (Imilab)", "prc-nil", "oui") for phase in ("setup", "idle_local", "idle_remote",
                                                                     "speak_local", "delete")],
]


@pytest.mark.parametrize("capture,camera,vendor,maker,basis,source", REAL_CAMERAS,
                         ids=[c[0].split("/")[-2] + "/" + c[0].split("/")[-1] for c in REAL_CAMERAS])
def test_every_real_camera_has_its_maker_basis_and_role(capture, camera, vendor, maker, basis, source):
    """The DCS-930L says camera only by its names: DHCP host name and mDNS instance DCS-930LB..."""
    dev = inventory(REAL / capture)[camera]
    assert (dev["vendor"], dev["maker"], dev["covered"], dev["covered_basis"]) == (vendor, maker, basis is not None,
                                                                                   basis)
    assert dev["maker_evidence_items"][0]["source"] == source and dev["maker_evidence_items"][0]["maker"] == maker
    assert dev["module"] is None and dev["maker_note"] is None
    assert dev["role"] == "camera"


def test_real_identity_from_ssdp_banners():
    identity = inventory(REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap")["10.10.10.37"]["identity"]
    assert "DCS-935L" in identity["server"]


def test_synthetic_site_inventory():
    devices = inventory(SYNTHETIC / "camera_site.pcap", "--config", SYNTHETIC / "camera_site.toml")
    assert devices["10.20.0.11"]["covered"] and devices["10.20.0.11"]["maker"] == "Hikvision"
    assert devices["10.20.0.12"]["covered"] and devices["10.20.0.12"]["maker"] == "Dahua"
    assert not devices["10.20.0.13"]["covered"] and devices["10.20.0.13"]["vendor"] == "Axis Communications AB"
    lookalike = devices["10.20.0.15"]
    assert lookalike["vendor"] == "Shanghai Dahua Scale Factory" and not lookalike["covered"]
    roles = {ip: d["role"] for ip, d in devices.items()}
    assert roles == {"10.20.0.1": "gateway", "10.20.0.2": "nvr", "10.20.0.11": "camera", "10.20.0.12": "camera",
                     "10.20.0.13": "camera", "10.20.0.14": "camera", "10.20.0.15": "camera"}
    # ONVIF ProbeMatch scopes and RTSP Server headers fill the identity
    assert devices["10.20.0.13"]["identity"]["model"] == "CAM-3"
    assert devices["10.20.0.13"]["identity"]["server"] == "AXIS Media Control"
    phone_home = devices["10.20.0.14"]
    assert {e["name"] for e in phone_home["external_destinations"]} == {
        "litedev.hik-connect.com", "dev.hik-connect.com", None}
    assert "litedev.hik-connect.com" in phone_home["dns_queries"]


def test_banner_names_a_covered_maker_when_the_mac_cannot(tmp_path):
    from packets import PcapWriter, ethernet, ipv4, mac, tcp
    path = tmp_path / "routed.pcap"
    router = mac("00:1e:bd:00:00:01")
    body = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hikvision-Webs\r\n\r\n"
    with PcapWriter(path) as w:  # the camera sits behind a router: its frames carry the router's MAC
        w.write(1000.0, ethernet(router, router, 0x0800, ipv4("10.30.0.5", "10.20.0.2", 6,
                tcp("10.30.0.5", "10.20.0.2", 554, 40000, 1, 1, "PA", body))))
    dev = inventory(path)["10.30.0.5"]
    assert dev["covered"] and dev["maker"] == "Hikvision" and dev["covered_basis"] == "named"
    assert dev["maker_evidence"] == "server: Hikvision-Webs (banner); MAC prefix Cisco Systems, Inc (oui)"


def test_segmentation_alerts_both_ways_and_the_allowlist_holds(tmp_path):
    proc = camwatch("replay", SYNTHETIC / "segmentation.pcap", "--config", SYNTHETIC / "segmentation.toml",
                    "--metrics-out", tmp_path / "m.prom")
    alerts = alerts_of(proc.stdout)
    got = {(a["direction"], a["device"]["ip"], a["destination"]["ip"], a["destination"]["port"]) for a in alerts}
    assert got == {("camera_to_core", "10.20.0.11", "10.1.4.20", 445),
                   ("core_to_camera", "10.20.0.12", "10.1.8.30", 80),
                   ("core_to_camera", "10.20.0.13", "10.1.8.31", 23)}
    assert all(a["detector"] == "segmentation" and a["severity"] == "high" for a in alerts)
    assert not any(a["destination"]["ip"] == "10.1.5.10" for a in alerts)  # the allowed VMS
    m = metric_values((tmp_path / "m.prom").read_text())
    assert value(m, "camwatch_segmentation_violations_total", direction="camera_to_core") == 1
    assert value(m, "camwatch_segmentation_violations_total", direction="core_to_camera") == 2
    assert value(m, "camwatch_device_egress_bytes_total", device="10.20.0.11", scope="allowed") > 0
    assert value(m, "camwatch_device_egress_bytes_total", device="10.20.0.11", scope="core") > 0


def test_inventory_metrics(tmp_path):
    camwatch("replay", SYNTHETIC / "camera_site.pcap", "--config", SYNTHETIC / "camera_site.toml",
             "--metrics-out", tmp_path / "m.prom")
    m = metric_values((tmp_path / "m.prom").read_text())
    assert value(m, "camwatch_devices", vendor="Hikvision", covered="true") == 2
    assert value(m, "camwatch_devices", vendor="Dahua", covered="true") == 1
    assert value(m, "camwatch_devices", vendor="Shanghai Dahua Scale Factory", covered="false") == 1
    assert value(m, "camwatch_device_info", device="10.20.0.14", covered="true", role="camera", maker="Hikvision") == 1
    assert value(m, "camwatch_covered_list_info") == 1


def test_inventory_table_and_errors():
    proc = camwatch("inventory", SYNTHETIC / "camera_site.pcap")
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["IP", "MAC", "MANUFACTURER"]
    assert any("yes (Hikvision, named)" in r and r.startswith("10.20.0.14") for r in rows)
    proc = camwatch("inventory")
    assert proc.returncode == 2 and "give capture files or --url" in proc.stderr


def test_covered_list_has_a_reason_and_source_for_every_entry():
    makers = CoveredMakers.load()
    assert {m.name for m in makers.makers} >= {"Hikvision", "EZVIZ (Hikvision)", "Dahua", "Imou (Dahua)"}
    for m in makers.makers:
        assert m.reason and m.sources and all(s.startswith("https://") for s in m.sources)
    assert makers.by_manufacturer("Shanghai Dahua Scale Factory") is None
    assert makers.by_manufacturer("Hangzhou Ezviz Software Co.,Ltd.").name == "EZVIZ (Hikvision)"
    assert makers.by_manufacturer("Prama Hikvision India Private Limited").name == "Hikvision"


def test_a_corrupt_covered_list_is_a_clear_error(tmp_path):
    from sensor.errors import CamwatchError
    bad = tmp_path / "makers.toml"
    bad.write_text('version = "x"\n[[maker]]\nname = "A"\n')
    with pytest.raises(CamwatchError, match="invalid covered-maker list"):
        CoveredMakers.load(bad)


def test_outbound_series_accounts_for_every_byte_sent_off_the_camera_vlan():
    """The series the report draws adds up to the device's public and core egress, bucket by bucket in time."""
    devices = inventory(REAL / "nku-lifecycle/xiaobai_Y2camera_idle_local.pcap")
    camera = devices["192.168.1.165"]
    points = camera["outbound_series"]["points"]
    assert len(points) >= 6, points   # a 30-minute capture spans at least six 5-minute buckets
    assert sum(n for _, n in points) == camera["egress_bytes"].get("public", 0) + camera["egress_bytes"].get("core", 0)
    assert all(start % camera["outbound_series"]["bucket_seconds"] == 0 for start, _ in points)
    assert camera["first_seen"] - 300 < points[0][0] <= camera["first_seen"]


@pytest.fixture
def fake_sensor():
    """Whatever answers at a sensor's address (a proxy, a wrong port): serves the body it is given."""
    import http.server
    import threading

    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(bodies[-1])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield bodies, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_inventory_from_a_url_survives_what_answers_there(fake_sensor):
    bodies, url = fake_sensor
    good = {"ip": "10.20.0.11", "mac": "18:68:cb:00:00:01", "covered": True, "maker": "Hikvision",
            "covered_basis": "named", "role": "camera", "identity": {"model": "<b>DS-2CD</b>"},
            "external_destinations": [], "egress_bytes": {}}
    bodies.append(json.dumps([1, "x", {"ip": "not an address"}, {"ip": "10.20.0.12", "identity": 5}, good]).encode())
    table = camwatch("inventory", "--url", url)
    assert table.returncode == 0, table.stderr
    assert "10.20.0.11" in table.stdout and "10.20.0.12" in table.stdout and "not an address" not in table.stdout
    for body, message in ((b'{"a": 1}', "not a camwatch inventory"), (b"<html>", "not JSON"),
                          (b"[" * 100_000, "not JSON")):
        bodies.append(body)
        proc = camwatch("inventory", "--url", url)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_relabelled_camera_and_a_look_alike_phone_end_to_end(tmp_path):
    """One generated capture: an Axis-prefixed camera that resolves and registers with Hik-Connect (covered,
    basis behaviour, a high vendor-cloud line saying why) and a phone (Apple prefix) that only looks Hik-Connect
    names up (Apple, not covered, not a camera); camwatch_device_info carries covered_basis."""
    from packets import PcapWriter, dns_query, ethernet, ipv4, mac, tcp, tls_client_hello, udp
    path = tmp_path / "relabel.pcap"
    gw = mac("00:1e:bd:00:00:01")
    cam, phone = mac("ac:cc:8e:00:00:05"), mac("3c:22:fb:00:00:07")
    with PcapWriter(path) as w:
        for t, src, ip, name in ((1000.0, cam, "10.30.0.5", "litedev.hik-connect.com"),
                                 (1000.5, phone, "10.30.0.7", "api.hik-connect.com")):
            w.write(t, ethernet(gw, src, 0x0800, ipv4(ip, "10.30.0.1", 17, udp(ip, "10.30.0.1", 40000, 53,
                                                                                 dns_query(1, name)))))
        hello = tls_client_hello("litedev.hik-connect.com")
        w.write(1001.0, ethernet(gw, cam, 0x0800, ipv4("10.30.0.5", "203.0.113.50", 6,
                                                       tcp("10.30.0.5", "203.0.113.50", 40001, 443, 1, 0, "S"))))
        w.write(1001.1, ethernet(gw, cam, 0x0800, ipv4("10.30.0.5", "203.0.113.50", 6, tcp(
            "10.30.0.5", "203.0.113.50", 40001, 443, 2, 1, "PA", hello))))
    devices = inventory(path)
    relabel, look_alike = devices["10.30.0.5"], devices["10.30.0.7"]
    assert (relabel["vendor"], relabel["maker"], relabel["covered"], relabel["covered_basis"], relabel["role"]) == (
        "Axis Communications AB", "Hikvision", True, "behaviour", "camera")
    assert relabel["maker_note"].endswith("likely a Hikvision OEM or relabelled unit")
    assert [i["source"] for i in relabel["maker_evidence_items"]] == ["oui", "service", "dns"]
    assert (look_alike["maker"], look_alike["covered"], look_alike["role"]) == ("Apple, Inc.", False, "other")
    proc = camwatch("replay", path, "--metrics-out", tmp_path / "m.prom")
    cloud = [a for a in alerts_of(proc.stdout) if a["detector"] == "vendor_cloud" and a["device"]["ip"] == "10.30.0.5"]
    assert {a["severity"] for a in cloud} == {"medium", "high"}   # the lookup medium, the connection high
    assert any("Hikvision is a covered maker (behaviour). MAC prefix Axis Communications AB" in a["summary"]
               for a in cloud)
    phone_lines = [a for a in alerts_of(proc.stdout) if a["device"]["ip"] == "10.30.0.7"]
    assert all(a["severity"] in ("low", "medium") for a in phone_lines)
    info = (tmp_path / "m.prom").read_text()
    assert 'camwatch_device_info{covered="true",covered_basis="behaviour",device="10.30.0.5"' in info
