"""The fleet-wide index of held messages, in the shared database.

Each gateway adds a row for every message it quarantines (``upsert``, idempotent on
(gateway, quarantine id): indexing the same item again changes nothing but what it says);
the console searches it, shows one message, and records what became of it (``mark``).

- A search is built from a fixed set of fields (``parse_query``): an unknown field, a
  malformed date, a negative page or an oversized term raises ``QueryError`` (a
  ``ValueError``) with a message fit for the page. Input is only ever a bound parameter.
- Text terms (recipient, sender, subject) match a substring, case-insensitively: the row
  keeps a case-folded copy of each searched column and the term is folded the same way, so
  SQLite and MariaDB agree (SQLite's own LIKE folds ASCII only); the LIKE wildcards in a term
  are escaped (``ESCAPE '!'``), so ``50%`` means the three characters.
- Results come newest first (``held_at``, then the row id), ``limit`` + ``offset``; one more
  row than asked is read to know whether a next page exists, and nothing is counted. The
  newest-first walk stops after a page; on SQLite its index carries every searched column,
  so a search matching few rows reads the index, not the table (bench/console_bench.py).
- A state only moves forward: held -> released -> deleted (or held -> deleted); an upsert
  from a gateway that still lists an item as held does not undo a release.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from passerelle.console import schema
from passerelle.console.requests import check_gateway

SCHEMA_VERSION = 1
VERSION_TABLE = "console_quarantine_schema_version"
SCHEMA_LOCK = "passerelle_console_quarantine_schema"

REASONS = ("virus", "outbreak", "rule", "spam")
STATES = ("held", "released", "deleted")
_STATE_RANK = {"held": 0, "released": 1, "deleted": 2}
FIELDS = (
    "recipient",
    "sender",
    "subject",
    "reason",
    "gateway",
    "state",
    "since",
    "until",
    "limit",
    "offset",
)
LIMIT_DEFAULT = 50
LIMIT_MAX = 1000
OFFSET_MAX = 1_000_000
TERM_MAX = 256  # characters of a search term

ADDRESS_MAX = 320
RECIPIENTS_MAX = 1000
SUBJECT_MAX = 998
QUEUE_ID_MAX = 64
MESSAGE_ID_MAX = 998
RULE_MAX = 256
HEADERS_MAX = 16_384
PARTS_MAX = 200
PART_TEXT_MAX = 256

_QID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{12}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2})?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class HeldMessageError(ValueError):
    """A held message that cannot be indexed; the message says why."""


class QueryError(ValueError):
    """A search, a lookup or a state change that is refused; the message says why."""


class NotFound(QueryError):
    """A well-formed lookup of a message the index does not hold."""


SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_quarantine ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, gateway TEXT NOT NULL, qid TEXT NOT NULL,"
        " queue_id TEXT NOT NULL, message_id TEXT NOT NULL, sender TEXT NOT NULL,"
        " recipients TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL,"
        " rule TEXT NOT NULL, size INTEGER NOT NULL, held_at REAL NOT NULL,"
        " state TEXT NOT NULL, headers TEXT NOT NULL, parts TEXT NOT NULL,"
        " sender_lc TEXT NOT NULL, recipients_lc TEXT NOT NULL, subject_lc TEXT NOT NULL,"
        " updated REAL NOT NULL, UNIQUE (gateway, qid))",
        # Newest first, with every searched column: a substring search that matches few
        # rows walks this index alone and reads a table row only for a match (a walk of
        # (held_at, id) fetching every row at random cost 8 times more on 100,000 rows).
        "CREATE INDEX IF NOT EXISTS console_quarantine_newest ON console_quarantine"
        " (held_at, id, reason, gateway, state, subject_lc, sender_lc, recipients_lc)",
        "CREATE INDEX IF NOT EXISTS console_quarantine_gateway"
        " ON console_quarantine (gateway, held_at, id)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_quarantine ("
        " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " gateway VARCHAR(253) CHARACTER SET ascii NOT NULL,"
        " qid VARCHAR(64) CHARACTER SET ascii NOT NULL,"
        " queue_id VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,"
        " message_id TEXT CHARACTER SET utf8mb4 NOT NULL,"
        " sender VARCHAR(320) CHARACTER SET utf8mb4 NOT NULL,"
        " recipients MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,"
        " subject TEXT CHARACTER SET utf8mb4 NOT NULL,"
        " reason VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " rule VARCHAR(256) CHARACTER SET utf8mb4 NOT NULL,"
        " size BIGINT UNSIGNED NOT NULL, held_at DOUBLE NOT NULL,"
        " state VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " headers MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,"
        " parts MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,"
        " sender_lc VARCHAR(320) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " recipients_lc MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " subject_lc TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " updated DOUBLE NOT NULL,"
        " UNIQUE KEY console_quarantine_item (gateway, qid),"
        " KEY console_quarantine_held (held_at, id),"
        " KEY console_quarantine_gateway (gateway, held_at, id),"
        " KEY console_quarantine_reason (reason, held_at, id),"
        " KEY console_quarantine_state (state, held_at, id)) ENGINE=InnoDB",
    ],
}


@dataclass(frozen=True)
class Part:
    name: str  # attachment file name ("" for a body part)
    type: str  # content type
    size: int


@dataclass(frozen=True)
class HeldMessage:
    gateway: str
    qid: str  # the gateway's quarantine item id
    queue_id: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    reason: str  # virus | outbreak | rule | spam
    rule: str  # the rule or signature that held it
    size: int
    held_at: float
    state: str = "held"
    headers: str = ""  # a short headers text
    parts: tuple[Part, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Query:
    recipient: str = ""
    sender: str = ""
    subject: str = ""
    reason: str = ""
    gateway: str = ""
    state: str = ""
    since: float | None = None
    until: float | None = None  # exclusive
    limit: int = LIMIT_DEFAULT
    offset: int = 0


@dataclass(frozen=True)
class Page:
    rows: list[HeldMessage]
    offset: int
    limit: int
    more: bool  # a next page exists


# -- checks ------------------------------------------------------------------------------


def _clean(value: object, limit: int, what: str) -> str:
    """Text bounded to ``limit`` characters, control characters (but tab, newline) removed,
    characters no database stores (lone surrogates) replaced."""
    if not isinstance(value, str):
        raise HeldMessageError(f"{what} must be text")
    text = _CONTROL.sub("", value)[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


def _line(value: object, limit: int, what: str) -> str:
    return _clean(value, limit, what).replace("\n", " ").replace("\t", " ")


def check_qid(qid: object) -> str:
    if not isinstance(qid, str) or not _QID.fullmatch(qid):
        raise QueryError("malformed quarantine id")
    return qid


def _gateway(value: object) -> str:
    try:
        return check_gateway(value)
    except ValueError:
        raise QueryError("malformed gateway name") from None


def check_message(m: HeldMessage) -> HeldMessage:
    """The message as stored: every field checked and bounded; ``HeldMessageError`` else."""
    try:
        gateway, qid = _gateway(m.gateway), check_qid(m.qid)
    except QueryError as exc:
        raise HeldMessageError(str(exc)) from None
    if m.reason not in REASONS:
        raise HeldMessageError(f"reason must be one of {', '.join(REASONS)}")
    if m.state not in STATES:
        raise HeldMessageError(f"state must be one of {', '.join(STATES)}")
    if isinstance(m.size, bool) or not isinstance(m.size, int) or m.size < 0:
        raise HeldMessageError("size must be a non-negative integer")
    if isinstance(m.held_at, bool) or not isinstance(m.held_at, (int, float)):
        raise HeldMessageError("held_at must be a time (seconds)")
    if not math.isfinite(m.held_at) or m.held_at < 0:
        raise HeldMessageError("held_at must be a time (seconds)")
    if isinstance(m.recipients, str) or not isinstance(m.recipients, (list, tuple)):
        raise HeldMessageError("recipients must be a list")
    if not m.recipients or len(m.recipients) > RECIPIENTS_MAX:
        raise HeldMessageError(f"a held message has 1 to {RECIPIENTS_MAX} recipients")
    if not isinstance(m.parts, (list, tuple)) or len(m.parts) > PARTS_MAX:
        raise HeldMessageError(f"parts must be a list of at most {PARTS_MAX}")
    parts = []
    for p in m.parts:
        if not isinstance(p, Part) or isinstance(p.size, bool) or not isinstance(p.size, int):
            raise HeldMessageError("a part is (name, type, size)")
        parts.append(
            Part(
                _line(p.name, PART_TEXT_MAX, "part name"),
                _line(p.type, PART_TEXT_MAX, "part type"),
                max(0, p.size),
            )
        )
    return HeldMessage(
        gateway=gateway,
        qid=qid,
        queue_id=_line(m.queue_id, QUEUE_ID_MAX, "queue id"),
        message_id=_line(m.message_id, MESSAGE_ID_MAX, "Message-ID"),
        sender=_line(m.sender, ADDRESS_MAX, "sender"),
        recipients=tuple(_line(r, ADDRESS_MAX, "recipient") for r in m.recipients),
        subject=_line(m.subject, SUBJECT_MAX, "subject"),
        reason=m.reason,
        rule=_line(m.rule, RULE_MAX, "rule"),
        size=m.size,
        held_at=float(m.held_at),
        state=m.state,
        headers=_clean(m.headers, HEADERS_MAX, "headers"),
        parts=tuple(parts),
    )


def _fold(text: str) -> str:
    return text.casefold()


def parse_time(value: str, what: str, end_of_day: bool = False) -> float:
    """A form's date (``YYYY-MM-DD``) or date and time (``YYYY-MM-DDTHH:MM[:SS]``), UTC."""
    text = value.strip()
    try:
        if _DATE.fullmatch(text):
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return day.timestamp() + (86400.0 if end_of_day else 0.0)
        if _DATETIME.fullmatch(text):
            fmt = "%Y-%m-%dT%H:%M:%S" if text.count(":") == 2 else "%Y-%m-%dT%H:%M"
            stamp = datetime.strptime(text.replace(" ", "T"), fmt)
            return stamp.replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        pass
    raise QueryError(f"{what}: a date YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


def _count(value: str, what: str, maximum: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"-?[0-9]{1,9}", text):
        raise QueryError(f"{what} must be a whole number")
    n = int(text)
    if n < 0:
        raise QueryError(f"{what} cannot be negative")
    if n > maximum:
        raise QueryError(f"{what} is at most {maximum}")
    return n


def _term(value: str, what: str) -> str:
    text = value.strip()
    if len(text) > TERM_MAX:
        raise QueryError(f"{what}: at most {TERM_MAX} characters")
    if _CONTROL.search(text) or "\n" in text or "\t" in text:
        raise QueryError(f"{what}: control characters are not searched")
    return text


def parse_query(params: Mapping[str, str]) -> Query:
    """A search from a form's fields (empty fields ignored); ``QueryError`` for bad input."""
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise QueryError(f"unknown search field {unknown[0][:40]!r}")
    got = {k: v for k, v in params.items() if isinstance(v, str) and v.strip()}
    if any(not isinstance(v, str) for v in params.values()):
        raise QueryError("search fields are text")
    reason = got.get("reason", "").strip()
    if reason and reason not in REASONS:
        raise QueryError(f"reason must be one of {', '.join(REASONS)}")
    state = got.get("state", "").strip()
    if state and state not in STATES:
        raise QueryError(f"state must be one of {', '.join(STATES)}")
    gateway = got.get("gateway", "").strip()
    if gateway:
        _gateway(gateway)
    since = parse_time(got["since"], "from") if "since" in got else None
    until = parse_time(got["until"], "to", end_of_day=True) if "until" in got else None
    if since is not None and until is not None and until <= since:
        raise QueryError("the end of the date range is before its start")
    limit = _count(got["limit"], "rows per page", LIMIT_MAX) if "limit" in got else LIMIT_DEFAULT
    if limit == 0:
        raise QueryError("rows per page must be at least 1")
    return Query(
        recipient=_term(got.get("recipient", ""), "recipient"),
        sender=_term(got.get("sender", ""), "sender"),
        subject=_term(got.get("subject", ""), "subject"),
        reason=reason,
        gateway=gateway,
        state=state,
        since=since,
        until=until,
        limit=limit,
        offset=_count(got["offset"], "offset", OFFSET_MAX) if "offset" in got else 0,
    )


def like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards (and the escape character ``!``) escaped."""
    escaped = term.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


# -- rows --------------------------------------------------------------------------------

_COLUMNS = (
    "gateway, qid, queue_id, message_id, sender, recipients, subject, reason, rule, size,"
    " held_at, state, headers, parts"
)


def _parts_json(parts: Sequence[Part]) -> str:
    return json.dumps([[p.name, p.type, p.size] for p in parts], ensure_ascii=False)


def _parts_from(text: str) -> tuple[Part, ...]:
    try:
        data = json.loads(text)
        return tuple(Part(str(n), str(t), int(s)) for n, t, s in data)
    except (ValueError, TypeError):
        return ()


def _row(row: Sequence[Any]) -> HeldMessage:
    try:
        recipients = tuple(str(r) for r in json.loads(row[5]))
    except (ValueError, TypeError):
        recipients = ()
    return HeldMessage(
        gateway=str(row[0]),
        qid=str(row[1]),
        queue_id=str(row[2]),
        message_id=str(row[3]),
        sender=str(row[4]),
        recipients=recipients,
        subject=str(row[6]),
        reason=str(row[7]),
        rule=str(row[8]),
        size=int(row[9]),
        held_at=float(row[10]),
        state=str(row[11]),
        headers=str(row[12]),
        parts=_parts_from(str(row[13])),
    )


# A new message's row: ``insert_values`` gives the values in this order.
INSERT_SQL = (
    "INSERT INTO console_quarantine (queue_id, message_id, sender, recipients,"
    " subject, reason, rule, size, held_at, headers, parts, sender_lc,"
    " recipients_lc, subject_lc, updated, gateway, qid, state)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row_values(m: HeldMessage, now: float) -> tuple[Any, ...]:
    """The columns a checked message sets on insert and update (before gateway, qid)."""
    return (
        m.queue_id,
        m.message_id,
        m.sender,
        json.dumps(list(m.recipients), ensure_ascii=False),
        m.subject,
        m.reason,
        m.rule,
        m.size,
        m.held_at,
        m.headers,
        _parts_json(m.parts),
        _fold(m.sender),
        "\n".join(_fold(r) for r in m.recipients),
        _fold(m.subject),
        now,
    )


def insert_values(message: HeldMessage, now: float) -> tuple[Any, ...]:
    """The row of a new message in ``INSERT_SQL``'s order (checked as ``upsert`` checks it)."""
    m = check_message(message)
    return (*_row_values(m, now), m.gateway, m.qid, m.state)


class QuarantineIndex(schema.ConsoleTable):
    """The index on one DB-API connection (autocommit, as ``RequestTable`` wants it)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "quarantine index"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def upsert(self, message: HeldMessage, now: float) -> None:
        """Index a held message, or update its row: same (gateway, qid), same row."""
        m = check_message(message)
        values = _row_values(m, now)
        try:
            self._execute(INSERT_SQL, (*values, m.gateway, m.qid, m.state))
            return
        except self._integrity:
            pass
        self._execute(
            "UPDATE console_quarantine SET queue_id = ?, message_id = ?, sender = ?,"
            " recipients = ?, subject = ?, reason = ?, rule = ?, size = ?, held_at = ?,"
            " headers = ?, parts = ?, sender_lc = ?, recipients_lc = ?, subject_lc = ?,"
            " updated = ? WHERE gateway = ? AND qid = ?",
            (*values, m.gateway, m.qid),
        )
        self._advance(m.gateway, m.qid, m.state, now)

    def _advance(self, gateway: str, qid: str, state: str, now: float) -> int:
        """Move the state forward only (held -> released -> deleted); rows changed."""
        earlier = [s for s in STATES if _STATE_RANK[s] < _STATE_RANK[state]]
        if not earlier:
            return 0
        marks = ", ".join("?" for _ in earlier)
        cur = self._execute(
            f"UPDATE console_quarantine SET state = ?, updated = ?"
            f" WHERE gateway = ? AND qid = ? AND state IN ({marks})",
            (state, now, gateway, qid, *earlier),
        )
        return int(cur.rowcount)

    def get(self, gateway: object, qid: object) -> HeldMessage:
        """One held message; ``QueryError`` for a malformed or unknown one."""
        gw, q = _gateway(gateway), check_qid(qid)
        row = self._execute(
            f"SELECT {_COLUMNS} FROM console_quarantine WHERE gateway = ? AND qid = ?",
            (gw, q),
        ).fetchone()
        if row is None:
            raise NotFound(f"no held message {q} on {gw}")
        return _row(row)

    def mark(self, gateway: object, qid: object, state: str, now: float) -> HeldMessage:
        """Record what became of a message (forward only); the message as it is now."""
        if state not in STATES:
            raise QueryError(f"state must be one of {', '.join(STATES)}")
        current = self.get(gateway, qid)
        if _STATE_RANK[state] < _STATE_RANK[current.state]:
            raise QueryError(f"message {current.qid} is already {current.state}")
        self._advance(current.gateway, current.qid, state, now)
        return self.get(current.gateway, current.qid)

    def search(self, query: Query | Mapping[str, str]) -> Page:
        """One page of held messages matching every given field, newest first."""
        q = query if isinstance(query, Query) else parse_query(query)
        sql, params = search_sql(q, self.mysql)
        rows = [_row(r) for r in self._execute(sql, params).fetchall()]
        return Page(rows[: q.limit], q.offset, q.limit, len(rows) > q.limit)


# MariaDB: a substring search must not walk console_quarantine_held. InnoDB cannot put the
# searched TEXT columns in it (SQLite's newest-first index carries them), so the walk fetched
# every row from the clustered index at random to test the LIKE: p95 251 ms over 100,000
# messages in bench/console_bench.py --mariadb, 67 ms with the table scanned and sorted.
_MYSQL_SUBSTRING_HINT = " IGNORE INDEX (console_quarantine_held)"


def search_sql(q: Query, mysql: bool = False) -> tuple[str, list[Any]]:
    """The SELECT of a search (qmark placeholders) and its parameters: one more row than a
    page, to know whether there is a next one. Only fixed SQL text; input is parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column, term in (
        ("recipients_lc", q.recipient),
        ("sender_lc", q.sender),
        ("subject_lc", q.subject),
    ):
        if term:
            where.append(f"{column} LIKE ? ESCAPE '!'")
            params.append(like_pattern(_fold(term)))
    for column, value in (("reason", q.reason), ("gateway", q.gateway), ("state", q.state)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if q.since is not None:
        where.append("held_at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("held_at < ?")
        params.append(q.until)
    sql = f"SELECT {_COLUMNS} FROM console_quarantine"
    if mysql and any(w.endswith("ESCAPE '!'") for w in where):
        sql += _MYSQL_SUBSTRING_HINT
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY held_at DESC, id DESC LIMIT ? OFFSET ?"
    params.extend((q.limit + 1, q.offset))
    return sql, params
