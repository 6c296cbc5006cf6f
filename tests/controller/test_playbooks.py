"""site.yml (and the lab's playbooks/lab/site.yml) against both inventories: syntax, and bad
fleet data stopping the run before any host is touched (the validate play needs no
connection, so no container is involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_render import ansible_playbook, assert_lab_run_stops_in_validation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("inventory", "playbook"),
    [
        ("inventory/production", "site.yml"),
        ("inventory/lab", "site.yml"),
        ("inventory/lab", "playbooks/lab/site.yml"),
    ],
)
def test_syntax_check(inventory, playbook):
    res = ansible_playbook("-i", inventory, "--syntax-check", playbook)
    assert res.returncode == 0, res.stdout + res.stderr


BAD = [
    (
        {
            "passerelle_domains": [
                {"name": "ok.test", "server": "m1"},
                {"name": "exa mple.org", "server": "m1"},
            ]
        },
        "exa mple.org",
    ),
    (
        {
            "passerelle_domains": [
                {"name": "a.test", "server": "m1"},
                {"name": "A.test", "server": "m2"},
            ]
        },
        "A.test",
    ),
    ({"passerelle_domains": [{"name": "a.test", "routing": "carrier-pigeon"}]}, "carrier-pigeon"),
    # An LDAP-routed domain without the directory's settings (the lab has them: drop them).
    (
        {"passerelle_domains": [{"name": "a.test", "routing": "ldap"}], "passerelle_ldap": {}},
        "a.test",
    ),
    (
        {
            "passerelle_domains": [{"name": "ldap-x.test", "routing": "ldap"}],
            "passerelle_ldap": {"uri": "ldap://d", "base": "dc=x", "bind_dn": "cn=gw,dc=x"},
        },
        # the secrets check comes first and names the missing one (tests/controller/test_secrets.py)
        "needs the secret passerelle_ldap.bind_password",
    ),
    (
        {
            "passerelle_domains": [{"name": "ldap-x.test", "routing": "ldap"}],
            "passerelle_ldap": {"uri": "http://d", "base": "dc=x"},
        },
        "http://d",
    ),
    # No LDAP-routed domain: the console's LDAP login (the lab's groups) still checks it.
    (
        {
            "passerelle_domains": [{"name": "static-a.test", "server": "mailstore1"}],
            "passerelle_ldap": {"uri": "ldapx://d", "base": "dc=x"},
        },
        "ldapx://d",
    ),
    ({"passerelle_blacklist": ["192.0.2.300"]}, "192.0.2.300"),
    ({"passerelle_blacklist": [{"entry": "10.0.0.1/8"}]}, "10.0.0.1/8"),
    ({"passerelle_smtpx_allowed_networks": ["not a network!"]}, "not a network!"),
    ({"passerelle_spam_learn_addresses": {"spam": "spam@static-a.test"}}, "static-a.test"),
    ({"passerelle_spam_learn_addresses": {"junk": "junk@learn.test"}}, "spam: ADDRESS"),
    # A 2 GB relay profile cannot hold a gateway's daemons (docs/sizing.md).
    ({"passerelle_hardware": "smtpx-2008"}, "gw1: planned memory 2202 MB exceeds its 2048 MB"),
    # An override counts in the plan: 40 spamd children of 100 MB on a 4 GB lab gateway.
    ({"spamassassin_max_children": 40}, "gw1: planned memory"),
    ({"clamav_max_threads": "lots"}, "clamd max_threads must be a positive integer"),
    ({"spamassassin_max_spare": "all"}, "spamd max_spare must be a positive integer"),
]


@pytest.mark.parametrize(("extra", "named"), BAD, ids=[b[1] for b in BAD])
def test_bad_fleet_data_fails_before_any_host_changes(extra, named):
    assert_lab_run_stops_in_validation(extra, named)


def test_no_role_task_relies_on_run_once():
    """site.yml builds every group in one play, each role with a `when` on the host's groups:
    a run_once task is then skipped for every host when the play's first host (db1) does not
    take the role (the wheel build and the schema migrations were skipped that way)."""
    offenders = [
        str(f.relative_to(ROOT))
        for f in sorted(ROOT.glob("roles/*/tasks/*.yml"))
        if "run_once:" in f.read_text()
    ]
    assert offenders == []
