"""Live capture from a TPACKET_V3 memory-mapped ring (the `tpacket` capture engine): the kernel fills blocks of
packets in memory shared with camwatch, which takes a whole block at a time, with no system call per packet and no
second process. dumpcap (sensor/live.py) pays a read and a write per packet and a process of its own; at a few
hundred thousand packets a second that costs more CPU than the whole analysis.

The compiled reader (sensor/_tpacket.c) turns retired blocks into classic pcap records, so the packets go through
the same CaptureReader, decoder and pipeline as dumpcap's stream. TpacketCapture offers what run.py uses of
LiveCapture (reader, stop, drop and receive counts).

Privilege: making the socket (and compiling the filter on a live libpcap handle) needs CAP_NET_RAW; binding and
reading do not. The socket, its ring and the filter are made, every thread drops every capability
(sensor/privilege.py), and only then is the socket bound to the interface and read.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
import sys
import time
from pathlib import Path

from sensor.bpf import compile_filter
from sensor.capture import IDLE_TICK, CaptureReader
from sensor.errors import CamwatchError
from sensor.privilege import drop_privileges

try:
    from sensor import _tpacket as extension
except ImportError:  # not Linux, or built without a C compiler: only the dumpcap engine
    extension = None  # type: ignore[assignment]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_ALL = 0x0003

# ARPHRD (the interface's /sys/class/net/IF/type) -> pcap link type of what a SOCK_RAW packet socket reads there.
# Ethernet and loopback carry an Ethernet header; other link layers are left to dumpcap, whose libpcap knows them.
LINKTYPES = {1: 1, 772: 1}
SNAPLEN = 262144
PCAP_NS_MAGIC = 0xA1B23C4D

# At 600 k packets/s of ~1 KB a 1 MiB block fills in under 2 ms; smaller blocks would only mean more of them,
# larger ones more of the ring left empty in each block a quiet moment retires part-full.
BLOCK_BYTES = 1 << 20
FRAME_BYTES = 2048      # TPACKET_V3 packs frames of any size into a block; this only satisfies the ring's checks
# A block that is not full is handed over after this long, so a quiet link's packets are not held back; a block
# retired part-full wastes the rest of it, so not much shorter.
RETIRE_MS = 50
DROP_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0)   # classic BPF "ret #0": the socket takes no more packets


def pcap_header(linktype: int) -> bytes:
    """The stream's pcap file header: nanosecond timestamps (TPACKET_V3 gives them), this machine's byte order
    (the compiled reader writes the record headers in it)."""
    return struct.pack("=IHHiIII", PCAP_NS_MAGIC, 2, 4, 0, 0, SNAPLEN, linktype)


def ring_geometry(ring_mib: int) -> tuple[int, int]:
    """Block size and count for a ring of `ring_mib` MiB (at least 8 blocks)."""
    size = BLOCK_BYTES
    while size > 64 << 10 and (ring_mib << 20) // size < 8:
        size //= 2
    return size, max(8, (ring_mib << 20) // size)


def _linktype(interface: str) -> int:
    if interface == "any" or "/" in interface:
        raise CamwatchError(f"the tpacket engine captures on one network interface, not {interface!r}: use the "
                            "dumpcap engine")
    try:
        hardware = int(Path("/sys/class/net", interface, "type").read_text())
    except (OSError, ValueError):
        raise CamwatchError(f"cannot capture on {interface}: no such network interface") from None
    if hardware not in LINKTYPES:
        raise CamwatchError(f"the tpacket engine reads Ethernet interfaces; {interface} is of hardware type "
                            f"{hardware}: use the dumpcap engine")
    return LINKTYPES[hardware]


def open_ring(ring_mib: int) -> tuple[socket.socket, mmap.mmap, int]:
    """A packet socket with its receive ring mapped, bound to nothing yet: returns it, the ring and the block size.
    The one step that needs CAP_NET_RAW (the kernel checks it when the socket is made, not when it is bound)."""
    try:
        # Protocol 0: the socket receives nothing until `attach` binds it, after its ring and filter are set.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise CamwatchError("the tpacket engine needs CAP_NET_RAW to open its capture (systemd: "
                            "AmbientCapabilities=CAP_NET_RAW; see docs/deploy.md), or use the dumpcap engine") from None
    try:
        block, blocks = ring_geometry(ring_mib)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        request = struct.pack("=7I", block, blocks, FRAME_BYTES, block // FRAME_BYTES * blocks, RETIRE_MS, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        ring = mmap.mmap(sock.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        sock.close()
        raise CamwatchError(f"cannot make the tpacket engine's {ring_mib} MiB ring: {exc.strerror or exc}") from None
    return sock, ring, block


def attach(sock: socket.socket, interface: str, program: bytes | None, fanout_group: int) -> None:
    """Start the socket capturing on `interface`: filter, bind, promiscuous mode, fanout group. None of it needs a
    capability. The filter goes on before the bind, so no packet it refuses reaches the ring."""
    try:
        if program is not None:
            extension.attach_filter(sock.fileno(), program)
        sock.bind((interface, ETH_P_ALL))
        # Promiscuous, as dumpcap is by default: a mirror port delivers frames for other MACs.
        ifindex = socket.if_nametoindex(interface)
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
        if fanout_group:
            # Sockets in one group share the interface's packets by flow hash (both directions of a flow alike):
            # one camwatch per core on a link too fast for one.
            mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG   # fragments reassembled first: hashed whole
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", fanout_group | mode << 16))
    except OSError as exc:
        raise CamwatchError(f"cannot capture on {interface} with the tpacket engine: {exc.strerror or exc}") from None


class TpacketCapture:
    """Live capture from a TPACKET_V3 ring; the same surface as live.LiveCapture for `camwatch run`.

    The constructor makes the socket and its ring and compiles the filter (CAP_NET_RAW), then gives up every
    privilege (`drop_privileges`: every capability of every thread, and the user to run on as when started as
    root); `start` (called by the constructor unless start=False) then binds it to the interface, with no
    privilege left. `camwatch run` makes it first thing and starts it once the rest of the sensor is ready, so
    camwatch holds CAP_NET_RAW only for those first steps. Raises CamwatchError if the capture cannot be opened or
    a privilege cannot be given up.

    Shutdown: after `request_stop` the reader goes on for `linger` seconds, then seals the socket (a filter that
    takes nothing more), waits for the kernel to hand over the open block (within RETIRE_MS), takes what the ring
    holds and ends: a bounded drain, however fast packets keep coming.
    """

    name = "tpacket"
    killed = False              # nothing to kill: no capture process
    interface_dropped = 0       # the kernel reports ring drops only (`dropped`)
    BATCH_WAIT = 0.05           # as LiveCapture: gather up to this long for a large batch

    def __init__(self, interface: str, bpf: str | None = None, *, buffer_mib: int, fanout_group: int = 0,
                 user: str | None = None, tick: float = IDLE_TICK, linger: float = RETIRE_MS / 1000,
                 start: bool = True):
        if extension is None:
            raise CamwatchError("the tpacket engine needs camwatch's compiled extension (sensor._tpacket, Linux "
                                "with a C compiler at install): use the dumpcap engine")
        self.interface = interface
        self.command = ["tpacket", interface]
        self._tick = tick
        self._linger = linger
        linktype = _linktype(interface)
        # Compiled on a live libpcap handle, which needs the privilege too.
        self._program = compile_filter(bpf, linktype, interface) if bpf else None
        self.fanout_group = fanout_group
        self._sock, self._ring, self._block = open_ring(buffer_mib)
        try:
            drop_privileges(user)
        except BaseException:
            self._close_ring()
            raise
        self._cursor = bytearray(32)   # block, offset, frames left, damaged blocks (uint64 each; see _tpacket.c)
        self._header: bytes | None = pcap_header(linktype)
        self._stop_requested_at: float | None = None
        self._sealed_at: float | None = None
        self._captured = 0
        self._received = 0
        self._dropped = 0
        self.freezes = 0
        self.read_cpu = 0.0   # CPU seconds spent taking packets from the ring (polls' waits cost none)
        self._error = ""
        self._rx_counter = Path("/sys/class/net", interface, "statistics", "rx_packets")
        self._rx_at_start: int | None = None
        self.reader = CaptureReader(None, f"interface {interface}", readinto=self._readinto)
        if start:
            self.start()

    def start(self) -> TpacketCapture:
        """Bind to the interface: packets reach the ring from now on."""
        try:
            attach(self._sock, self.interface, self._program, self.fanout_group)
        except BaseException:
            self._close_ring()
            raise
        self._rx_at_start = self._read_rx()
        return self

    # ---- data ------------------------------------------------------------------------------------------
    def _readinto(self, view: memoryview) -> int | None:
        """pcap records of the retired blocks into the reader's buffer: bytes written, 0 at the end of the
        capture, None if nothing came within the tick."""
        if self._header is not None:
            header, self._header = self._header, None
            view[:len(header)] = header
            return len(header)
        if self._sock.fileno() < 0:
            return 0
        timeout, gather = self._tick, self.BATCH_WAIT
        if self._stop_requested_at is not None:
            timeout = gather = self._stop_wait()
        cpu = time.thread_time()
        try:
            got = extension.read(self._sock.fileno(), self._ring, self._block, self._cursor, view, timeout, gather)
        except OSError as exc:
            # ENETDOWN: the interface went down or away. The capture ends here, as dumpcap's does; run reports
            # the reason as the capture ending unexpectedly.
            self._error = f"{exc.strerror or exc} (the interface went down or away)" \
                if exc.errno == errno.ENETDOWN else (exc.strerror or str(exc))
            return 0
        finally:
            self.read_cpu += time.thread_time() - cpu
        if got is None:
            return 0 if self._sealed_at is not None and timeout == 0 else None
        written, packets = got
        self._captured += packets
        return written

    def _stop_wait(self) -> float:
        """How long the next read may wait once a stop is requested: until the linger ends, then (sealed) until
        the kernel has retired the open block, then not at all."""
        now = time.monotonic()
        if self._sealed_at is None:
            assert self._stop_requested_at is not None
            left = self._stop_requested_at + self._linger - now
            if left > 0:
                return min(left, self._tick)
            try:
                extension.attach_filter(self._sock.fileno(), DROP_ALL)
            except OSError:
                pass   # not expected; the ring is then drained as it stands after the wait below
            self._sealed_at = now
        return max(0.0, min(self._sealed_at + 2 * RETIRE_MS / 1000 - now, self._tick))

    # ---- counters --------------------------------------------------------------------------------------
    def _statistics(self) -> None:
        """Add the kernel's counts since the last call (PACKET_STATISTICS resets them as it reports them)."""
        if self._sock.fileno() < 0:
            return
        try:
            packets, drops, freezes = struct.unpack("=III", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        except OSError:
            return
        # tp_packets counts the drops too; what reached the ring is the rest.
        self._received += packets - drops
        self._dropped += drops
        self.freezes += freezes

    @property
    def dropped(self) -> int:
        """Packets the kernel dropped because the ring was full (tp_drops), current while capturing."""
        self._statistics()
        return self._dropped

    @property
    def received(self) -> int | None:
        """Packets that reached the ring (the filter's passes less the drops)."""
        self._statistics()
        return self._received

    @property
    def captured(self) -> int:
        """Packets handed to camwatch's reader."""
        return self._captured

    @property
    def damaged_blocks(self) -> int:
        """Ring blocks whose frame headers pointed outside the block (never expected: the kernel writes them)."""
        return int.from_bytes(self._cursor[24:32], sys.byteorder)

    def _read_rx(self) -> int | None:
        try:
            return int(self._rx_counter.read_text())
        except (OSError, ValueError):
            return None

    def interface_received(self) -> int | None:
        """Frames the capture interface received since capture started, by the kernel's counter."""
        if self._rx_at_start is None:
            return None
        now = self._read_rx()
        return None if now is None else max(0, now - self._rx_at_start)

    # ---- shutdown --------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()

    @property
    def stopping(self) -> bool:
        return self._stop_requested_at is not None

    def stop(self) -> str:
        """Close the capture (its counts are kept); returns the error that ended it, if any."""
        self.request_stop()
        self._statistics()
        self._close_ring()
        return self._error

    def _close_ring(self) -> None:
        self._sock.close()
        self._ring.close()

    def error_message(self) -> str:
        return self._error or f"the capture on {self.interface} ended"
