"""File type detection from magic bytes (what the file is, whatever its name says)."""

from __future__ import annotations

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "pe"),
    (b"\x7fELF", "elf"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xca\xfe\xba\xbe", "macho"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"%PDF-", "pdf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"#!", "script"),
)


def detect_type(data: bytes) -> str | None:
    """The type name of ``data`` from its first bytes, or None when unknown."""
    head = data[:16]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if data[257:262] == b"ustar":
        return "tar"
    # PDF readers accept the header anywhere in the first KiB.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    return None


# What the archive reader opens (libarchive), found by content.
ARCHIVE_TYPES = frozenset({"zip", "rar", "7z", "gzip", "bzip2", "xz", "tar"})


def extension(filename: str) -> str:
    """Lower-case last extension, ignoring what Windows ignores (trailing dots and spaces)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = name.split("\0", 1)[0].rstrip(". \t\r\n")
    if "." not in name:
        return ""
    return name.rsplit(".", 1)[1].lower()
