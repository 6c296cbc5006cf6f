"""Console login against the organisation's directory (``[ldap]`` of console.toml).

A name that is not a local account (``auth.Login`` asks the local accounts first, so an
admin logs in while the directory is down) is checked here:

1. an empty password is refused before any connection (a simple bind with a DN and no
   password is an anonymous bind, RFC 4513: it must never log anyone in);
2. a service bind (``bind_dn`` and its password file, as ``passerelle route`` binds; both
   empty: anonymous) and one search under ``base`` with ``user_filter``, whose ``{name}`` is
   the name escaped per RFC 4515 (``ldap.filter.escape_filter_chars``): exactly one entry, or
   the login is refused;
3. its role from group membership, read with the service bind: a member (attribute
   ``member`` of a groupOfNames, or ``uniqueMember`` of a groupOfUniqueNames: one base
   search of the group with ``(|(member=DN)(uniqueMember=DN))``, the DN escaped per RFC 4515)
   of ``admin_group`` is an admin, else of ``viewer_group`` a viewer, else refused (with the
   wrong-password message);
4. a simple bind as that entry's DN with the password typed.

An LDAP session's role is then re-read (``role_of``: steps 2 and 3 with the service bind,
no password) when its last check is older than ``recheck`` (default 5 minutes, 30 s to
1 h), so a user removed from a group stops acting within that interval rather than when the
session expires; ``session_store.recheck`` decides what follows (same role, new role,
session ended, directory unavailable).

The connection (``routing.directory.open_connection``: LDAPv3, no referrals, network and
operation timeouts) and the settings' common part (``routing.config.parse_ldap_server``) are
the routing's own. Any LDAP error (server down, timeout, service bind refused) is
``DirectoryUnavailable``: the page says the directory is unavailable (503), the log and the
audit row say why. The connection factory is injected (a fake in the unit tests).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from passerelle.config import ConfigError, Section
from passerelle.console.auth import PASSWORD_MAX, DirectoryUnavailable
from passerelle.routing.config import parse_ldap_server, read_bind_password
from passerelle.routing.directory import error_text, open_connection

log = logging.getLogger("passerelle.console.ldap")

DEFAULT_USER_FILTER = "(uid={name})"
# groupOfNames (the lab's slapd) and groupOfUniqueNames: a DN per member
MEMBER_ATTRIBUTES = ("member", "uniqueMember")
RECHECK_DEFAULT = "5m"  # an LDAP session's groups are read again after this
RECHECK_MIN = 30
RECHECK_MAX = 3600
NAME = "{name}"


@dataclass(frozen=True)
class LdapLoginSettings:
    uri: str
    base: str
    user_filter: str
    admin_group: str
    viewer_group: str
    bind_dn: str = ""
    password_file: str = ""
    timeout: int = 5
    recheck: int = 300  # s between two reads of an LDAP session's groups


@dataclass(frozen=True)
class LdapUser:
    name: str
    dn: str
    role: str


def _dn_problem(value: str) -> str | None:
    import ldap.dn  # python-ldap: parses a DN without a server

    try:
        parts = ldap.dn.str2dn(value)
    except Exception:  # python-ldap raises DECODING_ERROR (an LDAPError) or ValueError
        return "not a DN like cn=console-admins,ou=groups,dc=example,dc=org"
    if not parts:
        return "is empty"
    return None


def _filter_problem(text: str) -> str | None:
    if text.count(NAME) != 1:
        return "must hold {name} once, e.g. (uid={name})"
    if not (text.startswith("(") and text.endswith(")")):
        return "must be one filter in parentheses, e.g. (uid={name})"
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0 or (depth == 0 and i != len(text) - 1):
            return "unbalanced parentheses, or more than one filter"
    if depth != 0:
        return "unbalanced parentheses"
    return None


def parse_ldap_section(ls: Section) -> LdapLoginSettings:
    """The ``[ldap]`` table of console.toml (``Section(data, "ldap")``); a ``ConfigError``
    names ``ldap.KEY``."""
    try:
        import ldap  # noqa: F401 - python-ldap is needed to serve this section
    except ImportError:
        raise ConfigError("ldap", "python-ldap is not installed (python3-ldap)") from None
    server = parse_ldap_server(ls, "ldap")
    base = ls.str("base")
    problem = _dn_problem(base)
    if problem:
        raise ConfigError("ldap.base", f"{base!r}: {problem}")
    if server.bind_dn:
        problem = _dn_problem(server.bind_dn)
        if problem:
            raise ConfigError("ldap.bind_dn", f"{server.bind_dn!r}: {problem}")
    user_filter = ls.str("user_filter", DEFAULT_USER_FILTER)
    problem = _filter_problem(user_filter)
    if problem:
        raise ConfigError("ldap.user_filter", f"{user_filter!r}: {problem}")
    groups = {}
    for key in ("admin_group", "viewer_group"):
        groups[key] = ls.str(key, "")
        problem = _dn_problem(groups[key]) if groups[key] else None
        if problem:
            raise ConfigError(f"ldap.{key}", f"{groups[key]!r}: {problem}")
    if not groups["admin_group"] and not groups["viewer_group"]:
        raise ConfigError("ldap.admin_group", "set admin_group, viewer_group or both")
    recheck = ls.duration("recheck", RECHECK_DEFAULT)
    if not RECHECK_MIN <= recheck <= RECHECK_MAX:
        raise ConfigError("ldap.recheck", f"must be between {RECHECK_MIN}s and {RECHECK_MAX}s")
    ls.finish()
    return LdapLoginSettings(
        uri=server.uri,
        base=base,
        user_filter=user_filter,
        admin_group=groups["admin_group"],
        viewer_group=groups["viewer_group"],
        bind_dn=server.bind_dn,
        password_file=server.password_file,
        timeout=server.timeout,
        recheck=recheck,
    )


def read_password(settings: LdapLoginSettings) -> str:
    """The service bind's password (first line of ``password_file``); empty: anonymous."""
    return read_bind_password(settings.bind_dn, settings.password_file, "ldap.password_file")


class LdapAuthenticator:
    """Checks a login against the directory (see the module's docstring)."""

    def __init__(
        self,
        settings: LdapLoginSettings,
        bind_password: str,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        import ldap  # python-ldap (python3-ldap on the hosts)
        import ldap.filter

        self._ldap = ldap
        self.settings = settings
        self._bind_password = bind_password
        self._connect = connect or (lambda: open_connection(settings.uri, settings.timeout, ldap))

    def _search(self, conn: Any, base: str, scope: int, flt: str) -> list[str]:
        results = conn.search_st(base, scope, flt, ["1.1"], timeout=self.settings.timeout)
        return [dn for dn, _attrs in results if dn]  # skip search references

    @property
    def recheck(self) -> float:
        """Seconds between two reads of an LDAP session's groups (``[ldap] recheck``)."""
        return float(self.settings.recheck)

    def _member(self, conn: Any, group: str, dn: str) -> bool:
        if not group:
            return False
        value = self._ldap.filter.escape_filter_chars(dn)
        flt = "(|" + "".join(f"({attr}={value})" for attr in MEMBER_ATTRIBUTES) + ")"
        try:
            return bool(self._search(conn, group, self._ldap.SCOPE_BASE, flt))
        except self._ldap.NO_SUCH_OBJECT:
            log.warning("console: LDAP group %s does not exist (or is not readable)", group)
            return False

    @contextlib.contextmanager
    def _directory(self, name: str, what: str) -> Iterator[Any]:
        """A connection for the ``what`` ("login", "session") of ``name``, unbound after; an
        LDAP error is ``DirectoryUnavailable`` (logged), and so is any other error (a bug
        here or in python-ldap: contained, logged with its traceback, never a login)."""
        ldap = self._ldap
        s = self.settings
        try:
            conn = self._connect()
            try:
                yield conn
            finally:
                with contextlib.suppress(ldap.LDAPError):
                    conn.unbind_s()
        except ldap.LDAPError as exc:
            why = f"{s.uri}: {error_text(exc)}"
            log.warning("console: LDAP %s %r: directory unavailable: %s", what, name, why)
            raise DirectoryUnavailable(why) from None
        except Exception as exc:
            log.exception("console: LDAP %s of %r failed", what, name)
            raise DirectoryUnavailable(f"{s.uri}: unexpected {type(exc).__name__}") from None

    def authenticate(self, name: str, password: object) -> LdapUser | None:
        """The user when the password is right and a group gives a role; None else;
        ``DirectoryUnavailable`` when the directory does not answer."""
        if not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
            return None  # never a bind without a password: that would be anonymous
        if "\x00" in password:
            return None  # no one's password, and python-ldap would refuse to send it
        if not isinstance(name, str) or not name:
            return None
        ldap = self._ldap
        with self._directory(name, "login") as conn:
            found = self._lookup(conn, name, "login")
            if found is None:
                return None
            dn, role = found
            try:
                conn.simple_bind_s(dn, password)
            except (
                ldap.INVALID_CREDENTIALS,
                ldap.UNWILLING_TO_PERFORM,
                ldap.INAPPROPRIATE_AUTH,
            ):
                log.info("console: LDAP login %r (%s): wrong password", name, dn)
                return None
        return LdapUser(name, dn, role)

    def _lookup(self, conn: Any, name: str, what: str) -> tuple[str, str] | None:
        """Service bind, the one entry of ``name``, its role from the groups: (dn, role), or
        None (no entry, several, in no console group). LDAP errors propagate."""
        ldap = self._ldap
        s = self.settings
        flt = s.user_filter.replace(NAME, ldap.filter.escape_filter_chars(name))
        conn.simple_bind_s(s.bind_dn, self._bind_password)
        try:
            found = self._search(conn, s.base, ldap.SCOPE_SUBTREE, flt)
        except ldap.NO_SUCH_OBJECT:
            log.warning("console: LDAP base %s does not exist", s.base)
            found = []
        if len(found) != 1:
            log.info("console: LDAP %s %r: %d entries found, refused", what, name, len(found))
            return None
        dn = found[0]
        if self._member(conn, s.admin_group, dn):
            return dn, "admin"
        if self._member(conn, s.viewer_group, dn):
            return dn, "viewer"
        log.info("console: LDAP %s %r (%s): in no console group, refused", what, name, dn)
        return None

    def role_of(self, name: str) -> LdapUser | None:
        """An LDAP session's user as the directory sees it now (service bind only): None when
        the entry is gone (or no longer unique) or in no console group;
        ``DirectoryUnavailable`` when the directory does not answer."""
        if not isinstance(name, str) or not name:
            return None
        with self._directory(name, "session") as conn:
            found = self._lookup(conn, name, "session")
        return None if found is None else LdapUser(name, found[0], found[1])


__all__ = [
    "LdapAuthenticator",
    "LdapLoginSettings",
    "LdapUser",
    "parse_ldap_section",
    "read_password",
]
