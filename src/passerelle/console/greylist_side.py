"""The gateway's side of the console's greylist page: carry out whitelist requests in the
greylist store, publish the whitelist and the greylist report for the page.

Once, by one gateway: the console files ``whitelist_add`` / ``whitelist_remove`` for any
gateway (``gateway=None``); the first gateway-sync pass that claims it (a compare-and-set in
``RequestTable.claim``) writes the store. That is enough: in a fleet the greylist store is the
shared MariaDB every gateway reads (each milter reloads the table every
``whitelist_refresh``); with SQLite there is a single gateway. The store is reached with the
greylist milter's own configuration file (its URL and user, allowed to write the whitelist,
as ``passerelle greylist whitelist`` does), read by ``greylist.config.load_config``.

What is published (``published.PublishedState``, row ``greylist``): the whitelist table
(``SQLStore.whitelist_list``), the report of the last 24 hours (``greylist.report.
build_report``: decisions, whitelisted machines, machines that came back, clients that never
retried, the delay distribution), the daily history of the last 14 UTC days
(``greylist.report.read_history``, ``greylist.stats.HISTORY_DAYS``: per day the decisions,
whitelisted hits, machines that came back and their delays; about a kilobyte a day) and
whitelist suggestions: client groups whose delayed triplets passed most often over the last
7 days (``SQLStore.came_back``) that no whitelist entry covers yet. The whitelist is published
on every pass; the report and the history, which read the greylist table, at most every
``REPORT_EVERY`` seconds (every gateway publishes the same shared store: the newest row wins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from passerelle.console.gateway import Refused
from passerelle.console.published import PublishedState, clean_comment
from passerelle.console.requests import Request
from passerelle.console.targets import split_whitelist_target

log = logging.getLogger("passerelle.console.greylist_side")

NAME = "greylist"
REPORT_SINCE = 24 * 3600.0
REPORT_EVERY = 300.0  # seconds between two reports read from the greylist table
SUGGEST_SINCE = 7 * 24 * 3600.0
SUGGESTIONS_MAX = 10
LIST_MAX = 100  # rows of each list of the report published (whitelisted machines: unbounded)


class GreylistRefused(Refused):
    """A whitelist request that cannot be carried out; the message is its result."""


def whitelist_change(store: Any, state: PublishedState, req: Request, now: float) -> str:
    """Carry out one whitelist request in ``store`` (a ``greylist.store.SQLStore``); the
    result text. ``GreylistRefused`` for a bad target or an entry that is not there."""
    try:
        kind, entry = split_whitelist_target(req.target, req.kind == "whitelist_add")
    except ValueError as exc:
        raise GreylistRefused(str(exc)) from None
    if req.kind == "whitelist_add":
        comment = state.note(req.target) or f"console, {req.requested_by}"
        new = store.whitelist_add(kind, entry, clean_comment(comment), now)
        return f"ok: {kind} {entry} {'added to' if new else 'already in'} the whitelist"
    if req.kind == "whitelist_remove":
        if not store.whitelist_remove(kind, entry):
            raise GreylistRefused(f"{kind} {entry} is not in the whitelist")
        return f"ok: {kind} {entry} removed from the whitelist"
    raise GreylistRefused(f"{req.kind} is not a whitelist request")


def suggestions(came_back: list[tuple[str, int, float]], whitelist: Any) -> list[dict[str, Any]]:
    """Client groups that came back (most triplets first) that ``whitelist`` (a
    ``greylist.whitelist.Whitelist``) does not exempt, as valid client entries."""
    import ipaddress

    out: list[dict[str, Any]] = []
    for group, triplets, max_delay in came_back:
        try:
            net = ipaddress.ip_network(group, strict=False)
        except ValueError:  # not an address group (a unix socket client): nothing to suggest
            continue
        entry = str(net.network_address) if net.num_addresses == 1 else str(net)
        first = net.network_address
        if whitelist.clients.match(first, None) or whitelist.trusted.match(first, None):
            continue
        out.append({"entry": entry, "triplets": triplets, "max_delay": max_delay})
        if len(out) >= SUGGESTIONS_MAX:
            break
    return out


def greylist_body(
    store: Any,
    config_whitelist: Callable[[], Any],
    min_delay: float,
    now: float,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """What is published: the whitelist, the report and the daily history (both read again
    when ``previous`` lacks one of them or has them older than ``REPORT_EVERY``)."""
    from passerelle.greylist.report import build_report, read_history

    entries = store.whitelist_list()
    body: dict[str, Any] = {
        "whitelist": [
            {"kind": k, "entry": e, "comment": c, "created": t} for k, e, c, t in entries
        ],
    }
    old = previous or {}
    fresh = isinstance(old.get("report_at"), (int, float)) and (
        0 <= now - float(old["report_at"]) < REPORT_EVERY
    )
    if fresh and isinstance(old.get("report"), dict) and isinstance(old.get("history"), dict):
        body.update(
            report=old["report"],
            history=old["history"],
            report_at=old["report_at"],
            suggestions=old.get("suggestions", []),
        )
        return body
    wl = config_whitelist()
    wl.extend(entries_as_pairs(entries), strict=False)
    report = build_report(store, now, REPORT_SINCE, min_delay)
    for key in ("whitelisted", "came_back", "never_retried"):  # the page shows the first ones
        report[key] = report[key][:LIST_MAX]
    body["report"] = report
    body["history"] = read_history(store, now)
    body["report_at"] = now
    body["suggestions"] = suggestions(store.came_back(now - SUGGEST_SINCE), wl)
    return body


def entries_as_pairs(entries: list[tuple[str, str, str, float]]) -> list[tuple[str, str]]:
    return [(k, e) for k, e, _c, _t in entries]


def publish_greylist(
    store: Any,
    state: PublishedState,
    gateway: str,
    config_whitelist: Callable[[], Any],
    min_delay: float,
    now: float,
) -> None:
    previous = state.get(NAME)
    body = greylist_body(
        store, config_whitelist, min_delay, now, previous.body if previous else None
    )
    state.publish(NAME, gateway, body, now)
