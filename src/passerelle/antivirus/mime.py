"""Walking a message's MIME tree without trusting it.

The stdlib parser (compat32) never raises on defects; on top of it this module bounds the
nesting depth and keeps a raw-bytes fallback that finds ``filename=`` / ``name=`` parameters
even when boundaries are broken, so that an attachment rule cannot be bypassed by bad MIME.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.utils
import re
import urllib.parse
from dataclasses import dataclass, field
from email import policy

TEXT_TYPES = ("text/plain", "text/html", "text/enriched")


@dataclass
class Part:
    path: tuple[int, ...]
    content_type: str
    names: list[str]
    payload: bytes
    attachment: bool


@dataclass
class Walk:
    message: email.message.Message | None
    parts: list[Part] = field(default_factory=list)
    too_deep: bool = False
    raw_names: list[str] = field(default_factory=list)
    raw_types: set[str] = field(default_factory=set)

    @property
    def has_attachment(self) -> bool:
        return any(p.attachment for p in self.parts) or bool(self.raw_names) or self.too_deep


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; never raises."""
    if "=?" not in value:
        return value
    try:
        out = []
        for chunk, charset in email.header.decode_header(value):
            if isinstance(chunk, bytes):
                try:
                    out.append(chunk.decode(charset or "ascii", "replace"))
                except LookupError:  # unknown charset: what a lenient client would show
                    out.append(chunk.decode("latin-1"))
            else:
                out.append(chunk)
        return "".join(out)
    except (LookupError, ValueError, AssertionError):
        return value


def _param_names(part: email.message.Message) -> list[str]:
    names: list[str] = []
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            v = part.get_param(param, header=header)
        except Exception:
            v = None
        if v is None:
            continue
        try:
            s = email.utils.collapse_rfc2231_value(v, errors="replace")
        except (LookupError, TypeError, ValueError):
            s = v if isinstance(v, str) else str(v[-1])
        s = decode_words(str(s)).strip()
        if s and s not in names:
            names.append(s)
    return names


def _payload(part: email.message.Message, limit: int) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data[:limit]
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")[:limit]
    return b""


def walk(raw: bytes, max_depth: int = 20, payload_limit: int = 200 * 1024 * 1024) -> Walk:
    """Parse ``raw`` and list its leaf parts; never raises on malformed input."""
    raw = raw.replace(b"\r\n", b"\n")
    result = Walk(None)
    scan_raw(raw, result)
    try:
        msg = email.message_from_bytes(raw, policy=policy.compat32)
    except (RecursionError, MemoryError):
        result.too_deep = True
        return result
    except Exception:
        result.too_deep = True
        return result
    result.message = msg
    stack: list[tuple[email.message.Message, tuple[int, ...]]] = [(msg, ())]
    while stack:
        part, path = stack.pop()
        if len(path) > max_depth:
            result.too_deep = True
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            for i in reversed(range(len(payload))):
                sub = payload[i]
                if isinstance(sub, email.message.Message):
                    stack.append((sub, (*path, i)))
            continue
        ctype = part.get_content_type().lower()
        names = _param_names(part)
        disp = (part.get("content-disposition") or "").strip().lower()
        attachment = bool(names) or disp.startswith("attachment")
        if not attachment and not ctype.startswith(("text/", "multipart/", "message/")):
            attachment = True
        result.parts.append(Part(path, ctype, names, _payload(part, payload_limit), attachment))
    return result


_NAME_PARAM = re.compile(
    rb"""(?ix)
    (?<![a-z0-9_-])(?:file)?name
    (?P<idx>\*\d+)?(?P<ext>\*)?
    \s*=\s*
    (?P<val>"(?:[^"\\\n]|\\.)*"|[^;\s]+)
    """
)
_MIME_HEADER = re.compile(rb"(?im)^content-(?:type|disposition)[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*")
# Only the first line of a body (right after a blank line) can start an encoded file:
# random binary data elsewhere would otherwise match by chance.
_B64_LINE = re.compile(rb"(?<=\n\n)(?P<head>TV[opqr]|f0VMR)[A-Za-z0-9+/]{56,}={0,2}[ \t]*$", re.M)


def _raw_value(val: bytes, extended: bool) -> str:
    s = val.decode("latin-1")
    if s.startswith('"') and s.endswith('"') and len(s) >= 2:
        s = s[1:-1].replace('\\"', '"')
    if extended:
        charset, _, rest = s.partition("'")
        if _:
            _lang, _, encoded = rest.partition("'")
            try:
                return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="replace")
            except LookupError:
                return urllib.parse.unquote(encoded, errors="replace")
        return urllib.parse.unquote(s, errors="replace")
    return decode_words(s)


def scan_raw(raw: bytes, result: Walk) -> None:
    """Fallback: every filename/name parameter anywhere in the raw bytes, and executables
    encoded in base64 lines, whatever the MIME structure says."""
    names: list[str] = []
    current: str | None = None
    for m in (m for h in _MIME_HEADER.finditer(raw) for m in _NAME_PARAM.finditer(h.group())):
        value = _raw_value(m.group("val"), bool(m.group("ext")))
        idx = m.group("idx")
        if idx and idx != b"*0" and current is not None:
            current += value
            names[-1] = current
            continue
        current = value
        names.append(value)
    result.raw_names = [n.strip() for n in names if n.strip()]
    for m in _B64_LINE.finditer(raw):
        result.raw_types.add("pe" if m.group("head").startswith(b"TV") else "elf")
