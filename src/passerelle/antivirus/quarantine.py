"""Quarantine on disk: ``ID.eml`` (the message as received) + ``ID.json`` (its metadata).

Writes are atomic (temporary file, fsync, rename; the JSON is written last, so an item
exists only once both files are complete). Every action is appended to the item's history
and logged. Release re-injects to the original recipients only, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, writer: Callable[[BinaryIO], None], mode: int = 0o640) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


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
        release_command: Sequence[str] = ("/usr/sbin/sendmail", "-Am", "-oi"),
        runner: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
    ) -> None:
        self.dir = Path(directory)
        self.clock = clock
        self.release_command = list(release_command)
        self.runner = runner

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
        atomic_write(self._paths(item.id)[1], lambda fh: fh.write(data))

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

        atomic_write(eml, copy)
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
            return Item.from_dict(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {item_id}") from None
        except (ValueError, TypeError) as exc:
            raise QuarantineError(f"{item_id}: unreadable metadata: {exc}") from None

    def message_path(self, item_id: str) -> Path:
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
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
            data = self.message_path(item_id).read_bytes().replace(b"\r\n", b"\n")
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
