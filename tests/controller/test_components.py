"""The component table (filter_plugins/passerelle_components.py) is the only place that says
what runs where, and the production path never reaches the lab's pieces.

The playbooks are resolved statically: every play of a playbook (imports followed, with their
``vars``), its hosts from the inventory, and for each host the roles its ``roles:`` entries and
``include_role`` tasks give it, each ``when:`` and loop evaluated with the host's groups. No
host is contacted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader, init_plugin_loader
from ansible.template import Templar

from ansible_render import ansible_playbook, trust
from plugins import load

ROOT = Path(__file__).resolve().parents[2]

pc = load("filter_plugins/passerelle_components.py")

init_plugin_loader()
filter_loader.add_directory(str(ROOT / "filter_plugins"))

# Every inventory group the table knows, and the names a playbook must not spell out.
GROUPS = set(pc.GROUPS)
PLAYBOOKS = sorted(
    [
        ROOT / "site.yml",
        *(ROOT / "playbooks").glob("*.yml"),
        *(ROOT / "playbooks/lab").glob("*.yml"),
    ]
)


def _load(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text()) or []


def _plays(path: Path, extra_vars: dict[str, Any] | None = None):
    """(file, play, vars) for every play of a playbook, imports followed in order."""
    for entry in _load(path):
        target = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if target:
            yield from _plays(
                (path.parent / target).resolve(), {**(extra_vars or {}), **entry.get("vars", {})}
            )
        else:
            yield path, entry, {**(extra_vars or {}), **entry.get("vars", {})}


def _tasks(play: dict[str, Any]):
    for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
        stack = list(play.get(section) or [])
        while stack:
            task = stack.pop(0)
            for key in ("block", "rescue", "always"):
                stack[:0] = task.get(key) or []
            yield task


def _conditions(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _resolve(playbook: str, inventory: str) -> list[tuple[int, str, str]]:
    """(play number, host, role) for every role a run would give a host (a role's
    packages.yml counts: collecting a lab role's packages reaches it too)."""
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(ROOT / inventory)])
    out: list[tuple[str, str, str]] = []
    for index, (_file, play, play_vars) in enumerate(_plays(ROOT / playbook)):
        if "hosts" not in play:
            continue
        base = {"groups": {g.name: [h.name for h in g.get_hosts()] for g in inv.groups.values()}}
        pattern = Templar(loader=loader, variables=trust({**base, **play_vars})).template(
            trust(str(play["hosts"]))
        )
        for host in inv.list_hosts(pattern):
            hv = {
                **base,
                **trust(host.get_vars()),
                **trust(play.get("vars") or {}),
                **trust(play_vars),
                "group_names": sorted(g.name for g in host.get_groups() if g.name != "all"),
                "inventory_hostname": host.name,
            }
            templar = Templar(loader=loader, variables=hv)
            for entry in play.get("roles") or []:
                name = entry if isinstance(entry, str) else entry["role"]
                conds = [] if isinstance(entry, str) else _conditions(entry.get("when"))
                if all(templar.evaluate_conditional(trust(c)) for c in conds):
                    out.append((index, host.name, name))
            for task in _tasks(play):
                args = task.get("ansible.builtin.include_role") or task.get(
                    "ansible.builtin.import_role"
                )
                if not args:
                    continue
                items = [None]
                if "loop" in task:
                    items = templar.template(trust(task["loop"]))
                loop_var = (task.get("loop_control") or {}).get("loop_var", "item")
                for item in items:
                    t = Templar(loader=loader, variables={**hv, loop_var: item})
                    if all(t.evaluate_conditional(trust(c)) for c in _conditions(task.get("when"))):
                        out.append((index, host.name, t.template(trust(args["name"]))))
    return out


def _roles_by_host(resolved: list[tuple[int, str, str]]) -> dict[str, set[str]]:
    by: dict[str, set[str]] = {}
    for _, host, role in resolved:
        by.setdefault(host, set()).add(role)
    return by


# --- the table is the only place a group's roles are listed ------------------------------


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_playbook_lists_roles_for_a_group_by_hand(path):
    """A play that runs roles takes its hosts and each role's condition from the table."""
    for _file, play, _vars in _plays(path):
        role_tasks = [
            t
            for t in _tasks(play)
            if "ansible.builtin.include_role" in t or "ansible.builtin.import_role" in t
        ]
        if not play.get("roles") and not role_tasks:
            continue
        where = f"{path.relative_to(ROOT)}: play {play.get('name')!r}"
        hosts = str(play["hosts"])
        assert "passerelle_play_hosts" in hosts, f"{where}: hosts {hosts!r} written by hand"
        for entry in play.get("roles") or []:
            name = entry if isinstance(entry, str) else entry["role"]
            when = _conditions(None if isinstance(entry, str) else entry.get("when"))
            assert when == [f"'{name}' in __passerelle_roles"], (
                f"{where}: role {name} runs on {when or 'every host'}, not on the table's groups"
            )
        for task in role_tasks:
            for cond in _conditions(task.get("when")):
                named = [g for g in GROUPS if f"'{g}'" in cond or f'"{g}"' in cond]
                assert not named, f"{where}: task {task.get('name')!r} picks groups {named} by hand"
            args = task.get("ansible.builtin.include_role") or task.get(
                "ansible.builtin.import_role"
            )
            assert "{{" in str(args["name"]), (
                f"{where}: task {task.get('name')!r} names role {args['name']} by hand"
            )


def test_playbooks_run_each_play_of_the_table_in_its_order():
    """Each play's roles: list is the table's, in the table's order (a static list keeps
    `roles:` semantics: --list-tasks, tags, handlers; a looped include_role would not keep
    one order for every host)."""
    seen: dict[str, list[str]] = {}
    for path in PLAYBOOKS:
        for play in _load(path):
            if "hosts" not in play or not play.get("roles"):
                continue
            play_vars = play.get("vars") or {}
            key = str(play_vars.get("__passerelle_play", ""))
            assert key in pc.PLAYS, f"{path.name}: play {play['name']!r} names no table play"
            seen[key] = [e if isinstance(e, str) else e["role"] for e in play["roles"]]
    for key, roles in seen.items():
        assert roles == [r["role"] for r in pc.PLAYS[key]], key
    assert set(seen) == set(pc.PLAYS)


# --- behaviour: what each lab host gets ----------------------------------------------------

# What main's playbooks gave each lab host (site.yml with inventory/lab, before the table).
LAB_ROLES_BEFORE = {
    "gw1": {
        "resolver", "passerelle_tools", "greylist", "clamav", "antivirus", "spamassassin",
        "spam_milter", "sendmail", "ops_reports", "process_watch", "nrpe", "connwatch",
        # since issue 15: the LDAP route daemon and routing.toml, out of the sendmail role
        "ldap_route",
        # since issue 16: nightly backups
        "backup",
        # since issue 17: the web console's gateway side (gateway-sync timer)
        "console",
    },
    "smtpx1": {
        "resolver", "passerelle_tools", "clamav", "antivirus", "sendmail", "ops_reports",
        "process_watch", "nrpe", "connwatch", "backup",
        # since issue 18: DKIM signing (the role does nothing without signing domains)
        "dkim_signer",
    },
    "db1": {"mariadb", "passerelle_tools", "process_watch", "nrpe", "backup"},
    "ldap1": {"slapd", "passerelle_tools", "process_watch", "nrpe"},
    "mailstore1": {"sendmail", "passerelle_tools", "process_watch", "nrpe"},
    # since issue 17: the web console
    "mon1": {"passerelle_tools", "process_watch", "nrpe", "nagios", "console"},
    "outside": {"clamav_lab_mirror", "sendmail"},
}  # fmt: skip


def test_lab_hosts_get_the_same_roles_as_before():
    by = _roles_by_host(_resolve("playbooks/lab/site.yml", "inventory/lab"))
    for host, roles in LAB_ROLES_BEFORE.items():
        assert by[host] == roles, host
    assert by["gw2"] == by["gw1"] and by["mailstore2"] == by["mailstore1"]


def _evaluated(name: str, groups: list[str]) -> set[str]:
    """Every value a playbook gives variable ``name`` for a host in these groups."""
    out = set()
    for path in PLAYBOOKS:
        for play in _load(path):
            if "hosts" not in play:
                continue
            hv = trust({**(play.get("vars") or {}), "group_names": groups})
            entries = [e for e in play.get("roles") or [] if isinstance(e, dict)]
            entries += [t for t in _tasks(play)]
            for entry in entries:
                value = (entry.get("vars") or {}).get(name)
                if value is not None:
                    out.add(Templar(loader=DataLoader(), variables=hv).template(trust(value)))
    return out


@pytest.mark.parametrize("group", ["gateways", "smtpx", "mailstores", "internet"])
def test_every_playbook_gives_a_group_the_tables_sendmail_kind(group):
    """The packages play once gave smtpx hosts sendmail_kind: mailstore (issue 15)."""
    want = pc.passerelle_host([group], lab=True)["sendmail_kind"]
    assert _evaluated("sendmail_kind", [group]) <= {want}, group


@pytest.mark.parametrize("group", ["gateways", "smtpx"])
def test_every_playbook_gives_a_group_the_tables_antivirus_direction(group):
    want = pc.passerelle_host([group])["antivirus_direction"]
    assert _evaluated("antivirus_direction", [group]) <= {want}, group


def test_table_kinds():
    gw = pc.passerelle_host(["gateways"])
    assert (gw["sendmail_kind"], gw["antivirus_direction"], gw["sizing_kind"]) == (
        "gateway",
        "inbound",
        "gateway",
    )
    sx = pc.passerelle_host(["smtpx"])
    assert (sx["sendmail_kind"], sx["antivirus_direction"]) == ("smtpx", "outbound")
    # A host in both groups is a gateway.
    assert pc.passerelle_host(["smtpx", "gateways"])["sendmail_kind"] == "gateway"


def test_backup_parts_per_group():
    """The database host dumps the databases, the mail hosts keep their quarantine; every
    one of them /etc/passerelle; hosts with no Passerelle state have no backup."""
    parts = {
        g: set(pc.passerelle_host([g])["backup"]) for g in ("greylist_db", "gateways", "smtpx")
    }
    assert parts["greylist_db"] == {"databases", "config"}
    assert parts["gateways"] == {"quarantine", "greylist_sqlite", "config"}
    assert parts["smtpx"] == {"quarantine", "config"}
    for group in ("ldap", "monitoring"):
        assert pc.passerelle_host([group])["backup"] == []
        assert "backup" not in pc.passerelle_roles([group], "supervision")
    sup = [r["role"] for r in pc.PLAYS["supervision"]]
    assert sup.index("backup") < sup.index("nrpe")  # NRPE's backup check wants a first backup


def test_package_flags_match_the_roles_task_files():
    for entries in pc.PLAYS.values():
        for r in entries:
            has = (ROOT / "roles" / r["role"] / "tasks" / "packages.yml").exists()
            assert bool(r.get("packages")) == has, r["role"]


def test_every_role_is_in_the_table():
    listed = {r["role"] for entries in pc.PLAYS.values() for r in entries}
    assert listed == {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}


# --- the production path never reaches the lab's pieces ---------------------------------


def test_lab_only_roles_are_marked():
    assert pc.lab_only_roles() == {"slapd", "clamav_lab_mirror"}
    assert pc.lab_only_groups() == {"mailstores", "internet"}


PRODUCTION_PLAYBOOKS = ["site.yml", "playbooks/upgrade.yml"]


@pytest.mark.parametrize("playbook", PRODUCTION_PLAYBOOKS)
def test_production_site_targets_no_lab_role(playbook):
    resolved = _resolve(playbook, "inventory/production")
    assert resolved, "nothing resolved: the resolver is broken"
    lab = [(p, h, r) for p, h, r in resolved if r in pc.lab_only_roles()]
    assert not lab, f"{playbook} with inventory/production runs lab roles: {lab}"


@pytest.mark.parametrize("playbook", PRODUCTION_PLAYBOOKS)
def test_production_plays_target_no_lab_group(playbook):
    for _file, play, play_vars in _plays(ROOT / playbook):
        pattern = Templar(loader=DataLoader(), variables=trust(play_vars)).template(
            trust(str(play["hosts"]))
        )
        named = set(pattern.replace("&", ":").replace("!", ":").split(":")) & pc.lab_only_groups()
        assert not named, f"play {play['name']!r} targets lab groups {named}"


def test_production_list_tasks_shows_no_lab_role():
    res = ansible_playbook("-i", "inventory/production", "--list-tasks", "site.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    for role in pc.lab_only_roles():
        assert f"{role} :" not in res.stdout, f"site.yml lists {role}'s tasks"


def test_lab_site_runs_the_lab_roles_before_the_fleet():
    """The directory before the gateways that ask it, the mirror before freshclam (the
    packages play only collects package names: the first play that runs each role counts)."""
    resolved = _resolve("playbooks/lab/site.yml", "inventory/lab")
    first: dict[str, int] = {}
    plays = {i: p for i, (_f, p, _v) in enumerate(_plays(ROOT / "playbooks/lab/site.yml"))}
    for index, _host, role in resolved:
        if "packages" not in plays[index]["name"].lower():
            first.setdefault(role, index)
    assert first["slapd"] < first["greylist"] and first["slapd"] < first["sendmail"]
    assert first["clamav_lab_mirror"] < first["clamav"]


def test_the_route_daemon_role_runs_on_gateways_before_sendmail():
    fleet = [entry["role"] for entry in pc.PLAYS["fleet"]]
    assert fleet.index("passerelle_tools") < fleet.index("ldap_route") < fleet.index("sendmail")
    assert "ldap_route" in pc.passerelle_roles(["gateways"], "fleet")
    for group in ("smtpx", "mailstores", "greylist_db"):
        assert "ldap_route" not in pc.passerelle_roles([group], "fleet", lab=True)


def test_the_console_runs_after_nagios_on_monitoring_and_gateways():
    """The console's Apache location joins the Nagios site (nagios play first); the gateways'
    side is in the same play as the console, which creates the tables it uses."""
    assert pc.passerelle_roles(["monitoring"], "console") == ["console"]
    assert pc.passerelle_roles(["gateways"], "console") == ["console"]
    assert pc.passerelle_roles(["smtpx"], "console") == []
    assert pc.passerelle_roles(["greylist_db"], "console") == []
    plays = [
        (p.get("vars") or {}).get("__passerelle_play")
        for p in _load(ROOT / "playbooks" / "monitoring.yml")
    ]
    assert plays.index("nagios") < plays.index("console")
