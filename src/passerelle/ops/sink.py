"""Where per-host connection counts go, and where the totals that decide come from.

``CountSink`` is the seam for the *beyond the reference* goal of counting a client across
every gateway: each gateway publishes its own counts for the window, then decides on the
totals of all gateways.

- ``LocalSink`` (implemented): totals are this host's counts.
- MariaDB sink (TODO, not implemented): one table on the ``greylist_db`` host::

      CREATE TABLE connwatch_counts (
        host VARCHAR(255) NOT NULL, direction VARCHAR(16) NOT NULL,
        ip VARCHAR(45) NOT NULL, sessions INT UNSIGNED NOT NULL,
        window_end DATETIME NOT NULL,
        PRIMARY KEY (host, direction, ip)
      );

  ``publish`` = DELETE this host's rows for the direction then a batched INSERT (one
  transaction); ``totals`` = ``SELECT ip, SUM(sessions) ... WHERE direction = %s AND
  window_end > NOW() - INTERVAL <window/2> SECOND GROUP BY ip`` so a gateway whose timer
  stopped ages out. PyMySQL comes from python3-pymysql on the hosts. Policy when the database
  is down: fall back to the local counts and say so in the status line (never block on an
  error). Gateways' timers should run at the same minute (the role sets ``OnCalendar``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class CountSink(Protocol):
    def publish(
        self, host: str, direction: str, window_end: float, counts: Mapping[str, int]
    ) -> None:
        """Record this host's sessions per client IP for the window ending at window_end."""

    def totals(self, direction: str, window_end: float, window: int) -> dict[str, int]:
        """Sessions per client IP summed over every host that published for this window."""


class LocalSink:
    """Single gateway: the totals are what this host published."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}

    def publish(
        self, host: str, direction: str, window_end: float, counts: Mapping[str, int]
    ) -> None:
        self._counts[direction] = dict(counts)

    def totals(self, direction: str, window_end: float, window: int) -> dict[str, int]:
        return dict(self._counts.get(direction, {}))
