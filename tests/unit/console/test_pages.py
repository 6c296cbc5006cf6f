"""The greylist and connection-guard pages: what the gateways published, shown; the admin's
forms filing requests; the viewer's refused; CSRF; bad input shown and nothing filed."""

from __future__ import annotations

import pytest

from passerelle.console.audit import AuditLog
from passerelle.console.auth import Accounts, hash_password
from passerelle.console.published import PublishedState
from passerelle.console.requests import RequestTable
from passerelle.console.web import make_app
from passerelle.greylist.report import build_history
from passerelle.greylist.stats import DAY, DayStats
from plugins import load

Client = load("tests/unit/console/webclient.py").Client
SECRET = b"s" * 40
T0 = 1_764_633_600.0

GREYLIST = {
    "whitelist": [
        {"kind": "client", "entry": "192.0.2.7", "comment": "partner <MX>", "created": T0},
        {"kind": "sender", "entry": "@example.org", "comment": "", "created": T0},
    ],
    "report": {
        "decisions": {"greylisted": 40, "passed": 10, "client": 5},
        "whitelisted": [{"client": "192.0.2.7 (client 192.0.2.7)", "hits": 5}],
        "came_back": [{"client": "198.51.100.0/24", "triplets": 4, "max_delay": 1300.0}],
        "never_retried": [{"client": "203.0.113.0/24", "triplets": 30}],
        "delays": {
            "count": 10,
            "min": 1200.0,
            "p50": 1300.0,
            "p90": 2000.0,
            "p99": 2100.0,
            "max": 2100.0,
            "buckets": [{"range": "0s-45m", "count": 8}, {"range": "45m-1h", "count": 2}],
        },
    },
    "report_at": T0,
    "suggestions": [{"entry": "198.51.100.0/24", "triplets": 4, "max_delay": 1300.0}],
}
GUARD = {
    "direction": "inbound",
    "window": 3600,
    "alert_threshold": 500,
    "block_threshold": 2500,
    "block_for": 86400,
    "blocking": True,
    "status": "CRITICAL - inbound gw1: blocked 198.51.100.7 (3000/1h) | clients=2",
    "blocks": [
        {"ip": "198.51.100.7", "count": 3000, "since": T0, "expires": T0 + 86400, "reason": "x"}
    ],
    "over": {
        "version": 1,
        "at": T0 - 120,
        "window": 3600,
        "direction": "inbound",
        "alert_threshold": 500,
        "block_threshold": 2500,
        "counts": "fleet",
        "total": 5,
        "clients": [
            {"ip": "198.51.100.7", "count": 3000, "decision": "already blocked"},
            {"ip": "10.0.0.5", "count": 2900, "decision": "whitelisted"},
            {"ip": "192.0.2.10", "count": 600, "decision": "alert"},
        ],
    },
}


@pytest.fixture
def app(db):
    accts = Accounts.from_inventory(
        [
            {"name": "alice", "role": "admin", "password_hash": hash_password("pw-a", 10_000)},
            {"name": "victor", "role": "viewer", "password_hash": hash_password("pw-v", 10_000)},
        ]
    )
    app = make_app(db, accts, SECRET, lambda: T0)
    state = PublishedState(db())
    state.publish("greylist", "gw1", GREYLIST, T0)
    state.publish("connguard:gw1", "gw1", GUARD, T0)
    old_gateway = {k: v for k, v in GUARD.items() if k != "over"}  # publishes no ``over``
    state.publish("connguard:gw2", "gw2", {**old_gateway, "blocks": []}, T0)
    return app


def logged_in(app, name="alice", password="pw-a") -> Client:
    c = Client(app)
    assert c.login(name, password).status == 303
    return c


def requests(db) -> list:
    return RequestTable(db()).list()


def last_audit(db):
    return AuditLog(db()).list(1)[0][0]


def test_nav_links_both_pages(app):
    page = logged_in(app).get("/quarantine")
    assert 'href="/greylist"' in page.text and 'href="/connguard"' in page.text


def test_greylist_page_shows_the_published_whitelist_charts_and_suggestions(app):
    page = logged_in(app).get("/greylist")
    assert page.status == 200
    assert "192.0.2.7" in page.text and "partner &lt;MX&gt;" in page.text
    assert "@example.org" in page.text
    assert page.text.count("<svg") == 2 and "<script" not in page.text
    assert 'width="300"' in page.text  # the longest bar (greylisted, 40)
    assert "198.51.100.0/24" in page.text and "203.0.113.0/24" in page.text
    assert 'action="/greylist/add"' in page.text and 'action="/greylist/remove"' in page.text


def test_pages_without_publication(db):
    accts = Accounts.from_inventory(
        [{"name": "alice", "role": "admin", "password_hash": hash_password("pw-a", 10_000)}]
    )
    c = logged_in(make_app(db, accts, SECRET, lambda: T0))
    assert "No gateway has published its greylist yet" in c.get("/greylist").text
    assert "No gateway has published its connection guard yet" in c.get("/connguard").text


def test_admin_adds_an_entry_one_request_for_any_gateway_with_its_comment(app, db):
    c = logged_in(app)
    page = c.get("/greylist")
    r = c.post(
        "/greylist/add",
        {"csrf": page.csrf(), "kind": "client", "entry": " 10.0.0.5 ", "comment": "lab"},
    )
    assert r.status == 303
    (req,) = requests(db)
    assert r.header("Location") == f"/greylist?filed={req.id}"
    assert (req.kind, req.target, req.gateway) == ("whitelist_add", "client:10.0.0.5", None)
    assert PublishedState(db()).note("client:10.0.0.5") == "lab"
    a = last_audit(db)
    assert (a.action, a.target, a.ok, a.result) == (
        "whitelist_add",
        "client:10.0.0.5",
        True,
        f"request #{req.id}",
    )
    assert (
        f'Request <a href="/requests/{req.id}">#{req.id}</a> filed'
        in c.get("/greylist", filed=str(req.id)).text
    )


def test_admin_removes_a_listed_entry(app, db):
    c = logged_in(app)
    r = c.post(
        "/greylist/remove",
        {"csrf": c.get("/greylist").csrf(), "kind": "sender", "entry": "@example.org"},
    )
    assert r.status == 303
    assert [(q.kind, q.target) for q in requests(db)] == [
        ("whitelist_remove", "sender:@example.org")
    ]


@pytest.mark.parametrize(
    "path, fields, message",
    [
        ("/greylist/add", {"kind": "trusted", "entry": "10.0.0.5"}, "unknown kind of whitelist"),
        ("/greylist/add", {"kind": "client", "entry": "not valid!"}, "bad client entry"),
        ("/greylist/add", {"kind": "client", "entry": ""}, "the whitelist entry is empty"),
        ("/greylist/remove", {"kind": "client", "entry": "10.9.9.9"}, "is not in the whitelist"),
        ("/greylist/remove", {"kind": "nope", "entry": "192.0.2.7"}, "unknown kind"),
    ],
)
def test_bad_whitelist_input_is_a_message_and_changes_nothing(app, db, path, fields, message):
    c = logged_in(app)
    r = c.post(path, {"csrf": c.get("/greylist").csrf(), **fields})
    assert r.status == 400 and message in r.text and 'role="alert"' in r.text
    assert requests(db) == []
    assert last_audit(db).ok is False


def test_connguard_page_shows_blocks_and_status(app):
    page = logged_in(app).get("/connguard")
    assert page.status == 200
    assert "198.51.100.7" in page.text and "CRITICAL - inbound gw1" in page.text
    assert "No active block." in page.text  # gw2
    assert 'action="/connguard/unblock"' in page.text


def test_connguard_page_shows_the_clients_over_the_thresholds(app):
    page = logged_in(app).get("/connguard")
    text = page.text
    assert (
        "Clients over the thresholds (last run at 2025-12-01 23:58:00 UTC, window 1h,"
        " sum over the gateways)" in text
    )
    over = text[text.index("Clients over the thresholds (last run") :]
    over = over[: over.index("</table>")]
    assert "<td>192.0.2.10</td><td>600</td><td>alert</td>" in over
    assert "<td>10.0.0.5</td><td>2900</td><td>whitelisted</td>" in over
    assert "and 2 more" in over
    # Unblock only where the console's unblock applies: a client this gateway blocks
    assert over.count('action="/connguard/unblock"') == 1
    assert 'name="ip" value="198.51.100.7"' in over and 'value="192.0.2.10"' not in over
    # gw2 (an older gateway) publishes no list
    assert "Clients over the thresholds: not published yet." in text


def test_connguard_page_with_nobody_over_and_with_an_unreadable_list(app, db):
    state = PublishedState(db())
    over = {**GUARD["over"], "total": 0, "clients": [], "counts": "local"}
    state.publish("connguard:gw1", "gw1", {**GUARD, "over": over}, T0)
    unknown = {"unknown": "/var/lib/passerelle/connwatch-over.json: not JSON <b>"}
    state.publish("connguard:gw2", "gw2", {**GUARD, "over": unknown}, T0)
    text = logged_in(app).get("/connguard").text
    assert "window 1h, this gateway&#39;s counts)" in text
    assert "No client over the alert threshold in the last run." in text and "more" not in text
    assert "Clients over the thresholds: unknown (<code>/var/lib/passerelle/" in text
    assert "not JSON &lt;b&gt;" in text


NOT_YET = (
    "Clients over the thresholds: no guard run has written its list yet"
    " (the guard runs every hour by default)."
)


def test_connguard_page_before_the_guards_first_run(app, db):
    state = PublishedState(db())
    state.publish("connguard:gw1", "gw1", {**GUARD, "over": {"not_yet": True}}, T0)
    # a gateway of the previous version says so as a reason it could not read the file
    old = {"unknown": "/var/lib/passerelle/connwatch-over.json: no run has written it yet"}
    state.publish("connguard:gw2", "gw2", {**GUARD, "over": old}, T0)
    text = logged_in(app).get("/connguard").text
    gw1 = text[text.index("<h2>gw1") : text.index("<h2>gw2")]
    assert NOT_YET in gw1 and "unknown" not in gw1
    gw2 = text[text.index("<h2>gw2") :]
    assert "Clients over the thresholds: unknown (<code>/var/lib/passerelle/" in gw2
    assert "no run has written it yet</code>)" in gw2 and NOT_YET not in gw2


@pytest.mark.parametrize(
    "over",
    [
        "x",
        [],
        None,
        {},
        {"clients": "x", "at": T0},
        {"at": "soon", "clients": []},
        {"at": True, "clients": []},
        {"unknown": 7},
        {"not_yet": "yes"},
        {"not_yet": 1, "clients": "x"},
        {"not_yet": True, "unknown": ["x"], "at": "soon"},
        {"at": 1e300, "window": "1h", "total": "all", "clients": [{"ip": 5, "count": "many"}, 3]},
        {"at": float("inf"), "clients": []},
        {"at": T0, "window": -5, "total": 10**30, "clients": [{"ip": "192.0.2.1", "count": 1e400}]},
        {"at": T0, "window": 10**400, "clients": [{"decision": {"x": 1}, "count": -3}]},
    ],
)
def test_a_hostile_over_is_shown_not_crashed(app, db, over):
    PublishedState(db()).publish("connguard:gw3", "gw3", {**GUARD, "over": over}, T0)
    page = logged_in(app).get("/connguard")
    assert page.status == 200 and "<h2>gw3 (inbound)</h2>" in page.text


def test_unblock_files_a_request_for_the_gateway_holding_the_block(app, db):
    c = logged_in(app)
    r = c.post("/connguard/unblock", {"csrf": c.get("/connguard").csrf(), "ip": "198.51.100.7"})
    assert r.status == 303
    (req,) = requests(db)
    assert (req.kind, req.target, req.gateway) == ("unblock", "198.51.100.7", "gw1")
    assert last_audit(db).result == f"request #{req.id} (gw1)"


@pytest.mark.parametrize(
    "ip, message",
    [("198.51.100.300", "not an IP address"), ("192.0.2.1", "is not blocked on any gateway")],
)
def test_bad_unblock_is_a_message_and_changes_nothing(app, db, ip, message):
    c = logged_in(app)
    r = c.post("/connguard/unblock", {"csrf": c.get("/connguard").csrf(), "ip": ip})
    assert r.status == 400 and message in r.text
    assert requests(db) == []


def test_viewer_sees_no_form_and_its_posts_are_refused(app, db):
    c = logged_in(app, "victor", "pw-v")
    grey, guard = c.get("/greylist"), c.get("/connguard")
    assert grey.status == guard.status == 200 and "192.0.2.7" in grey.text
    for page in (grey, guard):
        assert "/greylist/add" not in page.text and "/greylist/remove" not in page.text
        assert "/connguard/unblock" not in page.text
    csrf = c.get("/quarantine").csrf()  # the logout form's token
    for path, fields in [
        ("/greylist/add", {"kind": "client", "entry": "10.0.0.5"}),
        ("/greylist/remove", {"kind": "client", "entry": "192.0.2.7"}),
        ("/connguard/unblock", {"ip": "198.51.100.7"}),
    ]:
        r = c.post(path, {"csrf": csrf, **fields})
        assert r.status == 403 and "a viewer cannot" in r.text, path
        a = last_audit(db)
        assert (a.who, a.role, a.ok) == ("victor", "viewer", False)
        assert a.result.startswith("a viewer cannot")
    assert requests(db) == []


@pytest.mark.parametrize("path", ["/greylist/add", "/greylist/remove", "/connguard/unblock"])
def test_posts_without_the_form_token_are_refused(app, db, path):
    c = logged_in(app)
    form = {"kind": "client", "entry": "192.0.2.7", "ip": "198.51.100.7"}
    assert c.post(path, form).status == 403
    assert c.post(path, {**form, "csrf": "forged"}).status == 403
    assert requests(db) == []
    assert last_audit(db).action == "csrf"


def test_a_malformed_publication_is_shown_not_crashed(app, db):
    PublishedState(db()).publish(
        "greylist",
        "gw1",
        {
            "whitelist": ["x", {"kind": "client", "entry": "192.0.2.9"}],
            "report": {"decisions": {"passed": "many"}, "delays": {"buckets": [{"count": None}]}},
            "suggestions": "none",
        },
        T0,
    )
    page = logged_in(app).get("/greylist")
    assert page.status == 200 and "192.0.2.9" in page.text


# what a gateway publishes (greylist_side: report.build_history), three days up to T0's
HISTORY = build_history(
    [
        DayStats(int(T0) - DAY, {"new": 30, "early": 5, "passed": 12}, 4, 3, 2, [1300.0, 3000.0]),
        DayStats(int(T0), {"new": 7, "delayed": 1}, 2, 1, 5, [1250.0]),  # 5 back, 1 delay read
    ],
    T0 + 3600,
    3,
)


def test_greylist_page_shows_the_daily_history(app, db):
    PublishedState(db()).publish("greylist", "gw1", {**GREYLIST, "history": HISTORY}, T0)
    page = logged_in(app).get("/greylist")
    assert page.status == 200 and "<script" not in page.text
    assert "Last 3 days" in page.text and "No history published yet" not in page.text
    assert page.text.count("<svg") == 2 + 4  # the 24 hours' two charts, the history's four
    assert "2025-11-30" in page.text and "2025-12-01" in page.text and "2025-12-02" in page.text
    # 2025-12-01: delayed 35 (new + early), passed 12, whitelisted 4, 3 machines back,
    # 2 triplets back, p50 1300 s, p90 3000 s, one delay in 0s-45m and one in 45m-1h
    row = page.text.split("<tr><td>2025-12-01</td>")[1].split("</tr>")[0]
    assert row == (
        "<td>35</td><td>12</td><td>4</td><td>3</td><td>2</td><td>1300</td><td>3000</td>"
        "<td>1</td><td>1</td><td>0</td><td>0</td><td>0</td><td>0</td>"
    )
    today = page.text.split("<tr><td>2025-12-02</td>")[1].split("</tr>")[0]
    assert "<td>5 (delays of 1 of them)</td>" in today  # a sample: said so
    empty = page.text.split("<tr><td>2025-11-30</td>")[1].split("</tr>")[0]
    assert empty.startswith("<td>0</td><td>0</td><td>0</td><td>0</td><td>0</td><td>-</td>")
    assert "<th>0s-45m</th>" in page.text and "<th>&gt;=8h</th>" in page.text


def test_a_gateway_without_history_shows_none_yet(app):
    page = logged_in(app).get("/greylist")  # GREYLIST: an older gateway's body, no history
    assert page.status == 200 and "No history published yet" in page.text
    assert "Last 14 days" in page.text


@pytest.mark.parametrize(
    "hostile",
    [
        "x",
        [HISTORY],
        {"by_day": "x"},
        {"by_day": {"0": HISTORY["by_day"][0]}},
        {"by_day": [1, None, "x", [], {"day": "x"}, {"day": None}, {"day": True}]},
        {"by_day": [{"day": 1e300}, {"day": float("inf")}, {"day": float("nan")}]},
        {"days": 3},
    ],
)
def test_a_malformed_history_shows_none_yet(app, db, hostile):
    PublishedState(db()).publish("greylist", "gw1", {**GREYLIST, "history": hostile}, T0)
    page = logged_in(app).get("/greylist")
    assert page.status == 200 and "No history published yet" in page.text
    assert page.text.count("<svg") == 2


def test_a_malformed_history_day_is_shown_with_what_it_holds(app, db):
    day = {
        "day": T0,
        "greylisted": "many",
        "passed": -5,
        "whitelisted": 1e300,
        "returned": [3],
        "came_back": None,
        "delays": {
            "count": "x",
            "p50": "1300",
            "p90": float("inf"),
            "buckets": [7, {"range": "<b>0s-45m</b>", "count": "2"}, {"count": 1}],
        },
        "delays_sampled": "yes",
    }
    hostile = {"by_day": [day, {"day": T0 + DAY, "delays": "x"}]}
    PublishedState(db()).publish("greylist", "gw1", {**GREYLIST, "history": hostile}, T0)
    page = logged_in(app).get("/greylist")
    assert page.status == 200 and "Last 2 days" in page.text and "<b>0s" not in page.text
    assert "<th>&lt;b&gt;0s-45m&lt;/b&gt;</th>" in page.text
    row = page.text.split("<tr><td>2025-12-02</td>")[1].split("</tr>")[0]
    assert row.startswith("<td>0</td><td>0</td><td>1000000000")  # no negative, no crash
    assert row.endswith("<td>-</td><td>-</td><td>0</td>")  # p50, p90, "2": not numbers


def test_a_malformed_guard_publication_is_shown_not_crashed(app, db):
    PublishedState(db()).publish(
        "connguard:gw3", "gw3", {"blocks": [{"ip": "192.0.2.66"}, 7], "window": "x"}, T0
    )
    page = logged_in(app).get("/connguard")
    assert page.status == 200 and "192.0.2.66" in page.text
    odd = {"blocks": [{"ip": "192.0.2.67", "count": 1e400, "since": 1e300}]}
    PublishedState(db()).publish("connguard:gw4", "gw4", odd, T0)
    page = logged_in(app).get("/connguard")
    assert page.status == 200 and "192.0.2.67" in page.text


def test_unblock_with_a_malformed_guard_publication_is_refused_not_crashed(app, db):
    PublishedState(db()).publish("connguard:gw3", "gw3", {"blocks": 7}, T0)
    c = logged_in(app)
    r = c.post("/connguard/unblock", {"csrf": c.get("/connguard").csrf(), "ip": "198.51.100.7"})
    assert r.status == 303
    assert [(q.target, q.gateway) for q in requests(db)] == [("198.51.100.7", "gw1")]


def test_round_trip_as_the_lab_test_sees_it(app, db, tmp_path):
    """What molecule test_87 reads: the Location's request id, the request page's status and
    result, the whitelist row once published, then the removal."""
    import re

    from passerelle.console.gateway import carry_out
    from passerelle.console.pages_sync import PagesSync
    from passerelle.console.quarantine_index import QuarantineIndex

    grey = tmp_path / "greylist.toml"
    grey.write_text(f'[greylist]\nstore = "sqlite:///{tmp_path / "g.sqlite"}"\n')

    def sync_pass() -> None:
        conn = db()
        pages = PagesSync(conn, "gw2", str(grey), "", T0)
        try:
            carry_out(
                RequestTable(conn),
                None,
                QuarantineIndex(conn),
                "gw2",
                T0,
                lambda *a: None,
                lambda *a: None,
                handlers=pages.handlers(),
            )
            assert pages.publish(T0)
        finally:
            pages.close()

    c = logged_in(app)
    for path, comment, result in [
        ("/greylist/add", "molecule t1", "added to the whitelist"),
        ("/greylist/remove", "", "removed from the whitelist"),
    ]:
        posted = c.post(
            path,
            {"csrf": c.get("/greylist").csrf(), "kind": "client", "entry": "10.89.78.245"}
            | ({"comment": comment} if comment else {}),
        )
        assert posted.status == 303, posted.text
        rid = int(re.search(r"filed=([0-9]+)", posted.header("Location")).group(1))
        assert 'class="status-pending"' in c.get(f"/requests/{rid}").text
        sync_pass()
        page = c.get(f"/requests/{rid}").text
        assert re.search(r'class="status-([a-z]+)"', page).group(1) == "done"
        assert result in page
        row = "<td>client</td><td>10.89.78.245</td><td>molecule t1</td>"
        assert (row in c.get("/greylist").text) == (path == "/greylist/add")
