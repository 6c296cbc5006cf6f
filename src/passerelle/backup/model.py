"""The pure logic of backups: names, retention, the manifest and its checks, restore plans.

Nothing here reads a clock, a file or a database: the callers pass what they found.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
KINDS = ("database", "folder", "sqlite")
_NAME = re.compile(r"^(\d{8})T(\d{6})Z$")
# A part's name becomes part of a file name: letters, digits, "_", "-", "." (not first).
_PART_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted (unreadable, incomplete, from another format)."""


# -- names ---------------------------------------------------------------------------------
def backup_name(when: float) -> str:
    """The folder name of a backup made at ``when`` (UTC, to the second)."""
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def name_time(name: str) -> float | None:
    """The time a backup name says, or None for a name that is not a backup's."""
    m = _NAME.match(name)
    if not m:
        return None
    try:
        when = dt.datetime.strptime(name, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return when.timestamp()


def unique_name(when: float, taken: Iterable[str]) -> str:
    """``backup_name(when)``, one second later while that name is taken (two runs in a second)."""
    used = set(taken)
    t = int(when)
    while (name := backup_name(t)) in used:
        t += 1
    return name


def part_file(kind: str, name: str) -> str:
    """The file of a part inside its backup folder."""
    suffix = {"database": ".sql.gz", "folder": ".tar.gz", "sqlite": ".sqlite.gz"}[kind]
    return f"{kind}-{name}{suffix}"


# -- retention -----------------------------------------------------------------------------
def retention(names: Iterable[str], keep_days: int) -> tuple[list[str], list[str]]:
    """(kept, pruned) complete backups: every backup of the ``keep_days`` most recent days
    that have one is kept, the others are pruned; the newest backup is always kept.

    Counted in days that have a backup, not in days of the calendar: when backups stop (a
    dead timer, a full disk), the last ones are never pruned for being old."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    dated = sorted((n for n in set(names) if name_time(n) is not None), reverse=True)
    days: list[str] = []
    kept: list[str] = []
    pruned: list[str] = []
    for name in dated:
        day = name[:8]
        if day not in days:
            days.append(day)
        (kept if len(days) <= keep_days else pruned).append(name)
    return kept, pruned


# -- manifest ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    kind: str  # database | folder | sqlite
    name: str  # database name, folder label (quarantine, config), store name
    file: str  # file inside the backup folder
    size: int  # bytes of that file
    sha256: str  # of that file
    source: str = ""  # the folder or SQLite file backed up (database: "")
    rows: Mapping[str, int] = field(default_factory=dict)  # database, sqlite: rows per table
    files: int = 0  # folder: regular files archived
    bytes: int = 0  # folder: their total size
    # database: charset, collation; folder: owner, group, mode of the folder itself
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def summary(self) -> str:
        if self.kind == "folder":
            return f"{self.files} file(s), {self.bytes} bytes"
        total = sum(self.rows.values())
        return f"{total} row(s) in {len(self.rows)} table(s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
            "source": self.source,
            "rows": dict(self.rows),
            "files": self.files,
            "bytes": self.bytes,
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class Manifest:
    name: str
    host: str
    created: float
    version: str
    parts: tuple[Part, ...]
    format: int = FORMAT

    def part(self, label: str) -> Part | None:
        return next((p for p in self.parts if p.label == label or p.name == label), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "host": self.host,
            "created": self.created,
            "version": self.version,
            "parts": [p.to_dict() for p in self.parts],
        }


def _need(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: {key} missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ManifestError(f"{where}: {key} has the wrong type ({type(value).__name__})")
    return value


def _counts(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where}: rows is not a table")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ManifestError(f"{where}: rows {k!r}: {v!r} is not a row count")
        out[k] = v
    return out


def _part_from(data: Any, index: int) -> Part:
    where = f"part {index + 1}"
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: not a table")
    kind = _need(data, "kind", str, where)
    if kind not in KINDS:
        raise ManifestError(f"{where}: unknown kind {kind!r}")
    name = _need(data, "name", str, where)
    if not _PART_NAME.match(name):
        raise ManifestError(f"{where}: bad name {name!r}")
    file = _need(data, "file", str, where)
    if file != part_file(kind, name):
        raise ManifestError(f"{where}: file {file!r} is not {part_file(kind, name)!r}")
    size = _need(data, "size", int, where)
    sha = _need(data, "sha256", str, where)
    if size < 0 or not _SHA256.match(sha):
        raise ManifestError(f"{where}: bad size or sha256")
    meta = data.get("meta", {})
    if not isinstance(meta, Mapping):
        raise ManifestError(f"{where}: meta is not a table")
    files = data.get("files", 0)
    nbytes = data.get("bytes", 0)
    for key, value in (("files", files), ("bytes", nbytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ManifestError(f"{where}: {key} {value!r} is not a count")
    source = data.get("source", "")
    if not isinstance(source, str):
        raise ManifestError(f"{where}: source is not a string")
    return Part(
        kind=kind,
        name=name,
        file=file,
        size=size,
        sha256=sha,
        source=source,
        rows=_counts(data.get("rows", {}), where),
        files=files,
        bytes=nbytes,
        meta=dict(meta),
    )


def manifest_from_dict(data: Any, folder_name: str | None = None) -> Manifest:
    """A manifest read from JSON, checked; ``folder_name``: the folder it was found in (a
    manifest copied into another backup's folder is refused)."""
    if not isinstance(data, Mapping):
        raise ManifestError("not a JSON object")
    fmt = _need(data, "format", int, "manifest")
    if fmt != FORMAT:
        raise ManifestError(f"format {fmt} (this passerelle reads format {FORMAT})")
    name = _need(data, "name", str, "manifest")
    if name_time(name) is None:
        raise ManifestError(f"bad backup name {name!r}")
    if folder_name is not None and name != folder_name:
        raise ManifestError(f"the manifest is backup {name}'s, found in folder {folder_name}")
    created = _need(data, "created", (int, float), "manifest")
    host = _need(data, "host", str, "manifest")
    version = _need(data, "version", str, "manifest")
    raw_parts = _need(data, "parts", list, "manifest")
    parts = tuple(_part_from(p, i) for i, p in enumerate(raw_parts))
    labels = [p.label for p in parts]
    if len(set(labels)) != len(labels):
        raise ManifestError("two parts with the same kind and name")
    return Manifest(name, host, float(created), version, parts, fmt)


# -- checks before a restore -----------------------------------------------------------------
def file_problems(part: Part, size: int | None, sha256: str | None) -> list[str]:
    """What is wrong with a part's file (``size`` None: missing)."""
    if size is None:
        return [f"{part.label}: {part.file} is missing"]
    out = []
    if size != part.size:
        out.append(f"{part.label}: {part.file} is {size} bytes, the manifest says {part.size}")
    elif sha256 != part.sha256:
        out.append(f"{part.label}: {part.file} does not match its sha256 (corrupt)")
    return out


def count_problems(part: Part, rows: Mapping[str, int] | None = None, files: int = 0) -> list[str]:
    """Counts read back from a part's file that differ from its manifest."""
    if part.kind == "folder":
        if files != part.files:
            return [
                f"{part.label}: the archive holds {files} file(s), the manifest says {part.files}"
            ]
        return []
    got = dict(rows or {})
    if got != dict(part.rows):
        diff = sorted(
            f"{t}: {got.get(t, 0)} instead of {n}"
            for t, n in {**dict(part.rows), **{k: 0 for k in got if k not in part.rows}}.items()
            if got.get(t, 0) != n
        )
        return [f"{part.label}: rows read back differ from the manifest ({'; '.join(diff)})"]
    return []


def select_parts(manifest: Manifest, wanted: Sequence[str]) -> list[Part]:
    """The parts named by ``wanted`` (``kind:name``, a name, or a kind), all when empty;
    ValueError naming what the backup does not hold."""
    if not wanted:
        return list(manifest.parts)
    out: list[Part] = []
    for w in wanted:
        hits = [p for p in manifest.parts if w in (p.label, p.name, p.kind)]
        if not hits:
            have = ", ".join(p.label for p in manifest.parts) or "nothing"
            raise ValueError(f"backup {manifest.name} has no part {w!r} (it holds {have})")
        out += [p for p in hits if p not in out]
    return out


def host_problem(manifest: Manifest, host: str, other_host: bool) -> str | None:
    if manifest.host != host and not other_host:
        return (
            f"backup {manifest.name} was made on {manifest.host}, this is {host} "
            "(--other-host to restore it here anyway)"
        )
    return None


def target_problem(label: str, live_rows: Mapping[str, int] | None, replace: bool) -> str | None:
    """A database or store holding rows is replaced only when asked (``--replace``): what
    it gained since the backup would be lost. ``live_rows`` None: it does not exist."""
    held = sum((live_rows or {}).values())
    if held and not replace:
        return (
            f"{label}: the live one holds {held} row(s) that the restore would replace "
            "(--replace to replace them)"
        )
    return None


# -- folders -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One entry of a folder archive, as the archive says it."""

    name: str
    kind: str  # file | dir | other
    size: int = 0


def member_problem(member: Member) -> str | None:
    """Why an archive entry is not restored (None: it is a plain file or folder inside)."""
    name = member.name
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return f"{name!r}: not a relative path inside the folder"
    if "\0" in name:
        return f"{name!r}: NUL in the name"
    if member.kind not in ("file", "dir"):
        return f"{name}: not a regular file or folder"
    return None


@dataclass(frozen=True)
class FolderPlan:
    write: tuple[Member, ...]  # files and folders missing from the live folder
    kept: tuple[str, ...]  # present already (live copy newer or equal: kept)
    refused: tuple[str, ...]  # entries that are not restored, with the reason


def plan_folder(members: Sequence[Member], existing: Iterable[str]) -> FolderPlan:
    """What a restore writes into a live folder: only what is missing (a message that arrived
    or changed since the backup is never overwritten). Folders first, then files, a
    quarantine item's ``.json`` after its message (an item exists once its JSON is there)."""
    live = set(existing)
    write: list[Member] = []
    kept: list[str] = []
    refused: list[str] = []
    for m in members:
        why = member_problem(m)
        if why:
            refused.append(why)
        elif m.name in live:
            if m.kind == "file":
                kept.append(m.name)
        else:
            write.append(m)
    write.sort(key=lambda m: (m.kind != "dir", m.name.count("/"), m.name.endswith(".json"), m.name))
    return FolderPlan(tuple(write), tuple(kept), tuple(refused))
