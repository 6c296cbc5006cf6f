"""Pure parts of bench/spam_profile.py and of its in-host spamd runner."""

from __future__ import annotations

import email.utils
import mailbox
from pathlib import Path

from plugins import load

spamd_run = load("bench/spamassassin/spamd_run.py")
spam_profile = load("bench/spam_profile.py")

PARENT = (
    b"/usr/bin/perl\0-T\0-w\0-I\0/etc/perl\0-I\0/usr/share/perl5\0/usr/sbin/spamd\0"
    b"--pidfile=/run/spamd.pid\0--max-children=6\0"
)


def _proc(root: Path, pid: int, cmdline: bytes, utime: int, stime: int, cutime: int) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(cmdline)
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    (d / "stat").write_text(f"{pid} (x y) S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} {cutime} 0 20 0")


def test_spamd_parent_and_children_are_spamd():
    assert spamd_run.is_spamd(PARENT.split(b"\0"))
    assert spamd_run.is_spamd([b"spamd child", b""])
    assert not spamd_run.is_spamd(
        b"bash\0-c\0pgrep -f spamd; echo /usr/sbin/spamd x\0".split(b"\0")
    )
    assert not spamd_run.is_spamd([b"/usr/sbin/clamd", b"--foreground"])


def test_spamd_cpu_counts_the_parent_and_its_reaped_children(tmp_path: Path):
    # The parent (its own 5 + 3 ticks, 1800 reaped from children gone), one child alive.
    _proc(tmp_path, 100, PARENT, 5, 3, 1800)
    _proc(tmp_path, 101, b"spamd child\0", 40, 2, 0)
    _proc(tmp_path, 200, b"/usr/sbin/clamd\0", 999, 0, 0)
    (tmp_path / "self").mkdir()
    assert spamd_run.ticks(str(tmp_path)) == 5 + 3 + 1800 + 40 + 2


def test_profile_messages_look_like_the_fleets_at_the_time_of_the_run(tmp_path: Path):
    # Before: a fixed Received date (Tue, 1 Dec 2026) and dave@internet.test, which SPF and
    # DMARC of the lab refuse from that address: every ham scored 5.5 (DATE_IN_FUTURE_48_96,
    # DMARC_REJECT) where the fleet's ham scores 0.
    now = 1796439922.0  # 2026-12-05 03:05:22 UTC
    box = tmp_path / "profile.mbox"
    box.write_text(spam_profile.build_mbox(6, "ham=1,spam=1,attach=1", 1, now=now))
    msgs = list(mailbox.mbox(str(box)))
    assert len(msgs) == 6
    for m in msgs:
        received = m["Received"]
        when = email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip())
        assert abs(when.timestamp() - now) < 60, received
        assert abs(email.utils.parsedate_to_datetime(m["Date"]).timestamp() - now) < 60
        # as the fleet benchmark sends it: HELO client.bench.test from outside's address,
        # a partner's address in From:
        assert received.startswith("from client.bench.test (outside [")
        assert "@partner" in m["From"] and m["From"].rstrip(">").endswith(".example")
        # the envelope sender, as the spam milter writes it for spamd (SPF of the sender)
        sender = m.get_from().split()[0]
        assert f"(envelope-from <{sender}>)" in received, received
