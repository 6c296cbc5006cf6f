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


def test_spamd_runner_waits_for_spamd_to_answer():
    # After a restart spamd's parent listens before its children have read the rules: the
    # runner asks PING until PONG comes, and gives up at its deadline.
    now = [0.0]
    answers = iter([False, False, True])
    slept = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    assert spamd_run.wait_ready(lambda: next(answers), 10.0, lambda: now[0], sleep)
    assert len(slept) == 2
    now[0] = 0.0
    assert not spamd_run.wait_ready(lambda: False, 3.0, lambda: now[0], sleep)
    assert now[0] >= 3.0


def test_ab_runs_alternate_the_two_variants():
    assert spam_profile.ab_plan(3) == [False, True, False, True, False, True]


def test_ab_summary_pairs_each_round():
    # Round by round: the machine's speed drifts, so each "with" is set against the "without"
    # just before it.
    runs = [(False, 80.0), (True, 72.0), (False, 100.0), (True, 95.0), (False, 90.0), (True, 81.0)]
    s = spam_profile.ab_summary(runs)
    assert s["without"] == {"runs": 3, "mean": 90.0, "min": 80.0, "max": 100.0}
    assert s["with"]["runs"] == 3 and round(s["with"]["mean"], 2) == 82.67
    assert s["ratios"] == [0.9, 0.95, 0.9]
    assert s["median_ratio"] == 0.9


def test_ab_lines_are_written_as_given(tmp_path: Path):
    import subprocess

    cf = tmp_path / "zz-ab.cf"
    line = 'describe FOO it\'s "quoted"; $(touch pwned) `x` \\n'
    lines = [line, "score DMARC_PASS 0"]
    subprocess.run(
        ["sh", "-c", spam_profile.write_cf_script(lines, str(cf))], check=True, cwd=tmp_path
    )
    assert cf.read_text() == line + "\nscore DMARC_PASS 0\n"
    assert not (tmp_path / "pwned").exists()
    subprocess.run(["sh", "-c", spam_profile.write_cf_script(None, str(cf))], check=True)
    assert not cf.exists()


class _Done:
    def __init__(self, rc: int, out: str = "") -> None:
        self.returncode, self.stdout, self.stderr = rc, out, ""


def test_ab_puts_spamd_back_when_a_run_fails(capsys):
    calls: list[str] = []
    measured = iter(["SPAMD 120 9.6 10.0 30\n", "SPAMD 120 9.0 9.4 30\n", "Traceback\n"])

    def run(host: str, script: str, stdin: str = "") -> _Done:
        calls.append(script)
        if script.startswith("python3"):
            return _Done(0, next(measured))
        return _Done(0)

    assert spam_profile.run_ab("lab-gw1", ["score FOO 0"], 2, 20, run) == 1
    # without, with, without (whose run fails)
    assert "FOO" not in calls[0] and "FOO" in calls[2] and "FOO" not in calls[4]
    # the last call takes the line away again
    assert calls[-1] == spam_profile.switch_script(None)
    assert "spamd run failed" in capsys.readouterr().err


def test_ab_refuses_a_line_spamassassin_does_not_lint(capsys):
    calls: list[str] = []

    def run(host: str, script: str, stdin: str = "") -> _Done:
        calls.append(script)
        if script.startswith("python3"):
            return _Done(0, "SPAMD 120 9.6 10.0 30\n")
        if "FOO" in script:
            return _Done(3, "config: failed to parse line, skipping: scoore FOO 0")
        return _Done(0)

    assert spam_profile.run_ab("lab-gw1", ["scoore FOO 0"], 2, 20, run) == 2
    # without (switched, measured), with (refused), and spamd put back
    assert len(calls) == 4 and calls[-1] == spam_profile.switch_script(None)
    assert "failed to parse line" in capsys.readouterr().err
    assert "--lint" in spam_profile.switch_script(["score FOO 0"])


def test_ab_takes_one_line_only(capsys):
    # refused before anything is written into a container
    assert spam_profile.main(["--ab", "score FOO 0\nscore BAR 0"]) == 2
    assert "one configuration line each time" in capsys.readouterr().err
    assert spam_profile.main(["--ab", "score FOO 0", "--ab", " "]) == 2
    assert "one configuration line each time" in capsys.readouterr().err
    assert spam_profile.main(["--ab", "score FOO 0", "--cf", "score BAR 0"]) == 2
    assert "give every line as --ab" in capsys.readouterr().err
    # the runner always warms one child: 0 would not mean none
    assert spam_profile.main(["--ab", "score FOO 0", "--warmup", "0"]) == 2
    assert "--warmup at least 1" in capsys.readouterr().err
