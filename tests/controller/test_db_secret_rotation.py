"""Rotating the database secret (README, "Rotating the database secret").

Every MariaDB password of the fleet derives from ``passerelle_greylist_db_secret``. After the
vault's secret changes, ``ansible-playbook site.yml --tags db-secret`` must set the new
passwords on the server and re-render every file that holds one: these tests find those files
and tasks from the roles themselves (a variable derived from the secret, followed through the
roles' vars and defaults) and fail when one of them is not under the tag, or would print its
password with ``--diff``. Molecule's ``test_98_db_secret_rotation.py`` runs the procedure on
the lab.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ansible_render import ROOT, ansible_playbook

ROLES = ROOT / "roles"
TAG = "db-secret"
SECRET = "passerelle_greylist_db_secret"
NAME_RE = re.compile(r"\b_{0,2}[a-z][a-z0-9_]*\b")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def secret_derived_names() -> set[str]:
    """The role variables whose value depends on the fleet's database secret (fixpoint over
    every role's defaults/main.yml and vars/*.yml)."""
    definitions: dict[str, str] = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")) + sorted(ROLES.glob("*/vars/*.yml")):
        for name, value in _yaml(path).items():
            definitions[name] = definitions.get(name, "") + " " + yaml.safe_dump(value)
    derived = {SECRET}
    while True:
        more = {
            name
            for name, text in definitions.items()
            if name not in derived and derived & set(NAME_RE.findall(text))
        }
        if not more:
            return derived
        derived |= more


def _task_files(role: Path) -> list[Path]:
    return sorted((role / "tasks").glob("*.yml"))


def _walk(tasks: list[dict[str, Any]], inherited: frozenset[str]):
    """Each task of a task list with the tags it inherits from its blocks."""
    for task in tasks or []:
        tags = task.get("tags", [])
        tags = inherited | frozenset([tags] if isinstance(tags, str) else tags)
        if "block" in task:
            for key in ("block", "rescue", "always"):
                yield from _walk(task.get(key, []), tags)
        else:
            yield task, tags


def _template_mentions(role: Path, src: str, names: set[str]) -> bool:
    path = role / "templates" / src
    return path.is_file() and bool(names & set(NAME_RE.findall(path.read_text())))


def secret_tasks() -> list[tuple[str, str, frozenset[str], dict[str, Any]]]:
    """(role, task name, tags, task) of every task that writes a secret-derived value on a
    host: a template rendering one, a MariaDB user whose password is one, and the shared
    milter plumbing imported with a configuration template that renders one."""
    names = secret_derived_names()
    found = []
    for role in sorted(p for p in ROLES.iterdir() if (p / "tasks").is_dir()):
        for path in _task_files(role):
            for task, tags in _walk(_yaml(path) or [], frozenset()):
                template = task.get("ansible.builtin.template")
                user = task.get("community.mysql.mysql_user")
                imported = task.get("ansible.builtin.import_role")
                milter_template = ""
                if imported and imported.get("tasks_from") == "milter":
                    milter_template = task.get("vars", {}).get(
                        "passerelle_tools_milter_config_template", ""
                    )
                holds = (
                    (template and _template_mentions(role, str(template.get("src", "")), names))
                    or (user and names & set(NAME_RE.findall(yaml.safe_dump(task))))
                    or (milter_template and _template_mentions(role, milter_template, names))
                )
                if holds:
                    found.append((role.name, task["name"], tags, task))
    return found


def test_the_secret_reaches_the_files_we_know() -> None:
    """The search itself finds the known holders of a derived password (a search that found
    nothing would make the tests below pass whatever the roles do)."""
    found = {(role, name) for role, name, _, _ in secret_tasks()}
    assert {
        ("mariadb", "Create a least-privilege user per gateway, and the schema user"),
        ("mariadb", "Create the Bayes user (one for every gateway)"),
        (
            "greylist",
            "Configure, run and register the milter (the plumbing every Passerelle milter shares)",
        ),
        ("spamassassin", "Install local.cf once spamassassin --lint accepts it"),
        (
            "connwatch",
            "Install the guard's configuration (checked by passerelle connwatch check-config)",
        ),
    } <= found, found


def test_every_holder_of_a_derived_password_is_under_the_rotation_tag() -> None:
    untagged = [f"{role}: {name}" for role, name, tags, _ in secret_tasks() if TAG not in tags]
    assert not untagged, f"not under the tag {TAG!r}, so a rotation would miss them: {untagged}"


def test_no_holder_of_a_derived_password_prints_it_with_diff() -> None:
    """A rotation is exactly when --diff would show the old and the new password."""
    shown = []
    for role, name, _, task in secret_tasks():
        if "ansible.builtin.template" not in task:
            continue  # mysql_user has no diff output; the milter plumbing is checked below
        diff = task.get("diff", True)
        if diff is not False and not (isinstance(diff, str) and "secret" in diff):
            shown.append(f"{role}: {name}")
    milter = _yaml(ROLES / "passerelle_tools" / "tasks" / "milter.yml")
    config = next(
        t for t in milter if "configuration" in t["name"] and "ansible.builtin.template" in t
    )
    assert "passerelle_tools_milter_config_secret" in str(config.get("diff")), config
    for role, name, _, task in secret_tasks():
        if "ansible.builtin.import_role" in task and not task["vars"].get(
            "passerelle_tools_milter_config_secret"
        ):
            shown.append(f"{role}: {name} (passerelle_tools_milter_config_secret unset)")
    assert not shown, f"would print a password with --diff: {shown}"


def test_the_tag_runs_the_password_tasks_with_what_they_need() -> None:
    """What `--tags db-secret` runs, as Ansible lists it: the password tasks, and the
    OS variables their roles read (a tagged task whose role's variables are not loaded
    would fail on the first real rotation)."""
    res = ansible_playbook(
        "-i", "inventory/lab", "playbooks/lab/site.yml", "--list-tasks", "--tags", TAG
    )
    assert res.returncode == 0, res.stdout + res.stderr
    listed = {line.split("\tTAGS:")[0].strip() for line in res.stdout.splitlines() if TAG in line}
    for role in ("mariadb", "greylist", "spamassassin", "connwatch"):
        assert f"{role} : Load the OS family's variables (from the role's vars/)" in listed, role
    assert "mariadb : Create a least-privilege user per gateway, and the schema user" in listed
    assert "spamassassin : Install local.cf once spamassassin --lint accepts it" in listed
    assert any(name.startswith("passerelle_tools : Install the configuration") for name in listed)
    # nothing that installs packages or touches sendmail
    assert not [name for name in listed if "Install the" in name and "package" in name], listed
    assert not [name for name in listed if name.startswith("sendmail :")], listed
