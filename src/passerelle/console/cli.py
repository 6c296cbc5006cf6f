"""``passerelle console serve|check-config|gateway-sync|check-gateway-config``: the web console
(``console.server``) and the gateway's side of it (``console.gateway_sync``).

The server module (and what it imports) is loaded only when a console command runs: every
``passerelle`` command builds this parser, the supervision's checks included.
"""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "/etc/passerelle/console.toml"
DEFAULT_GATEWAY_CONFIG = "/etc/passerelle/console-gateway.toml"


def _serve(args: argparse.Namespace) -> int:
    from passerelle.console.server import run_serve

    return int(run_serve(args) or 0)


def _check_config(args: argparse.Namespace) -> int:
    from passerelle.config import check_config_command
    from passerelle.console.server import load_config

    return int(check_config_command(args.file, load_config) or 0)


def _check_gateway_config(args: argparse.Namespace) -> int:
    from passerelle.config import check_config_command
    from passerelle.console.gateway_sync import load_config

    return int(check_config_command(args.file, load_config) or 0)


def _gateway_sync(args: argparse.Namespace) -> int:
    import sys

    from passerelle.config import ConfigError
    from passerelle.console.gateway_sync import run_sync

    try:
        return run_sync(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:  # the quarantine or the database cannot be reached
        print(f"error: {exc}", file=sys.stderr)
        return 1


def add_commands(parser: argparse.ArgumentParser) -> None:
    area = parser.add_subparsers(dest="console_command", metavar="SUBCOMMAND")
    area.required = True
    p = area.add_parser("serve", help="serve the web console (behind Apache with TLS)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.set_defaults(func=_serve)
    p = area.add_parser("check-config", help="validate a config file (for Ansible validate:)")
    p.add_argument("file")
    p.set_defaults(func=_check_config)
    p = area.add_parser(
        "gateway-sync",
        help="on a gateway: index its quarantine, carry out the console's requests (one pass)",
    )
    p.add_argument(
        "--config", default=DEFAULT_GATEWAY_CONFIG, help=f"default {DEFAULT_GATEWAY_CONFIG}"
    )
    p.set_defaults(func=_gateway_sync)
    p = area.add_parser(
        "check-gateway-config",
        help="validate a gateway-sync config file (for Ansible validate:)",
    )
    p.add_argument("file")
    p.set_defaults(func=_check_gateway_config)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("console", help="the web console: quarantine, rules, audit")
    add_commands(parser)
