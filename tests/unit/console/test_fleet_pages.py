"""The fleet status and outbreak pages: one row per gateway from its snapshot (stale in red
after 3 timer periods, on the console's clock), the fleet-wide outbreak switch (admin only,
one request per known gateway, CSRF, audited) and the messages outbreak mode holds."""

from __future__ import annotations

import re

from passerelle.console.gateway_status import STALE_AFTER, GatewayStatusTable, collect
from passerelle.console.requests import RequestTable
from plugins import load

web = load("tests/unit/console/test_web.py")
# the console's own fixtures (a SQLite file, a clock, the app with an admin and a viewer)
clock, app = web.clock, web.app  # db: conftest.py
T0, QID, QID2 = web.T0, web.QID, web.QID2


def report(db, gateway: str, at: float, **facts) -> None:
    probes = {
        "daemons": lambda: [
            {"unit": "sendmail", "active": "active", "sub": "running"},
            {"unit": "passerelle-spam", "active": "failed", "sub": "failed"},
        ],
        "queues": lambda: {"/var/spool/mqueue": 3, "/var/spool/mqueue-client": 1},
        "signatures": lambda: {"file": "daily.cld", "updated": at - 7200},
        "outbreak": lambda: {"on": False, "since": 0.0, "by": "", "reason": ""},
        "outbreak_held": lambda: 0,
    }
    probes.update(facts)
    GatewayStatusTable(db()).upsert(collect(gateway, at, probes))


def row(page: str, gateway: str) -> str:
    m = re.search(
        rf"<tr[^>]*>\s*<td[^>]*>{re.escape(gateway)}</td>(?:(?!</tr>).)*</tr>", page, re.S
    )
    assert m, f"no row for {gateway}"
    return m.group(0)


def outbreak_requests(db) -> list:
    return sorted(
        (r.gateway, r.kind, r.requested_by)
        for r in RequestTable(db()).list(limit=100)
        if r.kind.startswith("outbreak")
    )


# -- fleet ---------------------------------------------------------------------------------


def test_fleet_lists_each_gateway_with_its_report(app, db, clock):
    report(db, "gw1", T0 - 20)
    report(db, "gw2", T0 - STALE_AFTER - 5, outbreak_held=lambda: 1 / 0)
    for who in (("alice", "pw-a"), ("victor", "pw-v")):  # an admin and a viewer
        page = web.logged_in(app, *who).get("/fleet")
        assert page.status == 200, page.text
        gw1, gw2 = row(page.text, "gw1"), row(page.text, "gw2")
        assert "20s ago" in gw1 and "stale" not in gw1
        assert "sendmail" in gw1 and "active" in gw1
        assert 'class="bad"' in gw1 and "passerelle-spam" in gw1  # a daemon down stands out
        assert "4 (" in gw1  # queues: the total and each folder
        assert "2h" in gw1  # signatures updated 2 h before the report
        assert "off" in gw1
        # an old report is stale (red); a fact that could not be collected says why
        assert 'class="stale"' in gw2 and "stale" in gw2
        assert "unknown" in gw2 and "ZeroDivisionError" in gw2
    assert 'href="/fleet"' in page.text and 'href="/outbreak"' in page.text  # in the nav


def test_fleet_without_any_report_says_so(app):
    page = web.logged_in(app).get("/fleet")
    assert page.status == 200 and "No gateway has reported" in page.text


# -- outbreak ------------------------------------------------------------------------------


def test_outbreak_page_shows_each_gateways_state_and_the_held_messages(app, db):
    report(db, "gw1", T0 - 10)
    report(
        db,
        "gw2",
        T0 - 10,
        outbreak=lambda: {"on": True, "since": T0 - 600, "by": "admin", "reason": "console"},
        outbreak_held=lambda: 1,
    )
    web.index(db, web.held(1, reason="outbreak", rule="outbreak mode", gateway="gw2"))
    web.index(db, web.held(2, qid=QID2, reason="virus"))
    page = web.logged_in(app).get("/outbreak")
    assert page.status == 200, page.text
    assert "off" in row(page.text, "gw1")
    assert "on" in row(page.text, "gw2") and "since" in row(page.text, "gw2")
    # the held messages: those outbreak mode holds, not the virus; a link to the search
    assert QID in page.text and QID2 not in page.text
    assert "/quarantine?reason=outbreak&amp;state=held" in page.text
    # an admin has the two switches, each a form with its token
    assert page.text.count('action="/outbreak/switch"') == 2
    assert 'value="on"' in page.text and 'value="off"' in page.text


def test_the_switch_files_one_request_per_known_gateway_and_audits(app, db):
    report(db, "gw1", T0 - 10)
    report(db, "gw2", T0 - 10)
    c = web.logged_in(app)
    token = c.get("/outbreak").csrf()
    r = c.post("/outbreak/switch", {"csrf": token, "mode": "on"})
    assert r.status == 303 and r.header("Location") == "/outbreak"
    assert outbreak_requests(db) == [
        ("gw1", "outbreak_on", "alice"),
        ("gw2", "outbreak_on", "alice"),
    ]
    r = c.post("/outbreak/switch", {"csrf": token, "mode": "off"})
    assert r.status == 303
    assert [k for _g, k, _b in outbreak_requests(db)].count("outbreak_off") == 2
    entries = [(a.action, a.ok, a.target) for a in web.audit(db)]
    assert ("outbreak_on", True, "gw1,gw2") in entries
    assert ("outbreak_off", True, "gw1,gw2") in entries
    # the page shows the requests filed, pending until each gateway carries it out
    page = c.get("/outbreak")
    assert "outbreak_off" in page.text and "pending" in page.text


def test_the_switch_without_any_known_gateway_is_refused(app, db):
    c = web.logged_in(app)
    r = c.post("/outbreak/switch", {"csrf": c.get("/outbreak").csrf(), "mode": "on"})
    assert r.status == 409 and "no gateway has reported" in r.text
    assert outbreak_requests(db) == []


def test_a_bad_mode_is_refused(app, db):
    report(db, "gw1", T0 - 10)
    c = web.logged_in(app)
    r = c.post("/outbreak/switch", {"csrf": c.get("/outbreak").csrf(), "mode": "maybe"})
    assert r.status == 400
    assert outbreak_requests(db) == []


def test_the_switch_without_its_token_is_refused(app, db):
    report(db, "gw1", T0 - 10)
    c = web.logged_in(app)
    r = c.post("/outbreak/switch", {"mode": "on"})
    assert r.status == 403
    r = c.post("/outbreak/switch", {"csrf": "forged", "mode": "on"})
    assert r.status == 403
    assert outbreak_requests(db) == []


def test_a_viewer_sees_no_switch_and_its_post_is_refused(app, db):
    report(db, "gw1", T0 - 10)
    c = web.logged_in(app, "victor", "pw-v")
    page = c.get("/outbreak")
    assert page.status == 200 and "off" in row(page.text, "gw1")
    assert "/outbreak/switch" not in page.text
    r = c.post("/outbreak/switch", {"csrf": page.csrf(), "mode": "on"})
    assert r.status == 403 and "a viewer cannot switch outbreak mode" in r.text
    assert outbreak_requests(db) == []
    assert ("outbreak_on", False) in [(a.action, a.ok) for a in web.audit(db)]
