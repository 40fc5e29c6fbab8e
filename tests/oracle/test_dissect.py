"""The inline DNS / TLS SNI / HTTP Host / HTTP request line / TFTP request parsers, checked against Wireshark's
dissectors through pyshark."""

from __future__ import annotations

import pytest
from conftest import REAL, SYNTHETIC

from packets import PcapWriter, dns_response, ethernet, ipv4, mac, tcp, tls_client_hello, udp
from sensor.capture import open_file
from sensor.decode import decode, payload
from sensor.dissect import parse_dns, parse_http_host, parse_http_request, parse_tftp_request, parse_tls_sni
from sensor.inspect import waited_capture  # pyshark's FileCapture, its tshark waited for (not killed) at the end

NAMING_FIXTURES = [SYNTHETIC / "camera_site.pcap", SYNTHETIC / "links" / "ethernet.pcap",
                   REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap",
                   REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap"]


def our_names(path):
    """Per frame number: (DNS query name, sorted A/AAAA answers) and SNI, from camwatch's parsers."""
    dns, sni = {}, {}
    frame = 0
    reader, _ = open_file(path)
    for batch in reader:
        dec = decode(batch)
        for i in range(len(batch)):
            frame += 1
            body = payload(dec, i)
            if dec.proto[i] == 17 and 53 in (dec.sport[i], dec.dport[i]):
                msg = parse_dns(body)
                if msg is not None:
                    dns[frame] = (msg.qname, sorted(a for a, _ in msg.addresses()))
            elif dec.proto[i] == 6 and body[:1] == b"\x16":
                name = parse_tls_sni(body)
                if name:
                    sni[frame] = name
    return dns, sni


def wireshark_names(path):
    """The same, from Wireshark's dissectors (pyshark's default mode: only the few matching packets are parsed)."""
    dns, sni = {}, {}
    cap = waited_capture(str(path), display_filter="(dns && udp.port == 53) || tls.handshake.type == 1")
    try:
        for pkt in cap:
            number = int(pkt.number)
            if hasattr(pkt, "dns"):
                d = pkt.dns
                answers = []
                for field in ("a", "aaaa"):
                    if hasattr(d, field):
                        answers += [f.showname_value for f in getattr(d, field).all_fields]
                dns[number] = (str(d.qry_name).lower(), sorted(answers))
            if hasattr(pkt, "tls") and hasattr(pkt.tls, "handshake_extensions_server_name"):
                sni[number] = str(pkt.tls.handshake_extensions_server_name).lower()
    finally:
        cap.close()
    return dns, sni


@pytest.mark.parametrize("path", NAMING_FIXTURES, ids=lambda p: p.name)
def test_dns_and_sni_agree_with_wireshark(path):
    ours_dns, ours_sni = our_names(path)
    ws_dns, ws_sni = wireshark_names(path)
    assert set(ours_dns) == set(ws_dns)
    for frame, (qname, answers) in ws_dns.items():
        assert ours_dns[frame][0] == qname, frame
        # Wireshark lists every A/AAAA record; camwatch keeps those reachable from the query name
        assert set(ours_dns[frame][1]) <= set(answers), frame
        assert bool(ours_dns[frame][1]) == bool(answers), frame
    assert ours_sni == ws_sni
    assert ours_dns  # each of these captures does name something


def test_dns_cname_chain_maps_addresses_to_the_query_name():
    msg = parse_dns(dns_response(1, "a.example.com", [("a.example.com", 5, 60, "b.example.net"),
                                                      ("b.example.net", 5, 60, "c.example.org"),
                                                      ("c.example.org", 1, 30, "192.0.2.9"),
                                                      ("unrelated.example", 1, 30, "192.0.2.10")]))
    assert msg.is_response and msg.qname == "a.example.com"
    assert msg.addresses() == [("192.0.2.9", 30)]


@pytest.mark.parametrize("data", [
    b"\x00\x01\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xc0\x0c",           # name pointing at itself
    b"\x00\x01\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x3fabc",              # label past the end
    b"\x00\x01\x81\x80\x00\x01\xff\xff\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # absurd answer count
    b"\x00" * 5,
])
def test_hostile_dns_is_rejected_not_crashed_on(data):
    assert parse_dns(data) is None


def test_tls_sni_and_truncations():
    hello = tls_client_hello("cam.example.org")
    assert parse_tls_sni(hello) == "cam.example.org"
    for cut in range(0, len(hello) - 1, 7):
        assert parse_tls_sni(hello[:cut]) in (None, "cam.example.org")


def test_http_host():
    assert parse_http_host(b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\nHost: 10.20.0.11:8080\r\n\r\n") == "10.20.0.11"
    assert parse_http_host(b"POST /x HTTP/1.1\r\nhost: Cloud.Example.COM\r\n\r\n") == "cloud.example.com"
    assert parse_http_host(b"HTTP/1.1 200 OK\r\nHost: x\r\n\r\n") is None


TFTP_REQUESTS = [b"\x00\x01/pub/x.sh\x00octet\x00", b"\x00\x02up.bin\x00NETASCII\x00blksize\x001428\x00",
                 b"\x00\x01bins/mirai.arm7\x00octet\x00tsize\x000\x00", b"\x00\x01cfg\x00mail\x00"]
HTTP_REQUESTS = [b"GET /bins/x.arm7?a=1 HTTP/1.1\r\nHost: h\r\n\r\n", b"GET http://a.example/f.bin HTTP/1.1\r\n\r\n",
                 b"POST /cgi-bin/x.cgi HTTP/1.0\r\n\r\n", b"HEAD /digicap.dav HTTP/1.1\r\nHost: x\r\n\r\n"]


def test_tftp_requests_and_http_request_lines_agree_with_wireshark(tmp_path):
    path = tmp_path / "fetches.pcap"
    a, b = mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02")
    with PcapWriter(path) as w:
        for i, body in enumerate(TFTP_REQUESTS):
            w.write(1e9 + i, ethernet(b, a, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17,
                                                         udp("10.0.0.1", "10.0.0.2", 40000 + i, 69, body))))
        for i, body in enumerate(HTTP_REQUESTS):
            w.write(1e9 + 10 + i, ethernet(b, a, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(
                "10.0.0.1", "10.0.0.2", 41000 + i, 80, 1, 1, "PA", body))))
    tftp, http = [], []
    cap = waited_capture(str(path), display_filter="tftp || http.request")
    try:
        for pkt in cap:
            if hasattr(pkt, "tftp"):
                t = pkt.tftp
                name = getattr(t, "source_file", None) or getattr(t, "destination_file", None)
                tftp.append((int(t.opcode), str(name), str(t.type).lower()))
            else:
                http.append((str(pkt.http.request_method), str(pkt.http.request_uri)))
    finally:
        cap.close()
    ours_tftp = [(r.opcode, r.filename.decode(), r.mode) for r in map(parse_tftp_request, TFTP_REQUESTS)]
    ours_http = [(r.method, r.target.decode()) for r in map(parse_http_request, HTTP_REQUESTS)]
    assert ours_tftp == tftp and len(tftp) == len(TFTP_REQUESTS)
    assert ours_http == http and len(http) == len(HTTP_REQUESTS)
