"""Pure parts of bench/fleet: the mix parser, the log collector, the figures."""

from __future__ import annotations

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
