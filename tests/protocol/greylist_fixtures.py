"""Greylist test fixtures: a throwaway MariaDB and the milter daemon in a subprocess.

Imported by tests/protocol/test_greylist_milter.py and tests/unit/greylist/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT_PW = "rootpw"
FAULTY = Path(__file__).with_name("faultymilter.py")


class MariaDB:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "s"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: str) -> str:
        return f"mysql://root:{ROOT_PW}@localhost/{db}?unix_socket={self.socket}"

    def start(self) -> None:
        for exe in ("mariadb-install-db", "mariadbd"):
            if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
                pytest.fail(
                    f"{exe} not found: install the Debian package mariadb-server "
                    "(the greylist store tests need a throwaway MariaDB)"
                )
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.datadir.mkdir(parents=True)
        # A temporary folder of its own: several test runs at once (CI runs the package tests
        # under three Pythons together) each bootstrap a server; with the system's /tmp one
        # bootstrap once failed on another's temporary table.
        tmpdir = self.base / "tmp"
        tmpdir.mkdir()
        r = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--tmpdir={tmpdir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ],
            capture_output=True,
            timeout=120,
        )
        if r.returncode != 0:
            pytest.fail(f"mariadb-install-db failed: {r.stderr.decode()[-2000:]}")
        self.proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--tmpdir={tmpdir}",
                f"--socket={self.socket}",
                "--skip-networking",
                "--user=root",
                f"--pid-file={self.base / 'pid'}",
                f"--log-error={self.base / 'err.log'}",
                "--innodb-buffer-pool-size=256M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-log-file-size=128M",
                "--max-connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mariadbd exited: {(self.base / 'err.log').read_text()[-2000:]}")
            if self.socket.exists():
                try:
                    self.sql(f"ALTER USER root@localhost IDENTIFIED BY '{ROOT_PW}'", pw="")
                    return
                except Exception:
                    pass
            time.sleep(0.2)
        pytest.fail("mariadbd did not start within 60 s")

    def sql(self, statement: str, pw: str = ROOT_PW, db: str | None = None) -> list[tuple]:
        import pymysql

        c = pymysql.connect(
            unix_socket=str(self.socket), user="root", password=pw, database=db, autocommit=True
        )
        try:
            with c.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            c.close()

    def create_db(self, name: str) -> str:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")
        self.sql(f"CREATE DATABASE `{name}`")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_mariadb(base: Path) -> MariaDB:
    m = MariaDB(base)
    m.start()
    return m


@pytest.fixture(scope="session")
def greylist_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    # a short path: unix socket paths are limited to 107 bytes
    base = Path(tmp_path_factory.mktemp("glmaria"))
    m = start_mariadb(base)
    try:
        yield m
    finally:
        m.stop()


_db_counter = [0]


@pytest.fixture(params=["sqlite", "mariadb"])
def greylist_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty store URL, once for SQLite and once for MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/greylist.sqlite"
    m = request.getfixturevalue("greylist_mariadb")
    _db_counter[0] += 1
    return m.create_db(f"gl{os.getpid()}_{_db_counter[0]}")


class MilterProcess:
    def __init__(self, config: Path, sock: Path, fault: str | None = None) -> None:
        """``fault``: callbacks made to fail (``"envfrom,header"``, see ``faultymilter.py``)."""
        self.fault = fault
        self.config = config
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> None:
        env = dict(os.environ)
        launcher = ["-m", "passerelle.cli"]
        if self.fault:
            launcher = [str(FAULTY), "passerelle.greylist.daemon:GreylistMilter", self.fault, "--"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "greylist",
                "milter",
                "--config",
                str(self.config),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"milter exited: {self.log.read_text()[-3000:]}")
            if self.sock.exists():
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(str(self.sock))
                    s.close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        pytest.fail("milter socket did not appear within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(path: Path, store: str, sock: Path, extra: str = "", wl: str = "") -> Path:
    path.write_text(
        "[greylist]\n"
        f'store = "{store}"\n'
        f'socket = "unix:{sock}"\n'
        'hostname = "gw1.example.org"\n'
        'stats_flush = "1s"\n'
        'log_level = "debug"\n'
        f"{extra}\n"
        "[whitelist]\n"
        f"{wl}\n"
    )
    return path


@pytest.fixture
def greylist_milter(greylist_store_url: str, tmp_path: Path) -> Iterator[MilterProcess]:
    """The greylist milter running in a subprocess over a unix socket, fresh store."""
    sock = tmp_path / "gl.sock"
    cfg = write_config(
        tmp_path / "greylist.toml",
        greylist_store_url,
        sock,
        wl='clients = ["198.51.100.7", "mx.friendly.example"]\n'
        'recipients = ["postmaster@example.org"]\n'
        'trusted_networks = ["127.0.0.0/8", "10.0.0.0/8"]',
    )
    m = MilterProcess(cfg, sock)
    m.store_url = greylist_store_url  # type: ignore[attr-defined]
    m.start()
    try:
        yield m
    finally:
        m.stop()
