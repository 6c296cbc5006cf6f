"""Looking inside zip archives (stdlib zipfile) with bounds on depth, members and size.

Anything that cannot be inspected within the bounds (too deep, too many members, too big
once uncompressed, encrypted, corrupt) is reported as ``uninspectable``: the caller treats it
as a match of the built-in ``oversized_archive`` rule, never as a bypass.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

from passerelle.antivirus.config import ArchiveLimits
from passerelle.antivirus.filetypes import detect_type


@dataclass
class Member:
    name: str  # path inside the archive, nested archives joined with "!"
    type: str | None
    depth: int


@dataclass
class ArchiveReport:
    members: list[Member] = field(default_factory=list)
    uninspectable: str = ""  # why it could not be fully inspected ("" when it could)
    count: int = 0
    total: int = 0


def inspect_zip(
    data: bytes, limits: ArchiveLimits, report: ArchiveReport | None = None
) -> ArchiveReport:
    """List the members of a zip (and of zips inside it) within ``limits``."""
    report = report or ArchiveReport()
    _walk(data, limits, report, depth=1, prefix="")
    return report


def _flag(report: ArchiveReport, why: str) -> None:
    if not report.uninspectable:
        report.uninspectable = why


def _walk(
    data: bytes, limits: ArchiveLimits, report: ArchiveReport, depth: int, prefix: str
) -> None:
    if depth > limits.max_depth:
        _flag(report, f"nested deeper than {limits.max_depth}")
        return
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        _flag(report, f"unreadable archive: {exc}")
        return
    with zf:
        for info in infos:
            report.count += 1
            if report.count > limits.max_members:
                _flag(report, f"more than {limits.max_members} members")
                return
            name = prefix + info.filename
            if info.is_dir():
                report.members.append(Member(name, None, depth))
                continue
            if info.flag_bits & 0x1:
                report.members.append(Member(name, None, depth))
                _flag(report, f"encrypted member {name}")
                continue
            budget = limits.max_total_size - report.total
            try:
                with zf.open(info) as fh:
                    content = fh.read(budget + 1)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                RuntimeError,
            ) as exc:
                report.members.append(Member(name, None, depth))
                _flag(report, f"unreadable member {name}: {exc}")
                continue
            report.total += len(content)
            if report.total > limits.max_total_size:
                report.members.append(Member(name, detect_type(content), depth))
                _flag(report, f"more than {limits.max_total_size} bytes uncompressed")
                return
            kind = detect_type(content)
            report.members.append(Member(name, kind, depth))
            if kind == "zip":
                _walk(content, limits, report, depth + 1, name + "!")
                if report.uninspectable and report.count > limits.max_members:
                    return
