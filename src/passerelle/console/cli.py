"""``passerelle console serve|check-config``: the web console (``console.server``)."""

from __future__ import annotations

import argparse

from passerelle.console.server import add_commands


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("console", help="the web console: quarantine, rules, audit")
    add_commands(parser)
