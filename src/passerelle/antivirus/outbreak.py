"""Outbreak mode: a state file, an automatic trigger, and the release of held messages."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from passerelle.antivirus.clamd import INFECTED, ScanResult, SignatureVersion
from passerelle.antivirus.quarantine import Quarantine, QuarantineError
from passerelle.atomicfile import atomic_write

log = logging.getLogger("passerelle.antivirus.outbreak")
OUTBREAK = "outbreak"


@dataclass
class OutbreakState:
    on: bool = False
    since: float = 0.0
    by: str = ""
    reason: str = ""


class OutbreakStore:
    """The state file; readers cache it and re-read only when its mtime changes."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._cache: tuple[float, OutbreakState] | None = None
        self._lock = threading.Lock()

    def read(self) -> OutbreakState:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return OutbreakState()
        with self._lock:
            if self._cache is not None and self._cache[0] == mtime:
                return self._cache[1]
            try:
                # O_NOFOLLOW: root reads this file in the milter user's folder.
                fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as fh:
                    data = json.loads(fh.read(1 << 16))
                state = OutbreakState(
                    **{k: data[k] for k in ("on", "since", "by", "reason") if k in data}
                )
            except (OSError, ValueError, TypeError) as exc:
                # An unreadable state file means "on": holding is the safe side.
                log.error(
                    "outbreak state %s unreadable (%s): treating outbreak mode as on",
                    self.path,
                    exc,
                )
                return OutbreakState(on=True, reason="unreadable state file")
            self._cache = (mtime, state)
            return state

    def set(self, on: bool, by: str, reason: str = "") -> OutbreakState:
        state = OutbreakState(on=on, since=self.clock(), by=by, reason=reason)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(asdict(state), sort_keys=True).encode()
        atomic_write(self.path, data, 0o644, sync_dir=True)
        log.warning(
            "outbreak mode %s by %s%s", "ON" if on else "OFF", by, f" ({reason})" if reason else ""
        )
        return state


class AutoTrigger:
    """Share of infected messages over a sliding window; fires once above the threshold."""

    def __init__(
        self,
        window: float,
        threshold: float,
        min_messages: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.min_messages = min_messages
        self.clock = clock
        self._events: collections.deque[tuple[float, bool]] = collections.deque()
        self._infected = 0
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            _, bad = self._events.popleft()
            self._infected -= bad

    def record(self, infected: bool) -> bool:
        """Count one scanned message; True when the window now exceeds the threshold."""
        with self._lock:
            now = self.clock()
            self._events.append((now, infected))
            self._infected += infected
            self._expire(now)
            total = len(self._events)
            return total >= self.min_messages and self._infected / total > self.threshold

    def share(self) -> tuple[int, int]:
        with self._lock:
            self._expire(self.clock())
            return self._infected, len(self._events)


class Scanner(Protocol):
    def scan(self, data: bytes) -> ScanResult: ...
    def version(self) -> SignatureVersion: ...


@dataclass
class HeldOutcome:
    released: list[str]
    kept_infected: list[str]
    kept_waiting: list[str]
    errors: list[str]


def db_fingerprint(directory: str | Path | None) -> str:
    """Names, sizes and mtimes of the signature files (changes when freshclam updates)."""
    if not directory:
        return ""
    h = hashlib.sha1(usedforsecurity=False)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return ""
    for e in entries:
        try:
            st = e.stat()
        except OSError:
            continue
        if e.is_file() and not e.name.startswith("."):
            h.update(f"{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def signature_key(scanner: Scanner, db_dir: str | Path | None) -> str:
    """What identifies clamd's signature set: the database version clamd reports, or,
    when it reports none (local unofficial databases only), a fingerprint of the
    database directory. Raises OSError when clamd does not answer."""
    v = scanner.version()
    if v.version is not None:
        return v.key
    return f"{v.engine}/{db_fingerprint(db_dir)}"


def release_held(
    quarantine: Quarantine,
    scanner: Scanner,
    outbreak_on: bool,
    db_dir: str | Path | None = None,
    by: str = "outbreak release-held",
) -> HeldOutcome:
    """Rescan messages held by outbreak mode and release the clean ones.

    A held message is rescanned when outbreak mode is off, or when clamd's signature
    version differs from the one in force when it was held. Infected ones stay, with their
    reason changed to the signature; clamd errors leave everything as it is.
    """
    out = HeldOutcome([], [], [], [])
    try:
        current = signature_key(scanner, db_dir)
    except OSError as exc:
        out.errors.append(f"clamd unavailable: {exc}")
        return out
    for item in quarantine.items():
        if item.reason != OUTBREAK or item.released:
            continue
        if outbreak_on and item.signature_version == current:
            out.kept_waiting.append(item.id)
            continue
        try:
            data = quarantine.read_message(item.id)
        except (QuarantineError, OSError) as exc:
            # A planted symlink or foreign file: refused (and logged), never rescanned.
            out.errors.append(f"{item.id}: {exc}")
            continue
        res = scanner.scan(data)
        if res.status == INFECTED:
            quarantine.update_reason(item.id, "signature", res.signature, by)
            out.kept_infected.append(item.id)
        elif res.status == "clean":
            try:
                quarantine.note(item.id, "rescanned", by, result="clean", signatures=current)
                quarantine.release(item.id, by=by)
                out.released.append(item.id)
            except (QuarantineError, OSError) as exc:
                out.errors.append(f"{item.id}: {exc}")
        else:
            out.errors.append(f"{item.id}: rescan failed: {res.detail}")
    return out
