"""Folder parts: a gzip-compressed tar of a folder (names, owners, modes, times kept), and
its restore that only adds what is missing.

Root reads folders that a less trusted user writes (the milter adds quarantine items), so
nothing is followed: every entry is opened relative to its folder with ``O_NOFOLLOW``, and
only regular files and folders are archived (a symbolic link, a FIFO, a device is left out
and counted). Names starting with a dot are Passerelle's lock and temporary files (the
quarantine's ``.lock``, a half-written ``.ID.eml.xxxx.tmp``): left out too.

The restore writes each missing file under a temporary name, sets its owner, mode and time,
then links it to its name, which fails if the name exists: a message that arrived since
the backup, or an item whose history changed, is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from passerelle.backup.model import FolderPlan, Member, plan_folder

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FolderError(OSError):
    """A folder that cannot be archived or restored as asked."""


def member_order(name: str, is_dir: bool) -> tuple[bool, int, bool, str]:
    """Folders first, shallow before deep, a quarantine item's .json after its message."""
    return (not is_dir, name.count("/"), name.endswith(".json"), name)


def _owner_names(st: os.stat_result) -> tuple[str, str]:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = ""
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = ""
    return user, group


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = _owner_names(st)
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    else:
        info.size = st.st_size
    return info


@dataclass
class ArchiveCounts:
    files: int = 0
    bytes: int = 0
    skipped: int = 0  # not a regular file or folder (symlinks, FIFOs...)


def folder_meta(path: str) -> dict[str, Any]:
    """Owner, group and mode of the folder itself (a restore recreates it that way)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise FolderError(exc.errno, f"cannot open the folder: {exc.strerror}", path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise FolderError(errno.ENOTDIR, "not a folder", path)
    user, group = _owner_names(st)
    return {
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": user,
        "group": group,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
    }


def _walk(
    dfd: int, prefix: str, counts: ArchiveCounts
) -> Iterator[tuple[str, int, os.stat_result]]:
    """(relative name, open fd, stat) of every file and folder under ``dfd``, in
    ``member_order`` within each folder; each fd is closed once the caller is done with it."""
    entries = []
    for name in os.listdir(dfd):
        if name.startswith("."):
            continue
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            counts.skipped += 1
            continue
        entries.append((name, stat.S_ISDIR(st.st_mode)))
    entries.sort(key=lambda e: member_order(e[0], e[1]))
    for name, is_dir in entries:
        rel = f"{prefix}{name}"
        try:
            fd = os.open(name, _DIR_FLAGS if is_dir else _READ_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            continue  # deleted meanwhile (a purge, a release)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link meanwhile
                counts.skipped += 1
                continue
            raise
        st = os.fstat(fd)
        if is_dir != stat.S_ISDIR(st.st_mode) or not (
            stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
        ):
            os.close(fd)
            counts.skipped += 1
            continue
        try:
            yield rel, fd, st
            if is_dir:
                yield from _walk(fd, f"{rel}/", counts)
        finally:
            os.close(fd)


def archive_folder(path: str, out: IO[bytes]) -> ArchiveCounts:
    """Write a gzip-compressed tar of the folder ``path`` (its content, relative names) to
    ``out``; returns what it holds."""
    counts = ArchiveCounts()
    try:
        top = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise FolderError(exc.errno, f"cannot open the folder: {exc.strerror}", path) from None
    try:
        with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
            for rel, fd, st in _walk(top, "", counts):
                info = _info(rel, st)
                if info.isdir():
                    tar.addfile(info)
                else:
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        tar.addfile(info, fh)
                    counts.files += 1
                    counts.bytes += info.size
    finally:
        os.close(top)
    return counts


def read_members(archive: str) -> list[Member]:
    """The entries of a folder archive (reads it whole: also proves it is complete)."""
    out = []
    with tarfile.open(archive, mode="r:gz") as tar:
        for ti in tar:
            kind = "file" if ti.isreg() else "dir" if ti.isdir() else "other"
            out.append(Member(ti.name.rstrip("/") if ti.isdir() else ti.name, kind, ti.size))
    return out


def _uid(user: str, uid: int) -> int:
    try:
        return pwd.getpwnam(user).pw_uid if user else uid
    except KeyError:
        return uid


def _gid(group: str, gid: int) -> int:
    try:
        return grp.getgrnam(group).gr_gid if group else gid
    except KeyError:
        return gid


def _own(fd: int, uid: int, gid: int, mode: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)  # after chown, which clears set-id bits


def ensure_folder(path: str, meta: dict[str, Any]) -> bool:
    """Create the folder itself when missing, with the owner and mode it had; True if made."""
    p = Path(path)
    if p.is_symlink():
        raise FolderError(errno.ELOOP, "is a symbolic link, refused", path)
    if p.is_dir():
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    p.mkdir(mode=0o700)
    fd = os.open(path, _DIR_FLAGS)
    try:
        uid = _uid(str(meta.get("user", "")), int(meta.get("uid", 0)))
        gid = _gid(str(meta.get("group", "")), int(meta.get("gid", 0)))
        _own(fd, uid, gid, int(str(meta.get("mode", "0700")), 8))
    finally:
        os.close(fd)
    return True


def _existing(top: int, prefix: str = "") -> Iterator[str]:
    for name in os.listdir(top):
        rel = f"{prefix}{name}"
        yield rel
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=top)
            try:
                yield from _existing(fd, f"{rel}/")
            finally:
                os.close(fd)


def plan_restore(archive: str, path: str) -> FolderPlan:
    """What restoring ``archive`` into the live folder ``path`` would write and keep."""
    members = read_members(archive)
    if not os.path.isdir(path):
        return plan_folder(members, ())
    top = os.open(path, _DIR_FLAGS)
    try:
        return plan_folder(members, _existing(top))
    finally:
        os.close(top)


def _open_parent(top: int, name: str) -> tuple[int, str]:
    """An fd on the folder that holds ``name`` (each level opened without following links)."""
    *dirs, base = name.split("/")
    fd = os.dup(top)
    for d in dirs:
        try:
            nfd = os.open(d, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd, base


def restore_folder(archive: str, path: str, plan: FolderPlan) -> tuple[int, int]:
    """Write the plan's missing entries into ``path``; (files written, files found present
    meanwhile and kept)."""
    written = kept = 0
    top = os.open(path, _DIR_FLAGS)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = {(ti.name.rstrip("/")): ti for ti in tar.getmembers()}
            for m in plan.write:
                ti = members[m.name]
                pfd, base = _open_parent(top, m.name)
                try:
                    uid, gid = _uid(ti.uname, ti.uid), _gid(ti.gname, ti.gid)
                    if m.kind == "dir":
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(base, 0o700, dir_fd=pfd)
                        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
                        try:
                            _own(fd, uid, gid, ti.mode)
                        finally:
                            os.close(fd)
                        continue
                    src = tar.extractfile(ti)
                    if src is None:
                        raise FolderError(errno.EIO, "unreadable entry", m.name)
                    if _write_new(pfd, base, src, uid, gid, ti.mode, ti.mtime):
                        written += 1
                    else:
                        kept += 1
                finally:
                    os.close(pfd)
    finally:
        os.close(top)
    return written, kept


def _write_new(
    dfd: int, name: str, src: IO[bytes], uid: int, gid: int, mode: int, mtime: float
) -> bool:
    """Write ``name`` in ``dfd`` unless it exists (then False: the live file is kept)."""
    tmp = f".{name}.restore-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        with os.fdopen(os.dup(fd), "wb") as fh:
            while chunk := src.read(1 << 16):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        _own(fd, uid, gid, mode)
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)
    try:
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp, dir_fd=dfd)
