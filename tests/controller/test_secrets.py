"""A missing secret stops the run in playbooks/validate.yml before any host changes, naming
the variable. Run against a throwaway inventory (localhost, connection local: the validate
play gathers no facts and runs only assert on the controller, so no host is touched)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_render import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {
    "passerelle_greylist_db_secret": "0123456789abcdef-test",
    "nagios_admin_password": "not-a-real-password",
    "passerelle_console_accounts": [
        {
            "name": "admin",
            "role": "admin",
            "password_hash": "$pbkdf2-sha256$600000$not-a-real-password",
        }
    ],
    "passerelle_console_session_secret": "not-a-real-password-0123456789abcdef",
    "passerelle_ldap": {
        "uri": "ldap://ldap.test",
        "base": "dc=test",
        "bind_dn": "cn=gw,dc=test",
        "bind_password": "not-a-real-password",
    },
}


def _validate(
    tmp_path: Path,
    host_vars: dict,
    inventory: Path | None = None,
    groups: tuple[str, ...] = ("gateways", "greylist_db", "monitoring"),
):
    if inventory is None:
        inventory = tmp_path / "hosts.yml"
        # One host in every group that needs a secret; the groups' other members make the
        # secrets "needed" (a database serving gateways, a gateway using the database).
        inventory.write_text(
            yaml.safe_dump(
                {
                    "all": {
                        "vars": {
                            "ansible_connection": "local",
                            "passerelle_domains": [{"name": "a.test", "server": "m1.test"}],
                            **host_vars,
                        },
                        "children": {g: {"hosts": {"localhost": None}} for g in groups},
                    }
                }
            )
        )
    res = ansible_playbook("-i", str(inventory), "playbooks/validate.yml")
    return res.returncode, " ".join((res.stdout + res.stderr).split())


def test_all_secrets_set_passes(tmp_path):
    rc, out = _validate(tmp_path, SECRETS)
    assert rc == 0, out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"passerelle_greylist_db_secret": None}, "passerelle_greylist_db_secret"),
        ({"passerelle_greylist_db_secret": "short"}, "passerelle_greylist_db_secret"),
        # An undefined vault variable behind the secret is a missing secret.
        (
            {"passerelle_greylist_db_secret": "{{ vault_passerelle_greylist_db_secret }}"},
            "passerelle_greylist_db_secret",
        ),
        ({"nagios_admin_password": "1234"}, "nagios_admin_password"),
        ({"nagios_admin_password": None}, "nagios_admin_password"),
        ({"passerelle_console_accounts": []}, "passerelle_console_accounts"),
        ({"passerelle_console_accounts": None}, "passerelle_console_accounts"),
        ({"passerelle_console_session_secret": "short"}, "passerelle_console_session_secret"),
        (
            {"passerelle_console_session_secret": "{{ vault_passerelle_console_session_secret }}"},
            "passerelle_console_session_secret",
        ),
        (
            {"passerelle_ldap": {**SECRETS["passerelle_ldap"], "bind_password": ""}},
            "passerelle_ldap.bind_password",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_missing_secret_stops_the_run_naming_it(tmp_path, change, named):
    host_vars = {k: v for k, v in {**SECRETS, **change}.items() if v is not None}
    rc, out = _validate(tmp_path, host_vars)
    assert rc != 0, out
    assert f"needs the secret {named}" in out, out
    # The values never reach the output.
    for value in ("0123456789abcdef-test", "not-a-real-password"):
        assert value not in out


def test_console_ldap_login_needs_the_directorys_bind_password(tmp_path):
    """A monitoring host alone: its console binds to the directory only for LDAP logins."""
    ldap = {**SECRETS["passerelle_ldap"], "bind_password": ""}
    host_vars = {**SECRETS, "passerelle_ldap": ldap}
    rc, out = _validate(tmp_path, host_vars, groups=("monitoring",))
    assert rc == 0, out  # no LDAP login: the console does not bind
    host_vars["console_ldap_viewer_group"] = "cn=console-viewers,dc=test"
    rc, out = _validate(tmp_path, host_vars, groups=("monitoring",))
    assert rc != 0 and "needs the secret passerelle_ldap.bind_password" in out, out


def test_production_example_without_its_vault_names_the_secrets(tmp_path):
    """The example inventory as shipped (no vault file): the run stops naming what to set."""
    rc, out = _validate(tmp_path, {}, inventory=ROOT / "inventory/production")
    assert rc != 0, out
    assert "needs the secret passerelle_greylist_db_secret" in out
    assert "needs the secret nagios_admin_password" in out
    assert "needs the secret passerelle_ldap.bind_password" in out
    assert "needs the secret passerelle_console_session_secret" in out
    assert "needs the secret passerelle_console_accounts" in out
