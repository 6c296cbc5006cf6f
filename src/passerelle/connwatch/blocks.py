"""Blocks of the connection guard: the JSON state file and the sendmail map built from it.

State file (JSON, written atomically)::

    {"version": 1, "blocks": [{"ip": "198.51.100.7", "reason": "3000 connections in 1h > 2500",
      "count": 3000, "since": "2026-11-27T10:00:00Z", "expires": "2026-11-28T10:00:00Z",
      "direction": "inbound", "host": "gw1"}]}

Map source (``/etc/mail/connwatch``, access-map syntax, one line per block)::

    Connect:198.51.100.7	ERROR:"550 5.7.1 Too many connections from 198.51.100.7; blocked until 2026-11-28T10:00Z"
    Connect:IPv6:2001:db8::1	ERROR:"550 5.7.1 Too many connections from 2001:db8::1; ..."

``makemap hash`` builds it into ``<map>.new.db`` which is renamed over ``<map>.db``, so sendmail
never reads a half-written database.
"""  # noqa: E501

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from passerelle.atomicfile import atomic_write
from passerelle.isotime import parse_datetime
from passerelle.rootfiles import exclusive_lock, read_trusted_file
from passerelle.runner import Runner, run_command


class BlockError(RuntimeError):
    """The state file or the map could not be read, written or rebuilt."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_minutes(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def parse_iso(text: str) -> float:
    return parse_datetime(text).timestamp()


@dataclass(frozen=True)
class Block:
    ip: str
    reason: str
    count: int
    since: float
    expires: float
    direction: str = "inbound"
    host: str = ""

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["since"] = iso(self.since)
        d["expires"] = iso(self.expires)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Block:
        try:
            return cls(
                ip=str(ipaddress.ip_address(str(d["ip"]))),
                reason=str(d.get("reason", "")),
                count=int(d.get("count", 0)),  # type: ignore[call-overload]
                since=parse_iso(str(d["since"])),
                expires=parse_iso(str(d["expires"])),
                direction=str(d.get("direction", "inbound")),
                host=str(d.get("host", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise BlockError(f"bad block entry {d!r}: {exc}") from None

    def extended(self, count: int, expires: float, reason: str) -> Block:
        return replace(self, count=count, expires=max(self.expires, expires), reason=reason)


# -- state file ----------------------------------------------------------------------------
def load_state(path: str | Path) -> dict[str, Block]:
    """Blocks by IP; a missing file is an empty state, a corrupt one a BlockError, and so
    is one root may not trust (``passerelle.rootfiles``: the folder is the passerelle user's)."""
    p = Path(path)
    try:
        raw = read_trusted_file(p)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BlockError(f"{p}: {exc}") from None
    try:
        data = json.loads(raw)
        entries = data["blocks"]
        if not isinstance(entries, list):
            raise TypeError("blocks is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BlockError(f"{p}: not a connwatch state file ({exc})") from None
    blocks = [Block.from_json(e) for e in entries]
    return {b.ip: b for b in blocks}


def save_state(path: str | Path, blocks: dict[str, Block]) -> None:
    doc = {"version": 1, "blocks": [blocks[ip].to_json() for ip in sorted(blocks, key=_ipkey)]}
    try:
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), 0o640)
    except OSError as exc:
        raise BlockError(f"{path}: {exc}") from None


@contextlib.contextmanager
def state_lock(path: str | Path) -> Iterator[None]:
    """Exclusive lock beside the state file, so ``run`` and ``unblock`` never interleave.

    The folder belongs to the ``passerelle`` user and root takes the lock: a symbolic link,
    a hard link, a FIFO or a file of another user found there is refused
    (``passerelle.rootfiles``)."""
    lock = f"{path}.lock"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(lock))
        except OSError as exc:
            raise BlockError(f"{lock}: {exc.strerror or exc}") from None
        yield


def _ipkey(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    return (a.version, int(a))


# -- map -----------------------------------------------------------------------------------
def map_key(ip: str) -> str:
    """``Connect:1.2.3.4`` or ``Connect:IPv6:2001:db8::1`` (sendmail's ${client_addr})."""
    a = ipaddress.ip_address(ip)
    return f"Connect:IPv6:{a.compressed}" if a.version == 6 else f"Connect:{a}"


def render_map(blocks: dict[str, Block]) -> str:
    lines = [
        "# Generated by passerelle connwatch: do not edit, use `passerelle connwatch unblock IP`.",
    ]
    for ip in sorted(blocks, key=_ipkey):
        b = blocks[ip]
        msg = f"550 5.7.1 Too many connections from {ip}; blocked until {iso_minutes(b.expires)}"
        lines.append(f'{map_key(ip)}\tERROR:"{msg}"')
    return "\n".join(lines) + "\n"


@dataclass
class MapBuilder:
    """Writes the map source, runs makemap into a temporary db and renames it into place."""

    path: Path
    makemap: str = "/usr/sbin/makemap"
    map_type: str = "hash"
    runner: Runner = run_command

    @property
    def db(self) -> Path:
        return self.path.with_name(self.path.name + ".db")

    def up_to_date(self, text: str) -> bool:
        try:
            current = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        return current == text and self.db.exists()

    def build(self, text: str) -> None:
        """Source to ``<map>.new``, makemap to ``<map>.new.db``; on success both are renamed
        into place (db first), so the source on disk always describes the live db."""
        tmp_base = self.path.with_name(self.path.name + ".new")
        tmp_db = tmp_base.with_name(tmp_base.name + ".db")
        try:
            atomic_write(tmp_base, text.encode(), 0o644)
            with contextlib.suppress(FileNotFoundError):
                tmp_db.unlink()
        except OSError as exc:
            raise BlockError(f"{tmp_base}: {exc}") from None
        rc, out = self.runner([self.makemap, self.map_type, str(tmp_base)], tmp_base)
        if rc != 0 or not tmp_db.exists():
            for f in (tmp_db, tmp_base):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            raise BlockError(f"{self.makemap} {self.map_type} {tmp_base} failed ({rc}): {out}")
        try:
            os.replace(tmp_db, self.db)
            os.replace(tmp_base, self.path)
        except OSError as exc:
            raise BlockError(f"{self.db}: {exc}") from None
