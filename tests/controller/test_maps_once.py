"""passerelle_domains is validated once per host per run: the validate play builds the model
(passerelle_fleet_model, fact passerelle_routing) and the roles derive every map from it.

Counted with the filter's PASSERELLE_MAPS_COUNT log (one line per validation, across Ansible's
forked workers). Before the model, the sendmail role alone validated the list 12 times per
gateway (46 validations for this run of 9 hosts; now 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ansible_render import ansible_playbook
from plugins import load

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pm = load("filter_plugins/passerelle_maps.py")

DOMAINS = [
    {"name": "static-a.test", "server": "mailstore1"},
    {"name": "port.test", "server": "[192.0.2.5]", "port": 2525},
    {"name": "ldap-a.test", "routing": "ldap"},
    {"name": "ldap-b.test", "routing": "ldap"},
]
LDAP = {"uri": "ldap://ldap1", "base": "dc=x", "bind_dn": "cn=gw,dc=x", "bind_password": "pw"}
LEARN = [{"address": "spam@learn.test", "user": "passerelle-learn-spam"}]


def test_the_model_validates_once_and_the_maps_do_not_validate_again():
    before = pm.VALIDATIONS
    model = pm.passerelle_fleet_model(DOMAINS, LDAP, LEARN)
    assert before + 1 == pm.VALIDATIONS
    derived = {
        "mailertable": pm.passerelle_mailertable(model),
        "port_mailers": pm.passerelle_port_mailers(model),
        "relay_domains": pm.passerelle_relay_domains(model),
        "ldap_domains": pm.passerelle_ldap_domains(model),
        "access": pm.passerelle_access([], relay_domains=model["relay_domains"]),
        "local": pm.passerelle_local_addresses(LEARN, model),
    }
    assert before + 1 == pm.VALIDATIONS
    # The same maps as the filters give from the raw list (which they validate).
    assert model["mailertable"] == [*pm.passerelle_mailertable(DOMAINS), ["learn.test", "local:"]]
    assert derived["mailertable"] == pm.passerelle_mailertable(DOMAINS)
    assert model["port_mailers"] == derived["port_mailers"] == pm.passerelle_port_mailers(DOMAINS)
    assert model["relay_domains"] == [*pm.passerelle_relay_domains(DOMAINS), "learn.test"]
    assert model["ldap_domains"] == derived["ldap_domains"] == ["ldap-a.test", "ldap-b.test"]
    assert model["ldap"] == pm.passerelle_ldap_settings(LDAP)
    assert model["local_aliases"] == [["spam", "passerelle-learn-spam"]]
    assert json.loads(json.dumps(model)) == model  # a plain fact


def test_no_ldap_domain_no_ldap_settings():
    model = pm.passerelle_fleet_model(DOMAINS[:1], None)
    assert model["ldap"] == {} and model["ldap_domains"] == []


PLAY = """
- name: Validate
  ansible.builtin.import_playbook: {root}/playbooks/validate.yml
- name: The map variables of the sendmail and ldap_route roles
  hosts: gw1,gw2,smtpx1
  gather_facts: false
  vars:
    sendmail_hardware: gwx-2008
    __passerelle_host: "{{{{ group_names | passerelle_host(lab=true) }}}}"
    sendmail_kind: "{{{{ __passerelle_host.sendmail_kind }}}}"
  tasks:
    - name: OS variables
      ansible.builtin.include_vars: {root}/roles/sendmail/vars/Debian.yml
    - name: Sendmail's maps
      ansible.builtin.include_role:
        name: sendmail
        tasks_from: variables.yml
    - name: The route daemon's settings
      ansible.builtin.include_role:
        name: ldap_route
        tasks_from: variables.yml
      when: "'gateways' in group_names"
"""


def test_a_run_validates_the_domains_once_per_host(tmp_path):
    playbook = tmp_path / "count.yml"
    playbook.write_text(PLAY.format(root=ROOT))
    log = tmp_path / "validations"
    res = ansible_playbook(
        "-i", "inventory/lab/hosts.yml", str(playbook), env={"PASSERELLE_MAPS_COUNT": str(log)}
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sizes = Counter(int(line.split()[1]) for line in log.read_text().splitlines())
    hosts = 9  # the lab inventory: the validate play runs on every host
    # passerelle_domains (3 entries in the lab): once per host, in the validate play, and
    # never again in the roles; passerelle_smtpx_routes (2 entries: internet.test and the
    # TLS-required tls-required.test): once per host in the validate play, once more in
    # smtpx1's sendmail role (its own list).
    assert sizes == {3: hosts, 2: hosts + 1}, sizes


def test_ansible_loads_the_filters_and_their_loader_without_a_warning():
    """Ansible imports every .py of filter_plugins as a plugin ("Skipping plugin ... has no
    attribute 'FilterModule'" otherwise): the shared loader is one, with no filter."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    expr = (
        '{{ ([{"name": "a.test", "server": "m"}] | passerelle_fleet_model).mailertable }} '
        '{{ "gwx-2008" | passerelle_sizing(["gateways"]) | length > 0 }} '
        '{{ ["gateways"] | passerelle_checks(os_family="Debian") | length > 0 }}'
    )
    res = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", "debug", "-a", f"msg='{expr}'"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "esmtp:[m]" in out and "True True" in out, out
    assert "WARNING" not in out, out
    loader = sys.modules.get("_passerelle_load")
    assert loader is not None and loader.FilterModule().filters() == {}
