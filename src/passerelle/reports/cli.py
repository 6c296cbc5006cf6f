"""``passerelle metrics write|show``, ``passerelle status``, ``passerelle report daily`` and
``passerelle ops check-config FILE`` (all read ``/etc/passerelle/ops.toml``)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from passerelle.config import check_config_command, load_for_command
from passerelle.reports import metrics, report, status
from passerelle.reports.config import DEFAULT_CONFIG, OpsConfig, load_config, parse_config


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        help=f"config file (default {DEFAULT_CONFIG}; built-in defaults when it is missing)",
    )
    return common


def register(sub: argparse._SubParsersAction) -> None:
    common = _common()
    m = sub.add_parser(
        "metrics",
        help="Prometheus metrics (node_exporter textfile): queue, greylist, spam, viruses",
    )
    ma = m.add_subparsers(dest="metrics_action", metavar="ACTION")
    ma.required = True
    w = ma.add_parser(
        "write", parents=[common], help="read the new log lines, write the .prom file (timer)"
    )
    w.add_argument("--textfile-dir", help="write there instead of the config's textfile_dir")
    w.set_defaults(func=cmd_metrics_write)
    sh = ma.add_parser("show", parents=[common], help="print the metrics, change nothing")
    sh.set_defaults(func=cmd_metrics_show)

    st = sub.add_parser(
        "status", parents=[common], help="one screen: daemons, queue, signatures, today's counts"
    )
    st.set_defaults(func=cmd_status)

    r = sub.add_parser("report", help="reports from this host's mail log")
    ra = r.add_subparsers(dest="report_action", metavar="ACTION")
    ra.required = True
    d = ra.add_parser(
        "daily", parents=[common], help="HTML report of one day (kept on disk, mailed)"
    )
    d.add_argument("--date", help="YYYY-MM-DD (default: yesterday)")
    d.add_argument("--output", metavar="DIR", help="directory (default: the config's output_dir)")
    d.add_argument(
        "--mail", metavar="ADDR", action="append", help="mail it to ADDR (instead of mail_to)"
    )
    d.add_argument("--no-mail", action="store_true", help="do not mail it")
    d.set_defaults(func=cmd_report_daily)

    o = sub.add_parser("ops", help="the ops.toml config (metrics, status, report)")
    oa = o.add_subparsers(dest="ops_action", metavar="ACTION")
    oa.required = True
    cc = oa.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    cc.add_argument("file", metavar="FILE")
    cc.set_defaults(func=lambda a: check_config_command(a.file, load_config))


def _load(path: str | None) -> OpsConfig | None:
    if path is None and not Path(DEFAULT_CONFIG).exists():
        return parse_config({})
    return load_for_command(path or DEFAULT_CONFIG, load_config)


def cmd_metrics_write(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    if args.textfile_dir:
        from dataclasses import replace

        cfg = replace(cfg, metrics=replace(cfg.metrics, textfile_dir=args.textfile_dir))
    try:
        run, path = metrics.collect_and_write(cfg, time.time())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in run.errors:
        print(f"warning: {e}", file=sys.stderr)
    print(f"{path}: {run.read} log bytes read, queue {sum(run.queues.values())}")
    return 0


def cmd_metrics_show(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    sys.stdout.write(metrics.collect(cfg, time.time()).text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    now = time.time()
    st = status.assess(status.probe(cfg, now), tz=None)
    sys.stdout.write(st.text())
    return st.exit_code


def cmd_report_daily(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    now = time.time()
    if args.date:
        try:
            day = date.fromisoformat(args.date)
        except ValueError:
            print(f"error: --date: not a date (YYYY-MM-DD): {args.date!r}", file=sys.stderr)
            return 2
    else:
        day = datetime.fromtimestamp(now).date() - timedelta(days=1)
    tally, sessions, start, end, notes = report.collect_day(cfg, day, now)
    rep = report.build(tally, sessions, cfg.hostname, day.isoformat(), start, end, cfg.report)
    rep.notes = notes
    html_text = report.render_html(rep, generated=now)
    mail_to = [] if args.no_mail else args.mail
    try:
        done = report.deliver(cfg, rep, html_text, args.output, mail_to, now=now)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in done.errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"{done.path}" + (f" mailed to {', '.join(done.mailed)}" if done.mailed else ""))
    return 1 if done.errors else 0
