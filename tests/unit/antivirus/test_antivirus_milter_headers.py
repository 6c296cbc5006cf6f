"""Headers the antivirus milter writes are owned: a client's copies are removed first."""

from __future__ import annotations

import Milter

from passerelle.antivirus.engine import ACCEPT, DISCARD, Verdict
from passerelle.antivirus.milter import AntivirusMilter


class StubEngine:
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def process(self, env, headers, spool, size):
        return self.verdict


def drive(verdict: Verdict, headers: list[tuple[str, str]]):
    m = AntivirusMilter(StubEngine(verdict))
    m._protocol = 0  # set by pymilter's _setctx: an MTA that negotiated no no-reply steps
    calls: list[tuple] = []
    m.addheader = lambda name, value, idx=-1: calls.append(("add", name, value))
    m.chgheader = lambda name, idx, value: calls.append(("chg", name, idx, value))
    m.getsymval = lambda sym: "Q1"
    m.replacebody = lambda chunk: calls.append(("body", len(chunk)))
    m.setreply = lambda *a: calls.append(("reply", *a))
    m.envfrom("<a@example.org>")
    m.envrcpt("<b@example.com>")
    for name, value in headers:
        m.header(name, value)
    m.eoh()
    m.body(b"hello\r\n")
    return m.eom(), calls


FORGED = [
    ("X-Virus-Scanned", "ClamAV on gw1 (forged)"),
    ("Subject", "hi"),
    ("x-virus-scanned", "clean, trust me"),
    ("X-Passerelle-Stripped", "nothing"),
]


def test_forged_scanner_headers_removed_before_ours_are_added():
    v = Verdict(ACCEPT, headers=[("X-Virus-Scanned", "ClamAV on gw1")])
    rc, calls = drive(v, FORGED)
    assert rc == Milter.ACCEPT
    chg = [c for c in calls if c[0] == "chg"]
    # Every forged copy deleted (empty value), last occurrence first so indexes stay valid.
    assert sorted((c[1].lower(), c[2], c[3]) for c in chg) == [
        ("x-passerelle-stripped", 1, ""),
        ("x-virus-scanned", 1, ""),
        ("x-virus-scanned", 2, ""),
    ]
    vs = [c for c in chg if c[1].lower() == "x-virus-scanned"]
    assert [c[2] for c in vs] == [2, 1]
    assert calls.index(chg[-1]) < calls.index(("add", "X-Virus-Scanned", "ClamAV on gw1"))
    assert AntivirusMilter.ACTIONS & Milter.CHGHDRS


def test_no_header_edit_when_message_is_not_delivered():
    rc, calls = drive(Verdict(DISCARD, quarantine_id="x"), FORGED)
    assert rc == Milter.DISCARD
    assert not [c for c in calls if c[0] in ("chg", "add")]


def test_clean_message_without_forgery_only_adds():
    v = Verdict(ACCEPT, headers=[("X-Virus-Scanned", "ClamAV on gw1")])
    _rc, calls = drive(v, [("Subject", "hi")])
    assert calls == [("add", "X-Virus-Scanned", "ClamAV on gw1")]
