"""Run *inside* a gateway (python3 standard library only): every message of an mbox to the
local spamd, one after another, as the spam milter sends them (``SYMBOLS``, user
``passerelle``, CRLF line ends), and spamd's CPU over the run.

    python3 spamd_run.py MBOX   ->   "SPAMD <messages> <cpu seconds> <wall seconds> <spam>"

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


def main() -> int:
    tick = os.sysconf("SC_CLK_TCK")
    msgs = [m.as_bytes().replace(b"\n", b"\r\n") for m in mailbox.mbox(sys.argv[1])]
    ask(msgs[0])  # a warm child
    t0, c0 = time.monotonic(), ticks()
    spam = 0
    for m in msgs:
        spam += b"Spam: True" in ask(m)
    t1, c1 = time.monotonic(), ticks()
    print(f"SPAMD {len(msgs)} {(c1 - c0) / tick:.3f} {t1 - t0:.3f} {spam}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
