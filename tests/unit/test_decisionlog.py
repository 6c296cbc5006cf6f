"""Contract: the decision lines the milters write are the lines the reports read.

Every kind of line is formatted by ``passerelle.decisionlog`` and parsed back by it (the
reports' ``events.parse_line`` reads them through it); each case must give back the fields it
was written with, hostile values included. ``test_the_check_catches_*`` feed a drifted writer or
reader to the same check and assert it fails, so the contract test cannot pass vacuously.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from passerelle import decisionlog as dl
from passerelle.maillog import TimestampReader
from passerelle.reports.events import parse_line

TRICKY_ADDRESSES = [
    "a@example.net",
    "",  # the null sender
    '"john smith"@example.net',
    '"it\'s"@example.net',
    '"both \' and \\""@example.net',
    '"a> to=<x@y> delay=1m reason=passed"@example.net',
    "x@y> reason=new",
    "ünïcödé@exämple.net",
    "tab\there@example.net",
    "new\nline@example.net",
    "back\\slash\\x3e@example.net",
    "\udcff8bit@example.net",  # a raw byte as the milter decodes it (surrogateescape)
    "x" * 300 + "@example.net",
]
CLIENTS = [("192.0.2.1", "192.0.2.0/24"), ("2001:db8::1", "2001:db8::/64")]
LONG_SIG = "Sanesecurity.Foxhole.Zip_fs179.UNOFFICIAL." + "Very.Long.Name" * 20


def greylist_cases() -> Iterable[tuple[str, dict[str, Any]]]:
    for ip, group in CLIENTS:
        for addr in TRICKY_ADDRESSES:
            for accepted, reason, delay in (
                (False, "new", None),
                (False, "early", None),
                (True, "delayed", 2460),
                (True, "passed", 0),
                (True, "delayed", 90061),
            ):
                text = dl.greylist_decision(accepted, ip, group, addr, addr[::-1], reason, delay)
                want = dict(
                    verdict="accepted" if accepted else "greylisted",
                    client=ip,
                    group=group,
                    sender=addr,
                    recipient=addr[::-1],
                    reason=reason,
                    delay=delay,
                )
                yield text, want
        for reason in ("trusted", "client", "auth", "sender", "recipient", "auto"):
            yield (
                dl.greylist_exempt(ip, group, reason),
                dict(verdict="accepted", client=ip, group=group, reason=reason, sender=None),
            )
        for tempfail in (True, False):
            why = "store did not answer within 2s (TimeoutError)"
            yield (
                dl.greylist_store_error(ip, why, tempfail),
                dict(
                    verdict="tempfail" if tempfail else "skipped",
                    client=ip,
                    reason="store-error",
                    detail=why,
                ),
            )


def spam_cases() -> Iterable[tuple[str, dict[str, Any]]]:
    for client, ip in (
        ("mx.example.net[192.0.2.1]", "192.0.2.1"),
        ("[192.0.2.1][192.0.2.1]", "192.0.2.1"),
        ("mx6.example.net[2001:db8::25]", "2001:db8::25"),
    ):
        for tier in ("none", "LOW", "MEDIUM", "HIGH"):
            for partial in (None, (500000, 2000000)):
                summary = dl.spam_scanned(
                    6.25, 5.0, tier, ["BAYES_99", "HTML_MESSAGE"], "[::1]:783", 0.4, 2, partial
                )
                yield (
                    dl.spam_line("4ARB000123", client, summary),
                    dict(
                        queue_id="4ARB000123",
                        client=client,
                        ip=ip,
                        tier=tier,
                        score="6.25",
                        required="5",
                        tests="BAYES_99,HTML_MESSAGE",
                    ),
                )
        yield (
            dl.spam_line("?", client, dl.spam_scanned(-0.1, 5, "none", [], "h:783", 0.0)),
            dict(queue_id="?", client=client, ip=ip, tier="none", score="-0.1", tests="none"),
        )
        why = "connection refused (tier=HIGH score=9)"
        for tempfail in (True, False):
            yield (
                dl.spam_line("4ARB000124", client, dl.spam_unavailable(why, tempfail)),
                dict(client=client, ip=ip, tier="tempfail" if tempfail else "unscanned", rest=why),
            )


def antivirus_cases() -> Iterable[tuple[str, dict[str, Any]]]:
    results = [
        (dl.av_clean("clean", "127.0.0.1:3310"), "accept", "clean", ""),
        (dl.av_clean("too_large", ""), "accept", "unscanned", ""),
        (dl.av_virus("Eicar-Signature", "[::1]:3310"), "reject", "virus", "Eicar-Signature"),
        (dl.av_virus(LONG_SIG, "127.0.0.1:3310"), "reject", "virus", LONG_SIG),
        (dl.av_quarantined("20261127-ab12", "signature", LONG_SIG), "discard", "virus", LONG_SIG),
        (
            dl.av_quarantined("20261127-ab12", "signature", "Sig (v2)"),
            "discard",
            "virus",
            "Sig (v2)",
        ),
        (
            dl.av_quarantined("20261127-ff", "outbreak", "held in outbreak mode"),
            "discard",
            "held",
            "",
        ),
        (
            dl.av_quarantined("20261127-ee", "rule", "exe: x.exe (not strippable)"),
            "discard",
            "rule",
            "",
        ),
        (dl.av_rule("exe", "attachment 'x -> discard.exe'"), "reject", "rule", ""),
        (dl.av_stripped(["exe", "js"]), "accept", "rule", ""),
        (dl.av_too_large("30 MB > 25 MB"), "accept", "unscanned", ""),
        (dl.av_too_large("30 MB > 25 MB"), "reject", "rule", ""),
        (dl.av_uninspectable("zip bomb"), "tempfail", "error", ""),
        (dl.av_clamd_error("connection refused"), "tempfail", "error", ""),
        (dl.av_quarantine_failed("[Errno 28] No space left"), "tempfail", "error", ""),
    ]
    for host, ip in (
        ("mx.example.net", "192.0.2.1"),
        ("", "2001:db8::1"),
        ("[192.0.2.9]", "192.0.2.9"),
    ):
        for addr in TRICKY_ADDRESSES:
            for result, action, label, sig in results:
                yield (
                    dl.antivirus_line("4ARB000125", addr, 3, 12345, host, ip, result, action),
                    dict(
                        queue_id="4ARB000125",
                        sender=addr,
                        rcpts=3,
                        size=12345,
                        client_host=host,
                        client_ip=ip,
                        result=result,
                        action=action,
                        label=label,
                        signature=sig,
                    ),
                )
    yield (
        dl.antivirus_line("", "a@b", 1, 1, "h", "192.0.2.1", dl.av_clean("clean", "x"), "accept"),
        dict(queue_id="-", label="clean"),
    )


def connwatch_cases() -> Iterable[tuple[str, dict[str, Any]]]:
    for ip in ("198.51.100.7", "2001:db8::7"):
        for outcome, action in (
            ("blocked", "block"),
            ("not-blocked", "alert"),
            ("whitelisted", "alert"),
            ("alert", "alert"),
        ):
            yield (
                dl.connwatch_line("outbound", ip, 3000, "1h30m", 2500, outcome),
                dict(
                    direction="outbound",
                    ip=ip,
                    count=3000,
                    window="1h30m",
                    threshold=2500,
                    outcome=outcome,
                    action=action,
                ),
            )


KINDS: dict[
    str, tuple[Callable[[], Iterable[tuple[str, dict[str, Any]]]], Callable[[str], Any]]
] = {
    "greylist": (greylist_cases, dl.parse_greylist),
    "spam": (spam_cases, dl.parse_spam),
    "antivirus": (antivirus_cases, dl.parse_antivirus),
    "connwatch": (connwatch_cases, dl.parse_connwatch),
}


def roundtrip_failures(
    cases: Iterable[tuple[str, dict[str, Any]]], parse: Callable[[str], Any]
) -> list[str]:
    """Every case whose line does not parse back to the fields it was written with."""
    out = []
    for text, want in cases:
        if "\n" in text or "\r" in text:
            out.append(f"{text!r}: not one line")
            continue
        got = parse(text)
        if got is None:
            out.append(f"{text!r}: not parsed")
            continue
        for name, value in want.items():
            if getattr(got, name) != value:
                out.append(f"{text!r}: {name} = {getattr(got, name)!r}, written {value!r}")
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_roundtrip(kind: str) -> None:
    cases, parse = KINDS[kind]
    assert list(cases())
    assert roundtrip_failures(cases(), parse) == []


def test_ordinary_lines_keep_their_text() -> None:
    """The text the molecule tests and the admins' greps know."""
    assert (
        dl.greylist_decision(True, "192.0.2.1", "192.0.2.0/24", "a@b", "c@d", "delayed", 2460)
        == "accepted client=192.0.2.1 group=192.0.2.0/24 from=<a@b> to=<c@d> delay=41m "
        "reason=delayed"
    )
    assert (
        dl.antivirus_line("Q", "a@b", 1, 300, "mx", "192.0.2.1", dl.av_virus("S", "h"), "reject")
        == "Q: from=<a@b> rcpts=1 size=300 client=mx [192.0.2.1] virus S (clamd h) -> reject"
    )
    assert (
        dl.connwatch_line("inbound", "198.51.100.7", 3000, "1h", 2500, "blocked")
        == "connwatch inbound: 198.51.100.7 made 3000 connections in 1h (> 2500): blocked"
    )


def test_reports_read_the_written_lines() -> None:
    """``events.parse_line`` (metrics, status, report) on whole syslog lines."""
    times = TimestampReader(now=1_800_000_000.0)
    head = "Nov 27 10:00:01 gw1 passerelle-{}[812]: "
    gl = dl.greylist_decision(True, "2001:db8::1", "2001:db8::/64", "a b@c", "d", "delayed", 60)
    ev = parse_line((head.format("greylist") + gl + "\n").encode(), times)
    assert (ev.area, ev.label, ev.client, ev.detail, ev.group) == (
        "greylist",
        "delayed",
        "2001:db8::1",
        "60",
        "2001:db8::/64",
    )
    av = dl.antivirus_line(
        "Q",
        "x> rcpts=9",
        1,
        3,
        "h",
        "192.0.2.1",
        dl.av_quarantined("i", "signature", LONG_SIG),
        "discard",
    )
    ev = parse_line((head.format("antivirus") + av).encode(), times)
    assert (ev.label, ev.client, ev.detail) == ("virus", "192.0.2.1", LONG_SIG)
    sp = dl.spam_line("Q", "mx[192.0.2.1]", dl.spam_scanned(8.1, 5, "HIGH", ["X"], "h", 0.1))
    ev = parse_line((head.format("spam") + sp).encode(), times)
    assert (ev.label, ev.client, ev.detail) == ("HIGH", "192.0.2.1", "8.1")
    cw = dl.connwatch_line("inbound", "198.51.100.7", 3000, "1h", 2500, "not-blocked")
    ev = parse_line((head.format("connwatch") + cw).encode(), times)
    assert (ev.label, ev.client, ev.count, ev.group) == ("alert", "198.51.100.7", 3000, "inbound")


# -- tests of the test: a drifted writer or reader is caught -----------------------------------
def test_the_check_catches_a_writer_that_drifted(monkeypatch: pytest.MonkeyPatch) -> None:
    # the writer renames a field (the reader still expects ``reason=``)
    real = dl.greylist_exempt
    monkeypatch.setattr(dl, "greylist_exempt", lambda *a: real(*a).replace("reason=", "why="))
    assert roundtrip_failures(greylist_cases(), dl.parse_greylist)
    monkeypatch.undo()
    # the writer stops escaping client text: an address can fake the following fields
    monkeypatch.setattr(dl, "escape_address", lambda a: a)
    assert any(
        "not one line" in f or "sender" in f
        for f in roundtrip_failures(greylist_cases(), dl.parse_greylist)
    )
    assert roundtrip_failures(antivirus_cases(), dl.parse_antivirus)
    monkeypatch.undo()
    # the connection guard writes "blocked" differently
    real_cw = dl.connwatch_line
    monkeypatch.setattr(
        dl, "connwatch_line", lambda *a: real_cw(*a).replace(": blocked", " -> blocked")
    )
    assert roundtrip_failures(connwatch_cases(), dl.parse_connwatch)


def test_the_check_catches_a_reader_that_drifted() -> None:
    def spam_reader_without_brackets(msg: str) -> Any:
        got = dl.parse_spam(msg)
        return dataclasses.replace(got, client=got.client.split("[")[0]) if got else None

    assert roundtrip_failures(spam_cases(), spam_reader_without_brackets)

    def antivirus_reader_first_word_signature(msg: str) -> Any:
        got = dl.parse_antivirus(msg)
        return dataclasses.replace(got, signature=got.signature.split(" ")[0]) if got else None

    assert roundtrip_failures(antivirus_cases(), antivirus_reader_first_word_signature)
    assert roundtrip_failures(greylist_cases(), lambda m: None)
