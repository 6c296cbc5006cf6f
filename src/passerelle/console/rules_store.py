"""Where the runtime content rules live: one row of the shared database holding the runtime
set as JSON (``rules.runtime_to_json``), with a version number. A change is a
compare-and-set on that version, so two consoles editing at once never lose each other's
change: the second is told to try again. A stored set is checked again when read
(``rules.runtime_from_json``): a row is input too."""

from __future__ import annotations

from passerelle.console import schema
from passerelle.console.rules import RuntimeRules, runtime_from_json, runtime_to_json

VERSION_TABLE = "console_rules_schema_version"
SCHEMA_LOCK = "passerelle_console_rules_schema"

SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_runtime_rules (id INTEGER PRIMARY KEY,"
        " body TEXT NOT NULL, version INTEGER NOT NULL, updated REAL NOT NULL,"
        " updated_by TEXT NOT NULL)",
    ],
}
MYSQL_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS console_runtime_rules (id INT NOT NULL PRIMARY KEY,"
        " body MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL, version INT UNSIGNED NOT NULL,"
        " updated DOUBLE NOT NULL, updated_by VARCHAR(128) CHARACTER SET utf8mb4 NOT NULL)"
        " ENGINE=InnoDB",
    ],
}


class RulesChanged(RuntimeError):
    """The runtime rules changed since they were read: read them again and retry."""


class RuleStore(schema.ConsoleTable):
    """The runtime rules row on one DB-API connection (autocommit)."""

    VERSION_TABLE = VERSION_TABLE
    SCHEMA_LOCK = SCHEMA_LOCK
    WHAT = "runtime rules"
    SQLITE_MIGRATIONS = SQLITE_MIGRATIONS
    MYSQL_MIGRATIONS = MYSQL_MIGRATIONS

    def load(self) -> tuple[RuntimeRules, int]:
        """The runtime set and its version (0: never saved)."""
        row = self._execute(
            "SELECT body, version FROM console_runtime_rules WHERE id = 1"
        ).fetchone()
        if row is None:
            return RuntimeRules(), 0
        return runtime_from_json(str(row[0])), int(row[1])

    def save(self, runtime: RuntimeRules, version: int, by: str, now: float) -> int:
        """Store ``runtime`` if the stored version is still ``version``; the new version.
        ``RulesChanged`` when another console saved first."""
        body = runtime_to_json(runtime)
        if version == 0:
            try:
                self._execute(
                    "INSERT INTO console_runtime_rules (id, body, version, updated, updated_by)"
                    " VALUES (1, ?, 1, ?, ?)",
                    (body, now, by),
                )
            except self._integrity:
                raise RulesChanged("the runtime rules changed meanwhile: try again") from None
            return 1
        cur = self._execute(
            "UPDATE console_runtime_rules SET body = ?, version = version + 1, updated = ?,"
            " updated_by = ? WHERE id = 1 AND version = ?",
            (body, now, by, version),
        )
        if cur.rowcount != 1:
            raise RulesChanged("the runtime rules changed meanwhile: try again")
        return version + 1
