"""Capture files read through a memory map: the reader walks the page cache's own pages instead of a copy of them.

Reading a cached file with `readinto` is a memory copy of every byte, and in replay that copy was 40% of the time
(bench/profile_replay.py): more than decoding, grouping and enriching the packets together. Mapped, the pages are
only made visible to the process (by the walk: one system call a chunk, or a fault every few pages, whichever
PageMapping finds cheaper), and a chunk is a slice of the
map, its incomplete last record carried over by starting the next slice earlier instead of by copying it. The
kernel is asked to read the chunk after the current one ahead (MADV_WILLNEED), so a file not yet in the page cache is
read from disk while the current chunk is processed, without a thread; pages already walked are dropped from the
process (not from the page cache) so its resident size stays that of a few chunks, whatever the file's size.

A mapped file that shrinks while it is read (truncated by log rotation, by a copy still being written, by an
attacker) or whose disk fails under it would raise SIGBUS on the next page touched, and end the process. The map is
made by sensor/_mapguard.c, whose SIGBUS handler turns such a fault inside the map into zero pages from the faulting
page on and records where they begin; the reader looks after every chunk (and at the file's size with fstat) and,
once the file is found cut, walks again only what lies before the cut and then ends with a one-line CaptureError:
every record before it processed, the outputs written, a non-zero exit. Without the compiled guard nothing is
mapped: capture.open_file reads with `readinto`. What readinto does not share: records of the chunk being processed
when the file was cut, lying past the cut, read as zeros (an undecodable frame: counted as a packet of network
"other", nothing else), and the error says how many bytes that was.

A file that grows while it is read is read to its new end, as with `readinto`: past the mapped size, chunks are read
from the file.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from io import BufferedReader

try:
    from sensor import _mapguard
except ImportError:   # built without a C compiler, or not on Linux: files are read with readinto
    _mapguard = None  # type: ignore[assignment]

_PAGE = os.sysconf("SC_PAGE_SIZE")
# Fault the next chunk's pages in on a second thread (MADV_POPULATE_READ, the GIL released) while this one is
# processed, instead of asking the kernel to read it ahead (MADV_WILLNEED) and faulting each page on first touch.
# Off: measured in docs/benchmarks.md (issue 16 item 3, third pass); bench/read_floor.py runs it as "prefetch".
PREFETCH = False
# The walk may map a slice's pages in with one system call before it reads them (sensor/_walk.c,
# MADV_POPULATE_READ) instead of faulting them in as it goes, each fault mapping the pages around it: PageMapping
# chooses, per file, by what each costs here. Off, or with PREFETCH (whose thread does it), pages are faulted in as
# the walk goes. The next chunk is read ahead (MADV_WILLNEED) either way, for a file not in the page cache.
POPULATE = True
# Slices before the last whose pages stay in the process: the pipeline may still read them (in line, the one before
# the last; with sensor.overlap, its thread runs overlap.DEPTH batches ahead of the pipeline). Dropping a slice's
# pages under the pipeline costs it faults again, nothing else: the page cache still holds the bytes.
KEEP_SLICES = 2


class PageMapping:
    """Whether the walk of a chunk maps its pages in at once (MADV_POPULATE_READ) or lets the walk fault them in,
    the kernel mapping the pages around each fault with it. Both read the same bytes; which costs less CPU depends
    on the kernel and on how the page cache holds the file: 1 December's host walked vlan100 ~10% cheaper with
    populate, 2 December's midday host ~25% cheaper per byte without (docs/benchmarks.md, issue 16). So each mapped
    file is asked: after its first chunk (smaller, and paying for starting up), TRIAL chunks alternate the two ways,
    the walk's CPU per byte of each is compared and the cheaper one walks the next RECHECK chunks; then the trial
    runs again, as the page cache's state may change under a long file (parts read from disk, parts evicted)."""

    TRIAL = 4
    RECHECK = 64

    def __init__(self) -> None:
        self._chunk = 0
        self._spent = [0, 0]   # CPU ns of the trial's walks without and with populate
        self._bytes = [0, 0]   # and the bytes they walked
        self._chosen = True    # the trial's verdict, until the next one

    def populate(self) -> bool:
        """How the next chunk is walked."""
        if not POPULATE or PREFETCH:
            return False
        step = self._trial_step()
        return self._chosen if step is None else step % 2 == 0

    def walked(self, populated: bool, cpu_ns: int, size: int) -> None:
        """What the walk of a chunk of `size` bytes cost, walked as populate() said (nothing at the file's end)."""
        if not size:
            return
        step = self._trial_step()
        if step is not None and POPULATE and not PREFETCH:
            self._spent[populated] += cpu_ns
            self._bytes[populated] += size
            if step == self.TRIAL - 1:
                (off, on), (off_bytes, on_bytes) = self._spent, self._bytes
                if off_bytes and on_bytes:
                    self._chosen = on * off_bytes <= off * on_bytes   # per byte, without dividing
                self._spent, self._bytes = [0, 0], [0, 0]
        self._chunk += 1

    def _trial_step(self) -> int | None:
        """The current chunk's place in a trial; None outside one (the RECHECK after a trial, and the first chunk,
        which the count places last in a cycle: (0 - 1) % (TRIAL + RECHECK))."""
        step = (self._chunk - 1) % (self.TRIAL + self.RECHECK)
        return step if step < self.TRIAL else None


class Damaged(Exception):
    """The mapped file was cut or failed under the reader: the one-line message of the capture error to raise at
    the first record not processed."""


class MappedFile:
    """Chunks of a regular file as slices of one read-only map, each preceded by the bytes the caller carries over
    from the slice before (always its tail). Same interface as sensor.readahead.ReadAhead, plus `intact_to`."""

    def __init__(self, fh: BufferedReader, size: int, chunk: int):
        if _mapguard is None:
            raise OSError("no SIGBUS guard (sensor._mapguard) to map with")
        self._fh = fh
        self._size = size
        self._chunk = chunk
        self.base_chunk = chunk   # the size asked for; a reader of big records takes larger chunks (capture.chunk_for)
        self._map: _mapguard.Mapping | None = _mapguard.map_file(fh.fileno(), size)
        self._view: memoryview | None = memoryview(self._map)
        self._pos = 0        # the end of the last slice handed out
        self._yielded = 0    # the end of the slices whose records the caller has been given (all but the last)
        self._end = size     # where slices stop: the mapped size, or where the file was found cut
        self._damage: str | None = None
        self._dropped = 0    # pages before this offset were given back
        self._kept: deque[int] = deque()   # the starts of the last slices handed out, the last one's included
        self._prefetch: threading.Thread | None = None
        self.paging = PageMapping()   # how the walk maps each chunk's pages in
        fh.seek(size)        # where reading goes on if the file grew

    @classmethod
    def open(cls, fh: BufferedReader, size: int, chunk: int) -> MappedFile | None:
        """A mapped reader over `fh`, or None where the file cannot be mapped (the caller then reads it)."""
        try:
            return cls(fh, size, chunk)
        except (OSError, ValueError):   # no guard, a file system without mmap, an address space too small
            return None

    def take(self, rest: bytes, chunk: int | None = None) -> tuple[memoryview, int]:
        """`rest` (the tail of the last slice) followed by the next chunk (of `chunk` bytes from now on, when given:
        capture.chunk_for), and the chunk's size (0 at the end). Damaged once the slices have reached the place
        where the file was found cut or failing."""
        if chunk is not None:
            self._chunk = chunk
        if self._view is not None:
            self._yielded = self._pos
            self.intact_to()
            if self._pos < self._end:
                return self._slice(rest)
            if self._damage is not None:
                raise Damaged(self._damage)
        return self._read(rest)

    def intact_to(self) -> int | None:
        """None while the map reads the file as it was opened; else the file offset before which every byte read
        from the map was the file's (the file's new size, or the first page read as zeros, the smaller)."""
        if self._map is None:
            return None
        zero = self._map.damaged()
        now = _mapguard.file_size(self._fh.fileno())   # os.fstat's st_size, the GIL kept
        if zero < 0 and now >= self._size:
            return None
        cut = min(self._size, now, zero if zero >= 0 else now)
        if self._damage is None or cut < self._end:
            self._end = min(self._end, cut)
            self._damage = self._message(now, zero)
        return self._end

    def _message(self, now: int, zero: int) -> str:
        if now < self._size:
            what = f"truncated while it was read: the file shrank from {self._size} to {now} bytes"
        else:
            what = f"cannot read: the mapped file could not be read at byte {zero} (an I/O error?)"
        if self._yielded > self._end:   # records past the cut went to the caller before the cut was seen
            what += f"; the {self._yielded - self._end} bytes after it, handed over before, may have been read as zeros"
        return what

    def _slice(self, rest: bytes) -> tuple[memoryview, int]:
        assert self._view is not None
        start = self._pos - len(rest)
        if start < 0:
            raise ValueError(f"mapped read: {len(rest)} bytes carried over, {self._pos} handed out")
        # The carried-over bytes count towards the chunk, as in capture's readinto arena: the same batches as
        # reading the file with readinto, hence the same results where the pipeline's work depends on where batches
        # end (idle-flow sweeps run per batch). A chunk smaller than twice what is carried over (tests) reads a
        # whole chunk more.
        end = min(self._pos + (self._chunk - len(rest) if 2 * len(rest) < self._chunk else self._chunk), self._end)
        got, self._pos = end - self._pos, end
        self._advise(start, end)
        return self._view[start:end], got

    def _advise(self, start: int, end: int) -> None:
        """Hints only: what the kernel does with them changes no byte the reader sees. Pages behind the last
        KEEP_SLICES slices before this one are dropped from the process (not theirs: with sensor.overlap this is
        called on the reading thread while the pipeline still works on one of them, which would fault its pages in
        again); the next chunk is read ahead, or with PREFETCH faulted in by a thread that also does the dropping,
        both off this thread."""
        assert self._map is not None and _mapguard is not None
        kept = self._kept
        kept.append(start)
        if len(kept) > KEEP_SLICES + 1:
            kept.popleft()
        done = kept[0] - kept[0] % _PAGE
        advice: list[tuple[int, int, int]] = []
        if done > self._dropped:
            advice.append((_mapguard.MADV_DONTNEED, self._dropped, done - self._dropped))
            self._dropped = done
        if end < self._end:
            ahead = end - end % _PAGE
            advice.append((_mapguard.MADV_POPULATE_READ if PREFETCH else _mapguard.MADV_WILLNEED, ahead,
                            min(self._chunk, self._end - ahead)))
        if not PREFETCH:
            for args in advice:
                self._map.advise(*args)
            return
        if self._prefetch is not None:
            self._prefetch.join()
        self._prefetch = threading.Thread(target=_apply, args=(self._map, advice), daemon=True,
                                          name="capture-prefetch")
        self._prefetch.start()

    def _read(self, rest: bytes) -> tuple[memoryview, int]:
        """Past the mapped size: what the file grew by since it was opened, read as the plain reader would."""
        self._release()
        # No more than the file holds past the reader: at the end of a file that did not grow, the usual case,
        # nothing. A whole chunk's buffer, allocated and zeroed to read nothing into, took 1-25 ms there.
        more = min(self._chunk, max(_mapguard.file_size(self._fh.fileno()) - self._fh.tell(), 0))
        arena = bytearray(len(rest) + more)
        arena[:len(rest)] = rest
        got = self._fh.readinto(memoryview(arena)[len(rest):]) or 0
        return memoryview(arena)[:len(rest) + got], got

    def _release(self) -> None:
        """Unmap now unless a batch handed out still holds a slice: then the map goes when the last slice does."""
        view, mapped, self._view, self._map = self._view, self._map, None, None
        try:
            if view is not None:
                view.release()
            if mapped is not None:
                mapped.close()
        except BufferError:   # a slice is still out there
            pass

    def close(self) -> None:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.join()
        self._release()


def _apply(mapping: _mapguard.Mapping, advice: list[tuple[int, int, int]]) -> None:
    for args in advice:   # each with the GIL released (sensor/_mapguard.c)
        mapping.advise(*args)
