"""Quarantine on disk: ``ID.eml`` (the message as received) + ``ID.json`` (its metadata).

Writes are atomic (``passerelle.atomicfile``: temporary file, fsync, rename, folder fsynced;
the JSON is written last, so an item exists only once both files are complete). Every action
is appended to the item's history and logged. Release re-injects to the original recipients
only, once.

The milter (user ``passerelle``) writes new items; root (the release timer, the purge, an
operator) reads, rewrites and mails them. The directory is root's (``root:passerelle``,
mode 3770: the milter can add entries, the sticky bit stops it from replacing or removing
anything it does not own), and root trusts nothing it finds there: every file is opened
relative to the directory, with ``O_NOFOLLOW``, and must be a regular file with one link,
owned by root, the current user or the milter's user (``writer``). Anything else (a
symlink planted to ``/etc/shadow``, a hard link, another user's file) is refused and
logged, never read back or mailed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pwd
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from passerelle.atomicfile import atomic_write

log = logging.getLogger("passerelle.antivirus.quarantine")
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{12}$")


class QuarantineError(Exception):
    """An operator action that cannot be done (unknown id, already released...)."""


@dataclass
class Item:
    id: str
    time: float
    sender: str
    recipients: list[str]
    client_ip: str
    client_host: str
    reason: str  # "signature" | "rule" | "outbreak" | ...
    detail: str  # signature name, rule name...
    direction: str
    size: int
    released: bool = False
    signature_version: str = ""
    queue_id: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class UnsafeEntryError(QuarantineError):
    """A quarantine entry that is not what the milter writes (symlink, foreign owner...)."""


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def _uid_of(user: str | int | None) -> int | None:
    if user is None or isinstance(user, int):
        return user
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _sender_arg(sender: str) -> str:
    s = sender.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    return s or "<>"


class Quarantine:
    def __init__(
        self,
        directory: str | Path,
        clock: Callable[[], float] = time.time,
        release_command: Sequence[str] = ("/usr/sbin/sendmail", "-Am", "-oi", "-odi"),
        runner: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
        writer: str | int | None = "passerelle",
    ) -> None:
        self.dir = Path(directory)
        self.clock = clock
        self.release_command = list(release_command)
        self.runner = runner
        # Who may own an entry: root, this process's user, the milter's user.
        self.trusted_uids = {0, os.geteuid()}
        if (uid := _uid_of(writer)) is not None:
            self.trusted_uids.add(uid)

    # -- safe reads (root reads what a less trusted user wrote) ---------------------------
    def _open_dir(self) -> int:
        """The quarantine directory itself, never through a symlink."""
        try:
            fd = os.open(self.dir, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                log.error("quarantine %s: not a directory (symlink?): refused", self.dir)
                raise UnsafeEntryError(f"{self.dir}: not a directory (symlink?), refused") from None
            raise
        st = os.fstat(fd)
        if st.st_uid not in self.trusted_uids:
            os.close(fd)
            log.error("quarantine %s: directory owned by uid %d: refused", self.dir, st.st_uid)
            raise UnsafeEntryError(f"{self.dir}: owned by uid {st.st_uid}, refused")
        return fd

    def _read_entry(self, name: str) -> bytes:
        """Read one entry of the directory with O_NOFOLLOW; refuse (and log) anything that
        is not a regular file with one link owned by a trusted user."""
        if "/" in name or name in ("", ".", ".."):
            raise UnsafeEntryError(f"not a quarantine entry: {name!r}")
        dfd = self._open_dir()
        try:
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    self._refuse(name, "a symbolic link")
                raise
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._refuse(name, "not a regular file")
            if st.st_nlink != 1:
                self._refuse(name, f"{st.st_nlink} hard links")
            if st.st_uid not in self.trusted_uids:
                self._refuse(name, f"owned by uid {st.st_uid}")
            chunks = []
            with os.fdopen(os.dup(fd), "rb") as fh:
                while chunk := fh.read(1 << 16):
                    chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _refuse(self, name: str, why: str) -> None:
        log.error(
            "quarantine %s: refused %s: %s (planted? not read, not mailed)", self.dir, name, why
        )
        raise UnsafeEntryError(f"{self.dir / name}: {why}: refused")

    def read_message(self, item_id: str) -> bytes:
        """The quarantined message, read safely (see the module's docstring)."""
        return self._read_entry(self._paths(item_id)[0].name)

    # -- storage -----------------------------------------------------------------------
    def _paths(self, item_id: str) -> tuple[Path, Path]:
        if not _ID.match(item_id):
            raise QuarantineError(f"not a quarantine id: {item_id!r}")
        return self.dir / f"{item_id}.eml", self.dir / f"{item_id}.json"

    def new_id(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        return f"{stamp}-{secrets.token_hex(6)}"

    def _write_meta(self, item: Item) -> None:
        data = json.dumps(asdict(item), indent=1, sort_keys=True).encode()
        atomic_write(self._paths(item.id)[1], data, 0o640, sync_dir=True)

    def store(self, message: BinaryIO, **meta: Any) -> Item:
        """Write the message then its metadata; raises OSError when it cannot (caller
        tempfails: a message is never lost)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        item = Item(id=self.new_id(), time=self.clock(), **meta)
        eml, _ = self._paths(item.id)

        def copy(fh: BinaryIO) -> None:
            message.seek(0)
            while chunk := message.read(1 << 16):
                fh.write(chunk)

        atomic_write(eml, copy, 0o640, sync_dir=True)
        item.history.append(
            {
                "time": item.time,
                "action": "quarantined",
                "by": "milter",
                "reason": item.reason,
                "detail": item.detail,
            }
        )
        try:
            self._write_meta(item)
        except BaseException:
            with contextlib.suppress(OSError):
                eml.unlink()
            raise
        log.info(
            "quarantine %s: held from=<%s> to=%s reason=%s (%s) client=%s [%s]",
            item.id,
            item.sender,
            ",".join(item.recipients),
            item.reason,
            item.detail,
            item.client_host,
            item.client_ip,
        )
        return item

    def get(self, item_id: str) -> Item:
        _, meta = self._paths(item_id)
        try:
            return Item.from_dict(json.loads(self._read_entry(meta.name)))
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {item_id}") from None
        except (ValueError, TypeError) as exc:
            raise QuarantineError(f"{item_id}: unreadable metadata: {exc}") from None

    def message_path(self, item_id: str) -> Path:
        """Where the message is (for display: read it with :meth:`read_message`)."""
        return self._paths(item_id)[0]

    def items(self) -> Iterator[Item]:
        if not self.dir.is_dir():
            return
        for meta in sorted(self.dir.glob("*.json")):
            try:
                yield self.get(meta.stem)
            except QuarantineError as exc:
                log.warning("quarantine: %s", exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        dfd = self._open_dir()
        try:
            fd = os.open(".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._refuse(".lock", "a symbolic link")
            raise
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in self.trusted_uids:
                self._refuse(".lock", "not a regular file of a trusted user")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _record(self, item: Item, action: str, by: str, **extra: Any) -> None:
        item.history.append({"time": self.clock(), "action": action, "by": by, **extra})
        self._write_meta(item)

    # -- operator actions ----------------------------------------------------------------
    def release(self, item_id: str, by: str = "operator") -> Item:
        """Re-inject to the original recipients, once."""
        with self._locked():
            item = self.get(item_id)
            if item.released:
                raise QuarantineError(f"{item_id} was already released")
            if not item.recipients:
                raise QuarantineError(f"{item_id} has no recipients")
            cmd = [*self.release_command, "-f", _sender_arg(item.sender), "--", *item.recipients]
            try:
                data = self.read_message(item_id).replace(b"\r\n", b"\n")
            except UnsafeEntryError as exc:
                self._record(item, "release-refused", by, error=str(exc))
                raise
            proc = self.runner(cmd, input=data, capture_output=True, timeout=300, check=False)
            if proc.returncode != 0:
                err = (proc.stderr or b"").decode("utf-8", "replace").strip()[:500]
                self._record(item, "release-failed", by, status=proc.returncode, error=err)
                log.error(
                    "quarantine %s: release by %s failed (%s): %s",
                    item_id,
                    by,
                    proc.returncode,
                    err,
                )
                raise QuarantineError(f"{item_id}: sendmail exited {proc.returncode}: {err}")
            item.released = True
            self._record(item, "released", by, recipients=list(item.recipients))
            log.info("quarantine %s: released by %s to %s", item_id, by, ",".join(item.recipients))
            return item

    def update_reason(self, item_id: str, reason: str, detail: str, by: str) -> Item:
        with self._locked():
            item = self.get(item_id)
            old = (item.reason, item.detail)
            item.reason, item.detail = reason, detail
            self._record(item, "reason-updated", by, old=list(old), new=[reason, detail])
            log.info(
                "quarantine %s: reason %s (%s) -> %s (%s) by %s",
                item_id,
                old[0],
                old[1],
                reason,
                detail,
                by,
            )
            return item

    def note(self, item_id: str, action: str, by: str, **extra: Any) -> None:
        with self._locked():
            self._record(self.get(item_id), action, by, **extra)

    def delete(self, item_id: str, by: str = "operator") -> None:
        with self._locked():
            item = self.get(item_id)
            eml, meta = self._paths(item_id)
            log.info(
                "quarantine %s: deleted by %s (from=<%s> reason=%s %s released=%s)",
                item_id,
                by,
                item.sender,
                item.reason,
                item.detail,
                item.released,
            )
            eml.unlink(missing_ok=True)
            meta.unlink()

    def purge(self, older_than: float, by: str = "operator") -> list[str]:
        limit = self.clock() - older_than
        gone = [i.id for i in self.items() if i.time < limit]
        for item_id in gone:
            self.delete(item_id, by=f"{by} (purge)")
        return gone
