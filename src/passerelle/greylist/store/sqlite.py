"""Embedded SQLite store (WAL).

Two ways to use it: one connection per thread (tools, tests), or ``serial=True`` (the milter):
one connection that the caller uses under ``store.lock`` from its own thread. SQLite has one
writer at a time anyway; several connections of one process only wait on each other's locks
(busy-handler sleeps) and keep the WAL from being checkpointed to its end.

The WAL is bounded (a 10 s benchmark run used to leave a WAL thirty times the database):
``journal_size_limit`` truncates the file each time it restarts from the beginning, which it
does at the first write after a checkpoint copied every frame back into the database.
- Per-thread connections: a checkpoint every ``WAL_AUTOCHECKPOINT_PAGES`` pages written, on the
  committing connection (SQLite's automatic checkpoint).
- Serial store (the milter): the automatic checkpoint is off, so that no decision pays for it;
  a checkpointer thread with its own connection copies the WAL back every
  ``CHECKPOINT_ROWS`` rows written (a decision writes a few 4 KiB pages: about 12 MB), first
  while decisions go on, then the few frames written meanwhile under ``store.lock`` (no write
  in flight: the next one restarts the WAL). That last step holds the decisions for two
  fsyncs, hence a checkpoint every few hundred rows rather than every few: measured on the
  one-recipient benchmark, every 200 rows gave a 5 MB WAL and a p99 of 18-24 ms, every 1000
  rows 8-15 MB and 5 ms, none at all 2.7-3.7 ms and an unbounded WAL. Should that thread
  lag (a loaded host), the decision that reaches ``CHECKPOINT_ROWS_HARD`` rows checkpoints
  itself: a hard bound.
- ``maintain`` (the daemon's background thread) forces a TRUNCATE checkpoint when another process
  (a report, a purge) kept the WAL from restarting and it grew beyond ``WAL_LIMIT_BYTES``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from passerelle.greylist.store.base import INSERT_TRIPLET, SQLStore

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


log = logging.getLogger("passerelle.greylist")

WAL_AUTOCHECKPOINT_PAGES = 1000  # ~4 MB of 4 KiB pages (SQLite's default, set explicitly)
CHECKPOINT_ROWS = 750  # serial store: rows written between two checkpoints (~4 pages each)
CHECKPOINT_ROWS_HARD = 1500  # serial store: a decision checkpoints itself past this many
SERIAL_CACHE_KIB = 32768  # serial store: page cache of its one connection (SQLite: 2 MiB)
CHECKPOINT_EVERY = 0.05  # seconds between two looks at rows written and deadline (serial)
WAL_LIMIT_BYTES = 32 * 1024 * 1024  # journal_size_limit, and when maintain() forces a checkpoint


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
    insert_if_absent = INSERT_TRIPLET + " ON CONFLICT (k) DO NOTHING"
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
        # serial store: a call still running past this time.monotonic() is interrupted by the
        # checkpointer thread (set by the caller before each call; 0: no deadline). A watchdog
        # thread rather than a progress handler: that would call Python back from inside every
        # sqlite3_step, a cost on each decision for a bound that almost never applies.
        self.deadline = 0.0
        self._ckpt_stop = threading.Event()
        self._ckpt: threading.Thread | None = None
        self._ckpt_done = 0  # total_changes of the decision connection at the last checkpoint

    def _connect(self) -> Any:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        c = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        c.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        self._use_wal(c)
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        if self.serial:
            c.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
            c.execute(f"PRAGMA cache_size=-{SERIAL_CACHE_KIB}")
        else:
            c.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        return c

    def _use_wal(self, c: Any) -> None:
        """Switch the database to WAL (a no-op once it is: the mode is kept in the file).

        The switch needs an exclusive lock, and while another connection holds the write lock
        on a file still in rollback mode (a new database: another thread creating the schema)
        SQLite answers "database is locked" at once, without its busy handler. Retried until
        the store's timeout, then the error goes to the caller like any other busy timeout.
        """
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                if c.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    c.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def wal_bytes(self) -> int:
        """Size of the WAL file now (0 when there is none)."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    # -- serial store: checkpoints off the decision path ---------------------------------
    def start_checkpointer(self, every: float = CHECKPOINT_EVERY) -> None:
        """Serial store: checkpoint every ``CHECKPOINT_ROWS`` rows from a thread of its own,
        which also interrupts a call that runs past its ``deadline``."""
        if not self.serial or self.path == ":memory:" or self._ckpt is not None:
            return
        self._ckpt_stop.clear()
        self._ckpt = threading.Thread(
            target=self._checkpoint_loop, args=(every,), name="greylist-checkpoint", daemon=True
        )
        self._ckpt.start()

    def _checkpoint_loop(self, every: float) -> None:
        c: Any = None
        while not self._ckpt_stop.wait(every):
            try:
                shared = self._shared
                if shared is None:
                    continue
                deadline = self.deadline
                if deadline and time.monotonic() > deadline:
                    shared.interrupt()  # a call past store_timeout: OperationalError there
                    continue
                if not self._rows_since_checkpoint(shared, CHECKPOINT_ROWS):
                    continue
                if c is None:
                    c = sqlite3.connect(self.path, timeout=0.1, isolation_level=None)
                self.checkpoint(c)
            except Exception as exc:  # never let upkeep die: log, reconnect next time
                log.warning("greylist WAL checkpoint failed: %s", exc or type(exc).__name__)
                with contextlib.suppress(Exception):
                    c.close()
                c = None
        if c is not None:
            c.close()

    def _rows_since_checkpoint(self, c: Any, rows: int) -> bool:
        changes = c.total_changes
        if changes < self._ckpt_done:  # a new decision connection
            self._ckpt_done = 0
        return bool(changes - self._ckpt_done >= rows)

    def _wrote(self) -> None:
        """After a decision's write (serial store, under ``store.lock``): the hard bound."""
        c = self._shared
        if c is not None and self._rows_since_checkpoint(c, CHECKPOINT_ROWS_HARD):
            # (busy, frames in the WAL, frames checkpointed): only a complete checkpoint lets
            # the WAL restart; otherwise (the checkpointer thread's connection in the way)
            # the next write tries again instead of waiting another CHECKPOINT_ROWS_HARD rows.
            busy, frames, done = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and done >= frames:
                self._ckpt_done = c.total_changes

    def checkpoint(self, c: Any) -> None:
        """One checkpoint of a serial store on connection ``c`` (not the decision one)."""
        c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the bulk; decisions go on
        if self.lock.acquire(timeout=self.timeout):
            try:  # the frames written meanwhile; with none in flight the WAL can restart
                c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self._shared is not None:
                    self._ckpt_done = self._shared.total_changes
            finally:
                self.lock.release()

    def close(self) -> None:
        self._ckpt_stop.set()
        if self._ckpt is not None:
            self._ckpt.join(timeout=5)
            self._ckpt = None
        super().close()

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
