"""The single `passerelle` command; each area registers its subcommands here.

Every area lives in its own subpackage and exposes ``register(subparsers)``; this module only
assembles them, so adding a subcommand never touches another area's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from passerelle import __version__

# Subpackages that provide ``register(subparsers)``. Order is the order in --help.
AREAS: tuple[str, ...] = (
    "passerelle.greylist.cli",
    "passerelle.spam.cli",
    "passerelle.antivirus.cli",
    "passerelle.routing.cli",
    "passerelle.connwatch.cli",
    "passerelle.supervision.cli",
    "passerelle.reports.cli",
    "passerelle.backup.cli",
    "passerelle.dkim.cli",
    "passerelle.console.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="passerelle",
        description="Passerelle mail gateway tools (milters, reports, operator commands).",
    )
    parser.add_argument("--version", action="version", version=f"passerelle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for area in AREAS:
        try:
            module = importlib.import_module(area)
        except ModuleNotFoundError as exc:
            if exc.name is not None and area.startswith(exc.name):
                continue  # area not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
