"""Console unit-test fixtures: the throwaway MariaDB of the greylist tests
(tests/protocol/greylist_fixtures.py), for the request table's MariaDB dialect."""

from __future__ import annotations

from plugins import load

greylist_fixtures = load("tests/protocol/greylist_fixtures.py")

greylist_mariadb = greylist_fixtures.greylist_mariadb
