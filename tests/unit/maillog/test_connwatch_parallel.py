"""Pieces of a log read by several processes count exactly as one sequential scan."""

import gzip
import random
from datetime import timezone

import pytest

from passerelle.maillog import (
    Partial,
    ScanStats,
    SessionCounter,
    TimestampReader,
    merge_partials,
    read_chunks,
    scan_logs,
    split_range,
    window_end_offset,
)

from .smlog import NOW, session


def _write(path, lines):
    path.write_bytes(("\n".join(lines) + "\n").encode())


def _day(n=4000, start=NOW - 4 * 3600, span=4 * 3600, seed=7):
    """Sessions spread over ``span``; pids reused, long sessions crossing any boundary."""
    rnd = random.Random(seed)
    lines = []
    for i in range(n):
        ts = start + i * span / n
        pid = 3000 + rnd.randrange(40)  # pids reused often: sessions cross piece boundaries
        lines += session(ts, pid, f"198.51.100.{rnd.randrange(20)}", messages=rnd.randrange(1, 4))
        if i % 700 == 0:
            lines.append("\x00garbage relay=[ without a date")
    return lines


@pytest.mark.parametrize("bounds", [[0, 1, 2], [0, 37, 1000, 1001], None])
def test_consecutive_ranges_read_every_line_exactly_once(tmp_path, bounds):
    log = tmp_path / "maillog"
    lines = _day(300)
    _write(log, lines)
    size = log.stat().st_size
    if bounds is None:
        rnd = random.Random(1)
        bounds = sorted({0, *(rnd.randrange(size) for _ in range(30))})
    bounds = [*bounds, size]
    got = b"".join(
        b"".join(read_chunks(log, chunk_size=512, start=a, end=b))
        for a, b in zip(bounds, bounds[1:])
    )
    assert got == log.read_bytes()


def test_split_range():
    assert split_range(0, 100, 4, min_size=10) == [0, 25, 50, 75, 100]
    assert split_range(0, 100, 4, min_size=60) == [0, 100]  # too small to split
    assert split_range(10, 10, 3) == [10, 10]
    with pytest.raises(ValueError, match="parts must be >= 1"):
        split_range(0, 10, 0)


@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_parallel_scan_counts_like_the_sequential_scan(tmp_path, jobs):
    lines = _day()
    third = len(lines) // 3
    old = tmp_path / "maillog.2.gz"  # oldest
    old.write_bytes(gzip.compress(("\n".join(lines[:third]) + "\n").encode()))
    rot = tmp_path / "maillog.1"
    _write(rot, lines[third : 2 * third])
    log = tmp_path / "maillog"
    _write(log, lines[2 * third :])
    kw = dict(tz=timezone.utc, skip_stale=False, seek=False)
    seq = scan_logs([log], NOW - 5 * 3600, NOW, **kw)
    par = scan_logs([log], NOW - 5 * 3600, NOW, jobs=jobs, min_piece=20_000, **kw)
    assert sum(seq.counts.values()) > 1000
    assert par.counts == seq.counts
    assert par.stats.sessions == seq.stats.sessions
    assert par.stats.lines == seq.stats.lines == len(lines)
    assert par.stats.skipped == seq.stats.skipped > 0
    assert par.stats.files == seq.stats.files == [str(old), str(rot), str(log)]


def test_parallel_scan_of_the_last_hour_with_seek(tmp_path):
    log = tmp_path / "maillog"
    _write(log, _day(12000))
    seq = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc)
    par = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc, jobs=2, min_piece=50_000)
    assert par.counts == seq.counts and sum(par.counts.values()) > 500
    assert par.stats.seeked == seq.stats.seeked > 0


def test_merge_joins_a_session_cut_by_a_piece_boundary():
    a = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    b = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    a.firsts, b.firsts = {}, {}
    s = session(NOW - 1000, 4242, "192.0.2.9", messages=2)
    a.feed_lines(s[:2])  # STARTTLS + first from=
    b.feed_lines(s[2:])  # the rest of the same connection
    b.feed_lines(session(NOW - 100, 4242, "192.0.2.9"))  # pid reused 15 min later: new
    parts = [Partial(c.counts, c.stats, c.firsts, c._sessions) for c in (a, b)]
    m = merge_partials(parts)
    assert m.counts == {"192.0.2.9": 2}
    assert m.stats.sessions == 2


def test_merge_keeps_a_new_client_on_a_reused_pid():
    stats = ScanStats(sessions=1)
    p1 = Partial(
        {"192.0.2.1": 1},
        stats,
        {b"gw1 sm-mta[7": ("192.0.2.1", NOW - 10)},
        {b"gw1 sm-mta[7": ("192.0.2.1", NOW - 10)},
    )
    p2 = Partial(
        {"192.0.2.2": 1},
        ScanStats(sessions=1),
        {b"gw1 sm-mta[7": ("192.0.2.2", NOW - 5)},
        {b"gw1 sm-mta[7": ("192.0.2.2", NOW - 5)},
    )
    m = merge_partials([p1, p2])
    assert m.counts == {"192.0.2.1": 1, "192.0.2.2": 1} and m.stats.sessions == 2


def test_replay_of_an_old_hour_stops_reading_after_the_window(tmp_path):
    log = tmp_path / "maillog"
    _write(log, _day(12000, start=NOW - 6 * 3600, span=6 * 3600))
    until = NOW - 5 * 3600
    full = scan_logs(
        [log], until - 3600, until, now=NOW, tz=timezone.utc, seek=False, skip_stale=False
    )
    cut = scan_logs([log], until - 3600, until, now=NOW, tz=timezone.utc, skip_stale=False)
    assert cut.counts == full.counts and sum(cut.counts.values()) > 100
    assert cut.stats.bytes < log.stat().st_size / 3
    end = window_end_offset(log, until, TimestampReader(NOW, timezone.utc), 600)
    assert 0 < end < log.stat().st_size
    # never cut when the end of the file is unreadable
    bad = tmp_path / "bad"
    _write(bad, ["no timestamp relay=[192.0.2.1] " + "x" * 200] * 20000)
    assert (
        window_end_offset(bad, until, TimestampReader(NOW, timezone.utc), 600) == bad.stat().st_size
    )


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        scan_logs([tmp_path / "x"], 0, 1, jobs=0)
