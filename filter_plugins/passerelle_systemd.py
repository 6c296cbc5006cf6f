"""The systemd sandbox of every Passerelle daemon and timer service, written once.

``{{ {...} | passerelle_systemd_sandbox }}`` renders the ``[Service]`` lines that confine a
unit; each role passes only what its unit needs:

- ``write_paths``: the only paths the unit may write (``ProtectSystem=strict`` makes the rest
  read-only); a path that may be missing on a host is prefixed with ``-``.
- ``families``: address families (default ``AF_UNIX``; add ``AF_INET AF_INET6`` for TCP).
- ``capabilities``: the bounding set (default empty: a service with ``User=`` needs none).
  A root service lists what it really uses (e.g. ``CAP_DAC_OVERRIDE`` to write sendmail's
  queue, ``CAP_SETUID CAP_SETGID`` for ``runuser`` and sendmail).
- ``root``: the unit runs as root: no ``~@privileged`` system-call filter (setuid, chown).
- ``mail``: it submits mail with sendmail: sendmail's queues and state become writable, and
  TCP is allowed (sendmail delivers to localhost:25 or the next hop).
No ``UMask=``: the milters set their own (0007, for their sockets) and the root tools write
status files that NRPE's user reads.
- ``memory_max_mb``, ``tasks_max``: ``MemoryMax`` (from the sizing plan) and ``TasksMax``.
- ``mdwe``: ``MemoryDenyWriteExecute`` (default true: CPython, pymilter, Perl and sendmail
  never map memory both writable and executable; false for a unit that runs a JIT).
- ``protect_proc``: ``ProcSubset=pid`` and ``ProtectProc=invisible`` (default true; false
  for a unit that looks at other users' processes).

Exposure measured with ``systemd-analyze security`` (systemd 252, Debian 12): see
molecule/default/tests/test_15_sandbox.py for the bound every unit must meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# sendmail's queues and state (Debian and EL names); missing ones are ignored ("-").
MAIL_WRITE_PATHS = (
    "-/var/spool/mqueue",
    "-/var/spool/clientmqueue",
    "-/var/spool/mqueue-client",
    "-/var/lib/sendmail",
    "-/run/sendmail",
)
KNOWN_KEYS = frozenset(
    {
        "write_paths",
        "families",
        "capabilities",
        "root",
        "mail",
        "memory_max_mb",
        "tasks_max",
        "mdwe",
        "protect_proc",
    }
)


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    raise AnsibleFilterError(f"passerelle_systemd_sandbox: not a list: {value!r}")


def _uniq(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def passerelle_systemd_sandbox(opts: Mapping[str, Any] | None = None) -> str:
    """The [Service] sandbox lines of a Passerelle unit (see the module docstring)."""
    opts = dict(opts or {})
    unknown = set(opts) - KNOWN_KEYS
    if unknown:
        raise AnsibleFilterError(f"passerelle_systemd_sandbox: unknown keys {sorted(unknown)}")
    root = bool(opts.get("root", False))
    mail = bool(opts.get("mail", False))
    families = _words(opts.get("families", ["AF_UNIX"]))
    write_paths = _words(opts.get("write_paths"))
    if mail:
        families += ["AF_UNIX", "AF_INET", "AF_INET6"]
        write_paths += MAIL_WRITE_PATHS
    for path in write_paths:
        if not path.lstrip("-").startswith("/"):
            raise AnsibleFilterError(f"passerelle_systemd_sandbox: not an absolute path: {path}")
    caps = _words(opts.get("capabilities"))
    lines = [
        "# Sandbox (filter_plugins/passerelle_systemd.py)",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ]
    if write_paths:
        lines.append("ReadWritePaths=" + " ".join(_uniq(write_paths)))
    lines += [
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectHome=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
    ]
    if opts.get("protect_proc", True):
        lines += ["ProtectProc=invisible", "ProcSubset=pid"]
    lines += [
        "RestrictAddressFamilies=" + " ".join(_uniq(families)),
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    if opts.get("mdwe", True):
        lines.append("MemoryDenyWriteExecute=yes")
    lines += [
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
    ]
    if not root:
        lines.append("SystemCallFilter=~@privileged @resources")
    lines += [
        "SystemCallErrorNumber=EPERM",
        "CapabilityBoundingSet=" + " ".join(_uniq(caps)),
        "AmbientCapabilities=",
    ]
    if opts.get("memory_max_mb") not in (None, "", 0):
        lines.append(f"MemoryMax={int(opts['memory_max_mb'])}M")
    if opts.get("tasks_max") not in (None, "", 0):
        lines.append(f"TasksMax={int(opts['tasks_max'])}")
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"passerelle_systemd_sandbox": passerelle_systemd_sandbox}
