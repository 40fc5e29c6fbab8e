"""Damaged captures and many files, end to end.

A damaged file ends the way the README's exit codes say: exit 1, one line naming the file and the byte offset,
everything before the fault processed and every output written. Lengths in a file are checked against what can
exist before they size anything, so a block claiming 4 GiB costs what an ordinary file costs. Files are closed as
soon as they are read, and memory does not grow with the number of files.

Every capture here is built with struct (tests/capture_bytes.py). The reader on its own is in unit/test_capture.py;
dumpcap outliving camwatch in live/test_dumpcap.py.
"""

from __future__ import annotations

import itertools
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from capture_bytes import (
    EPB,
    HUGE,
    MIN_BLOCK,
    SHB,
    T0,
    ng_block,
    ng_epb,
    ng_idb,
    ng_shb,
    pcap,
    pcap_header,
    pcap_record,
    pcap_up_to,
    pcapng,
    pcapng_up_to,
    short_block,
    video_frame,
    write,
)
from conftest import REPO, metric_values, value

from sensor.capture import CHUNK_BYTES

# ---- running camwatch as a user does, measured ----------------------------------------------------------------
# The child reports its own peak (VmHWM) into a file, keeping stderr for what camwatch says (see
# test_flood_capture.py on why not getrusage). Reading /proc at the end also needs a free descriptor: with files
# leaking it would not get one.
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


# ---- lengths that cannot exist ---------------------------------------------------------------------------------


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


# ---- blocks too short for their fields ------------------------------------------------------------------------
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


# ---- many files in one run: descriptors, memory flat in the number of files ---------------------------------
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
