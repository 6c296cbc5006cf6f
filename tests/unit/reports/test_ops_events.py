"""The milters' decision lines read back from the mail log."""

from datetime import timezone

import pytest
from maillog.smlog import NOW, isots, trad

from passerelle.maillog import TimestampReader
from passerelle.reports.events import Tally, parse_line, scan_events

from . import opslog

T = NOW - 600


def ev(line):
    return parse_line(line.encode(), TimestampReader(NOW, timezone.utc))


@pytest.mark.parametrize(
    "reason", ["new", "early", "restart", "passed", "trusted", "client", "auth", "auto"]
)
def test_greylist_reasons(reason):
    e = ev(opslog.gl(T, reason, ip="198.51.100.20"))
    assert (e.area, e.label, e.client, e.ts) == ("greylist", reason, "198.51.100.20", T)
    assert e.group == "198.51.100.0/24"


def test_greylist_delay_and_store_error():
    e = ev(opslog.gl(T, "delayed", delay="1h2m5s"))
    assert (e.label, e.detail) == ("delayed", str(3600 + 125))
    e = ev(opslog.gl(T, "store-error", ip="2001:db8::7"))
    assert (e.label, e.client) == ("store-error", "2001:db8::7")


def test_greylist_sender_holding_reason_text_is_not_fooled():
    line = opslog.gl(T, "new").replace("news@example.net", "x reason=passed@example.net")
    assert ev(line).label == "new"


@pytest.mark.parametrize("tier", ["none", "LOW", "MEDIUM", "HIGH", "unscanned", "tempfail"])
def test_spam_tiers(tier):
    e = ev(opslog.spam(T, tier, ip="203.0.113.5"))
    assert (e.area, e.label, e.client) == ("spam", tier, "203.0.113.5")


@pytest.mark.parametrize(
    ("what", "label", "sig"),
    [
        ("clean", "clean", ""),
        ("virus", "virus", "Win.Test.EICAR_HDB-1"),
        ("virus-reject", "virus", "Win.Test.EICAR_HDB-1"),
        ("rule", "rule", ""),
        ("held", "held", ""),
        ("unscanned", "unscanned", ""),
        ("error", "error", ""),
    ],
)
def test_antivirus_results(what, label, sig):
    e = ev(opslog.av(T, what, ip="192.0.2.99", sig="Win.Test.EICAR_HDB-1"))
    assert (e.area, e.label, e.client, e.detail) == ("antivirus", label, "192.0.2.99", sig)


def test_connwatch_block_and_alert():
    b = ev(opslog.cw(T, "198.51.100.7", 3000))
    assert (b.area, b.label, b.client, b.count, b.group) == (
        "connwatch",
        "block",
        "198.51.100.7",
        3000,
        "inbound",
    )
    assert ev(opslog.cw(T, "192.0.2.10", 600, blocked=False)).label == "alert"


@pytest.mark.parametrize(
    "line",
    [
        "Nov 27 10:50:00 gw1 sm-mta[1]: 4AR: from=<a@b>, relay=[192.0.2.1]",
        "Nov 27 10:50:00 gw1 passerelle-greylist[1]: greylist milter starting on unix:/x",
        "Nov 27 10:50:00 gw1 passerelle-spam[1]: spamd 127.0.0.1:783, max_size 1",
        "Nov 27 10:50:00 gw1 passerelle-antivirus[1]: garbage -> ",
        "Nov 27 10:50:00 gw1 passerelle-connwatch[1]: connwatch: 1.2.3.4 unblocked (expired)",
        "garbage passerelle-greylist[1]: greylisted client=1 reason=new",
        "Nov 27 10:50:00 gw1 logger: passerelle-greylist[1]: greylisted client=1 reason=new",
        "Nov 27",
        "",
    ],
)
def test_other_lines_are_not_events(line):
    assert ev(line) is None


def test_iso_timestamps():
    line = opslog.spam(T, "HIGH").replace(trad(T), isots(T))
    assert ev(line).ts == T


def test_scan_events_and_tally():
    lines = [
        opslog.gl(T, "new", ip="192.0.2.1"),
        "Nov 27 10:50:01 gw1 sm-mta[9]: 4AR: to=<u@x>, relay=store1 [10.0.0.1], stat=Sent",
        opslog.gl(T + 2500, "delayed", ip="192.0.2.1", delay="41m40s"),
        opslog.gl(T + 2600, "passed", ip="192.0.2.1"),
        opslog.spam(T, "HIGH", ip="203.0.113.9"),
        opslog.spam(T + 1, "MEDIUM", ip="203.0.113.9"),
        opslog.av(T, "virus", sig="Eicar-Signature"),
        opslog.cw(T, "198.51.100.7", 3000),
    ]
    buf = ("\n".join(lines)).encode()  # last line without newline
    t = Tally()
    for e in scan_events(buf, TimestampReader(NOW + 4000, timezone.utc)):
        t.add(e)
    assert t.by_label("greylist") == {"delayed": 1, "new": 1, "passed": 1}
    assert t.total("greylist") == 3 and t.total("spam", "HIGH") == 1
    assert t.delays == [2500.0]
    assert t.groups == {"192.0.2.0/24": [1, 1]}
    assert t.max_delay == {"192.0.2.0/24": 2500.0}
    assert t.viruses == {"Eicar-Signature": 1}
    assert t.spam_clients == {"203.0.113.9": 2}
    assert [e.client for e in t.connwatch] == ["198.51.100.7"]
    assert sum(t.hourly.values()) == 7
