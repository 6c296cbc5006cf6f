"""The rolling upgrade (playbooks/upgrade.yml, playbooks/lab/upgrade.yml): the fleet play of
site.yml run in stages (supporting hosts, gateways one at a time, relays one at a time), every
mail host in exactly one stage, checks around each gateway and relay. The stages are read
from ansible-playbook's own --list-hosts (the real pattern and inventory logic)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_render import ansible_playbook
from plugins import load

ROOT = Path(__file__).resolve().parents[2]
pc = load("filter_plugins/passerelle_components.py")


# --- the filter's stages ---------------------------------------------------------------------


def test_play_hosts_of_a_stage():
    assert pc.passerelle_play_hosts("fleet") == "greylist_db:gateways:smtpx"
    assert pc.passerelle_play_hosts("fleet", only=["gateways"]) == "gateways"
    assert pc.passerelle_play_hosts("fleet", only=["smtpx"], exclude=["gateways"]) == (
        "smtpx:!gateways"
    )
    assert pc.passerelle_play_hosts("fleet", exclude=["gateways", "smtpx"]) == (
        "greylist_db:!gateways:!smtpx"
    )
    assert pc.passerelle_play_hosts("fleet", lab=True, exclude=["gateways", "smtpx"]) == (
        "greylist_db:mailstores:internet:!gateways:!smtpx"
    )
    # a stage of groups the play does not run on targets nothing (not every host)
    assert pc.passerelle_play_hosts("fleet", only=["monitoring"]) == "passerelle_no_hosts"


def test_play_hosts_unknown_group_is_an_error():
    with pytest.raises(KeyError, match="unknown group 'gateway'"):
        pc.passerelle_play_hosts("fleet", only=["gateway"])


# --- the stages, as ansible-playbook resolves them -----------------------------------------


def _list_hosts(playbook: str, inventory: str) -> list[tuple[str, list[str]]]:
    res = ansible_playbook("-i", inventory, "--list-hosts", playbook)
    assert res.returncode == 0, res.stdout + res.stderr
    plays: list[tuple[str, list[str]]] = []
    for line in res.stdout.splitlines():
        m = re.match(r"\s+play #\d+ \((.*)\): (.*?)\tTAGS", line)
        if m:
            plays.append((m.group(2), []))
        elif re.match(r"\s{6}\S", line) and plays:
            plays[-1][1].append(line.strip())
    return plays


def _inventory_groups(inventory: str) -> dict[str, set[str]]:
    data = yaml.safe_load((ROOT / inventory / "hosts.yml").read_text())
    out: dict[str, set[str]] = {}

    def walk(name: str, node: dict) -> set[str]:
        hosts = set((node or {}).get("hosts") or {})
        for child, sub in ((node or {}).get("children") or {}).items():
            hosts |= walk(child, sub)
        out[name] = hosts
        return hosts

    walk("all", data["all"])
    return out


@pytest.mark.parametrize(
    ("playbook", "inventory"),
    [
        ("playbooks/upgrade.yml", "inventory/production"),
        ("playbooks/lab/upgrade.yml", "inventory/lab"),
    ],
)
def test_every_mail_host_is_upgraded_once_supporting_hosts_first(playbook, inventory):
    plays = _list_hosts(playbook, inventory)
    site = "site.yml" if "production" in inventory else "playbooks/lab/site.yml"
    fleet_hosts = {
        h for name, hosts in _list_hosts(site, inventory) if name == "Mail hosts" for h in hosts
    }
    stages = [set(hosts) for name, hosts in plays if name == "Mail hosts"]
    assert len(stages) == 3
    groups = _inventory_groups(inventory)
    supporting, gateways, relays = stages
    assert gateways == groups["gateways"]
    assert relays == groups["smtpx"] - groups["gateways"]
    assert not supporting & (groups["gateways"] | groups["smtpx"])
    assert groups["greylist_db"] <= supporting
    # nothing forgotten, nothing twice
    assert supporting | gateways | relays == fleet_hosts
    assert sum(len(s) for s in stages) == len(fleet_hosts)
    # supervision after every mail host
    names = [name for name, _ in plays]
    last_fleet = max(i for i, n in enumerate(names) if n == "Mail hosts")
    assert (
        names.index("NRPE agent, process watch and nightly backups on every supervised host")
        > last_fleet
    )


def test_gateways_and_relays_go_one_at_a_time_with_checks():
    stages = yaml.safe_load((ROOT / "playbooks/rolling.yml").read_text())
    by_group = {tuple(s["vars"].get("passerelle_fleet_groups") or ()): s["vars"] for s in stages}
    for group in ("gateways", "smtpx"):
        v = by_group[(group,)]
        assert v["passerelle_fleet_serial"] == 1
        assert v["passerelle_upgrade_group"] == group
    fleet = yaml.safe_load((ROOT / "playbooks/fleet.yml").read_text())[0]
    assert fleet["serial"] == "{{ passerelle_fleet_serial | default(0) }}"
    assert "passerelle_upgrade_group is defined" in fleet["max_fail_percentage"]
    # (the first pre-task ends a never-deployed host's check: tasks/end-host-without-packages.yml)
    pre = next(t for t in fleet["pre_tasks"] if "ansible.builtin.include_tasks" in t)
    post = fleet["post_tasks"][0]
    assert pre["ansible.builtin.include_tasks"] == "tasks/upgrade-before-host.yml"
    assert post["ansible.builtin.include_tasks"] == "tasks/upgrade-after-host.yml"
    assert pre["when"] == post["when"] == "passerelle_upgrade_group is defined"
