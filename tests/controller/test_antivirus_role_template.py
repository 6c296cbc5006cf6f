"""The antivirus role's TOML template renders a configuration the milter accepts, with
rules whose regular expressions need escaping (what `validate:` checks on the hosts)."""

from pathlib import Path

import yaml

from ansible_render import render as render_role
from passerelle.antivirus.config import parse_config
from passerelle.config import tomllib

ROLE = Path(__file__).resolve().parents[2] / "roles" / "antivirus"


def render(**overrides):
    """The role's template as Ansible renders it for gw1 (tests/ansible_render.py)."""
    values = {
        "__antivirus_clamd_list": ["unix:/run/clamav/clamd.ctl", "clamd2.example.test:3310"],
        "sendmail_fqdn": "gw1.example.test",
        **overrides,
    }
    return render_role("antivirus", "etc/passerelle/antivirus.toml.j2", "gw1", **values)


def test_defaults_render_a_valid_config():
    cfg = parse_config(tomllib.loads(render()))
    assert cfg.direction == "inbound"
    assert cfg.clamd == ("unix:/run/clamav/clamd.ctl", "clamd2.example.test:3310")
    assert cfg.on_error == "tempfail"
    assert cfg.hostname == "gw1.example.test"


def test_rules_with_backslashes_and_quotes_survive_rendering():
    rules = [
        {"name": "exe", "extensions": ["exe", "scr"], "types": ["pe"], "action": "quarantine"},
        {"name": "subject", "header": "Subject", "pattern": r'^\[bad\] "\d+"$', "action": "reject"},
        {"name": "docm", "extensions": ["docm"], "archives": False, "action": "strip"},
    ]
    cfg = parse_config(tomllib.loads(render(antivirus_rules=rules, antivirus_direction="outbound")))
    assert cfg.direction == "outbound"
    assert [r.name for r in cfg.rules] == ["exe", "subject", "docm"]
    assert cfg.rules[1].pattern.search('[bad] "42"')
    assert cfg.rules[0].types == frozenset({"pe"})
    assert cfg.rules[2].archives is False


def test_uninspectable_policy_and_budget_rendered():
    cfg = parse_config(tomllib.loads(render()))
    assert cfg.uninspectable_action == "quarantine"
    assert cfg.inspect_time_budget == 2
    assert cfg.mime.max_parts == 1000
    cfg = parse_config(
        tomllib.loads(
            render(antivirus_uninspectable_action="tempfail", antivirus_inspect_time_budget="5s")
        )
    )
    assert (cfg.uninspectable_action, cfg.inspect_time_budget) == ("tempfail", 5)
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    opt = specs["argument_specs"]["main"]["options"]["antivirus_uninspectable_action"]
    assert opt["choices"] == ["quarantine", "reject", "tempfail", "accept"]
    assert opt["default"] == "quarantine"


def test_clamd_conf_alerts_when_limits_are_reached():
    clamav = ROLE.parent / "clamav" / "templates" / "etc" / "clamav"
    assert (
        "{% include 'etc/clamav/clamd-limits.conf.j2' %}" in (clamav / "clamd.conf.j2").read_text()
    )
    limits = (clamav / "clamd-limits.conf.j2").read_text()
    for key in ("MaxScanSize", "MaxFileSize", "MaxRecursion", "MaxFiles", "MaxScanTime"):
        assert f"\n{key} " in limits
    assert "\nAlertExceedsMax yes\n" in limits
