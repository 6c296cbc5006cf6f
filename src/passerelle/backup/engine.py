"""Making, listing, checking, restoring and pruning backups (the I/O around ``model``).

Every backup is made in ``.NAME.partial`` (root only), its manifest written last, then the
folder renamed to ``NAME``: a backup folder is complete or absent. One run at a time
(``.lock`` in the backup directory). ``last-run.json`` says how the last ``create`` ended,
for the Nagios check.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from passerelle import __version__
from passerelle.atomicfile import atomic_write
from passerelle.backup import folders, model
from passerelle.backup import sqlite as sqlite_part
from passerelle.backup.config import BackupConfig
from passerelle.backup.dumpcount import DumpCounter, DumpFormatError
from passerelle.backup.mariadb import MariaDB, MariaDBError
from passerelle.backup.model import Manifest, ManifestError, Part
from passerelle.config import ConfigError
from passerelle.rootfiles import exclusive_lock, read_trusted_file

LAST_RUN = "last-run.json"
PARTIAL = ".partial"
PARTIAL_MAX_AGE = 86400  # an unfinished backup older than this is from a crashed run
Clock = Callable[[], float]


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; the message says why (no traceback)."""


class _Hashing:
    """A binary file that counts and hashes what is written through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def describe(exc: BaseException) -> str:
    """One line for an error: an OSError names its file, without the errno noise."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc)


def _hash_file(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _new_file(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


def _write_part(
    folder: Path, kind: str, name: str, fill: Callable[[IO[bytes]], dict[str, Any]], gz: bool
) -> tuple[Path, int, str, dict[str, Any]]:
    """Create a part's file; ``fill`` writes the content (through gzip when ``gz``) and
    returns what it counted."""
    path = folder / model.part_file(kind, name)
    with _new_file(path) as raw:
        hashing = _Hashing(raw)
        if gz:
            with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0) as zfh:  # type: ignore[arg-type]
                counted = fill(zfh)  # type: ignore[arg-type]
        else:
            counted = fill(hashing)  # type: ignore[arg-type]
        raw.flush()
        os.fsync(raw.fileno())
    return path, hashing.size, hashing.sha.hexdigest(), counted


# -- what a host backs up ----------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    kind: str
    name: str
    path: str = ""  # folder or SQLite file


def sources(cfg: BackupConfig) -> list[Source]:
    """The parts this host's configuration asks for (the quarantine and SQLite store found
    through the antivirus and greylist configs)."""
    out = [Source("database", db) for db in cfg.databases]
    if cfg.antivirus_config:
        from passerelle.antivirus.config import load_config as load_antivirus

        out.append(
            Source("folder", "quarantine", load_antivirus(cfg.antivirus_config).quarantine_dir)
        )
    out += [Source("folder", label, path) for label, path in sorted(cfg.folders.items())]
    if cfg.greylist_config:
        from passerelle.greylist.config import load_config as load_greylist

        url = load_greylist(cfg.greylist_config).store_url
        if url is not None and url.scheme == "sqlite":
            out.append(Source("sqlite", "greylist", url.path))
    return out


# -- the backup directory ------------------------------------------------------------------
@dataclass
class Listing:
    complete: list[Manifest] = field(default_factory=list)  # oldest first
    broken: dict[str, str] = field(default_factory=dict)  # name -> why
    partial: list[str] = field(default_factory=list)


def _read_manifest(folder: Path) -> Manifest:
    try:
        raw = read_trusted_file(
            folder / model.MANIFEST, limit=16 << 20, trusted_uids={0, os.geteuid()}
        )
    except FileNotFoundError:
        raise ManifestError("no manifest (an unfinished or damaged backup)") from None
    except OSError as exc:
        raise ManifestError(f"manifest: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    return model.manifest_from_dict(data, folder.name)


def scan(directory: str) -> Listing:
    out = Listing()
    d = Path(directory)
    if not d.is_dir():
        return out
    for entry in sorted(d.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(PARTIAL):
            out.partial.append(entry.name)
            continue
        if model.name_time(entry.name) is None or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            out.complete.append(_read_manifest(entry))
        except ManifestError as exc:
            out.broken[entry.name] = str(exc)
    return out


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[Path]:
    d = Path(directory)
    if d.is_symlink():
        raise BackupError(f"{d}: a symbolic link, refused")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_lock(d / ".lock"):
        yield d


def _record_run(d: Path, when: float, ok: bool, name: str, error: str = "") -> None:
    data = {"time": when, "ok": ok, "backup": name, "error": error}
    with contextlib.suppress(OSError):
        atomic_write(d / LAST_RUN, json.dumps(data).encode(), mode=0o600)


# -- create --------------------------------------------------------------------------------
def _make_part(folder: Path, src: Source, db: MariaDB) -> Part:
    if src.kind == "database":
        info = db.database(src.name)
        if info is None:
            raise BackupError(f"database {src.name} does not exist")
        _path, size, sha, rows = _write_part(
            folder, "database", src.name, lambda fh: db.dump(src.name, fh), gz=True
        )
        return Part(
            "database",
            src.name,
            model.part_file("database", src.name),
            size,
            sha,
            rows=rows,
            meta={"charset": info[0], "collation": info[1]},
        )
    if src.kind == "folder":
        meta = folders.folder_meta(src.path)
        counted: dict[str, Any] = {}

        def fill(fh: IO[bytes]) -> dict[str, Any]:
            c = folders.archive_folder(src.path, fh)
            counted.update(files=c.files, bytes=c.bytes, skipped=c.skipped)
            return counted

        _path, size, sha, _ = _write_part(folder, "folder", src.name, fill, gz=False)
        if counted["skipped"]:
            meta["skipped"] = counted["skipped"]
        return Part(
            "folder",
            src.name,
            model.part_file("folder", src.name),
            size,
            sha,
            source=src.path,
            files=counted["files"],
            bytes=counted["bytes"],
            meta=meta,
        )
    # sqlite: a consistent copy first, then compressed into the part
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        copy = Path(tmp) / "copy.sqlite"
        rows = sqlite_part.copy_store(src.path, str(copy))

        def fill_sqlite(fh: IO[bytes]) -> dict[str, Any]:
            with copy.open("rb") as cfh:
                shutil.copyfileobj(cfh, fh, 1 << 20)
            return {}

        _path, size, sha, _ = _write_part(folder, "sqlite", src.name, fill_sqlite, gz=True)
    return Part(
        "sqlite",
        src.name,
        model.part_file("sqlite", src.name),
        size,
        sha,
        source=src.path,
        rows=rows,
        meta=sqlite_part.file_meta(src.path),
    )


def create(cfg: BackupConfig, clock: Clock = time.time, db: MariaDB | None = None) -> Manifest:
    """Make one backup of everything the configuration names."""
    db = db or MariaDB(cfg.dump_command, cfg.client_command, cfg.mariadb_defaults_file)
    with _locked(cfg.directory) as d:
        started = clock()
        name = model.unique_name(started, (p.name for p in d.iterdir()))
        work = d / f".{name}{PARTIAL}"
        try:
            srcs = sources(cfg)
            if not srcs:
                raise BackupError("the configuration names nothing to back up")
            work.mkdir(mode=0o700)
            parts = tuple(_make_part(work, s, db) for s in srcs)
            manifest = Manifest(name, cfg.host_name, started, __version__, parts)
            body = json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode()
            atomic_write(work / model.MANIFEST, body, mode=0o600, sync_dir=True)
            os.rename(work, d / name)
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except (BackupError, MariaDBError, sqlite_part.SQLiteError, ConfigError, OSError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            _record_run(d, clock(), False, name, describe(exc))
            raise BackupError(describe(exc)) from None
        _record_run(d, clock(), True, name)
        return manifest


# -- verify --------------------------------------------------------------------------------
def find(cfg: BackupConfig, name: str) -> tuple[Path, Manifest]:
    """The backup ``name`` (``latest``: the newest complete one)."""
    listing = scan(cfg.directory)
    if name == "latest":
        if not listing.complete:
            raise BackupError(f"no complete backup in {cfg.directory}")
        m = listing.complete[-1]
        return Path(cfg.directory) / m.name, m
    if model.name_time(name) is None:
        raise BackupError(f"not a backup name: {name!r} (YYYYMMDDTHHMMSSZ or latest)")
    if name in listing.broken:
        raise BackupError(f"backup {name}: {listing.broken[name]}")
    for m in listing.complete:
        if m.name == name:
            return Path(cfg.directory) / name, m
    raise BackupError(f"no backup {name} in {cfg.directory}")


def _gunzip_chunks(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            yield chunk


def _gunzip_to(path: Path, dest: Path) -> None:
    with gzip.open(path, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def verify_part(folder: Path, part: Part) -> list[str]:
    """Everything wrong with one part's file: missing, size, sha256, then its content read
    back (gzip intact, the dump complete, the same rows or files as the manifest says)."""
    path = folder / part.file
    if not path.is_file() or path.is_symlink():
        return model.file_problems(part, None, None)
    size, sha = _hash_file(path)
    problems = model.file_problems(part, size, sha)
    if problems:
        return problems
    try:
        if part.kind == "database":
            counter = DumpCounter()
            for chunk in _gunzip_chunks(path):
                counter.feed(chunk)
            return model.count_problems(part, rows=counter.finish())
        if part.kind == "folder":
            members = folders.read_members(str(path))
            return model.count_problems(part, files=sum(1 for m in members if m.kind == "file"))
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "copy.sqlite"
            _gunzip_to(path, copy)
            return model.count_problems(part, rows=sqlite_part.read_rows(str(copy)))
    except (OSError, EOFError, DumpFormatError, sqlite_part.SQLiteError) as exc:
        return [f"{part.label}: {part.file} cannot be read back: {exc}"]
    except Exception as exc:  # tarfile and gzip raise their own kinds for a damaged file
        return [f"{part.label}: {part.file} cannot be read back: {type(exc).__name__}: {exc}"]


def verify(folder: Path, manifest: Manifest, parts: list[Part] | None = None) -> list[str]:
    problems: list[str] = []
    for part in manifest.parts if parts is None else parts:
        problems += verify_part(folder, part)
    return problems


# -- restore -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreRequest:
    name: str = "latest"
    parts: tuple[str, ...] = ()
    replace: bool = False
    other_host: bool = False
    dry_run: bool = False


def _restore_database(folder: Path, part: Part, db: MariaDB, req: RestoreRequest) -> str:
    live = db.live_rows(part.name)
    problem = model.target_problem(f"database {part.name}", live, req.replace)
    if problem:
        raise BackupError(problem)
    state = "missing, created" if live is None else f"{sum(live.values())} row(s) replaced"
    if req.dry_run:
        return (
            f"{part.label}: would load {part.summary()} ({state.replace('created', 'to create')})"
        )
    db.load(
        part.name,
        str(part.meta.get("charset", "")),
        str(part.meta.get("collation", "")),
        _gunzip_chunks(folder / part.file),
    )
    after = db.live_rows(part.name) or {}
    short = {t: n for t, n in part.rows.items() if after.get(t, 0) < n}
    if short:
        raise BackupError(
            f"{part.label}: loaded, but tables hold fewer rows than the backup: "
            + ", ".join(f"{t} {after.get(t, 0)}/{n}" for t, n in sorted(short.items()))
        )
    detail = ", ".join(f"{t} {n}" for t, n in sorted(part.rows.items()))
    return f"{part.label}: restored {part.summary()} ({detail}); the database was {state}"


def _restore_folder(folder: Path, part: Part, req: RestoreRequest) -> str:
    archive = str(folder / part.file)
    plan = folders.plan_restore(archive, part.source)
    files = [m for m in plan.write if m.kind == "file"]
    if req.dry_run:
        return (
            f"{part.label}: would restore {len(files)} file(s) into {part.source}, "
            f"keep {len(plan.kept)} present"
        )
    made = folders.ensure_folder(part.source, dict(part.meta))
    written, kept_meanwhile = folders.restore_folder(archive, part.source, plan)
    out = (
        f"{part.label}: restored {written} file(s) into {part.source}"
        f"{' (folder recreated)' if made else ''}, kept {len(plan.kept) + kept_meanwhile} "
        "present already (not overwritten)"
    )
    if plan.refused:
        out += f"; left out {len(plan.refused)}: " + "; ".join(plan.refused[:5])
    return out


def _restore_sqlite(folder: Path, part: Part, req: RestoreRequest) -> str:
    live = sqlite_part.live_rows(part.source)
    problem = model.target_problem(f"store {part.source}", live, req.replace)
    if problem:
        raise BackupError(problem)
    if req.dry_run:
        return f"{part.label}: would copy {part.summary()} into {part.source}"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.sqlite"
        _gunzip_to(folder / part.file, copy)
        rows = sqlite_part.restore_store(str(copy), part.source, dict(part.meta))
    if rows != dict(part.rows):
        raise BackupError(f"{part.label}: the restored store holds {rows}, not {dict(part.rows)}")
    return f"{part.label}: restored {part.summary()} into {part.source}"


def restore(
    cfg: BackupConfig, req: RestoreRequest, db: MariaDB | None = None
) -> tuple[Manifest, list[str]]:
    """Check the backup (every part asked for), then restore it; one line per part."""
    db = db or MariaDB(cfg.dump_command, cfg.client_command, cfg.mariadb_defaults_file)
    with _locked(cfg.directory):
        folder, manifest = find(cfg, req.name)
        problem = model.host_problem(manifest, cfg.host_name, req.other_host)
        if problem:
            raise BackupError(problem)
        try:
            parts = model.select_parts(manifest, req.parts)
        except ValueError as exc:
            raise BackupError(str(exc)) from None
        problems = verify(folder, manifest, parts)
        if problems:
            raise BackupError(
                f"backup {manifest.name} is damaged, nothing restored:\n  " + "\n  ".join(problems)
            )
        lines = []
        for part in parts:
            try:
                if part.kind == "database":
                    lines.append(_restore_database(folder, part, db, req))
                elif part.kind == "folder":
                    lines.append(_restore_folder(folder, part, req))
                else:
                    lines.append(_restore_sqlite(folder, part, req))
            except (MariaDBError, sqlite_part.SQLiteError, OSError) as exc:
                done = "".join(f"\n  {line}" for line in lines)
                raise BackupError(
                    f"{part.label}: {exc}" + (f"\nalready restored:{done}" if done else "")
                ) from None
        return manifest, lines


# -- prune ---------------------------------------------------------------------------------
def prune(cfg: BackupConfig, clock: Clock = time.time, dry_run: bool = False) -> list[str]:
    """Delete the complete backups beyond ``keep_days`` days and the unfinished ones left by
    a crashed run; the names deleted."""
    with _locked(cfg.directory) as d:
        listing = scan(cfg.directory)
        _kept, pruned = model.retention([m.name for m in listing.complete], cfg.keep_days)
        now = clock()
        for entry in listing.partial:
            t = model.name_time(entry[1 : -len(PARTIAL)])
            if t is not None and now - t > PARTIAL_MAX_AGE:
                pruned.append(entry)
        if not dry_run:
            for name in pruned:
                shutil.rmtree(d / name)
        return sorted(pruned)
