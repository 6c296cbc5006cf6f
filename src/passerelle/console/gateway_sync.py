"""``passerelle console gateway-sync``: one pass of the gateway's side of the console (index
this gateway's quarantine, carry out the console's requests), for a systemd timer.

The configuration (TOML)::

    [gateway_sync]
    database = "mysql://passerelle:pw@db1/passerelle"   # the console's shared database
    gateway = "gw1.example.org"                          # this gateway, as the console names it
    quarantine_dir = "/var/spool/passerelle/quarantine"  # the antivirus milter's quarantine
    antivirus_config = "/etc/passerelle/antivirus.toml"  # clamd and the release command
    writer = "passerelle"                                # the milter's user (trusted owner)
    limit = 50                                           # requests carried out per pass
    # the console's runtime content rules, for the antivirus milter (its runtime_rules key)
    runtime_rules = "/var/lib/passerelle/console-rules.json"
    runtime_rules_group = "passerelle"                   # the milter's group ("": root's)
    # the message trace: the new part of this mail log goes to the console (trace_ship.py)
    mail_log = "/var/log/mail.log"                       # RedHat: /var/log/maillog
    trace_state = "/var/lib/passerelle/console-trace.json"  # where the log was read up to

A bad file is a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from passerelle.config import ConfigError, Section, load_toml, naming_file
from passerelle.console.gateway import CARRY_OUT_LIMIT
from passerelle.console.requests import RequestError, check_gateway
from passerelle.dburl import StoreURL, StoreURLError, parse_store_url

log = logging.getLogger("passerelle.console.gateway_sync")
DEFAULT_RUNTIME_RULES = "/var/lib/passerelle/console-rules.json"
DEFAULT_MAIL_LOG = "/var/log/mail.log"
DEFAULT_TRACE_STATE = "/var/lib/passerelle/console-trace.json"


@dataclass(frozen=True)
class SyncConfig:
    database: StoreURL
    gateway: str
    quarantine_dir: str
    antivirus_config: str
    writer: str
    limit: int
    runtime_rules: str = DEFAULT_RUNTIME_RULES
    runtime_rules_group: str = "passerelle"
    mail_log: str = DEFAULT_MAIL_LOG
    trace_state: str = DEFAULT_TRACE_STATE


def load_config(path: str) -> SyncConfig:
    with naming_file(path):
        top = Section(load_toml(path))
        c = top.table("gateway_sync")
        top.finish()
        try:
            database = parse_store_url(c.str("database"))
        except StoreURLError as exc:
            raise ConfigError("gateway_sync.database", str(exc)) from None
        try:
            gateway = check_gateway(c.str("gateway"))
        except RequestError:
            raise ConfigError(
                "gateway_sync.gateway", "a host name (letters, digits, .-_)"
            ) from None
        quarantine_dir = c.str("quarantine_dir", "/var/spool/passerelle/quarantine")
        if not quarantine_dir.startswith("/"):
            raise ConfigError("gateway_sync.quarantine_dir", "an absolute path")
        antivirus_config = c.str("antivirus_config", "/etc/passerelle/antivirus.toml")
        writer = c.str("writer", "passerelle")
        limit = c.int("limit", CARRY_OUT_LIMIT, minimum=1, maximum=1000)
        runtime_rules = c.str("runtime_rules", DEFAULT_RUNTIME_RULES)
        if not runtime_rules.startswith("/") or runtime_rules.endswith("/"):
            raise ConfigError("gateway_sync.runtime_rules", "an absolute file path")
        group = c.str("runtime_rules_group", "passerelle")
        trace = _trace_keys(c)
        c.finish()
    cfg = SyncConfig(
        database, gateway, quarantine_dir, antivirus_config, writer, limit, runtime_rules, group
    )
    return replace(cfg, **trace)


def _trace_keys(c: Section) -> dict[str, Any]:
    """The message trace's keys: mail_log, trace_state."""
    mail_log = c.str("mail_log", DEFAULT_MAIL_LOG)
    if not mail_log.startswith("/") or mail_log.endswith("/"):
        raise ConfigError("gateway_sync.mail_log", "an absolute file path")
    state = c.str("trace_state", DEFAULT_TRACE_STATE)
    if not state.startswith("/") or state.endswith("/"):
        raise ConfigError("gateway_sync.trace_state", "an absolute file path")
    return {"mail_log": mail_log, "trace_state": state}


def _gid(group: str) -> int | None:
    if not group:
        return None
    import grp

    return grp.getgrnam(group).gr_gid


def _sync_rules(conn: object, cfg: SyncConfig) -> bool:
    """The runtime rules row to the milter's file; False when it could not be done."""
    from passerelle.console.gateway import sync_runtime_rules
    from passerelle.console.rules_store import RuleStore

    try:
        store = RuleStore(conn)
        store.migrate()
        runtime, _version = store.load()
        sync_runtime_rules(runtime, cfg.runtime_rules, _gid(cfg.runtime_rules_group))
    except Exception as exc:  # the rest of the pass goes on; the milter keeps its rules
        log.error("runtime rules not written to %s: %s", cfg.runtime_rules, exc)
        return False
    return True


def _ship_trace(conn: object, cfg: SyncConfig) -> str:
    """The new part of the mail log to the trace table; what was done, or why it failed."""
    from passerelle.console.trace_ship import ship

    try:
        st = ship(conn, cfg.gateway, cfg.mail_log, cfg.trace_state, time.time())
    except Exception as exc:  # the rest of the pass goes on; the offset is kept
        log.error("trace: %s not shipped: %s", cfg.mail_log, exc)
        return ""
    if st.missing:
        log.warning("trace: no mail log at %s", cfg.mail_log)
        return f"trace: no {cfg.mail_log}"
    return f"trace {st.events} events, {st.skipped} lines skipped" + (
        ", more next pass" if st.more else ""
    )


def run_sync(config_path: str) -> int:
    """One pass: 0 when every request carried out succeeded and every entry was indexed."""
    from passerelle.antivirus.clamd import ClamdClient
    from passerelle.antivirus.config import load_config as load_antivirus_config
    from passerelle.antivirus.outbreak import OutbreakStore, release_held
    from passerelle.antivirus.quarantine import Quarantine
    from passerelle.console.gateway import carry_out, index_quarantine, outbreak_switch
    from passerelle.console.quarantine_index import QuarantineIndex
    from passerelle.console.requests import RequestTable
    from passerelle.console.server import connection_factory

    cfg = load_config(config_path)
    av = load_antivirus_config(cfg.antivirus_config)
    quarantine = Quarantine(
        cfg.quarantine_dir, release_command=av.release_command, writer=cfg.writer
    )
    scanner = ClamdClient(av.clamd, av.connect_timeout, av.timeout)
    switch = outbreak_switch(
        OutbreakStore(av.outbreak_state),
        lambda by: release_held(quarantine, scanner, False, av.signature_dir, by=by),
    )
    conn = connection_factory(cfg.database)()
    try:
        index, requests = QuarantineIndex(conn), RequestTable(conn)
        index.migrate()
        requests.migrate()
        rules_ok = _sync_rules(conn, cfg)  # first: a long pass of requests does not delay it
        trace = _ship_trace(conn, cfg)  # the message trace: a step of its own
        indexed = index_quarantine(quarantine, index, cfg.gateway, time.time())
        done = carry_out(
            requests,
            quarantine,
            index,
            cfg.gateway,
            time.time(),
            lambda item_id, by: quarantine.release(item_id, by=by),
            scanner.scan,
            cfg.limit,
            switch,
        )
    finally:
        conn.close()
    log.info(
        "gateway-sync %s: indexed %d new, %d updated, %d gone, %d skipped;"
        " requests %d done, %d failed",
        cfg.gateway,
        indexed.indexed,
        indexed.updated,
        indexed.vanished,
        indexed.skipped,
        done.done,
        done.failed,
    )
    print(
        f"indexed {indexed.indexed} new, {indexed.updated} updated, {indexed.unchanged} "
        f"unchanged, {indexed.vanished} gone, {indexed.skipped} skipped; "
        f"requests {done.done} done, {done.failed} failed"
        + ("" if rules_ok else "; runtime rules not written")
        + (f"; {trace}" if trace else "; trace not shipped")
    )
    return 1 if indexed.skipped or done.failed or not rules_ok or not trace else 0
