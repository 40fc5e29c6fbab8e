"""Persistent sensor state in SQLite: devices (first sighting and inventory), the destinations each has used, and
open alert episodes, so a restart neither forgets what was learned nor re-alerts an episode already reported.

WAL mode with synchronous=NORMAL: a crash (even kill -9) loses at most the last commit interval, never the
database. Without a configured path nothing outlives the process, so no database is opened and nothing is written:
the same bounded indexes are kept in memory (what each device was first seen, its destinations), and what a saved
run would write is not even encoded (a replay of 3,000 cameras spent a twentieth of its time writing their documents
to an in-memory database nobody read).

Every table is bounded: devices by `limits.max_devices` (newcomers on probation go first, bounded.SegmentedLRU),
destinations per device and in all, inventory rows and episodes as their in-memory owners evict them. The database
is outside camwatch's control (a full disk, a read-only or vanished file, a row damaged by hand): a failed write is
logged once, counted in `write_errors`, and the sensor goes on with what it holds in memory.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

from sensor.bounded import SegmentedLRU
from sensor.errors import CamwatchError, warn

# The meta row where the pipeline keeps egress bytes by country over time, and the report reads them back.
COUNTRY_SERIES_KEY = "egress_country_series"

SCHEMA = """
CREATE TABLE IF NOT EXISTS device (ip TEXT PRIMARY KEY, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS destination (
    ip TEXT NOT NULL, destination TEXT NOT NULL, first_seen REAL NOT NULL, PRIMARY KEY (ip, destination));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (ip TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episode (
    key TEXT PRIMARY KEY, first REAL NOT NULL, last REAL NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL);
"""
# The meta row ('schema', SCHEMA_VERSION) marks a file as camwatch's state of this layout.
SCHEMA_VERSION = "1"
COMMIT_EVERY_SECONDS = 1.0
# The WAL is folded back into the database this often and at close, so it neither grows with uptime nor stays
# behind after a clean stop.
CHECKPOINT_EVERY_SECONDS = 60.0
# A flood of fake destinations must not grow memory or the database without bound: per device, and in all.
MAX_DESTINATIONS_PER_DEVICE = 10_000
MAX_DESTINATIONS = 200_000
# A device's first sighting proves itself (it is used again) a second or more after it was made.
ESTABLISHED_AFTER_SECONDS = 1.0


def _encoder() -> Callable[[object], str]:
    """json.dumps's own encoder, less its cycle check: the rows saved are built from plain lists and dicts (never a
    cycle), and a fresh sensor writes one per new device and episode; the text is the same byte for byte. Its C
    encoder is made once here: JSONEncoder.encode makes one per call, which cost a sixth of encoding a new
    device's document."""
    reference = json.JSONEncoder(check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)   # not in typeshed's stub
    if make is None:   # CPython without its _json accelerator
        return reference.encode
    encoder = make(None, reference.default, json.encoder.encode_basestring_ascii, None, reference.key_separator,
                   reference.item_separator, reference.sort_keys, reference.skipkeys, reference.allow_nan)
    return lambda value: "".join(encoder(value, 0))


_ENCODE = _encoder()


def _foreign(db: sqlite3.Connection) -> str | None:
    """Why a database that already holds tables is not camwatch's of this schema, or None (it is, or it is new:
    a new or empty file holds no table). Every camwatch state file has had its schema row from the first version."""
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError as exc:   # no meta table, or one without these columns
        return str(exc)
    if row is None:
        return "no schema row"
    return None if row[0] == SCHEMA_VERSION else f"schema {row[0]!r}"


def _degradable(exc: sqlite3.OperationalError) -> bool:
    """A fault of the disk or its permissions, which camwatch rides out, rather than a wrong path."""
    text = str(exc).lower()
    return any(word in text for word in ("readonly", "read-only", "full", "disk i/o", "locked"))


class KnownState:
    def __init__(self, path: str | Path | None, max_devices: int = 10_000):
        self.path = str(path) if path else ":memory:"
        self.write_errors = 0
        self._warned: set[str] = set()
        self._in_tx = False
        self._closed = False
        self._last_commit = self._last_checkpoint = time.monotonic()
        self._devices: SegmentedLRU[str, float] = SegmentedLRU(max_devices, self._forget_device)
        self._destinations: dict[str, set[str] | tuple[str]] = {}
        self._destination_count = 0
        self._persisted: set[str] = set()   # devices with a row in the device table
        self._inventory_rows: set[str] = set()
        # Which episodes have a row, by the hash of the row's key: a set of the keys' texts cost ~185 bytes an
        # episode (100,000 at the bound), of hashes ~117 (docs/reliability.md). Two keys of one hash (about 1 in
        # 2**64 a pair) cost at most a DELETE of no row, or one row left behind.
        self._episode_rows: set[int] = set()
        self._db = self._open() if path else None
        if self._db is not None:
            self._load()

    @property
    def db(self) -> sqlite3.Connection:
        """The open database; only asked where there is one (every reader and writer returns first without one)."""
        assert self._db is not None
        return self._db

    @property
    def kept(self) -> bool:
        """Whether this state outlives the process (a path was configured)."""
        return self._db is not None

    # ---- opening and loading ---------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # Nothing is changed in a database that is not this version's (another program's, a later camwatch's):
            # no WAL switch, no tables added; it is read as a read-only file is.
            if (foreign := _foreign(db)) is not None:
                db.close()
                raise sqlite3.OperationalError(f"not a camwatch state database of schema {SCHEMA_VERSION}: {foreign}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            return db
        except sqlite3.OperationalError as exc:
            if not (_degradable(exc) or Path(self.path).is_file()):
                raise CamwatchError(f"{self.path}: cannot use the state database: {exc}") from None
            # Read-only or full: what the file holds is still worth reading, and the sensor must run either way.
            self._failed("open for writing", exc)
        except sqlite3.DatabaseError as exc:
            # Not a database at all: most likely the wrong path, and overwriting it would destroy someone's file.
            raise CamwatchError(f"{self.path}: cannot use the state database: {exc}") from None
        # On a read-only filesystem a WAL database cannot even make its shared-memory file: read it as immutable.
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"file:{quote(self.path)}?{mode}", uri=True, check_same_thread=False,
                                     isolation_level=None)
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.Error:
                continue
        return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)

    def _rows(self, sql: str, *args) -> list[tuple]:
        if self._db is None:
            return []
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._failed("read", exc)
            return []

    def _load(self) -> None:
        for ip, first in self._rows("SELECT ip, first_seen FROM device ORDER BY first_seen"):
            if isinstance(ip, str) and isinstance(first, (int, float)) and math.isfinite(first):
                self._devices.put(ip, float(first))
                self._devices.promote(ip)   # it was used in an earlier run: established
                self._persisted.add(ip)
        for ip, dest in self._rows("SELECT ip, destination FROM destination"):
            if ip in self._devices and isinstance(dest, str):
                self._remember_destination(ip, dest)
        self._inventory_rows = {ip for (ip,) in self._rows("SELECT ip FROM inventory") if isinstance(ip, str)}
        self._episode_rows = {hash(k) for (k,) in self._rows("SELECT key FROM episode") if isinstance(k, str)}

    # ---- writing, degraded on failure ----------------------------------------------------------------------
    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        self.write_errors += 1
        if what not in self._warned:   # once per kind of operation: a full disk fails every write after the first
            self._warned.add(what)
            warn(f"state database {self.path}: cannot {what} ({exc}); camwatch goes on with what it holds in "
                 f"memory (counted in camwatch_state_write_errors_total)")

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def _commit_when_due(self) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_SECONDS:
            self.commit()

    def _write(self, sql: str, args: tuple) -> None:
        if self._db is None:
            return
        try:
            self._begin()
            self.db.execute(sql, args)
        except sqlite3.Error as exc:
            self._failed("write", exc)
            self._rollback()
            return
        self._commit_when_due()

    def _write_many(self, sql: str, rows: list[tuple]) -> None:
        """_write of each row in turn, as one statement (executemany): the rows a flush saves come by the thousand
        on a fresh sensor. Should it fail, only the batch is undone (a savepoint) and its rows are written one at a
        time as _write does, so a row's failure is counted and rolled back exactly as there. Where SQLite itself
        dropped the whole transaction (a full disk), the rows written before the batch and not yet committed are
        lost with it: that is counted as a failed write, which the rows one at a time would not show."""
        if not rows or self._db is None:
            return
        pending = self._in_tx
        try:
            self._begin()
            self.db.execute("SAVEPOINT batch")
            self.db.executemany(sql, rows)
            self.db.execute("RELEASE batch")
        except sqlite3.Error as exc:
            if not self._undo_batch():
                if pending:
                    self._failed("write", exc)
                self._rollback()
            for args in rows:
                self._write(sql, args)
            return
        self._commit_when_due()

    def _undo_batch(self) -> bool:
        """Back to the savepoint before a failed batch; False where the transaction it was in is gone."""
        try:
            self.db.execute("ROLLBACK TO batch")
            self.db.execute("RELEASE batch")
        except sqlite3.Error:
            return False
        return self.db.in_transaction

    def _rollback(self) -> None:
        if self._in_tx:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_tx = False

    def commit(self) -> None:
        if self._in_tx:   # never without a database
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._failed("write", exc)
                self._rollback()
            self._in_tx = False
        now = time.monotonic()
        self._last_commit = now
        if now - self._last_checkpoint >= CHECKPOINT_EVERY_SECONDS:
            self.checkpoint()

    def checkpoint(self) -> None:
        self._last_checkpoint = time.monotonic()
        if self._db is None or self._in_tx:
            return
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            self._failed("checkpoint", exc)

    @property
    def devices_evicted(self) -> int:
        return self._devices.evicted

    # ---- devices and destinations ------------------------------------------------------------------------
    # A device is written to the database once it is established: a flood of forged one-packet sources then
    # costs memory within the bound and no database work at all.
    def device_first_seen(self, ip: str, ts: float) -> float:
        first = self._devices.use(ip)
        if first is None:
            self._devices.put(ip, ts)
            return ts
        if ts - first >= ESTABLISHED_AFTER_SECONDS and ip not in self._persisted:
            self._devices.promote(ip)
            self._persisted.add(ip)
            self._write("INSERT OR IGNORE INTO device VALUES (?, ?)", (ip, first))
            for destination in self._destinations.get(ip, ()):
                self._write("INSERT OR IGNORE INTO destination VALUES (?, ?, ?)", (ip, destination, first))
        return first

    def _forget_device(self, ip: str, _first: float) -> None:
        self._destination_count -= len(self._destinations.pop(ip, ()))
        if ip in self._persisted:
            self._persisted.discard(ip)
            self._write("DELETE FROM device WHERE ip = ?", (ip,))
            self._write("DELETE FROM destination WHERE ip = ?", (ip,))

    def _remember_destination(self, ip: str, destination: str) -> bool:
        known = self._destinations.get(ip)
        if (known is not None and len(known) >= MAX_DESTINATIONS_PER_DEVICE) or (
                self._destination_count >= MAX_DESTINATIONS):
            return False
        if known is None:   # a device's first: a tuple until its second (a flood's sources each have one)
            self._destinations[ip] = (destination,)
        elif isinstance(known, tuple):
            self._destinations[ip] = {*known, destination}
        else:
            known.add(destination)
        self._destination_count += 1
        return True

    def add_destination(self, ip: str, destination: str, ts: float) -> bool:
        """True when the destination is new for this device (and is now remembered, within the bounds)."""
        known = self._destinations.get(ip)
        if known is not None and destination in known:
            return False
        if ip in self._devices and self._remember_destination(ip, destination) and ip in self._persisted:
            self._write("INSERT OR IGNORE INTO destination VALUES (?, ?, ?)", (ip, destination, ts))
        return True

    # ---- inventory and episodes: written in bulk at each flush, read once at start ----
    def save_devices(self, docs: Iterable[dict]) -> None:
        # keyed by the device's stable id (its first address; the ip column's name is from before devices had
        # several addresses); one statement for the flush's rows, in their order
        if self._db is None:   # not even made: the inventory's documents are built as they are taken
            return
        rows = [(doc.get("id") or doc["ip"], _ENCODE(doc)) for doc in docs]
        self._inventory_rows.update([key for key, _ in rows])
        self._write_many("INSERT OR REPLACE INTO inventory VALUES (?, ?)", rows)

    def forget_inventory(self, ip: str) -> None:
        """The inventory evicted this device: its row goes too, so the table stays within max_devices."""
        if ip in self._inventory_rows:
            self._inventory_rows.discard(ip)
            self._write("DELETE FROM inventory WHERE ip = ?", (ip,))

    def load_devices(self) -> list:
        out = []
        for (doc,) in self._rows("SELECT doc FROM inventory"):
            try:
                out.append(json.loads(doc))
            except (TypeError, ValueError, RecursionError):
                continue  # one damaged row must not cost the rest
        return out

    def save_meta(self, key: str, value: object) -> None:
        """A small document beside the tables (the estate's bytes by country over time)."""
        if self._db is None:
            return
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def load_meta(self, key: str) -> object:
        """The document save_meta wrote, or None (absent, damaged)."""
        for (text,) in self._rows("SELECT value FROM meta WHERE key = ?", key):
            try:
                return json.loads(text)
            except (TypeError, ValueError, RecursionError):
                return None
        return None

    def save_episodes(self, episodes: Iterable[tuple[tuple, float, float, int, int]]) -> None:
        if self._db is None:
            return
        rows = [(_ENCODE(list(key)), first, last, packets, nbytes) for key, first, last, packets, nbytes in episodes]
        self._episode_rows.update([hash(row[0]) for row in rows])
        self._write_many("INSERT OR REPLACE INTO episode VALUES (?, ?, ?, ?, ?)", rows)

    def forget_episode(self, key: tuple) -> None:
        if self._db is None:
            return
        text = _ENCODE(list(key))
        if hash(text) in self._episode_rows:
            self._episode_rows.discard(hash(text))
            self._write("DELETE FROM episode WHERE key = ?", (text,))

    def load_episodes(self, limit: int) -> list[tuple[tuple, float, float, int, int]]:
        rows = self._rows("SELECT key, first, last, packets, bytes FROM episode ORDER BY last DESC LIMIT ?", limit)
        out = []
        for key, first, last, packets, nbytes in reversed(rows):
            try:
                parts = json.loads(key)
                if not isinstance(parts, list) or not all(isinstance(p, (str, int)) for p in parts):
                    continue
                out.append((tuple(parts), float(first), float(last), int(packets), int(nbytes)))
            except (TypeError, ValueError, RecursionError):
                continue
        return out

    def close(self) -> None:
        if self._closed:
            return
        self.commit()
        self.checkpoint()
        self._closed = True
        if self._db is None:
            return
        try:
            self.db.close()
        except sqlite3.Error:
            pass
