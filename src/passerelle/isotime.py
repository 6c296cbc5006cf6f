"""ISO 8601 times read the same on every supported Python.

Python 3.11's ``datetime.fromisoformat`` takes the ``Z`` of UTC, which the package writes
(``2026-11-27T11:00:00Z`` in the connection guard's blocks) and rsyslog may write; the 3.9 of
EL 9 refuses it. ``parse_datetime`` reads it there too, as the same UTC offset.
"""

from __future__ import annotations

import sys
from datetime import datetime

_DIGITS = frozenset("0123456789")


def parse_datetime(text: str) -> datetime:
    """``datetime.fromisoformat`` with a trailing ``Z`` read as ``+00:00`` on Python < 3.11.

    Only a ``Z`` right after the time's last digit: 3.9 would take ``...05Z+00:00`` (the
    rewrite of ``...05ZZ``), which 3.11 refuses.
    """
    if sys.version_info < (3, 11) and text[-1:] == "Z" and text[-2:-1] in _DIGITS:
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)
