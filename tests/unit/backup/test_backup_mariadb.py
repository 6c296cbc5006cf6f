"""Database parts against a real throwaway mariadbd (tests/protocol/greylist_fixtures.py):
the greylist schema with awkward values, dumped, dropped, restored with every row."""

from __future__ import annotations

from pathlib import Path

import pytest

from passerelle.backup import engine
from passerelle.backup.config import BackupConfig
from passerelle.backup.engine import BackupError, RestoreRequest
from passerelle.backup.mariadb import MariaDB
from passerelle.greylist.store import open_store
from plugins import load

greylist_fixtures = load("tests/protocol/greylist_fixtures.py")
greylist_mariadb = greylist_fixtures.greylist_mariadb

T0 = 1_735_700_000.0


@pytest.fixture
def setup(greylist_mariadb, tmp_path: Path):
    m = greylist_mariadb
    defaults = tmp_path / "my.cnf"
    defaults.write_text(
        f"[client]\nuser=root\npassword={greylist_fixtures.ROOT_PW}\nsocket={m.socket}\n"
    )
    defaults.chmod(0o600)
    gl, bayes = "bk_greylist", "bk_bayes"
    url = m.create_db(gl)
    store = open_store(url)
    rows = [  # binary keys (quotes, backslashes, NULs), odd senders, a NULL passed_at
        (
            bytes([i, 0x27, 0x5C, 0, 0x28, 0x29]) + bytes(10),
            f"192.0.2.{i}",
            f"o'brien+{i}\\),(@example.test".encode(),
            f"rcpt{i}@a.test".encode(),
            i % 2,
            T0,
            T0,
            None if i % 3 else T0,
            T0 + 86400,
            1,
            0,
            1,
        )
        for i in range(120)
    ]
    assert store.bulk_load(rows) == 120
    store.whitelist_add("client", "198.51.100.0/24", "l'ami (backup)", T0)
    store.close()
    m.sql(f"DROP DATABASE IF EXISTS {bayes}")
    m.sql(f"CREATE DATABASE {bayes} CHARACTER SET latin1")
    m.sql(
        f"CREATE TABLE {bayes}.bayes_token"
        " (id INT, token BINARY(5), n INT, PRIMARY KEY (id, token))"
    )
    rows = ",".join(f"(1, 0x{i:010x}, {i})" for i in range(300))
    m.sql(f"INSERT INTO {bayes}.bayes_token VALUES {rows}")
    m.sql(f"CREATE TABLE {bayes}.notes (t TEXT)")
    m.sql(
        f"INSERT INTO {bayes}.notes VALUES ('a),(b'), ('it''s'), ('back\\\\slash'), "
        "('line\nbreak'), (NULL)"
    )
    m.sql(f"CREATE TABLE {bayes}.empty (a INT)")
    cfg = BackupConfig(
        directory=str(tmp_path / "backups"),
        host="db1",
        databases=(gl, bayes),
        mariadb_defaults_file=str(defaults),
    )
    db = MariaDB(defaults_file=str(defaults))
    yield m, cfg, db, gl, bayes
    m.sql(f"DROP DATABASE IF EXISTS {gl}")
    m.sql(f"DROP DATABASE IF EXISTS {bayes}")


def test_dump_drop_restore_keeps_every_row(setup):
    m, cfg, db, gl, bayes = setup
    before = {gl: db.live_rows(gl), bayes: db.live_rows(bayes)}
    assert before[bayes] == {"bayes_token": 300, "notes": 5, "empty": 0}
    manifest = engine.create(cfg, lambda: T0, db)
    assert {p.name: dict(p.rows) for p in manifest.parts} == before
    assert manifest.part(bayes).meta == {"charset": "latin1", "collation": "latin1_swedish_ci"}
    notes_before = m.sql(f"SELECT t FROM {bayes}.notes ORDER BY t")

    m.sql(f"DROP DATABASE {gl}")
    m.sql(f"DROP DATABASE {bayes}")
    _m, lines = engine.restore(cfg, RestoreRequest(), db)
    assert "was missing, created" in lines[0] and "was missing, created" in lines[1], lines
    assert {gl: db.live_rows(gl), bayes: db.live_rows(bayes)} == before
    assert m.sql(f"SELECT t FROM {bayes}.notes ORDER BY t") == notes_before
    assert db.database(bayes) == ("latin1", "latin1_swedish_ci")


def test_a_database_holding_rows_is_replaced_only_when_asked(setup):
    m, cfg, db, _gl, bayes = setup
    engine.create(cfg, lambda: T0, db)
    m.sql(f"DELETE FROM {bayes}.bayes_token WHERE n < 100")
    req = RestoreRequest(parts=(bayes,))
    with pytest.raises(BackupError, match=r"holds 205 row\(s\).*--replace"):
        engine.restore(cfg, req, db)
    assert db.live_rows(bayes)["bayes_token"] == 200  # untouched
    _m, lines = engine.restore(cfg, RestoreRequest(parts=(bayes,), replace=True), db)
    assert "205 row(s) replaced" in lines[0]
    assert db.live_rows(bayes)["bayes_token"] == 300


def test_a_missing_database_or_a_refused_login_is_a_clear_error(setup, tmp_path):
    _m, cfg, db, _gl, _bayes = setup
    missing = BackupConfig(directory=cfg.directory, databases=("no_such_db",))
    with pytest.raises(BackupError, match="database no_such_db does not exist"):
        engine.create(missing, lambda: T0, db)
    bad = tmp_path / "bad.cnf"
    bad.write_text("[client]\nuser=nobody\npassword=x\nsocket=/nonexistent/s\n")
    with pytest.raises(BackupError, match="mariadb exited"):
        engine.create(cfg, lambda: T0, MariaDB(defaults_file=str(bad)))
