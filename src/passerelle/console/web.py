"""The console's web application: plain WSGI, pages rendered with Jinja2 (autoescape on),
no JavaScript. ``make_app`` builds it from its dependencies (a database connection factory,
the accounts, the server secret, a clock), so a test drives it with environ dicts.

- Login (rate limited by ``auth.Login``: a local account, else the directory when the
  console has one, ``ldapauth.py``; a directory that does not answer is a 503 with the form
  again), then a signed session cookie (HttpOnly, Secure, SameSite=Strict). Logout revokes
  the session server-side (``session_store.py``): its token is refused afterwards, even a
  copy. An LDAP session's groups are read again every ``[ldap] recheck``: a new role
  applies at once, a user in no console group any more (or gone) is logged out. A session
  cookie refused (logged out, ended, expired, unreadable) is cleared in the answer (the login
  page, the redirection to it, or 403 for a POST), so the browser stops sending it. The login form
  carries a token bound to a cookie of its own; every other form carries the session's CSRF
  token. A POST whose token is missing or wrong is refused (403) before anything is read or
  changed.
- Roles (``auth.can``): a viewer sees no action button, and its POST is refused (403).
- Actions (release, delete, a runtime rule added or switched) go through the domain modules
  (``requests.RequestTable``, ``rules``), which refuse bad input with a message shown on the
  page; each action, refused or not, writes an audit row (``audit.AuditLog``).
- One database connection per request (``connect()``), closed at its end.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from passerelle.console import fleet, pages
from passerelle.console.audit import AuditError, AuditLog
from passerelle.console.auth import Accounts, Directory, Login, Session, Sessions, can
from passerelle.console.gateway_status import GatewayStatusTable
from passerelle.console.published import PublishedState
from passerelle.console.quarantine_index import (
    FIELDS,
    REASONS,
    STATES,
    NotFound,
    QuarantineIndex,
    QueryError,
)
from passerelle.console.requests import RequestError, RequestTable
from passerelle.console.rules import (
    ACTIONS,
    KNOWN_TYPES,
    ContentRule,
    RuleError,
    RuntimeRules,
    add_rule,
    export_yaml,
    make_rule,
    merge,
    remove_rule,
    set_enabled,
)
from passerelle.console.rules_store import RulesChanged, RuleStore
from passerelle.console.session_store import SessionPurger, SessionStore, recheck
from passerelle.console.trace import RETENTION, Purger, TraceStore, trace_page
from passerelle.console.webio import (
    BadRequest,
    Request,
    Response,
    cookie_header,
    read_request,
    redirect,
)

log = logging.getLogger("passerelle.console.web")

HERE = Path(__file__).parent
SESSION_COOKIE = "passerelle_console"
LOGIN_COOKIE = "passerelle_console_login"
BULK_MAX = 1000  # messages in one bulk action
AUDIT_PAGE = 100
REQUESTS_PAGE = 200
MESSAGE_ACTIONS = ("release", "delete")
STATIC = {"console.css": "text/css; charset=utf-8"}
RULE_FORM = ("name", "kind", "header", "pattern", "extensions", "types", "action")


@dataclass(frozen=True)
class User:
    account: str
    role: str
    session: Session
    csrf: str
    source: str = "local"  # ldap: an account of the directory

    def can(self, action: str) -> bool:
        return can(self.role, action)

    @property
    def who(self) -> str:
        """The account as the audit log names it (``name (ldap)`` for the directory's)."""
        return audit_name(self.account, self.source)


def audit_name(account: str, source: str) -> str:
    return f"{account} (ldap)" if source == "ldap" else account


@dataclass(frozen=True)
class Outcome:
    item: str
    ok: bool
    status: int
    text: str


def _utc(ts: float | None) -> str:
    if ts is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):  # a published body's time: input
        return "?"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    env.filters["size"] = _size
    return env


class Console:
    """The WSGI application (``make_app`` builds one)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        accounts: Accounts,
        secret: bytes,
        now: Callable[[], float],
        inventory: Sequence[ContentRule] = (),
        login: Login | None = None,
        trusted_proxies: Iterable[str] = ("127.0.0.1", "::1"),
        prefix: str = "",
        secure_cookies: bool = True,
        session_lifetime: float | None = None,
        trace_retention: float = RETENTION,
        directory: Directory | None = None,
    ) -> None:
        self.connect = connect
        self.accounts = accounts
        self.sessions = (
            Sessions(secret) if session_lifetime is None else Sessions(secret, session_lifetime)
        )
        self.login = login or Login(accounts, self.sessions, directory=directory)
        self.now = now
        self.inventory = tuple(inventory)
        self.trusted_proxies = tuple(trusted_proxies)
        self.prefix = prefix.rstrip("/")
        self.secure_cookies = secure_cookies
        self._login_key = hmac.new(secret, b"passerelle console login form v1", "sha256").digest()
        self.env = environment()
        self.trace_purge = Purger(trace_retention)
        self.session_purge = SessionPurger()
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}

    # -- plumbing ------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create or upgrade every console table (run once, at start)."""
        conn = self.connect()
        try:
            RequestTable(conn).migrate()
            QuarantineIndex(conn).migrate()
            AuditLog(conn).migrate()
            RuleStore(conn).migrate()
            GatewayStatusTable(conn).migrate()
            PublishedState(conn).migrate()
            TraceStore(conn).migrate()
            SessionStore(conn).migrate()
        finally:
            conn.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        try:
            req = read_request(environ, self.trusted_proxies)
        except BadRequest as exc:
            resp = self._page("error.html", None, exc.status, message=str(exc))
        else:
            resp = self._serve(req)
        start_response(resp.status_line(), resp.all_headers())
        if str(environ.get("REQUEST_METHOD", "")).upper() == "HEAD":
            return [b""]
        return [resp.body]

    def _serve(self, req: Request) -> Response:
        if req.path.startswith("/static/"):
            return self._static(req.path[len("/static/") :])
        conn = None
        try:
            conn = self.connect()
            return self._dispatch(req, conn)
        except Exception:
            log.exception("console: %s %s failed", req.method, req.path)
            return self._page("error.html", None, 500, message="internal error (logged)")
        finally:
            if conn is not None:
                conn.close()

    def _static(self, name: str) -> Response:
        body = self.static.get(name)
        if body is None:
            return Response(404, b"not found", "text/plain; charset=utf-8")
        return Response(200, body, STATIC[name], cache=True)

    def _link(self, path: str, **params: object) -> str:
        clean = {k: str(v) for k, v in params.items() if v not in (None, "")}
        return self.prefix + path + ("?" + urlencode(clean) if clean else "")

    def _page(self, template: str, user: User | None, status: int = 200, **ctx: Any) -> Response:
        body = self.env.get_template(template).render(
            user=user, base=self.prefix, link=self._link, **ctx
        )
        return Response(status, body.encode("utf-8"))

    def _redirect(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
        return redirect(self.prefix + path, headers)

    def _session_cookie(self, token: str, max_age: int) -> tuple[str, str]:
        """The session cookie's Set-Cookie: the login's, and emptied (``""``, 0) to clear it."""
        return cookie_header(SESSION_COOKIE, token, max_age, secure=self.secure_cookies)

    def _user(self, req: Request, conn: Any, now: float) -> User | None:
        session = self.sessions.check(req.cookies.get(SESSION_COOKIE), now)
        if session is None:
            return None
        if SessionStore(conn).is_revoked(session.sid):  # logged out (a copied token)
            return None
        if session.source == "ldap":
            # Refused once the console has no directory, or when a local account of that
            # name now exists (local wins). Its role: its groups, read again every
            # [ldap] recheck (session_store.recheck).
            directory = self.login.directory
            if directory is None or self.accounts.get(session.account) is not None:
                return None
            verdict = recheck(SessionStore(conn), directory, session, now)
            who = audit_name(session.account, session.source)
            if verdict.role is None:
                AuditLog(conn).append(
                    who, verdict.was, "session_end", "", True, verdict.ended, req.client, now
                )
                return None
            if verdict.was:
                AuditLog(conn).append(
                    who,
                    verdict.role,
                    "ldap_role",
                    "",
                    True,
                    f"role {verdict.was} -> {verdict.role} (directory groups)",
                    req.client,
                    now,
                )
            role: str | None = verdict.role
        else:
            role = self.accounts.role_of(session.account)
        if role is None:  # the account was removed since
            return None
        return User(
            session.account, role, session, self.sessions.csrf_token(session), session.source
        )

    def _audit(
        self,
        conn: Any,
        user: User | None,
        action: str,
        target: str,
        ok: bool,
        result: str,
        client: str,
        now: float,
        who: str | None = None,
    ) -> None:
        AuditLog(conn).append(
            who if who is not None else (user.who if user else "-"),
            user.role if user else "-",
            action,
            target,
            ok,
            result,
            client,
            now,
        )

    # -- routing -------------------------------------------------------------------------
    def _dispatch(self, req: Request, conn: Any) -> Response:
        now = self.now()
        if req.path == "/login":
            if req.method == "POST":
                return self._login_post(req, conn, now)
            resp = self._login_form(req, None, 200, "")
            # A bookmark straight to the login page: a refused session cookie is dropped here
            # too (a live one is kept: the user may just come back to the console).
            if SESSION_COOKIE in req.cookies and self._user(req, conn, now) is None:
                resp.headers.append(self._session_cookie("", 0))
            return resp
        user = self._user(req, conn, now)
        if user is None:
            if req.method == "POST":
                resp = self._page("error.html", None, 403, message="log in first")
            else:
                resp = self._redirect("/login")
            if SESSION_COOKIE in req.cookies:  # refused: the browser would send it forever
                resp.headers.append(self._session_cookie("", 0))
            return resp
        if req.method == "POST":
            if not self.sessions.check_csrf(user.session, req.field("csrf")):
                self._audit(conn, user, "csrf", req.path, False, "refused", req.client, now)
                return self._page(
                    "error.html",
                    user,
                    403,
                    message="the form's security token is missing or wrong: reload the page",
                )
            return self._post(req, conn, user, now)
        if req.method not in ("GET", "HEAD"):
            return self._page("error.html", user, 405, message="method not allowed")
        return self._get(req, conn, user, now)

    def _get(self, req: Request, conn: Any, user: User, now: float) -> Response:
        self.trace_purge(conn, now)
        self.session_purge(conn, now)
        parts = [p for p in req.path.split("/") if p]
        if not parts:
            return self._redirect("/quarantine")
        if parts == ["quarantine"]:
            return self._search(req, conn, user)
        if len(parts) == 3 and parts[0] == "quarantine":
            return self._message(conn, user, parts[1], parts[2])
        if parts == ["requests"]:
            return self._requests(conn, user)
        if len(parts) == 2 and parts[0] == "requests":
            return self._request(conn, user, parts[1])
        if parts == ["rules"]:
            return self._rules(conn, user)
        if parts == ["rules", "export"]:
            return self._export(req, conn, user, now)
        if parts == ["audit"]:
            return self._audit_page(req, conn, user)
        if parts == ["fleet"]:
            return fleet.fleet_page(self, conn, user, now)
        if parts == ["outbreak"]:
            return fleet.outbreak_page(self, conn, user, now)
        if parts == ["greylist"]:
            return pages.greylist_page(self, req, conn, user)
        if parts == ["connguard"]:
            return pages.connguard_page(self, req, conn, user)
        if parts == ["trace"]:
            return trace_page(self, req, conn, user)
        return self._page("error.html", user, 404, message="no such page")

    def _post(self, req: Request, conn: Any, user: User, now: float) -> Response:
        if req.path == "/logout":
            # Server-side: the token stays refused if someone kept a copy.
            SessionStore(conn).revoke(user.session.sid, user.session.expires)
            self._audit(conn, user, "logout", "", True, "", req.client, now)
            return self._redirect("/login", [self._session_cookie("", 0)])
        if req.path == "/quarantine/action":
            return self._message_action(req, conn, user, now)
        if req.path == "/rules/add":
            return self._rule_add(req, conn, user, now)
        if req.path == "/rules/toggle":
            return self._rule_toggle(req, conn, user, now)
        if req.path == "/rules/remove":
            return self._rule_remove(req, conn, user, now)
        if req.path == "/outbreak/switch":
            return fleet.outbreak_switch(self, req, conn, user, now)
        if req.path in ("/greylist/add", "/greylist/remove"):
            return pages.greylist_post(self, req, conn, user, now)
        if req.path == "/connguard/unblock":
            return pages.connguard_post(self, req, conn, user, now)
        return self._page("error.html", user, 404, message="no such action")

    # -- login ---------------------------------------------------------------------------
    def _login_token(self, nonce: str) -> str:
        return hmac.new(
            self._login_key, nonce.encode("ascii", "replace"), hashlib.sha256
        ).hexdigest()

    def _login_form(self, req: Request, name: str | None, status: int, message: str) -> Response:
        nonce = req.cookies.get(LOGIN_COOKIE, "")
        headers = []
        if len(nonce) != 32 or not nonce.isalnum():
            nonce = secrets.token_hex(16)
            headers.append(cookie_header(LOGIN_COOKIE, nonce, None, secure=self.secure_cookies))
        resp = self._page(
            "login.html",
            None,
            status,
            name=name or "",
            message=message,
            token=self._login_token(nonce),
        )
        resp.headers.extend(headers)
        return resp

    def _login_post(self, req: Request, conn: Any, now: float) -> Response:
        name = req.field("name")
        nonce = req.cookies.get(LOGIN_COOKIE, "")
        token = req.field("token")
        if not nonce or not hmac.compare_digest(
            token.encode("utf-8"), self._login_token(nonce).encode("ascii")
        ):
            self._audit(conn, None, "login", "", False, "bad form token", req.client, now, name)
            return self._login_form(
                req, name, 403, "the login form expired: log in again from this page"
            )
        result = self.login.attempt(name, req.field("password"), req.client, now)
        if not result.ok or result.token is None or result.session is None:
            text = result.message
            if result.unavailable:
                log.warning("console: login of %r: directory unavailable: %s", name, result.detail)
                text = f"directory unavailable: {result.detail}"
            self._audit(conn, None, "login", "", False, text, req.client, now, name)
            status = 429 if result.retry_after > 0 else 503 if result.unavailable else 401
            resp = self._login_form(req, name, status, result.message)
            if result.retry_after > 0:
                resp.headers.append(("Retry-After", str(int(result.retry_after) + 1)))
            return resp
        session = result.session
        role = session.role if session.source == "ldap" else self.accounts.role_of(name) or "-"
        AuditLog(conn).append(
            audit_name(session.account, session.source),
            role,
            "login",
            "",
            True,
            "",
            req.client,
            now,
        )
        max_age = int(self.sessions.lifetime)
        return self._redirect(
            "/quarantine",
            [
                self._session_cookie(result.token, max_age),
                cookie_header(LOGIN_COOKIE, "", 0, secure=self.secure_cookies),
            ],
        )

    # -- quarantine ------------------------------------------------------------------------
    def _search(self, req: Request, conn: Any, user: User) -> Response:
        params = {k: v[0] for k, v in req.query.items() if v}
        form = {k: params.get(k, "") for k in FIELDS}
        try:
            page = QuarantineIndex(conn).search(params)
        except QueryError as exc:
            return self._page(
                "quarantine.html",
                user,
                400,
                form=form,
                page=None,
                error=str(exc),
                reasons=REASONS,
                states=STATES,
                prev_link="",
                next_link="",
            )
        keep = {k: v for k, v in params.items() if k in FIELDS and k != "offset" and v}
        prev_link = next_link = ""
        if page.offset > 0:
            prev_link = self._link(
                "/quarantine", **keep, offset=max(0, page.offset - page.limit) or ""
            )
        if page.more:
            next_link = self._link("/quarantine", **keep, offset=page.offset + page.limit)
        return self._page(
            "quarantine.html",
            user,
            form=form,
            page=page,
            error="",
            reasons=REASONS,
            states=STATES,
            prev_link=prev_link,
            next_link=next_link,
        )

    def _message(self, conn: Any, user: User, gateway: str, qid: str) -> Response:
        try:
            m = QuarantineIndex(conn).get(gateway, qid)
        except QueryError as exc:
            return self._page(
                "error.html", user, 404 if isinstance(exc, NotFound) else 400, message=str(exc)
            )
        requests = RequestTable(conn).list(target=m.qid, limit=20)
        state = RequestTable(conn).target_state(m.qid)
        return self._page(
            "message.html", user, m=m, requests=requests, open_request=state[1] if state else 0
        )

    def _message_action(self, req: Request, conn: Any, user: User, now: float) -> Response:
        kind = req.field("action")
        items = req.fields("item")
        if kind not in MESSAGE_ACTIONS:
            return self._page("error.html", user, 400, message="unknown action")
        if not user.can(kind):
            self._audit(
                conn,
                user,
                kind,
                ",".join(items),
                False,
                "not allowed for this role",
                req.client,
                now,
            )
            return self._page("error.html", user, 403, message=f"a {user.role} cannot {kind}")
        if not items:
            return self._page("error.html", user, 400, message="select at least one message")
        if len(items) > BULK_MAX:
            return self._page(
                "error.html", user, 400, message=f"at most {BULK_MAX} messages at once"
            )
        outcomes = [self._act(conn, user, kind, item, req.client, now) for item in items]
        status = 200 if any(o.ok for o in outcomes) else outcomes[0].status
        return self._page("result.html", user, status, kind=kind, outcomes=outcomes)

    def _act(self, conn: Any, user: User, kind: str, item: str, client: str, now: float) -> Outcome:
        gateway, _, qid = item.partition("/")
        try:
            m = QuarantineIndex(conn).get(gateway, qid)
            if m.state == "deleted":
                raise RequestError(f"message {m.qid} was deleted")
            if m.state == "released" and kind == "release":
                raise RequestError(f"message {m.qid} was already released")
            rid = RequestTable(conn).submit(kind, m.qid, m.gateway, user.account, now)
        except (QueryError, RequestError) as exc:
            status = (
                404 if isinstance(exc, NotFound) else 400 if isinstance(exc, QueryError) else 409
            )
            self._audit(conn, user, kind, item, False, str(exc), client, now)
            return Outcome(item, False, status, str(exc))
        text = f"request #{rid} filed: {kind} of {m.qid} on {m.gateway}"
        self._audit(conn, user, kind, item, True, f"request #{rid}", client, now)
        return Outcome(item, True, 200, text)

    # -- requests --------------------------------------------------------------------------
    def _requests(self, conn: Any, user: User) -> Response:
        return self._page(
            "requests.html", user, requests=RequestTable(conn).list(limit=REQUESTS_PAGE)
        )

    def _request(self, conn: Any, user: User, text: str) -> Response:
        try:
            r = RequestTable(conn).get(text)
        except RequestError as exc:
            return self._page("error.html", user, 404, message=str(exc))
        return self._page("requests.html", user, requests=[r])

    # -- content rules ---------------------------------------------------------------------
    def _rules(
        self,
        conn: Any,
        user: User,
        status: int = 200,
        error: str = "",
        form: dict[str, str] | None = None,
    ) -> Response:
        try:
            runtime, _version = RuleStore(conn).load()
        except RuleError as exc:  # a row written by something else than a console
            runtime, status = RuntimeRules(), 500
            error = f"the stored runtime rules are refused ({exc}): only the inventory's shown"
        merged = merge(self.inventory, runtime)
        return self._page(
            "rules.html",
            user,
            status,
            baseline=[e for e in merged if e.origin == "inventory"],
            runtime=[e for e in merged if e.origin == "runtime"],
            error=error,
            form={k: (form or {}).get(k, "") for k in RULE_FORM},
            actions=ACTIONS,
            types=KNOWN_TYPES,
        )

    def _rule_change(
        self,
        req: Request,
        conn: Any,
        user: User,
        now: float,
        what: str,
        target: str,
        change: Callable[[Any], Any],
    ) -> Response:
        form = {k: req.field(k) for k in RULE_FORM}
        if not user.can("rules"):
            self._audit(
                conn, user, what, target, False, "not allowed for this role", req.client, now
            )
            return self._page("error.html", user, 403, message=f"a {user.role} cannot change rules")
        store = RuleStore(conn)
        try:
            runtime, version = store.load()
            store.save(change(runtime), version, user.account, now)
        except RuleError as exc:
            self._audit(conn, user, what, target, False, str(exc), req.client, now)
            return self._rules(conn, user, 400, str(exc), form)
        except RulesChanged as exc:
            self._audit(conn, user, what, target, False, str(exc), req.client, now)
            return self._rules(conn, user, 409, str(exc), form)
        self._audit(conn, user, what, target, True, "", req.client, now)
        return self._redirect("/rules")

    def _rule_add(self, req: Request, conn: Any, user: User, now: float) -> Response:
        name = req.field("name")

        def change(runtime: Any) -> Any:
            if req.field("kind") == "header":
                rule = make_rule(
                    name, req.field("action"), req.field("header"), req.field("pattern")
                )
            else:
                rule = make_rule(
                    name,
                    req.field("action"),
                    extensions=req.field("extensions"),
                    types=req.field("types"),
                    archives=req.field("archives") == "on",
                )
            return add_rule(runtime, self.inventory, rule)

        return self._rule_change(req, conn, user, now, "rule_add", name, change)

    def _rule_toggle(self, req: Request, conn: Any, user: User, now: float) -> Response:
        name = req.field("name")
        enabled = req.field("enabled") == "1"

        def change(runtime: Any) -> Any:
            return set_enabled(runtime, self.inventory, name, enabled)

        return self._rule_change(
            req, conn, user, now, "rule_enable" if enabled else "rule_disable", name, change
        )

    def _rule_remove(self, req: Request, conn: Any, user: User, now: float) -> Response:
        """Remove a runtime rule (an inventory rule can only be disabled)."""
        name = req.field("name")

        def change(runtime: Any) -> Any:
            return remove_rule(runtime, name)

        return self._rule_change(req, conn, user, now, "rule_remove", name, change)

    def _export(self, req: Request, conn: Any, user: User, now: float) -> Response:
        runtime, _version = RuleStore(conn).load()
        body = export_yaml(self.inventory, runtime).encode("utf-8")
        self._audit(conn, user, "export_rules", "", True, "", req.client, now)
        return Response(
            200,
            body,
            "text/plain; charset=utf-8",
            [("Content-Disposition", 'attachment; filename="antivirus_rules.yml"')],
        )

    # -- audit -----------------------------------------------------------------------------
    def _audit_page(self, req: Request, conn: Any, user: User) -> Response:
        text = req.arg("offset", "0")
        try:
            offset = int(text) if text.isdigit() else -1
            entries, more = AuditLog(conn).list(AUDIT_PAGE, offset)
        except AuditError as exc:
            return self._page("error.html", user, 400, message=f"offset: {exc}")
        prev_link = self._link("/audit", offset=max(0, offset - AUDIT_PAGE) or "") if offset else ""
        next_link = self._link("/audit", offset=offset + AUDIT_PAGE) if more else ""
        return self._page(
            "audit.html", user, entries=entries, prev_link=prev_link, next_link=next_link
        )


def make_app(
    connect: Callable[[], Any],
    accounts: Accounts,
    secret: bytes,
    now: Callable[[], float] = time.time,
    inventory: Sequence[ContentRule] = (),
    **options: Any,
) -> Console:
    """The console on its dependencies; its tables created or upgraded once."""
    app = Console(connect, accounts, secret, now, inventory, **options)
    app.migrate()
    return app


__all__ = ["Console", "make_app"]
