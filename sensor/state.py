"""Persistent sensor state in SQLite: devices (first sighting and inventory), the destinations each has used, and
open alert episodes, so a restart neither forgets what was learned nor re-alerts an episode already reported.

WAL mode with synchronous=NORMAL: a crash (even kill -9) loses at most the last commit interval, never the
database. Without a configured path the same code runs on an in-memory database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from sensor.errors import CamwatchError

SCHEMA = """
CREATE TABLE IF NOT EXISTS device (ip TEXT PRIMARY KEY, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS destination (
    ip TEXT NOT NULL, destination TEXT NOT NULL, first_seen REAL NOT NULL, PRIMARY KEY (ip, destination));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (ip TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episode (
    key TEXT PRIMARY KEY, first REAL NOT NULL, last REAL NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL);
"""
COMMIT_EVERY_SECONDS = 1.0
# A flood of fake destinations must not grow memory or the database without bound.
MAX_DESTINATIONS_PER_DEVICE = 10_000


class KnownState:
    def __init__(self, path: str | Path | None):
        self.path = str(path) if path else ":memory:"
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")
            self._devices = dict(self.db.execute("SELECT ip, first_seen FROM device"))
            self._destinations: dict[str, set[str]] = {}
            for ip, dest in self.db.execute("SELECT ip, destination FROM destination"):
                self._destinations.setdefault(ip, set()).add(dest)
        except sqlite3.DatabaseError as exc:
            raise CamwatchError(f"{self.path}: cannot use the state database: {exc}") from None
        self._in_tx = False
        self._last_commit = time.monotonic()

    def _write(self, sql: str, args: tuple) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        self.db.execute(sql, args)
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_SECONDS:
            self.commit()

    def commit(self) -> None:
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False
        self._last_commit = time.monotonic()

    def device_first_seen(self, ip: str, ts: float) -> float:
        first = self._devices.get(ip)
        if first is None:
            self._devices[ip] = first = ts
            self._write("INSERT OR IGNORE INTO device VALUES (?, ?)", (ip, ts))
        return first

    def add_destination(self, ip: str, destination: str, ts: float) -> bool:
        """True when the destination is new for this device (and is now remembered)."""
        known = self._destinations.setdefault(ip, set())
        if destination in known:
            return False
        if len(known) >= MAX_DESTINATIONS_PER_DEVICE:
            return True  # still new, but no longer remembered: the table stays bounded
        known.add(destination)
        self._write("INSERT OR IGNORE INTO destination VALUES (?, ?, ?)", (ip, destination, ts))
        return True

    # ---- inventory and episodes: written in bulk at each flush, read once at start ----
    def save_devices(self, docs: list[dict]) -> None:
        for doc in docs:
            self._write("INSERT OR REPLACE INTO inventory VALUES (?, ?)", (doc["ip"], json.dumps(doc)))

    def load_devices(self) -> list[dict]:
        out = []
        for (doc,) in self.db.execute("SELECT doc FROM inventory"):
            try:
                out.append(json.loads(doc))
            except ValueError:
                continue  # one damaged row must not cost the rest
        return out

    def save_episodes(self, episodes: list[tuple[tuple, float, float, int, int]]) -> None:
        for key, first, last, packets, nbytes in episodes:
            self._write("INSERT OR REPLACE INTO episode VALUES (?, ?, ?, ?, ?)",
                        (json.dumps(list(key)), first, last, packets, nbytes))

    def load_episodes(self, limit: int) -> list[tuple[tuple, float, float, int, int]]:
        rows = self.db.execute("SELECT key, first, last, packets, bytes FROM episode ORDER BY last DESC LIMIT ?",
                               (limit,)).fetchall()
        return [(tuple(json.loads(k)), f, la, p, b) for k, f, la, p, b in reversed(rows)]

    def close(self) -> None:
        self.commit()
        self.db.close()
