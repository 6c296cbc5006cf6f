"""``passerelle console serve|check-config``: the web console (``console.server``).

The server module (and what it imports) is loaded only when a console command runs: every
``passerelle`` command builds this parser, the supervision's checks included.
"""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "/etc/passerelle/console.toml"


def _serve(args: argparse.Namespace) -> int:
    from passerelle.console.server import run_serve

    return int(run_serve(args) or 0)


def _check_config(args: argparse.Namespace) -> int:
    from passerelle.config import check_config_command
    from passerelle.console.server import load_config

    return int(check_config_command(args.file, load_config) or 0)


def add_commands(parser: argparse.ArgumentParser) -> None:
    area = parser.add_subparsers(dest="console_command", metavar="SUBCOMMAND")
    area.required = True
    p = area.add_parser("serve", help="serve the web console (behind Apache with TLS)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.set_defaults(func=_serve)
    p = area.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    p.add_argument("file")
    p.set_defaults(func=_check_config)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("console", help="the web console: quarantine, rules, audit")
    add_commands(parser)
