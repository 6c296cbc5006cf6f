"""The console's Nagios check (``passerelle check console``): the pure judgement, and the whole
check against a real console (its HTTP server on 127.0.0.1, its SQLite database)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import pytest

from passerelle import cli
from passerelle.console.gateway_status import GatewayStatus, GatewayStatusTable
from passerelle.console.health import Observed, console_result
from passerelle.console.requests import RequestTable
from passerelle.console.server import build_app, load_config, make_http_server
from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN, WARNING
from plugins import load

_server = load("tests/unit/console/test_server.py")  # its config files and their writer
files = _server.files
write_config = _server.write_config
NOW = 1_800_000_000.0


def test_all_fresh_is_ok():
    r = console_result(Observed(200, [("gw1", NOW - 30), ("gw2", NOW - 70)]), NOW)
    assert r.state == OK, r.text
    assert "2 gateway(s) reporting" in r.text
    assert r.perf == "gateways=2 fresh=2 open_requests=0"


def test_console_not_answering_is_critical():
    r = console_result(Observed("ConnectionRefusedError: refused", [("gw1", NOW)]), NOW)
    assert r.state == CRITICAL
    assert "does not answer its login page (ConnectionRefusedError" in r.text
    assert console_result(Observed(502, [("gw1", NOW)]), NOW).state == CRITICAL


def test_database_unreadable_is_critical():
    r = console_result(Observed(200, database="OperationalError: no such table"), NOW)
    assert r.state == CRITICAL and "database cannot be read" in r.text
    assert r.perf == ""


@pytest.mark.parametrize(
    ("age", "state"),
    [(180, OK), (181, WARNING), (900, WARNING), (901, CRITICAL)],
)
def test_report_age_boundaries(age, state):
    r = console_result(Observed(200, [("gw1", NOW - 10), ("gw2", NOW - age)]), NOW)
    assert r.state == state, r.text
    if state != OK:
        assert "gw2" in r.text and "gw1" not in r.text


def test_stale_and_dead_gateways_named_and_the_worst_wins():
    r = console_result(Observed(200, [("gw1", NOW - 200), ("gw2", NOW - 5000)]), NOW)
    assert r.state == CRITICAL
    assert "over 15 min from gw2" in r.text and "over 3 min from gw1" in r.text
    many = [(f"gw{i}", NOW - 1000) for i in range(8)]
    assert "gw4 and 3 more" in console_result(Observed(200, many), NOW).text


def test_no_gateway_reported_is_a_warning():
    r = console_result(Observed(200, []), NOW)
    assert r.state == WARNING and "no gateway has reported" in r.text


def test_request_open_too_long_is_a_warning():
    fresh = [("gw1", NOW)]
    assert console_result(Observed(200, fresh, 2, NOW - 299), NOW).state == OK
    r = console_result(Observed(200, fresh, 2, NOW - 600), NOW)
    assert r.state == WARNING and "2 request(s) open, the oldest for 10 min" in r.text


def test_bad_thresholds_are_unknown():
    assert console_result(Observed(200, []), NOW, stale=600, critical=60).state == UNKNOWN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _db(path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def test_the_check_against_a_real_console(files, capsys):
    port = _free_port()
    # behind Apache at /console/ (which strips the prefix): the listener's login is /login
    config = write_config(files, listen=f"127.0.0.1:{port}", url_prefix="/console")
    args = ["check", "console", "--config", config]

    # Nothing listens yet: CRITICAL (and the database has no tables: also said).
    assert cli.main(args) == CRITICAL
    out = capsys.readouterr().out
    assert out.startswith("CONSOLE CRITICAL - the console does not answer"), out
    assert "database cannot be read" in out

    cfg = load_config(config)
    httpd = make_http_server(build_app(cfg), cfg.host, port)  # migrates its tables
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        assert cli.main(args) == WARNING
        assert "no gateway has reported yet" in capsys.readouterr().out

        conn = _db(files / "console.sqlite")
        table = GatewayStatusTable(conn)
        table.migrate()
        now = time.time()
        table.upsert(GatewayStatus("gw1", now - 20))
        table.upsert(GatewayStatus("gw2", now - 400))
        assert cli.main(args) == WARNING
        out = capsys.readouterr().out
        assert "over 3 min from gw2" in out and "gw1" not in out.split("|")[0]

        table.upsert(GatewayStatus("gw2", now - 5))
        assert cli.main(args) == OK
        out = capsys.readouterr().out
        assert out.startswith("CONSOLE OK - answering; 2 gateway(s) reporting"), out

        requests = RequestTable(conn)
        requests.migrate()
        requests.submit("outbreak_on", None, "gw1", "alice", now - 1000)
        assert cli.main(args) == WARNING
        assert "1 request(s) open, the oldest for 16 min" in capsys.readouterr().out
        assert cli.main([*args, "--request-age", "1h"]) == OK
        capsys.readouterr()
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_unreadable_configuration_is_unknown(tmp_path, capsys):
    assert cli.main(["check", "console", "--config", str(tmp_path / "none.toml")]) == UNKNOWN
    assert capsys.readouterr().out.startswith("CONSOLE UNKNOWN - configuration:")


def test_what_the_check_reads_on_each_database(conn):
    """``read_database``'s two reads (the end-to-end test above covers it on SQLite)."""
    status, requests = GatewayStatusTable(conn), RequestTable(conn)
    status.migrate()
    requests.migrate()
    assert (status.report_times(), requests.open_requests()) == ([], (0, None))
    status.upsert(GatewayStatus("gw2", NOW - 5))
    status.upsert(GatewayStatus("gw1", NOW - 50))
    first = requests.submit("outbreak_on", None, "gw1", "alice", NOW - 900)
    requests.submit("outbreak_on", None, "gw2", "alice", NOW - 100)
    assert status.report_times() == [("gw1", NOW - 50), ("gw2", NOW - 5)]
    assert requests.open_requests() == (2, NOW - 900)
    claimed = requests.claim("gw1", NOW)
    assert claimed is not None and claimed.id == first
    assert requests.open_requests() == (2, NOW - 900)  # claimed: still open
    requests.complete(claimed.id, "gw1", True, "done", NOW)
    assert requests.open_requests() == (1, NOW - 100)
