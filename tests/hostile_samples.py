"""Hostile messages for the antivirus milter (issue 14), as small generator functions.

Each :class:`Sample` builds a whole message (headers and body, CRLF line ends) on the fly, so
no large binary file is kept in the repository, and says what the gateway must do with it
under :data:`EXE_RULES` (executables quarantined) and the default uninspectable-content
policy (quarantine). ``clamd_reply`` is what a real clamd started with the clamav role's
limits (``AlertExceedsMax yes``) answers, for fake scanners in unit tests.

Used by tests/unit/antivirus (engine), tests/protocol (milter over its socket),
bench/antivirus_worst.py, and meant for a molecule test sending them through a gateway.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import quopri
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A minimal PE header stub: what the type detection (and clamd's PE parser) recognise.
PE_STUB = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\0\0"
PDF_DOC = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CLAMD_OK = "stream: OK"
CLAMD_LIMITS = "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND"

# The content rule every sample is judged against ([[antivirus.rules]] of the config).
EXE_RULES = [
    {
        "name": "executables",
        "extensions": ["exe", "scr", "com", "pif", "bat", "cmd", "js", "vbs"],
        "types": ["pe", "elf"],
        "action": "quarantine",
    }
]

ACCEPT = "accept"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Sample:
    name: str
    build: Callable[[], bytes]
    verdict: str  # accept | quarantine
    why: str
    clamd_reply: str = CLAMD_OK


# -- message builders ---------------------------------------------------------------------
def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def message(parts: list[bytes], subject: str = "hostile", boundary: str = "=_h14") -> bytes:
    """A multipart/mixed message whose parts are raw (headers + CRLF + body) bytes."""
    head = (
        "From: Mallory <mallory@example.net>\r\nTo: bob@example.com\r\n"
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    ).encode()
    out = [head, b"preamble\r\n"]
    for p in parts:
        out += [f"--{boundary}\r\n".encode(), p, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def attachment(
    filename: bytes | str, data: bytes, ctype: str = "application/octet-stream"
) -> bytes:
    name = filename.encode() if isinstance(filename, str) else filename
    return (
        b"Content-Type: " + ctype.encode() + b'; name="' + name + b'"\r\n'
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(data)
    )


def split(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(headers as the milter sees them, body) of a whole message."""
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\r\n" + line.decode("utf-8", "surrogateescape"))
            continue
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.lstrip().decode("utf-8", "surrogateescape")))
    return headers, body


# -- clamd ------------------------------------------------------------------------------
class ReplyScanner:
    """A clamd that answers a fixed INSTREAM reply at once, parsed by the real client's
    parser: what the engine costs without clamd (tests, bench/antivirus_worst.py)."""

    def __init__(self, reply: str = CLAMD_OK) -> None:
        self.reply = reply

    def scan(self, data: bytes) -> Any:
        from passerelle.antivirus import clamd as cl  # the package under test (bench: --src)

        status, info = cl.parse_reply(self.reply)
        if status == cl.INFECTED:
            return cl.ScanResult(status, signature=info, host="fake")
        return cl.ScanResult(status, detail=info, host="fake")

    def version(self) -> Any:
        from passerelle.antivirus import clamd as cl

        return cl.SignatureVersion("ClamAV", 1, "d")


# -- archive builders ---------------------------------------------------------------------
def make_zip(members: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if extra and name in extra:
                info.extra = extra[name]
            zf.writestr(info, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_7z(members: dict[str, bytes]) -> bytes:
    import libarchive

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.7z")
        with libarchive.file_writer(path, "7zip") as arc:
            for name, data in members.items():
                arc.add_file_from_memory(name, len(data), data)
        with open(path, "rb") as fh:
            return fh.read()


def _stored_zip(name: bytes, data: bytes, crc: int, size: int, method: int = 8) -> bytes:
    """A one-member zip whose member ``data`` is already compressed (``method``)."""
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0
    )
    cd = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
        len(name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    cd_off = len(local) + len(name) + len(data)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd) + len(name), cd_off, 0)
    return local + name + data + cd + name + eocd


def _deflate_zip(name: bytes, chunks: Callable[[], list[bytes]], repeat: int) -> bytes:
    """A one-member zip of ``b"".join(chunks()) * repeat`` without holding it in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    out, crc, size = [], 0, 0
    for _ in range(repeat):
        for c in chunks():
            out.append(comp.compress(c))
            crc = binascii.crc32(c, crc)
            size += len(c)
    out.append(comp.flush())
    return _stored_zip(name, b"".join(out), crc, size)


def cd_bomb_inner_chunks(entries: int) -> tuple[list[bytes], int]:
    """The pieces of a zip whose central directory really lists ``entries`` empty members."""
    name = b"a"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, 0, 0, 0, 1, 0) + name
    entry = (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            45,
            45,
            0,
            0,
            0,
            0x21,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        )
        + name
    )
    cd_size = len(entry) * entries
    cd_off = len(local)
    z64 = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, entries, entries, cd_size, cd_off
    )
    loc = struct.pack("<IIQI", 0x07064B50, 0, cd_off + cd_size, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return [local, entry, z64 + loc + eocd], cd_size


def cd_bomb_zip(entries: int = 2_000_000) -> bytes:
    """A zip holding a zip whose central directory lists millions of members: about 1 kB
    that unfolds to ~90 MB of central directory (zipfile parses all of it: seconds, 500 MB)."""
    (local, entry, tail), _ = cd_bomb_inner_chunks(entries)
    block = 10_000
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [comp.compress(local)]
    crc, size = binascii.crc32(local), len(local)
    piece = entry * block
    piece_crc_run = entries // block
    for _ in range(piece_crc_run):
        out.append(comp.compress(piece))
        crc = binascii.crc32(piece, crc)
        size += len(piece)
    rest = entry * (entries - piece_crc_run * block) + tail
    out.append(comp.compress(rest))
    crc = binascii.crc32(rest, crc)
    size += len(rest)
    out.append(comp.flush())
    inner = _stored_zip(b"inner.zip", b"".join(out), crc, size)
    return make_zip({"inner.zip": inner})


def cd_bomb_direct(entries: int = 5_000_000) -> bytes:
    """A few hundred bytes whose zip64 end of central directory declares millions of entries."""
    (local, entry, _tail), _ = cd_bomb_inner_chunks(1)
    cd_size = len(entry) * entries
    z64 = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, entries, entries, cd_size, len(local)
    )
    loc = struct.pack("<IIQI", 0x07064B50, 0, len(local) + len(entry) * 8, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + entry * 8 + z64 + loc + eocd


def unicode_path_zip() -> bytes:
    """The central directory says readme.txt; the Info-ZIP Unicode Path field (0x7075) that
    unzip and Windows show says invoice.exe."""
    shown = b"readme.txt"
    real = b"invoice.exe"
    field = struct.pack("<BI", 1, binascii.crc32(shown)) + real
    extra = struct.pack("<HH", 0x7075, len(field)) + field
    return make_zip({shown.decode(): b"harmless text\n"}, extra={shown.decode(): extra})


def corrupt_deflate_zip() -> bytes:
    z = make_zip({"report.pdf": PDF_DOC * 200})
    i = z.index(b"report.pdf") + len("report.pdf")
    return z[: i + 5] + bytes(b ^ 0x55 for b in z[i + 5 : i + 40]) + z[i + 40 :]


# -- MIME shapes --------------------------------------------------------------------------
def many_parts(n: int = 200_000) -> bytes:
    head = (
        b"From: m@example.net\r\nTo: b@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
    )
    return head + b"--p\r\n\r\nx\r\n" * n + b"--p--\r\n"


def deep_nesting(depth: int = 3000) -> bytes:
    body = attachment("deep.exe", PE_STUB)
    for i in range(depth):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            + body
            + f"\r\n--b{i}--\r\n".encode()
        )
    return b"From: m@example.net\r\nSubject: nest\r\nMIME-Version: 1.0\r\n" + body


def inner_message_with_exe() -> bytes:
    return message([attachment("payload.exe", PE_STUB)], subject="inner", boundary="=_inner")


def rfc822_b64() -> bytes:
    part = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + _b64(
        inner_message_with_exe()
    )
    return message([b"Content-Type: text/plain\r\n\r\nsee attached\r\n", part])


def eml_qp() -> bytes:
    # Quoted-printable with every byte of the inner message escaped (legal, and hides it).
    inner = inner_message_with_exe()
    qp = "".join(f"={b:02X}" for b in inner)
    lines = [qp[i : i + 72] + "=" for i in range(0, len(qp), 72)]
    part = (
        b'Content-Type: application/octet-stream; name="fwd.eml"\r\n'
        b'Content-Disposition: attachment; filename="fwd.eml"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + "\r\n".join(lines).encode()
    )
    assert quopri.decodestring("\r\n".join(lines).encode()) == inner
    return message([part])


def utf8_filename_pdf() -> bytes:
    return message([attachment("CV-Hélène.pdf".encode(), PDF_DOC, "application/pdf")])


def malformed_encoded_word_pdf() -> bytes:
    # Base64 of the wrong length inside an encoded word: email.header raises on it.
    return message([attachment("=?utf-8?B?Q1YtSMOpx?=.pdf", PDF_DOC, "application/pdf")])


def eicar_after_zeros_gz() -> bytes:
    gz = gzip.compress(b"\0" * (27 * 1024 * 1024) + EICAR, 9)
    return message([attachment("data.gz", gz, "application/gzip")])


def rar_unreadable() -> bytes:
    return message([attachment("docs.rar", b"Rar!\x1a\x07\x01\x00" + os.urandom(200))])


SAMPLES: list[Sample] = [
    Sample(
        "cd_bomb_zip",
        lambda: message([attachment("bundle.zip", cd_bomb_zip(), "application/zip")]),
        QUARANTINE,
        "nested zip whose central directory lists 2,000,000 members: too costly to inspect",
    ),
    Sample(
        "cd_bomb_direct",
        lambda: message([attachment("bomb.zip", cd_bomb_direct(), "application/zip")]),
        QUARANTINE,
        "zip64 end of central directory declaring 5,000,000 entries",
    ),
    Sample("many_parts", many_parts, QUARANTINE, "200,000 tiny MIME parts: too costly"),
    Sample("deep_nesting", deep_nesting, QUARANTINE, "MIME nested 3000 deep, exe at the bottom"),
    Sample(
        "tar_exe",
        lambda: message([attachment("docs.tar", make_tar({"docs/setup.exe": PE_STUB}))]),
        QUARANTINE,
        "executable inside a tar",
    ),
    Sample(
        "targz_exe",
        lambda: message([attachment("docs.tgz", make_tar({"tool.bin": PE_STUB}, "w:gz"))]),
        QUARANTINE,
        "PE (innocent name) inside a tar.gz",
    ),
    Sample(
        "gz_exe",
        lambda: message([attachment("update.gz", gzip.compress(PE_STUB))]),
        QUARANTINE,
        "PE compressed with gzip alone",
    ),
    Sample(
        "sevenzip_exe",
        lambda: message([attachment("docs.7z", make_7z({"setup.exe": PE_STUB}))]),
        QUARANTINE,
        "executable inside a 7z",
    ),
    Sample("rar_unreadable", rar_unreadable, QUARANTINE, "a rar nothing can open: uninspectable"),
    Sample(
        "prepended_zip",
        lambda: message(
            [attachment("photos.dat", b"GIF89a junk " * 40 + make_zip({"img.exe": PE_STUB}))]
        ),
        QUARANTINE,
        "zip after 480 bytes of junk (self-extracting layout)",
    ),
    Sample(
        "unicode_path_zip",
        lambda: message([attachment("docs.zip", unicode_path_zip(), "application/zip")]),
        QUARANTINE,
        "member named invoice.exe through the Info-ZIP Unicode Path field",
    ),
    Sample("rfc822_b64_exe", rfc822_b64, QUARANTINE, "message/rfc822 in base64 carrying an exe"),
    Sample("eml_qp_exe", eml_qp, QUARANTINE, ".eml attachment, quoted-printable, with an exe"),
    Sample("utf8_filename_pdf", utf8_filename_pdf, ACCEPT, "raw UTF-8 filename on a real PDF"),
    Sample(
        "malformed_encoded_word_pdf",
        malformed_encoded_word_pdf,
        ACCEPT,
        "broken encoded word in the filename of a real PDF",
    ),
    Sample(
        "corrupt_deflate_zip",
        lambda: message([attachment("report.zip", corrupt_deflate_zip(), "application/zip")]),
        QUARANTINE,
        "corrupt deflate stream: uninspectable, never an exception",
    ),
    Sample(
        "eicar_after_zeros_gz",
        eicar_after_zeros_gz,
        QUARANTINE,
        "EICAR after 27 MiB of zeros in a gzip: clamd stops at its limits and says so",
        clamd_reply=CLAMD_LIMITS,
    ),
]

BY_NAME = {s.name: s for s in SAMPLES}
