"""What the gateways publish for the console's greylist and connection-guard pages, and the
comments that go with whitelist entries added from the console: a table set of its own
(version table ``console_published_schema_version``), migrated by the console at start.

- ``console_published``: one row per name, its body JSON: ``greylist`` (the whitelist table
  and the greylist report, from whichever gateway published last: the store is shared) and
  ``connguard:GATEWAY`` (that gateway's connection-guard state: blocks are per gateway).
  A gateway only updates or inserts rows (its database user may not delete).
- ``console_whitelist_notes``: the comment an admin gave a ``whitelist_add`` request, by
  target, written before the request is filed so the gateway always finds it.

Bodies are JSON written by the gateway's side; read back, they are input: a body that is not
a JSON object is reported as missing."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from passerelle.console import schema

VERSION_TABLE = "console_published_schema_version"
SCHEMA_LOCK = "passerelle_console_published_schema"
BODY_MAX = 4 * 1024 * 1024  # characters of a published body
COMMENT_MAX = 255  # the greylist store's whitelist.comment
NAME_MAX = 300

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_published (name TEXT PRIMARY KEY,"
        " gateway TEXT NOT NULL, published_at REAL NOT NULL, body TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS console_whitelist_notes (target TEXT PRIMARY KEY,"
        " comment TEXT NOT NULL, updated REAL NOT NULL)",
    ],
}
MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_published ("
        " name VARCHAR(300) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
        " gateway VARCHAR(253) CHARACTER SET ascii NOT NULL, published_at DOUBLE NOT NULL,"
        " body MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS console_whitelist_notes ("
        " target VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
        " comment VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL, updated DOUBLE NOT NULL)"
        " ENGINE=InnoDB",
    ],
}


@dataclass(frozen=True)
class Published:
    name: str
    gateway: str
    published_at: float
    body: dict[str, Any]


def clean_comment(text: str) -> str:
    """A comment fit for the store: printable, one line, at most ``COMMENT_MAX``."""
    return "".join(c if c.isprintable() else " " for c in str(text)).strip()[:COMMENT_MAX]


class PublishedState(schema.ConsoleTable):
    """The published rows and the whitelist notes on one DB-API connection (autocommit)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "published state"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def publish(self, name: str, gateway: str, body: dict[str, Any], now: float) -> None:
        """Replace the row ``name`` (update, else insert: no DELETE needed)."""
        if not name or len(name) > NAME_MAX or not name.isascii():
            raise ValueError(f"bad published name {name!r}")
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if len(text) > BODY_MAX:
            raise ValueError(f"{name}: {len(text)} characters to publish, at most {BODY_MAX}")
        cur = self._execute(
            "UPDATE console_published SET gateway = ?, published_at = ?, body = ? WHERE name = ?",
            (gateway, now, text, name),
        )
        if cur.rowcount == 1:
            return
        # there already: MariaDB counts an unchanged row as 0, or another gateway was first
        with contextlib.suppress(*self._integrity):
            self._execute(
                "INSERT INTO console_published (name, gateway, published_at, body)"
                " VALUES (?, ?, ?, ?)",
                (name, gateway, now, text),
            )

    def get(self, name: str) -> Published | None:
        row = self._execute(
            "SELECT name, gateway, published_at, body FROM console_published WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else _published(row)

    def starting(self, prefix: str) -> list[Published]:
        """The rows whose name starts with ``prefix``, by name (a row per gateway at most)."""
        rows = self._execute(
            "SELECT name, gateway, published_at, body FROM console_published"
            " WHERE name >= ? AND name < ? ORDER BY name",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
        ).fetchall()
        out = [_published(r) for r in rows]
        return [p for p in out if p is not None and p.name.startswith(prefix)]

    def set_note(self, target: str, comment: str, now: float) -> None:
        text = clean_comment(comment)
        cur = self._execute(
            "UPDATE console_whitelist_notes SET comment = ?, updated = ? WHERE target = ?",
            (text, now, target),
        )
        if cur.rowcount == 1:
            return
        with contextlib.suppress(*self._integrity):
            self._execute(
                "INSERT INTO console_whitelist_notes (target, comment, updated) VALUES (?, ?, ?)",
                (target, text, now),
            )

    def note(self, target: str) -> str:
        row = self._execute(
            "SELECT comment FROM console_whitelist_notes WHERE target = ?", (target,)
        ).fetchone()
        return "" if row is None else clean_comment(str(row[0]))


def _published(row: Any) -> Published | None:
    try:
        body = json.loads(str(row[3]))
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return Published(str(row[0]), str(row[1]), float(row[2]), body)
