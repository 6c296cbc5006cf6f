"""SQLite parts: the embedded greylist store of a gateway without the shared database.

The live file is in WAL mode and written by the milter: a raw copy of it could miss the
frames still in the WAL or catch a page half-written. SQLite's online backup API copies a
consistent snapshot (``Connection.backup``), page by page, while the milter goes on; the
restore uses the same API in the other direction, into the live file (the milter's
connection sees the restored content at its next statement).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

BUSY_MS = 10_000


class SQLiteError(RuntimeError):
    """A SQLite file that cannot be copied or restored."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_rows(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {t: int(conn.execute(f"SELECT COUNT(*) FROM {_quote(t)}").fetchone()[0]) for t in tables}


def file_meta(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": f"{st.st_mode & 0o7777:04o}"}


def copy_store(path: str, dest: str) -> dict[str, int]:
    """A consistent copy of the live store ``path`` into the new file ``dest``; its rows."""
    if not os.path.isfile(path):
        raise SQLiteError(f"{path}: no such SQLite file")
    try:
        src = sqlite3.connect(path, timeout=BUSY_MS / 1000)
    except sqlite3.Error as exc:
        raise SQLiteError(f"{path}: {exc}") from None
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            # The copy is read alone: no WAL beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
            return table_rows(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise SQLiteError(f"{path}: {exc}") from None
    finally:
        src.close()


def read_rows(path: str) -> dict[str, int]:
    """Rows per table of a SQLite file (a copy taken out of a backup)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise SQLiteError(f"{path}: the copy fails SQLite's integrity check")
            return table_rows(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise SQLiteError(f"{path}: {exc}") from None


def live_rows(path: str) -> dict[str, int] | None:
    """Rows per table of the live store, None if there is no file."""
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(path, timeout=BUSY_MS / 1000)
        try:
            return table_rows(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise SQLiteError(f"{path}: {exc}") from None


def restore_store(copy: str, path: str, meta: dict[str, Any]) -> dict[str, int]:
    """Copy the backup ``copy`` into the live store ``path`` (created, with the owner and mode
    the backed-up file had, when missing); the rows it then holds."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    created = not os.path.exists(path)
    try:
        src = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(path, timeout=BUSY_MS / 1000)
            try:
                dst.execute("PRAGMA journal_mode=WAL")
                src.backup(dst)
                rows = table_rows(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise SQLiteError(f"{path}: {exc}") from None
    if created and os.geteuid() == 0:
        with contextlib.suppress(KeyError, ValueError):
            os.chown(path, int(meta["uid"]), int(meta["gid"]))
            os.chmod(path, int(str(meta["mode"]), 8))
    return rows
