"""The SQLite store keeps its WAL bounded however many decisions it writes."""

import sqlite3
import threading
import time

import pytest

from passerelle.greylist.policy import Timing, triplet_key
from passerelle.greylist.store import Triplet, open_store
from passerelle.greylist.store import sqlite as sqlite_store
from passerelle.greylist.store.sqlite import WAL_LIMIT_BYTES

T = Timing(2400, 15 * 3600, 15 * 86400)
T0 = 1_700_000_000.0
WRITES = 4000  # 6,000 commits of a few pages each: ~90 MB of WAL if nothing checkpointed


def write_many(store, n=WRITES, serial=False):
    """``n`` decisions on new triplets (each an INSERT), half of them retried (an UPDATE);
    returns the largest WAL file size seen."""
    biggest = 0
    for i in range(n):
        rcpt = f"r{i}@example.org"
        t = Triplet(triplet_key("192.0.2.0/24", "a@b.example", rcpt), "192.0.2.0/24", "a", rcpt)
        for attempt in range(1 + i % 2):
            if serial:
                with store.lock:
                    store.decide(t, T0 + attempt, T)
            else:
                store.decide(t, T0 + attempt, T)
        biggest = max(biggest, store.wal_bytes())
    return biggest


def no_checkpoints(monkeypatch):
    """A serial store with neither its checkpointer nor its hard bound."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_ROWS_HARD", 10**9)


def test_without_checkpoints_the_wal_would_pass_the_bound(tmp_path, monkeypatch):
    """The workload is big enough for the bound to mean something."""
    no_checkpoints(monkeypatch)
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=True)
    s.migrate()
    try:
        assert write_many(s, serial=True) > 2 * WAL_LIMIT_BYTES, "workload too small"
    finally:
        s.close()


def test_per_thread_store_wal_stays_under_the_bound(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite")
    s.migrate()
    try:
        assert write_many(s) <= WAL_LIMIT_BYTES
    finally:
        s.close()


def test_serial_store_wal_stays_under_the_bound_without_its_checkpointer(tmp_path):
    """The hard bound alone (the checkpointer thread lagging on a loaded host)."""
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=True)
    s.migrate()
    try:
        assert write_many(s, serial=True) <= WAL_LIMIT_BYTES
    finally:
        s.close()


def test_serial_store_wal_stays_under_the_bound_with_its_checkpointer(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=True)
    s.migrate()
    s.start_checkpointer(every=0.002)
    try:
        assert write_many(s, serial=True) <= WAL_LIMIT_BYTES
        assert s.count() == WRITES
    finally:
        s.close()
    assert not [t for t in threading.enumerate() if t.name == "greylist-checkpoint"]


def test_maintain_truncates_a_wal_another_process_let_grow(tmp_path, monkeypatch):
    no_checkpoints(monkeypatch)
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=True)
    s.migrate()
    try:
        write_many(s, serial=True)  # no checkpoint: the WAL grew
        assert s.wal_bytes() > WAL_LIMIT_BYTES
        with s.lock:
            s.maintain()
        assert s.wal_bytes() == 0
    finally:
        s.close()


@pytest.mark.parametrize("serial", [False, True])
def test_decisions_unchanged_by_partial_updates(tmp_path, serial):
    """An update writes only the changed columns; what is read back is the full record."""
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=serial)
    s.migrate()
    try:
        t = Triplet(triplet_key("g", "a@b", "c@d"), "g", "a@b", "c@d")
        assert s.decide(t, T0, T).reason == "new"
        assert s.decide(t, T0 + 10, T).reason == "early"
        out = s.decide(t, T0 + 2500, T)
        assert out.reason == "delayed" and out.delay == 2500
        assert s.decide(t, T0 + 3000, T).reason == "passed"
        rec, expires = s.get_with_expiry(t.key)
        assert (rec.attempts, rec.passes, rec.last_seen, rec.passed_at) == (
            2,
            2,
            T0 + 3000,
            T0 + 2500,
        )
        assert expires == T0 + 3000 + T.pass_ttl
    finally:
        s.close()


def test_serial_store_call_past_its_deadline_is_interrupted(tmp_path):
    """The checkpointer thread is also the watchdog of the store_timeout bound."""
    import sqlite3
    import time

    s = open_store(f"sqlite:///{tmp_path}/g.sqlite", serial=True)
    s.migrate()
    s.start_checkpointer(every=0.01)
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT MAX(i) FROM n"
    try:
        with s.lock:
            s.deadline = time.monotonic() + 0.2
            t = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="interrupt"):
                s.execute(endless).fetchall()
            assert time.monotonic() - t < 2
            s.deadline = 0.0
    finally:
        s.close()


def test_a_connection_opened_while_another_writes_a_fresh_file_waits_for_it(tmp_path):
    # A fresh database file is in rollback-journal mode until the first connection switches
    # it to WAL. Switching needs an exclusive lock, and SQLite answers "database is locked" at
    # once, without its busy handler, while another connection holds the write lock (found
    # on the 3.13 CI: eight milter threads opening their connections on a new file). The
    # store waits for the writer, within its timeout, instead of failing the decision.
    path = tmp_path / "fresh.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (k INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, writer.execute, ("COMMIT",)).start()
    store = sqlite_store.SQLiteStore(str(path), timeout=5.0)
    c = store._connect()
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_a_writer_that_never_lets_go_fails_the_connection_within_the_timeout(tmp_path):
    path = tmp_path / "held.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (k INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    store = sqlite_store.SQLiteStore(str(path), timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store._connect()
    assert 0.4 < time.monotonic() - t0 < 3
