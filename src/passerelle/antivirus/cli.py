"""``passerelle antivirus``, ``passerelle quarantine`` and ``passerelle outbreak``."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import os
import sys
from dataclasses import asdict
from typing import Any

from passerelle.config import ConfigError, check_config_command
from passerelle.durations import DurationError, parse_duration

CONFIG_ENV = "PASSERELLE_ANTIVIRUS_CONFIG"


def _default_config() -> str:
    from passerelle.antivirus.config import DEFAULT_PATH

    return os.environ.get(CONFIG_ENV, DEFAULT_PATH)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help=f"config file (default ${CONFIG_ENV} or /etc/passerelle/antivirus.toml)",
    )
    p.add_argument(
        "--writer",
        default="passerelle",
        help="the milter's user: quarantine files it owns are trusted (default passerelle)",
    )
    return p


def _operator() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _load(args: argparse.Namespace) -> Any:
    from passerelle.antivirus.config import load_config

    return load_config(args.config or _default_config())


def _setup_log(name: str, cfg: Any = None) -> None:
    from passerelle.logsetup import setup_logging

    setup_logging(name, cfg.log_level if cfg else "info", stderr=False)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- antivirus ---------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from passerelle.antivirus.config import load_config

    return check_config_command(args.file, load_config)


def cmd_milter(args: argparse.Namespace) -> int:
    from passerelle.logsetup import setup_logging

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    setup_logging("antivirus", cfg.log_level)
    from passerelle.antivirus.milter import serve

    serve(cfg)
    return 0


# -- quarantine --------------------------------------------------------------------------
def _quarantine(args: argparse.Namespace) -> Any:
    from passerelle.antivirus.quarantine import Quarantine

    cfg = _load(args)
    _setup_log("quarantine", cfg)
    return Quarantine(cfg.quarantine_dir, release_command=cfg.release_command, writer=args.writer)


def _qcall(args: argparse.Namespace, fn: Any) -> int:
    from passerelle.antivirus.quarantine import QuarantineError

    try:
        return int(fn(_quarantine(args)) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (QuarantineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_q_list(args: argparse.Namespace) -> int:
    def run(q: Any) -> int:
        items = list(q.items())
        if args.json:
            print(json.dumps([asdict(i) for i in items], indent=1))
            return 0
        for i in items:
            flag = "released" if i.released else "held"
            print(
                f"{i.id}  {_when(i.time)}  {flag:8}  {i.direction:8}  {i.reason}: {i.detail}"
                f"  from=<{i.sender}> to={','.join(i.recipients)}  {i.size}B"
            )
        print(f"{len(items)} item(s)", file=sys.stderr)
        return 0

    return _qcall(args, run)


def cmd_q_show(args: argparse.Namespace) -> int:
    def run(q: Any) -> int:
        item = q.get(args.id)
        print(json.dumps(asdict(item), indent=1))
        if args.message:
            sys.stdout.flush()
            sys.stdout.buffer.write(q.read_message(args.id))
        return 0

    return _qcall(args, run)


def cmd_q_release(args: argparse.Namespace) -> int:
    def run(q: Any) -> int:
        item = q.release(args.id, by=_operator())
        print(f"{item.id}: released to {', '.join(item.recipients)}")
        return 0

    return _qcall(args, run)


def cmd_q_delete(args: argparse.Namespace) -> int:
    def run(q: Any) -> int:
        q.delete(args.id, by=_operator())
        print(f"{args.id}: deleted")
        return 0

    return _qcall(args, run)


def cmd_q_purge(args: argparse.Namespace) -> int:
    try:
        age = parse_duration(args.older_than)
    except DurationError as exc:
        print(f"--older-than: {exc}", file=sys.stderr)
        return 2

    def run(q: Any) -> int:
        gone = q.purge(age, by=_operator())
        print(f"purged {len(gone)} item(s)")
        return 0

    return _qcall(args, run)


# -- outbreak ----------------------------------------------------------------------------
def _outbreak(args: argparse.Namespace) -> tuple[Any, Any]:
    from passerelle.antivirus.outbreak import OutbreakStore

    cfg = _load(args)
    _setup_log("outbreak", cfg)
    return cfg, OutbreakStore(cfg.outbreak_state)


def _release_held(cfg: Any, on: bool, writer: str = "passerelle") -> int:
    from passerelle.antivirus.clamd import ClamdClient
    from passerelle.antivirus.outbreak import release_held
    from passerelle.antivirus.quarantine import Quarantine

    q = Quarantine(cfg.quarantine_dir, release_command=cfg.release_command, writer=writer)
    scanner = ClamdClient(cfg.clamd, cfg.connect_timeout, cfg.timeout)
    out = release_held(q, scanner, on, cfg.signature_dir)
    print(
        f"released {len(out.released)}, kept infected {len(out.kept_infected)}, "
        f"waiting for new signatures {len(out.kept_waiting)}, errors {len(out.errors)}"
    )
    for e in out.errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if out.errors else 0


def _ocall(args: argparse.Namespace, fn: Any) -> int:
    try:
        cfg, store = _outbreak(args)
        return int(fn(cfg, store) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_o_on(args: argparse.Namespace) -> int:
    def run(cfg: Any, store: Any) -> int:
        store.set(True, by=_operator(), reason=args.reason or "")
        print("outbreak mode: on")
        return 0

    return _ocall(args, run)


def cmd_o_off(args: argparse.Namespace) -> int:
    def run(cfg: Any, store: Any) -> int:
        store.set(False, by=_operator(), reason=args.reason or "")
        print("outbreak mode: off")
        return 0 if args.no_release else _release_held(cfg, False, args.writer)

    return _ocall(args, run)


def cmd_o_status(args: argparse.Namespace) -> int:
    def run(cfg: Any, store: Any) -> int:
        st = store.read()
        since = f" since {_when(st.since)} by {st.by}" if st.since else ""
        why = f" ({st.reason})" if st.reason else ""
        print(f"outbreak mode: {'on' if st.on else 'off'}{since}{why}")
        return 0

    return _ocall(args, run)


def cmd_o_release_held(args: argparse.Namespace) -> int:
    return _ocall(args, lambda cfg, store: _release_held(cfg, store.read().on, args.writer))


def register(sub: Any) -> None:
    common = _common()
    av = sub.add_parser("antivirus", help="ClamAV content milter")
    avs = av.add_subparsers(dest="antivirus_command", metavar="ACTION")
    avs.required = True
    p = avs.add_parser("milter", parents=[common], help="run the content milter")
    p.set_defaults(func=cmd_milter)
    p = avs.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    qp = sub.add_parser("quarantine", help="messages held by the content milter")
    qs = qp.add_subparsers(dest="quarantine_command", metavar="ACTION")
    qs.required = True
    p = qs.add_parser("list", parents=[common], help="list quarantined messages")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_q_list)
    p = qs.add_parser("show", parents=[common], help="metadata (and message) of one item")
    p.add_argument("id")
    p.add_argument("--message", action="store_true", help="also print the message")
    p.set_defaults(func=cmd_q_show)
    p = qs.add_parser("release", parents=[common], help="deliver to the original recipients")
    p.add_argument("id")
    p.set_defaults(func=cmd_q_release)
    p = qs.add_parser("delete", parents=[common], help="delete one item")
    p.add_argument("id")
    p.set_defaults(func=cmd_q_delete)
    p = qs.add_parser("purge", parents=[common], help="delete items older than a duration")
    p.add_argument("--older-than", required=True, help="e.g. 30d")
    p.set_defaults(func=cmd_q_purge)

    op = sub.add_parser("outbreak", help="outbreak mode (hold every attachment)")
    os_ = op.add_subparsers(dest="outbreak_command", metavar="ACTION")
    os_.required = True
    p = os_.add_parser("on", parents=[common], help="hold every message with an attachment")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_o_on)
    p = os_.add_parser("off", parents=[common], help="stop holding; rescan and release held")
    p.add_argument("--reason", default="")
    p.add_argument("--no-release", action="store_true", help="do not rescan held messages")
    p.set_defaults(func=cmd_o_off)
    p = os_.add_parser("status", parents=[common], help="show the mode")
    p.set_defaults(func=cmd_o_status)
    p = os_.add_parser(
        "release-held",
        parents=[common],
        help="rescan held messages if signatures changed (or mode off)",
    )
    p.set_defaults(func=cmd_o_release_held)


logging.getLogger("passerelle.antivirus").addHandler(logging.NullHandler())
