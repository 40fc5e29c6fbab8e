"""sensor/state.py, the SQLite store: what it writes, what a restart reads back and what it forgets (and when), within
its bounds; a database it cannot write ridden out (each failure counted, each kind warned of once), one that is not
its own refused. An episode's row goes when its in-memory owner evicts it, whether it was written in this run or
restored from an earlier one; forgetting an episode that never had a row writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sensor.state import KnownState

KEY_A = ("vendor_cloud", "10.20.0.5", "hik-connect")
KEY_B = ("egress_policy", "10.20.0.6", "203.0.113.7", 443)


def _keys(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {key for (key,) in db.execute("SELECT key FROM episode")}


def test_an_evicted_episode_loses_its_row_in_this_run_and_after_a_restart(tmp_path):
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.save_episodes([(KEY_A, 1.0, 5.0, 3, 300), (KEY_B, 2.0, 6.0, 1, 60)])
    known.forget_episode(KEY_A)
    known.close()
    assert _keys(path) == {'["egress_policy", "10.20.0.6", "203.0.113.7", 443]'}
    again = KnownState(path)   # the row of KEY_B is known from the file, not from this run's writes
    assert [row[0] for row in again.load_episodes(10)] == [KEY_B]
    again.forget_episode(KEY_B)
    again.close()
    assert _keys(path) == set()


def test_forgetting_an_episode_without_a_row_writes_nothing(tmp_path):
    known = KnownState(tmp_path / "state.db")
    known.forget_episode(KEY_A)
    assert not known._in_tx and known.write_errors == 0   # no DELETE began a transaction
    known.close()


def test_rows_are_json_dumps_text_byte_for_byte():
    """The encoder the store writes rows with (no cycle check) gives json.dumps's text: a device's document with
    wire strings (non-ASCII, quotes, control characters), a NaN-free float, and an episode key."""
    import json

    from sensor import state as mod
    from sensor.enrich.inventory import Device

    dev = Device("10.20.0.5", 0x001122334455, first_seen=1.5, last_seen=2.25, egress_bytes={"public": 60})
    dev.identity = {"model": 'DS-2CD\u00e9"\x01\\', "server": "\u6d77\u5eb7"}
    dev.external_peers = {"198.51.100.7": ["cam.example\u00e9", 60], "2001:db8::1": [None, 1]}
    dev.evidence = {"rtsp_server", "camera_model"}
    dev.note_outbound(1_700_000_000.0, 60)
    for doc in (dev.state(), ["egress_policy", "10.20.0.5", "198.51.100.7"], ["hardcoded_infra", "x", "dns", 3]):
        assert mod._ENCODE(doc) == json.dumps(doc)


def test_the_encoder_made_once_writes_what_json_encoder_encode_writes():
    """_ENCODE calls the C encoder it made at import (JSONEncoder.encode makes one per call): the same text as the
    encoder it stands for on values of every kind JSON has, top-level scalars included, and the same refusal of
    what JSON cannot hold."""
    import json

    import pytest

    from sensor import state as mod

    assert json.encoder.c_make_encoder is None or mod._ENCODE.__name__ == "<lambda>"   # the C encoder is the one tested
    reference = json.JSONEncoder(check_circular=False).encode
    values = ["plain", 'qu"ote\\\x00\u00e9\ud800', 0, -1, 1 << 70, True, False, None, 1.5, -0.0, 1e300,
              1700000000.0000498, float("inf"), float("-inf"), float("nan"), [], {}, [1, [2, [3, {"a": None}]]],
              {"k\u00e9": [1.25, "v", {"n": True}], "": 0}, {1: "int key", 2.5: "float key", None: "none key"}]
    for value in values:
        assert mod._ENCODE(value) == reference(value), value
    for bad in ({"a": object()}, [b"bytes"], {("t",): 1}):
        with pytest.raises(TypeError):
            mod._ENCODE(bad)


def test_a_flush_writes_its_rows_in_one_statement_and_falls_back_to_one_at_a_time(tmp_path):
    """save_devices and save_episodes write a flush's rows with one executemany: the same rows as one INSERT each
    (a key saved twice keeps its later document); when the batch fails, each row is tried on its own as before, so
    the rows that can be written are and each failure is counted once."""
    path = tmp_path / "state.db"
    known = KnownState(path)
    docs = [{"ip": "10.0.0.1", "n": 1}, {"ip": "10.0.0.2", "id": "10.0.0.2#1"}, {"ip": "10.0.0.1", "n": 2}]
    known.save_devices(docs)
    known.save_episodes([(KEY_A, 1.0, 5.0, 3, 300), (KEY_B, 2.0, 6.0, 1, 60), (KEY_A, 1.0, 7.0, 4, 400)])
    known.close()
    again = KnownState(path)
    assert sorted(again.load_devices(), key=str) == sorted([docs[1], docs[2]], key=str)
    assert again.load_episodes(10) == [(KEY_B, 2.0, 6.0, 1, 60), (KEY_A, 1.0, 7.0, 4, 400)]
    assert again._inventory_rows == {"10.0.0.1", "10.0.0.2#1"} and len(again._episode_rows) == 2
    again.db.execute("CREATE TRIGGER no_b BEFORE INSERT ON inventory WHEN NEW.ip = '10.0.0.9' "
                     "BEGIN SELECT RAISE(ABORT, 'no'); END")
    again.save_devices([{"ip": "10.0.0.8"}, {"ip": "10.0.0.9"}, {"ip": "10.0.0.7"}])
    assert again.write_errors == 1
    again.close()
    with sqlite3.connect(path) as db:   # as one _write per row: the failure rolls back its transaction (10.0.0.8)
        assert {ip for (ip,) in db.execute("SELECT ip FROM inventory")} == {"10.0.0.1", "10.0.0.2#1", "10.0.0.7"}


def test_rows_a_full_disk_takes_with_a_failed_batch_are_counted(tmp_path):
    """A flush's batch that does not fit beside rows written before it and not yet committed: SQLite drops the
    whole transaction, those rows with it. That loss is counted (camwatch_state_write_errors_total), never silent;
    the batch's own rows are then tried one at a time. (max_page_count stands in for a full disk.)"""
    lost_somewhere = False
    for pre, each in ((16_000, 5_000), (20_000, 3_000), (24_000, 5_000)):
        known = KnownState(tmp_path / f"state-{pre}-{each}.db")
        known.commit()
        pages = known.db.execute("PRAGMA page_count").fetchone()[0]
        known.db.execute(f"PRAGMA max_page_count={pages + 8}")
        known.save_devices([{"ip": "pending", "blob": "p" * pre}])
        batch = [{"ip": f"10.0.0.{i}", "blob": "x" * each} for i in range(4)]
        known.save_devices(batch)
        known.commit()
        saved = {ip for (ip,) in known.db.execute("SELECT ip FROM inventory")}
        if saved != {"pending"} | {doc["ip"] for doc in batch}:
            lost_somewhere = True
            assert known.write_errors >= 1, (pre, each, saved)
        known.close()
    assert lost_somewhere   # the sizes do fill the database: the case is exercised


class _SetsFromTheStart(KnownState):
    """KnownState as it was before a device's first destination was kept as a tuple: a set from the start."""

    def _remember_destination(self, ip, destination):
        from sensor import state as mod

        known = self._destinations.setdefault(ip, set())
        if len(known) >= mod.MAX_DESTINATIONS_PER_DEVICE or self._destination_count >= mod.MAX_DESTINATIONS:
            return False
        known.add(destination)
        self._destination_count += 1
        return True


def test_a_devices_first_destination_kept_as_a_tuple_answers_and_writes_as_a_set_would(tmp_path, monkeypatch):
    """Random sightings of devices and destinations (new, repeated, past the per-device and overall bounds, devices
    established and so written, evicted and forgotten) give the same answers, the same rows and the same
    destinations remembered as sets kept from the start."""
    import random

    from sensor import state as mod

    monkeypatch.setattr(mod, "MAX_DESTINATIONS_PER_DEVICE", 3)
    monkeypatch.setattr(mod, "MAX_DESTINATIONS", 12)
    rng = random.Random(1620)
    new, old = KnownState(tmp_path / "new.db", max_devices=5), _SetsFromTheStart(tmp_path / "old.db", max_devices=5)
    ts, kinds = 1_700_000_000.0, set()
    for _ in range(3000):
        ts += rng.choice([0.0, 0.3, 1.5])
        ip, destination = f"10.20.0.{rng.randint(1, 8)}", f"198.51.100.{rng.randint(1, 6)}"
        if rng.random() < 0.4:
            assert new.device_first_seen(ip, ts) == old.device_first_seen(ip, ts)
        else:
            assert new.add_destination(ip, destination, ts) == old.add_destination(ip, destination, ts)
        assert {k: set(v) for k, v in new._destinations.items() if v} == {
            k: v for k, v in old._destinations.items() if v}
        assert new._destination_count == old._destination_count
        kinds.update(type(v) for v in new._destinations.values())
    assert kinds == {tuple, set}
    new.close()
    old.close()
    for table in ("device", "destination"):
        with sqlite3.connect(tmp_path / "new.db") as a, sqlite3.connect(tmp_path / "old.db") as b:
            rows = sorted(a.execute(f"SELECT * FROM {table}"))
            assert rows and rows == sorted(b.execute(f"SELECT * FROM {table}"))


# ---- what the store keeps, forgets and counts (the mutation run of 2 December, docs/testing.md) ----------------

class _Clock:
    """sensor.state's monotonic clock, moved by hand: commits and checkpoints fall due when the test says."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    from sensor import state as mod

    fake = _Clock()
    monkeypatch.setattr(mod, "time", fake)
    return fake


def _rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute(sql))


def _refuse(known: KnownState, table: str, column: str, value: str) -> None:
    """A row the database refuses (a trigger), as a damaged or full database refuses a write."""
    known.db.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN NEW.{column} = '{value}' "
                     "BEGIN SELECT RAISE(ABORT, 'refused'); END")


def test_making_the_encoder_again_writes_json_dumps_text_with_and_without_the_accelerator(monkeypatch):
    """_encoder runs once, as the module is imported (out of mutation testing's reach, like config's setting()):
    made again here it must be the C encoder, writing what json.dumps writes (dict order kept, NaN allowed, the
    same refusal of what JSON cannot hold), and without the accelerator JSONEncoder.encode without a cycle check."""
    import json

    from sensor import state as mod

    values = ["plain", 'qu"ote\\\x00\u00e9', 0, 1 << 70, True, None, 1.5, float("nan"), float("-inf"), [],
              {"b": [1, {"n": None}], "a": 2.5}, {1: "int key"}]
    made = mod._encoder()
    if json.encoder.c_make_encoder is not None:
        assert made.__name__ == "<lambda>"   # not the per-call encoder it stands for
    for value in values:
        assert made(value) == json.dumps(value), value
    big = {"peers": {f"198.51.{i >> 8}.{i & 255}": [None, i] for i in range(40_000)}}
    assert made(big) == json.dumps(big)   # the C encoder hands a document this long back in several pieces
    with pytest.raises(TypeError, match="is not JSON serializable"):
        made({"a": object()})
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    plain = mod._encoder()
    for value in values:
        assert plain(value) == json.dumps(value), value
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(RecursionError):   # no cycle check ("Circular reference detected" is a ValueError)
        plain(cycle)


@pytest.mark.parametrize("text,rides_out", [
    ("attempt to write a readonly database", True),
    ("unable to open database file: Read-only file system", True),
    ("database or disk is full", True),
    ("disk I/O error", True),
    ("database is locked", True),
    ("unable to open database file", False),
    ("no such table: device", False),
])
def test_only_faults_of_the_disk_are_ridden_out(text, rides_out):
    from sensor.state import _degradable

    assert _degradable(sqlite3.OperationalError(text)) is rides_out


def test_a_wrong_path_is_refused_and_someone_elses_file_left_as_it_was(tmp_path):
    from sensor.errors import CamwatchError

    with pytest.raises(CamwatchError, match="cannot use the state database"):
        KnownState(tmp_path / "no such directory" / "state.db")
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not a database, someone's notes\n" * 64)
    with pytest.raises(CamwatchError, match="cannot use the state database"):
        KnownState(other)
    assert other.read_bytes() == b"not a database, someone's notes\n" * 64


def test_each_failed_write_is_counted_and_each_kind_warned_of_once(tmp_path, clock, capsys):
    path = tmp_path / "state.db"
    known = KnownState(path)
    _refuse(known, "meta", "key", "bad")
    known.save_meta("bad", 1)
    known.save_meta("good", 2)   # after a failed write the next one begins its own transaction
    known.commit()
    known.save_meta("bad", 3)
    assert known.write_errors == 2
    assert _rows(path, "SELECT key, value FROM meta WHERE key != 'schema'") == [("good", "2")]
    err = capsys.readouterr().err
    assert err == (f"camwatch: warning: state database {path}: cannot write (refused); camwatch goes on with what "
                   "it holds in memory (counted in camwatch_state_write_errors_total)\n")
    known.db.close()   # the database gone from under it: each checkpoint fails, the first says so
    known.checkpoint()
    known.checkpoint()
    assert known.write_errors == 4
    err = capsys.readouterr().err
    assert err.count("camwatch: warning:") == 1
    assert f"state database {path}: cannot checkpoint (Cannot operate on a closed database.)" in err


def test_the_log_is_folded_back_every_minute_and_at_close_never_inside_a_transaction(tmp_path, clock):
    from sensor.state import CHECKPOINT_EVERY_SECONDS, COMMIT_EVERY_SECONDS

    path = tmp_path / "state.db"
    wal = tmp_path / "state.db-wal"
    known = KnownState(path)
    known.save_meta("k", 1)
    known.checkpoint()   # inside the transaction: not now (SQLite would refuse: the table is locked)
    assert known.write_errors == 0 and known._in_tx
    clock.now += COMMIT_EVERY_SECONDS
    known.save_meta("k", 2)   # a second on: committed, into the log
    assert not known._in_tx and wal.stat().st_size > 0
    clock.now += CHECKPOINT_EVERY_SECONDS - COMMIT_EVERY_SECONDS - 0.5
    known.save_meta("k", 3)   # committed 59.5 s after the last checkpoint: the log stays
    assert not known._in_tx and wal.stat().st_size > 0
    clock.now += 0.5
    known.save_meta("k", 4)
    known.commit()            # a minute: committed and folded back, the log emptied
    assert wal.stat().st_size == 0 and known.write_errors == 0
    known.save_meta("k", 5)
    known.checkpoint()        # asked outright, then the transaction committed: no error either way
    clock.now += COMMIT_EVERY_SECONDS
    known.commit()
    assert wal.stat().st_size > 0 and known.write_errors == 0
    known.close()
    known.close()             # twice: nothing more to do, nothing to fail
    assert known.write_errors == 0 and not wal.exists()
    assert _rows(path, "SELECT value FROM meta WHERE key = 'k'") == [("5",)]


def test_a_bad_row_in_a_flush_costs_what_one_bad_write_costs(tmp_path, clock):
    """A flush's batch with a row the database refuses, behind a write not yet committed: the batch alone is undone
    (its savepoint), then its rows go one at a time, each failure rolling back its transaction as one write's does:
    one failure, counted once."""
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.commit()
    _refuse(known, "inventory", "ip", "10.0.0.9")
    known.save_meta("pending", 1)
    known.save_devices([{"ip": "10.0.0.8"}, {"ip": "10.0.0.9"}, {"ip": "10.0.0.7"}])
    assert known.write_errors == 1
    known.close()
    assert _rows(path, "SELECT ip FROM inventory") == [("10.0.0.7",)]


def test_the_rows_a_full_disk_took_are_counted_as_the_disk_being_full(tmp_path, clock, capsys):
    """Rows written and not yet committed, then a flush's batch that does not fit beside them: SQLite drops the
    transaction, the pending rows with it. The loss is counted as the full disk it was, the transaction is over,
    and the batch's rows, one at a time in a transaction of their own, fit and are committed."""
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.commit()
    pages = known.db.execute("PRAGMA page_count").fetchone()[0]
    known.db.execute(f"PRAGMA max_page_count={pages + 8}")
    known.save_devices([{"ip": "pending", "blob": "p" * 16_000}])
    batch = [{"ip": f"10.0.0.{i}", "blob": "x" * 5_000} for i in range(4)]
    known.save_devices(batch)
    known.commit()
    assert known.write_errors == 1
    assert capsys.readouterr().err.count("cannot write (database or disk is full)") == 1
    known.close()
    assert _rows(path, "SELECT ip FROM inventory") == [(f"10.0.0.{i}",) for i in range(4)]


def test_an_evicted_device_takes_its_rows_with_it_and_is_written_again_when_it_comes_back(tmp_path, clock,
                                                                                          monkeypatch):
    """max_devices 2: a device established (seen again a second on) is written with the destinations it had and
    those it adds; evicted, its rows go and its destinations stop counting against MAX_DESTINATIONS; seen again
    and established again, it is written again. A restart knows exactly the devices and destinations written."""
    from sensor import state as mod

    monkeypatch.setattr(mod, "MAX_DESTINATIONS", 4)
    path = tmp_path / "state.db"
    known = KnownState(path, max_devices=2)
    a, b, c = "10.20.0.1", "10.20.0.2", "10.20.0.3"
    assert known.device_first_seen(a, 100.0) == 100.0
    assert known.add_destination(a, "198.51.100.1", 100.5)
    assert known.device_first_seen(a, 101.0) == 100.0   # established: written with its destination
    assert known.add_destination(a, "198.51.100.2", 102.0)   # written as it comes
    assert not known.add_destination(a, "198.51.100.2", 102.5)
    known.device_first_seen(b, 103.0)
    known.device_first_seen(b, 104.0)
    known.add_destination(b, "198.51.100.3", 104.5)
    known.commit()
    assert _rows(path, "SELECT * FROM device") == [(a, 100.0), (b, 103.0)]
    assert _rows(path, "SELECT * FROM destination") == [
        (a, "198.51.100.1", 100.0), (a, "198.51.100.2", 102.0), (b, "198.51.100.3", 104.5)]
    known.device_first_seen(c, 105.0)   # a third device: the least recently used, a, is evicted
    assert known.devices_evicted == 1
    known.commit()
    assert _rows(path, "SELECT ip FROM device") == [(b,)]
    assert _rows(path, "SELECT ip, destination FROM destination") == [(b, "198.51.100.3")]
    # a's two destinations no longer count: c may now have three of the four (b has the fourth)
    assert [known.add_destination(c, f"203.0.113.{i}", 106.0) for i in range(4)] == [True] * 4
    assert [known.add_destination(c, f"203.0.113.{i}", 106.5) for i in range(4)] == [False] * 3 + [True]
    assert known.device_first_seen(a, 110.0) == 110.0   # back, as new (c, a newcomer on probation, makes way)
    assert known.device_first_seen(a, 111.0) == 110.0   # and established again: written again
    assert known.devices_evicted == 2
    known.close()
    assert _rows(path, "SELECT * FROM device") == [(a, 110.0), (b, 103.0)]
    assert _rows(path, "SELECT ip, destination FROM destination") == [(b, "198.51.100.3")]
    again = KnownState(path, max_devices=2)
    assert again.device_first_seen(a, 200.0) == 110.0 and again.device_first_seen(b, 200.0) == 103.0
    assert not again.add_destination(b, "198.51.100.3", 200.0) and again.add_destination(a, "198.51.100.1", 200.0)
    again.close()


def test_a_destination_past_the_devices_bound_is_neither_remembered_nor_written(tmp_path, clock, monkeypatch):
    from sensor import state as mod

    monkeypatch.setattr(mod, "MAX_DESTINATIONS_PER_DEVICE", 2)
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.device_first_seen("10.20.0.1", 100.0)
    known.device_first_seen("10.20.0.1", 101.0)
    for i in range(3):
        assert known.add_destination("10.20.0.1", f"198.51.100.{i}", 102.0 + i)
    assert known.add_destination("10.20.0.1", "198.51.100.2", 110.0)   # still new: never remembered
    assert known.add_destination("10.20.0.9", "198.51.100.1", 110.0)   # no such device: nothing kept
    known.close()
    assert _rows(path, "SELECT * FROM destination") == [
        ("10.20.0.1", "198.51.100.0", 102.0), ("10.20.0.1", "198.51.100.1", 103.0)]


def test_an_evicted_inventory_device_loses_its_row_in_this_run_and_after_a_restart(tmp_path, clock):
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.save_devices([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2", "id": "10.0.0.2#1"}, {"ip": "10.0.0.3"}])
    known.forget_inventory("10.0.0.1")
    known.forget_inventory("10.0.0.2#1")
    known.commit()
    known.forget_inventory("10.0.0.1")   # twice: its row is gone, nothing to write
    assert not known._in_tx
    known.close()
    assert _rows(path, "SELECT ip FROM inventory") == [("10.0.0.3",)]
    again = KnownState(path)   # the row is known from the file
    again.forget_inventory("10.0.0.1")   # gone already: nothing to write
    assert not again._in_tx
    again.forget_inventory("10.0.0.3")
    assert again._in_tx
    again.close()
    assert _rows(path, "SELECT ip FROM inventory") == []
    assert KnownState(path).load_devices() == []


def test_an_episode_forgotten_twice_is_deleted_once(tmp_path, clock):
    known = KnownState(tmp_path / "state.db")
    known.save_episodes([(KEY_A, 1.0, 5.0, 3, 300)])
    known.commit()
    known.forget_episode(KEY_A)
    assert known._in_tx
    known.commit()
    known.forget_episode(KEY_A)   # its row is gone: no DELETE, no transaction
    assert not known._in_tx and known.load_episodes(10) == []
    known.close()


def test_a_restart_reads_back_the_latest_episodes_and_passes_over_damaged_rows(tmp_path):
    """load_episodes(limit): the `limit` episodes last seen latest, oldest first, each field in its type; a row
    damaged by hand (not JSON, not a list, a part neither text nor integer, a field that is no number) costs only
    itself."""
    path = tmp_path / "state.db"
    KnownState(path).close()
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO episode VALUES (?, ?, ?, ?, ?)", [
            ('["a", "10.0.0.1"]', 1, 10.0, 3, 300),
            ('["b", "10.0.0.2", 443]', 2.5, 40.0, 4.0, "500"),
            ('["c"]', 3, 30.0, 5, 600),
            ('{"d": 1}', 4, 35.0, 1, 1),          # not a list
            ('["e", 1.5]', 4, 36.0, 1, 1),        # a part that is neither text nor an integer
            ('["f", null]', 4, 37.0, 1, 1),
            ("not json", 4, 38.0, 1, 1),
            ('["g"]', "x", 39.0, 1, 1),           # a first time that is no number
            ('["h"]', 5, 20.0, "many", 1),
        ])
    known = KnownState(path)
    assert known.load_episodes(100) == [
        (("a", "10.0.0.1"), 1.0, 10.0, 3, 300), (("c",), 3.0, 30.0, 5, 600),
        (("b", "10.0.0.2", 443), 2.5, 40.0, 4, 500)]
    assert [type(v) for v in known.load_episodes(100)[-1][1:]] == [float, float, int, int]
    assert known.load_episodes(2) == [(("b", "10.0.0.2", 443), 2.5, 40.0, 4, 500)]   # the 2 latest: g's is damaged
    assert known.load_episodes(8) == known.load_episodes(100)[1:]   # all but the one last seen earliest
    known.close()


def test_a_restart_reads_back_documents_and_passes_over_damaged_ones(tmp_path):
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.save_devices([{"ip": "10.0.0.1", "n": [1, 2]}])
    known.save_meta("series", {"GB": [1, 2]})
    known.close()
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO inventory VALUES (?, ?)", [
            ("10.0.0.2", "{not json"), ("10.0.0.3", "[" * 100_000 + "]" * 100_000), ("10.0.0.4", '"text"')])
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("damaged", "{"), ("deep", "[" * 100_000)])
    again = KnownState(path)
    assert again.load_devices() == [{"ip": "10.0.0.1", "n": [1, 2]}, "text"]
    assert again.load_meta("series") == {"GB": [1, 2]}
    assert again.load_meta("absent") is None
    assert again.load_meta("damaged") is None and again.load_meta("deep") is None
    assert again.write_errors == 0
    again.close()


def test_a_restart_knows_the_devices_and_destinations_written_and_passes_over_damaged_rows(tmp_path):
    """Devices read back are established (protected: a flood of newcomers evicts none of them) and not written
    again; their destinations are known; a row damaged by hand (no text address, a first sighting that is no
    finite number, a destination that is no text or of no known device) is passed over."""
    path = tmp_path / "state.db"
    KnownState(path).close()
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO device VALUES (?, ?)", [
            ("10.0.0.1", 50.0), ("10.0.0.2", 40.0), (b"\x07", 60.0), ("10.0.0.8", float("inf")), ("10.0.0.9", "x")])
        db.executemany("INSERT INTO destination VALUES (?, ?, ?)", [
            ("10.0.0.1", "198.51.100.1", 51.0), ("10.0.0.2", "198.51.100.2", 41.0), ("10.0.0.1", b"\x05", 52.0),
            ("10.0.0.9", "198.51.100.9", 53.0), ("10.0.0.8", "198.51.100.8", 54.0)])
    known = KnownState(path, max_devices=10)
    for i in range(100):   # newcomers, each seen once: none of them evicts a device read back
        known.device_first_seen(f"10.9.0.{i}", 100.0)
    assert known.device_first_seen("10.0.0.1", 200.0) == 50.0 and known.device_first_seen("10.0.0.2", 200.0) == 40.0
    assert known.device_first_seen("10.0.0.8", 200.0) == 200.0
    assert known.add_destination("10.0.0.8", "198.51.100.8", 200.0)   # its row was of no device read back
    assert not known.add_destination("10.0.0.1", "198.51.100.1", 201.0)
    assert not known.add_destination("10.0.0.2", "198.51.100.2", 201.0)
    assert known.add_destination("10.0.0.1", "198.51.100.2", 201.0)
    known.close()
    assert _rows(path, "SELECT ip, destination FROM destination WHERE ip = '10.0.0.1' AND typeof(destination) = "
                       "'text'") == [("10.0.0.1", "198.51.100.1"), ("10.0.0.1", "198.51.100.2")]


@pytest.mark.parametrize("lock", ["IMMEDIATE", "EXCLUSIVE"])
def test_a_database_another_writer_holds_is_read_and_never_written(tmp_path, monkeypatch, capsys, lock):
    """Another process's transaction holds the state file (a reserved lock: readers may read; an exclusive one:
    not even that): camwatch cannot make it its WAL database, says so once and counts it, reads what the file
    holds (read-only, or as an immutable file) and writes nothing into it, even once the other writer is gone.
    SQLite waits 5 s for a lock by default: no wait here."""
    import functools
    import threading

    from sensor.state import SCHEMA

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", functools.partial(connect, timeout=0))
    path = tmp_path / "state #1?.db"   # characters a file: URI must have quoted
    with connect(path) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.execute("INSERT INTO device VALUES ('10.0.0.1', 5.0)")
        db.execute("INSERT INTO meta VALUES ('series', '[1, 2]')")
    before = path.read_bytes()
    holder = connect(path, isolation_level=None)
    holder.execute(f"BEGIN {lock}")
    holder.execute("INSERT INTO device VALUES ('10.0.0.2', 6.0)")
    known = KnownState(path)
    assert known.write_errors == 1
    assert capsys.readouterr().err.count(f"{path}: cannot open for writing (database is locked)") == 1
    assert known.device_first_seen("10.0.0.1", 100.0) == 5.0 and known.load_meta("series") == [1, 2]
    assert known.device_first_seen("10.0.0.2", 100.0) == 100.0   # not committed: not read
    holder.execute("ROLLBACK")
    holder.close()
    read_elsewhere: list = []   # and read from another thread than the one that opened it
    worker = threading.Thread(target=lambda: read_elsewhere.append(known.load_meta("series")))
    worker.start()
    worker.join()
    assert read_elsewhere == [[1, 2]] and known.write_errors == 1
    known.device_first_seen("10.0.0.3", 100.0)
    known.device_first_seen("10.0.0.3", 101.0)
    known.save_meta("series", [3])
    known.close()
    assert known.write_errors > 1 and path.read_bytes() == before
    assert not (tmp_path / "state #1?.db-wal").exists()


def test_a_device_is_established_when_seen_again_a_second_or_more_after_its_first_sighting(tmp_path, clock):
    """Before that it is a newcomer on probation: not written, and the first to make way; from then on it is
    written and kept before newcomers."""
    path = tmp_path / "state.db"
    known = KnownState(path, max_devices=3)
    for ip in ("10.0.0.1", "10.0.0.2"):
        assert known.device_first_seen(ip, 100.0) == 100.0
    assert known.device_first_seen("10.0.0.1", 100.999) == 100.0   # again within the second: still a newcomer
    assert known.device_first_seen("10.0.0.2", 101.0) == 100.0     # a second on: established
    known.commit()
    assert _rows(path, "SELECT * FROM device") == [("10.0.0.2", 100.0)]
    for i in range(3, 10):   # newcomers: 10.0.0.1 goes with them, the established device stays
        known.device_first_seen(f"10.0.0.{i}", 102.0)
    assert known.device_first_seen("10.0.0.1", 103.0) == 103.0 and known.device_first_seen("10.0.0.2", 103.0) == 100.0
    known.close()
    assert _rows(path, "SELECT * FROM device") == [("10.0.0.2", 100.0)]


def test_a_commit_the_database_refuses_is_counted_and_undone_and_the_next_one_goes_through(tmp_path, clock, capsys):
    """A COMMIT can fail where every statement before it went through (here a deferred constraint; a disk that
    fills as the log is written): the second's writes are lost, counted and warned of once, and the transaction
    is rolled back so that the next second's writes commit."""
    path = tmp_path / "state.db"
    known = KnownState(path)
    known.db.execute("PRAGMA foreign_keys=ON")
    known.db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    known.db.execute("CREATE TABLE child (p REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    known.db.execute("CREATE TRIGGER orphan AFTER INSERT ON meta WHEN NEW.key = 'orphan' "
                     "BEGIN INSERT INTO child VALUES (1); END")
    known.save_meta("orphan", 1)
    known.save_meta("lost", 2)
    assert known.write_errors == 0
    known.commit()
    assert known.write_errors == 1 and not known.db.in_transaction
    assert capsys.readouterr().err.count(f"{path}: cannot write (FOREIGN KEY constraint failed)") == 1
    known.save_meta("kept", 3)
    known.close()
    assert known.write_errors == 1
    assert _rows(path, "SELECT key FROM meta") == [("kept",), ("schema",)]


def test_without_a_path_nothing_is_written_and_memory_keeps_the_bounds(tmp_path, monkeypatch):
    """No path (None or empty): no database at all, never a file (in the working directory or anywhere), nothing
    shared by two sensors, nothing encoded (the inventory's documents are not even taken), while what the sensor asks
    of the store in memory still holds: first sightings, destinations, the device bound."""
    monkeypatch.chdir(tmp_path)
    for path in (None, ""):
        first = KnownState(path, max_devices=2)
        assert first.path == ":memory:" and not first.kept
        first.save_meta("series", [1])
        taken = []
        first.save_devices(taken.append(doc) or doc for doc in ({"ip": "10.0.0.1"},))
        first.save_episodes([(("k",), 1.0, 2.0, 3, 4)])
        assert taken == []
        assert first.device_first_seen("10.0.0.1", 100.0) == 100.0
        assert first.device_first_seen("10.0.0.1", 105.0) == 100.0   # established: kept, never written
        assert first.add_destination("10.0.0.1", "198.51.100.1", 105.0) is True
        assert first.add_destination("10.0.0.1", "198.51.100.1", 106.0) is False
        first.device_first_seen("10.0.0.2", 101.0)
        first.device_first_seen("10.0.0.3", 102.0)
        assert first.devices_evicted == 1
        first.forget_episode(("k",))
        first.forget_inventory("10.0.0.1")
        first.commit()
        first.close()
        first.close()
        second = KnownState(path)
        assert second.load_meta("series") is None and second.load_devices() == [] and second.load_episodes(9) == []
        assert second.write_errors == 0 == first.write_errors
        second.close()
    assert list(tmp_path.iterdir()) == []


def test_the_store_opened_in_one_thread_is_used_and_closed_from_another(tmp_path):
    """The connection is not tied to the thread that opened it (check_same_thread=False): whichever thread runs
    the sensor, flushes or closes it, every write goes through."""
    import threading

    path = tmp_path / "state.db"
    known = KnownState(path)

    def elsewhere():
        known.device_first_seen("10.0.0.1", 100.0)
        known.device_first_seen("10.0.0.1", 101.0)
        known.save_devices([{"ip": "10.0.0.1"}])
        known.close()

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert known.write_errors == 0
    assert _rows(path, "SELECT ip FROM device") == [("10.0.0.1",)] == _rows(path, "SELECT ip FROM inventory")


def test_the_default_bound_is_ten_thousand_devices(tmp_path):
    known = KnownState(None)
    for i in range(10_000):
        known.device_first_seen(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 100.0)
    assert known.devices_evicted == 0
    known.device_first_seen("10.255.0.0", 100.0)
    assert known.devices_evicted == 1


def test_a_full_disk_at_the_start_costs_the_writes_not_the_sensor(capsys):
    """/dev/full: no regular file, and every write fails as on a full disk (reads give an empty database). camwatch
    says so once, counts it, and goes on with what it holds in memory."""
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    known = KnownState("/dev/full")
    assert known.write_errors >= 1
    assert capsys.readouterr().err.count("/dev/full: cannot open for writing (database or disk is full)") == 1
    assert known.device_first_seen("10.0.0.1", 100.0) == 100.0 and known.device_first_seen("10.0.0.1", 101.0) == 100.0
    assert known.add_destination("10.0.0.1", "198.51.100.1", 102.0)
    assert not known.add_destination("10.0.0.1", "198.51.100.1", 103.0)
    known.close()


def test_a_state_file_of_another_shape_is_read_and_left_exactly_as_it_was(tmp_path, capsys):
    """A state file that holds tables but is not this version's (a later version's, its meta table of another
    shape, or another program's database at a wrong path): camwatch changes nothing in it, not even its journal
    mode or a missing table, says so once and counts it, reads what it can, and writes no row into it."""
    later = tmp_path / "later.db"
    with sqlite3.connect(later) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, since REAL)")
        db.execute("INSERT INTO meta VALUES ('schema', '2', 0.0)")
        db.execute("CREATE TABLE device (ip TEXT PRIMARY KEY, first_seen REAL NOT NULL)")
        db.execute("INSERT INTO device VALUES ('10.0.0.1', 5.0)")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoice (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoice VALUES (7, 12.5)")
    for path, why, first_seen in ((later, "schema '2'", 5.0), (other, "no such table: meta", 100.0)):
        before = path.read_bytes()
        known = KnownState(path)
        assert known.write_errors >= 1
        assert capsys.readouterr().err.count(f"cannot open for writing (not a camwatch state database of schema 1: "
                                             f"{why})") == 1
        assert known.device_first_seen("10.0.0.1", 100.0) == first_seen
        known.device_first_seen("10.0.0.2", 100.0)
        known.device_first_seen("10.0.0.2", 101.0)
        known.save_meta("series", [1])
        known.commit()
        known.close()
        assert path.read_bytes() == before, path.name
        assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    assert _rows(later, "SELECT * FROM meta") == [("schema", "2", 0.0)]
    assert _rows(other, "SELECT name FROM sqlite_master") == [("invoice",)]


def test_a_new_or_empty_file_and_a_state_file_of_this_version_are_written(tmp_path):
    """The other side of the rule above: a file holding no table yet (new, or empty) becomes the state database,
    and a camwatch file of this schema whose older layout lacks a table gets it, its rows kept."""
    empty = tmp_path / "empty.db"
    empty.touch()
    older = empty.with_name("older.db")
    with sqlite3.connect(older) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.execute("CREATE TABLE device (ip TEXT PRIMARY KEY, first_seen REAL NOT NULL)")
        db.execute("INSERT INTO device VALUES ('10.0.0.1', 5.0)")
    for path, first_seen in ((empty, 100.0), (older, 5.0)):
        known = KnownState(path)
        assert known.device_first_seen("10.0.0.1", 100.0) == first_seen
        known.save_meta("series", [1])
        known.commit()
        known.close()
        assert known.write_errors == 0, path.name
        assert {("schema", "1"), ("series", "[1]")} <= set(_rows(path, "SELECT * FROM meta"))
        assert {name for (name,) in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")} == \
            {"device", "destination", "meta", "inventory", "episode"}



def test_a_file_that_cannot_even_be_read_leaves_an_empty_database_in_memory(tmp_path, monkeypatch, capsys):
    """Neither for writing nor read-only nor as an immutable file (a failing disk, here its I/O errors made by
    hand for the two read-only opens, after a lock that keeps the file from being opened for writing): the store
    stands on an empty in-memory database, where every read and write fails, counted and warned of once per kind
    (from any thread: the database's errors, not the thread's), while the sensor goes on with what it holds in
    memory. No file is made."""
    import functools
    import threading

    connect = sqlite3.connect

    def failing_disk(*args, uri=False, **kwargs):
        if uri:
            raise sqlite3.OperationalError("disk I/O error")
        return connect(*args, timeout=0, **kwargs)

    path = tmp_path / "state.db"
    with connect(path) as db:
        db.execute("CREATE TABLE device (ip TEXT PRIMARY KEY, first_seen REAL NOT NULL)")
        db.execute("INSERT INTO device VALUES ('10.0.0.1', 5.0)")
    holder = connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sqlite3, "connect", failing_disk)
    known = KnownState(path)
    monkeypatch.setattr(sqlite3, "connect", functools.partial(connect, timeout=0))
    holder.execute("ROLLBACK")
    holder.close()
    assert known.db.execute("SELECT name FROM sqlite_master").fetchall() == []
    opened = known.write_errors

    answers: list = []

    def elsewhere():
        answers.append(known.device_first_seen("10.0.0.1", 100.0))   # the file's row was never read
        answers.append(known.device_first_seen("10.0.0.1", 101.0))
        answers.append(known.add_destination("10.0.0.1", "198.51.100.1", 102.0))
        answers.append(known.add_destination("10.0.0.1", "198.51.100.1", 103.0))
        known.save_devices([{"ip": "10.0.0.1"}])
        known.commit()
        answers.append(known.load_meta("series"))

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert answers == [100.0, 100.0, True, False, None] and known.write_errors > opened
    known.close()
    err = capsys.readouterr().err
    assert err.count("camwatch: warning:") == 3   # opening, reading, writing: once each
    assert "cannot open for writing (database is locked)" in err
    assert "cannot read (no such table: " in err and "cannot write (no such table: " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    assert _rows(path, "SELECT * FROM device") == [("10.0.0.1", 5.0)]


def test_a_restart_with_a_smaller_bound_keeps_the_latest_devices_and_deletes_the_rest(tmp_path, clock):
    path = tmp_path / "state.db"
    known = KnownState(path)
    for i, first in enumerate((30.0, 10.0, 20.0), 1):
        known.device_first_seen(f"10.0.0.{i}", first)
        known.device_first_seen(f"10.0.0.{i}", first + 1)
        known.add_destination(f"10.0.0.{i}", "198.51.100.1", first + 2)
    known.close()
    again = KnownState(path, max_devices=2)   # read oldest first: the device first seen earliest makes way
    assert again.devices_evicted == 1
    again.close()
    assert _rows(path, "SELECT * FROM device") == [("10.0.0.1", 30.0), ("10.0.0.3", 20.0)]
    assert _rows(path, "SELECT ip FROM destination") == [("10.0.0.1",), ("10.0.0.3",)]
