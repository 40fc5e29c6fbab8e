"""Which of the guarded map's advice calls (sensor/_mapguard.c) let other Python threads run: populating and dropping
pages do (sensor.overlap's thread drops the pages of walked slices, ~0.1-0.3 ms a chunk, while the pipeline works
in Python on the main thread), asking for read-ahead keeps the GIL. And whatever the advice, the bytes read after
it are the file's."""

from __future__ import annotations

import os
import sys
import threading

import pytest

_mapguard = pytest.importorskip("sensor._mapguard")

SIZE = 128 << 20   # dropping this many populated pages takes milliseconds: long enough for a waiting thread to run


@pytest.fixture(scope="module")
def mapping(tmp_path_factory):
    path = tmp_path_factory.mktemp("gil") / "big.bin"
    block = bytes(range(256)) * 4096
    with open(path, "wb") as f:
        for _ in range(SIZE // len(block)):
            f.write(block)
    fd = os.open(path, os.O_RDONLY)
    m = _mapguard.map_file(fd, SIZE)
    yield m, block
    m.close()
    os.close(fd)


def _ran_meanwhile(call, prepare=lambda: None, tries: int = 5) -> bool:
    """Whether a thread waiting for the GIL ran Python while `call` ran on this one, in any of `tries` calls
    (`prepare` runs before each, not counted). The switch interval is made longer than the test, so the thread gets
    the GIL only when this thread gives it up: in `call`, if at all. A call that gives it up may still see nothing
    run on a busy machine, where the waiting thread gets no CPU in time: hence several tries."""
    counter = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counter[0] += 1
            os.sched_yield()   # without the GIL: this thread takes it back whenever it waits for it
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    thread = threading.Thread(target=spin, daemon=True)
    try:
        thread.start()
        for _ in range(tries):
            prepare()
            before = counter[0]
            call()
            if counter[0] != before:   # read before this thread could give the GIL up again
                return True
        return False
    finally:
        done.set()
        sys.setswitchinterval(interval)
        thread.join()


def test_dropping_pages_lets_other_threads_run_and_asking_for_read_ahead_does_not(mapping):
    m, block = mapping

    def populate():
        m.advise(_mapguard.MADV_POPULATE_READ, 0, SIZE)

    assert _ran_meanwhile(lambda: m.advise(_mapguard.MADV_DONTNEED, 0, SIZE), prepare=populate, tries=50)
    assert _ran_meanwhile(populate, tries=50)
    # the method's own check: a call that keeps the GIL lets nothing run
    assert not _ran_meanwhile(lambda: m.advise(_mapguard.MADV_WILLNEED, 0, SIZE), prepare=populate)
    m.advise(_mapguard.MADV_DONTNEED, 0, SIZE)
    view = memoryview(m)   # dropped pages read the file again
    assert bytes(view[:len(block)]) == block and bytes(view[SIZE - len(block):]) == block
    view.release()
