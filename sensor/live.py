"""Live capture: dumpcap writing classic pcap to a pipe, pumped by a thread into a bounded queue that a
CaptureReader reads as a stream of batches; dumpcap's start, shutdown, statistics and errors.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from sensor import compiled
from sensor.capture import CHUNK_BYTES, IDLE_TICK, CaptureReader
from sensor.errors import CamwatchError, StartCancelled


def _parent_death_signal(signum: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send the child `signum` when camwatch dies, however it dies (the
    signal follows the thread that started the child: camwatch starts dumpcap from its main thread)."""
    try:
        import ctypes
        # Looked up here, before the fork: the child must only make the call.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None   # not Linux: the pipe closing still stops dumpcap, at its next packet
    parent = os.getpid()
    PR_SET_PDEATHSIG = 1

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)   # camwatch died before the request took effect: no one is left to read the capture
    return preexec


def _exec_drops_parent_death_signal(path: str) -> bool:
    """Whether executing `path` gains privileges, for which the kernel clears the parent-death signal."""
    try:
        if os.stat(path).st_mode & (stat.S_ISUID | stat.S_ISGID):
            return True
        os.getxattr(path, "security.capability")
        return True
    except OSError:
        return False   # no capabilities (ENODATA), or a file system without extended attributes


# Runs apart from camwatch, so it sees camwatch die: its stdin is a pipe only camwatch writes to, which reaches its
# end when camwatch exits for any reason. A byte before that means camwatch stops dumpcap itself. The pidfd names
# dumpcap itself, not a number that could by then belong to another process.
_WATCHDOG = """
import os, select, signal, sys
pidfd = int(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_IGN)
if os.read(0, 1):
    sys.exit(0)
try:
    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    if not select.select([pidfd], [], [], 5)[0]:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def _start_watchdog(pid: int) -> tuple[subprocess.Popen | None, int | None]:
    """A process that stops `pid` (a child of camwatch not yet reaped) once camwatch is gone; returns it and the
    pipe to stand it down with."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None, None   # a kernel before 5.3: signalling a bare pid after camwatch died could hit another
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, str(pidfd)], stdin=read_end,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(pidfd,),
                                process_group=0)
    except OSError:
        os.close(write_end)
        return None, None
    finally:
        os.close(read_end)
        os.close(pidfd)
    return proc, write_end


class LiveCapture:
    """dumpcap writing classic pcap to a pipe; dumpcap holds the capture privilege, camwatch needs none.

    The constructor returns only once dumpcap is capturing: dumpcap writes its pcap file header after the interface
    is open and the filter installed, so from then on no packet on the interface is missed. Errors dumpcap reports
    before that (no such device, no permission, bad filter) raise CamwatchError. A slow start is waited out while
    dumpcap lives, up to START_LIMIT: the kernel zeroes the whole capture ring as dumpcap asks for it, which for
    1 GiB on a loaded or virtualised host took 8 to 9 s in trials (docs/reliability.md). `waiting` is told every
    START_NOTICE seconds meanwhile, and `cancelled` is asked whether a stop came (then StartCancelled).

    A pump thread keeps the pipe drained into a bounded in-memory queue. dumpcap blocked on a full pipe stops
    reading the kernel ring, which then overflows; and dumpcap takes SIGTERM without SA_RESTART, so a signal that
    lands while it is blocked writing loses the packet being written (dumpcap still counts it as captured).

    Shutdown: `request_stop` lets dumpcap run on for `linger` seconds, then sends SIGTERM at a moment the pipe is
    empty; dumpcap writes out what it holds and closes the pipe, and the reader ends at that end of stream. `stop`
    reaps dumpcap. Keep iterating the reader after `request_stop` to get every packet captured.
    """

    name = "dumpcap"
    PCAP_HEADER_BYTES = 24
    # dumpcap must not outlive camwatch (holding its capture ring, capturing for nobody), even after a SIGKILL.
    # The kernel's parent-death signal sees to it unless exec drops it, which it does for a binary with file
    # capabilities or set-id bits, the usual unprivileged set-up; then a watchdog process does (None: when needed).
    WATCHDOG: bool | None = None
    PIPE_BYTES = 1 << 20   # the unprivileged maximum (fs.pipe-max-size); the default 64 KiB fills in microseconds
    # A dumpcap that has neither started nor failed by then is stuck (in the kernel, or on a hung device): an error
    # and a non-zero exit let a service manager restart the sensor. Over ten times the slowest start seen in trials.
    START_LIMIT = 120.0
    START_NOTICE = 10.0

    def __init__(self, interface: str, bpf: str | None = None, *, buffer_mib: int, tick: float = IDLE_TICK,
                 queue_mib: int = 64, start_limit: float | None = None,
                 waiting: Callable[[float], None] | None = None, cancelled: Callable[[], bool] | None = None,
                 linger: float = 0.5, stop_grace: float = 5.0):
        dumpcap = shutil.which("dumpcap") or ("/usr/bin/dumpcap" if Path("/usr/bin/dumpcap").exists() else None)
        if dumpcap is None:
            raise CamwatchError("dumpcap not found: install Wireshark's dumpcap (Debian package wireshark-common)")
        # No -q: it also silences the received/dropped statistics dumpcap prints for each interface at exit.
        cmd = [dumpcap, "-i", interface, "-P", "-w", "-", "-B", str(buffer_mib)]
        if bpf:
            cmd += ["-f", bpf]
        self.command = cmd
        self.interface = interface
        self.buffer_mib = buffer_mib
        self._tick = tick
        self._queue_limit = queue_mib << 20
        # libpcap hands packets to dumpcap in blocks retired every 250 ms (dumpcap's read timeout), so a packet
        # that arrived just before a stop request may still be on its way: wait a little longer than that.
        self._linger = linger
        self._stop_grace = stop_grace
        self._stop_requested_at: float | None = None
        self._terminated_at: float | None = None
        self.killed = False
        self._lock = threading.Lock()
        self._stats: dict[str, tuple[int, int, int]] = {}   # interface -> received, dropped, interface drops
        self._captured = 0
        self._messages: deque[str] = deque(maxlen=64)
        # Pipe data lands in reused slabs, queued as (buffer, start, end): a fresh buffer per read would cost a
        # page fault per 4 KiB, more than the rest of the pipe's handling together. A slab is an anonymous mapping
        # of its own, so one let go after a backlog returns its memory to the system at once: a malloc'd buffer
        # would stay resident in the pump thread's heap, and each stall of the analysis would raise RSS for good.
        self._queue: deque[tuple[bytes | mmap.mmap, int, int]] = deque()
        self._queued = 0
        self._free_slabs: list[mmap.mmap] = []
        self._slabs_made = 0
        self.pump_cpu = 0.0
        self._eof = False
        self._discard = False
        self._cond = threading.Condition()
        self._start_dumpcap(dumpcap)
        self._stderr_thread = threading.Thread(target=self._watch_stderr, name="dumpcap-stderr", daemon=True)
        self._stderr_thread.start()
        header = self._await_header(self.START_LIMIT if start_limit is None else start_limit, waiting,
                                    cancelled)
        # The interface's own receive counter, from when dumpcap was capturing: without a capture filter, what
        # it counted and camwatch did not is visible while capturing, not only in dumpcap's report at exit.
        self._rx_counter = Path("/sys/class/net", interface, "statistics", "rx_packets")
        self._rx_at_start = self._read_rx() if "/" not in interface else None
        self._queue.append((header, 0, len(header)))
        self._queued = len(header)
        self._pump_thread = threading.Thread(target=self._pump, name="dumpcap-pump", daemon=True)
        self._pump_thread.start()
        self.reader = CaptureReader(None, f"interface {interface}", readinto=self._readinto)

    # ---- startup ---------------------------------------------------------------------------------------
    def _start_dumpcap(self, dumpcap: str) -> None:
        try:
            # Its own process group: a terminal's Ctrl-C reaches camwatch only, which then stops dumpcap in order
            # instead of both racing to exit.
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, process_group=0,
                                         preexec_fn=_parent_death_signal(signal.SIGTERM))
        except OSError as exc:
            raise CamwatchError(f"cannot run {dumpcap}: {exc.strerror}") from None
        watch = self.WATCHDOG if self.WATCHDOG is not None else _exec_drops_parent_death_signal(dumpcap)
        self._watchdog, self._watchdog_pipe = _start_watchdog(self.proc.pid) if watch else (None, None)
        assert self.proc.stdout is not None   # stdout=PIPE
        self._fd = self.proc.stdout.fileno()
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
        except OSError:
            pass   # a lower fs.pipe-max-size: the pump thread still drains it, only with less slack

    def _await_header(self, limit: float, waiting: Callable[[float], None] | None,
                      cancelled: Callable[[], bool] | None) -> bytes:
        """dumpcap's pcap file header, once it is capturing; what it said instead if it exits first."""
        got = b""
        started = time.monotonic()
        notice = started + self.START_NOTICE
        while len(got) < self.PCAP_HEADER_BYTES:
            now = time.monotonic()
            if cancelled is not None and cancelled():
                self.stop()
                raise StartCancelled(f"stopped before dumpcap started capturing on {self.interface}")
            if now - started >= limit:
                self.stop()
                raise CamwatchError(f"dumpcap did not start capturing on {self.interface} within {limit:g} s "
                                    f"(it was still running: stuck opening the interface or allocating its "
                                    f"{self.buffer_mib} MiB capture buffer)")
            if now >= notice:
                notice = now + self.START_NOTICE
                if waiting is not None:
                    waiting(now - started)
            ready, _, _ = select.select([self._fd], [], [], min(started + limit - now, notice - now, self._tick))
            if not ready:
                continue
            chunk = os.read(self._fd, CHUNK_BYTES)
            if not chunk:
                self.stop()
                raise CamwatchError(f"dumpcap cannot capture on {self.interface}: {self.error_message()}")
            got += chunk
        return got

    def _read_rx(self) -> int | None:
        try:
            return int(self._rx_counter.read_text())
        except (OSError, ValueError):
            return None   # no such interface in sysfs ("any", a pipe), or not Linux

    def interface_received(self) -> int | None:
        """Frames the capture interface received since capture started, by the kernel's counter; None when the
        interface has no such counter."""
        if self._rx_at_start is None:
            return None
        now = self._read_rx()
        return None if now is None else max(0, now - self._rx_at_start)

    # ---- data ------------------------------------------------------------------------------------------
    SLAB_BYTES = 4 << 20
    SPARE_SLABS = 2
    PUMP_NAP = 0.0005
    PUMP_GATHER = 0.02

    def _next_slab(self) -> mmap.mmap:
        """A slab for the pump to fill: a free one, a new one while under the queue limit, or, when the queue is
        full, wait and leave the data in the pipe so that the kernel ring takes the overflow, where it is counted
        as dropped, rather than grow without bound."""
        with self._cond:
            while (not self._free_slabs and self._slabs_made * self.SLAB_BYTES >= self._queue_limit
                   and not self._discard):
                self._cond.wait(self._tick)
                self._advance_stop(pipe_empty=False)
            if self._free_slabs and not self._discard:
                return self._free_slabs.pop()
            self._slabs_made += 1
            return mmap.mmap(-1, min(self.SLAB_BYTES, self._queue_limit))

    def _pump(self) -> None:
        fd = self._fd
        slab, fill = self._next_slab(), 0
        while True:
            if fill == len(slab):
                slab, fill = self._next_slab(), 0
            try:
                got = self._fill(fd, slab, fill)
            except OSError:
                got = 0
            if got == 0:
                break
            if got is not None:
                with self._cond:
                    if not self._discard:
                        self._queue.append((slab, fill, fill + got))
                        self._queued += got
                        # The reader sleeps until data comes, then until a batch's worth has gathered (or
                        # BATCH_WAIT passed): waking it for every pipe read in between only burns CPU.
                        if self._queued == got or self._queued - got < self.BATCH_BYTES <= self._queued:
                            self._cond.notify_all()
                fill += got
            if self._stop_requested_at is not None:
                self._advance_stop(pipe_empty=not select.select([fd], [], [], 0)[0])
        with self._cond:
            self._eof = True
            self.pump_cpu = time.thread_time()   # the pipe's cost inside camwatch, beside dumpcap's own
            self._cond.notify_all()

    def _fill(self, fd: int, slab: mmap.mmap, start: int) -> int | None:
        """Read what the pipe has into slab[start:]: bytes read, 0 at its end, None if nothing came in time.
        dumpcap writes a few KiB at a time; reads keep gathering for up to PUMP_GATHER seconds (a short nap after
        a small read), far less than the pipe takes to fill at full rate (1 MiB is ~2 ms at 4 Gbit/s)."""
        if compiled.extension is not None and compiled.fill:
            # compiled: the gathering runs without the GIL, which the analysis thread holds most of the time
            return compiled.extension.fill(fd, slab, start, len(slab), self._stop_wait(), self.PUMP_GATHER)
        if not select.select([fd], [], [], self._stop_wait())[0]:
            return None
        got = os.readv(fd, [memoryview(slab)[start:]])
        if got and got < self.PIPE_BYTES // 4 and self._stop_requested_at is None:
            time.sleep(self.PUMP_NAP)
        return got

    # A batch costs a fixed few hundred microseconds whatever its size, so handing over every pipe read (often
    # 64 KiB, ~50 frames) caps live throughput near 150k packets/s. Waiting up to BATCH_WAIT for BATCH_BYTES to
    # gather keeps batches large under load and adds at most that delay, far inside the 1 s latency budget.
    BATCH_BYTES = CHUNK_BYTES
    BATCH_WAIT = 0.05

    def _readinto(self, view: memoryview) -> int | None:
        """Copy queued pipe data into the reader's buffer: bytes copied, 0 at the end, None if none came."""
        with self._cond:
            if not self._queue and not self._eof:
                self._cond.wait(self._tick)
            if not self._queue:
                return 0 if self._eof else None
            deadline = time.monotonic() + self.BATCH_WAIT
            while self._queued < self.BATCH_BYTES and not self._eof and self._stop_requested_at is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            parts = []
            size = 0
            while self._queue and size < len(view):
                buf, start, end = self._queue.popleft()
                room = len(view) - size
                if end - start > room:
                    self._queue.appendleft((buf, start + room, end))
                    end = start + room
                parts.append((buf, start, end))
                size += end - start
            self._queued -= size
        # Copied outside the lock: the pump only appends, never rewrites a queued range, and this is the only
        # consumer. A slab whose last byte has been copied is done with: the pump moved on when it filled it.
        pos = 0
        done = []
        for buf, start, end in parts:
            view[pos:pos + end - start] = memoryview(buf)[start:end]
            pos += end - start
            if end == len(buf) and isinstance(buf, mmap.mmap):
                done.append(buf)
        with self._cond:
            # A few spare slabs keep steady capture free of new mappings; the rest of a backlog's slabs go.
            keep = max(0, self.SPARE_SLABS - len(self._free_slabs))
            self._free_slabs.extend(done[:keep])
            self._slabs_made -= len(done) - len(done[:keep])
            self._cond.notify_all()
        return size

    # ---- shutdown --------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Start an orderly stop; keep iterating the reader until it ends to get every captured packet."""
        with self._cond:
            if self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()

    @property
    def stopping(self) -> bool:
        return self._stop_requested_at is not None

    def _stop_wait(self) -> float:
        """How long the pump may wait for data before the stop needs attention again."""
        if self._stop_requested_at is None or self._terminated_at is not None:
            return self._tick
        return max(0.0, min(self._tick, self._stop_requested_at + self._linger - time.monotonic()))

    def _advance_stop(self, pipe_empty: bool) -> None:
        """Called from the pump thread: SIGTERM once lingered, SIGKILL if dumpcap ignores it."""
        if self._stop_requested_at is None:
            return
        now = time.monotonic()
        if self._terminated_at is None:
            due = self._stop_requested_at + self._linger
            # An empty pipe means dumpcap is not blocked in a write the signal would cut short. The pump empties it
            # whenever the queue has room, so waiting for that takes long only if camwatch has stalled.
            if now >= due and (pipe_empty or now >= due + self._stop_grace):
                self._terminated_at = now
                self._signal(signal.SIGTERM)
        elif now >= self._terminated_at + self._stop_grace and self.proc.poll() is None:
            # Killing it closes the pipe, which ends the reader.
            self.killed = True
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def stop(self) -> str:
        """Stop dumpcap now and reap it; returns what it wrote on stderr (errors and statistics)."""
        self._stand_down_watchdog()
        with self._cond:
            # Whatever the reader has not taken by now is abandoned; the pump must not block on a full queue.
            self._discard = True
            self._queue.clear()
            self._queued = 0
            self._cond.notify_all()
        if self.proc.poll() is None:
            if self._terminated_at is None:
                self._terminated_at = time.monotonic()
                self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=max(0.0, self._terminated_at + self._stop_grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        pump = getattr(self, "_pump_thread", None)
        if pump is not None:
            pump.join(timeout=2)
        self._stderr_thread.join(timeout=2)
        if pump is None or not pump.is_alive():
            assert self.proc.stdout is not None   # stdout=PIPE
            self.proc.stdout.close()
        with self._lock:
            return "\n".join(self._messages)

    def _stand_down_watchdog(self) -> None:
        if self._watchdog is None:
            return
        assert self._watchdog_pipe is not None   # made together with the watchdog
        try:
            os.write(self._watchdog_pipe, b"x")
        except OSError:
            pass   # it is gone already
        os.close(self._watchdog_pipe)
        try:
            self._watchdog.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
            self._watchdog.wait()
        self._watchdog = None

    # ---- dumpcap's stderr: errors, progress and statistics ---------------------------------------------
    _STATS = re.compile(r"Packets received/dropped on interface '(?P<iface>.*)': (?P<received>\d+)/(?P<dropped>\d+)"
                        r"(?: \(.*ps_ifdrop:(?P<ifdrop>\d+)\))?")
    _COUNT = re.compile(r"Packets(?: captured)?: (\d+)(?:\s+|$)")
    _CHATTER = ("Capturing on ", "File: ")

    def _watch_stderr(self) -> None:
        # A thread of its own so the pipe never fills and blocks dumpcap, whatever the main loop is doing.
        assert self.proc.stderr is not None   # stderr=PIPE
        fd = self.proc.stderr.fileno()
        rest = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            lines, rest = self._split_stderr(rest + chunk)
            for line in lines:
                self._stderr_line(line)
        self._stderr_line(rest.decode("utf-8", "replace").strip())
        self.proc.stderr.close()

    @staticmethod
    def _split_stderr(data: bytes) -> tuple[list[str], bytes]:
        """Complete lines of dumpcap's stderr, and the incomplete rest. dumpcap redraws its running count with
        carriage returns, so a line ends at either."""
        *lines, rest = re.split(rb"[\r\n]", data)
        return [line.decode("utf-8", "replace").strip() for line in lines], rest

    def _stderr_line(self, line: str) -> None:
        with self._lock:
            # The running count ("\rPackets: 6 ") ends with no line end, so a message dumpcap writes next, such as
            # the one for a vanished interface, starts on the count's line: the count comes off the front.
            while m := self._COUNT.match(line):
                self._captured = int(m[1])
                line = line[m.end():].lstrip()
            if not line:
                return
            m = self._STATS.search(line)
            if m:
                self._stats[m["iface"]] = (int(m["received"]), int(m["dropped"]), int(m["ifdrop"] or 0))
                return
            if not line.startswith(self._CHATTER):
                self._messages.append(line)

    @property
    def dropped(self) -> int:
        """Packets the kernel or dumpcap dropped (dumpcap's pcap + dumpcap + flushed counts).

        dumpcap reports statistics when it stops (Linux has no SIGINFO to ask for them earlier), so this is 0
        while capturing and final once the reader has ended or `stop` returned.
        """
        with self._lock:
            return sum(d for _r, d, _i in self._stats.values())

    @property
    def received(self) -> int | None:
        """Packets dumpcap took from the kernel (drops not included), once it has reported statistics."""
        with self._lock:
            return sum(r for r, _d, _i in self._stats.values()) if self._stats else None

    @property
    def interface_dropped(self) -> int:
        """Drops the interface or its driver counted (ps_ifdrop): lost before capture, and not only its packets."""
        with self._lock:
            return sum(i for _r, _d, i in self._stats.values())

    @property
    def captured(self) -> int:
        """dumpcap's own count of packets it wrote to the pipe: running while capturing, final at exit."""
        with self._lock:
            return self._captured

    def error_message(self) -> str:
        """dumpcap's complaint as one line, for CamwatchError."""
        with self._lock:
            lines = list(self._messages)
        for i, line in enumerate(lines):
            if line.startswith("dumpcap: "):
                msg = line[len("dumpcap: "):]
                # Some errors put the reason on the next line in parentheses: "(No such device exists)".
                if i + 1 < len(lines) and lines[i + 1].startswith("(") and lines[i + 1].endswith(")"):
                    msg = f"{msg.rstrip('.')} {lines[i + 1]}"
                return msg
        if lines:
            return lines[-1]
        rc = self.proc.poll()
        if rc is None:
            return "no message from dumpcap"
        if rc < 0:
            try:
                return f"dumpcap was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"dumpcap was killed by signal {-rc}"
        return f"dumpcap exited with status {rc}"
