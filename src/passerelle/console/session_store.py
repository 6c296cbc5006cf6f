"""The server side of console sessions (issue 17): the sessions logged out before they
expired.

Sessions are signed tokens (``auth.Sessions``) that nothing stores; a token copied before
its owner logged out would stay valid until it expires (``session_lifetime``, 8 h). So
``/logout`` writes the session id and its expiry to ``console_session_revoked``, and every
request of a session looks its id up there (one primary-key lookup): a revoked session is
logged out. A row is useless once its session expired (the token is refused anyway): the
console purges those (``SessionPurger``, run with the trace purge from the pages served).

The table set has its own version table (``console_session_schema_version``), created or
upgraded by the console at start like the others (``schema.ConsoleTable``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

from passerelle.console import schema

log = logging.getLogger("passerelle.console.sessions")

VERSION_TABLE = "console_session_schema_version"
SCHEMA_LOCK = "passerelle_console_session_schema"
PURGE_EVERY = 600.0  # s between two purges
SID = re.compile(r"[0-9a-f]{32}")  # auth.Sessions: secrets.token_hex(16)

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_session_revoked ("
        " sid TEXT NOT NULL PRIMARY KEY, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS console_session_revoked_expires"
        " ON console_session_revoked (expires)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_session_revoked ("
        " sid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY, expires DOUBLE NOT NULL,"
        " KEY console_session_revoked_expires (expires)) ENGINE=InnoDB",
    ],
}


def check_sid(sid: object) -> str:
    if not isinstance(sid, str) or not SID.fullmatch(sid):
        raise ValueError("a session id is 32 lowercase hex digits")
    return sid


class SessionStore(schema.ConsoleTable):
    """The sessions' server-side tables on one DB-API connection (autocommit)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "console sessions"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def revoke(self, sid: str, expires: float) -> None:
        """Log the session ``sid`` out until ``expires`` (its token's expiry); twice is once."""
        sid = check_sid(sid)
        with contextlib.suppress(*self._integrity):  # already revoked (two logouts racing)
            self._execute(
                "INSERT INTO console_session_revoked (sid, expires) VALUES (?, ?)",
                (sid, float(expires)),
            )

    def is_revoked(self, sid: str) -> bool:
        """One primary-key lookup (each request of a session)."""
        row = self._execute(
            "SELECT 1 FROM console_session_revoked WHERE sid = ?", (sid,)
        ).fetchone()
        return row is not None

    def purge(self, now: float) -> int:
        """Remove the rows of sessions expired by ``now``; returns how many."""
        cur = self._execute("DELETE FROM console_session_revoked WHERE expires <= ?", (now,))
        return max(0, int(cur.rowcount or 0))


class SessionPurger:
    """The console's purge of expired session rows, run from the pages served at most every
    ``PURGE_EVERY`` seconds per process (as ``trace.Purger``); a failure is logged, never
    shown on the page."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, conn: Any, now: float) -> int:
        with self._lock:
            if 0 <= now - self._last < PURGE_EVERY:
                return 0
            self._last = now
        try:
            return SessionStore(conn).purge(now)
        except Exception as exc:  # the page is served anyway; tried again later
            log.error("console sessions: purge failed: %s", exc)
            return 0


__all__ = ["SessionPurger", "SessionStore", "check_sid"]
