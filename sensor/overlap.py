"""Reading beside processing: a capture file's next batch read and decoded on a second thread while the pipeline
works on the current one (issue 16 item 3).

Replay of a file in the page cache is, per batch, the record walk over the chunk (the page faults of the memory map
included), the decode, then flows, enrichment and detection. The walk and the decode are compiled loops that run
without the GIL (sensor/_walk.c), so on a second core they overlap the Python-heavy rest of the batch before instead
of adding to it. The main thread keeps everything else, in the same order as before: a batch's results, errors and
outputs are those of reading it in line.

The hand-over is DEPTH (two) batches deep: the thread starts another batch only while fewer than that are ready
and untaken, so it is never more than DEPTH batches ahead and memory grows by that many batches' decoded columns
(and the map keeps that many slices' pages, sensor.mapped.KEEP_SLICES). Only memory-mapped
readers are overlapped (CaptureReader.mapped): their batches are slices of the map, still valid while the next one
is read, whereas readinto and read-ahead reuse their buffers. Small files (under capture.MAP_FROM, one chunk)
have nothing to overlap; live capture is not touched.

What the thread raises (a CaptureError at a damaged record, an OSError) is raised on the main thread at the same
place as in line: when the batch after the last good one is asked for, every batch before it processed. A decode
that fails on the thread is not raised there: the batch goes without its decode and the pipeline's own decode
fails again, in its place. Closing the batches (the consumer stopped, an exception, KeyboardInterrupt) stops the
thread and waits for it (at most the walk and decode of one chunk) before the reader is closed.

`capture.overlap` in the config (auto, on, off) chooses; auto overlaps where at least two CPUs are available to the
process (os.sched_getaffinity): on one CPU the thread could only take turns with the pipeline, at a cost.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator

from sensor.capture import Batch, CaptureReader
from sensor.config import OVERLAP_MODES as MODES
from sensor.decode import decode_batch


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


def wanted(mode: str) -> bool:
    """Whether `mode` (auto, on, off) overlaps reading and processing on this machine."""
    if mode not in MODES:
        raise ValueError(f"overlap mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode == "on" or (mode == "auto" and cpus() >= 2)


def batches(reader: CaptureReader, mode: str = "auto") -> Generator[Batch, None, None]:
    """The reader's batches, read and decoded up to DEPTH batches ahead on a second thread where `mode` allows and the
    reader is mapped; else simply the reader's batches. Close the generator (or run it to its end) before closing the
    reader: that stops the thread."""
    if not (reader.mapped and wanted(mode)):
        yield from reader
        return
    ahead = _Ahead(iter(reader), decode_batch, DEPTH)
    try:
        while (batch := ahead.take()) is not None:
            yield batch
    finally:
        ahead.stop()


_BATCH, _END, _FAILED = 0, 1, 2
# Batches the thread may have ready beyond the one the pipeline works on. One made the thread wait at every batch for
# the main thread to take the last (a wake-up and a GIL hand-over, often a switch interval) while it was the slower
# of the two; with two it reads on through such waits (docs/benchmarks.md, issue 16, late morning). The map keeps
# the pages of that many slices behind the last (sensor.mapped.KEEP_SLICES, held to it by a test).
DEPTH = 2
# A batch walked while none is ready for the pipeline goes to it undecoded, and the pipeline decodes it: the thread's
# share (the map's page faults, the walk, the decode) was larger than the pipeline's rest, and this balances the two
# as they run, whatever the traffic: the thread falling behind hands over more of the decode, the pipeline falling
# behind leaves batches queued and gets them decoded (docs/benchmarks.md, issue 16, late morning). Which thread
# decodes a batch changes nothing else: the same decode, the same slices.
SHARE = True


class _Ahead:
    """The thread and the batches it has ready, at most `depth`."""

    def __init__(self, source: Iterator[Batch], decode: Callable[[Batch], tuple], depth: int):
        self._source = source
        self._decode = decode
        self._cond = threading.Condition()
        self._depth = depth
        self._ready: deque[tuple[int, object]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="capture-overlap", daemon=True)
        self._thread.start()

    # ---- the main thread -------------------------------------------------------------------------------
    def take(self) -> Batch | None:
        """The next batch, decoded unless left to the pipeline (SHARE); None at the end; the thread's exception once
        the batches before it are out."""
        with self._cond:
            while not self._ready:
                self._cond.wait()
            kind, value = self._ready.popleft()
            self._cond.notify()   # the thread may start another batch
        if kind == _BATCH:
            assert isinstance(value, Batch)
            return value
        if kind == _FAILED:
            assert isinstance(value, BaseException)
            try:
                raise value
            finally:   # no reference kept here: its traceback holds the reader's frames
                value = None
        return None

    def stop(self) -> None:
        """Stop the thread, at the end or early, and wait for it: the reader is then free to close."""
        with self._cond:
            self._stopping = True
            self._ready.clear()
            self._cond.notify()
        self._thread.join()

    # ---- the reading thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        source = self._source
        try:
            for batch in source:
                # nothing ready for the pipeline: it is at most one batch from waiting for this one (a hint, read
                # without the lock)
                if len(batch) and not (SHARE and not self._ready):
                    try:
                        batch.decoded = self._decode(batch)
                    except Exception:   # noqa: BLE001 - the pipeline decodes it again and raises it in its place
                        batch.decoded = None
                if not self._hand(_BATCH, batch):
                    return
            self._hand(_END, None)
        except BaseException as exc:   # noqa: BLE001 - handed to the main thread, raised there
            self._hand(_FAILED, exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()   # the reader's generator ends on this thread, which ran it: the reader closes itself

    def _hand(self, kind: int, value: object) -> bool:
        """Queue one item, then wait until the queue has room for another (the next batch starts only then); False
        when stopped instead."""
        with self._cond:
            if self._stopping:
                return False
            self._ready.append((kind, value))
            self._cond.notify()
            while len(self._ready) >= self._depth and not self._stopping:
                self._cond.wait()
            return not self._stopping
