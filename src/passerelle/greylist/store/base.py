"""SQL store shared by the SQLite and MariaDB back ends (DB-API 2, parameterised queries).

Correctness under concurrency (several threads, several gateways on one MariaDB):
- a new triplet is a plain INSERT on the primary key (the 16-byte triplet hash): of two
  gateways racing, one inserts, the other gets a duplicate-key error and re-reads;
- every change to an existing record is a compare-and-set ``UPDATE ... WHERE k=? AND
  version=?``: a lost race re-reads and decides again, so no update is lost and no row is
  duplicated.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from passerelle.greylist.policy import Outcome, Record, Timing, evaluate
from passerelle.greylist.stats import (
    DAY,
    DELAYS_PER_DAY,
    DayStats,
    day_start,
    history_days,
    proportional_shares,
)

SCHEMA_VERSION = 1
DISPLAY_BYTES = 255  # sender/recipient kept for reports (the key hashes the full value)
MAX_RACE_RETRIES = 50


class StoreError(RuntimeError):
    """The store cannot be used (down, timeout, schema newer than this code)."""


@dataclass(frozen=True)
class Triplet:
    key: bytes
    client: str
    sender: str
    recipient: str


def display_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")[:DISPLAY_BYTES]


_COLUMNS = "state, first_seen, last_seen, passed_at, attempts, passes, version"
_SELECT_TRIPLET = f"SELECT {_COLUMNS}, expires FROM greylist WHERE k = ?"
_UPDATABLE = ("state", "first_seen", "last_seen", "passed_at", "expires", "attempts", "passes")
INSERT_TRIPLET = (
    "INSERT INTO greylist (k, client, sender, rcpt, state, first_seen, last_seen,"
    " passed_at, expires, attempts, passes, version)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLStore:
    """Generic store; subclasses give the connection, the DDL and a few dialect statements."""

    placeholder = "?"
    integrity_errors: tuple[type[BaseException], ...] = ()
    stats_upsert = ""
    client_upsert = ""
    purge_statement = ""  # params: (before, batch)
    purge_clients_statement = ""
    purge_stats_statement = ""
    # dialect: INSERT_TRIPLET that does nothing (rowcount 0) when the key exists; when set, decide()
    # tries it first: most triplets are new (a bot that never retries), one statement then
    insert_if_absent = ""
    # True: one connection for every thread, the caller serialises the calls (``lock``) and
    # runs them in its own thread (the SQLite store of the milter: one writer, no hand-off).
    serial = False

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._schema_checked = False
        self._shared: Any = None  # the one connection of a serial store
        self.lock = threading.Lock()  # held by the caller around each call of a serial store
        self._update_sql: dict[tuple[str, ...], str] = {}
        self._select_sql = self.q(_SELECT_TRIPLET)

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _migrations(self) -> dict[int, list[str]]:
        raise NotImplementedError

    def _lock_schema(self, cur: Any) -> None:
        """Serialise migrations between processes (dialect specific)."""

    def _unlock_schema(self, cur: Any) -> None:
        """Release the migration lock."""

    def _thread_conn(self) -> Any:
        if self.serial:
            if self._shared is None:
                self._shared = self._connect()
                with self._lock:
                    self._all.append(self._shared)
            return self._shared
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def conn(self) -> Any:
        """This thread's connection; the schema is created/upgraded on first use."""
        c = self._thread_conn()
        if not self._schema_checked:
            try:
                self._migrate_on(c)
            except Exception:
                self.discard()
                raise
        return c

    def discard(self) -> None:
        """Forget this thread's connection after an error (a new one is made next time)."""
        if self.serial:
            c, self._shared = self._shared, None
        else:
            c = getattr(self._local, "conn", None)
            self._local.conn = None
        if c is not None:
            with self._lock:
                if c in self._all:
                    self._all.remove(c)
            with contextlib.suppress(Exception):  # already broken
                c.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        self._local = threading.local()
        self._shared = None

    def maintain(self) -> None:
        """Periodic upkeep from the daemon's background thread (dialect specific)."""

    def _wrote(self) -> None:
        """Called by a serial store after each decision's write (dialect specific)."""

    def start_checkpointer(self) -> None:
        """Start the store's own upkeep thread, if it has one (SQLite serial store)."""

    def q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn().cursor()
        cur.execute(self.q(sql), tuple(params))
        return cur

    # -- schema ------------------------------------------------------------------------
    def schema_version(self) -> int:
        return self._version_on(self._thread_conn())

    def _version_on(self, c: Any) -> int:
        cur = c.cursor()
        try:
            cur.execute("SELECT MAX(version) FROM schema_version")
        except Exception:
            return 0
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns (version before, version after)."""
        return self._migrate_on(self._thread_conn())

    def _migrate_on(self, c: Any) -> tuple[int, int]:
        # An up-to-date schema needs no DDL: the milters' least-privilege database users
        # (SELECT, INSERT, UPDATE, DELETE) may not even run CREATE TABLE IF NOT EXISTS.
        current = self._version_on(c)
        if current == SCHEMA_VERSION:
            self._schema_checked = True
            return current, current
        cur = c.cursor()
        self._lock_schema(cur)
        try:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            before = self._version_on(c)
            if before > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {before} is newer than this passerelle "
                    f"({SCHEMA_VERSION}): upgrade passerelle"
                )
            for version, statements in sorted(self._migrations().items()):
                if version <= before:
                    continue
                for stmt in statements:
                    cur.execute(stmt)
                cur.execute(self.q("INSERT INTO schema_version (version) VALUES (?)"), (version,))
        finally:
            self._unlock_schema(cur)
        self._schema_checked = True
        return before, max(before, SCHEMA_VERSION)

    # -- triplets ----------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        got = self.get_with_expiry(key)
        return None if got is None else got[0]

    def get_with_expiry(self, key: bytes) -> tuple[Record, float] | None:
        """The record and its stored ``expires``."""
        cur = self.conn().cursor()
        cur.execute(self._select_sql, (key,))
        row = cur.fetchone()
        if row is None:
            return None
        state, first_seen, last_seen, passed_at, attempts, passes, version, expires = row
        return Record(
            int(state),
            float(first_seen),
            float(last_seen),
            None if passed_at is None else float(passed_at),
            int(attempts),
            int(passes),
            int(version),
        ), float(expires)

    @staticmethod
    def _updatable(rec: Record, expires: float | None) -> tuple[Any, ...]:
        """The values of the ``_UPDATABLE`` columns for ``rec``, in that order."""
        return (
            rec.state,
            rec.first_seen,
            rec.last_seen,
            rec.passed_at,
            expires,
            rec.attempts,
            rec.passes,
        )

    def _row(self, t: Triplet, rec: Record, expires: float) -> tuple[Any, ...]:
        return (
            t.key,
            t.client,
            display_bytes(t.sender),
            display_bytes(t.recipient),
            *self._updatable(rec, expires),
            rec.version,
        )

    def insert(self, t: Triplet, rec: Record, expires: float) -> bool:
        """Insert a new record; False when another writer created it first."""
        try:
            self.execute(INSERT_TRIPLET, self._row(t, rec, expires))
        except self.integrity_errors:
            return False
        return True

    def update(
        self,
        key: bytes,
        rec: Record,
        expected_version: int,
        expires: float,
        old: Record | None = None,
        old_expires: float | None = None,
    ) -> bool:
        """Compare-and-set: write ``rec`` only if the stored version is still the one read.

        Given the record read (``old``, ``old_expires``), only the columns that changed are
        written: an index whose column is not in the statement is not touched (an early retry
        changes one row, not three index entries besides)."""
        new = self._updatable(rec, expires)
        if old is not None:
            before = self._updatable(old, old_expires)
            values = {c: v for c, v, b in zip(_UPDATABLE, new, before) if b != v}
        else:
            values = dict(zip(_UPDATABLE, new))
        cols = (*values, "version")
        sql = self._update_sql.get(cols)
        if sql is None:
            sql = self.q(
                "UPDATE greylist SET "
                + ", ".join(f"{c} = ?" for c in cols)
                + " WHERE k = ? AND version = ?"
            )
            self._update_sql[cols] = sql
        cur = self.conn().cursor()
        cur.execute(sql, (*values.values(), rec.version, key, expected_version))
        return bool(cur.rowcount == 1)

    def decide(self, t: Triplet, now: float, timing: Timing) -> Outcome:
        """Read, decide (policy.evaluate), write atomically; retried when a race is lost."""
        if self.insert_if_absent:
            out = evaluate(None, now, timing)  # what a triplet without a record gets
            cur = self.conn().cursor()
            cur.execute(self.insert_if_absent, self._row(t, out.record, out.record.expires(timing)))
            if cur.rowcount == 1:
                if self.serial:
                    self._wrote()
                return out
        for attempt in range(MAX_RACE_RETRIES):
            if attempt:
                time.sleep(random.uniform(0, 0.001 * min(attempt, 10)))  # noqa: S311 - jitter
            got = self.get_with_expiry(t.key)
            rec = None if got is None else got[0]
            out = evaluate(rec, now, timing)
            exp = out.record.expires(timing)
            if got is None:
                done = self.insert(t, out.record, exp)
            else:
                done = self.update(t.key, out.record, got[0].version, exp, got[0], got[1])
            if done:
                if self.serial:
                    self._wrote()
                return out
        raise StoreError("too many concurrent updates on one triplet")

    def bulk_load(self, rows: Iterable[tuple[Any, ...]], chunk: int = 5000) -> int:
        """Fast fill (benchmarks, imports): rows are the 12 greylist columns in order."""
        sql = self.q(INSERT_TRIPLET)
        n = 0
        c = self.conn()
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                n += self._bulk(c, sql, batch)
                batch = []
        if batch:
            n += self._bulk(c, sql, batch)
        return n

    def _bulk(self, c: Any, sql: str, batch: list[tuple[Any, ...]]) -> int:
        cur = c.cursor()
        cur.execute("BEGIN")
        cur.executemany(sql, batch)
        cur.execute("COMMIT")
        return len(batch)

    # -- client auto-whitelist ---------------------------------------------------------
    def client_status(self, client: str) -> tuple[int, float] | None:
        cur = self.execute("SELECT passes, expires FROM clients WHERE client = ?", (client,))
        row = cur.fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def client_pass(self, client: str, now: float, expires: float) -> None:
        """Count an accepted delivery for a client group (reset when its record expired)."""
        self.execute(self.client_upsert, (client, now, expires, now))

    # -- whitelist table ---------------------------------------------------------------
    def whitelist_add(self, kind: str, entry: str, comment: str, now: float) -> bool:
        try:
            self.execute(
                "INSERT INTO whitelist (kind, entry, comment, created) VALUES (?, ?, ?, ?)",
                (kind, entry, comment, now),
            )
        except self.integrity_errors:
            self.execute(
                "UPDATE whitelist SET comment = ? WHERE kind = ? AND entry = ?",
                (comment, kind, entry),
            )
            return False
        return True

    def whitelist_remove(self, kind: str, entry: str) -> bool:
        cur = self.execute("DELETE FROM whitelist WHERE kind = ? AND entry = ?", (kind, entry))
        return bool(cur.rowcount)

    def whitelist_list(self) -> list[tuple[str, str, str, float]]:
        cur = self.execute(
            "SELECT kind, entry, comment, created FROM whitelist ORDER BY kind, entry"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in cur.fetchall()]

    # -- counters ----------------------------------------------------------------------
    def add_stats(self, rows: Sequence[tuple[int, str, str, int]]) -> None:
        if not rows:
            return
        cur = self.conn().cursor()
        cur.executemany(self.q(self.stats_upsert), list(rows))

    def stats_since(self, since: float, kind: str) -> list[tuple[str, int]]:
        cur = self.execute(
            "SELECT subject, SUM(hits) FROM stats WHERE kind = ? AND bucket >= ?"
            " GROUP BY subject ORDER BY SUM(hits) DESC, subject",
            (kind, int(since // 3600 * 3600)),
        )
        return [(str(r[0]), int(r[1])) for r in cur.fetchall()]

    # -- reports -----------------------------------------------------------------------
    def came_back(self, since: float, limit: int = 50) -> list[tuple[str, int, float]]:
        """Client groups whose triplets passed since ``since``: (client, triplets, max delay)."""
        cur = self.execute(
            "SELECT client, COUNT(*), MAX(passed_at - first_seen) FROM greylist"
            " WHERE passed_at >= ? GROUP BY client ORDER BY COUNT(*) DESC, client LIMIT ?",
            (since, limit),
        )
        return [(str(r[0]), int(r[1]), float(r[2])) for r in cur.fetchall()]

    def never_retried(
        self, since: float, seen_before: float, limit: int = 50
    ) -> list[tuple[str, int]]:
        """Client groups with pending triplets first seen since ``since`` (and before
        ``seen_before``, so they had the time to retry) that never came back."""
        cur = self.execute(
            "SELECT client, COUNT(*) FROM greylist WHERE first_seen >= ? AND first_seen < ?"
            " AND state = 0 AND attempts = 1 GROUP BY client ORDER BY COUNT(*) DESC, client"
            " LIMIT ?",
            (since, seen_before, limit),
        )
        return [(str(r[0]), int(r[1])) for r in cur.fetchall()]

    def delays(self, since: float) -> list[float]:
        cur = self.execute(
            "SELECT passed_at - first_seen FROM greylist WHERE passed_at >= ?", (since,)
        )
        return [float(r[0]) for r in cur.fetchall()]

    def daily_stats(
        self, first_day: float, days: int, delays_per_day: int = DELAYS_PER_DAY
    ) -> list[DayStats]:
        """One ``DayStats`` per UTC day from the day of ``first_day``, for ``days`` days (bounded
        by ``history_days``), the days without data included (zeros).

        Bounded: two grouped reads of the stats table (one row per hour, and per decision
        reason) and, per day, a count and at most ``delays_per_day`` delays of the greylist
        table (its passed_at index; a day with more passes is sampled across its hours:
        24 more counts and 24 short reads, ``_day_delays``). The stats table keeps its
        hourly counters ``stats_ttl``; the greylist table only the triplets not purged yet
        (a passed one ``pass_ttl`` after its last use): for the older days, machines back and
        delays are those still kept."""
        start = day_start(first_day)
        n = history_days(days)
        end = start + n * DAY
        out = {start + i * DAY: DayStats(start + i * DAY) for i in range(n)}
        cur = self.execute(
            "SELECT bucket, subject, SUM(hits) FROM stats WHERE kind = ? AND bucket >= ?"
            " AND bucket < ? GROUP BY bucket, subject",
            ("decision", start, end),
        )
        for bucket, subject, hits in cur.fetchall():
            d = out.get(day_start(int(bucket)))
            if d is not None:
                d.decisions[str(subject)] = d.decisions.get(str(subject), 0) + int(hits)
        cur = self.execute(
            "SELECT bucket, SUM(hits) FROM stats WHERE kind = ? AND bucket >= ? AND bucket < ?"
            " GROUP BY bucket",
            ("whitelisted", start, end),
        )
        for bucket, hits in cur.fetchall():
            d = out.get(day_start(int(bucket)))
            if d is not None:
                d.whitelisted += int(hits)
        for day, d in out.items():
            cur = self.execute(
                "SELECT COUNT(*), COUNT(DISTINCT client) FROM greylist"
                " WHERE passed_at >= ? AND passed_at < ?",
                (day, day + DAY),
            )
            passed, returned = cur.fetchone()
            d.passed, d.returned = int(passed or 0), int(returned or 0)
            if d.passed and delays_per_day > 0:
                d.delays = self._day_delays(day, d.passed, delays_per_day)
        return list(out.values())

    def _day_delays(self, day: float, passed: int, most: int) -> list[float]:
        """The delays of the triplets passed on ``day``: all of them up to ``most``; beyond, a
        sample spread over the day's hours in proportion to each hour's passes (the first of
        each hour), ``most`` in all and the same on every read. Without an order the database
        would hand back whichever rows it reads first (with SQLite, the day's earliest), and
        a day's percentiles would be those of its first hours."""
        sql = (
            "SELECT passed_at - first_seen FROM greylist"
            " WHERE passed_at >= ? AND passed_at < ? ORDER BY passed_at LIMIT ?"
        )
        if passed <= most:
            cur = self.execute(sql, (day, day + DAY, most))
            return [float(r[0]) for r in cur.fetchall()]
        hours = [(day + h * 3600, day + (h + 1) * 3600) for h in range(24)]
        counts = []
        for start, end in hours:
            cur = self.execute(
                "SELECT COUNT(*) FROM greylist WHERE passed_at >= ? AND passed_at < ?",
                (start, end),
            )
            counts.append(int(cur.fetchone()[0] or 0))
        out: list[float] = []
        for (start, end), share in zip(hours, proportional_shares(counts, most)):
            if share:
                cur = self.execute(sql, (start, end, share))
                out.extend(float(r[0]) for r in cur.fetchall())
        return out

    # -- maintenance -------------------------------------------------------------------
    def purge(
        self,
        now: float,
        batch: int = 1000,
        stats_before: float | None = None,
        pause: float = 0.0,
    ) -> dict[str, int]:
        """Delete expired rows in batches of ``batch`` (short statements, short locks)."""
        out = {"greylist": 0, "clients": 0, "stats": 0}
        jobs = [
            ("greylist", self.purge_statement, now),
            ("clients", self.purge_clients_statement, now),
        ]
        if stats_before is not None:
            jobs.append(("stats", self.purge_stats_statement, stats_before))
        for name, sql, before in jobs:
            while True:
                cur = self.execute(sql, (before, batch))
                n = max(int(cur.rowcount), 0)
                out[name] += n
                if n < batch:
                    break
                if pause:
                    time.sleep(pause)
        return out

    def count(self, table: str = "greylist") -> int:
        if table not in ("greylist", "clients", "whitelist", "stats"):
            raise ValueError(table)
        cur = self.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cur.fetchone()[0])
