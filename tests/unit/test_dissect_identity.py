"""sensor/dissect.py, the parsers of what a device says about itself on the wire: mDNS announcements and probes
(parse_dns's every_record mode under them), SSDP device types, UPnP device descriptions, D-Link HNAP, web-UI titles.

The examples keep the shapes of real devices: the D-Link DCS-935L and Edimax IC-3115W announcements are the records
of pcaps/real/iot-sentinel (field for field), the Axis description is the one axis-js tests against
(FantasticFiasco/axis-js, packages/axis-discovery-ssdp/test/root-descriptions), the HNAP reply is the DCS-935L's."""

from __future__ import annotations

import struct

import pytest

from identity_packets import PTR, SRV, TXT, A, http_response, mdns_message, mdns_name, mdns_record
from sensor.dissect import (
    DNS_ADDITIONAL,
    DNS_ANSWER,
    DNS_AUTHORITY,
    MAX_DNS_RECORDS,
    MAX_IDENTITY_VALUE,
    MAX_TXT_STRINGS,
    DnsRecord,
    parse_banner,
    parse_dns,
    parse_http_identity,
    parse_mdns,
)

DLINK_TXT = ["mac=B0:C5:54:25:5B:0E", "wlan0_ssid=DCS-935L-5B0E", "model_number=DCS-935L", "hardware_ver=A1",
             "dcs=Sinker", "version=0106", "mydlink=true", "hnf=false", "mydlinkr=false", "dtype=100;101"]
DLINK_HOST = "DCS-935L-B0C554255B0E.local"
DLINK_INSTANCE = "D-Link HNAP Service._dhnap._tcp.local"
DLINK_ANNOUNCEMENT = mdns_message(answers=[
    mdns_record(DLINK_HOST, A, "10.10.10.37"),
    mdns_record("37.10.10.10.in-addr.arpa", PTR, DLINK_HOST),
    mdns_record(DLINK_INSTANCE, SRV, DLINK_HOST),
    mdns_record(DLINK_INSTANCE, TXT, DLINK_TXT, ttl=4500),
    mdns_record("_services._dns-sd._udp.local", PTR, "_dhnap._tcp.local", cls=1),
    mdns_record("_dhnap._tcp.local", PTR, DLINK_INSTANCE, cls=1)])
EDIMAX_INSTANCE = " [74:da:38:80:7a:08]._http._tcp.local"
EDIMAX_ANNOUNCEMENT = mdns_message(answers=[
    mdns_record("localcam.local", A, "10.10.10.51"),
    mdns_record("51.10.10.10.in-addr.arpa", PTR, "localcam.local"),
    mdns_record(EDIMAX_INSTANCE, SRV, "localcam.local"),
    mdns_record(EDIMAX_INSTANCE, TXT, ["IC-3115W Network Camera"]),
    mdns_record("_services._dns-sd._udp.local", PTR, "_http._tcp.local", cls=1),
    mdns_record("_http._tcp.local", PTR, EDIMAX_INSTANCE, cls=1)])


# ---- parse_dns, every record ---------------------------------------------------------------------------------------
def test_every_record_mode_reads_all_sections_with_names_as_sent():
    msg = parse_dns(mdns_message(answers=[mdns_record(DLINK_INSTANCE, TXT, ["md=X"])],
                                 authority=[mdns_record(DLINK_HOST, A, "10.0.0.9")],
                                 additional=[mdns_record(DLINK_INSTANCE, SRV, DLINK_HOST)]), every_record=True)
    assert msg is not None and msg.is_response
    assert msg.records == [DnsRecord(DNS_ANSWER, "D-Link HNAP Service._dhnap._tcp.local", TXT, ("md=X",)),
                           DnsRecord(DNS_AUTHORITY, DLINK_HOST, A, ("10.0.0.9",)),
                           DnsRecord(DNS_ADDITIONAL, "D-Link HNAP Service._dhnap._tcp.local", SRV, (DLINK_HOST,))]
    assert msg.answers == []   # the name cache's view is untouched by the mode


def test_ordinary_dns_parsing_keeps_lower_case_and_no_records():
    msg = parse_dns(DLINK_ANNOUNCEMENT)
    assert msg is not None and msg.records == [] and msg.answers[0] == (DLINK_HOST.lower(), A, 120, "10.10.10.37")


def test_records_are_capped_across_sections_and_a_cut_record_ends_the_read():
    many = [mdns_record(f"h{i}.local", A, "10.0.0.1") for i in range(MAX_DNS_RECORDS)]
    msg = parse_dns(mdns_message(answers=many, additional=many[:5]), every_record=True)
    assert len(msg.records) == MAX_DNS_RECORDS
    cut = mdns_message(answers=many[:3])[:-2]
    assert [r.owner for r in parse_dns(cut, every_record=True).records] == ["h0.local", "h1.local"]


def test_txt_strings_are_capped_and_an_overrunning_string_is_cut():
    msg = parse_dns(mdns_message(answers=[mdns_record("x._http._tcp.local", TXT, ["k=v"] * 100)]), every_record=True)
    assert len(msg.records[0].data) == MAX_TXT_STRINGS
    record = mdns_name("x._http._tcp.local") + struct.pack("!HHIH", TXT, 1, 1, 4) + b"\x09abc"
    msg = parse_dns(mdns_message(answers=[record]), every_record=True)
    assert msg.records[0].data == ("abc",)


# ---- mDNS --------------------------------------------------------------------------------------------------------
def test_dlink_announcement_names_host_service_instance_and_model():
    assert parse_mdns(DLINK_ANNOUNCEMENT) == {
        "mdns_name": DLINK_HOST, "mdns_instance": "D-Link HNAP Service", "mdns_service": "_dhnap._tcp",
        "mdns_model": "DCS-935L"}


def test_edimax_bare_description_is_its_model_text():
    assert parse_mdns(EDIMAX_ANNOUNCEMENT) == {
        "mdns_name": "localcam.local", "mdns_instance": "[74:da:38:80:7a:08]", "mdns_service": "_http._tcp",
        "mdns_model": "IC-3115W Network Camera"}


def test_axis_camera_service_wins_over_the_web_service_it_also_offers():
    instance = "AXIS M3045-V - ACCC8E123456"
    msg = mdns_message(answers=[mdns_record("_http._tcp.local", PTR, f"{instance}._http._tcp.local"),
                                mdns_record("_axis-video._tcp.local", PTR, f"{instance}._axis-video._tcp.local")],
                       additional=[mdns_record(f"{instance}._axis-video._tcp.local", TXT, ["macaddress=ACCC8E123456"]),
                                   mdns_record(f"{instance}._axis-video._tcp.local", SRV, "axis-accc8e123456.local"),
                                   mdns_record("axis-accc8e123456.local", A, "10.20.0.13")])
    assert parse_mdns(msg) == {"mdns_instance": instance, "mdns_service": "_axis-video._tcp",
                               "mdns_name": "axis-accc8e123456.local"}


def test_homekit_style_txt_gives_model_maker_and_firmware():
    owner = "Front Door Camera._hap._tcp.local"
    fields = parse_mdns(mdns_message(answers=[mdns_record(owner, TXT, ["c#=2", "ff=0", "md=Circle View", "ci=17",
                                                                      "mf=Logitech", "fw=1.2.3", "sf=1"])]))
    assert fields == {"mdns_instance": "Front Door Camera", "mdns_service": "_hap._tcp", "mdns_model": "Circle View",
                      "manufacturer": "Logitech", "firmware": "1.2.3"}


def test_a_probe_names_its_sender_by_its_authority_records_only():
    probe = mdns_message(questions=[DLINK_HOST, DLINK_INSTANCE], response=False,
                         answers=[mdns_record("other-host.local", A, "10.0.0.2")],
                         authority=[mdns_record(DLINK_HOST, A, "10.10.10.37"),
                                    mdns_record(DLINK_INSTANCE, SRV, DLINK_HOST)])
    assert parse_mdns(probe) == {"mdns_name": DLINK_HOST, "mdns_instance": "D-Link HNAP Service",
                                 "mdns_service": "_dhnap._tcp"}


def test_a_plain_query_tells_nothing_about_its_sender():
    query = mdns_message(questions=["_googlecast._tcp.local", "_rtsp._tcp.local"], response=False,
                         answers=[mdns_record("_rtsp._tcp.local", PTR, "Someone Else._rtsp._tcp.local")])
    assert parse_mdns(query) == {}


@pytest.mark.parametrize("txt,expected", [
    (["ssl"], {}),                                          # a flag
    (["txtvers=1", "model=DS-2CD2143G2-I"], {"mdns_model": "DS-2CD2143G2-I"}),
    (["ty=Brother HL-L2350DW"], {"mdns_model": "Brother HL-L2350DW"}),
    (["model="], {}),                                       # an empty value names nothing
    (["MODEL=X1", "model=X2"], {"mdns_model": "X1"}),       # keys are case-blind; the first wins
    (["\x1b[31mmodel=\u202eevil"], {}),                     # not a key we read
    (["model=\u202eli\x07ve\x1b"], {"mdns_model": "live"}),     # control and bidi characters dropped
])
def test_txt_keys(txt, expected):
    fields = parse_mdns(mdns_message(answers=[mdns_record("cam._http._tcp.local", TXT, txt)]))
    assert {k: v for k, v in fields.items() if k not in ("mdns_instance", "mdns_service")} == expected


def test_mdns_values_are_cleaned_and_bounded():
    long_name = ".".join(["x" * 63] * 3) + ".local"
    fields = parse_mdns(mdns_message(answers=[mdns_record(long_name, A, "1.2.3.4"),
                                              mdns_record("c._http._tcp.local", TXT, ["md=" + "m" * 250])]))
    assert all(len(v) <= MAX_IDENTITY_VALUE for v in fields.values())
    assert fields["mdns_model"] == "m" * MAX_IDENTITY_VALUE


def test_not_mdns_is_nothing():
    assert parse_mdns(b"") == {} and parse_mdns(b"\x00" * 11) == {} and parse_mdns(b"M-SEARCH * HTTP/1.1") == {}


# ---- SSDP ----------------------------------------------------------------------------------------------------------
def ssdp(start: bytes, *headers: bytes) -> bytes:
    return start + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_dlink_notify_names_its_model_as_its_device_type():
    notify = ssdp(b"NOTIFY * HTTP/1.1", b"HOST: 239.255.255.250:1900", b"LOCATION: http://10.10.10.37:50510/",
                  b"SERVER: Linux,    UPnP/1.0 DCS-935L/1.0", b"NT: urn:schemas-upnp-org:device:DCS-935L:1",
                  b"NTS: ssdp:alive")
    assert parse_banner(notify) == {"server": "Linux,    UPnP/1.0 DCS-935L/1.0",
                                    "location": "http://10.10.10.37:50510/", "upnp_device_type": "DCS-935L"}


def test_a_search_reply_names_its_type_but_a_search_does_not():
    reply = ssdp(b"HTTP/1.1 200 OK", b"ST: urn:schemas-upnp-org:device:Basic:1", b"SERVER: Embedded UPnP/1.0")
    assert parse_banner(reply)["upnp_device_type"] == "Basic"
    search = ssdp(b"M-SEARCH * HTTP/1.1", b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1")
    assert "upnp_device_type" not in parse_banner(search)
    assert "upnp_device_type" not in parse_banner(ssdp(b"NOTIFY * HTTP/1.1", b"NT: upnp:rootdevice"))


# ---- UPnP device descriptions, HNAP, titles -------------------------------------------------------------------------
AXIS_DESCRIPTION = (
    b'<?xml version="1.0"?>\r\n<root xmlns="urn:schemas-upnp-org:device-1-0">\r\n<specVersion><major>1</major>'
    b'<minor>0</minor></specVersion>\r\n<device>\r\n<deviceType>urn:schemas-upnp-org:device:Basic:1</deviceType>\r\n'
    b'<friendlyName>AXIS M1014 - ACCC8E270AD8</friendlyName>\r\n<manufacturer>AXIS</manufacturer>\r\n'
    b'<manufacturerURL>http://www.axis.com/</manufacturerURL>\r\n'
    b'<modelDescription>AXIS M1014 Fixed Network Camera</modelDescription>\r\n<modelName>AXIS M1014</modelName>\r\n'
    b'<modelNumber>M1014</modelNumber>\r\n<modelURL>http://www.axis.com/</modelURL>\r\n'
    b'<serialNumber>ACCC8E270AD8</serialNumber>\r\n<UDN>uuid:Upnp-BasicDevice-1_0-ACCC8E270AD8</UDN>\r\n'
    b'<serviceList><service><serviceType>urn:axis-com:service:BasicService:1</serviceType></service></serviceList>'
    b'\r\n<presentationURL>http://192.168.1.102:80/</presentationURL>\r\n</device>\r\n'
    b'<URLBase>http://192.168.1.102:51578/</URLBase>\r\n</root>\r\n')
AXIS_FIELDS = {"upnp_device_type": "Basic", "friendly_name": "AXIS M1014 - ACCC8E270AD8", "manufacturer": "AXIS",
               "model_description": "AXIS M1014 Fixed Network Camera", "model_name": "AXIS M1014", "model": "M1014",
               "serial": "ACCC8E270AD8"}


def test_axis_device_description_in_the_response():
    response = http_response(AXIS_DESCRIPTION, headers=b"Content-Type: text/xml\r\nServer: Linux/2.6 UPnP/1.0\r\n")
    assert parse_http_identity(response) == {"server": "Linux/2.6 UPnP/1.0", **AXIS_FIELDS}


def test_a_description_body_sent_apart_from_its_head():
    assert parse_http_identity(AXIS_DESCRIPTION) == AXIS_FIELDS


def test_the_root_device_wins_over_embedded_ones():
    doc = (b'<root xmlns="urn:schemas-upnp-org:device-1-0"><device><manufacturer>Hikvision</manufacturer>'
           b'<modelName>DS-7608NI-K2</modelName><deviceList><device><manufacturer>Other</manufacturer>'
           b'<modelName>Sub</modelName></device></deviceList></device></root>')
    assert parse_http_identity(doc) == {"manufacturer": "Hikvision", "model_name": "DS-7608NI-K2"}


def test_namespaced_elements_and_entities():
    doc = (b'<?xml version="1.0"?><u:root xmlns:u="urn:schemas-upnp-org:device-1-0"><u:device>'
           b'<u:manufacturer>Foo &amp; Bar</u:manufacturer><u:modelName>&lt;X&gt;</u:modelName></u:device></u:root>')
    assert parse_http_identity(doc) == {"manufacturer": "Foo & Bar", "model_name": "<X>"}


def test_xml_that_is_not_a_device_description_gives_nothing():
    soap = (b'<?xml version="1.0"?><s:Envelope><s:Body><manufacturer>X</manufacturer><tds:GetSystemDateAndTime'
            b'Response/></s:Body></s:Envelope>')
    assert parse_http_identity(soap) == {}


def test_dlink_hnap_device_settings():
    body = (b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
            b'envelope/"><soap:Body><GetDeviceSettingsResponse xmlns="http://purenetworks.com/HNAP1/">'
            b'<GetDeviceSettingsResult>OK</GetDeviceSettingsResult><Type>ConnectedHomeClient</Type>'
            b'<DeviceName>DCS-935L</DeviceName><VendorName>D-Link</VendorName><ModelDescription>Wireless Internet'
            b' Camera</ModelDescription><ModelName>DCS-935L</ModelName><DeviceMacId>B0:C5:54:25:5B:0E</DeviceMacId>'
            b'<FirmwareVersion>1.06</FirmwareVersion>')
    assert parse_http_identity(http_response(body, headers=b"Content-Type: text/xml; charset=UTF-8\r\n")) == {
        "manufacturer": "D-Link", "model_description": "Wireless Internet Camera", "model_name": "DCS-935L",
        "firmware": "1.06"}


@pytest.mark.parametrize("page,title", [
    (b"<html><head><title>NETSurveillance WEB</title></head>", "NETSurveillance WEB"),        # Xiongmai
    (b"<!DOCTYPE html>\n<html>\n<head>\n<TITLE>WEB SERVICE</TITLE>", "WEB SERVICE"),          # Dahua
    (b'<html><head><title lang="en">\r\n  Network\r\n\tCamera  </title>', "Network Camera"),  # whitespace runs
    (b"<title>Caf\xc3\xa9 &amp; Cam</title>", "Caf\u00e9 & Cam"),
    (b"<title>\xff\xfeCam</title>", "\ufffd\ufffdCam"),                                       # not UTF-8
    (b"<title>401 Unauthorized</title>", None),                                               # status pages
    (b"<title>Document Moved</title>", None),
    (b"<title></title>", None),
    (b"<html><body>no title</body></html>", None),
    (b"<title>" + b"A" * 600 + b"</title>", None),                                            # past the bound
])
def test_web_ui_titles(page, title):
    fields = parse_http_identity(http_response(page, headers=b"Server: uc-httpd 1.0.0\r\n"))
    assert fields.get("title") == title and fields["server"] == "uc-httpd 1.0.0"


def test_no_title_from_an_error_response_or_a_head_without_its_end():
    assert parse_http_identity(http_response(b"<title>Cam</title>", status=b"404 Not Found")) == {}
    assert parse_http_identity(b"HTTP/1.1 200 OK\r\nServer: x\r\n") == {"server": "x"}


def test_title_of_a_page_body_sent_on_its_own_and_only_near_its_start():
    assert parse_http_identity(b"<!DOCTYPE html><html><title>IPCamera</title>") == {"title": "IPCamera"}
    assert parse_http_identity(b"<html>" + b" " * 9000 + b"<title>late</title>") == {}


def test_rtsp_is_read_as_a_banner():
    assert parse_http_identity(b"RTSP/1.0 200 OK\r\nServer: Hikvision-Webs\r\n\r\n<title>x</title>") == {
        "server": "Hikvision-Webs"}


def test_mdns_records_speaking_for_another_address_are_not_the_senders():
    assert parse_mdns(DLINK_ANNOUNCEMENT, sender="10.10.10.37")["mdns_model"] == "DCS-935L"
    assert parse_mdns(DLINK_ANNOUNCEMENT, sender="10.20.0.1") == {}          # a reflector repeating it
    no_address = mdns_message(answers=[mdns_record(DLINK_INSTANCE, TXT, DLINK_TXT)])
    assert parse_mdns(no_address, sender="10.20.0.1")["mdns_model"] == "DCS-935L"   # nothing says otherwise
    v6 = mdns_message(answers=[mdns_record("cam.local", 28, "fe80::1"), mdns_record("cam.local", A, "10.0.0.5")])
    assert parse_mdns(v6, sender="fe80::1") == {"mdns_name": "cam.local"}


LAZY_PATTERNS = ("_XML_TAG", "_UPNP_DEVICE_TYPE", "_UPNP_FIELDS", "_TITLE", "_HNAP_FIELDS", "_STATUS_TITLE",
                 "_MODELISH", "_LETTER")


def test_identity_patterns_are_compiled_on_first_use_only():
    # compiled at import they were ~0.5 ms of every start (issue 16); fails for one made eager again
    import subprocess
    import sys

    probe = ("import re, sensor.dissect as d; "
             f"print(sorted(n for n in {LAZY_PATTERNS!r} if getattr(d, n).cache_info().currsize))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_identity_patterns_compile_once_to_a_pattern():
    import re

    import sensor.dissect as dissect

    for name in LAZY_PATTERNS:
        first = getattr(dissect, name)()
        assert isinstance(first, re.Pattern) and getattr(dissect, name)() is first, name
