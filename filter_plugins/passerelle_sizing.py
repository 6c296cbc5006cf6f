"""Size every daemon's limits from a host's hardware: the one place where formulas live.

``host_profile | passerelle_sizing(kind)`` takes ``{cores: 4, memory_mb: 4096}`` (from facts or
from a named profile of ``passerelle_hardware_profiles``) and returns the limits that the role
defaults use. The README's sizing table documents the same formulas; change both together.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

# Named hardware profiles: the reference's 2008 machines and two modern ones.
PROFILES: dict[str, dict[str, int]] = {
    "gwx-2008": {"cores": 4, "memory_mb": 4096},
    "smtpx-2008": {"cores": 1, "memory_mb": 2048},
    "small-2024": {"cores": 2, "memory_mb": 4096},
    "large-2024": {"cores": 16, "memory_mb": 65536},
}

KINDS = ("gateway", "smtpx", "mailstore")

# Memory one sendmail child may use while a message passes through the milters (MB).
SENDMAIL_CHILD_MB = 8
# Share of the host's memory sendmail children may take, by kind (the rest is for the
# scanners, the milters and the OS).
SENDMAIL_MEMORY_SHARE = {"gateway": 0.25, "smtpx": 0.25, "mailstore": 0.5}


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


def resolve_profile(hardware: Any, profiles: dict[str, Any] | None = None) -> dict[str, int]:
    """Turn a profile name or a ``{cores, memory_mb}`` mapping into checked integers."""
    table = dict(PROFILES)
    table.update(profiles or {})
    if isinstance(hardware, str):
        if hardware not in table:
            raise AnsibleFilterError(
                f"passerelle_sizing: unknown hardware profile {hardware!r}; "
                f"known: {', '.join(sorted(table))}"
            )
        hardware = table[hardware]
    if not isinstance(hardware, dict):
        raise AnsibleFilterError(f"passerelle_sizing: hardware must be a mapping, got {hardware!r}")
    out: dict[str, int] = {}
    for key in ("cores", "memory_mb"):
        value = hardware.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AnsibleFilterError(
                f"passerelle_sizing: hardware {key} must be a positive integer, got {value!r}"
            )
        out[key] = value
    if out["memory_mb"] < 512:
        raise AnsibleFilterError(
            f"passerelle_sizing: {out['memory_mb']} MB is below the 512 MB a mail host needs"
        )
    return out


def sendmail_limits(cores: int, memory_mb: int, kind: str) -> dict[str, int]:
    """Sendmail daemon limits.

    - MaxDaemonChildren = min(50 x cores, memory share / 8 MB), at least 10
    - QueueLA = 8 + 4 x (cores - 1)      (sendmail's own default on one core is 8)
    - RefuseLA = 12 + 6 x (cores - 1)    (default on one core is 12)
    - ConnectionRateThrottle = 10 x cores connections per second per daemon socket
    - MaxQueueChildren = 4 x cores; MaxRunnersPerQueue = 2 x cores
    """
    if kind not in KINDS:
        raise AnsibleFilterError(f"passerelle_sizing: kind must be one of {KINDS}, got {kind!r}")
    budget = memory_mb * SENDMAIL_MEMORY_SHARE[kind] / SENDMAIL_CHILD_MB
    return {
        "max_daemon_children": _clamp(min(50 * cores, budget), 10, 2000),
        "queue_la": 8 + 4 * (cores - 1),
        "refuse_la": 12 + 6 * (cores - 1),
        "connection_rate_throttle": 10 * cores,
        "max_queue_children": 4 * cores,
        "max_runners_per_queue": 2 * cores,
        "planned_memory_mb": int(min(50 * cores, budget) * SENDMAIL_CHILD_MB),
    }


def passerelle_sizing(
    hardware: Any, kind: str, profiles: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All limits for one host; see the module docstring."""
    hw = resolve_profile(hardware, profiles)
    return {
        "cores": hw["cores"],
        "memory_mb": hw["memory_mb"],
        "sendmail": sendmail_limits(hw["cores"], hw["memory_mb"], kind),
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"passerelle_sizing": passerelle_sizing}
