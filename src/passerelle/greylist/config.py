"""The greylist milter's configuration file (TOML), validated into ``GreylistConfig``.

Example (every key with its default)::

    [greylist]
    min_delay = "40m"            # a retry earlier than this is refused again
    pending_ttl = "15h"          # how long a first attempt waits for its retry
    pass_ttl = "15d"             # how long a passed triplet lives after its last use
    auto_whitelist_after = 5     # accepted deliveries before a client network skips (0: off)
    ipv4_prefix = 24             # client grouping (24..32)
    ipv6_prefix = 64             # client grouping (32..128)
    normalise_sender = true      # strip BATV/SRS/VERP tags from senders
    store = "sqlite:////var/lib/passerelle/greylist.sqlite"   # or mysql://u:p@host[:port]/db
    store_timeout = "2s"         # bound on a decision's wait for the store
    store_retry = "5s"           # after a store error, skip the store that long
    store_threads = 4            # MariaDB store: worker threads (= connections); SQLite: one
    on_store_error = "accept"    # accept | tempfail
    hostname = "<fqdn>"          # name given in X-Delayed / X-Greylist
    socket = "unix:/run/passerelle/greylist.sock"
    milter_timeout = "600s"      # a connection sendmail leaves idle is closed
    whitelist_refresh = "60s"    # reload of the database whitelist table
    stats_flush = "10s"          # counters written to the store every
    stats_ttl = "400d"           # counters kept
    purge_batch = 1000           # rows deleted per purge statement
    log_level = "info"

    [whitelist]
    clients = []                 # IPs, CIDR networks, host names, .domains
    senders = []                 # user@dom, @dom, dom
    recipients = []              # user@dom, @dom, dom
    trusted_networks = ["127.0.0.0/8", "::1/128"]
"""

from __future__ import annotations

import socket as socketmod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passerelle.config import ConfigError, Section, load_toml
from passerelle.dburl import StoreURL, StoreURLError, parse_store_url
from passerelle.greylist.policy import Timing
from passerelle.greylist.whitelist import Whitelist, WhitelistError

DEFAULT_TRUSTED = ["127.0.0.0/8", "::1/128"]


@dataclass
class GreylistConfig:
    min_delay: int = 40 * 60
    pending_ttl: int = 15 * 3600
    pass_ttl: int = 15 * 86400
    auto_whitelist_after: int = 5
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    normalise_sender: bool = True
    store: str = "sqlite:////var/lib/passerelle/greylist.sqlite"
    store_url: StoreURL | None = None
    store_timeout: float = 2.0
    store_retry: float = 5.0
    store_threads: int = 4
    on_store_error: str = "accept"
    hostname: str = field(default_factory=socketmod.getfqdn)
    socket: str = "unix:/run/passerelle/greylist.sock"
    milter_timeout: int = 600
    whitelist_refresh: int = 60
    stats_flush: int = 10
    stats_ttl: int = 400 * 86400
    purge_batch: int = 1000
    log_level: str = "info"
    clients: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    trusted_networks: list[str] = field(default_factory=lambda: list(DEFAULT_TRUSTED))

    @property
    def timing(self) -> Timing:
        return Timing(self.min_delay, self.pending_ttl, self.pass_ttl)

    def whitelist(self) -> Whitelist:
        wl = Whitelist()
        for kind, entries in (
            ("client", self.clients),
            ("sender", self.senders),
            ("recipient", self.recipients),
            ("trusted", self.trusted_networks),
        ):
            for e in entries:
                wl.add(kind, e)
        return wl


def _entries(sec: Section, name: str, kind: str, default: list[str] | None = None) -> list[str]:
    values = sec.str_list(name, default)
    probe = Whitelist()
    for i, v in enumerate(values):
        try:
            probe.add(kind, v)
        except WhitelistError as exc:
            raise ConfigError(f"whitelist.{name}[{i}]", str(exc)) from None
    return values


def parse_config(data: dict[str, Any]) -> GreylistConfig:
    """Validate a parsed TOML document; errors name the key (``greylist.min_delay``)."""
    top = Section(data)
    g = top.table("greylist")
    w = top.table("whitelist")
    top.finish()
    d = GreylistConfig()
    cfg = GreylistConfig(
        min_delay=g.duration("min_delay", "40m"),
        pending_ttl=g.duration("pending_ttl", "15h"),
        pass_ttl=g.duration("pass_ttl", "15d"),
        auto_whitelist_after=g.int("auto_whitelist_after", 5, minimum=0),
        ipv4_prefix=g.int("ipv4_prefix", 24, minimum=8, maximum=32),
        ipv6_prefix=g.int("ipv6_prefix", 64, minimum=32, maximum=128),
        normalise_sender=g.bool("normalise_sender", True),
        store=g.str("store", d.store),
        store_timeout=float(g.duration("store_timeout", "2s")),
        store_retry=float(g.duration("store_retry", "5s")),
        store_threads=g.int("store_threads", 4, minimum=1, maximum=64),
        on_store_error=g.str("on_store_error", "accept", choices=("accept", "tempfail")),
        hostname=g.str("hostname", d.hostname),
        socket=g.str("socket", d.socket),
        milter_timeout=g.duration("milter_timeout", "600s"),
        whitelist_refresh=g.duration("whitelist_refresh", "60s"),
        stats_flush=g.duration("stats_flush", "10s"),
        stats_ttl=g.duration("stats_ttl", "400d"),
        purge_batch=g.int("purge_batch", 1000, minimum=1, maximum=100000),
        log_level=g.str(
            "log_level", "info", choices=("debug", "info", "warning", "error", "critical")
        ),
    )
    g.finish()
    cfg.clients = _entries(w, "clients", "client")
    cfg.senders = _entries(w, "senders", "sender")
    cfg.recipients = _entries(w, "recipients", "recipient")
    cfg.trusted_networks = _entries(w, "trusted_networks", "trusted", list(DEFAULT_TRUSTED))
    w.finish()
    if cfg.min_delay <= 0:
        raise ConfigError("greylist.min_delay", "must be more than 0s")
    if cfg.pending_ttl <= cfg.min_delay:
        raise ConfigError("greylist.pending_ttl", "must be longer than min_delay")
    if cfg.pass_ttl <= 0:
        raise ConfigError("greylist.pass_ttl", "must be more than 0s")
    if not 0 < cfg.store_timeout <= 60:
        raise ConfigError("greylist.store_timeout", "must be between 1s and 60s")
    if not cfg.hostname or any(c.isspace() for c in cfg.hostname):
        raise ConfigError("greylist.hostname", "must be a non-empty name without blanks")
    if not cfg.socket.startswith(("unix:", "local:", "inet:", "inet6:")):
        raise ConfigError("greylist.socket", "must start with unix:, local:, inet: or inet6:")
    try:
        cfg.store_url = parse_store_url(cfg.store)
    except StoreURLError as exc:
        raise ConfigError("greylist.store", str(exc)) from None
    return cfg


def load_config(path: str | Path) -> GreylistConfig:
    """Read and validate a config file; ConfigError names the file and the key."""
    data = load_toml(path)
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.message, str(path)) from None
