"""Walking a message's MIME tree without trusting it.

The stdlib parser (compat32) never raises on defects; on top of it this module bounds the
nesting depth, the number of parts (counted on the raw bytes before the parser runs, so that
200,000 tiny parts are never parsed) and the time (a :class:`Budget`), keeps a raw-bytes
fallback that finds ``filename=`` / ``name=`` parameters even when boundaries are broken, so
that an attachment rule cannot be bypassed by bad MIME, and opens attached messages
(``message/rfc822`` or ``.eml``) whatever their transfer encoding. A part that cannot be
read is recorded with its error (a verdict on that part), never raised.
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

from passerelle.antivirus.budget import Budget, BudgetExceeded, unlimited

TEXT_TYPES = ("text/plain", "text/html", "text/enriched")


@dataclass
class Part:
    path: tuple[int, ...]
    content_type: str
    names: list[str]
    payload: bytes
    attachment: bool
    inner: bool = False  # inside an attached message that had to be decoded: not strippable
    error: str = ""  # why this part could not be inspected ("" when it could)


@dataclass
class Walk:
    message: email.message.Message | None
    parts: list[Part] = field(default_factory=list)
    too_deep: bool = False
    raw_names: list[str] = field(default_factory=list)
    raw_types: set[str] = field(default_factory=set)
    uninspectable: list[str] = field(default_factory=list)  # message-level reasons

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
    except Exception:  # HeaderParseError, binascii.Error...: show it as it came
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
        # Raw 8-bit names (UTF-8 sent without encoding) arrive as surrogate escapes.
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
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


_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"\n]{1,200})"|([^\s;"]{1,200}))""")
_DELIM = re.compile(rb"(?m)^--([^\n]{0,202})")


def count_parts(raw: bytes, max_parts: int, budget: Budget) -> str:
    """Why ``raw`` has too many MIME parts to be parsed ("" when it has not), from the raw
    bytes only: declared boundaries, then delimiter lines that use one of them."""
    bounds: set[bytes] = set()
    for m in _BOUNDARY.finditer(raw.lower()):  # values sliced from the original (case)
        g = 1 if m.group(1) is not None else 2
        bounds.add(raw[m.start(g) : m.end(g)].rstrip())
        if len(bounds) > max_parts:
            return f"more than {max_parts} multipart boundaries"
    if not bounds or raw.count(b"\n--") <= max_parts:
        return ""
    limit = max_parts + len(bounds)  # closing delimiters are not parts
    n = 0
    for i, m in enumerate(_DELIM.finditer(raw)):
        if i % 1024 == 0:
            budget.check()
        line = m.group(1).rstrip()
        if line in bounds or (line.endswith(b"--") and line[:-2] in bounds):
            n += 1
            if n > limit:
                return f"more than {max_parts} MIME parts"
    return ""


def _decoded_message(part: email.message.Message) -> bytes | None:
    """The bytes of an attached message (message/* or .eml), transfer encoding undone."""
    payload = part.get_payload()
    cte = str(part.get("content-transfer-encoding") or "").strip().lower()
    if isinstance(payload, list):
        if cte not in ("base64", "quoted-printable") or not payload:
            return None  # parsed as a message already: the walk goes into it
        child = payload[0]
        text = child.as_bytes() if isinstance(child, email.message.Message) else b""
        holder = email.message.Message()
        holder["Content-Transfer-Encoding"] = cte
        holder.set_payload(text.lstrip(b"\n").decode("ascii", "surrogateescape"))
        data = holder.get_payload(decode=True)
    else:
        data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else None


def _is_attached_message(ctype: str, names: list[str]) -> bool:
    return ctype.startswith("message/") or any(n.lower().endswith(".eml") for n in names)


def walk(
    raw: bytes,
    max_depth: int = 20,
    payload_limit: int = 200 * 1024 * 1024,
    max_parts: int = 1000,
    budget: Budget | None = None,
) -> Walk:
    """Parse ``raw`` and list its leaf parts; never raises on malformed input (only
    :class:`BudgetExceeded` when the time budget is spent)."""
    budget = budget or unlimited()
    result = Walk(None)
    msg = _parse(raw, result, max_parts, budget)
    if msg is None:
        return result
    result.message = msg
    nodes = 0
    stack: list[tuple[email.message.Message, tuple[int, ...], int, bool]] = [(msg, (), 0, False)]
    while stack:
        part, path, depth, inner = stack.pop()
        nodes += 1
        if nodes % 64 == 0:
            budget.check()
        if nodes > max_parts:
            result.uninspectable.append(f"more than {max_parts} MIME parts")
            return result
        if depth > max_depth:
            result.too_deep = True
            continue
        try:
            _visit(part, path, depth, inner, stack, result, max_parts, payload_limit, budget)
        except BudgetExceeded:
            raise
        except Exception as exc:  # this part is uninspectable, not the message
            err = f"part {'.'.join(map(str, path)) or 'body'}: {exc.__class__.__name__}: {exc}"
            result.parts.append(
                Part(path, "application/octet-stream", [], b"", True, inner, err[:300])
            )
    return result


def _parse(
    raw: bytes, result: Walk, max_parts: int, budget: Budget
) -> email.message.Message | None:
    raw = raw.replace(b"\r\n", b"\n")
    why = count_parts(raw, max_parts, budget)
    if why:
        result.uninspectable.append(why)
        return None
    scan_raw(raw, result)
    budget.check()
    try:
        return email.message_from_bytes(raw, policy=policy.compat32)
    except Exception:  # RecursionError, MemoryError...: as deep as it gets
        result.too_deep = True
        return None


def _visit(
    part: email.message.Message,
    path: tuple[int, ...],
    depth: int,
    inner: bool,
    stack: list[tuple[email.message.Message, tuple[int, ...], int, bool]],
    result: Walk,
    max_parts: int,
    payload_limit: int,
    budget: Budget,
) -> None:
    payload = part.get_payload()
    ctype = part.get_content_type().lower()
    names = _param_names(part)
    if _is_attached_message(ctype, names):
        data = _decoded_message(part)
        if data is not None:
            sub = Walk(None)
            child = _parse(data, sub, max_parts, budget)
            result.raw_names += sub.raw_names
            result.raw_types |= sub.raw_types
            result.uninspectable += sub.uninspectable
            result.too_deep = result.too_deep or sub.too_deep
            if names:  # the attachment itself, for extension rules (.eml)
                result.parts.append(Part(path, ctype, names, b"", True, inner))
            if child is not None:
                stack.append((child, path, depth + 1, True))
            return
    if part.is_multipart() and isinstance(payload, list):
        for i in reversed(range(len(payload))):
            sub_part = payload[i]
            if isinstance(sub_part, email.message.Message):
                stack.append((sub_part, (*path, i), depth + 1, inner))
        return
    disp = str(part.get("content-disposition") or "").strip().lower()
    attachment = bool(names) or disp.startswith("attachment")
    if not attachment and not ctype.startswith(("text/", "multipart/", "message/")):
        attachment = True
    result.parts.append(Part(path, ctype, names, _payload(part, payload_limit), attachment, inner))


_NAME_PARAM = re.compile(
    rb"""(?ix)
    (?<![a-z0-9_-])(?:file)?name
    (?P<idx>\*\d+)?(?P<ext>\*)?
    \s*=\s*
    (?P<val>"(?:[^"\\\n]|\\.)*"|[^;\s]+)
    """
)
# Matched on a lower-cased copy (case-sensitive patterns with a literal prefix are searched
# in C, case-insensitive ones are not: seconds on a 25 MB message), sliced from the original.
_MIME_HEADER = re.compile(rb"\ncontent-(?:type|disposition)[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*")
# Only the first line of a body (right after a blank line) can start an encoded file:
# random binary data elsewhere would otherwise match by chance.
_B64_LINE = re.compile(rb"(?P<head>TV[opqr]|f0VMR)[A-Za-z0-9+/]{56,}={0,2}[ \t]*$", re.M)


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
    low = b"\n" + raw.lower()  # offsets in ``low`` are one more than in ``raw``
    headers = (raw[h.start() : h.end() - 1] for h in _MIME_HEADER.finditer(low))
    for m in (m for h in headers for m in _NAME_PARAM.finditer(h)):
        value = _raw_value(m.group("val"), bool(m.group("ext")))
        idx = m.group("idx")
        if idx and idx != b"*0" and current is not None:
            current += value
            names[-1] = current
            continue
        current = value
        names.append(value)
    result.raw_names = [n.strip() for n in names if n.strip()]
    pos = raw.find(b"\n\n")
    while pos >= 0:
        m = _B64_LINE.match(raw, pos + 2)
        if m:
            result.raw_types.add("pe" if m.group("head").startswith(b"TV") else "elf")
        pos = raw.find(b"\n\n", pos + 2)
