"""sensor/capture.py, the file reader on its own: whatever the damage, reading ends in a CaptureError after an
intact prefix (hypothesis over mutated captures); lengths are checked before they size a buffer; the file is closed
as soon as it is read, and a small file gets a small buffer."""

from __future__ import annotations

import gc
import io
import os
import struct
import weakref

import numpy as np
import pytest
from capture_bytes import (
    EPB,
    HUGE,
    MIN_BLOCK,
    OPB,
    PHONE_HOME,
    SHB,
    SPB,
    T0,
    ng_block,
    ng_epb,
    ng_idb,
    ng_opb,
    ng_shb,
    ng_spb,
    pcap,
    pcap_header,
    pcap_record,
    pcapng,
    short_block,
    video_frame,
    write,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import capture
from sensor.capture import CaptureReader, open_file
from sensor.errors import CaptureError


# ---- the reader on its own: every damage is a CaptureError, and what came before it is intact -----------------
def _records(batches) -> list[tuple]:
    out = []
    for b in batches:
        for off, cap, wire, ts, lt in zip(b.offsets.tolist(), b.caplen.tolist(), b.wirelen.tolist(), b.ts.tolist(),
                                         b.linktype.tolist(), strict=True):
            out.append((bytes(b.data[off:off + cap]), wire, ts, lt))
    return out


def drain(reader) -> tuple[list[tuple], CaptureError | None]:
    """Every record the reader hands over, copied as it comes (a batch's data is only valid until the next one is
    asked for), and the error it ended with."""
    got: list[tuple] = []
    try:
        for batch in reader:
            got += _records([batch])
    except CaptureError as exc:
        return got, exc
    return got, None


def read_records(data: bytes, chunk: int | None) -> tuple[list[tuple], CaptureError | None]:
    """Every record the reader hands over, and the error it ended with. `chunk` None: the file path (one reused
    buffer sized from the file); otherwise a stream read `chunk` bytes at a time."""
    if chunk is None:
        source = io.BytesIO(data)
        reader = CaptureReader(None, "mutant", readinto=source.readinto, size_hint=len(data), close=source.close)
    else:
        pieces = iter([data[i:i + chunk] for i in range(0, len(data), chunk)])
        reader = CaptureReader(lambda: next(pieces, b""), "mutant")
    got, exc = drain(reader)
    if exc is not None:
        assert exc.offset is not None and 0 <= exc.offset <= len(data), exc
        assert str(exc).startswith("mutant at byte ")
    return got, exc


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


# ---- files closed as soon as read, a small buffer for a small file --------------------------------------------
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
    # never more than the file and 4 KiB to see its end, the read that finds the end included
    data = pcap(10)
    source = io.BytesIO(data)
    offered: list[int] = []

    def readinto(buffer):
        offered.append(len(buffer))
        return source.readinto(buffer)

    reader = CaptureReader(None, "small", readinto=readinto, size_hint=len(data))
    assert sum(len(b) for b in reader) == 10
    assert offered == [len(data) + 4096, 4096]   # the one buffer, reused to find the end


def test_a_small_file_that_grows_while_it_is_read_is_read_to_its_new_end(tmp_path):
    """Its buffer was sized from the file as opened: a record longer than that buffer, appended meanwhile, grows it."""
    path = write(tmp_path, "growing.pcap", pcap(1))
    later = pcap_record(video_frame(8000), T0 + 1) + pcap_record(PHONE_HOME, T0 + 2)
    reader, _ = open_file(path)
    got = []
    for batch in reader:
        if not got:
            with open(path, "ab") as out:
                out.write(later)
        got += _records([batch])
    assert [(len(f), t) for f, _, t, _ in got] == [(len(PHONE_HOME), T0), (8000, T0 + 1), (len(PHONE_HOME), T0 + 2)]


def test_readinto_handing_over_nothing_yet_or_one_byte_at_a_time():
    """A readinto source returning None (nothing within the tick) gets an empty batch, as `read` does; one returning
    a byte at a time is read to the end."""
    data = SAMPLES["pcap"]
    answers = iter(["read", None])
    source = io.BytesIO(data)

    def readinto(buffer):
        return next(answers, "read") and source.readinto(buffer)

    batches = list(CaptureReader(None, "tick", readinto=readinto))
    assert [len(b) for b in batches] == [6, 0]
    trickle = _Chunks(data, 1)
    assert drain(CaptureReader(None, "mutant", readinto=trickle.readinto)) == REFERENCE["pcap"]



@pytest.mark.parametrize("how", ["read", "mapped", "read ahead"])
def test_each_way_of_reading_a_file_names_it_in_its_errors_and_closes_it(tmp_path, monkeypatch, how):
    """From exactly the size each way starts at (MAP_FROM, READ_AHEAD_FROM): the error names the file, and the
    file object is closed when the read ends, not merely dropped (held here, it would stay open)."""
    data = pcap(40) + struct.pack("<IIII", 0, 0, HUGE, HUGE)
    path = write(tmp_path, "named.pcap", data)
    monkeypatch.setattr(capture, "MAP_FROM", len(data) if how == "mapped" else 0)
    monkeypatch.setattr(capture, "READ_AHEAD_FROM", len(data) if how == "read ahead" else 0)
    reader, size = open_file(path)
    assert size == len(data) and reader.name == str(path)
    source = reader._read_ahead
    if how == "read":
        assert source is None and reader._size_hint == len(data)
        fh = reader._readinto.__self__
    else:
        assert type(source).__name__ == ("MappedFile" if how == "mapped" else "ReadAhead")
        fh = source._fh
    assert not fh.closed
    got, error = drain(reader)
    assert len(got) == 40 and fh.closed
    assert str(error) == f"{path} at byte {len(pcap(40))}: absurd record length {HUGE} bytes (corrupt file?)"


def test_a_file_that_cannot_be_opened_is_a_one_line_error_naming_it(tmp_path):
    from sensor.errors import CamwatchError

    loop = tmp_path / "loop.pcap"
    loop.symlink_to(loop)
    for path, message in ((tmp_path / "none.pcap", "no such file"), (tmp_path, "is a directory, not a capture file"),
                          (loop, "cannot open: Too many levels of symbolic links")):
        with pytest.raises(CamwatchError) as raised:
            open_file(path)
        assert str(raised.value) == f"{path}: {message}"


def test_a_live_source_with_nothing_to_hand_over_gets_an_empty_batch():
    """`read` returning None (nothing within the tick): an empty batch, of the same columns as any other, so the
    pipeline's housekeeping runs on it as on a batch of packets."""
    pieces = iter([pcap_header(), None, pcap(3)[24:], None])
    batches = list(CaptureReader(lambda: next(pieces, b""), "live"))
    assert [len(b) for b in batches] == [0, 3, 0]
    for empty in (batches[0], batches[2]):
        assert empty.data == b""
        assert [(len(c), c.dtype) for c in (empty.offsets, empty.caplen, empty.wirelen, empty.ts, empty.linktype)] \
            == [(0, np.int64), (0, np.int64), (0, np.int64), (0, np.float64), (0, np.int32)]


def test_a_pipe_gets_a_whole_chunks_buffer(tmp_path):
    """A FIFO's size (0) says nothing of what comes through it: no size hint, chunks of CHUNK_BYTES, and no more
    for big records (a read of a pipe gives what the pipe holds: a bigger buffer would only be memory)."""
    import threading

    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    data = pcap(50) + pcap(8000, video_frame(1400))[24:]

    def feed():
        with open(fifo, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    reader, size = open_file(fifo)
    try:
        assert size == 0 and reader._size_hint is None
        sizes = [len(reader._arena) for batch in reader if len(batch)]
    finally:
        writer.join()
    assert sizes and set(sizes) == {capture.CHUNK_BYTES}

# ---- read-ahead: the next chunk read in a thread, the same records and the same errors -------------------------
class _Chunks(io.RawIOBase):
    """A file whose reads return at most `step` bytes and fail with EIO once `fail_at` bytes have been read."""

    def __init__(self, data: bytes, step: int, fail_at: int | None = None):
        self._data, self._pos, self._step, self._fail_at = data, 0, step, fail_at

    def readinto(self, buffer) -> int:
        if self._fail_at is not None and self._pos >= self._fail_at:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def read_ahead_records(data: bytes, chunk: int, fail_at: int | None = None) -> tuple[list[tuple], Exception | None]:
    from sensor.readahead import ReadAhead
    ahead = ReadAhead(_Chunks(data, chunk, fail_at), chunk, capture.MAX_BLOCK_BYTES)  # type: ignore[arg-type]
    return drain(CaptureReader(None, "mutant", read_ahead=ahead))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutant=mutants(), chunk=st.sampled_from([1, 7, 64, 4096]))
def test_read_ahead_hands_over_what_the_plain_reader_does(mutant, chunk):
    """Records, and the error (message and byte offset), exactly as without the read-ahead, on damaged files."""
    _kind, data, _first, _how = mutant
    plain, plain_error = read_records(data, None)
    ahead, ahead_error = read_ahead_records(data, chunk)
    assert ahead == plain
    assert str(ahead_error) == str(plain_error)


def test_a_read_error_in_the_read_ahead_thread_comes_after_everything_before_it():
    data = pcap(400, video_frame(1000))
    records, error = read_ahead_records(data, 64 << 10, fail_at=128 << 10)
    assert error is not None and "cannot read: Input/output error" in str(error), error
    assert error.offset == 128 << 10   # where the failed read began: every byte before it was handed over
    everything, _ = read_records(data, None)
    assert 0 < len(records) < len(everything) and records == everything[:len(records)]


def test_read_ahead_is_two_fixed_buffers_and_leaves_no_thread(tmp_path, monkeypatch):
    import threading
    monkeypatch.setattr(capture, "READ_AHEAD_FROM", 1)
    path = write(tmp_path, "big.pcap", pcap(3000, video_frame(1400)))
    threads = threading.active_count()
    reader, _ = open_file(path)
    ahead = reader._read_ahead
    assert ahead is not None and [len(a) for a in ahead._arenas] == [capture.MAX_BLOCK_BYTES + capture.CHUNK_BYTES] * 2
    records = _records_copied(reader)
    assert len(records) == 3000 and records == read_records(path.read_bytes(), None)[0]
    assert threading.active_count() == threads and reader._read_ahead is None


def _records_copied(reader) -> list[tuple]:
    out: list[tuple] = []
    for batch in reader:
        out += _records([batch])
    return out


def test_the_compiled_pcapng_walk_refuses_unaligned_interface_columns():
    """The interface columns are read as int32, float64 and int64: one that starts at an odd byte (a sliced
    memoryview) is refused, not read through a misaligned pointer (undefined behaviour; UBSan stops there)."""
    from sensor import compiled

    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")

    blocks = ng_epb(video_frame(200), T0) * 3
    columns = [np.array([1], np.int32).tobytes(), np.array([1e-6]).tobytes(), np.array([0.0]).tobytes(),
               np.array([0], np.int64).tobytes()]
    stop, offsets, *_ = compiled.extension.walk_pcapng(blocks, 0, False, 1 << 20, *columns, 0.0)
    assert stop == len(blocks) and len(offsets) == 3 * 8
    for k in range(4):
        shifted = [memoryview(bytearray(1) + c)[1:] if j == k else c for j, c in enumerate(columns)]
        with pytest.raises(ValueError, match="walk_pcapng: .*aligned"):
            compiled.extension.walk_pcapng(blocks, 0, False, 1 << 20, *shifted, 0.0)


# ---- the record walks held to exact records and errors, compiled and in Python --------------------------------
# With sensor/_walk.c built, the Python walks (_walk_pcap_python, the _parse_pcapng loop) see only the blocks the
# C walk hands back; these tests run each case through both, with the same expectations (the mutation check found
# the Python walk's lengths, wire lengths and messages held by nothing else: docs/testing.md, "2026-12-02").
@pytest.fixture(params=["compiled", "python"])
def walk(request, monkeypatch) -> str:
    from sensor import compiled

    on = request.param == "compiled"
    if on and compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    monkeypatch.setattr(compiled, "walk", on)
    monkeypatch.setattr(compiled, "walk_pcapng", on)
    return request.param


def pieces_records(*pieces: bytes) -> tuple[list[tuple], CaptureError | None]:
    """A stream handed over in exactly these pieces: a record that starts a piece starts a walk of its own."""
    it = iter(pieces)
    return drain(CaptureReader(lambda: next(it, b""), "mutant"))


def test_pcap_records_keep_their_lengths_and_times_and_a_wire_length_never_under_the_captured(walk):
    frame = bytes(range(60))
    longest = bytes(capture.MAX_RECORD_BYTES)   # the longest record there is: taken, not called absurd
    data = (pcap_header()
            + struct.pack("<IIII", 100, 250_000, 60, 1500) + frame     # cut by the snap length: wire 1500
            + struct.pack("<IIII", 101, 999_999, 60, 10) + frame       # a wire length under the captured one: 60
            + struct.pack("<IIII", 102, 0, 60, 60) + frame
            + struct.pack("<IIII", 103, 1, len(longest), len(longest)) + longest)
    for chunk in (None, 4096):
        got, error = read_records(data, chunk)
        assert error is None
        assert [(len(f), w, t, lt) for f, w, t, lt in got] == [(60, 1500, 100.25, 1), (60, 60, 101.999999, 1),
                                                                (60, 60, 102.0, 1), (1 << 20, 1 << 20, 103.000001, 1)]
        assert got[0][0] == frame and got[3][0] == longest


@pytest.mark.parametrize("chunk", [None, 5, 4096])
def test_a_pcap_file_cut_short_says_where_and_how_far_into_which_record(walk, chunk):
    frame = bytes(range(60))
    whole = pcap_header() + b"".join(struct.pack("<IIII", 100 + i, 0, 60, 60) + frame for i in range(3))
    record = 16 + 60
    for cut, message in ((5, "truncated pcap record: the file ends 5 bytes into a 16-byte record"),
                         (16 + 30, "truncated pcap record: the file ends 46 bytes into a 76-byte record")):
        got, error = read_records(whole[:24 + 2 * record + cut], chunk)
        assert len(got) == 2
        assert str(error) == f"mutant at byte {24 + 2 * record}: {message}"


def test_simple_packet_blocks_are_cut_to_their_block_and_the_snap_length(walk):
    frame = bytes(range(61))   # padded to 64 in its block
    data = (ng_shb() + ng_idb(snaplen=40) + ng_epb(PHONE_HOME, T0) + ng_spb(frame, 61)   # snap 40: 40 of 61
            + ng_shb() + ng_idb(snaplen=1000) + ng_epb(PHONE_HOME, T0 + 1)
            + ng_spb(frame, 61)              # the padding is not the packet's: 61
            + ng_spb(frame, 1500)            # a packet longer than its block: what the block holds, 64
            + ng_spb(frame, 0xFFFFFFF0)      # a wire length past 2 GiB is no negative one
            + ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0 + 2) + ng_spb(frame, 1500)  # snap 0: no limit but the block's
            + ng_shb() + ng_idb(0xFDE8, snaplen=0xFFFFFFFF) + ng_spb(frame, 61))   # unsigned fields
    got, error = read_records(data, None)
    assert error is None
    padded = frame + bytes(3)
    assert [(f, w, t) for f, w, t, _ in got] == [
        (PHONE_HOME, len(PHONE_HOME), T0), (frame[:40], 61, T0),
        (PHONE_HOME, len(PHONE_HOME), T0 + 1), (frame, 61, T0 + 1), (padded, 1500, T0 + 1),
        (padded, 0xFFFFFFF0, T0 + 1), (PHONE_HOME, len(PHONE_HOME), T0 + 2), (padded, 1500, T0 + 2),
        (frame, 61, T0 + 2)]
    assert got[-1][3] == 0xFDE8


def test_a_simple_packet_block_starting_a_read_takes_the_time_of_the_packet_before(walk):
    head = ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0 + 5)
    got, error = pieces_records(head, ng_spb(video_frame(100)) + ng_epb(PHONE_HOME, T0 + 6))
    assert error is None
    assert [t for _, _, t, _ in got] == [T0 + 5, T0 + 5, T0 + 6]


def test_a_simple_packet_block_before_any_interface_is_an_error_where_it_starts(walk):
    got, error = read_records(ng_shb() + ng_spb(video_frame(100)), None)
    assert got == [] and str(error) == "mutant at byte 28: simple packet before any interface"


def test_obsolete_packet_blocks_read_their_fields_unsigned(walk):
    units = (400_000 << 32) | 0x80000001   # the low word's top bit set
    head = ng_shb() + ng_idb() + ng_opb(PHONE_HOME, units=units)
    got, error = read_records(head + ng_opb(PHONE_HOME, iface=0xFFFF, units=units), None)
    assert [(f, t) for f, _, t, _ in got] == [(PHONE_HOME, units * 1e-6)]
    assert str(error) == f"mutant at byte {len(head)}: packet for undeclared interface 65535"
    got, error = read_records(head + ng_opb(PHONE_HOME, units=units, caplen=0xFFFFFFFF), None)
    assert len(got) == 1 and str(error) == f"mutant at byte {len(head)}: packet length 4294967295 exceeds its block"


@pytest.mark.parametrize("kind", ["enhanced", "obsolete"])
def test_a_packet_running_into_its_blocks_padding_or_past_it(walk, kind):
    """A frame of 61 bytes is padded to 64 in its block: a captured length of up to 64 stays in the block, 65 runs
    into the block's trailing length."""
    head = ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0)
    frame = bytes(range(61))
    for caplen, fits in ((64, True), (65, False), (68, False)):
        if kind == "enhanced":
            block = bytearray(ng_epb(frame, T0 + 1))
            block[20:24] = struct.pack("<I", caplen)
        else:
            block = bytearray(ng_opb(frame, T0 + 1, caplen=caplen))
        got, error = read_records(head + bytes(block), None)
        if fits:
            assert error is None and got[1][0] == frame + bytes(3)
        else:
            assert len(got) == 1
            assert str(error) == f"mutant at byte {len(head)}: packet length {caplen} exceeds its block"


@pytest.mark.parametrize("chunk", [None, 5, 4096])
def test_a_pcapng_file_cut_short_says_where_and_how_far_into_which_block(walk, chunk):
    """Cut inside a block's 8-byte header only "a block is at least 12 bytes" is known; from 8 bytes in, the
    block's own length."""
    head = ng_shb() + ng_idb() + ng_epb(PHONE_HOME, T0)
    block = ng_epb(video_frame(100), T0 + 1)
    for cut, message in ((5, "ends 5 bytes into a 12-byte record"),
                         (8, f"ends 8 bytes into a {len(block)}-byte record"),
                         (40, f"ends 40 bytes into a {len(block)}-byte record")):
        got, error = read_records(head + block[:cut], chunk)
        assert [f for f, *_ in got] == [PHONE_HOME]
        assert str(error) == f"mutant at byte {len(head)}: truncated pcapng block: the file {message}"


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_batch_columns_have_their_types_from_either_walk(walk, kind):
    """int64 offsets and lengths, float64 times, int32 link types, whichever walk made them: the pcapng walk in
    Python makes them from lists, and a second interface's packets are taken by the Python walk either way."""
    data = SAMPLES[kind] if kind == "pcap" else SAMPLES[kind] + ng_idb(113, order=">") + ng_epb(
        PHONE_HOME, T0 + 5, iface=1, order=">")
    reader = CaptureReader(None, "types", readinto=io.BytesIO(data).readinto, size_hint=len(data))
    for batch in reader:
        assert [c.dtype for c in (batch.offsets, batch.caplen, batch.wirelen, batch.ts, batch.linktype)] == [
            np.int64, np.int64, np.int64, np.float64, np.int32]


def test_the_compiled_walks_run_only_while_their_switches_are_on(monkeypatch):
    """compiled.walk (classic pcap) and compiled.walk_pcapng: off, or without the extension, the Python walk
    reads every record; a switch the reader ignored would leave the tests above comparing the C walk with itself."""
    import types

    from sensor import compiled

    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    real = compiled.extension
    asked: list[str] = []
    spy = types.SimpleNamespace(walk=lambda *a: (asked.append("walk"), real.walk(*a))[1],
                                walk_pcapng=lambda *a: (asked.append("walk_pcapng"), real.walk_pcapng(*a))[1])
    for kind, switch in (("pcap", "walk"), ("pcapng", "walk_pcapng")):
        for extension, on in ((spy, False), (None, True), (None, False), (spy, True)):
            monkeypatch.setattr(compiled, "walk", on)
            monkeypatch.setattr(compiled, "walk_pcapng", on)
            monkeypatch.setattr(compiled, "extension", extension)
            asked.clear()
            assert read_records(SAMPLES[kind], None) == REFERENCE[kind]
            assert set(asked) == ({switch} if extension is not None and on else set()), (kind, extension, on)


def _trailer_mismatch() -> bytes:
    block = bytearray(ng_epb(video_frame(), T0 + 5))
    block[-4:] = struct.pack("<I", len(block) + 4)
    return bytes(block)


DAMAGED_BLOCKS = {   # the block, and the one line about it
    "short-epb": (short_block("EPB", 28), "pcapng enhanced packet block of 28 bytes is too short for its fields"),
    "short-idb": (short_block("IDB", 16), "pcapng interface description block of 16 bytes is too short for its fields"),
    "short-opb": (short_block("OPB", 28), "pcapng packet block of 28 bytes is too short for its fields"),
    "short-shb": (short_block("SHB", 24), "pcapng section header block of 24 bytes is too short for its fields"),
    "under-12": (struct.pack("<II", EPB, 8), "absurd pcapng block length 8"),
    "absurd-length": (struct.pack("<II", EPB, HUGE) + bytes(8), f"absurd pcapng block length {HUGE}"),
    "just-over-the-bound": (struct.pack("<II", 0xBAD, capture.MAX_BLOCK_BYTES + 4),
                            f"absurd pcapng block length {capture.MAX_BLOCK_BYTES + 4}"),
    "not-a-multiple-of-4": (struct.pack("<II", EPB, 34) + bytes(26), "absurd pcapng block length 34"),
    "trailer-mismatch": (_trailer_mismatch(), f"pcapng block length {len(_trailer_mismatch())} does not match the "
                                              "copy at the block's end"),
    "idb-option-overruns": (ng_idb(options=struct.pack("<HH", 9, 200) + bytes(8)),
                            "pcapng interface option 9 of 200 bytes overruns its block"),
    "idb-tsoffset-cut": (ng_idb(options=struct.pack("<HH", 14, 8) + bytes(4)),
                         "pcapng interface option 14 of 8 bytes overruns its block"),
    "idb-option-header-last": (ng_idb(options=struct.pack("<HH", 14, 8)),
                               "pcapng interface option 14 of 8 bytes overruns its block"),
    "idb-option-of-64-kib": (ng_idb(options=struct.pack("<HH", 2, 0xFFF8) + bytes(8)),
                             "pcapng interface option 2 of 65528 bytes overruns its block"),
    "packet-longer-than-block": (ng_block(EPB, struct.pack("<IIIII", 0, 0, 0, 4000, 4000) + bytes(64)),
                                 "packet length 4000 exceeds its block"),
    "undeclared-interface": (ng_epb(video_frame(), T0 + 5, iface=7), "packet for undeclared interface 7"),
    "section-bad-byte-order": (struct.pack("<II", SHB, 28) + bytes(20),
                               "pcapng section header with bad byte-order magic"),
}


@pytest.mark.parametrize("case", DAMAGED_BLOCKS)
def test_a_damaged_block_is_one_line_at_its_start_after_every_packet_before_it(walk, case):
    damage, message = DAMAGED_BLOCKS[case]
    good = pcapng(4)
    after = b"".join(ng_epb(video_frame(), T0 + 10 + i) for i in range(3))
    for chunk in (None, 64):
        got, error = read_records(good + damage + after, chunk)
        assert got == read_records(good, None)[0]
        assert str(error) == f"mutant at byte {len(good)}: {message}"


@pytest.mark.parametrize("name", ["EPB", "IDB", "SPB", "OPB", "SHB"])
def test_a_block_exactly_as_long_as_its_fields_is_no_damage(walk, name):
    got, error = read_records(pcapng(3) + short_block(name, MIN_BLOCK[name]), None)
    assert error is None and len(got) == 3 + (name in ("EPB", "SPB", "OPB"))


def test_blocks_of_the_smallest_and_largest_lengths_are_read_past(walk):
    largest = ng_block(0xBAD, bytes(capture.MAX_BLOCK_BYTES - 12))
    assert len(largest) == capture.MAX_BLOCK_BYTES
    got, error = read_records(pcapng(3) + ng_block(0xBAD, b"") + largest + ng_epb(PHONE_HOME, T0 + 9), None)
    assert error is None and [t for *_, t, _ in got][-1] == T0 + 9 and len(got) == 4


@pytest.mark.parametrize("chunk", [None, 9])
def test_a_section_header_cut_before_its_byte_order_is_a_12_byte_block_cut_short(walk, chunk):
    good = pcapng(3)
    got, error = read_records(good + ng_shb()[:10], chunk)
    assert len(got) == 3
    assert str(error) == (f"mutant at byte {len(good)}: truncated pcapng block: the file ends 10 bytes into a "
                          "12-byte record")


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


@pytest.mark.parametrize(("options", "scale", "offset"), [
    (b"", 1e-6, 0.0),
    (_option(9, bytes([3])), 1e-3, 0.0),                           # if_tsresol, a power of ten
    (_option(9, bytes([0x80 | 10])), 2.0 ** -10, 0.0),             # ... a power of two
    (_option(14, struct.pack("<q", 7200)), 1e-6, 7200.0),          # if_tsoffset, in seconds
    (_option(14, struct.pack("<q", -5)) + _option(9, bytes([9])), 1e-9, -5.0),
    (_option(2, b"eth") + _option(9, bytes([3])), 1e-3, 0.0),       # an option padded to 4 bytes before it
    (_option(9, b"") + _option(14, bytes(4)) + _option(9, bytes([4, 0, 0])), 1e-4, 0.0),   # no value, wrong size
    (_option(0, b"") + _option(9, bytes([3])), 1e-6, 0.0),          # opt_endofopt: nothing after it is read
    (_option(0, b"") + struct.pack("<HH", 9, 400), 1e-6, 0.0),      # ... not even an option overrunning the block
], ids=["none", "tsresol-10", "tsresol-2", "tsoffset", "tsoffset-ns", "padded-before", "ignored", "end", "end-overrun"])
def test_interface_options_set_the_time_of_its_packets(walk, options, scale, offset):
    units = 1_700_000_123_456
    data = ng_shb() + ng_idb(options=options) + ng_block(EPB, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF,
                                                                          60, 60) + bytes(60))
    for order in ("<", ">"):
        if order == ">":   # the same interface, big-endian
            data = (ng_shb(">") + ng_block(1, struct.pack(">HHI", 1, 0, 0) + _swap_options(options), ">")
                    + ng_block(EPB, struct.pack(">IIIII", 0, units >> 32, units & 0xFFFFFFFF, 60, 60) + bytes(60), ">"))
        got, error = read_records(data, None)
        assert error is None and [t for *_, t, _ in got] == [units * scale + offset], order


def _swap_options(options: bytes) -> bytes:
    """Little-endian options (as _option makes them) in big-endian order: codes, lengths and tsoffset's value."""
    out, pos = b"", 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from("<HH", options, pos)
        value = options[pos + 4:pos + 4 + length + (-length % 4)]
        if code == 14 and length == 8:
            value = struct.pack(">q", struct.unpack("<q", value)[0])
        out += struct.pack(">HH", code, length) + value
        pos += 4 + len(value)
    return out


@pytest.mark.parametrize(("magic", "order", "scale"), [(0xA1B2C3D4, "<", 1e-6), (0xA1B2C3D4, ">", 1e-6),
                                                       (0xA1B23C4D, "<", 1e-9), (0xA1B23C4D, ">", 1e-9)],
                         ids=["us-little", "us-big", "ns-little", "ns-big"])
def test_classic_pcap_in_either_byte_order_and_resolution(walk, magic, order, scale):
    """The header's link type loses its upper bits (FCS information, not the type); the record's fractions are
    micro- or nanoseconds."""
    frame = bytes(range(60))
    data = (struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 0x1000_0000 | 113)
            + struct.pack(order + "IIII", 1_700_000_000, 123_456, 60, 1514) + frame
            + struct.pack(order + "IIII", 1_700_000_001, 999, 60, 60) + frame
            + struct.pack(order + "IIII", 0x8000_0000, 0, 60, 60) + frame)      # seconds past 2038: unsigned
    got, error = read_records(data + struct.pack(order + "IIII", 1, 0, 0xFFFFFFFF, 60), None)
    assert got == [(frame, 1514, 1_700_000_000 + 123_456 * scale, 113), (frame, 60, 1_700_000_001 + 999 * scale, 113),
                   (frame, 60, 2_147_483_648.0, 113)]
    assert str(error) == f"mutant at byte {len(data)}: absurd record length 4294967295 bytes (corrupt file?)"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "mutant at byte 0: empty file: not a pcap or pcapng capture"),
    (b"\xd4\xc3", "mutant at byte 0: file too short to be a capture"),
    (b"GIF89a" + bytes(40), "mutant at byte 0: not a pcap or pcapng file (magic 47494638)"),
    (pcap_header()[:23], "mutant at byte 0: truncated pcap file header"),
    (pcap_header()[:4], "mutant at byte 0: truncated pcap file header"),
    (pcap_header(), None),
    (pcap_header() + struct.pack("<IIII", 0, 0, HUGE, HUGE) + bytes(64),
     f"mutant at byte 24: absurd record length {HUGE} bytes (corrupt file?)"),
    (ng_shb(), None),
], ids=["empty", "3-bytes", "gif", "pcap-header-cut", "pcap-magic-only", "pcap-header-only", "absurd-first-record",
        "section-header-only"])
def test_what_a_capture_starts_with(walk, data, message):
    for chunk in (None, 1):
        got, error = read_records(data, chunk)
        assert got == [] and (str(error) if error else None) == message


def test_a_simple_packet_block_before_any_packet_has_time_zero(walk):
    got, error = read_records(ng_shb() + ng_idb() + ng_spb(video_frame(100)) + ng_epb(PHONE_HOME, T0), None)
    assert error is None and [t for *_, t, _ in got] == [0.0, T0]


def test_a_read_error_comes_after_everything_before_it_and_says_where_the_read_began():
    data = pcap(400, video_frame(1000))
    source = _Chunks(data, 64 << 10, fail_at=128 << 10)
    records, error = drain(CaptureReader(None, "mutant", readinto=source.readinto, size_hint=len(data)))
    assert str(error) == f"mutant at byte {128 << 10}: cannot read: Input/output error"
    everything, _ = read_records(data, None)
    assert 0 < len(records) < len(everything) and records == everything[:len(records)]


def test_the_compiled_pcapng_walk_takes_a_big_endian_sections_packets_and_a_later_interfaces(monkeypatch):
    """The section's byte order reaches the C walk: read as little-endian, a big-endian section's packet blocks
    would all be handed back to the Python walk (the same records, so only this sees it)."""
    import types

    from sensor import compiled

    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    real = compiled.extension
    taken: list[int] = []

    def walk_pcapng(*args):
        result = real.walk_pcapng(*args)
        taken.append(len(result[1]) // 8)
        return result

    monkeypatch.setattr(compiled, "extension", types.SimpleNamespace(walk=real.walk, walk_pcapng=walk_pcapng))
    frames = [video_frame(100 + i) for i in range(5)]
    data = ng_shb(">") + ng_idb(order=">") + b"".join(ng_epb(f, T0 + i, order=">") for i, f in enumerate(frames))
    got, error = read_records(data, None)
    assert error is None and [f for f, *_ in got] == frames
    assert sum(taken) == 5
    # and an interface declared after packets: the C walk is given it, and takes its packets too
    taken.clear()
    data = (ng_shb() + ng_idb() + ng_epb(frames[0], T0) + ng_idb(113)
            + b"".join(ng_epb(f, T0 + i, iface=i % 2) for i, f in enumerate(frames)))
    got, error = read_records(data, None)
    assert error is None and [lt for *_, lt in got] == [1, 1, 113, 1, 113, 1]
    assert sum(taken) == 6


def test_read_ahead_carries_over_up_to_its_headroom_and_keeps_answering_at_the_end():
    from sensor.readahead import ReadAhead

    ahead = ReadAhead(_Chunks(b"abcdefgh", 8), 8, 4)   # type: ignore[arg-type]
    # its thread is named (for a profiler's or a debugger's list) and a daemon (it never holds the process open)
    assert ahead._thread is not None and (ahead._thread.name, ahead._thread.daemon) == ("capture-read-ahead", True)
    view, got = ahead.take(b"1234")   # exactly the headroom
    assert (bytes(view), got) == (b"1234abcdefgh", 8)
    with pytest.raises(ValueError) as raised:
        ahead.take(b"12345")
    assert str(raised.value) == "read-ahead: 5 bytes carried over, room for 4"
    for _ in range(2):   # the end, and asked again after it
        view, got = ahead.take(b"xy")
        assert (bytes(view), got) == (b"xy", 0)
    ahead.close()


def test_a_closed_reader_is_not_read_again():
    reader = CaptureReader(None, "done", readinto=io.BytesIO(SAMPLES["pcap"]).readinto)
    assert len(list(reader)) == 1
    with pytest.raises(ValueError) as raised:
        iter(reader).__next__()
    assert str(raised.value) == "done: capture reader already closed"


def test_a_reader_closed_between_its_batches_ends_them_quietly():
    """close() while the consumer is between batches (a stop on the way): the next batch asked for is the end,
    without an error about the record that was not read."""
    data = pcap(300, video_frame(1000))
    pieces = iter([data[i:i + 4096] for i in range(0, len(data), 4096)])
    reader = CaptureReader(lambda: next(pieces, b""), "stopped")
    batches = iter(reader)
    assert len(next(batches)) > 0
    reader.close()
    assert list(batches) == []


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_read_ahead_handing_over_one_byte_at_a_time_reads_the_whole_file(kind):
    assert read_ahead_records(SAMPLES[kind], 1) == REFERENCE[kind]
