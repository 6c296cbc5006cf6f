"""``/etc/passerelle/routing.toml``: the routing a gateway uses, for ``passerelle route``.

Rendered by the sendmail role from the same inventory data as the gateway's mailertable and
LDAP routing, so the command answers with the gateway's own configuration::

    [routing]
    local_names = ["gw1.example.org"]      # this gateway's names (sendmail's class w)

    [routing.mailertable]                  # static domains, as in /etc/mail/mailertable
    "cict.example.org" = "esmtp:[mail.cict.example.org]"

    [routing.ldap]                         # only when some domains are LDAP-routed
    domains = ["etu.example.org"]
    uri = "ldaps://ldap.example.org"
    base = "ou=people,dc=example,dc=org"
    bind_dn = "cn=passerelle,ou=services,dc=example,dc=org"   # "" = anonymous
    password_file = "/etc/passerelle/ldap.secret"
    object_class = "inetLocalMailRecipient"
    search_attribute = "mailLocalAddress"
    host_attribute = "mailHost"
    address_attribute = "mailRoutingAddress"
    timeout = "5s"

    [routing.socketmap]                    # optional: the RCPT-time cache in front of the
    socket = "/run/passerelle/route.sock"  # directory (``passerelle route socketmap``)
    positive_ttl = "300s"                  # an entry found is reused this long
    negative_ttl = "60s"                   # "no such user" is reused this long
    max_entries = 10000                    # addresses kept at most (oldest dropped first)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from passerelle.config import ConfigError, Section, load_toml
from passerelle.routing.rules import (
    LDAP_ATTRIBUTE,
    LDAP_DEFAULTS,
    LDAP_NAME_KEYS,
    LDAP_TIMEOUT_MAX,
    LDAP_TIMEOUT_MIN,
    hostname_problem,
    ldap_uri_problem,
)

# mailer:host, or "local:" / "local:user" (delivered on the gateway, e.g. learning mailboxes)
_ROUTE = re.compile(r"^(?:[a-z][a-z0-9]*:\S+|local:\S*)$")


@dataclass(frozen=True)
class LdapSettings:
    domains: tuple[str, ...]
    uri: str
    base: str
    bind_dn: str = ""
    password_file: str = ""
    object_class: str = LDAP_DEFAULTS["object_class"]
    search_attribute: str = LDAP_DEFAULTS["search_attribute"]
    host_attribute: str = LDAP_DEFAULTS["host_attribute"]
    address_attribute: str = LDAP_DEFAULTS["address_attribute"]
    timeout: int = LDAP_DEFAULTS["timeout"]

    def read_password(self) -> str:
        """The bind password (first line of password_file); empty for an anonymous search."""
        return read_bind_password(self.bind_dn, self.password_file, "routing.ldap.password_file")


@dataclass(frozen=True)
class LdapServer:
    """Where a directory is and how to bind to it: the part of ``[routing.ldap]`` that every
    user of the directory shares (the console's LDAP login reads its ``[ldap]`` with it)."""

    uri: str
    bind_dn: str = ""
    password_file: str = ""
    timeout: int = LDAP_DEFAULTS["timeout"]


def parse_ldap_server(ls: Section, prefix: str) -> LdapServer:
    """``uri``, ``bind_dn``, ``password_file`` and ``timeout`` of the table ``prefix``,
    checked by the shared rules; errors name ``prefix.KEY``."""
    uri = ls.str("uri")
    problem = ldap_uri_problem(uri)
    if problem:
        raise ConfigError(f"{prefix}.uri", f"{uri!r}: {problem}")
    bind_dn = ls.str("bind_dn", "")
    password_file = ls.str("password_file", "")
    if bind_dn and not password_file:
        raise ConfigError(f"{prefix}.password_file", "is required with bind_dn")
    timeout = ls.duration("timeout", LDAP_DEFAULTS["timeout"])
    if not LDAP_TIMEOUT_MIN <= timeout <= LDAP_TIMEOUT_MAX:
        raise ConfigError(
            f"{prefix}.timeout",
            f"must be between {LDAP_TIMEOUT_MIN}s and {LDAP_TIMEOUT_MAX}s",
        )
    return LdapServer(uri, bind_dn, password_file, timeout)


def read_bind_password(bind_dn: str, password_file: str, key: str) -> str:
    """The bind password (first line of ``password_file``); empty for an anonymous bind."""
    if not bind_dn:
        return ""
    try:
        return Path(password_file).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError) as exc:
        raise ConfigError(key, f"cannot read {password_file}: {exc}") from None


@dataclass(frozen=True)
class SocketmapSettings:
    """The socket map daemon sendmail's ldap_routing asks (``passerelle route socketmap``)."""

    socket: str = "/run/passerelle/route.sock"
    positive_ttl: int = 300
    negative_ttl: int = 60
    max_entries: int = 10000


@dataclass(frozen=True)
class RoutingConfig:
    local_names: tuple[str, ...] = ()
    mailertable: dict[str, str] = field(default_factory=dict)
    ldap: LdapSettings | None = None
    socketmap: SocketmapSettings = field(default_factory=SocketmapSettings)

    @property
    def ldap_domains(self) -> tuple[str, ...]:
        return self.ldap.domains if self.ldap else ()


def _domain(value: str, key: str) -> str:
    problem = hostname_problem(value)
    if problem:
        raise ConfigError(key, f"{value!r}: {problem}")
    return value.lower()


def _ttl(sec: Section, key: str, default: int) -> int:
    value = sec.duration(key, default)
    if not 0 <= value <= 86400:
        raise ConfigError(f"routing.socketmap.{key}", "must be between 0s (no cache) and 1d")
    return value


def parse_config(data: dict[str, object], source: str | None = None) -> RoutingConfig:
    """Build a RoutingConfig from parsed TOML; errors name the key (and ``source``)."""
    try:
        top = Section(data)
        sec = top.table("routing")
        top.finish()
        local_names = tuple(n.lower() for n in sec.str_list("local_names"))
        table_sec = sec.table("mailertable")
        routing_data = data.get("routing")
        raw_table = routing_data.get("mailertable") if isinstance(routing_data, dict) else None
        mailertable: dict[str, str] = {}
        for name in raw_table or {}:
            route = table_sec.str(name)
            domain = _domain(name, f"routing.mailertable.{name}")
            if not _ROUTE.match(route):
                raise ConfigError(
                    f"routing.mailertable.{name}", f"{route!r} is not mailer:host (esmtp:[x])"
                )
            mailertable[domain] = route
        table_sec.finish()
        ldap = None
        if sec.has("ldap"):
            ls = sec.table("ldap")
            domains = tuple(_domain(d, "routing.ldap.domains") for d in ls.str_list("domains"))
            if not domains:
                raise ConfigError("routing.ldap.domains", "is empty")
            for d in domains:
                if d in mailertable:
                    raise ConfigError("routing.ldap.domains", f"{d} is also in routing.mailertable")
            server = parse_ldap_server(ls, "routing.ldap")
            attrs = {}
            for key in LDAP_NAME_KEYS:
                attrs[key] = ls.str(key, LDAP_DEFAULTS[key])
                if not LDAP_ATTRIBUTE.match(attrs[key]):
                    raise ConfigError(f"routing.ldap.{key}", f"{attrs[key]!r} is not a name")
            ldap = LdapSettings(
                domains=domains,
                uri=server.uri,
                base=ls.str("base"),
                bind_dn=server.bind_dn,
                password_file=server.password_file,
                timeout=server.timeout,
                **attrs,
            )
            ls.finish()
        socketmap = SocketmapSettings()
        if sec.has("socketmap"):
            ss = sec.table("socketmap")
            sock = ss.str("socket", socketmap.socket)
            if not sock.startswith("/"):
                raise ConfigError("routing.socketmap.socket", f"{sock!r} is not an absolute path")
            socketmap = SocketmapSettings(
                socket=sock,
                positive_ttl=_ttl(ss, "positive_ttl", socketmap.positive_ttl),
                negative_ttl=_ttl(ss, "negative_ttl", socketmap.negative_ttl),
                max_entries=ss.int("max_entries", socketmap.max_entries, minimum=1),
            )
            ss.finish()
        sec.finish()
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.key, exc.message, source) from None
        raise
    return RoutingConfig(
        local_names=local_names, mailertable=mailertable, ldap=ldap, socketmap=socketmap
    )


def load_config(path: str | Path) -> RoutingConfig:
    return parse_config(load_toml(path), str(path))
