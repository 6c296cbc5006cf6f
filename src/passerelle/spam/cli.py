"""``passerelle spam``: milter, check-config, learn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from passerelle.config import ConfigError, check_config_command
from passerelle.spam.config import load_config


def _check_config(args: argparse.Namespace) -> int:
    return check_config_command(args.file, load_config)


def _milter(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    from passerelle.spam.milter import serve  # needs pymilter

    serve(config)
    return 0


def _learn(args: argparse.Namespace) -> int:
    from passerelle.spam.learn import learn

    status = 0
    for kind in ("ham", "spam"):
        for source in getattr(args, kind) or []:
            path = Path(source)
            if not path.exists():
                print(f"{source}: not found", file=sys.stderr)
                status = 1
                continue
            total, failed = learn(kind, path, args.sa_learn, args.batch, args.sa_learn_arg)
            print(f"{source}: {total} messages learned as {kind}, {failed} failed")
            if failed:
                status = 1
    return status


def _learn_mailbox(args: argparse.Namespace) -> int:
    from passerelle.spam.learn import learn_messages
    from passerelle.spam.learnbox import LockBusy, learn_mailbox, parse_networks

    try:
        networks = parse_networks(args.trusted)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    def learner(kind: str, messages: list[bytes]) -> bool:
        _total, failed = learn_messages(
            kind, messages, args.sa_learn, extra_args=args.sa_learn_arg, as_user=args.as_user
        )
        return failed == 0

    status = 0
    for kind in ("spam", "ham"):
        box = getattr(args, kind)
        if not box:
            continue
        try:
            result = learn_mailbox(kind, Path(box), networks, learner)
        except (LockBusy, OSError) as exc:
            print(f"{box}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{box}: {result.summary()}")
        if result.failed:
            status = 1
    return status


def register(sub: Any) -> None:
    p = sub.add_parser("spam", help="spam marking milter (SpamAssassin) and Bayes learning")
    ssub = p.add_subparsers(dest="spam_command", metavar="SUBCOMMAND")
    ssub.required = True

    m = ssub.add_parser("milter", help="run the spam marking milter")
    m.add_argument("--config", required=True, help="TOML config file")
    m.set_defaults(func=_milter)

    c = ssub.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    c.add_argument("file")
    c.set_defaults(func=_check_config)

    lp = ssub.add_parser("learn", help="teach SpamAssassin's Bayes from ham/spam folders")
    lp.add_argument("--ham", action="append", metavar="DIR", help="mbox file or Maildir/dir")
    lp.add_argument("--spam", action="append", metavar="DIR", help="mbox file or Maildir/dir")
    lp.add_argument("--sa-learn", default="sa-learn", metavar="PATH", help="sa-learn binary")
    lp.add_argument("--batch", type=int, default=200, help="messages per sa-learn run")
    lp.add_argument(
        "--sa-learn-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for sa-learn (repeatable), e.g. --sa-learn-arg=--dbpath=/x",
    )

    def _learn_checked(args: argparse.Namespace) -> int:
        if not args.ham and not args.spam:
            lp.error("give --ham DIR and/or --spam DIR")
        return _learn(args)

    lp.set_defaults(func=_learn_checked)

    mb = ssub.add_parser(
        "learn-mailbox",
        help="learn from the mboxes users forward missed spam / wrong spam marks to",
        description=(
            "Take each mbox away under its dot-lock, keep the forwards whose client (topmost "
            "Received) is in a trusted network, learn their attached messages (or the "
            "forward itself), and remove the mbox once learned; kept for the next run if "
            "sa-learn fails."
        ),
    )
    mb.add_argument("--spam", metavar="MBOX", help="mbox of forwarded missed spam")
    mb.add_argument("--ham", metavar="MBOX", help="mbox of forwarded ham marked as spam")
    mb.add_argument(
        "--trusted",
        action="append",
        default=[],
        metavar="CIDR",
        help="network whose clients may teach Bayes (repeatable; none = learn nothing)",
    )
    mb.add_argument("--as-user", metavar="USER", help="run sa-learn as USER (runuser)")
    mb.add_argument("--sa-learn", default="sa-learn", metavar="PATH", help="sa-learn binary")
    mb.add_argument("--sa-learn-arg", action="append", default=[], metavar="ARG")

    def _mailbox_checked(args: argparse.Namespace) -> int:
        if not args.ham and not args.spam:
            mb.error("give --spam MBOX and/or --ham MBOX")
        return _learn_mailbox(args)

    mb.set_defaults(func=_mailbox_checked)
