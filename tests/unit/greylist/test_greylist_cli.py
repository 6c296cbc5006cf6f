import json
import time

import pytest

from passerelle.cli import main
from passerelle.greylist import cli as greylist_cli
from passerelle.greylist.policy import Timing, triplet_key
from passerelle.greylist.store import Triplet, open_store


def cfg_file(tmp_path, url=None, extra=""):
    p = tmp_path / "greylist.toml"
    url = url or f"sqlite:///{tmp_path}/g.sqlite"
    p.write_text(f'[greylist]\nstore = "{url}"\nhostname = "gw1"\n{extra}')
    return p


def test_check_config_ok(tmp_path, capsys):
    p = cfg_file(tmp_path)
    assert main(["greylist", "check-config", str(p)]) == 0
    assert capsys.readouterr().out == f"{p}: OK\n"


def test_check_config_error_names_key(tmp_path, capsys):
    p = cfg_file(tmp_path, extra='min_delay = "soon"\n')
    assert main(["greylist", "check-config", str(p)]) == 1
    assert "greylist.min_delay" in capsys.readouterr().err
    assert main(["greylist", "check-config", str(tmp_path / "missing.toml")]) == 1


def test_migrate_whitelist_purge_report(greylist_store_url, tmp_path, capsys):
    p = cfg_file(tmp_path, greylist_store_url)
    assert main(["greylist", "migrate", "--config", str(p)]) == 0
    assert "0 -> 1" in capsys.readouterr().out
    assert main(["greylist", "migrate", "--config", str(p)]) == 0
    assert capsys.readouterr().out == "schema version 1\n"

    assert (
        main(
            [
                "greylist",
                "whitelist",
                "add",
                "192.0.2.0/24",
                "--config",
                str(p),
                "--comment",
                "partner's relay",
            ]
        )
        == 0
    )
    assert main(["greylist", "whitelist", "add", "10.0.0.0/99", "--config", str(p)]) == 1
    assert (
        main(
            [
                "greylist",
                "whitelist",
                "add",
                "@partner.example",
                "--kind",
                "sender",
                "--config",
                str(p),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["greylist", "whitelist", "list", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "client\t192.0.2.0/24" in out and "partner's relay" in out
    assert "sender\t@partner.example" in out
    assert main(["greylist", "whitelist", "remove", "192.0.2.0/24", "--config", str(p)]) == 0
    assert main(["greylist", "whitelist", "remove", "192.0.2.0/24", "--config", str(p)]) == 1

    now = time.time()
    s = open_store(greylist_store_url)
    for i, (client, delay) in enumerate([("198.51.100.0/24", 2500), ("203.0.113.0/24", 7300)]):
        t = Triplet(triplet_key(client, f"s{chr(97 + i)}@x", "r@y"), client, "s@x", "r@y")
        s.decide(t, now - 10000, Timing())
        s.decide(t, now - 10000 + delay, Timing())
    t = Triplet(triplet_key("192.0.2.0/24", "n@x", "r@y"), "192.0.2.0/24", "n@x", "r@y")
    s.decide(t, now - 5000, Timing())
    s.add_stats([(int(now // 3600 * 3600), "whitelisted", "10.0.0.1 (trusted 10.0.0.0/8)", 7)])
    old = Triplet(triplet_key("a", "b", "c"), "a", "b", "c")
    s.decide(old, now - 20 * 86400, Timing())
    s.close()

    capsys.readouterr()
    assert main(["greylist", "report", "--config", str(p), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["whitelisted"] == [{"client": "10.0.0.1 (trusted 10.0.0.0/8)", "hits": 7}]
    assert {c["client"] for c in rep["came_back"]} == {"198.51.100.0/24", "203.0.113.0/24"}
    assert rep["never_retried"] == [{"client": "192.0.2.0/24", "triplets": 1}]
    d = rep["delays"]
    assert (d["count"], d["min"], d["max"], d["p50"]) == (2, 2500, 7300, 2500)
    assert sum(b["count"] for b in d["buckets"]) == 2
    assert main(["greylist", "report", "--config", str(p)]) == 0
    text = capsys.readouterr().out
    assert "Machines that came back (2)" in text and "p99" in text
    assert main(["greylist", "report", "--config", str(p), "--since", "bad"]) == 2

    assert main(["greylist", "purge", "--config", str(p)]) == 0
    assert "purged 1 triplets" in capsys.readouterr().out


# -- report --days: the daily history, on a SQLite file, at a fixed time -------------------

MIDNIGHT = 1_764_633_600  # 2025-12-02 00:00:00 UTC
DAY, H = 86400, 3600


def history_store(tmp_path, monkeypatch):
    """A SQLite store with two days of counters and triplets; the clock at 2025-12-02 10:00."""
    p = cfg_file(tmp_path)
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite")
    s.migrate()
    yesterday = MIDNIGHT - DAY
    s.add_stats(
        [
            (MIDNIGHT - 5 * DAY, "decision", "new", 50),  # before the days asked
            (yesterday + 9 * H, "decision", "new", 7),
            (yesterday + 9 * H, "decision", "early", 2),
            (yesterday + 15 * H, "decision", "delayed", 3),
            (yesterday + 15 * H, "whitelisted", "192.0.2.7 (client 192.0.2.7)", 4),
            (MIDNIGHT + 8 * H, "decision", "new", 1),
            (MIDNIGHT + 8 * H, "decision", "passed", 5),
        ]
    )
    a = Triplet(triplet_key("198.51.100.0/24", "a@x", "r@y"), "198.51.100.0/24", "a@x", "r@y")
    b = Triplet(triplet_key("203.0.113.0/24", "b@x", "r@y"), "203.0.113.0/24", "b@x", "r@y")
    c = Triplet(triplet_key("203.0.113.0/24", "c@x", "r@y"), "203.0.113.0/24", "c@x", "r@y")
    never = Triplet(triplet_key("192.0.2.0/24", "n@x", "r@y"), "192.0.2.0/24", "n@x", "r@y")
    for t, first, back in (
        (a, yesterday + 9 * H, yesterday + 9 * H + 2500),  # passes yesterday after 41m40s
        (b, MIDNIGHT - 2 * H, MIDNIGHT + 5 * H),  # first seen yesterday, passes today after 7h
        (c, MIDNIGHT + H, MIDNIGHT + 2 * H),  # same machine, passes today after 1h
    ):
        assert s.decide(t, first, Timing()).record.passed_at is None
        assert s.decide(t, back, Timing()).record.passed_at == back
    s.decide(never, MIDNIGHT + 3 * H, Timing())
    s.close()
    monkeypatch.setattr(greylist_cli, "clock", lambda: MIDNIGHT + 10 * H)
    return p


def test_report_days_text(tmp_path, monkeypatch, capsys):
    p = history_store(tmp_path, monkeypatch)
    assert main(["greylist", "report", "--config", str(p), "--days", "3"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        "Greylist history by UTC day (3 days, today included):\n"
        "date         delayed    passed  whitelisted  returning   delay p50   delay p90\n"
        "2025-11-30         0         0            0          0           -           -\n"
        "2025-12-01         9         3            4          1      41m40s      41m40s\n"
        "2025-12-02         1         5            0          1          1h          7h\n"
    )


def test_report_days_json(tmp_path, monkeypatch, capsys):
    p = history_store(tmp_path, monkeypatch)
    assert main(["greylist", "report", "--config", str(p), "--days", "2", "--format", "json"]) == 0
    h = json.loads(capsys.readouterr().out)
    assert (h["days"], h["since"], h["until"]) == (2, MIDNIGHT - DAY, MIDNIGHT + 10 * H)
    days = h["by_day"]
    assert [d["date"] for d in days] == ["2025-12-01", "2025-12-02"]
    assert [d["day"] for d in days] == [MIDNIGHT - DAY, MIDNIGHT]
    assert [d["decisions"] for d in days] == [
        {"new": 7, "early": 2, "delayed": 3},
        {"new": 1, "passed": 5},
    ]
    assert [(d["greylisted"], d["passed"], d["whitelisted"]) for d in days] == [
        (9, 3, 4),
        (1, 5, 0),
    ]
    assert [(d["returned"], d["came_back"], d["delays_sampled"]) for d in days] == [
        (1, 1, False),
        (1, 2, False),
    ]
    assert [(d["delays"]["count"], d["delays"]["p50"], d["delays"]["p90"]) for d in days] == [
        (1, 2500, 2500),
        (2, 3600, 25200),
    ]


@pytest.mark.parametrize("days", ["0", "61", "abc", "-1", "1.5", "", "٣", "9" * 5000])
def test_report_days_out_of_range_or_not_a_number(tmp_path, capsys, days):
    p = cfg_file(tmp_path)
    assert main(["greylist", "report", "--config", str(p), f"--days={days}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: --days: expected a whole number of days from 1 to 60: {days[:12]!r}\n"


def test_report_days_and_since_exclude_each_other(tmp_path, capsys):
    p = cfg_file(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["greylist", "report", "--config", str(p), "--since", "1h", "--days", "3"])
    assert exc.value.code == 2
    assert "--days: not allowed with argument --since" in capsys.readouterr().err


@pytest.fixture
def east_of_utc(monkeypatch):
    """The process's local time zone 9 hours east of UTC, put back afterwards."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_whitelist_add_takes_the_commands_clock_and_list_prints_utc_dates(
    tmp_path, monkeypatch, capsys, east_of_utc
):
    # 2025-12-02 23:30 UTC: already the 3rd in Tokyo, still the 2nd in UTC (the reports' day)
    monkeypatch.setattr(greylist_cli, "clock", lambda: MIDNIGHT + 23 * H + 1800)
    p = cfg_file(tmp_path)
    assert main(["greylist", "migrate", "--config", str(p)]) == 0
    assert main(["greylist", "whitelist", "add", "192.0.2.0/24", "--config", str(p)]) == 0
    s = open_store(f"sqlite:///{tmp_path}/g.sqlite")
    try:
        assert [row[3] for row in s.whitelist_list()] == [MIDNIGHT + 23 * H + 1800]
    finally:
        s.close()
    capsys.readouterr()
    assert main(["greylist", "whitelist", "list", "--config", str(p)]) == 0
    assert capsys.readouterr().out == "client\t192.0.2.0/24\t2025-12-02\t\n"
