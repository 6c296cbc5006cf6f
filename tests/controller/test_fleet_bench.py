"""Pure parts of bench/fleet: the mix parser, the log collector, the figures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from plugins import load

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    return load(f"bench/fleet/{name}.py")


loadgen = _load("loadgen")
collect = _load("collect")
run = _load("run")


def test_mix_parser():
    assert loadgen.parse_mix("ham=3,spam=1") == {"ham": 3, "spam": 1}
    with pytest.raises(ValueError, match="unknown kind 'virus'"):
        loadgen.parse_mix("virus=1")
    with pytest.raises(ValueError, match="weight of ham"):
        loadgen.parse_mix("ham=x")
    with pytest.raises(ValueError, match="every weight is 0"):
        loadgen.parse_mix("ham=0")


def test_messages_carry_their_id_and_send_time():
    import random

    text = loadgen.build_message("eicar", "b123", "a@x.test", "b@y.test", random.Random(1))
    assert "Message-ID: <b123@bench.test>" in text
    assert "X-Bench-Sent: " in text
    assert "invoice.com" in text


def test_collector_joins_queue_ids():
    lines = [
        (10.0, "5AB: from=<a@x>, size=1, class=0, nrcpts=1, msgid=<b1@bench.test>, proto=ESMTP"),
        (10.5, "5AB: to=<alice@static-a.test>, delay=00:00:00, mailer=local, pri=1, stat=Sent"),
        (11.0, "6CD: from=<a@x>, size=1, msgid=<other@example>, proto=ESMTP"),
        (11.2, "6CD: to=<bob@static-a.test>, mailer=local, stat=Sent"),
        (12.0, "7EF: from=<a@x>, msgid=<b2@bench.test>"),
        (12.1, "7EF: to=<bob@static-a.test>, mailer=local, stat=Deferred: x"),
    ]
    assert collect.parse(lines) == {"b1": 10.5}
    # when the mailstore took each message from the gateway (delivered or not)
    assert collect.received(lines) == {"b1": 10.0, "b2": 12.0}


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert run.percentile(values, 50) == 50.0
    assert run.percentile(values, 99) == 99.0
    assert run.percentile([3.0], 99) == 3.0
    assert run.percentile([], 50) is None


def test_figures():
    load = {
        "start": 100.0,
        "end": 102.0,
        "concurrency": 2,
        "events": [
            [100.1, 100.2, "greylist", "deferred", 451, "gw1", None],
            [100.2, 100.4, "ham", "accepted", 250, "gw1", "b1"],
            [101.0, 101.5, "eicar", "rejected", 550, "gw2", None],
            [101.1, 101.6, "ham", "accepted", 250, "gw2", "b2"],
        ],
    }
    f = run.figures(load, {"b1": 101.2}, {})
    assert f["sessions"] == 4
    assert f["sessions_per_s"] == 2.0
    assert f["accepted"] == 2 and f["delivered"] == 1 and f["lost_or_late"] == 1
    assert f["latency_p50_s"] == pytest.approx(1.0)
    assert f["per_second"]["deferred"] == {"min": 0, "median": 0.5, "max": 1}
    assert f["spamd_cpu_ms_per_accepted"] is None  # no sample, no figure
    assert f["handoff_p99_s"] is None  # no mailstore's reception times, no figure


def _row(out: io.StringIO, name: str) -> str | None:
    """The value printed on the report's row ``name`` (the columns are padded)."""
    for line in out.getvalue().splitlines():
        if line.strip().startswith(name):
            return line.strip()[len(name) :].strip()
    return None


def test_latency_to_the_mailstore_is_the_gateways_part():
    load = {
        "start": 100.0,
        "end": 110.0,
        "events": [
            [100.0, 101.0, "ham", "accepted", 250, "gw1", "b1"],
            [101.0, 102.0, "ham", "accepted", 250, "gw2", "b2"],
            [102.0, 103.0, "ham", "accepted", 250, "gw2", "b3"],  # not delivered: no figure
        ],
    }
    # b1 taken by its mailstore 1.5 s after it was sent, in its mailbox 2 s later
    f = run.figures(load, {"b1": 103.5, "b2": 102.5}, {}, {"b1": 101.5, "b2": 102.0, "b3": 104.0})
    assert f["latency_p99_s"] == pytest.approx(3.5)
    assert f["handoff_p50_s"] == pytest.approx(1.0)
    assert f["handoff_p99_s"] == pytest.approx(1.5)
    out = io.StringIO()
    run.print_table(f, out)
    assert _row(out, "to the mailstore p50 / p99 (s, send -> taken)") == "1.000 / 1.500"


def test_spamd_cpu_per_accepted_message():
    """spamd's CPU of every gateway over the messages accepted (2 here): 0.3 s / 2 = 150 ms."""
    load = {
        "start": 0.0,
        "end": 1.0,
        "events": [
            [0.1, 0.2, "ham", "accepted", 250, "gw1", "b1"],
            [0.1, 0.3, "eicar", "rejected", 550, "gw1", None],
            [0.2, 0.4, "ham", "accepted", 250, "gw2", "b2"],
        ],
    }
    samples = {
        "gw1": {"cpu_seconds": {"spamd": 0.1, "sendmail": 2.0}},
        "gw2": {"cpu_seconds": {"spamd": 0.2}},
        "db1": {"cpu_seconds": {"mariadbd": 1.0}},
    }
    assert run.figures(load, {}, samples)["spamd_cpu_ms_per_accepted"] == 150.0


def test_step_figures_show_where_sessions_stall():
    events = [
        [0, 1, "ham", "accepted", 250, "gw1", "b1", {"connect": 0.01, "mail": 0.02, "rcpt": 5.1}],
        [0, 1, "ham", "accepted", 250, "gw1", "b2", {"connect": 0.03, "mail": 0.01, "rcpt": 0.2}],
        [0, 1, "ham", "deferred", 421, "gw1", None, {"connect": 2.5}],
        [0, 1, "ham", "accepted", 250, "gw1", "b3"],  # an old event without steps
    ]
    st = run.step_figures(events)
    assert st["rcpt"]["max"] == 5.1 and st["rcpt"]["slow"] == 1
    assert st["connect"]["slow"] == 1 and st["connect"]["p50"] == 0.03
    assert st["mail"]["slow"] == 0
    assert "eom" not in st


def test_sampler_names_the_daemons():
    sample = _load("sample")
    perl = "/usr/bin/perl -T -w -I /etc/perl /usr/sbin/spamd --pidfile=/run/spamd.pid"
    assert sample.daemon_of("perl", perl) == "spamd"  # the parent reaps the children
    assert sample.daemon_of("spamd child", "spamd child") == "spamd"
    assert sample.daemon_of("sendmail", "sendmail: MTA: accepting connections") == "sendmail"
    milter = "/usr/bin/python3 /usr/local/bin/passerelle greylist milter --config x"
    assert sample.daemon_of("passerelle", milter) == "milter-greylist"
    assert sample.daemon_of("perl", "/usr/bin/perl /usr/local/bin/other-tool") == "other"


def test_session_rate_counts_the_load_window_only():
    load = {
        "start": 0.0,
        "deadline": 10.0,
        "end": 70.0,
        "concurrency": 2,
        "events": [[0, t, "greylist", "deferred", 451, "gw1", None] for t in range(1, 10)]
        + [[0.0, 61.0, "greylist", "error:SMTPServerDisconnected", 0, "gw1", None]],
    }
    f = run.figures(load, {}, {})
    assert f["sessions"] == 10
    assert f["sessions_per_s"] == 0.9  # 9 sessions ended in the 10 s window
    load["events"].append([1.0, 2.0, "greylist", "error:ConnectionRefusedError", 0, "gw1", None])
    assert run.figures(load, {}, {})["sessions_per_s"] == 0.9  # a refused connection is none
    assert f["finished_after_window_s"] == 60.0


def test_cpu_of_a_reaped_child_counts_once():
    sample = _load("sample")
    tick = sample.TICK
    # spamd parent 1 (own 1 s), child 2 had 30 s before the run and 2 s in it, then was
    # reaped: the parent's cutime grows by the child's whole 32 s.
    first = {1: ("spamd", 1 * tick, 0), 2: ("spamd", 30 * tick, 0)}
    last = {1: ("spamd", (1 + 32) * tick, 0), 3: ("spamd", 5 * tick, 0)}  # 3: born in the run
    assert sample.cpu_by_daemon(first, last) == {"spamd": 2.0 + 5.0}


def _shared(refused_retry: float):
    return loadgen.Shared(
        servers=["gw1"],
        rcpts=["alice@static-a.test"],
        mix={"ham": 1},
        greylist_source="",
        whitelisted_source="",
        from_domain="",
        retry_after=25.0,
        deadline=float("inf"),
        max_messages=1,
        refused_retry=refused_retry,
    )


@pytest.mark.parametrize(
    ("refused_retry", "outcome", "tries"),
    [(0.0, "error:ConnectionRefusedError", 1), (120.0, "accepted", 3)],
)
def test_a_refused_session_is_tried_again_only_when_asked(
    monkeypatch, refused_retry, outcome, tries
):
    answers = iter(["error:ConnectionRefusedError", "error:ConnectionRefusedError", "accepted"])
    calls = []

    def session(sh, kind, rng, n, steps):
        calls.append(kind)
        return next(answers), 250, "gw1", None

    monkeypatch.setattr(loadgen, "session", session)
    monkeypatch.setattr(loadgen.time, "sleep", lambda s: None)
    sh = _shared(refused_retry)
    loadgen.worker(sh, 1)
    assert len(calls) == tries
    assert [e[3] for e in sh.events] == [outcome]  # one session, its last outcome


def _proc_entry(root: Path, pid: int, comm: str, cmdline: str, ticks: tuple[int, ...]) -> None:
    d = root / str(pid)
    d.mkdir()
    # fields after "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", *map(str, ticks)]
    fields += ["20", "0", "1", "0", "0", "0", "25"]
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")


def test_what_init_reaps_is_counted_apart_from_init(tmp_path):
    sample = _load("sample")
    tick = sample.TICK
    # init's own 3 + 1 ticks; 40 + 20 left by orphans it reaped (sendmail's deliveries)
    _proc_entry(tmp_path, 1, "systemd", "/sbin/init", (3, 1, 40, 20))
    _proc_entry(tmp_path, 50, "sendmail", "sendmail: MTA: accepting connections", (5, 2, 7, 1))
    procs = sample.processes(str(tmp_path))
    assert procs[1][:2] == ("other", 4)
    assert procs[sample.ORPHANS][:2] == ("orphans", 60)
    assert procs[50][:2] == ("sendmail", 15)  # a daemon's own reaped children stay its own
    later = dict(procs)
    later[sample.ORPHANS] = ("orphans", 60 + 3 * tick, 0)
    assert sample.cpu_by_daemon(procs, later) == {"other": 0.0, "orphans": 3.0, "sendmail": 0.0}


MAGIC = """\
0.000          0          3          0  non-token data: bayes db version
0.000          0        201          0  non-token data: nspam
0.000          0        209          0  non-token data: nham
0.000          0        980          0  non-token data: ntokens
"""


def test_bayes_counts_from_sa_learn_magic():
    assert run.bayes_counts(MAGIC) == {"nspam": 201, "nham": 209}
    assert run.bayes_counts("") is None  # no store: no figure
    assert run.bayes_counts(MAGIC.replace(" 209 ", " x ")) is None


def test_report_shows_the_bayes_state():
    load = {"events": [], "start": 0.0, "end": 60.0, "deadline": 60.0, "concurrency": 1}
    f = run.figures(load, {}, {})
    f["bayes"] = {"nspam": 201, "nham": 209}
    out = io.StringIO()
    run.print_table(f, out)
    assert _row(out, "Bayes store at the start (spam / ham learnt)") == "201 / 209"
    f["bayes"] = None
    out = io.StringIO()
    run.print_table(f, out)
    assert _row(out, "Bayes store at the start (spam / ham learnt)") == "-"
