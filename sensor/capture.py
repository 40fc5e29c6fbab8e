"""Capture stage: turn a pcap/pcapng byte stream (file, or dumpcap's pipe) into packet batches.

A batch is one read chunk plus arrays of record offsets, lengths, timestamps and link types, so that the decode
stage can work on whole arrays instead of one Python object per packet.
"""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from sensor.errors import CamwatchError, CaptureError

CHUNK_BYTES = 4 << 20
# Larger than any real link MTU with headroom for jumbo and loopback captures; a longer record is corruption.
MAX_RECORD_BYTES = 1 << 20

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = 0x0A0D0D0A


@dataclass
class Batch:
    data: bytes
    offsets: np.ndarray   # int64, start of each frame in `data`
    caplen: np.ndarray    # int64, bytes captured
    wirelen: np.ndarray   # int64, bytes on the wire
    ts: np.ndarray        # float64, epoch seconds
    linktype: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, index: np.ndarray | slice) -> "Batch":
        return Batch(self.data, self.offsets[index], self.caplen[index], self.wirelen[index],
                     self.ts[index], self.linktype[index])


class _Records:
    """Accumulates record fields as Python lists, then hands them over as arrays."""

    __slots__ = ("offsets", "caplen", "wirelen", "ts", "linktype")

    def __init__(self):
        self.offsets: list[int] = []
        self.caplen: list[int] = []
        self.wirelen: list[int] = []
        self.ts: list[float] = []
        self.linktype: list[int] = []

    def batch(self, data: bytes) -> Batch:
        return Batch(
            data,
            np.array(self.offsets, dtype=np.int64),
            np.array(self.caplen, dtype=np.int64),
            np.array(self.wirelen, dtype=np.int64),
            np.array(self.ts, dtype=np.float64),
            np.array(self.linktype, dtype=np.int32),
        )


class CaptureReader:
    """Reads classic pcap (µs/ns, either byte order) and pcapng from a byte source.

    `read` returns bytes, b"" at end of stream, or None when a live source had nothing within its tick; on None
    the reader yields an empty batch so the caller can run wall-clock housekeeping.
    """

    def __init__(self, read: Callable[[], bytes | None], name: str):
        self._read = read
        self.name = name
        self.bytes_consumed = 0   # file offset of the first byte not yet parsed
        self._buf = b""
        self._eof = False
        self._parse: Callable[[bytes, _Records], tuple[int, int]] | None = None
        # pcap state
        self._pcap_hdr: struct.Struct | None = None
        self._pcap_scale = 1e-6
        self._pcap_linktype = 1
        # pcapng state
        self._ng_endian = "<"
        self._last_ts = 0.0
        self._ng_ifaces: list[tuple[int, float, float, int]] = []  # linktype, ts scale, ts offset, snaplen

    # ---- stream plumbing -------------------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Read until the buffer holds `need` bytes; False at end of stream."""
        while len(self._buf) < need:
            if self._eof:
                return False
            chunk = self._read()
            if chunk is None:
                continue
            if not chunk:
                self._eof = True
                return False
            self._buf += chunk
        return True

    def _error(self, message: str, at: int = 0) -> CaptureError:
        return CaptureError(message, self.bytes_consumed + at, self.name)

    def _start(self) -> None:
        if not self._fill(4):
            if self._buf:
                raise self._error("file too short to be a capture")
            raise self._error("empty file: not a pcap or pcapng capture")
        magic = self._buf[:4]
        if magic in PCAP_MAGIC:
            endian, scale = PCAP_MAGIC[magic]
            if not self._fill(24):
                raise self._error("truncated pcap file header")
            _, _, _, _, snaplen, network = struct.unpack(endian + "HHiIII", self._buf[4:24])
            self._pcap_hdr = struct.Struct(endian + "IIII")
            self._pcap_scale = scale
            # The upper bits of the link-type field carry FCS information, not the type.
            self._pcap_linktype = network & 0xFFFF
            self._consume(24)
            self._parse = self._parse_pcap
            self._kind = "pcap record"
        elif struct.unpack("<I", magic)[0] == PCAPNG_SHB:
            self._parse = self._parse_pcapng
            self._kind = "pcapng block"
        else:
            raise self._error(f"not a pcap or pcapng file (magic {magic.hex()})")

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self.bytes_consumed += n

    def __iter__(self) -> Iterator[Batch]:
        self._start()
        assert self._parse is not None
        while True:
            records = _Records()
            used, need = self._parse(self._buf, records)
            if records.offsets:
                yield records.batch(self._buf)
            self._consume(used)
            # The buffer now holds at most one incomplete record.
            if self._eof:
                if self._buf:
                    raise self._error(f"truncated {self._kind}: the file ends {len(self._buf)} bytes into a "
                                      f"{need}-byte record")
                return
            chunk = self._read()
            if chunk is None:
                yield _empty_batch()
            elif not chunk:
                self._eof = True
            else:
                self._buf += chunk

    _kind = "capture"

    # ---- classic pcap ----------------------------------------------------------------------------------
    def _parse_pcap(self, data: bytes, out: _Records) -> tuple[int, int]:
        unpack = self._pcap_hdr.unpack_from
        scale = self._pcap_scale
        end = len(data)
        pos = 0
        offsets, caplens, wirelens, stamps = out.offsets, out.caplen, out.wirelen, out.ts
        while pos + 16 <= end:
            sec, frac, caplen, wirelen = unpack(data, pos)
            if caplen > MAX_RECORD_BYTES:
                raise CaptureError(f"absurd record length {caplen} bytes (corrupt file?)",
                                   self.bytes_consumed + pos, self.name)
            if pos + 16 + caplen > end:
                break
            offsets.append(pos + 16)
            caplens.append(caplen)
            wirelens.append(wirelen if wirelen >= caplen else caplen)
            stamps.append(sec + frac * scale)
            pos += 16 + caplen
        need = 0
        if pos < end:
            need = 16 + unpack(data, pos)[2] if pos + 16 <= end else 16
        out.linktype.extend([self._pcap_linktype] * (len(offsets) - len(out.linktype)))
        return pos, need

    # ---- pcapng ----------------------------------------------------------------------------------------
    def _parse_pcapng(self, data: bytes, out: _Records) -> tuple[int, int]:
        end = len(data)
        pos = 0
        while pos + 12 <= end:
            btype = struct.unpack_from(self._ng_endian + "I", data, pos)[0]
            if btype == PCAPNG_SHB:
                bom = data[pos + 8:pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    self._ng_endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    self._ng_endian = ">"
                else:
                    raise CaptureError("pcapng section header with bad byte-order magic",
                                       self.bytes_consumed + pos, self.name)
            e = self._ng_endian
            blen = struct.unpack_from(e + "I", data, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_RECORD_BYTES + 64:
                raise CaptureError(f"absurd pcapng block length {blen}", self.bytes_consumed + pos, self.name)
            if pos + blen > end:
                break
            body = pos + 8
            if btype == PCAPNG_SHB:
                self._ng_ifaces = []
            elif btype == 1:
                self._ng_ifaces.append(self._idb(data, body, pos + blen - 4))
            elif btype in (6, 2):
                if btype == 6:
                    iface, hi, lo, caplen, wirelen = struct.unpack_from(e + "IIIII", data, body)
                    frame = body + 20
                else:
                    iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(e + "HHIIII", data, body)
                    frame = body + 20
                if iface >= len(self._ng_ifaces):
                    raise CaptureError(f"packet for undeclared interface {iface}", self.bytes_consumed + pos,
                                       self.name)
                if frame + caplen > pos + blen - 4:
                    raise CaptureError(f"packet length {caplen} exceeds its block", self.bytes_consumed + pos,
                                       self.name)
                linktype, scale, offset, _snap = self._ng_ifaces[iface]
                out.offsets.append(frame)
                out.caplen.append(caplen)
                out.wirelen.append(max(wirelen, caplen))
                out.ts.append(((hi << 32) | lo) * scale + offset)
                self._last_ts = out.ts[-1]
                out.linktype.append(linktype)
            elif btype == 3:
                if not self._ng_ifaces:
                    raise CaptureError("simple packet before any interface", self.bytes_consumed + pos, self.name)
                wirelen = struct.unpack_from(e + "I", data, body)[0]
                linktype, _scale, _offset, snap = self._ng_ifaces[0]
                caplen = min(wirelen, blen - 16, snap or wirelen)
                out.offsets.append(body + 4)
                out.caplen.append(caplen)
                out.wirelen.append(wirelen)
                # Simple packet blocks carry no timestamp: reuse the previous packet's.
                out.ts.append(out.ts[-1] if out.ts else self._last_ts)
                out.linktype.append(linktype)
            pos += blen
        need = 0
        if pos < end:
            need = struct.unpack_from(self._ng_endian + "I", data, pos + 4)[0] if pos + 8 <= end else 12
        return pos, need

    def _idb(self, data: bytes, body: int, end: int) -> tuple[int, float, float, int]:
        e = self._ng_endian
        linktype, _res, snaplen = struct.unpack_from(e + "HHI", data, body)
        scale, offset = 1e-6, 0.0
        pos = body + 8
        while pos + 4 <= end:
            code, length = struct.unpack_from(e + "HH", data, pos)
            if code == 0:
                break
            value = data[pos + 4:pos + 4 + length]
            if code == 9 and length >= 1:
                r = value[0]
                scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
            elif code == 14 and length == 8:
                offset = float(struct.unpack(e + "q", value)[0])
            pos += 4 + length + (-length % 4)
        return linktype, scale, offset, snaplen


def _empty_batch() -> Batch:
    z = np.zeros(0, dtype=np.int64)
    return Batch(b"", z, z, z, np.zeros(0), np.zeros(0, dtype=np.int32))


def open_file(path: str | Path) -> tuple[CaptureReader, int]:
    """A reader over a capture file, and the file's size for progress reporting."""
    path = Path(path)
    try:
        fh: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        raise CamwatchError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CamwatchError(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise CamwatchError(f"{path}: cannot open: {exc.strerror}") from None
    size = os.fstat(fh.fileno()).st_size
    return CaptureReader(lambda: fh.read(CHUNK_BYTES), str(path)), size


class LiveCapture:
    """dumpcap writing classic pcap to a pipe; dumpcap holds the capture privilege, camwatch needs none."""

    def __init__(self, interface: str, bpf: str | None = None, buffer_mib: int = 64, tick: float = 0.5):
        dumpcap = shutil.which("dumpcap") or ("/usr/bin/dumpcap" if Path("/usr/bin/dumpcap").exists() else None)
        if dumpcap is None:
            raise CamwatchError("dumpcap not found: install Wireshark's dumpcap (Debian package wireshark-common)")
        cmd = [dumpcap, "-i", interface, "-P", "-w", "-", "-B", str(buffer_mib), "-q"]
        if bpf:
            cmd += ["-f", bpf]
        self.command = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._fd = self.proc.stdout.fileno()
        self._tick = tick
        self.reader = CaptureReader(self._read, f"interface {interface}")

    def _read(self) -> bytes | None:
        ready, _, _ = select.select([self._fd], [], [], self._tick)
        if not ready:
            return None
        return os.read(self._fd, CHUNK_BYTES)

    def stop(self) -> str:
        """Stop dumpcap; returns what it wrote on stderr (its error message or drop statistics)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode("utf-8", "replace").strip()
