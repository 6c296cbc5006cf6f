"""files/spamassassin/*.cf reach local.cf: the spamassassin role's template appends every rule
file of spamassassin_site_rules_dir in name order (rendered here by Ansible's own template
lookup on the controller, from the role's real template text), and its default points at the
repository's files/spamassassin/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATE = ROOT / "roles/spamassassin/templates/etc/spamassassin/local.cf.j2"


def _render(tmp_path: Path, rules_dir: Path) -> str:
    text = TEMPLATE.read_text()
    fragment = tmp_path / "fragment.j2"
    fragment.write_text(text[text.index("{% for f in query('ansible.builtin.fileglob'") :])
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    res = subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={{{{ lookup('ansible.builtin.template', '{fragment}') | default('', true) }}}}",
            "-e",
            f"spamassassin_site_rules_dir={rules_dir}",
            "-o",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_rule_files_are_appended_in_name_order(tmp_path):
    rules = tmp_path / "spamassassin"
    rules.mkdir()
    (rules / "20-b.cf").write_text("score B_RULE 2.0\n")
    (rules / "10-a.cf").write_text("body A_RULE /passerelle-a/\nscore A_RULE 1.0\n")
    (rules / "notes.txt").write_text("not a rule file\n")
    out = _render(tmp_path, rules)
    assert "A_RULE" in out and "B_RULE" in out and "not a rule file" not in out
    assert out.index("10-a.cf") < out.index("20-b.cf")


def test_no_rule_file_adds_nothing(tmp_path):
    out = _render(tmp_path, tmp_path / "none")
    assert "site's files" not in out


def test_default_is_the_repository_files_folder():
    defaults = yaml.safe_load((ROOT / "roles/spamassassin/defaults/main.yml").read_text())
    value = defaults["spamassassin_site_rules_dir"]
    assert value == "{{ role_path }}/../../files/spamassassin"
    resolved = (ROOT / "roles/spamassassin" / "../../files/spamassassin").resolve()
    assert resolved == ROOT / "files/spamassassin" and resolved.is_dir()
