"""Rows per table in a ``mariadb-dump`` output, counted as it streams by.

The rows a dump holds are the ones of its own consistent snapshot (``--single-transaction``),
which a ``SELECT COUNT(*)`` run beside it on a live database would not give: so they are read
from the dump itself. mariadb-dump writes ``INSERT [IGNORE] INTO `table` VALUES
(...),(...);`` on one line (10.11 and later: one row per line after the INSERT line),
strings in single quotes with backslash escapes (a newline inside a value is written
``\\n``), binary columns in hex with ``--hex-blob``. A row is a top-level parenthesised
group outside quotes, up to the statement's ``;``. ``CREATE TABLE `name``` names a table even when
it has no row. A dump that ends without mariadb-dump's ``-- Dump completed`` line was cut.
"""

from __future__ import annotations

import re

_INSERT = re.compile(rb"^INSERT (?:IGNORE )?INTO `((?:[^`]|``)+)` (?:\([^)]*\) )?VALUES\b")
_CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
_DONE = b"-- Dump completed"
MAX_LINE = 256 << 20  # a statement longer than this is not a mariadb-dump line


class DumpFormatError(ValueError):
    """A dump this counter cannot read (not mariadb-dump's output, or cut)."""


# A complete quoted string (a value never holds a raw newline: mariadb-dump writes \n),
# a parenthesis, the statement's end, or a quote left open (an error).
_TOKEN = re.compile(rb"'(?:[^'\\\n]|\\.)*'|[();]|'")


class _Values:
    """The VALUES list of one INSERT statement, fed line by line: mariadb-dump writes it on
    the INSERT's line or one row per line after it (10.11 and later)."""

    def __init__(self) -> None:
        self.rows = 0
        self.depth = 0
        self.done = False

    def feed(self, line: bytes) -> None:
        for m in _TOKEN.finditer(line):
            tok = m.group()
            if self.done:
                raise DumpFormatError("text after the end of an INSERT statement")
            if tok == b"(":
                if self.depth == 0:
                    self.rows += 1
                self.depth += 1
            elif tok == b")":
                self.depth -= 1
                if self.depth < 0:
                    raise DumpFormatError("unbalanced parentheses in an INSERT statement")
            elif tok == b";":
                if self.depth:
                    raise DumpFormatError("an INSERT statement ends inside a row")
                self.done = True
            elif tok == b"'":
                raise DumpFormatError("a quoted value does not end on its line")


def count_tuples(values: bytes) -> int:
    """Top-level ``(...)`` groups of a VALUES list that ends with ``;``."""
    v = _Values()
    v.feed(values)
    if not v.done:
        raise DumpFormatError("an INSERT statement does not end")
    return v.rows


def _unquote(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


class DumpCounter:
    """Feed it the dump's bytes in any chunks; ``rows`` is {table: rows} at the end."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.completed = False
        self._pending = b""
        self._values: _Values | None = None  # inside an INSERT statement's VALUES
        self._table = ""

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE:
            raise DumpFormatError("a line longer than 256 MiB: not a mariadb-dump output")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if self._values is not None:
            self._values.feed(line)
            self._close_values()
        elif line.startswith(b"INSERT "):
            m = _INSERT.match(line)
            if not m:
                raise DumpFormatError(f"unexpected INSERT line: {line[:80]!r}")
            self._table = _unquote(m.group(1))
            self._values = _Values()
            self._values.feed(line[m.end() :])
            self._close_values()
        elif line.startswith(b"CREATE TABLE "):
            m = _CREATE.match(line)
            if m:
                self.rows.setdefault(_unquote(m.group(1)), 0)
        elif line.startswith(_DONE):
            self.completed = True

    def _close_values(self) -> None:
        if self._values is not None and self._values.done:
            self.rows[self._table] = self.rows.get(self._table, 0) + self._values.rows
            self._values = None

    def finish(self) -> dict[str, int]:
        """The counts; DumpFormatError when the dump was cut (no completion line)."""
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        if self._values is not None:
            raise DumpFormatError("the dump is cut inside an INSERT statement")
        if not self.completed:
            raise DumpFormatError("the dump is cut (no '-- Dump completed' line at its end)")
        return dict(self.rows)
