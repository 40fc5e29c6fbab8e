"""pcap and pcapng files built byte by byte with struct, valid or damaged on purpose, for the tests of the capture
reader (unit/test_capture.py) and of damaged captures end to end (hostile/test_capture.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from packets import ethernet, ipv4, mac, tcp, udp

SHB, IDB, SPB, OPB, EPB = 0x0A0D0D0A, 1, 3, 2, 6
HUGE = 0xFFFFFFFC   # a length no block can have
T0 = 1_700_000_000.0
GATEWAY, CAMERA = mac("00:1e:bd:00:00:01"), mac("18:68:cb:00:00:14")


def video_frame(size: int = 1400) -> bytes:
    """A camera's RTP-over-UDP frame of exactly `size` bytes, inside the camera VLAN (no alert)."""
    payload = b"\x80\x60" + bytes(size - 14 - 20 - 8 - 2)
    return ethernet(GATEWAY, CAMERA, 0x0800, ipv4("10.20.0.14", "10.20.0.2", 17,
                                                 udp("10.20.0.14", "10.20.0.2", 50000, 30000, payload)))


# A camera opening a connection to a public address: an egress alert, so a run's alerts file has something in it.
PHONE_HOME = ethernet(GATEWAY, CAMERA, 0x0800, ipv4("10.20.0.14", "203.0.113.50", 6,
                                                    tcp("10.20.0.14", "203.0.113.50", 41000, 443, 1, 0, "S")))


def ng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(order + "II", btype, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)


SHB_BODY = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)


def ng_shb(order: str = "<") -> bytes:
    return ng_block(SHB, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def ng_idb(linktype: int = 1, options: bytes = b"", order: str = "<", snaplen: int = 0) -> bytes:
    return ng_block(IDB, struct.pack(order + "HHI", linktype, 0, snaplen) + options, order)


def ng_epb(frame: bytes, ts: float, iface: int = 0, order: str = "<") -> bytes:
    units = round(ts * 1e6)
    return ng_block(EPB, struct.pack(order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame),
                                     len(frame)) + frame, order)


def ng_opb(frame: bytes, ts: float = 0.0, iface: int = 0, units: int | None = None,
           caplen: int | None = None) -> bytes:
    """units: the time as the block holds it, in place of `ts` (values a float time cannot say); caplen: a captured
    length other than the frame's."""
    units = round(ts * 1e6) if units is None else units
    return ng_block(OPB, struct.pack("<HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF,
                                     len(frame) if caplen is None else caplen, len(frame)) + frame)


def ng_spb(frame: bytes, wirelen: int | None = None) -> bytes:
    return ng_block(SPB, struct.pack("<I", len(frame) if wirelen is None else wirelen) + frame)


def pcapng(packets: int, frame: bytes | None = None) -> bytes:
    """A valid pcapng: the phone-home SYN, then `packets - 1` video frames."""
    frame = frame or video_frame(200)
    return (ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0)
            + b"".join(ng_epb(frame, T0 + (i + 1) / 1000) for i in range(packets - 1)))


def pcap_header() -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def pcap_record(frame: bytes, ts: float) -> bytes:
    return struct.pack("<IIII", int(ts), round((ts % 1) * 1e6), len(frame), len(frame)) + frame


def pcap(packets: int, frame: bytes | None = None) -> bytes:
    frame = frame or video_frame(200)
    return (pcap_header() + pcap_record(PHONE_HOME, T0)
            + b"".join(pcap_record(frame, T0 + (i + 1) / 1000) for i in range(packets - 1)))


def pcapng_up_to(offset: int) -> tuple[bytes, int]:
    """A valid pcapng of exactly `offset` bytes (a multiple of 4), and its packet count."""
    head = ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0)
    big = ng_epb(video_frame(1400), T0)
    count = (offset - len(head) - 2000) // len(big)
    out = [head] + [ng_epb(video_frame(1400), T0 + (i + 1) / 1000) for i in range(count)]
    filler = offset - len(head) - count * len(big) - 32   # the last block's frame: 32 bytes of block around it
    out.append(ng_epb(video_frame(filler), T0 + 10))
    data = b"".join(out)
    assert len(data) == offset
    return data, count + 2


def pcap_up_to(offset: int) -> tuple[bytes, int]:
    head = pcap_header() + pcap_record(PHONE_HOME, T0)
    count = (offset - len(head) - 2000) // (16 + 1400)
    body = b"".join(pcap_record(video_frame(1400), T0 + (i + 1) / 1000) for i in range(count))
    filler = offset - len(head) - len(body) - 16
    data = head + body + pcap_record(video_frame(filler), T0 + 10)
    assert len(data) == offset
    return data, count + 2


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- blocks too short for their fields ------------------------------------------------------------------------
MIN_BLOCK = {"SHB": 28, "IDB": 20, "EPB": 32, "OPB": 32, "SPB": 16}


TYPES = {"SHB": SHB, "IDB": IDB, "EPB": EPB, "OPB": OPB, "SPB": SPB}


def short_block(name: str, length: int) -> bytes:
    """A block of `length` bytes whose body is what fits of a real one (a valid section header's fields, zeros
    for the others)."""
    body = (SHB_BODY if name == "SHB" else bytes(64))[:length - 12]
    return struct.pack("<II", TYPES[name], length) + body + struct.pack("<I", length)
