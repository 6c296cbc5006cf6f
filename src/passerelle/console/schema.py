"""Forward-only, versioned migrations of one console table set (the quarantine index, the
audit log), the way the request table migrates its own (``requests.RequestTable.migrate``):
a version table per set, an up-to-date schema runs no DDL, a newer one is refused, and on
MariaDB the migration runs under the schema lock (``schemalock``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from passerelle.console.requests import MYSQL, dialect_of
from passerelle.schemalock import SchemaLockBusy, acquire_schema_lock, release_schema_lock


class SchemaError(RuntimeError):
    """The tables cannot be used (schema newer than this code, migration lock not obtained)."""


def schema_version(conn: Any, version_table: str) -> int:
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT MAX(version) FROM {version_table}")
    except Exception:
        return 0
    row = cur.fetchone()
    return int(row[0] or 0) if row else 0


def migrate(
    conn: Any,
    mysql: bool,
    version_table: str,
    lock_name: str,
    migrations: Mapping[int, Sequence[str]],
    what: str,
) -> tuple[int, int]:
    """Run the migrations newer than the stored version; returns (before, after).

    ``version_table`` and ``lock_name`` are the caller's constants, never input."""
    target = max(migrations)
    current = schema_version(conn, version_table)
    if current == target:
        return current, current
    cur = conn.cursor()
    if mysql:
        try:
            acquire_schema_lock(cur, lock_name)
        except SchemaLockBusy as exc:
            raise SchemaError(str(exc)) from None
    try:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)")
        before = schema_version(conn, version_table)
        if before > target:
            raise SchemaError(
                f"{what} schema version {before} is newer than this passerelle ({target}): "
                "upgrade passerelle"
            )
        placeholder = "%s" if mysql else "?"
        for version, statements in sorted(migrations.items()):
            if version <= before:
                continue
            for stmt in statements:
                cur.execute(stmt)
            cur.execute(f"INSERT INTO {version_table} (version) VALUES ({placeholder})", (version,))
    finally:
        if mysql:
            release_schema_lock(cur, lock_name)
    return before, max(before, target)


def is_mysql(conn: Any) -> bool:
    """True for a PyMySQL connection (MariaDB); False for sqlite3; else ``TypeError``."""
    return dialect_of(conn) is MYSQL


class ConsoleTable:
    """A console table set on one DB-API connection (autocommit): its SQL (``?`` placeholders,
    turned into PyMySQL's ``%s`` on MariaDB), its migrations and its integrity error.

    Subclasses name their version table, lock, label and migrations (constants, never input).
    """

    VERSION_TABLE: ClassVar[str]
    SCHEMA_LOCK: ClassVar[str]
    WHAT: ClassVar[str]
    SQLITE_MIGRATIONS: ClassVar[Mapping[int, Sequence[str]]]
    MYSQL_MIGRATIONS: ClassVar[Mapping[int, Sequence[str]]]

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.mysql = is_mysql(conn)
        self._integrity: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
        if self.mysql:
            import pymysql  # Debian python3-pymysql; only needed with MariaDB

            self._integrity = (pymysql.err.IntegrityError,)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", "%s") if self.mysql else sql, tuple(params))
        return cur

    def migrate(self) -> tuple[int, int]:
        migrations = self.MYSQL_MIGRATIONS if self.mysql else self.SQLITE_MIGRATIONS
        return migrate(
            self.conn, self.mysql, self.VERSION_TABLE, self.SCHEMA_LOCK, migrations, self.WHAT
        )
