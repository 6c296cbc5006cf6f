"""A small TTL cache of directory answers for the RCPT-time socket map.

One directory search per address gives both routing attributes, so the cache keeps the
search result (the entries found) per address: sendmail's two ldap_routing lookups for a
recipient cost one search, and a repeated recipient costs none until its answer expires.

* an answer with exactly one entry lives ``positive_ttl`` seconds, any other answer (no
  entry, several entries) ``negative_ttl`` seconds; a TTL of 0 keeps nothing;
* an error (``DirectoryUnavailable``) is never kept: the next lookup asks again;
* at most ``max_entries`` addresses: the least recently used goes first (an expired one
  is dropped when it is next asked for);
* the clock is injected (``time.monotonic`` by default) and the cache is thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from passerelle.routing.route import Entry, Lookup


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    evictions: int = 0


class CachedLookup:
    """Wraps a directory ``Lookup`` with positive and negative TTLs; itself a ``Lookup``."""

    def __init__(
        self,
        lookup: Lookup,
        positive_ttl: float = 300,
        negative_ttl: float = 60,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._lookup = lookup
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, list[Entry]]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __call__(self, address: str) -> list[Entry]:
        key = address.lower()
        now = self._clock()
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                if item[0] > now:
                    self._items.move_to_end(key)
                    self.stats.hits += 1
                    return list(item[1])
                del self._items[key]
            self.stats.misses += 1
        # The search runs outside the lock: one slow answer never holds up the others.
        try:
            entries = self._lookup(key)
        except Exception:
            with self._lock:
                self.stats.errors += 1
            raise
        ttl = self.positive_ttl if len(entries) == 1 else self.negative_ttl
        if ttl > 0:
            with self._lock:
                self._items[key] = (self._clock() + ttl, list(entries))
                self._items.move_to_end(key)
                self._shrink()
        return entries

    def _shrink(self) -> None:
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
