"""The quarantine index, the audit log and the runtime rules row on SQLite and on a throwaway
MariaDB: the same answers from both dialects (case folding, escaped wildcards, paging,
forward-only states, compare-and-set)."""

from __future__ import annotations

import pytest

from passerelle.console.audit import AuditLog
from passerelle.console.quarantine_index import HeldMessage, Part, QuarantineIndex, QueryError
from passerelle.console.rules import RuntimeRules, add_rule, make_rule
from passerelle.console.rules_store import RulesChanged, RuleStore

T0 = 1_764_633_600.0


def held(n: int, **kw) -> HeldMessage:
    base = {
        "gateway": "gw1",
        "qid": f"20251202T000000-{n:012x}",
        "queue_id": f"Q{n}",
        "message_id": f"<{n}@x>",
        "sender": f"s{n}@example.org",
        "recipients": (f"r{n}@example.com",),
        "subject": f"subject {n}",
        "reason": "rule",
        "rule": "exe",
        "size": 10,
        "held_at": T0 + n,
        "headers": "X: y",
        "parts": (Part("a.exe", "application/x-dosexec", 5),),
    }
    base.update(kw)
    return HeldMessage(**base)


def test_quarantine_index(conn):
    i = QuarantineIndex(conn)
    assert i.migrate() == (0, 1)
    assert i.migrate() == (1, 1)
    i.upsert(held(1, subject="Résumé 50% ÉTÉ", recipients=("Alice@Example.COM",)), T0)
    i.upsert(held(2, subject="plain_text"), T0)
    i.upsert(held(2, subject="plain_text"), T0)  # again: still one row
    i.upsert(held(3, reason="virus", gateway="gw2"), T0)

    def found(**q: str) -> list[str]:
        return [m.qid[-1] for m in i.search(q).rows]

    assert found() == ["3", "2", "1"]
    assert found(subject="été") == ["1"]
    assert found(subject="50%") == ["1"]
    assert found(subject="n_t") == ["2"]
    assert found(subject="5_%") == []
    assert found(recipient="alice@example.com") == ["1"]
    assert found(reason="virus") == ["3"] == found(gateway="gw2")
    page = i.search({"limit": "2", "offset": "1"})
    assert [m.qid[-1] for m in page.rows] == ["2", "1"] and not page.more
    assert i.get("gw1", held(1).qid).subject == "Résumé 50% ÉTÉ"
    i.mark("gw1", held(1).qid, "released", T0)
    i.upsert(held(1), T0)
    assert i.get("gw1", held(1).qid).state == "released"
    with pytest.raises(QueryError):
        i.mark("gw1", held(1).qid, "held", T0)


def test_audit_log(conn):
    a = AuditLog(conn)
    a.migrate()
    for n in range(3):
        a.append("alice", "admin", "release", f"t{n}\n", n != 1, "r" * 600, "2001:db8::1", T0)
    rows, more = a.list(2)
    assert [r.target for r in rows] == ["t2", "t1"] and more
    assert [r.ok for r in rows] == [True, False] and len(rows[0].result) == 512


def test_rule_store(conn):
    s = RuleStore(conn)
    s.migrate()
    rules = add_rule(RuntimeRules(), (), make_rule("iso", extensions=["iso"]))
    assert s.save(rules, 0, "alice", T0) == 1
    with pytest.raises(RulesChanged):
        s.save(RuntimeRules(), 0, "bob", T0)
    assert s.load() == (rules, 1)
