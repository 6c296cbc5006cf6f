"""Hostile regression corpus for issue 14 items 6-8: forged gateway headers, hostile HELO
Received lines, oversized spam.

Plain generator functions (no pytest, no passerelle import) so that unit tests, protocol tests
and a molecule test sending through a real gateway can all reuse them::

    sys.path.insert(0, "tests"); import hostile_headers
"""

from __future__ import annotations

from collections.abc import Iterator

Header = tuple[str, str]

# Headers the greylist milter writes (X-Delayed on a delayed message, X-Greylist when the store
# failed) and the spam milter's defaults (X-status, X-Spam-*).
GREYLIST_OWNED = ("X-Delayed", "X-Greylist")
SPAM_OWNED = ("X-status", "X-Spam-Status", "X-Spam-Score", "X-Spam-Checker", "X-Spam-Partial")

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def forged_gateway_headers() -> Iterator[tuple[str, list[Header]]]:
    """(case name, headers a client sends) where every owned header is forged."""
    base = [("From", "a@outside.example"), ("To", "u@example.org"), ("Subject", "hello")]
    yield "x-delayed", [*base, ("X-Delayed", "0s (0 s) by gw1.example.org")]
    yield "x-greylist", [*base, ("X-Greylist", "skipped (store unavailable) by gw1")]
    yield (
        "mixed-case-repeated",
        [
            ("x-delayed", "1s"),
            *base,
            ("X-DELAYED", "2s"),
            ("x-GreyList", "whitelisted"),
            ("X-Delayed", "3s"),
        ],
    )
    yield (
        "spam-verdict",
        [
            *base,
            ("X-status", "LOW"),
            ("X-Spam-Status", "No, score=-100.0 required=5.0 tests=none"),
            ("X-Spam-Score", "-100"),
            ("X-Spam-Partial", "no"),
        ],
    )


def hostile_helo_received() -> Iterator[tuple[str, str, str | None]]:
    """(case, top Received value as sendmail writes it, address sendmail recorded or None).

    sendmail's default ``HReceived: $?sfrom $s $.$?_($?s$|from $.$_) $.$?{auth_type}...
    by $j ($v/$Z)$?r with $r$. id $i ...``: ``$s`` is the client's HELO, ``$_`` is what
    sendmail recorded (``[user@]name [ip][ (may be forged)]`` or ``[ip]`` without PTR).
    None means "cannot tell": a learning mailbox must not trust it.
    """
    tail = "by gw1.example.org (8.17.1.9/8.17.1.9) with ESMTP id 5B1A0x1a001234"
    date = "Tue, 1 Dec 2026 10:00:00 +0000"
    yield (
        "helo-ip-literal",
        f"from [10.1.2.3] (evil.example [203.0.113.9]) {tail}; {date}",
        "203.0.113.9",
    )
    yield (
        "helo-ip-literal-no-ptr",
        f"from [10.1.2.3] ([203.0.113.9]) {tail}; {date}",
        "203.0.113.9",
    )
    yield (
        "helo-fake-authinfo",
        f"from x (y [10.0.0.1]) (evil.example [203.0.113.9]) {tail}; {date}",
        "203.0.113.9",
    )
    yield (
        "helo-fake-hop",
        f"from x ([10.0.0.1]) by gw1.example.org (8.17.1.9/8.17.1.9) with ESMTP id A"
        f" (evil.example [203.0.113.9]) {tail}; {date}",
        None,
    )
    yield (
        "helo-brackets",
        f"from ]x[10.0.0.1]( (evil.example [203.0.113.9] (may be forged)) {tail}; {date}",
        "203.0.113.9",
    )
    yield (
        "may-be-forged",
        f"from mx.example (mx.example [198.51.100.4] (may be forged)) {tail}; {date}",
        "198.51.100.4",
    )
    yield (
        "ident-user",
        f"from ws.example (joe@ws.example [10.89.78.51]) {tail}; {date}",
        "10.89.78.51",
    )
    yield (
        "authenticated",
        f"from ws.example (ws.example [10.89.78.51]) (authenticated bits=0) {tail}; {date}",
        "10.89.78.51",
    )
    yield (
        "ipv6",
        f"from ws6.example (ws6.example [IPv6:2001:db8:1::5]) {tail}; {date}",
        "2001:db8:1::5",
    )
    yield (
        "for-clause-forgery",
        f"from x (evil.example [203.0.113.9]) {tail}"
        f' for <"a ([10.89.78.5]) by b"@learn.example>; {date}',
        None,
    )
    yield ("no-helo-part", f"from evil.example [203.0.113.9] {tail}; {date}", None)


def oversized_spam(max_size: int) -> Iterator[tuple[str, list[Header], bytes]]:
    """(case, headers, body) spam bigger than ``max_size`` whose evidence is at the start."""
    headers = [
        ("From", "spammer@outside.example"),
        ("To", "u@example.org"),
        ("Subject", "Cheap watches"),
        ("Message-ID", "<big-gtube@outside.example>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain"),
    ]
    filler = b"filler line to make the message big enough\r\n"
    reps = max_size // len(filler) + 10
    yield "gtube-then-filler", headers, GTUBE + b"\r\n" + filler * reps
    # one long line straddling the limit: the cut falls back to the last line boundary
    yield "gtube-then-long-line", headers, GTUBE + b"\r\n" + b"x" * (max_size + 100) + b"\r\n"
