"""The one writer of JSON lines, for the alert log and the flow log: a file or stdout, written line by line or
buffered for at most a second, reopened on request (SIGHUP, so that logrotate can move the file away), and riding
out a full disk with one warning instead of stopping the sensor.

A signal handler must not take the writer's lock (it runs on the main thread, which may hold it mid-write), so a
reopen is only requested there; the next write or the flusher thread, within a second, does it.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from collections.abc import Sequence

from sensor.errors import CamwatchError, warn

FLUSH_SECONDS = 1.0        # a buffered line reaches the file within this long
MAX_BUFFER_BYTES = 1 << 20  # and at once when this much is held, so a burst of flows costs bounded memory
_STDOUT_LOCK = threading.Lock()   # alerts and flow records may share stdout: whole lines, never interleaved


# json.dumps with any non-default argument builds an encoder per call: one, made once
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(record: dict) -> str:
    """One line of JSON. Strings from the wire are escaped by the encoding itself: control characters as \\uXXXX,
    and everything outside ASCII too, so that a line is always one line of printable ASCII."""
    return _ENCODER.encode(record)


class LineFile:
    """`target`: a path, '-' for stdout, or None (nothing written, lines still counted). `what` names the lines
    in messages ("alerts", "flow records"). Unbuffered, every line is written and flushed at once."""

    def __init__(self, target: str | None, what: str, *, append: bool = False, buffered: bool = False):
        self.target = target
        self.what = what
        self.buffered = buffered
        self.lines = 0          # lines handed to write
        self.dropped = 0        # lines lost to failed writes
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._held = 0
        self._flushed_at = time.monotonic()
        self._reopen = False
        self._failing = False   # warned about the current run of failures
        self._cut = False       # a failed write may have left half a line: the next write ends it first
        self._fd: int | None = None
        self._stdout = target == "-"
        if target is not None and not self._stdout:
            try:
                self._fd = self._open(append)
            except OSError as exc:
                raise CamwatchError(f"{target}: cannot write {what}: {exc.strerror}") from None

    def _open(self, append: bool) -> int:
        assert self.target is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        return os.open(self.target, flags, 0o640)

    @property
    def active(self) -> bool:
        return self._fd is not None or self._stdout

    def write(self, line: str) -> None:
        with self._lock:
            self.lines += 1
            if not self.active:
                return
            if self._reopen:
                self._reopen_now()
            if not self.buffered:
                self._emit(line + "\n", 1)
                return
            self._buffer.append(line)
            self._held += len(line) + 1
            if self._held >= MAX_BUFFER_BYTES or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
                self._flush()

    def request_reopen(self) -> None:
        """Safe in a signal handler: only sets a flag."""
        self._reopen = True

    def maintain(self) -> None:
        """The flusher's call, every second: a requested reopen, then whatever is buffered."""
        with self._lock:
            if self._reopen:
                self._reopen_now()
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._stdout = False

    # ---- under the lock --------------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self._buffer:
            text, count = "\n".join(self._buffer) + "\n", len(self._buffer)
            self._buffer.clear()
            self._held = 0
            self._emit(text, count)

    def _reopen_now(self) -> None:
        """The file again at its path, appending (logrotate has moved the old one away): the new one is opened
        before the old is closed, so a reopen that fails goes on writing where it wrote before."""
        self._reopen = False
        if self._fd is None:
            return
        self._flush()
        try:
            fd = self._open(append=True)
        except OSError as exc:
            warn(f"{self.target}: cannot reopen for {self.what}: {exc.strerror}; still writing to the file "
                 f"opened before")
            return
        os.close(self._fd)
        self._fd = fd
        self._cut = False

    def _emit(self, text: str, count: int) -> None:
        if self._cut:
            text = "\n" + text
        try:
            if self._stdout:
                with _STDOUT_LOCK:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            else:
                self._write_all(text.encode("utf-8", "backslashreplace"))
        except BrokenPipeError:
            self._stdout = False   # the reader went away (`| head`): nothing more to write there
            return
        except OSError as exc:
            self._failed(exc, count)
            return
        self._cut = False
        if self._failing:
            self._failing = False
            warn(f"{self.target}: writing {self.what} again ({self.dropped} lost so far)")

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:
                if len(view) < len(data):
                    self._cut = True
                raise
            view = view[written:]

    def _failed(self, exc: OSError, count: int) -> None:
        self.dropped += count
        if not self._failing:
            self._failing = True
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            warn(f"{self.target}: cannot write {self.what}: {reason}; dropping them until writes succeed")


class Flusher:
    """A daemon thread that maintains the given files every FLUSH_SECONDS: buffered lines reach their file even
    when no new line comes to push them, and a reopen asked for by a signal happens within a second."""

    def __init__(self, files: Sequence[LineFile], interval: float = FLUSH_SECONDS):
        self.files = [f for f in files if f.active]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camwatch-flusher", daemon=True)
        if self.files:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for f in self.files:
                f.maintain()

    @property
    def reopenable(self) -> bool:
        """Whether any of the files is a file at a path (stdout is not reopened)."""
        return any(f.target not in (None, "-") for f in self.files)

    def request_reopen(self) -> None:
        for f in self.files:
            f.request_reopen()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
