"""sensor/certificate.py: the subject and issuer of a TLS server's certificate, from certificates built field by field
(tests/../pcaps/identity_packets.py) and from certificates OpenSSL makes, whose names OpenSSL itself reads back."""

from __future__ import annotations

import subprocess

import pytest

from identity_packets import der_certificate, tls_server_flight
from sensor.certificate import MAX_RDNS, parse_tls_certificate
from sensor.dissect import MAX_IDENTITY_VALUE

HIK = [("C", "CN"), ("ST", "ZJ"), ("L", "HZ"), ("O", "Hikvision"), ("OU", "Hikvision"), ("CN", "IPC")]


def test_a_self_signed_camera_certificate_names_the_maker_twice():
    flight = tls_server_flight([der_certificate(HIK)])
    assert parse_tls_certificate(flight) == {"tls_issuer": "CN=IPC, O=Hikvision, OU=Hikvision",
                                             "tls_subject": "CN=IPC, O=Hikvision, OU=Hikvision"}


def test_the_first_certificate_of_the_chain_is_the_servers():
    leaf = der_certificate([("O", "Dahua"), ("CN", "IPC-HDW2431T")], issuer=[("O", "Dahua"), ("CN", "Dahua CA")])
    ca = der_certificate([("O", "Dahua"), ("CN", "Dahua CA")])
    assert parse_tls_certificate(tls_server_flight([leaf, ca])) == {"tls_issuer": "CN=Dahua CA, O=Dahua",
                                                                    "tls_subject": "CN=IPC-HDW2431T, O=Dahua"}


@pytest.mark.parametrize("version", [b"\x03\x01", b"\x03\x02", b"\x03\x03", b"\x03\x00"])
def test_each_record_on_its_own_and_every_clear_tls_version(version):
    flight = tls_server_flight([der_certificate(HIK)], version=version, one_record=False)
    assert parse_tls_certificate(flight)["tls_subject"] == "CN=IPC, O=Hikvision, OU=Hikvision"
    certificate_record = flight[flight.index(b"\x16" + version, 5):]
    assert parse_tls_certificate(certificate_record)["tls_issuer"] == "CN=IPC, O=Hikvision, OU=Hikvision"


def test_v1_certificates_and_other_string_types():
    v1 = der_certificate([("CN", "cam")], version=False)
    assert parse_tls_certificate(tls_server_flight([v1]))["tls_subject"] == "CN=cam"
    bmp = der_certificate([("O", "\u6d77\u5eb7"), ("CN", "IPC")], string_tag=0x1E)      # BMPString
    assert parse_tls_certificate(tls_server_flight([bmp]))["tls_subject"] == "CN=IPC, O=\u6d77\u5eb7"


def test_commas_in_a_value_are_escaped():
    cert = der_certificate([("O", "Acme, Inc."), ("CN", "a\\b")])
    assert parse_tls_certificate(tls_server_flight([cert]))["tls_subject"] == "CN=a\\\\b, O=Acme\\, Inc."


def test_a_flight_cut_inside_the_subject_gives_the_issuer_alone():
    flight = tls_server_flight([der_certificate(HIK)])
    subject_cn = flight.rindex(b"IPC")
    assert parse_tls_certificate(flight[:subject_cn + 2]) == {"tls_issuer": "CN=IPC, O=Hikvision, OU=Hikvision",
                                                              "tls_subject": "O=Hikvision, OU=Hikvision"}
    issuer_cn = flight.index(b"IPC")
    assert parse_tls_certificate(flight[:issuer_cn + 2]) == {"tls_issuer": "O=Hikvision, OU=Hikvision"}


@pytest.mark.parametrize("payload", [
    b"",
    b"\x16\x03\x03\x00\x4a\x02",                                      # a ServerHello cut short
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",                       # a ClientHello
    b"\x17\x03\x03\x00\x10" + bytes(16),                              # application data
    b"\x16\x03\x03\x00\x06\x02\x00\x00\x02\x03\x04\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x20" + bytes(32),  # 1.3
    b"\x16\x02\x00\x00\x05\x0b\x00\x00\x01\x00",                       # not TLS 1.x
])
def test_no_certificate_no_names(payload):
    assert parse_tls_certificate(payload) == {}


def test_a_name_with_none_of_the_attributes_shown_gives_nothing():
    assert parse_tls_certificate(tls_server_flight([der_certificate([("C", "CN"), ("L", "HZ")])])) == {}


def test_names_are_bounded_in_count_and_length():
    many = [("OU", f"u{i}") for i in range(MAX_RDNS + 10)] + [("CN", "late")]
    fields = parse_tls_certificate(tls_server_flight([der_certificate(many)]))
    assert fields["tls_subject"] == "OU=u0"     # the CN past the RDN bound is not read
    long = parse_tls_certificate(tls_server_flight([der_certificate([("CN", "x" * 3000)])]))
    assert len(long["tls_subject"]) == MAX_IDENTITY_VALUE


@pytest.mark.parametrize("subject", [
    "/C=CN/ST=ZJ/L=HZ/O=Hikvision/OU=Hikvision/CN=IPC",
    "/O=ZheJiang Dahua Technology Co., Ltd./CN=192.168.1.108",
    "/CN=NVR/O=Caf\u00e9 Vid\u00e9o/OU=Unit 7",
])
def test_openssl_certificates_read_as_openssl_reads_them(tmp_path, subject):
    """OpenSSL writes the certificate (extensions, a 2048-bit key, long-form lengths) and reads its names back;
    the three attributes shown must be what it reads."""
    key, pem = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem,
                    "-days", "30", "-utf8", "-subj", subject], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER"], check=True, capture_output=True).stdout
    shown = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-subject", "-nameopt", "utf8,sep_multiline"],
                           check=True, capture_output=True, text=True).stdout
    attrs = dict(line.strip().split("=", 1) for line in shown.splitlines()[1:])
    expected = ", ".join(f"{k}={attrs[k].replace(',', chr(92) + ',')}" for k in ("CN", "O", "OU") if k in attrs)
    fields = parse_tls_certificate(tls_server_flight([der]))
    assert fields == {"tls_issuer": expected, "tls_subject": expected}
