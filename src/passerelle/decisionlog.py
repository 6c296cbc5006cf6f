"""The decision lines of the milters and of the connection guard: written and read here only.

Each milter logs one line per decision (syslog, facility mail) and the reports
(``passerelle.reports.events``: metrics, status, daily report) read them back from the mail
log. Both sides use this module, a formatter and a parser per kind of line, so the text cannot
drift between the writer and the reader (``tests/unit/test_decisionlog.py`` round-trips every
kind, hostile values included).

The message (the text after ``prog[pid]: ``) of each kind::

    greylist (one line per recipient)
      greylisted client=192.0.2.1 group=192.0.2.0/24 from=<a@b> to=<c@d> reason=new
      accepted client=192.0.2.1 group=192.0.2.0/24 from=<a@b> to=<c@d> delay=41m reason=delayed
      accepted client=192.0.2.1 group=192.0.2.0/24 reason=trusted          (an exemption)
      store unavailable, greylisting skipped client=192.0.2.1 reason=store-error (why)
      store unavailable, tempfail client=192.0.2.1 reason=store-error (why)
    spam (one line per message)
      4ARxyz: client=mx.example.net[192.0.2.1] score=6.2 required=5 tier=HIGH tests=A,B
          spamd=127.0.0.1:783 time=0.41s[ ocr_images=N][ partial=N/M]
      4ARxyz: client=... spamd unavailable, accepted unscanned: why
      4ARxyz: client=... spamd unavailable, tempfail: why
    antivirus (one line per message)
      4ARxyz: from=<a@b> rcpts=1 size=300 client=mx [192.0.2.1] <result> -> <action>
      results: clean (clean, clamd H) | virus SIG (clamd H) | quarantined ID (REASON: DETAIL)
          | rule RULE: DETAIL | stripped attachments (A, B) | too large for clamd: D
          | uninspectable: WHY | clamd error: D | quarantine write failed: E
    connection guard
      connwatch inbound: 198.51.100.7 made 3000 connections in 1h (> 2500): blocked
      (or ``: not blocked (block = false)``, ``, whitelisted: never blocked``, or nothing:
      an alert)

Envelope addresses are client text: they are written as Python's ``ascii()`` writes them
(non-ASCII and control characters escaped, so one decision is one line) with ``>`` escaped
too (``\\x3e``), so ``from=<..>`` and ``to=<..>`` end at their own ``>``; an ordinary address
is written as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from passerelle.durations import DurationError, format_duration, parse_duration

GREYLIST_REASONS = (
    "new",
    "early",
    "restart",
    "delayed",
    "passed",
    "trusted",
    "client",
    "auth",
    "sender",
    "recipient",
    "auto",
    "store-error",
)
GREYLIST_DELAYING = ("new", "early", "restart")  # answered 451
SPAM_TIERS = ("none", "LOW", "MEDIUM", "HIGH", "unscanned", "tempfail")
ANTIVIRUS_RESULTS = ("clean", "virus", "rule", "held", "unscanned", "error")
CONNWATCH_ACTIONS = ("block", "alert")
CONNWATCH_OUTCOMES = ("blocked", "not-blocked", "whitelisted", "alert")


def escape_address(addr: str) -> str:
    """An envelope address as written in a decision line (see the module's docstring)."""
    return ascii(addr)[1:-1].replace(">", "\\x3e")


def unescape_address(text: str) -> str:
    """The inverse of ``escape_address``."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_unescape_one, text)


_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\'nrt])")
_SIMPLE = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def _unescape_one(m: re.Match[str]) -> str:
    e = m[1]
    return _SIMPLE[e] if len(e) == 1 else chr(int(e[1:], 16))


# -- greylist ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GreylistLine:
    verdict: str  # greylisted | accepted | skipped | tempfail (the last two: store-error)
    client: str
    reason: str
    group: str = ""
    sender: str | None = None  # None: an exemption or a store error (no triplet)
    recipient: str | None = None
    delay: int | None = None  # seconds, on "accepted ... reason=delayed|passed"
    detail: str = ""  # store-error: why


def greylist_decision(
    accepted: bool,
    client: str,
    group: str,
    sender: str,
    recipient: str,
    reason: str,
    delay: float | None = None,
) -> str:
    """A triplet's decision (one line per recipient)."""
    d = f" delay={format_duration(delay)}" if delay is not None else ""
    return (
        f"{'accepted' if accepted else 'greylisted'} client={client} group={group} "
        f"from=<{escape_address(sender)}> to=<{escape_address(recipient)}>{d} reason={reason}"
    )


def greylist_exempt(client: str, group: str, reason: str) -> str:
    """An exemption (trusted, client, auth, sender, recipient, auto): no triplet."""
    return f"accepted client={client} group={group} reason={reason}"


def greylist_store_error(client: str, why: str, tempfail: bool) -> str:
    what = "tempfail" if tempfail else "greylisting skipped"
    return f"store unavailable, {what} client={client} reason=store-error ({why})"


_GL = re.compile(
    r"(?P<verdict>greylisted|accepted) client=(?P<client>\S+) group=(?P<group>\S+)"
    r"(?: from=<(?P<sender>.*?)> to=<(?P<rcpt>.*)>)?(?: delay=(?P<delay>\w+))?"
    r" reason=(?P<reason>[\w-]+)$"
)
_GL_DOWN = re.compile(
    r"store unavailable, (?P<what>tempfail|greylisting skipped) client=(?P<client>\S+)"
    r" reason=store-error(?: \((?P<why>.*)\))?$"
)


def parse_greylist(msg: str) -> GreylistLine | None:
    m = _GL.match(msg)
    if m:
        delay = None
        if m["delay"]:
            try:
                delay = parse_duration(m["delay"])
            except DurationError:
                delay = None
        has_triplet = m["sender"] is not None
        return GreylistLine(
            m["verdict"],
            m["client"],
            m["reason"],
            m["group"],
            unescape_address(m["sender"]) if has_triplet else None,
            unescape_address(m["rcpt"]) if has_triplet else None,
            delay,
        )
    m = _GL_DOWN.match(msg)
    if m:
        verdict = "tempfail" if m["what"] == "tempfail" else "skipped"
        return GreylistLine(verdict, m["client"], "store-error", detail=m["why"] or "")
    return None


# -- spam --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpamLine:
    queue_id: str
    client: str  # host[ip] as the milter saw it
    tier: str  # none | LOW | MEDIUM | HIGH | unscanned | tempfail
    score: str = ""  # as written (``%g``)
    required: str = ""
    tests: str = ""
    rest: str = ""  # scanned: what follows tests=; unscanned / tempfail: the reason

    @property
    def ip(self) -> str:
        c = self.client
        if c.endswith("]") and "[" in c:
            return c[c.rindex("[") + 1 : -1]
        return c


def spam_scanned(
    score: float,
    required: float,
    tier: str,
    tests: list[str] | tuple[str, ...],
    spamd: str,
    took: float,
    ocr_images: int = 0,
    partial: tuple[int, int] | None = None,
) -> str:
    """The summary of a scanned message (the part after ``client=..``)."""
    return (
        f"score={score:g} required={required:g} tier={tier} "
        f"tests={','.join(tests) or 'none'} spamd={spamd} time={took:.2f}s"
        + (f" ocr_images={ocr_images}" if ocr_images else "")
        + (f" partial={partial[0]}/{partial[1]}" if partial else "")
    )


def spam_unavailable(why: object, tempfail: bool) -> str:
    if tempfail:
        return f"spamd unavailable, tempfail: {why}"
    return f"spamd unavailable, accepted unscanned: {why}"


def spam_line(queue_id: str, client: str, summary: str) -> str:
    return f"{queue_id}: client={client} {summary}"


_SPAM = re.compile(r"(?P<qid>\S+): client=(?P<client>\S*) (?P<rest>.*)$")
_SPAM_TIER = re.compile(
    r"score=(?P<score>\S+) required=(?P<required>\S+) tier=(?P<tier>\w+)"
    r"(?: tests=(?P<tests>\S*))?(?: (?P<rest>.*))?$"
)
_SPAM_DOWN = re.compile(r"spamd unavailable, (?P<what>tempfail|accepted unscanned): (?P<why>.*)$")


def parse_spam(msg: str) -> SpamLine | None:
    m = _SPAM.match(msg)
    if not m:
        return None
    qid, client, rest = m["qid"], m["client"], m["rest"]
    t = _SPAM_TIER.match(rest)
    if t:
        tier = t["tier"] if t["tier"] in SPAM_TIERS else "none"
        return SpamLine(
            qid, client, tier, t["score"], t["required"], t["tests"] or "", t["rest"] or ""
        )
    d = _SPAM_DOWN.match(rest)
    if d:
        tier = "tempfail" if d["what"] == "tempfail" else "unscanned"
        return SpamLine(qid, client, tier, rest=d["why"])
    return SpamLine(qid, client, "unscanned", rest=rest)


# -- antivirus ---------------------------------------------------------------------------------
def av_clean(status: str, host: str) -> str:
    return f"clean ({status}, clamd {host or '-'})"


def av_virus(signature: str, host: str) -> str:
    return f"virus {signature} (clamd {host})"


def av_quarantined(item_id: str, reason: str, detail: str) -> str:
    """``reason``: signature | rule | outbreak | uninspectable ...; ``detail``: the signature
    for ``signature``."""
    return f"quarantined {item_id} ({reason}: {detail})"


def av_rule(rule: str, detail: str) -> str:
    return f"rule {rule}: {detail}"


def av_stripped(names: list[str]) -> str:
    return f"stripped attachments ({', '.join(names)})"


def av_too_large(detail: str) -> str:
    return f"too large for clamd: {detail}"


def av_uninspectable(why: str) -> str:
    return f"uninspectable: {why}"


def av_clamd_error(detail: str) -> str:
    return f"clamd error: {detail}"


def av_quarantine_failed(exc: object) -> str:
    return f"quarantine write failed: {exc}"


@dataclass(frozen=True)
class AntivirusLine:
    queue_id: str
    sender: str
    rcpts: int
    size: int
    client_host: str
    client_ip: str
    result: str  # the text made by one of the av_* functions
    action: str  # accept | reject | discard | tempfail
    label: str  # one of ANTIVIRUS_RESULTS
    signature: str = ""


def antivirus_line(
    queue_id: str,
    sender: str,
    rcpts: int,
    size: int,
    client_host: str,
    client_ip: str,
    result: str,
    action: str,
) -> str:
    return (
        f"{queue_id or '-'}: from=<{escape_address(sender)}> rcpts={rcpts} size={size} "
        f"client={client_host} [{client_ip}] {result} -> {action}"
    )


_AV = re.compile(
    r"(?P<qid>\S+): from=<(?P<sender>.*?)> rcpts=(?P<rcpts>\d+) size=(?P<size>\d+) "
    r"client=(?P<host>\S*) \[(?P<ip>[^\]]*)\] (?P<result>.*) -> (?P<action>\w+)$"
)
_AV_VIRUS = re.compile(r"virus (?P<sig>.+) \(clamd [^()]*\)$")
_AV_QUARANTINED = re.compile(r"quarantined \S+ \((?P<reason>[\w-]+): (?P<detail>.*)\)$")


def antivirus_label(result: str, action: str) -> tuple[str, str]:
    """(label, signature) of a result text."""
    v = _AV_VIRUS.match(result)
    if v:
        return "virus", v["sig"]
    q = _AV_QUARANTINED.match(result)
    if q:
        if q["reason"] == "signature":
            return "virus", q["detail"]
        if q["reason"] == "outbreak":
            return "held", ""
        if q["reason"] == "rule":
            return "rule", ""
    if result.startswith("clean (clean"):
        return "clean", ""
    if result.startswith("clean ("):  # accepted unscanned: too large, clamd down
        return "unscanned", ""
    if result.startswith(("rule ", "stripped ")):
        return "rule", ""
    if result.startswith("too large"):
        return ("unscanned" if action == "accept" else "rule"), ""
    return "error", ""


def parse_antivirus(msg: str) -> AntivirusLine | None:
    m = _AV.match(msg)
    if not m:
        return None
    label, sig = antivirus_label(m["result"], m["action"])
    return AntivirusLine(
        m["qid"],
        unescape_address(m["sender"]),
        int(m["rcpts"]),
        int(m["size"]),
        m["host"],
        m["ip"],
        m["result"],
        m["action"],
        label,
        sig,
    )


# -- connection guard --------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnwatchLine:
    direction: str
    ip: str
    count: int
    window: str  # as written (``1h``)
    threshold: int
    outcome: str  # one of CONNWATCH_OUTCOMES

    @property
    def action(self) -> str:
        return "block" if self.outcome == "blocked" else "alert"


_CW_TAIL = {
    "blocked": ": blocked",
    "not-blocked": ": not blocked (block = false)",
    "whitelisted": ", whitelisted: never blocked",
    "alert": "",
}


def connwatch_line(
    direction: str, ip: str, count: int, window: str, threshold: int, outcome: str
) -> str:
    """``outcome``: blocked, not-blocked (block = false), whitelisted or alert."""
    return (
        f"connwatch {direction}: {ip} made {count} connections in {window} (> {threshold})"
        f"{_CW_TAIL[outcome]}"
    )


_CW = re.compile(
    r"connwatch (?P<dir>\w+): (?P<ip>\S+) made (?P<n>\d+) connections in (?P<win>\S+)"
    r" \(> (?P<thr>\d+)\)(?P<rest>.*)$"
)


def parse_connwatch(msg: str) -> ConnwatchLine | None:
    m = _CW.match(msg)
    if not m:
        return None
    rest = m["rest"]
    outcome = next((o for o, tail in _CW_TAIL.items() if tail and rest == tail), "alert")
    if outcome == "alert" and rest.startswith(": blocked"):
        outcome = "blocked"
    return ConnwatchLine(m["dir"], m["ip"], int(m["n"]), m["win"], int(m["thr"]), outcome)
