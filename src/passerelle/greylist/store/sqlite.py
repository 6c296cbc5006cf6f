"""Embedded SQLite store (WAL).

Two ways to use it: one connection per thread (tools, tests), or ``serial=True`` (the milter):
one connection that the caller uses under ``store.lock`` from its own thread. SQLite has one
writer at a time anyway; several connections of one process only wait on each other's locks
(busy-handler sleeps) and keep the WAL from being checkpointed to its end.

The WAL is bounded: a checkpoint runs every ``WAL_AUTOCHECKPOINT_PAGES`` pages written (on the
committing connection), ``journal_size_limit`` truncates the file when it restarts, and
``maintain`` (the daemon's background thread) forces a TRUNCATE checkpoint when another process
(a report, a purge) kept it from restarting and the file grew beyond ``WAL_LIMIT_BYTES``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from passerelle.greylist.store.base import SQLStore

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS greylist ("
        " k BLOB PRIMARY KEY, client TEXT NOT NULL, sender BLOB NOT NULL, rcpt BLOB NOT NULL,"
        " state INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
        " passed_at REAL, expires REAL NOT NULL, attempts INTEGER NOT NULL,"
        " passes INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS greylist_expires ON greylist (expires)",
        "CREATE INDEX IF NOT EXISTS greylist_first_seen ON greylist (first_seen)",
        "CREATE INDEX IF NOT EXISTS greylist_passed_at ON greylist (passed_at)",
        "CREATE TABLE IF NOT EXISTS clients (client TEXT PRIMARY KEY,"
        " passes INTEGER NOT NULL, last_pass REAL NOT NULL, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS clients_expires ON clients (expires)",
        "CREATE TABLE IF NOT EXISTS whitelist (kind TEXT NOT NULL, entry TEXT NOT NULL,"
        " comment TEXT NOT NULL DEFAULT '', created REAL NOT NULL, PRIMARY KEY (kind, entry))",
        "CREATE TABLE IF NOT EXISTS stats (bucket INTEGER NOT NULL, kind TEXT NOT NULL,"
        " subject TEXT NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (bucket, kind, subject))",
    ],
}


WAL_AUTOCHECKPOINT_PAGES = 1000  # ~4 MB of 4 KiB pages (SQLite's default, set explicitly)
WAL_LIMIT_BYTES = 8 * 1024 * 1024  # journal_size_limit, and when maintain() forces a checkpoint
PROGRESS_STEPS = 20000  # SQLite VM steps between two deadline checks (serial store)


class SQLiteStore(SQLStore):
    placeholder = "?"
    integrity_errors = (sqlite3.IntegrityError,)
    stats_upsert = (
        "INSERT INTO stats (bucket, kind, subject, hits) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (bucket, kind, subject) DO UPDATE SET hits = hits + excluded.hits"
    )
    client_upsert = (
        "INSERT INTO clients (client, passes, last_pass, expires) VALUES (?, 1, ?, ?)"
        " ON CONFLICT (client) DO UPDATE SET"
        " passes = CASE WHEN clients.expires < ? THEN 1 ELSE clients.passes + 1 END,"
        " last_pass = excluded.last_pass, expires = excluded.expires"
    )
    purge_statement = (
        "DELETE FROM greylist WHERE k IN"
        " (SELECT k FROM greylist WHERE expires < ? ORDER BY expires LIMIT ?)"
    )
    purge_clients_statement = (
        "DELETE FROM clients WHERE client IN"
        " (SELECT client FROM clients WHERE expires < ? ORDER BY expires LIMIT ?)"
    )
    purge_stats_statement = (
        "DELETE FROM stats WHERE rowid IN (SELECT rowid FROM stats WHERE bucket < ? LIMIT ?)"
    )

    def __init__(self, path: str, timeout: float = 2.0, serial: bool = False) -> None:
        super().__init__(timeout)
        self.path = path
        self.serial = serial
        # serial store: a statement still running past this time.monotonic() is interrupted
        # (set by the caller before each call; 0: no deadline)
        self.deadline = 0.0

    def _connect(self) -> Any:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        c = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        c.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        c.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        if self.serial:
            c.set_progress_handler(self._past_deadline, PROGRESS_STEPS)
        return c

    def _past_deadline(self) -> int:
        return 1 if self.deadline and time.monotonic() > self.deadline else 0

    def wal_bytes(self) -> int:
        """Size of the WAL file now (0 when there is none)."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def maintain(self) -> None:
        """Force the WAL back to empty when it grew past WAL_LIMIT_BYTES (another process kept
        the automatic checkpoints from restarting it). Waits at most 100 ms for readers."""
        if self.path == ":memory:" or self.wal_bytes() <= WAL_LIMIT_BYTES:
            return
        c = self.conn()
        c.execute("PRAGMA busy_timeout=100")
        try:
            with contextlib.suppress(sqlite3.OperationalError):  # busy: next time
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            c.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")

    def _migrations(self) -> dict[int, list[str]]:
        return MIGRATIONS

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _unlock_schema(self, cur: Any) -> None:
        try:
            cur.execute("COMMIT")
        except sqlite3.OperationalError:
            cur.execute("ROLLBACK")
