"""Issues 3, 4, 5 and 10 (part): damaged captures, many files, and dumpcap outliving camwatch.

A damaged file ends the way the README's exit codes say: exit 1, one line naming the file and the byte offset,
everything before the fault processed and every output written. Lengths in a file are checked against what can
exist before they size anything, so a block claiming 4 GiB costs what an ordinary file costs. Files are closed as
soon as they are read, and memory does not grow with the number of files.

Every capture here is built with struct in the test. The live tests capture on loopback or inside network
namespaces made for them, and send no traffic anywhere.
"""

from __future__ import annotations

import collections
import gc
import io
import itertools
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import metric_values, value

from packets import ethernet, ipv4, mac, tcp, udp
from sensor import capture
from sensor import live as live_capture
from sensor.capture import CHUNK_BYTES, CaptureReader, open_file
from sensor.errors import CaptureError
from sensor.live import LiveCapture

SHB, IDB, SPB, OPB, EPB = 0x0A0D0D0A, 1, 3, 2, 6
T0 = 1_700_000_000.0
GATEWAY, CAMERA = mac("00:1e:bd:00:00:01"), mac("18:68:cb:00:00:14")


# ---- captures, built here ------------------------------------------------------------------------------------
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


def ng_idb(linktype: int = 1, options: bytes = b"", order: str = "<") -> bytes:
    return ng_block(IDB, struct.pack(order + "HHI", linktype, 0, 0) + options, order)


def ng_epb(frame: bytes, ts: float, iface: int = 0, order: str = "<") -> bytes:
    units = round(ts * 1e6)
    return ng_block(EPB, struct.pack(order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame),
                                     len(frame)) + frame, order)


def ng_opb(frame: bytes, ts: float) -> bytes:
    units = round(ts * 1e6)
    return ng_block(OPB, struct.pack("<HHIIII", 0, 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
                    + frame)


def ng_spb(frame: bytes) -> bytes:
    return ng_block(SPB, struct.pack("<I", len(frame)) + frame)


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


# ---- running camwatch as a user does, measured ----------------------------------------------------------------
# The child reports its own peak (VmHWM) into a file, keeping stderr for what camwatch says (see test_flood.py on why
# not getrusage). Reading /proc at the end also needs a free descriptor: with files leaking it would not get one.
MEASURED = """
import os, re, sys
from sensor.cli import main
try:
    code = main(sys.argv[1:])
finally:
    status = open("/proc/self/status").read()
    with open(os.environ["CAMWATCH_TEST_PEAK"], "w") as fh:
        fh.write(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
sys.exit(code)
"""
ADDRESS_SPACE_LIMIT = 1536 << 20   # numpy and friends need a few hundred MiB of address space; 8 GiB is out
_runs = itertools.count()


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, out: Path, peak_kib: int):
        self.proc, self.out, self.returncode, self.stderr = proc, out, proc.returncode, proc.stderr
        self.peak_mib = peak_kib / 1024
        self.metrics = metric_values((out / "metrics.prom").read_text())
        self.alerts = (out / "alerts.jsonl").read_text().splitlines()

    @property
    def packets(self) -> int:
        return int(value(self.metrics, "camwatch_packets_total"))


def camwatch(tmp_path: Path, command: str, *args, address_space: int | None = ADDRESS_SPACE_LIMIT,
             open_files: int | None = None) -> Run:
    """`camwatch replay FILES` (or another command taking files), with --metrics-out and --alerts into a fresh
    directory, under resource limits."""
    out = tmp_path / f"run{next(_runs)}"
    out.mkdir()

    def limits():
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if open_files:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    outputs = ["--metrics-out", str(out / "metrics.prom"), "--alerts", str(out / "alerts.jsonl"), "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", CAMWATCH_TEST_PEAK=str(out / "peak"))
    proc = subprocess.run([sys.executable, "-c", MEASURED, command, *map(str, args), *outputs], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=limits)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc, out, int((out / "peak").read_text()))


def replay(tmp_path: Path, *files, **limits) -> Run:
    return camwatch(tmp_path, "replay", *files, **limits)


def assert_damaged(run: Run, path: Path, offset: int, packets: int, needle: str | None = None) -> str:
    """Exit 1, one clean line naming the file and the byte offset, and the packets before the fault counted."""
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith("camwatch: error: ") and str(path) in line and f"at byte {offset}:" in line, line
    if needle:
        assert needle in line, line
    assert run.packets == packets, line
    return line


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- issue 3: lengths that cannot exist -----------------------------------------------------------------------
HUGE = 0xFFFFFFFC


def test_block_claiming_4_gib_at_the_end_is_a_clean_error_at_no_cost(tmp_path):
    good = pcapng(500)
    path = write(tmp_path, "claims-4gib.pcapng", good + struct.pack("<II", EPB, HUGE))
    run = replay(tmp_path, path)
    assert_damaged(run, path, len(good), 500, "absurd pcapng block length")
    assert len(run.alerts) >= 1   # the phone-home before the fault alerted, and the alerts file was written
    assert run.peak_mib < 200, run.peak_mib


@pytest.mark.parametrize("inside", [4, 8], ids=["type-only", "type-and-length"])
@pytest.mark.parametrize("kind", ["pcapng", "pcap"])
def test_absurd_length_straddling_the_read_boundary(tmp_path, kind, inside):
    """The damaged header starts `inside` bytes before the end of the first 8 MiB read, good packets follow it.
    It costs no more memory than the same file without the damage."""
    if kind == "pcapng":
        good, packets = pcapng_up_to(CHUNK_BYTES - inside)
        bad_header = struct.pack("<II", EPB, HUGE) + bytes(4)
        after = b"".join(ng_epb(video_frame(1400), T0 + 20 + i) for i in range(50))
    else:
        good, packets = pcap_up_to(CHUNK_BYTES - inside)
        bad_header = struct.pack("<IIII", int(T0) + 20, 0, 0xFFFFFFFF, 0xFFFFFFFF)
        after = b"".join(pcap_record(video_frame(1400), T0 + 20 + i) for i in range(50))
    path = write(tmp_path, f"straddle.{kind}", good + bad_header + after)
    ordinary = write(tmp_path, f"ordinary.{kind}", good + after)
    run = replay(tmp_path, path)
    assert_damaged(run, path, len(good), packets, "absurd")
    baseline = replay(tmp_path, ordinary)
    assert run.peak_mib < baseline.peak_mib + 16, (run.peak_mib, baseline.peak_mib)


def test_pcap_record_claiming_4_gib(tmp_path):
    good = pcap(300)
    path = write(tmp_path, "caplen.pcap", good + struct.pack("<IIII", int(T0) + 5, 0, 0xFFFFFFFF, 0xFFFFFFFF)
                 + pcap_record(video_frame(), T0 + 6))
    run = replay(tmp_path, path)
    assert_damaged(run, path, len(good), 300, "absurd record length 4294967295")
    assert len(run.alerts) >= 1
    assert run.peak_mib < 200, run.peak_mib


@pytest.mark.parametrize("cut", [4, 10, 23])
def test_truncated_pcap_file_header(tmp_path, cut):
    path = write(tmp_path, "header.pcap", pcap_header()[:cut])
    assert_damaged(replay(tmp_path, path), path, 0, 0, "truncated pcap file header")


def test_truncated_pcapng_section_header(tmp_path):
    path = write(tmp_path, "header.pcapng", ng_shb()[:10])
    assert_damaged(replay(tmp_path, path), path, 0, 0, "truncated pcapng block")


# ---- issue 4: blocks too short for their fields ---------------------------------------------------------------
MIN_BLOCK = {"SHB": 28, "IDB": 20, "EPB": 32, "OPB": 32, "SPB": 16}
TYPES = {"SHB": SHB, "IDB": IDB, "EPB": EPB, "OPB": OPB, "SPB": SPB}


def short_block(name: str, length: int) -> bytes:
    """A block of `length` bytes whose body is what fits of a real one (a valid section header's fields, zeros
    for the others)."""
    body = (SHB_BODY if name == "SHB" else bytes(64))[:length - 12]
    return struct.pack("<II", TYPES[name], length) + body + struct.pack("<I", length)


@pytest.mark.parametrize("length", [12, 16, 20, 24, 28])
@pytest.mark.parametrize("name", ["EPB", "IDB", "SPB", "OPB", "SHB"])
def test_short_block_at_the_end(tmp_path, name, length):
    good = pcapng(200)
    path = write(tmp_path, f"short-{name}-{length}.pcapng", good + short_block(name, length))
    run = replay(tmp_path, path)
    if length < MIN_BLOCK[name]:
        assert_damaged(run, path, len(good), 200)
        assert "pcapng" in run.stderr
    else:
        # Long enough for its fields, so not damaged: an interface or a section with nothing in it, or a simple
        # packet block with an empty packet.
        assert run.returncode == 0, run.stderr
        assert run.packets == 200 + (name == "SPB")
    assert len(run.alerts) >= 1


def _trailer_mismatch() -> bytes:
    block = bytearray(ng_epb(video_frame(), T0 + 5))
    block[-4:] = struct.pack("<I", len(block) + 4)
    return bytes(block)


DAMAGED_MID_FILE = {
    "short-epb": (short_block("EPB", 28), "enhanced packet block of 28 bytes is too short"),
    "absurd-length": (struct.pack("<II", EPB, HUGE) + bytes(8), "absurd pcapng block length"),
    "length-not-a-multiple-of-4": (struct.pack("<II", EPB, 33) + bytes(25), "absurd pcapng block length 33"),
    "trailer-mismatch": (_trailer_mismatch(), "does not match the copy at the block's end"),
    "idb-option-overruns": (ng_idb(options=struct.pack("<HH", 9, 200) + bytes(8)), "overruns its block"),
    "idb-tsoffset-cut": (ng_idb(options=struct.pack("<HH", 14, 8) + bytes(4)), "overruns its block"),
    "packet-longer-than-block": (ng_block(EPB, struct.pack("<IIIII", 0, 0, 0, 4000, 4000) + bytes(64)),
                                 "exceeds its block"),
    "undeclared-interface": (ng_epb(video_frame(), T0 + 5, iface=7), "undeclared interface 7"),
    "section-bad-byte-order": (struct.pack("<II", SHB, 28) + bytes(20), "bad byte-order magic"),
}


@pytest.mark.parametrize("case", DAMAGED_MID_FILE)
def test_damaged_block_mid_file(tmp_path, case):
    damage, needle = DAMAGED_MID_FILE[case]
    good = pcapng(300)
    after = b"".join(ng_epb(video_frame(), T0 + 10 + i) for i in range(40))
    path = write(tmp_path, f"{case}.pcapng", good + damage + after)
    assert_damaged(replay(tmp_path, path), path, len(good), 300, needle)


def test_files_after_a_damaged_one_are_still_read(tmp_path):
    good = pcapng(100)
    bad = write(tmp_path, "bad.pcapng", good + short_block("EPB", 12))
    fine = write(tmp_path, "fine.pcap", pcap(50))
    run = replay(tmp_path, bad, fine)
    assert_damaged(run, bad, len(good), 150)


# ---- the reader on its own: every damage is a CaptureError, and what came before it is intact -----------------
def _records(batches) -> list[tuple]:
    out = []
    for b in batches:
        for off, cap, wire, ts, lt in zip(b.offsets.tolist(), b.caplen.tolist(), b.wirelen.tolist(), b.ts.tolist(),
                                         b.linktype.tolist(), strict=True):
            out.append((bytes(b.data[off:off + cap]), wire, ts, lt))
    return out


def read_records(data: bytes, chunk: int | None) -> tuple[list[tuple], CaptureError | None]:
    """Every record the reader hands over, and the error it ended with. `chunk` None: the file path (one reused
    buffer sized from the file); otherwise a stream read `chunk` bytes at a time."""
    if chunk is None:
        source = io.BytesIO(data)
        reader = CaptureReader(None, "mutant", readinto=source.readinto, size_hint=len(data), close=source.close)
    else:
        pieces = iter([data[i:i + chunk] for i in range(0, len(data), chunk)])
        reader = CaptureReader(lambda: next(pieces, b""), "mutant")
    got = []
    try:
        for batch in reader:
            # Copied now: a batch's data is only valid until the next one is asked for.
            got += _records([batch])
    except CaptureError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(data), exc
        assert str(exc).startswith("mutant at byte ")
        return got, exc
    return got, None


def _layout(data: bytes, pcapng: bool) -> tuple[list[int], list[int]]:
    """Start offsets of the blocks (records) of a valid file, and for each record, where its block ends."""
    starts, ends = [], []
    if pcapng:
        pos, order = 0, "<"
        while pos < len(data):
            if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
                order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack_from(order + "II", data, pos)
            starts.append(pos)
            if btype in (EPB, OPB, SPB):
                ends.append(pos + blen)
            pos += blen
    else:
        pos = 24
        starts.append(0)
        while pos < len(data):
            caplen = struct.unpack_from("<I", data, pos + 8)[0]
            starts.append(pos)
            ends.append(pos + 16 + caplen)
            pos += 16 + caplen
    return starts, ends


def _sample_pcapng() -> bytes:
    # Both byte orders, timestamp options, every packet block type, a block the reader skips.
    tsresol = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HHq", 14, 8, 3) + struct.pack("<HH", 0, 0)
    first = (ng_shb() + ng_idb(options=tsresol) + ng_epb(PHONE_HOME, T0) + ng_spb(video_frame(120))
             + ng_block(4, struct.pack("<HH", 0, 0)) + ng_opb(video_frame(90), T0 + 1)
             + ng_epb(video_frame(64), T0 + 2))
    second = (ng_shb(">") + ng_idb(113, order=">") + ng_epb(bytes(16) + b"\x45" + bytes(40), T0 + 3, order=">")
              + ng_epb(video_frame(70), T0 + 4, order=">"))
    return first + second


SAMPLES = {"pcapng": _sample_pcapng(), "pcap": pcap(6, video_frame(80))}
REFERENCE = {kind: read_records(data, None) for kind, data in SAMPLES.items()}
LAYOUT = {kind: _layout(data, kind == "pcapng") for kind, data in SAMPLES.items()}


def test_samples_read_cleanly():
    for kind, (records, error) in REFERENCE.items():
        assert error is None and len(records) == len(LAYOUT[kind][1]) >= 6, kind


LENGTHS = st.sampled_from([0, 1, 11, 12, 16, 20, 24, 28, 31, 32, 0x7FFFFFFF, 0xFFFFFFFC, 0xFFFFFFFF])


@st.composite
def mutants(draw):
    kind = draw(st.sampled_from(sorted(SAMPLES)))
    data = bytearray(SAMPLES[kind])
    starts = LAYOUT[kind][0]
    how = draw(st.sampled_from(["overwrite", "lengths", "truncate", "insert"]))
    if how == "truncate":
        first = draw(st.integers(0, len(data) - 1))
        del data[first:]
    elif how == "insert":
        first = draw(st.integers(0, len(data)))
        data[first:first] = draw(st.binary(min_size=1, max_size=16))
    elif how == "lengths":
        # 32-bit words with the values that hurt most: mostly a block's length (a pcap record's caplen), else any
        # word, such as an option's length
        spots = []
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                spot = draw(st.sampled_from(starts)) + (4 if kind == "pcapng" else 8)
            else:
                spot = draw(st.integers(0, len(data) - 4)) & ~3
            data[spot:spot + 4] = struct.pack(draw(st.sampled_from("<>")) + "I",
                                              draw(LENGTHS | st.integers(0, 2**32 - 1)))
            spots.append(spot)
        first = min(spots)
    else:
        spots = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4))
        for spot in spots:
            data[spot] = draw(st.integers(0, 255))
        first = min(spots)
    return kind, bytes(data), first, how


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutant=mutants(), chunk=st.sampled_from([None, 1, 7, 64, 4096]))
def test_mutated_captures_end_in_a_capture_error_after_an_intact_prefix(mutant, chunk):
    kind, data, first, how = mutant
    original, _ = REFERENCE[kind]
    starts, ends = LAYOUT[kind]
    # Anything but CaptureError (struct.error, IndexError, MemoryError, ...) fails the test by propagating.
    got, error = read_records(data, chunk)
    intact = sum(1 for end in ends if end <= first)   # records wholly before the first changed byte
    assert got[:intact] == original[:intact]
    if how == "truncate":
        assert got == original[:intact]
    if error is not None:
        # No complaint about bytes that were not touched: the fault is at or after the block the change is in.
        assert error.offset >= max(s for s in starts if s <= first)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), chunk=st.sampled_from([None, 3, 64]))
def test_noise_after_a_valid_section_header_is_only_ever_a_capture_error(data, chunk):
    read_records(ng_shb() + ng_idb() + data, chunk)
    read_records(pcap_header() + data, chunk)


def test_the_reader_never_sizes_its_buffer_from_an_unchecked_length():
    grown = []
    original_more = CaptureReader._more

    def spy(self, want=0):
        grown.append(want)
        return original_more(self, want)

    for data in (pcapng(3) + struct.pack("<II", EPB, HUGE), pcapng(3) + struct.pack("<III", SHB, HUGE, 0x1A2B3C4D),
                 pcap(3) + struct.pack("<IIII", 0, 0, HUGE, HUGE)):
        source = io.BytesIO(data)
        reader = CaptureReader(None, "spy", readinto=source.readinto, size_hint=len(data))
        reader._more = spy.__get__(reader)
        with pytest.raises(CaptureError, match="absurd"):
            for _ in reader:
                pass
        assert max(grown) <= capture.MAX_BLOCK_BYTES


# ---- issue 5: files closed as soon as read, memory flat in the number of files --------------------------------
def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("how", ["read to the end", "damaged", "consumer stops early", "never iterated"])
def test_the_reader_closes_its_file(tmp_path, how):
    data = pcapng(50) + (short_block("EPB", 12) if how == "damaged" else b"")
    path = write(tmp_path, "c.pcapng", data)
    before = open_descriptors()
    reader, size = open_file(path)
    assert size == len(data) and open_descriptors() == before + 1
    ref = weakref.ref(reader)
    batch = None
    if how == "never iterated":
        with reader:
            pass
    elif how == "consumer stops early":
        for batch in reader:  # noqa: B007 - the batch is held on purpose until `del batch` below
            break
    else:
        try:
            for batch in reader:  # noqa: B007 - held on purpose, as above
                pass
        except CaptureError:
            assert how == "damaged"
    assert open_descriptors() == before
    assert reader._arena is None   # the read buffer went with the file
    del batch
    # And the reader itself goes as soon as it is dropped, without waiting for the cycle collector (which the CLI
    # runs seldom): nothing it holds points back at it.
    gc.disable()
    try:
        del reader
        assert ref() is None
    finally:
        gc.enable()


def test_a_small_file_gets_a_small_buffer(tmp_path):
    path = write(tmp_path, "small.pcap", pcap(10))
    reader, _ = open_file(path)
    sizes = [len(reader._arena) for _ in reader]
    assert sizes and max(sizes) < 64 << 10


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    data = pcap(20)
    paths = []
    for i in range(300):
        p = d / f"f{i:03}.pcap"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_300_files_in_one_run_with_64_descriptors(tmp_path, small_files):
    run = replay(tmp_path, *small_files, open_files=64)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.packets == 300 * 20


def test_memory_is_flat_in_the_number_of_files(tmp_path, small_files):
    few = replay(tmp_path, *small_files[:30])
    many = replay(tmp_path, *small_files)
    assert few.returncode == many.returncode == 0
    # Before the fix each file kept its 8 MiB buffer: 270 more files were 2 GiB more.
    assert many.peak_mib < few.peak_mib + 16, (few.peak_mib, many.peak_mib)


def test_inventory_shares_the_reader_loop(tmp_path, small_files):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "sensor", "inventory", "--json", *map(str, small_files)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    assert proc.returncode == 0, proc.stderr
    assert "10.20.0.14" in proc.stdout


# ---- issue 10 (part): dumpcap's messages, and dumpcap dying with camwatch -------------------------------------
def _stderr_parser() -> LiveCapture:
    live = LiveCapture.__new__(LiveCapture)   # the stderr handling only, no dumpcap
    live._lock = threading.Lock()
    live._stats, live._captured, live._messages = {}, 0, collections.deque(maxlen=64)

    class Exited:
        @staticmethod
        def poll():
            return 1
    live.proc = Exited()
    return live


# What dumpcap 4.0 wrote when its interface was deleted under it: the running count has no line end, so the
# message starts on the count's line.
INTERFACE_DELETED = (b"Capturing on 'cwhca'\nFile: -\n\rPackets: 2 \rPackets: 6 dumpcap: The network adapter "
                     b"\"cwhca\" is no longer attached; the capture has stopped.\n\rPackets captured: 6\n"
                     b"Packets received/dropped on interface 'cwhca': 6/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) "
                     b"(100.0%)\n")


@pytest.mark.parametrize("piece", [len(INTERFACE_DELETED), 1, 5, 17])
def test_dumpcap_message_after_a_running_count_is_one_clean_line(piece):
    live = _stderr_parser()
    rest = b""
    for i in range(0, len(INTERFACE_DELETED), piece):
        lines, rest = live._split_stderr(rest + INTERFACE_DELETED[i:i + piece])
        for line in lines:
            live._stderr_line(line)
    live._stderr_line(rest.decode().strip())
    assert live.error_message() == 'The network adapter "cwhca" is no longer attached; the capture has stopped.'
    assert live.captured == 6
    assert live.received == 6 and live.dropped == 0


def _live_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: captures with dumpcap inside a network namespace"
    for tool in ("dumpcap", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@pytest.fixture
def netns():
    """A network namespace of the test's own: its loopback carries no one else's traffic, so dumpcap there never
    writes a packet (a write to a pipe nobody reads would end it, and the test would prove nothing)."""
    if _live_unavailable():
        pytest.skip(_live_unavailable())
    name = f"cw-hostile-{os.getpid()}-{next(_runs)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces: {made.stderr.strip()}")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
    yield name
    # Only this test's processes live there (a dumpcap left behind by a failing test, say).
    for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


# Owns a LiveCapture on the namespace's loopback, says which processes it started, then waits to be killed or told
# to stop.
OWNER = """
import sys
from sensor.live import LiveCapture
if sys.argv[1] != "auto":
    LiveCapture.WATCHDOG = sys.argv[1] == "on"
live = LiveCapture("lo", buffer_mib=1)
print(live.proc.pid, live._watchdog.pid if live._watchdog else 0, flush=True)
sys.stdin.readline()
watchdog = live._watchdog
live.stop()
print(watchdog.returncode if watchdog else "none", live.proc.returncode, flush=True)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie: an orphan's zombie waits for init, which in a container may never reap it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Owner:
    """A process owning a LiveCapture, as camwatch does; `prefix` runs it as someone else."""

    def __init__(self, ns: str, watchdog: str, prefix: tuple[str, ...] = (), env_extra: dict | None = None):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
        # `ip netns exec` and setpriv exec what they run: the process started here is the owner itself.
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *prefix, sys.executable, "-c", OWNER, watchdog],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail(f"LiveCapture did not start: {self.proc.stderr.read()}")
        self.dumpcap, self.watchdog = map(int, line.split())
        assert _running(self.dumpcap)

    def kill_and_time_dumpcap(self, limit: float = 5.0) -> float:
        """SIGKILL the owner; seconds until its dumpcap was gone (`limit` if it was still there then)."""
        self.proc.kill()
        self.proc.wait()
        killed = time.monotonic()
        while _running(self.dumpcap) and time.monotonic() - killed < limit:
            time.sleep(0.01)
        return time.monotonic() - killed

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in (self.dumpcap, self.watchdog):
            if pid and _running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def owner(netns):
    started: list[Owner] = []

    def start(*args, **kw) -> Owner:
        started.append(Owner(netns, *args, **kw))
        return started[-1]

    yield start
    for o in started:
        o.cleanup()


def test_dumpcap_dies_when_camwatch_is_killed(owner):
    """Run as root, dumpcap gains no privilege at exec, so the kernel's parent-death signal survives it."""
    o = owner("auto")
    assert o.watchdog == 0   # no watchdog needed
    assert o.kill_and_time_dumpcap() < 2.0


@pytest.fixture
def capable_dumpcap(tmp_path):
    """A copy of dumpcap with file capabilities, as Debian installs it for unprivileged capture, and how to run
    camwatch the way the service does: with no capabilities of its own (root's are switched off by the noroot
    securebit), so that dumpcap gains some at exec and the kernel drops the parent-death signal."""
    if _live_unavailable():
        pytest.skip(_live_unavailable())
    for tool in ("setcap", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    copy = bindir / "dumpcap"
    shutil.copy2(shutil.which("dumpcap"), copy)
    made = subprocess.run(["setcap", "cap_net_raw,cap_net_admin=eip", str(copy)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no file capabilities here: {made.stderr.strip()}")
    return copy, ("setpriv", "--securebits", "+noroot", "--inh-caps=-all"), {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_capable_dumpcap_is_detected(capable_dumpcap):
    copy, _, _ = capable_dumpcap
    assert live_capture._exec_drops_parent_death_signal(str(copy))
    assert not live_capture._exec_drops_parent_death_signal(shutil.which("dumpcap"))


def test_capable_dumpcap_outlives_camwatch_without_the_watchdog(owner, capable_dumpcap):
    """Why the watchdog exists: with file capabilities the parent-death signal alone does nothing."""
    _, prefix, env = capable_dumpcap
    o = owner("off", prefix, env)
    assert o.kill_and_time_dumpcap(limit=3.0) >= 3.0


def test_capable_dumpcap_dies_when_camwatch_is_killed(owner, capable_dumpcap):
    _, prefix, env = capable_dumpcap
    o = owner("auto", prefix, env)
    assert o.watchdog, "no watchdog for a dumpcap with file capabilities"
    assert o.kill_and_time_dumpcap() < 2.0
    deadline = time.monotonic() + 5
    while _running(o.watchdog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(o.watchdog)


def test_orderly_stop_stands_the_watchdog_down(owner, capable_dumpcap):
    _, prefix, env = capable_dumpcap
    o = owner("auto", prefix, env)
    out, err = o.proc.communicate("stop\n", timeout=30)
    watchdog_rc, dumpcap_rc = out.split()
    assert watchdog_rc == "0", err   # it left without signalling anyone
    assert dumpcap_rc == "0", err    # dumpcap stopped on camwatch's own SIGTERM, in order


def test_interface_deleted_under_camwatch_is_one_clean_error(netns, tmp_path):
    ifname = f"cwh{os.getpid() % 100000}"
    subprocess.run(["ip", "-n", netns, "link", "add", ifname, "type", "veth", "peer", "name", ifname + "p"],
                   check=True, capture_output=True)
    subprocess.run(["ip", "-n", netns, "link", "set", ifname, "up"], check=True, capture_output=True)
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "sensor", "run", "--interface",
                             ifname, "--metrics-out", str(tmp_path / "m.prom"), "--alerts", str(tmp_path / "a.jsonl")],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []
    capturing = threading.Event()

    def collect():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("camwatch: capturing on"):
                capturing.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert capturing.wait(15), "".join(lines)
        subprocess.run(["ip", "-n", netns, "link", "del", ifname], check=True, capture_output=True)
        assert proc.wait(30) == 1, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    err = "".join(lines)
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("camwatch: error")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"camwatch: error: capture on {ifname} ended unexpectedly: "), err
    reason = errors[0].split("ended unexpectedly: ", 1)[1]
    assert "Packets" not in reason and "dumpcap:" not in reason and ifname in reason, reason
    assert (tmp_path / "m.prom").exists()
