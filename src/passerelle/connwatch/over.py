"""The clients over the alert threshold in the guard's last run: the file its run writes
(``over_file``, beside the status file) and the console's gateway side reads.

One JSON object, replaced atomically by every run that is not a dry run (an empty list when
nobody is over, so a reader never shows a stale list)::

    {"version": 1, "at": 1795777200.0, "window": 3600, "direction": "inbound",
     "alert_threshold": 500, "block_threshold": 2500, "counts": "local",
     "total": 3, "clients": [{"ip": "198.51.100.7", "count": 3000, "decision": "block"}, ...]}

``counts`` is ``local`` (this host's sessions) or ``fleet`` (the sum over every gateway, from
the shared sink). ``clients`` holds the busiest ``OVER_MAX`` clients, busiest first; ``total``
is how many were over, so a reader can say "and K more". ``decision`` is one of
``DECISIONS``: ``block`` (blocked by this run), ``already blocked`` (blocked by an earlier
run, the block still active), ``not blocked`` (over the block threshold but not blocked:
blocking off, or the run could not apply its blocks), ``alert`` and ``whitelisted`` (never
blocked).

``read_over`` reads it back bounded (``FILE_MAX`` bytes) and checks its shape; anything else
raises ``OverFileError`` with why: ``OverFileMissing`` when no run has written it yet (the
normal state after an install, until the guard's next run), a fault otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from passerelle.atomicfile import atomic_write

VERSION = 1
OVER_MAX = 500  # clients listed (the busiest); the rest only counted in ``total``
FILE_MAX = 256 * 1024  # bytes read back (OVER_MAX clients take about 40 kB)
DECISIONS = ("block", "already blocked", "not blocked", "alert", "whitelisted")
COUNTS = ("local", "fleet")


class OverFileError(Exception):
    """The over file is missing, unreadable, too large or not what a run writes."""


class OverFileMissing(OverFileError):
    """No run has written the over file yet."""


class _Decision(Protocol):
    @property
    def ip(self) -> str: ...

    @property
    def count(self) -> int: ...

    @property
    def action(self) -> str: ...


def decision_of(d: _Decision, blocked_now: Collection[str], blocked_before: Collection[str]) -> str:
    """The word for one client over the alert threshold: ``blocked_now`` are the blocks in
    force after the run, ``blocked_before`` those it found."""
    if d.action == "whitelisted":
        return "whitelisted"
    if d.ip in blocked_now:
        return "already blocked" if d.ip in blocked_before else "block"
    return "not blocked" if d.action == "block" else "alert"


def over_record(
    decisions: Sequence[_Decision],
    blocked_now: Collection[str],
    blocked_before: Collection[str],
    *,
    at: float,
    window: int,
    direction: str,
    alert_threshold: int,
    block_threshold: int,
    counts: str,
    limit: int = OVER_MAX,
) -> dict[str, Any]:
    """The file's content; ``decisions`` busiest first (``guard.decide``)."""
    return {
        "version": VERSION,
        "at": at,
        "window": window,
        "direction": direction,
        "alert_threshold": alert_threshold,
        "block_threshold": block_threshold,
        "counts": counts,
        "total": len(decisions),
        "clients": [
            {"ip": d.ip, "count": d.count, "decision": decision_of(d, blocked_now, blocked_before)}
            for d in decisions[:limit]
        ],
    }


def write_over(path: str | Path, record: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(record, separators=(",", ":")) + "\n").encode(), 0o644)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_over(path: str | Path) -> dict[str, Any]:
    """The file as written by a run (at most ``FILE_MAX`` bytes read); ``OverFileMissing``
    when no run has written it yet, ``OverFileError`` (why) when it is unreadable, too large
    or of another shape."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(FILE_MAX + 1)
    except FileNotFoundError:
        raise OverFileMissing(f"{path}: no run has written it yet") from None
    except OSError as exc:
        raise OverFileError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > FILE_MAX:
        raise OverFileError(f"{path}: larger than {FILE_MAX} bytes")
    try:
        rec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: [[[[...
        raise OverFileError(f"{path}: not JSON") from None
    if not isinstance(rec, dict) or rec.get("version") != VERSION:
        raise OverFileError(f"{path}: not a version {VERSION} over file")
    for key in ("at", "window", "alert_threshold", "block_threshold", "total"):
        if not _number(rec.get(key)):
            raise OverFileError(f"{path}: {key} is not a number")
    if rec.get("counts") not in COUNTS or not isinstance(rec.get("direction"), str):
        raise OverFileError(f"{path}: counts or direction missing")
    clients = rec.get("clients")
    if not isinstance(clients, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("ip"), str)
        and _number(c.get("count"))
        and c.get("decision") in DECISIONS
        for c in clients
    ):
        raise OverFileError(f"{path}: clients is not a list of ip, count, decision")
    return rec
