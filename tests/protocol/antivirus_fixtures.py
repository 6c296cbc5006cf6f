"""Fixtures for the antivirus milter protocol tests: a real clamd with a throwaway config and
a signature database written here, the milter as a subprocess, and a milter client.

Import the fixtures into the test module (``from tests.protocol.antivirus_fixtures import *``
style imports); nothing here is a conftest on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from milterclient import MilterClient
from miltertest import constants as mc
from procutil import stop_process

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Test-Signature"
HOSTNAME = "gw-test"


def find_clamd() -> str:
    path = shutil.which("clamd") or (
        "/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None
    )
    if path is None:
        pytest.fail(
            "clamd is not installed: apt-get install --no-install-recommends clamav-daemon "
            "(protocol tests need a real clamd)",
            pytrace=False,
        )
    return path


def write_eicar_db(db_dir: Path) -> None:
    """An .hdb line ``md5:size:Name`` for the EICAR test string."""
    db_dir.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5(EICAR, usedforsecurity=False).hexdigest()
    (db_dir / "passerelle-test.hdb").write_text(f"{md5}:{len(EICAR)}:{EICAR_SIGNATURE}\n")


@dataclass
class Clamd:
    proc: subprocess.Popen[bytes]
    socket: Path
    db_dir: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def reload(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.socket))
        s.sendall(b"zRELOAD\0")
        s.recv(100)
        s.close()
        time.sleep(1.0)


CLAMAV_ROLE = Path(__file__).resolve().parents[2] / "roles" / "clamav"


def clamav_role_defaults() -> dict[str, object]:
    """The clamav role's defaults, Jinja expressions resolved the way Ansible would (those
    needing host facts are left out)."""
    import jinja2
    import yaml

    raw = yaml.safe_load((CLAMAV_ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    values = {k: v for k, v in raw.items() if not (isinstance(v, str) and "{{" in v)}
    pending = {k: v for k, v in raw.items() if k not in values}
    while pending:
        done = {}
        for k, v in pending.items():
            try:
                done[k] = env.from_string(v).render(**values).strip()
            except jinja2.UndefinedError:
                continue
        if not done:
            break
        values.update(done)
        for k in done:
            del pending[k]
    return values


def clamd_limits_conf(**overrides: object) -> str:
    """The scan-limit lines of the clamav role's clamd.conf (AlertExceedsMax included),
    rendered from the role's own template and defaults: the throwaway clamd of these tests
    stops and alerts exactly where the gateways' clamd does."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(CLAMAV_ROLE / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    values = {**clamav_role_defaults(), **overrides}
    return env.get_template("etc/clamav/clamd-limits.conf.j2").render(**values)


def start_clamd(base: Path, stream_max: str = "20M") -> Clamd:
    exe = find_clamd()
    base.mkdir(parents=True, exist_ok=True)
    db = base / "db"
    write_eicar_db(db)
    sock = base / "clamd.sock"
    log = base / "clamd.log"
    conf = base / "clamd.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        LocalSocket {sock}
        DatabaseDirectory {db}
        LogFile {log}
        PidFile {base / "clamd.pid"}
        TemporaryDirectory {base}
        StreamMaxLength {stream_max}
        MaxThreads 4
        SelfCheck 3600
        """)
        + clamd_limits_conf()
    )
    proc = subprocess.Popen(
        [exe, f"--config-file={conf}", "--foreground"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"clamd exited ({proc.returncode}): {err}\n{_tail(log)}", pytrace=False)
        if sock.exists():
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(sock))
                s.sendall(b"zPING\0")
                if s.recv(10).startswith(b"PONG"):
                    s.close()
                    return Clamd(proc, sock, db, log)
                s.close()
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"clamd did not answer PING within 60s\n{_tail(log)}", pytrace=False)


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-20:])
    except OSError:
        return ""


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory):
    c = start_clamd(tmp_path_factory.mktemp("clamd"))
    yield c
    c.stop()


FAKE_SENDMAIL = """\
#!{python}
import json, os, sys, time
out = {out!r}
data = sys.stdin.buffer.read()
name = os.path.join(out, "%d-%d" % (time.time_ns(), os.getpid()))
with open(name + ".msg", "wb") as fh:
    fh.write(data)
with open(name + ".json", "w") as fh:
    json.dump(sys.argv[1:], fh)
"""


@dataclass
class MilterProc:
    proc: subprocess.Popen[bytes]
    socket: Path
    config: Path
    base: Path
    quarantine: Path
    outbreak: Path
    sent: Path
    stderr: Path

    def stop(self) -> None:
        stop_process(self.proc)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "passerelle.cli", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def released(self) -> list[tuple[list[str], bytes]]:
        import json

        out = []
        for meta in sorted(self.sent.glob("*.json")):
            out.append((json.loads(meta.read_text()), meta.with_suffix(".msg").read_bytes()))
        return out


def write_milter_config(
    base: Path, clamd_socks: list[str], signature_dir: Path, extra: str = ""
) -> Path:
    sent = base / "sent"
    sent.mkdir(parents=True, exist_ok=True)
    fake = base / "fake-sendmail"
    fake.write_text(FAKE_SENDMAIL.format(python=sys.executable, out=str(sent)))
    fake.chmod(0o755)
    conf = base / "antivirus.toml"
    clamd_list = ", ".join(f'"unix:{s}"' for s in clamd_socks)
    conf.write_text(
        textwrap.dedent(f"""\
        [antivirus]
        socket = "unix:{base / "milter.sock"}"
        clamd = [{clamd_list}]
        connect_timeout = "2s"
        timeout = "10s"
        hostname = "{HOSTNAME}"
        quarantine_dir = "{base / "quarantine"}"
        outbreak_state = "{base / "outbreak.json"}"
        signature_dir = "{signature_dir}"
        release_command = ["{fake}", "-oi"]
        log_level = "debug"
        """)
        + extra
    )
    return conf


RULES = """
[[antivirus.rules]]
name = "executables"
extensions = ["exe", "scr", "com", "pif", "bat", "cmd", "js", "vbs"]
types = ["pe", "elf"]
action = "quarantine"

[[antivirus.rules]]
name = "urgent-invoice"
header = "Subject"
pattern = "(?i)invoice.*urgent"
action = "reject"

[[antivirus.rules]]
name = "no-scripts"
extensions = ["hta", "wsf"]
action = "strip"
"""


def start_milter(base: Path, conf: Path, max_file_size: int | None = None) -> MilterProc:
    """``max_file_size``: RLIMIT_FSIZE of the milter (a write past it fails with EFBIG, the
    way a full spool does)."""
    sock = base / "milter.sock"
    errlog = base / "milter.stderr"

    def limit() -> None:
        if max_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    proc = subprocess.Popen(
        [sys.executable, "-m", "passerelle.cli", "antivirus", "milter", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=errlog.open("wb"),
        preexec_fn=limit,  # only setrlimit between fork and exec
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"milter exited: {errlog.read_text()}", pytrace=False)
        if sock.exists():
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(sock))
                s.close()
                break
            except OSError:
                pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"milter socket never appeared: {errlog.read_text()}", pytrace=False)
    return MilterProc(
        proc,
        sock,
        conf,
        base,
        base / "quarantine",
        base / "outbreak.json",
        base / "sent",
        errlog,
    )


@pytest.fixture
def milter(clamd: Clamd, tmp_path: Path):
    base = tmp_path / "milter"
    base.mkdir()
    conf = write_milter_config(base, [str(clamd.socket)], clamd.db_dir, RULES)
    m = start_milter(base, conf)
    yield m
    m.stop()


# -- the MTA side of the milter protocol ------------------------------------------------
def send_message(
    sock: Path,
    headers: list[tuple[str, str]],
    body: bytes,
    sender: str = "alice@example.org",
    rcpts: tuple[str, ...] = ("bob@example.com",),
    client: tuple[str, str] = ("mx.example.net", "192.0.2.10"),
    queue_id: str = "TESTQ1",
) -> list[tuple[str, dict]]:
    """One SMTP transaction through the milter; returns the end-of-message replies."""
    with MilterClient(sock) as c:
        for r in (
            c.connect(client[0], client[1], family=mc.SMFIA_INET),
            c.helo("client.example.net"),
            c.mail(f"<{sender}>"),
            *(c.rcpt(f"<{r}>") for r in rcpts),
        ):
            assert r[0] == mc.SMFIR_CONTINUE, r
        return c.message(headers, body, queue_id)


def final(res: list[tuple[str, dict]]) -> tuple[str, dict]:
    return res[-1]


def mime_message(
    parts: list[tuple[str, str, bytes]], subject: str = "hello"
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and CRLF body of a multipart message with (filename, content-type, data)."""
    boundary = "=_passerelle_test_boundary"
    headers = [
        ("From", "Alice <alice@example.org>"),
        ("To", "bob@example.com"),
        ("Subject", subject),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    lines = [f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "", "Hello Bob.", ""]
    for filename, ctype, data in parts:
        lines += [
            f"--{boundary}",
            f'Content-Type: {ctype}; name="{filename}"',
            f'Content-Disposition: attachment; filename="{filename}"',
            "Content-Transfer-Encoding: base64",
            "",
            base64.encodebytes(data).decode().rstrip("\n").replace("\n", "\r\n"),
            "",
        ]
    lines.append(f"--{boundary}--")
    return headers, ("\r\n".join(lines) + "\r\n").encode()


PE_STUB = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\0\0"
PDF_DOC = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
