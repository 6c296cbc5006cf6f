"""Property test: generated hostile sendmail logs never get a third party counted.

Sessions of real clients (203.0.113.0/24, 2001:db8:113::/48) whose client-chosen fields
(sender, recipients, Message-ID, VRFY argument, AUTH id, milter and delivery lines that quote
them) are built from ``relay=`` lookalikes, third-party addresses (198.51.100.0/24,
2001:db8:dead::/48), brackets, commas, quotes, session-end phrases, 8-bit and NUL bytes (as
sendmail escapes them, ``\\ooo``, or raw) and long runs, in sendmail 8.17's line formats with
its field widths, interleaved with each other. Properties:

- no exception escapes, and each example is read within a time bound;
- only real clients are counted, each session at most once, and exactly once when it has a
  line whose client field is at a fixed place (from=, STARTTLS, AUTH, did not issue, lost
  input channel); a session of refusals only may stay uncounted (``ambiguous``);
- the same log cut in pieces and merged (the parallel scan) counts the same.

Bounded for CI: ``max_examples`` and ``deadline`` below keep it to a few seconds.
"""

import ipaddress
import time
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passerelle.maillog import Partial, SessionCounter, merge_partials

from .smlog import NOW

THIRD = ["198.51.100.7", "198.51.100.8", "198.51.100.250", "IPv6:2001:db8:dead::1"]
FRAGMENTS = [
    b"relay=",
    b", relay=",
    b"[",
    b"]",
    b", ",
    b",",
    b'"',
    b"<",
    b">",
    b"@",
    b"\\",
    b"=",
    b" ",
    b"]: ",
    b": ",
    b", reject=550 5.7.1 ",
    b", reject=",
    b", quarantine=x",
    b", discard",
    b" (may be forged)",
    b" did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    b"lost input channel from ",
    b" to MTA after rcpt",
    b"pri=120530, ",
    b"to=<",
    b"from=<",
    b"STARTTLS=server, relay=",
    b"ruleset=check_rcpt, arg1=",
    b"\x00",
    b"\xc3\xa9",
    b"\xff",
    b"\n",
    b"\t",
    *(f"[{a}]".encode() for a in THIRD),
    *(f"relay=fake.example [{a}]".encode() for a in THIRD),
    *(f", relay=[{a}], reject=550".encode() for a in THIRD),
]

hostile = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.binary(max_size=6),
        st.text("abcxyz.-_0123456789", max_size=12).map(str.encode),
        st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 300)).map(lambda t: t[0] * t[1]),
    ),
    max_size=12,
).map(b"".join)

# what may stand before the address in sendmail's $_: no space (reverse-DNS name, ident@);
# lookalikes of an address included, as a HELO-like name would be if a build logged it there
host_part = st.one_of(
    st.none(),
    st.sampled_from([b"mail.example.net", b"unknown", b"[198.51.100.7]", b"a]b[c", b"x,relay="]),
    st.text("abcdefghij.-0123456789", min_size=1, max_size=30).map(str.encode),
)


def _escape(b: bytes) -> bytes:
    """sendmail's str2prt: backslash doubled, unprintable and 8-bit bytes as \\ooo."""
    out = bytearray()
    for c in b:
        if c == 92:
            out += b"\\\\"
        elif 32 <= c < 127:
            out.append(c)
        else:
            out += f"\\{c:03o}".encode()
    return bytes(out)


def _raw(b: bytes) -> bytes:
    """A build that logs as is (or a damaged log): raw bytes, but a line stays one line."""
    return b.replace(b"\n", b"\\n")


@st.composite
def session(draw, ip: str, pid: int):
    addr = f"IPv6:{ip}" if ":" in ip else ip
    host = draw(host_part)
    ident = draw(st.sampled_from([b"", b"", b"user@", b"a.b-c_d@"]))
    relay = ident + (host + b" " if host else b"") + f"[{addr}]".encode()
    if draw(st.booleans()):
        relay += b" (may be forged)"
    kinds = draw(
        st.lists(
            st.sampled_from(
                ["tls", "auth", "rcpt", "mail", "vrfy", "from", "to", "milter", "noissue", "lost"]
            ),
            min_size=1,
            max_size=6,
        )
    )
    qid = f"4ARB{pid:06d}".encode()
    lines = []
    for kind in kinds:
        h = draw(hostile)
        if kind == "tls":
            msg = b"STARTTLS=server, relay=" + relay + b", version=TLSv1.3, verify=NO, bits=256"
        elif kind == "auth":
            msg = b"AUTH=server, relay=" + relay + b", authid=" + h + b", mech=PLAIN, bits=0"
        elif kind == "rcpt":
            msg = b"NOQUEUE: ruleset=check_rcpt, arg1=<" + h + b">, relay=" + relay
            msg += b", reject=550 5.7.1 <" + h + b">... Relaying denied"
        elif kind == "mail":
            msg = b"NOQUEUE: ruleset=check_mail, arg1=<" + h + b">, relay=" + relay
            msg += b", reject=553 5.1.8 <" + h + b">... Domain of sender address " + h
            msg += b" does not exist"
        elif kind == "vrfy":
            msg = b"NOQUEUE: ruleset=check_vrfy, arg1=" + h + b", relay=" + relay
            msg += b", reject=550 5.7.1 Access denied"
        elif kind == "from":
            mid = draw(hostile)
            fields = b"from=<" + h + b">"
            fields = fields[:200] + b", size=10, class=0, nrcpts=1"  # %.200s
            if mid:
                fields += b", msgid=<" + (mid + b">")[:100]  # %.100s
            fields += b", proto=ESMTP, daemon=MTA, tls_verify=NONE, auth=NONE"
            msg = qid + b": " + fields[:850] + b", relay=" + relay  # "%.850s, relay=%s"
        elif kind == "to":
            hop = draw(st.sampled_from(THIRD)).encode()
            msg = qid + b": to=<" + h + b">, delay=00:00:01, mailer=esmtp, pri=120530, "
            msg += b"relay=next.example. [" + hop + b"], dsn=2.0.0, stat=Sent (" + h + b")"
        elif kind == "milter":
            msg = qid + b": Milter: to=<" + h + b">, reject=451 4.7.1 Greylisted"
        elif kind == "noissue":
            msg = qid + b": " + relay + b" did not issue MAIL/EXPN/VRFY/ETRN during connection"
            msg += b" to MTA"
        else:
            msg = qid + b": lost input channel from " + relay + b" to MTA after rcpt"
        lines.append(msg)
    anchored = any(k in ("tls", "auth", "from", "noissue", "lost") for k in kinds)
    return lines, anchored


@st.composite
def logs(draw):
    n = draw(st.integers(1, 6))
    v4 = draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True))
    ips = [
        f"2001:db8:113::{x:x}" if draw(st.booleans()) and i % 2 else f"203.0.113.{x}"
        for i, x in enumerate(v4)
    ]
    sessions = [draw(session(ip, 20000 + i)) for i, ip in enumerate(ips)]
    escape = _escape if draw(st.booleans()) else _raw
    iso = draw(st.booleans())
    # interleave: each session keeps its order
    queues = [list(lines) for lines, _ in sessions]
    order = draw(st.permutations([i for i, q in enumerate(queues) for _ in q]))
    out = []
    for k, i in enumerate(order):
        msg = queues[i].pop(0)
        ts = NOW - 3000 + k
        dt = datetime.fromtimestamp(ts, timezone.utc)
        stamp = dt.isoformat(timespec="microseconds") if iso else f"{dt:%b} {dt.day:>2} {dt:%T}"
        out.append(f"{stamp} gw1 sm-mta[{20000 + i}]: ".encode() + escape(msg))
    expect = {ip: anchored for ip, (_, anchored) in zip(ips, sessions)}
    return out, expect


def _count(lines: list[bytes]) -> SessionCounter:
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    c.feed(b"\n".join(lines) + b"\n")
    return c


@settings(
    max_examples=120,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(logs(), st.data())
def test_generated_hostile_logs_count_only_the_real_clients(log, data):
    lines, expect = log
    t0 = time.process_time()
    c = _count(lines)
    assert time.process_time() - t0 < 1.0
    for ip, n in c.counts.items():
        assert ip in expect, f"counted {ip}, not a client of this log"
        assert n == 1
    for ip, anchored in expect.items():
        if anchored:
            assert c.counts.get(ip) == 1, f"session of {ip} not counted"
    # the same lines cut in pieces, each read alone, merged: same counts
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(lines) - 1)), max_size=3)))
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(lines)]):
        p = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
        p.firsts = {}
        p.feed(b"\n".join(lines[a:b]) + b"\n")
        parts.append(Partial(p.counts, p.stats, p.firsts, p._sessions))
    merged = merge_partials(parts)
    assert {k: v for k, v in merged.counts.items() if v} == c.counts


def test_a_megabyte_of_relay_lookalikes_is_read_quickly():
    fake = b", relay=[198.51.100.7], reject=550 5.7.1 x"
    arg = fake * (1_000_000 // len(fake))
    line = (
        b"Nov 27 10:50:00 gw1 sm-mta[9]: NOQUEUE: ruleset=check_rcpt, arg1=<"
        + arg
        + b">, relay=[203.0.113.9], reject=550 5.7.1 <"
        + arg
        + b">... Relaying denied"
    )
    t0 = time.process_time()
    c = _count(
        [
            line,
            b"Nov 27 10:50:01 gw1 sm-mta[9]: 4AB: from=<" + arg[:200] + b">, "
            b"size=1, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=[203.0.113.9]",
        ]
    )
    assert time.process_time() - t0 < 1.0
    assert c.counts == {"203.0.113.9": 1}
    assert ipaddress.ip_address("198.51.100.7").compressed not in c.counts
