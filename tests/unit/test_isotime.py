"""ISO times read the same on Python 3.9 (EL 9), 3.11 and 3.13: the ``Z`` of UTC included."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from passerelle.connwatch.blocks import iso, iso_minutes, parse_iso
from passerelle.isotime import parse_datetime

T = datetime(2026, 11, 27, 11, 0, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T11:00:05Z", T),
        ("2026-11-27T11:00:05+00:00", T),
        ("2026-11-27T12:00:05+01:00", T),
        ("2026-11-27T11:00:05.250000Z", T + timedelta(microseconds=250000)),
        ("2026-11-27T11:00Z", T.replace(second=0)),
        ("2026-11-27T11:00:05", T.replace(tzinfo=None)),
    ],
)
def test_parse_datetime(text, expected):
    got = parse_datetime(text)
    assert got == expected
    assert (got.tzinfo is None) == (expected.tzinfo is None)


@pytest.mark.parametrize(
    "text",
    ["", "Z", "2026-11-27T11:00:05ZZ", "2026-11-27T11:00:05+01:00Z", "yesterday", "2026-13-01"],
)
def test_parse_datetime_refuses_what_is_not_an_iso_time(text):
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_the_guards_block_times_round_trip():
    ts = T.timestamp()
    assert iso(ts) == "2026-11-27T11:00:05Z"
    assert parse_iso(iso(ts)) == ts
    assert parse_iso(iso_minutes(ts)) == ts - 5
