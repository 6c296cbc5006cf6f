"""Console unit-test fixtures: the throwaway MariaDB of the greylist tests
(tests/protocol/greylist_fixtures.py), for the console tables' MariaDB dialect, and ``conn``:
one connection of each dialect (SQLite in the test's folder; a database of its own on the
throwaway MariaDB) for the tests that run a table set on both; ``db``: a connection factory
on one SQLite file (what the web application is given), its connections closed after."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from passerelle.dburl import parse_store_url
from plugins import load

greylist_fixtures = load("tests/protocol/greylist_fixtures.py")

greylist_mariadb = greylist_fixtures.greylist_mariadb


@pytest.fixture(params=["sqlite", "mariadb"])
def conn(request, tmp_path):
    if request.param == "sqlite":
        c = sqlite3.connect(str(tmp_path / "console.db"), isolation_level=None)
    else:
        import pymysql

        m = request.getfixturevalue("greylist_mariadb")
        name = f"console_{uuid.uuid4().hex[:16]}"
        m.sql(f"CREATE DATABASE `{name}`")
        c = pymysql.connect(**parse_store_url(m.url(name)).pymysql_args(10.0))
    yield c
    c.close()


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "console.sqlite")
    opened = []

    def connect():
        c = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()
