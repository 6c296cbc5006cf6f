"""roles/passerelle_tools/files/passerelle-reload, the ExecReload of sendmail and spamd, run
against a small daemon that behaves as they do: it catches SIGHUP only some time after it
started, and on SIGHUP closes its listening socket and executes itself again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELOAD = ROOT / "roles/passerelle_tools/files/passerelle-reload"

# argv: PORT STARTS_FILE SECONDS_BEFORE_THE_HANDLER SIGNAL. Each start appends a line to
# STARTS_FILE, then, after the delay, listens on 127.0.0.1:PORT and catches SIGNAL (HUP, USR1)
# by executing itself again.
DAEMON = """
import os, signal, socket, sys, time
port, starts, delay, sig = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
with open(starts, "a") as f:
    f.write("start\\n")
time.sleep(delay)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
def again(*_):
    s.close()
    time.sleep(0.3)
    os.execv(sys.executable, [sys.executable, *sys.argv])
signal.signal(getattr(signal, "SIG" + sig), again)
while True:
    time.sleep(1)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_signal_actions() -> None:
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def started(starts: Path, times: int, timeout: float = 30) -> None:
    """Wait until the daemon has written its start line ``times`` times."""
    deadline = time.monotonic() + timeout
    while not (starts.exists() and starts.read_text().count("start") >= times):
        assert time.monotonic() < deadline, f"the daemon did not start within {timeout} s"
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(delay: float, sig: str = "HUP") -> tuple[subprocess.Popen, int, Path]:
        port, starts = free_port(), tmp_path / f"starts-{len(procs)}"
        program = tmp_path / "daemon.py"
        program.write_text(DAEMON)
        argv = [sys.executable, str(program), str(port), str(starts), str(delay), sig]
        # A runner started under nohup ignores SIGHUP, and an ignored signal stays ignored
        # across exec: the daemon starts with the default action, as under systemd.
        procs.append(subprocess.Popen(argv, preexec_fn=default_signal_actions))
        return procs[-1], port, starts

    yield start
    for p in procs:
        p.kill()
        p.wait()


def reload(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(RELOAD), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_signal_before_the_handler_ends_the_daemon(start_daemon):
    """What the script is for: kill -HUP in the daemon's first moments (started, no handler
    yet) ends it."""
    proc, _, starts = start_daemon(1.5)
    started(starts, 1)
    os.kill(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=10) == -signal.SIGHUP


@pytest.mark.parametrize("sig", ["HUP", "USR1"])
def test_reload_right_after_the_start_waits_for_the_handler_then_for_the_new_socket(
    start_daemon, sig
):
    proc, port, starts = start_daemon(1.5, sig)
    t0 = time.monotonic()
    first = reload(str(proc.pid), sig)
    waited = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    assert waited >= 1.3, "sent before the daemon caught SIGHUP"
    # Executed again (a second start) and listening again when the reload returns...
    assert starts.read_text().count("start") == 2
    assert proc.poll() is None and listening(port)
    # ...so a second reload at once is safe too.
    second = reload(str(proc.pid), sig)
    assert second.returncode == 0, second.stderr
    assert starts.read_text().count("start") == 3
    assert proc.poll() is None and listening(port)


def test_a_daemon_that_never_catches_the_signal_is_left_running_and_the_reload_fails(
    start_daemon,
):
    proc, _, starts = start_daemon(3600)
    res = reload(str(proc.pid), "HUP", "1")
    assert res.returncode == 1
    assert "still starting after 1 s (no SIGHUP handler): not reloaded" in res.stderr
    assert proc.poll() is None and starts.read_text().count("start") == 1


@pytest.mark.parametrize("reaped", [True, False])
def test_a_daemon_that_is_gone_fails_the_reload(start_daemon, reaped):
    """Gone, or ended and not yet reaped by its parent (a zombie): not running."""
    proc, _, _ = start_daemon(3600)
    proc.kill()
    if reaped:
        proc.wait()
    else:
        time.sleep(0.5)
    res = reload(str(proc.pid), "HUP", "1")
    assert res.returncode == 1 and "is not running" in res.stderr


@pytest.mark.parametrize(
    ("args", "rc", "says"),
    [
        (("HUP",), 1, "not running (no MAINPID)"),
        ((), 2, "(signal: '')"),
        (("", "HUP"), 1, "not running (no MAINPID)"),
        (("0", "HUP"), 1, "not running (no MAINPID)"),
        (
            ("12x", "HUP"),
            2,
            "usage: passerelle-reload MAINPID HUP|USR1|USR2 [SECONDS] (pid: '12x')",
        ),
        (("123", "TERM"), 2, "(signal: 'TERM')"),
        (("123", "HUP", "soon"), 2, "(seconds: 'soon')"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(args, rc, says):
    res = reload(*args, timeout=10)
    assert res.returncode == rc and says in res.stderr, res.stderr
