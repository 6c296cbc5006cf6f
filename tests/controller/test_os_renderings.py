"""Render tests per OS: every role's OS variables, package list, templates and unit files
rendered with Debian 12, Debian 13 and EL 9 facts (``os_reference.FACTS``), the way Ansible
would (``tests/ansible_render.py``), and checked against the table of the real names
(``os_reference.REFERENCE``, each EL value with its source).

- ``variable_mismatches``: each OS variable of a role, templated for an OS, must be the
  table's value for that OS (the role's ``vars/<os_family>.yml`` is what is read).
- ``package_mismatches``: the list the role adds to the host's one install
  (``tasks/packages.yml``, ``passerelle_packages_wanted``) must hold the table's packages.
- ``rendering_leaks``: no template of the role (configs, unit files, drop-ins, scripts)
  rendered for an OS may hold a name only the other family uses: a Debian-only name in an EL
  rendering (``clamav-daemon``, ``/usr/lib/nagios/plugins``, ``/var/log/mail.log``...), or an
  EL-only name in a Debian rendering.

``test_no_debian_name_outside_the_debian_table``: no line of a role's tasks, handlers,
defaults, templates or ``vars/main.yml`` (comments aside) holds a Debian-only name.

``test_a_debian_name_in_el_vars_is_caught``: the same checks, run on a copy of the roles whose
EL table was broken on purpose (Debian's values in ``roles/resolver/vars/RedHat.yml``), must
report it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.template import Templar
from os_reference import (
    DEBIAN_OSES,
    FACTS,
    OS_ROLES,
    OSES,
    REFERENCE,
    Name,
    debian_only_tokens,
    leaks,
)
from tls_material import rsa_key_pem

import ansible_render
from ansible_render import LAB, inventory_vars, render, role_vars

# The lab host each role is rendered for, and what the play gives the role (playbooks/fleet.yml
# from the component table).
HOSTS = {
    "mariadb": "db1",
    "nagios": "mon1",
    "slapd": "ldap1",
    "clamav_lab_mirror": "outside",
    "backup": "db1",
    "dkim_signer": "smtpx1",
}
PLAY_VARS: dict[str, dict[str, Any]] = {
    # a signing domain (without one the role installs nothing)
    "dkim_signer": {
        "dkim_signer_domains": [
            {"name": "static-a.test", "selector": "s1", "private_key": rsa_key_pem()}
        ]
    },
    "sendmail": {"sendmail_kind": "gateway"},
    "antivirus": {"antivirus_direction": "inbound"},
    "backup": {"backup_parts": ["databases", "config"]},
    # a registered result and a hash the role computes on the host
    "resolver": {"__resolver_resolv_conf": {"changed": False}},
    "nagios": {"__nagios_password_hash": {"stdout": "$6$salt$hash"}},
    # the shared milter task file's arguments (its callers give them)
    "passerelle_tools": {
        "passerelle_tools_milter_name": "greylist",
        "passerelle_tools_milter_config": "/etc/passerelle/greylist.toml",
        "passerelle_tools_milter_socket": "unix:/run/passerelle/greylist.sock",
        "passerelle_tools_milter_flags": "",
        "passerelle_tools_milter_timeouts": "",
    },
}


def _host(role: str) -> str:
    return HOSTS.get(role, "gw1")


def _family(os_id: str) -> str:
    return FACTS[os_id]["os_family"]


def _play_vars(role: str, os_id: str) -> dict[str, Any]:
    out = dict(PLAY_VARS.get(role, {}))
    if role == "nagios":  # the supervised hosts' inventory and facts (a play's hostvars)
        hosts = sorted(
            {
                h
                for g in ("gateways", "smtpx", "greylist_db", "ldap", "monitoring")
                for h in _lab_groups().get(g, [])
            }
        )
        out["hostvars"] = {
            h: {**inventory_vars(h), "ansible_facts": dict(FACTS[os_id])} for h in hosts
        }
    return out


def _lab_groups() -> dict[str, list[str]]:
    return inventory_vars("gw1")["groups"]


def _templated(role: str, os_id: str, roles: Path | None = None) -> dict[str, Any]:
    """The role's variables for ``os_id``, templated (a lazy value fails here if broken)."""
    variables = role_vars(
        role,
        _host(role),
        os_family=_family(os_id),
        overrides=_play_vars(role, os_id),
        facts=FACTS[os_id],
    )
    templar = Templar(loader=ansible_render._inventory(str(LAB))[0], variables=variables)
    return {"__templar": templar, **variables}


def _value(variables: dict[str, Any], name: str) -> Any:
    return variables["__templar"].template(variables[name])


# -- the checks (each returns what is wrong; the tests assert there is nothing) ---------------
def variable_mismatches(role: str, os_id: str) -> list[str]:
    """The role's OS variables whose value for ``os_id`` is not the table's."""
    variables = _templated(role, os_id)
    out = []
    for name, ref in REFERENCE[role].items():
        if name not in variables:
            out.append(f"{role}: {name} is not defined for {os_id}")
            continue
        got, want = _value(variables, name), ref.on(os_id)
        if got != want:
            out.append(f"{role}: {name} is {got!r} on {os_id}, the table says {want!r}")
    return out


def package_mismatches(role: str, os_id: str) -> list[str]:
    """The table's packages of the role missing from the list its packages.yml adds."""
    variables = _templated(role, os_id)
    wanted = _value(variables, "passerelle_packages_wanted")
    want = [
        p
        for name, ref in REFERENCE[role].items()
        if name == f"__{role}_packages"
        for p in ref.on(os_id)
    ]
    return [f"{role}: package {p} is not installed on {os_id}" for p in want if p not in wanted]


def templates(role: str) -> list[str]:
    base = ansible_render.ROLES / role / "templates"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.j2"))


def tokens_of_other_family(os_id: str) -> set[str]:
    """The names of the table only the other OS family uses (none may be in ``os_id``'s
    renderings): for EL, the Debian-only names; for Debian, the EL-only ones."""
    if os_id == "el9":
        return debian_only_tokens()
    # EL-only: swap the roles of the families in the same computation.
    swapped = {
        role: {n: Name(ref.el9, ref.debian12, ref.source, ref.debian13) for n, ref in names.items()}
        for role, names in REFERENCE.items()
    }
    return debian_only_tokens(swapped)


def rendering_leaks(role: str, os_id: str) -> dict[str, list[str]]:
    """Per template of the role: the other family's names found in its rendering for ``os_id``."""
    tokens = tokens_of_other_family(os_id)
    out = {}
    for src in templates(role):
        text = render(
            role,
            src,
            _host(role),
            os_family=_family(os_id),
            facts=FACTS[os_id],
            **_play_vars(role, os_id),
        )
        found = leaks(text, tokens)
        if found:
            out[src] = found
    return out


def _cases() -> Iterator[Any]:
    for role in sorted(REFERENCE):
        for os_id in OSES:
            yield pytest.param(role, os_id, id=f"{role}-{os_id}")


ALL_ROLES = sorted(p.name for p in ansible_render.ROLES.iterdir() if (p / "templates").is_dir())


# -- the table and the roles' tables agree on what is OS-specific ------------------------------
def _os_vars(role: str, family: str) -> dict[str, Any]:
    path = ansible_render.ROLES / role / "vars" / f"{family}.yml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


@pytest.mark.parametrize("role", OS_ROLES)
def test_every_role_with_os_names_has_both_tables(role: str) -> None:
    debian, redhat = _os_vars(role, "Debian"), _os_vars(role, "RedHat")
    assert debian and redhat, f"{role}: vars/Debian.yml and vars/RedHat.yml both needed"
    assert set(debian) == set(redhat), f"{role}: the two tables name different variables"
    main = _os_vars(role, "main")
    assert not set(main or {}) & set(debian), f"{role}: an OS variable also in vars/main.yml"


@pytest.mark.parametrize("role", OS_ROLES)
def test_every_os_name_of_a_role_is_in_the_reference(role: str) -> None:
    """A name added to a role's vars/RedHat.yml needs its real value (and source) here."""
    computed = {
        "__clamav_db_glob",
        "__clamav_db_patterns",
        "__spamassassin_create_user",
        "__spamassassin_ocr_builtin_languages",
        "__spamassassin_pid_file",
        "__clamav_log_dir",
        "__sendmail_mail_local",
    }
    missing = set(_os_vars(role, "RedHat")) - set(REFERENCE[role]) - computed
    assert not missing, f"{role}: not in tests/controller/os_reference.py: {sorted(missing)}"


# -- the renderings ----------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "os_id"), list(_cases()))
def test_role_variables_are_the_os_names(role: str, os_id: str) -> None:
    assert variable_mismatches(role, os_id) == []


@pytest.mark.parametrize(
    ("role", "os_id"),
    [
        pytest.param(r, o, id=f"{r}-{o}")
        for r in sorted(REFERENCE)
        if f"__{r}_packages" in REFERENCE[r]
        for o in OSES
    ],
)
def test_package_list_holds_the_os_packages(role: str, os_id: str) -> None:
    assert package_mismatches(role, os_id) == []


@pytest.mark.parametrize(
    ("role", "os_id"), [pytest.param(r, o, id=f"{r}-{o}") for r in ALL_ROLES for o in OSES]
)
def test_renderings_hold_no_name_of_the_other_family(role: str, os_id: str) -> None:
    assert rendering_leaks(role, os_id) == {}


def test_supervision_of_every_host_uses_the_os_names() -> None:
    """NRPE's commands and the process watch's units on EL: EL's plugins and units only."""
    for os_id in OSES:
        for role, src in (("nrpe", "passerelle.cfg.j2"), ("process_watch", "watch.toml.j2")):
            text = render(role, src, "gw1", os_family=_family(os_id), facts=FACTS[os_id])
            assert leaks(text, tokens_of_other_family(os_id)) == [], (role, os_id)
    el = render("nrpe", "passerelle.cfg.j2", "gw1", os_family="RedHat", facts=FACTS["el9"])
    assert "/usr/lib64/nagios/plugins/check_procs -c 1: -C clamd" in el


# -- tests of the test: a Debian name in an EL table is caught --------------------------------
@pytest.fixture
def roles_with_a_broken_el_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the roles where the resolver's EL table is Debian's (dns-root-data, Debian's
    unbound folder): what a copy-paste of vars/Debian.yml would give."""
    roles = tmp_path / "roles"
    shutil.copytree(ansible_render.ROLES, roles)
    vars_dir = roles / "resolver" / "vars"
    (vars_dir / "RedHat.yml").write_text((vars_dir / "Debian.yml").read_text())
    monkeypatch.setattr(ansible_render, "ROLES", roles)
    return roles


@pytest.mark.usefixtures("roles_with_a_broken_el_table")
def test_a_debian_name_in_el_vars_is_caught() -> None:
    wrong = variable_mismatches("resolver", "el9")
    assert any("__resolver_packages" in w and "dns-root-data" in w for w in wrong), wrong
    assert any("unbound.conf.d" in w for w in wrong), wrong
    # the Debian renderings of the same copy are still right
    assert variable_mismatches("resolver", "debian12") == []


def test_a_debian_name_in_an_el_rendering_is_caught() -> None:
    """A Debian unit name given to an EL rendering of the antivirus milter's unit (what a
    template with a literal clamav-daemon.service would render) is reported."""
    text = render(
        "antivirus",
        "etc/systemd/system/passerelle-antivirus.service.j2",
        os_family="RedHat",
        facts=FACTS["el9"],
        antivirus_direction="inbound",
        __antivirus_clamd_service="clamav-daemon.service",
    )
    assert "clamav-daemon.service" in text
    assert leaks(text, tokens_of_other_family("el9")) == ["clamav-daemon.service"]
    assert (
        leaks(
            text.replace("clamav-daemon.service", "clamd@scan.service"),
            tokens_of_other_family("el9"),
        )
        == []
    )


def test_leaks_match_whole_names_only() -> None:
    tokens = {"/usr/lib/nagios/plugins", "clamav-daemon", "debian"}
    assert leaks("/usr/lib64/nagios/plugins/check_load", tokens) == []
    assert leaks("/usr/lib/nagios/plugins/check_load", tokens) == ["/usr/lib/nagios/plugins"]
    assert leaks("After=clamav-daemon.service", tokens) == []  # a longer name, its own token
    assert leaks("Wants=clamav-daemon", tokens) == ["clamav-daemon"]
    assert leaks("OSTYPE(`debian')", tokens) == ["debian"]
    assert leaks("/etc/debian_version", tokens) == []


def test_debian_oses_differ_only_where_the_debian_table_reads_the_release() -> None:
    """Debian 12 and 13 read the same vars/Debian.yml: a value that differs between them in
    the table must be one that vars/Debian.yml computes from the release (and the per-OS
    tests above check its value on each); any other difference would be a table error."""
    different = {
        f"{role}:{name}"
        for role, names in REFERENCE.items()
        for name, ref in names.items()
        if ref.on(DEBIAN_OSES[0]) != ref.on(DEBIAN_OSES[1])
    }
    by_release = {
        f"{role}:{name}"
        for role in REFERENCE
        if (ansible_render.ROLES / role / "vars" / "Debian.yml").is_file()
        for name, value in (
            yaml.safe_load((ansible_render.ROLES / role / "vars" / "Debian.yml").read_text()) or {}
        ).items()
        if "distribution_major_version" in str(value)
    }
    assert different == by_release


# -- the roles' sources: a Debian-only name lives in vars/Debian.yml and nowhere else -----------
def _source_lines(role: Path) -> Iterator[tuple[Path, int, str]]:
    """Every line of the role that is not a comment, outside vars/Debian.yml and vars/RedHat.yml
    (whose values the reference checks) and meta/ (documentation)."""
    for path in sorted(role.rglob("*")):
        rel = path.relative_to(role)
        if (
            not path.is_file()
            or rel.parts[0] in ("meta", "files")
            or rel.suffix
            not in (
                ".yml",
                ".j2",
            )
        ):
            continue
        if rel.parts[0] == "vars" and rel.stem in ("Debian", "RedHat"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith(("#", "{#")):
                yield rel, number, line


@pytest.mark.parametrize("role", ALL_ROLES)
def test_no_debian_name_outside_the_debian_table(role: str) -> None:
    """Tasks, handlers, defaults, templates and vars/main.yml name the OS's things through the
    role's variables: a literal Debian-only name there would reach EL hosts."""
    tokens = debian_only_tokens()
    found = [
        f"{role}/{rel}:{number}: {leaks(line, tokens)}"
        for rel, number, line in _source_lines(ansible_render.ROLES / role)
        if leaks(line, tokens)
    ]
    assert found == []


# -- EL-only tasks never run on Debian ---------------------------------------------------------
PACKAGES_PLAY = ansible_render.ROOT / "playbooks" / "packages.yml"


def _el_only(task: dict[str, Any]) -> bool:
    return "ansible_facts['os_family'] == 'RedHat'" in _conditions(task)


def test_epel_and_crb_are_enabled_on_el_only_before_the_install() -> None:
    tasks = yaml.safe_load(PACKAGES_PLAY.read_text())[0]["tasks"]
    names = [t["name"] for t in tasks]
    crb = names.index("Enable CRB (RedHat)")
    epel = names.index("Enable EPEL (RedHat)")
    install = names.index("Install all packages of this host (RedHat)")
    assert crb < epel < install
    assert tasks[crb]["community.general.dnf_config_manager"] == {
        "name": ["crb"],
        "state": "enabled",
    }
    assert tasks[epel]["ansible.builtin.dnf"]["name"] == "epel-release"
    assert _el_only(tasks[crb]) and _el_only(tasks[epel])


# Modules that only exist, or only mean something, on EL.
EL_ONLY_MODULES = (
    "ansible.posix.firewalld",
    "ansible.posix.seboolean",
    "community.general.sefcontext",
    "community.general.seport",
    "community.general.dnf_config_manager",
)


def _all_tasks() -> Iterator[tuple[Path, dict[str, Any]]]:
    files = [*sorted(ansible_render.ROLES.glob("*/tasks/*.yml")), PACKAGES_PLAY]
    for path in files:
        data = yaml.safe_load(path.read_text()) or []
        tasks = data[0]["tasks"] if path == PACKAGES_PLAY else data
        for task in tasks:
            yield path, task
            for key in ("block", "rescue", "always"):
                for sub in task.get(key) or []:
                    yield path, {**sub, "when": [*_conditions(task), *_conditions(sub)]}


def _conditions(task: dict[str, Any]) -> list[str]:
    when = task.get("when") or []
    return list(when) if isinstance(when, list) else [when]


def test_el_only_modules_run_on_el_only() -> None:
    used = [(p, t) for p, t in _all_tasks() if any(m in t for m in EL_ONLY_MODULES)]
    assert used, "no EL-only task found"
    unguarded = [f"{p}: {t['name']}" for p, t in used if not _el_only(t)]
    assert unguarded == []


@pytest.mark.parametrize(
    ("role", "ports"),
    [
        ("sendmail", ["25/tcp"]),
        ("nrpe", ["5666/tcp"]),
        ("mariadb", ["3306/tcp"]),
        ("nagios", ["80/tcp", "443/tcp"]),
    ],
)
def test_firewalld_opens_the_ports_each_role_listens_on(role: str, ports: list[str]) -> None:
    variables = _templated(role, "el9")
    assert _value(variables, f"__{role}_firewall_ports") == ports
    (task,) = [t for p, t in _all_tasks() if p.parts[-3] == role and "ansible.posix.firewalld" in t]
    args = task["ansible.posix.firewalld"]
    assert args["permanent"] is True and args["immediate"] is True
    assert task["loop"] == f"{{{{ __{role}_firewall_ports }}}}"
