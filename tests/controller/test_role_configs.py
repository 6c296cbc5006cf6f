"""Contract: every Passerelle config a role renders is accepted by the package's own parser.

The roles are found from their tasks: every ``template`` task whose ``validate:`` runs
``passerelle <area> check-config %s``, and every import of the milters' shared task file
(``roles/passerelle_tools/tasks/milter.yml``), whose arguments name the calling role's
template and the milter (its area). Its template is rendered the way Ansible would (Ansible's
Templar, the role's defaults, the lab inventory, the role's vars and set_facts:
``tests/ansible_render.py``) for a lab gateway (the web console's ``console.toml``: for the
lab's monitoring host, with the accounts file the role renders and the lab's session secret),
and the rendering goes through the same command ``validate:`` runs on the host
(``passerelle <area> check-config FILE``, or an area's other check such as ``passerelle
console check-gateway-config FILE``, in-process).

``test_the_check_catches_*``: a rendering with an unknown key, a value of the wrong kind, a
template that lost a key, a TOML syntax error, each must be refused by the same check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_render import ROLES, inventory_vars, render
from passerelle.cli import main

# What the play gives a role on top of its defaults (playbooks/fleet.yml: from the component
# table, for a gateway).
PLAY_VARS = {
    "sendmail": {"sendmail_kind": "gateway"},
    "antivirus": {"antivirus_direction": "inbound"},
    "backup": {"backup_parts": ["quarantine", "greylist_sqlite", "config"]},
}
HOSTS = ("gw1", "gw2")
# Configs of another group's hosts: rendered for these hosts instead.
CONFIG_HOSTS = {("console", "etc/passerelle/console.toml.j2"): ("mon1",)}
_VALIDATE = re.compile(r"\}\}\s+(?P<area>[\w-]+) (?P<check>check-(?:[\w]+-)*config) %s$")
# The milters' shared task file: its template and area are its callers' arguments.
MILTER_TASKS = ROLES / "passerelle_tools" / "tasks" / "milter.yml"


def config_templates() -> list[tuple[str, str, str]]:
    """(role, template src, check command) of every role that renders a Passerelle config:
    the command is ``<area> check-config`` or another check of that area."""
    out = []
    for tasks in sorted(ROLES.glob("*/tasks/*.yml")):
        for task in yaml.safe_load(tasks.read_text()) or []:
            for sub in [task, *(task.get("block") or [])]:
                shared = sub.get("ansible.builtin.import_role") or sub.get("import_role")
                if isinstance(shared, dict) and shared.get("tasks_from") == "milter":
                    milter = sub["vars"]
                    out.append(
                        (
                            tasks.parts[-3],
                            milter["passerelle_tools_milter_config_template"],
                            milter["passerelle_tools_milter_name"] + " check-config",
                        )
                    )
                    continue
                if tasks == MILTER_TASKS:
                    continue
                args = sub.get("ansible.builtin.template") or sub.get("template")
                validate = str((args or {}).get("validate") if isinstance(args, dict) else "")
                if not re.search(r" check-[\w-]*config %s", validate):
                    continue
                m = _VALIDATE.search(validate)
                assert m, f"{tasks}: unexpected validate: {validate}"
                out.append((tasks.parts[-3], args["src"], f"{m['area']} {m['check']}"))
    return out


TEMPLATES = config_templates()


def check_config(
    command: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``passerelle <command>`` (``<area> check-config``) on ``text``; '' if accepted,
    else its error."""
    path = tmp_path / f"{command.replace(' ', '-')}.toml"
    path.write_text(text)
    capsys.readouterr()
    rc = main([*command.split(), str(path)])
    out = capsys.readouterr()
    return "" if rc == 0 else (out.err or out.out or f"rc={rc}")


def role_files(role: str, src: str, host: str, tmp_path: Path) -> dict[str, str]:
    """Files a role installs before its config, which the config's check reads: written to
    ``tmp_path``, their paths as overrides of the role's variables."""
    if (role, src) != ("console", "etc/passerelle/console.toml.j2"):
        return {}
    accounts = tmp_path / "console-accounts.toml"
    accounts.write_text(render("console", "etc/passerelle/console-accounts.toml.j2", host))
    secret = tmp_path / "console.secret"
    secret.write_text(inventory_vars(host)["passerelle_console_session_secret"] + "\n")
    secret.chmod(0o640)
    ldap_secret = tmp_path / "console-ldap.secret"
    ldap_secret.write_text(inventory_vars(host)["passerelle_ldap"]["bind_password"] + "\n")
    ldap_secret.chmod(0o640)
    return {
        "__console_accounts_file": str(accounts),
        "__console_secret_file": str(secret),
        "__console_ldap_secret_file": str(ldap_secret),
    }


def render_config(role: str, src: str, host: str, tmp_path: Path) -> str:
    return render(
        role, src, host, **PLAY_VARS.get(role, {}), **role_files(role, src, host, tmp_path)
    )


CASES = [(*t, host) for t in TEMPLATES for host in CONFIG_HOSTS.get(t[:2], HOSTS)]


def test_every_config_role_is_found() -> None:
    checks = {check for _role, _src, check in TEMPLATES}
    areas = {check.split()[0] for check in checks}
    assert {"antivirus", "greylist", "spam", "route", "connwatch", "watch", "ops"} <= areas
    assert {"console check-config", "console check-gateway-config"} <= checks


@pytest.mark.parametrize(
    ("role", "src", "area", "host"), CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES]
)
def test_rendered_config_is_accepted(
    role: str, src: str, area: str, host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = render_config(role, src, host, tmp_path)
    assert check_config(area, text, tmp_path, capsys) == ""


# -- tests of the test: a drifted template or package is caught ---------------------------------
def _first_key(text: str) -> tuple[str, str]:
    """The first ``key = value`` line of the first table, and its key."""
    for line in text.splitlines():
        m = re.match(r"(\w+) = ", line)
        if m:
            return line, m[1]
    raise AssertionError("no key in the rendering")


@pytest.mark.parametrize(("role", "src", "area"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_the_check_catches_a_drifted_rendering(
    role: str, src: str, area: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = render_config(role, src, CONFIG_HOSTS.get((role, src), HOSTS)[0], tmp_path)
    line, key = _first_key(good)
    drifted = {
        "a key renamed by the template": good.replace(line, line.replace(key, key + "_renamed"), 1),
        "a value of the wrong kind": good.replace(line, f"{key} = {{ wrong = 1 }}", 1),
        "a TOML syntax error": good.replace(line, line + " ]", 1),
    }
    for what, text in drifted.items():
        assert text != good
        assert check_config(area, text, tmp_path, capsys), f"{role}: {what} not caught"


def test_the_check_catches_a_template_that_drifted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value the role's variables would render wrongly (a duration the package cannot read)."""
    text = render("greylist", "etc/passerelle/greylist.toml.j2", greylist_min_delay="ten minutes")
    assert "ten minutes" in text
    assert check_config("greylist check-config", text, tmp_path, capsys)
