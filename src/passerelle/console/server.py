"""``passerelle console``: its configuration file, its database connections and its HTTP
server (the standard library's ``wsgiref`` with a thread per request, bound to 127.0.0.1 by
default: Apache with TLS is in front of it).

The configuration (TOML)::

    [console]
    database = "sqlite:////var/lib/passerelle/console.sqlite"   # or mysql://user:pw@host/db
    accounts_file = "/etc/passerelle/console-accounts.toml"     # [[account]] name, role,
                                                                # password_hash
    secret_file = "/etc/passerelle/console.secret"              # >= 32 bytes, not world-readable
    rules_file = "/etc/passerelle/antivirus-rules.json"         # optional: the inventory's
                                                                # antivirus_rules as JSON
    listen = "127.0.0.1:8025"                                   # "[::1]:8025" for IPv6
    trusted_proxies = ["127.0.0.1", "::1"]                      # whose X-Forwarded-For counts
    url_prefix = ""                                             # "/console" behind a sub-path
    session_lifetime = "8h"
    log_level = "info"
    trace_retention = "7d"                                      # message trace events kept

    [ldap]                                  # optional: logins of names that are not local
    uri = "ldaps://ldap.example.org"        # accounts, checked against the directory
    base = "ou=people,dc=example,dc=org"    # (ldapauth.py); where users are searched
    bind_dn = "cn=passerelle,ou=services,dc=example,dc=org"   # "" = anonymous search
    password_file = "/etc/passerelle/console-ldap.secret"     # not world-readable
    timeout = "5s"                          # to connect, and for each operation
    user_filter = "(uid={name})"            # {name}: the name typed, escaped (RFC 4515)
    admin_group = "cn=console-admins,ou=groups,dc=example,dc=org"    # member: admin
    viewer_group = "cn=console-viewers,ou=groups,dc=example,dc=org"  # member: viewer
                                            # (member, or uniqueMember: groupOfUniqueNames)
    recheck = "5m"                          # an LDAP session's groups read again after
                                            # this (30s to 1h); directory down: one more
                                            # interval, then the session ends

A bad file is a ``ConfigError`` naming the file and the key (``check-config`` prints it).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import socketserver
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from passerelle import sdnotify
from passerelle.config import ConfigError, Section, load_toml, naming_file
from passerelle.console.auth import SECRET_MIN, AccountError, Accounts
from passerelle.console.cli import add_commands
from passerelle.console.ldapauth import LdapLoginSettings, parse_ldap_section, read_password
from passerelle.console.rules import ContentRule, RuleError, inventory_rules
from passerelle.dburl import StoreURL, StoreURLError, parse_store_url

DEFAULT_LISTEN = "127.0.0.1:8025"
DB_TIMEOUT = 10.0


@dataclass(frozen=True)
class ConsoleConfig:
    database: StoreURL
    accounts: Accounts
    secret: bytes
    inventory: tuple[ContentRule, ...]
    host: str
    port: int
    trusted_proxies: tuple[str, ...]
    url_prefix: str
    session_lifetime: int
    log_level: str
    trace_retention: int = 7 * 86400
    ldap: LdapLoginSettings | None = None  # no [ldap]: local accounts only
    ldap_password: str = ""  # the service bind's (from ldap.password_file)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ``ValueError`` with why."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("must be HOST:PORT (or [IPv6]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("the port must be between 1 and 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("the host must be an IP address (127.0.0.1 behind Apache)") from None
    return host, port


def _read_private(path: str, key: str) -> bytes:
    """A secret file's content; refused when everyone may read it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        data = p.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if mode & 0o004:
        raise ConfigError(key, f"{path} is readable by everyone: chmod o-r")
    return data


def _read_secret(path: str) -> bytes:
    data = _read_private(path, "console.secret_file")
    if len(data) < SECRET_MIN:
        raise ConfigError("console.secret_file", f"{path}: at least {SECRET_MIN} bytes")
    return data


def _read_accounts(path: str) -> Accounts:
    data = load_toml(path)
    unknown = sorted(set(data) - {"account"})
    if unknown:
        raise ConfigError(unknown[0], "unknown setting (expected [[account]] tables)", path)
    try:
        return Accounts.from_inventory(data.get("account", []))
    except AccountError as exc:
        raise ConfigError("account", str(exc), path) from None


def _read_rules(path: str) -> tuple[ContentRule, ...]:
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("console.rules_file", f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError("console.rules_file", f"{path} is not JSON") from None
    try:
        return inventory_rules(items)
    except RuleError as exc:
        raise ConfigError("console.rules_file", f"{path}: {exc}") from None


def load_config(path: str) -> ConsoleConfig:
    with naming_file(path):
        top = Section(load_toml(path))
        c = top.table("console")
        ldap_section = top.table("ldap") if top.has("ldap") else None
        top.finish()
        try:
            database = parse_store_url(c.str("database"))
        except StoreURLError as exc:
            raise ConfigError("console.database", str(exc)) from None
        try:
            host, port = parse_listen(c.str("listen", DEFAULT_LISTEN))
        except ValueError as exc:
            raise ConfigError("console.listen", str(exc)) from None
        proxies = c.str_list("trusted_proxies", ["127.0.0.1", "::1"])
        for p in proxies:
            try:
                ipaddress.ip_address(p)
            except ValueError:
                raise ConfigError("console.trusted_proxies", f"not an IP address: {p!r}") from None
        prefix = c.str("url_prefix", "").rstrip("/")
        if prefix and (not prefix.startswith("/") or any(ch in prefix for ch in "?#\"'<> ")):
            raise ConfigError("console.url_prefix", "a path like /console (or empty)")
        lifetime = c.duration("session_lifetime", "8h")
        if lifetime <= 0:
            raise ConfigError("console.session_lifetime", "must be positive")
        log_level = c.str("log_level", "info", ("debug", "info", "warning", "error"))
        accounts_file = c.str("accounts_file")
        secret_file = c.str("secret_file")
        rules_file = c.str("rules_file", "")
        retention = c.duration("trace_retention", "7d")
        if retention < 3600:
            raise ConfigError("console.trace_retention", "at least 1h")
        c.finish()
        secret = _read_secret(secret_file)
        ldap = ldap_password = None
        if ldap_section is not None:
            ldap = parse_ldap_section(ldap_section)
            if ldap.bind_dn:
                _read_private(ldap.password_file, "ldap.password_file")  # its mode
            ldap_password = read_password(ldap)
    accounts = _read_accounts(accounts_file)
    with naming_file(path):
        inventory = _read_rules(rules_file) if rules_file else ()
    return ConsoleConfig(
        database,
        accounts,
        secret,
        inventory,
        host,
        port,
        tuple(proxies),
        prefix,
        lifetime,
        log_level,
        retention,
        ldap,
        ldap_password or "",
    )


def connection_factory(url: StoreURL, timeout: float = DB_TIMEOUT) -> Callable[[], Any]:
    """A function opening a new autocommit connection to ``url`` (one per request)."""
    if url.scheme == "sqlite":

        def connect_sqlite() -> sqlite3.Connection:
            c = sqlite3.connect(url.path, timeout=timeout, isolation_level=None)
            c.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            return c

        return connect_sqlite
    import pymysql  # Debian python3-pymysql

    def connect_mysql() -> Any:
        return pymysql.connect(**url.pymysql_args(timeout))

    return connect_mysql


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client does not hold the process at exit


class QuietHandler(WSGIRequestHandler):
    """Requests logged by Apache in front; errors still go to stderr (the journal)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def make_http_server(app: Any, host: str = "127.0.0.1", port: int = 8025) -> WSGIServer:
    server_class: type[WSGIServer] = ThreadingWSGIServer
    if ":" in host:

        class ThreadingWSGIServer6(ThreadingWSGIServer):
            address_family = socket.AF_INET6

        server_class = ThreadingWSGIServer6
    return make_server(host, port, app, server_class=server_class, handler_class=QuietHandler)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve ``app`` until interrupted."""
    with make_http_server(app, host, port) as httpd:
        sdnotify.ready()  # listening: Apache's proxy and the Nagios check get answers
        httpd.serve_forever()


def build_app(cfg: ConsoleConfig) -> Any:
    from passerelle.console.web import make_app  # needs Jinja2 (python3-jinja2)

    directory = None
    if cfg.ldap is not None:
        from passerelle.console.ldapauth import LdapAuthenticator

        directory = LdapAuthenticator(cfg.ldap, cfg.ldap_password)
    return make_app(
        connection_factory(cfg.database),
        cfg.accounts,
        cfg.secret,
        inventory=cfg.inventory,
        trusted_proxies=cfg.trusted_proxies,
        prefix=cfg.url_prefix,
        session_lifetime=float(cfg.session_lifetime),
        trace_retention=float(cfg.trace_retention),
        directory=directory,
    )


def run_serve(args: argparse.Namespace) -> int:
    from passerelle.config import load_for_command
    from passerelle.logsetup import setup_logging

    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    logger = setup_logging("console", cfg.log_level)
    try:
        app = build_app(cfg)
    except Exception as exc:  # the database unreachable, a schema newer than this code
        logger.error("console: cannot start: %s", exc)
        print(f"error: console: cannot start: {exc}", file=sys.stderr)
        return 1
    logger.info(
        "console: listening on %s port %d (%s)", cfg.host, cfg.port, cfg.database.redacted()
    )
    try:
        serve(app, cfg.host, cfg.port)
    except OSError as exc:
        print(f"error: console: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m passerelle.console.server serve --config FILE`` (as ``passerelle console``)."""
    parser = argparse.ArgumentParser(prog="passerelle console")
    add_commands(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["ConsoleConfig", "load_config", "main", "make_http_server", "serve"]
