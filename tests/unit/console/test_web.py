"""The console's WSGI application driven directly: login, roles, CSRF, actions, audit."""

from __future__ import annotations

import pytest

from passerelle.console.audit import AuditLog
from passerelle.console.auth import Accounts, Login, SlidingWindow, hash_password
from passerelle.console.quarantine_index import HeldMessage, Part, QuarantineIndex
from passerelle.console.requests import RequestTable
from passerelle.console.rules import inventory_rules
from passerelle.console.web import make_app
from plugins import load

Client = load("tests/unit/console/webclient.py").Client
SECRET = b"s" * 40
T0 = 1_764_633_600.0
QID = "20251202T101500-0123456789ab"
QID2 = "20251202T101501-ba9876543210"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def accounts() -> Accounts:
    return Accounts.from_inventory(
        [
            {"name": "alice", "role": "admin", "password_hash": hash_password("pw-a", 10_000)},
            {"name": "victor", "role": "viewer", "password_hash": hash_password("pw-v", 10_000)},
        ]
    )


@pytest.fixture
def app(db, clock):
    accts = accounts()
    inventory = inventory_rules([{"name": "exe", "extensions": ["exe"], "action": "quarantine"}])
    return make_app(db, accts, SECRET, clock, inventory)


def held(n: int = 1, qid: str = QID, **kw) -> HeldMessage:
    base = {
        "gateway": "gw1",
        "qid": qid,
        "queue_id": f"5B{n}",
        "message_id": f"<{n}@example.org>",
        "sender": "mallory@example.org",
        "recipients": ("alice@example.com",),
        "subject": f"invoice {n}",
        "reason": "rule",
        "rule": "exe",
        "size": 2048,
        "held_at": T0 - n,
        "headers": "From: mallory@example.org\nSubject: invoice",
        "parts": (Part("invoice.exe", "application/x-dosexec", 1024),),
    }
    base.update(kw)
    return HeldMessage(**base)


def index(db, *messages: HeldMessage) -> None:
    c = db()
    i = QuarantineIndex(c)
    for m in messages:
        i.upsert(m, T0)


def request_rows(db) -> int:
    return int(db().execute("SELECT COUNT(*) FROM console_requests").fetchone()[0])


def audit(db) -> list:
    return AuditLog(db()).list(100)[0]


def logged_in(app, name="alice", password="pw-a") -> Client:
    c = Client(app)
    r = c.login(name, password)
    assert r.status == 303, r.text
    return c


# -- login ---------------------------------------------------------------------------------


def test_login_sets_a_strict_session_cookie_and_audits(app, db):
    c = Client(app)
    r = c.login("alice", "pw-a")
    assert r.status == 303 and r.header("Location") == "/quarantine"
    cookie = next(v for v in r.set_cookies() if v.startswith("passerelle_console="))
    for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    assert c.get("/quarantine").status == 200
    row = audit(db)[0]
    assert (row.who, row.role, row.action, row.ok, row.client) == (
        "alice",
        "admin",
        "login",
        True,
        "192.0.2.10",
    )


def test_wrong_password_is_refused_with_a_message(app, db):
    c = Client(app)
    r = c.login("alice", "nope")
    assert r.status == 401
    assert "wrong account name or password" in r.text
    assert "passerelle_console" not in c.cookies
    assert c.get("/quarantine").status == 303  # back to the login page
    row = audit(db)[0]
    assert (row.who, row.action, row.ok) == ("alice", "login", False)


def test_login_is_rate_limited(db, clock):
    login_limits = {"per_account": SlidingWindow(3, 300.0)}
    accts = accounts()
    from passerelle.console.auth import Sessions

    app = make_app(db, accts, SECRET, clock, login=Login(accts, Sessions(SECRET), **login_limits))
    c = Client(app)
    for _ in range(3):
        assert c.login("alice", "nope").status == 401
    r = c.login("alice", "pw-a")  # even the right password waits
    assert r.status == 429 and "too many failed logins" in r.text
    assert r.header("Retry-After")
    clock.t += 301
    assert c.login("alice", "pw-a").status == 303


def test_login_form_without_its_token_is_refused(app):
    c = Client(app)
    r = c.post("/login", {"name": "alice", "password": "pw-a"})
    assert r.status == 403 and "passerelle_console" not in c.cookies


# what the login sets, emptied: the browser drops it
CLEARED = "passerelle_console=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"


def test_expired_session_goes_back_to_login(app, clock):
    c = logged_in(app)
    clock.t += 9 * 3600
    r = c.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == [CLEARED]


@pytest.mark.parametrize("value", ["garbage", "v2.x.y", ""])
def test_an_unreadable_session_cookie_is_cleared(app, value):
    r = Client(app, cookies={"passerelle_console": value}).get("/quarantine")
    assert r.status == 303 and r.set_cookies() == [CLEARED]


def test_no_session_cookie_no_set_cookie(app):
    c = Client(app)
    r = c.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == []
    assert c.post("/rules/add", {"name": "x"}).set_cookies() == []
    c.get("/login")  # the login form's own cookie only
    assert "passerelle_console_login" in c.cookies
    r = c.get("/quarantine")
    assert r.status == 303 and r.set_cookies() == []


def test_the_login_page_clears_a_refused_session_cookie(app, clock):
    # Straight to /login (a bookmark) with an expired session: the form, and the cookie dropped
    c = logged_in(app)
    clock.t += 9 * 3600
    r = c.get("/login")
    assert r.status == 200 and 'name="password"' in r.text
    assert r.cookie("passerelle_console") == CLEARED
    assert "passerelle_console" not in c.cookies
    # ...and an unreadable one
    r = Client(app, cookies={"passerelle_console": "garbage"}).get("/login")
    assert r.status == 200 and r.cookie("passerelle_console") == CLEARED


def test_the_login_page_keeps_a_live_session_cookie(app):
    c = logged_in(app)
    r = c.get("/login")
    assert r.status == 200 and r.cookie("passerelle_console") is None
    assert c.get("/quarantine").status == 200  # still logged in


@pytest.mark.parametrize("secure", [True, False])
def test_a_refused_cookie_is_cleared_with_the_logins_attributes(db, clock, secure):
    def attributes(cookie: str) -> list[str]:
        return [a for a in cookie.split("; ")[1:] if not a.startswith("Max-Age=")]

    app = make_app(db, accounts(), SECRET, clock, secure_cookies=secure)
    c = Client(app)
    login = c.login("alice", "pw-a").cookie("passerelle_console")
    assert login is not None and ("Secure" in attributes(login)) is secure
    clock.t += 9 * 3600
    cleared = c.get("/quarantine").cookie("passerelle_console")
    assert cleared is not None and cleared.startswith("passerelle_console=;")
    assert attributes(cleared) == attributes(login) and cleared.endswith("; Max-Age=0")


def test_logout_removes_the_cookie(app):
    c = logged_in(app)
    page = c.get("/quarantine")
    r = c.post("/logout", {"csrf": page.csrf()})
    assert r.status == 303 and "passerelle_console" not in c.cookies


def test_pages_send_security_headers(app):
    r = Client(app).get("/login")
    assert "default-src 'none'" in r.header("Content-Security-Policy")
    assert r.header("Cache-Control") == "no-store"
    css = Client(app).get("/static/console.css")
    assert css.status == 200 and css.header("Content-Type").startswith("text/css")


# -- quarantine: search, detail, escaping -----------------------------------------------------


def test_search_filters_and_pages(app, db):
    index(db, *(held(n, qid=f"20251202T101500-{n:012x}") for n in range(1, 8)))
    index(db, held(9, qid=QID2, sender="bob@corp.example", reason="virus", rule="Eicar"))
    c = logged_in(app)
    r = c.get("/quarantine", sender="BOB@corp")
    assert r.status == 200 and QID2 in r.text and "invoice 1" not in r.text
    r = c.get("/quarantine", reason="rule", limit="3")
    assert "invoice 1<" in r.text and "invoice 3<" in r.text and "invoice 4<" not in r.text
    assert "offset=3" in r.text  # a link to the next page
    r = c.get("/quarantine", reason="rule", limit="3", offset="6")
    assert "invoice 7<" in r.text and "invoice 1<" not in r.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"color": "red"}, "unknown search field"),
        ({"since": "last week"}, "a date YYYY-MM-DD"),
        ({"offset": "-5"}, "cannot be negative"),
    ],
)
def test_bad_search_shows_a_clear_message(app, query, message):
    r = logged_in(app).get("/quarantine", **query)
    assert r.status == 400 and message in r.text


def test_subject_with_script_is_escaped(app, db):
    index(db, held(subject='<script>alert("x")</script>', headers="X: <b>bold</b>"))
    c = logged_in(app)
    for page in (c.get("/quarantine"), c.get(f"/quarantine/gw1/{QID}")):
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in c.get(f"/quarantine/gw1/{QID}").text


def test_message_detail_shows_reason_rule_and_parts(app, db):
    index(db, held())
    r = logged_in(app).get(f"/quarantine/gw1/{QID}")
    assert r.status == 200
    for text in ("invoice.exe", "application/x-dosexec", "Subject: invoice", ">exe<", ">rule<"):
        assert text in r.text
    assert 'value="release"' in r.text and 'value="delete"' in r.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/quarantine/gw1/{QID2}", 404),
        ("/quarantine/gw1/..%2f..%2fetc", 400),
        ("/quarantine/bad%20gw/" + QID, 400),
    ],
)
def test_unknown_or_malformed_message(app, db, path, status):
    index(db, held())
    assert logged_in(app).get(path).status == status


# -- actions --------------------------------------------------------------------------------


def test_release_files_one_request_and_a_second_is_refused(app, db):
    index(db, held())
    c = logged_in(app)
    csrf = c.get(f"/quarantine/gw1/{QID}").csrf()
    r = c.post("/quarantine/action", {"csrf": csrf, "action": "release", "item": f"gw1/{QID}"})
    assert r.status == 200 and "request #1 filed" in r.text
    reqs = RequestTable(db()).list()
    assert [(q.kind, q.target, q.gateway, q.requested_by) for q in reqs] == [
        ("release", QID, "gw1", "alice")
    ]
    r = c.post("/quarantine/action", {"csrf": csrf, "action": "release", "item": f"gw1/{QID}"})
    assert r.status == 409 and "already has an open request (#1)" in r.text
    assert request_rows(db) == 1
    rows = audit(db)
    assert [(a.action, a.ok) for a in rows[:2]] == [("release", False), ("release", True)]
    assert rows[1].result == "request #1" and rows[1].target == f"gw1/{QID}"


def test_release_of_a_released_or_deleted_message_is_refused(app, db):
    index(db, held())
    index(db, held(2, qid=QID2))
    i = QuarantineIndex(db())
    i.mark("gw1", QID, "released", T0)
    i.mark("gw1", QID2, "deleted", T0)
    c = logged_in(app)
    csrf = c.get("/quarantine").csrf()
    r = c.post("/quarantine/action", {"csrf": csrf, "action": "release", "item": f"gw1/{QID}"})
    assert r.status == 409 and "already released" in r.text
    r = c.post("/quarantine/action", {"csrf": csrf, "action": "delete", "item": f"gw1/{QID2}"})
    assert r.status == 409 and "was deleted" in r.text
    assert request_rows(db) == 0


def test_bulk_release_reports_each_message(app, db):
    index(db, held(), held(2, qid=QID2))
    c = logged_in(app)
    csrf = c.get("/quarantine").csrf()
    forged = "gw1/20251202T000000-ffffffffffff"
    r = c.post(
        "/quarantine/action",
        {"csrf": csrf, "action": "release", "item": [f"gw1/{QID}", f"gw1/{QID2}", forged]},
    )
    assert r.status == 200
    assert r.text.count("filed: release") == 2 and "no held message" in r.text
    assert request_rows(db) == 2


def test_post_without_or_with_a_wrong_csrf_token_is_refused(app, db):
    index(db, held())
    c = logged_in(app)
    form = {"action": "release", "item": f"gw1/{QID}"}
    assert c.post("/quarantine/action", form).status == 403
    r = c.post("/quarantine/action", {**form, "csrf": "forged"})
    assert r.status == 403 and "security token" in r.text
    other = logged_in(app)  # another session's token does not do either
    assert (
        c.post("/quarantine/action", {**form, "csrf": other.get("/quarantine").csrf()}).status
        == 403
    )
    assert request_rows(db) == 0
    assert audit(db)[0].action == "csrf"


def test_viewer_sees_no_action_and_its_post_is_refused(app, db):
    index(db, held())
    c = logged_in(app, "victor", "pw-v")
    page = c.get(f"/quarantine/gw1/{QID}")
    assert page.status == 200
    assert 'value="release"' not in page.text and 'value="delete"' not in page.text
    search = c.get("/quarantine")
    assert 'name="item"' not in search.text and 'value="release"' not in search.text
    rules = c.get("/rules")
    assert "/rules/add" not in rules.text and "/rules/toggle" not in rules.text
    r = c.post(
        "/quarantine/action", {"csrf": page.csrf(), "action": "release", "item": f"gw1/{QID}"}
    )
    assert r.status == 403
    assert request_rows(db) == 0
    row = audit(db)[0]
    assert (row.who, row.role, row.action, row.ok) == ("victor", "viewer", "release", False)


def test_forged_request_id(app):
    c = logged_in(app)
    for rid in ("999", "abc", "1%20OR%201=1"):
        r = c.get(f"/requests/{rid}")
        assert r.status == 404
    assert "no request #999" in c.get("/requests/999").text
    assert "malformed request id" in c.get("/requests/abc").text


def test_requests_page_shows_state_and_result(app, db):
    index(db, held())
    c = logged_in(app)
    csrf = c.get("/quarantine").csrf()
    c.post("/quarantine/action", {"csrf": csrf, "action": "release", "item": f"gw1/{QID}"})
    t = RequestTable(db())
    req = t.claim("gw1", T0 + 5)
    t.complete(req.id, "gw1", True, "re-injected to 1 recipient", T0 + 6)
    r = c.get("/requests")
    assert "re-injected to 1 recipient" in r.text and ">done<" in r.text
    assert f"/requests/{req.id}" in r.text


# -- rules ------------------------------------------------------------------------------------


def test_rules_page_add_disable_export(app, db):
    c = logged_in(app)
    page = c.get("/rules")
    assert "Inventory rules" in page.text and ">exe<" in page.text
    csrf = page.csrf()
    form = {"csrf": csrf, "name": "iso", "kind": "attachment", "extensions": "iso, img"}
    r = c.post("/rules/add", {**form, "action": "quarantine", "archives": "on"})
    assert r.status == 303
    page = c.get("/rules")
    runtime = page.text.split("Runtime rules")[1]
    assert ">iso<" in runtime
    assert "img, iso" in runtime
    assert c.post("/rules/toggle", {"csrf": csrf, "name": "exe", "enabled": "0"}).status == 303
    export = c.get("/rules/export")
    assert export.status == 200
    assert "exe left out: disabled at runtime" in export.text
    assert '- name: "iso"' in export.text
    actions = [a.action for a in audit(db)[:3]]
    assert actions == ["export_rules", "rule_disable", "rule_add"]


def test_a_runtime_rule_is_removed_an_inventory_rule_is_not(app, db):
    c = logged_in(app)
    csrf = c.get("/rules").csrf()
    form = {"csrf": csrf, "name": "iso", "kind": "attachment", "extensions": "iso"}
    assert c.post("/rules/add", {**form, "action": "quarantine"}).status == 303
    assert ">iso<" in c.get("/rules").text.split("Runtime rules")[1]
    assert c.post("/rules/remove", {"csrf": csrf, "name": "iso"}).status == 303
    assert "No runtime rule." in c.get("/rules").text
    r = c.post("/rules/remove", {"csrf": csrf, "name": "exe"})
    assert r.status == 400 and "inventory rules can only be disabled" in r.text
    assert c.post("/rules/remove", {"name": "exe"}).status == 403  # no form token
    assert [(a.action, a.ok) for a in audit(db)[:3]] == [
        ("csrf", False),
        ("rule_remove", False),
        ("rule_remove", True),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "bad", "kind": "header", "header": "Subject", "pattern": "(a+)+"}, "nests"),
        ({"name": "exe", "kind": "attachment", "extensions": "exe"}, "inventory rule"),
        ({"name": "x", "kind": "attachment", "extensions": ""}, "needs extensions"),
        ({"name": "bad name!", "kind": "attachment", "extensions": "iso"}, "rule name"),
    ],
)
def test_bad_rule_is_shown_and_nothing_stored(app, db, fields, message):
    c = logged_in(app)
    csrf = c.get("/rules").csrf()
    r = c.post("/rules/add", {"csrf": csrf, "action": "quarantine", **fields})
    assert r.status == 400 and message in r.text
    assert db().execute("SELECT COUNT(*) FROM console_runtime_rules").fetchone()[0] == 0
    assert audit(db)[0].ok is False


def test_viewer_cannot_change_rules(app, db):
    c = logged_in(app, "victor", "pw-v")
    csrf = c.get("/rules").csrf()
    r = c.post(
        "/rules/add", {"csrf": csrf, "name": "iso", "kind": "attachment", "extensions": "iso"}
    )
    assert r.status == 403
    assert db().execute("SELECT COUNT(*) FROM console_runtime_rules").fetchone()[0] == 0


# -- audit page -------------------------------------------------------------------------------


def test_audit_page_lists_actions_escaped(app, db):
    Client(app).login("<img src=x>", "nope")
    c = logged_in(app)
    r = c.get("/audit")
    assert r.status == 200 and "&lt;img src=x&gt;" in r.text and "<img src=x>" not in r.text
    assert c.get("/audit", offset="-1").status == 400


def _login_from(app, peer: str, forwarded_for: str) -> None:
    c = Client(app, client=peer)
    page = c.get("/login")
    token = page.text.split('name="token" value="')[1].split('"')[0]
    c.request(
        "POST",
        "/login",
        form={"token": token, "name": "alice", "password": "pw-a"},
        headers={"HTTP_X_FORWARDED_FOR": forwarded_for},
    )


def test_client_address_from_the_trusted_proxy(app, db):
    _login_from(app, "127.0.0.1", "198.51.100.7")
    assert audit(db)[0].client == "198.51.100.7"
    # from any other peer the header is not believed
    _login_from(app, "192.0.2.99", "198.51.100.7")
    assert audit(db)[0].client == "192.0.2.99"


def test_oversized_form_is_refused(app):
    c = logged_in(app)
    r = c.request("POST", "/quarantine/action", headers={"CONTENT_LENGTH": str(10**7)})
    assert r.status == 413


def test_unreadable_runtime_rules_are_reported_not_crashed(app, db):
    c = logged_in(app)
    db().execute(
        "INSERT INTO console_runtime_rules (id, body, version, updated, updated_by)"
        " VALUES (1, 'not json', 1, 0, 'x')"
    )
    r = c.get("/rules")
    assert r.status == 500 and "stored runtime rules are refused" in r.text
    assert ">exe<" in r.text  # the inventory's rules still shown


def test_a_removed_account_loses_its_session(db, clock):
    app = make_app(db, accounts(), SECRET, clock)
    c = logged_in(app)
    only_victor = Accounts.from_inventory(
        [{"name": "victor", "role": "viewer", "password_hash": hash_password("pw-v", 10_000)}]
    )
    app2 = make_app(db, only_victor, SECRET, clock)  # the inventory changed, same secret
    c.app = app2
    r = c.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == [CLEARED]


def test_routes_head_and_static(app):
    c = logged_in(app)
    assert c.get("/").header("Location") == "/quarantine"
    assert c.get("/nowhere").status == 404
    assert c.get("/static/../web.py").status == 404
    assert c.get("/static/other.css").status == 404
    head = c.request("HEAD", "/quarantine")
    assert head.status == 200 and head.text == "" and int(head.header("Content-Length")) > 0
    assert c.request("PUT", "/quarantine").status == 405
