"""Capture stage: turn a pcap/pcapng byte stream (a file, or dumpcap's pipe through sensor/live.py) into packet
batches.

A batch is one read chunk plus arrays of record offsets, lengths, timestamps and link types, so that the decode
stage can work on whole arrays instead of one Python object per packet.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import thread_time_ns
from typing import TYPE_CHECKING

import numpy as np

from sensor import compiled
from sensor.errors import CamwatchError, CaptureError
from sensor.mapped import Damaged, MappedFile
from sensor.readahead import ReadAhead

if TYPE_CHECKING:
    from sensor.decode import Decoded

CHUNK_BYTES = 8 << 20   # thousands of video frames per batch: numpy's per-call overhead amortised
# A capture of big packets (video) is read in chunks of about CHUNK_RECORDS records, up to MAX_CHUNK_GROWTH times
# CHUNK_BYTES, sized from the batch before (chunk_for): the pipeline pays for each batch (its plan, the hand-over
# between the reading thread and the pipeline, a group in the flow table for each flow the batch holds), and at
# ~6,400 video packets a batch that was ~7% of a whole replay of 1,000 cameras. Small packets (control traffic,
# floods) stay at CHUNK_BYTES, already tens of thousands of records: a flood in 32 MiB chunks was 7% slower. The
# memory map keeps its last slices' pages (sensor.mapped.KEEP_SLICES), so a video replay holds up to ~4 x 32 MiB of
# the file mapped (docs/benchmarks.md, issue 16, 2 December).
CHUNK_RECORDS = 24_576
MAX_CHUNK_GROWTH = 4
# A live source with nothing to hand over says so this often (an empty batch): flows expire and a new flow waiting
# for its name (sensor.pipeline.NAME_WAIT) is judged on the wall clock, within a second of its first packet.
IDLE_TICK = 0.1
# Larger than any real link MTU with headroom for jumbo and loopback captures; a longer record is corruption.
MAX_RECORD_BYTES = 1 << 20
# Files of at least this many bytes are read ahead (sensor.readahead): the next chunk read by a second thread while
# this one is processed. Off (0) for now: on the shared 2-core test machine, with no core to spare, the reading
# thread waited for a CPU and replay was 10-40% slower with it, not faster (docs/benchmarks.md). To try it where a
# core is idle: CHUNK_BYTES + 1, and bench/read_floor.py runs both ways side by side.
READ_AHEAD_FROM = 0
# Regular files at least this big are read through a memory map (sensor.mapped): no copy of every byte, 5-10% less
# CPU for the whole replay (docs/benchmarks.md, issue 16 item 3). Safe since the map is guarded (sensor/_mapguard.c):
# a file truncated under the reader, or a disk failing under it, ends the read with a one-line CaptureError after
# everything before the cut, as a damaged file does, instead of SIGBUS. Smaller files gain nothing from a map (one
# chunk) and pay its set-up; 0 reads every file with readinto.
MAP_FROM = CHUNK_BYTES


def chunk_for(record_bytes: int, base: int) -> int:
    """The size of the next chunk of a reader of `base`-byte chunks, whose last batch's records took `record_bytes`
    each on average (0: none walked yet): about CHUNK_RECORDS of them, from `base` up to MAX_CHUNK_GROWTH times it.
    The mapped and the readinto reader both follow it, so that their batches end in the same places
    (tests/unit/test_mapped.py)."""
    return min(max(base, record_bytes * CHUNK_RECORDS), base * MAX_CHUNK_GROWTH)


PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = 0x0A0D0D0A
# A pcapng block holds at most one record of MAX_RECORD_BYTES plus its options; a longer one is corruption, caught
# before its length sizes any read.
MAX_BLOCK_BYTES = MAX_RECORD_BYTES + (64 << 10)
_NG_HEADER = {"<": struct.Struct("<II"), ">": struct.Struct(">II")}   # block type, block length
# The shortest block of each type the reader looks inside: header and trailer (12 bytes) plus its fixed fields.
_NG_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}   # a section header's magic, as read
_NG_MIN_BLOCK = {PCAPNG_SHB: 28, 1: 20, 2: 32, 3: 16, 6: 32}
_NG_BLOCK_NAME = {PCAPNG_SHB: "section header", 1: "interface description", 2: "packet", 3: "simple packet",
                  6: "enhanced packet"}


@dataclass(eq=False, repr=False)
class Batch:
    """Frames read from a capture, as columns over one buffer."""

    data: bytes | memoryview   # valid until the reader is asked for the next batch
    offsets: np.ndarray   # int64, start of each frame in `data`
    caplen: np.ndarray    # int64, bytes captured
    wirelen: np.ndarray   # int64, bytes on the wire
    ts: np.ndarray        # float64, epoch seconds
    linktype: np.ndarray  # int32
    # Already decoded (sensor.overlap, on the reading thread): one Decoded per decode.DECODE_SLICE rows, as
    # Sensor.process would make them; None to have the pipeline decode it. A selection is not decoded.
    decoded: tuple[Decoded, ...] | None = field(default=None, kw_only=True, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, index: np.ndarray | slice) -> Batch:
        return Batch(self.data, self.offsets[index], self.caplen[index], self.wirelen[index],
                     self.ts[index], self.linktype[index])


class _Records:
    """Accumulates record fields as Python lists (or takes ready arrays from the C walk) for one batch."""

    __slots__ = ("offsets", "caplen", "wirelen", "ts", "linktype", "arrays", "pieces")

    def __init__(self):
        self.offsets: list[int] = []
        self.caplen: list[int] = []
        self.wirelen: list[int] = []
        self.ts: list[float] = []
        self.linktype: list[int] = []
        self.arrays: tuple | None = None
        # The pcapng walk's record runs in file order, each the C walk's arrays or the lists' records as arrays;
        # the batch joins them (one run, the usual case, is taken as it is).
        self.pieces: list[tuple] = []

    def __len__(self) -> int:
        if self.arrays is not None:
            return len(self.arrays[0])
        return sum(len(piece[0]) for piece in self.pieces) + len(self.offsets)

    def add(self, arrays: tuple) -> None:
        """Append a run of records (five arrays) after those already taken, the lists' included."""
        if self.offsets:
            self.pieces.append(self._listed())
            self.offsets, self.caplen, self.wirelen, self.ts, self.linktype = [], [], [], [], []
        self.pieces.append(arrays)

    def batch(self, data: bytes | memoryview) -> Batch:
        if self.arrays is not None:
            return Batch(data, *self.arrays)
        if self.pieces:
            pieces = self.pieces + ([self._listed()] if self.offsets else [])
            if len(pieces) == 1:
                return Batch(data, *pieces[0])
            return Batch(data, *(np.concatenate(column) for column in zip(*pieces, strict=True)))
        return Batch(data, *self._listed())

    def _listed(self) -> tuple:
        return (
            np.array(self.offsets, dtype=np.int64),
            np.array(self.caplen, dtype=np.int64),
            np.array(self.wirelen, dtype=np.int64),
            np.array(self.ts, dtype=np.float64),
            np.array(self.linktype, dtype=np.int32),
        )


class CaptureReader:
    """Reads classic pcap (µs/ns, either byte order) and pcapng from a byte source.

    `read` returns bytes, b"" at end of stream, or None when a live source had nothing within its tick; on None
    the reader yields an empty batch so the caller can run wall-clock housekeeping. `readinto`, when given, is
    used instead: it fills a buffer and returns the bytes it put there, 0 at the end or None like `read`.

    `close` (called once) releases the source. The reader calls it itself as soon as iteration ends, whether at
    the end of the data, on a CaptureError or because the consumer stopped early; it is also a context manager,
    for a reader that may never be iterated. `size_hint`, the source's size when known, keeps the buffer no larger
    than the file.
    """

    def __init__(self, read: Callable[[], bytes | None] | None, name: str,
                 readinto: Callable[[memoryview], int | None] | None = None, *,
                 size_hint: int | None = None, close: Callable[[], None] | None = None,
                 read_ahead: ReadAhead | MappedFile | None = None):
        self._read = read
        # Instead of readinto: the file's chunks, each read while the last is used, or slices of its memory map.
        self._read_ahead = read_ahead
        # Files are read into one reused buffer: a batch's data is only valid until the next batch is requested,
        # which the pipeline honours (it finishes a batch before asking for the next) and which saves copying
        # every chunk onto the previous chunk's partial record. Allocated on the first read, sized then.
        self._readinto = readinto
        self._arena: bytearray | None = None
        self._record_bytes = 0   # the last batch's bytes per record, which size the next chunk (chunk_for)
        self._size_hint = size_hint
        self._closer = close
        self._closed = False
        self.name = name
        self.bytes_consumed = 0   # file offset of the first byte not yet parsed
        self._buf: bytes | memoryview = b""
        self._eof = False
        self._pcap = False
        # pcap state
        self._pcap_hdr: struct.Struct | None = None
        self._pcap_scale = 1e-6
        self._pcap_linktype = 1
        # pcapng state
        self._ng_endian = "<"
        self._last_ts = 0.0
        self._pending: CaptureError | None = None
        self._pcap_big_endian = False
        self._ng_ifaces: list[tuple[int, float, float, int]] = []  # linktype, ts scale, ts offset, snaplen
        self._ng_columns: tuple[bytes, bytes, bytes, bytes] | None = None   # the same as columns, for the C walk

    # ---- lifetime --------------------------------------------------------------------------------------
    @property
    def mapped(self) -> bool:
        """Read through a memory map: a batch's data stays valid while the next batch is read (sensor.overlap),
        unlike the reused buffer of readinto and read-ahead."""
        return isinstance(self._read_ahead, MappedFile)

    def close(self) -> None:
        """Release the source and the buffer. A batch already handed out stays readable: it holds its own
        reference to the buffer."""
        self._closed = True
        self._buf = b""
        self._arena = None
        # Dropping the callables too: they hold the file object, and a reader kept around after its file was
        # read (in a traceback, say) must not keep the descriptor or the buffer alive with it.
        self._read = self._readinto = None
        read_ahead, self._read_ahead = self._read_ahead, None
        if read_ahead is not None:
            read_ahead.close()
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- stream plumbing -------------------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Read until the buffer holds `need` bytes; False at end of stream."""
        while len(self._buf) < need:
            if self._eof:
                return False
            if self._more() is False:
                self._eof = True
                return False
        return True

    def _more(self, want: int = 0) -> bool | None:
        """Append more input after the buffer's contents: True if some came, False at end of stream, None when a
        live source had nothing within its tick. `want` is the size of the incomplete record at the buffer's
        start; the parsers have checked it against MAX_BLOCK_BYTES, so it never sizes anything absurd."""
        if self._closed:
            return False
        source = self._read_ahead
        if source is not None:
            rest = bytes(self._buf)
            try:
                self._buf, ahead = (source.take(rest, chunk_for(self._record_bytes, source.base_chunk))
                                    if isinstance(source, MappedFile)
                                    else source.take(rest))   # read-ahead's buffers are of one size
            except OSError as exc:
                raise self._error(f"cannot read: {exc.strerror or exc}", len(rest)) from None
            except Damaged as exc:   # everything before the incomplete record in hand was processed
                raise self._error(str(exc)) from None
            return ahead > 0
        if self._readinto is None:
            assert self._read is not None   # a reader is given `read` or `readinto`; close() returned above
            came = self._read()
            if came is None:
                return None
            if not came:
                return False
            assert isinstance(self._buf, bytes)   # only the readinto path makes it a memoryview
            self._buf += came
            return True
        rest = bytes(self._buf)   # the incomplete record at the end of the last chunk: small
        # a pipe's read gives what it holds, whatever the buffer: a bigger chunk would only be memory
        chunk = chunk_for(self._record_bytes, CHUNK_BYTES) if self._size_hint is not None else CHUNK_BYTES
        size = max(chunk, 2 * (len(rest) + want))
        if self._size_hint is not None:
            # No bigger than what is left of the file, plus room to see its end: bytearray zeroes what it
            # allocates, and 8 MiB for each of a thousand 3 KiB files cost more than reading them.
            size = min(size, max(self._size_hint - self.bytes_consumed, len(rest)) + 4096)
        arena = self._arena
        if arena is None or len(arena) < size or len(rest) == len(arena):
            arena = self._arena = bytearray(max(size, 2 * len(arena)) if arena is not None else size)
        arena[:len(rest)] = rest
        try:
            got = self._readinto(memoryview(arena)[len(rest):size])   # the chunk, not a grown arena: as the map slices
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror or exc}", len(rest)) from None
        self._buf = memoryview(arena)[:len(rest) + (got or 0)]
        return None if got is None else got > 0

    def _error(self, message: str, at: int = 0) -> CaptureError:
        return CaptureError(message, self.bytes_consumed + at, self.name)

    def _start(self) -> None:
        if not self._fill(4):
            if self._buf:
                raise self._error("file too short to be a capture")
            raise self._error("empty file: not a pcap or pcapng capture")
        magic = bytes(self._buf[:4])
        if magic in PCAP_MAGIC:
            endian, scale = PCAP_MAGIC[magic]
            if not self._fill(24):
                raise self._error("truncated pcap file header")
            _, _, _, _, snaplen, network = struct.unpack(endian + "HHiIII", self._buf[4:24])
            self._pcap_hdr = struct.Struct(endian + "IIII")
            self._pcap_big_endian = endian == ">"
            self._pcap_scale = scale
            # The upper bits of the link-type field carry FCS information, not the type.
            self._pcap_linktype = network & 0xFFFF
            self._consume(24)
            self._pcap = True
            self._kind = "pcap record"
        elif struct.unpack("<I", magic)[0] == PCAPNG_SHB:
            self._kind = "pcapng block"
        else:
            raise self._error(f"not a pcap or pcapng file (magic {magic.hex()})")

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self.bytes_consumed += n

    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise ValueError(f"{self.name}: capture reader already closed")
        try:
            yield from self._batches()
        finally:
            self.close()

    def _batches(self) -> Iterator[Batch]:
        self._start()
        # A local, not an attribute: a bound method stored on the reader would make a reference cycle, which
        # only the garbage collector frees, and the CLI has tuned that to run seldom.
        parse = self._parse_pcap if self._pcap else self._parse_pcapng
        while True:
            records, used, need = self._parse(parse)
            if len(records):
                self._record_bytes = used // len(records)
                yield records.batch(self._buf)
            self._consume(used)
            if self._pending is not None:
                # Records before the corrupt one were handed over above; now the reader stops. Neither the reader
                # nor a local keeps the error: its traceback holds this frame, and a cycle through it would keep
                # the reader until the collector runs.
                try:
                    raise self._pending
                finally:
                    self._pending = None
            # The buffer now holds at most one incomplete record.
            if self._eof:
                if self._buf:
                    raise self._error(f"truncated {self._kind}: the file ends {len(self._buf)} bytes into a "
                                      f"{need}-byte record")
                return
            more = self._more(need)
            if more is None:
                yield _empty_batch()
            elif not more:
                self._eof = True

    _kind = "capture"

    def _parse(self, parse: Callable[[bytes | memoryview, _Records], tuple[int, int]]) -> tuple[_Records, int, int]:
        """The buffer's records. A memory-mapped file cut under the reader while the walk ran reads as zeros past
        the cut (sensor/mapped.py): the walk is then done again, from the same parser state, over only what lies
        before the cut, as if the file ended there; the next read reports the cut."""
        mapped = self._read_ahead if isinstance(self._read_ahead, MappedFile) else None
        state = self._parser_state() if mapped is not None else ()
        records = _Records()
        used, need = parse(self._buf, records)
        # Each pass walks a shorter buffer, so this ends: a cut before the buffer's start (behind the chunk, in
        # records handed over already) leaves it empty, and an empty buffer is never walked twice (it hung).
        while mapped is not None and (cut := mapped.intact_to()) is not None and \
                (keep := max(cut - self.bytes_consumed, 0)) < len(self._buf):
            (self._pending, self._ng_endian, ifaces, self._ng_columns, self._last_ts) = state
            self._ng_ifaces = list(ifaces)
            self._buf = self._buf[:keep]
            records = _Records()
            used, need = parse(self._buf, records)
        return records, used, need

    def _parser_state(self) -> tuple:
        return self._pending, self._ng_endian, list(self._ng_ifaces), self._ng_columns, self._last_ts

    # ---- classic pcap ----------------------------------------------------------------------------------
    def _fail(self, message: str, pos: int) -> None:
        self._pending = CaptureError(message, self.bytes_consumed + pos, self.name)

    def _parse_pcap(self, data: bytes | memoryview, out: _Records) -> tuple[int, int]:
        if compiled.extension is not None and compiled.walk:
            paging = self._read_ahead.paging if isinstance(self._read_ahead, MappedFile) else None
            populate = paging is not None and paging.populate()
            started = thread_time_ns()
            used, need, bad, bad_length, offsets, caplens, wirelens, stamps = compiled.extension.walk(
                data, self._pcap_big_endian, self._pcap_scale, MAX_RECORD_BYTES, populate)
            if paging is not None:
                paging.walked(populate, thread_time_ns() - started, len(data))
            n = len(offsets) // 8
            if n:
                out.arrays = (np.frombuffer(offsets, np.int64), np.frombuffer(caplens, np.int64),
                              np.frombuffer(wirelens, np.int64), np.frombuffer(stamps, np.float64),
                              np.full(n, self._pcap_linktype, dtype=np.int32))
        else:
            used, need, bad, bad_length = self._walk_pcap_python(data, out)
        if bad >= 0:
            self._fail(f"absurd record length {bad_length} bytes (corrupt file?)", bad)
        return used, need

    def _walk_pcap_python(self, data: bytes | memoryview, out: _Records) -> tuple[int, int, int, int]:
        """The record walk in Python; sensor/_walk.c does the same, faster. Returns (used, need, offset of a
        record with an absurd length or -1, that length)."""
        assert self._pcap_hdr is not None   # set by _start before any record is walked
        unpack = self._pcap_hdr.unpack_from
        scale = self._pcap_scale
        end = len(data)
        pos = 0
        offsets, caplens, wirelens, stamps = out.offsets, out.caplen, out.wirelen, out.ts
        bad = bad_length = -1
        need = 0
        while pos + 16 <= end:
            sec, frac, caplen, wirelen = unpack(data, pos)
            if caplen > MAX_RECORD_BYTES:
                bad, bad_length = pos, caplen
                break
            if pos + 16 + caplen > end:
                need = 16 + caplen
                break
            offsets.append(pos + 16)
            caplens.append(caplen)
            wirelens.append(wirelen if wirelen >= caplen else caplen)
            stamps.append(float(sec) + float(frac) * scale)
            pos += 16 + caplen
        if bad < 0 and need == 0 and pos < end:
            need = 16
        out.linktype.extend([self._pcap_linktype] * (len(offsets) - len(out.linktype)))
        return pos, need, bad, bad_length

    # C901 debt, complexity 20 (limit 15, pyproject.toml [tool.ruff.lint.mccabe]): one branch per pcapng block
    # kind in the record walk's hot loop; split it before it grows.
    def _parse_pcapng(self, data: bytes | memoryview, out: _Records) -> tuple[int, int]:
        end = len(data)
        pos = 0
        need = 0
        fast = compiled.extension is not None and compiled.walk_pcapng
        while pos + 8 <= end:
            # The C walk takes the run of sound packet blocks from here; this loop takes the block it stops at.
            if fast and (pos := self._ng_walk_compiled(data, pos, out)) + 8 > end:
                break
            block = self._ng_block_at(data, pos, end)
            if isinstance(block, int):
                need = block
                break
            btype, blen = block if isinstance(block, tuple) else (0, 0)
            problem = block if isinstance(block, str) else self._ng_take(btype, blen, data, pos, out)
            if problem is not None:
                self._fail(problem, pos)
                break
            pos += blen
        if pos < end and not need and self._pending is None:
            need = 12   # a block header cut short: all that is known is that a block is at least this long
        return pos, need

    def _ng_walk_compiled(self, data: bytes | memoryview, pos: int, out: _Records) -> int:
        """The packet blocks from pos walked in C (sensor/_walk.c walk_pcapng) into out; where it stopped."""
        assert compiled.extension is not None
        if self._ng_columns is None:
            ifaces = self._ng_ifaces
            self._ng_columns = (np.array([i[0] for i in ifaces], np.int32).tobytes(),
                                np.array([i[1] for i in ifaces], np.float64).tobytes(),
                                np.array([i[2] for i in ifaces], np.float64).tobytes(),
                                np.array([i[3] for i in ifaces], np.int64).tobytes())
        last_ts = out.ts[-1] if out.ts else self._last_ts
        stop, offsets, caplens, wirelens, stamps, links = compiled.extension.walk_pcapng(
            data, pos, self._ng_endian == ">", MAX_BLOCK_BYTES, *self._ng_columns, last_ts)
        if offsets:
            ts = np.frombuffer(stamps, np.float64)
            out.add((np.frombuffer(offsets, np.int64), np.frombuffer(caplens, np.int64),
                     np.frombuffer(wirelens, np.int64), ts, np.frombuffer(links, np.int32)))
            self._last_ts = float(ts[-1])
        return stop

    def _ng_block_at(self, data: bytes | memoryview, pos: int, end: int) -> tuple[int, int] | int | str:
        """The type and length of the block at pos once all of it is in data and its lengths are sane; else the
        bytes it needs to be whole, or what is wrong with it. A section header switches the byte order first."""
        btype, blen = _NG_HEADER[self._ng_endian].unpack_from(data, pos)
        if btype == PCAPNG_SHB:
            # The section's byte order, which its length is written in, follows the length.
            if pos + 12 > end:
                return 12
            endian = _NG_BYTE_ORDER.get(bytes(data[pos + 8:pos + 12]))
            if endian is None:
                return "pcapng section header with bad byte-order magic"
            self._ng_endian = endian
            blen = _NG_HEADER[endian].unpack_from(data, pos)[1]
        # Checked before the length is used for anything, including sizing the read of the rest of the block.
        if blen < 12 or blen % 4 or blen > MAX_BLOCK_BYTES:
            return f"absurd pcapng block length {blen}"
        if blen < _NG_MIN_BLOCK.get(btype, 12):
            return f"pcapng {_NG_BLOCK_NAME[btype]} block of {blen} bytes is too short for its fields"
        if pos + blen > end:
            return blen
        if _NG_HEADER[self._ng_endian].unpack_from(data, pos + blen - 8)[1] != blen:
            return f"pcapng block length {blen} does not match the copy at the block's end"
        return btype, blen

    def _ng_take(self, btype: int, blen: int, data: bytes | memoryview, pos: int, out: _Records) -> str | None:
        """Take in one whole block: interfaces into the section's table, packets into out (other blocks are
        skipped). What is wrong with it, if anything."""
        body = pos + 8
        if btype == PCAPNG_SHB or btype == 1:
            self._ng_columns = None   # the C walk's copy of the interface table, rebuilt when next needed
        if btype == PCAPNG_SHB:
            self._ng_ifaces = []
        elif btype == 1:
            iface = self._idb(data, body, pos + blen - 4)
            if isinstance(iface, str):
                return iface
            self._ng_ifaces.append(iface)
        elif btype == 6 or btype == 2:
            return self._ng_packet(btype, data, pos, blen, out)
        elif btype == 3:
            return self._ng_simple_packet(data, pos, blen, out)
        return None

    def _ng_packet(self, btype: int, data: bytes | memoryview, pos: int, blen: int, out: _Records) -> str | None:
        """An enhanced packet block (6) or an obsolete packet block (2), whose drops count is ignored."""
        body = pos + 8
        if btype == 6:
            iface, hi, lo, caplen, wirelen = struct.unpack_from(self._ng_endian + "IIIII", data, body)
        else:
            iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(self._ng_endian + "HHIIII", data, body)
        frame = body + 20
        if iface >= len(self._ng_ifaces):
            return f"packet for undeclared interface {iface}"
        if frame + caplen > pos + blen - 4:
            return f"packet length {caplen} exceeds its block"
        linktype, scale, offset, _snap = self._ng_ifaces[iface]
        out.offsets.append(frame)
        out.caplen.append(caplen)
        out.wirelen.append(max(wirelen, caplen))
        out.ts.append(((hi << 32) | lo) * scale + offset)
        self._last_ts = out.ts[-1]
        out.linktype.append(linktype)
        return None

    def _ng_simple_packet(self, data: bytes | memoryview, pos: int, blen: int, out: _Records) -> str | None:
        if not self._ng_ifaces:
            return "simple packet before any interface"
        wirelen = struct.unpack_from(self._ng_endian + "I", data, pos + 8)[0]
        linktype, _scale, _offset, snap = self._ng_ifaces[0]
        caplen = min(wirelen, blen - 16, snap or wirelen)
        out.offsets.append(pos + 12)
        out.caplen.append(caplen)
        out.wirelen.append(wirelen)
        # Simple packet blocks carry no timestamp: reuse the previous packet's.
        out.ts.append(out.ts[-1] if out.ts else self._last_ts)
        out.linktype.append(linktype)
        return None

    def _idb(self, data: bytes | memoryview, body: int, end: int) -> tuple[int, float, float, int] | str:
        """An interface description block's fields, or what is wrong with it."""
        e = self._ng_endian
        linktype, _res, snaplen = struct.unpack_from(e + "HHI", data, body)
        scale, offset = 1e-6, 0.0
        pos = body + 8
        while pos + 4 <= end:
            code, length = struct.unpack_from(e + "HH", data, pos)
            if code == 0:
                break
            if pos + 4 + length > end:
                return f"pcapng interface option {code} of {length} bytes overruns its block"
            if code == 9 and length >= 1:
                r = data[pos + 4]
                scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
            elif code == 14 and length == 8:
                offset = float(struct.unpack_from(e + "q", data, pos + 4)[0])
            pos += 4 + length + (-length % 4)
        return linktype, scale, offset, snaplen


def _empty_batch() -> Batch:
    z = np.zeros(0, dtype=np.int64)
    return Batch(b"", z, z, z, np.zeros(0), np.zeros(0, dtype=np.int32))


def open_file(path: str | Path) -> tuple[CaptureReader, int]:
    """A reader over a capture file, and the file's size for progress reporting. The reader closes the file when
    iteration ends; call its `close` (or use it in a `with`) if it might not be iterated to the end."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CamwatchError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CamwatchError(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot open: {exc.strerror}") from None
    st = os.fstat(fh.fileno())
    regular = stat.S_ISREG(st.st_mode)
    mapped = MappedFile.open(fh, st.st_size, CHUNK_BYTES) if regular and MAP_FROM and st.st_size >= MAP_FROM else None
    if mapped is not None:
        return CaptureReader(None, str(path), read_ahead=mapped, close=fh.close), st.st_size
    if regular and READ_AHEAD_FROM and st.st_size >= READ_AHEAD_FROM:
        # The carried-over record is at most one block: the parsers refuse a longer one before it sizes a read.
        ahead = ReadAhead(fh, CHUNK_BYTES, MAX_BLOCK_BYTES)
        return CaptureReader(None, str(path), read_ahead=ahead, close=fh.close), st.st_size
    return CaptureReader(None, str(path), readinto=fh.readinto, close=fh.close,
                         size_hint=st.st_size if regular else None), st.st_size
