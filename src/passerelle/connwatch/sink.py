"""Where per-host connection counts go, and where the totals that decide come from.

``CountSink`` is the seam for the *beyond the reference* goal of counting a client across
every gateway: each gateway publishes its own counts for the window, then decides on the
totals of all gateways.

- ``LocalSink``: totals are this host's counts (one gateway, or no shared database).
- ``MariaDBSink``: one table in the shared database of ``greylist_db`` (the greylist
  database: the gateways' users already have SELECT, INSERT, UPDATE, DELETE there)::

      CREATE TABLE connwatch_counts (
        host VARCHAR(255) NOT NULL, direction VARCHAR(16) NOT NULL,
        ip VARCHAR(45) NOT NULL, sessions INT UNSIGNED NOT NULL,
        window_end DOUBLE NOT NULL,
        PRIMARY KEY (direction, host, ip), KEY (direction, window_end))

  created by ``passerelle connwatch migrate`` (a user allowed to CREATE, like
  ``greylist migrate``; version in ``connwatch_schema``). ``publish`` replaces this host's
  rows for the direction in one transaction (DELETE, then batched INSERTs); ``totals`` sums
  the rows of every host whose ``window_end`` is within half a window of this run's, so a
  gateway whose timer stopped ages out instead of counting forever. The gateways' timers run
  at the same minute, so their windows line up. Time is the caller's (``window_end``), never
  the database's ``NOW()``: replays and tests give their own clock.

  Database down or slow (bounded by ``timeout``): ``SinkError``; the guard then decides on
  the local counts and says so in its status line (it never blocks on an error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from passerelle.dburl import StoreURL, StoreURLError, parse_store_url
from passerelle.schemalock import SCHEMA_LOCK_WAIT, acquire_schema_lock, release_schema_lock

SCHEMA_VERSION = 1
SCHEMA_LOCK = "passerelle_connwatch_schema"
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS connwatch_counts ("
        " host VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " direction VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " ip VARCHAR(45) CHARACTER SET ascii NOT NULL,"
        " sessions INT UNSIGNED NOT NULL, window_end DOUBLE NOT NULL,"
        " PRIMARY KEY (direction, host, ip), KEY connwatch_recent (direction, window_end))"
        " ENGINE=InnoDB",
    ],
}
INSERT_BATCH = 1000


class SinkError(RuntimeError):
    """The shared counts cannot be written or read (database down, slow, no table)."""


class CountSink(Protocol):
    def publish(
        self, host: str, direction: str, window_end: float, counts: Mapping[str, int]
    ) -> None:
        """Record this host's sessions per client IP for the window ending at window_end."""

    def totals(
        self, direction: str, window_end: float, window: int, exclude_host: str | None = None
    ) -> dict[str, int]:
        """Sessions per client IP summed over every host that published for this window
        (but ``exclude_host``: a dry run adds its own unpublished counts)."""


class LocalSink:
    """Single gateway: the totals are what this host published."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}

    def publish(
        self, host: str, direction: str, window_end: float, counts: Mapping[str, int]
    ) -> None:
        self._counts[direction] = dict(counts)

    def totals(
        self, direction: str, window_end: float, window: int, exclude_host: str | None = None
    ) -> dict[str, int]:
        if exclude_host is not None:
            return {}
        return dict(self._counts.get(direction, {}))


class MariaDBSink:
    """Counts shared by every gateway in MariaDB (PyMySQL, from python3-pymysql on hosts)."""

    schema_lock_wait: float = SCHEMA_LOCK_WAIT  # a migration waits this long for another one

    def __init__(
        self,
        url: str | StoreURL,
        timeout: float = 5.0,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        try:
            self.url = parse_store_url(url) if isinstance(url, str) else url
        except StoreURLError as exc:
            raise SinkError(str(exc)) from None
        if self.url.scheme != "mysql":
            raise SinkError("the mariadb sink needs a mysql:// URL")
        self.timeout = timeout
        self._connect_fn = connect or self._connect
        self._conn: Any = None
        self._schema_ok = False

    def _connect(self) -> Any:
        import pymysql

        return pymysql.connect(**self.url.pymysql_args(self.timeout))

    def _cursor(self) -> Any:
        if self._conn is None:
            self._conn = self._connect_fn()
        return self._conn.cursor()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _fail(self, what: str, exc: BaseException) -> SinkError:
        self.close()
        return SinkError(f"{self.url.redacted()}: {what}: {exc or type(exc).__name__}")

    # -- schema ----------------------------------------------------------------------------
    def schema_version(self) -> int:
        cur = self._cursor()
        try:
            cur.execute("SELECT MAX(version) FROM connwatch_schema")
        except Exception as exc:
            if _is_missing_table(exc):
                return 0
            raise
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the table; returns (version before, version after)."""
        try:
            before = self.schema_version()
            if before > SCHEMA_VERSION:
                raise SinkError(
                    f"connwatch schema version {before} is newer than this passerelle "
                    f"({SCHEMA_VERSION}): upgrade passerelle"
                )
            if before == SCHEMA_VERSION:
                self._schema_ok = True
                return before, before
            cur = self._cursor()
            acquire_schema_lock(cur, SCHEMA_LOCK, self.schema_lock_wait)
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS connwatch_schema (version INTEGER NOT NULL)"
                )
                # Another process may have migrated while this one waited for the lock.
                before = self.schema_version()
                if before > SCHEMA_VERSION:
                    raise SinkError(
                        f"connwatch schema version {before} is newer than this passerelle "
                        f"({SCHEMA_VERSION}): upgrade passerelle"
                    )
                for version, statements in sorted(MIGRATIONS.items()):
                    if version <= before:
                        continue
                    for stmt in statements:
                        cur.execute(stmt)
                    cur.execute("INSERT INTO connwatch_schema (version) VALUES (%s)", (version,))
            finally:
                release_schema_lock(cur, SCHEMA_LOCK)
        except SinkError:
            raise
        except Exception as exc:
            raise self._fail("migrate", exc) from None
        self._schema_ok = True
        return before, max(before, SCHEMA_VERSION)

    def _check_schema(self) -> None:
        if self._schema_ok:
            return
        v = self.schema_version()
        if v != SCHEMA_VERSION:
            raise SinkError(
                f"{self.url.redacted()}: connwatch table at schema version {v}, this "
                f"passerelle needs {SCHEMA_VERSION}: run `passerelle connwatch migrate`"
            )
        self._schema_ok = True

    # -- CountSink -------------------------------------------------------------------------
    def publish(
        self, host: str, direction: str, window_end: float, counts: Mapping[str, int]
    ) -> None:
        rows = [(direction, host, ip, int(n), window_end) for ip, n in counts.items() if n > 0]
        try:
            self._check_schema()
            cur = self._cursor()
            cur.execute("BEGIN")
            try:
                cur.execute(
                    "DELETE FROM connwatch_counts WHERE direction = %s AND host = %s",
                    (direction, host),
                )
                for i in range(0, len(rows), INSERT_BATCH):
                    cur.executemany(
                        "INSERT INTO connwatch_counts (direction, host, ip, sessions, window_end)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        rows[i : i + INSERT_BATCH],
                    )
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                raise
        except SinkError:
            raise
        except Exception as exc:
            raise self._fail("publish", exc) from None

    def totals(
        self, direction: str, window_end: float, window: int, exclude_host: str | None = None
    ) -> dict[str, int]:
        try:
            self._check_schema()
            cur = self._cursor()
            cur.execute(
                "SELECT ip, SUM(sessions) FROM connwatch_counts WHERE direction = %s"
                " AND window_end > %s AND window_end <= %s AND host <> %s GROUP BY ip",
                (direction, window_end - window / 2, window_end + window / 2, exclude_host or ""),
            )
            return {str(ip): int(n) for ip, n in cur.fetchall()}
        except SinkError:
            raise
        except Exception as exc:
            raise self._fail("totals", exc) from None

    def hosts(self, direction: str, window_end: float, window: int) -> list[str]:
        """The gateways whose counts are in the totals (for the status line)."""
        try:
            cur = self._cursor()
            cur.execute(
                "SELECT DISTINCT host FROM connwatch_counts WHERE direction = %s"
                " AND window_end > %s AND window_end <= %s ORDER BY host",
                (direction, window_end - window / 2, window_end + window / 2),
            )
            return [str(r[0]) for r in cur.fetchall()]
        except Exception as exc:
            raise self._fail("hosts", exc) from None


def _is_missing_table(exc: BaseException) -> bool:
    """ER_NO_SUCH_TABLE (1146) from PyMySQL."""
    args = getattr(exc, "args", ())
    return bool(args) and args[0] == 1146
