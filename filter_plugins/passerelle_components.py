"""What runs where: the one table of the fleet's components, read by the playbooks (which
roles a host gets, in which order, with which kind), by the sizing filter (which daemons a
host's memory is planned for) and by the supervision filter (which daemons, milters and
checks a host has). Change a group's roles, daemons or checks here and nowhere else.

``GROUPS``: each inventory group, in the order that decides a host's kind when it is in
several groups (a host in ``gateways`` and ``smtpx`` is a gateway). For each: its kinds
(``sizing``: the sizing filter's kind, ``supervision``: the thresholds' kind, ``sendmail``:
the sendmail role's ``sendmail_kind``, ``antivirus``: the antivirus role's direction), the
daemons it runs (supervision's names), the milters sendmail calls there, the extra checks,
what its nightly backup holds (role ``backup``: ``databases``, ``quarantine``,
``greylist_sqlite``, ``config``), whether it is supervised, and whether it exists in the lab
only.

``PLAYS``: the roles of each play in the order a first deployment needs them, each with the
groups it runs on. A role marked ``lab_only`` (the lab's directory, its signature mirror) and
a ``lab_only`` group (the lab's mailstores, ``internet``) are reached only when the lab's
playbooks ask (``lab=True``, see ``playbooks/lab/site.yml``); the production path never
targets them.

Filters: ``group_names | passerelle_roles(play, lab=false)`` the roles of a play for a host,
in order; ``group_names | passerelle_host(lab=false)`` everything the table says about a host
(roles per play, kinds, daemons, milters, checks, packages); ``play | passerelle_play_hosts(
lab=false, only=None, exclude=())`` the host pattern of a play (its roles' groups, or some of
them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The inventory groups, in the order that decides a host's kind (first group wins).
GROUPS: dict[str, dict[str, Any]] = {
    "gateways": {
        "sizing": "gateway",
        "supervision": "gateway",
        "sendmail": "gateway",
        "antivirus": "inbound",
        "daemons": ("sendmail", "greylist", "antivirus", "spam", "spamd", "clamd", "freshclam"),
        "milters": ("greylist", "antivirus", "spam"),
        "checks": ("shared_db", "connwatch", "backup"),
        "backup": ("quarantine", "greylist_sqlite", "config"),
        "supervised": True,
        "lab_only": False,
    },
    "smtpx": {
        "sizing": "smtpx",
        "supervision": "smtpx",
        "sendmail": "smtpx",
        "antivirus": "outbound",
        "daemons": ("sendmail", "antivirus", "clamd", "freshclam"),
        "milters": ("antivirus",),
        "checks": ("connwatch", "backup"),
        "backup": ("quarantine", "config"),
        "supervised": True,
        "lab_only": False,
    },
    "greylist_db": {
        "sizing": "database",
        "supervision": "db",
        "daemons": ("mariadb",),
        "checks": ("backup",),
        "backup": ("databases", "config"),
        "supervised": True,
        "lab_only": False,
    },
    # Production: the organisation's own directory (supervised, never configured here);
    # the lab: slapd with test entries (role slapd, lab only).
    "ldap": {
        "supervision": "ldap",
        "daemons": ("slapd",),
        "supervised": True,
        "lab_only": False,
    },
    # Production: the tenants' own servers, not managed (they only appear as routes). The lab:
    # small backends that keep what they receive.
    "mailstores": {
        "sizing": "mailstore",
        "supervision": "mailstore",
        "sendmail": "mailstore",
        "daemons": ("sendmail",),
        "supervised": True,
        "lab_only": True,
    },
    # Nagios, and the web console behind the same Apache (role console)
    "monitoring": {
        "supervision": "monitoring",
        "daemons": ("nagios", "apache2", "console"),
        "checks": ("console",),
        "supervised": True,
        "lab_only": False,
    },
    # The lab's "outside": sends test mail, receives what smtpx delivers, serves signatures.
    "internet": {
        "sizing": "mailstore",
        "sendmail": "mailstore",
        "daemons": ("sendmail",),
        "supervised": False,
        "lab_only": True,
    },
}

_MAIL = ("gateways", "smtpx")
_SUPERVISED = tuple(g for g, v in GROUPS.items() if v["supervised"])

# Each play's roles in order, with the groups they run on. Roles with a tasks/packages.yml
# add their packages to the host's one install (playbooks/packages.yml).
PLAYS: dict[str, tuple[dict[str, Any], ...]] = {
    # playbooks/lab/services.yml, lab only: the directory before the gateways that ask it,
    # the signature mirror before the first freshclam fetch.
    "lab_services": (
        {"role": "slapd", "groups": ("ldap",), "packages": True, "lab_only": True},
        {"role": "clamav_lab_mirror", "groups": ("internet",), "lab_only": True},
    ),
    # playbooks/fleet.yml: every mail host side by side. The milter roles register
    # themselves in this order, which is the order mail meets them in sendmail.
    "fleet": (
        {"role": "mariadb", "groups": ("greylist_db",), "packages": True},
        {"role": "resolver", "groups": _MAIL, "packages": True},
        {"role": "passerelle_tools", "groups": _MAIL, "packages": True},
        {"role": "greylist", "groups": ("gateways",), "packages": True},
        {"role": "clamav", "groups": _MAIL, "packages": True},
        {"role": "antivirus", "groups": _MAIL, "packages": True},
        {"role": "spamassassin", "groups": ("gateways",), "packages": True},
        {"role": "spam_milter", "groups": ("gateways",), "packages": True},
        # the last milter: DKIM signing of the final message (only where domains are signed)
        {"role": "dkim_signer", "groups": ("smtpx",), "packages": True},
        # routing.toml and the LDAP route daemon, started before sendmail asks it
        {"role": "ldap_route", "groups": ("gateways",)},
        {"role": "sendmail", "groups": (*_MAIL, "mailstores", "internet"), "packages": True},
        {"role": "ops_reports", "groups": _MAIL, "packages": True},
    ),
    # playbooks/monitoring.yml, three plays. The backups before NRPE, whose "Backup age"
    # check wants the first one.
    "supervision": (
        {"role": "passerelle_tools", "groups": _SUPERVISED, "packages": True},
        {"role": "process_watch", "groups": _SUPERVISED},
        {"role": "backup", "groups": ("greylist_db", *_MAIL)},
        {"role": "nrpe", "groups": _SUPERVISED, "packages": True},
    ),
    "connwatch": ({"role": "connwatch", "groups": _MAIL, "packages": True},),
    "nagios": ({"role": "nagios", "groups": ("monitoring",), "packages": True},),
    # playbooks/monitoring.yml, after Nagios (whose HTTPS site the console's Apache location
    # joins): the web console on the monitoring hosts, which creates its tables at start,
    # then the gateways' side (index the quarantine, carry out the console's requests every
    # minute), whose database users may not create tables.
    "console": ({"role": "console", "groups": ("monitoring", "gateways"), "packages": True},),
}


def _groups(group_names: Iterable[str], lab: bool) -> list[str]:
    """The host's groups the table knows, in the table's order (lab groups only in the lab)."""
    names = {str(g) for g in group_names or ()}
    return [g for g, v in GROUPS.items() if g in names and (lab or not v["lab_only"])]


def passerelle_roles(group_names: Sequence[str], play: str, lab: bool = False) -> list[str]:
    """The roles of ``play`` a host runs, in the play's order."""
    if play not in PLAYS:
        raise KeyError(f"passerelle_roles: unknown play {play!r} (known: {', '.join(PLAYS)})")
    groups = set(_groups(group_names, bool(lab)))
    return [
        r["role"]
        for r in PLAYS[play]
        if groups & set(r["groups"]) and (lab or not r.get("lab_only", False))
    ]


def _first(groups: Sequence[str], key: str) -> str | None:
    for g in groups:
        if GROUPS[g].get(key):
            return str(GROUPS[g][key])
    return None


def _union(groups: Sequence[str], key: str) -> list[str]:
    """The values of ``key`` over these groups, in the order they first appear in the table."""
    wanted = {x for g in groups for x in GROUPS[g].get(key, ())}
    order = dict.fromkeys(x for v in GROUPS.values() for x in v.get(key, ()))
    return [x for x in order if x in wanted]


def passerelle_host(group_names: Sequence[str], lab: bool = False) -> dict[str, Any]:
    """Everything the table says about a host with these groups."""
    groups = _groups(group_names, bool(lab))
    supervised = [g for g in groups if GROUPS[g]["supervised"]]
    roles = {play: passerelle_roles(group_names, play, lab) for play in PLAYS}
    packages: list[str] = []
    for play, entries in PLAYS.items():
        for r in entries:
            if r["role"] in roles[play] and r.get("packages") and r["role"] not in packages:
                packages.append(r["role"])
    return {
        "groups": groups,
        "roles": roles,
        "packages": packages,
        "sizing_kind": _first(groups, "sizing"),
        "supervision_kind": _first(supervised, "supervision"),
        "sendmail_kind": _first(groups, "sendmail") or "mailstore",
        "antivirus_direction": _first(groups, "antivirus") or "inbound",
        # Supervision's view: what runs on the supervised groups of the host.
        "daemons": _union(supervised, "daemons"),
        # The milters of the host's first group that has any (a gateway's include smtpx's).
        "milters": next(
            (list(GROUPS[g]["milters"]) for g in groups if GROUPS[g].get("milters")), []
        ),
        "checks": _union(supervised, "checks"),
        # What the host's nightly backup holds (role backup).
        "backup": _union(groups, "backup"),
    }


def group_daemons(group: str) -> tuple[str, ...]:
    """The daemons of one group (the sizing filter plans memory for them)."""
    return tuple(GROUPS.get(group, {}).get("daemons", ()))


def sizing_kinds() -> dict[str, str]:
    """Sizing kind -> its group (the first group of that kind)."""
    out: dict[str, str] = {}
    for g, v in GROUPS.items():
        if v.get("sizing"):
            out.setdefault(v["sizing"], g)
    return out


def passerelle_play_hosts(
    play: str,
    lab: bool = False,
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> str:
    """The host pattern of a play: every group one of its roles runs on (lab ones in the lab).
    ``packages``: every group of every play (the packages play installs for all of them).
    ``only``: keep these of the play's groups; ``exclude``: leave out the hosts of these
    groups (the rolling upgrade runs the fleet play one stage at a time:
    ``playbooks/rolling.yml``)."""
    for name in [*(only or ()), *exclude]:
        if name not in GROUPS:
            raise KeyError(
                f"passerelle_play_hosts: unknown group {name!r} (known: {', '.join(GROUPS)})"
            )
    if play != "packages" and play not in PLAYS:
        raise KeyError(f"passerelle_play_hosts: unknown play {play!r} (known: {', '.join(PLAYS)})")
    entries = [r for e in PLAYS.values() for r in e] if play == "packages" else PLAYS[play]
    groups: list[str] = []
    for r in entries:
        if r.get("lab_only") and not lab:
            continue
        for g in r["groups"]:
            if g not in groups and (lab or not GROUPS[g]["lab_only"]):
                groups.append(g)
    groups = [g for g in groups if (only is None or g in only) and g not in exclude]
    if not groups:
        # An empty pattern would match nothing; name a group no inventory has instead.
        return "passerelle_no_hosts"
    return ":".join([*groups, *(f"!{g}" for g in exclude)])


def lab_only_roles() -> set[str]:
    """Roles that only the lab's playbooks may run."""
    return {r["role"] for entries in PLAYS.values() for r in entries if r.get("lab_only")}


def lab_only_groups() -> set[str]:
    return {g for g, v in GROUPS.items() if v["lab_only"]}


def passerelle_components_table(_: Any = None) -> Mapping[str, Any]:
    """The raw table, for documentation and debugging (``{{ none | passerelle_components }}``)."""
    return {"groups": GROUPS, "plays": PLAYS}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "passerelle_roles": passerelle_roles,
            "passerelle_host": passerelle_host,
            "passerelle_play_hosts": passerelle_play_hosts,
            "passerelle_components": passerelle_components_table,
        }
