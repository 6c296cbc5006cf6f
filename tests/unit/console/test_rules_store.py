"""The runtime rules row: saved with a compare-and-set, checked again when read."""

from __future__ import annotations

import sqlite3

import pytest

from passerelle.console.rules import RuleError, RuntimeRules, add_rule, make_rule
from passerelle.console.rules_store import RulesChanged, RuleStore

T0 = 1_764_633_600.0


@pytest.fixture
def store():
    c = sqlite3.connect(":memory:", isolation_level=None)
    s = RuleStore(c)
    s.migrate()
    yield s
    c.close()


def iso() -> RuntimeRules:
    return add_rule(RuntimeRules(), (), make_rule("iso", extensions=["iso"]))


def test_empty_then_saved_and_read_back(store):
    assert store.load() == (RuntimeRules(), 0)
    assert store.save(iso(), 0, "alice", T0) == 1
    assert store.load() == (iso(), 1)
    assert store.save(RuntimeRules(), 1, "alice", T0) == 2
    assert store.load() == (RuntimeRules(), 2)


def test_a_stale_version_loses(store):
    store.save(iso(), 0, "alice", T0)
    with pytest.raises(RulesChanged):
        store.save(RuntimeRules(), 0, "bob", T0)  # bob read before alice saved
    store.save(RuntimeRules(), 1, "bob", T0)
    with pytest.raises(RulesChanged):
        store.save(iso(), 1, "alice", T0)
    assert store.load() == (RuntimeRules(), 2)


def test_a_tampered_row_is_checked_again(store):
    store.save(iso(), 0, "alice", T0)
    store.conn.execute(
        "UPDATE console_runtime_rules SET body = ?",
        ('{"rules": [{"name": "x", "header": "Subject", "pattern": "(a+)+"}], "disabled": []}',),
    )
    with pytest.raises(RuleError, match="nests"):
        store.load()
