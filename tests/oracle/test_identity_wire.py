"""The identity parsers on real bytes, checked against Wireshark (tshark) and OpenSSL: the mDNS announcements of the
iot-sentinel cameras, and the TLS certificates the D-Link DCS-935L's cloud servers sent it (a real chain, the
Certificate message spread over three segments, the names in the first)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REAL

from sensor.certificate import parse_tls_certificate
from sensor.dissect import parse_mdns

DLINK = REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap"
SENTINEL = [DLINK, REAL / "iot-sentinel/D-LinkDayCam/Setup-A-1-STA.pcap",
            REAL / "iot-sentinel/EdimaxCam1/Setup-A-1-STA.pcap"]


def tshark(path, display_filter, *fields) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=a", "-E",
            "aggregator=|"]
    for name in fields:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("path", SENTINEL, ids=lambda p: p.parent.name)
def test_mdns_fields_are_what_wireshark_reads_in_the_same_packet(path):
    rows = tshark(path, "mdns && dns.flags.response == 1", "udp.payload", "dns.resp.name", "dns.srv.target",
                  "dns.ptr.domain_name", "dns.txt")
    assert rows
    named = 0
    for payload, names, targets, ptrs, txts in rows:
        fields = parse_mdns(bytes.fromhex(payload))
        names, targets, ptrs, txts = (set(v.split("|")) - {""} for v in (names, targets, ptrs, txts))
        if "mdns_name" in fields:
            named += 1
            assert fields["mdns_name"] in names | targets | ptrs
        if "mdns_service" in fields:
            assert any(fields["mdns_service"] in n for n in names | ptrs)
        if "mdns_instance" in fields:
            assert any(n.strip().startswith(fields["mdns_instance"]) for n in names | ptrs)
        if "mdns_model" in fields:
            assert any(fields["mdns_model"] in t for t in txts)
    assert named >= 1


def _openssl_names(der: bytes) -> dict[str, str]:
    shown = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-issuer", "-nameopt",
                            "utf8,sep_comma_plus_space,space_eq"], input=der, capture_output=True, check=True)
    out = {}
    for line in shown.stdout.decode().splitlines():
        key, _, rest = line.partition("=")
        attrs = dict(part.split(" = ", 1) for part in rest.strip().split(", "))
        out[f"tls_{key.strip()}"] = ", ".join(f"{k}={attrs[k]}" for k in ("CN", "O", "OU") if k in attrs)
    return out


def test_real_server_certificates_read_as_openssl_reads_them():
    """Each segment the router hands over as a TLS server's flight: where it opens the Certificate, the names
    are OpenSSL's reading of the certificate tshark reassembled; the segments that continue it give nothing."""
    whole = {frame: chain.split("|")[0] for frame, chain in tshark(DLINK, "tls.handshake.type == 11", "frame.number",
                                                                   "tls.handshake.certificate")}
    segments = tshark(DLINK, "tcp.len > 0 && tcp.payload[0:2] == 16:03", "frame.number", "tcp.payload")
    read = [(int(frame), parse_tls_certificate(bytes.fromhex(payload))) for frame, payload in segments]
    found = [(frame, fields) for frame, fields in read if fields]
    assert len(found) == len(whole) == 3
    expected = _openssl_names(bytes.fromhex(next(iter(whole.values()))))
    assert expected == {"tls_subject": "CN=*.auto.mydlink.com, O=D-Link Corporation, OU=IT Dept.",
                        "tls_issuer": "CN=GlobalSign Organization Validation CA - SHA256 - G2, O=GlobalSign nv-sa"}
    assert all(fields == expected for _, fields in found)
