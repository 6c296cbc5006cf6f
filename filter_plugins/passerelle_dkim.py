# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DKIM signing domains of the outbound relays, checked on the controller before any host
is touched (``playbooks/validate.yml``), and the DNS records their keys need.

``dkim_signer_domains | passerelle_dkim_domains`` takes the role's list
(``[{name, selector, private_key}]``, the key's PEM from the vault) and returns it checked and
normalised (``name`` lower case, plus ``algorithm`` and ``bits``), or raises
``AnsibleFilterError`` naming the entry (``dkim_signer_domains[1] (example.org)``) and what is
wrong: a name that is not a domain, a selector that is not one DNS label, a key that is not an
unencrypted RSA (1024 bits or more) or Ed25519 private key, a domain listed twice. The key's
text never appears in a message.

``dkim_signer_domains | passerelle_dkim_records(format='zone')``: the TXT record of each key,
as a zone-file line (``zone``) or as unbound's ``local-data`` value (``unbound``); the same
text as ``passerelle dkim txt`` (both use ``src/passerelle/dkim/keys.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # for _passerelle_load
import _passerelle_load

KEYS = _passerelle_load.dkim_keys()
hostname_problem: Callable[..., str | None] = _passerelle_load.routing_rules().hostname_problem
ENTRY_KEYS = frozenset({"name", "selector", "private_key"})
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


def _entry(
    value: Any, index: int, fname: str, seen: set[str], algorithm: str | None
) -> dict[str, Any]:
    where = f"{fname}[{index}]"
    if not isinstance(value, dict):
        raise AnsibleFilterError(f"{where}: expected {{name, selector, private_key}}")
    name = value.get("name")
    where = f"{where} ({name})" if isinstance(name, str) else where
    unknown = sorted(str(k) for k in set(value) - ENTRY_KEYS)
    if unknown:
        raise AnsibleFilterError(f"{where}: unknown keys {', '.join(unknown)}")
    problem = hostname_problem(name)
    if problem:
        raise AnsibleFilterError(f"{where}: {problem}")
    name = str(name).lower()
    if name in seen:
        raise AnsibleFilterError(f"{where}: {name} is listed twice (one key per domain)")
    seen.add(name)
    problem = KEYS.selector_problem(value.get("selector"))
    if problem:
        raise AnsibleFilterError(f"{where}: {problem}")
    try:
        key = KEYS.load_private_key(value.get("private_key"))
    except KEYS.DkimKeyError as exc:
        raise AnsibleFilterError(f"{where}: private_key is {exc}") from None
    if algorithm and key.algorithm != algorithm.split("-")[0]:
        raise AnsibleFilterError(
            f"{where}: private_key is an {key.algorithm} key, but the signature algorithm "
            f"is {algorithm} (dkim_signer_signature_algorithm)"
        )
    return {
        "name": name,
        "selector": value["selector"],
        "private_key": value["private_key"],
        "algorithm": key.algorithm,
        "bits": key.bits,
        "_public": key,
    }


def _checked(domains: Any, fname: str, algorithm: str | None = None) -> list[dict[str, Any]]:
    if domains is None:
        return []
    if not isinstance(domains, list):
        raise AnsibleFilterError(f"{fname}: expected a list of {{name, selector, private_key}}")
    seen: set[str] = set()
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise AnsibleFilterError(
            f"dkim_signer_signature_algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    return [_entry(v, i, fname, seen, algorithm) for i, v in enumerate(domains)]


def passerelle_dkim_domains(
    domains: Any, algorithm: str | None = None, fname: str = "dkim_signer_domains"
) -> list[dict]:
    """The signing domains, checked (see the module's docstring); with ``algorithm``
    (``rsa-sha256``, ``ed25519-sha256``), every key must be of that kind."""
    return [
        {k: v for k, v in d.items() if k != "_public"} for d in _checked(domains, fname, algorithm)
    ]


def passerelle_dkim_records(
    domains: Any, format: str = "zone", fname: str = "dkim_signer_domains"
) -> list[str]:
    """The DNS TXT record of each signing domain's key (see the module's docstring)."""
    if format not in ("zone", "unbound"):
        raise AnsibleFilterError(f"passerelle_dkim_records: unknown format {format!r}")
    make = KEYS.unbound_local_data if format == "unbound" else KEYS.txt_record
    return [make(d["name"], d["selector"], d["_public"]) for d in _checked(domains, fname)]


class FilterModule:
    """Passerelle DKIM signing domains."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "passerelle_dkim_domains": passerelle_dkim_domains,
            "passerelle_dkim_records": passerelle_dkim_records,
        }
