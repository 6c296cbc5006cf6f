"""Render a role's template the way Ansible does, without a host: Ansible's own Templar, the
role's variables in Ansible's precedence order and the repository's filter plugins.

Variables, lowest first: the role's ``defaults/main.yml``; the inventory (group_vars,
host_vars, through Ansible's VariableManager) for ``host``; the role's ``vars/main.yml`` and
``vars/<os_family>.yml`` (what ``first_found`` + ``include_vars`` load); the ``set_fact`` tasks
of the role whose ``when:`` holds (their task ``vars:`` with them); then ``overrides``.
``ansible_facts`` holds the host's ``fqdn``, ``os_family`` and any ``facts`` given (an OS's
``distribution``, ``distribution_major_version``: ``tests/controller/os_reference.py``).
A template's ``include`` finds its siblings in the role's ``templates/``, as Ansible's
``template`` action does.
Templated values are resolved lazily by the Templar, as in a play, so a variable that needs an
undefined one fails the rendering (``StrictUndefined`` semantics, like Ansible).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader, init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.vars.manager import VariableManager

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "roles"
LAB = ROOT / "inventory" / "lab"
BIN = Path(sys.executable).parent


def ansible_playbook(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the venv's ansible-playbook from the repository root with its ansible.cfg
    (``env``: extra environment variables)."""
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / "ansible-playbook"), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_lab_run_stops_in_validation(extra: dict[str, Any], named: str) -> str:
    """Run the lab's site.yml with ``extra`` vars and check that it fails naming ``named``
    in the validation play, before any play touches a host; returns the output."""
    res = ansible_playbook("-i", "inventory/lab", "playbooks/lab/site.yml", "-e", json.dumps(extra))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    # (the callback wraps long messages: compare with the whitespace collapsed)
    assert named in " ".join(out.split()), out
    # The run stops in the validation play: no play that touches a host has started.
    assert "PLAY [Validate fleet data]" in out
    assert "Gathering Facts" not in out
    assert "PLAY [Install the packages" not in out
    return out


@cache
def _plugins() -> None:
    with warnings.catch_warnings():  # another test module may have set the loader up already
        warnings.filterwarnings("ignore", "AnsibleCollectionFinder has already been configured")
        init_plugin_loader()
    filter_loader.add_directory(str(ROOT / "filter_plugins"))


def trust(value: Any) -> Any:
    """Mark strings as templates (Ansible 2.19 templates only trusted strings)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trust(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trust(v) for v in value]
    return value


def _yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


@cache
def _inventory(inventory: str) -> tuple[DataLoader, VariableManager, InventoryManager]:
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[inventory])
    return loader, VariableManager(loader=loader, inventory=inv), inv


def inventory_vars(host: str, inventory: Path = LAB) -> dict[str, Any]:
    """What the inventory gives ``host`` (groups, group_vars, host_vars, magic variables)."""
    _plugins()
    _loader, vm, inv = _inventory(str(inventory))
    hv = vm.get_vars(host=inv.get_host(host), include_hostvars=False)
    return {k: v for k, v in hv.items() if k not in ("hostvars", "vars")}


def _tasks(role: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted((role / "tasks").glob("*.yml")):
        for task in yaml.safe_load(f.read_text()) or []:
            out.append(task)
            for key in ("block", "rescue", "always"):
                out.extend(task.get(key) or [])
    return out


def _conditions(when: Any) -> list[str]:
    if when is None:
        return []
    return [str(c) for c in (when if isinstance(when, list) else [when])]


def role_vars(
    role: str,
    host: str = "gw1",
    *,
    inventory: Path = LAB,
    os_family: str = "Debian",
    overrides: dict[str, Any] | None = None,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables a play on ``host`` sees inside ``role`` (see the module's docstring)."""
    _plugins()
    loader = _inventory(str(inventory))[0]
    path = ROLES / role
    variables: dict[str, Any] = {}
    variables.update(trust(_yaml(path / "defaults" / "main.yml")))
    variables.update(inventory_vars(host, inventory))
    variables.update(
        ansible_managed="Ansible managed",
        ansible_os_family=os_family,
        ansible_facts={"fqdn": f"{host}.example.test", "os_family": os_family, **(facts or {})},
        role_path=str(path),
    )
    variables.update(trust(_yaml(path / "vars" / "main.yml")))
    variables.update(trust(_yaml(path / "vars" / f"{os_family}.yml")))
    variables.update(trust(overrides or {}))
    for task in _tasks(path):
        facts = task.get("ansible.builtin.set_fact", task.get("set_fact"))
        if not isinstance(facts, dict):
            continue
        scope = {**variables, **trust(task.get("vars") or {})}
        templar = Templar(loader=loader, variables=scope)
        if not all(templar.evaluate_conditional(trust(c)) for c in _conditions(task.get("when"))):
            continue
        for name, value in facts.items():
            if name in ("cacheable",) or name in (overrides or {}):
                continue
            variables[name] = templar.template(trust(value))
    return variables


def render(
    role: str,
    src: str,
    host: str = "gw1",
    *,
    inventory: Path = LAB,
    os_family: str = "Debian",
    facts: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """The text Ansible's ``template`` task writes for ``roles/<role>/templates/<src>``."""
    variables = role_vars(
        role, host, inventory=inventory, os_family=os_family, overrides=overrides, facts=facts
    )
    loader = _inventory(str(inventory))[0]
    templates = ROLES / role / "templates"
    text = (templates / src).read_text()
    templar = Templar(loader=loader).copy_with_new_env(
        searchpath=[str(templates)], available_variables=variables
    )
    return templar.template(trust(text), preserve_trailing_newlines=True, escape_backslashes=False)
