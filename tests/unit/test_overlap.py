"""Reading beside processing (sensor/overlap.py): the batches of a mapped capture read and decoded one batch ahead on
a second thread are the reader's own batches, in order, decoded as the pipeline would; what the thread raises is
raised on the main thread after every batch before it; closing stops the thread before the reader closes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from capture_bytes import pcap, pcapng, video_frame, write

from sensor import capture, mapped, overlap
from sensor import decode as decoding
from sensor.capture import open_file
from sensor.config import OVERLAP_MODES, Config, load_config
from sensor.decode import decode_batch
from sensor.errors import CaptureError
from sensor.pipeline import Sensor
from tests.unit.test_capture import _records

pytest.importorskip("sensor._mapguard", reason="only mapped files are overlapped")
CHUNK = 16 << 10


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(capture, "MAP_FROM", 1)
    monkeypatch.setattr(capture, "CHUNK_BYTES", CHUNK)
    # every batch decoded on the thread, whichever thread is ahead: the sharing has tests of its own
    monkeypatch.setattr(overlap, "SHARE", False)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "capture-overlap"]


def _drain(path, mode: str) -> tuple[list[tuple], list, CaptureError | None]:
    """Records and decoded columns of every batch, and the error the batches ended with."""
    reader, _ = open_file(path)
    assert reader.mapped
    got: list[tuple] = []
    columns: list = []
    error = None
    batches = overlap.batches(reader, mode)
    try:
        for batch in batches:
            got += _records([batch])
            decoded = batch.decoded if batch.decoded is not None else decode_batch(batch)
            if mode == "on" and not overlap.SHARE:
                assert batch.decoded is not None
            columns += [(d.network.tolist(), d.src.tolist(), d.sport.tolist(), d.payload_off.tolist()) for d in decoded]
    except CaptureError as exc:
        error = exc
    finally:
        batches.close()
        reader.close()
    assert not _threads()
    return got, columns, error


CAPTURES = {"pcap": lambda: pcap(2000, video_frame(700)), "pcapng": lambda: pcapng(2000, video_frame(700))}


@pytest.mark.parametrize("kind", sorted(CAPTURES))
def test_overlapped_batches_are_the_readers_decoded_as_the_pipeline_would(tmp_path, kind):
    path = write(tmp_path, "f." + kind, CAPTURES[kind]())
    on, off = _drain(path, "on"), _drain(path, "off")
    assert len(on[0]) == 2000 and on == off


@pytest.mark.parametrize("kind", sorted(CAPTURES))
def test_a_damaged_record_ends_the_batches_at_the_same_record_with_the_same_error(tmp_path, kind):
    data = bytearray(CAPTURES[kind]())
    at = len(data) * 2 // 3
    at += data[at:].index(video_frame(700)[:16]) - (16 if kind == "pcap" else 28)   # a record's header
    data[at + 8:at + 12] = (50 << 20).to_bytes(4, "little")   # an absurd captured length
    path = write(tmp_path, "bad." + kind, bytes(data))
    on, off = _drain(path, "on"), _drain(path, "off")
    assert on[2] is not None and 1000 < len(on[0]) < 2000
    assert (on[0], on[1], str(on[2]), on[2].offset) == (off[0], off[1], str(off[2]), off[2].offset)


def test_what_the_thread_raises_is_raised_on_the_main_thread_after_the_batches_before(tmp_path, monkeypatch):
    path = write(tmp_path, "f.pcap", pcap(2000, video_frame(700)))
    reader, _ = open_file(path)
    real = reader._batches
    boom = RuntimeError("from the reading thread")

    def failing():
        for i, batch in enumerate(real()):
            if i == 5:
                raise boom
            yield batch
    monkeypatch.setattr(reader, "_batches", failing)
    seen = []
    batches = overlap.batches(reader, "on")
    with pytest.raises(RuntimeError) as raised:
        for batch in batches:
            seen.append(threading.current_thread() is threading.main_thread() and len(batch))
    assert raised.value is boom and len(seen) == 5 and all(seen)
    batches.close()
    assert not _threads() and reader._closed


def test_a_decode_failing_on_the_thread_is_left_to_the_pipeline(tmp_path, monkeypatch):
    path = write(tmp_path, "f.pcap", pcap(500, video_frame(700)))
    calls = []

    def decode(batch):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise ValueError("undecodable")
        return decode_batch(batch)
    monkeypatch.setattr(overlap, "decode_batch", decode)
    reader, _ = open_file(path)
    decoded = [b.decoded is not None for b in overlap.batches(reader, "on")]
    assert decoded[1] is False and all(decoded[:1] + decoded[2:]) and set(calls) == {"capture-overlap"}


@pytest.mark.parametrize("stop", ["break", "KeyboardInterrupt"])
def test_stopping_early_stops_the_thread_before_the_reader_closes(tmp_path, stop):
    path = write(tmp_path, "f.pcap", pcap(2000, video_frame(700)))
    reader, _ = open_file(path)
    batches = overlap.batches(reader, "on")
    try:
        for i, _batch in enumerate(batches):
            # a daemon: a consumer that never gets to close the batches does not keep the process from exiting
            assert [t.daemon for t in _threads()] == [True]
            if i == 3:
                if stop == "break":
                    break
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    batches.close()
    assert not _threads() and reader._closed


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_thread_never_runs_more_than_depth_batches_ahead(tmp_path, monkeypatch, depth):
    path = write(tmp_path, "f.pcap", pcap(2000, video_frame(700)))
    monkeypatch.setattr(overlap, "DEPTH", depth)
    reader, _ = open_file(path)
    made = []
    real = overlap.decode_batch

    def decode(batch):
        made.append(batch)
        return real(batch)
    monkeypatch.setattr(overlap, "decode_batch", decode)
    batches = overlap.batches(reader, "on")
    ahead = []
    for i, batch in enumerate(batches):
        threading.Event().wait(0.01)   # the thread has time to run ahead, if it would
        assert made[i] is batch
        ahead.append(len(made) - 1 - i)
    assert len(made) > 10 and max(ahead) == depth   # as far ahead as it may, no further


def _slow(function, seconds: float):
    def slowed(*args):
        threading.Event().wait(seconds)
        return function(*args)
    return slowed


@pytest.mark.parametrize("kind", sorted(CAPTURES))
def test_sharing_the_decode_balances_the_threads_and_changes_no_batch(tmp_path, monkeypatch, kind):
    """A batch the thread walked while none was ready for the pipeline goes undecoded (the pipeline decodes it), the
    others decoded; either way the same records and columns as in line. Both cases are made by the hand-over itself,
    not by sleeps, so that a loaded machine cannot change which case a batch is (it did, with sleeps)."""
    path = write(tmp_path, "f." + kind, CAPTURES[kind]())
    monkeypatch.setattr(overlap, "SHARE", True)
    reference = _drain(path, "off")
    # the pipeline always waiting: one batch deep, the thread walks the next only once the pipeline took the last,
    # so nothing is ever ready when it looks, and every batch comes undecoded
    monkeypatch.setattr(overlap, "DEPTH", 1)
    reader, _ = open_file(path)
    undecoded = [batch.decoded is None for batch in overlap.batches(reader, "on")]
    assert len(undecoded) > 10 and all(undecoded)
    # the pipeline behind: it takes a batch only when the thread has DEPTH ready, so a batch is ready whenever the
    # thread looks, from the third batch on (the first is walked before anything is ready, and the pipeline takes it
    # before it can watch the queue, so the second may find none either)
    monkeypatch.setattr(overlap, "DEPTH", 2)
    made = []

    class Watched(overlap._Ahead):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)
    monkeypatch.setattr(overlap, "_Ahead", Watched)
    reader, _ = open_file(path)
    decoded = []
    batches = overlap.batches(reader, "on")
    while True:
        if made:
            _until(lambda: len(made[0]._ready) >= 2 or not made[0]._thread.is_alive())
        batch = next(batches, None)
        if batch is None:
            break
        decoded.append(batch.decoded is not None)
    assert len(decoded) > 10 and decoded[0] is False and all(decoded[2:])
    got, columns, error = _drain(path, "on")
    assert (got, columns, error) == reference and len(got) == 2000


def _until(ready, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        assert time.monotonic() < deadline, "the reading thread did not fill its queue"
        time.sleep(0.001)


def test_only_mapped_readers_are_overlapped_and_auto_needs_two_cpus(tmp_path, monkeypatch):
    path = write(tmp_path, "f.pcap", pcap(200, video_frame(700)))
    monkeypatch.setattr(capture, "MAP_FROM", 0)
    reader, _ = open_file(path)
    assert not reader.mapped
    batches = overlap.batches(reader, "on")
    assert next(batches).decoded is None and not _threads()
    batches.close()
    reader.close()
    monkeypatch.setattr(overlap, "cpus", lambda: 1)
    assert (overlap.wanted("auto"), overlap.wanted("on"), overlap.wanted("off")) == (False, True, False)
    monkeypatch.setattr(overlap, "cpus", lambda: 2)
    assert (overlap.wanted("auto"), overlap.wanted("on"), overlap.wanted("off")) == (True, True, False)
    with pytest.raises(ValueError):
        overlap.wanted("yes")
    assert overlap.MODES == OVERLAP_MODES == ("auto", "on", "off")


def test_cpus_are_the_affinity_set_else_the_machines_count_else_one(monkeypatch):
    monkeypatch.setattr(overlap.os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert overlap.cpus() == 3

    def refused(pid):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(overlap.os, "sched_getaffinity", refused)
    monkeypatch.setattr(overlap.os, "cpu_count", lambda: 6)
    assert overlap.cpus() == 6
    monkeypatch.setattr(overlap.os, "cpu_count", lambda: None)   # "cannot tell"
    assert overlap.cpus() == 1
    monkeypatch.delattr(overlap.os, "sched_getaffinity")          # not Linux
    assert overlap.cpus() == 1
    monkeypatch.setattr(overlap.os, "cpu_count", lambda: 4)
    assert overlap.cpus() == 4

def test_the_config_key_and_its_default(tmp_path):
    assert Config().capture.overlap == "auto"
    conf = tmp_path / "c.toml"
    conf.write_text('[capture]\noverlap = "off"\n')
    assert load_config(conf).capture.overlap == "off"


def test_a_sensor_fed_overlapped_batches_counts_the_same(tmp_path):
    path = write(tmp_path, "f.pcapng", pcapng(3000, video_frame(700)))
    summaries = []
    for mode in ("on", "off"):
        sensor = Sensor(Config(), on_alert=None)
        reader, _ = open_file(path)
        for batch in overlap.batches(reader, mode):
            sensor.process(batch)
        sensor.finish()
        summaries.append((sensor.summary(), sensor.by_network.tolist(), sensor.decode_errors.tolist()))
        sensor.close()
    assert summaries[0] == summaries[1] and summaries[0][0]["packets"] == 3000


def test_a_decoded_batch_sliced_otherwise_is_decoded_again(tmp_path, monkeypatch):
    path = write(tmp_path, "f.pcap", pcap(300, video_frame(700)))
    reader, _ = open_file(path)
    batch = next(iter(reader))
    batch.decoded = decode_batch(batch)
    monkeypatch.setattr(decoding, "DECODE_SLICE", 7)   # the pipeline now slices it otherwise
    sensor = Sensor(Config(), on_alert=None)
    sensor.process(batch)
    assert sensor.packets == len(batch) and np.sum(sensor.by_network) == len(batch)
    sensor.close()
    reader.close()


@pytest.mark.parametrize(("flag", "config", "expected"), [(None, None, "auto"), (None, "on", "on"),
                                                          ("on", "off", "on"), ("auto", None, "auto"),
                                                          ("off", "on", "off")])
def test_replay_takes_the_mode_from_its_option_then_the_config(tmp_path, monkeypatch, flag, config, expected):
    from sensor.cli import loop, main

    path = write(tmp_path, "f.pcap", pcap(2000, video_frame(700)))
    modes, real = [], overlap.batches

    def spy(reader, mode):
        modes.append(mode)
        return real(reader, mode)
    monkeypatch.setattr(overlap, "batches", spy)
    monkeypatch.setattr(loop, "install_stop_handlers", lambda stop: None)
    monkeypatch.setattr(loop, "tune_garbage_collector", lambda: None)
    argv = ["replay", str(path), "--quiet", "--alerts", str(tmp_path / "alerts.jsonl"),
            "--metrics-out", str(tmp_path / "metrics.txt")]
    if config is not None:
        (tmp_path / "c.toml").write_text(f'[capture]\noverlap = "{config}"\n')
        argv += ["--config", str(tmp_path / "c.toml")]
    if flag is not None:
        argv += ["--overlap", flag]
    assert main(argv) == 0
    assert modes == [expected]
    packets = [line for line in (tmp_path / "metrics.txt").read_text().splitlines()
               if line.startswith("camwatch_packets_total")]
    assert packets and packets[0].endswith(" 2000.0")


def test_the_map_keeps_the_pages_of_every_batch_the_thread_may_hold_ahead():
    # The thread runs up to DEPTH batches ahead of the pipeline, which still reads the slices they came from; a
    # map that gave their pages back sooner would not change results, only fault them in again on every batch.
    assert overlap.DEPTH <= mapped.KEEP_SLICES, "raise mapped.KEEP_SLICES with overlap.DEPTH"


def test_stopped_the_thread_reads_no_further_and_ends_the_readers_iteration_itself(tmp_path):
    """Stopped after the first batch: the thread reads none past those it had queued (at most DEPTH, and the one it
    was walking), and the reader's iteration, begun on the thread, ends there: the reader is closed when stop()
    returns, though its iterator is still referenced here."""
    reader, _ = open_file(write(tmp_path, "f.pcap", pcap(2000, video_frame(700))))
    read = 0
    source = iter(reader)

    def counted():   # closed, it closes the reader's iterator, as `yield from` would
        nonlocal read
        try:
            for batch in source:
                read += 1
                yield batch
        finally:
            source.close()

    walked = counted()
    ahead = overlap._Ahead(walked, decode_batch, 2)
    first = ahead.take()
    assert first is not None and len(first)
    threading.Event().wait(0.05)   # the thread fills its queue, then waits
    ahead.stop()
    assert reader._closed and not _threads()
    assert read <= 1 + 2 + 1


def test_the_default_mode_is_auto(tmp_path, monkeypatch):
    reader, _ = open_file(write(tmp_path, "f.pcap", pcap(200, video_frame(700))))
    for cpus, threads in ((2, 1), (1, 0)):
        monkeypatch.setattr(overlap, "cpus", lambda n=cpus: n)
        batches = overlap.batches(reader)
        assert next(batches) is not None and len(_threads()) == threads
        batches.close()
        reader.close()
        reader, _ = open_file(write(tmp_path, "f.pcap", pcap(200, video_frame(700))))
    reader.close()


def test_an_unknown_mode_is_named_with_the_known_ones():
    with pytest.raises(ValueError) as raised:
        overlap.wanted("yes")
    assert str(raised.value) == "overlap mode 'yes': expected one of auto, on, off"


def test_stopped_while_it_decodes_a_batch_the_thread_reads_no_further(tmp_path):
    """stop() lands while the thread is busy with a batch, not waiting for room: that batch goes nowhere and no
    other is read after it."""
    reader, _ = open_file(write(tmp_path, "f.pcap", pcap(2000, video_frame(700))))
    busy, release = threading.Event(), threading.Event()
    decoded = []

    def decode(batch):
        if decoded:   # the second batch: held until stop() has begun
            busy.set()
            release.wait()
        decoded.append(batch)
        return decode_batch(batch)

    ahead = overlap._Ahead(iter(reader), decode, 2)
    assert ahead.take() is not None
    assert busy.wait(10)
    stopper = threading.Thread(target=ahead.stop)
    stopper.start()
    while not ahead._stopping:
        threading.Event().wait(0.001)
    release.set()
    stopper.join()
    assert len(decoded) == 2 and not _threads()
    reader.close()
