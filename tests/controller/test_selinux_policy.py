"""SELinux on EL, proven without an EL host: Passerelle's policy module
(``roles/passerelle_tools/files/passerelle.te``) compiles with the same tools the EL tasks run
(``checkmodule -M -m``, ``semodule_package``; Debian's packages checkpolicy and
semodule-utils, installed by ``scripts/host-setup``: without them these tests fail, they do
not skip), requires only the EL policy names ``os_reference.SELINUX_POLICY`` cites, and the
EL rendering of the tasks labels exactly the folder the milters' and the route daemon's
default sockets are in, and gives every extra SMTP daemon's port sendmail's port type.

What stays unproven here: that EL 9's loaded policy accepts the module (semodule -i) and that
sendmail then reaches the sockets with SELinux enforcing; that needs an EL 9 host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.template import Templar
from os_reference import FACTS, SELINUX_POLICY

import ansible_render
from ansible_render import role_vars, trust

TOOLS = ansible_render.ROLES / "passerelle_tools"
POLICY = TOOLS / "files" / "passerelle.te"
SELINUX_TASKS = TOOLS / "tasks" / "selinux.yml"
SENDMAIL_TASKS = ansible_render.ROLES / "sendmail" / "tasks" / "main.yml"
EL_FAMILY = "RedHat"
EL_ONLY = "ansible_facts['os_family'] == 'RedHat'"
SELINUX_ON = "ansible_facts['selinux']['status'] | default('disabled') == 'enabled'"

# The sockets sendmail connects to in the socket folder: role, variable (its default).
SOCKETS = (
    ("greylist", "greylist_socket"),
    ("antivirus", "antivirus_socket"),
    ("spam_milter", "spam_milter_socket"),
    ("ldap_route", "ldap_route_socket"),
)


# -- compiling the module ----------------------------------------------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install Debian's checkpolicy and semodule-utils"
    return path


def compile_module(source: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The EL tasks' build (checkmodule -M -m, then semodule_package) of ``source``; the
    module's output must be named after it, as on the host."""
    te = workdir / "passerelle.te"
    te.write_text(source)
    out = subprocess.run(
        [_tool("checkmodule"), "-M", "-m", "-o", str(workdir / "passerelle.mod"), str(te)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return out
    return subprocess.run(
        [
            _tool("semodule_package"),
            "-o",
            str(workdir / "passerelle.pp"),
            "-m",
            str(workdir / "passerelle.mod"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_policy_module_compiles(tmp_path: Path) -> None:
    out = compile_module(POLICY.read_text(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "passerelle.pp").stat().st_size > 0


def test_a_broken_policy_module_does_not_compile(tmp_path: Path) -> None:
    """The compile check can fail: a rule naming a type the module neither declares nor
    requires is refused."""
    broken = POLICY.read_text().replace(
        "allow sendmail_t unconfined_service_t", "allow sendmail_t unconfined_servce_t"
    )
    assert broken != POLICY.read_text()
    out = compile_module(broken, tmp_path)
    assert out.returncode != 0
    assert "unconfined_servce_t" in out.stdout + out.stderr


def _statements(source: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def required_names(source: str) -> set[str]:
    """The types and attributes the module's require blocks name (the EL policy's)."""
    names: set[str] = set()
    for block in re.findall(r"require\s*\{([^}]*)\}", _statements(source)):
        for rest in re.findall(r"\b(?:type|attribute)\s+([^;]+);", block):
            names.update(n.strip() for n in rest.split(","))
    return names


def declared_types(source: str) -> set[str]:
    """The types the module declares itself (outside its require blocks)."""
    text = re.sub(r"require\s*\{[^}]*\}", "", _statements(source))
    return set(re.findall(r"^\s*type\s+(\w+)\s*;", text, flags=re.MULTILINE))


def test_the_module_requires_only_cited_policy_names() -> None:
    """Each EL policy name the module depends on is in os_reference.SELINUX_POLICY, with what
    it is and where it was read."""
    names = required_names(POLICY.read_text())
    assert {"sendmail_t", "unconfined_service_t", "milter_data_type"} <= names
    assert names - set(SELINUX_POLICY) == set()


# -- the EL rendering of the tasks ---------------------------------------------------------------
# The shared milter task file's arguments (its callers give them; role_vars reads its set_fact).
MILTER_ARGS = {
    "passerelle_tools_milter_name": "greylist",
    "passerelle_tools_milter_socket": "unix:/run/passerelle/greylist.sock",
    "passerelle_tools_milter_flags": "",
    "passerelle_tools_milter_timeouts": "",
}


def _el_vars(role: str, overrides: dict[str, Any] | None = None) -> Templar:
    variables = role_vars(role, os_family=EL_FAMILY, facts=FACTS["el9"], overrides=overrides)
    loader = ansible_render._inventory(str(ansible_render.LAB))[0]
    return Templar(loader=loader, variables=variables)


def _tasks(path: Path) -> list[dict[str, Any]]:
    """The file's tasks, a block's with the block's conditions added."""
    out = []
    for task in yaml.safe_load(path.read_text()):
        when = task.get("when") or []
        when = when if isinstance(when, list) else [when]
        if "block" in task:
            for sub in task["block"]:
                sub_when = sub.get("when") or []
                sub_when = sub_when if isinstance(sub_when, list) else [sub_when]
                out.append({**sub, "when": [*when, *sub_when]})
        else:
            out.append({**task, "when": when})
    return out


def _task(path: Path, module: str) -> dict[str, Any]:
    (task,) = [t for t in _tasks(path) if module in t]
    return task


def default_socket_folders() -> set[str]:
    """The folders of the milters' and the route daemon's sockets, from the roles' defaults."""
    folders = set()
    for role, name in SOCKETS:
        path = ansible_render.ROLES / role / "defaults" / "main.yml"
        defaults = yaml.safe_load(path.read_text())
        value = Templar(variables=trust(defaults)).template(trust(defaults[name]))
        socket = str(value).removeprefix("unix:")
        assert socket.startswith("/"), f"{role}: {name} is not a unix socket path: {value}"
        folders.add(str(Path(socket).parent))
    return folders


def test_the_file_context_is_the_default_sockets_folder() -> None:
    """sefcontext labels the one folder every default socket is in (a socket moved elsewhere
    would be unlabelled: sendmail_t could not write to it), with the type the module declares,
    and the relabel targets that folder too."""
    (folder,) = default_socket_folders()
    templar = _el_vars("passerelle_tools", MILTER_ARGS)
    fcontext = _task(SELINUX_TASKS, "community.general.sefcontext")["community.general.sefcontext"]
    assert templar.template(trust(fcontext["target"])) == f"{folder}(/.*)?"
    assert fcontext["state"] == "present"
    (module_type,) = declared_types(POLICY.read_text())
    assert fcontext["setype"] == module_type
    relabel = [t for t in _tasks(SELINUX_TASKS) if "ansible.builtin.command" in t]
    (argv,) = [t["ansible.builtin.command"]["argv"] for t in relabel]
    assert argv[0] == "restorecon"
    assert templar.template(trust(argv[-1])) == folder


def test_a_socket_outside_the_labelled_folder_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above sees a default socket moved to another folder."""
    real_load = yaml.safe_load

    def moved(text: str) -> Any:
        data = real_load(text)
        if isinstance(data, dict) and "greylist_socket" in data:
            data = {**data, "greylist_socket": "unix:/run/greylist/greylist.sock"}
        return data

    monkeypatch.setattr(yaml, "safe_load", moved)
    assert default_socket_folders() == {"/run/passerelle", "/run/greylist"}


def test_the_module_is_loaded_only_when_its_source_changed() -> None:
    """Compiled and loaded when the loaded module was not built from the shipped source
    (checksum written after the load), never in check mode's probe."""
    tasks = {t["name"]: t for t in _tasks(SELINUX_TASKS)}
    probe = tasks["Find the source the loaded policy module was built from"]
    load = tasks["Compile and load Passerelle's SELinux policy module"]
    assert probe["check_mode"] is False and probe["changed_when"] is False
    assert "semodule -l" in probe["ansible.builtin.shell"]["cmd"]
    cmd = load["ansible.builtin.shell"]["cmd"]
    for step in ("checkmodule -M -m -o passerelle.mod passerelle.te", "semodule -i passerelle.pp"):
        assert step in cmd
    assert cmd.index("semodule -i") < cmd.index("passerelle.te.sha256")
    assert (
        "__passerelle_tools_selinux_loaded.stdout != __passerelle_tools_selinux_source_sha256"
        in load["when"]
    )
    source_sum = _el_vars("passerelle_tools", MILTER_ARGS).template(
        trust("{{ __passerelle_tools_selinux_source_sha256 }}")
    )
    assert re.fullmatch(r"[0-9a-f]{64}", source_sum)


def test_the_selinux_tasks_run_on_el_with_selinux_only() -> None:
    tasks = _tasks(SELINUX_TASKS)
    assert len(tasks) >= 5
    assert [t["name"] for t in tasks if not {EL_ONLY, SELINUX_ON} <= set(t["when"])] == []
    main = yaml.safe_load((TOOLS / "tasks" / "main.yml").read_text())
    assert any(t.get("ansible.builtin.import_tasks") == "selinux.yml" for t in main)


# -- sendmail's extra daemons ----------------------------------------------------------------------
EXTRA_DAEMONS = [
    {"name": "MSA2", "port": 2525},
    {"name": "SUB", "port": 587, "modifiers": "E"},
    {"name": "ALT", "port": "2526"},
]


def test_seport_gives_every_extra_daemon_port_smtp_port_t() -> None:
    """Each extra daemon's port is labelled smtp_port_t (587, already so in EL's policy, is
    left to seport, which reports no change) and opened in firewalld."""
    templar = _el_vars("sendmail", {"sendmail_extra_daemons": EXTRA_DAEMONS})
    task = _task(SENDMAIL_TASKS, "community.general.seport")
    args = task["community.general.seport"]
    assert args["setype"] == "smtp_port_t" and args["proto"] == "tcp" and args["state"] == "present"
    assert templar.template(trust(args["ports"])) == ["2525", "587", "2526"]
    assert {EL_ONLY, SELINUX_ON} <= set(task["when"])
    names = [t["name"] for t in yaml.safe_load(SENDMAIL_TASKS.read_text())]
    assert names.index(task["name"]) < names.index("Run the sendmail service")
    assert templar.template(trust("{{ __sendmail_firewall_ports }}")) == [
        "25/tcp",
        "2525/tcp",
        "587/tcp",
        "2526/tcp",
    ]


def test_no_extra_daemon_no_seport() -> None:
    templar = _el_vars("sendmail", {"sendmail_extra_daemons": []})
    task = _task(SENDMAIL_TASKS, "community.general.seport")
    conditions = [c for c in task["when"] if c not in (EL_ONLY, SELINUX_ON)]
    assert not all(templar.evaluate_conditional(trust(c)) for c in conditions)


# -- every port a role listens on has the type its daemon may bind -------------------------------
@pytest.mark.parametrize(
    ("role", "setype", "overrides", "ports"),
    [
        ("nrpe", "inetd_child_port_t", {"nrpe_port": 5667}, "5667"),
        ("mariadb", "mysqld_port_t", {"mariadb_port": 3307}, "3307"),
        (
            "spamassassin",
            "spamd_port_t",
            {"spamassassin_listen": ["127.0.0.1:784", "[::1]:784", "/run/spamd/spamd.sock"]},
            ["784"],
        ),
        ("spamassassin", "spamd_port_t", {}, ["783"]),
    ],
)
def test_seport_gives_each_listening_port_its_daemons_type(
    role: str, setype: str, overrides: dict[str, Any], ports: Any
) -> None:
    """A port moved from the policy's default (5666, 3306, 783) is labelled so that the
    daemon may still bind it, before the daemon starts (the task comes before the role's
    configuration and service tasks)."""
    tasks_file = ansible_render.ROLES / role / "tasks" / "main.yml"
    task = _task(tasks_file, "community.general.seport")
    args = task["community.general.seport"]
    assert args["setype"] == setype and args["proto"] == "tcp" and args["state"] == "present"
    templar = _el_vars(role, overrides)
    assert templar.template(trust(args["ports"])) == ports
    assert {EL_ONLY, SELINUX_ON} <= set(task["when"])
    names = [t["name"] for t in yaml.safe_load(tasks_file.read_text())]
    later = [n for n in names if n.startswith(("Configure", "Enable and start", "Run ", "Build"))]
    assert later and all(names.index(task["name"]) < names.index(n) for n in later)


def test_every_seport_type_is_cited() -> None:
    used = {
        t["community.general.seport"]["setype"]
        for path in sorted(ansible_render.ROLES.glob("*/tasks/*.yml"))
        for t in _tasks(path)
        if "community.general.seport" in t
    }
    assert used == {"smtp_port_t", "inetd_child_port_t", "mysqld_port_t", "spamd_port_t"}
    assert used - set(SELINUX_POLICY) == set()
