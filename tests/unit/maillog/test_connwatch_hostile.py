"""The connection guard counts the client sendmail wrote, never text the client chose.

Issue 14, item 1: ``MAIL FROM:<"relay=[198.51.100.7]"@x.example>`` made 198.51.100.7 counted,
so a few thousand connections blocked a third party fleet-wide. The corpus
(``hostile_maillog.txt``) holds real sendmail 8.17 lines with hostile senders, recipients,
Message-IDs and VRFY arguments; its ``# expect`` lines give the sessions per client.
"""

from __future__ import annotations

import ipaddress
from datetime import timezone
from pathlib import Path

import pytest

from passerelle.maillog import SessionCounter, scan_logs

from .smlog import NOW, trad

CORPUS = Path(__file__).with_name("hostile_maillog.txt")
THIRD_PARTIES = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "2001:db8:dead::/48")]


def _corpus() -> tuple[list[bytes], dict[str, int]]:
    lines, expect = [], {}
    for raw in CORPUS.read_bytes().splitlines():
        if raw.startswith(b"# expect "):
            ip, n = raw.split()[2:4]
            expect[ip.decode()] = int(n)
        elif raw and not raw.startswith(b"#"):
            lines.append(raw)
    return lines, expect


def _sessions() -> list[tuple[list[bytes], dict[str, int]]]:
    """The corpus cut at its comment blocks: (lines, expected counts) of each session."""
    out: list[tuple[list[bytes], dict[str, int]]] = []
    cur: tuple[list[bytes], dict[str, int]] | None = None
    for raw in CORPUS.read_bytes().splitlines():
        if raw.startswith(b"# S"):
            cur = ([], {})
            out.append(cur)
        elif cur is None:
            continue
        elif raw.startswith(b"# expect "):
            ip, n = raw.split()[2:4]
            cur[1][ip.decode()] = int(n)
        elif raw and not raw.startswith(b"#"):
            cur[0].append(raw)
    return out


def count(data: bytes) -> SessionCounter:
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    c.feed(data)
    return c


def _third_parties(counts: dict[str, int]) -> list[str]:
    return [ip for ip in counts if any(ipaddress.ip_address(ip) in n for n in THIRD_PARTIES)]


def test_corpus_counts_only_the_clients_sendmail_wrote():
    lines, expect = _corpus()
    c = count(b"\n".join(lines) + b"\n")
    assert _third_parties(c.counts) == []
    assert c.counts == expect
    # S5's refused sender and S8's VRFY name two clients each; S8's connection is known only
    # from a later line: neither line is counted, the sessions are (S8 by its last line)
    assert c.stats.ambiguous == 2
    assert c.stats.skipped == 1  # S7: a milter line quoting "did not issue MAIL"


@pytest.mark.parametrize("n", range(len(_sessions())), ids=lambda n: f"S{n + 1}")
def test_each_hostile_session_alone(n):
    lines, expect = _sessions()[n]
    c = count(b"\n".join(lines) + b"\n")
    assert _third_parties(c.counts) == []
    assert c.counts == expect


def test_raw_8bit_and_nul_bytes_change_nothing():
    """Built without sendmail's escaping (or a damaged log): raw bytes in client fields."""
    lines, expect = _corpus()
    data = b"\n".join(lines) + b"\n"
    data = data.replace(b"\\303\\251", b"\xc3\xa9").replace(b"@victim.example", b"@\x00\xff.ex")
    c = count(data)
    assert _third_parties(c.counts) == []
    assert c.counts == expect


def _check_rcpt(pid: int, fake: str, real: str = "203.0.113.30") -> str:
    arg = f'<"x, relay={fake}, reject=550 5.7.1 y"@victim.example>'
    return (
        f"{trad(NOW - 600)} gw1 sm-mta[{pid}]: 4ARB{pid}: ruleset=check_rcpt, arg1={arg}, "
        f"relay=client.example [{real}], reject=550 5.7.1 {arg}... Relaying denied"
    )


def test_one_connection_with_refused_recipients_and_a_message_counts_once():
    """5 refused RCPTs (each naming another third party) + one accepted message."""
    head = f"{trad(NOW - 600)} gw1 sm-mta[7001]:"
    lines = [f"{head} STARTTLS=server, relay=client.example [203.0.113.30], version=TLSv1.3"]
    lines += [_check_rcpt(7001, f"[198.51.100.{i}]") for i in range(5)]
    lines.append(
        f"{head} 4ARB7001: from=<a@client.example>, size=10, class=0, nrcpts=1, "
        "msgid=<1@client.example>, proto=ESMTP, daemon=MTA, relay=client.example [203.0.113.30]"
    )
    c = count(("\n".join(lines) + "\n").encode())
    assert c.counts == {"203.0.113.30": 1}


def test_refused_recipients_before_the_sender_line_count_once():
    """Every recipient refused: the check_rcpt lines come before the from= (nrcpts=0) line."""
    lines = [_check_rcpt(7002, f"[198.51.100.{i}]") for i in range(5)]
    lines.append(
        f"{trad(NOW - 590)} gw1 sm-mta[7002]: 4ARB7002: from=<a@client.example>, size=0, "
        "class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=client.example [203.0.113.30]"
    )
    c = count(("\n".join(lines) + "\n").encode())
    assert c.counts == {"203.0.113.30": 1}


def test_a_fake_naming_the_client_itself_is_not_ambiguous():
    c = count((_check_rcpt(7003, "[203.0.113.30]") + "\n").encode())
    assert c.counts == {"203.0.113.30": 1} and c.stats.ambiguous == 0


def test_three_thousand_hostile_connections_do_not_count_the_third_party():
    """The issue's attack at scale: 3,000 connections, each a sender naming 198.51.100.7."""
    lines = []
    for i in range(3000):
        ts = trad(NOW - 3500 + i)
        lines.append(
            f'{ts} gw1 sm-mta[{10000 + i}]: 4ARC{i:05d}: from=<"relay=[198.51.100.7]"@x.example>,'
            f" size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=[203.0.113.{i % 200}]"
        )
    c = count(("\n".join(lines) + "\n").encode())
    assert "198.51.100.7" not in c.counts
    assert sum(c.counts.values()) == 3000


def test_parallel_scan_of_the_corpus(tmp_path):
    lines, expect = _corpus()
    log = tmp_path / "maillog"
    log.write_bytes((b"\n".join(lines) + b"\n") * 1)
    kw = dict(tz=timezone.utc, skip_stale=False, seek=False)
    seq = scan_logs([log], NOW - 3600, NOW, **kw)
    par = scan_logs([log], NOW - 3600, NOW, jobs=3, min_piece=1500, **kw)
    assert seq.counts == par.counts == expect
