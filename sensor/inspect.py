"""`camwatch inspect`: Wireshark's dissectors on one device's control-plane packets, for an analyst drilling into
an alert.

pyshark (tshark) dissects a few hundred packets per second, so it never sees the capture itself: camwatch's own
reader and decoder pick the device's low-volume packets (DNS, TLS hellos, HTTP/RTSP, discovery, small UDP, TCP
handshakes) out of the bulk video into a small temporary pcap, and only that file goes to pyshark.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sensor.capture import open_file
from sensor.decode import PROTO_TCP, PROTO_UDP, decode
from sensor.errors import CamwatchError, CaptureError

CONTROL_PORTS = np.array([53, 67, 68, 123, 137, 161, 443, 554, 853, 1900, 3702, 5060, 5061, 5353, 6002, 6003, 8554,
                          8555, 8666, 8800, 31006, 31007, 32100, 32108, 37020, 37810], dtype=np.int64)
SMALL_PAYLOAD = 600          # bytes: TLS ClientHellos, HTTP requests, heartbeats; not video
MAX_PACKETS = 2000           # what pyshark is given at most: it stays a few seconds of dissection
SYN = 0x02
# SIP: door stations and intercoms register with their maker's or a provider's SIP server
DISPLAY_FILTER = ("dns || tls.handshake || http || rtsp || sip || ssdp || ntp || dhcp || icmp || icmpv6 || "
                  "udp.port in {3702, 37020, 37810, 32100, 6002, 6003, 8800} || tcp.flags.syn == 1")


def _address_raw(address: str) -> bytes:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise CamwatchError(f"inspect: --device {address!r} is not an IP address or a device id") from None
    return (b"\x00" * 10 + b"\xff\xff" + ip.packed) if ip.version == 4 else ip.packed


def _mine(column: np.ndarray, raws: np.ndarray) -> np.ndarray:
    """Rows whose 16-byte address is any of the box's."""
    return (column[:, None, :] == raws[None, :, :]).all(axis=2).any(axis=1)


class Extracted(NamedTuple):
    seen: int        # packets read
    of_box: int      # of them, sent or received by one of the box's addresses
    written: int     # of those, the control plane written out (at most the limit)
    failures: list[str]


def extract(paths: list[str], addresses: list[str] | str, out: Path, limit: int = MAX_PACKETS) -> Extracted:
    """Write the control-plane packets of a box (every address it has held) to `out` (classic pcap)."""
    wanted = [addresses] if isinstance(addresses, str) else addresses
    raws = np.array([np.frombuffer(_address_raw(a), dtype=np.uint8) for a in wanted], dtype=np.uint8)
    seen = of_box = written = 0
    failures: list[str] = []
    linktype = None
    with open(out, "wb") as fh:
        for path in paths:
            reader, _ = open_file(path)
            try:
                for batch in reader:
                    if not len(batch):
                        continue
                    seen += len(batch)
                    dec = decode(batch)
                    mine = _mine(dec.src, raws) | _mine(dec.dst, raws)
                    of_box += int(np.count_nonzero(mine & dec.is_ip))
                    control = (np.isin(dec.sport, CONTROL_PORTS) | np.isin(dec.dport, CONTROL_PORTS)
                               | (dec.payload_len <= SMALL_PAYLOAD)
                               | ((dec.proto == PROTO_TCP) & ((dec.tcp_flags & SYN) > 0)))
                    keep = np.flatnonzero(mine & control & dec.is_ip
                                          & ((dec.proto == PROTO_TCP) | (dec.proto == PROTO_UDP)
                                             | (dec.proto == 1) | (dec.proto == 58)))
                    for i in keep:
                        if written >= limit:
                            break
                        lt = int(batch.linktype[i])
                        if linktype is None:
                            linktype = lt
                            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, lt))
                        if lt != linktype:
                            continue  # one classic pcap holds one link type; pcapng inputs rarely mix them
                        start, cap = int(batch.offsets[i]), int(batch.caplen[i])
                        ts = float(batch.ts[i])
                        sec = int(ts)
                        fh.write(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)) % 1_000_000, cap,
                                             int(batch.wirelen[i])))
                        fh.write(bytes(batch.data[start:start + cap]))
                        written += 1
            except CaptureError as exc:
                failures.append(str(exc))
        if linktype is None:
            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    return Extracted(seen, of_box, written, failures)


def _field(layer, name: str) -> str | None:
    value = getattr(layer, name, None)
    return str(value) if value is not None else None


def describe(pkt) -> dict:
    """The dissectors' view of one packet, reduced to what names and identifies things."""
    ip = getattr(pkt, "ip", None) or getattr(pkt, "ipv6", None)
    when = datetime.fromtimestamp(float(pkt.sniff_timestamp), UTC)
    row = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
           "src": _field(ip, "src") if ip else None, "dst": _field(ip, "dst") if ip else None,
           "protocol": pkt.highest_layer, "detail": None}
    details = []
    if hasattr(pkt, "dns"):
        kind = "response" if _field(pkt.dns, "flags_response") in ("1", "True") else "query"
        answers = [f.showname_value for f in pkt.dns.a.all_fields] if hasattr(pkt.dns, "a") else []
        details.append(f"DNS {kind} {_field(pkt.dns, 'qry_name')}" + (f" -> {', '.join(answers)}" if answers else ""))
    if hasattr(pkt, "tls") and _field(pkt.tls, "handshake_extensions_server_name"):
        details.append(f"TLS ClientHello SNI {_field(pkt.tls, 'handshake_extensions_server_name')}")
    if hasattr(pkt, "http"):
        for name in ("request_method", "request_uri", "host", "user_agent", "response_code", "server"):
            value = _field(pkt.http, name)
            if value:
                details.append(f"HTTP {name.replace('_', ' ')} {value}")
    if hasattr(pkt, "rtsp"):
        for name in ("method", "url", "response"):
            value = _field(pkt.rtsp, name)
            if value:
                details.append(f"RTSP {name} {value.replace(chr(92) + 'r' + chr(92) + 'n', '').strip()}")
    if hasattr(pkt, "sip"):
        for name, label in (("request_line", "request"), ("status_line", "response"), ("user_agent", "user agent"),
                            ("server", "server")):
            value = _field(pkt.sip, name)
            if value:
                details.append(f"SIP {label} {value}")
    if hasattr(pkt, "tcp") and not details and _field(pkt.tcp, "flags_syn") in ("1", "True"):
        if _field(pkt.tcp, "flags_ack") in ("1", "True"):
            details.append(f"TCP SYN-ACK from port {_field(pkt.tcp, 'srcport')}")
        else:
            details.append(f"TCP SYN to port {_field(pkt.tcp, 'dstport')}")
    if hasattr(pkt, "udp") and not details:
        details.append(f"UDP {_field(pkt.udp, 'srcport')} -> {_field(pkt.udp, 'dstport')}, "
                       f"{_field(pkt.udp, 'length')} bytes")
    row["detail"] = "; ".join(details) or None
    return row


def inspect(paths: list[str], addresses: list[str] | str) -> tuple[list[dict], Extracted]:
    with tempfile.TemporaryDirectory(prefix="camwatch-inspect-") as tmp:
        small = Path(tmp) / "control.pcap"
        extracted = extract(paths, addresses, small)
        rows: list[dict] = []
        if extracted.written:
            cap = waited_capture(str(small), display_filter=DISPLAY_FILTER, keep_packets=False)
            failed: Exception | None = None
            try:
                for pkt in cap:
                    rows.append(describe(pkt))
            except Exception as exc:  # noqa: BLE001 - pyshark reports tshark failures as assorted exception types
                failed = exc
            try:   # closed whatever happened: a capture left open is closed by its __del__, raising there
                cap.close()
            except Exception as exc:  # noqa: BLE001 - as above
                failed = failed or exc
            if failed is not None:
                first_line = str(failed).splitlines()[0] if str(failed) else type(failed).__name__
                raise CamwatchError(f"inspect: tshark could not dissect the extracted packets: {first_line}") from None
    return rows, extracted


def waited_capture(path: str, **options: Any) -> Any:
    """pyshark.FileCapture(path, **options), except that a tshark whose output has been read to its end is waited
    for, not killed.

    pyshark kill()s tshark after EOF unless asyncio has already seen it exit, and kill() first polls the process
    (subprocess.Popen.send_signal). If tshark exited in between, that poll reaps it behind asyncio's child watcher,
    which then finds no such child ("Unknown child process pid N, will report returncode 255"), and close() raises
    TSharkCrashException for a tshark that exited 0: `inspect` failed so, and the tests' pyshark oracle, whenever the
    process was descheduled between EOF and kill() on a loaded machine. Waited for, tshark is reaped by the watcher
    alone, and its real exit status is the one pyshark checks (a positive one still fails). A close() that raised is
    not raised again from __del__ at a later garbage collection. The hooks are pyshark 0.6's (the lock pins it)."""
    return _waited_capture_type()(path, **options)


@functools.cache
def _waited_capture_type() -> type:
    import asyncio

    import pyshark  # only here: the sensor itself never starts tshark

    class WaitedFileCapture(pyshark.FileCapture):  # type: ignore[misc]   # pyshark has no type information
        async def _cleanup_subprocess(self, process: Any) -> None:
            if process.returncode is None and self._eof_reached:
                try:
                    await asyncio.wait_for(process.wait(), TSHARK_EXIT_WAIT)
                except TimeoutError:
                    pass   # output ended but tshark lingers: pyshark's kill() below, as before
            await super()._cleanup_subprocess(process)

        async def close_async(self) -> None:
            try:
                await super().close_async()
            finally:
                self._running_processes.clear()

    return WaitedFileCapture


TSHARK_EXIT_WAIT = 60.0   # seconds a tshark may take to exit once its output has ended
