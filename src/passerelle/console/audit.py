"""The console's audit log: who did what, with which role, to what, with what result, from
where and when. Every action of the console appends a row; the audit page lists them newest
first.

What is written comes from requests (an account name typed in the login form, a client
address, a target from a URL): each string is bounded and its control characters removed,
so a row can neither forge another line in a log export nor fill the disk.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from passerelle.console import schema

SCHEMA_VERSION = 1
VERSION_TABLE = "console_audit_schema_version"
SCHEMA_LOCK = "passerelle_console_audit_schema"

WHO_MAX = 128
ROLE_MAX = 16
ACTION_MAX = 64
TARGET_MAX = 256
RESULT_MAX = 512
CLIENT_MAX = 64
LIMIT_MAX = 1000
OFFSET_MAX = 1_000_000

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_audit ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,"
        " role TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
        " ok INTEGER NOT NULL, result TEXT NOT NULL, client TEXT NOT NULL)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_audit ("
        " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, at DOUBLE NOT NULL,"
        " who VARCHAR(128) CHARACTER SET utf8mb4 NOT NULL,"
        " role VARCHAR(16) CHARACTER SET utf8mb4 NOT NULL,"
        " action VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,"
        " target VARCHAR(256) CHARACTER SET utf8mb4 NOT NULL,"
        " ok TINYINT NOT NULL, result VARCHAR(512) CHARACTER SET utf8mb4 NOT NULL,"
        " client VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL) ENGINE=InnoDB",
    ],
}


class AuditError(ValueError):
    """A listing of the audit log that is refused (bad paging)."""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    who: str
    role: str
    action: str
    target: str
    ok: bool
    result: str
    client: str


def clean(value: object, limit: int) -> str:
    """One line of at most ``limit`` characters: control and format characters (newlines,
    escapes, bidi overrides) removed, lone surrogates replaced."""
    text = "" if value is None else str(value)
    text = "".join(c for c in text[: limit * 4] if unicodedata.category(c) not in ("Cc", "Cf"))
    text = text.encode("utf-8", "replace").decode("utf-8")
    return re.sub(r"\s+", " ", text).strip()[:limit]


class AuditLog(schema.ConsoleTable):
    """The audit table on one DB-API connection (autocommit)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "audit log"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def append(
        self,
        who: object,
        role: object,
        action: object,
        target: object,
        ok: bool,
        result: object,
        client: object,
        now: float,
    ) -> int:
        """Write one row; returns its id."""
        cur = self._execute(
            "INSERT INTO console_audit (at, who, role, action, target, ok, result, client)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                float(now),
                clean(who, WHO_MAX) or "-",
                clean(role, ROLE_MAX) or "-",
                clean(action, ACTION_MAX) or "-",
                clean(target, TARGET_MAX),
                int(bool(ok)),
                clean(result, RESULT_MAX),
                clean(client, CLIENT_MAX),
            ),
        )
        return int(cur.lastrowid)

    def list(self, limit: int = 100, offset: int = 0) -> tuple[list[AuditEntry], bool]:
        """A page of rows, newest first, and whether there is a next page."""
        for value, what, top in ((limit, "limit", LIMIT_MAX), (offset, "offset", OFFSET_MAX)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise AuditError(f"{what} must be a whole number")
            if value < 0:
                raise AuditError(f"{what} cannot be negative")
            if value > top:
                raise AuditError(f"{what} is at most {top}")
        if limit < 1:
            raise AuditError("limit must be at least 1")
        rows = self._execute(
            "SELECT id, at, who, role, action, target, ok, result, client FROM console_audit"
            " ORDER BY id DESC LIMIT ? OFFSET ?",
            (limit + 1, offset),
        ).fetchall()
        entries = [
            AuditEntry(
                int(r[0]),
                float(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                bool(r[6]),
                str(r[7]),
                str(r[8]),
            )
            for r in rows[:limit]
        ]
        return entries, len(rows) > limit
