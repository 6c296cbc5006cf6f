"""Server-side session state (issue 17): a logged-out token is refused afterwards, expired
revocations are purged, and the table set is added to an existing console database."""

from __future__ import annotations

import pytest

from passerelle.console.audit import AuditLog
from passerelle.console.auth import Accounts, hash_password
from passerelle.console.session_store import SessionPurger, SessionStore
from passerelle.console.web import SESSION_COOKIE, make_app
from plugins import load

Client = load("tests/unit/console/webclient.py").Client
SECRET = b"s" * 40
T0 = 1_764_633_600.0
HOUR = 3600.0
SID1, SID2 = "a" * 32, "b" * 32


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def accounts() -> Accounts:
    return Accounts.from_inventory(
        [{"name": "alice", "role": "admin", "password_hash": hash_password("pw-a", 10_000)}]
    )


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app(db, clock):
    return make_app(db, accounts(), SECRET, clock)


def rows(db) -> int:
    return int(db().execute("SELECT COUNT(*) FROM console_session_revoked").fetchone()[0])


# -- the table ---------------------------------------------------------------------------------


def test_revoke_lookup_and_purge_on_each_database(conn):
    s = SessionStore(conn)
    s.migrate()
    s.revoke(SID1, T0 + HOUR)
    s.revoke(SID1, T0 + HOUR)  # twice is once
    s.revoke(SID2, T0 + 8 * HOUR)
    assert s.is_revoked(SID1) and s.is_revoked(SID2) and not s.is_revoked("c" * 32)
    assert s.purge(T0 + HOUR - 1) == 0
    assert s.purge(T0 + HOUR) == 1
    assert not s.is_revoked(SID1) and s.is_revoked(SID2)


def test_a_session_id_is_checked():
    import sqlite3

    s = SessionStore(sqlite3.connect(":memory:", isolation_level=None))
    s.migrate()
    with pytest.raises(ValueError):
        s.revoke("' OR 1=1 --", T0)


def test_the_table_set_is_added_to_an_existing_database(conn):
    # a console database from before (its other tables, an audit row), then this console
    audit = AuditLog(conn)
    audit.migrate()
    audit.append("alice", "admin", "login", "", True, "", "192.0.2.1", T0)
    s = SessionStore(conn)
    assert s.migrate() == (0, max(s.SQLITE_MIGRATIONS))
    assert s.migrate() == (max(s.SQLITE_MIGRATIONS),) * 2  # up to date: no DDL
    s.revoke(SID1, T0 + HOUR)
    assert s.is_revoked(SID1)
    assert [e.action for e in audit.list(10)[0]] == ["login"]


def test_the_console_creates_the_table_at_start(db):
    AuditLog(db()).migrate()  # an existing console database
    make_app(db, accounts(), SECRET, Clock())
    assert rows(db) == 0


def test_the_purge_runs_every_ten_minutes_and_a_failure_is_only_logged(caplog):
    import sqlite3

    c = sqlite3.connect(":memory:", isolation_level=None)
    s = SessionStore(c)
    s.migrate()
    s.revoke(SID1, T0)
    purge = SessionPurger()
    assert purge(c, T0 - 1) == 0 and purge(c, T0 + 1) == 0  # not again before 10 minutes
    assert purge(c, T0 + 600) == 1
    c.execute("DROP TABLE console_session_revoked")
    assert purge(c, T0 + 1200) == 0
    assert "purge failed" in caplog.text


# -- logout ------------------------------------------------------------------------------------


def logged_in(app) -> Client:
    c = Client(app)
    assert c.login("alice", "pw-a").status == 303
    return c


def test_a_logged_out_token_is_refused_afterwards(app, db, clock):
    c = logged_in(app)
    token = c.cookies[SESSION_COOKIE]
    copy = Client(app, client="198.51.100.7", cookies={SESSION_COOKIE: token})
    assert copy.get("/quarantine").status == 200  # the copy works while logged in
    csrf = copy.get("/quarantine").csrf()
    clock.t += 60
    r = c.post("/logout", {"csrf": c.get("/quarantine").csrf()})
    assert r.status == 303 and SESSION_COOKIE not in c.cookies
    # the copy of the token is logged out, though it has 8 h to run
    r = copy.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    copy.cookies[SESSION_COOKIE] = token  # kept by a client that ignores the clearing
    assert copy.post("/logout", {"csrf": csrf}).status == 403
    assert rows(db) == 1
    actions = [(e.action, e.who) for e in AuditLog(db()).list(10)[0]]
    assert actions[0] == ("logout", "alice")
    # logging in again is a new session
    assert logged_in(app).get("/quarantine").status == 200


# what the login sets, emptied: the browser drops it
CLEARED = "passerelle_console=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"


def test_a_logged_out_cookie_sent_again_is_cleared(app, clock):
    c = logged_in(app)
    token = c.cookies[SESSION_COOKIE]
    r = c.post("/logout", {"csrf": c.get("/quarantine").csrf()})
    assert r.cookie(SESSION_COOKIE) == CLEARED
    clock.t += 60
    old = Client(app, cookies={SESSION_COOKIE: token})  # a browser that kept it
    r = old.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == [CLEARED]
    assert old.get("/quarantine").set_cookies() == []  # gone: not cleared again
    r = Client(app, cookies={SESSION_COOKIE: token}).post("/rules/add", {"name": "x"})
    assert r.status == 403 and r.set_cookies() == [CLEARED]


def test_expired_revocations_are_purged_by_the_pages(app, db, clock):
    c = logged_in(app)
    c.post("/logout", {"csrf": c.get("/quarantine").csrf()})  # that GET purged nothing
    assert rows(db) == 1
    clock.t += 4 * HOUR
    c2 = logged_in(app)
    assert c2.get("/quarantine").status == 200
    assert rows(db) == 1  # not expired yet
    clock.t += 4 * HOUR + 1  # the first session's token expired
    c3 = logged_in(app)
    assert c3.get("/quarantine").status == 200
    assert rows(db) == 0


def test_a_database_at_version_1_gains_the_ldap_session_table(conn):
    from passerelle.console import schema
    from passerelle.console.session_store import MYSQL_MIGRATIONS, SQLITE_MIGRATIONS, VERSION_TABLE

    s = SessionStore(conn)
    first = {1: (MYSQL_MIGRATIONS if s.mysql else SQLITE_MIGRATIONS)[1]}
    assert schema.migrate(conn, s.mysql, VERSION_TABLE, s.SCHEMA_LOCK, first, s.WHAT) == (0, 1)
    s.revoke(SID1, T0 + HOUR)  # a logout under the first version
    assert s.migrate() == (1, 2)
    assert s.is_revoked(SID1)
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM console_ldap_session")
    assert cur.fetchone()[0] == 0


def test_ldap_session_rows_on_each_database(conn):
    from passerelle.console.auth import Session

    s = SessionStore(conn)
    s.migrate()
    session = Session("lea", T0, T0 + HOUR, SID1, "ldap", "admin")
    first = s.ldap_state(session)  # made at the first request: checked at login
    assert (first.role, first.checked_at, first.tried_at) == ("admin", T0, T0)
    s.ldap_tried(SID1, T0 + 400)
    assert s.ldap_state(session).tried_at == T0 + 400
    s.ldap_checked(SID1, "viewer", T0 + 500)
    assert s.ldap_state(session) == type(first)("viewer", T0 + 500, T0 + 500)
    assert s.purge(T0 + HOUR) == 1
    assert s.ldap_state(session).role == "admin"  # gone: made again from the token
