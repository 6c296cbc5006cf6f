"""``passerelle connwatch run|blocks|unblock IP|check-config FILE``."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from dataclasses import replace

from passerelle.config import check_config_command, load_for_command
from passerelle.connwatch.blocks import BlockError, iso, load_state
from passerelle.connwatch.guard import (
    DEFAULT_CONFIG,
    Deps,
    load_config,
    make_sink,
    run_once,
    unblock,
)
from passerelle.connwatch.sink import MariaDBSink, SinkError
from passerelle.isotime import parse_datetime
from passerelle.logsetup import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "connwatch",
        help="connection guard: SMTP connections per client, alert, block with expiry",
        description="Count SMTP connections per client over the last hour from the mail log; "
        "alert above alert_threshold, block above block_threshold (sendmail map, expiry).",
    )
    actions = p.add_subparsers(dest="connwatch_action", metavar="ACTION")
    actions.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )

    run = actions.add_parser(
        "run", parents=[common], help="one pass: count, alert, block, expire (the hourly timer)"
    )
    run.add_argument("--dry-run", action="store_true", help="count and decide, change nothing")
    run.add_argument("--now", help="pretend it is this ISO time (replaying an old log)")
    run.add_argument(
        "--jobs", type=int, help="processes scanning the logs (default: the config's jobs)"
    )
    run.set_defaults(func=cmd_run)

    mig = actions.add_parser(
        "migrate",
        parents=[common],
        help="create/upgrade the shared counts table (sink = mariadb; a user allowed to CREATE)",
    )
    src = mig.add_mutually_exclusive_group()
    src.add_argument(
        "--url",
        help="database URL with schema rights (default: the sink_url); visible in ps: "
        "prefer --url-file",
    )
    src.add_argument(
        "--url-file",
        metavar="PATH",
        help="read the database URL from this file (mode 0600), or from stdin with -",
    )
    mig.set_defaults(func=cmd_migrate)

    blocks = actions.add_parser("blocks", parents=[common], help="list the blocked clients")
    blocks.add_argument("--format", choices=("text", "json"), default="text")
    blocks.set_defaults(func=cmd_blocks)

    ub = actions.add_parser("unblock", parents=[common], help="remove one block and rebuild")
    ub.add_argument("ip", metavar="IP")
    ub.set_defaults(func=cmd_unblock)

    cc = actions.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    cc.add_argument("file", metavar="FILE")
    cc.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    return check_config_command(args.file, load_config)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    if args.now:
        try:
            now = parse_datetime(args.now).timestamp()
        except ValueError:
            print(f"error: --now: not an ISO time: {args.now!r}", file=sys.stderr)
            return 2
    else:
        now = time.time()
    if args.jobs is not None:
        if args.jobs < 1:
            print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
            return 2
        cfg = replace(cfg, jobs=args.jobs)
    logger = setup_logging("connwatch", cfg.log_level)
    try:
        sink = make_sink(cfg)
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = run_once(cfg, now, Deps(logger=logger, sink=sink), dry_run=args.dry_run)
    print(out.status)
    if args.dry_run:
        for d in out.decisions:
            print(f"{d.ip}\t{d.count}\t{d.action}")
    return out.exit_code


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    url = args.url or cfg.sink_url
    if getattr(args, "url_file", None):
        try:
            if args.url_file == "-":
                url = sys.stdin.readline().strip()
            else:
                with open(args.url_file, encoding="utf-8") as fh:
                    url = fh.readline().strip()
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not url:
        print("error: no sink_url in the config and no --url", file=sys.stderr)
        return 2
    try:
        sink = MariaDBSink(url, float(cfg.sink_timeout))
        try:
            before, after = sink.migrate()
        finally:
            sink.close()
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"schema version {before} -> {after}" if before != after else f"schema version {after}")
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    try:
        blocks = load_state(cfg.state)
    except BlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    items = sorted(blocks.values(), key=lambda b: b.expires)
    if args.format == "json":
        print(json.dumps([b.to_json() for b in items], indent=2))
        return 0
    if not items:
        print("no blocked client")
        return 0
    print(f"{'IP':<39} {'COUNT':>7}  {'SINCE':<20} {'EXPIRES':<20} REASON")
    for b in items:
        print(f"{b.ip:<39} {b.count:>7}  {iso(b.since):<20} {iso(b.expires):<20} {b.reason}")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    try:
        ip = str(ipaddress.ip_address(args.ip.removeprefix("IPv6:")))
    except ValueError:
        print(f"error: not an IP address: {args.ip!r}", file=sys.stderr)
        return 2
    logger = setup_logging("connwatch", cfg.log_level)
    try:
        done = unblock(cfg, ip, Deps(logger=logger))
    except BlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not done:
        print(f"{ip} is not blocked", file=sys.stderr)
        return 1
    print(f"{ip} unblocked")
    return 0
