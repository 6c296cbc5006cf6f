"""Durations written the way admins write them: ``90s``, ``40m``, ``15h``, ``15d``, ``2w``."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")


class DurationError(ValueError):
    """A duration string that cannot be read."""


def parse_duration(text: str | int) -> int:
    """Return the number of seconds in ``text`` (``"1h30m"``, ``"40m"``, ``"90s"``, ``120``).

    A bare integer (or digit string) is seconds. Anything else raises DurationError.
    """
    if isinstance(text, bool):
        raise DurationError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise DurationError(f"negative duration: {text}")
        return text
    if not isinstance(text, str):
        raise DurationError(f"not a duration: {text!r}")
    s = text.strip().lower()
    if s.isdigit():
        return int(s)
    pos = 0
    total = 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise DurationError(f"not a duration: {text!r} (write e.g. 90s, 40m, 15h, 15d, 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    """Human form: ``2h05m10s``, ``40m``, ``0s``."""
    secs = round(seconds)
    if secs <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, secs = divmod(secs, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
