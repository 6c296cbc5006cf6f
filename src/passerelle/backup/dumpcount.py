"""Rows per table in a ``mariadb-dump`` output, counted as it streams by.

The rows a dump holds are the ones of its own consistent snapshot (``--single-transaction``),
which a ``SELECT COUNT(*)`` run beside it on a live database would not give: so they are read
from the dump itself. mariadb-dump writes one statement per line: ``INSERT [IGNORE] INTO
`table` VALUES (...),(...);``, strings in single quotes with backslash escapes (a newline
inside a value is written ``\\n``), binary columns in hex with ``--hex-blob``. A row is a
top-level parenthesised group outside quotes. ``CREATE TABLE `name``` names a table even when
it has no row. A dump that ends without mariadb-dump's ``-- Dump completed`` line was cut.
"""

from __future__ import annotations

import re

_INSERT = re.compile(rb"^INSERT (?:IGNORE )?INTO `((?:[^`]|``)+)` (?:\([^)]*\) )?VALUES ")
_CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
_DONE = b"-- Dump completed"
MAX_LINE = 256 << 20  # a statement longer than this is not a mariadb-dump line


class DumpFormatError(ValueError):
    """A dump this counter cannot read (not mariadb-dump's output, or cut)."""


def count_tuples(values: bytes) -> int:
    """Top-level ``(...)`` groups in the VALUES list of one INSERT line."""
    depth = 0
    rows = 0
    quoted = False
    escaped = False
    for byte in values:
        if quoted:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x27:  # '
                quoted = False
            continue
        if byte == 0x27:
            quoted = True
        elif byte == 0x28:  # (
            if depth == 0:
                rows += 1
            depth += 1
        elif byte == 0x29:  # )
            depth -= 1
            if depth < 0:
                raise DumpFormatError("unbalanced parentheses in an INSERT line")
    if quoted or depth:
        raise DumpFormatError("an INSERT line ends inside a value")
    return rows


def _table(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


class DumpCounter:
    """Feed it the dump's bytes in any chunks; ``rows`` is {table: rows} at the end."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.completed = False
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE:
            raise DumpFormatError("a line longer than 256 MiB: not a mariadb-dump output")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if line.startswith(b"INSERT "):
            m = _INSERT.match(line)
            if not m:
                raise DumpFormatError(f"unexpected INSERT line: {line[:80]!r}")
            table = _table(m.group(1))
            self.rows[table] = self.rows.get(table, 0) + count_tuples(line[m.end() :])
        elif line.startswith(b"CREATE TABLE "):
            m = _CREATE.match(line)
            if m:
                self.rows.setdefault(_table(m.group(1)), 0)
        elif line.startswith(_DONE):
            self.completed = True

    def finish(self) -> dict[str, int]:
        """The counts; DumpFormatError when the dump was cut (no completion line)."""
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        if not self.completed:
            raise DumpFormatError("the dump is cut (no '-- Dump completed' line at its end)")
        return dict(self.rows)
