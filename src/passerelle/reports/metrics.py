"""Prometheus metrics in node_exporter's textfile format (``passerelle metrics write``).

Run every minute by a timer. Each run:

1. reads the mail log from where the last run stopped (offset and inode in the state file;
   after a rotation the rest of the rotated file, then the new one), and adds the milters'
   decisions (``passerelle.reports.events``) to counters kept in the state file, so the counters
   only grow (Prometheus ``_total`` semantics) and each log byte is read once;
2. counts the messages in sendmail's queues (``qf*`` files) and the connection guard's
   active blocks (its state file);
3. writes ``<textfile_dir>/passerelle.prom`` atomically (temporary file + rename), which the
   node_exporter textfile collector serves.

The state also keeps today's and yesterday's counters per local day, for ``passerelle status``.

Metrics::

    passerelle_mail_queue_messages{queue="/var/spool/mqueue"}   gauge
    passerelle_greylist_decisions_total{reason="new"}            counter (reasons: events.py)
    passerelle_spam_messages_total{tier="HIGH"}                  counter
    passerelle_antivirus_messages_total{result="virus"}          counter
    passerelle_antivirus_viruses_total                           counter
    passerelle_connwatch_decisions_total{action="block"}         counter
    passerelle_connwatch_blocked_clients                         gauge
    passerelle_metrics_log_bytes_total                           counter
    passerelle_metrics_errors                                    gauge (problems this run)
    passerelle_metrics_last_run_timestamp_seconds                gauge
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from passerelle.atomicfile import atomic_write
from passerelle.connwatch.blocks import BlockError, load_state
from passerelle.maillog import CHUNK_SIZE, TimestampReader, rotated_files
from passerelle.reports.config import OpsConfig
from passerelle.reports.events import (
    ANTIVIRUS_RESULTS,
    CONNWATCH_ACTIONS,
    GREYLIST_REASONS,
    SPAM_TIERS,
    Tally,
    scan_events,
)
from passerelle.rootfiles import exclusive_lock, read_trusted_file

STATE_VERSION = 1


# -- reading the log from where the last run stopped --------------------------------------
@dataclass
class Cursor:
    path: str
    inode: int = 0
    offset: int = 0


def read_new(cursor: Cursor, first_read_max: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Whole lines appended since ``cursor`` (updated in place as they are yielded).

    - same inode, grown: from the offset; shrunk (truncated): from 0;
    - another inode (rotated): the rest of the old file if a plain rotation still has that
      inode (``mail.log.1``), then the new file from 0;
    - first run (inode 0): at most the last ``first_read_max`` bytes.
    A line being written (no newline yet) is left for the next run.
    """
    p = Path(cursor.path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return
    if cursor.inode == 0:
        cursor.inode, cursor.offset = st.st_ino, max(0, st.st_size - first_read_max)
        if cursor.offset:
            yield from _read_from(p, cursor, chunk_size, align=True)
            return
    elif cursor.inode != st.st_ino:
        for old in rotated_files(p):
            if old.suffix == ".gz" or old == p:
                continue
            try:
                if old.stat().st_ino == cursor.inode:
                    yield from _read_from(old, cursor, chunk_size)
                    break
            except OSError:
                continue
        cursor.inode, cursor.offset = st.st_ino, 0
    elif st.st_size < cursor.offset:
        cursor.offset = 0
    yield from _read_from(p, cursor, chunk_size)


def _read_from(p: Path, cursor: Cursor, chunk_size: int, align: bool = False) -> Iterator[bytes]:
    with p.open("rb") as fh:
        fh.seek(cursor.offset)
        if align and cursor.offset:
            cursor.offset += len(fh.readline())
        rest = b""
        while True:
            data = fh.read(chunk_size)
            if not data:
                break
            data = rest + data
            nl = data.rfind(b"\n")
            if nl < 0:
                rest = data
                continue
            rest = data[nl + 1 :]
            cursor.offset += nl + 1
            yield data[: nl + 1]


# -- sendmail's queue ----------------------------------------------------------------------
def queue_length(directory: str | Path) -> int | None:
    """``qf*`` files in a sendmail queue directory, its ``qf/`` subfolder and its queue
    groups' subfolders (``q1/``, ``q1/qf/``); None when the directory does not exist."""
    d = Path(directory)
    if not d.is_dir():
        return None
    n = 0
    todo = [d]
    depth = {d: 0}
    while todo:
        cur = todo.pop()
        try:
            entries = list(os.scandir(cur))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("qf") and e.is_file(follow_symlinks=False):
                n += 1
            elif e.is_dir(follow_symlinks=False) and depth[cur] < 2:
                sub = Path(e.path)
                depth[sub] = depth[cur] + 1
                todo.append(sub)
    return n


# -- state ---------------------------------------------------------------------------------
@dataclass
class MetricsState:
    cursor: Cursor
    counters: dict[str, int] = field(default_factory=dict)  # "area|label" -> total
    days: dict[str, dict[str, int]] = field(default_factory=dict)  # date -> counters
    log_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "cursor": vars(self.cursor),
            "counters": self.counters,
            "days": self.days,
            "log_bytes": self.log_bytes,
        }


def load_metrics_state(path: str | Path, log: str) -> MetricsState:
    """The saved state; missing or unreadable: a fresh one (counters restart at 0, which
    Prometheus reads as a counter reset)."""
    try:
        data = json.loads(read_trusted_file(path))
        c = data["cursor"]
        cursor = Cursor(str(c["path"]), int(c["inode"]), int(c["offset"]))
        if cursor.path != log:
            cursor = Cursor(log)
        return MetricsState(
            cursor,
            {str(k): int(v) for k, v in data["counters"].items()},
            {str(d): {str(k): int(v) for k, v in m.items()} for d, m in data["days"].items()},
            int(data.get("log_bytes", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return MetricsState(Cursor(log))


def add_tally(state: MetricsState, tally: Tally, day_of: dict[str, dict[str, int]]) -> None:
    for (area, label), n in tally.counts.items():
        k = f"{area}|{label}"
        state.counters[k] = state.counters.get(k, 0) + n
    for day, counts in day_of.items():
        d = state.days.setdefault(day, {})
        for k, n in counts.items():
            d[k] = d.get(k, 0) + n
    for old in sorted(state.days)[:-2]:  # keep today and yesterday
        del state.days[old]


# -- rendering (pure) ----------------------------------------------------------------------
def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_: str, samples: Sequence[tuple[str, float]]) -> list[str]:
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        v = int(value) if float(value).is_integer() else value
        out.append(f"{name}{labels} {v}")
    return out


def render(
    counters: Mapping[str, int],
    queues: Mapping[str, int],
    blocked: int | None,
    log_bytes: int,
    errors: int,
    now: float,
) -> str:
    """The textfile; every known label value is present (0 until it happens)."""

    def series(area: str, label_name: str, known: Sequence[str]) -> list[tuple[str, float]]:
        labels = list(known) + sorted(
            k.split("|", 1)[1]
            for k in counters
            if k.startswith(area + "|") and k.split("|", 1)[1] not in known
        )
        return [
            (f'{{{label_name}="{_esc(lbl)}"}}', counters.get(f"{area}|{lbl}", 0)) for lbl in labels
        ]

    lines: list[str] = []
    lines += _family(
        "passerelle_mail_queue_messages",
        "gauge",
        "Messages in a sendmail queue (qf files).",
        [(f'{{queue="{_esc(q)}"}}', n) for q, n in sorted(queues.items())],
    )
    lines += _family(
        "passerelle_greylist_decisions_total",
        "counter",
        "Greylist milter decisions (one per recipient) by reason.",
        series("greylist", "reason", GREYLIST_REASONS),
    )
    lines += _family(
        "passerelle_spam_messages_total",
        "counter",
        "Messages seen by the spam milter by tier.",
        series("spam", "tier", SPAM_TIERS),
    )
    lines += _family(
        "passerelle_antivirus_messages_total",
        "counter",
        "Messages seen by the antivirus milter by result.",
        series("antivirus", "result", ANTIVIRUS_RESULTS),
    )
    lines += _family(
        "passerelle_antivirus_viruses_total",
        "counter",
        "Viruses found by the antivirus milter.",
        [("", counters.get("antivirus|virus", 0))],
    )
    lines += _family(
        "passerelle_connwatch_decisions_total",
        "counter",
        "Connection guard decisions (clients over the alert or block threshold).",
        series("connwatch", "action", CONNWATCH_ACTIONS),
    )
    if blocked is not None:
        lines += _family(
            "passerelle_connwatch_blocked_clients",
            "gauge",
            "Clients blocked by the connection guard now.",
            [("", blocked)],
        )
    lines += _family(
        "passerelle_metrics_log_bytes_total",
        "counter",
        "Mail log bytes read by passerelle metrics.",
        [("", log_bytes)],
    )
    lines += _family(
        "passerelle_metrics_errors",
        "gauge",
        "Problems met by the last passerelle metrics run (see its output).",
        [("", errors)],
    )
    lines += _family(
        "passerelle_metrics_last_run_timestamp_seconds",
        "gauge",
        "When passerelle metrics last ran.",
        [("", round(now, 3))],
    )
    return "\n".join(lines) + "\n"


# -- one run (I/O) -------------------------------------------------------------------------
@dataclass
class MetricsRun:
    text: str
    state: MetricsState
    queues: dict[str, int]
    blocked: int | None
    errors: list[str]
    read: int


def collect(cfg: OpsConfig, now: float, tz: tzinfo | None = None) -> MetricsRun:
    """Read what is new, update the state (not saved), render the textfile."""
    errors: list[str] = []
    log = cfg.logs[0]
    state = load_metrics_state(cfg.metrics.state, log)
    times = TimestampReader(now, tz)
    tally = Tally(keep_details=False)
    day_of: dict[str, dict[str, int]] = {}
    read = 0
    try:
        for chunk in read_new(state.cursor, cfg.metrics.first_read_max):
            read += len(chunk)
            for ev in scan_events(chunk, times):
                tally.add(ev)
                day = datetime.fromtimestamp(ev.ts, tz).strftime("%Y-%m-%d")
                d = day_of.setdefault(day, {})
                k = f"{ev.area}|{ev.label}"
                d[k] = d.get(k, 0) + 1
    except OSError as exc:
        errors.append(f"{log}: {exc}")
    if not Path(log).exists():
        errors.append(f"{log}: no such file")
    state.log_bytes += read
    add_tally(state, tally, day_of)
    queues: dict[str, int] = {}
    for q in cfg.queue_dirs:
        n = queue_length(q)
        if n is not None:
            queues[q] = n
    blocked: int | None = None
    if Path(cfg.connwatch_state).exists():
        try:
            blocked = sum(1 for b in load_state(cfg.connwatch_state).values() if b.expires > now)
        except BlockError as exc:
            errors.append(str(exc))
    text = render(state.counters, queues, blocked, state.log_bytes, len(errors), now)
    return MetricsRun(text, state, queues, blocked, errors, read)


def write(cfg: OpsConfig, run: MetricsRun) -> Path:
    """Save the state, then publish the textfile atomically (node_exporter never sees half a
    file: a temporary file in the same directory renamed over the old one)."""
    atomic_write(cfg.metrics.state, (json.dumps(run.state.to_json()) + "\n").encode(), 0o640)
    target = Path(cfg.metrics.textfile_dir) / cfg.metrics.file
    atomic_write(target, run.text.encode(), 0o644)
    return target


def collect_and_write(
    cfg: OpsConfig, now: float, tz: tzinfo | None = None
) -> tuple[MetricsRun, Path]:
    """One run at a time (the timer and an operator's run do not read the same lines
    twice; each state is consistent anyway: offset and counters are saved together). The
    lock file is refused if it is not one root may trust (``passerelle.rootfiles``)."""
    with exclusive_lock(f"{cfg.metrics.state}.lock"):
        run = collect(cfg, now, tz)
        return run, write(cfg, run)


def today_counts(cfg: OpsConfig, now: float, tz: tzinfo | None = None) -> dict[str, int] | None:
    """Today's counters from the state the last ``metrics write`` saved (None: no state)."""
    p = Path(cfg.metrics.state)
    if not p.exists():
        return None
    state = load_metrics_state(p, cfg.logs[0])
    return dict(state.days.get(datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d"), {}))
