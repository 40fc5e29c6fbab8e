"""sensor/dissect.py: the wire parsers (DNS, TLS SNI, HTTP request and Host, TFTP requests, banners, ONVIF, SADP,
DHIP), wire_text and ParserGuard, by exact value, with every bound checked at, just inside and just past its edge."""

from __future__ import annotations

import functools
import ipaddress
import json
import random
import struct

import pytest

from packets import dns_name, dns_query, dns_response, tls_client_hello
from sensor.dissect import (
    MAX_DNS_RECORDS,
    MAX_IDENTITY_VALUE,
    REQUEST_PORTS,
    TFTP_READ,
    TFTP_WRITE,
    WIRE_PARSERS,
    DnsMessage,
    HttpRequest,
    ParserGuard,
    TftpRequest,
    _clean,
    _dns_name,
    _escaped,
    _headers,
    dns_answer_cost,
    ipv6_text,
    parse_banner,
    parse_dhip,
    parse_dns,
    parse_http_host,
    parse_http_request,
    parse_sadp,
    parse_tftp_request,
    parse_tls_sni,
    parse_ws_discovery,
    printable,
    wire_text,
)


def header(qd=1, an=0, flags=0x0100, ident=0x1234, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, cls: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, cls, ttl, len(rdata)) + rdata


QUESTION = dns_name("cam.example.com") + struct.pack("!HH", 1, 1)   # at offset 12: a pointer to it is c0 0c
PTR = b"\xc0\x0c"


# ---- DNS names ------------------------------------------------------------------------------------------------------
def test_a_name_is_read_lower_case_and_its_end_returned():
    msg = header() + dns_name("Cam.EXAMPLE.com") + b"tail"
    assert _dns_name(msg, 12) == ("cam.example.com", 12 + 17)


def test_the_root_name_is_empty():
    assert _dns_name(b"\0", 0) == ("", 1)


def test_after_a_pointer_the_record_goes_on_past_the_pointer_not_the_target():
    msg = header() + QUESTION + dns_name("www")[:-1] + PTR + b"rest"
    start = 12 + len(QUESTION)
    assert _dns_name(msg, start) == ("www.cam.example.com", start + 4 + 2)


def test_a_pointer_to_a_pointer_still_ends_after_the_first():
    msg = header() + QUESTION + PTR + b"\x03www" + b"\xc0" + bytes([12 + len(QUESTION)])
    start = 12 + len(QUESTION) + 2
    assert _dns_name(msg, start) == ("www.cam.example.com", start + 4 + 2)


def test_a_pointer_past_offset_255_uses_both_of_its_bytes():
    filler = b"\x01x" * 150   # 300 bytes of labels that nothing reads
    msg = header() + filler + b"\0" + dns_name("far.example")
    far = 12 + len(filler) + 1
    assert far > 0xFF
    msg += bytes([0xC0 | (far >> 8), far & 0xFF])
    assert _dns_name(msg, len(msg) - 2) == ("far.example", len(msg))


def chain(jumps: int) -> tuple[bytes, int]:
    """A message where the name at the returned offset reaches its labels through `jumps` pointers."""
    msg = header() + dns_name("deep.example")
    target = 12
    for _ in range(jumps):
        msg += bytes([0xC0 | (target >> 8), target & 0xFF])
        target = len(msg) - 2
    return msg, target


def test_sixteen_pointer_jumps_are_followed_and_seventeen_are_a_loop():
    msg, start = chain(16)
    assert _dns_name(msg, start) == ("deep.example", start + 2)
    msg, start = chain(17)
    with pytest.raises(ValueError, match="^compression loop$"):
        _dns_name(msg, start)


@pytest.mark.parametrize("msg, pos, why", [
    (b"\x03abc", 4, "name past end"),
    (b"\x03abc\xc0", 4, "truncated pointer"),
    (b"\x40abc\0", 0, "bad label type"),
    (b"\x80abc\0", 0, "bad label type"),
    (b"\x05abc", 0, "label past end"),
    (b"\x03abc", 0, "name past end"),
    (b"\xc0\x00", 0, "compression loop"),
])
def test_names_that_cannot_be_read_are_errors(msg, pos, why):
    with pytest.raises(ValueError, match=f"^{why}$"):
        _dns_name(msg, pos)


def _long(lengths: list[int]) -> bytes:
    return b"".join(bytes([n]) + b"a" * n for n in lengths) + b"\0"


def test_a_name_of_255_bytes_is_read_and_256_is_too_long():
    name, end = _dns_name(_long([63, 63, 63, 62]), 0)   # 64 + 64 + 64 + 63 = 255 counted bytes
    assert len(name) == 63 * 3 + 62 + 3 and end == 256
    with pytest.raises(ValueError, match="^name too long$"):
        _dns_name(_long([63, 63, 63, 63]), 0)


# ---- DNS messages ---------------------------------------------------------------------------------------------------
def test_a_query():
    msg = parse_dns(dns_query(7, "Cam.Example.COM", qtype=28))
    assert msg == DnsMessage(False, 0, "cam.example.com", 28, [])


def test_a_response_with_every_record_type():
    body = dns_response(7, "cam.example.com", [("cam.example.com", 5, 60, "edge.example.net"),
                                               ("edge.example.net", 1, 30, "192.0.2.7"),
                                               ("edge.example.net", 28, 20, "2001:db8::7")])
    msg = parse_dns(body)
    assert msg.is_response and msg.rcode == 0 and (msg.qname, msg.qtype) == ("cam.example.com", 1)
    assert msg.answers == [("cam.example.com", 5, 60, "edge.example.net"), ("edge.example.net", 1, 30, "192.0.2.7"),
                           ("edge.example.net", 28, 20, "2001:db8::7")]
    assert msg.addresses() == [("192.0.2.7", 30), ("2001:db8::7", 20)]


def test_flags_give_response_and_rcode():
    msg = parse_dns(header(flags=0x8183) + QUESTION)
    assert (msg.is_response, msg.rcode) == (True, 3)
    msg = parse_dns(header(flags=0x7FF0) + QUESTION)
    assert (msg.is_response, msg.rcode) == (False, 0)
    msg = parse_dns(header(flags=0x0001) + QUESTION)
    assert (msg.is_response, msg.rcode) == (False, 1)


def test_header_alone_is_a_message_and_shorter_is_not():
    assert parse_dns(header(qd=0)) == DnsMessage(False, 0, None, None, [])
    assert parse_dns(header(qd=0)[:11]) is None


def test_only_the_first_question_names_the_message():
    body = header(qd=2) + dns_name("first.example") + struct.pack("!HH", 1, 1) + dns_name("second.example") + \
        struct.pack("!HH", 28, 1)
    assert (parse_dns(body).qname, parse_dns(body).qtype) == ("first.example", 1)


@pytest.mark.parametrize("qd, ok", [(4, True), (5, False)])
def test_at_most_four_questions(qd, ok):
    body = header(qd=qd) + QUESTION * qd
    assert (parse_dns(body) is not None) is ok


def test_a_question_cut_short_is_not_a_message():
    assert parse_dns(header() + QUESTION) is not None
    assert parse_dns(header() + QUESTION[:-1]) is None


def test_a_question_without_its_name_is_not_a_message():
    assert parse_dns(header(qd=1)) is None
    assert parse_dns(header(qd=1) + b"\xc0") is None


def answers(n: int) -> bytes:
    return b"".join(rr(PTR, 1, i, bytes([192, 0, 2, i % 256])) for i in range(n))


@pytest.mark.parametrize("an, ok", [(256, True), (257, False)])
def test_at_most_256_answers_are_announced_and_64_read(an, ok):
    msg = parse_dns(header(an=an, flags=0x8180) + QUESTION + answers(MAX_DNS_RECORDS))
    if ok:
        assert len(msg.answers) == MAX_DNS_RECORDS
        assert msg.answers[-1] == ("cam.example.com", 1, 63, "192.0.2.63")
    else:
        assert msg is None


def test_more_answers_than_announced_are_not_read():
    msg = parse_dns(header(an=2, flags=0x8180) + QUESTION + answers(3))
    assert [a[2] for a in msg.answers] == [0, 1]


def test_a_record_cut_short_ends_the_answers_and_keeps_those_before():
    full = header(an=3, flags=0x8180) + QUESTION + answers(2)
    last = rr(PTR, 1, 99, bytes([192, 0, 2, 99]))
    assert [a[2] for a in parse_dns(full + last).answers] == [0, 1, 99]
    assert [a[2] for a in parse_dns(full + last[:-1]).answers] == [0, 1]    # rdata one byte short
    assert [a[2] for a in parse_dns(full + last[:12]).answers] == [0, 1]    # fixed fields cut after the ttl
    assert [a[2] for a in parse_dns(full + last[:11]).answers] == [0, 1]


def test_an_empty_cname_at_the_very_end_spoils_the_message():
    """Its fixed fields end the message exactly: they are read, and the target name is then past the end."""
    body = header(an=2, flags=0x8180) + QUESTION + answers(1)
    assert parse_dns(body + rr(PTR, 5, 7, b"")) is None
    assert [a[2] for a in parse_dns(body + rr(PTR, 5, 7, b"")[:-1]).answers] == [0]


def test_records_with_empty_data_are_skipped():
    body = header(an=3, flags=0x8180) + QUESTION + rr(PTR, 1, 5, b"") + rr(PTR, 99, 5, b"") + \
        rr(PTR, 1, 6, bytes([192, 0, 2, 1]))
    assert parse_dns(body).answers == [("cam.example.com", 1, 6, "192.0.2.1")]


def test_fields_are_unsigned():
    body = header(an=1, flags=0x8180) + dns_name("a.example") + struct.pack("!HH", 0xFF00, 1) + \
        rr(PTR, 1, 0xFFFFFFFF, bytes([192, 0, 2, 1]))
    msg = parse_dns(body)
    assert msg.qtype == 0xFF00 and msg.answers == [("a.example", 1, 0xFFFFFFFF, "192.0.2.1")]
    assert parse_dns(header(an=0x8000, flags=0x8180) + QUESTION) is None


def test_a_label_that_is_not_ascii_is_kept_replaced():
    msg = parse_dns(header() + b"\x03c\xffm\x00" + struct.pack("!HH", 1, 1))
    assert msg.qname == "c\ufffdm"


def test_records_of_the_wrong_size_or_type_are_skipped_and_the_walk_goes_on():
    body = (header(an=4, flags=0x8180) + QUESTION + rr(PTR, 1, 1, bytes(5)) + rr(PTR, 28, 2, bytes(4))
            + rr(PTR, 16, 3, b"\x05hello") + rr(PTR, 1, 4, bytes([198, 51, 100, 4])))
    assert parse_dns(body).answers == [("cam.example.com", 1, 4, "198.51.100.4")]


def test_a_cname_whose_target_cannot_be_read_spoils_the_message():
    body = header(an=1, flags=0x8180) + QUESTION + rr(PTR, 5, 1, b"\x05ab")
    assert parse_dns(body) is None


def test_an_owner_that_cannot_be_read_spoils_the_message():
    assert parse_dns(header(an=1, flags=0x8180) + QUESTION + b"\x40") is None


def test_addresses_follow_cnames_from_the_query_name_only():
    msg = DnsMessage(True, 0, "cam.example.com", 1, [
        ("other.example", 1, 9, "192.0.2.99"),                   # not reachable from the query
        ("other.example", 5, 9, "cam2.example"),                 # a CNAME of another name: not followed
        ("cam2.example", 1, 9, "192.0.2.98"),
        ("cam.example.com", 5, 60, "a.example"),
        ("a.example", 5, 50, "b.example"),
        ("b.example", 28, 40, "2001:db8::1"),
        ("a.example", 1, 30, "192.0.2.1"),
        ("b.example", 16, 40, "text")])
    assert msg.addresses() == [("2001:db8::1", 40), ("192.0.2.1", 30)]
    assert DnsMessage(True, 0, None, None, [("cam.example.com", 1, 9, "192.0.2.1")]).addresses() == []


# ---- TLS SNI -------------------------------------------------------------------------------------------------------
def client_hello(extensions: bytes, session_id: bytes = b"", suites: bytes = b"\x13\x01",
                 compression: bytes = b"\x00", ext_total: int | None = None) -> bytes:
    body = (b"\x03\x03" + bytes(32) + bytes([len(session_id)]) + session_id + struct.pack("!H", len(suites))
            + suites + bytes([len(compression)]) + compression
            + struct.pack("!H", len(extensions) if ext_total is None else ext_total) + extensions)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def sni_ext(name: bytes, name_type: int = 0, name_len: int | None = None) -> bytes:
    n = len(name) if name_len is None else name_len
    return ext(0, struct.pack("!HBH", n + 3, name_type, n) + name)


def test_sni_of_a_plain_client_hello():
    assert parse_tls_sni(tls_client_hello("Cloud.Example.COM")) == "cloud.example.com"


def test_sni_after_a_session_id_many_suites_compression_methods_and_other_extensions():
    hello = client_hello(ext(10, b"\x00\x04\x00\x1d\x00\x17") + ext(16, b"\x00\x03\x02h2") + sni_ext(b"a.example"),
                         session_id=bytes(range(32)), suites=bytes(range(40)), compression=b"\x01\x00")
    assert parse_tls_sni(hello) == "a.example"


@pytest.mark.parametrize("change", ["record type", "handshake type", "short"])
def test_not_a_client_hello(change):
    hello = bytearray(client_hello(sni_ext(b"a.example")))
    if change == "record type":
        hello[0] = 0x17
    elif change == "handshake type":
        hello[5] = 0x02
    else:
        hello = hello[:42]
    assert parse_tls_sni(bytes(hello)) is None


def test_a_minimal_client_hello_is_read():
    assert parse_tls_sni(client_hello(sni_ext(b"x"), suites=b"", compression=b"")) == "x"


def test_a_server_name_that_is_not_ascii_is_kept_replaced():
    assert parse_tls_sni(client_hello(sni_ext(b"A\xffB.example"))) == "a\ufffdb.example"


def test_sni_followed_by_other_extensions():
    hello = client_hello(sni_ext(b"a.example") + ext(10, b"\x00\x02\x00\x1d") + ext(16, b"\x00\x03\x02h2"))
    assert parse_tls_sni(hello) == "a.example"


def test_no_server_name_extension():
    assert parse_tls_sni(client_hello(ext(10, b"\x00\x02\x00\x1d"))) is None
    assert parse_tls_sni(client_hello(b"")) is None


def test_a_server_name_of_another_type_or_cut_short_is_none():
    assert parse_tls_sni(client_hello(sni_ext(b"a.example", name_type=1))) is None
    assert parse_tls_sni(client_hello(sni_ext(b"a.example", name_len=20))) is None


def test_the_extensions_length_bounds_the_walk():
    exts = ext(10, b"\x00\x02\x00\x1d") + sni_ext(b"a.example")
    assert parse_tls_sni(client_hello(exts, ext_total=8)) is None          # the SNI lies past the extensions
    assert parse_tls_sni(client_hello(exts, ext_total=8 + 4)) == "a.example"   # its header just fits
    assert parse_tls_sni(client_hello(exts, ext_total=8 + 3)) is None
    assert parse_tls_sni(client_hello(exts, ext_total=1000)) == "a.example"     # longer than the payload
    assert parse_tls_sni(client_hello(exts, ext_total=0xFFFF)) == "a.example"   # lengths are unsigned


def test_a_truncated_hello_is_none_not_an_error():
    hello = client_hello(ext(10, b"\x00\x02\x00\x1d") + sni_ext(b"a.example"))
    assert parse_tls_sni(hello) == "a.example"
    for cut in range(len(hello)):
        assert parse_tls_sni(hello[:cut]) is None


# ---- HTTP Host ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN"])
def test_every_method_is_a_request(method):
    assert parse_http_host(method + b" / HTTP/1.1\r\nHost: Cam.Example\r\n\r\n") == "cam.example"


@pytest.mark.parametrize("line, host", [
    (b"Host: cam.example:8080", "cam.example"),
    (b"HOST:cam.example", "cam.example"),
    (b"host:   Cam.Example  ", "cam.example"),
    (b"Host: [2001:db8::1]:8080", "2001:db8::1"),
    (b"Host: [2001:db8::1]", "2001:db8::1"),
    (b"Host: [2001:db8::1", None),
    (b"Host: 2001:db8::1", "2001:db8::1"),
    (b"Host: 192.0.2.1:80", "192.0.2.1"),
])
def test_host_header_forms(line, host):
    assert parse_http_host(b"GET / HTTP/1.1\r\nAccept: */*\r\n" + line + b"\r\n\r\n") == host


def test_host_as_the_first_header():
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: first.example\r\n\r\n") == "first.example"


def test_host_is_not_read_from_the_request_line_or_the_body():
    assert parse_http_host(b"GET /host:x HTTP/1.1\r\nAccept: */*\r\n\r\nHost: body.example\r\n") is None


def pad_to(prefix: bytes, size: int) -> bytes:
    """prefix, then a padding header line making the whole `size` bytes long."""
    filler = size - len(prefix) - len(b"X-Pad: \r\n")
    return prefix + b"X-Pad: " + b"p" * filler + b"\r\n"


def test_the_host_header_is_cut_at_4096_bytes():
    head = pad_to(b"GET / HTTP/1.1\r\n", 4096 - len(b"Host: a"))
    assert parse_http_host(head + b"Host: abc\r\n\r\n") == "a"


def test_host_that_is_not_ascii_is_kept_replaced():
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: C\xffm.example\r\n\r\n") == "c\ufffdm.example"


def test_host_past_4096_bytes_is_not_read():
    pad = b"X-Pad: " + b"p" * 4000 + b"\r\n"
    assert parse_http_host(b"GET / HTTP/1.1\r\n" + pad + b"Host: near.example\r\n\r\n") == "near.example"
    assert parse_http_host(b"GET / HTTP/1.1\r\n" + pad + b"X-More: " + b"m" * 80 + b"\r\nHost: far.example\r\n\r\n") \
        is None


def test_not_a_request():
    assert parse_http_host(b"HTTP/1.1 200 OK\r\nHost: x\r\n\r\n") is None
    assert parse_http_host(b"get / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    assert parse_http_host(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") is None


# ---- HTTP request line ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, method, target", [
    (b"GET /bins/x.arm7 HTTP/1.0\r\n\r\n", "GET", b"/bins/x.arm7"),
    (b"GET /a.sh?x=1#f HTTP/1.1\r\nHost: h\r\n\r\n", "GET", b"/a.sh?x=1#f"),
    (b"GET /old-style\r\n", "GET", b"/old-style"),                       # HTTP/0.9: no version
    (b"GET  /two\t  HTTP/1.1\n\n", "GET", b"/two"),                       # runs of blanks, a bare LF
    (b"GET http://h.example/p/f.bin HTTP/1.1\r\n\r\n", "GET", b"http://h.example/p/f.bin"),
    (b"POST /upload HTTP/1.1\r\n\r\n", "POST", b"/upload"),
    (b"GET /\xff\x00\x1b[2J HTTP/1.1\r\n\r\n", "GET", b"/\xff\x00\x1b[2J"),   # bytes kept as sent
    (b"GET /a b HTTP/1.1\r\n\r\n", "", b""),                              # four words: not a request line
    (b"GET \r\nHost: h\r\n\r\n", "", b""),                               # no target
    (b"GETX /a HTTP/1.1\r\n", None, None),                                 # not a method this router picks
    (b"GET\x00/a HTTP/1.1\r\n", None, None),
])
def test_http_request_line(payload, method, target):
    request = parse_http_request(payload)
    if method is None:
        assert request is None
    else:
        assert (request.method, request.target) == (method, target)


def test_http_request_carries_the_host_parse_http_host_reads():
    assert parse_http_request(b"GET /f.sh HTTP/1.1\r\nHost: Dl.Example:8080\r\n\r\n") == HttpRequest(
        "GET", b"/f.sh", "dl.example")
    assert parse_http_request(b"GET \r\nHost: h\r\n\r\n").host == "h"     # a bad request line keeps the Host
    lower = parse_http_request(b"PUT /x HTTP/1.1\r\n\r\n")
    assert lower == HttpRequest("PUT", b"/x", None)


def test_the_request_line_is_read_within_the_first_4096_bytes():
    long = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n"
    request = parse_http_request(long)
    assert request.method == "GET" and request.target == b"/" + b"a" * (4096 - 5)
    assert parse_http_request(b"GET /" + b"\xff" * 8000).target == b"/" + b"\xff" * (4096 - 5)


def test_a_lowercase_or_overlong_method_is_not_one():
    assert parse_http_request(b"GET /a HTTP/1.1\r\n").method == "GET"
    assert parse_http_request(b"PATCHPATCHPATCHPA /a HTTP/1.1\r\n").method == ""   # 17 letters
    assert parse_http_request(b"PATCHPATCHPATCHP /a HTTP/1.1\r\n").method == "PATCHPATCHPATCHP"
    assert parse_http_request(b"DELEte /a HTTP/1.1\r\n").method == ""


# ---- TFTP requests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, expected", [
    (b"\x00\x01/tmp/x.sh\x00octet\x00", TftpRequest(TFTP_READ, b"/tmp/x.sh", "octet")),
    (b"\x00\x01a\x00NetASCII\x00", TftpRequest(TFTP_READ, b"a", "netascii")),
    (b"\x00\x02up.bin\x00octet\x00blksize\x001428\x00", TftpRequest(TFTP_WRITE, b"up.bin", "octet")),
    (b"\x00\x01f\x00mail\x00trailing", TftpRequest(TFTP_READ, b"f", "mail")),      # options are not read
    (b"\x00\x01\xff\xfe\x1b\x00octet\x00", TftpRequest(TFTP_READ, b"\xff\xfe\x1b", "octet")),
    (b"\x00\x01" + b"n" * 60000 + b"\x00octet\x00", TftpRequest(TFTP_READ, b"n" * 60000, "octet")),
    (b"\x00\x01\x00octet\x00", None),                # empty file name
    (b"\x00\x01/tmp/x.sh", None),                      # no NUL at all
    (b"\x00\x01/tmp/x.sh\x00octet", None),             # mode not terminated
    (b"\x00\x01/tmp/x.sh\x00binary\x00", None),        # not a TFTP mode
    (b"\x00\x01/tmp/x.sh\x00\x00", None),              # empty mode
    (b"\x00\x03\x00\x01#!/bin/sh\n", None),             # DATA
    (b"\x00\x04\x00\x01", None),                        # ACK
    (b"\x00\x05\x00\x01File not found\x00", None),      # ERROR
    (b"\x00\x06blksize\x00512\x00", None),               # OACK
    (b"\x01\x01a\x00octet\x00", None),                   # opcode 257
    (b"\x00\x01", None), (b"\x00", None), (b"", None),
])
def test_tftp_requests(payload, expected):
    assert parse_tftp_request(payload) == expected


def test_tftp_requests_are_routed_by_their_port_and_counted_under_their_name():
    assert REQUEST_PORTS == {69: parse_tftp_request}
    assert "tftp_request" in WIRE_PARSERS and "http_host" in WIRE_PARSERS


# ---- wire_text ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, shown", [
    (b"/tmp/x.sh", "/tmp/x.sh"),
    ("/caf\u00e9/\u4e2d.sh".encode(), "/caf\u00e9/\u4e2d.sh"),                      # UTF-8 as itself
    (b"a\xffb\xc3", "a\\xffb\\xc3"),                                               # not UTF-8: \\xNN
    (b"l1\nl2\r\x00\x1b[31m\x7f", "l1\\x0al2\\x0d\\x00\\x1b[31m\\x7f"),              # controls
    ("a\u202eb\u2028c".encode(), "a\\u202eb\\u2028c"),                                # bidi override, separator
    (b'q"b\\', 'q\\"b\\\\'),                                                       # quote and backslash
    ("\U0001f600".encode(), "\U0001f600"),                                          # printable astral: itself
    ("\U000e0001".encode(), "\\U000e0001"),                                          # an unprintable tag
    (b"", ""),
])
def test_wire_text_escapes_what_is_not_plainly_printable(raw, shown):
    assert wire_text(raw) == shown


def test_wire_text_is_cut_with_an_ellipsis_never_inside_an_escape():
    assert wire_text(b"x" * 10, 10) == "x" * 10
    assert wire_text(b"x" * 11, 10) == "x" * 10 + "\u2026"
    assert wire_text(b"x" * 9 + b"\xff", 10) == "x" * 9 + "\u2026"              # the 4-character escape does not fit
    assert wire_text(b"\xff" * 100_000, 8) == "\\xff\\xff\u2026"
    assert wire_text("\u00e9".encode() * 50, 20) == "\u00e9" * 20 + "\u2026"
    long = wire_text(b"a" * 1_000_000)
    assert len(long) == 161 and long.endswith("\u2026")


@pytest.mark.parametrize("text,shown", [
    ("cam.cloud.example", "cam.cloud.example"), ("摄像头.example", "摄像头.example"), ("a b", "a b"),
    ("前门\u3000摄像头\u00a01\t", "前门\u3000摄像头\u00a01\ufffd"),   # spaces of any width stay
    ("\u202eelpmaxe.live", "\ufffdelpmaxe.live"), ("a\rb\nc\td", "a\ufffdb\ufffdc\ufffdd"),
    ("a\x1b[2Jb\x07\x00", "a\ufffd[2Jb\ufffd\ufffd"), ("a\u2028b\u2029c\x85d", "a\ufffdb\ufffdc\ufffdd"),
    ("a\u200bb\u2066c", "a\ufffdb\ufffdc")])
def test_printable_shows_each_character_a_line_or_terminal_would_act_on_as_a_replacement(text, shown):
    assert printable(text) == shown


def test_dns_answer_cost_is_the_answer_records_parse_dns_reads():
    assert dns_answer_cost(dns_query(1, "cam.example")) == 0 and dns_answer_cost(b"\0" * 11) == 0
    many = dns_response(2, "n.example", [("n.example", 1, 60, f"198.51.100.{k}") for k in range(70)])
    assert dns_answer_cost(many) == MAX_DNS_RECORDS == len(parse_dns(many).answers)
    assert dns_answer_cost(dns_response(3, "n.example", [("n.example", 1, 60, "198.51.100.1")])) == 1
    refused = many[:4] + struct.pack("!HH", 5, 1) + many[8:]   # five questions: refused before any answer is read
    assert parse_dns(refused) is None and dns_answer_cost(refused) == 0
    assert dns_answer_cost(many[:6] + struct.pack("!H", 257) + many[8:]) == 0


def test_ipv6_text_is_what_ipaddress_prints():
    """inet_ntop's text, ipaddress's where the two differ (the first 80 bits zero): every run of zero groups, and
    random addresses rich in zeros, ones and ffff."""
    rng = random.Random(6)
    samples = [b"".join((0 if mask >> i & 1 else 0x12AB).to_bytes(2, "big") for i in range(8)) for mask in range(256)]
    samples += [bytes(10) + tail + bytes([1, 2, 3, 4]) for tail in (b"\xff\xff", b"\0\0", b"\0\1")]
    samples += [b"".join(rng.choice([0, 0, 1, 0xFFFF, rng.randrange(1 << 16)]).to_bytes(2, "big") for _ in range(8))
                for _ in range(20_000)]
    for raw in samples:
        assert ipv6_text(raw) == str(ipaddress.IPv6Address(raw)), raw.hex()


def test_wire_text_shortcut_for_plain_ascii_is_the_walk():
    """Plain printable ASCII within the limit is returned without the per-character walk: byte for byte what the
    walk writes, and anything else (a quote, a backslash, a control, DEL, non-ASCII, one byte too long) still
    escaped or cut by it."""
    rng = random.Random(16)
    for _ in range(3000):
        alphabet = rng.choice([bytes(range(0x20, 0x7F)), bytes(range(256)), b'ab "\\\x7f\x1f\xc3\xa9'])
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        limit = rng.choice([0, 1, len(raw) - 1, len(raw), len(raw) + 1, 160])
        assert wire_text(raw, limit) == _escaped(raw, limit)
    assert wire_text(b"DCS-935L", 8) == "DCS-935L" and wire_text(b"DCS-935L", 7) == "DCS-935\u2026"
    assert wire_text(b'say "hi"') == 'say \\"hi\\"' and wire_text(b"a\x7fb") == "a\\x7fb"


# ---- banners and discovery --------------------------------------------------------------------------------------
def test_clean_strips_unprintables_and_bounds_the_length():
    assert _clean(b"  Hik\x00vision\x7f\tWeb\xff  ") == "HikvisionWeb\ufffd"
    assert _clean("x" * 500) == "x" * MAX_IDENTITY_VALUE
    assert _clean(" \u00e9t\u00e9 ") == "\u00e9t\u00e9"


def test_headers_are_read_until_the_blank_line():
    payload = b"RTSP/1.0 200 OK\r\nServer: Hikvision-Webs\r\n no colon here\r\nCSeq : 2\r\nX: a:b\r\n\r\nBody: no"
    assert _headers(payload) == {"server": "Hikvision-Webs", "cseq": "2", "x": "a:b"}


def test_headers_are_cut_at_4096_bytes():
    head = pad_to(b"HTTP/1.1 200 OK\r\n", 4096 - len(b"Server: a"))
    assert _headers(head + b"Server: abc\r\n\r\n")["server"] == "a"
    assert _headers(b"RTSP/1.0 200 OK\r\nX-\xffName: v\r\n\r\n") == {"x-\ufffdname": "v"}


def test_headers_past_4096_bytes_are_not_read():
    pad = b"X-Pad: " + b"p" * 4080 + b"\r\n"
    assert "server" not in _headers(b"HTTP/1.1 200 OK\r\n" + pad + b"Server: far\r\n\r\n")
    assert _headers(b"HTTP/1.1 200 OK\r\nServer: near\r\n" + pad)["server"] == "near"


@pytest.mark.parametrize("start", [b"RTSP/1.0 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"NOTIFY * HTTP/1.1",
                                   b"M-SEARCH * HTTP/1.1"])
def test_banner_of_every_kind_of_message(start):
    payload = start + b"\r\nSERVER: Dahua Rtsp Server/3.0\r\nLocation: http://10.0.0.5:80/desc.xml\r\n\r\n"
    assert parse_banner(payload) == {"server": "Dahua Rtsp Server/3.0", "location": "http://10.0.0.5:80/desc.xml"}


def test_banner_keeps_only_non_empty_server_and_location():
    assert parse_banner(b"HTTP/1.1 200 OK\r\nServer: \r\nLocation: x\r\nUser-Agent: y\r\n\r\n") == {"location": "x"}
    assert parse_banner(b"HTTP/1.1 200 OK\r\nServer: s\r\nLocation:\r\n\r\n") == {"server": "s"}


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1", b"RTSP/2.0 200", b"HTTP/2 200", b"NOTIFY x", b"SSH-2.0-x"])
def test_banner_of_other_messages_is_empty(start):
    assert parse_banner(start + b"\r\nServer: s\r\n\r\n") == {}


def probe_match(scopes: str, root: str = "d:ProbeMatches", scopes_tag: str = "d:Scopes") -> bytes:
    attr = ' MatchBy="x"' if ":" in scopes_tag else ""
    return (f'<?xml version="1.0"?><s:Envelope><s:Body><{root}><d:ProbeMatch><{scopes_tag}{attr}>{scopes}'
            f'</{scopes_tag}></d:ProbeMatch></{root}></s:Body></s:Envelope>').encode()


def test_onvif_probe_match_names_the_model_and_the_device():
    scopes = ("onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/hardware/DS-2CD2143G2-I "
              "onvif://www.onvif.org/name/HIKVISION%20Camera onvif://www.onvif.org/location/city/x")
    assert parse_ws_discovery(probe_match(scopes)) == {"model": "DS-2CD2143G2-I", "name": "HIKVISION Camera",
                                                       "protocol": "onvif"}


def test_onvif_hello_without_namespace_prefix():
    payload = b"<Hello><Scopes>onvif://www.onvif.org/hardware/IPC-HDW</Scopes></Hello>"
    assert parse_ws_discovery(payload) == {"model": "IPC-HDW", "protocol": "onvif"}


def test_onvif_without_model_or_name_is_empty():
    assert parse_ws_discovery(probe_match("onvif://www.onvif.org/type/video_encoder")) == {}
    assert parse_ws_discovery(b"<d:ProbeMatches>nothing</d:ProbeMatches>") == {}
    assert parse_ws_discovery(b"<Probe><Scopes>onvif://www.onvif.org/hardware/X</Scopes></Probe>") == {}
    assert parse_ws_discovery(b"<Hello><Scopes>onvif://www.onvif.org/hardwareX/Y "
                              b"http://www.onvif.org/name/Z</Scopes></Hello>") == {}


def sadp(fields: dict[str, str], root: str = "ProbeMatch") -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="utf-8"?><{root}>{inner}</{root}>'.encode()


def test_sadp_announcement():
    payload = sadp({"Uuid": "x", "DeviceType": "138210", "DeviceDescription": "DS-2CD2043G0-I",
                    "DeviceSN": "DS-2CD2043G0-I20180101AAWR123456789", "SoftwareVersion": "V5.5.82build 190220"})
    assert parse_sadp(payload) == {"protocol": "sadp", "model": "DS-2CD2043G0-I",
                                   "serial": "DS-2CD2043G0-I20180101AAWR123456789",
                                   "firmware": "V5.5.82build 190220", "device_type": "138210"}
    assert parse_sadp(sadp({"DeviceSN": "SN1"}, root="Probe")) == {"protocol": "sadp", "serial": "SN1"}
    assert parse_sadp(b"<ProbeMatch><x:DeviceDescription>M</x:DeviceDescription></ProbeMatch>") == {
        "protocol": "sadp", "model": "M"}


def test_sadp_without_any_field_or_root_is_empty():
    assert parse_sadp(sadp({"Uuid": "x", "DeviceSN": ""})) == {}
    assert parse_sadp(b"<Other><DeviceSN>SN1</DeviceSN></Other>") == {}


@pytest.mark.parametrize("end, found", [(8192, True), (8193, False)])
def test_sadp_reads_only_the_first_8192_bytes(end, found):
    tag = b"<DeviceSN>SN1</DeviceSN>"
    payload = b"<ProbeMatch>" + b" " * (end - len(b"<ProbeMatch>") - len(tag)) + tag
    assert len(payload) == end
    assert parse_sadp(payload) == ({"protocol": "sadp", "serial": "SN1"} if found else {})


def dhip(info, header: bytes = b"\x20\x00\x00\x00DHIP\x00\x00\x00\x00", key="deviceInfo") -> bytes:
    return header + json.dumps({"method": "client.notifyDevInfo", "params": {key: info}}).encode() + b"\0\0"


def test_dhip_reply():
    payload = dhip({"DeviceType": "IPC-HFW1230S", "SerialNo": "4G0123", "Version": "2.800", "Vendor": "Dahua",
                    "Other": "x"})
    assert parse_dhip(payload) == {"protocol": "dhip", "model": "IPC-HFW1230S", "serial": "4G0123",
                                   "firmware": "2.800", "vendor": "Dahua"}


def test_dhip_keeps_only_non_empty_strings():
    assert parse_dhip(dhip({"DeviceType": "", "SerialNo": 5, "Version": "v1"})) == {"protocol": "dhip",
                                                                                     "firmware": "v1"}
    assert parse_dhip(dhip({"DeviceType": "", "SerialNo": None})) == {}


def test_dhip_needs_its_magic_or_device_info():
    escaped = b'{"params": {"device\\u0049nfo": {"DeviceType": "M"}}}'
    assert parse_dhip(b"\x20\x00\x00\x00DHIP\x00\x00\x00\x00" + escaped) == {"protocol": "dhip", "model": "M"}
    assert parse_dhip(b"DHIP" + escaped) == {"protocol": "dhip", "model": "M"}
    assert parse_dhip(b"\x20\x00\x00\x00HIPD\x00" + escaped) == {}
    assert parse_dhip(dhip({"DeviceType": "M"}, header=b"")) == {"protocol": "dhip", "model": "M"}
    assert parse_dhip(b"DHIP no json here") == {}


@pytest.mark.parametrize("doc", [
    b'{"params": []}', b'{"params": {"deviceInfo": []}}', b"[1, 2]", b'{"params": {"deviceInfo": "x"}}',
    b'{"deviceInfo": {"DeviceType": "M"}}', b'{"params": {"deviceInfo": {"DeviceType": "M"}'])
def test_dhip_of_other_shapes_is_empty(doc):
    assert parse_dhip(b"DHIP" + doc) == {}


def test_dhip_with_anything_but_nul_bytes_after_the_document_is_not_parsed():
    doc = b'DHIP{"params": {"deviceInfo": {"DeviceType": "M"}}}'
    assert parse_dhip(doc + b"\0\0\0") == {"protocol": "dhip", "model": "M"}
    assert parse_dhip(doc + b"X") == {}


@pytest.mark.parametrize("brackets, parsed", [(256, True), (257, False)])
def test_dhip_of_more_than_256_brackets_is_not_parsed(brackets, parsed):
    doc = json.dumps({"params": {"deviceInfo": {"DeviceType": "M", "x": [[]] * (brackets - 4)}}}).encode()
    assert doc.count(b"{") + doc.count(b"[") == brackets
    assert parse_dhip(b"DHIP" + doc) == ({"protocol": "dhip", "model": "M"} if parsed else {})


def test_dhip_text_that_is_not_utf8_is_kept_replaced():
    assert parse_dhip(b'DHIP{"params": {"deviceInfo": {"DeviceType": "M\xff"}}}') == {"protocol": "dhip",
                                                                                    "model": "M\ufffd"}


# ---- ParserGuard --------------------------------------------------------------------------------------------------
def test_parser_guard_counts_each_parser_and_reports_its_first_failure_only():
    reports: list[str] = []
    guard = ParserGuard(reports.append)

    def parse_broken(payload: bytes):
        raise KeyError(payload)

    assert guard.run(parse_dns, dns_query(1, "a.example"), None).qname == "a.example"
    assert guard.run(parse_broken, b"abc", "failed") == "failed"
    assert guard.run(parse_broken, b"abcd", {}) == {}
    assert guard.errors == {"broken": 2}
    assert reports == ["broken failed on a 3-byte payload (KeyError); such packets are skipped and counted in "
                       "camwatch_dissect_errors_total"]


def test_parser_guard_counts_under_a_label_when_given_one():
    guard = ParserGuard()
    assert guard.run(lambda p: p[10], b"", "failed", label="http_host") == "failed"
    assert guard.errors == {"http_host": 1}


def test_parser_guard_without_a_reporter_still_counts():
    guard = ParserGuard()
    assert guard.run(lambda p: p[10], b"", -1) == -1
    assert guard.run(functools.partial(parse_dns), b"", -1) is None
    assert guard.run(functools.partial(lambda p: p[10]), b"", -2) == -2    # no __name__: counted as "parser"
    assert guard.errors == {"<lambda>": 1, "parser": 1}
