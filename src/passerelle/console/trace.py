"""Message trace: the events each gateway ships from its mail log (``trace_ship``), stored in
the console's database, searched by sender, recipient, queue id or Message-ID and put
together as each message's path.

- One row per event (``console_trace_event``, its own version table): a reception
  (``from``), a delivery attempt per recipient (``sent``, ``deferred``, ``bounced``), a
  milter's refusal (``milter``), a refused recipient or sender (``reject``), a bounce made
  (``dsn``), and the milters' decisions (``greylist``, ``antivirus``, ``spam``). Every value
  comes from a log that holds client text: control characters become ``?`` and each column
  is cut to its length (``TraceEvent.LIMITS``), so no input makes an insert fail.
- Addresses are stored and searched case-folded, a Message-ID without its angle brackets;
  a search term matches exactly (each key has its index), and the terms given are ANDed.
- A message's path (``TraceStore.search``): the queue ids that matched, then every queue id
  sharing a Message-ID with them (the same message on another gateway) or named as the next
  hop's (``stat=Sent (QID Message accepted for delivery)``) or as a bounce's, up to
  ``KEYS_MAX`` queue ids; these are grouped into messages (one Message-ID or hop chain), each
  with its events in time order. The greylist milter logs no queue id (it decides at RCPT,
  before one exists): a decision is put on a message's path when it is the same gateway and
  client and, for a triplet, the same sender and one of its recipients, in the day before the
  reception; an exemption line (no triplet) only the last one from that client in the
  ``EXEMPT_BEFORE`` seconds before it. Events that matched without a queue id (a greylisted
  attempt never retried, a refused recipient) are shown on their own.
- Events older than the console's ``trace_retention`` are purged by the console
  (``Purger``), the only one allowed to delete.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from passerelle.console.purge import PeriodicPurge
from passerelle.console.schema import ConsoleTable
from passerelle.maillog import is_queue_id

log = logging.getLogger("passerelle.console.trace")
TERM_MAX = 255
RETENTION = 7 * 86400  # s the console keeps events (console.toml: trace_retention)
PURGE_EVERY = 600.0  # s between two purges
KEYS_MAX = 200  # queue ids of one search
SEED_ROWS = 500  # rows matching the terms read
MESSAGES_MAX = 50  # messages shown
GREYLIST_BEFORE = 86400.0  # s before a reception where its triplet's decisions are looked for
EXEMPT_BEFORE = 300.0  # s before a reception where its client's exemption is looked for
AFTER = 5.0  # s after a reception (lines of one second logged slightly out of order)
KIND_ORDER = {
    "greylist": 0,
    "reject": 1,
    "from": 2,
    "milter": 3,
    "antivirus": 4,
    "spam": 5,
    "sent": 6,
    "deferred": 6,
    "bounced": 6,
    "dsn": 7,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_COLUMNS = (
    "gateway",
    "at",
    "kind",
    "queue_id",
    "next_queue_id",
    "message_id",
    "sender",
    "recipient",
    "relay",
    "mailer",
    "dsn",
    "status",
    "detail",
)


class TraceQueryError(ValueError):
    """A search that is refused; the message says why."""


@dataclass(frozen=True)
class TraceEvent:
    gateway: str
    at: float
    kind: str
    queue_id: str = ""
    next_queue_id: str = ""
    message_id: str = ""
    sender: str = ""
    recipient: str = ""
    relay: str = ""  # from: the client; deliveries: the next hop; milters: the client
    mailer: str = ""
    dsn: str = ""
    status: str = ""  # stat= text, or the milter's verdict
    detail: str = ""

    LIMITS: ClassVar[dict[str, int]] = {
        "gateway": 253,
        "kind": 16,
        "queue_id": 32,
        "next_queue_id": 32,
        "message_id": TERM_MAX,
        "sender": TERM_MAX,
        "recipient": TERM_MAX,
        "relay": 255,
        "mailer": 32,
        "dsn": 16,
        "status": 500,
        "detail": 500,
    }

    @classmethod
    def of(cls, gateway: str, at: float, kind: str, **values: str) -> TraceEvent:
        """An event with every value cleaned and cut to its column."""
        out: dict[str, Any] = {}
        for name, value in (("gateway", gateway), ("kind", kind), *values.items()):
            text = _CONTROL.sub("?", str(value))
            if name in ("sender", "recipient"):
                text = text.lower()
            out[name] = text[: cls.LIMITS[name]]
        return cls(at=float(at), **out)

    @property
    def client_ip(self) -> str:
        m = _IP.search(self.relay)
        return m.group(1) if m else self.relay

    @property
    def text(self) -> str:
        """What the step says, for the page."""
        k = self.kind
        if k == "from":
            mid = f", Message-ID <{self.message_id}>" if self.message_id else ""
            return f"received from {self.relay}: sender <{self.sender}>{mid}"
        if k in ("sent", "deferred", "bounced"):
            verb = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}[k]
            via = f" by {self.mailer}" if self.mailer else ""
            to = f" to {self.relay}" if self.relay else ""
            dsn = f" {self.dsn}" if self.dsn else ""
            return f"{verb}: <{self.recipient}>{via}{to}:{dsn} {self.status}"
        if k == "greylist":
            triplet = f" <{self.sender}> -> <{self.recipient}>" if self.sender else ""
            return f"greylist {self.status}: client {self.relay}{triplet} {self.detail}"
        if k == "antivirus":
            return f"antivirus {self.status}: {self.detail}"
        if k == "spam":
            return f"spam tier {self.status}: {self.detail}"
        if k == "dsn":
            return f"bounce {self.next_queue_id} made: {self.detail}"
        return self.detail


@dataclass(frozen=True)
class TraceQuery:
    sender: str = ""
    recipient: str = ""
    queue_id: str = ""
    message_id: str = ""

    def terms(self) -> list[tuple[str, str]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]


@dataclass
class MessagePath:
    message_id: str
    queue_ids: list[tuple[str, str]]  # (gateway, queue id), in time order
    steps: list[TraceEvent] = field(default_factory=list)

    @property
    def first_at(self) -> float:
        return self.steps[0].at if self.steps else 0.0

    @property
    def sender(self) -> str:
        return next((e.sender for e in self.steps if e.kind == "from"), "")

    @property
    def recipients(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.steps:
            if e.recipient and e.kind != "greylist":
                seen[e.recipient] = None
        return list(seen)


def parse_query(params: Mapping[str, str]) -> TraceQuery:
    """The search terms of a form; ``TraceQueryError`` with a message for the page."""
    values: dict[str, str] = {}
    for name, label in (
        ("sender", "sender"),
        ("recipient", "recipient"),
        ("queue_id", "queue id"),
        ("message_id", "Message-ID"),
    ):
        text = str(params.get(name, "") or "").strip()
        if len(text) > TERM_MAX:
            raise TraceQueryError(f"{label}: too long (at most {TERM_MAX} characters)")
        if _CONTROL.search(text):
            raise TraceQueryError(f"{label}: control characters are not allowed")
        if name in ("sender", "recipient", "message_id") and text.startswith("<"):
            text = text[1:-1] if text.endswith(">") else text[1:]
        if name in ("sender", "recipient"):
            text = text.lower()
        if name == "queue_id" and text and not is_queue_id(text.encode("utf-8")):
            raise TraceQueryError("queue id: 6 to 20 letters and digits, as sendmail logs it")
        values[name] = text
    q = TraceQuery(**values)
    if not q.terms():
        raise TraceQueryError("give at least one of sender, recipient, queue id, Message-ID")
    return q


SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_trace_event ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, gateway TEXT NOT NULL, at REAL NOT NULL,"
        " kind TEXT NOT NULL, queue_id TEXT NOT NULL, next_queue_id TEXT NOT NULL,"
        " message_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,"
        " relay TEXT NOT NULL, mailer TEXT NOT NULL, dsn TEXT NOT NULL,"
        " status TEXT NOT NULL, detail TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS console_trace_queue_id ON console_trace_event (queue_id)",
        "CREATE INDEX IF NOT EXISTS console_trace_next ON console_trace_event (next_queue_id)",
        "CREATE INDEX IF NOT EXISTS console_trace_message_id ON console_trace_event (message_id)",
        "CREATE INDEX IF NOT EXISTS console_trace_sender ON console_trace_event (sender, at)",
        "CREATE INDEX IF NOT EXISTS console_trace_recipient ON console_trace_event (recipient, at)",
        "CREATE INDEX IF NOT EXISTS console_trace_client"
        " ON console_trace_event (gateway, kind, relay, at)",
        "CREATE INDEX IF NOT EXISTS console_trace_at ON console_trace_event (at)",
    ],
}
_T = "VARCHAR({}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_trace_event ("
        " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " gateway VARCHAR(253) CHARACTER SET ascii NOT NULL, at DOUBLE NOT NULL,"
        " kind VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        f" queue_id {_T.format(32)}, next_queue_id {_T.format(32)},"
        f" message_id {_T.format(TERM_MAX)}, sender {_T.format(TERM_MAX)},"
        f" recipient {_T.format(TERM_MAX)}, relay {_T.format(255)},"
        f" mailer {_T.format(32)}, dsn {_T.format(16)},"
        " status TEXT CHARACTER SET utf8mb4 NOT NULL,"
        " detail TEXT CHARACTER SET utf8mb4 NOT NULL,"
        " KEY console_trace_queue_id (queue_id),"
        " KEY console_trace_next (next_queue_id),"
        " KEY console_trace_message_id (message_id),"
        " KEY console_trace_sender (sender, at),"
        " KEY console_trace_recipient (recipient, at),"
        " KEY console_trace_client (gateway, kind, relay, at),"
        " KEY console_trace_at (at)) ENGINE=InnoDB",
    ],
}


class TraceStore(ConsoleTable):
    VERSION_TABLE = "console_trace_schema_version"
    SCHEMA_LOCK = "passerelle_console_trace_schema"
    WHAT = "console trace"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    # -- the gateway's side ------------------------------------------------------------------
    def add(self, events: Sequence[TraceEvent]) -> int:
        if not events:
            return 0
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("%s" if self.mysql else "?" for _ in _COLUMNS)
        sql = f"INSERT INTO console_trace_event ({cols}) VALUES ({marks})"
        rows = [tuple(getattr(e, c) for c in _COLUMNS) for e in events]
        cur = self.conn.cursor()
        if self.mysql:  # PyMySQL sends multi-row INSERTs of at most 1 MB each
            cur.executemany(sql, rows)
            return len(rows)
        cur.execute("BEGIN")  # one transaction, not one per row (autocommit connection)
        try:
            cur.executemany(sql, rows)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return len(rows)

    def purge(self, before: float) -> int:
        cur = self._execute("DELETE FROM console_trace_event WHERE at < ?", (before,))
        return max(0, int(cur.rowcount or 0))

    # -- the console's side ------------------------------------------------------------------
    def _select(self, where: str, params: Sequence[Any], limit: int) -> list[TraceEvent]:
        cur = self._execute(
            f"SELECT {', '.join(_COLUMNS)} FROM console_trace_event WHERE {where}"
            f" ORDER BY at DESC, id DESC LIMIT {int(limit)}",
            params,
        )
        return [TraceEvent(**dict(zip(_COLUMNS, row))) for row in cur.fetchall()]

    def _in(self, column: str, values: Iterable[str]) -> list[TraceEvent]:
        vals = sorted(set(values))
        out: list[TraceEvent] = []
        for i in range(0, len(vals), 100):
            part = vals[i : i + 100]
            out += self._select(
                f"{column} IN ({', '.join('?' for _ in part)})", part, SEED_ROWS * 4
            )
        return out

    def search(self, q: TraceQuery, limit: int = MESSAGES_MAX) -> list[MessagePath]:
        terms = q.terms()
        where = " AND ".join(f"{name} = ?" for name, _ in terms)
        seeds = self._select(where, [v for _, v in terms], SEED_ROWS)
        keys = {(e.gateway, e.queue_id) for e in seeds if e.queue_id}
        loose = [e for e in seeds if not e.queue_id]
        events: dict[tuple[str, str], list[TraceEvent]] = {}
        asked_qids: set[str] = set()
        asked_mids: set[str] = set()
        for _round in range(4):
            qids = {qid for _gw, qid in keys} - asked_qids
            if not qids:
                break
            asked_qids |= qids
            for e in self._in("queue_id", qids):
                if (e.gateway, e.queue_id) in keys:
                    events.setdefault((e.gateway, e.queue_id), []).append(e)
            found = self._in("next_queue_id", qids)  # the previous hops
            mids = {e.message_id for k in keys for e in events.get(k, ()) if e.message_id}
            found += self._in("message_id", mids - asked_mids)  # other gateways' copies
            asked_mids |= mids
            hops = {e.next_queue_id for k in keys for e in events.get(k, ()) if e.next_queue_id}
            found += self._in("queue_id", hops - asked_qids)  # the next hops
            for e in found:
                if e.queue_id and len(keys) < KEYS_MAX:
                    keys.add((e.gateway, e.queue_id))
        paths = group(events)
        attached: set[tuple[str, float, str]] = set()
        for p in paths:
            extra = self._greylist_for(p)
            attached |= {(e.gateway, e.at, e.detail) for e in extra}
            p.steps = sort_steps(p.steps + extra)
        left = [e for e in loose if (e.gateway, e.at, e.detail) not in attached]
        if left:
            paths.append(MessagePath("", [], sort_steps(left)))
        paths.sort(key=lambda p: -p.first_at)
        return paths[:limit]

    def _greylist_for(self, p: MessagePath) -> list[TraceEvent]:
        out: list[TraceEvent] = []
        recipients = set(p.recipients)
        for e in p.steps:
            if e.kind != "from":
                continue
            near = self._select(
                "gateway = ? AND kind = 'greylist' AND relay = ? AND at >= ? AND at <= ?",
                (e.gateway, e.client_ip, e.at - GREYLIST_BEFORE, e.at + AFTER),
                SEED_ROWS,
            )
            triplets = [
                g
                for g in near
                if g.sender
                and g.sender == e.sender
                and (not recipients or g.recipient in recipients)
            ]
            exempt = [g for g in near if not g.sender and g.at >= e.at - EXEMPT_BEFORE]
            out += triplets + exempt[:1]  # newest first: the last exemption before it
        return out


class Purger(PeriodicPurge):
    """The console's purge of events older than ``retention``: the gateways only insert (their
    database users may not delete). Run from the pages served (``purge.PeriodicPurge``)."""

    def __init__(self, retention: float = RETENTION) -> None:
        self.retention = retention
        super().__init__(
            "trace", lambda conn, now: TraceStore(conn).purge(now - self.retention), PURGE_EVERY
        )


def sort_steps(steps: Iterable[TraceEvent]) -> list[TraceEvent]:
    unique = {(e.gateway, e.at, e.kind, e.queue_id, e.recipient, e.detail): e for e in steps}
    return sorted(unique.values(), key=lambda e: (e.at, KIND_ORDER.get(e.kind, 9)))


def group(events: Mapping[tuple[str, str], Sequence[TraceEvent]]) -> list[MessagePath]:
    """Queue ids joined into messages: one Message-ID, or a hop (next_queue_id) between them."""
    parent: dict[tuple[str, str], tuple[str, str]] = {k: k for k in events}

    def root(k: tuple[str, str]) -> tuple[str, str]:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(a: tuple[str, str], b: tuple[str, str]) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_mid: dict[str, tuple[str, str]] = {}
    by_qid: dict[str, list[tuple[str, str]]] = {}
    for k in events:
        by_qid.setdefault(k[1], []).append(k)
    for k, evs in events.items():
        for e in evs:
            if e.message_id:
                join(k, by_mid.setdefault(e.message_id, k))
            if e.next_queue_id:
                for other in by_qid.get(e.next_queue_id, ()):
                    if other != k:
                        join(k, other)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for k in events:
        groups.setdefault(root(k), []).append(k)
    paths = []
    for members in groups.values():
        steps = sort_steps(e for k in members for e in events[k])
        order = {k: min(e.at for e in events[k]) for k in members}
        mid = next((e.message_id for e in steps if e.kind == "from" and e.message_id), "")
        paths.append(MessagePath(mid, sorted(members, key=lambda k: (order[k], k)), steps))
    return paths


# -- the page ----------------------------------------------------------------------------------
FORM = ("sender", "recipient", "queue_id", "message_id")


def trace_page(console: Any, req: Any, conn: Any, user: Any) -> Any:
    """GET /trace: the form, and the messages found when a term is given."""
    form = {k: req.arg(k)[: TERM_MAX * 4] for k in FORM}
    if not any(k in req.query for k in FORM):
        return console._page("trace.html", user, form=form, error="", paths=None)
    try:
        q = parse_query({k: req.arg(k) for k in FORM})
    except TraceQueryError as exc:
        return console._page("trace.html", user, 400, form=form, error=str(exc), paths=None)
    store = TraceStore(conn)
    paths = store.search(q)
    return console._page("trace.html", user, form=form, error="", paths=paths)
