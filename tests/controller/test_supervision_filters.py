"""Supervision filters: the checks of a host from its inventory groups (NRPE, Nagios, watch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from plugins import load

ROOT = Path(__file__).resolve().parents[2]
sv = load("filter_plugins/passerelle_supervision.py")


def names(checks):
    return [c["name"] for c in checks]


def test_gateway_checks_cover_every_daemon_and_milter():
    checks = sv.passerelle_checks(["gateways"], {}, ["db1"], os_family="Debian")
    n = names(checks)
    for want in ("load", "disk", "memory", "mail_queue", "signatures", "connwatch", "restarts"):
        assert want in n
    for d in ("sendmail", "greylist", "antivirus", "spam", "spamd", "clamd", "freshclam"):
        assert f"proc_{d}" in n
    for m in ("greylist", "antivirus", "spam"):
        assert f"milter_{m}" in n
    assert "shared_db_db1" in n
    assert "proc_mariadb" not in n and "proc_slapd" not in n


def test_thresholds_per_kind_and_overrides():
    def queue_cmd(groups, settings=None):
        return next(
            c["command"]
            for c in sv.passerelle_checks(groups, settings, os_family="Debian")
            if c["name"] == "mail_queue"
        )

    assert "-w 500 -c 2000" in queue_cmd(["gateways"])
    assert "-w 1000 -c 5000" in queue_cmd(["smtpx"])
    assert "-w 200 -c 1000" in queue_cmd(["mailstores"])
    assert "-w 5 -c 50" in queue_cmd(["gateways"], {"queue_warning": 5, "queue_critical": 50})


def test_other_kinds():
    assert "proc_mariadb" in names(sv.passerelle_checks(["greylist_db"], os_family="Debian"))
    assert "proc_slapd" in names(sv.passerelle_checks(["ldap"], os_family="Debian"))
    assert "proc_slapd" in names(sv.passerelle_checks(["greylist_db", "ldap"], os_family="Debian"))
    smtpx = names(sv.passerelle_checks(["smtpx"], {}, ["db1"], os_family="Debian"))
    assert "milter_antivirus" in smtpx and "milter_greylist" not in smtpx
    assert "shared_db_db1" not in smtpx
    assert sv.passerelle_checks(["internet"], os_family="Debian") == []


def test_root_checks_are_marked_sudo():
    sudo = {c["name"] for c in sv.passerelle_checks(["gateways"], os_family="Debian") if c["sudo"]}
    assert sudo == {"mail_queue", "milter_greylist", "milter_antivirus", "milter_spam", "backup"}


def test_milter_socket_override():
    checks = sv.passerelle_checks(
        ["smtpx"], {"milter_sockets": {"antivirus": "inet:9@h"}}, os_family="Debian"
    )
    cmd = next(c["command"] for c in checks if c["name"] == "milter_antivirus")
    assert "--socket inet:9@h" in cmd


def test_bad_settings_are_named():
    with pytest.raises(AnsibleFilterError, match="queu_warning"):
        sv.passerelle_checks(["gateways"], {"queu_warning": 5}, os_family="Debian")
    with pytest.raises(AnsibleFilterError, match="queue_critical"):
        sv.passerelle_checks(
            ["gateways"], {"queue_warning": 50, "queue_critical": 5}, os_family="Debian"
        )
    with pytest.raises(AnsibleFilterError, match="disk_critical"):
        sv.passerelle_checks(
            ["gateways"], {"disk_warning": 5, "disk_critical": 15}, os_family="Debian"
        )


def test_watch_units():
    units = sv.passerelle_watch_units(["smtpx"], os_family="Debian")
    assert units == [
        "sendmail.service",
        "passerelle-antivirus.service",
        "clamav-daemon.service",
        "clamav-freshclam.service",
        "nagios-nrpe-server.service",
    ]
    assert sv.passerelle_watch_units(["internet"], os_family="Debian") == []


def test_networks_only():
    got = sv.passerelle_networks_only(["10.0.0.0/26", "mx.example", "10.1.1.1", "::1/128"])
    assert got == ["10.0.0.0/26", "10.1.1.1/32", "::1/128"]


def test_backup_age_is_checked_where_backups_are_made():
    for groups in (["gateways"], ["smtpx"], ["greylist_db"]):
        (cmd,) = [
            c["command"]
            for c in sv.passerelle_checks(groups, os_family="Debian")
            if c["name"] == "backup"
        ]
        assert cmd.endswith("check backup --max-age 26h"), cmd
    for groups in (["ldap"], ["monitoring"], ["mailstores"]):
        assert "backup" not in names(sv.passerelle_checks(groups, os_family="Debian"))
    custom = sv.passerelle_checks(["greylist_db"], {"backup_max_age": "50h"}, os_family="Debian")
    assert any(c["command"].endswith("--max-age 50h") for c in custom)


def test_watch_units_on_el():
    """EL's names come from the NRPE role's vars/RedHat.yml (the unit of clamd, NRPE)."""
    assert sv.passerelle_watch_units(["smtpx"], os_family="RedHat") == [
        "sendmail.service",
        "passerelle-antivirus.service",
        "clamd@scan.service",
        "clamav-freshclam.service",
        "nrpe.service",
    ]
    cmds = [c["command"] for c in sv.passerelle_checks(["gateways"], os_family="RedHat")]
    assert "/usr/lib64/nagios/plugins/check_procs -c 1: -a '/usr/bin/spamd'" in cmds
    assert not [c for c in cmds if "/usr/lib/nagios/" in c]


def test_an_unknown_os_family_is_named():
    for family in (None, "", "Suse", "../../etc"):
        with pytest.raises(AnsibleFilterError, match="os_family"):
            sv.passerelle_checks(["gateways"], os_family=family)


def test_the_console_host_checks_the_console():
    """The monitoring hosts run the web console (role console): its process, kept running by
    the process watch, and its own check (answering, its database, the gateways' reports),
    run as root (console.toml is the console's group's only)."""
    checks = {c["name"]: c for c in sv.passerelle_checks(["monitoring"], os_family="Debian")}
    proc = checks["proc_console"]
    assert proc["description"] == "Process web console"
    assert proc["unit"] == "passerelle-console.service"
    assert proc["command"].endswith("check_procs -c 1: -a 'console serve'")
    check = checks["console"]
    assert check["description"] == "Web console"
    assert check["sudo"] is True
    assert check["command"] == (
        "/usr/local/bin/passerelle check console --config /etc/passerelle/console.toml"
        " --stale 3m --critical 15m --request-age 5m"
    )
    custom = sv.passerelle_checks(
        ["monitoring"], {"console_stale": "5m", "console_request_age": "1h"}, os_family="Debian"
    )
    cmd = next(c["command"] for c in custom if c["name"] == "console")
    assert "--stale 5m --critical 15m --request-age 1h" in cmd
    assert "passerelle-console.service" in sv.passerelle_watch_units(
        ["monitoring"], os_family="Debian"
    )
    for groups in (["gateways"], ["smtpx"], ["greylist_db"], ["ldap"]):
        assert "console" not in names(sv.passerelle_checks(groups, os_family="Debian"))
