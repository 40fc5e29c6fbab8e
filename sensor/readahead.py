"""Read-ahead for capture files: the next chunk is read in a thread while the current one is decoded and grouped.

Reading a capture from the page cache is a memory copy the kernel makes while the calling thread waits; file reads
release the GIL, so on a second core that copy overlaps the compiled walk, decode and grouping of the chunk before
it, instead of adding to them. Two buffers alternate: the caller works in one while the thread fills the other.
Memory stays bounded: two chunk-sized buffers, whatever the file's size.

It only pays where a core is idle: on a machine whose cores are all busy the reading thread waits for a CPU and the
hand-over costs more than the overlap gains, so capture.READ_AHEAD_FROM keeps it off by default (see there).
"""

from __future__ import annotations

import threading
from io import BufferedReader


class ReadAhead:
    """Chunks of `fh`, each behind up to `headroom` bytes of what the caller carries over from the chunk before (the
    incomplete record at its end), the next one always being read while the caller works on the current one."""

    def __init__(self, fh: BufferedReader, chunk: int, headroom: int):
        self._fh = fh
        self._headroom = headroom
        self._arenas = (bytearray(headroom + chunk), bytearray(headroom + chunk))
        self._filling = 0
        self._got = 0
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        self._start(0)

    def _start(self, arena: int) -> None:
        self._filling = arena
        self._thread = threading.Thread(target=self._read, args=(arena,), name="capture-read-ahead", daemon=True)
        self._thread.start()

    def _read(self, arena: int) -> None:
        try:
            self._got = self._fh.readinto(memoryview(self._arenas[arena])[self._headroom:]) or 0
        except OSError as exc:   # handed to the caller when it asks for this chunk, after all before it
            self._error = exc

    def take(self, rest: bytes) -> tuple[memoryview, int]:
        """`rest` followed by the next chunk, and the chunk's size (0 at the end of the file); starts reading the
        chunk after it into the other buffer, which the caller is done with once it asks for more."""
        if len(rest) > self._headroom:
            raise ValueError(f"read-ahead: {len(rest)} bytes carried over, room for {self._headroom}")
        if self._thread is None:   # the end was reached before
            return memoryview(bytearray(rest)), 0
        self._thread.join()
        self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        arena, got = self._arenas[self._filling], self._got
        start = self._headroom - len(rest)
        arena[start:self._headroom] = rest
        if got:
            self._start(1 - self._filling)
        return memoryview(arena)[start:self._headroom + got], got

    def close(self) -> None:
        """Wait for a read in flight (at most one chunk), so the file can be closed under no thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
