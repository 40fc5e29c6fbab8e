"""The live sensor pins glibc's malloc tunables (why: sensor/allocator.py)."""

import ctypes.util
import subprocess
import sys

import pytest

from sensor.allocator import pin_malloc_for_long_run

GLIBC = ctypes.util.find_library("c") is not None and "libc.so" in (ctypes.util.find_library("c") or "")


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_glibc_accepts_the_settings():
    assert pin_malloc_for_long_run() is True


# A large block freed in a thread must go back to the kernel: without the fixed threshold glibc raises its threshold
# to 8 MiB after the first free and the next 8 MiB blocks stay in the arena.
_PROBE = r"""
import sys, threading
from sensor.allocator import pin_malloc_for_long_run
if sys.argv[1] == "pinned":
    pin_malloc_for_long_run()

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

kept = []

def churn():
    # A rendering: a large block, then a small object that outlives it (a cached line, a counter) allocated
    # after it, so the freed block is a hole below live memory rather than the top of the heap.
    for _ in range(20):
        block = bytearray(8 << 20)
        block[::4096] = b"x" * len(block[::4096])
        kept.append(bytearray(1024))
        del block

before = rss_kib()
for _ in range(4):
    t = threading.Thread(target=churn); t.start(); t.join()
print(rss_kib() - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_large_blocks_freed_in_threads_leave_the_process():
    def grown(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())
    assert grown("pinned") < 4 * 1024, "with the threshold pinned, 16 MiB freed per thread should be unmapped"
    assert grown("default") >= 8 * 1024, "the probe no longer shows glibc's default keeping freed blocks"
