"""Role console: the database URLs it renders agree with the users role mariadb creates
(names and passwords derived from the same secret), SQLite without a database host, and the
Apache location proxies to the address the console listens on (loopback)."""

from __future__ import annotations

import hashlib
import json
import re

import tomllib  # the controller runs Python 3.11+
import yaml

from ansible_render import ROLES, ansible_playbook, inventory_vars, render

SERVER = "etc/passerelle/console.toml.j2"
GATEWAY = "etc/passerelle/console-gateway.toml.j2"


def _password(user: str) -> str:
    secret = inventory_vars("db1")["passerelle_greylist_db_secret"]
    return hashlib.sha256(f"{secret}:{user}".encode()).hexdigest()[:32]


def test_console_and_gateways_use_mariadbs_users_and_passwords():
    server = tomllib.loads(render("console", SERVER, "mon1"))["console"]["database"]
    assert server == f"mysql://console:{_password('console')}@db1:3306/passerelle_console"
    for gw in ("gw1", "gw2"):
        url = tomllib.loads(render("console", GATEWAY, gw))["gateway_sync"]["database"]
        user = f"console_gw_{gw}"
        assert url == f"mysql://{user}:{_password(user)}@db1:3306/passerelle_console"


def _mariadb_console_users(tmp_path) -> list[dict]:
    """Role mariadb's console users for the lab's db1, as a play evaluates them."""
    play = tmp_path / "users.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "db1",
                    "gather_facts": False,
                    "tasks": [
                        {"ansible.builtin.include_vars": str(ROLES / "mariadb" / f)}
                        for f in ("defaults/main.yml", "vars/main.yml")
                    ]
                    + [{"ansible.builtin.debug": {"var": "__mariadb_console_users"}}],
                }
            ]
        )
    )
    res = ansible_playbook(
        "-i", "inventory/lab", str(play), env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    task = json.loads(res.stdout)["plays"][0]["tasks"][-1]
    return task["hosts"]["db1"]["__mariadb_console_users"]


def test_mariadb_creates_the_same_users_with_least_privileges(tmp_path):
    users = {u["name"]: u for u in _mariadb_console_users(tmp_path)}
    assert set(users) == {"console", "console_gw_gw1", "console_gw_gw2"}
    for name, u in users.items():
        assert u["password"] == _password(name), name
    # The console may create its tables; the gateways' users only read and write rows.
    console_priv = users["console"]["priv"].split(":")
    assert console_priv[0] == "passerelle_console.*"
    assert {"CREATE", "ALTER", "INDEX"} <= set(console_priv[1].split(","))
    for gw in ("gw1", "gw2"):
        assert users[f"console_gw_{gw}"]["priv"] == "passerelle_console.*:SELECT,INSERT,UPDATE"
    # Each from its own host's address in the lab (console_db_client_host of mon1,
    # greylist_db_client_host of each gateway), not from anywhere.
    assert users["console"]["host"].endswith(".61"), users["console"]["host"]
    assert users["console_gw_gw1"]["host"].endswith(".11"), users["console_gw_gw1"]["host"]


def test_without_a_database_host_sqlite_and_its_folder_writable():
    text = render("console", SERVER, "mon1", __console_db_host="")
    db = tomllib.loads(text)["console"]["database"]
    assert db == "sqlite:////var/lib/passerelle-console/console.sqlite"
    unit = render(
        "console", "etc/systemd/system/passerelle-console.service.j2", "mon1", __console_db_host=""
    )
    assert "ReadWritePaths=/var/lib/passerelle-console" in unit
    # With MariaDB, the console writes nowhere on disk.
    assert "ReadWritePaths" not in render(
        "console", "etc/systemd/system/passerelle-console.service.j2", "mon1"
    )


def test_apache_proxies_to_the_loopback_address_the_console_listens_on():
    listen = tomllib.loads(render("console", SERVER, "mon1"))["console"]["listen"]
    assert listen.startswith("127.0.0.1:")
    conf = render("console", "etc/apache/console.conf.j2", "mon1")
    assert re.search(rf'ProxyPass "http://{re.escape(listen)}/"', conf), conf
    assert '<Location "/console/">' in conf
    unit = render("console", "etc/systemd/system/passerelle-console.service.j2", "mon1")
    assert "User=passerelle-console" in unit and "CapabilityBoundingSet=\n" in unit


def test_gateway_sync_writes_the_runtime_rules_file_the_milter_reads():
    """The gateway's side writes the file the antivirus milter loads (the same path), in a
    folder its sandbox may write, for the milter's group; and the outbreak state's folder."""
    sync = tomllib.loads(render("console", GATEWAY, "gw1"))["gateway_sync"]
    milter = tomllib.loads(render("antivirus", "etc/passerelle/antivirus.toml.j2", "gw1"))
    defaults = yaml.safe_load((ROLES / "antivirus/defaults/main.yml").read_text())
    assert sync["runtime_rules"] == milter["antivirus"]["runtime_rules"]
    assert sync["runtime_rules"] == defaults["antivirus_runtime_rules"]
    assert sync["runtime_rules_group"] == "passerelle"
    unit = render("console", "etc/systemd/system/passerelle-console-sync.service.j2", "gw1")
    paths = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert paths is not None
    folder = sync["runtime_rules"].rsplit("/", 1)[0]
    assert f"-{folder}" in paths.group(1).split()
    state = milter["antivirus"]["outbreak_state"].rsplit("/", 1)[0]
    assert f"-{state}" in paths.group(1).split()


def test_gateway_sync_ships_the_mail_log_connwatch_reads_and_may_save_its_offset(tmp_path):
    """The message trace reads the same mail log as the connection guard, the package
    accepts the rendered keys, and the offset's folder is writable in the sandbox."""
    from passerelle.console.gateway_sync import load_config

    text = render("console", GATEWAY, "gw1")
    (tmp_path / "gw.toml").write_text(text)
    cfg = load_config(str(tmp_path / "gw.toml"))
    assert cfg.mail_log == "/var/log/mail.log"
    sync = tomllib.loads(text)["gateway_sync"]
    guard = tomllib.loads(render("connwatch", "connwatch.toml.j2", "gw1"))
    assert [sync["mail_log"]] == guard["connwatch"]["logs"]
    server = tomllib.loads(render("console", SERVER, "mon1"))["console"]
    assert server["trace_retention"] == "7d"  # the console purges: gateways may not delete
    unit = render("console", "etc/systemd/system/passerelle-console-sync.service.j2", "gw1")
    paths = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert paths is not None
    assert "-" + sync["trace_state"].rsplit("/", 1)[0] in paths.group(1).split()


def test_ldap_login_uses_the_routings_directory_and_the_labs_groups(tmp_path):
    """[ldap] from passerelle_ldap (its uri, service bind and timeout) and the console's
    groups, whose DNs the lab's slapd creates; the package reads it (its own parser)."""
    from passerelle.console.server import load_config

    lab = inventory_vars("mon1")
    ldap = tomllib.loads(render("console", SERVER, "mon1"))["ldap"]
    directory = lab["passerelle_ldap"]
    assert (ldap["uri"], ldap["bind_dn"], ldap["base"]) == (
        directory["uri"],
        directory["bind_dn"],
        directory["base"],
    )
    assert ldap["timeout"] == "5s" and ldap["user_filter"] == "(uid={name})"
    assert ldap["password_file"] == "/etc/passerelle/console-ldap.secret"
    assert ldap["recheck"] == "30s"  # the lab's console_ldap_recheck (test_84 waits for it)
    slapd = inventory_vars("ldap1")
    # the group DNs are the console's own variables there (one place), unrendered here
    groups = {slapd[g["dn"].strip("{} ")]: g["members"] for g in slapd["slapd_groups"]}
    assert groups[ldap["admin_group"]] == ["lea"] and groups[ldap["viewer_group"]] == ["leo"]
    assert {u["uid"] for u in slapd["slapd_login_users"]} >= {"lea", "leo", "noa"}
    # the package accepts it (a copy of the service bind's password beside it)
    secret = tmp_path / "console-ldap.secret"
    secret.write_text(directory["bind_password"] + "\n")
    secret.chmod(0o640)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(render("console", "etc/passerelle/console-accounts.toml.j2", "mon1"))
    key = tmp_path / "console.secret"
    key.write_text(lab["passerelle_console_session_secret"] + "\n")
    key.chmod(0o640)
    text = render(
        "console",
        SERVER,
        "mon1",
        __console_ldap_secret_file=str(secret),
        __console_accounts_file=str(accounts),
        __console_secret_file=str(key),
        __console_db_host="",
    )
    (tmp_path / "console.toml").write_text(text)
    cfg = load_config(str(tmp_path / "console.toml"))
    assert cfg.ldap is not None and cfg.ldap_password == directory["bind_password"]
    assert cfg.ldap.recheck == 30


def test_no_ldap_section_without_passerelle_ldap_or_without_a_group():
    assert "ldap" not in tomllib.loads(render("console", SERVER, "mon1", passerelle_ldap=None))
    no_group = render(
        "console", SERVER, "mon1", console_ldap_admin_group="", console_ldap_viewer_group=""
    )
    assert "ldap" not in tomllib.loads(no_group)


def test_the_guards_over_file_is_written_where_gateway_sync_reads_it(tmp_path):
    """The guard's rendered config names the over file (beside its status file) the package
    accepts; the guard's sandbox may write its folder; gateway-sync reads that same config."""
    from passerelle.connwatch.guard import load_config

    text = render("connwatch", "connwatch.toml.j2", "gw1")
    (tmp_path / "connwatch.toml").write_text(text)
    cfg = load_config(tmp_path / "connwatch.toml")
    assert tomllib.loads(text)["connwatch"]["over_file"] == cfg.over_file
    assert cfg.over_file == "/var/lib/passerelle-status/connwatch-over.json"
    assert cfg.over_file.rsplit("/", 1)[0] == cfg.status_file.rsplit("/", 1)[0]
    unit = render("connwatch", "passerelle-connwatch.service.j2", "gw1")
    paths = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert paths is not None and "-/var/lib/passerelle-status" in paths.group(1).split()
    sync = tomllib.loads(render("console", GATEWAY, "gw1"))["gateway_sync"]
    assert sync["connwatch_config"] == "/etc/passerelle/connwatch.toml"
