"""Fixtures for the spam milter protocol tests: a real spamd, the milter, a miltertest MTA.

Needs the Debian packages ``spamd`` and ``spamassassin`` (``/usr/sbin/spamd``); the fixture
fails with that message when spamd is missing. spamd runs with local tests only (``-L``).
"""

from __future__ import annotations

import email.utils
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from milterclient import MilterClient
from miltertest import constants as c
from procutil import stop_process

SPAMD = os.environ.get("PASSERELLE_SPAMD", "/usr/sbin/spamd")
FAULTY = Path(__file__).with_name("faultymilter.py")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spamd_ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING SPAMC/1.5\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            return b"PONG" in s.recv(100)
    except OSError:
        return False


@dataclass
class Spamd:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def start_spamd(workdir: Path, children: int = 2, extra: Sequence[str] = ()) -> Spamd:
    if not (Path(SPAMD).exists() or shutil.which(SPAMD)):
        pytest.fail(
            f"spamd not found at {SPAMD}: install the Debian packages spamd and spamassassin "
            "(or set PASSERELLE_SPAMD) to run the spam protocol tests"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)
    port = free_port()
    argv = [
        SPAMD,
        f"--listen=127.0.0.1:{port}",
        f"--max-children={children}",
        f"--min-children={children}",
        f"--pidfile={workdir / 'spamd.pid'}",
        "--local",
        "--nouser-config",
        "--syslog=stderr",
        f"--helper-home-dir={workdir}",
        *extra,
    ]
    if os.geteuid() == 0:
        argv.append("--username=nobody")
    log = workdir / "spamd.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"spamd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if spamd_ping(port):
            return Spamd(port, proc, log)
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"spamd did not answer PING within 90s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    d = start_spamd(tmp_path_factory.mktemp("spamd"))
    yield d
    d.stop()


@dataclass
class MilterProc:
    socket: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process(self.proc)


def start_milter(
    workdir: Path, spamd: Sequence[str], extra: str = "", fault: str | None = None
) -> MilterProc:
    """Run ``passerelle spam milter`` in a subprocess on a unix socket in ``workdir``;
    ``fault``: callbacks made to fail (``"header,body"``, see ``faultymilter.py``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "spam.sock"
    hosts = ", ".join(f'"{h}"' for h in spamd)
    cfg = workdir / "spam.toml"
    cfg.write_text(
        f'[spam]\nsocket = "unix:{sock}"\nspamd = [{hosts}]\nconnect_timeout = "2s"\n'
        f'timeout = "20s"\nhostname = "gw-test"\nuser = "passerelle"\n{extra}'
    )
    log = workdir / "milter.log"
    with log.open("wb") as fh:
        launcher = ["-m", "passerelle.cli"]
        if fault:
            launcher = [str(FAULTY), "passerelle.spam.milter:SpamMilter", fault, "--"]
        proc = subprocess.Popen(
            [sys.executable, *launcher, "spam", "milter", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"milter exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                return MilterProc(sock, proc, log)
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"milter socket never appeared: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def spam_milter(spamd: Spamd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilterProc]:
    m = start_milter(tmp_path_factory.mktemp("spam-milter"), [spamd.address])
    yield m
    m.stop()


@dataclass
class MilterResult:
    actions: list[tuple[str, dict]]  # every EOM modification, in order
    reply: str  # final SMFIR_* code
    reply_data: dict

    def changes(self) -> list[tuple[int, str, str]]:
        return [
            (d["index"], d["name"], d["value"])
            for cmd, d in self.actions
            if cmd == c.SMFIR_CHGHEADER
        ]

    def added(self) -> list[tuple[str, str]]:
        return [(d["name"], d["value"]) for cmd, d in self.actions if cmd == c.SMFIR_ADDHEADER]


def send_message(
    sock_path: Path,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    sender: str = "<sender@example.org>",
    rcpt: str = "<user@example.com>",
    timeout: float = 60.0,
) -> MilterResult:
    """Play the MTA side of one SMTP transaction over the milter socket."""
    with MilterClient(sock_path, timeout) as conn:
        conn.macro(c.SMFIC_CONNECT, j="mx.example.com")
        r = conn.connect("mail.sender.example", "192.0.2.10", family="4")
        assert r[0] == c.SMFIR_CONTINUE, r
        r = conn.helo("mail.sender.example")
        assert r[0] == c.SMFIR_CONTINUE, r
        conn.macro(c.SMFIC_MAIL, i="4AB12CD")
        for r in (conn.mail(sender), conn.rcpt(rcpt)):
            assert r[0] == c.SMFIR_CONTINUE, r
        res = conn.message(headers, body, "4AB12CD")
    return MilterResult(actions=res[:-1], reply=res[-1][0], reply_data=res[-1][1])


def clean_headers(subject: str = "Minutes of the project meeting") -> list[tuple[str, str]]:
    # No Received: sendmail does not show a milter the one it adds for this hop; the milter
    # synthesises it from the session (client mail.sender.example [192.0.2.10]) for spamd.
    return [
        ("From", "Alice Martin <alice@sender.example>"),
        ("To", "Bob Durand <bob@example.com>"),
        ("Subject", subject),
        ("Date", email.utils.formatdate(localtime=True)),
        ("Message-ID", "<20240604100000.1234@sender.example>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]


CLEAN_BODY = (
    b"Hello Bob,\r\n\r\nPlease find below the minutes of yesterday's meeting about the\r\n"
    b"migration of the mail gateways. We agreed to move the first domain next week,\r\n"
    b"after the tests on the staging platform. Claire will send the detailed plan.\r\n\r\n"
    b"Regards,\r\nAlice\r\n"
)


def gtube_body() -> bytes:
    return b"This is the GTUBE test message.\r\n\r\n" + GTUBE.encode() + b"\r\n"
