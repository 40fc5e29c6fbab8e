"""A memory-mapped capture file truncated (or failing) while camwatch reads it: a one-line CaptureError after every
record before the cut, never SIGBUS (sensor/_mapguard.c, sensor/mapped.py). Each case runs in a child process, so
that a guard that failed would kill the child (a negative return code here), not the test run; the files are really
truncated (os.truncate, from the reading process, a thread of it or another process) while they are mapped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from capture_bytes import pcap, pcapng, video_frame, write

from sensor import capture, overlap
from sensor.capture import open_file
from sensor.mapped import MappedFile
from tests.unit.test_capture import read_records

REPO = Path(__file__).resolve().parents[2]
mapguard = pytest.importorskip("sensor._mapguard", reason="the SIGBUS guard is a compiled extension")
CHUNK = 64 << 10


def child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), str(REPO / "pcaps")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


# The child drains a MappedFile over PATH in CHUNK-byte slices, truncating the file at one of three moments, and
# prints what it was handed and the error it ended with.
DRAIN = """
import json, os, sys, threading
from sensor import capture, compiled, mapped, overlap
from sensor.capture import CaptureReader
from sensor.errors import CaptureError
from sensor.mapped import MappedFile
from tests.unit.test_capture import _records

path, when, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
mapped.PREFETCH = sys.argv[4] == "prefetch"
overlapping = sys.argv[5]   # on: the walks run on the overlap thread, up to overlap.DEPTH batches ahead of the loop
overlap.DEPTH = int(sys.argv[6])
fh = open(path, "rb")
source = MappedFile.open(fh, os.fstat(fh.fileno()).st_size, chunk)
assert source is not None
reader = CaptureReader(None, path, read_ahead=source, close=fh.close)
cut = None
faulted = []

def truncate(at):
    global cut
    cut = at
    if when == "walk-thread":   # another thread of the process, while this one waits in the walk's wrapper
        thread = threading.Thread(target=os.truncate, args=(path, at))
        thread.start()
        thread.join()
    else:
        os.truncate(path, at)

if when.startswith("walk"):   # inside the record walk of the 10th chunk: the walk's own reads meet the cut
    calls = [0]
    real = compiled.extension
    class Walk:
        def __getattr__(self, name):
            return getattr(real, name)
        def _cutting(self, fn, data, *args):
            calls[0] += 1
            if calls[0] != 10:
                return fn(data, *args)
            # at a page boundary: the walk's next read past the cut is on a page wholly past the file's end
            page = os.sysconf("SC_PAGE_SIZE")
            if when == "walk-behind":   # behind the chunk: before its first byte, in a chunk handed over before
                truncate((reader.bytes_consumed - chunk // 2) // page * page)
            else:
                truncate((reader.bytes_consumed + len(data) // 2) // page * page)
            try:
                return fn(data, *args)
            finally:
                faulted.append(source._map.damaged())   # where the guard put zeros: the walk did read past the cut
        def walk(self, data, *args):
            return self._cutting(real.walk, data, *args)
        def walk_pcapng(self, data, *args):
            return self._cutting(real.walk_pcapng, data, *args)
    compiled.extension = Walk()

got, error = [], None
batches = overlap.batches(reader, overlapping)
try:
    for i, batch in enumerate(batches):
        if i == 10 and when == "between":   # after this batch's walk, beyond it: the next slice stops at the cut
            truncate(source._pos + chunk // 3 + 1)
        if i == 10 and when == "processing":   # while the consumer works on the batch: half of it is cut away
            truncate(reader.bytes_consumed + len(batch.data) // 2 + 1)
        got += _records([batch])   # every byte of every record read, as the decode would
except CaptureError as exc:
    error = exc
batches.close()
print(json.dumps({"records": [[r[0].hex(), r[1], r[2], r[3]] for r in got], "cut": cut, "error": str(error),
                  "faulted": faulted,
                  "offset": error.offset if error else None}))
"""


def _drain(path: Path, when: str, prefetch: str = "", timeout: float = 120, overlapping: str = "off",
           depth: int = overlap.DEPTH) -> dict:
    done = child(DRAIN, str(path), when, str(CHUNK), prefetch, overlapping, str(depth), timeout=timeout)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return json.loads(done.stdout)


def _plain(data: bytes) -> tuple[list[list], object]:
    records, error = read_records(data, None)
    return [[r[0].hex(), r[1], r[2], r[3]] for r in records], error


CAPTURES = {"pcap": lambda: pcap(3000, video_frame(1400)), "pcapng": lambda: pcapng(3000, video_frame(1400))}


@pytest.mark.parametrize("kind", sorted(CAPTURES))
@pytest.mark.parametrize("when", ["between", "between-prefetch", "walk", "walk-thread"])
def test_a_file_cut_before_its_records_are_handed_over_reads_as_if_it_ended_there(tmp_path, kind, when):
    """Cut beyond the slice being walked, or under the walk itself: exactly the records readinto gives for the
    file ending at the cut, then one error at the first record not handed over. The prefetch thread, faulting in
    pages past the cut, gets an error from the kernel instead of a signal, and ignores it."""
    data = CAPTURES[kind]()
    when, prefetch, _ = when.partition("-prefetch")
    out = _drain(write(tmp_path, "cut." + kind, data), when, "prefetch" if prefetch else "")
    cut = out["cut"]
    assert cut is not None and 5 * CHUNK < cut < len(data)
    if when.startswith("walk"):   # the walk met the cut: a fault caught, zeros from the cut (a page boundary) on
        assert out["faulted"] == [cut]
    records, plain_error = _plain(data[:cut])
    assert out["records"] == records and len(records) > 100
    # readinto stops at the record the cut falls in (or at the cut, when it falls between records)
    assert out["offset"] == (plain_error.offset if plain_error is not None else cut)
    assert out["error"] == (f"{out['error'].split(' at byte ')[0]} at byte {out['offset']}: truncated while it was "
                            f"read: the file shrank from {len(data)} to {cut} bytes")


@pytest.mark.parametrize("kind", sorted(CAPTURES))
@pytest.mark.parametrize("prefetch", ["", "prefetch"])
def test_a_file_cut_under_the_batch_being_processed(tmp_path, kind, prefetch):
    """The records of the batch in the consumer's hands that lie past the cut read as zeros (the pages are gone),
    without a signal; every record before the cut is intact, and the error says how many bytes were zeros."""
    data = CAPTURES[kind]()
    out = _drain(write(tmp_path, "cut." + kind, data), "processing", prefetch)
    cut = out["cut"]
    intact, _ = _plain(data[:cut])
    assert out["records"][:len(intact)] == intact
    page = mapguard_page()
    zeros = [r for r in out["records"][len(intact):] if int(r[0], 16) == 0]
    assert zeros and len(out["records"]) - len(intact) - len(zeros) <= page // 1400 + 1
    found = re.fullmatch(r".* at byte (\d+): truncated while it was read: the file shrank from (\d+) to (\d+) "
                         r"bytes; the (\d+) bytes after it, handed over before, may have been read as zeros",
                         out["error"])
    assert found, out["error"]
    at, before, after, handed = map(int, found.groups())
    assert (before, after) == (len(data), cut) and cut < at and handed > 0


@pytest.mark.parametrize("kind", sorted(CAPTURES))
@pytest.mark.parametrize("when", ["walk", "walk-thread"])
@pytest.mark.parametrize("depth", [1, 2])
def test_a_file_cut_under_the_overlap_threads_walk_ends_as_in_line(tmp_path, kind, when, depth):
    """The walk meeting the cut runs on the overlap thread (sensor.overlap), up to `depth` batches ahead of the
    consumer: the same records, then the same one-line error at the same byte, on the main thread, as reading in
    line. (A cut behind the chunk, in a batch the consumer holds, is a race with the consumer's reads whichever the
    thread.)"""
    data = CAPTURES[kind]()
    path = write(tmp_path, "cut." + kind, data)
    on = _drain(path, when, overlapping="on", timeout=60, depth=depth)
    path.write_bytes(data)
    off = _drain(path, when, overlapping="off", timeout=60)
    assert on["cut"] is not None and len(on["records"]) > 100
    assert on == off


@pytest.mark.parametrize("kind", sorted(CAPTURES))
def test_a_file_cut_behind_the_chunk_being_walked_ends_the_read(tmp_path, kind):
    """Cut under the walk at a point before the chunk's first byte (records handed over already lie past it): the
    walk of what lies before the cut is empty, and the read ends there with the error, instead of walking nothing
    again and again (it hung)."""
    data = CAPTURES[kind]()
    out = _drain(write(tmp_path, "cut." + kind, data), "walk-behind", timeout=30)
    cut = out["cut"]
    assert cut is not None and 5 * CHUNK < cut < len(data)
    intact, _ = _plain(data[:cut])
    assert out["records"][:len(intact)] == intact and len(out["records"]) > len(intact)
    found = re.fullmatch(r".* at byte (\d+): truncated while it was read: the file shrank from (\d+) to (\d+) "
                         r"bytes; the (\d+) bytes after it, handed over before, may have been read as zeros",
                         out["error"])
    assert found, out["error"]
    at, before, after, handed = map(int, found.groups())
    assert (before, after) == (len(data), cut) and cut < at == out["offset"] and handed > 0


def mapguard_page() -> int:
    return os.sysconf("SC_PAGE_SIZE")


SIGBUS_ELSEWHERE = """
import faulthandler, mmap, os, signal, sys
if sys.argv[1] == "faulthandler":
    faulthandler.enable()
from sensor import _mapguard
path = sys.argv[2]
open(path, "wb").write(b"x" * (1 << 20))
fd = os.open(path, os.O_RDONLY)
guarded = _mapguard.map_file(fd, 1 << 20)   # the guard is installed: faults outside it are not its own
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGBUS)
other = mmap.mmap(fd, 1 << 20, access=mmap.ACCESS_READ)
os.truncate(path, 100)
print(other[1 << 19])
print("survived")
"""


@pytest.mark.parametrize("how", ["default", "faulthandler", "kill"])
def test_a_sigbus_outside_the_guarded_maps_is_not_swallowed(tmp_path, how):
    """Another mapping's fault (or a SIGBUS sent by a process) goes to the handler that was there before the guard:
    the default action, or faulthandler's report then the default action."""
    done = child(SIGBUS_ELSEWHERE, how, str(tmp_path / "f.bin"))
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr)
    assert "survived" not in done.stdout
    if how == "faulthandler":
        assert "Fatal Python error: Bus error" in done.stderr


def test_a_guarded_map_reads_zeros_past_the_cut_and_says_where(tmp_path):
    done = child("""
        import json, os, sys
        from sensor import _mapguard
        path = sys.argv[1]
        open(path, "wb").write(b"\\x01" * (1 << 20))
        fd = os.open(path, os.O_RDONLY)
        guarded = _mapguard.map_file(fd, 1 << 20)
        view = memoryview(guarded)
        os.truncate(path, 10_000)
        print(json.dumps([view[9_999], view[(1 << 20) - 1], view[500_000], view[5_000], guarded.damaged()]))
    """, str(tmp_path / "f.bin"))
    assert done.returncode == 0, done.stderr
    at_end, last, far, near, damaged = json.loads(done.stdout)
    assert (at_end, last, far, near) == (1, 0, 0, 1)   # the page holding the new end reads zeros after it
    # the first fault was the last page; a later one, lower, moved the start of the zeros down to its page
    assert damaged == 500_000 - 500_000 % mapguard_page()


def test_without_the_guard_files_are_read_with_readinto(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    monkeypatch.setattr("sensor.mapped._mapguard", None)
    path = write(tmp_path, "big.pcap", pcap(500, video_frame(1400)))
    reader, _ = open_file(path)
    assert reader._read_ahead is None and sum(len(b) for b in reader) == 500
    with open(path, "rb") as fh, pytest.raises(OSError) as refused:   # what MappedFile.open turns into None
        MappedFile(fh, 1 << 20, CHUNK)
    assert str(refused.value) == "no SIGBUS guard (sensor._mapguard) to map with"


def test_a_full_table_of_maps_falls_back_to_readinto(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    path = write(tmp_path, "big.pcap", pcap(50, video_frame(1400)))
    held: list[MappedFile] = []
    try:
        while (source := MappedFile.open(open(path, "rb"), os.path.getsize(path), CHUNK)) is not None:
            held.append(source)
            assert len(held) <= mapguard.SLOTS
        reader, _ = open_file(path)   # the table is full: this one is read with readinto
        assert reader._read_ahead is None and sum(len(b) for b in reader) == 50
    finally:
        for source in held:
            source.close()
            source._fh.close()
    reader, _ = open_file(path)
    assert isinstance(reader._read_ahead, MappedFile)   # slots come back as maps close
    reader.close()


def test_a_guarded_map_is_read_only_and_outlives_no_buffer(tmp_path):
    path = write(tmp_path, "f.bin", bytes(range(256)) * 64)
    fd = os.open(path, os.O_RDONLY)
    try:
        guarded = mapguard.map_file(fd, 10_000)
        view = memoryview(guarded)
        assert view.readonly and len(view) == guarded.size == 10_000 and view[255] == 255
        with pytest.raises(BufferError):
            guarded.close()   # a slice is out: unmapping would pull the pages from under it
        view.release()
        guarded.close()
        assert guarded.damaged() == -1
        with pytest.raises(ValueError):
            memoryview(guarded)
        with pytest.raises(ValueError):
            mapguard.map_file(fd, 0)
    finally:
        os.close(fd)
