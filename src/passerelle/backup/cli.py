"""``passerelle backup create|list|verify|restore|prune|check-config``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from passerelle.config import ConfigError, check_config_command

CONFIG_HELP = "config file (default /etc/passerelle/backup.toml)"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _run(args: argparse.Namespace, fn: Any) -> int:
    """Load the config, run ``fn(cfg)``; every expected failure is one line on stderr."""
    from passerelle.backup.config import DEFAULT_PATH, load_config
    from passerelle.backup.engine import BackupError

    try:
        cfg = load_config(args.config or DEFAULT_PATH)
        return int(fn(cfg) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def cmd_create(args: argparse.Namespace) -> int:
    from passerelle.backup import engine

    def run(cfg: Any) -> int:
        m = engine.create(cfg)
        print(f"backup {m.name} made in {cfg.directory}/{m.name}")
        for p in m.parts:
            print(f"  {p.label}: {p.summary()}, {_size(p.size)}")
        if args.prune:
            for name in engine.prune(cfg):
                print(f"pruned {name}")
        return 0

    return _run(args, run)


def cmd_list(args: argparse.Namespace) -> int:
    from passerelle.backup import engine

    def run(cfg: Any) -> int:
        listing = engine.scan(cfg.directory)
        if args.json:
            print(
                json.dumps(
                    {
                        "complete": [m.to_dict() for m in listing.complete],
                        "broken": listing.broken,
                        "unfinished": listing.partial,
                    },
                    indent=1,
                )
            )
            return 0
        now = time.time()
        for m in listing.complete:
            age = (now - m.created) / 3600
            total = sum(p.size for p in m.parts)
            print(f"{m.name}  {_when(m.created)}  {age:6.1f} h ago  {m.host}  {_size(total)}")
            for p in m.parts:
                print(f"    {p.label}: {p.summary()}")
        for name, why in sorted(listing.broken.items()):
            print(f"{name}  damaged: {why}")
        for name in listing.partial:
            print(f"{name}  unfinished (a run in progress, or one that crashed)")
        print(f"{len(listing.complete)} complete backup(s) in {cfg.directory}", file=sys.stderr)
        return 0

    return _run(args, run)


def cmd_verify(args: argparse.Namespace) -> int:
    from passerelle.backup import engine

    def run(cfg: Any) -> int:
        folder, m = engine.find(cfg, args.name)
        problems = engine.verify(folder, m)
        for line in problems:
            print(f"  {line}")
        if problems:
            print(f"backup {m.name}: DAMAGED ({len(problems)} problem(s))")
            return 1
        print(f"backup {m.name}: OK ({len(m.parts)} part(s) read back and matching the manifest)")
        return 0

    return _run(args, run)


def cmd_restore(args: argparse.Namespace) -> int:
    from passerelle.backup import engine

    req = engine.RestoreRequest(
        name=args.name,
        parts=tuple(args.part or ()),
        replace=args.replace,
        other_host=args.other_host,
        dry_run=args.dry_run,
    )

    def run(cfg: Any) -> int:
        m, lines = engine.restore(cfg, req)
        verb = "would restore" if args.dry_run else "restored"
        print(f"backup {m.name} of {m.host} ({_when(m.created)}) checked; {verb}:")
        for line in lines:
            print(f"  {line}")
        return 0

    return _run(args, run)


def cmd_prune(args: argparse.Namespace) -> int:
    from passerelle.backup import engine

    def run(cfg: Any) -> int:
        gone = engine.prune(cfg, dry_run=args.dry_run)
        for name in gone:
            print(f"{'would prune' if args.dry_run else 'pruned'} {name}")
        print(f"{len(gone)} backup(s) {'to prune' if args.dry_run else 'pruned'}", file=sys.stderr)
        return 0

    return _run(args, run)


def cmd_check_config(args: argparse.Namespace) -> int:
    from passerelle.backup.config import load_config

    return check_config_command(args.file, load_config)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="back up this host (databases, quarantine, /etc/passerelle) and restore it",
        description=(
            "Backups of the shared database (database host) and of the quarantine, "
            "/etc/passerelle and an embedded greylist store (gateways, relays)."
        ),
    )
    acts = p.add_subparsers(dest="backup_action", metavar="ACTION")
    acts.required = True

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help_, description=help_)
        a.add_argument("-c", "--config", default=None, help=CONFIG_HELP)
        return a

    a = add("create", "make a backup now")
    a.add_argument("--prune", action="store_true", help="then prune the old ones")
    a.set_defaults(func=cmd_create)
    a = add("list", "the backups, their parts and counts")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_list)
    a = add("verify", "read a backup back and check it against its manifest")
    a.add_argument("name", nargs="?", default="latest", help="backup name (default latest)")
    a.set_defaults(func=cmd_verify)
    a = add(
        "restore",
        "check a backup, then restore it: missing databases created, files added "
        "(never overwritten)",
    )
    a.add_argument("name", nargs="?", default="latest", help="backup name (default latest)")
    a.add_argument(
        "--part",
        action="append",
        help="only this part (kind:name, a name such as quarantine or greylist, or a kind); repeat",
    )
    a.add_argument(
        "--replace",
        action="store_true",
        help="replace a database or store that holds rows (what it gained since is lost)",
    )
    a.add_argument(
        "--other-host", action="store_true", help="restore a backup made on another host"
    )
    a.add_argument("--dry-run", action="store_true", help="check and say what would be done")
    a.set_defaults(func=cmd_restore)
    a = add("prune", "delete backups beyond the retention (keep_days)")
    a.add_argument("--dry-run", action="store_true")
    a.set_defaults(func=cmd_prune)
    cc = acts.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_check_config)
