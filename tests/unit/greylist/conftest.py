"""Greylist unit-test fixtures; the MariaDB/milter fixtures live in
tests/protocol/greylist_fixtures.py (shared with the protocol tests)."""

from __future__ import annotations

from plugins import load

greylist_fixtures = load("tests/protocol/greylist_fixtures.py")

greylist_mariadb = greylist_fixtures.greylist_mariadb
greylist_store_url = greylist_fixtures.greylist_store_url


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
