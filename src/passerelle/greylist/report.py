"""``passerelle greylist report``: whitelisted machines, machines that came back, clients
that never retried, delay distribution."""

from __future__ import annotations

import json
from typing import Any

from passerelle.durations import format_duration
from passerelle.greylist.stats import delay_distribution
from passerelle.greylist.store import SQLStore


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


def format_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2, sort_keys=True) + "\n"
