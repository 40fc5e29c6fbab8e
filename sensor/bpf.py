"""Capture filters for the tpacket engine: a libpcap filter expression compiled to classic BPF by libpcap itself
(the library dumpcap uses, so an expression means the same under either engine), loaded through ctypes.

libpcap ships wherever dumpcap does (Debian: libpcap0.8, a dependency of wireshark-common); without it the tpacket
engine takes no filter and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from sensor.errors import CamwatchError

PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SNAPLEN = 262144   # dumpcap's default: a filter's "greater"/"less" tests see the same lengths
INSTRUCTION_BYTES = 8   # struct sock_filter / struct bpf_insn: u16 code, u8 jt, u8 jf, u32 k


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    for candidate in (name, "libpcap.so.1", "libpcap.so.0.8"):
        if not candidate:
            continue
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_create.restype = ctypes.c_void_p
        lib.pcap_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.pcap_set_snaplen.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pcap_set_buffer_size.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pcap_activate.argtypes = [ctypes.c_void_p]
        return lib
    raise CamwatchError("the tpacket engine needs libpcap to compile a capture filter (Debian package libpcap0.8); "
                        "install it, or use the dumpcap engine")


def _live_handle(lib: ctypes.CDLL, interface: str) -> int | None:
    """An activated libpcap handle on `interface` (needs CAP_NET_RAW), or None. Only a live handle compiles
    filters the way dumpcap's run on Linux, where the kernel keeps a VLAN tag outside the packet: `vlan` then
    tests the tag through BPF extensions, not the packet bytes. Its own small ring lasts only while compiling."""
    errbuf = ctypes.create_string_buffer(256)
    handle = lib.pcap_create(interface.encode(), errbuf)
    if not handle:
        return None
    lib.pcap_set_snaplen(handle, SNAPLEN)
    lib.pcap_set_buffer_size(handle, 1 << 20)
    if lib.pcap_activate(handle) < 0:   # > 0: a warning, still activated
        lib.pcap_close(handle)
        return None
    return handle


def compile_filter(expression: str, linktype: int = 1, interface: str | None = None) -> bytes:
    """The expression as a classic BPF program for SO_ATTACH_FILTER (packed struct sock_filter, host order).

    With `interface` (and the privilege to open it) the program is compiled on a live handle there, exactly as
    dumpcap's would be; otherwise for the link type alone, where `vlan` in a filter tests the packet bytes, in which
    a live Linux capture no longer has the tag.
    """
    lib = _libpcap()
    handle = (_live_handle(lib, interface) if interface else None) or lib.pcap_open_dead(linktype, SNAPLEN)
    if not handle:
        raise CamwatchError("libpcap could not make a handle to compile the capture filter")
    program = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            reason = (lib.pcap_geterr(handle) or b"").decode("utf-8", "replace")
            raise CamwatchError(f"capture filter {expression!r}: {reason}")
        try:
            return ctypes.string_at(program.bf_insns, program.bf_len * INSTRUCTION_BYTES)
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)
