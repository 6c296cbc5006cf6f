"""Size every daemon's limits from a host's hardware: the one place where formulas live.

``hardware | passerelle_sizing(group_names)`` takes a profile name (``gwx-2008``) or
``{cores: 4, memory_mb: 4096}`` (from the facts), and the host's inventory groups (or one
kind: ``gateway``, ``smtpx``, ``mailstore``, ``database``), and returns the limits of every
daemon (sendmail, spamd, clamd, MariaDB, the greylist milter's store threads) and the host's
planned memory, daemon by daemon. ``passerelle_memory_fits`` fails, naming the host and the
numbers, when the plan does not fit in the host's memory. docs/sizing.md's table documents
the same formulas; change both together.

How memory is planned (MB):

1. Fixed parts first: the OS (256), each milter process (50), spamd's parent (100), clamd's
   loaded signature database (1200; twice that when the host has 8 GB or more and clamd may
   reload concurrently), MariaDB's own buffers (256) and two in-memory temporary tables.
2. What is left, A = memory - fixed, is split between the elastic pools of the daemons the
   host runs, in proportion to their weights (sendmail 3, spamd 4, clamd 3, MariaDB 6), plus
   a reserve of weight 2 that stays free for the page cache. A daemon's pool is divided by
   what one worker takes (sendmail process 8, spamd child 100, clamd thread 100) and capped
   by a per-core limit.

Every count is rounded down, so the plan fits unless a floor (at least 10 sendmail
children, 2 spamd children, 2 clamd threads, a 128 MB buffer pool) or an inventory override
pushes it over: then the validate play stops the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # for _passerelle_load
import _passerelle_load

# Named hardware profiles: the reference's 2008 machines and two modern ones.
PROFILES: dict[str, dict[str, int]] = {
    "gwx-2008": {"cores": 4, "memory_mb": 4096},
    "smtpx-2008": {"cores": 1, "memory_mb": 2048},
    "small-2024": {"cores": 2, "memory_mb": 4096},
    "large-2024": {"cores": 16, "memory_mb": 65536},
}


def _components() -> Any:
    """The fleet's component table, through the loader every Passerelle filter shares."""
    return _passerelle_load.components()


# The daemons this filter sizes, under the table's names (the spam milter is "spam" there).
_SIZED = {
    "sendmail": "sendmail",
    "greylist": "greylist",
    "antivirus": "antivirus",
    "spam": "spam_milter",
    "spamd": "spamd",
    "clamd": "clamd",
    "mariadb": "mariadb",
}
# What each inventory group runs on a host, from the component table.
GROUP_SERVICES: dict[str, frozenset[str]] = {
    group: frozenset(_SIZED[d] for d in _components().group_daemons(group) if d in _SIZED)
    for group in _components().GROUPS
}
# One kind instead of the groups (the sendmail role's sendmail_kind): kind -> its group.
KIND_GROUPS: dict[str, str] = _components().sizing_kinds()
KINDS = tuple(KIND_GROUPS)
MILTERS = ("greylist", "antivirus", "spam_milter")

OS_MB = 256
MILTER_MB = 50
SENDMAIL_PROCESS_MB = 8
SPAMD_PARENT_MB = 100
SPAMD_CHILD_MB = 100
CLAMD_DB_MB = 1200
CLAMD_THREAD_MB = 100
# From this much memory clamd loads new signatures beside the old ones (twice the database).
CLAMD_CONCURRENT_RELOAD_MB = 8192
MARIADB_BASE_MB = 256
MARIADB_POOL_CHUNK_MB = 128

WEIGHTS = {"sendmail": 3, "spamd": 4, "clamd": 3, "mariadb": 6}
RESERVE_WEIGHT = 2

# Overridable limits, by daemon (the roles' inventory variables of the same meaning).
OVERRIDABLE: dict[str, tuple[str, ...]] = {
    "sendmail": (
        "max_daemon_children",
        "queue_la",
        "refuse_la",
        "connection_rate_throttle",
        "max_queue_children",
        "max_runners_per_queue",
    ),
    "spamd": ("max_children", "min_children", "max_spare"),
    "clamd": ("max_threads",),
    "mariadb": ("innodb_buffer_pool_size_mb", "innodb_log_file_size_mb", "tmp_table_size_mb"),
    "greylist": ("store_threads",),
}


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


def resolve_profile(hardware: Any, profiles: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Turn a profile name or a ``{cores, memory_mb}`` mapping into checked integers."""
    table: dict[str, Any] = dict(PROFILES)
    table.update(profiles or {})
    if isinstance(hardware, str):
        if hardware not in table:
            raise AnsibleFilterError(
                f"passerelle_sizing: unknown hardware profile {hardware!r}; "
                f"known: {', '.join(sorted(table))}"
            )
        hardware = table[hardware]
    if not isinstance(hardware, Mapping):
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


def services_of(kind_or_groups: str | Iterable[str]) -> frozenset[str]:
    """The daemons a host runs, from one kind or from its inventory groups (kinds allowed)."""
    if isinstance(kind_or_groups, str):
        if kind_or_groups not in KIND_GROUPS:
            raise AnsibleFilterError(
                f"passerelle_sizing: kind must be one of {KINDS} or a list of groups, "
                f"got {kind_or_groups!r}"
            )
        groups: Iterable[str] = [KIND_GROUPS[kind_or_groups]]
    else:
        groups = kind_or_groups
    out: set[str] = set()
    for group in groups:
        group = KIND_GROUPS.get(str(group), str(group))
        out |= GROUP_SERVICES.get(group, frozenset())
    return frozenset(out)


def _overrides(raw: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """Checked inventory overrides; ``""`` and ``None`` mean "from the formula"."""
    out: dict[str, dict[str, int]] = {daemon: {} for daemon in OVERRIDABLE}
    for daemon, values in (raw or {}).items():
        if daemon not in OVERRIDABLE:
            raise AnsibleFilterError(
                f"passerelle_sizing: no overridable limits for {daemon!r}; "
                f"known: {', '.join(OVERRIDABLE)}"
            )
        for key, value in (values or {}).items():
            if key not in OVERRIDABLE[daemon]:
                raise AnsibleFilterError(
                    f"passerelle_sizing: {daemon} has no limit {key!r}; "
                    f"known: {', '.join(OVERRIDABLE[daemon])}"
                )
            if value is None or value == "":
                continue
            try:
                number = int(str(value).strip())
            except ValueError:
                number = 0
            if isinstance(value, bool) or number < 1:
                raise AnsibleFilterError(
                    f"passerelle_sizing: {daemon} {key} must be a positive integer, got {value!r}"
                )
            out[daemon][key] = number
    return out


def fixed_memory_mb(memory_mb: int, services: frozenset[str]) -> dict[str, int]:
    """Memory planned before the split: what does not grow with the number of workers."""
    concurrent = memory_mb >= CLAMD_CONCURRENT_RELOAD_MB
    tmp = mariadb_tmp_table_mb(memory_mb)
    return {
        "os": OS_MB,
        "milters": MILTER_MB * len(services & set(MILTERS)),
        "spamd": SPAMD_PARENT_MB if "spamd" in services else 0,
        "clamd": CLAMD_DB_MB * (2 if concurrent else 1) if "clamd" in services else 0,
        "mariadb": MARIADB_BASE_MB + 2 * tmp if "mariadb" in services else 0,
    }


def mariadb_tmp_table_mb(memory_mb: int) -> int:
    """tmp_table_size = max_heap_table_size = memory / 64, between 16 and 256 MB."""
    return _clamp(memory_mb // 64, 16, 256)


def pool_mb(memory_mb: int, services: frozenset[str], daemon: str) -> float:
    """The elastic memory of one daemon: its weight's share of what the fixed parts leave.

    A daemon the host does not run is counted as if it ran (so a role applied on its own
    still gets sensible values); the plan only counts the daemons the host runs.
    """
    left = memory_mb - sum(fixed_memory_mb(memory_mb, services | {daemon}).values())
    weights = RESERVE_WEIGHT + sum(WEIGHTS[s] for s in (services | {daemon}) if s in WEIGHTS)
    return max(0.0, left) * WEIGHTS[daemon] / weights


def sendmail_limits(cores: int, memory_mb: int, services: frozenset[str]) -> dict[str, int]:
    """Sendmail daemon limits.

    P = sendmail's pool / 8 MB (the processes its memory allows):
    - MaxQueueChildren = min(4 x cores, P / 4), >= 1; MaxRunnersPerQueue = min(2 x cores,
      MaxQueueChildren)
    - MaxDaemonChildren = min(50 x cores, P - MaxQueueChildren), >= 10
    - QueueLA = 8 + 4 x (cores - 1)      (sendmail's own default on one core is 8)
    - RefuseLA = 12 + 6 x (cores - 1)    (default on one core is 12)
    - ConnectionRateThrottle = 50 x cores connections per second per daemon socket (a flood
      guard: the issue's target is 100 sessions a second on a gateway; abusers are the
      connection guard's business)
    """
    processes = int(pool_mb(memory_mb, services, "sendmail") // SENDMAIL_PROCESS_MB)
    queue_children = _clamp(min(4 * cores, processes // 4), 1, 4 * cores)
    return {
        "max_daemon_children": _clamp(min(50 * cores, processes - queue_children), 10, 2000),
        "queue_la": 8 + 4 * (cores - 1),
        "refuse_la": 12 + 6 * (cores - 1),
        "connection_rate_throttle": 50 * cores,
        "max_queue_children": queue_children,
        "max_runners_per_queue": min(2 * cores, queue_children),
    }


def spamd_limits(cores: int, memory_mb: int, services: frozenset[str]) -> dict[str, int]:
    """spamd: max_children = min(3 x cores, spamd pool / 100 MB), >= 2; min = max / 3, >= 1;
    max_spare (idle children kept) = max_children: the pool never shrinks."""
    children = pool_mb(memory_mb, services, "spamd") // SPAMD_CHILD_MB
    return spamd_pool(_clamp(min(3 * cores, children), 2, 256))


def spamd_pool(max_children: int) -> dict[str, int]:
    """spamd's limits that follow max_children (the formula's or an override)."""
    return {
        "max_children": max_children,
        "min_children": max(1, max_children // 3),
        "max_spare": max_children,
    }


def clamd_limits(cores: int, memory_mb: int, services: frozenset[str]) -> dict[str, Any]:
    """clamd: MaxThreads = min(4 x cores, clamd pool / 100 MB), >= 2; concurrent reload >= 8 GB."""
    threads = pool_mb(memory_mb, services, "clamd") // CLAMD_THREAD_MB
    return {
        "max_threads": _clamp(min(4 * cores, threads), 2, 256),
        "concurrent_reload": memory_mb >= CLAMD_CONCURRENT_RELOAD_MB,
    }


def mariadb_limits(memory_mb: int, services: frozenset[str]) -> dict[str, int]:
    """MariaDB: buffer pool = its pool rounded down to 128 MB (>= 128); redo log = pool / 4
    in [64, 2048]; temporary tables = memory / 64 in [16, 256]."""
    chunks = int(pool_mb(memory_mb, services, "mariadb") // MARIADB_POOL_CHUNK_MB)
    pool = max(1, chunks) * MARIADB_POOL_CHUNK_MB
    return {
        "innodb_buffer_pool_size_mb": pool,
        "innodb_log_file_size_mb": _clamp(pool // 4, 64, 2048),
        "tmp_table_size_mb": mariadb_tmp_table_mb(memory_mb),
    }


def greylist_limits(cores: int) -> dict[str, int]:
    """Greylist milter: store worker threads (database connections) = 2 x cores in [2, 16]."""
    return {"store_threads": _clamp(2 * cores, 2, 16)}


def memory_plan(
    memory_mb: int, services: frozenset[str], limits: Mapping[str, Mapping[str, Any]]
) -> dict[str, int]:
    """Planned memory by daemon (MB), for the daemons the host runs, and the total."""
    fixed = fixed_memory_mb(memory_mb, services)
    plan = dict(fixed)
    if "sendmail" in services:
        sm = limits["sendmail"]
        plan["sendmail"] = SENDMAIL_PROCESS_MB * (
            sm["max_daemon_children"] + sm["max_queue_children"]
        )
    else:
        plan["sendmail"] = 0
    plan["spamd"] += SPAMD_CHILD_MB * limits["spamd"]["max_children"] if "spamd" in services else 0
    if "clamd" in services:
        plan["clamd"] += CLAMD_THREAD_MB * limits["clamd"]["max_threads"]
    if "mariadb" in services:
        my = limits["mariadb"]
        # The fixed part counted the formula's temporary tables; an override replaces them.
        plan["mariadb"] = (
            MARIADB_BASE_MB + 2 * my["tmp_table_size_mb"] + my["innodb_buffer_pool_size_mb"]
        )
    plan["total"] = sum(v for k, v in plan.items())
    return plan


def passerelle_sizing(
    hardware: Any,
    kind: str | Iterable[str] = "gateway",
    profiles: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """All limits for one host and its memory plan; see the module docstring."""
    hw = resolve_profile(hardware, profiles)
    cores, memory = hw["cores"], hw["memory_mb"]
    services = services_of(kind)
    over = _overrides(overrides)
    limits: dict[str, dict[str, Any]] = {
        "sendmail": sendmail_limits(cores, memory, services),
        "spamd": spamd_limits(cores, memory, services),
        "clamd": clamd_limits(cores, memory, services),
        "mariadb": mariadb_limits(memory, services),
        "greylist": greylist_limits(cores),
    }
    if "max_children" in over["spamd"]:
        limits["spamd"] = spamd_pool(over["spamd"]["max_children"])
    for daemon, values in over.items():
        limits[daemon].update(values)
    plan = memory_plan(memory, services, limits)
    return {
        "cores": cores,
        "memory_mb": memory,
        "services": sorted(services),
        **limits,
        "memory": plan,
        "fits": plan["total"] <= memory,
    }


def passerelle_memory_fits(sizing: Mapping[str, Any], host: str = "this host") -> bool:
    """True when the planned memory fits; else an error naming the host and the numbers."""
    plan = sizing["memory"]
    if plan["total"] <= sizing["memory_mb"]:
        return True
    parts = ", ".join(f"{k} {v}" for k, v in plan.items() if k != "total" and v)
    raise AnsibleFilterError(
        f"{host}: planned memory {plan['total']} MB exceeds its {sizing['memory_mb']} MB "
        f"({parts}); give it more memory (passerelle_hardware) or lower the overridden limits"
    )


def passerelle_milter_memory_max_mb(extra_mb: Any = 0, headroom: Any = 4) -> int:
    """A milter's systemd MemoryMax (MB): ``headroom`` times what the plan counts for one
    milter process (MILTER_MB), plus ``extra_mb`` (e.g. messages held in memory while they
    are inspected). The plan is what the host is sized for; the ceiling only stops a
    runaway process before it takes the host's memory."""
    return int(MILTER_MB * float(headroom) + int(extra_mb))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "passerelle_milter_memory_max_mb": passerelle_milter_memory_max_mb,
            "passerelle_sizing": passerelle_sizing,
            "passerelle_memory_fits": passerelle_memory_fits,
        }
