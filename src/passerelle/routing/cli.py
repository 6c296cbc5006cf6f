"""``passerelle route``: where mail for an address would go, and why."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
from typing import Any

from passerelle import sdnotify
from passerelle.config import ConfigError, check_config_command
from passerelle.routing.config import load_config
from passerelle.routing.route import explain

DEFAULT_CONFIG = "/etc/passerelle/routing.toml"


def _on_gateway(args: argparse.Namespace) -> int:
    """Ask the gateway itself: its config, its view of the directory."""
    argv = shlex.split(args.connect.format(host=args.gateway))
    argv += ["passerelle", "route", args.words[0]]
    if args.json:
        argv.append("--json")
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"route: cannot run {shlex.join(argv)}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def _route(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words[0] == "check-config":
        if len(words) != 2:
            print("usage: passerelle route check-config FILE", file=sys.stderr)
            return 2
        return check_config_command(words[1], load_config)
    if words[0] == "socketmap":
        if len(words) != 1:
            print(
                "usage: passerelle route socketmap [--config FILE] [--socket PATH]", file=sys.stderr
            )
            return 2
        return _socketmap(args)
    if len(words) != 1:
        print("usage: passerelle route ADDRESS [--gateway HOST]", file=sys.stderr)
        return 2
    if args.gateway:
        return _on_gateway(args)
    try:
        config = load_config(args.config)
        lookup: Any
        if config.ldap is not None:
            from passerelle.routing.directory import make_lookup

            lookup = make_lookup(config.ldap)
        else:
            lookup = _no_directory
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    decision = explain(words[0], config, lookup)
    if args.json:
        print(json.dumps(decision.as_dict(), indent=2))
    else:
        print(decision.render())
    return 0


def _socketmap(args: argparse.Namespace) -> int:
    """Serve sendmail's ldap_routing maps from the directory, with the cache."""
    import logging

    from passerelle.routing.cache import CachedLookup
    from passerelle.routing.socketmap import Answerer, SocketmapServer

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(name)s: %(levelname)s %(message)s",
    )
    log = logging.getLogger("passerelle.route.socketmap")
    try:
        config = load_config(args.config)
        if config.ldap is None:
            raise ConfigError("routing.ldap", "no LDAP-routed domain: nothing to serve")
        from passerelle.routing.directory import make_lookup

        directory = make_lookup(config.ldap)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sm = config.socketmap
    cached = CachedLookup(directory, sm.positive_ttl, sm.negative_ttl, sm.max_entries)
    path = args.socket or sm.socket
    server = SocketmapServer(path, Answerer(cached))
    log.info(
        "serving ldapmh/ldapmra on %s (directory %s; cache %ss found, %ss not found, %s addresses)",
        path,
        config.ldap.uri,
        sm.positive_ttl,
        sm.negative_ttl,
        sm.max_entries,
    )
    signal.signal(signal.SIGTERM, _stop)
    sdnotify.ready()  # the socket listens (bound by SocketmapServer): sendmail may ask
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping")
    finally:
        server.server_close()  # removes the socket: sendmail sees "no daemon" at once
    return 0


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _no_directory(address: str) -> list[Any]:
    raise AssertionError("no LDAP-routed domain: the directory is never asked")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "route",
        help="where mail for an address would go, and why (mailertable or LDAP)",
        description=(
            "Explain a gateway's routing of ADDRESS with the gateway's own configuration "
            f"({DEFAULT_CONFIG}, rendered by the sendmail role) and, for LDAP-routed "
            "domains, a real directory lookup. 'passerelle route check-config FILE' checks "
            "a configuration file; 'passerelle route socketmap' serves sendmail's ldap_routing "
            "maps (socket map protocol) from the directory with a short cache."
        ),
    )
    p.add_argument("words", nargs="+", metavar="ADDRESS", help="user@domain")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    p.add_argument(
        "--gateway",
        metavar="HOST",
        help="ask that gateway instead (runs 'passerelle route' there with --connect)",
    )
    p.add_argument(
        "--connect",
        default="ssh {host}",
        help="command prefix reaching --gateway, {host} replaced (default: 'ssh {host}'; "
        "the lab: 'podman exec lab-{host}')",
    )
    p.add_argument("--json", action="store_true", help="machine-readable answer")
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="socketmap: the unix socket to listen on (default: routing.socketmap.socket)",
    )
    p.add_argument("--verbose", action="store_true", help="socketmap: log every lookup")
    p.set_defaults(func=_route)
