"""``passerelle check ...`` (Nagios checks for NRPE) and ``passerelle watch run|check-config``."""

from __future__ import annotations

import argparse
import sys
import time

from passerelle.config import ConfigError, check_config_command
from passerelle.durations import DurationError, parse_duration
from passerelle.logsetup import setup_logging
from passerelle.supervision import checks, mailflow, watch
from passerelle.supervision.checks import UNKNOWN, Result


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="Nagios checks (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), run by NRPE",
        description="One Nagios check; prints one status line, exits with the Nagios state.",
    )
    kinds = p.add_subparsers(dest="check_kind", metavar="CHECK")
    kinds.required = True

    m = kinds.add_parser("milter", help="a milter negotiation on the milter's socket")
    m.add_argument("--socket", required=True, help="unix:/path or inet:PORT@HOST")
    m.add_argument("--name", default="", help="label in the output (default: the socket)")
    m.add_argument("--timeout", type=float, default=5.0)
    m.set_defaults(func=cmd_milter)

    q = kinds.add_parser("queue", help="messages in sendmail's queue")
    q.add_argument("--dir", action="append", help="queue folder (repeat; /var/spool/mqueue)")
    q.add_argument("-w", "--warning", type=int, required=True)
    q.add_argument("-c", "--critical", type=int, required=True)
    q.set_defaults(func=cmd_queue)

    mem = kinds.add_parser("memory", help="memory in use, percent")
    mem.add_argument("-w", "--warning", type=float, required=True)
    mem.add_argument("-c", "--critical", type=float, required=True)
    mem.set_defaults(func=cmd_memory)

    db = kinds.add_parser("db", help="the shared MariaDB answers (server greeting)")
    db.add_argument("--host", required=True)
    db.add_argument("--port", type=int, default=3306)
    db.add_argument("--timeout", type=float, default=5.0)
    db.set_defaults(func=cmd_db)

    mf = kinds.add_parser(
        "mailflow",
        help="one probe message through this host's sendmail, followed in the mail log",
        description=(
            "Sends one message over SMTP (127.0.0.1:25 by default: through every milter, "
            "trusted by the greylist milter) to RECIPIENT and follows the mail log until "
            "sendmail logs it delivered (OK), deferred or bounced (CRITICAL)."
        ),
    )
    mf.add_argument("--to", required=True, metavar="RECIPIENT", help="a test mailbox")
    mf.add_argument("--from", dest="sender", default="", help="envelope sender (default <>)")
    mf.add_argument("--server", default="127.0.0.1")
    mf.add_argument("--port", type=int, default=25)
    mf.add_argument("--log", action="append", help="mail log to follow (repeat; /var/log/mail.log)")
    mf.add_argument("--timeout", type=_duration, default=120, help="wait for delivery (120s)")
    mf.set_defaults(func=cmd_mailflow)

    r = kinds.add_parser("restarts", help="daemon restarts in the last hour (process watch)")
    r.add_argument("--state", default=watch.WatchConfig.state)
    r.add_argument("--window", type=_duration, default=3600)
    r.add_argument("-w", "--warning", type=int, default=1)
    r.add_argument("-c", "--critical", type=int, default=3)
    r.add_argument("--max-age", type=_duration, default=600, help="state older: UNKNOWN")
    r.set_defaults(func=cmd_restarts)

    sf = kinds.add_parser("status-file", help="a status line written by a tool (connwatch)")
    sf.add_argument("file")
    sf.add_argument("--label", default="STATUS")
    sf.add_argument("--max-age", type=_duration, default=7800, help="older: UNKNOWN")
    sf.set_defaults(func=cmd_status_file)

    bk = kinds.add_parser("backup", help="age of the host's newest backup (role backup)")
    bk.add_argument("--config", default="/etc/passerelle/backup.toml")
    bk.add_argument("--max-age", type=_duration, default=26 * 3600, help="older: CRITICAL")
    bk.set_defaults(func=cmd_backup)

    co = kinds.add_parser(
        "console",
        help="the web console answers, its database is read, every gateway reports",
        description="See passerelle.console.health (run on the console's host, as root).",
    )
    co.add_argument("--config", default="/etc/passerelle/console.toml")
    co.add_argument("--stale", type=_duration, default=180, help="a report older: WARNING")
    co.add_argument("--critical", type=_duration, default=900, help="a report older: CRITICAL")
    co.add_argument(
        "--request-age", type=_duration, default=300, help="a request open longer: WARNING"
    )
    co.add_argument("--timeout", type=float, default=10.0)
    co.set_defaults(func=cmd_console)

    w = sub.add_parser(
        "watch",
        help="process watch: start wanted daemons found down, remember restarts",
        description=(
            "Run by passerelle-watch.timer every minute (see passerelle.supervision.watch)."
        ),
    )
    wa = w.add_subparsers(dest="watch_action", metavar="ACTION")
    wa.required = True
    run = wa.add_parser("run", help="one pass")
    run.add_argument("-c", "--config", default=watch.DEFAULT_CONFIG)
    run.set_defaults(func=cmd_watch_run)
    cc = wa.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    cc.add_argument("file", metavar="FILE")
    cc.set_defaults(func=lambda a: check_config_command(a.file, watch.load_config))


def _emit(label: str, res: Result) -> int:
    print(res.line(label))
    return res.state


def _guard(label: str, fn: object) -> int:
    try:
        return _emit(label, fn())  # type: ignore[operator]
    except ValueError as exc:
        return _emit(label, Result(UNKNOWN, str(exc)))


def cmd_milter(a: argparse.Namespace) -> int:
    label = f"MILTER {a.name}".strip() if a.name else "MILTER"
    return _emit(label, checks.check_milter(a.socket, a.timeout))


def cmd_queue(a: argparse.Namespace) -> int:
    def run() -> Result:
        checks.check_thresholds(a.warning, a.critical, "queue")
        return checks.check_queue(a.dir or ["/var/spool/mqueue"], a.warning, a.critical)

    return _guard("QUEUE", run)


def cmd_memory(a: argparse.Namespace) -> int:
    def run() -> Result:
        checks.check_thresholds(a.warning, a.critical, "memory")
        return checks.check_memory(a.warning, a.critical)

    return _guard("MEMORY", run)


def cmd_db(a: argparse.Namespace) -> int:
    return _emit("SHARED DB", checks.check_db(a.host, a.port, a.timeout))


def cmd_mailflow(a: argparse.Namespace) -> int:
    res = mailflow.check_mailflow(
        a.to,
        sender=a.sender,
        server=a.server,
        port=a.port,
        logs=a.log or ["/var/log/mail.log"],
        timeout=a.timeout,
    )
    return _emit("MAILFLOW", res)


def cmd_restarts(a: argparse.Namespace) -> int:
    def run() -> Result:
        checks.check_thresholds(a.warning, a.critical, "restarts")
        return checks.check_restarts(
            a.state, time.time(), a.window, a.warning, a.critical, a.max_age
        )

    return _guard("RESTARTS", run)


def cmd_status_file(a: argparse.Namespace) -> int:
    return _emit(a.label, checks.check_status_file(a.file, time.time(), a.max_age))


def cmd_backup(a: argparse.Namespace) -> int:
    return _emit("BACKUP", checks.check_backup(a.config, time.time(), a.max_age))


def cmd_console(a: argparse.Namespace) -> int:
    from passerelle.console.health import check_console

    return _emit(
        "CONSOLE",
        check_console(a.config, time.time, a.stale, a.critical, a.request_age, a.timeout),
    )


def cmd_watch_run(a: argparse.Namespace) -> int:
    try:
        cfg = watch.load_config(a.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logger = setup_logging("watch", cfg.log_level)
    res = watch.run_once(cfg, time.time(), logger=logger)
    for u in res.started:
        print(f"started {u}")
    for u in res.failed:
        print(f"could not start {u}", file=sys.stderr)
    return 1 if res.failed else 0
