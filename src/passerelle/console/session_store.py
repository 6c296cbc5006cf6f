"""The server side of console sessions (issue 17): the sessions logged out before they
expired, and the LDAP sessions' last check of their groups.

Sessions are signed tokens (``auth.Sessions``) that nothing stores; a token copied before
its owner logged out would stay valid until it expires (``session_lifetime``, 8 h). So
``/logout`` writes the session id and its expiry to ``console_session_revoked``, and every
request of a session looks its id up there (one primary-key lookup): a revoked session is
logged out. A row is useless once its session expired (the token is refused anyway): the
console purges those (``SessionPurger``, run with the trace purge from the pages served).

An LDAP session's role comes from the user's groups. They are read at login, and again when
the session's last check is older than the directory's ``recheck`` (``[ldap] recheck``, 5
minutes): ``recheck`` below. What the last check said is kept in ``console_ldap_session``
(sid -> account, role, checked_at, tried_at, expires), a sibling of the revocation table in
the same set rather than columns of it: a revoked row is written once and only looked up,
this one is updated every interval by the requests of a live session, and the revocation
lookup of every session (local ones too) stays one primary-key lookup of a table holding
only logged-out ids. An LDAP session's request adds one primary-key lookup of its own row.
Its row is made at its first request (checked at login: the token's role, ``checked_at``
its issue time), so a token issued before this table existed is checked at its next request
once its login is older than the interval. Outcomes
of a check:

- the same group: carry on (``checked_at`` now);
- another group (admin -> viewer): the new role applies to this request on;
- in neither group, or the entry gone: the session ends (revoked), audited
  ``ldap session ended: no longer in a console group``;
- the directory does not answer: the last known role is kept for at most one more interval
  (the directory tried again at most every ``RETRY`` seconds, so a dead server does not
  slow every page by its timeout), then the session ends (fail closed); logged.

The table set has its own version table (``console_session_schema_version``), created or
upgraded by the console at start like the others (``schema.ConsoleTable``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass

from passerelle.console import schema
from passerelle.console.auth import ROLES, Directory, DirectoryUnavailable, Session
from passerelle.console.purge import PeriodicPurge

log = logging.getLogger("passerelle.console.sessions")

VERSION_TABLE = "console_session_schema_version"
SCHEMA_LOCK = "passerelle_console_session_schema"
PURGE_EVERY = 600.0  # s between two purges
SID = re.compile(r"[0-9a-f]{32}")  # auth.Sessions: secrets.token_hex(16)
RETRY = 30.0  # s between two tries of a directory that did not answer
NO_GROUP = "ldap session ended: no longer in a console group"

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_session_revoked ("
        " sid TEXT NOT NULL PRIMARY KEY, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS console_session_revoked_expires"
        " ON console_session_revoked (expires)",
    ],
    2: [
        "CREATE TABLE IF NOT EXISTS console_ldap_session ("
        " sid TEXT NOT NULL PRIMARY KEY, account TEXT NOT NULL, role TEXT NOT NULL,"
        " checked_at REAL NOT NULL, tried_at REAL NOT NULL, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS console_ldap_session_expires ON console_ldap_session (expires)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_session_revoked ("
        " sid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY, expires DOUBLE NOT NULL,"
        " KEY console_session_revoked_expires (expires)) ENGINE=InnoDB",
    ],
    2: [
        "CREATE TABLE IF NOT EXISTS console_ldap_session ("
        " sid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
        " account VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,"
        " role VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " checked_at DOUBLE NOT NULL, tried_at DOUBLE NOT NULL, expires DOUBLE NOT NULL,"
        " KEY console_ldap_session_expires (expires)) ENGINE=InnoDB",
    ],
}


@dataclass(frozen=True)
class LdapCheck:
    """What the last check of an LDAP session's groups said, and when."""

    role: str
    checked_at: float  # the directory last answered (the login, at first)
    tried_at: float  # the directory last asked


@dataclass(frozen=True)
class Verdict:
    """What ``recheck`` decided for one request of an LDAP session."""

    role: str | None  # None: the session ended
    ended: str = ""  # why it ended (for the audit log)
    was: str = ""  # the role before, when it changed or the session ended


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
        n = 0
        for table in ("console_session_revoked", "console_ldap_session"):
            cur = self._execute(f"DELETE FROM {table} WHERE expires <= ?", (now,))
            n += max(0, int(cur.rowcount or 0))
        return n

    # -- LDAP sessions -----------------------------------------------------------------------
    def ldap_state(self, session: Session) -> LdapCheck:
        """The last check of an LDAP session (one primary-key lookup); made at its first
        request from the token (its role at login, checked when it was issued)."""
        row = self._execute(
            "SELECT role, checked_at, tried_at FROM console_ldap_session WHERE sid = ?",
            (session.sid,),
        ).fetchone()
        if row is not None:
            return LdapCheck(str(row[0]), float(row[1]), float(row[2]))
        with contextlib.suppress(*self._integrity):  # two first requests racing: same row
            self._execute(
                "INSERT INTO console_ldap_session"
                " (sid, account, role, checked_at, tried_at, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    check_sid(session.sid),
                    session.account,
                    session.role,
                    session.issued,
                    session.issued,
                    session.expires,
                ),
            )
        return LdapCheck(session.role, session.issued, session.issued)

    def ldap_checked(self, sid: str, role: str, now: float) -> None:
        self._execute(
            "UPDATE console_ldap_session SET role = ?, checked_at = ?, tried_at = ? WHERE sid = ?",
            (role, now, now, sid),
        )

    def ldap_tried(self, sid: str, now: float) -> None:
        self._execute("UPDATE console_ldap_session SET tried_at = ? WHERE sid = ?", (now, sid))


def recheck(store: SessionStore, directory: Directory, session: Session, now: float) -> Verdict:
    """The role of one request of an LDAP session (see the module's docstring); an ended
    session is revoked here, the caller audits it."""
    state = store.ldap_state(session)
    interval = directory.recheck
    age = now - state.checked_at
    if age < interval:
        return Verdict(state.role)
    grace_over = age >= 2 * interval
    if not grace_over and now - state.tried_at < min(RETRY, interval):
        return Verdict(state.role)  # the directory failed moments ago: not asked again yet
    try:
        user = directory.role_of(session.account)
    except DirectoryUnavailable as exc:
        if grace_over:
            why = f"ldap session ended: directory unavailable, groups last read {int(age)} s ago"
            log.warning("console: %s (%s): %s", why, session.account, exc)
            store.revoke(session.sid, session.expires)
            return Verdict(None, why, was=state.role)
        store.ldap_tried(session.sid, now)
        log.warning(
            "console: LDAP session %r: directory unavailable (%s): role %s kept for %d s more",
            session.account,
            exc,
            state.role,
            int(2 * interval - age),
        )
        return Verdict(state.role)
    if user is None or user.role not in ROLES:
        log.info("console: LDAP session %r: %s", session.account, NO_GROUP)
        store.revoke(session.sid, session.expires)
        return Verdict(None, NO_GROUP, was=state.role)
    store.ldap_checked(session.sid, user.role, now)
    if user.role != state.role:
        log.info("console: LDAP session %r: role %s -> %s", session.account, state.role, user.role)
        return Verdict(user.role, was=state.role)
    return Verdict(user.role)


class SessionPurger(PeriodicPurge):
    """The console's purge of expired session rows, run from the pages served
    (``purge.PeriodicPurge``, as the trace's)."""

    def __init__(self) -> None:
        super().__init__(
            "console sessions", lambda conn, now: SessionStore(conn).purge(now), PURGE_EVERY
        )


__all__ = ["LdapCheck", "SessionPurger", "SessionStore", "Verdict", "check_sid", "recheck"]
