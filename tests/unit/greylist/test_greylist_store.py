"""Store tests, run against SQLite and a throwaway MariaDB (greylist_store_url)."""

import multiprocessing
import threading

import pytest

from passerelle.dburl import parse_store_url
from passerelle.greylist.policy import PASSED, PENDING, Timing, triplet_key
from passerelle.greylist.store import SCHEMA_VERSION, StoreError, Triplet, open_store
from passerelle.greylist.store.base import display_bytes

T = Timing(2400, 15 * 3600, 15 * 86400)
T0 = 1_700_000_000.0


def trip(client="192.0.2.0/24", sender="a@b.example", rcpt="c@example.org"):
    return Triplet(triplet_key(client, sender, rcpt), client, sender, rcpt)


@pytest.fixture
def store(greylist_store_url):
    s = open_store(greylist_store_url, 5.0)
    yield s
    s.close()


def test_migrate_is_versioned_and_idempotent(greylist_store_url):
    s = open_store(greylist_store_url)
    assert s.migrate() == (0, SCHEMA_VERSION)
    assert s.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert s.schema_version() == SCHEMA_VERSION
    s.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    s.close()
    s2 = open_store(greylist_store_url)
    with pytest.raises(StoreError, match="newer"):
        s2.migrate()
    s2.close()


def _hold_lock(url: str, name: str):
    """Another session (another gateway migrating) holding the schema lock."""
    import pymysql

    c = pymysql.connect(**parse_store_url(url).pymysql_args(5.0))
    with c.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
        assert cur.fetchall() == ((1,),)
    return c


def test_migration_does_not_run_without_the_schema_lock(greylist_mariadb):
    """Another process holds the lock past the wait: this one stops with a clear error and
    changes nothing (it used to ignore GET_LOCK's 0 and migrate anyway)."""
    url = greylist_mariadb.create_db("gl_lockbusy")
    other = _hold_lock(url, "passerelle_greylist_schema")
    s = open_store(url)
    s.schema_lock_wait = 1
    try:
        with pytest.raises(StoreError, match=r"schema lock .* not obtained within 1 s"):
            s.migrate()
        tables = greylist_mariadb.sql("SHOW TABLES", db="gl_lockbusy")
        assert tables == []
    finally:
        other.close()  # the lock goes with its session
        s.close()
    s = open_store(url)
    assert s.migrate() == (0, SCHEMA_VERSION)
    s.close()


def test_two_gateways_starting_at_once_migrate_once(greylist_mariadb):
    """Both see an empty schema, one migrates under the lock, the other waits, reads the new
    version and has nothing to do: one row per version."""
    url = greylist_mariadb.create_db("gl_lockrace")
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def gateway() -> None:
        s = open_store(url)
        try:
            start.wait()
            results.append(s.migrate())
        except BaseException as exc:
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=gateway) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert sorted(r[1] for r in results) == [SCHEMA_VERSION, SCHEMA_VERSION]
    assert greylist_mariadb.sql("SELECT version FROM schema_version", db="gl_lockrace") == [
        (SCHEMA_VERSION,)
    ]


def test_decide_cycle(store):
    t = trip()
    assert store.decide(t, T0, T).reason == "new"
    assert store.decide(t, T0 + 2399, T).reason == "early"
    out = store.decide(t, T0 + 2400, T)
    assert out.accept and out.delay == 2400
    assert store.decide(t, T0 + 2500, T).reason == "passed"
    rec = store.get(t.key)
    assert rec.state == PASSED and rec.attempts == 2 and rec.passes == 2
    assert rec.first_seen == T0 and rec.passed_at == T0 + 2400 and rec.last_seen == T0 + 2500
    assert store.count() == 1


NASTY = [
    "o'brien@example.org",
    '"quoted\\"name"@example.org',
    "back\\slash@example.org",
    "x'); DROP TABLE greylist; --@example.org",
    "percent%s%%_?@example.org",
    "caf\u00e9@exampl\u00e9.org",
    "raw\udce9\udcff@example.org",  # 8-bit bytes as pymilter hands them (surrogateescape)
    "nul\x00byte@example.org",
    "a" * 1000 + "@example.org",
    "a" * 999 + "b@example.org",
]


def test_nasty_addresses_are_stored_and_matched_safely(store):
    for i, s in enumerate(NASTY):
        t = trip(sender=s, rcpt=NASTY[-1 - i])
        assert store.decide(t, T0, T).reason == "new"
    assert store.count() == len(NASTY)  # no collision, nothing dropped
    for i, s in enumerate(NASTY):
        t = trip(sender=s, rcpt=NASTY[-1 - i])
        assert store.decide(t, T0 + 3000, T).reason == "delayed", s
    assert store.count() == len(NASTY)
    # the display columns are kept for reports, truncated
    assert len(display_bytes(NASTY[8])) == 255


def test_purge_in_batches(store):
    for i in range(25):
        store.decide(trip(sender=f"s{chr(97 + i)}@x.example"), T0, T)
    t = trip(sender="keep@x.example")
    store.decide(t, T0 + 15 * 3600, T)
    store.client_pass("192.0.2.0/24", T0, T0 + 100)
    store.add_stats([(0, "decision", "new", 3)])
    n = store.purge(T0 + 15 * 3600 + 1, batch=7, stats_before=3600)
    assert n == {"greylist": 25, "clients": 1, "stats": 1}
    assert store.count() == 1 and store.get(t.key) is not None


def test_whitelist_table(store):
    assert store.whitelist_add("client", "192.0.2.0/24", "partner's MX", T0)
    assert not store.whitelist_add("client", "192.0.2.0/24", "new comment", T0)
    assert store.whitelist_add("sender", "o'brien@example.org", "", T0)
    assert store.whitelist_list() == [
        ("client", "192.0.2.0/24", "new comment", T0),
        ("sender", "o'brien@example.org", "", T0),
    ]
    assert store.whitelist_remove("client", "192.0.2.0/24")
    assert not store.whitelist_remove("client", "192.0.2.0/24")


def test_client_passes_reset_when_expired(store):
    store.client_pass("g", T0, T0 + 10)
    store.client_pass("g", T0 + 5, T0 + 15)
    assert store.client_status("g") == (2, T0 + 15)
    store.client_pass("g", T0 + 100, T0 + 110)  # previous record expired at T0+15
    assert store.client_status("g") == (1, T0 + 110)


def test_report_queries(store):
    store.decide(trip(sender="never@x.example"), T0, T)
    t = trip(client="198.51.100.0/24", sender="back@x.example")
    store.decide(t, T0, T)
    store.decide(t, T0 + 3600, T)
    store.add_stats([(int(T0 // 3600 * 3600), "whitelisted", "192.0.2.9 (client 192.0.2.9)", 4)])
    assert store.came_back(T0) == [("198.51.100.0/24", 1, 3600.0)]
    assert store.never_retried(T0, T0 + 2400) == [("192.0.2.0/24", 1)]
    assert store.delays(T0) == [3600.0]
    assert store.stats_since(T0, "whitelisted") == [("192.0.2.9 (client 192.0.2.9)", 4)]


def _race_proc(url, n, start, out):
    s = open_store(url, 10.0)
    start.wait()
    res = [s.decide(trip(), T0 + 3000, T).reason for _ in range(n)]
    s.close()
    out.put(res)


def test_concurrent_threads_on_one_triplet(store):
    """Many threads racing on a new triplet: one row, every attempt counted."""
    n_threads, per = 8, 10
    barrier = threading.Barrier(n_threads)
    reasons: list[str] = []
    lock = threading.Lock()

    def worker():
        barrier.wait()
        for _ in range(per):
            r = store.decide(trip(), T0, T).reason
            with lock:
                reasons.append(r)

    ts = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert reasons.count("new") == 1
    assert reasons.count("early") == n_threads * per - 1
    assert store.count() == 1
    rec = store.get(trip().key)
    assert rec.state == PENDING and rec.attempts == n_threads * per
    assert rec.version == n_threads * per - 1


def test_concurrent_processes_pass_exactly_once(store, greylist_store_url):
    """Several processes (gateways) retry the same triplet after the delay: exactly one
    first pass (one X-Delayed), every pass counted, one row."""
    store.decide(trip(), T0, T)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_race_proc, args=(greylist_store_url, 10, start, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    reasons = []
    for _ in procs:
        reasons += out.get(timeout=60)
    for p in procs:
        p.join(30)
    assert reasons.count("delayed") == 1
    assert reasons.count("passed") == 39
    assert store.count() == 1
    assert store.get(trip().key).passes == 40


def test_least_privilege_user_works_on_a_migrated_schema(greylist_mariadb):
    """The gateways' users only have SELECT, INSERT, UPDATE, DELETE (roles/mariadb): once the
    schema exists (migrated by an admin), the store needs no DDL to be used."""
    url = greylist_mariadb.create_db("gl_leastpriv")
    admin = open_store(url)
    admin.migrate()
    admin.close()
    greylist_mariadb.sql("DROP USER IF EXISTS 'gl_milter'@'localhost'")
    greylist_mariadb.sql("CREATE USER 'gl_milter'@'localhost' IDENTIFIED BY 'pw'")
    greylist_mariadb.sql(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON gl_leastpriv.* TO 'gl_milter'@'localhost'"
    )
    s = open_store(
        f"mysql://gl_milter:pw@localhost/gl_leastpriv?unix_socket={greylist_mariadb.socket}"
    )
    try:
        assert s.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
        assert s.decide(trip(), T0, T).reason == "new"
    finally:
        s.close()
