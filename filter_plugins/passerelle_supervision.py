"""What is supervised on each host, from its inventory groups: the one list that the NRPE
agent (commands), the Nagios server (services) and the process watch (units) all read, so
adding a host to a group adds its checks everywhere.

``group_names | passerelle_checks(settings, db_hosts, os_family=ansible_facts['os_family'])``
returns the host's checks, each::

    {"name": "proc_spamd", "description": "Process spamd",
     "command": "<plugins>/check_procs -c 1: <spamd's procs>",
     "sudo": False, "unit": "<spamd's unit>"}

``name`` is the NRPE command name (``check_nrpe -c NAME``), ``description`` the Nagios
service description, ``command`` what NRPE runs (``sudo`` ones run through ``sudo -n``, with
a sudoers line generated for that exact command), ``unit`` the systemd unit the process
watch keeps running.

What each group runs (daemons, milters, extra checks) and a host's kind come from the
fleet's component table (``filter_plugins/passerelle_components.py``). Thresholds depend on
the host's kind (first of gateway, smtpx, db, ldap, mailstore, monitoring) --
``KIND_DEFAULTS`` -- and any of them can be overridden per host or group with
``passerelle_supervision`` (``settings`` here), e.g. ``{queue_warning: 5, queue_critical:
50}``. ``group_names | passerelle_watch_units(settings, os_family=...)`` gives the units alone.

The OS's names (the plugins' folder, each daemon's unit and ``check_procs`` arguments, the
NRPE agent's unit) are the NRPE role's table of the host's OS family,
``roles/nrpe/vars/<os_family>.yml`` (``__nrpe_supervision``, ``__nrpe_service``): no
distribution's name is written here.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # for _passerelle_load
import _passerelle_load

OS_TABLES = Path(__file__).resolve().parent.parent / "roles" / "nrpe" / "vars"
PASSERELLE = "/usr/local/bin/passerelle"
STATUS_DIR = "/var/lib/passerelle-status"


@functools.cache
def os_names(os_family: str | None) -> dict[str, Any]:
    """The supervision names of an OS family: ``plugins``, ``agent_unit`` and, per daemon,
    ``unit``, ``procs`` and the OS's ``name`` when it is not the table's (from the NRPE
    role's ``vars/<os_family>.yml``)."""
    simple = isinstance(os_family, str) and os_family.isalnum() and os_family.isascii()
    path = OS_TABLES / f"{os_family}.yml"
    if not simple or os_family == "main" or not path.is_file():
        known = ", ".join(sorted(p.stem for p in OS_TABLES.glob("*.yml") if p.stem != "main"))
        raise AnsibleFilterError(
            f"passerelle_checks: no supervision names for os_family {os_family!r} "
            f"(known: {known}); pass os_family=ansible_facts['os_family']"
        )
    table = yaml.safe_load(path.read_text()) or {}
    names = table.get("__nrpe_supervision")
    if not isinstance(names, dict) or not {"plugins", "daemons"} <= set(names):
        raise AnsibleFilterError(f"{path}: __nrpe_supervision needs plugins and daemons")
    return {**names, "agent_unit": f"{table['__nrpe_service']}.service"}


def _components() -> Any:
    """The fleet's component table, through the loader every Passerelle filter shares."""
    return _passerelle_load.components()


# Load per core (check_load -r: 1, 5 and 15 min), disk free %, memory used %, queued
# messages. Gateways take bursts (greylisted retries, slow backends) so their queue is
# allowed to grow more than a backend's; smtpx queues mail for the whole internet.
_COMMON: dict[str, Any] = {
    "load_warning": "4,3,2",
    "load_critical": "8,6,4",
    "disk_warning": 15,
    "disk_critical": 5,
    "memory_warning": 90,
    "memory_critical": 97,
    "restarts_warning": 1,
    "restarts_critical": 3,
    "queue_warning": 200,
    "queue_critical": 1000,
    "connwatch_max_age": "130m",
    # a nightly backup, plus its random delay and a late run
    "backup_max_age": "26h",
    # sendmail hosts: days before the STARTTLS certificate expires (check_smtp -S -D); set
    # smtp_tls false for a host that offers no STARTTLS (no sendmail_tls_certificate).
    "smtp_tls": True,
    "smtp_cert_warning": 30,
    "smtp_cert_critical": 14,
    # the web console's host (role console): a gateway's report older than this is WARNING
    # (the fleet page's "stale"), older than critical CRITICAL; a request still open after
    # request_age is WARNING (no gateway carries it out)
    "console_stale": "3m",
    "console_critical": "15m",
    "console_request_age": "5m",
}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "gateway": {**_COMMON, "queue_warning": 500, "queue_critical": 2000},
    "smtpx": {**_COMMON, "queue_warning": 1000, "queue_critical": 5000},
    "db": {**_COMMON, "memory_warning": 95, "memory_critical": 99},
    "ldap": dict(_COMMON),
    "mailstore": dict(_COMMON),
    "monitoring": dict(_COMMON),
}

# Passerelle's own daemons: (label, unit, check_procs arguments), the same on every OS. The
# OS's daemons (sendmail, spamd, clamd...) are in the OS family's table (``os_names``).
DAEMONS: dict[str, tuple[str, str, str]] = {
    "greylist": ("greylist milter", "passerelle-greylist.service", "-a 'greylist milter'"),
    "antivirus": ("antivirus milter", "passerelle-antivirus.service", "-a 'antivirus milter'"),
    "spam": ("spam milter", "passerelle-spam.service", "-a 'spam milter'"),
    "console": ("web console", "passerelle-console.service", "-a 'console serve'"),
}
CONSOLE_CONFIG = "/etc/passerelle/console.toml"  # roles/console's __console_config
MILTER_SOCKETS = {
    "greylist": "unix:/run/passerelle/greylist.sock",
    "antivirus": "unix:/run/passerelle/antivirus.sock",
    "spam": "unix:/run/passerelle/spam.sock",
}


def _host(group_names: Sequence[str]) -> dict[str, Any]:
    # Supervision covers every group the table knows, the lab's included: the plays decide
    # which hosts are managed at all.
    return _components().passerelle_host(group_names, lab=True)


def host_kind(group_names: Sequence[str]) -> str | None:
    """The host's kind for thresholds (component table: first supervised group wins)."""
    return _host(group_names)["supervision_kind"]


def _settings(kind: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(KIND_DEFAULTS[kind])
    for key, value in (settings or {}).items():
        if key not in out and key not in ("milter_sockets",):
            raise AnsibleFilterError(
                f"passerelle_supervision: unknown setting {key!r} (known: {', '.join(sorted(out))})"
            )
        out[key] = value
    for prefix in ("queue", "disk", "memory", "restarts", "smtp_cert"):
        w, c = out[f"{prefix}_warning"], out[f"{prefix}_critical"]
        try:
            w, c = float(w), float(c)
        except (TypeError, ValueError):
            raise AnsibleFilterError(
                f"passerelle_supervision: {prefix}_warning/{prefix}_critical must be numbers, "
                f"got {w!r}/{c!r}"
            ) from None
        # Disk thresholds are free space, certificates days left: critical is the smaller one.
        bad = c > w if prefix in ("disk", "smtp_cert") else c < w
        if bad:
            raise AnsibleFilterError(
                f"passerelle_supervision: {prefix}_critical ({c}) is less severe than "
                f"{prefix}_warning ({w})"
            )
    return out


def daemons(group_names: Sequence[str]) -> list[str]:
    """The daemons supervised on the host (component table)."""
    return list(_host(group_names)["daemons"])


def milters(group_names: Sequence[str]) -> list[str]:
    """The milters sendmail calls on the host (component table)."""
    return list(_host(group_names)["milters"])


def passerelle_checks(
    group_names: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    db_hosts: Sequence[str] = (),
    db_port: int = 3306,
    os_family: str | None = None,
) -> list[dict[str, Any]]:
    kind = host_kind(group_names)
    if kind is None:
        return []
    s = _settings(kind, settings)
    names = os_names(os_family)
    plugins = names["plugins"]
    sockets = {**MILTER_SOCKETS, **dict(s.get("milter_sockets") or {})}
    checks: list[dict[str, Any]] = []

    def add(name: str, desc: str, cmd: str, sudo: bool = False, unit: str = "") -> None:
        checks.append(
            {"name": name, "description": desc, "command": cmd, "sudo": sudo, "unit": unit}
        )

    add("load", "Load", f"{plugins}/check_load -r -w {s['load_warning']} -c {s['load_critical']}")
    add(
        "disk",
        "Disk",
        f"{plugins}/check_disk -w {s['disk_warning']}% -c {s['disk_critical']}% -p / -p /var",
    )
    add(
        "memory",
        "Memory",
        f"{PASSERELLE} check memory -w {s['memory_warning']} -c {s['memory_critical']}",
    )
    d = daemons(group_names)
    if "sendmail" in d:
        add(
            "mail_queue",
            "Mail queue",
            f"{PASSERELLE} check queue --dir /var/spool/mqueue "
            f"-w {int(s['queue_warning'])} -c {int(s['queue_critical'])}",
            sudo=True,
        )
        if s["smtp_tls"] is True or str(s["smtp_tls"]).lower() == "true":
            add(
                "smtp_certificate",
                "SMTP STARTTLS certificate",
                f"{plugins}/check_smtp -H 127.0.0.1 -S "
                f"-D {int(s['smtp_cert_warning'])},{int(s['smtp_cert_critical'])}",
            )
    for name in d:
        if name in DAEMONS:
            label, unit, args = DAEMONS[name]
        elif name in names["daemons"]:
            # the OS's name of the daemon (EL's httpd for the table's apache2)
            os_daemon = names["daemons"][name]
            name = label = os_daemon.get("name", name)
            unit, args = os_daemon["unit"], os_daemon["procs"]
        else:
            raise AnsibleFilterError(
                f"passerelle_checks: daemon {name!r} has no unit in the {os_family} table "
                f"({OS_TABLES}/{os_family}.yml)"
            )
        add(f"proc_{name}", f"Process {label}", f"{plugins}/check_procs -c 1: {args}", unit=unit)
    for m in milters(group_names):
        add(
            f"milter_{m}",
            f"Milter {m} socket",
            f"{PASSERELLE} check milter --name {m} --socket {sockets[m]}",
            sudo=True,
        )
    if "clamd" in d:
        add("signatures", "Signature age", "/usr/local/sbin/passerelle-check-signatures")
    extra = _host(group_names)["checks"]
    if "shared_db" in extra and db_hosts:
        for h in db_hosts:
            add(
                f"shared_db_{_safe(h)}",
                f"Shared database {h}",
                f"{PASSERELLE} check db --host {h} --port {int(db_port)}",
            )
    if "connwatch" in extra:
        add(
            "connwatch",
            "Connection guard",
            f"{PASSERELLE} check status-file {STATUS_DIR}/connwatch.status --label CONNWATCH "
            f"--max-age {s['connwatch_max_age']}",
        )
    if "console" in extra:
        add(
            "console",
            "Web console",
            f"{PASSERELLE} check console --config {CONSOLE_CONFIG} --stale {s['console_stale']}"
            f" --critical {s['console_critical']} --request-age {s['console_request_age']}",
            sudo=True,  # console.toml and the database password are the console's group's
        )
    if "backup" in extra:
        add(
            "backup",
            "Backup age",
            f"{PASSERELLE} check backup --max-age {s['backup_max_age']}",
            sudo=True,  # the backups are root's (0700)
        )
    add(
        "restarts",
        "Daemon restarts",
        f"{PASSERELLE} check restarts --state {STATUS_DIR}/watch.json "
        f"-w {int(s['restarts_warning'])} -c {int(s['restarts_critical'])}",
    )
    return checks


def passerelle_watch_units(
    group_names: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    os_family: str | None = None,
) -> list[str]:
    """The systemd units the process watch keeps running on this host (and NRPE itself)."""
    checks = passerelle_checks(group_names, settings, os_family=os_family)
    units = [c["unit"] for c in checks if c["unit"]]
    if units or host_kind(group_names):
        return [*units, os_names(os_family)["agent_unit"]]
    return units


def passerelle_networks_only(entries: Sequence[Any]) -> list[str]:
    """Keep the entries that are IP addresses or CIDR networks (drop host and domain names)."""
    out = []
    for e in entries or []:
        try:
            out.append(str(ipaddress.ip_network(str(e), strict=False)))
        except ValueError:
            continue
    return list(dict.fromkeys(out))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "passerelle_checks": passerelle_checks,
            "passerelle_watch_units": passerelle_watch_units,
            "passerelle_networks_only": passerelle_networks_only,
        }
