"""Headers a Passerelle milter owns: strip every copy the client sent, then add its own.

Shared by every milter (greylist, spam, ...): a header this gateway writes (``X-Delayed``,
``X-status``, ``X-Spam-*``, ...) that already arrives with the message is forged by whoever
sent it, and left in place it would sit above the real one. Each milter:

1. counts, while headers stream in, the occurrences of the names it owns (``OwnedHeaders.see``:
   constant memory per owned name, nothing kept of the values);
2. at end of message emits the deletions (``OwnedHeaders.deletions``) before its additions.

Edits are expressed the way libmilter applies them: ``chgheader(name, index, value)`` where
``index`` is the 1-based occurrence among headers of that name compared case-insensitively,
and an empty value deletes. Sendmail keeps a deleted header's slot while a message is being
processed, so deletions are emitted from the last occurrence to the first: the indexes of the
remaining ones never move, whichever way the MTA counts.

Pure logic: no pymilter import (``apply`` takes any object with ``addheader``/``chgheader``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[str, str]


@dataclass(frozen=True)
class HeaderEdit:
    """One milter header action: ``change`` (empty value = delete) or ``add``."""

    action: str  # "change" | "add"
    name: str
    value: str
    index: int = 0  # 1-based occurrence for "change"

    @property
    def is_delete(self) -> bool:
        return self.action == "change" and self.value == ""


def matches(name: str, patterns: Iterable[str]) -> bool:
    """``name`` is one of ``patterns`` (case-insensitive; a trailing ``*`` is a prefix)."""
    low = name.lower()
    for p in patterns:
        pl = p.lower()
        if pl.endswith("*"):
            if low.startswith(pl[:-1]):
                return True
        elif low == pl:
            return True
    return False


class OwnedHeaders:
    """Counts, header by header, the occurrences of the names a milter owns."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._seen: dict[str, int] = {}  # every name seen matching a pattern -> occurrences
        self._found: list[tuple[str, int]] = []  # owned occurrences (name as sent, index)

    def see(self, name: str) -> None:
        """Call from the milter's ``header`` callback, for every header."""
        if not matches(name, self.patterns):
            return
        low = name.lower()
        n = self._seen.get(low, 0) + 1
        self._seen[low] = n
        self._found.append((name, n))

    def deletions(self) -> list[HeaderEdit]:
        """Delete every owned occurrence, last first."""
        return [HeaderEdit("change", n, "", i) for n, i in reversed(self._found)]

    def reset(self) -> None:
        self._seen.clear()
        self._found.clear()


def strip_edits(headers: Sequence[Header], patterns: Iterable[str]) -> list[HeaderEdit]:
    """Deletions for every header of ``headers`` matching ``patterns``, last first."""
    owned = OwnedHeaders(patterns)
    for name, _value in headers:
        owned.see(name)
    return owned.deletions()


def encodable(value: str) -> str:
    """Raw 8-bit bytes (surrogate escapes) cannot go back through pymilter: replace them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def apply(milter: Any, edits: Iterable[HeaderEdit]) -> None:
    """Send ``edits`` through a ``Milter.Base`` (end of message only), in order."""
    for edit in edits:
        value = encodable(edit.value)
        if edit.action == "add":
            milter.addheader(edit.name, value)
        else:
            milter.chgheader(edit.name, edit.index, value)
