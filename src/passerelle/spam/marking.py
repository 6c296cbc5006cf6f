"""Pure marking logic: tiers, subject tag, header sanitising, header edits.

Tiers (defaults; every threshold is configurable, comparisons are exactly these):

- ``score > high`` (5.0): subject prefixed with the tag and ``X-status: HIGH``;
- ``medium < score <= high`` (4.0, 5.0]: ``X-status: MEDIUM``;
- ``low < score <= medium`` (3.0, 4.0]: ``X-status: LOW``;
- ``score <= low``: no ``X-status``.

``X-Spam-Status: Yes`` follows spamd's own verdict (``score >= required``), so a message at
exactly 5.0 with ``required=5.0`` says ``Yes`` but is tier MEDIUM, as in the reference.

A message bigger than ``max_size`` is scanned on its first ``max_size`` bytes and says so in
``X-Spam-Partial`` (``partial_header``); the tiers apply to that partial verdict.

Every header the milter writes is owned: ``strip_headers`` plus each configured output name
(``owned_patterns``) is removed from incoming mail before ours are added. Edits and their
libmilter semantics (1-based index per name, deletions last occurrence first) are those of
``passerelle.milterheaders``, shared with the other milters.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header

from passerelle.milterheaders import HeaderEdit, strip_edits
from passerelle.spam.config import Tiers

__all__ = ["Header", "HeaderEdit", "ScanResult"]  # HeaderEdit re-exported for callers

Header = tuple[str, str]


@dataclass(frozen=True)
class ScanResult:
    """What spamd said about a message."""

    score: float
    threshold: float
    is_spam: bool
    rules: tuple[str, ...] = ()


def tier(score: float, tiers: Tiers) -> str | None:
    """``HIGH`` / ``MEDIUM`` / ``LOW`` or None, with the boundaries documented above."""
    if score > tiers.high:
        return "HIGH"
    if score > tiers.medium:
        return "MEDIUM"
    if score > tiers.low:
        return "LOW"
    return None


def format_score(score: float) -> str:
    """``5.2``, ``5.0``, ``5.01``, ``-0.1``: at least one decimal, no trailing noise."""
    text = f"{score:.3f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return "0.0" if text == "-0.0" else text


def unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def decode_subject(value: str) -> str:
    """The human text of a Subject value (RFC 2047 decoded when possible)."""
    raw = unfold(value)
    try:
        return str(make_header(decode_header(raw))).strip()
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return raw


def is_tagged(subject_value: str, tag: str) -> bool:
    raw = unfold(subject_value)
    return raw.startswith(tag) or decode_subject(raw).startswith(tag)


def subject_edit(headers: Sequence[Header], tag: str) -> HeaderEdit | None:
    """The edit that puts ``tag`` in front of the subject, or None if already there."""
    for name, value in headers:
        if name.lower() == "subject":
            if is_tagged(value, tag):
                return None
            raw = value.strip()
            return HeaderEdit("change", "Subject", f"{tag} {raw}" if raw else tag, 1)
    return HeaderEdit("add", "Subject", tag)


def owned_patterns(tiers: Tiers) -> tuple[str, ...]:
    """Names removed from incoming mail: ``strip_headers`` and every header we write."""
    ours = (
        tiers.status_header,
        tiers.score_header,
        tiers.spam_status_header,
        tiers.checker_header,
        tiers.partial_header,
    )
    return tuple(tiers.strip_headers) + tuple(n for n in ours if n)


def sanitise(headers: Sequence[Header], patterns: Sequence[str]) -> list[HeaderEdit]:
    """Deletions for every header matching ``patterns`` (case-insensitive, ``*`` = prefix).

    Emitted last occurrence first, per name, so the indexes stay valid.
    """
    return strip_edits(headers, patterns)


@dataclass(frozen=True)
class Partial:
    """A message scanned on its first ``scanned`` bytes only (of ``size``)."""

    scanned: int
    size: int
    limit: int

    def note(self) -> str:
        return f"first {self.scanned} of {self.size} bytes scanned (max_size {self.limit})"


def fold_list(prefix: str, items: Sequence[str], width: int = 76) -> str:
    """``prefix`` followed by comma-separated ``items``, folded for header lines."""
    if not items:
        return prefix + "none"
    lines: list[str] = []
    line = prefix
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) > width and line.strip() and line != prefix:
            lines.append(line)
            line = "\t" + piece
        else:
            line += piece
    lines.append(line)
    return "\n".join(lines)


def spam_status_value(result: ScanResult) -> str:
    head = (
        f"{'Yes' if result.is_spam else 'No'}, score={format_score(result.score)} "
        f"required={format_score(result.threshold)} tests="
    )
    return fold_list(head, result.rules)


def marking_edits(
    headers: Sequence[Header],
    result: ScanResult,
    tiers: Tiers,
    checker: str = "",
    partial: Partial | None = None,
) -> list[HeaderEdit]:
    """All edits for a scanned message: sanitise, tag the subject, add our headers."""
    edits = sanitise(headers, owned_patterns(tiers))
    level = tier(result.score, tiers)
    if level == "HIGH":
        subj = subject_edit(headers, tiers.subject_tag)
        if subj is not None:
            edits.append(subj)
    if tiers.checker_header and checker:
        edits.append(HeaderEdit("add", tiers.checker_header, checker))
    edits.append(HeaderEdit("add", tiers.score_header, format_score(result.score)))
    edits.append(HeaderEdit("add", tiers.spam_status_header, spam_status_value(result)))
    if level is not None:
        edits.append(HeaderEdit("add", tiers.status_header, level))
    if partial is not None:
        edits.append(HeaderEdit("add", tiers.partial_header, partial.note()))
    return edits


def not_scanned_edits(
    headers: Sequence[Header], reason: str, tiers: Tiers, checker: str = ""
) -> list[HeaderEdit]:
    """Edits for a message that was not scanned: outside values removed, reason stated."""
    edits = sanitise(headers, owned_patterns(tiers))
    if tiers.checker_header and checker:
        edits.append(HeaderEdit("add", tiers.checker_header, checker))
    edits.append(HeaderEdit("add", tiers.spam_status_header, f"not scanned ({reason})"))
    return edits


def apply_edits(headers: Sequence[Header], edits: Sequence[HeaderEdit]) -> list[Header]:
    """Apply edits the way sendmail does (for tests and tools).

    A deleted header keeps its slot (and still counts for indexes) until the end; a change
    whose index is past the last occurrence adds the header.
    """
    slots: list[list[str | None]] = [[n, v] for n, v in headers]
    for e in edits:
        if e.action == "add":
            slots.append([e.name, e.value])
            continue
        count = 0
        target = None
        for slot in slots:
            if str(slot[0]).lower() == e.name.lower():
                count += 1
                if count == e.index:
                    target = slot
                    break
        if target is None:
            if e.value:
                slots.append([e.name, e.value])
        elif e.value == "":
            target[1] = None
        else:
            target[1] = e.value
    return [(str(s[0]), s[1]) for s in slots if s[1] is not None]


_RECEIVED_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _received_word(value: str, default: str) -> str:
    return _RECEIVED_UNSAFE.sub("?", value.strip())[:255] or default


def received_header(
    helo: str,
    hostname: str,
    ip: str,
    by: str,
    queue_id: str,
    when: float,
    envelope_from: str | None = None,
) -> str:
    """The Received value sendmail will add for this hop, for spamd's eyes only.

    Milters do not see the Received header sendmail adds for the current hop, so without this
    SpamAssassin knows nothing of the client (rule NO_RECEIVED, no relay checks). ``hostname``
    is the client's name from reverse DNS, or ``[ip]`` when it has none (as sendmail gives it).
    ``envelope_from`` (the MAIL FROM address, ``""`` for the null sender, None: not known) is
    written as ``(envelope-from <...>)``, which SpamAssassin reads as the envelope sender:
    its SPF check of the sender needs it (sendmail's own Received line does not carry it).
    Values come from the SMTP session (HELO is the client's word): anything outside printable
    ASCII is replaced so that nothing a client says can fold or inject a header line.
    """
    rdns = "" if not hostname or hostname.startswith("[") else _received_word(hostname, "") + " "
    addr = _received_word(ip, "0.0.0.0")  # noqa: S104 (an address written, not bound)
    qid = _received_word(queue_id, "unknown")
    envelope = ""
    if envelope_from is not None:
        sender = _RECEIVED_UNSAFE.sub("?", envelope_from.strip().strip("<>"))[:320]
        envelope = f" (envelope-from <{sender.replace('>', '?').replace('<', '?')}>)"
    return (
        f"from {_received_word(helo, 'unknown')} ({rdns}[{addr}]) "
        f"by {_received_word(by, 'localhost')} with ESMTP id {qid}{envelope}; "
        f"{email.utils.formatdate(when, localtime=False)}"
    )
