"""Each gateway's status, as its last gateway-sync pass saw it, for the console's fleet and
outbreak pages: one row per gateway in ``console_gateway_status`` (upserted every pass).

- ``collect`` runs one probe per fact (``FACTS``); a probe that raises makes its fact
  "unknown" with the reason, and the others are still collected: a status is always
  published, never an exception out of the pass.
- ``gateway_probes`` are the probes of a gateway, reusing what ``passerelle status`` reads
  (``reports.status``: the units of ``ops.toml`` through ``systemctl show``, the newest
  signature file; ``reports.metrics.queue_length``: the sendmail queues) and the antivirus
  milter's outbreak state (``OutbreakStore``) and quarantine (the messages outbreak mode
  holds, as ``outbreak.release_held`` picks them).
- A report older than ``STALE_AFTER`` (3 periods of passerelle-console-sync.timer) is stale:
  the gateway's pass stopped, its facts are old.

The facts are stored as one JSON document (bounded, read back leniently: a fact this code
does not know is dropped, an unreadable document makes every fact unknown).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from passerelle.console import schema
from passerelle.console.requests import check_gateway

log = logging.getLogger("passerelle.console.gateway_status")

SCHEMA_VERSION = 1
VERSION_TABLE = "console_gateway_status_schema_version"
SCHEMA_LOCK = "passerelle_console_gateway_status_schema"

# What a gateway reports: its daemons' states, its queues, its signatures' age, its outbreak
# mode and the messages that mode holds.
FACTS = ("daemons", "queues", "signatures", "outbreak", "outbreak_held")
SYNC_PERIOD = 60.0  # s: passerelle-console-sync.timer (console_gateway_on_calendar: minutely)
STALE_AFTER = 3 * SYNC_PERIOD
# Units reported besides ops.toml's (those of ``passerelle status``): the connection guard
# runs from a timer, whose state says whether it still runs.
EXTRA_UNITS = ("passerelle-connwatch.timer",)
REASON_MAX = 300  # characters of an "unknown" reason
DOCUMENT_MAX = 64 * 1024  # characters of a stored report
GATEWAYS_MAX = 1000

Probe = Callable[[], Any]

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_gateway_status (gateway TEXT PRIMARY KEY,"
        " reported_at REAL NOT NULL, status TEXT NOT NULL)",
    ],
}

MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_gateway_status ("
        " gateway VARCHAR(253) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
        " reported_at DOUBLE NOT NULL,"
        " status MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL) ENGINE=InnoDB",
    ],
}


class ProbeError(RuntimeError):
    """A fact that cannot be collected; the message says why."""


@dataclass(frozen=True)
class Fact:
    value: Any = None  # JSON data
    unknown: str = ""  # why the fact is not known ("": it is)

    @property
    def known(self) -> bool:
        return not self.unknown


@dataclass(frozen=True)
class GatewayStatus:
    gateway: str
    reported_at: float  # the gateway's clock
    facts: Mapping[str, Fact] = field(default_factory=dict)

    def fact(self, name: str) -> Fact:
        return self.facts.get(name) or Fact(unknown="not reported")

    def age(self, now: float) -> float:
        return max(0.0, now - self.reported_at)

    def stale(self, now: float, stale_after: float = STALE_AFTER) -> bool:
        return self.age(now) > stale_after


def _why(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ProbeError) else f"{exc.__class__.__name__}: {exc}"
    return text[:REASON_MAX]


def collect(gateway: str, now: float, probes: Mapping[str, Probe]) -> GatewayStatus:
    """Run each probe; one that raises is an unknown fact with the reason, logged."""
    gw = check_gateway(gateway)
    facts: dict[str, Fact] = {}
    for name, probe in probes.items():
        try:
            facts[name] = Fact(probe())
        except Exception as exc:  # the other facts are still collected
            log.warning("gateway status: %s unknown: %s", name, exc)
            facts[name] = Fact(unknown=_why(exc) or "failed")
    return GatewayStatus(gw, float(now), facts)


# -- the stored form -----------------------------------------------------------------------


def status_to_json(status: GatewayStatus) -> str:
    doc = {
        name: ({"value": f.value} if f.known else {"unknown": f.unknown[:REASON_MAX]})
        for name, f in status.facts.items()
        if name in FACTS
    }
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=False)
    if len(text) > DOCUMENT_MAX:
        raise ProbeError(f"the status report is too large ({len(text)} characters)")
    return text


def status_from_json(gateway: str, reported_at: float, text: str) -> GatewayStatus:
    try:
        doc = json.loads(text[:DOCUMENT_MAX])
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        why = f"unreadable report: {exc}"[:REASON_MAX]
        return GatewayStatus(gateway, reported_at, {n: Fact(unknown=why) for n in FACTS})
    facts: dict[str, Fact] = {}
    for name in FACTS:
        item = doc.get(name)
        if not isinstance(item, dict):
            continue
        if "unknown" in item:
            facts[name] = Fact(unknown=str(item["unknown"])[:REASON_MAX] or "failed")
        else:
            facts[name] = Fact(item.get("value"))
    return GatewayStatus(gateway, reported_at, facts)


class GatewayStatusTable(schema.ConsoleTable):
    """The gateways' last reports on one DB-API connection (autocommit)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "gateway status"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def upsert(self, status: GatewayStatus) -> None:
        """This gateway's report, replacing its last one."""
        gw = check_gateway(status.gateway)
        text = status_to_json(status)
        try:
            self._execute(
                "INSERT INTO console_gateway_status (gateway, reported_at, status)"
                " VALUES (?, ?, ?)",
                (gw, status.reported_at, text),
            )
            return
        except self._integrity:
            pass
        self._execute(
            "UPDATE console_gateway_status SET reported_at = ?, status = ? WHERE gateway = ?",
            (status.reported_at, text, gw),
        )

    def get(self, gateway: str) -> GatewayStatus | None:
        row = self._execute(
            "SELECT gateway, reported_at, status FROM console_gateway_status WHERE gateway = ?",
            (check_gateway(gateway),),
        ).fetchone()
        return None if row is None else status_from_json(str(row[0]), float(row[1]), str(row[2]))

    def all(self) -> list[GatewayStatus]:
        """Every gateway's last report, by name."""
        rows = self._execute(
            "SELECT gateway, reported_at, status FROM console_gateway_status"
            " ORDER BY gateway LIMIT ?",
            (GATEWAYS_MAX,),
        ).fetchall()
        return [status_from_json(str(g), float(t), str(s)) for g, t, s in rows]

    def report_times(self) -> list[tuple[str, float]]:
        """Each gateway's last report time, by name (what supervision needs: no report read)."""
        rows = self._execute(
            "SELECT gateway, reported_at FROM console_gateway_status ORDER BY gateway LIMIT ?",
            (GATEWAYS_MAX,),
        ).fetchall()
        return [(str(g), float(t)) for g, t in rows]

    def gateways(self) -> list[str]:
        """The gateways that reported at least once, by name."""
        rows = self._execute(
            "SELECT gateway FROM console_gateway_status ORDER BY gateway LIMIT ?",
            (GATEWAYS_MAX,),
        ).fetchall()
        return [str(r[0]) for r in rows]


# -- the probes of a gateway ------------------------------------------------------------------


def _units_probe(units: Sequence[str], runner: Any) -> Probe:
    def probe() -> list[dict[str, str]]:
        from passerelle.reports.status import probe_units

        found, problem = probe_units(units, runner)
        if problem:
            raise ProbeError(problem)
        return [{"unit": u.name, "active": u.active, "sub": u.sub} for u in found]

    return probe


def _queues_probe(directories: Sequence[str]) -> Probe:
    def probe() -> dict[str, int]:
        from passerelle.reports.metrics import queue_length

        counts = {d: n for d in directories if (n := queue_length(d)) is not None}
        if not counts:
            raise ProbeError(f"no queue folder ({', '.join(directories)})")
        return counts

    return probe


def _signatures_probe(directory: str) -> Probe:
    def probe() -> dict[str, Any]:
        from passerelle.reports.status import newest_signature

        newest = newest_signature(directory)
        if newest is None:
            raise ProbeError(f"no signature file in {directory}")
        return {"file": newest[0], "updated": newest[1]}

    return probe


def _failing(why: str) -> Probe:
    def probe() -> Any:
        raise ProbeError(why)

    return probe


def gateway_probes(
    ops_config: str,
    outbreak: Any,
    quarantine: Any,
    runner: Callable[[Sequence[str]], tuple[int, str]] | None = None,
) -> dict[str, Probe]:
    """The probes of this gateway: ``ops_config`` (``/etc/passerelle/ops.toml``, what
    ``passerelle status`` reads: units, queue folders, signature folder), the milter's
    ``OutbreakStore`` and ``Quarantine``; ``runner`` runs systemctl (``reports.status.run``).

    An ops config that cannot be read makes its three facts unknown, with why."""
    from passerelle.antivirus.outbreak import OUTBREAK
    from passerelle.reports.config import load_config as load_ops_config
    from passerelle.reports.status import run

    def outbreak_state() -> dict[str, Any]:
        s = outbreak.read()
        return {"on": bool(s.on), "since": float(s.since), "by": str(s.by), "reason": str(s.reason)}

    def outbreak_held() -> int:
        return sum(1 for i in quarantine.items() if i.reason == OUTBREAK and not i.released)

    probes: dict[str, Probe]
    try:
        ops = load_ops_config(ops_config)
    except Exception as exc:  # a missing or bad ops.toml: those facts are unknown
        why = f"ops config: {exc}"[:REASON_MAX]
        probes = {name: _failing(why) for name in ("daemons", "queues", "signatures")}
    else:
        units = list(ops.units) + [u for u in EXTRA_UNITS if u not in ops.units]
        probes = {
            "daemons": _units_probe(units, runner or run),
            "queues": _queues_probe(ops.queue_dirs),
            "signatures": _signatures_probe(ops.signature_dir),
        }
    probes["outbreak"] = outbreak_state
    probes["outbreak_held"] = outbreak_held
    return probes
