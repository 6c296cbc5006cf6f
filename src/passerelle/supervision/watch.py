"""Process watch (``passerelle watch run``): wanted daemons are started again, and restarts
are remembered so that a flapping daemon is seen.

Every daemon runs under systemd with ``Restart=on-failure``, which covers crashes. What it
does not cover -- a daemon stopped by hand or by a package script and forgotten, a unit that
hit its start limit and stays ``failed`` -- is the watch's job: a timer runs it every minute;
a listed unit found down on two runs at least ``grace`` apart is started again (reset-failed,
start) and the start is logged to syslog. The grace lets operators (and tests) stop a daemon
briefly without the watch racing them; ``systemctl mask`` holds a unit down for longer.

The state file (JSON, readable by the NRPE check ``passerelle check restarts``)::

    {"version": 1, "updated": 1764237600.0,
     "nrestarts": {"spamd.service": 2},          # systemd's counter at the last run
     "down": {"spamd.service": 1764237540.0},     # first seen down at
     "events": [{"unit": "spamd.service", "time": 1764237600.0, "kind": "watch-start",
                 "detail": "inactive (dead)"}]}

``kind`` is ``systemd-restart`` (systemd's NRestarts went up: a crash it restarted) or
``watch-start`` (the watch started a unit found down). Events older than ``keep`` are dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from passerelle.atomicfile import atomic_write
from passerelle.config import ConfigError, Section, load_toml, naming_file
from passerelle.runner import Runner, run_command

DEFAULT_CONFIG = "/etc/passerelle/watch.toml"


@dataclass(frozen=True)
class WatchConfig:
    units: tuple[str, ...]
    state: str = "/var/lib/passerelle-status/watch.json"
    grace: int = 60
    keep: int = 86400
    systemctl: str = "/usr/bin/systemctl"
    log_level: str = "info"


def parse_config(data: Mapping[str, Any], source: str | None = None) -> WatchConfig:
    with naming_file(source):
        top = Section(data)
        s = top.table("watch")
        units = s.str_list("units")
        if not units:
            raise ConfigError("watch.units", "needs at least one unit")
        for u in units:
            if not u or "/" in u or " " in u:
                raise ConfigError("watch.units", f"not a systemd unit name: {u!r}")
        grace = s.duration("grace", "60s")
        keep = s.duration("keep", "24h")
        if keep < 3600:
            raise ConfigError("watch.keep", "must be at least 1h (the check looks one hour back)")
        cfg = WatchConfig(
            units=tuple(u if "." in u else f"{u}.service" for u in units),
            state=s.str("state", WatchConfig.state),
            grace=grace,
            keep=keep,
            systemctl=s.str("systemctl", WatchConfig.systemctl),
            log_level=s.str("log_level", "info", choices=("debug", "info", "warning")),
        )
        s.finish()
        top.finish()
    return cfg


def load_config(path: str | Path) -> WatchConfig:
    return parse_config(load_toml(path), str(path))


# -- decisions (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class UnitStatus:
    """What systemd says about a unit (``systemctl show``)."""

    unit: str
    load_state: str  # loaded, not-found, masked
    active_state: str  # active, reloading, inactive, failed, activating, deactivating
    sub_state: str
    nrestarts: int
    tasks: int | None = None  # processes in the unit's cgroup (TasksCurrent), None: unknown
    cgroup: str = ""  # the unit's control group (ControlGroup)

    @property
    def exited(self) -> bool:
        """Active but nothing runs: a unit generated from an init script (RemainAfterExit)
        whose daemon died. ``systemctl start`` does nothing on it; it must be restarted."""
        return self.active_state == "active" and self.sub_state == "exited" and self.tasks == 0

    @property
    def down(self) -> bool:
        return self.load_state == "loaded" and (
            self.active_state in ("inactive", "failed") or self.exited
        )


@dataclass
class WatchState:
    nrestarts: dict[str, int] = field(default_factory=dict)
    down: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> WatchState:
        return cls(
            nrestarts={str(k): int(v) for k, v in dict(doc.get("nrestarts", {})).items()},
            down={str(k): float(v) for k, v in dict(doc.get("down", {})).items()},
            events=[dict(e) for e in doc.get("events", []) if isinstance(e, Mapping)],
        )

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "version": 1,
            "updated": now,
            "nrestarts": dict(sorted(self.nrestarts.items())),
            "down": dict(sorted(self.down.items())),
            "events": self.events,
        }


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...]  # units to start now
    state: WatchState
    new_events: tuple[dict[str, Any], ...]
    waiting: tuple[str, ...]  # down, inside the grace


def plan(
    previous: WatchState, statuses: Sequence[UnitStatus], now: float, grace: float, keep: float
) -> Plan:
    """Compare systemd's view with the last run's: record restarts, choose units to start."""
    state = WatchState(
        events=[e for e in previous.events if float(e.get("time", 0)) > now - keep],
    )
    new_events: list[dict[str, Any]] = []
    start: list[str] = []
    waiting: list[str] = []
    for st in statuses:
        before = previous.nrestarts.get(st.unit)
        if before is not None and st.nrestarts > before:
            for _ in range(st.nrestarts - before):
                new_events.append(
                    {"unit": st.unit, "time": now, "kind": "systemd-restart", "detail": ""}
                )
        state.nrestarts[st.unit] = st.nrestarts
        if not st.down:
            continue
        since = previous.down.get(st.unit)
        if since is None:
            state.down[st.unit] = now
            waiting.append(st.unit)
        elif now - since >= grace:
            start.append(st.unit)
            new_events.append(
                {
                    "unit": st.unit,
                    "time": now,
                    "kind": "watch-start",
                    "detail": f"{st.active_state} ({st.sub_state}) since {int(now - since)} s",
                }
            )
        else:
            state.down[st.unit] = since
            waiting.append(st.unit)
    state.events.extend(new_events)
    return Plan(tuple(start), state, tuple(new_events), tuple(waiting))


# -- I/O -----------------------------------------------------------------------------------


def parse_show(unit: str, text: str) -> UnitStatus:
    """``systemctl show -p LoadState,ActiveState,SubState,NRestarts,TasksCurrent UNIT``."""
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        nrestarts = int(props.get("NRestarts", "0") or 0)
    except ValueError:
        nrestarts = 0
    try:
        tasks: int | None = int(props.get("TasksCurrent", ""))
    except ValueError:
        tasks = None  # "[not set]": no tasks accounting, so nothing is known
    return UnitStatus(
        unit=unit,
        load_state=props.get("LoadState", "not-found"),
        active_state=props.get("ActiveState", "unknown"),
        sub_state=props.get("SubState", "unknown"),
        nrestarts=nrestarts,
        tasks=tasks,
        cgroup=props.get("ControlGroup", ""),
    )


CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


def count_cgroup_procs(cgroup: str, roots: Sequence[str] = CGROUP_ROOTS) -> int | None:
    """Processes in a control group, for hosts without tasks accounting (cgroup v1 or
    hybrid, where TasksCurrent is "[not set]"). None when no hierarchy has the group."""
    if not cgroup.startswith("/") or ".." in cgroup:
        return None
    for root in roots:
        try:
            text = Path(root + cgroup, "cgroup.procs").read_text(encoding="ascii")
        except (OSError, ValueError):
            continue
        return len(text.split())
    return None


def load_state(path: str | Path) -> WatchState:
    p = Path(path)
    try:
        return WatchState.from_json(json.loads(p.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return WatchState()
    except (OSError, ValueError, TypeError, AttributeError):
        # A corrupt state only loses the restart history; the watch must go on.
        return WatchState()


@dataclass
class RunResult:
    started: list[str]
    failed: list[str]
    waiting: list[str]
    events: list[dict[str, Any]]


def run_once(
    cfg: WatchConfig,
    now: float,
    runner: Runner = run_command,
    logger: logging.Logger | None = None,
    count_procs: Callable[[str], int | None] = count_cgroup_procs,
) -> RunResult:
    log = logger or logging.getLogger("passerelle")
    statuses = []
    props = "LoadState,ActiveState,SubState,NRestarts,TasksCurrent,ControlGroup"
    for unit in cfg.units:
        rc, out = runner([cfg.systemctl, "show", "-p", props, unit], None)
        if rc != 0:
            log.error("watch: systemctl show %s failed (%d): %s", unit, rc, out)
            continue
        st = parse_show(unit, out)
        if st.active_state == "active" and st.sub_state == "exited" and st.tasks is None:
            st = replace(st, tasks=count_procs(st.cgroup))
        statuses.append(st)
    p = plan(load_state(cfg.state), statuses, now, cfg.grace, cfg.keep)
    for e in p.new_events:
        if e["kind"] == "systemd-restart":
            log.warning("watch: %s was restarted by systemd (it failed)", e["unit"])
    failed = []
    exited = {st.unit for st in statuses if st.exited}
    for unit in p.start:
        runner([cfg.systemctl, "reset-failed", unit], None)
        verb = "restart" if unit in exited else "start"
        rc, out = runner([cfg.systemctl, verb, unit], None)
        if rc == 0:
            log.warning("watch: %s was down, started it again", unit)
        else:
            failed.append(unit)
            p.state.down[unit] = now  # try again after another grace period
            log.error("watch: %s is down and could not be started (%d): %s", unit, rc, out)
    for unit in p.waiting:
        log.info("watch: %s is down, starting it if still down in %d s", unit, cfg.grace)
    atomic_write(cfg.state, (json.dumps(p.state.to_json(now), indent=1) + "\n").encode(), 0o644)
    return RunResult(
        [u for u in p.start if u not in failed], failed, list(p.waiting), list(p.new_events)
    )
