"""``passerelle console gateway-sync``: one pass of the gateway's side of the console (index
this gateway's quarantine, carry out the console's requests, report this gateway's status),
for a systemd timer.

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
    ops_config = "/etc/passerelle/ops.toml"              # what the status report probes
    # the greylist and connection-guard pages (console/pages_sync.py; "": that part off)
    greylist_config = "/etc/passerelle/greylist.toml"    # the greylist milter's config
    connwatch_config = "/etc/passerelle/connwatch.toml"  # the connection guard's config
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
DEFAULT_OPS_CONFIG = "/etc/passerelle/ops.toml"
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
    ops_config: str = DEFAULT_OPS_CONFIG
    greylist_config: str = ""
    connwatch_config: str = ""
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
        ops_config = c.str("ops_config", DEFAULT_OPS_CONFIG)
        if not ops_config.startswith("/"):
            raise ConfigError("gateway_sync.ops_config", "an absolute path")
        pages = {k: c.str(k, "") for k in ("greylist_config", "connwatch_config")}
        for key, value in pages.items():
            if value and not value.startswith("/"):
                raise ConfigError(f"gateway_sync.{key}", "an absolute path, or empty")
        trace = _trace_keys(c)
        c.finish()
    cfg = SyncConfig(
        database,
        gateway,
        quarantine_dir,
        antivirus_config,
        writer,
        limit,
        runtime_rules,
        group,
        ops_config,
        **pages,
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


def _publish_status(conn: object, cfg: SyncConfig, outbreak: object, quarantine: object) -> bool:
    """This gateway's status report to the console (``gateway_status``); False when it could
    not be stored. A fact that cannot be probed is reported unknown, not a failure."""
    from passerelle.console.gateway_status import GatewayStatusTable, collect, gateway_probes

    try:
        table = GatewayStatusTable(conn)
        table.migrate()
        probes = gateway_probes(cfg.ops_config, outbreak, quarantine)
        table.upsert(collect(cfg.gateway, time.time(), probes))
    except Exception as exc:  # the pass's other steps are done; the console sees it stale
        log.error("gateway status not published: %s", exc)
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
    from passerelle.console.pages_sync import PagesSync
    from passerelle.console.quarantine_index import QuarantineIndex
    from passerelle.console.requests import RequestTable
    from passerelle.console.server import connection_factory

    cfg = load_config(config_path)
    av = load_antivirus_config(cfg.antivirus_config)
    quarantine = Quarantine(
        cfg.quarantine_dir, release_command=av.release_command, writer=cfg.writer
    )
    scanner = ClamdClient(av.clamd, av.connect_timeout, av.timeout)
    outbreak = OutbreakStore(av.outbreak_state)
    switch = outbreak_switch(
        outbreak,
        lambda by: release_held(quarantine, scanner, False, av.signature_dir, by=by),
    )
    conn = connection_factory(cfg.database)()
    # the greylist and connection-guard pages: their requests, then what they show
    pages = PagesSync(conn, cfg.gateway, cfg.greylist_config, cfg.connwatch_config, time.time())
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
            pages.handlers(),
        )
        # last: the report shows what this pass's requests did (outbreak mode switched)
        status_ok = _publish_status(conn, cfg, outbreak, quarantine)
        pages_ok = pages.publish(time.time())
    finally:
        pages.close()
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
        + ("" if status_ok else "; status not published")
        + "".join(f"; {e}" for e in pages.errors)
        + (f"; {trace}" if trace else "; trace not shipped")
    )
    steps_ok = rules_ok and status_ok and pages_ok and bool(trace)
    return 1 if indexed.skipped or done.failed or not steps_ok else 0
