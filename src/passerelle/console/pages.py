"""The console's greylist and connection-guard pages (``/greylist``, ``/connguard``) and
their actions, on the ``Console`` of ``web.py`` (its page rendering, audit and redirects).

What they show was published by the gateways (``published.PublishedState``: see
``greylist_side`` and ``connguard_side``); what they change goes through the request table:

- ``POST /greylist/add`` (kind, entry, comment) files a ``whitelist_add`` for any gateway
  (one carries it out: the store is shared), its comment kept beside it
  (``console_whitelist_notes``); ``POST /greylist/remove`` (kind, entry) files a
  ``whitelist_remove`` of an entry the published whitelist holds;
- ``POST /connguard/unblock`` (ip) files an ``unblock`` for each gateway whose published state
  blocks that address (blocks are per gateway).

A viewer sees no form and its POST is refused (403); bad input (an unknown kind, an entry the
greylist refuses, an entry not in the whitelist, a malformed or unblocked address) is shown
on the page (400) and changes nothing; every action, refused or not, is audited.
"""

from __future__ import annotations

import math
import time
from typing import Any

from passerelle.console.published import PublishedState
from passerelle.console.requests import RequestError, RequestTable
from passerelle.console.targets import WHITELIST_REQUESTS, unblock_target, whitelist_target
from passerelle.durations import format_duration
from passerelle.greylist.stats import HISTORY_DAYS_MAX
from passerelle.greylist.whitelist import KINDS as WHITELIST_KINDS

GREYLIST = "greylist"  # greylist_side.NAME (not imported: the console needs no gateway code)
CONNGUARD = "connguard:"  # connguard_side.PREFIX
BAR_WIDTH = 300  # pixels of the longest bar
RECENT_REQUESTS = 200  # newest requests looked at for the pages' own
# the daily history's series (greylist.report.build_history): key, chart title
HISTORY_SERIES = (
    ("greylisted", "Delayed (temporarily refused: new, early, restart)"),
    ("passed", "Passed (accepted after their delay, or known)"),
    ("whitelisted", "Whitelisted hits (exempt from greylisting)"),
    ("returned", "Returning machines (client groups back after their delay)"),
)
HISTORY_RANGES_MAX = 12  # delay histogram columns shown at most


def _int(value: object) -> int:
    """A count from a published body (written by a gateway: input all the same)."""
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _num(value: object) -> float | None:
    """A number from a published body; None for anything else (JSON's Infinity and NaN too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return f if math.isfinite(f) else None


def _rows(items: object, text: tuple[str, ...], numbers: tuple[str, ...]) -> list[dict[str, Any]]:
    """The dict rows of a published list, each with ``text`` keys (str) and ``numbers``
    (float or None); anything else in the list is left out."""
    if not isinstance(items, list):
        return []
    return [
        {**{k: str(i.get(k, "")) for k in text}, **{k: _num(i.get(k)) for k in numbers}}
        for i in items
        if isinstance(i, dict)
    ]


def bars(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Rows of a bar chart (drawn as inline SVG): label, count, width in pixels."""
    top = max((n for _label, n in rows), default=0)
    return [
        {"label": label, "count": n, "width": round(BAR_WIDTH * n / top) if top else 0}
        for label, n in rows
    ]


def _date(value: object) -> str:
    """The UTC date of a published day (epoch seconds); "" when it is not one."""
    t = _num(value)
    if t is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d", time.gmtime(t))
    except (OverflowError, ValueError, OSError):
        return ""


def history(body: dict[str, Any]) -> dict[str, Any] | None:
    """The daily history a gateway published (``greylist.report.build_history``), each day
    checked (at most ``HISTORY_DAYS_MAX``); None when there is none to show: a body from a
    gateway that publishes none yet, or one not of that shape."""
    hist = body.get("history")
    published = hist.get("by_day") if isinstance(hist, dict) else None
    if not isinstance(published, list):
        return None
    days = []
    for d in published[-HISTORY_DAYS_MAX:]:
        date = _date(d.get("day")) if isinstance(d, dict) else ""
        if not date:
            continue
        delays = d.get("delays") if isinstance(d.get("delays"), dict) else {}
        rows = _rows(delays.get("buckets"), ("range",), ("count",))[:HISTORY_RANGES_MAX]
        days.append(
            {
                "date": date,
                **{k: _int(d.get(k)) for k, _title in HISTORY_SERIES},
                "came_back": _int(d.get("came_back")),  # triplets accepted after a delay
                "delay_count": _int(delays.get("count")),  # their delays read (a sample?)
                "p50": _num(delays.get("p50")),
                "p90": _num(delays.get("p90")),
                "sampled": d.get("delays_sampled") is True,
                "buckets": {r["range"][:40]: _int(r["count"]) for r in rows if r["range"]},
            }
        )
    if not days:
        return None
    ranges: list[str] = []  # the histogram's columns, in the order published
    for d in days:
        ranges += [r for r in d["buckets"] if r not in ranges]
    return {
        "days": len(days),
        "by_day": days,
        "ranges": ranges[:HISTORY_RANGES_MAX],
        "charts": [
            {"title": title, "rows": bars([(d["date"], d[k]) for d in days])}
            for k, title in HISTORY_SERIES
        ],
    }


def _recent(conn: Any, kinds: tuple[str, ...]) -> list[Any]:
    return [r for r in RequestTable(conn).list(limit=RECENT_REQUESTS) if r.kind in kinds][:20]


# -- greylist ------------------------------------------------------------------------------


def greylist_page(
    app: Any, req: Any, conn: Any, user: Any, status: int = 200, error: str = ""
) -> Any:
    pub = PublishedState(conn).get(GREYLIST)
    body = pub.body if pub else {}
    report = body.get("report") if isinstance(body.get("report"), dict) else {}
    decisions = report.get("decisions") if isinstance(report.get("decisions"), dict) else {}
    delays = report.get("delays") if isinstance(report.get("delays"), dict) else {}
    buckets = [
        (b["range"], _int(b["count"])) for b in _rows(delays.get("buckets"), ("range",), ("count",))
    ]
    filed = req.arg("filed", "")
    return app._page(
        "greylist.html",
        user,
        status,
        error=error,
        filed=filed if filed.isdigit() else "",
        published=pub,
        whitelist=_rows(body.get("whitelist"), ("kind", "entry", "comment"), ("created",)),
        decisions=bars(sorted((str(k), _int(v)) for k, v in decisions.items())),
        delays=bars(buckets),
        delay_stats={k: _num(delays.get(k)) for k in ("count", "min", "p50", "p90", "p99", "max")},
        came_back=_rows(report.get("came_back"), ("client",), ("triplets", "max_delay"))[:20],
        never_retried=_rows(report.get("never_retried"), ("client",), ("triplets",))[:20],
        whitelisted=_rows(report.get("whitelisted"), ("client",), ("hits",))[:20],
        suggestions=_rows(body.get("suggestions"), ("entry",), ("triplets", "max_delay")),
        report_at=_num(body.get("report_at")),
        history=history(body),
        kinds=WHITELIST_KINDS,
        form={k: req.field(k) for k in ("kind", "entry", "comment")},
        requests=_recent(conn, WHITELIST_REQUESTS),
    )


def _refuse(
    app: Any,
    req: Any,
    conn: Any,
    user: Any,
    now: float,
    action: str,
    target: str,
    status: int,
    text: str,
    page: Any,
) -> Any:
    app._audit(conn, user, action, target, False, text, req.client, now)
    if status == 403:
        return app._page("error.html", user, 403, message=text)
    return page(app, req, conn, user, status, text)


def greylist_post(app: Any, req: Any, conn: Any, user: Any, now: float) -> Any:
    adding = req.path == "/greylist/add"
    action = "whitelist_add" if adding else "whitelist_remove"
    kind, entry = req.field("kind"), req.field("entry").strip()
    shown = f"{kind}:{entry}"[:200]
    if not user.can("whitelist"):
        text = f"a {user.role} cannot change the whitelist"
        return _refuse(app, req, conn, user, now, action, shown, 403, text, greylist_page)
    try:
        target = whitelist_target(kind, entry, adding)
        if not adding:
            pub = PublishedState(conn).get(GREYLIST)
            listed = {
                (str(e.get("kind")), str(e.get("entry")))
                for e in (pub.body.get("whitelist", []) if pub else [])
                if isinstance(e, dict)
            }
            if (kind, entry) not in listed:
                raise ValueError(f"{kind} {entry} is not in the whitelist")
    except ValueError as exc:
        return _refuse(app, req, conn, user, now, action, shown, 400, str(exc), greylist_page)
    try:
        if adding:
            PublishedState(conn).set_note(target, req.field("comment"), now)
        rid = RequestTable(conn).submit(action, target, None, user.account, now)
    except RequestError as exc:
        return _refuse(app, req, conn, user, now, action, target, 409, str(exc), greylist_page)
    app._audit(conn, user, action, target, True, f"request #{rid}", req.client, now)
    return app._redirect(f"/greylist?filed={rid}")


# -- connection guard ----------------------------------------------------------------------

OVER_SHOWN = 500  # rows of a gateway's clients over the thresholds (connwatch.over.OVER_MAX)


def _over(value: object) -> dict[str, Any] | None:
    """A gateway's published ``over`` (the last run's clients over the alert threshold),
    sanitized: None when not published (an older gateway, another shape); ``not_yet`` when
    no guard run has written the file yet; ``unknown`` (why) when the gateway could not read
    it (also how a gateway of the previous version says "not yet"); else its run time,
    window, whether the counts are the fleet's, rows (ip, decision, count) and how many more
    were over."""
    if not isinstance(value, dict):
        return None
    if value.get("not_yet") is True:
        return {"not_yet": True, "unknown": ""}
    if "unknown" in value:
        return {"not_yet": False, "unknown": str(value["unknown"])[:300]}
    at, items = _num(value.get("at")), value.get("clients")
    if at is None or not isinstance(items, list):
        return None
    clients = [
        {**c, "count": _int(c["count"])}
        for c in _rows(items, ("ip", "decision"), ("count",))[:OVER_SHOWN]
    ]
    return {
        "not_yet": False,
        "unknown": "",
        "at": at,
        "window": format_duration(_int(value.get("window"))),
        "fleet": value.get("counts") == "fleet",
        "clients": clients,
        "more": max(0, _int(value.get("total")) - len(clients)),
    }


def connguard_page(
    app: Any, req: Any, conn: Any, user: Any, status: int = 200, error: str = ""
) -> Any:
    gateways = []
    for pub in PublishedState(conn).starting(CONNGUARD):
        b = pub.body
        gateways.append(
            {
                "gateway": pub.gateway,
                "published_at": pub.published_at,
                "status": str(b.get("status", "")),
                "direction": str(b.get("direction", "")),
                "window": _int(b.get("window")),
                "alert_threshold": _int(b.get("alert_threshold")),
                "block_threshold": _int(b.get("block_threshold")),
                "blocking": bool(b.get("blocking", True)),
                "blocks": _rows(b.get("blocks"), ("ip", "reason"), ("count", "since", "expires")),
                "over": _over(b.get("over")),
            }
        )
    filed = req.arg("filed", "")
    return app._page(
        "connguard.html",
        user,
        status,
        error=error,
        filed=filed if all(p.isdigit() for p in filed.split(",")) else "",
        gateways=gateways,
        requests=_recent(conn, ("unblock",)),
    )


def connguard_post(app: Any, req: Any, conn: Any, user: Any, now: float) -> Any:
    text = req.field("ip").strip()
    if not user.can("unblock"):
        msg = f"a {user.role} cannot unblock"
        return _refuse(app, req, conn, user, now, "unblock", text[:80], 403, msg, connguard_page)
    try:
        ip = unblock_target(text)
        holders = [
            p.gateway
            for p in PublishedState(conn).starting(CONNGUARD)
            if any(b["ip"] == ip for b in _rows(p.body.get("blocks"), ("ip",), ()))
        ]
        if not holders:
            raise ValueError(f"{ip} is not blocked on any gateway")
    except ValueError as exc:
        return _refuse(
            app, req, conn, user, now, "unblock", text[:80], 400, str(exc), connguard_page
        )
    try:
        rids = [RequestTable(conn).submit("unblock", ip, gw, user.account, now) for gw in holders]
    except RequestError as exc:
        return _refuse(app, req, conn, user, now, "unblock", ip, 409, str(exc), connguard_page)
    result = ", ".join(f"request #{r} ({gw})" for r, gw in zip(rids, holders))
    app._audit(conn, user, "unblock", ip, True, result, req.client, now)
    return app._redirect("/connguard?filed=" + ",".join(str(r) for r in rids))
