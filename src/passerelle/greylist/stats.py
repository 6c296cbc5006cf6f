"""Counters kept in memory and flushed to the store, the delay distribution of reports and
the UTC days of the daily history."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from passerelle.durations import format_duration

# upper bounds (seconds) of the delay buckets in reports; the last bucket is open
DELAY_BUCKETS: tuple[int, ...] = (45 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600)

DAY = 86400  # a UTC day: the stats buckets (whole hours since the epoch) never straddle two
HISTORY_DAYS = 14  # days of the daily history by default (today included)
HISTORY_DAYS_MAX = 60  # at most (the stats table keeps 400 days; the cost is per day)
DELAYS_PER_DAY = 2000  # delays read per day for its distribution (a sample beyond)


class Counters:
    """Thread-safe hit counters per (hour bucket, kind, subject)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[tuple[int, str, str], int] = {}

    def hit(self, now: float, kind: str, subject: str, n: int = 1) -> None:
        key = (int(now // 3600 * 3600), kind, subject[:255])
        with self._lock:
            self._hits[key] = self._hits.get(key, 0) + n

    def drain(self) -> list[tuple[int, str, str, int]]:
        with self._lock:
            hits, self._hits = self._hits, {}
        return [(b, k, s, n) for (b, k, s), n in sorted(hits.items())]

    def restore(self, rows: Sequence[tuple[int, str, str, int]]) -> None:
        """Put back rows that could not be written (store down)."""
        with self._lock:
            for b, k, s, n in rows:
                self._hits[(b, k, s)] = self._hits.get((b, k, s), 0) + n


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def delay_distribution(
    delays: Sequence[float], buckets: Sequence[int] = DELAY_BUCKETS
) -> dict[str, Any]:
    """min, p50, p90, p99, max (seconds) and counts per bucket of the given delays."""
    values = sorted(delays)
    labels = []
    lower = 0
    for upper in buckets:
        labels.append(f"{format_duration(lower)}-{format_duration(upper)}")
        lower = upper
    labels.append(f">={format_duration(lower)}")
    counts = [0] * (len(buckets) + 1)
    for v in values:
        i = 0
        while i < len(buckets) and v >= buckets[i]:
            i += 1
        counts[i] += 1
    out: dict[str, Any] = {"count": len(values)}
    if values:
        out.update(
            min=values[0],
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=values[-1],
        )
    else:
        out.update(min=None, p50=None, p90=None, p99=None, max=None)
    out["buckets"] = [{"range": lbl, "count": c} for lbl, c in zip(labels, counts)]
    return out


def day_start(t: float) -> int:
    """The UTC midnight (epoch seconds) that starts the day of ``t``."""
    return int(t // DAY * DAY)


def history_days(days: object) -> int:
    """``days`` bounded to 1..``HISTORY_DAYS_MAX`` (``HISTORY_DAYS`` when not a number)."""
    if isinstance(days, bool) or not isinstance(days, int):
        return HISTORY_DAYS
    return max(1, min(days, HISTORY_DAYS_MAX))


def proportional_shares(counts: Sequence[int], total: int) -> list[int]:
    """``total`` split over ``counts`` in proportion (largest remainders, ties to the first):
    each share at most its count, ``min(total, sum(counts))`` in all."""
    available = sum(max(0, c) for c in counts)
    if total >= available:
        return [max(0, c) for c in counts]
    if total <= 0:
        return [0] * len(counts)
    exact = [max(0, c) * total / available for c in counts]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (shares[i] - exact[i], i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass
class DayStats:
    """What the store counted for one UTC day (``day``: its midnight, epoch seconds).

    ``decisions``: hits per decision reason (the ``decision`` counters); ``whitelisted``: hits
    of whitelisted machines; ``returned``: distinct client groups with a triplet that passed
    that day after its delay, ``passed``: those triplets; ``delays``: their delays (seconds),
    at most ``DELAYS_PER_DAY`` of them (a sample when ``passed`` is more)."""

    day: int
    decisions: dict[str, int] = field(default_factory=dict)
    whitelisted: int = 0
    returned: int = 0
    passed: int = 0
    delays: list[float] = field(default_factory=list)
