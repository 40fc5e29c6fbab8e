"""sensor/state.py: an episode's row goes when its in-memory owner evicts it, whether it was written in this run or
restored from an earlier one; forgetting an episode that never had a row writes nothing."""

from __future__ import annotations

import sqlite3

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
