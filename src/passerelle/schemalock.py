"""The MariaDB lock every schema migration runs under, so that two processes starting at
once (two gateways upgraded together, a milter and ``passerelle ... migrate``) never both run
a migration: the second waits for the first, then reads the schema version the first wrote
and has nothing left to do.

``GET_LOCK`` answers 1 (held), 0 (another session kept it for the whole wait) or NULL (an
error): only 1 lets a migration run, the other answers stop it with a clear error instead of
migrating anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCHEMA_LOCK_WAIT = 30  # seconds a migration waits for another one to finish


class SchemaLockBusy(RuntimeError):
    """The schema lock was not obtained: another process is migrating (or the server failed)."""


def lock_answer_held(rows: Sequence[Sequence[Any]] | None) -> bool:
    """True when ``SELECT GET_LOCK(...)`` answered 1 (this session holds the lock)."""
    if not rows or not rows[0]:
        return False
    try:
        return int(rows[0][0]) == 1
    except (TypeError, ValueError):  # NULL: an error on the server
        return False


def acquire_schema_lock(cur: Any, name: str, wait: float = SCHEMA_LOCK_WAIT) -> None:
    """Take the named lock on this cursor's session, or raise ``SchemaLockBusy``."""
    cur.execute("SELECT GET_LOCK(%s, %s)", (name, wait))
    if not lock_answer_held(cur.fetchall()):
        raise SchemaLockBusy(
            f"schema lock {name!r} not obtained within {wait:g} s: another process is "
            "migrating this database; try again once it has finished"
        )


def release_schema_lock(cur: Any, name: str) -> None:
    cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
    cur.fetchall()
