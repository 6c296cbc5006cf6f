"""gw2 is deployed the production way (inventory/lab/host_vars/gw2.yml): Ansible reaches it as
the unprivileged user deploy and becomes root through sudo; the other hosts keep root."""

import testinfra
from labsmtp import PREFIX


def _host(name):
    return testinfra.get_host(f"podman://{PREFIX}{name}")


def test_deploy_user_has_passwordless_sudo_on_gw2():
    host = _host("gw2")
    assert host.user("deploy").exists
    sudoers = host.file("/etc/sudoers.d/passerelle-deploy")
    assert sudoers.user == "root" and sudoers.mode == 0o440
    assert host.run("visudo -cqf /etc/sudoers.d/passerelle-deploy").rc == 0
    res = host.run("runuser -u deploy -- sudo -n true")
    assert res.rc == 0, res.stderr


def test_ansible_connected_to_gw2_as_deploy():
    # Ansible's remote temporary folder is made by the user it connects as.
    tmp = _host("gw2").file("/home/deploy/.ansible")
    assert tmp.is_directory and tmp.user == "deploy"


def test_other_hosts_keep_root():
    assert not _host("gw1").user("deploy").exists
