"""``passerelle greylist``: milter, check-config, migrate, purge, whitelist, report."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from passerelle.config import check_config_command, load_for_command
from passerelle.durations import DurationError, parse_duration
from passerelle.greylist.config import GreylistConfig, load_config
from passerelle.greylist.stats import HISTORY_DAYS_MAX
from passerelle.greylist.store import SQLStore, open_store
from passerelle.greylist.whitelist import KINDS, WhitelistError, validate_entry

clock: Callable[[], float] = time.time  # the commands' time (tests fix it)
SINCE_DEFAULT = "24h"  # ``report``'s window without --since or --days


def _store(cfg: GreylistConfig) -> SQLStore:
    assert cfg.store_url is not None
    return open_store(cfg.store_url, max(cfg.store_timeout, 10.0))


def cmd_check_config(args: argparse.Namespace) -> int:
    return check_config_command(args.file, load_config)


def cmd_milter(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    if args.socket:
        cfg.socket = args.socket
    from passerelle.greylist.daemon import serve

    serve(cfg)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    store = _store(cfg)
    try:
        before, after = store.migrate()
    except Exception as exc:
        print(f"error: {cfg.store_url.redacted() if cfg.store_url else ''}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"schema version {before} -> {after}" if before != after else f"schema version {after}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    store = _store(cfg)
    now = clock()
    try:
        n = store.purge(now, cfg.purge_batch, stats_before=now - cfg.stats_ttl, pause=args.pause)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"purged {n['greylist']} triplets, {n['clients']} clients, {n['stats']} counters")
    return 0


def cmd_whitelist(args: argparse.Namespace) -> int:
    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    store = _store(cfg)
    try:
        if args.action == "list":
            for kind, entry, comment, created in store.whitelist_list():
                when = time.strftime("%Y-%m-%d", time.gmtime(created))  # UTC, as reports
                print(f"{kind}\t{entry}\t{when}\t{comment}")
            return 0
        if not args.entry:
            print("error: ENTRY is required", file=sys.stderr)
            return 2
        if args.action == "add":
            try:
                validate_entry(args.kind, args.entry)
            except WhitelistError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            new = store.whitelist_add(args.kind, args.entry, args.comment or "", clock())
            print(f"{'added' if new else 'updated'} {args.kind} {args.entry}")
            return 0
        if store.whitelist_remove(args.kind, args.entry):
            print(f"removed {args.kind} {args.entry}")
            return 0
        print(f"not found: {args.kind} {args.entry}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def history_days_arg(text: str) -> int:
    """``report --days``: a whole number of days from 1 to ``HISTORY_DAYS_MAX``."""
    digits = text.isascii() and text.isdigit() and len(text) <= 9  # int() of 5000 digits raises
    if not digits or not 1 <= int(text) <= HISTORY_DAYS_MAX:
        raise ValueError(
            f"expected a whole number of days from 1 to {HISTORY_DAYS_MAX}: {text[:12]!r}"
        )
    return int(text)


def cmd_report(args: argparse.Namespace) -> int:
    from passerelle.greylist.report import (
        build_report,
        format_history_text,
        format_json,
        format_text,
        read_history,
    )

    cfg = load_for_command(args.config, load_config)
    if cfg is None:
        return 1
    days = None
    if args.days is not None:
        try:
            days = history_days_arg(args.days)
        except ValueError as exc:
            print(f"error: --days: {exc}", file=sys.stderr)
            return 2
    try:
        since = parse_duration(SINCE_DEFAULT if args.since is None else args.since)
    except DurationError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 2
    store = _store(cfg)
    now = clock()
    try:
        if days is not None:
            rep = read_history(store, now, days)
        else:
            rep = build_report(store, now, since, cfg.min_delay)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "json":
        sys.stdout.write(format_json(rep))
    else:
        sys.stdout.write(format_history_text(rep) if days is not None else format_text(rep))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("greylist", help="greylisting milter and its tools")
    gs = p.add_subparsers(dest="greylist_command", metavar="ACTION")
    gs.required = True

    m = gs.add_parser("milter", help="run the greylist milter")
    m.add_argument("--config", required=True)
    m.add_argument("--socket", help="override greylist.socket (unix:/path, inet:port@host)")
    m.set_defaults(func=cmd_milter)

    c = gs.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    g = gs.add_parser("migrate", help="create or upgrade the store schema")
    g.add_argument("--config", required=True)
    g.set_defaults(func=cmd_migrate)

    u = gs.add_parser("purge", help="delete expired records in small batches")
    u.add_argument("--config", required=True)
    u.add_argument("--pause", type=float, default=0.05, help="seconds between batches")
    u.set_defaults(func=cmd_purge)

    w = gs.add_parser("whitelist", help="edit the whitelist table")
    w.add_argument("action", choices=("add", "remove", "list"))
    w.add_argument("entry", nargs="?")
    w.add_argument("--config", required=True)
    w.add_argument("--kind", choices=KINDS, default="client")
    w.add_argument("--comment", default="")
    w.set_defaults(func=cmd_whitelist)

    r = gs.add_parser("report", help="greylisting report")
    r.add_argument("--config", required=True)
    window = r.add_mutually_exclusive_group()
    window.add_argument("--since", help=f"summary of this window (default {SINCE_DEFAULT})")
    window.add_argument(
        "--days",
        metavar="N",
        help=f"the last N UTC days day by day instead, today included (1 to {HISTORY_DAYS_MAX})",
    )
    r.add_argument("--format", choices=("text", "json"), default="text")
    r.set_defaults(func=cmd_report)
