"""Cleartext file fetches by camera-side devices: TFTP read requests, and HTTP GETs whose path names a script, an
executable, a firmware image or an archive. A camera has no reason to fetch either kind of file in the clear; an
intruder's dropper (wget/tftp of a shell script or of one binary per CPU architecture) does exactly that."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from sensor.decode import PROTO_UDP, Decoded, payload
from sensor.dissect import TFTP_READ, HttpRequest, ParserGuard, parse_tftp_request, wire_text
from sensor.enrich.events import EventSink, FileFetch
from sensor.enrich.inventory import Inventory
from sensor.enrich.scope import SCOPE_CAMERA, Classifier
from sensor.flows import ip_from16

SCRIPT, EXECUTABLE, FIRMWARE, ARCHIVE, FILE = "script", "executable", "firmware image", "archive", "file"
# What a path's last segment names, by its suffix (lower-cased, after percent-decoding). Server-side pages (.php,
# .cgi, .asp, .jsp) and web assets (.js, .css, images) are not here: fetching those is what browsing a camera's web
# interface looks like. docs/detectors.md lists the same.
SUFFIXES: dict[str, str] = {
    **dict.fromkeys((".sh", ".bash", ".ash", ".ksh", ".zsh", ".py", ".pl", ".rb", ".lua", ".tcl", ".ps1", ".vbs",
                     ".bat", ".cmd"), SCRIPT),
    **dict.fromkeys((".elf", ".exe", ".dll", ".so", ".ko", ".apk", ".jar", ".deb", ".ipk", ".rpm", ".msi", ".run"),
                    EXECUTABLE),
    **dict.fromkeys((".bin", ".img", ".dav", ".fw", ".trx", ".chk", ".pkg", ".upg", ".ubi", ".squashfs", ".cramfs",
                     ".jffs2", ".uimage", ".itb", ".rom"), FIRMWARE),
    **dict.fromkeys((".tar", ".tgz", ".gz", ".bz2", ".xz", ".lzma", ".zst", ".zip", ".7z", ".rar", ".cpio"), ARCHIVE),
}
# Botnet droppers name one binary per CPU architecture (mirai.arm7, x.mipsel, sora.x86_64...).
ARCH_SUFFIX = re.compile(r"\.(?:arm(?:v?[4-8][a-z]*|64|eb|el|hf)?|aarch64|mips(?:el|64|64el)?|mpsl|x86(?:_64)?|x64"
                         r"|i[3-6]86|m68k|ppc(?:64)?(?:le)?|powerpc|sh4|spc|sparc|arc|riscv(?:32|64)?)$")
# Hikvision firmware is digicap.dav; an older image is named digicap alone.
FIRMWARE_NAMES = ("digicap",)
MAX_SEGMENT = 1024   # bytes of a last segment judged: a name that long is judged by its end
SHOWN = 160          # characters of a path quoted in an alert
MAX_NAME = 255       # a DNS name's longest


def file_kind(segment: bytes) -> str | None:
    """What a path's last segment names (SUFFIXES, ARCH_SUFFIX, FIRMWARE_NAMES), or None for anything else."""
    name = unquote_to_bytes(segment[-MAX_SEGMENT:]).decode("latin-1").lower()
    dot = name.rfind(".")
    if dot >= 0:
        kind = SUFFIXES.get(name[dot:])
        if kind is not None:
            return kind
        if ARCH_SUFFIX.search(name):
            return EXECUTABLE
    return FIRMWARE if name.startswith(FIRMWARE_NAMES) else None


def request_path(target: bytes) -> bytes:
    """The path of an HTTP request-target: the query and fragment dropped, and the scheme and authority of the
    absolute form a proxy is sent."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if b"://" in path[:16]:
        path = b"/" + path.split(b"://", 1)[1].partition(b"/")[2]
    return path


def last_segment(path: bytes) -> bytes:
    return path.replace(b"\\", b"/").rsplit(b"/", 1)[-1]


class FetchReader:
    """TFTP read requests (rows: UDP to port 69) and HTTP GETs of files (the requests name_flows read) from
    camera-side devices, handed on as FileFetch events."""

    def __init__(self, classifier: Classifier, inventory: Inventory, parsers: ParserGuard, sink: EventSink):
        self.classifier = classifier
        self.inventory = inventory
        self.parsers = parsers
        self.sink = sink

    def read(self, dec: Decoded, tftp: list[int], requests: list[tuple[int, HttpRequest]]) -> None:
        for row in tftp:
            if self._camera_side(dec, row):
                request = self.parsers.run(parse_tftp_request, payload(dec, row), None)
                if request is not None and request.opcode == TFTP_READ:
                    self._emit(dec, row, "tftp", "RRQ", request.filename, None,
                               file_kind(last_segment(request.filename)) or FILE)
        for row, http in requests:
            if http.method != "GET" or not self._camera_side(dec, row):
                continue
            path = request_path(http.target)
            kind = file_kind(last_segment(path))
            if kind is not None:
                self._emit(dec, row, "http", "GET", path, http.host, kind)

    def _camera_side(self, dec: Decoded, row: int) -> bool:
        return self.classifier.scope_of_raw(dec.src[row].tobytes()) == SCOPE_CAMERA

    def _emit(self, dec: Decoded, row: int, transport: str, method: str, path: bytes, host: str | None,
              kind: str) -> None:
        ts = float(dec.batch.ts[row])
        dev = self.inventory.touch(ip_from16(dec.src[row].tobytes()), int(dec.src_mac[row]), ts)
        if dev is None:
            return
        server = ip_from16(dec.dst[row].tobytes())
        port = int(dec.dport[row])
        proto = "udp" if dec.proto[row] == PROTO_UDP else "tcp"
        peer = str(server)
        # a Host that is the server's own address names nothing; any other is quoted in the alert, so escaped
        name = wire_text(host.encode(), MAX_NAME) if host and host != peer else None
        scope, _rule = self.classifier.destination_scope(server, name, port, proto)
        self.sink.fetch(FileFetch(ts, dev, peer, port, proto, scope, int(dec.vlan[row]), transport, method,
                                  wire_text(path, SHOWN), wire_text(last_segment(path), SHOWN), kind, name))
