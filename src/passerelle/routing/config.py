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

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
# mailer:host, or "local:" / "local:user" (delivered on the gateway, e.g. learning mailboxes)
_ROUTE = re.compile(r"^(?:[a-z][a-z0-9]*:\S+|local:\S*)$")


@dataclass(frozen=True)
class LdapSettings:
    domains: tuple[str, ...]
    uri: str
    base: str
    bind_dn: str = ""
    password_file: str = ""
    object_class: str = "inetLocalMailRecipient"
    search_attribute: str = "mailLocalAddress"
    host_attribute: str = "mailHost"
    address_attribute: str = "mailRoutingAddress"
    timeout: int = 5

    def read_password(self) -> str:
        """The bind password (first line of password_file); empty for an anonymous search."""
        if not self.bind_dn:
            return ""
        try:
            return Path(self.password_file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as exc:
            raise ConfigError(
                "routing.ldap.password_file", f"cannot read {self.password_file}: {exc}"
            ) from None


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
    name = value.lower()
    if not _DOMAIN.match(name):
        raise ConfigError(key, f"{value!r} is not a domain name")
    return name


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
            uri = ls.str("uri")
            if not re.match(r"^ldaps?://\S+$", uri):
                raise ConfigError("routing.ldap.uri", f"{uri!r} is not ldap://... or ldaps://...")
            bind_dn = ls.str("bind_dn", "")
            password_file = ls.str("password_file", "")
            if bind_dn and not password_file:
                raise ConfigError("routing.ldap.password_file", "is required with bind_dn")
            attrs = {}
            for key, default in (
                ("object_class", "inetLocalMailRecipient"),
                ("search_attribute", "mailLocalAddress"),
                ("host_attribute", "mailHost"),
                ("address_attribute", "mailRoutingAddress"),
            ):
                attrs[key] = ls.str(key, default)
                if not _ATTRIBUTE.match(attrs[key]):
                    raise ConfigError(f"routing.ldap.{key}", f"{attrs[key]!r} is not a name")
            timeout = ls.duration("timeout", "5s")
            if timeout < 1:
                raise ConfigError("routing.ldap.timeout", "must be at least 1s")
            ldap = LdapSettings(
                domains=domains,
                uri=uri,
                base=ls.str("base"),
                bind_dn=bind_dn,
                password_file=password_file,
                timeout=timeout,
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
