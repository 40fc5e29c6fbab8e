"""sensor/_tpacket.c's ring reader on rings built here as the kernel lays them out (struct tpacket_block_desc,
struct tpacket3_hdr), no socket needed: the records it writes, VLAN tags put back, blocks handed back to the kernel
and the cursor across calls; and the tpacket engine's helpers (pcap header, ring geometry, filter compilation,
dropping capabilities in a child process)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import REPO

from sensor.capture import CaptureReader
from sensor.decode import decode
from sensor.errors import CamwatchError

tpacket = pytest.importorskip("sensor.tpacket")
if tpacket.extension is None:
    pytest.skip("sensor._tpacket not built", allow_module_level=True)
read = tpacket.extension.read

BLOCK_DESC = 48            # sizeof(struct tpacket_block_desc)
FRAME_HDR = 48             # sizeof(struct tpacket3_hdr)
MAC_AT = 80                # where the kernel puts the frame after its header (TPACKET_ALIGN + sockaddr_ll, rounded)
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 1 << 4, 1 << 6


@dataclass
class Frame:
    data: bytes
    sec: int = 1_700_000_000
    nsec: int = 123_456_789
    wirelen: int | None = None
    tci: int = 0
    tpid: int = 0
    status: int = TP_STATUS_USER


def eth(payload: bytes = b"", ethertype: int = 0x0800) -> bytes:
    return bytes.fromhex("020000000001" "020000000002") + struct.pack("!H", ethertype) + payload


def ipv4_udp(sport: int = 5000, dport: int = 53, payload: bytes = b"x" * 20) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 20, 0, 14]),
                     bytes([203, 0, 113, 50]))
    return eth(ip + udp)


def block(frames: list[Frame], size: int, status: int = TP_STATUS_USER) -> bytearray:
    """One ring block as the kernel retires it."""
    out = bytearray(size)
    off = BLOCK_DESC
    for i, f in enumerate(frames):
        step = (MAC_AT + len(f.data) + 15) & ~15
        nxt = step if i + 1 < len(frames) else 0
        vlan = TP_STATUS_VLAN_VALID if f.tci else 0
        vlan |= TP_STATUS_VLAN_TPID_VALID if f.tpid else 0
        wirelen = len(f.data) if f.wirelen is None else f.wirelen
        struct.pack_into("=IIIIIIHHIIHH8x", out, off, nxt, f.sec, f.nsec, len(f.data), wirelen,
                         f.status | vlan, MAC_AT, MAC_AT + 14, 0, f.tci, f.tpid, 0)
        out[off + MAC_AT:off + MAC_AT + len(f.data)] = f.data
        off += step
    assert off <= size
    struct.pack_into("=IIIIII", out, 0, 1, 0, status, len(frames), BLOCK_DESC if frames else 0, off)
    return out


def ring(blocks: list[bytearray]) -> bytearray:
    return bytearray(b"".join(blocks))


def status(r: bytearray, size: int, i: int) -> int:
    return struct.unpack_from("=I", r, i * size + 8)[0]


def records(stream: bytes) -> list[tuple]:
    """(seconds, caplen, wirelen, bytes) of each record, read back by camwatch's own reader."""
    data = tpacket.pcap_header(1) + stream
    out = []
    with CaptureReader(iter([data, b""]).__next__, "test") as reader:
        for batch in reader:
            for i in range(len(batch)):
                start = int(batch.offsets[i])
                out.append((float(batch.ts[i]), int(batch.caplen[i]), int(batch.wirelen[i]),
                            bytes(batch.data[start:start + int(batch.caplen[i])])))
    return out


def read_all(r: bytearray, size: int, cursor: bytearray, out_bytes: int = 1 << 20) -> tuple[bytes, int]:
    out = bytearray(out_bytes)
    got = read(-1, r, size, cursor, out, 0.0, 0.0)
    if got is None:
        return b"", 0
    written, packets = got
    return bytes(out[:written]), packets


def cursor_fields(cursor: bytearray) -> tuple[int, ...]:
    return struct.unpack("=4Q", cursor)


def test_frames_become_pcap_records_and_blocks_go_back_to_the_kernel():
    size = 4096
    frames = [Frame(ipv4_udp(dport=53)), Frame(ipv4_udp(dport=443), sec=1_700_000_001, nsec=5, wirelen=1500)]
    r = ring([block(frames, size), block([Frame(eth(b"\x00" * 46, 0x0806))], size), block([], size, TP_STATUS_KERNEL)])
    cursor = bytearray(32)
    stream, packets = read_all(r, size, cursor)
    assert packets == 3
    got = records(stream)
    assert [(caplen, wirelen, data) for _ts, caplen, wirelen, data in got] == [
        (len(frames[0].data), len(frames[0].data), frames[0].data),
        (len(frames[1].data), 1500, frames[1].data),
        (60, 60, eth(b"\x00" * 46, 0x0806)),
    ]
    assert got[0][0] == pytest.approx(1_700_000_000.123456789)
    assert got[1][0] == pytest.approx(1_700_000_001.000000005)
    # Both retired blocks are the kernel's again; the reader waits at the third, which the kernel still holds.
    assert [status(r, size, i) for i in range(3)] == [TP_STATUS_KERNEL] * 3
    assert cursor_fields(cursor) == (2, 0, 0, 0)
    assert read_all(r, size, cursor) == (b"", 0)


def test_the_cursor_wraps_around_the_ring():
    size = 4096
    r = ring([block([], size, TP_STATUS_KERNEL), block([Frame(ipv4_udp())], size)])
    cursor = bytearray(struct.pack("=4Q", 1, 0, 0, 0))
    stream, packets = read_all(r, size, cursor)
    assert packets == 1 and cursor_fields(cursor)[0] == 0
    r[0:size] = block([Frame(ipv4_udp(dport=80))], size)
    stream, packets = read_all(r, size, cursor)
    assert packets == 1 and records(stream)[0][3] == ipv4_udp(dport=80)


def test_a_full_buffer_leaves_the_block_with_camwatch_and_the_next_read_goes_on_from_there():
    size = 8192
    frames = [Frame(ipv4_udp(sport=1000 + i)) for i in range(10)]
    r = ring([block(frames, size), block([], size, TP_STATUS_KERNEL)])
    record = 16 + len(frames[0].data)
    cursor = bytearray(32)
    parts = []
    while True:
        stream, packets = read_all(r, size, cursor, out_bytes=3 * record + 5)
        if not packets:
            break
        assert packets <= 3
        # Until its last frame is taken, the block stays out of the kernel's reach.
        assert status(r, size, 0) == (TP_STATUS_KERNEL if sum(len(p) for p in parts) + len(stream) == 10 * record
                                      else TP_STATUS_USER)
        parts.append(stream)
    assert [len(p) // record for p in parts] == [3, 3, 3, 1]
    assert [data for *_, data in records(b"".join(parts))] == [f.data for f in frames]


@pytest.mark.parametrize(("tpid_field", "tpid"), [(0, 0x8100), (0x88A8, 0x88A8)])
def test_a_vlan_tag_the_kernel_took_off_goes_back_between_the_addresses(tpid_field, tpid):
    size = 4096
    untagged = ipv4_udp(dport=554)
    r = ring([block([Frame(untagged, tci=0x2064, tpid=tpid_field)], size)])
    stream, _ = read_all(r, size, bytearray(32))
    [(_ts, caplen, wirelen, data)] = records(stream)
    assert data == untagged[:12] + struct.pack("!HH", tpid, 0x2064) + untagged[12:]
    assert caplen == wirelen == len(untagged) + 4
    header = tpacket.pcap_header(1)
    with CaptureReader(iter([header + stream, b""]).__next__, "test") as reader:
        batch = next(iter(reader))
        decoded = decode(batch)
    # The decoder reads the tag from the bytes: VLAN 100 (priority bits aside), then the UDP flow as before.
    assert int(decoded.vlan[0]) == 100 and int(decoded.dport[0]) == 554


def test_a_block_the_kernel_still_holds_gives_nothing():
    size = 4096
    r = ring([block([Frame(ipv4_udp())], size, TP_STATUS_KERNEL)])
    cursor = bytearray(32)
    assert read(-1, r, size, cursor, bytearray(1 << 16), 0.0, 0.0) is None
    assert cursor_fields(cursor) == (0, 0, 0, 0)


def test_frame_headers_pointing_outside_the_block_are_counted_not_followed():
    size = 4096
    good = block([Frame(ipv4_udp())], size)
    past_end = block([Frame(ipv4_udp()), Frame(ipv4_udp())], size)
    struct.pack_into("=I", past_end, BLOCK_DESC + 12, 10_000)   # tp_snaplen beyond the block
    chain_ends = block([Frame(ipv4_udp())], size)
    struct.pack_into("=I", chain_ends, 12, 3)                   # num_pkts 3, but tp_next_offset 0
    r = ring([past_end, chain_ends, good])
    cursor = bytearray(32)
    stream, packets = read_all(r, size, cursor)
    assert packets == 2   # the one intact frame of chain_ends, and good's
    assert cursor_fields(cursor)[3] == 2
    assert [status(r, size, i) for i in range(3)] == [TP_STATUS_KERNEL] * 3
    assert len(records(stream)) == 2


def test_inconsistent_arguments_are_refused():
    r = ring([block([], 4096)])
    with pytest.raises(ValueError):
        read(-1, r, 4096, bytearray(24), bytearray(100), 0.0, 0.0)       # cursor of the wrong size
    with pytest.raises(ValueError):
        read(-1, r, 3000, bytearray(32), bytearray(100), 0.0, 0.0)       # ring not a whole number of blocks
    with pytest.raises(ValueError):
        read(-1, r, 4096, bytearray(struct.pack("=4Q", 1, 0, 0, 0)), bytearray(100), 0.0, 0.0)   # no block 1
    big = ring([block([Frame(ipv4_udp(payload=b"y" * 1000))], 4096)])
    with pytest.raises(ValueError, match="larger than the whole buffer"):
        read(-1, big, 4096, bytearray(32), bytearray(100), 0.0, 0.0)


def test_ring_geometry_keeps_blocks_of_a_mib_and_at_least_eight():
    assert tpacket.ring_geometry(1024) == (1 << 20, 1024)
    assert tpacket.ring_geometry(64) == (1 << 20, 64)
    assert tpacket.ring_geometry(4) == (512 << 10, 8)


def test_filters_compile_through_libpcap_and_bad_ones_say_why():
    from sensor.bpf import compile_filter
    try:
        program = compile_filter("udp port 53")
    except CamwatchError as exc:
        pytest.skip(str(exc))
    assert len(program) % 8 == 0 and len(program) > 8
    # The last instructions return: accept (the snap length) and reject (0).
    assert struct.unpack_from("=HBBI", program, len(program) - 8) == (0x06, 0, 0, 0)
    with pytest.raises(CamwatchError, match="syntax error"):
        compile_filter("udp port")


def test_interfaces_the_engine_cannot_read_are_refused():
    with pytest.raises(CamwatchError, match="dumpcap engine"):
        tpacket.TpacketCapture("any", buffer_mib=64)
    with pytest.raises(CamwatchError, match="no such network interface"):
        tpacket.TpacketCapture("cwtp-none0", buffer_mib=64)


_CHILD = """
import json, threading, time
import numpy   # its BLAS pool: threads that already run when capabilities are dropped
from sensor.privilege import drop_privileges, thread_capabilities
stop = threading.Event()
worker = threading.Thread(target=stop.wait)
worker.start()
before = thread_capabilities()
drop_privileges()
after = thread_capabilities()
stop.set()
worker.join()
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({"before": before, "after": after, "nnp": status["NoNewPrivs"].strip(),
                  "bnd": status["CapBnd"].strip()}))
"""


def test_every_thread_drops_every_capability_in_a_child_process():
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    if not any(sets["CapEff"] for sets in result["before"].values()):
        pytest.skip("runs without capabilities: nothing to drop")
    assert len(result["after"]) >= 2   # the main thread and at least the waiting one
    for sets in result["after"].values():
        assert sets == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}
    assert result["nnp"] == "1"


_CHILD_WITH_A_DEAF_THREAD = """
import signal, threading
from sensor.errors import CamwatchError
from sensor.privilege import drop_privileges
ready, stop = threading.Event(), threading.Event()
def deaf():
    # Real-time signals blocked: this thread never runs the handler that would drop its capabilities.
    signal.pthread_sigmask(signal.SIG_BLOCK, range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    ready.set()
    stop.wait()
worker = threading.Thread(target=deaf)
worker.start()
ready.wait()
try:
    drop_privileges(wait=0.2)
except CamwatchError as exc:
    print("refused:", exc)
stop.set()
worker.join()
"""


def test_a_thread_that_keeps_its_capabilities_stops_the_capture_in_a_child_process():
    out = subprocess.run([sys.executable, "-c", _CHILD_WITH_A_DEAF_THREAD], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    if not out.stdout:
        pytest.skip("runs without capabilities: nothing to drop, so nothing to refuse")
    assert out.stdout.startswith("refused: could not drop capabilities in 1 thread(s) (thread "), out.stdout
    assert "CapEff 000" in out.stdout
