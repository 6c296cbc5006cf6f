"""The connection guard's shared counts in a real throwaway MariaDB (mariadbd on a unix
socket): schema migration, publish/totals across gateways, ageing out, least privilege,
database down, and two gateways' hourly runs deciding on their sum."""

import os
import stat
import time
from datetime import datetime, timezone

import greylist_fixtures
import pytest

from passerelle.cli import main
from passerelle.connwatch.blocks import load_state
from passerelle.connwatch.guard import Deps, load_config, run_once
from passerelle.connwatch.sink import SCHEMA_VERSION, MariaDBSink, SinkError
from passerelle.dburl import parse_store_url

# the MariaDB fixture is shared with the greylist tests (no conftest here)
greylist_mariadb = greylist_fixtures.greylist_mariadb

NOW = datetime(2026, 11, 27, 11, 0, 0, tzinfo=timezone.utc).timestamp()
B = "198.51.100.7"
_n = [0]


@pytest.fixture
def db_url(greylist_mariadb):
    _n[0] += 1
    return greylist_mariadb.create_db(f"cw{os.getpid()}_{_n[0]}")


@pytest.fixture
def sink(db_url):
    s = MariaDBSink(db_url, timeout=5)
    assert s.migrate() == (0, SCHEMA_VERSION)
    yield s
    s.close()


def test_migrate_does_not_run_without_the_schema_lock(db_url, greylist_mariadb):
    """Another gateway holds the lock past the wait: stop with a clear error, no table made
    (GET_LOCK's 0 used to be ignored and the migration ran anyway)."""
    import pymysql

    other = pymysql.connect(**parse_store_url(db_url).pymysql_args(5.0))
    with other.cursor() as cur:
        cur.execute("SELECT GET_LOCK('passerelle_connwatch_schema', 0)")
        assert cur.fetchall() == ((1,),)
    s = MariaDBSink(db_url)
    s.schema_lock_wait = 1
    try:
        with pytest.raises(SinkError, match=r"schema lock .* not obtained within 1 s"):
            s.migrate()
        db = parse_store_url(db_url).database
        assert greylist_mariadb.sql("SHOW TABLES", db=db) == []
    finally:
        other.close()
    assert s.migrate() == (0, SCHEMA_VERSION)
    s.close()


def test_migrate_is_idempotent_and_versioned(db_url, greylist_mariadb):
    s = MariaDBSink(db_url)
    assert s.migrate() == (0, 1)
    assert s.migrate() == (1, 1)
    db = parse_store_url(db_url).database
    cols = greylist_mariadb.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        f"'{db}' AND table_name = 'connwatch_counts' ORDER BY ordinal_position"
    )
    assert [c[0] for c in cols] == ["host", "direction", "ip", "sessions", "window_end"]
    s.close()


def test_totals_are_summed_over_gateways_and_republishing_replaces(sink):
    sink.publish("gw1", "inbound", NOW, {B: 1500, "192.0.2.1": 3})
    sink.publish("gw2", "inbound", NOW + 20, {B: 1200, "2001:db8::1": 7})
    sink.publish("smtpx1", "outbound", NOW, {B: 99})
    assert sink.totals("inbound", NOW, 3600) == {B: 2700, "192.0.2.1": 3, "2001:db8::1": 7}
    assert sink.totals("outbound", NOW, 3600) == {B: 99}
    assert sink.totals("inbound", NOW, 3600, exclude_host="gw1") == {B: 1200, "2001:db8::1": 7}
    assert sink.hosts("inbound", NOW, 3600) == ["gw1", "gw2"]
    # next hour: gw1's new counts replace its old ones (no row left from the last run)
    sink.publish("gw1", "inbound", NOW + 3600, {"192.0.2.2": 1})
    sink.publish("gw2", "inbound", NOW + 3600, {})
    assert sink.totals("inbound", NOW + 3600, 3600) == {"192.0.2.2": 1}


def test_a_gateway_whose_timer_stopped_ages_out(sink):
    sink.publish("gw1", "inbound", NOW, {B: 1000})
    sink.publish("gw2", "inbound", NOW - 3 * 3600, {B: 2000})  # stale for hours
    assert sink.totals("inbound", NOW, 3600) == {B: 1000}
    sink.publish("gw3", "inbound", NOW - 1700, {B: 5})  # within half a window: counted
    assert sink.totals("inbound", NOW, 3600) == {B: 1005}


def test_thousands_of_clients_in_one_publish(sink):
    counts = {f"10.{i // 65536}.{i // 256 % 256}.{i % 256}": 1 + i % 5 for i in range(25000)}
    t0 = time.monotonic()
    sink.publish("gw1", "inbound", NOW, counts)
    took = time.monotonic() - t0
    assert sink.totals("inbound", NOW, 3600) == counts
    assert took < 30, took


def test_least_privilege_user_publishes_but_cannot_create_the_table(db_url, greylist_mariadb):
    db = parse_store_url(db_url).database
    greylist_mariadb.sql("CREATE USER IF NOT EXISTS 'gwuser'@'localhost' IDENTIFIED BY 'pw'")
    greylist_mariadb.sql(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db}`.* TO 'gwuser'@'localhost'"
    )
    url = f"mysql://gwuser:pw@localhost/{db}?unix_socket={greylist_mariadb.socket}"
    user = MariaDBSink(url)
    with pytest.raises(SinkError, match="run `passerelle connwatch migrate`"):
        user.publish("gw1", "inbound", NOW, {B: 1})
    with pytest.raises(SinkError, match="migrate"):
        user.migrate()
    MariaDBSink(db_url).migrate()
    user = MariaDBSink(url)
    user.publish("gw1", "inbound", NOW, {B: 1})
    assert user.totals("inbound", NOW, 3600) == {B: 1}
    user.close()


def test_database_down_is_a_sink_error_quickly(tmp_path):
    s = MariaDBSink(f"mysql://u:secret@localhost/db?unix_socket={tmp_path}/none", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(SinkError) as exc:
        s.publish("gw1", "inbound", NOW, {B: 1})
    assert time.monotonic() - t0 < 5
    assert "secret" not in str(exc.value) and "publish" in str(exc.value)


# -- two gateways' hourly runs ----------------------------------------------------------------
def _session_lines(ip, n, host):
    out = []
    for i in range(n):
        ts = datetime.fromtimestamp(NOW - 3500 + i * 3400 / n, timezone.utc)
        stamp = f"{ts:%b} {ts.day:>2} {ts:%H:%M:%S}"
        out.append(
            f"{stamp} {host} sm-mta[{1000 + i}]: 4ARB{i:06d}: from=<a@example.net>, size=1, "
            f"class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=mx.example.net [{ip}]"
        )
    return "\n".join(out) + "\n"


def _gateway(tmp_path, host, url, sessions):
    d = tmp_path / host
    d.mkdir()
    log = d / "maillog"
    log.write_text(_session_lines(B, sessions, host))
    os.utime(log, (NOW, NOW))
    mm = d / "makemap"
    mm.write_text('#!/bin/sh\ncat > "$2.db"\n')
    mm.chmod(mm.stat().st_mode | stat.S_IXUSR)
    cfg = d / "connwatch.toml"
    cfg.write_text(
        "[connwatch]\n"
        f'logs = ["{log}"]\nhostname = "{host}"\n'
        f'state = "{d}/state.json"\nmap = "{d}/connwatch"\nmakemap = "{mm}"\n'
        f'reload_command = ["/bin/true"]\nstatus_file = "{d}/status"\n'
        f'sink = "mariadb"\nsink_url = "{url}"\nsink_timeout = "3s"\n'
    )
    return cfg


def test_two_gateways_each_under_the_threshold_block_on_their_sum(tmp_path, db_url, capsys):
    cfg1 = _gateway(tmp_path, "gw1", db_url, 1400)
    cfg2 = _gateway(tmp_path, "gw2", db_url, 1300)
    assert main(["connwatch", "check-config", str(cfg1)]) == 0
    assert main(["connwatch", "migrate", "--config", str(cfg1)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "schema version 0 -> 1"
    c1, c2 = load_config(cfg1), load_config(cfg2)
    s1, s2 = MariaDBSink(c1.sink_url), MariaDBSink(c2.sink_url)
    first = run_once(c1, NOW, Deps(sink=s1, tz=timezone.utc))
    assert first.counts == {B: 1400} and not first.plan.blocks  # gw2 not counted yet
    second = run_once(c2, NOW + 30, Deps(sink=s2, tz=timezone.utc))
    assert second.counts == {B: 2700}
    assert B in load_state(c2.state)
    assert second.status.startswith("CRITICAL - inbound gw2: blocked 198.51.100.7 (2700/1h)")
    # gw1's next run sees the same sum and blocks too
    again = run_once(c1, NOW + 60, Deps(sink=s1, tz=timezone.utc))
    assert again.counts == {B: 2700} and B in load_state(c1.state)
    s1.close()
    s2.close()
