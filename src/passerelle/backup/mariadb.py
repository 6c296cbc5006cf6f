"""Database parts: ``mariadb-dump`` of one database streamed into its part file, and its
load back through the ``mariadb`` client.

The server's own tools are used, as root through the server's unix socket (root is
authenticated by its unix identity), or with ``--defaults-extra-file`` (user, password,
socket). The dump is consistent (``--single-transaction``: every table of the database at
one instant, InnoDB, without locking the gateways out), takes the routines and triggers,
writes binary columns in hex and inserts with ``INSERT IGNORE`` (a row a live gateway wrote
during a restore is kept, not a reason to stop).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from passerelle.backup.dumpcount import DumpCounter, DumpFormatError

DUMP_OPTIONS = (
    "--single-transaction",
    "--routines",
    "--triggers",
    "--hex-blob",
    "--insert-ignore",
    "--default-character-set=utf8mb4",
)
_CHARSET = re.compile(r"^[A-Za-z0-9_]{1,64}$")
TIMEOUT = 6 * 3600  # a dump or a load that takes longer is stuck

# (argv, stdin, stdout, stderr) -> a started process; tests pass their own.
Spawn = Callable[..., "subprocess.Popen[bytes]"]


class MariaDBError(RuntimeError):
    """The server or its tools refused (the message says what they said)."""


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class MariaDB:
    dump_command: str = "mariadb-dump"
    client_command: str = "mariadb"
    defaults_file: str = ""
    spawn: Spawn = subprocess.Popen

    def _argv(self, exe: str, *args: str) -> list[str]:
        # --defaults-extra-file must come first.
        extra = [f"--defaults-extra-file={self.defaults_file}"] if self.defaults_file else []
        return [exe, *extra, *args]

    def _run(self, argv: list[str], feed: Iterable[bytes] | None = None) -> bytes:
        """Run a tool; its stdout, or MariaDBError with its stderr."""
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
            try:
                proc = self.spawn(
                    argv,
                    stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            except OSError as exc:
                raise MariaDBError(f"{argv[0]}: {exc.strerror or exc}") from None
            broken = False
            if feed is not None and proc.stdin is not None:
                try:
                    for chunk in feed:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    broken = True
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        broken = True
            status = proc.wait(TIMEOUT)
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip()
            if status != 0 or broken:
                raise MariaDBError(f"{argv[0]} exited {status}: {message[-2000:]}")
            out.seek(0)
            return out.read()

    def query(self, sql: str) -> list[list[str]]:
        """Rows of one statement (tab-separated batch output, no column names)."""
        out = self._run(
            self._argv(self.client_command, "--batch", "--skip-column-names", "--raw", "-e", sql)
        )
        text = out.decode("utf-8", "replace")
        return [line.split("\t") for line in text.splitlines() if line]

    def database(self, name: str) -> tuple[str, str] | None:
        """(charset, collation) of a database, None if it does not exist."""
        rows = self.query(
            "SELECT default_character_set_name, default_collation_name"
            f" FROM information_schema.schemata WHERE schema_name = {quote_string(name)}"
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def live_rows(self, name: str) -> dict[str, int] | None:
        """Rows per table of a database now, None if it does not exist."""
        if self.database(name) is None:
            return None
        tables = self.query(
            "SELECT table_name FROM information_schema.tables"
            f" WHERE table_schema = {quote_string(name)} AND table_type = 'BASE TABLE'"
        )
        if not tables:
            return {}
        union = " UNION ALL ".join(
            f"SELECT {quote_string(t[0])}, COUNT(*) FROM {quote_name(name)}.{quote_name(t[0])}"
            for t in tables
        )
        return {row[0]: int(row[1]) for row in self.query(union)}

    def dump(self, name: str, out: IO[bytes]) -> dict[str, int]:
        """Dump one database into ``out``; its rows per table, read from the dump itself."""
        counter = DumpCounter()
        argv = self._argv(self.dump_command, *DUMP_OPTIONS, "--", name)
        with tempfile.TemporaryFile() as err:
            try:
                proc = self.spawn(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
                )
            except OSError as exc:
                raise MariaDBError(f"{argv[0]}: {exc.strerror or exc}") from None
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(1 << 16):
                    counter.feed(chunk)
                    out.write(chunk)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            status = proc.wait(TIMEOUT)
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip()
        if status != 0:
            raise MariaDBError(f"{argv[0]} {name} exited {status}: {message[-2000:]}")
        try:
            return counter.finish()
        except DumpFormatError as exc:
            raise MariaDBError(f"{argv[0]} {name}: {exc}") from None

    def load(self, name: str, charset: str, collation: str, dump: Iterable[bytes]) -> None:
        """Create the database if missing, then run the dump in it."""
        create = f"CREATE DATABASE IF NOT EXISTS {quote_name(name)}"
        for word, value in (("CHARACTER SET", charset), ("COLLATE", collation)):
            if value and not _CHARSET.match(value):
                raise MariaDBError(f"{name}: not a {word.lower()} name: {value!r}")
            if value:
                create += f" {word} {value}"
        self.query(create)
        self._run(self._argv(self.client_command, "--batch", f"--database={name}"), feed=dump)


def from_config(cfg: Any) -> MariaDB:
    return MariaDB(cfg.dump_command, cfg.client_command, cfg.mariadb_defaults_file)
