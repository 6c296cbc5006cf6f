"""Embedded SQLite store (WAL, one connection per worker thread)."""

from __future__ import annotations

import sqlite3
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

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        self.path = path

    def _connect(self) -> Any:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        c = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return c

    def _migrations(self) -> dict[int, list[str]]:
        return MIGRATIONS

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _unlock_schema(self, cur: Any) -> None:
        try:
            cur.execute("COMMIT")
        except sqlite3.OperationalError:
            cur.execute("ROLLBACK")
