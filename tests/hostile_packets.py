"""One frame, or a few, of every class of hostile input the camera VLAN can send: what the hostile-input tests
(replay and live) throw at the sensor. Built with struct, never stored as blobs.

Each class is a function returning frames; `every_class` puts them together behind a real camera's ordinary
traffic, which must still be counted and alerted on whatever came before it.
"""

from __future__ import annotations

import ipaddress
import struct

from packets import PcapWriter, ethernet, ip, ipv4, ipv6, mac, tcp, tls_client_hello, udp

HIKVISION_MAC = mac("18:68:cb:00:00:14")
DAHUA_MAC = mac("3c:ef:8c:00:00:15")
GATEWAY_MAC = mac("00:11:32:00:00:01")
BROADCAST = b"\xff" * 6
CAMERA = "10.20.0.14"
CAMERA6 = "fd00:20::14"
PUBLIC = "203.0.113.50"
PUBLIC6 = "2001:db8::50"


def _frame(src: str, dst: str, proto: int, l4: bytes, src_mac: bytes = HIKVISION_MAC, dst_mac: bytes = GATEWAY_MAC,
           vlans: tuple = ()) -> bytes:
    ethertype = 0x86DD if ":" in src else 0x0800
    return ethernet(dst_mac, src_mac, ethertype, ip(src, dst, proto, l4), vlans)


def dhip_documents() -> list[bytes]:
    """Dahua discovery (UDP 37810 -> 5050) whose JSON is of every wrong shape, and nested past any recursion limit."""
    docs = [b'{"method": "client.notifyDevInfo", "params": []}', b'{"params": "deviceInfo"}',
            b'{"params": {"deviceInfo": ["x"]}}', b"[" * 8_000 + b"]" * 8_000,
            b'{"params": {"deviceInfo": ' + b'{"a":' * 3_000 + b"1" + b"}" * 3_000 + b"}}", b"\xff\xfe{"]
    header = b"\x20\x00\x00\x00DHIP" + bytes(24)
    return [_frame(CAMERA, "255.255.255.255", 17, udp(CAMERA, "255.255.255.255", 37810, 5050, header + d),
                   src_mac=DAHUA_MAC, dst_mac=BROADCAST) for d in docs]


def _ext(next_header: int, body_len: int) -> bytes:
    """An IPv6 extension header of (body_len + 2) bytes, a multiple of 8, padded with PadN."""
    total = body_len + 2
    assert total % 8 == 0
    pad, left = b"", body_len
    while left:
        if left == 1:
            pad, left = pad + b"\0", 0   # Pad1
        else:
            n = min(left - 2, 255)
            pad, left = pad + bytes([1, n]) + bytes(n), left - 2 - n
    return bytes([next_header, total // 8 - 1]) + pad


def deep_headers() -> list[bytes]:
    """Bulk TLS-port segments from a Hikvision camera to the Internet behind legal but long header chains:
    destination options of 32, 256 and 2,048 bytes, hop-by-hop then destination options then routing, and IPv4
    with 40 bytes of options behind four 802.1Q tags."""
    frames = []
    segment = tcp(CAMERA6, PUBLIC6, 40001, 443, 1, 0, "A", b"\x17\x03\x03" + bytes(1197))
    for size in (32, 256, 2048):
        chain = _ext(6, size - 2)
        frames.append(ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x86DD, ipv6(CAMERA6, PUBLIC6, 60, chain + segment)))
    chain = _ext(60, 6) + _ext(43, 14) + _ext(6, 22)
    frames.append(ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x86DD, ipv6(CAMERA6, PUBLIC6, 0, chain + segment)))
    segment4 = tcp(CAMERA, PUBLIC, 40002, 443, 1, 0, "A", b"\x17\x03\x03" + bytes(1197))
    options = b"\x01" * 39 + b"\x00"   # NOPs, then end of options: IHL 15
    plain = ipv4(CAMERA, PUBLIC, 6, segment4)
    header = bytes([0x4F]) + plain[1:2] + struct.pack("!H", 60 + len(segment4)) + plain[4:20] + options
    tags = tuple((0x8100, 20 + k) for k in range(4))
    frames.append(ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0800, header + segment4, tags))
    return frames


def lying_lengths() -> list[bytes]:
    """Headers that claim more than the frame holds, or less than a header needs."""
    good = ipv4(CAMERA, PUBLIC, 6, tcp(CAMERA, PUBLIC, 40003, 443, 1, 0, "A", b"x" * 100))
    frames = [
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0800, good[:30]),                       # cut inside TCP
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0800, bytes([0x43]) + good[1:]),        # IHL 3
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0800, good[:2] + b"\xff\xff" + good[4:]),   # total length 65535
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0800, good[:32] + b"\xf0" + good[33:]),  # TCP offset 60
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x86DD, ipv6(CAMERA6, PUBLIC6, 0, _ext(0, 6) * 40)),  # endless HBH
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x8100, b""),                             # a tag and nothing more
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x88B5, bytes(range(256)) * 4),           # unknown ethertype
        ethernet(GATEWAY_MAC, HIKVISION_MAC, 0x0806, b"\xff" * 10),                    # short ARP
    ]
    return frames


def hostile_application_payloads() -> list[bytes]:
    """DNS, TLS, HTTP, RTSP, SSDP, ONVIF and SADP payloads built to hurt a parser."""
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 255, 0, 0)
    dns_loop = header + b"\xc0\x0c" + struct.pack("!HH", 1, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) \
        + b"\xc0\x1c"
    dns_long = header + b"".join(b"\x3f" + b"a" * 63 for _ in range(8)) + b"\0"
    hello = bytearray(tls_client_hello("camera.example.com"))
    hello[43] = 0xFF   # session id length past the end
    escape = "\x1b[31m<script>alert(1)</script>\r\nX-Injected: 1"
    frames = [
        _frame(CAMERA, "10.20.0.1", 17, udp(CAMERA, "10.20.0.1", 40010, 53, dns_loop)),
        _frame("10.20.0.1", CAMERA, 17, udp("10.20.0.1", CAMERA, 53, 40010, dns_long), src_mac=GATEWAY_MAC,
               dst_mac=HIKVISION_MAC),
        _frame(CAMERA, PUBLIC, 6, tcp(CAMERA, PUBLIC, 40011, 443, 1, 0, "PA", bytes(hello))),
        _frame(CAMERA, PUBLIC, 6, tcp(CAMERA, PUBLIC, 40012, 80, 1, 0, "PA", b"GET / HTTP/1.1\r\nHost: "
                                      + b"h" * 1400 + b"\r\n\r\n")),
        _frame(CAMERA, "10.20.0.2", 6, tcp(CAMERA, "10.20.0.2", 554, 40013, 1, 1, "PA", (
            f"RTSP/1.0 200 OK\r\nServer: {escape}\r\nCSeq: 1\r\n\r\n").encode())),
        _frame(CAMERA, "239.255.255.250", 17, udp(CAMERA, "239.255.255.250", 40014, 1900,
                                                    b"M-SEARCH * HTTP/1.1\r\nST: urn:schemas-upnp-org:device:"
                                                    b"InternetGatewayDevice:1\r\n" + b"X: " + b"\xff" * 1200
                                                    + b"\r\n\r\n"), dst_mac=BROADCAST),
        _frame(CAMERA, "239.255.255.250", 17, udp(CAMERA, "239.255.255.250", 3702, 3702,
                                                    b"<ProbeMatch><Scopes>" + b"onvif://www.onvif.org/hardware/"
                                                    + escape.encode() * 40 + b"</Scopes></ProbeMatch>"),
               dst_mac=BROADCAST),
        _frame(CAMERA, "239.255.255.250", 17, udp(CAMERA, "239.255.255.250", 37020, 37020,
                                                    b"<ProbeMatch>" + b"<DeviceDescription>" * 500 + b"<x>"
                                                    + escape.encode() + b"</x>"), dst_mac=BROADCAST),
    ]
    return frames


def forged_sources(count: int) -> list[bytes]:
    """`count` forged camera-side sources, each a SYN to its own Internet address."""
    out = []
    for i in range(count):
        src = str(ipaddress.IPv4Address(0x0A400001 + i))
        dst = str(ipaddress.IPv4Address(0x0B400001 + i))
        out.append(_frame(src, dst, 6, tcp(src, dst, 1024 + i % 60000, 443, 0, 0, "S")))
    return out


def ordinary_camera(count: int) -> list[bytes]:
    """The real camera's upload to the Internet: what must still be seen after everything above."""
    return [_frame(CAMERA, PUBLIC, 6, tcp(CAMERA, PUBLIC, 40100, 443, i * 1200, 0, "A", b"\x17\x03\x03"
                                          + bytes(1197))) for i in range(count)]


def every_class(path, forged: int = 2_000, t0: float = 1_700_000_000.0) -> int:
    """Writes a capture of every hostile class in turn, then the ordinary camera; returns the frame count."""
    frames = (dhip_documents() + deep_headers() + lying_lengths() + hostile_application_payloads()
              + forged_sources(forged) + ordinary_camera(50))
    with PcapWriter(path) as w:
        for i, frame in enumerate(frames):
            w.write(t0 + i * 0.001, frame)
    return len(frames)

