"""Pin glibc malloc's tunables for a long-running sensor.

glibc raises its mmap threshold to the size of any mapped block that is freed (up to 32 MiB on 64-bit), so after
the first large free, blocks of that size are carved from an arena instead and stay resident when released. Every
scrape of /metrics renders the whole exposition (megabytes at 10,000 devices) in a request thread, and the
ThreadingWSGIServer's threads each get an arena of their own: the live soak saw the thread heaps step by ~17 MB once
and never give it back. A fixed threshold keeps large blocks mapped (returned to the kernel on free), and a cap on
arenas stops every short-lived request thread from holding a heap of its own.

Not glibc (musl, macOS): nothing to pin, nothing done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# From glibc's malloc.h; stable ABI since glibc 2.x.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, now kept instead of raised
ARENA_MAX = 2  # the main thread's arena and one shared by the capture reader and the metrics threads


def pin_malloc_for_long_run() -> bool:
    """True when glibc accepted both settings."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
