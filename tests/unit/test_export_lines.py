"""sensor/export/lines.py: the one JSON-lines writer. Unbuffered lines are on disk at once; buffered ones within
the flush interval or at the buffer's bound; a reopen asked for (SIGHUP) moves writing to a new file at the path
without losing or splitting a line; a full disk is one warning and counted drops, never an exception."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

import sensor.export.lines as lines
from sensor.errors import CamwatchError
from sensor.export.lines import Flusher, LineFile, encode


def test_unbuffered_lines_are_on_disk_at_once(tmp_path):
    path = tmp_path / "a.jsonl"
    f = LineFile(str(path), "alerts")
    f.write('{"a":1}')
    assert path.read_text() == '{"a":1}\n'
    f.write('{"a":2}')
    assert path.read_text().splitlines() == ['{"a":1}', '{"a":2}']
    f.close()


def test_buffered_lines_wait_for_the_interval_or_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(lines, "FLUSH_SECONDS", 3600.0)
    monkeypatch.setattr(lines, "MAX_BUFFER_BYTES", 100)
    path = tmp_path / "f.jsonl"
    f = LineFile(str(path), "flow records", buffered=True)
    f.write("x" * 40)
    f.write("y" * 40)
    assert path.read_text() == ""                       # 82 bytes held, under the bound
    f.write("z" * 40)                                   # 123: over it, all written at once
    assert path.read_text().splitlines() == ["x" * 40, "y" * 40, "z" * 40]
    f.write("w")
    assert path.read_text().count("\n") == 3
    f.maintain()                                        # the flusher's second
    assert path.read_text().splitlines()[-1] == "w"
    f.write("v")
    f.close()                                           # and the end
    assert path.read_text().splitlines()[-1] == "v"
    assert f.lines == 5 and f.dropped == 0


def test_a_buffered_line_is_written_by_the_next_write_after_the_interval(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(lines.time, "monotonic", lambda: now[0])
    path = tmp_path / "f.jsonl"
    f = LineFile(str(path), "flow records", buffered=True)
    f.write("a")
    now[0] += 0.999
    f.write("b")
    assert path.read_text() == ""
    now[0] += 0.001
    f.write("c")
    assert path.read_text() == "a\nb\nc\n"
    f.close()


def test_the_flusher_writes_what_no_new_line_pushes(tmp_path, monkeypatch):
    monkeypatch.setattr(lines, "FLUSH_SECONDS", 3600.0)
    path = tmp_path / "f.jsonl"
    f = LineFile(str(path), "flow records", buffered=True)
    flusher = Flusher([f], interval=0.05)
    f.write("quiet")
    deadline = time.monotonic() + 5
    while path.read_text() != "quiet\n" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.read_text() == "quiet\n"
    flusher.stop()
    f.close()


@pytest.mark.parametrize("buffered", [False, True])
def test_a_reopen_after_a_rotation_writes_to_the_new_file(tmp_path, buffered):
    path = tmp_path / "f.jsonl"
    f = LineFile(str(path), "flow records", buffered=buffered)
    f.write("before-1")
    f.write("before-2")
    os.rename(path, tmp_path / "f.jsonl.1")           # logrotate moves it away ...
    f.write("late")                                   # ... a line still goes to the moved file ...
    f.request_reopen()                                # ... then SIGHUP
    f.write("after")
    f.maintain()
    f.close()
    old = (tmp_path / "f.jsonl.1").read_text().splitlines()
    assert old == ["before-1", "before-2", "late"]
    assert path.read_text().splitlines() == ["after"]


def test_a_reopen_that_fails_goes_on_writing_to_the_old_file(tmp_path, capsys):
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "a.jsonl"
    f = LineFile(str(path), "alerts")
    f.write("one")
    os.rename(path, tmp_path / "a.jsonl.1")
    folder.rmdir()                                    # the path cannot be made again
    f.request_reopen()
    f.maintain()
    f.write("two")
    f.close()
    assert (tmp_path / "a.jsonl.1").read_text().splitlines() == ["one", "two"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("camwatch: warning:") and "cannot reopen for alerts" in err[0]


@pytest.mark.parametrize("buffered", [False, True])
def test_a_full_disk_is_one_warning_and_counted_drops(buffered, capsys):
    f = LineFile("/dev/full", "flow records", buffered=buffered)
    for k in range(50):
        f.write(f'{{"n":{k}}}')
        if k % 10 == 0:
            f.maintain()
    f.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0] == ("camwatch: warning: /dev/full: cannot write flow records: No space left on device; dropping "
                      "them until writes succeed")
    assert f.lines == 50 and f.dropped == 50


def test_a_line_cut_by_a_failed_write_is_ended_before_the_next(tmp_path, monkeypatch, capsys):
    path = tmp_path / "f.jsonl"
    f = LineFile(str(path), "flow records")
    real_write = os.write
    calls = []

    def full_midway(fd, data):
        # the disk fills during the line: the kernel takes five bytes, then refuses the rest
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    f.write('{"n":0}')
    monkeypatch.setattr(lines.os, "write", full_midway)
    f.write('{"n":1,"cut":"here"}')
    monkeypatch.setattr(lines.os, "write", real_write)
    f.write('{"n":2}')
    f.close()
    got = path.read_text().splitlines()
    assert got == ['{"n":0}', '{"n":', '{"n":2}']   # the cut line is alone on its line; the next one parses
    assert json.loads(got[-1]) == {"n": 2} and f.dropped == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "writing flow records again (1 lost so far)" in err[1]


def test_an_unwritable_path_is_one_line_error(tmp_path):
    path = tmp_path / "missing" / "f.jsonl"
    with pytest.raises(CamwatchError) as raised:
        LineFile(str(path), "flow records")
    assert str(raised.value) == f"{path}: cannot write flow records: No such file or directory"


def test_stdout_and_nothing(capsys):
    f = LineFile("-", "flow records", buffered=True)
    f.write("a")
    f.close()
    assert capsys.readouterr().out == "a\n"
    none = LineFile(None, "alerts")
    none.write("b")
    assert none.lines == 1 and not none.active


def test_encoding_escapes_whatever_the_wire_sent():
    line = encode({"name": 'a"\\\n\x1b\u00e9\u202e\udcff'})
    assert line.isascii() and line.isprintable() and "\n" not in line
    assert json.loads(line) == {"name": 'a"\\\n\x1b\u00e9\u202e\udcff'}


def test_only_files_at_a_path_make_a_flusher_reopenable(tmp_path, capsys):
    on_stdout = Flusher([LineFile("-", "alerts"), LineFile(None, "flow records")], interval=3600)
    assert not on_stdout.reopenable
    on_stdout.stop()
    with_file = Flusher([LineFile("-", "alerts"), LineFile(str(tmp_path / "f"), "flow records")], interval=3600)
    assert with_file.reopenable
    with_file.stop()
