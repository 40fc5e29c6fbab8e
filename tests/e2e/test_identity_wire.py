"""What devices say about themselves, end to end through `camwatch inventory`: mDNS announcements, SSDP device types
and D-Link HNAP replies in real captures; a camera's UPnP description, web-UI title and TLS certificate in a capture
of whole TCP sessions."""

from __future__ import annotations

import json

from conftest import REAL, camwatch

from identity_packets import der_certificate, http_response, tls_server_flight
from packets import PcapWriter, ethernet, ip, mac, tcp


def inventory(*args) -> dict[str, dict]:
    proc = camwatch("inventory", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return {d["ip"]: d for d in json.loads(proc.stdout)}


def test_dlink_dcs_935l_names_itself_over_mdns_ssdp_and_hnap():
    identity = inventory(REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap")["10.10.10.37"]["identity"]
    assert identity["mdns_name"] == "DCS-935L-B0C554255B0E.local"
    assert identity["mdns_service"] == "_dhnap._tcp" and identity["mdns_instance"] == "D-Link HNAP Service"
    assert identity["mdns_model"] == "DCS-935L"                     # TXT model_number=
    assert identity["upnp_device_type"] == "DCS-935L"               # NT: urn:schemas-upnp-org:device:DCS-935L:1
    # the phone app's HNAP GetDeviceSettings, answered by the camera's web server
    assert (identity["manufacturer"], identity["model_name"], identity["firmware"]) == ("D-Link", "DCS-935L", "1.06")
    assert "DCS-935L" in identity["server"]


def test_dlink_dcs_930l_and_edimax_announce_their_names():
    day = inventory(REAL / "iot-sentinel/D-LinkDayCam/Setup-A-1-STA.pcap")["10.10.10.58"]["identity"]
    assert (day["mdns_name"], day["mdns_instance"], day["mdns_service"]) == (
        "DCS-930LB1_1C7185.local", "DCS-930LB_1C7185", "_http._tcp")
    edimax = inventory(REAL / "iot-sentinel/EdimaxCam1/Setup-A-1-STA.pcap")["10.10.10.51"]["identity"]
    assert edimax["mdns_name"] == "localcam.local" and edimax["mdns_model"] == "IC-3115W Network Camera"
    assert edimax["location"] == "http://10.10.10.51:80/IPCamDesc.xml" and edimax["upnp_device_type"] == "Basic"


CAM, NVR = "10.20.0.31", "10.20.0.2"
CAM_MAC, NVR_MAC = mac("44:19:b6:00:00:31"), mac("00:40:8c:00:00:02")
DESCRIPTION = (b'<?xml version="1.0" encoding="UTF-8"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0">\n<specVersion>'
               b'<major>1</major><minor>0</minor></specVersion>\n<device>\n<deviceType>urn:schemas-upnp-org:device:'
               b'Basic:1</deviceType>\n<friendlyName>DS-2CD2143G2-I - 12345678</friendlyName>\n<manufacturer>'
               b'Hikvision</manufacturer>\n<modelName>DS-2CD2143G2-I</modelName>\n<modelNumber>DS-2CD2143G2-I'
               b'</modelNumber>\n<serialNumber>DS-2CD2143G2-I20210101AAWRF12345678</serialNumber>\n</device>\n</root>')


def _session(w, t, port, request, answer, client_port):
    """A whole TCP session from the NVR to the camera: handshake, one request, the answer in its segments."""
    def c2s(ts, flags, body=b""):
        w.write(ts, ethernet(CAM_MAC, NVR_MAC, 0x0800, ip(NVR, CAM, 6, tcp(NVR, CAM, client_port, port, 1, 1, flags,
                                                                           body))))

    def s2c(ts, flags, body=b""):
        w.write(ts, ethernet(NVR_MAC, CAM_MAC, 0x0800, ip(CAM, NVR, 6, tcp(CAM, NVR, port, client_port, 1, 1, flags,
                                                                           body))))
    c2s(t, "S")
    s2c(t + 0.001, "SA")
    c2s(t + 0.002, "PA", request)
    for i, segment in enumerate(answer):
        s2c(t + 0.003 + i * 0.001, "PA", segment)
    c2s(t + 0.01, "FA")
    s2c(t + 0.011, "FA")


def test_a_cameras_description_title_and_certificate(tmp_path):
    path = tmp_path / "camera_services.pcap"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nServer: App-webs/\r\n\r\n"
    page = http_response(b"<!DOCTYPE html>\n<html><head><title>Network Camera</title></head></html>")
    flight = tls_server_flight([der_certificate([("C", "CN"), ("O", "Hikvision"), ("CN", "IPC")])])
    with PcapWriter(path) as w:
        _session(w, 1_700_000_000.0, 49152, b"GET /upnpdevicedesc.xml HTTP/1.1\r\nHost: x\r\n\r\n",
                 [head, DESCRIPTION], 40001)
        _session(w, 1_700_000_001.0, 80, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [page], 40002)
        _session(w, 1_700_000_002.0, 443, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", [flight], 40003)
    devices = inventory(path)
    identity = devices[CAM]["identity"]
    assert identity == {"server": "App-webs/", "upnp_device_type": "Basic",
                        "friendly_name": "DS-2CD2143G2-I - 12345678", "manufacturer": "Hikvision",
                        "model_name": "DS-2CD2143G2-I", "model": "DS-2CD2143G2-I",
                        "serial": "DS-2CD2143G2-I20210101AAWRF12345678", "title": "Network Camera",
                        "tls_issuer": "CN=IPC, O=Hikvision", "tls_subject": "CN=IPC, O=Hikvision"}
    assert devices[NVR]["identity"] == {}     # it asked; the camera answered
