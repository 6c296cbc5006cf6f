"""The daily report: aggregation, HTML with inline SVG, file and mail."""

import email
import gzip
import os
import re
from datetime import date, datetime, timezone

import pytest
from maillog.smlog import session

from passerelle.cli import main
from passerelle.maillog import TimestampReader
from passerelle.reports import report
from passerelle.reports.config import ReportConfig, parse_config
from passerelle.reports.events import Tally, parse_line

from . import opslog

DAY = date(2026, 11, 26)
START = datetime(2026, 11, 26, tzinfo=timezone.utc).timestamp()
END = START + 86400
NOW = END + 300


def tally_of(lines):
    t = Tally()
    times = TimestampReader(NOW, timezone.utc)
    for line in lines:
        e = parse_line(line.encode(), times)
        assert e is not None, line
        t.add(e)
    return t


def day_lines():
    lines = []
    # 10 clients of a /24 greylisted at 08:00, all come back after 42 min: a suggestion
    for i in range(10):
        lines.append(opslog.gl(START + 8 * 3600 + i, "new", ip=f"198.51.100.{i}"))
        lines.append(
            opslog.gl(START + 8 * 3600 + 2520 + i, "delayed", ip=f"198.51.100.{i}", delay="42m")
        )
    # a sender that never retries (one new, no delayed): not suggested
    lines += [opslog.gl(START + 9 * 3600 + i, "new", ip="203.0.113.50") for i in range(5)]
    # a group that came back once out of four: not suggested
    lines += [opslog.gl(START + 10 * 3600 + i, "new", ip="192.0.2.7") for i in range(4)]
    lines.append(opslog.gl(START + 13 * 3600, "delayed", ip="192.0.2.7", delay="5h"))
    lines += [opslog.gl(START + 11 * 3600 + i, "passed", ip="192.0.2.8") for i in range(7)]
    lines += [opslog.gl(START + 12 * 3600 + i, "trusted", ip="10.1.2.3") for i in range(3)]
    tiers = ["none"] * 50 + ["LOW"] * 6 + ["MEDIUM"] * 3 + ["HIGH"] * 7 + ["unscanned"]
    lines += [
        opslog.spam(START + 14 * 3600 + i, t, ip="203.0.113.9" if t == "HIGH" else "192.0.2.8")
        for i, t in enumerate(tiers)
    ]
    lines += [opslog.av(START + 15 * 3600 + i, "clean") for i in range(60)]
    lines += [opslog.av(START + 16 * 3600, "virus", sig="Win.Test.EICAR_HDB-1")] * 2
    lines.append(opslog.av(START + 16 * 3600, "virus-reject", sig="Doc.Malware.Agent-1"))
    lines.append(opslog.cw(START + 17 * 3600, "198.51.100.66", 3100))
    lines.append(opslog.cw(START + 17 * 3600, "192.0.2.10", 620, blocked=False))
    return lines


CFG = ReportConfig(top_clients=5, suggest_min_passes=3, suggest_min_ratio=0.9)


def build(lines=None, sessions=None):
    t = tally_of(lines if lines is not None else day_lines())
    sessions = sessions if sessions is not None else {"198.51.100.66": 3100, "192.0.2.8": 7}
    return report.build(t, sessions, "gw1", DAY.isoformat(), START, END, CFG)


def test_aggregation():
    r = build()
    assert r.greylist["new"] == 19 and r.greylist["delayed"] == 11
    assert r.greylist["passed"] == 7 and r.greylist["trusted"] == 3 and r.greylist["early"] == 0
    assert r.delays["count"] == 11
    assert [b["count"] for b in r.delays["buckets"]] == [10, 0, 0, 0, 1, 0]  # 42m, 5h
    assert r.suggestions == [
        {
            "group": "198.51.100.0/24",
            "came_back": 10,
            "greylisted": 10,
            "ratio": 1.0,
            "max_delay": 2520.0,
        }
    ]
    assert r.spam == {"none": 50, "LOW": 6, "MEDIUM": 3, "HIGH": 7, "unscanned": 1, "tempfail": 0}
    assert r.spam_clients[0] == ("203.0.113.9", 7)
    assert r.antivirus["virus"] == 3 and r.antivirus["clean"] == 60
    assert r.viruses == [("Win.Test.EICAR_HDB-1", 2), ("Doc.Malware.Agent-1", 1)]
    assert len(r.greylist_hourly) == 24
    assert r.greylist_hourly[8] == {"greylisted": 10, "delayed": 10, "accepted": 0}
    assert r.greylist_hourly[12]["accepted"] == 3
    assert r.spam_hourly[14]["HIGH"] == 7
    assert r.top_clients == [("198.51.100.66", 3100), ("192.0.2.8", 7)]
    assert [(c["ip"], c["action"]) for c in r.connwatch] == [
        ("198.51.100.66", "block"),
        ("192.0.2.10", "alert"),
    ]


def test_suggestion_thresholds():
    groups = {"a": [3, 3], "b": [2, 2], "c": [9, 10], "d": [8, 10], "e": [5, 0]}
    got = report.suggestions(groups, {"a": 60.0}, min_passes=3, min_ratio=0.9)
    assert [s["group"] for s in got] == ["c", "a"]


def test_html_holds_the_figures_and_nothing_external():
    r = build()
    page = report.render_html(r, timezone.utc, generated=NOW)
    assert page.startswith("<!DOCTYPE html>")
    assert "Passerelle daily report: gw1, 2026-11-26" in page
    assert "<b>40</b><span>greylist decisions</span>" in page
    assert "<b>19</b><span>delayed (451)</span>" in page
    assert "<b>11</b><span>came back</span>" in page
    assert "<b>7</b><span>spam HIGH (tagged)</span>" in page
    assert "<b>3</b><span>viruses</span>" in page
    assert '<td>Win.Test.EICAR_HDB-1</td><td class="n">2</td>' in page
    assert '<td>198.51.100.0/24</td><td class="n">10</td>' in page
    assert "198.51.100.66" in page and "3100" in page
    assert page.count("<svg ") >= 7
    assert "Delay before the retry was accepted (11 messages)" in page
    # self-contained: no script, no external resource
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert set(re.findall(r"https?://[^\"' )]+", page)) == {"http://www.w3.org/2000/svg"}


def test_html_escapes_what_comes_from_the_log():
    lines = [opslog.av(START + 60, "virus", sig="<script>alert(1)</script>")]
    page = report.render_html(build(lines, {}), timezone.utc)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_empty_day_renders():
    page = report.render_html(build([], {}), timezone.utc)
    assert "<b>0</b><span>greylist decisions</span>" in page and "none" in page


def test_svg_bars_scale():
    svg = report.svg_bars(["a", "b"], [5, 10], "t")
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights[1] == pytest.approx(2 * heights[0])


def test_collect_day_reads_rotations_and_keeps_the_day_only(tmp_path):
    log = tmp_path / "mail.log"
    before = [opslog.gl(START - 60, "new", ip="192.0.2.200")]
    during = [opslog.gl(START + 3600, "new", ip="192.0.2.1")]
    during += session(START + 7200, 4000, "192.0.2.1")
    after = [opslog.gl(END + 10, "new", ip="192.0.2.201")]
    with gzip.open(tmp_path / "mail.log.2.gz", "wt") as fh:
        fh.write("\n".join(before) + "\n")
    (tmp_path / "mail.log.1").write_text("\n".join(during) + "\n")
    log.write_text("\n".join(after) + "\n")
    for f in ("mail.log.2.gz", "mail.log.1", "mail.log"):
        os.utime(tmp_path / f, (NOW, NOW))
    cfg = parse_config({"ops": {"logs": [str(log)], "hostname": "gw1"}})
    tally, sessions, start, end, notes = report.collect_day(cfg, DAY, NOW, timezone.utc)
    assert (start, end) == (START, END)
    assert tally.by_label("greylist") == {"new": 1}
    assert sessions == {"192.0.2.1": 1}
    assert notes == []


def test_deliver_writes_and_mails_multipart(tmp_path):
    cfg = parse_config(
        {
            "ops": {"hostname": "gw1"},
            "report": {
                "output_dir": str(tmp_path / "reports"),
                "mail_to": ["postmaster@example.edu"],
                "keep_days": 30,
            },
        }
    )
    old = tmp_path / "reports" / "2025-01-01.html"
    old.parent.mkdir()
    old.write_text("old")
    os.utime(old, (NOW - 40 * 86400, NOW - 40 * 86400))
    r = build()
    page = report.render_html(r, timezone.utc)
    sent = []

    def mailer(argv, msg):
        sent.append((argv, msg))
        return 0, ""

    done = report.deliver(cfg, r, page, mailer=mailer, now=NOW)
    assert done.path == tmp_path / "reports" / "2026-11-26.html"
    assert done.path.read_text() == page and not old.exists()
    assert done.mailed == ["postmaster@example.edu"] and done.errors == []
    argv, raw = sent[0]
    assert argv == ["/usr/sbin/sendmail", "-oi", "-t"]
    msg = email.message_from_bytes(raw)
    assert msg["To"] == "postmaster@example.edu"
    assert msg["Subject"] == "[passerelle] daily report gw1 2026-11-26"
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p for p in msg.walk() if not p.is_multipart()}
    assert "Spam: none 50, LOW 6" in parts["text/plain"].get_payload(decode=True).decode()
    assert "<svg " in parts["text/html"].get_payload(decode=True).decode()
    failed = report.deliver(cfg, r, page, mailer=lambda argv, msg: (75, "queue full"))
    assert failed.errors == ["mail to postmaster@example.edu failed (75): queue full"]


def test_cli_report_daily(tmp_path, capsys):
    log = tmp_path / "mail.log"
    log.write_text("\n".join(day_lines()) + "\n")
    toml = tmp_path / "ops.toml"
    toml.write_text(f'[ops]\nhostname = "gw1"\nlogs = ["{log}"]\n')
    assert main(["report", "daily", "--config", str(toml), "--date", "2026-11-26",
                 "--output", str(tmp_path / "out"), "--no-mail"]) == 0  # fmt: skip
    out = tmp_path / "out" / "2026-11-26.html"
    assert capsys.readouterr().out.strip() == str(out)
    assert "<svg " in out.read_text()
    assert main(["report", "daily", "--config", str(toml), "--date", "26/11"]) == 2
