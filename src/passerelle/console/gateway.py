"""The gateway's side of the console: index what this gateway quarantines, carry out what the
console asks (release, delete, rescan), each request once, with its result filed.

- ``index_quarantine`` reads the antivirus milter's quarantine (``antivirus.quarantine``: the
  ``ID.json`` metadata, read safely) and upserts a ``HeldMessage`` for each item not indexed
  yet or changed; only a new item's message is read, and only through the bounded parsers
  (the header block cut at ``HEADERS_MAX`` bytes, the MIME walk of ``antivirus.mime`` with a
  part count and a time budget). An entry that cannot be read or indexed is logged, counted
  and skipped; a row whose item left the folder (purged) is marked deleted.
- ``carry_out`` claims this gateway's requests (``RequestTable.claim``) and does each once:
  a release goes through the quarantine's release path (``reinject``: re-inject to the
  original recipients and record it in the quarantine, as ``Quarantine.release`` does), which
  refuses a second release; a delete removes the item; a rescan calls ``rescan`` on the
  message and releases it when clean; outbreak on/off switches this gateway's outbreak mode
  through the antivirus milter's state file (``OutbreakStore.set``, as ``passerelle
  antivirus outbreak on|off``). Each request is completed with a result text; a request that
  fails is completed as failed and the next one is carried out.
- ``sync_runtime_rules`` writes the console's runtime content rules (the database row,
  ``RuleStore``) to the file the antivirus milter loads on top of its inventory rules
  (``antivirus.runtime_rules``), atomically and only when they changed.
"""

from __future__ import annotations

import dataclasses
import email.parser
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from passerelle.antivirus.outbreak import HeldOutcome, OutbreakStore
from passerelle.antivirus.quarantine import Item, Quarantine, QuarantineError
from passerelle.atomicfile import atomic_write
from passerelle.console.quarantine_index import (
    HEADERS_MAX,
    LIMIT_MAX,
    OFFSET_MAX,
    PARTS_MAX,
    STATES,
    HeldMessage,
    HeldMessageError,
    NotFound,
    Part,
    QuarantineIndex,
    Query,
    QueryError,
    check_message,
)
from passerelle.console.requests import OUTBREAK_KINDS, Request, RequestError, RequestTable
from passerelle.console.rules import RuntimeRules, runtime_to_json

log = logging.getLogger("passerelle.console.gateway")

# The quarantine's reasons (antivirus.engine) as the index names them; any other reason
# (uninspectable content...) is indexed as a rule, the reason kept in the rule's text.
REASON_KINDS = {"signature": "virus", "outbreak": "outbreak", "rule": "rule", "spam": "spam"}
PARTS_SECONDS = 2.0  # CPU time the MIME walk of one new item may take
CARRY_OUT_LIMIT = 50  # requests carried out per pass
_HEADER_END = re.compile(rb"\r?\n\r?\n")

Reinject = Callable[[str, str], object]  # (item id, by): re-inject, record it in the quarantine
Rescan = Callable[[bytes], Any]  # the message -> a clamd.ScanResult (status, signature, detail)
# (on, by) -> the result text: switches this gateway's outbreak mode (``outbreak_switch``)
OutbreakSwitch = Callable[[bool, str], str]
RUNTIME_RULES_MODE = 0o640  # root's, the milter's group reads it
RUNTIME_RULES_MAX = 4 * 1024 * 1024  # bytes of the current file read to compare


@dataclass
class IndexCounts:
    indexed: int = 0  # new rows
    updated: int = 0  # rows that changed (reason, state...)
    unchanged: int = 0
    skipped: int = 0  # entries that could not be read or indexed (logged)
    vanished: int = 0  # rows marked deleted: their item is no longer in the quarantine


@dataclass
class CarryOutCounts:
    done: int = 0
    failed: int = 0


class _Refused(Exception):
    """A request this gateway cannot carry out; the message is its result text."""


Refused = _Refused  # raised by the ``handlers`` of carry_out (greylist_side, connguard_side)
# kind -> (request, by) -> result text: requests carried out outside the quarantine
Handler = Callable[[Request, str], str]


# -- indexing ----------------------------------------------------------------------------


def _reason(item: Item) -> tuple[str, str]:
    kind = REASON_KINDS.get(item.reason)
    if kind is not None:
        return kind, item.detail
    return "rule", f"{item.reason}: {item.detail}" if item.detail else item.reason


def _headers_and_parts(raw: bytes) -> tuple[str, str, str, tuple[Part, ...]]:
    """(headers text, subject, Message-ID, parts) of a message, every step bounded."""
    from passerelle.antivirus.budget import Budget, BudgetExceeded
    from passerelle.antivirus.mime import decode_words, walk

    head = raw[: HEADERS_MAX * 4]
    end = _HEADER_END.search(head)
    head = head[: end.start()] if end else head
    text = head.decode("utf-8", "replace")[:HEADERS_MAX]
    parsed = email.parser.BytesHeaderParser().parsebytes(head + b"\n\n")
    subject = decode_words(str(parsed.get("Subject", "") or ""))
    message_id = str(parsed.get("Message-ID", "") or "").strip()
    parts: tuple[Part, ...] = ()
    try:
        walked = walk(raw, max_parts=PARTS_MAX, budget=Budget(PARTS_SECONDS))
        parts = tuple(
            Part(p.names[0] if p.names else "", p.content_type, len(p.payload))
            for p in walked.parts[:PARTS_MAX]
        )
    except BudgetExceeded as exc:
        log.warning("quarantine index: parts not listed: %s", exc)
    return text, subject, message_id, parts


def _state(item: Item) -> str:
    return "released" if item.released else "held"


def _later(a: str, b: str) -> str:
    return a if STATES.index(a) >= STATES.index(b) else b


def _index_item(
    quarantine: Quarantine, index: QuarantineIndex, gateway: str, item: Item, now: float
) -> str:
    """Index one item: "indexed", "updated" or "unchanged"; raises what stops it."""
    reason, rule = _reason(item)
    try:
        known: HeldMessage | None = index.get(gateway, item.id)
    except NotFound:
        known = None
    if known is None:
        headers, subject, message_id, parts = _headers_and_parts(quarantine.read_message(item.id))
        base = HeldMessage(
            gateway,
            item.id,
            "",
            message_id,
            "",
            (),
            subject,
            reason,
            rule,
            0,
            0.0,
            headers=headers,
            parts=parts,
        )
    else:
        base = known
    row = check_message(
        dataclasses.replace(
            base,
            queue_id=item.queue_id,
            sender=item.sender,
            recipients=tuple(item.recipients),
            reason=reason,
            rule=rule,
            size=item.size,
            held_at=item.time,
            state=_later(base.state, _state(item)),
        )
    )
    if row == known:
        return "unchanged"
    index.upsert(row, now)
    return "indexed" if known is None else "updated"


def _vanished(index: QuarantineIndex, gateway: str, present: set[str], now: float) -> int:
    """Mark deleted the rows of this gateway whose item left the quarantine (the purge, an
    operator's ``passerelle quarantine delete``); how many."""
    gone: list[str] = []
    for state in ("held", "released"):
        offset = 0
        while True:
            page = index.search(Query(gateway=gateway, state=state, limit=LIMIT_MAX, offset=offset))
            gone.extend(m.qid for m in page.rows if m.qid not in present)
            if not page.more or offset + LIMIT_MAX > OFFSET_MAX:
                break
            offset += LIMIT_MAX
    for qid in gone:
        index.mark(gateway, qid, "deleted", now)
    return len(gone)


def index_quarantine(
    quarantine: Quarantine, index: QuarantineIndex, gateway: str, now: float
) -> IndexCounts:
    """One pass over this gateway's quarantine; never raises for one entry. When the folder
    was listed, rows of items no longer in it are marked deleted."""
    counts = IndexCounts()
    if not quarantine.dir.is_dir():
        log.warning("quarantine index: %s is not a folder: nothing indexed", quarantine.dir)
        return counts
    try:
        names = sorted(n for n in os.listdir(quarantine.dir) if n.endswith(".json"))
    except OSError as exc:
        log.error("quarantine index: %s cannot be listed: %s", quarantine.dir, exc)
        return counts
    for name in names:
        try:
            item = quarantine.get(name[: -len(".json")])
            outcome = _index_item(quarantine, index, gateway, item, now)
        except (QuarantineError, HeldMessageError, OSError, ValueError, TypeError) as exc:
            log.warning("quarantine index: %s skipped: %s", name, exc)
            counts.skipped += 1
            continue
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    counts.vanished = _vanished(index, gateway, {n[: -len(".json")] for n in names}, now)
    return counts


# -- requests ----------------------------------------------------------------------------


def _held(quarantine: Quarantine, target: str) -> Item:
    try:
        return quarantine.get(target)
    except QuarantineError:
        raise _Refused(f"{target} is not in this gateway's quarantine") from None


def _mark(
    quarantine: Quarantine,
    index: QuarantineIndex,
    gateway: str,
    target: str,
    state: str,
    now: float,
) -> None:
    """Record in the index what became of an item (indexing it first when it is not)."""
    try:
        index.mark(gateway, target, state, now)
    except NotFound:
        if state != "deleted":
            _index_item(quarantine, index, gateway, quarantine.get(target), now)
    except QueryError as exc:  # the index has it further along: the deed is done, say so
        log.warning("quarantine index: %s on %s: %s", target, gateway, exc)


def _release(
    req: Request,
    quarantine: Quarantine,
    index: QuarantineIndex,
    gateway: str,
    now: float,
    reinject: Reinject,
    by: str,
) -> str:
    item = _held(quarantine, req.target)
    if item.released:  # an earlier claim of this request released it
        _mark(quarantine, index, gateway, item.id, "released", now)
        return "it was already released"
    reinject(item.id, by)
    _mark(quarantine, index, gateway, item.id, "released", now)
    return f"released to {len(item.recipients)} recipient(s)"


def _carry_out_one(
    req: Request,
    quarantine: Quarantine,
    index: QuarantineIndex,
    gateway: str,
    now: float,
    reinject: Reinject,
    rescan: Rescan,
    outbreak: OutbreakSwitch | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> tuple[str, str | None]:
    """(result text, the message's new state or None); raises what makes it fail."""
    by = f"console request #{req.id} by {req.requested_by}"
    if handlers and req.kind in handlers:  # the greylist whitelist, the connection guard
        return handlers[req.kind](req, by), None
    if req.kind == "release":
        return "ok: " + _release(req, quarantine, index, gateway, now, reinject, by), "released"
    if req.kind == "delete":
        _held(quarantine, req.target)
        quarantine.delete(req.target, by=by)
        _mark(quarantine, index, gateway, req.target, "deleted", now)
        return "ok: deleted", "deleted"
    if req.kind == "rescan":
        item = _held(quarantine, req.target)
        if item.released:
            return "ok: it was already released", "released"
        res = rescan(quarantine.read_message(item.id))
        if res.status == "infected":
            quarantine.update_reason(item.id, "signature", res.signature, by)
            _index_item(quarantine, index, gateway, quarantine.get(item.id), now)
            return f"ok: infected ({res.signature}): stays held", "held"
        if res.status != "clean":
            raise _Refused(f"rescan failed ({res.status}): {res.detail}: stays held")
        quarantine.note(item.id, "rescanned", by, result="clean")
        text = _release(req, quarantine, index, gateway, now, reinject, by)
        return f"ok: clean, {text}", "released"
    if req.kind in OUTBREAK_KINDS:
        if outbreak is None:
            raise _Refused(f"{req.kind} requests are not carried out by this gateway")
        return outbreak(req.kind == "outbreak_on", by), None
    raise _Refused(f"{req.kind} requests are not carried out by gateway-sync")


def outbreak_switch(
    store: OutbreakStore, release_held: Callable[[str], HeldOutcome] | None = None
) -> OutbreakSwitch:
    """Outbreak mode on or off through the milter's state file (``OutbreakStore.set``, as
    ``passerelle antivirus outbreak on|off``); off then rescans and releases the messages
    outbreak mode held (``release_held``, as the command does), when given."""

    def switch(on: bool, by: str) -> str:
        try:
            store.set(on, by=by, reason="console")
        except OSError as exc:
            raise _Refused(
                f"outbreak mode not switched {'on' if on else 'off'}: cannot write the state"
                f" file {store.path}: {exc.strerror or exc}"
            ) from None
        if on:
            return "ok: outbreak mode on"
        if release_held is None:
            return "ok: outbreak mode off"
        out = release_held(by)
        text = (
            f"ok: outbreak mode off; held messages: {len(out.released)} released,"
            f" {len(out.kept_infected)} kept infected, {len(out.kept_waiting)} waiting"
        )
        if out.errors:
            text += f", {len(out.errors)} error(s): " + "; ".join(out.errors)[:300]
        return text

    return switch


def carry_out(
    requests_table: RequestTable,
    quarantine: Quarantine,
    index: QuarantineIndex,
    gateway: str,
    now: float,
    reinject: Reinject,
    rescan: Rescan,
    limit: int = CARRY_OUT_LIMIT,
    outbreak: OutbreakSwitch | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> CarryOutCounts:
    """Claim and carry out at most ``limit`` requests for this gateway, each completed once.
    ``handlers``: other kinds this gateway carries out (whitelist changes, unblock)."""
    counts = CarryOutCounts()
    for _ in range(limit):
        req = requests_table.claim(gateway, now)
        if req is None:
            break
        new_state: str | None = None
        try:
            text, new_state = _carry_out_one(
                req, quarantine, index, gateway, now, reinject, rescan, outbreak, handlers
            )
            ok = True
        except _Refused as exc:
            ok, text = False, f"failed: {exc}"
        except Exception as exc:  # one request's failure is its result, not the pass's
            log.exception("console request #%d (%s %s) failed", req.id, req.kind, req.target)
            ok, text = False, f"failed: {exc.__class__.__name__}: {exc}"
        try:
            requests_table.complete(req.id, gateway, ok, text, now, new_state if ok else None)
        except RequestError as exc:  # taken over after a timeout: the other claim files it
            log.warning("console request #%d: result not filed: %s", req.id, exc)
            continue
        log.info("console request #%d %s %s: %s", req.id, req.kind, req.target, text)
        if ok:
            counts.done += 1
        else:
            counts.failed += 1
    return counts


# -- runtime content rules ----------------------------------------------------------------


def runtime_rules_body(runtime: RuntimeRules) -> bytes:
    """The runtime rules file's content (what ``antivirus.runtime_rules`` parses)."""
    return (runtime_to_json(runtime) + "\n").encode()


def _current(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink or unreadable: replaced
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(RUNTIME_RULES_MAX + 1)


def sync_runtime_rules(runtime: RuntimeRules, path: str, gid: int | None) -> bool:
    """Write ``runtime`` to ``path`` (atomically, mode 0640, group ``gid`` when given) when
    the file does not hold it already; whether it was written."""
    body = runtime_rules_body(runtime)
    if _current(path) == body:
        return False

    def write(fh: Any) -> None:
        if gid is not None:
            os.fchown(fh.fileno(), -1, gid)
        fh.write(body)

    atomic_write(path, write, RUNTIME_RULES_MODE, sync_dir=True)
    log.info("runtime rules written to %s (%d rules)", path, len(runtime.rules))
    return True
