"""Shared MariaDB/MySQL store through PyMySQL (bounded connect/read/write timeouts)."""

from __future__ import annotations

from typing import Any

from passerelle.dburl import StoreURL
from passerelle.greylist.store.base import SQLStore, StoreError
from passerelle.schemalock import (
    SCHEMA_LOCK_WAIT,
    SchemaLockBusy,
    acquire_schema_lock,
    release_schema_lock,
)

SCHEMA_LOCK = "passerelle_greylist_schema"

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS greylist ("
        " k BINARY(16) NOT NULL PRIMARY KEY,"
        " client VARCHAR(64) CHARACTER SET ascii NOT NULL,"
        " sender VARBINARY(255) NOT NULL, rcpt VARBINARY(255) NOT NULL,"
        " state TINYINT NOT NULL, first_seen DOUBLE NOT NULL, last_seen DOUBLE NOT NULL,"
        " passed_at DOUBLE NULL, expires DOUBLE NOT NULL, attempts INT UNSIGNED NOT NULL,"
        " passes INT UNSIGNED NOT NULL, version INT UNSIGNED NOT NULL,"
        " KEY greylist_expires (expires), KEY greylist_first_seen (first_seen),"
        " KEY greylist_passed_at (passed_at)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS clients (client VARCHAR(64) CHARACTER SET ascii NOT NULL"
        " PRIMARY KEY, passes INT UNSIGNED NOT NULL, last_pass DOUBLE NOT NULL,"
        " expires DOUBLE NOT NULL, KEY clients_expires (expires)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS whitelist (kind VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " entry VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " comment VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL DEFAULT '',"
        " created DOUBLE NOT NULL, PRIMARY KEY (kind, entry)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS stats (bucket BIGINT NOT NULL,"
        " kind VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " subject VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " hits BIGINT UNSIGNED NOT NULL, PRIMARY KEY (bucket, kind, subject)) ENGINE=InnoDB",
    ],
}


class MySQLStore(SQLStore):
    placeholder = "%s"
    schema_lock_wait: float = SCHEMA_LOCK_WAIT  # a migration waits this long for another one
    stats_upsert = (
        "INSERT INTO stats (bucket, kind, subject, hits) VALUES (?, ?, ?, ?)"
        " ON DUPLICATE KEY UPDATE hits = hits + VALUES(hits)"
    )
    client_upsert = (
        "INSERT INTO clients (client, passes, last_pass, expires) VALUES (?, 1, ?, ?)"
        " ON DUPLICATE KEY UPDATE passes = IF(expires < ?, 1, passes + 1),"
        " last_pass = VALUES(last_pass), expires = VALUES(expires)"
    )
    purge_statement = "DELETE FROM greylist WHERE expires < ? ORDER BY expires LIMIT ?"
    purge_clients_statement = "DELETE FROM clients WHERE expires < ? ORDER BY expires LIMIT ?"
    purge_stats_statement = "DELETE FROM stats WHERE bucket < ? LIMIT ?"

    def __init__(self, url: StoreURL, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        import pymysql  # Debian python3-pymysql; only needed with a mysql:// store

        self._pymysql = pymysql
        self.url = url
        self.integrity_errors = (pymysql.err.IntegrityError,)

    def _connect(self) -> Any:
        c = self._pymysql.connect(**self.url.pymysql_args(self.timeout))
        with c.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (max(1, int(self.timeout)),))
        return c

    def _migrations(self) -> dict[int, list[str]]:
        return MIGRATIONS

    def _lock_schema(self, cur: Any) -> None:
        try:
            acquire_schema_lock(cur, SCHEMA_LOCK, self.schema_lock_wait)
        except SchemaLockBusy as exc:
            raise StoreError(str(exc)) from None

    def _unlock_schema(self, cur: Any) -> None:
        release_schema_lock(cur, SCHEMA_LOCK)
