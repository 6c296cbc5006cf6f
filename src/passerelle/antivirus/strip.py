"""Replacing attachments by a short text/plain notice (the ``strip`` action)."""

from __future__ import annotations

import email.message
import io
from collections.abc import Iterable
from email.generator import BytesGenerator

NOTICE = (
    "The attachment {name} was removed by the mail gateway {host} (content rule {rule}).\n"
    "Contact your mail administrator if you need it.\n"
)


def _part_at(msg: email.message.Message, path: tuple[int, ...]) -> email.message.Message | None:
    part = msg
    for i in path:
        payload = part.get_payload()
        if not isinstance(payload, list) or i >= len(payload):
            return None
        part = payload[i]
    return part


def strip_parts(
    msg: email.message.Message,
    targets: Iterable[tuple[tuple[int, ...], str]],
    host: str,
) -> bytes | None:
    """Replace the parts at ``targets`` ((path, rule) pairs) and return the new body with
    CRLF line ends (what smfi_replacebody expects), or None if a part cannot be found."""
    for path, rule in targets:
        part = _part_at(msg, path)
        if part is None or not path:
            return None
        names = [part.get_filename() or part.get_param("name") or "(unnamed)"]
        name = str(names[0])
        for h in (
            "Content-Type",
            "Content-Transfer-Encoding",
            "Content-Disposition",
            "Content-Description",
        ):
            del part[h]
        part.set_payload(NOTICE.format(name=name, host=host, rule=rule), charset="utf-8")
        part.add_header("Content-Disposition", "inline")
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, maxheaderlen=0).flatten(msg, linesep="\n")
    whole = buf.getvalue()
    _head, sep, body = whole.partition(b"\n\n")
    if not sep:
        return None
    return body.replace(b"\n", b"\r\n")
