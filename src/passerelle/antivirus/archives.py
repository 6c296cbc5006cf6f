"""Looking inside archives (libarchive) with bounds on depth, members, size and time.

Before any parser sees a zip, its End Of Central Directory record (and the zip64 one) and
its central directory records are read here: declared entry counts, central directory size
and declared uncompressed sizes are checked against the limits first, so a 1 kB zip that
declares millions of entries costs microseconds. Member names come from the central
directory too, including the Info-ZIP Unicode Path field (0x7075) that unzip and Windows
show instead of the plain name.

Everything else (tar, tar.gz, .gz alone, bzip2, xz, 7z, rar, zips with bytes before them)
is read by libarchive (libarchive-c; only the API present in Debian 12's 2.9 is used:
``memory_reader``, entry ``pathname``/``size``/``isdir``/``get_blocks``), member data
streamed in blocks: only the head of a member is kept (type detection), and a nested
archive up to ``max_nested_size``.

Two kinds of findings:
- ``too_big``: beyond the archive limits (depth, members, bytes): the built-in
  ``oversized_archive`` rule;
- ``unreadable``: encrypted, corrupt, unsupported: the uninspectable-content policy.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from passerelle.antivirus.budget import Budget, unlimited
from passerelle.antivirus.config import ArchiveLimits
from passerelle.antivirus.filetypes import ARCHIVE_TYPES, detect_type

HEAD = 4096
BLOCK = 64 * 1024
_EOCD = b"PK\x05\x06"
_EOCD_MAX_BACK = 22 + 65535
# Data of unknown type inside an archive is held up to this size in case it is a zip after
# other bytes (self-extracting); beyond, a zip directory at its end makes it uninspectable.
_UNKNOWN_KEEP = 4 * 1024 * 1024


@dataclass
class Member:
    name: str  # path inside the archive, nested archives joined with "!"
    type: str | None
    depth: int


@dataclass
class ArchiveReport:
    members: list[Member] = field(default_factory=list)
    too_big: str = ""  # why it went beyond the limits ("" when it did not)
    unreadable: str = ""  # why it could not be read ("" when it could)
    count: int = 0
    total: int = 0

    @property
    def uninspectable(self) -> str:
        return self.too_big or self.unreadable


class _Stop(Exception):
    """Stop reading this archive (the reason is in the report)."""


def _too_big(report: ArchiveReport, why: str) -> None:
    if not report.too_big:
        report.too_big = why
    raise _Stop


def _unreadable(report: ArchiveReport, why: str) -> None:
    if not report.unreadable:
        report.unreadable = why


# -- zip: end of central directory and central directory, read by hand -------------------
@dataclass
class ZipDirectory:
    entries: int
    cd_size: int
    cd_start: int  # where the central directory really is in ``data`` (prefix included)
    names: list[str]
    declared_total: int
    encrypted: bool


def find_eocd(data: bytes) -> int:
    """Offset of the End Of Central Directory record, or -1."""
    lo = max(0, len(data) - _EOCD_MAX_BACK)
    end = len(data)
    while True:
        pos = data.rfind(_EOCD, lo, end)
        if pos < 0 or pos + 22 > len(data):
            if pos < 0:
                return -1
            end = pos
            continue
        (comment_len,) = struct.unpack_from("<H", data, pos + 20)
        if pos + 22 + comment_len <= len(data):
            return pos
        end = pos


def looks_like_zip(data: bytes) -> bool:
    return find_eocd(data) >= 0


def _decode_name(raw: bytes, utf8: bool) -> str:
    return raw.decode("utf-8", "replace") if utf8 else raw.decode("cp437")


def read_zip_directory(data: bytes, limits: ArchiveLimits, report: ArchiveReport) -> ZipDirectory:
    """Declared counts and sizes checked before anything parses the zip (raises _Stop)."""
    pos = find_eocd(data)
    if pos < 0:
        _unreadable(report, "zip without an end of central directory record")
        raise _Stop
    _sig, _disk, _cd_disk, _n_disk, entries, cd_size, cd_off, _cl = struct.unpack_from(
        "<IHHHHIIH", data, pos
    )
    dir_end = pos
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:
        loc = pos - 20
        if loc >= 0 and data[loc : loc + 4] == b"PK\x06\x07":
            (z64_off,) = struct.unpack_from("<Q", data, loc + 8)
            # The zip64 record sits right before its locator (prepended bytes shift offsets).
            z64 = loc - 56
            if z64 < 0 or data[z64 : z64 + 4] != b"PK\x06\x06":
                z64 = z64_off
            if z64 < 0 or z64 + 56 > len(data) or data[z64 : z64 + 4] != b"PK\x06\x06":
                _unreadable(report, "zip64 end of central directory not found")
                raise _Stop
            entries, cd_size, cd_off = struct.unpack_from("<QQQ", data, z64 + 32)
            dir_end = z64
    if entries > limits.max_members:
        _too_big(report, f"zip declares {entries} entries (more than {limits.max_members})")
    if cd_size > dir_end or cd_size > entries * (46 + 3 * 65535) + 46:
        _unreadable(report, f"zip central directory of {cd_size} bytes does not fit")
        raise _Stop
    cd_start = dir_end - cd_size
    names: list[str] = []
    total = 0
    encrypted = False
    p = cd_start
    for _ in range(entries):
        if p + 46 > dir_end or data[p : p + 4] != b"PK\x01\x02":
            _unreadable(report, "zip central directory truncated or corrupt")
            raise _Stop
        (flags,) = struct.unpack_from("<H", data, p + 8)
        (usize,) = struct.unpack_from("<I", data, p + 24)
        nlen, xlen, clen = struct.unpack_from("<HHH", data, p + 28)
        name_raw = data[p + 46 : p + 46 + nlen]
        extra = data[p + 46 + nlen : p + 46 + nlen + xlen]
        name = _decode_name(name_raw, bool(flags & 0x800))
        names.append(name)
        encrypted = encrypted or bool(flags & 0x1)
        q = 0
        while q + 4 <= len(extra):
            hid, hlen = struct.unpack_from("<HH", extra, q)
            body = extra[q + 4 : q + 4 + hlen]
            if hid == 0x0001 and usize == 0xFFFFFFFF and len(body) >= 8:
                (usize,) = struct.unpack_from("<Q", body, 0)
            elif hid == 0x7075 and len(body) >= 5:
                uname = body[5:].decode("utf-8", "replace")
                if uname and uname != name:
                    names.append(uname)
            q += 4 + hlen
        total += usize
        p += 46 + nlen + xlen + clen
    if total > limits.max_total_size:
        _too_big(report, f"zip declares {total} bytes uncompressed (more than the limit)")
    return ZipDirectory(entries, cd_size, cd_start, names, total, encrypted)


# -- libarchive ----------------------------------------------------------------------------
def _entries(data: bytes, fmt: str) -> Iterator[tuple[str, int | None, bool, Iterator[bytes]]]:
    import libarchive

    with libarchive.memory_reader(data, format_name=fmt, filter_name="all") as arc:
        for entry in arc:
            name = entry.pathname
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            yield (name or "", entry.size, bool(entry.isdir), entry.get_blocks(BLOCK))


def inspect_archive(
    data: bytes,
    limits: ArchiveLimits,
    budget: Budget | None = None,
    report: ArchiveReport | None = None,
    name: str = "",
) -> ArchiveReport:
    """List the members of an archive (and of archives inside it) within ``limits``."""
    report = report or ArchiveReport()
    with contextlib.suppress(_Stop):
        _walk(data, limits, budget or unlimited(), report, 1, "", name)
    return report


inspect_zip = inspect_archive  # the former name (zip only)


def gzip_name(data: bytes) -> str:
    """The original file name a gzip header carries (FNAME), or ""."""
    if len(data) < 10 or data[:2] != b"\x1f\x8b" or not data[3] & 0x08:
        return ""
    p = 10
    if data[3] & 0x04:  # FEXTRA
        if len(data) < 12:
            return ""
        p += 2 + int.from_bytes(data[10:12], "little")
    end = data.find(b"\0", p, p + 1024)
    return data[p:end].decode("latin-1") if end > p else ""


def _raw_name(outer: str) -> str:
    low = outer.lower()
    for suffix, repl in ((".tgz", ".tar"), (".gz", ""), (".bz2", ""), (".xz", ""), (".z", "")):
        if low.endswith(suffix):
            return outer[: len(outer) - len(suffix)] + repl
    return outer or "data"


def _walk(
    data: bytes,
    limits: ArchiveLimits,
    budget: Budget,
    report: ArchiveReport,
    depth: int,
    prefix: str,
    outer_name: str,
) -> None:
    if depth > limits.max_depth:
        _too_big(report, f"nested deeper than {limits.max_depth}")
    budget.check()
    kind = detect_type(data)
    zip_like = kind == "zip" or (kind not in ARCHIVE_TYPES and looks_like_zip(data))
    if zip_like:
        zd = read_zip_directory(data, limits, report)
        for n in zd.names:
            report.members.append(Member(prefix + n, None, depth))
        if zd.encrypted:
            _unreadable(report, "encrypted zip member")
            return
    formats = ["all"]
    if kind in ("gzip", "bzip2", "xz"):
        formats.append("raw")  # a single compressed file, not a compressed tar
    import libarchive

    raw_name = gzip_name(data) or _raw_name(outer_name.rsplit("!", 1)[-1])
    for fmt in formats:
        seen = 0
        try:
            for name, size, isdir, blocks in _entries(data, fmt):
                seen += 1
                _member(
                    name if fmt != "raw" else raw_name,
                    size,
                    isdir,
                    blocks,
                    limits,
                    budget,
                    report,
                    depth,
                    prefix,
                )
            if seen == 0 and fmt != formats[-1]:
                continue  # e.g. gzip of zeros: "an empty tar" for libarchive; try raw
            if seen == 0 and not zip_like:
                # Random bytes behind an archive's magic read as "no member": not clean.
                _unreadable(report, f"no readable member in {kind or 'archive'} {outer_name}")
            return
        except libarchive.ArchiveError as exc:
            if seen == 0 and fmt != formats[-1]:
                continue
            _unreadable(report, f"unreadable archive: {str(exc)[:200]}")
            return


def _member(
    name: str,
    size: int | None,
    isdir: bool,
    blocks: Iterator[bytes],
    limits: ArchiveLimits,
    budget: Budget,
    report: ArchiveReport,
    depth: int,
    prefix: str,
) -> None:
    report.count += 1
    if report.count > limits.max_members:
        _too_big(report, f"more than {limits.max_members} members")
    budget.check()
    full = prefix + name
    if isdir:
        report.members.append(Member(full, None, depth))
        return
    if size is not None and report.total + size > limits.max_total_size:
        _too_big(report, f"more than {limits.max_total_size} bytes uncompressed")
    head = b""
    tail = b""  # the last bytes, where a zip's end of central directory would be
    kept: list[bytes] | None = []  # the member, while it may be an archive to open
    kept_size = 0
    kind_now: str | None = None
    for block in blocks:
        budget.check()
        report.total += len(block)
        if report.total > limits.max_total_size:
            report.members.append(Member(full, detect_type(head) if head else None, depth))
            _too_big(report, f"more than {limits.max_total_size} bytes uncompressed")
        if len(head) < HEAD:
            head += block[: HEAD - len(head)]
            kind_now = detect_type(head) if len(head) >= HEAD else None
            if kind_now in ARCHIVE_TYPES and size is not None and size > limits.max_nested_size:
                report.members.append(Member(full, kind_now, depth))
                _too_big(report, f"nested archive {full} declares {size} bytes")
        tail = (tail + block)[-_EOCD_MAX_BACK:]
        if kept is None:
            continue
        kept_size += len(block)
        cap = limits.max_nested_size if kind_now in ARCHIVE_TYPES else _UNKNOWN_KEEP
        if kind_now is not None and kind_now not in ARCHIVE_TYPES:
            kept = None  # a PDF, an executable...: its type is all the rules need
        elif kept_size > cap:
            if kind_now in ARCHIVE_TYPES:
                report.members.append(Member(full, kind_now, depth))
                _too_big(report, f"nested archive {full} larger than {limits.max_nested_size}")
            kept = None  # unknown data: only its tail is kept (see below)
        else:
            kept.append(block)
    kind = detect_type(head)
    report.members.append(Member(full, kind, depth))
    zip_tail = kind is None and looks_like_zip(tail)
    if kept is None:
        if zip_tail:  # a zip behind other bytes, too large to hold: not clean
            _unreadable(report, f"{full}: zip after other data, larger than {_UNKNOWN_KEEP}")
        return
    if kind in ARCHIVE_TYPES or zip_tail:
        _walk(b"".join(kept), limits, budget, report, depth + 1, full + "!", full)
