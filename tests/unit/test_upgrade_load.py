"""bench/upgrade_load.py's verdict: a message accepted and never delivered is lost, a second
in which no gateway answered fails the proof, 4xx is retried (not lost), 5xx is refused."""

from __future__ import annotations

import json

from plugins import load

ul = load("bench/upgrade_load.py")


def probe(t, gw, ok):
    return {"k": "probe", "t": t, "gw": gw, "ok": ok, "err": ""}


def send(t, gw, tag, code):
    return {"k": "send", "t": t, "gw": gw, "tag": tag, "code": code, "reply": ""}


def test_availability_per_second_any_answer_counts():
    ev = [
        probe(100.0, "gw1", True),
        probe(100.5, "gw2", False),
        probe(100.9, "gw2", True),  # answered later in the same second
        probe(101.2, "gw1", False),
        probe(101.3, "gw2", True),
        probe(102.1, "gw1", True),  # gw2 not probed in second 2: left out
        probe(102.2, "other", False),
    ]
    assert ul.availability(ev, ("gw1", "gw2")) == {
        0: {"gw1": True, "gw2": True},
        1: {"gw1": False, "gw2": True},
        2: {"gw1": True},
    }


def test_one_gateway_down_at_a_time_is_ok():
    ev = [
        probe(0.0, "gw1", False),
        probe(0.1, "gw2", True),
        probe(1.0, "gw1", True),
        probe(1.1, "gw2", False),
        send(0.2, "gw1", "t-1", 421),  # gw1 restarting: tried gw2 next, like an MTA
        send(0.3, "gw2", "t-1", 250),
        send(1.2, "gw2", "t-2", 0),  # no answer
        send(1.3, "gw1", "t-2", 250),
        {"k": "end", "t": 2.0, "pending": []},
    ]
    r = ul.verdict(ev, {"t-1", "t-2"})
    assert r.ok, ul.render(r)
    assert r.both_down == [] and r.down == {"gw1": 1, "gw2": 1}
    assert r.accepted == {"gw1": 1, "gw2": 1} and r.delivered == 2 and r.generated == 2
    assert ul.render(r).endswith("OK: nothing lost, one gateway always answered\n")


def test_both_down_in_one_second_fails():
    ev = [probe(0.0, "gw1", True), probe(0.1, "gw2", True)]
    ev += [probe(3.2, "gw1", False), probe(3.6, "gw2", False)]
    r = ul.verdict(ev, set())
    assert r.both_down == [3] and not r.ok
    assert "seconds with NO gateway answering: 1 (at 3 s)" in ul.render(r)


def test_accepted_and_not_delivered_is_lost():
    ev = [send(0, "gw1", "t-1", 250), send(0, "gw2", "t-2", 250), send(1, "gw1", "t-3", 250)]
    r = ul.verdict(ev, {"t-1", "t-3", "unrelated"})
    assert r.lost == ["t-2"] and not r.ok
    assert "lost (accepted, not delivered): 1 t-2" in ul.render(r)


def test_5xx_is_refused_and_never_accepted_is_reported():
    ev = [
        send(0, "gw1", "t-1", 554),
        send(0, "gw2", "t-1", 554),
        send(1, "gw1", "t-2", 451),
        send(1, "gw2", "t-2", 451),
    ]
    r = ul.verdict(ev, set())
    assert r.refused == ["t-1"] and r.never_accepted == ["t-2"] and not r.ok


def test_refused_once_then_accepted_elsewhere_is_not_refused():
    ev = [send(0, "gw1", "t-1", 550), send(0, "gw2", "t-1", 250)]
    r = ul.verdict(ev, {"t-1"})
    assert r.refused == [] and r.ok


def test_read_events_skips_a_cut_line_and_noise():
    lines = [json.dumps(probe(0, "gw1", True)), "Error: something", '{"k": "send", "t": 1', ""]
    assert ul.read_events(lines) == [probe(0, "gw1", True)]


def test_tags_in_a_mailbox():
    box = (
        "From dave@internet.test Mon Dec  1 19:30:01 2026\n"
        "Subject: upgrade-load-68a1f2-17\n\nUpgrade load message upgrade-load-68a1f2-17 via gw1\n"
        "Subject: upgrade-load-68a1f2-2\n"
    )
    assert set(ul.TAG_RE.findall(box)) == {"upgrade-load-68a1f2-17", "upgrade-load-68a1f2-2"}


def test_sender_program_compiles():
    compile(ul.SENDER_PROGRAM, "sender", "exec")
