"""``passerelle greylist report``: whitelisted machines, machines that came back, clients
that never retried, delay distribution; and the daily history of the console's greylist
page (``build_history``), also printed by ``report --days`` (``format_history_text``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from passerelle.durations import format_duration
from passerelle.greylist.stats import (
    DAY,
    HISTORY_DAYS,
    DayStats,
    day_start,
    delay_distribution,
    history_days,
)
from passerelle.greylist.store import SQLStore

# decision reasons (policy.evaluate) folded into the history's series
GREYLISTED = ("new", "early", "restart")  # delayed: temporarily refused
PASSED = ("delayed", "passed")  # accepted by the greylist check (after a delay, or known)
DECISIONS_MAX = 20  # reasons kept per day (most hits first): a bounded body


def build_report(store: SQLStore, now: float, since: float, min_delay: float) -> dict[str, Any]:
    start = now - since
    return {
        "since": start,
        "until": now,
        "decisions": dict(store.stats_since(start, "decision")),
        "whitelisted": [
            {"client": s, "hits": n} for s, n in store.stats_since(start, "whitelisted")
        ],
        "came_back": [
            {"client": c, "triplets": n, "max_delay": d} for c, n, d in store.came_back(start)
        ],
        "never_retried": [
            {"client": c, "triplets": n} for c, n in store.never_retried(start, now - min_delay)
        ],
        "delays": delay_distribution(store.delays(start)),
    }


def build_history(rows: Sequence[DayStats], now: float, days: int = HISTORY_DAYS) -> dict[str, Any]:
    """The last ``days`` UTC days up to the day of ``now`` (today included, oldest first; the
    bound of ``history_days``) from the store's ``DayStats``: a day without a row is all zeros,
    a row outside those days is left out."""
    n = history_days(days)
    today = day_start(now)
    first = today - (n - 1) * DAY
    by_day = {r.day: r for r in rows if first <= r.day <= today}
    out = []
    for i in range(n):
        day = first + i * DAY
        r = by_day.get(day) or DayStats(day)
        top = sorted(r.decisions.items(), key=lambda kv: (-kv[1], kv[0]))[:DECISIONS_MAX]
        out.append(
            {
                "day": day,
                "date": time.strftime("%Y-%m-%d", time.gmtime(day)),
                "decisions": dict(sorted((str(k)[:64], int(v)) for k, v in top)),
                "greylisted": sum(r.decisions.get(k, 0) for k in GREYLISTED),
                "passed": sum(r.decisions.get(k, 0) for k in PASSED),
                "whitelisted": r.whitelisted,
                "returned": r.returned,
                "came_back": r.passed,
                "delays": delay_distribution(r.delays),
                "delays_sampled": r.passed > len(r.delays),
            }
        )
    return {"days": n, "since": first, "until": now, "by_day": out}


def read_history(store: SQLStore, now: float, days: int = HISTORY_DAYS) -> dict[str, Any]:
    """``build_history`` of what ``store.daily_stats`` counts for those days."""
    n = history_days(days)
    return build_history(store.daily_stats(day_start(now) - (n - 1) * DAY, n), now, n)


def _d(v: float | None) -> str:
    return "-" if v is None else f"{format_duration(v)} ({round(v)} s)"


def format_text(rep: dict[str, Any]) -> str:
    lines = []
    dec = rep["decisions"]
    lines.append("Decisions: " + (", ".join(f"{k} {v}" for k, v in sorted(dec.items())) or "none"))
    lines.append("")
    lines.append(f"Whitelisted machines seen ({len(rep['whitelisted'])}):")
    lines += [f"  {w['hits']:>8}  {w['client']}" for w in rep["whitelisted"]] or ["  none"]
    lines.append("")
    lines.append(f"Machines that came back ({len(rep['came_back'])}):")
    lines += [
        f"  {c['triplets']:>8}  {c['client']}  (longest delay {_d(c['max_delay'])})"
        for c in rep["came_back"]
    ] or ["  none"]
    lines.append("")
    lines.append(f"Clients that never retried ({len(rep['never_retried'])}):")
    lines += [f"  {c['triplets']:>8}  {c['client']}" for c in rep["never_retried"]] or ["  none"]
    lines.append("")
    d = rep["delays"]
    lines.append(f"Delays ({d['count']} accepted after greylisting):")
    for k in ("min", "p50", "p90", "p99", "max"):
        lines.append(f"  {k:>4}  {_d(d[k])}")
    for b in d["buckets"]:
        lines.append(f"  {b['range']:>12}  {b['count']}")
    return "\n".join(lines) + "\n"


def _p(v: float | None) -> str:
    return "-" if v is None else format_duration(v)


def format_history_text(hist: dict[str, Any]) -> str:
    """``build_history``'s days as a table, one row per day (oldest first); a day's delay
    percentiles read from a sample (``delays_sampled``) are marked ``*`` and footnoted."""
    lines = [
        f"Greylist history by UTC day ({hist['days']} days, today included):",
        f"{'date':<10}  {'delayed':>8}  {'passed':>8}  {'whitelisted':>11}  {'returning':>9}"
        f"  {'delay p50':>10}  {'delay p90':>10}",
    ]
    notes = []
    for d in hist["by_day"]:
        dist = d["delays"]
        mark = "*" if d["delays_sampled"] else ""
        lines.append(
            f"{d['date']:<10}  {d['greylisted']:>8}  {d['passed']:>8}  {d['whitelisted']:>11}"
            f"  {d['returned']:>9}  {_p(dist['p50']) + mark:>10}  {_p(dist['p90']) + mark:>10}"
        )
        if mark:
            notes.append(
                f"* {d['date']}: delays of {dist['count']} of the {d['came_back']} triplets"
                " accepted after their delay"
            )
    return "\n".join(lines + notes) + "\n"


def format_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2, sort_keys=True) + "\n"
