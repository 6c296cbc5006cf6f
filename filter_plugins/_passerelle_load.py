# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one loader the filter plugins use for the modules they share.

Ansible loads each file of ``filter_plugins/`` on its own, under a name of its choosing, so a
filter cannot ``import`` a sibling by name; and the controller need not have the
``passerelle`` package installed (``scripts/controller-setup`` installs Ansible only; a
developer's venv may hold another checkout's copy). So the shared modules are loaded here by
their path in this repository, once per process (kept in ``sys.modules``):

* ``components()``: the fleet's component table, ``filter_plugins/passerelle_components.py``;
* ``routing_rules()``: the routing rules the gateways' ``passerelle`` package applies too,
  ``src/passerelle/routing/rules.py`` (standard library only);
* ``dkim_keys()``: the DKIM key checks and records of ``passerelle dkim txt``,
  ``src/passerelle/dkim/keys.py`` (standard library only).

A filter reaches this file by adding its own directory to ``sys.path`` (see
``passerelle_maps.py``); the tests' ``tests/plugins.py`` does the same and loads every
repository file that is not in a package through ``load`` below. Ansible also imports
every ``.py`` here as a filter plugin: this one defines an empty ``FilterModule`` so that it
is loaded without a warning and adds no filter.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load(name: str, path: Path) -> ModuleType:
    """The module at ``path``, imported once under ``name`` (also kept in ``sys.modules``, so
    pickling, ``dataclasses`` and a second load see the same module object). A module of that
    name loaded from another file (another checkout's copy) is replaced, never reused."""
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", "") or "") == path:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def components() -> ModuleType:
    """filter_plugins/passerelle_components.py: what runs where."""
    return load("passerelle_components", HERE / "passerelle_components.py")


def routing_rules() -> ModuleType:
    """src/passerelle/routing/rules.py: domain names, LDAP settings (shared with the gateways)."""
    return load("_passerelle_routing_rules", ROOT / "src" / "passerelle" / "routing" / "rules.py")


def dkim_keys() -> ModuleType:
    """src/passerelle/dkim/keys.py: DKIM private keys and their DNS records."""
    return load("_passerelle_dkim_keys", ROOT / "src" / "passerelle" / "dkim" / "keys.py")


class FilterModule:
    """No filter: the loader the Passerelle filters share."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {}
