"""Replacing a file atomically: a reader sees the old content or the new, never half of it.

``atomic_write`` writes a temporary file in the same directory, fsyncs it and renames it over
the target. The content is either bytes or a writer called with the open binary file (for a
body streamed from elsewhere, as the quarantine does); ``sync_dir`` also fsyncs the directory,
so that the rename itself survives a crash.

Safe in a folder another user may write (the quarantine, /var/lib/passerelle): the temporary
file gets a random name and is created with ``O_EXCL|O_NOFOLLOW`` (``tempfile.mkstemp``), so
a planted name or symlink is never opened; its mode is set on the descriptor, exactly
``mode`` whatever the umask; the folder is opened with ``O_DIRECTORY|O_NOFOLLOW`` to sync it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Called with the open temporary file; writes the whole new content.
Writer = Callable[[BinaryIO], None]


def atomic_write(
    path: str | Path, data: bytes | Writer, mode: int = 0o644, *, sync_dir: bool = False
) -> None:
    """Write to a temporary file in the same directory, fsync, rename over ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        # On the descriptor, never by name: in a folder another user may write, the name
        # can be swapped for a symlink (root would then chmod the link's target).
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
