"""The Nagios web UI's certificate and key (role nagios, served by Apache over HTTPS only) are
checked by playbooks/validate.yml before any host changes, with the STARTTLS filter
(filter_plugins/passerelle_tls.py). Run against a throwaway inventory (connection local: the
validate play gathers no facts and runs only assert on the controller, so no host is
touched)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from tls_material import pair

from ansible_render import ansible_playbook

HOST = "nagios-a.example.test"
TASK = "TASK [Validate the Nagios web UI's certificate and key]"


def _validate(tmp_path: Path, host_vars: dict, groups: tuple[str, ...] = ("monitoring",)):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "local",
                        "nagios_admin_password": "not-a-real-password",
                        "passerelle_console_accounts": [{"name": "admin", "role": "admin"}],
                        "passerelle_console_session_secret": "not-a-real-password" * 2,
                        **host_vars,
                    },
                    "children": {g: {"hosts": {HOST: None}} for g in groups},
                }
            }
        )
    )
    res = ansible_playbook("-i", str(inventory), "playbooks/validate.yml")
    return res.returncode, " ".join((res.stdout + res.stderr).split())


def _tls(cert: str, key: str) -> dict[str, str]:
    return {"nagios_tls_certificate": cert, "nagios_tls_private_key": key}


def test_a_matching_valid_pair_passes(tmp_path):
    rc, out = _validate(tmp_path, _tls(*pair(HOST)))
    assert rc == 0, out
    # the check ran on the monitoring host (it was not skipped)
    assert TASK in out, out
    assert out.split(TASK, 1)[1].lstrip(" *").startswith(f"ok: [{HOST}]"), out


def test_an_unset_pair_passes(tmp_path):
    # the role's defaults: the role itself asks for them (roles/nagios/tasks/main.yml)
    rc, out = _validate(tmp_path, _tls("", ""))
    assert rc == 0, out


def _bad() -> list[tuple[dict[str, str], str]]:
    cert, key = pair(HOST)
    _, other_key = pair("other")
    old_cert, old_key = pair(
        HOST, datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30), 10
    )
    return [
        (_tls(cert, other_key), "nagios_tls_certificate (CN=nagios-a.example.test) does not match"),
        (_tls(old_cert, old_key), "nagios_tls_certificate (CN=nagios-a.example.test) expired on"),
        (_tls(cert, "not a key"), "nagios_tls_private_key is not an unencrypted PEM private key"),
        (_tls("not a certificate", key), "nagios_tls_certificate is not a PEM certificate"),
        (_tls(cert, ""), "nagios_tls_private_key is empty but"),
    ]


BAD = _bad()


@pytest.mark.parametrize(("tls", "named"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_pair_stops_the_run_naming_the_variable_and_the_host(tmp_path, tls, named):
    rc, out = _validate(tmp_path, tls)
    assert rc != 0, out
    assert f"{HOST}: {named}" in out, out
    # the key's text never shows
    assert "PRIVATE KEY-----" not in out.replace("-----BEGIN PRIVATE KEY----- ...", "")


def test_hosts_without_nagios_are_not_checked(tmp_path):
    """The lab and production inventories set the pair in group_vars/all: only the monitoring
    hosts serve it."""
    cert, _ = pair(HOST)
    _, other_key = pair("other")
    rc, out = _validate(tmp_path, _tls(cert, other_key), groups=("ldap",))
    assert rc == 0, out


def test_the_lab_validates_before_its_certificates_are_made(tmp_path):
    # A fresh controller has no lab PKI until playbooks/lab/create.yml runs pki.yml: the lab's
    # inventory must still pass validation (the controller tests run it before any lab), as
    # its STARTTLS material already does (inventory/lab/group_vars/all/tls.yml).
    res = ansible_playbook(
        "-i",
        "inventory/lab",
        "playbooks/validate.yml",
        env={"PASSERELLE_LAB_PKI": str(tmp_path / "no-pki-yet")},
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, out
    assert "mon1.crt" not in out
