"""Contract: every Passerelle config a role renders is accepted by the package's own parser.

The roles are found from their tasks: every ``template`` task whose ``validate:`` runs
``passerelle <area> check-config %s``, and every import of the milters' shared task file
(``roles/passerelle_tools/tasks/milter.yml``), whose arguments name the calling role's
template and the milter (its area). Its template is rendered the way Ansible would (Ansible's
Templar, the role's defaults, the lab inventory, the role's vars and set_facts:
``tests/ansible_render.py``) for a lab gateway, and the rendering goes through the same
command ``validate:`` runs on the host (``passerelle <area> check-config FILE``, in-process).

``test_the_check_catches_*``: a rendering with an unknown key, a value of the wrong kind, a
template that lost a key, a TOML syntax error, each must be refused by the same check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_render import ROLES, render
from passerelle.cli import main

# What the play gives a role on top of its defaults (playbooks/fleet.yml: from the component
# table, for a gateway).
PLAY_VARS = {
    "sendmail": {"sendmail_kind": "gateway"},
    "antivirus": {"antivirus_direction": "inbound"},
    "backup": {"backup_parts": ["quarantine", "greylist_sqlite", "config"]},
}
HOSTS = ("gw1", "gw2")
_VALIDATE = re.compile(r"\}\}\s+(?P<area>[\w-]+) check-config %s$")
# The milters' shared task file: its template and area are its callers' arguments.
MILTER_TASKS = ROLES / "passerelle_tools" / "tasks" / "milter.yml"


def config_templates() -> list[tuple[str, str, str]]:
    """(role, template src, check-config area) of every role that renders a Passerelle config."""
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
                            milter["passerelle_tools_milter_name"],
                        )
                    )
                    continue
                if tasks == MILTER_TASKS:
                    continue
                args = sub.get("ansible.builtin.template") or sub.get("template")
                if not isinstance(args, dict) or "check-config" not in str(args.get("validate")):
                    continue
                m = _VALIDATE.search(str(args["validate"]))
                assert m, f"{tasks}: unexpected validate: {args['validate']}"
                out.append((tasks.parts[-3], args["src"], m["area"]))
    return out


TEMPLATES = config_templates()


def check_config(area: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``passerelle <area> check-config`` on ``text``; '' if accepted, else its error."""
    path = tmp_path / f"{area}.toml"
    path.write_text(text)
    capsys.readouterr()
    rc = main([area, "check-config", str(path)])
    out = capsys.readouterr()
    return "" if rc == 0 else (out.err or out.out or f"rc={rc}")


def test_every_config_role_is_found() -> None:
    areas = {area for _role, _src, area in TEMPLATES}
    assert {"antivirus", "greylist", "spam", "route", "connwatch", "watch", "ops"} <= areas


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(("role", "src", "area"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_rendered_config_is_accepted(
    role: str, src: str, area: str, host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = render(role, src, host, **PLAY_VARS.get(role, {}))
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
    good = render(role, src, "gw1", **PLAY_VARS.get(role, {}))
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
    assert check_config("greylist", text, tmp_path, capsys)
