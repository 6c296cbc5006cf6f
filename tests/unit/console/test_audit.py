"""The audit log: rows appended, listed newest first with paging, strings made harmless."""

from __future__ import annotations

import sqlite3

import pytest

from passerelle.console.audit import AuditError, AuditLog, clean

T0 = 1_764_633_600.0


@pytest.fixture
def log():
    c = sqlite3.connect(":memory:", isolation_level=None)
    a = AuditLog(c)
    a.migrate()
    yield a
    c.close()


def test_append_and_list_newest_first_with_paging(log):
    for n in range(5):
        log.append("alice", "admin", "release", f"gw1/{n}", True, "request #1", "192.0.2.1", T0 + n)
    rows, more = log.list(limit=2)
    assert [r.target for r in rows] == ["gw1/4", "gw1/3"] and more
    rows, more = log.list(limit=2, offset=4)
    assert [r.target for r in rows] == ["gw1/0"] and not more
    first = log.list(limit=1, offset=4)[0][0]
    assert (first.who, first.role, first.action, first.ok, first.client, first.at) == (
        "alice",
        "admin",
        "release",
        True,
        "192.0.2.1",
        T0,
    )


def test_log_injection_is_neutralised(log):
    log.append(
        "mallory\n2026-01-01 admin release ok",
        "viewer",
        "login",
        "x\r\ny\x1b[31m\u202eevil",
        False,
        "wrong password" + "!" * 10_000,
        "203.0.113.9",
        T0,
    )
    row = log.list()[0][0]
    assert "\n" not in row.who and row.who == "mallory2026-01-01 admin release ok"
    assert row.target == "xy[31mevil"
    assert len(row.result) == 512 and not row.ok


def test_empty_fields_are_marked(log):
    log.append("", None, "", "", True, "", "", T0)
    row = log.list()[0][0]
    assert (row.who, row.role, row.action) == ("-", "-", "-")


@pytest.mark.parametrize(
    ("limit", "offset", "message"),
    [(0, 0, "at least 1"), (10, -1, "negative"), (5000, 0, "at most"), ("10", 0, "whole")],
)
def test_bad_paging_is_refused(log, limit, offset, message):
    with pytest.raises(AuditError, match=message):
        log.list(limit=limit, offset=offset)


def test_clean_bounds_and_collapses_whitespace():
    assert clean("a \t\n b", 10) == "a b"
    assert clean("é" * 50, 10) == "é" * 10
    assert clean("\ud800x", 10) == "?x"
