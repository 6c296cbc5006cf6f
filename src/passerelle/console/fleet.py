"""The console's fleet pages, on the gateways' status reports (``gateway_status``):

- ``/fleet`` (every role): one row per gateway: the age of its report (stale, in red, after
  ``STALE_AFTER``: its gateway-sync stopped), its daemons, queues, signatures' age and
  outbreak mode; a fact the gateway could not probe says "unknown" and why.
- ``/outbreak`` (every role): outbreak mode on each gateway, the messages it holds (the
  quarantine index's ``outbreak`` rows still held, with the search that lists them all) and
  the outbreak requests filed; an admin switches it on every gateway that reported
  (``POST /outbreak/switch``, ``mode`` on or off: one request per gateway through
  ``RequestTable.submit_fleet``, carried out by each gateway's next pass), audited; a
  viewer's POST is refused (403).

The functions take the ``web.Console`` for its page rendering, audit and redirects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from passerelle.console.gateway_status import STALE_AFTER, Fact, GatewayStatus, GatewayStatusTable
from passerelle.console.quarantine_index import QuarantineIndex, Query
from passerelle.console.requests import OUTBREAK_KINDS, RequestError, RequestTable
from passerelle.durations import format_duration
from passerelle.reports.status import SIGNATURES_OLD

if TYPE_CHECKING:
    from passerelle.console.web import Console, User
    from passerelle.console.webio import Request, Response

HELD_SHOWN = 50  # held messages listed on the outbreak page (the search has them all)
REQUESTS_SCANNED = 200  # newest requests looked at for the outbreak ones
REQUESTS_SHOWN = 20
MODES = {"on": "outbreak_on", "off": "outbreak_off"}


@dataclass(frozen=True)
class Daemon:
    unit: str
    active: str
    sub: str

    @property
    def ok(self) -> bool:
        return self.active == "active"


@dataclass(frozen=True)
class GatewayRow:
    """One gateway's report, ready for a page (times on the console's clock)."""

    gateway: str
    reported_at: float
    age: str
    stale: bool
    daemons: Fact  # value: list of Daemon
    queues: Fact  # value: (total, [(folder, count)])
    signatures: Fact  # value: (file, age text, old)
    outbreak: Fact  # value: {"on", "since", "by", "reason"}
    held: Fact  # value: messages held by outbreak mode


def _daemons(f: Fact) -> Fact:
    if not f.known:
        return f
    try:
        return Fact([Daemon(str(d["unit"]), str(d["active"]), str(d["sub"])) for d in f.value])
    except (TypeError, KeyError):
        return Fact(unknown="unreadable daemons list")


def _queues(f: Fact) -> Fact:
    if not f.known:
        return f
    try:
        folders = sorted((str(k), int(v)) for k, v in dict(f.value).items())
    except (TypeError, ValueError):
        return Fact(unknown="unreadable queue counts")
    return Fact((sum(n for _k, n in folders), folders))


def _signatures(f: Fact, now: float) -> Fact:
    if not f.known:
        return f
    try:
        age = max(0.0, now - float(f.value["updated"]))
        return Fact((str(f.value["file"]), format_duration(age), age > SIGNATURES_OLD))
    except (TypeError, KeyError, ValueError):
        return Fact(unknown="unreadable signatures")


def _outbreak(f: Fact) -> Fact:
    if f.known and not (isinstance(f.value, dict) and "on" in f.value):
        return Fact(unknown="unreadable outbreak state")
    return f


def gateway_row(s: GatewayStatus, now: float, stale_after: float = STALE_AFTER) -> GatewayRow:
    return GatewayRow(
        gateway=s.gateway,
        reported_at=s.reported_at,
        age=format_duration(s.age(now)),
        stale=s.stale(now, stale_after),
        daemons=_daemons(s.fact("daemons")),
        queues=_queues(s.fact("queues")),
        signatures=_signatures(s.fact("signatures"), now),
        outbreak=_outbreak(s.fact("outbreak")),
        held=s.fact("outbreak_held"),
    )


def _rows(conn: Any, now: float) -> list[GatewayRow]:
    return [gateway_row(s, now) for s in GatewayStatusTable(conn).all()]


# -- pages ---------------------------------------------------------------------------------


def fleet_page(app: Console, conn: Any, user: User, now: float) -> Response:
    return app._page("fleet.html", user, rows=_rows(conn, now), stale_after=STALE_AFTER)


def outbreak_page(
    app: Console, conn: Any, user: User, now: float, status: int = 200, error: str = ""
) -> Response:
    held = QuarantineIndex(conn).search(Query(reason="outbreak", state="held", limit=HELD_SHOWN))
    requests = [
        r for r in RequestTable(conn).list(limit=REQUESTS_SCANNED) if r.kind in OUTBREAK_KINDS
    ][:REQUESTS_SHOWN]
    return app._page(
        "outbreak.html",
        user,
        status,
        rows=_rows(conn, now),
        held=held,
        held_link=app._link("/quarantine", reason="outbreak", state="held"),
        requests=requests,
        error=error,
    )


def outbreak_switch(app: Console, req: Request, conn: Any, user: User, now: float) -> Response:
    """``POST /outbreak/switch``: one outbreak request per gateway that reported."""
    mode = req.field("mode")
    kind = MODES.get(mode)
    action = kind or "outbreak"
    if not user.can("outbreak"):
        app._audit(conn, user, action, "", False, "not allowed for this role", req.client, now)
        return app._page(
            "error.html", user, 403, message=f"a {user.role} cannot switch outbreak mode"
        )
    if kind is None:
        return app._page("error.html", user, 400, message="outbreak mode is switched on or off")
    gateways = GatewayStatusTable(conn).gateways()
    if not gateways:
        why = "no gateway has reported its status yet: no outbreak request filed"
        app._audit(conn, user, kind, "", False, why, req.client, now)
        return outbreak_page(app, conn, user, now, 409, why)
    target = ",".join(gateways)
    try:
        ids = RequestTable(conn).submit_fleet(kind, gateways, user.account, now)
    except RequestError as exc:
        app._audit(conn, user, kind, target, False, str(exc), req.client, now)
        return outbreak_page(app, conn, user, now, 400, str(exc))
    result = "requests " + ", ".join(f"#{i}" for i in ids)
    app._audit(conn, user, kind, target, True, result, req.client, now)
    return app._redirect("/outbreak")
