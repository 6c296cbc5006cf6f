"""The console's request table: filed, claimed once, completed once, bad input refused."""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading

import pytest

from passerelle.console.requests import (
    SCHEMA_VERSION,
    SQLITE,
    RequestError,
    RequestTable,
    SchemaError,
    dialect_of,
    parse_request_id,
)
from passerelle.dburl import parse_store_url

T0 = 1_700_000_000.0
MSG = "20261202T101500-0123456789ab"
MSG2 = "20261202T101501-ba9876543210"


_OPEN: list[sqlite3.Connection] = []


def connect(path: str = ":memory:") -> sqlite3.Connection:
    c = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA busy_timeout=10000")
    _OPEN.append(c)
    return c


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def table():
    c = connect()
    t = RequestTable(c, claim_timeout=300.0)
    t.migrate()
    return t


def rows(t: RequestTable) -> int:
    cur = t.conn.cursor()
    cur.execute("SELECT COUNT(*) FROM console_requests")
    return int(cur.fetchone()[0])


_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "mariadb"])
def db(request, tmp_path):
    """Connections to one fresh database: a SQLite file, or one on a throwaway MariaDB."""
    if request.param == "sqlite":
        path = str(tmp_path / "console.db")
        return lambda: connect(path)
    import pymysql

    m = request.getfixturevalue("greylist_mariadb")
    name = f"console{os.getpid()}_{next(_databases)}"
    m.sql(f"CREATE DATABASE `{name}`")

    url = parse_store_url(m.url(name))

    def connect_mariadb():
        c = pymysql.connect(**url.pymysql_args(10.0))  # autocommit, as the stores connect
        _OPEN.append(c)
        return c

    return connect_mariadb


def test_migrate_is_versioned_and_idempotent():
    c = connect()
    t = RequestTable(c)
    assert t.dialect is SQLITE and dialect_of(c) is SQLITE
    assert t.schema_version() == 0
    assert t.migrate() == (0, SCHEMA_VERSION)
    assert t.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert t.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused():
    c = connect()
    c.execute("CREATE TABLE console_schema_version (version INTEGER NOT NULL)")
    c.execute("INSERT INTO console_schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError, match="newer than this passerelle"):
        RequestTable(c).migrate()


def test_sqlite_connection_must_leave_transactions_to_the_table():
    c = sqlite3.connect(":memory:")
    try:
        with pytest.raises(ValueError, match="isolation_level=None"):
            RequestTable(c)
    finally:
        c.close()


def test_unknown_connection_type_is_refused():
    with pytest.raises(TypeError, match="dialect"):
        dialect_of(object())


def test_submit_claim_complete_release(table):
    rid = table.submit("release", MSG, "gw1", "alice", T0)
    req = table.get(rid)
    assert (req.kind, req.target, req.gateway, req.status) == ("release", MSG, "gw1", "pending")
    assert (req.requested_by, req.requested_at, req.attempts) == ("alice", T0, 0)
    assert table.target_state(MSG) == ("held", rid)

    got = table.claim("gw1", T0 + 5)
    assert got is not None and got.id == rid
    assert (got.status, got.claimed_by, got.claimed_at, got.attempts) == (
        "claimed",
        "gw1",
        T0 + 5,
        1,
    )
    assert table.claim("gw1", T0 + 6) is None  # taken: nothing else to do

    done = table.complete(rid, "gw1", True, "released to 2 recipients", T0 + 7)
    assert (done.status, done.ok, done.result, done.finished_at) == (
        "done",
        True,
        "released to 2 recipients",
        T0 + 7,
    )
    assert table.target_state(MSG) == ("released", 0)


def test_claim_takes_oldest_for_this_gateway_or_any(table):
    other = table.submit("rescan", MSG, "gw2", "alice", T0)
    mine = table.submit("outbreak_on", None, "gw1", "alice", T0 + 1)
    anyone = table.submit("delete", MSG2, None, "alice", T0 + 2)
    first = table.claim("gw1", T0 + 3)
    second = table.claim("gw1", T0 + 3)
    assert first is not None and first.id == mine
    assert second is not None and second.id == anyone
    assert table.claim("gw1", T0 + 3) is None
    got = table.claim("gw2", T0 + 3)
    assert got is not None and got.id == other


def test_second_release_of_the_same_message_is_refused(table):
    rid = table.submit("release", MSG, "gw1", "alice", T0)
    with pytest.raises(RequestError, match="already has an open request"):
        table.submit("release", MSG, "gw1", "bob", T0 + 1)
    assert rows(table) == 1
    table.claim("gw1", T0 + 2)
    table.complete(rid, "gw1", True, "ok", T0 + 3)
    with pytest.raises(RequestError, match="already released"):
        table.submit("release", MSG, "gw1", "bob", T0 + 4)
    with pytest.raises(RequestError, match="already released"):
        table.submit("rescan", MSG, "gw1", "bob", T0 + 4)
    assert rows(table) == 1
    # a released message can still be deleted from the quarantine
    table.submit("delete", MSG, "gw1", "bob", T0 + 5)
    assert rows(table) == 2


def test_request_on_a_deleted_message_is_refused(table):
    rid = table.submit("delete", MSG, "gw1", "alice", T0)
    table.claim("gw1", T0 + 1)
    table.complete(rid, "gw1", True, "deleted", T0 + 2)
    assert table.target_state(MSG) == ("deleted", 0)
    for kind in ("release", "rescan", "delete"):
        with pytest.raises(RequestError, match="was deleted"):
            table.submit(kind, MSG, "gw1", "bob", T0 + 3)
    assert rows(table) == 1


def test_message_purged_outside_a_request_is_refused(table):
    table.mark_target(MSG, "deleted", T0)
    with pytest.raises(RequestError, match="was deleted"):
        table.submit("release", MSG, "gw1", "alice", T0 + 1)
    assert rows(table) == 0
    with pytest.raises(RequestError, match="unknown message state"):
        table.mark_target(MSG2, "gone", T0)


def test_failed_release_can_be_asked_again(table):
    rid = table.submit("release", MSG, "gw1", "alice", T0)
    table.claim("gw1", T0 + 1)
    done = table.complete(rid, "gw1", False, "sendmail exited 75", T0 + 2)
    assert (done.status, done.ok) == ("failed", False)
    assert table.target_state(MSG) == ("held", 0)
    again = table.submit("release", MSG, "gw1", "alice", T0 + 3)
    assert again != rid


def test_rescan_reports_what_became_of_the_message(table):
    rid = table.submit("rescan", MSG, "gw1", "alice", T0)
    table.claim("gw1", T0 + 1)
    table.complete(rid, "gw1", True, "clean: released", T0 + 2, new_state="released")
    assert table.target_state(MSG) == ("released", 0)
    rid2 = table.submit("rescan", MSG2, "gw1", "alice", T0)
    table.claim("gw1", T0 + 1)
    with pytest.raises(RequestError, match="unknown message state"):
        table.complete(rid2, "gw1", True, "x", T0 + 2, new_state="vanished")
    table.complete(rid2, "gw1", True, "still infected", T0 + 2)
    assert table.target_state(MSG2) == ("held", 0)


@pytest.mark.parametrize(
    ("kind", "target", "gateway", "by", "message"),
    [
        ("explode", MSG, "gw1", "alice", "unknown request kind"),
        ("release", "../../etc/passwd", "gw1", "alice", "malformed quarantined message id"),
        ("release", MSG + "\n", "gw1", "alice", "malformed quarantined message id"),
        ("release", None, "gw1", "alice", "malformed quarantined message id"),
        ("release", 12345, "gw1", "alice", "malformed quarantined message id"),
        ("delete", MSG, "gw1; DROP TABLE", "alice", "malformed gateway name"),
        ("delete", MSG, "", "alice", "malformed gateway name"),
        ("outbreak_on", MSG, "gw1", "alice", "has no target"),
        ("rescan", MSG, "gw1", "  ", "needs the account"),
    ],
)
def test_malformed_submissions_write_nothing(table, kind, target, gateway, by, message):
    with pytest.raises(RequestError, match=message):
        table.submit(kind, target, gateway, by, T0)
    assert rows(table) == 0
    assert table.conn.execute("SELECT COUNT(*) FROM console_targets").fetchone()[0] == 0


def test_request_error_is_a_value_error():
    assert issubclass(RequestError, ValueError)


@pytest.mark.parametrize("forged", ["999", 999, "1 OR 1=1", "-1", 0, "abc", "", None, True, 1.5])
def test_forged_request_id_changes_nothing(table, forged):
    rid = table.submit("release", MSG, "gw1", "alice", T0)
    table.claim("gw1", T0 + 1)
    before = table.get(rid)
    with pytest.raises(RequestError, match="request"):
        table.complete(forged, "gw1", True, "ok", T0 + 2)
    with pytest.raises(RequestError, match="request"):
        table.get(forged)
    assert table.get(rid) == before
    assert table.target_state(MSG) == ("held", rid)


def test_parse_request_id():
    assert parse_request_id("42") == 42
    assert parse_request_id(7) == 7
    for bad in ("4 2", "0x10", "+3", "9" * 19, "٣"):
        with pytest.raises(RequestError):
            parse_request_id(bad)


def test_complete_only_once_and_only_by_the_claimer(table):
    rid = table.submit("release", MSG, "gw1", "alice", T0)
    with pytest.raises(RequestError, match="was not claimed"):
        table.complete(rid, "gw1", True, "ok", T0 + 1)
    table.claim("gw1", T0 + 1)
    with pytest.raises(RequestError, match="claimed by another gateway"):
        table.complete(rid, "gw2", True, "ok", T0 + 2)
    assert table.get(rid).status == "claimed"
    table.complete(rid, "gw1", True, "first", T0 + 3)
    with pytest.raises(RequestError, match="already done"):
        table.complete(rid, "gw1", False, "second", T0 + 4)
    req = table.get(rid)
    assert (req.status, req.ok, req.result, req.finished_at) == ("done", True, "first", T0 + 3)
    assert table.target_state(MSG) == ("released", 0)


def test_stale_claim_is_taken_over_and_the_late_result_refused(table):
    rid = table.submit("rescan", MSG, None, "alice", T0)
    assert table.claim("gw1", T0).id == rid
    assert table.claim("gw2", T0 + 299) is None  # not stale yet
    taken = table.claim("gw2", T0 + 301)
    assert taken is not None and taken.id == rid
    assert (taken.claimed_by, taken.attempts) == ("gw2", 2)
    with pytest.raises(RequestError, match="claimed by another gateway"):
        table.complete(rid, "gw1", True, "late", T0 + 302)
    assert table.complete(rid, "gw2", True, "clean", T0 + 303).result == "clean"


def test_result_text_is_bounded(table):
    rid = table.submit("outbreak_off", "", "gw1", "alice", T0)
    table.claim("gw1", T0)
    assert len(table.complete(rid, "gw1", True, "x" * 10_000, T0).result) == 2000


def test_list_newest_first_and_filters(table):
    a = table.submit("release", MSG, "gw1", "alice", T0)
    b = table.submit("rescan", MSG2, "gw2", "bob", T0 + 1)
    c = table.submit_fleet("outbreak_on", ["gw1", "gw2"], "carol", T0 + 2)
    assert [r.id for r in table.list()] == [*reversed(c), b, a]
    assert [r.id for r in table.list(gateway="gw2")] == [c[1], b]
    assert [r.id for r in table.list(target=MSG)] == [a]
    assert [r.id for r in table.list(limit=1)] == [c[1]]
    table.claim("gw1", T0 + 3)
    assert [r.id for r in table.list(status="claimed")] == [a]
    with pytest.raises(RequestError, match="unknown status"):
        table.list(status="x' OR '1")
    with pytest.raises(RequestError, match="limit"):
        table.list(limit=0)


def test_submit_fleet_validates_before_writing(table):
    with pytest.raises(RequestError, match="malformed gateway"):
        table.submit_fleet("outbreak_on", ["gw1", "bad name"], "alice", T0)
    with pytest.raises(RequestError, match="only outbreak_on and outbreak_off"):
        table.submit_fleet("release", ["gw1"], "alice", T0)
    with pytest.raises(RequestError, match="no gateway"):
        table.submit_fleet("outbreak_off", [], "alice", T0)
    assert rows(table) == 0


def test_placeholders_are_rewritten_for_mysql():
    from passerelle.console.requests import MYSQL

    t = RequestTable.__new__(RequestTable)
    t.dialect = MYSQL
    assert t._q("SELECT 1 FROM t WHERE a = ? AND b = ?") == (
        "SELECT 1 FROM t WHERE a = %s AND b = %s"
    )


def test_lifecycle_and_refusals_on_each_database(db):
    t = RequestTable(db())
    assert t.migrate() == (0, SCHEMA_VERSION)
    assert t.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    rid = t.submit("release", MSG, "gw1", "alice", T0)
    with pytest.raises(RequestError, match="already has an open request"):
        t.submit("release", MSG, "gw1", "bob", T0 + 1)
    got = t.claim("gw1", T0 + 2)
    assert (got.id, got.status, got.claimed_by, got.attempts) == (rid, "claimed", "gw1", 1)
    assert t.claim("gw1", T0 + 3) is None
    done = t.complete(rid, "gw1", True, "released", T0 + 4)
    assert (done.status, done.ok, done.result) == ("done", True, "released")
    with pytest.raises(RequestError, match="already done"):
        t.complete(rid, "gw1", True, "again", T0 + 5)
    with pytest.raises(RequestError, match="no request #999"):
        t.complete(999, "gw1", True, "forged", T0 + 5)
    with pytest.raises(RequestError, match="already released"):
        t.submit("release", MSG, "gw1", "bob", T0 + 6)
    t.mark_target(MSG2, "deleted", T0 + 7)
    with pytest.raises(RequestError, match="was deleted"):
        t.submit("rescan", MSG2, None, "bob", T0 + 8)
    assert rows(t) == 1
    assert t.target_state(MSG) == ("released", 0)


# -- two connections racing on one database -------------------------------------------------


def racing_tables(db, n):
    first = RequestTable(db())
    first.migrate()
    return first, [RequestTable(db()) for _ in range(n)]


def test_two_gateways_polling_at_once_never_share_a_request(db):
    setup, (t1, t2) = racing_tables(db, 2)
    ids = [setup.submit("outbreak_on", None, None, "alice", T0 + i) for i in range(60)]
    got: dict[str, list[int]] = {"gw1": [], "gw2": []}
    start = threading.Barrier(2)

    def poll(t: RequestTable, gw: str) -> None:
        start.wait()
        while (req := t.claim(gw, T0 + 100)) is not None:
            got[gw].append(req.id)
            t.complete(req.id, gw, True, "done", T0 + 101)

    threads = [threading.Thread(target=poll, args=a) for a in ((t1, "gw1"), (t2, "gw2"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(got["gw1"] + got["gw2"]) == ids  # each claimed once, none lost
    assert not set(got["gw1"]) & set(got["gw2"])
    assert all(r.status == "done" and r.attempts == 1 for r in setup.list(limit=100))


def test_done_once_race(db):
    """Two workers file a result for one request at once: one is filed, one refused."""
    setup, (t1, t2) = racing_tables(db, 2)
    for i in range(20):
        msg = f"20261202T1015{i:02d}-0123456789ab"
        rid = setup.submit("release", msg, "gw1", "alice", T0)
        assert setup.claim("gw1", T0).id == rid
        outcomes: list[str] = []
        start = threading.Barrier(2)

        def finish(t, text, rid=rid, out=outcomes, start=start):
            start.wait()
            try:
                t.complete(rid, "gw1", True, text, T0 + 1)
                out.append(text)
            except RequestError:
                out.append("refused")

        threads = [
            threading.Thread(target=finish, args=(t, f"w{k}")) for k, t in enumerate((t1, t2))
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(outcomes)[0] == "refused" and len(outcomes) == 2
        winner = next(o for o in outcomes if o != "refused")
        assert setup.get(rid).result == winner
        assert setup.target_state(msg) == ("released", 0)


def test_two_consoles_releasing_one_message_at_once_file_one_request(db):
    setup, (t1, t2) = racing_tables(db, 2)
    for i in range(20):
        msg = f"20261202T1016{i:02d}-0123456789ab"
        outcomes: list[object] = []
        start = threading.Barrier(2)

        def release(t, msg=msg, out=outcomes, start=start):
            start.wait()
            try:
                out.append(t.submit("release", msg, "gw1", "alice", T0))
            except RequestError as exc:
                out.append(str(exc))

        threads = [threading.Thread(target=release, args=(t,)) for t in (t1, t2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        ids = [o for o in outcomes if isinstance(o, int)]
        assert len(ids) == 1, outcomes
        assert setup.target_state(msg) == ("held", ids[0])
    assert rows(setup) == 20
