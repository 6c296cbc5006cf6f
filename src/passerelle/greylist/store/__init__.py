"""Greylist stores: ``open_store(url, timeout)`` gives a SQLite or MariaDB store."""

from __future__ import annotations

from passerelle.dburl import StoreURL, StoreURLError, parse_store_url
from passerelle.greylist.store.base import SCHEMA_VERSION, SQLStore, StoreError, Triplet

__all__ = [
    "SCHEMA_VERSION",
    "SQLStore",
    "StoreError",
    "StoreURL",
    "StoreURLError",
    "Triplet",
    "open_store",
    "parse_store_url",
]


def open_store(url: str | StoreURL, timeout: float = 2.0, serial: bool = False) -> SQLStore:
    """A store for ``url``; connections are opened lazily (per thread) and migrate once.

    ``serial``: a SQLite store keeps one connection, used under ``store.lock`` by the caller's
    own thread (``SQLStore.serial``); a MariaDB store ignores it (one connection per worker
    thread of the caller's pool, network waits bounded by its timeouts)."""
    u = parse_store_url(url) if isinstance(url, str) else url
    if u.scheme == "sqlite":
        from passerelle.greylist.store.sqlite import SQLiteStore

        return SQLiteStore(u.path, timeout, serial=serial)
    from passerelle.greylist.store.mysql import MySQLStore

    return MySQLStore(u, timeout)
