"""Capture files read through a memory map (sensor.mapped): the same records and the same errors as reading them
with readinto, on damaged files and in chunks of every size; a file that grows is read to its new end; the map
does not outlive what uses it, nor keep the whole file resident."""

from __future__ import annotations

import contextlib
import os
import tempfile
import types
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from capture_bytes import pcap, pcapng, video_frame, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import capture, compiled, mapped
from sensor.capture import CaptureReader, open_file
from sensor.errors import CaptureError
from sensor.mapped import MappedFile
from tests.unit.test_capture import _records, drain, mutants, read_records


def mapped_records(data: bytes, chunk: int) -> tuple[list[tuple], CaptureError | None]:
    with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
        tmp.write(data)
        tmp.flush()
        fh = open(tmp.name, "rb")
        source = MappedFile.open(fh, len(data), chunk)
        if source is None:   # an empty file cannot be mapped: open_file reads it instead
            assert not data
            fh.close()
            return read_records(data, None)
        return drain(CaptureReader(None, "mutant", read_ahead=source, close=fh.close))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutant=mutants(), chunk=st.sampled_from([1, 7, 64, 4096, 1 << 20]))
def test_mapped_reader_hands_over_what_the_plain_reader_does(mutant, chunk):
    """Records, and the error (message and byte offset), exactly as read with readinto, on damaged files."""
    _kind, data, _first, _how = mutant
    plain, plain_error = read_records(data, None)
    mapped, mapped_error = mapped_records(data, chunk)
    assert mapped == plain
    assert str(mapped_error) == str(plain_error)


def test_open_file_maps_large_files_only(tmp_path, monkeypatch):
    assert capture.MAP_FROM == capture.CHUNK_BYTES   # on for files of a chunk or more (guarded against SIGBUS)
    monkeypatch.setattr(capture, "MAP_FROM", 1 << 20)
    small = write(tmp_path, "small.pcap", pcap(10))
    reader, _ = open_file(small)
    assert reader._read_ahead is None   # below MAP_FROM: readinto
    reader.close()
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    for data in (pcap(3000, video_frame(1400)), pcapng(3000, video_frame(1400))):
        path = write(tmp_path, "big.cap", data)
        reader, _ = open_file(path)
        assert isinstance(reader._read_ahead, MappedFile)
        assert _copied(reader) == read_records(data, None)[0]
    monkeypatch.setattr(capture, "MAP_FROM", 0)
    reader, _ = open_file(path)
    assert reader._read_ahead is None
    reader.close()


def test_a_file_that_grows_while_mapped_is_read_to_its_new_end(tmp_path):
    data = pcap(2000, video_frame(1000))
    cut = len(data) - 700 * 1016   # the map ends inside a record; the rest is appended after it was made
    path = write(tmp_path, "growing.pcap", data[:cut])
    fh = open(path, "rb")
    source = MappedFile(fh, cut, 64 << 10)
    with open(path, "ab") as out:
        out.write(data[cut:])
    reader = CaptureReader(None, str(path), read_ahead=source, close=fh.close)
    assert _copied(reader) == read_records(data, None)[0]


def test_the_end_of_a_file_that_did_not_grow_costs_no_buffer(tmp_path):
    data = pcap(300, video_frame(1000))
    path = write(tmp_path, "f.pcap", data)
    with open(path, "rb") as fh:
        source = MappedFile(fh, len(data), 64 << 10)
        seen = 0
        while (got := source.take(b"")[1]) > 0:
            seen += got
        view, got = source.take(b"tail")
        assert seen == len(data) and got == 0 and bytes(view) == b"tail" and len(view.obj) == 4
        with open(path, "ab") as out:   # grown after all: read as before, no more than it grew by
            out.write(b"x" * 5000)
        view, got = source.take(b"")
        assert got == 5000 and len(view.obj) == 5000
        source.close()


def test_the_map_goes_with_the_reader_and_stays_small(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    monkeypatch.setattr(capture, "CHUNK_BYTES", 256 << 10)
    data = pcap(4000, video_frame(1400))
    path = write(tmp_path, "big.pcap", data)
    before = len(os.listdir("/proc/self/fd"))
    reader, _ = open_file(path)
    source = reader._read_ahead
    batches = iter(reader)
    kept = next(batches)
    first = _records([kept])
    deque(batches, maxlen=0)   # to the end, holding none of the later batches
    # Pages behind the reader were given back as it went: all but the last chunks' (mapped.KEEP_SLICES and the last),
    # each at most the largest chunk a capture of big records grows to (capture.chunk_after).
    assert source._dropped >= len(data) - (mapped.KEEP_SLICES + 1) * (256 << 10) * capture.MAX_CHUNK_GROWTH
    assert source._map is None
    assert _records([kept]) == first   # a batch kept past the end still reads its bytes (refetched from the file)
    del kept   # the map, and its copy of the descriptor, went with the last slice of it
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(("populate", "prefetch"), [(True, False), (False, False), (True, True)])
def test_a_mapped_files_walk_tries_both_ways_of_mapping_its_pages_in(tmp_path, monkeypatch, populate, prefetch):
    """With mapped.POPULATE a mapped reader's compiled walk is asked to map its slices' pages in at once on the trial
    chunks that PageMapping gives it and not on the others (never with PREFETCH, whose thread does it, nor for a
    readinto reader), and the records are the same either way. (Which pages end up resident cannot tell: a kernel
    that maps a page cache's large folios whole on a fault maps as much without.)"""
    if compiled.extension is None or not compiled.walk:
        pytest.skip("the C extension was not built on this machine")
    walk, asked = compiled.extension.walk, []

    def spy(*args):
        asked.append(bool(args[4]) if len(args) > 4 else False)
        return walk(*args)

    monkeypatch.setattr(compiled, "extension", types.SimpleNamespace(walk=spy))
    monkeypatch.setattr(mapped, "POPULATE", populate)
    monkeypatch.setattr(mapped, "PREFETCH", prefetch)
    monkeypatch.setattr(capture, "CHUNK_BYTES", 64 << 10)
    data = pcap(1500, video_frame(1400))
    path = write(tmp_path, "big.pcap", data)
    records = read_records(data, None)[0]
    for map_from, mapped_file in ((1, True), (0, False)):
        monkeypatch.setattr(capture, "MAP_FROM", map_from)
        asked.clear()
        reader, _ = open_file(path)
        assert _copied(reader) == records
        assert len(asked) > mapped.PageMapping.TRIAL + 1
        if mapped_file and populate and not prefetch:   # the first chunk as chosen, then the trial's alternation
            assert asked[:mapped.PageMapping.TRIAL + 1] == [True, True, False, True, False]
        else:
            assert set(asked) == {False}


def _trial(paging: mapped.PageMapping, cost: Callable[[bool], int], chunks: int,
           size: Callable[[bool], int] = lambda way: 1 << 20) -> list[bool]:
    """How each of `chunks` chunks was walked, the walk of size(populated) bytes costing cost(populated) CPU ns."""
    ways = []
    for _ in range(chunks):
        way = paging.populate()
        paging.walked(way, cost(way), size(way))
        ways.append(way)
    return ways


@pytest.mark.parametrize("cheaper", [True, False])
def test_the_cheaper_way_of_mapping_pages_in_walks_the_chunks_after_the_trial(cheaper):
    trial, recheck = mapped.PageMapping.TRIAL, mapped.PageMapping.RECHECK
    ways = _trial(mapped.PageMapping(), lambda way: 900 if way == cheaper else 1000, 1 + trial + recheck + trial + 3)
    assert ways[0] is True                                    # the first chunk: before any trial
    assert ways[1:1 + trial] == [True, False] * (trial // 2)  # the trial alternates
    assert set(ways[1 + trial:1 + trial + recheck]) == {cheaper}
    assert ways[1 + trial + recheck:1 + 2 * trial + recheck] == [True, False] * (trial // 2)   # asked again
    assert set(ways[1 + 2 * trial + recheck:]) == {cheaper}


def test_the_trial_compares_cpu_per_byte_not_per_chunk():
    # populate's chunks are twice as large and cost 1.5 times as much: per byte it is the cheaper
    ways = _trial(mapped.PageMapping(), lambda way: 1500 if way else 1000, 1 + mapped.PageMapping.TRIAL + 2,
                  lambda way: (2 << 20) if way else (1 << 20))
    assert ways[-2:] == [True, True]


def test_a_verdict_changes_when_the_costs_change():
    trial, recheck = mapped.PageMapping.TRIAL, mapped.PageMapping.RECHECK
    paging = mapped.PageMapping()
    assert set(_trial(paging, lambda way: 900 if way else 1000, 1 + trial + recheck)[1 + trial:]) == {True}
    assert set(_trial(paging, lambda way: 1000 if way else 900, trial + 5)[trial:]) == {False}


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_the_pages_of_the_last_slices_stay_while_those_behind_them_go(tmp_path, monkeypatch, keep):
    """The pipeline may read a batch after the reader made the next ones (sensor.overlap runs ahead): the pages of
    the KEEP_SLICES slices before the last are never given back, every page before them is."""
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    monkeypatch.setattr(capture, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(mapped, "KEEP_SLICES", keep)
    path = write(tmp_path, "big.pcap", pcap(2000, video_frame(1400)))
    reader, _ = open_file(path)
    source = reader._read_ahead
    starts = []
    for batch in reader:   # each batch handed out before the reader takes the next slice
        starts.append(reader.bytes_consumed)
        assert len(batch)
        behind = starts[-1 - keep] if len(starts) > keep else 0
        assert source._dropped == behind - behind % os.sysconf("SC_PAGE_SIZE")
    assert len(starts) > 10


def test_the_map_is_closed_at_the_end_when_no_batch_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    path = write(tmp_path, "big.pcap", pcap(500, video_frame(1400)))
    before = len(os.listdir("/proc/self/fd"))
    reader, _ = open_file(path)
    source = reader._read_ahead
    assert sum(int(b.caplen.sum()) for b in reader) > 0
    assert len(os.listdir("/proc/self/fd")) == before and source._map is None and reader._read_ahead is None


def _copied(reader) -> list[tuple]:
    out: list[tuple] = []
    for batch in reader:
        out += _records([batch])
    return out


def test_mapped_batches_end_where_readinto_batches_do(tmp_path, monkeypatch):
    """The same batches, not only the same records: the pipeline sweeps idle flows once per batch, so batches ending
    elsewhere could change which flows a capture makes (42,199 against 42,201 on a 1 M-packet one, before). Both
    grow their chunks alike for big records (capture.chunk_for), and keep CHUNK_BYTES for small ones."""
    monkeypatch.setattr(capture, "CHUNK_BYTES", 16 << 10)
    monkeypatch.setattr(capture, "CHUNK_RECORDS", 40)
    for data, grows in ((pcap(3000, video_frame(1400)), True), (pcapng(3000, video_frame(977)), True),
                        (pcap(20000, video_frame(60)), False)):
        path = write(tmp_path, "big.cap", data)
        ends = {}
        for map_from in (0, 1):
            monkeypatch.setattr(capture, "MAP_FROM", map_from)
            reader, _ = open_file(path)
            assert isinstance(reader._read_ahead, MappedFile) == bool(map_from)
            ends[map_from] = [(len(b), float(b.ts[-1])) for b in reader]
        assert len(ends[0]) > 40 and ends[1] == ends[0]
        sizes = [n for n, _ in ends[0][:-1]]
        # the first chunk is CHUNK_BYTES; then big records make chunks of about CHUNK_RECORDS records (at most
        # MAX_CHUNK_GROWTH times CHUNK_BYTES), while small ones fill CHUNK_BYTES with more than that already
        assert (max(sizes) > 1.5 * sizes[0]) == grows and max(sizes) <= (capture.MAX_CHUNK_GROWTH + 1) * sizes[0]
        assert not grows or capture.CHUNK_RECORDS - 1 <= max(sizes) <= capture.CHUNK_RECORDS + 1


def test_a_chunk_holds_about_chunk_records_records_within_its_bounds():
    base = capture.CHUNK_BYTES
    assert capture.chunk_for(0, base) == base   # nothing walked yet
    assert capture.chunk_for(70, base) == base   # a flood's or control traffic's small packets
    assert capture.chunk_for(1300, base) == min(1300 * capture.CHUNK_RECORDS, capture.MAX_CHUNK_GROWTH * base)
    assert capture.chunk_for(1 << 20, base) == capture.MAX_CHUNK_GROWTH * base   # never more
    assert capture.chunk_for(1000, 4096) == 4 * 4096   # of the reader's own chunk size, not the module's


def _taken(source: MappedFile, slices: int) -> None:
    for _ in range(slices):
        source.take(b"")   # the slices' pages are never touched here: nothing faults on a cut file


@contextlib.contextmanager
def _video_map(tmp_path, zeros_at: int | Callable[[], int] | None = None,
               kind: str = "pcap") -> Iterator[tuple[MappedFile, Path, bytes]]:
    """A 300-frame video capture mapped in 64 KiB slices: (the mapped reader, the file's path, its bytes), closed
    after. zeros_at stands in for the guard's record of the first page it read as zeros (a failing disk's SIGBUS),
    not caused: a fault in this process would go to pytest's faulthandler."""
    data = pcap(300, video_frame(1000)) if kind == "pcap" else pcapng(300, video_frame(1000))
    path = write(tmp_path, f"capture.{kind}", data)
    with open(path, "rb") as fh:
        source = MappedFile(fh, len(data), 64 << 10)
        real = source._map
        if zeros_at is not None:
            damaged = zeros_at if callable(zeros_at) else lambda: zeros_at
            source._map = types.SimpleNamespace(damaged=damaged, advise=real.advise, close=real.close)
        try:
            yield source, path, data
        finally:
            source._map = real
            source.close()


def _damage(source: MappedFile) -> str:
    """The one line of the Damaged the next slice raises."""
    with pytest.raises(mapped.Damaged) as damaged:
        source.take(b"")
    return str(damaged.value)


def test_a_file_found_shorter_ends_the_slices_there_with_one_line_saying_by_how_much(tmp_path):
    """Cut exactly where the slices handed out end: nothing handed over lies past the cut. The line names the
    file's size before and after."""
    with _video_map(tmp_path) as (source, path, data):
        _taken(source, 2)
        assert source.intact_to() is None
        os.truncate(path, 64 << 10)
        assert source.intact_to() == 64 << 10
        assert _damage(source) == f"truncated while it was read: the file shrank from {len(data)} to {64 << 10} bytes"


def test_bytes_handed_over_past_the_cut_are_counted_in_the_line(tmp_path):
    with _video_map(tmp_path) as (source, path, data):
        _taken(source, 3)
        os.truncate(path, 100_000)
        assert _damage(source) == (f"truncated while it was read: the file shrank from {len(data)} to 100000 "
                                   f"bytes; the {(3 << 16) - 100_000} bytes after it, handed over before, may have "
                                   "been read as zeros")


def test_a_page_the_guard_read_as_zeros_in_a_file_of_its_size_is_an_io_error_at_that_page(tmp_path):
    with _video_map(tmp_path, zeros_at=8192) as (source, _, _data):
        _taken(source, 1)
        assert source.intact_to() == 8192
        # the one slice handed out was not yet given to the caller as records when the damage was seen (the reader
        # walks it again up to the cut): no bytes past the cut were handed over
        assert _damage(source) == "cannot read: the mapped file could not be read at byte 8192 (an I/O error?)"


class _Advised:
    """A map's stand-in that records each hint (kind, start, length) and the thread that gave it."""

    def __init__(self, real):
        self._real, self.calls = real, []

    def advise(self, kind: int, start: int, length: int) -> None:
        import threading

        thread = threading.current_thread()
        self.calls.append((kind, start, length, thread.name, thread.daemon))
        self._real.advise(kind, start, length)

    def damaged(self) -> int:
        return self._real.damaged()

    def close(self) -> None:
        self._real.close()


@pytest.mark.parametrize("prefetch", [False, True])
def test_the_pages_dropped_and_read_ahead_are_exactly_those_behind_and_after_the_slices(tmp_path, monkeypatch,
                                                                                        prefetch):
    """With KEEP_SLICES 2, after slice k: every page before the page holding slice k-2's start is dropped (each
    once), and the chunk after slice k is read ahead from the page holding its start, up to the file's end; none
    after the last slice. With PREFETCH, the same ranges, faulted in on a daemon thread of their own."""
    from sensor import _mapguard as guard

    monkeypatch.setattr(mapped, "KEEP_SLICES", 2)
    monkeypatch.setattr(mapped, "PREFETCH", prefetch)
    chunk, page = 66_536, mapped._PAGE   # slices that end inside a page
    data = pcap(300, video_frame(1400))
    size = len(data)
    path = write(tmp_path, "hinted.pcap", data)

    def down(offset: int) -> int:
        return offset - offset % page

    ahead = guard.MADV_POPULATE_READ if prefetch else guard.MADV_WILLNEED
    thread = ("capture-prefetch", True) if prefetch else ("MainThread", False)
    expected = []
    for k in range(-(-size // chunk)):
        if k >= 3:
            expected.append((guard.MADV_DONTNEED, down((k - 3) * chunk), down((k - 2) * chunk) - down((k - 3) * chunk)))
        if (k + 1) * chunk < size:
            expected.append((ahead, down((k + 1) * chunk), min(chunk, size - down((k + 1) * chunk))))
    with open(path, "rb") as fh:
        source = MappedFile(fh, size, chunk)
        spy = source._map = _Advised(source._map)
        taken = 0
        while (got := source.take(b"")[1]) > 0:
            taken += got
        source.close()
    assert taken == size and len(expected) > 6
    assert spy.calls == [(*hint, *thread) for hint in expected]


def test_more_carried_over_than_was_handed_out_is_refused(tmp_path):
    data = pcap(10)
    path = write(tmp_path, "f.pcap", data)
    with open(path, "rb") as fh:
        source = MappedFile(fh, len(data), 1024)
        with pytest.raises(ValueError) as raised:
            source.take(b"x" * 10)
        source.close()
    assert str(raised.value) == "mapped read: 10 bytes carried over, 0 handed out"


def test_a_later_lower_cut_moves_the_end_and_the_line_down(tmp_path):
    with _video_map(tmp_path) as (source, path, data):
        _taken(source, 1)
        os.truncate(path, 50_000)
        assert source.intact_to() == 50_000
        os.truncate(path, 20_000)
        assert source.intact_to() == 20_000
        os.truncate(path, 30_000)   # grown again: the bytes between were lost all the same
        assert source.intact_to() == 20_000
        assert _damage(source) == f"truncated while it was read: the file shrank from {len(data)} to 20000 bytes"


def test_the_first_page_read_as_zeros_is_damage_at_byte_0(tmp_path):
    with _video_map(tmp_path, zeros_at=0) as (source, _, _data):
        assert source.intact_to() == 0
        assert _damage(source) == "cannot read: the mapped file could not be read at byte 0 (an I/O error?)"


def test_a_file_cut_below_a_page_read_as_zeros_ends_at_its_new_size(tmp_path):
    """A page past the cut read as zeros (its fault recorded by the guard) and the file shorter still: the cut is
    the file's new size, the lower of the two."""
    with _video_map(tmp_path, zeros_at=40_960) as (source, path, _data):
        os.truncate(path, 20_000)
        assert source.intact_to() == 20_000


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_slices_of_one_byte_read_the_whole_file(kind):
    from tests.unit.test_capture import REFERENCE, SAMPLES

    assert mapped_records(SAMPLES[kind], 1) == REFERENCE[kind]


def test_a_page_read_as_zeros_ends_the_reader_there_as_if_the_file_did(tmp_path):
    """The guard's record of a page it read as zeros (stood in for, as above): every record before the page, then
    one line at the record it cuts, naming the page."""
    with _video_map(tmp_path, zeros_at=8192) as (source, _, data):
        got, error = drain(CaptureReader(None, "failing", read_ahead=source))
    before, cut = read_records(data[:8192], None)
    assert got == before and len(got) == 8
    assert str(error) == (f"failing at byte {cut.offset}: cannot read: the mapped file could not be read at byte 8192 "
                          "(an I/O error?)")


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_damage_seen_after_a_slice_was_walked_has_it_walked_again_up_to_the_damage(tmp_path, kind):
    """The guard's record of a page read as zeros (stood in for, as above) appearing only once the first slice was
    handed out and walked: the walk is done again from the same parser state over what lies before the page, then
    the reader ends there, as if the file did."""
    asked = []

    def damaged() -> int:   # intact when the slice is cut, damaged when the reader looks after walking it
        asked.append(1)
        return -1 if len(asked) == 1 else 8192

    with _video_map(tmp_path, zeros_at=damaged, kind=kind) as (source, _, data):
        got, error = drain(CaptureReader(None, "failing", read_ahead=source))
    before, cut = read_records(data[:8192], None)
    assert got == before and len(got) > 5
    assert str(error) == (f"failing at byte {cut.offset}: cannot read: the mapped file could not be read at byte 8192 "
                          "(an I/O error?)")
