"""Capture files read through a memory map: the reader walks the page cache's own pages instead of a copy of them.

Reading a cached file with `readinto` is a memory copy of every byte, and in replay that copy was 40% of the time
(bench/profile_replay.py): more than decoding, grouping and enriching the packets together. Mapped, the pages are
only made visible to the process (one minor fault per few pages), and a chunk is a slice of the map, its
incomplete last record carried over by starting the next slice earlier instead of by copying it. The kernel is asked
to read the chunk after the current one ahead (MADV_WILLNEED), so a file not yet in the page cache is read from disk
while the current chunk is processed, without a thread; pages already walked are dropped from the process (not from
the page cache) so its resident size stays that of a few chunks, whatever the file's size.

The trade-off, documented in docs/benchmarks.md: a mapped file that shrinks while it is read (truncated by another
process) or whose disk fails under it ends the process with SIGBUS where `readinto` would have reported a read
error; capture.MAP_FROM = 0 reads every file with `readinto`. A file that grows while it is read is read to its
new end, as with `readinto`: past the mapped size, chunks are read from the file.
"""

from __future__ import annotations

import mmap
from io import BufferedReader

_PAGE = mmap.PAGESIZE


class MappedFile:
    """Chunks of a regular file as slices of one read-only map, each preceded by the bytes the caller carries over
    from the slice before (always its tail). Same interface as sensor.readahead.ReadAhead."""

    def __init__(self, fh: BufferedReader, size: int, chunk: int):
        self._fh = fh
        self._size = size
        self._chunk = chunk
        self._map: mmap.mmap | None = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
        self._view: memoryview | None = memoryview(self._map)
        self._pos = 0        # the end of the last slice handed out
        self._dropped = 0    # pages before this offset were given back
        fh.seek(size)        # where reading goes on if the file grew

    @classmethod
    def open(cls, fh: BufferedReader, size: int, chunk: int) -> MappedFile | None:
        """A mapped reader over `fh`, or None where the file cannot be mapped (the caller then reads it)."""
        try:
            return cls(fh, size, chunk)
        except (OSError, ValueError):   # a file system without mmap, an address space too small for the file
            return None

    def take(self, rest: bytes) -> tuple[memoryview, int]:
        """`rest` (the tail of the last slice) followed by the next chunk, and the chunk's size (0 at the end)."""
        if self._view is None or self._pos >= self._size:
            return self._read(rest)
        start = self._pos - len(rest)
        if start < 0:
            raise ValueError(f"mapped read: {len(rest)} bytes carried over, {self._pos} handed out")
        end = min(self._pos + self._chunk, self._size)
        got, self._pos = end - self._pos, end
        self._advise(start, end)
        return self._view[start:end], got

    def _advise(self, start: int, end: int) -> None:
        """Hints only: what the kernel does with them changes no byte the reader sees."""
        assert self._map is not None
        done = start - start % _PAGE
        if done > self._dropped and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, self._dropped, done - self._dropped)
            self._dropped = done
        if end < self._size and hasattr(mmap, "MADV_WILLNEED"):
            ahead = end - end % _PAGE
            self._map.madvise(mmap.MADV_WILLNEED, ahead, min(self._chunk, self._size - ahead))

    def _read(self, rest: bytes) -> tuple[memoryview, int]:
        """Past the mapped size: what the file grew by since it was opened, read as the plain reader would."""
        self._release()
        arena = bytearray(len(rest) + self._chunk)
        arena[:len(rest)] = rest
        got = self._fh.readinto(memoryview(arena)[len(rest):]) or 0
        return memoryview(arena)[:len(rest) + got], got

    def _release(self) -> None:
        """Unmap now (and close the map's own copy of the descriptor) unless a batch handed out still holds a slice:
        then the map goes when the last slice does."""
        view, mapped, self._view, self._map = self._view, self._map, None, None
        try:
            if view is not None:
                view.release()
            if mapped is not None:
                mapped.close()
        except BufferError:   # a slice is still out there
            pass

    def close(self) -> None:
        self._release()
