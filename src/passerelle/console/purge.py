"""The console's periodic purges, run from the pages it serves (the gateways' database users
may not delete): at most every ``PURGE_EVERY`` seconds per process, a failure logged and never
shown on the page (the page is served anyway; the purge is tried again later)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("passerelle.console.purge")

PURGE_EVERY = 600.0  # s between two purges


class PeriodicPurge:
    """Call ``purge(conn, now)`` (it returns the rows deleted) at most every ``every`` s."""

    def __init__(
        self, what: str, purge: Callable[[Any, float], int], every: float = PURGE_EVERY
    ) -> None:
        self.what = what
        self._purge = purge
        self.every = every
        self._last = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, conn: Any, now: float) -> int:
        with self._lock:
            if 0 <= now - self._last < self.every:
                return 0
            self._last = now
        try:
            return self._purge(conn, now)
        except Exception as exc:  # the page is served anyway; tried again later
            log.error("%s: purge failed: %s", self.what, exc)
            return 0
