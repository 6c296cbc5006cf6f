"""The connection guard: count SMTP sessions per client, alert, block, unblock by itself.

``run_once`` is one hourly run: expire old blocks, count the sessions of the last ``window``
in the mail logs (``maillog``), decide (pure: ``decide`` and ``plan_blocks``), write the state
and rebuild the sendmail map when the block set changed, reload sendmail only then, and
report (syslog, Nagios status file, mail to the admins). Time, commands and the count sink
are injected so that tests drive it without a clock, a sendmail or a database.

Configuration (``/etc/passerelle/connwatch.toml``, checked by ``passerelle connwatch
check-config``), every key with its default::

    [connwatch]
    logs = ["/var/log/mail.log"]   # each with its rotations (.1, .2.gz, -YYYYMMDD)
    window = "1h"                  # connections counted over the last window
    alert_threshold = 500          # more than this: alert (mail, status WARNING)
    block_threshold = 2500         # more than this: block (sendmail map), >= alert_threshold
    block_for = "24h"              # a block expires after this (extended while over)
    block = true                   # false: alert only
    direction = "inbound"          # inbound | outbound (named in alerts and shared counts)
    hostname = "<hostname>"
    state = "/var/lib/passerelle/connwatch.json"
    map = "/etc/mail/connwatch"    # access-map source; <map>.db is built with makemap
    makemap = "/usr/sbin/makemap"
    map_type = "hash"              # hash | btree
    reload_command = ["systemctl", "reload", "sendmail"]
    status_file = "/var/lib/passerelle/connwatch.status"   # one Nagios line
    over_file = "/var/lib/passerelle/connwatch-over.json"   # unset: status_file's folder;
                                   # the last run's clients over alert_threshold (connwatch.over)
    admin_mail = []                # addresses mailed on alerts, blocks, unblocks, errors
    mail_from = "root"
    mail_command = ["/usr/sbin/sendmail", "-oi", "-t"]
    whitelist = ["127.0.0.0/8", "::1/128"]   # never blocked (alerts say "whitelisted")
    sink = "local"                 # local | mariadb: decide on the sum over every gateway
    sink_url = ""                  # mysql://user:pw@db1/greylist (required with mariadb)
    sink_timeout = "5s"            # bound on each database operation; down: local counts
    jobs = 1                       # processes scanning the logs (1..64; see maillog)
    log_level = "info"             # debug | info | warning
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Union

from passerelle import adminmail, decisionlog
from passerelle.config import ConfigError, Section, load_toml, naming_file
from passerelle.connwatch import alerts
from passerelle.connwatch.blocks import (
    Block,
    BlockError,
    MapBuilder,
    load_state,
    render_map,
    save_state,
    state_lock,
)
from passerelle.connwatch.over import over_record, write_over
from passerelle.connwatch.sink import CountSink, LocalSink, MariaDBSink, SinkError
from passerelle.dburl import StoreURLError, parse_store_url
from passerelle.durations import format_duration
from passerelle.maillog import ScanStats, scan_logs
from passerelle.rootfiles import UnsafeFileError, open_trusted_file
from passerelle.runner import Runner, run_command

DEFAULT_CONFIG = "/etc/passerelle/connwatch.toml"
OVER_NAME = "connwatch-over.json"  # the over file's default name, beside the status file
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # Python 3.9: no | at run time


@dataclass(frozen=True)
class Config:
    logs: tuple[str, ...] = ("/var/log/mail.log",)
    window: int = 3600
    alert_threshold: int = 500
    block_threshold: int = 2500
    block_for: int = 86400
    block: bool = True
    direction: str = "inbound"
    hostname: str = ""
    state: str = "/var/lib/passerelle/connwatch.json"
    map: str = "/etc/mail/connwatch"
    makemap: str = "/usr/sbin/makemap"
    map_type: str = "hash"
    reload_command: tuple[str, ...] = ("systemctl", "reload", "sendmail")
    status_file: str = "/var/lib/passerelle/connwatch.status"
    over_file: str = "/var/lib/passerelle/connwatch-over.json"
    admin_mail: tuple[str, ...] = ()
    mail_from: str = "root"
    mail_command: tuple[str, ...] = ("/usr/sbin/sendmail", "-oi", "-t")
    whitelist: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    sink: str = "local"
    sink_url: str = ""
    sink_timeout: int = 5
    jobs: int = 1
    log_level: str = "info"


def parse_config(data: Mapping[str, Any], source: str | None = None) -> Config:
    """Validate a parsed TOML document; errors name the key (``connwatch.window``)."""
    with naming_file(source):
        top = Section(data)
        s = top.table("connwatch")
        d = Config()
        logs = s.str_list("logs", list(d.logs))
        if not logs:
            raise ConfigError("connwatch.logs", "needs at least one log file")
        window = s.duration("window", "1h")
        if window <= 0:
            raise ConfigError("connwatch.window", "must be longer than 0s")
        alert = s.int("alert_threshold", d.alert_threshold, minimum=1)
        block = s.int("block_threshold", d.block_threshold, minimum=1)
        if block < alert:
            raise ConfigError(
                "connwatch.block_threshold", f"must be >= alert_threshold ({alert}), got {block}"
            )
        block_for = s.duration("block_for", "24h")
        if block_for <= 0:
            raise ConfigError("connwatch.block_for", "must be longer than 0s")
        reload_command = s.str_list("reload_command", list(d.reload_command))
        mail_command = s.str_list("mail_command", list(d.mail_command))
        for key, cmd in (("reload_command", reload_command), ("mail_command", mail_command)):
            if not cmd:
                raise ConfigError(f"connwatch.{key}", "must not be empty")
        whitelist = []
        for net in s.str_list("whitelist", [str(n) for n in d.whitelist]):
            try:
                whitelist.append(ipaddress.ip_network(net, strict=False))
            except ValueError:
                raise ConfigError(
                    "connwatch.whitelist", f"not a network (CIDR) or address: {net!r}"
                ) from None
        status_file = s.str("status_file", d.status_file)
        over_file = s.str("over_file", "") or str(Path(status_file).parent / OVER_NAME)
        state = s.str("state", d.state)
        if over_file in (status_file, state):
            raise ConfigError("connwatch.over_file", "must differ from status_file and state")
        admin_mail = s.str_list("admin_mail", [])
        for addr in admin_mail:
            if "@" not in addr and addr != "root":
                raise ConfigError("connwatch.admin_mail", f"not a mail address: {addr!r}")
        cfg = Config(
            logs=tuple(logs),
            window=window,
            alert_threshold=alert,
            block_threshold=block,
            block_for=block_for,
            block=s.bool("block", d.block),
            direction=s.str("direction", d.direction, choices=("inbound", "outbound")),
            hostname=s.str("hostname", "") or socket.gethostname(),
            state=state,
            map=s.str("map", d.map),
            makemap=s.str("makemap", d.makemap),
            map_type=s.str("map_type", d.map_type, choices=("hash", "btree")),
            reload_command=tuple(reload_command),
            status_file=status_file,
            over_file=over_file,
            admin_mail=tuple(admin_mail),
            mail_from=s.str("mail_from", d.mail_from),
            mail_command=tuple(mail_command),
            whitelist=tuple(whitelist),
            sink=s.str("sink", d.sink, choices=("local", "mariadb")),
            sink_url=s.str("sink_url", ""),
            sink_timeout=s.duration("sink_timeout", "5s"),
            jobs=s.int("jobs", d.jobs, minimum=1, maximum=64),
            log_level=s.str("log_level", d.log_level, choices=("debug", "info", "warning")),
        )
        if cfg.sink == "mariadb":
            if not cfg.sink_url:
                raise ConfigError("connwatch.sink_url", 'is required with sink = "mariadb"')
            try:
                url = parse_store_url(cfg.sink_url)
            except StoreURLError as exc:
                raise ConfigError("connwatch.sink_url", str(exc)) from None
            if url.scheme != "mysql":
                raise ConfigError("connwatch.sink_url", "must be a mysql:// URL")
        if cfg.sink_timeout <= 0:
            raise ConfigError("connwatch.sink_timeout", "must be longer than 0s")
        s.finish()
        top.finish()
    return cfg


def load_config(path: str | Path) -> Config:
    return parse_config(load_toml(path), str(path))


def make_sink(cfg: Config) -> CountSink:
    """The sink the config names (``mariadb``: counts summed over every gateway)."""
    if cfg.sink == "mariadb":
        return MariaDBSink(cfg.sink_url, float(cfg.sink_timeout))
    return LocalSink()


# -- decisions (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    ip: str
    count: int
    action: str  # "alert", "block" or "whitelisted" (over a threshold but never blocked)


def is_whitelisted(ip: str, whitelist: Sequence[Network]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in whitelist)


def decide(
    counts: Mapping[str, int],
    alert_threshold: int,
    block_threshold: int,
    whitelist: Sequence[Network] = (),
) -> list[Decision]:
    """Clients over ``alert_threshold`` (strictly), busiest first."""
    out = []
    for ip, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if n <= alert_threshold:
            break
        if is_whitelisted(ip, whitelist):
            action = "whitelisted"
        elif n > block_threshold:
            action = "block"
        else:
            action = "alert"
        out.append(Decision(ip, n, action))
    return out


@dataclass
class BlockPlan:
    blocks: dict[str, Block]
    added: list[Block] = field(default_factory=list)
    extended: list[Block] = field(default_factory=list)
    removed: list[tuple[Block, str]] = field(default_factory=list)  # (block, why)

    @property
    def set_changed(self) -> bool:
        return bool(self.added or self.removed)


def plan_blocks(
    current: Mapping[str, Block],
    decisions: Sequence[Decision],
    now: float,
    cfg: Config,
) -> BlockPlan:
    """Expire, release whitelisted, add new blocks, extend blocks of clients still over."""
    plan = BlockPlan(blocks={})
    for ip, b in current.items():
        if b.expires <= now:
            plan.removed.append((b, "expired"))
        elif is_whitelisted(ip, cfg.whitelist):
            plan.removed.append((b, "whitelisted"))
        else:
            plan.blocks[ip] = b
    if not cfg.block:
        return plan
    win = format_duration(cfg.window)
    for d in decisions:
        if d.action != "block":
            continue
        reason = f"{d.count} {cfg.direction} connections in {win} > {cfg.block_threshold}"
        expires = now + cfg.block_for
        if d.ip in plan.blocks:
            b = plan.blocks[d.ip].extended(d.count, expires, reason)
            plan.blocks[d.ip] = b
            plan.extended.append(b)
        else:
            b = Block(d.ip, reason, d.count, now, expires, cfg.direction, cfg.hostname)
            plan.blocks[d.ip] = b
            plan.added.append(b)
    return plan


def status_line(
    cfg: Config,
    counts: Mapping[str, int],
    decisions: Sequence[Decision],
    plan: BlockPlan,
    notes: Sequence[str] = (),
) -> str:
    """The Nagios line (see passerelle.connwatch.alerts for the format); ``notes`` (e.g. shared
    counts unavailable) make an OK run a WARNING."""
    win = format_duration(cfg.window)
    blocked = [d for d in decisions if d.action == "block" and d.ip in plan.blocks]
    warned = [d for d in decisions if d.action != "block" or d.ip not in plan.blocks]
    parts = []
    if blocked:
        parts.append("blocked " + ", ".join(f"{d.ip} ({d.count}/{win})" for d in blocked[:5]))
    if warned:
        parts.append(
            "over "
            + str(cfg.alert_threshold)
            + ": "
            + ", ".join(
                f"{d.ip} ({d.count}/{win}{', whitelisted' if d.action == 'whitelisted' else ''})"
                for d in warned[:5]
            )
        )
    others = len(plan.blocks) - len(blocked)
    if others:
        parts.append(f"{others} earlier block(s) active")
    if blocked:
        state = "CRITICAL"
    elif warned or plan.blocks or notes:
        state = "WARNING"
    else:
        state = "OK"
    if not parts:
        if counts:
            top = max(counts.items(), key=lambda kv: kv[1])
            parts.append(f"{len(counts)} clients, busiest {top[0]} ({top[1]}/{win}), no block")
        else:
            parts.append(f"no client in the last {win}")
    parts += list(notes)
    mx = max(counts.values(), default=0)
    alerts_n = sum(1 for d in decisions if d.action != "block")
    perf = f"clients={len(counts)} max={mx} alerts={alerts_n} blocks={len(plan.blocks)}"
    return f"{state} - {cfg.direction} {cfg.hostname}: {'; '.join(parts)} | {perf}"


# -- one run (I/O) -------------------------------------------------------------------------
@dataclass
class Outcome:
    counts: dict[str, int]
    stats: ScanStats
    decisions: list[Decision]
    plan: BlockPlan
    status: str
    map_rebuilt: bool = False
    reloaded: bool = False
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    over: dict[str, Any] = field(default_factory=dict)  # the over file's content (over.py)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


# After a reload sendmail restarts itself (SIGHUP: it execs itself again) and does not listen
# for a moment; the admins' mail, submitted through 127.0.0.1:25 (Debian's and EL's submit.cf)
# at that moment, would wait in the submission queue for its next run (20-30 minutes).
MTA_ADDRESS = ("127.0.0.1", 25)
MTA_READY_TIMEOUT = 30.0


def mta_listening(
    timeout: float,
    address: tuple[str, int] = MTA_ADDRESS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Whether ``address`` accepts a TCP connection within ``timeout`` seconds (tried every
    0.2 s; each attempt bounded by the time left)."""
    deadline = clock() + timeout
    while True:
        left = deadline - clock()
        try:
            with socket.create_connection(address, timeout=max(0.1, min(2.0, left))):
                return True
        except OSError:
            pass
        if clock() + 0.2 > deadline:
            return False
        sleep(0.2)


@dataclass
class Deps:
    """What a run talks to; tests replace any of it."""

    runner: Runner = run_command
    mailer: adminmail.Mailer = adminmail.send_mail
    # Waits (at most the given seconds) until the local sendmail accepts connections again.
    mta_ready: Callable[[float], bool] = mta_listening
    sink: CountSink = field(default_factory=LocalSink)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("passerelle"))
    tz: tzinfo | None = None
    skip_stale: bool = True


def _mark(pending: Path) -> None:
    """Create the reload marker. It lives in the passerelle user's folder: a link, FIFO or
    foreign file planted under its name is removed (``unlink`` never follows a link), never
    opened through (``passerelle.rootfiles``); one planted again meanwhile is an error."""
    try:
        try:
            os.close(open_trusted_file(pending))
        except UnsafeFileError:
            pending.unlink()
            os.close(open_trusted_file(pending))
    except OSError as exc:
        raise BlockError(f"{pending}: {exc.strerror or exc}") from None


def apply_blocks(
    cfg: Config, blocks: dict[str, Block], set_changed: bool, deps: Deps
) -> tuple[bool, bool]:
    """Save the state, rebuild the map if its text changed (or its db is missing), reload
    sendmail if the set of blocked clients changed. Returns (map rebuilt, reloaded)."""
    # A reload owed (set changed) is remembered until it succeeds, even if makemap fails.
    pending = Path(f"{cfg.state}.reload-pending")
    save_state(cfg.state, blocks)
    if set_changed:
        _mark(pending)
    builder = MapBuilder(Path(cfg.map), cfg.makemap, cfg.map_type, deps.runner)
    text = render_map(blocks)
    rebuilt = False
    if not builder.up_to_date(text):
        builder.build(text)
        rebuilt = True
    reloaded = False
    if pending.exists():
        rc, out = deps.runner(list(cfg.reload_command), None)
        if rc != 0:
            raise BlockError(f"{' '.join(cfg.reload_command)} failed ({rc}): {out}")
        pending.unlink()
        reloaded = True
    return rebuilt, reloaded


def run_once(cfg: Config, now: float, deps: Deps | None = None, dry_run: bool = False) -> Outcome:
    deps = deps or Deps()
    errors: list[str] = []
    with state_lock(cfg.state) if not dry_run else _nolock():
        state_ok = True
        try:
            current = load_state(cfg.state)
        except BlockError as exc:
            # Never overwrite a state we could not read: blocks would be lost.
            errors.append(str(exc))
            current, state_ok = {}, False
        counter = scan_logs(
            cfg.logs,
            now - cfg.window,
            now,
            now=now,
            tz=deps.tz,
            skip_stale=deps.skip_stale,
            jobs=cfg.jobs,
        )
        stats = counter.stats
        errors.extend(stats.errors)
        notes: list[str] = []
        fleet = cfg.sink != "local"
        try:
            if not dry_run:
                deps.sink.publish(cfg.hostname, cfg.direction, now, counter.counts)
            if dry_run:  # nothing published: the other hosts' counts plus this host's
                counts = deps.sink.totals(cfg.direction, now, cfg.window, cfg.hostname)
                for ip, n in counter.counts.items():
                    counts[ip] = counts.get(ip, 0) + n
            else:
                counts = deps.sink.totals(cfg.direction, now, cfg.window)
        except SinkError as exc:
            counts = dict(counter.counts)
            fleet = False
            notes.append(f"shared counts unavailable, local counts used ({exc})")
        decisions = decide(counts, cfg.alert_threshold, cfg.block_threshold, cfg.whitelist)
        plan = plan_blocks(current, decisions, now, cfg)
        out = Outcome(counts, stats, decisions, plan, "", notes=notes)
        # The blocks in force after the run: the earlier ones when this run's are not applied
        # (a dry run: those it would apply).
        in_force: Collection[str] = plan.blocks if dry_run else current
        if not dry_run and state_ok:
            try:
                out.map_rebuilt, out.reloaded = apply_blocks(
                    cfg, plan.blocks, plan.set_changed, deps
                )
                in_force = plan.blocks
            except BlockError as exc:
                errors.append(str(exc))
        out.over = over_record(
            decisions,
            in_force,
            current,
            at=now,
            window=cfg.window,
            direction=cfg.direction,
            alert_threshold=cfg.alert_threshold,
            block_threshold=cfg.block_threshold,
            counts="fleet" if fleet else "local",
        )
    out.errors = errors
    out.status = status_line(cfg, counts, decisions, plan, out.notes)
    if errors:
        out.status = "UNKNOWN - " + "; ".join(errors)[:300] + " | " + out.status
    _report(cfg, out, now, deps, dry_run)
    return out


class _nolock:
    """No lock for dry runs (they write nothing)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _report(cfg: Config, out: Outcome, now: float, deps: Deps, dry_run: bool) -> None:
    log = deps.logger
    win = format_duration(cfg.window)
    st = out.stats
    log.info(
        "connwatch %s: %d lines, %d sessions from %d clients in the last %s "
        "(%d skipped lines, %d refused-connection notices, %d lines naming two clients)",
        cfg.direction,
        st.lines,
        st.sessions,
        len(out.counts),
        win,
        st.skipped,
        st.refusing,
        st.ambiguous,
    )
    for d in out.decisions:
        if d.action == "block":
            outcome = "blocked" if d.ip in out.plan.blocks else "not-blocked"
            log.warning(
                "%s",
                decisionlog.connwatch_line(
                    cfg.direction, d.ip, d.count, win, cfg.block_threshold, outcome
                ),
            )
        else:
            outcome = "whitelisted" if d.action == "whitelisted" else "alert"
            log.warning(
                "%s",
                decisionlog.connwatch_line(
                    cfg.direction, d.ip, d.count, win, cfg.alert_threshold, outcome
                ),
            )
    for b, why in out.plan.removed:
        log.info("connwatch: %s unblocked (%s)", b.ip, why)
    for n in out.notes:
        log.warning("connwatch: %s", n)
    for e in out.errors:
        log.error("connwatch: %s", e)
    if dry_run:
        return
    try:
        write_over(cfg.over_file, out.over)
    except OSError as exc:
        out.errors.append(f"{cfg.over_file}: {exc}")
        log.error("connwatch: cannot write %s: %s", cfg.over_file, exc)
    try:
        alerts.write_status(cfg.status_file, out.status)
    except OSError as exc:
        out.errors.append(f"{cfg.status_file}: {exc}")
        log.error("connwatch: cannot write %s: %s", cfg.status_file, exc)
    if cfg.admin_mail and (out.decisions or out.plan.removed or out.errors):
        body = mail_body(cfg, out)
        subject = f"[connwatch] {cfg.hostname} {cfg.direction}: {out.status.split(' |')[0]}"
        msg = adminmail.build_mail(cfg.mail_from, cfg.admin_mail, subject[:200], body)
        if out.reloaded and not deps.mta_ready(MTA_READY_TIMEOUT):
            log.warning(
                "connwatch: sendmail did not accept connections within %d s of its reload; "
                "the mail to the admins waits in the submission queue",
                MTA_READY_TIMEOUT,
            )
        rc, text = deps.mailer(list(cfg.mail_command), msg)
        if rc != 0:
            out.errors.append(f"mail to {', '.join(cfg.admin_mail)} failed ({rc}): {text}")
            log.error("connwatch: mail to admins failed (%d): %s", rc, text)


def mail_body(cfg: Config, out: Outcome) -> str:
    win = format_duration(cfg.window)
    lines = [
        f"Connection guard on {cfg.hostname} ({cfg.direction}), last {win}:",
        f"alert above {cfg.alert_threshold}, block above {cfg.block_threshold} "
        f"for {format_duration(cfg.block_for)}.",
        "",
    ]
    for d in out.decisions:
        what = {"block": "BLOCKED", "alert": "alert", "whitelisted": "whitelisted, not blocked"}
        extra = ""
        b = out.plan.blocks.get(d.ip)
        if d.action == "block" and b is not None:
            from passerelle.connwatch.blocks import iso

            extra = f" until {iso(b.expires)}"
        lines.append(f"  {d.ip:<40} {d.count:>8}  {what[d.action]}{extra}")
    for b, why in out.plan.removed:
        lines.append(f"  {b.ip:<40} {'':>8}  unblocked ({why})")
    for e in out.errors:
        lines.append(f"error: {e}")
    lines += ["", "Operators: passerelle connwatch blocks | passerelle connwatch unblock IP"]
    return "\n".join(lines) + "\n"


def unblock(cfg: Config, ip: str, deps: Deps | None = None) -> bool:
    """Remove one block and rebuild; False if the client was not blocked."""
    deps = deps or Deps()
    with state_lock(cfg.state):
        blocks = load_state(cfg.state)
        if ip not in blocks:
            return False
        del blocks[ip]
        apply_blocks(cfg, blocks, True, deps)
    deps.logger.info("connwatch: %s unblocked by an operator", ip)
    return True
