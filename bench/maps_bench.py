#!/usr/bin/env python3
"""Benchmark: render and build the sendmail maps for a large inventory.

Generates 10,000 managed domains and 50,000 blacklist entries (IPv4 addresses, /24s,
/16s, domains, a few IPv6), then times:

1. filters: ``passerelle_domains`` validation, mailertable, relay domains, access map;
2. module render + write: ``sendmail_map`` (text only) for mailertable, access and
   relay-domains, through the module's ``main()``;
3. makemap build: ``sendmail_map`` again with ``build: true`` (text unchanged, database
   missing -> only ``makemap`` runs), if makemap exists;
4. idempotent rerun (nothing changes, nothing runs) and an add-a-domain rerun.

Usage: .venv/bin/python bench/maps_bench.py [--makemap /usr/sbin/makemap] [--keep DIR]
Target: total of phases 1-3 under 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import ipaddress
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.module_utils.testing import patch_module_args

ROOT = Path(__file__).resolve().parents[1]
N_DOMAINS = 10_000
N_BLACKLIST = 50_000
TARGET_S = 5.0


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_domains(rng: random.Random, count: int) -> list[dict[str, Any]]:
    domains: list[dict[str, Any]] = []
    for i in range(count):
        name = f"dom{i}.client{i % 97}.example.org"
        kind = i % 10
        if kind < 6:
            item: dict[str, Any] = {"name": name, "server": f"mailstore{i % 20}.lab.example.net"}
        elif kind < 8:
            item = {"name": name, "routing": "static", "server": f"[10.20.{i % 250}.{i % 200 + 1}]"}
        elif kind < 9:
            item = {"name": name, "routing": "ldap"}
        else:
            item = {"name": name, "server": f"mx{i % 7}.example.net", "mailer": "smtp"}
        domains.append(item)
    rng.shuffle(domains)
    return domains


def make_blacklist(rng: random.Random, count: int) -> list[Any]:
    n_ip = count * 40 // 100
    n_24 = count * 30 // 100
    n_16 = count * 10 // 100
    n_v6 = count // 100
    n_dom = count - n_ip - n_24 - n_16 - n_v6
    base_ip = int(ipaddress.IPv4Address("16.0.0.0"))
    base_24 = int(ipaddress.IPv4Address("24.0.0.0"))
    base_16 = int(ipaddress.IPv4Address("32.0.0.0"))
    items: list[Any] = []
    items += [str(ipaddress.IPv4Address(base_ip + k)) for k in rng.sample(range(1 << 22), n_ip)]
    items += [
        f"{ipaddress.IPv4Address(base_24 + (k << 8))}/24" for k in rng.sample(range(1 << 16), n_24)
    ]
    items += [
        f"{ipaddress.IPv4Address(base_16 + (k << 16))}/16" for k in rng.sample(range(1 << 13), n_16)
    ]
    items += [f"2001:db8:{k:x}::{k + 1:x}" for k in range(n_v6)]
    items += [f"spam{k}.bulk{k % 89}.example.com" for k in range(n_dom)]
    # a tenth as dicts with an explicit error
    for index in range(0, len(items), 10):
        items[index] = {"entry": items[index], "action": "error", "message": "554 5.7.1 Blocked"}
    rng.shuffle(items)
    return items


def run_module(sendmail_map: ModuleType, args: dict[str, Any]) -> dict[str, Any]:
    out = io.StringIO()
    with (
        patch_module_args(args),
        contextlib.redirect_stdout(out),
        contextlib.suppress(SystemExit),
    ):
        sendmail_map.main()
    result: dict[str, Any] = json.loads(out.getvalue())
    if result.get("failed"):
        raise RuntimeError(f"sendmail_map failed: {result.get('msg')}")
    return result


def timed(label: str, func: Callable[[], Any], phases: list[tuple[str, float]]) -> Any:
    start = time.perf_counter()
    value = func()
    elapsed = time.perf_counter() - start
    phases.append((label, elapsed))
    print(f"  {label:<48} {elapsed:7.3f} s", flush=True)
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--makemap", default="/usr/sbin/makemap")
    parser.add_argument("--keep", help="write the maps into this directory and keep them")
    parser.add_argument("--seed", type=int, default=3)
    opts = parser.parse_args()

    filters = load("passerelle_maps", ROOT / "filter_plugins" / "passerelle_maps.py")
    sendmail_map = load("sendmail_map", ROOT / "library" / "sendmail_map.py")
    rng = random.Random(opts.seed)
    domains = make_domains(rng, N_DOMAINS)
    blacklist = make_blacklist(rng, N_BLACKLIST)
    ldap = {"uri": "ldap://ldap.example.org", "base": "dc=example,dc=org"}
    relay_networks = ["192.0.2.0/24", "198.51.100.0/23", "10.0.0.0/8", "2001:db8:ffff::/48"]

    workdir = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="maps-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    has_makemap = os.access(opts.makemap, os.X_OK)
    print(
        f"maps bench: {N_DOMAINS} domains, {N_BLACKLIST} blacklist entries; "
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus; "
        f"makemap {opts.makemap if has_makemap else 'absent'}; dir {workdir}"
    )
    phases: list[tuple[str, float]] = []

    def run_filters() -> dict[str, Any]:
        valid = filters.passerelle_domains(domains, ldap=ldap)
        relay = filters.passerelle_relay_domains(valid)
        return {
            "mailertable": filters.passerelle_mailertable(valid),
            "relay": relay,
            "access": filters.passerelle_access(
                blacklist, relay_domains=relay, relay_networks=relay_networks
            ),
        }

    maps = timed("1. filters: validate + mailertable/relay/access", run_filters, phases)
    print(
        f"     -> {len(maps['mailertable'])} mailertable, {len(maps['relay'])} relay domains, "
        f"{len(maps['access'])} access entries"
    )

    def map_args() -> list[dict[str, Any]]:
        return [
            {"path": str(workdir / "mailertable"), "entries": maps["mailertable"]},
            {"path": str(workdir / "access"), "entries": maps["access"]},
            {"path": str(workdir / "relay-domains"), "entries": maps["relay"], "format": "list"},
        ]

    def write_text() -> list[dict[str, Any]]:
        return [run_module(sendmail_map, {**args, "build": False}) for args in map_args()]

    results = timed("2. module: render + diff + atomic write (text)", write_text, phases)
    assert all(result["changed"] for result in results)

    if has_makemap:

        def build() -> list[dict[str, Any]]:
            return [
                run_module(sendmail_map, {**args, "makemap": opts.makemap})
                for args in map_args()[:2]
            ]

        results = timed("3. makemap build (module, hash)", build, phases)
        assert all(result["rebuilt"] for result in results)
    else:
        print("  3. makemap build                                 skipped (makemap absent)")
    total = sum(elapsed for _, elapsed in phases)
    print(f"  {'TOTAL (1-3)':<48} {total:7.3f} s  (target < {TARGET_S:.0f} s)")

    extra: list[tuple[str, float]] = []
    build_flag = {"makemap": opts.makemap} if has_makemap else {"build": False}

    def rerun() -> list[dict[str, Any]]:
        return [run_module(sendmail_map, {**args, **build_flag}) for args in map_args()]

    results = timed("4. idempotent rerun (filters not included)", rerun, extra)
    assert not any(result["changed"] for result in results)

    def add_domain() -> list[dict[str, Any]]:
        more = [*domains, {"name": "new-domain.example.org", "server": "mailstore1"}]
        valid = filters.passerelle_domains(more, ldap=ldap)
        maps["mailertable"] = filters.passerelle_mailertable(valid)
        maps["relay"] = filters.passerelle_relay_domains(valid)
        maps["access"] = filters.passerelle_access(
            blacklist, relay_domains=maps["relay"], relay_networks=relay_networks
        )
        return [run_module(sendmail_map, {**args, **build_flag}) for args in map_args()]

    results = timed("5. add a domain: filters + maps rebuilt", add_domain, extra)
    assert all(result["added"] for result in results)

    if not opts.keep:
        shutil.rmtree(workdir)
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
