"""The gateway's side of the message trace: on each gateway-sync pass, the new part of this
gateway's mail log is read from the offset the last pass saved, its lines about messages are
parsed by the existing parsers (``maillog.parse_sendmail`` for sendmail's, ``decisionlog``
for the milters' decisions) and stored as ``trace.TraceEvent`` rows in the console's
database. The console never reads a gateway's disk, and purges the events itself
(``trace.Purger``: a gateway's database user may not delete).

- The offset (a small JSON state file: inode, offset, inside an over-long line) is saved
  only after the events are stored: a pass that fails is read again (an event may then be
  stored twice; the page shows it once).
- Rotation: a log whose inode changed was renamed: the rest of the old file is read first
  when it is still next to it (``mail.log.1``, RedHat's ``maillog-DATE``; not compressed
  yet), then the new file from its start; a log shorter than the offset was truncated
  (copytruncate): read from its start.
- Bounded: at most ``max_bytes`` per pass (5 MB, a few minutes of a busy gateway); the rest
  is read by the next passes. A line longer than ``max_line`` is skipped (and counted), never
  held in memory whole: the log holds client text.
- A line that cannot be read is skipped and counted (``ShipStats.skipped``); no exception of
  a line's parsing leaves ``events_of``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from passerelle import decisionlog
from passerelle.atomicfile import atomic_write
from passerelle.console.trace import TraceEvent, TraceStore
from passerelle.durations import format_duration
from passerelle.maillog import (
    PROGRAMS,
    TimestampReader,
    is_queue_id,
    rotated_files,
    sendmail_fields,
    split_syslog,
)
from passerelle.reports.events import AREAS

log = logging.getLogger("passerelle.console.trace_ship")
DEFAULT_STATE = "/var/lib/passerelle/console-trace.json"
MAX_BYTES = 5 << 20
MAX_LINE = 16 << 10
RCPTS_MAX = 100  # recipients of one line stored


@dataclass(frozen=True)
class ShipState:
    inode: int = 0
    offset: int = 0
    skipping: bool = False  # inside a line longer than max_line: drop up to its end


@dataclass
class ShipStats:
    bytes: int = 0
    lines: int = 0
    events: int = 0
    skipped: int = 0  # over-long lines and lines that could not be read
    rotated: bool = False
    more: bool = False  # the bound was reached: the rest next pass
    missing: bool = False  # no log (yet)
    errors: list[str] = field(default_factory=list)


def load_state(path: str) -> ShipState:
    """The saved state; a missing or unreadable file starts over (offset 0)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return ShipState(int(data["inode"]), int(data["offset"]), bool(data.get("skipping")))
    except (OSError, ValueError, KeyError, TypeError):
        return ShipState()


def save_state(path: str, state: ShipState) -> None:
    body = {"inode": state.inode, "offset": state.offset, "skipping": state.skipping}
    atomic_write(path, (json.dumps(body) + "\n").encode(), 0o600)


def _read_from(
    path: str | Path, state: ShipState, budget: int, max_line: int, stats: ShipStats
) -> tuple[list[bytes], ShipState]:
    """Whole lines of ``path`` from ``state.offset``, at most ``budget`` bytes."""
    with open(path, "rb") as fh:
        fh.seek(state.offset)
        data = fh.read(budget)
    stats.bytes += len(data)
    if len(data) == budget:
        stats.more = True
    offset, skipping = state.offset, state.skipping
    pos = 0
    if skipping:
        nl = data.find(b"\n")
        if nl < 0:
            return [], ShipState(state.inode, offset + len(data), True)
        pos, skipping = nl + 1, False
    last = data.rfind(b"\n")
    lines: list[bytes] = []
    if last >= pos:
        for line in data[pos:last].split(b"\n"):
            if len(line) > max_line:
                stats.skipped += 1
            else:
                lines.append(line + b"\n")
        pos = last + 1
    tail = len(data) - pos
    if tail > max_line or (pos == 0 and tail == budget and budget >= max_line):
        stats.skipped += 1  # a line longer than the bound: dropped up to its end
        return lines, ShipState(state.inode, offset + len(data), True)
    return lines, ShipState(state.inode, offset + pos, False)  # a partial line waits


def _old_file(path: str, inode: int) -> Path | None:
    for f in rotated_files(path):
        if f.suffix == ".gz" or str(f) == str(path):
            continue
        try:
            if os.stat(f).st_ino == inode:
                return f
        except OSError:
            continue
    return None


def read_new(
    path: str, state: ShipState, max_bytes: int = MAX_BYTES, max_line: int = MAX_LINE
) -> tuple[list[bytes], ShipState, ShipStats]:
    """The lines written since ``state``, at most ``max_bytes``; the new state; what was read.

    ``FileNotFoundError`` when the log is not there."""
    stats = ShipStats()
    max_line = min(max_line, max_bytes)
    st = os.stat(path)
    lines: list[bytes] = []
    if state.inode and state.inode != st.st_ino:
        stats.rotated = True
        old = _old_file(path, state.inode)
        if old is not None:
            lines, state = _read_from(old, state, max_bytes, max_line, stats)
            if stats.more:
                return lines, state, stats  # the old file's rest next pass
        state = ShipState(st.st_ino, 0, False)
    elif not state.inode:
        state = ShipState(st.st_ino, 0, False)
    elif st.st_size < state.offset:
        stats.rotated = True
        state = ShipState(st.st_ino, 0, False)
    budget = max_bytes - stats.bytes
    if budget > 0 and st.st_size > state.offset:
        more, state = _read_from(path, state, budget, max_line, stats)
        lines += more
    return lines, state, stats


# -- lines to events ------------------------------------------------------------------------
def _decision(area: str, gateway: str, ts: float, msg: str) -> list[TraceEvent]:
    if area == "greylist":
        g = decisionlog.parse_greylist(msg)
        if g is None:
            return []
        detail = f"reason={g.reason}"
        if g.delay is not None:
            detail += f" delay={format_duration(g.delay)}"
        if g.detail:
            detail += f" ({g.detail})"
        return [
            TraceEvent.of(
                gateway,
                ts,
                "greylist",
                relay=g.client,
                sender=g.sender or "",
                recipient=g.recipient or "",
                status=g.verdict,
                detail=detail,
            )
        ]
    if area == "spam":
        s = decisionlog.parse_spam(msg)
        if s is None:
            return []
        scanned = f"score={s.score} required={s.required} tests={s.tests}"
        detail = scanned if s.score else s.rest
        qid = s.queue_id if is_queue_id(s.queue_id.encode("utf-8")) else ""
        return [
            TraceEvent.of(
                gateway, ts, "spam", queue_id=qid, relay=s.ip, status=s.tier, detail=detail
            )
        ]
    if area == "antivirus":
        a = decisionlog.parse_antivirus(msg)
        if a is None:
            return []
        qid = a.queue_id if is_queue_id(a.queue_id.encode("utf-8")) else ""
        return [
            TraceEvent.of(
                gateway,
                ts,
                "antivirus",
                queue_id=qid,
                sender=a.sender,
                relay=a.client_ip,
                status=a.label,
                detail=f"{a.result} -> {a.action}",
            )
        ]
    return []


def _events_of_line(line: bytes, gateway: str, times: TimestampReader) -> list[TraceEvent]:
    # What a line is comes from its program, never from text a client could put in it.
    s = split_syslog(line, times)
    if s is None:
        return []
    program = s.program.encode()
    area = AREAS.get(program)
    if area is not None:
        return _decision(area, gateway, s.ts, s.message.decode("utf-8", "replace"))
    m = sendmail_fields(s) if program in PROGRAMS else None
    if m is None:
        return []
    common = {
        "queue_id": m.queue_id,
        "next_queue_id": m.next_queue_id,
        "message_id": m.message_id,
        "sender": m.sender,
        "relay": m.relay,
        "mailer": m.mailer,
        "dsn": m.dsn,
        "status": m.status,
        "detail": m.detail,
    }
    rcpts = m.recipients[:RCPTS_MAX] or ("",)
    return [TraceEvent.of(gateway, m.ts, m.kind, recipient=r, **common) for r in rcpts]


def events_of(
    lines: Iterable[bytes], gateway: str, times: TimestampReader
) -> tuple[list[TraceEvent], int]:
    """The trace events of whole log lines, and how many lines could not be read."""
    events: list[TraceEvent] = []
    skipped = 0
    for line in lines:
        try:
            events += _events_of_line(line, gateway, times)
        except Exception:  # client text in a log line: never more than this line lost
            skipped += 1
    return events, skipped


def ship(
    conn: object,
    gateway: str,
    mail_log: str,
    state_path: str,
    now: float,
    max_bytes: int = MAX_BYTES,
    max_line: int = MAX_LINE,
) -> ShipStats:
    """One pass: read, parse, store, then save the offset."""
    store = TraceStore(conn)
    store.migrate()
    state = load_state(state_path)
    try:
        lines, new_state, stats = read_new(mail_log, state, max_bytes, max_line)
    except FileNotFoundError:
        return ShipStats(missing=True)
    stats.lines = len(lines)
    events, skipped = events_of(lines, gateway, TimestampReader(now))
    stats.skipped += skipped
    stats.events = store.add(events)
    save_state(state_path, new_state)
    return stats
