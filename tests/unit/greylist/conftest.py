"""Greylist unit-test fixtures; the MariaDB/milter fixtures live in
tests/protocol/greylist_fixtures.py (shared with the protocol tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "protocol" / "greylist_fixtures.py"
_spec = importlib.util.spec_from_file_location("greylist_fixtures", _path)
assert _spec is not None and _spec.loader is not None
greylist_fixtures = sys.modules.get("greylist_fixtures") or importlib.util.module_from_spec(_spec)
if "greylist_fixtures" not in sys.modules:
    sys.modules["greylist_fixtures"] = greylist_fixtures
    _spec.loader.exec_module(greylist_fixtures)

greylist_mariadb = greylist_fixtures.greylist_mariadb
greylist_store_url = greylist_fixtures.greylist_store_url


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
