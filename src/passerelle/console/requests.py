"""The table of requests the console files and the gateways carry out, each done once.

The console never reaches into a gateway's disk: it files a request (release, delete or rescan
of a quarantined message; outbreak mode on or off) in the shared database, and the gateway it
names (or any gateway, ``gateway=None``) polls the table, claims the request, carries it out
and files the result, which the console shows.

Correctness under concurrency (gateways polling at once, consoles submitting at once), with
the habits of the greylist store (DB-API 2, parameterised queries, compare-and-set):
- every change of a request is ``UPDATE ... WHERE id = ? AND version = ?`` (and the status it
  was read with), inside a transaction; a rowcount of 0 means another writer won, and the
  loser re-reads (``claim``) or gets a ``RequestError`` (``complete``): two gateways polling
  at once never both get a request, and a result is filed once;
- each quarantined message has a row in ``console_targets``: its state (held, released,
  deleted) and the request still open on it (``busy``). A request on a message is filed only
  with a compare-and-set on that row, so a second release of the same message (while the
  first is open or once it succeeded), or any request on a deleted message, is refused at
  submit time with a clear error and nothing written;
- a claim left unfinished longer than ``claim_timeout`` (a gateway that died in the middle)
  can be claimed again; the first claimer's late ``complete`` is then refused. A gateway
  carrying out a release again must find from its own quarantine that it was done (the
  quarantine marks a released message), so a message still lands once.

Bad input (an unknown kind, a malformed message id or gateway name, a forged request id)
raises ``RequestError`` (a ``ValueError``) with a message fit for the console's page, and
changes nothing.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from passerelle.schemalock import SchemaLockBusy, acquire_schema_lock, release_schema_lock

SCHEMA_VERSION = 1
SCHEMA_LOCK = "passerelle_console_schema"
CLAIM_TIMEOUT = 600.0  # seconds after which an unfinished claim can be claimed again
MAX_RACE_RETRIES = 50
RESULT_MAX = 2000  # characters of a result text kept
REQUESTED_BY_MAX = 128
LIST_LIMIT_MAX = 1000
MYSQL_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: the transaction was rolled back, run it again

MESSAGE_KINDS = ("release", "delete", "rescan")
OUTBREAK_KINDS = ("outbreak_on", "outbreak_off")
# the greylist whitelist (KIND:ENTRY) and the connection guard (an IP): console/targets.py
WHITELIST_KINDS = ("whitelist_add", "whitelist_remove")
KINDS = MESSAGE_KINDS + OUTBREAK_KINDS + WHITELIST_KINDS + ("unblock",)
STATUSES = ("pending", "claimed", "done", "failed")
# What a message becomes when a request on it succeeds (rescan: what the gateway reports).
TARGET_STATES = ("held", "released", "deleted")
_DONE_STATE = {"release": "released", "delete": "deleted"}

# A quarantine item id (passerelle.antivirus.quarantine: stamp and 48 random bits).
_MESSAGE_ID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{12}")
# A gateway: a host name (letters, digits, dots, hyphens, underscores), at most 253 chars.
_GATEWAY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
_ID_TEXT = re.compile(r"[0-9]{1,18}")

_T = TypeVar("_T")


class RequestError(ValueError):
    """A request cannot be filed, claimed or completed; the message says why (for the page)."""


class SchemaError(RuntimeError):
    """The table cannot be used (schema newer than this code, migration lock not obtained)."""


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    target: str  # the quarantined message's id; "" for outbreak; KIND:ENTRY; an IP (unblock)
    gateway: str | None  # None: any gateway may carry it out
    status: str
    requested_by: str
    requested_at: float
    claimed_by: str | None
    claimed_at: float | None
    finished_at: float | None
    ok: bool | None
    result: str
    attempts: int  # claims so far (more than 1: a stale claim was taken over)
    version: int


@dataclass(frozen=True)
class Dialect:
    name: str
    placeholder: str
    begin: str  # starts a transaction that will write (SQLite: take the write lock at once)
    migrations: dict[int, list[str]]


SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_requests ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, target TEXT NOT NULL,"
        " gateway TEXT, status TEXT NOT NULL, requested_by TEXT NOT NULL,"
        " requested_at REAL NOT NULL, claimed_by TEXT, claimed_at REAL, finished_at REAL,"
        " ok INTEGER, result TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,"
        " version INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS console_requests_open"
        " ON console_requests (status, gateway, id)",
        "CREATE INDEX IF NOT EXISTS console_requests_target ON console_requests (target, id)",
        "CREATE TABLE IF NOT EXISTS console_targets (target TEXT PRIMARY KEY,"
        " state TEXT NOT NULL, busy INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,"
        " version INTEGER NOT NULL DEFAULT 0)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_requests ("
        " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " kind VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " target VARCHAR(64) CHARACTER SET ascii NOT NULL,"
        " gateway VARCHAR(253) CHARACTER SET ascii NULL,"
        " status VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " requested_by VARCHAR(128) CHARACTER SET utf8mb4 NOT NULL,"
        " requested_at DOUBLE NOT NULL, claimed_by VARCHAR(253) CHARACTER SET ascii NULL,"
        " claimed_at DOUBLE NULL, finished_at DOUBLE NULL, ok TINYINT NULL,"
        " result VARCHAR(2000) CHARACTER SET utf8mb4 NOT NULL DEFAULT '',"
        " attempts INT UNSIGNED NOT NULL DEFAULT 0, version INT UNSIGNED NOT NULL DEFAULT 0,"
        " KEY console_requests_open (status, gateway, id),"
        " KEY console_requests_target (target, id)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS console_targets ("
        " target VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
        " state VARCHAR(16) CHARACTER SET ascii NOT NULL,"
        " busy BIGINT UNSIGNED NOT NULL DEFAULT 0, updated DOUBLE NOT NULL,"
        " version INT UNSIGNED NOT NULL DEFAULT 0) ENGINE=InnoDB",
    ],
}

SQLITE = Dialect("sqlite", "?", "BEGIN IMMEDIATE", SQLITE_MIGRATIONS)
MYSQL = Dialect("mysql", "%s", "START TRANSACTION", MYSQL_MIGRATIONS)

_COLUMNS = (
    "id, kind, target, gateway, status, requested_by, requested_at, claimed_by, claimed_at,"
    " finished_at, ok, result, attempts, version"
)


def dialect_of(conn: Any) -> Dialect:
    """The dialect of a DB-API connection: sqlite3, or PyMySQL (MariaDB)."""
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    if type(conn).__module__.startswith("pymysql"):
        return MYSQL
    raise TypeError(f"no request-table dialect for a {type(conn).__module__} connection")


def parse_request_id(value: object) -> int:
    """A request id from a form or a URL: a positive integer, else ``RequestError``."""
    if isinstance(value, bool):
        raise RequestError("malformed request id")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _ID_TEXT.fullmatch(value):
        n = int(value)
    else:
        raise RequestError("malformed request id")
    if n <= 0:
        raise RequestError("malformed request id")
    return n


def check_gateway(gateway: object) -> str:
    if not isinstance(gateway, str) or not _GATEWAY.fullmatch(gateway):
        raise RequestError("malformed gateway name")
    return gateway


def check_target(kind: str, target: object) -> str:
    """The stored target of a request of ``kind``: a quarantine id, or "" (outbreak)."""
    if kind not in KINDS:
        raise RequestError(f"unknown request kind (known: {', '.join(KINDS)})")
    if kind in OUTBREAK_KINDS:
        if target not in (None, ""):
            raise RequestError(f"a {kind} request has no target")
        return ""
    if kind in WHITELIST_KINDS or kind == "unblock":
        from passerelle.console import targets

        try:
            if kind == "unblock":
                return targets.unblock_target(target)
            return ":".join(targets.split_whitelist_target(target, kind == "whitelist_add"))
        except ValueError as exc:
            raise RequestError(str(exc)) from None
    if not isinstance(target, str) or not _MESSAGE_ID.fullmatch(target):
        raise RequestError("malformed quarantined message id")
    return target


def _row_to_request(row: Sequence[Any]) -> Request:
    return Request(
        id=int(row[0]),
        kind=str(row[1]),
        target=str(row[2]),
        gateway=None if row[3] is None else str(row[3]),
        status=str(row[4]),
        requested_by=str(row[5]),
        requested_at=float(row[6]),
        claimed_by=None if row[7] is None else str(row[7]),
        claimed_at=None if row[8] is None else float(row[8]),
        finished_at=None if row[9] is None else float(row[9]),
        ok=None if row[10] is None else bool(row[10]),
        result=str(row[11]),
        attempts=int(row[12]),
        version=int(row[13]),
    )


class RequestTable:
    """The request table on one DB-API connection (autocommit: sqlite3 with
    ``isolation_level=None``, PyMySQL with ``autocommit=True``, as the stores open them).

    One ``RequestTable`` per connection and per thread, like a connection."""

    def __init__(
        self,
        conn: Any,
        dialect: Dialect | None = None,
        claim_timeout: float = CLAIM_TIMEOUT,
    ) -> None:
        self.conn = conn
        self.dialect = dialect or dialect_of(conn)
        self.claim_timeout = claim_timeout
        if isinstance(conn, sqlite3.Connection) and conn.isolation_level is not None:
            # sqlite3 would open transactions of its own around ours
            raise ValueError("open the SQLite connection with isolation_level=None")
        self._integrity: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
        if self.dialect is MYSQL:
            import pymysql  # Debian python3-pymysql; only needed with MariaDB

            self._integrity = (pymysql.err.IntegrityError,)

    # -- plumbing ----------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql if self.dialect.placeholder == "?" else sql.replace("?", "%s")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(self._q(sql), tuple(params))
        return cur

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        cur = self.conn.cursor()
        cur.execute(self.dialect.begin)
        try:
            yield
            cur.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the connection may be gone: keep the cause
                cur.execute("ROLLBACK")
            if self._is_deadlock(exc):
                raise _Retry from None  # InnoDB chose this transaction as the victim: again
            raise

    def _is_deadlock(self, exc: BaseException) -> bool:
        return (
            self.dialect is MYSQL
            and type(exc).__name__ == "OperationalError"
            and bool(getattr(exc, "args", ()))
            and exc.args[0] == MYSQL_DEADLOCK
        )

    def _retrying(self, attempt: Callable[[], _T], gave_up: str) -> _T:
        """Run ``attempt`` in a transaction until no compare-and-set in it lost a race."""
        for _ in range(MAX_RACE_RETRIES):
            try:
                with self._transaction():
                    return attempt()
            except _Retry:
                continue
        raise RequestError(gave_up)

    # -- schema ------------------------------------------------------------------------
    def schema_version(self) -> int:
        try:
            cur = self._execute("SELECT MAX(version) FROM console_schema_version")
        except Exception:
            return 0
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the tables; returns (version before, version after).

        An up-to-date schema runs no DDL (a least-privilege user may not even be allowed
        to); on MariaDB the migration runs under the schema lock (``schemalock``)."""
        current = self.schema_version()
        if current == SCHEMA_VERSION:
            return current, current
        cur = self.conn.cursor()
        if self.dialect is MYSQL:
            try:
                acquire_schema_lock(cur, SCHEMA_LOCK)
            except SchemaLockBusy as exc:
                raise SchemaError(str(exc)) from None
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS console_schema_version (version INTEGER NOT NULL)"
            )
            before = self.schema_version()
            if before > SCHEMA_VERSION:
                raise SchemaError(
                    f"console schema version {before} is newer than this passerelle "
                    f"({SCHEMA_VERSION}): upgrade passerelle"
                )
            for version, statements in sorted(self.dialect.migrations.items()):
                if version <= before:
                    continue
                for stmt in statements:
                    cur.execute(stmt)
                cur.execute(
                    self._q("INSERT INTO console_schema_version (version) VALUES (?)"), (version,)
                )
        finally:
            if self.dialect is MYSQL:
                release_schema_lock(cur, SCHEMA_LOCK)
        return before, max(before, SCHEMA_VERSION)

    # -- reading -----------------------------------------------------------------------
    def get(self, request_id: object) -> Request:
        """The request ``request_id``; ``RequestError`` for a malformed or unknown id."""
        rid = parse_request_id(request_id)
        row = self._execute(
            f"SELECT {_COLUMNS} FROM console_requests WHERE id = ?", (rid,)
        ).fetchone()
        if row is None:
            raise RequestError(f"no request #{rid}")
        return _row_to_request(row)

    def list(
        self,
        status: str | None = None,
        target: str | None = None,
        gateway: str | None = None,
        limit: int = 100,
    ) -> list[Request]:
        """The newest requests first, optionally of one status, message or gateway."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            if status not in STATUSES:
                raise RequestError(f"unknown status (known: {', '.join(STATUSES)})")
            where.append("status = ?")
            params.append(status)
        if target is not None:
            where.append("target = ?")
            params.append(check_target("release", target))
        if gateway is not None:
            where.append("gateway = ?")
            params.append(check_gateway(gateway))
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise RequestError(f"limit must be between 1 and {LIST_LIMIT_MAX}")
        sql = f"SELECT {_COLUMNS} FROM console_requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_row_to_request(r) for r in self._execute(sql, params).fetchall()]

    def open_requests(self) -> tuple[int, float | None]:
        """The requests not finished (pending or claimed): how many, and the oldest one's
        request time (None when there is none)."""
        row = self._execute(
            "SELECT COUNT(*), MIN(requested_at) FROM console_requests"
            " WHERE status IN ('pending', 'claimed')"
        ).fetchone() or (0, None)
        return int(row[0] or 0), (None if row[1] is None else float(row[1]))

    def target_state(self, target: str) -> tuple[str, int] | None:
        """A message's (state, open request id or 0); None when no request named it yet."""
        row = self._execute(
            "SELECT state, busy FROM console_targets WHERE target = ?",
            (check_target("release", target),),
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    # -- the console's side --------------------------------------------------------------
    def submit(
        self,
        kind: str,
        target: str | None,
        gateway: str | None,
        requested_by: str,
        now: float,
    ) -> int:
        """File a request; returns its id. Refused (``RequestError``, nothing written): an
        unknown kind, a malformed message id or gateway, a request on a deleted message, a
        release of a message already released, a request on a message that has one open."""
        tgt = check_target(kind, target)
        gw = None if gateway is None else check_gateway(gateway)
        if not isinstance(requested_by, str) or not requested_by.strip():
            raise RequestError("a request needs the account that filed it")
        by = requested_by[:REQUESTED_BY_MAX]

        def attempt() -> int:
            version = 0
            if kind in MESSAGE_KINDS:
                row = self._execute(
                    "SELECT state, busy, version FROM console_targets WHERE target = ?", (tgt,)
                ).fetchone()
                if row is None:
                    try:
                        self._execute(
                            "INSERT INTO console_targets (target, state, busy, updated, version)"
                            " VALUES (?, 'held', 0, ?, 0)",
                            (tgt, now),
                        )
                    except self._integrity:
                        raise _Retry from None  # another console filed one first
                else:
                    _refuse(kind, tgt, str(row[0]), int(row[1]))
                    version = int(row[2])
            cur = self._execute(
                "INSERT INTO console_requests (kind, target, gateway, status, requested_by,"
                " requested_at, result, attempts, version)"
                " VALUES (?, ?, ?, 'pending', ?, ?, '', 0, 0)",
                (kind, tgt, gw, by, now),
            )
            rid = int(cur.lastrowid)
            if kind in MESSAGE_KINDS:
                cur = self._execute(
                    "UPDATE console_targets SET busy = ?, updated = ?, version = version + 1"
                    " WHERE target = ? AND version = ? AND busy = 0",
                    (rid, now, tgt, version),
                )
                if cur.rowcount != 1:
                    raise _Retry  # changed since read: judge it again
            return rid

        return self._retrying(attempt, "too many concurrent requests on this message: try again")

    def submit_fleet(
        self, kind: str, gateways: Sequence[str], requested_by: str, now: float
    ) -> list[int]:
        """One outbreak request per gateway (outbreak mode is switched on each of them)."""
        if kind not in OUTBREAK_KINDS:
            raise RequestError(f"only {' and '.join(OUTBREAK_KINDS)} go to every gateway")
        names = [check_gateway(g) for g in gateways]
        if not names:
            raise RequestError("no gateway named")
        return [self.submit(kind, None, g, requested_by, now) for g in names]

    # -- the gateway's side --------------------------------------------------------------
    def claim(self, gateway: str, now: float) -> Request | None:
        """Take the oldest open request for ``gateway`` (or for any gateway): pending, or
        claimed longer than ``claim_timeout`` ago. None when there is none."""
        gw = check_gateway(gateway)
        stale = now - self.claim_timeout

        def attempt() -> Request | None:
            row = self._execute(
                "SELECT id, version, status FROM console_requests"
                " WHERE (gateway = ? OR gateway IS NULL)"
                " AND (status = 'pending' OR (status = 'claimed' AND claimed_at < ?))"
                " ORDER BY id LIMIT 1",
                (gw, stale),
            ).fetchone()
            if row is None:
                return None
            rid, version, status = int(row[0]), int(row[1]), str(row[2])
            cur = self._execute(
                "UPDATE console_requests SET status = 'claimed', claimed_by = ?, claimed_at = ?,"
                " attempts = attempts + 1, version = version + 1"
                " WHERE id = ? AND version = ? AND status = ?",
                (gw, now, rid, version, status),
            )
            if cur.rowcount != 1:
                raise _Retry  # another gateway took it: look again
            return self.get(rid)

        return self._retrying(attempt, "too many gateways claiming at once: poll again")

    def complete(
        self,
        request_id: object,
        gateway: str,
        ok: bool,
        result_text: str,
        now: float,
        new_state: str | None = None,
    ) -> Request:
        """File the result of a request claimed by ``gateway``, once.

        ``new_state``: what became of the message (a rescan that released or deleted it);
        by default a successful release makes it released, a successful delete deleted.
        Refused (``RequestError``, nothing changed): an unknown or forged id, a request not
        claimed, claimed by another gateway (or taken over after a timeout), already done."""
        rid = parse_request_id(request_id)
        gw = check_gateway(gateway)
        if new_state is not None and new_state not in TARGET_STATES:
            raise RequestError(f"unknown message state (known: {', '.join(TARGET_STATES)})")
        text = str(result_text)[:RESULT_MAX]

        def attempt() -> Request:
            req = self.get(rid)
            if req.status in ("done", "failed"):
                raise RequestError(f"request #{rid} is already {req.status}")
            if req.status != "claimed":
                raise RequestError(f"request #{rid} was not claimed")
            if req.claimed_by != gw:
                raise RequestError(f"request #{rid} is claimed by another gateway")
            cur = self._execute(
                "UPDATE console_requests SET status = ?, ok = ?, result = ?, finished_at = ?,"
                " version = version + 1"
                " WHERE id = ? AND version = ? AND status = 'claimed' AND claimed_by = ?",
                ("done" if ok else "failed", int(bool(ok)), text, now, rid, req.version, gw),
            )
            if cur.rowcount != 1:
                raise _Retry  # another writer changed it: read it again, judge again
            if req.kind in MESSAGE_KINDS:
                state = new_state
                if state is None and ok:
                    state = _DONE_STATE.get(req.kind)
                self._execute(
                    "UPDATE console_targets SET state = COALESCE(?, state), busy = 0,"
                    " updated = ?, version = version + 1 WHERE target = ? AND busy = ?",
                    (state, now, req.target, rid),
                )
            return self.get(rid)

        return self._retrying(attempt, f"request #{rid} keeps changing: its result is not filed")

    def mark_target(self, target: str, state: str, now: float) -> None:
        """Record what became of a message outside a request (the daily purge deleted it,
        the automatic rescan released it): later requests on it are judged by it."""
        tgt = check_target("release", target)
        if state not in TARGET_STATES:
            raise RequestError(f"unknown message state (known: {', '.join(TARGET_STATES)})")

        def attempt() -> None:
            cur = self._execute(
                "UPDATE console_targets SET state = ?, updated = ?, version = version + 1"
                " WHERE target = ?",
                (state, now, tgt),
            )
            if cur.rowcount == 1:
                return
            try:
                self._execute(
                    "INSERT INTO console_targets (target, state, busy, updated, version)"
                    " VALUES (?, ?, 0, ?, 0)",
                    (tgt, state, now),
                )
            except self._integrity:
                raise _Retry from None

        self._retrying(attempt, "too many concurrent changes of this message: try again")


class _Retry(Exception):
    """A compare-and-set lost to another writer: roll back, read again."""


def _refuse(kind: str, target: str, state: str, busy: int) -> None:
    if state == "deleted":
        raise RequestError(f"message {target} was deleted")
    if state == "released" and kind in ("release", "rescan"):
        raise RequestError(f"message {target} was already released")
    if busy:
        raise RequestError(f"message {target} already has an open request (#{busy})")
