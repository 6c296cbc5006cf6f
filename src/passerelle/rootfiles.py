"""Files that root opens in folders another user may write.

The state of the root-run tools (``connwatch.json``, ``metrics.json``, their lock files and
the reload marker) lives in ``/var/lib/passerelle``, which the ``passerelle`` user owns:
anything found there may have been planted by that user. Every such file is opened without
following a symbolic link (``O_NOFOLLOW``), without blocking on a FIFO (``O_NONBLOCK``),
without leaking the descriptor to a child (``O_CLOEXEC``), and used only if it is a regular
file with a single link, owned by root or by the user running the command; a new one is
created 0600. Anything else is refused with ``UnsafeFileError`` (an ``OSError``).

- ``exclusive_lock``: an ``flock`` on a lock file beside a state file;
- ``open_trusted_file``: create or open such a file for writing (a marker, a lock);
- ``read_trusted_file``: read a state file root wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path

_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | _SAFE
_READ_FLAGS = os.O_RDONLY | _SAFE


class UnsafeFileError(OSError):
    """A file root was about to open is not one it may trust."""


def _refuse(path: str | Path, why: str) -> UnsafeFileError:
    return UnsafeFileError(errno.EPERM, f"refused: {why}", str(path))


def trusted_owners() -> frozenset[int]:
    """Root and the user running the command."""
    return frozenset({0, os.geteuid()})


def _open_checked(path: str | Path, flags: int, trusted_uids: Collection[int] | None = None) -> int:
    uids = trusted_owners() if trusted_uids is None else trusted_uids
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "a symbolic link") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):  # ENXIO: a FIFO nobody reads
            raise _refuse(path, "not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "not a regular file")
        if st.st_uid not in uids:
            raise _refuse(path, f"owned by uid {st.st_uid}")
        if st.st_nlink != 1:
            raise _refuse(path, f"{st.st_nlink} hard links")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_trusted_file(path: str | Path, trusted_uids: Collection[int] | None = None) -> int:
    """A write descriptor on ``path`` (created 0600 if absent, never truncated), checked as
    the module docstring says."""
    return _open_checked(path, _WRITE_FLAGS, trusted_uids)


def read_trusted_file(
    path: str | Path, limit: int = 64 << 20, trusted_uids: Collection[int] | None = None
) -> bytes:
    """The content of ``path`` (at most ``limit`` bytes), checked as the module docstring
    says; ``FileNotFoundError`` if it is absent."""
    fd = _open_checked(path, _READ_FLAGS, trusted_uids)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, trusted_uids: Collection[int] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` for the ``with`` block."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = open_trusted_file(path, trusted_uids)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
