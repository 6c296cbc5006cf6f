"""Run *inside* a gateway (python3 standard library only): every message of an mbox to the
local spamd, one after another, as the spam milter sends them (``SYMBOLS``, user
``passerelle``, CRLF line ends), and spamd's CPU over the run.

    python3 spamd_run.py MBOX [WARMUP]
        ->   "SPAMD <messages> <cpu seconds> <wall seconds> <spam>"

It first waits (up to two minutes) until spamd answers ``PING`` (after a restart its parent
listens before its children have read the rules), then sends the first WARMUP messages (1 by
default, 1 at least) without counting them.

spamd's CPU is the user + system time of its processes, the parent's reaped children
included: a child that reaches ``--max-conn-per-child`` during the run exits and its time
moves into its parent's cutime/cstime.
"""

from __future__ import annotations

import mailbox
import os
import socket
import sys
import time
from collections.abc import Callable

PROC = "/proc"


def is_spamd(args: list[bytes]) -> bool:
    """A spamd process from its command line: the parent runs ``perl -T -w ... /usr/sbin/spamd``,
    its children are renamed ``spamd child``."""
    return bool(args) and (args[0].startswith(b"spamd") or any(a.endswith(b"/spamd") for a in args))


def ticks(proc: str = PROC) -> int:
    """utime + stime + cutime + cstime of every spamd process, in clock ticks."""
    total = 0
    for d in os.listdir(proc):
        if not d.isdigit():
            continue
        try:
            with open(f"{proc}/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if not is_spamd(args):
                continue
            with open(f"{proc}/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])
    return total


def ask(msg: bytes, port: int = 783) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\nUser: passerelle\r\n\r\n" % len(msg)
    s.sendall(head + msg)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


def ping(port: int = 783) -> bool:
    """spamd answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING SPAMC/1.5\r\n\r\n")
            return b"PONG" in s.recv(256)
    except OSError:
        return False


def wait_ready(
    ping_fn: Callable[[], bool] = ping,
    timeout: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True once spamd answers, False if it has not by ``timeout`` seconds."""
    deadline = clock() + timeout
    while not ping_fn():
        if clock() >= deadline:
            return False
        sleep(0.5)
    return True


def main() -> int:
    tick = os.sysconf("SC_CLK_TCK")
    msgs = [m.as_bytes().replace(b"\n", b"\r\n") for m in mailbox.mbox(sys.argv[1])]
    warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if not wait_ready():
        print("spamd does not answer PING on 127.0.0.1:783", file=sys.stderr)
        return 1
    for i in range(max(1, warmup)):  # warm children, not counted
        ask(msgs[i % len(msgs)])
    t0, c0 = time.monotonic(), ticks()
    spam = 0
    for m in msgs:
        spam += b"Spam: True" in ask(m)
    t1, c1 = time.monotonic(), ticks()
    print(f"SPAMD {len(msgs)} {(c1 - c0) / tick:.3f} {t1 - t0:.3f} {spam}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
