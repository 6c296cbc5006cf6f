"""``passerelle dkim txt``: the DNS TXT record a DKIM signing key needs.

Reads the private key (PEM; a file, or ``-`` for standard input), checks it (RSA of 1024 bits
or more, or Ed25519), and prints the record to publish in the domain's zone:
``<selector>._domainkey.<domain>. IN TXT "v=DKIM1; k=rsa; p=..."``, the value cut into strings
of 255 characters. ``--format unbound`` prints it as an unbound ``local-data`` value instead.
A bad key or name: a one-line error on standard error, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from passerelle.dkim.keys import (
    DkimKeyError,
    load_private_key,
    selector_problem,
    txt_record,
    unbound_local_data,
)
from passerelle.routing.rules import hostname_problem


def record_for(domain: str, selector: str, pem: str, fmt: str = "zone") -> str:
    """The record of ``pem`` for ``domain`` and ``selector``; ``DkimKeyError`` when any is bad."""
    problem = hostname_problem(domain) or selector_problem(selector)
    if problem:
        raise DkimKeyError(problem)
    key = load_private_key(pem)
    if fmt == "unbound":
        return unbound_local_data(domain, selector, key)
    return txt_record(domain, selector, key)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="ascii", errors="replace")


def _txt(args: argparse.Namespace) -> int:
    try:
        pem = _read(args.key)
    except OSError as exc:
        print(f"dkim txt: cannot read {args.key}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        print(record_for(args.domain, args.selector, pem, args.format))
    except DkimKeyError as exc:
        print(f"dkim txt: {args.key}: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dkim", help="DKIM signing keys: the DNS record a key needs")
    area = parser.add_subparsers(dest="dkim_command", metavar="SUBCOMMAND")
    area.required = True
    txt = area.add_parser(
        "txt",
        help="print the DNS TXT record of a DKIM private key",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    txt.add_argument("key", help="the private key, PEM (RSA or Ed25519), or - for stdin")
    txt.add_argument("--domain", "-d", required=True, help="the signing domain (d=)")
    txt.add_argument("--selector", "-s", required=True, help="the selector (s=)")
    txt.add_argument(
        "--format",
        choices=("zone", "unbound"),
        default="zone",
        help="zone: a zone-file line (default); unbound: an unbound local-data value",
    )
    txt.set_defaults(func=_txt)
