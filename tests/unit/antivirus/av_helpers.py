"""Message builders shared by the antivirus unit tests."""

from __future__ import annotations

import base64

from hostile_samples import make_zip  # one zip builder for tests and bench

PE = b"MZ\x90\x00" + b"\x00" * 60 + b"PE\0\0"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 40
PDF = b"%PDF-1.4\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


def multipart(*parts: str, boundary: str = "BOUND", extra_headers: str = "") -> bytes:
    out = [
        "From: a@example.org",
        "To: b@example.com",
        "Subject: test",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
    ]
    if extra_headers:
        out.append(extra_headers)
    out += ["", "preamble"]
    for p in parts:
        out += [f"--{boundary}", p]
    out.append(f"--{boundary}--")
    return ("\n".join(out) + "\n").encode()


def attachment(filename: str, data: bytes, ctype: str = "application/octet-stream") -> str:
    return (
        f'Content-Type: {ctype}; name="{filename}"\n'
        f'Content-Disposition: attachment; filename="{filename}"\n'
        "Content-Transfer-Encoding: base64\n\n" + b64(data)
    )


def raw_part(headers: str, data: bytes) -> str:
    return headers + "\nContent-Transfer-Encoding: base64\n\n" + b64(data)


__all__ = ["ELF", "PDF", "PE", "attachment", "b64", "make_zip", "multipart", "raw_part"]
