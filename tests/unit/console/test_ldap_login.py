"""Console login against the organisation's directory (issue 17): the LDAP check with a fake
directory (no network), its place in ``auth.Login`` (local accounts win, rate limits), the
web flow (503 when the directory is down) and the ``[ldap]`` section of console.toml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ldap
import pytest

from passerelle.config import ConfigError
from passerelle.console.audit import AuditLog
from passerelle.console.auth import (
    ITERATIONS_MIN,
    Accounts,
    DirectoryUnavailable,
    Login,
    Sessions,
    SlidingWindow,
    hash_password,
)
from passerelle.console.ldapauth import LdapAuthenticator, LdapLoginSettings
from passerelle.console.server import load_config
from passerelle.console.web import make_app
from plugins import load

Client = load("tests/unit/console/webclient.py").Client

T0 = 1_764_633_600.0
# the session cookie the login sets, emptied: the browser drops it
CLEARED = "passerelle_console=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"
SECRET = b"s" * 40
PEOPLE = "ou=people,dc=lab,dc=test"
GROUPS = "ou=groups,dc=lab,dc=test"
ADMINS = f"cn=console-admins,{GROUPS}"
VIEWERS = f"cn=console-viewers,{GROUPS}"
SERVICE = "cn=passerelle,ou=services,dc=lab,dc=test"
SERVICE_PW = "service-pw"

_ITEM = r"\(([A-Za-z][A-Za-z0-9-]*)=((?:[^()*\\]|\\[0-9a-fA-F]{2})*|\*)\)"
_SIMPLE = re.compile(f"^{_ITEM}$")
_OR = re.compile(r"^\(\|((?:\([^()]*\))+)\)$")


def _unescape(value: str) -> str:
    return re.sub(r"\\([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


class FakeDirectory:
    """A directory in memory: ``entries`` {dn: {attribute: [values]}}, ``passwords``
    {dn: password}. Understands only ``(attr=value)`` filters (``*`` alone: any value) and
    an OR of them, ``(|(a=x)(b=y))``, as the console sends them; anything else is a
    FILTER_ERROR, as a server would answer a filter an unescaped name broke."""

    def __init__(self, entries: dict, passwords: dict) -> None:
        self.entries = entries
        self.passwords = passwords
        self.down = False  # the connection itself fails (server down, timeout)
        self.binds: list[str] = []
        self.filters: list[str] = []
        self.connections = 0

    def connect(self) -> FakeConnection:
        self.connections += 1
        if self.down:
            raise ldap.SERVER_DOWN({"desc": "Can't contact LDAP server"})
        return FakeConnection(self)


class FakeConnection:
    def __init__(self, directory: FakeDirectory) -> None:
        self.d = directory

    def simple_bind_s(self, who: str, cred: str) -> None:
        self.d.binds.append(who)
        if not cred or self.d.passwords.get(who) != cred:
            raise ldap.INVALID_CREDENTIALS({"desc": "Invalid credentials"})

    def search_st(self, base, scope, filterstr, attrlist=None, attrsonly=0, timeout=-1):
        self.d.filters.append(filterstr)
        either = _OR.match(filterstr)
        items = re.findall(r"\([^()]*\)", either.group(1)) if either else [filterstr]
        terms = []
        for item in items:
            m = _SIMPLE.match(item)
            if not m:
                raise ldap.FILTER_ERROR({"desc": "Bad search filter"})
            terms.append((m.group(1).lower(), m.group(2)))
        if not any(dn.lower().endswith(base.lower()) for dn in self.d.entries) and (
            base.lower() not in (d.lower() for d in self.d.entries)
        ):
            raise ldap.NO_SUCH_OBJECT({"desc": "No such object"})
        out = []
        for dn, attrs in self.d.entries.items():
            if scope == ldap.SCOPE_BASE and dn.lower() != base.lower():
                continue
            if scope == ldap.SCOPE_SUBTREE and not dn.lower().endswith(base.lower()):
                continue
            for attr, raw in terms:
                values = [v.lower() for k, vs in attrs.items() if k.lower() == attr for v in vs]
                if (raw == "*" and values) or _unescape(raw).lower() in values:
                    out.append((dn, {}))
                    break
        return out

    def unbind_s(self) -> None:
        return


def directory() -> FakeDirectory:
    lea, leo, noa = (f"uid={u},{PEOPLE}" for u in ("lea", "leo", "noa"))
    entries = {
        PEOPLE: {"ou": ["people"]},
        lea: {"uid": ["lea"]},
        leo: {"uid": ["leo"]},
        noa: {"uid": ["noa"]},
        f"uid=alice,{PEOPLE}": {"uid": ["alice"]},
        GROUPS: {"ou": ["groups"]},
        ADMINS: {"member": [lea]},
        VIEWERS: {"member": [leo, lea]},
    }
    passwords = {
        SERVICE: SERVICE_PW,
        lea: "pw-lea",
        leo: "pw-leo",
        noa: "pw-noa",
        f"uid=alice,{PEOPLE}": "pw-ldap-alice",
    }
    return FakeDirectory(entries, passwords)


def settings(**over) -> LdapLoginSettings:
    values = {
        "uri": "ldap://ldap1",
        "base": PEOPLE,
        "user_filter": "(uid={name})",
        "admin_group": ADMINS,
        "viewer_group": VIEWERS,
        "bind_dn": SERVICE,
        "password_file": "/nonexistent",
        "timeout": 3,
    }
    values.update(over)
    return LdapLoginSettings(**values)


def authenticator(d: FakeDirectory, **over) -> LdapAuthenticator:
    return LdapAuthenticator(settings(**over), SERVICE_PW, connect=d.connect)


@pytest.fixture
def d() -> FakeDirectory:
    return directory()


# -- the directory check -------------------------------------------------------------------


def test_a_user_in_the_admin_group_is_an_admin(d):
    user = authenticator(d).authenticate("lea", "pw-lea")
    assert user is not None and (user.name, user.role) == ("lea", "admin")
    assert user.dn == f"uid=lea,{PEOPLE}"
    # a service bind to find the DN, then a bind as that DN with the password typed
    assert d.binds == [SERVICE, f"uid=lea,{PEOPLE}"]
    assert d.filters[0] == "(uid=lea)"


def test_a_user_in_the_viewer_group_only_is_a_viewer(d):
    user = authenticator(d).authenticate("leo", "pw-leo")
    assert user is not None and user.role == "viewer"


def test_a_user_in_no_group_is_refused(d):
    assert authenticator(d).authenticate("noa", "pw-noa") is None


def test_one_group_only(d):
    assert authenticator(d, admin_group="").authenticate("lea", "pw-lea").role == "viewer"
    assert authenticator(d, viewer_group="").authenticate("leo", "pw-leo") is None


def test_a_missing_group_is_no_membership(d):
    auth = authenticator(d, admin_group=f"cn=gone,{GROUPS}")
    assert auth.authenticate("lea", "pw-lea").role == "viewer"


def test_wrong_password_and_unknown_user(d):
    assert authenticator(d).authenticate("lea", "pw-leo") is None
    assert authenticator(d).authenticate("nobody", "pw-lea") is None


@pytest.mark.parametrize("password", ["", None, "x" * 5000])
def test_empty_password_is_refused_before_any_bind(d, password):
    assert authenticator(d).authenticate("lea", password) is None
    assert d.connections == 0 and d.binds == []


@pytest.mark.parametrize("name", ["*", "*)(uid=*", "lea)(uid=*", "l*", "lea\\", "\x00"])
def test_the_name_is_escaped_in_the_filter(d, name):
    assert authenticator(d).authenticate(name, "pw-lea") is None
    sent = d.filters[0]
    assert sent == "(uid=" + ldap.filter.escape_filter_chars(name) + ")"
    assert "*" not in sent and sent.count("(") == 1


def test_a_password_with_a_nul_is_refused_without_a_bind(d):
    assert authenticator(d).authenticate("lea", "pw-lea\x00") is None
    assert d.connections == 0


def test_an_unexpected_error_is_contained_as_directory_unavailable(d):
    def connect():
        raise RuntimeError("bug")

    auth = LdapAuthenticator(settings(), SERVICE_PW, connect=connect)
    with pytest.raises(DirectoryUnavailable, match="unexpected RuntimeError"):
        auth.authenticate("lea", "pw-lea")


def test_several_entries_for_one_name_are_refused(d):
    d.entries[f"uid=lea,ou=other,{PEOPLE}"] = {"uid": ["lea"]}
    assert authenticator(d).authenticate("lea", "pw-lea") is None


def test_directory_down_is_directory_unavailable(d):
    d.down = True
    with pytest.raises(DirectoryUnavailable, match="ldap://ldap1: Can't contact LDAP server"):
        authenticator(d).authenticate("lea", "pw-lea")


def test_service_bind_refused_is_directory_unavailable(d):
    auth = LdapAuthenticator(settings(), "wrong service password", connect=d.connect)
    with pytest.raises(DirectoryUnavailable, match="Invalid credentials"):
        auth.authenticate("lea", "pw-lea")


def test_a_timeout_during_the_search_is_directory_unavailable(d):
    def connect():
        conn = d.connect()

        def search_st(*a, **kw):
            raise ldap.TIMEOUT({"desc": "Timed out"})

        conn.search_st = search_st
        return conn

    auth = LdapAuthenticator(settings(), SERVICE_PW, connect=connect)
    with pytest.raises(DirectoryUnavailable, match="Timed out"):
        auth.authenticate("lea", "pw-lea")


# -- in the login logic ----------------------------------------------------------------------


def accounts() -> Accounts:
    return Accounts.from_inventory(
        [
            {
                "name": "alice",
                "role": "admin",
                "password_hash": hash_password("pw-a", ITERATIONS_MIN),
            }
        ]
    )


def test_ldap_login_issues_an_ldap_session_with_its_role(d):
    login = Login(accounts(), Sessions(SECRET), directory=authenticator(d))
    r = login.attempt("lea", "pw-lea", "192.0.2.1", T0)
    assert r.ok and r.session is not None
    assert (r.session.account, r.session.source, r.session.role) == ("lea", "ldap", "admin")
    assert login.sessions.check(r.token, T0 + 1) == r.session
    local = login.attempt("alice", "pw-a", "192.0.2.1", T0)
    assert local.ok and (local.session.source, local.session.role) == ("local", "")


def test_a_local_account_wins_over_the_directory(d):
    login = Login(accounts(), Sessions(SECRET), directory=authenticator(d))
    # alice is local: her directory password is not hers here, and the directory not asked
    r = login.attempt("alice", "pw-ldap-alice", "192.0.2.1", T0)
    assert not r.ok and r.message == "wrong account name or password"
    assert d.connections == 0
    # and when the directory is down, a local account still logs in
    d.down = True
    assert login.attempt("alice", "pw-a", "192.0.2.1", T0).ok


def test_ldap_refusals_have_the_wrong_password_message(d):
    login = Login(accounts(), Sessions(SECRET), directory=authenticator(d))
    messages = {
        login.attempt(name, pw, "192.0.2.1", T0).message
        for name, pw in (("noa", "pw-noa"), ("lea", "nope"), ("nobody", "x"), ("lea", ""))
    }
    assert messages == {"wrong account name or password"}


def test_a_name_that_is_not_an_account_name_never_reaches_the_directory(d):
    login = Login(accounts(), Sessions(SECRET), directory=authenticator(d))
    assert not login.attempt("lea|admin", "pw-lea", "192.0.2.1", T0).ok
    assert d.connections == 0


def test_directory_down_is_its_own_answer(d):
    d.down = True
    login = Login(accounts(), Sessions(SECRET), directory=authenticator(d))
    r = login.attempt("lea", "pw-lea", "192.0.2.1", T0)
    assert not r.ok and r.unavailable and r.token is None
    assert "directory is unavailable" in r.message
    assert "Can't contact LDAP server" in r.detail


def test_ldap_failures_count_in_the_rate_limits(d):
    login = Login(
        accounts(),
        Sessions(SECRET),
        per_client=SlidingWindow(10, 300.0),
        per_account=SlidingWindow(3, 300.0),
        directory=authenticator(d),
    )
    for i in range(3):
        assert not login.attempt("lea", "guess", "192.0.2.1", T0 + i).ok
    r = login.attempt("lea", "pw-lea", "198.51.100.9", T0 + 5)
    assert not r.ok and r.message.startswith("too many failed logins")
    binds = len(d.binds)
    login.attempt("lea", "pw-lea", "198.51.100.9", T0 + 6)
    assert len(d.binds) == binds  # refused before the directory is asked
    assert login.attempt("lea", "pw-lea", "198.51.100.9", T0 + 301).ok


def test_directory_down_counts_for_the_client_only(d):
    d.down = True
    login = Login(
        accounts(),
        Sessions(SECRET),
        per_client=SlidingWindow(2, 300.0),
        per_account=SlidingWindow(2, 300.0),
        directory=authenticator(d),
    )
    for _ in range(2):
        assert login.attempt("lea", "pw-lea", "192.0.2.1", T0).unavailable
    assert "too many" in login.attempt("leo", "pw-leo", "192.0.2.1", T0).message
    d.down = False
    assert login.attempt("lea", "pw-lea", "198.51.100.9", T0).ok  # lea was not locked


def test_v1_session_tokens_still_read_as_local():
    import base64
    import hmac

    sessions = Sessions(SECRET)
    payload = f"v1|alice|{T0!r}|{T0 + 60!r}|{'a' * 32}".encode("ascii")
    mac = hmac.new(sessions._session_key, payload, "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    s = sessions.check(f"{b64(payload)}.{b64(mac)}", T0 + 1)
    assert s is not None and (s.account, s.source, s.role) == ("alice", "local", "")


# -- the web flow ----------------------------------------------------------------------------


class Clock:
    t = T0

    def __call__(self) -> float:
        return self.t


def web(db, d: FakeDirectory | None):
    return make_app(
        db,
        accounts(),
        SECRET,
        Clock(),
        directory=None if d is None else authenticator(d),
    )


def test_ldap_user_logs_in_and_the_audit_log_says_ldap(db, d):
    c = Client(web(db, d))
    r = c.login("leo", "pw-leo")
    assert r.status == 303, r.text
    page = c.get("/quarantine")
    assert page.status == 200 and "leo (viewer, LDAP)" in page.text
    assert "Release selected" not in page.text  # a viewer's page
    row = AuditLog(db()).list(10)[0][0]
    assert (row.who, row.role, row.action, row.ok) == ("leo (ldap)", "viewer", "login", True)


def test_ldap_viewer_post_is_refused(db, d):
    c = Client(web(db, d))
    c.login("leo", "pw-leo")
    page = c.get("/rules")
    r = c.post("/rules/add", {"csrf": page.csrf(), "name": "x", "kind": "header"})
    assert r.status == 403


def test_ldap_wrong_password_is_401_with_the_usual_message(db, d):
    c = Client(web(db, d))
    r = c.login("lea", "nope")
    assert r.status == 401 and "wrong account name or password" in r.text


def test_directory_down_is_503_and_the_form_again(db, d):
    d.down = True
    c = Client(web(db, d))
    r = c.login("lea", "pw-lea")
    assert r.status == 503
    assert "directory is unavailable" in r.text and 'name="password"' in r.text
    assert "passerelle_console" not in c.cookies
    row = AuditLog(db()).list(10)[0][0]
    assert (row.who, row.action, row.ok) == ("lea", "login", False)
    assert "directory unavailable" in row.result and "Can't contact" in row.result
    # a local account still logs in
    assert Client(web(db, d)).login("alice", "pw-a").status == 303


def test_ldap_session_refused_once_the_directory_is_off(db, d):
    first = web(db, d)
    c = Client(first)
    c.login("lea", "pw-lea")
    assert c.get("/quarantine").status == 200
    c.app = web(db, None)  # restarted without [ldap]: LDAP sessions end
    r = c.get("/quarantine")
    assert r.status == 303 and r.set_cookies() == [CLEARED]


# -- console.toml's [ldap] -------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    secret = tmp_path / "console.secret"
    secret.write_bytes(b"k" * 40 + b"\n")
    secret.chmod(0o640)
    ldap_secret = tmp_path / "console-ldap.secret"
    ldap_secret.write_text("service-pw\n")
    ldap_secret.chmod(0o640)
    h = hash_password("pw", ITERATIONS_MIN)
    (tmp_path / "accounts.toml").write_text(
        f'[[account]]\nname = "alice"\nrole = "admin"\npassword_hash = "{h}"\n'
    )
    return tmp_path


def write_config(files, **over) -> str:
    ldap_values = {
        "uri": "ldaps://ldap.example.org",
        "base": PEOPLE,
        "bind_dn": SERVICE,
        "password_file": str(files / "console-ldap.secret"),
        "timeout": "4s",
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={name}))",
        "admin_group": ADMINS,
        "viewer_group": VIEWERS,
    }
    ldap_values.update(over)
    body = (
        "[console]\n"
        f'database = "sqlite:///{files / "console.sqlite"}"\n'
        f'accounts_file = "{files / "accounts.toml"}"\n'
        f'secret_file = "{files / "console.secret"}"\n'
        "\n[ldap]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in ldap_values.items() if v is not None)
    )
    path = files / "console.toml"
    path.write_text(body)
    return str(path)


def test_ldap_section_loads(files):
    cfg = load_config(write_config(files))
    assert cfg.ldap is not None
    assert (cfg.ldap.uri, cfg.ldap.timeout, cfg.ldap.admin_group) == (
        "ldaps://ldap.example.org",
        4,
        ADMINS,
    )
    assert cfg.ldap_password == "service-pw"
    assert cfg.ldap.recheck == 300  # the default: 5 minutes
    assert load_config(write_config(files, recheck="90s")).ldap.recheck == 90


def test_no_ldap_section_no_directory(files):
    path = write_config(files)
    text = Path(path).read_text().split("\n[ldap]")[0]
    Path(path).write_text(text)
    cfg = load_config(path)
    assert cfg.ldap is None and cfg.ldap_password == ""


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"uri": "http://ldap"}, "ldap.uri"),
        ({"uri": None}, "ldap.uri"),
        ({"base": None}, "ldap.base"),
        ({"base": "not a dn"}, "ldap.base"),
        ({"timeout": "1h"}, "ldap.timeout"),
        ({"password_file": None}, "ldap.password_file"),
        ({"password_file": "/nonexistent/secret"}, "ldap.password_file"),
        ({"user_filter": "(uid=%s)"}, "ldap.user_filter"),
        ({"user_filter": "uid={name}"}, "ldap.user_filter"),
        ({"user_filter": "(uid={name})(x=y"}, "ldap.user_filter"),
        ({"admin_group": "nonsense"}, "ldap.admin_group"),
        ({"viewer_group": 3}, "ldap.viewer_group"),
        ({"admin_group": "", "viewer_group": ""}, "ldap.admin_group"),
        ({"colour": "blue"}, "ldap.colour"),
        ({"recheck": "10s"}, "ldap.recheck"),
        ({"recheck": "2h"}, "ldap.recheck"),
        ({"recheck": "soon"}, "ldap.recheck"),
    ],
)
def test_bad_ldap_section_is_a_config_error_naming_the_key(files, over, key):
    path = write_config(files, **over)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and path in str(info.value)


def test_ldap_secret_readable_by_everyone_is_refused(files):
    (files / "console-ldap.secret").chmod(0o644)
    with pytest.raises(ConfigError, match=r"ldap\.password_file: .* readable by everyone"):
        load_config(write_config(files))


# -- groupOfUniqueNames ----------------------------------------------------------------------


def test_unique_member_groups_give_their_role(d):
    noa = f"uid=noa,{PEOPLE}"
    d.entries[ADMINS] = {"uniqueMember": [noa]}  # a groupOfUniqueNames
    d.entries[VIEWERS] = {"member": [f"uid=leo,{PEOPLE}"]}
    auth = authenticator(d)
    assert auth.authenticate("noa", "pw-noa").role == "admin"
    assert d.filters[-1] == f"(|(member={noa})(uniqueMember={noa}))"
    assert auth.authenticate("lea", "pw-lea") is None
    assert auth.role_of("noa").role == "admin"


def test_the_member_dn_is_escaped_in_the_group_filter(d):
    odd = f"uid=st*r\\2C(x),{PEOPLE}"
    d.entries[odd] = {"uid": ["star"]}
    d.passwords[odd] = "pw-star"
    d.entries[VIEWERS] = {"uniqueMember": [odd]}
    assert authenticator(d).authenticate("star", "pw-star").role == "viewer"
    escaped = ldap.filter.escape_filter_chars(odd)
    assert d.filters[-1] == f"(|(member={escaped})(uniqueMember={escaped}))"
    assert "*" not in d.filters[-1]


# -- LDAP sessions re-checked ----------------------------------------------------------------

RECHECK = 300.0
LEA = f"uid=lea,{PEOPLE}"


class Tick:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def rechecking_web(db, d: FakeDirectory, clock: Tick, recheck: int = 300):
    return make_app(db, accounts(), SECRET, clock, directory=authenticator(d, recheck=recheck))


def audit_rows(db) -> list:
    return AuditLog(db()).list(50)[0]


def test_the_groups_are_read_again_after_the_interval_only(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    assert c.login("lea", "pw-lea").status == 303
    after_login = d.connections
    clock.t = T0 + RECHECK - 1
    assert c.get("/quarantine").status == 200
    assert d.connections == after_login  # within the interval: the directory is not asked
    clock.t = T0 + RECHECK
    assert c.get("/quarantine").status == 200
    assert d.connections == after_login + 1
    assert d.binds[-1] == SERVICE  # the service bind only: no password is kept
    clock.t = T0 + 2 * RECHECK - 1
    assert c.get("/quarantine").status == 200
    assert d.connections == after_login + 1  # the interval counts from the last check
    clock.t = T0 + 2 * RECHECK
    c.get("/quarantine")
    assert d.connections == after_login + 2


def test_the_interval_is_configurable(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock, recheck=60))
    c.login("lea", "pw-lea")
    n = d.connections
    clock.t = T0 + 60
    c.get("/quarantine")
    assert d.connections == n + 1


def test_a_demoted_admin_is_a_viewer_at_the_next_check(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("lea", "pw-lea")
    csrf = c.get("/quarantine").csrf()
    d.entries[ADMINS]["member"].remove(LEA)  # still in the viewers' group
    item = {"csrf": csrf, "action": "release", "item": "gw1/20251202T101500-0123456789ab"}
    clock.t = T0 + RECHECK - 1
    assert c.post("/quarantine/action", item).status == 404  # an admin's, on no message
    clock.t = T0 + RECHECK
    r = c.post("/quarantine/action", item)
    assert r.status == 403 and "a viewer cannot release" in r.text
    page = c.get("/quarantine")
    assert page.status == 200 and "lea (viewer, LDAP)" in page.text
    rows = [(e.action, e.role, e.result) for e in audit_rows(db)]
    assert ("ldap_role", "viewer", "role admin -> viewer (directory groups)") in rows
    assert ("release", "viewer", "not allowed for this role") in [r[:3] for r in rows]


def test_a_viewer_made_admin_acts_at_the_next_check(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("leo", "pw-leo")
    d.entries[ADMINS]["member"].append(f"uid=leo,{PEOPLE}")
    clock.t = T0 + RECHECK
    assert "Release selected" in c.get("/quarantine").text


@pytest.mark.parametrize("how", ["no group", "entry deleted"])
def test_a_user_removed_from_the_groups_is_logged_out(db, d, how):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("lea", "pw-lea")
    if how == "no group":
        d.entries[ADMINS]["member"].remove(LEA)
        d.entries[VIEWERS]["member"].remove(LEA)
    else:
        del d.entries[LEA]
    token = c.cookies["passerelle_console"]
    clock.t = T0 + RECHECK
    r = c.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == [CLEARED]  # the browser drops the dead cookie
    row = audit_rows(db)[0]
    assert (row.who, row.role, row.action) == ("lea (ldap)", "admin", "session_end")
    assert row.result == "ldap session ended: no longer in a console group"
    # ended for good: put back in the group, the token is still refused
    d.entries[LEA] = {"uid": ["lea"]}
    d.entries[ADMINS]["member"].append(LEA)
    clock.t += 1
    c.cookies["passerelle_console"] = token  # a client that kept it
    r = c.get("/quarantine")
    assert r.status == 303 and r.set_cookies() == [CLEARED]
    assert len([e for e in audit_rows(db) if e.action == "session_end"]) == 1


def test_directory_down_keeps_the_role_one_more_interval_then_ends_it(db, d, caplog):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("lea", "pw-lea")
    d.down = True
    clock.t = T0 + RECHECK
    assert "lea (admin, LDAP)" in c.get("/quarantine").text  # within the grace
    assert "directory unavailable" in caplog.text and "role admin kept" in caplog.text
    tries = d.connections
    clock.t = T0 + RECHECK + 10
    assert c.get("/quarantine").status == 200
    assert d.connections == tries  # not asked at every request while it is down
    clock.t = T0 + RECHECK + 30
    assert c.get("/quarantine").status == 200
    assert d.connections == tries + 1
    clock.t = T0 + 2 * RECHECK - 1
    assert c.get("/quarantine").status == 200
    token = c.cookies["passerelle_console"]
    clock.t = T0 + 2 * RECHECK  # one more interval: fail closed
    r = c.get("/quarantine")
    assert r.status == 303 and r.header("Location") == "/login"
    assert r.set_cookies() == [CLEARED]
    row = audit_rows(db)[0]
    assert (row.who, row.action) == ("lea (ldap)", "session_end")
    assert row.result.startswith("ldap session ended: directory unavailable")
    d.down = False
    clock.t += 1
    c.cookies["passerelle_console"] = token  # a client that kept it
    assert c.get("/quarantine").status == 303  # ended for good


def test_directory_back_within_the_grace_carries_on(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("lea", "pw-lea")
    d.down = True
    clock.t = T0 + RECHECK
    assert c.get("/quarantine").status == 200
    d.down = False
    clock.t = T0 + RECHECK + 30
    assert c.get("/quarantine").status == 200  # checked: a new interval starts
    d.down = True
    clock.t = T0 + 3 * RECHECK  # 2 intervals after the login, 1 after the last check
    assert c.get("/quarantine").status == 200
    assert not [e for e in audit_rows(db) if e.action == "session_end"]


def test_a_local_session_never_asks_the_directory(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("alice", "pw-a")
    clock.t = T0 + 10 * RECHECK
    assert c.get("/quarantine").status == 200
    assert d.connections == 0


def test_ldap_session_rows_are_purged_after_expiry(db, d):
    clock = Tick()
    c = Client(rechecking_web(db, d, clock))
    c.login("lea", "pw-lea")
    c.get("/quarantine")

    def ldap_rows() -> int:
        return int(db().execute("SELECT COUNT(*) FROM console_ldap_session").fetchone()[0])

    assert ldap_rows() == 1
    clock.t = T0 + 8 * 3600  # the session expired
    c2 = Client(rechecking_web(db, d, clock))
    c2.login("alice", "pw-a")
    c2.get("/quarantine")
    assert ldap_rows() == 0
