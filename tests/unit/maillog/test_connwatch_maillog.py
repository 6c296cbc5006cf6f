import gzip
import os
from datetime import datetime, timezone

import pytest

from passerelle.maillog import (
    SessionCounter,
    TimestampReader,
    parse_ip,
    read_chunks,
    rotated_files,
    scan_logs,
)

from .smlog import NOW, isots, session, trad

T = NOW - 600  # inside the last hour


def count(lines, since=NOW - 3600, until=NOW, **kw):
    c = SessionCounter(since, until, tz=timezone.utc, **kw)
    c.feed_lines(lines)
    return c


# -- each kind of line ---------------------------------------------------------------------
REAL_LINES = {
    "from": "{t} gw1 sm-mta[2301]: 4ARA01x1002301: from=<alice@example.net>, size=5120, "
    "class=0, nrcpts=1, msgid=<abc@example.net>, bodytype=8BITMIME, proto=ESMTPS, "
    "daemon=MTA, tls_verify=NO, auth=NONE, relay=smtp.example.net [192.0.2.11]",
    "from_nrcpts0": "{t} gw1 sm-mta[2302]: 4ARA01x2002302: from=<bob@example.org>, size=0, "
    "class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=[192.0.2.12]",
    "check_relay": "{t} gw1 sendmail[2303]: NOQUEUE: ruleset=check_relay, "
    "arg1=dyn.example.com, arg2=192.0.2.13, relay=dyn.example.com [192.0.2.13], "
    "reject=550 5.7.1 Mail from 192.0.2.13 refused",
    "check_rcpt": "{t} gw1 sm-mta[2304]: 4ARA01x4002304: ruleset=check_rcpt, "
    "arg1=<x@elsewhere.example>, relay=client.example.com [192.0.2.14], "
    "reject=550 5.7.1 <x@elsewhere.example>... Relaying denied",
    "check_mail": "{t} gw1 sm-mta[2305]: 4ARA01x5002305: ruleset=check_mail, "
    "arg1=<a@nxdomain.example>, relay=[192.0.2.15], reject=553 5.1.8 <a@nxdomain.example>"
    "... Domain of sender address a@nxdomain.example does not exist",
    "starttls": "{t} gw1 sm-mta[2306]: STARTTLS=server, relay=tls.example.net [192.0.2.16], "
    "version=TLSv1.3, verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
    "auth": "{t} gw1 sm-mta[2307]: AUTH=server, relay=laptop.example.edu [192.0.2.17], "
    "authid=jdoe, mech=PLAIN, bits=0",
    "did_not_issue": "{t} gw1 sm-mta[2308]: 4ARA01x8002308: scanner.example.com "
    "[192.0.2.18] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    "did_not_issue_noname": "{t} gw1 sendmail[2309]: 4ARA01x9002309: [192.0.2.19] did not "
    "issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    "lost_input": "{t} gw1 sm-mta[2310]: 4ARA01xA002310: lost input channel from "
    "bad.example.com [192.0.2.20] to MTA after rcpt",
    "forged": "{t} gw1 sm-mta[2312]: 4ARA01xC002312: from=<a@b.example>, size=10, class=0, "
    "nrcpts=1, proto=SMTP, daemon=MTA, relay=[192.0.2.22] (may be forged)",
    "forged_named": "{t} gw1 sm-mta[2313]: NOQUEUE: ruleset=check_relay, arg1=fake.example, "
    "arg2=192.0.2.23, relay=fake.example [192.0.2.23] (may be forged), reject=550 5.7.1 no",
    "ipv6": "{t} gw1 sm-mta[2314]: 4ARA01xE002314: from=<a@v6.example>, size=100, class=0, "
    "nrcpts=1, proto=ESMTP, daemon=MTA, relay=mx.v6.example [IPv6:2001:db8::25]",
    "ipv6_did_not_issue": "{t} gw1 sm-mta[2315]: 4ARA01xF002315: [IPv6:2001:db8:0:0::26] did "
    "not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    "ipv4_mapped": "{t} gw1 sm-mta[2316]: STARTTLS=server, relay=m.example "
    "[IPv6:::ffff:192.0.2.27], version=TLSv1.2, verify=NO, cipher=ECDHE, bits=256/256",
}
EXPECTED = {
    "from": "192.0.2.11",
    "from_nrcpts0": "192.0.2.12",
    "check_relay": "192.0.2.13",
    "check_rcpt": "192.0.2.14",
    "check_mail": "192.0.2.15",
    "starttls": "192.0.2.16",
    "auth": "192.0.2.17",
    "did_not_issue": "192.0.2.18",
    "did_not_issue_noname": "192.0.2.19",
    "lost_input": "192.0.2.20",
    "forged": "192.0.2.22",
    "forged_named": "192.0.2.23",
    "ipv6": "2001:db8::25",
    "ipv6_did_not_issue": "2001:db8::26",
    "ipv4_mapped": "192.0.2.27",
}


@pytest.mark.parametrize("kind", sorted(REAL_LINES))
@pytest.mark.parametrize("stamp", [trad, isots])
def test_each_client_line_counts_its_ip(kind, stamp):
    c = count([REAL_LINES[kind].format(t=stamp(T))])
    assert c.counts == {EXPECTED[kind]: 1}
    assert c.stats.skipped == 0


NOT_CLIENT = [
    # delivery: relay= is the next hop
    "{t} gw1 sm-mta[3001]: 4ARA01x1003001: to=<u@dept.example.edu>, delay=00:00:02, "
    "xdelay=00:00:01, mailer=esmtp, pri=120530, relay=store1.example.edu. [10.1.2.3], "
    "dsn=2.0.0, stat=Sent (Ok: queued as 4Zx)",
    "{t} gw1 sm-mta[3002]: STARTTLS=client, relay=mx.remote.example., version=TLSv1.3, "
    "verify=FAIL, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
    "{t} gw1 sm-mta[3003]: 4ARA01x3003003: ruleset=check_compat, arg1=<a@b>, arg2=<c@d>, "
    "relay=mx.remote.example [198.51.100.3], reject=550 no",
    # local submission
    "{t} gw1 sendmail[3004]: 4ARA01x4003004: from=root, size=312, class=0, nrcpts=1, "
    "msgid=<x@gw1>, relay=root@localhost",
    "{t} gw1 sm-msp-queue[3005]: 4ARA01x5003005: from=<a@b>, relay=[198.51.100.5]",
    # other programs quoting sendmail lines
    "{t} gw1 spamd[3006]: spamd: connection from localhost [::1]:44 relay=[198.51.100.6]",
    "{t} gw1 sm-mta[3007]: 4ARA01x7003007: Milter: to=<a@b>, reject=451 4.7.1 Greylisted",
    "{t} gw1 sm-mta[3008]: 4ARA01x8003008: Milter insert (1): header: X-Delayed: 40m",
    "{t} gw1 sm-mta[3009]: 4ARA01x9003009: collect: I/O error on connection from h.example, "
    "from=<a@b.example>",
    "{t} gw1 sm-mta[3010]: NOQUEUE: h.example [192.0.2.21]: possible SMTP attack: "
    "command=AUTH, count=3",
]


@pytest.mark.parametrize("line", NOT_CLIENT)
def test_lines_that_are_not_about_a_client_are_ignored(line):
    c = count([line.format(t=trad(T))])
    assert c.counts == {}
    assert c.stats.skipped == 0


def test_rejecting_connections_is_noted_without_a_client():
    c = count([f"{trad(T)} gw1 sm-mta[900]: rejecting connections on daemon MTA: load average: 42"])
    assert c.counts == {}
    assert c.stats.refusing == 1


# -- sessions ------------------------------------------------------------------------------
def test_messages_of_one_session_count_once():
    c = count(session(T, 4242, "198.51.100.1", messages=5))
    assert c.counts == {"198.51.100.1": 1}
    assert c.stats.events == 6  # STARTTLS + 5 from=; to= ignored


def test_sessions_are_told_apart_by_pid_host_and_ip():
    lines = (
        session(T, 100, "198.51.100.1")
        + session(T, 101, "198.51.100.1")
        + session(T, 100, "198.51.100.1", host="gw2")  # same pid, other gateway
        + session(T + 1, 100, "198.51.100.2")  # pid reused by another client
        + session(T + 2, 100, "198.51.100.1")  # ... and by the first one again
    )
    c = count(lines)
    assert c.counts == {"198.51.100.1": 4, "198.51.100.2": 1}


def test_same_pid_same_ip_after_the_gap_is_a_new_session():
    lines = session(T - 1200, 77, "198.51.100.1") + session(T, 77, "198.51.100.1")
    assert count(lines).counts == {"198.51.100.1": 2}
    assert count(lines, session_gap=1800).counts == {"198.51.100.1": 1}


def test_session_table_is_pruned():
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc, session_gap=10)
    c._prune_min = c._prune_at = 100
    lines = []
    for i in range(1000):
        lines += session(NOW - 3000 + i * 2, 10000 + i, f"198.51.{i // 256}.{i % 256}")
    c.feed("\n".join(lines).encode())
    assert sum(c.counts.values()) == 1000
    assert len(c._sessions) < 300


# -- timestamps and window -----------------------------------------------------------------
@pytest.mark.parametrize("stamp", [trad, isots])
def test_window_boundaries(stamp):
    lines = []
    for pid, ts in ((1, NOW - 3600), (2, NOW - 3599), (3, NOW), (4, NOW + 1)):
        lines += session(ts, pid, f"198.51.100.{pid}")
    c = count(lines)
    assert c.counts == {"198.51.100.2": 1, "198.51.100.3": 1}
    assert c.stats.out_of_window == 4  # STARTTLS + from= of pids 1 and 4


def test_window_is_relative_to_the_injected_clock():
    lines = session(NOW - 5400, 1, "198.51.100.1") + session(NOW - 60, 2, "198.51.100.2")
    assert count(lines).counts == {"198.51.100.2": 1}
    earlier = NOW - 3600
    assert count(lines, since=earlier - 3600, until=earlier).counts == {"198.51.100.1": 1}


def test_iso_timestamps_with_offsets_and_fractions():
    base = "gw1 sm-mta[5]: NOQUEUE: ruleset=check_relay, arg1=[198.51.100.9], "
    base += "arg2=198.51.100.9, relay=[198.51.100.9], reject=550 no"
    # 12:30+01:00 is 11:30Z: in the future; 11:30+01:00 is 10:30Z: in the window
    assert count([f"2026-11-27T12:30:00.5+01:00 {base}"]).counts == {}
    assert count([f"2026-11-27T11:30:00.123456+01:00 {base}"]).counts == {"198.51.100.9": 1}
    assert count([f"2026-11-27T10:30:00Z {base}"]).counts == {"198.51.100.9": 1}
    assert count([f"2026-11-27T10:30:00 {base}"]).counts == {"198.51.100.9": 1}  # tz=UTC


def test_year_rollover_of_traditional_timestamps():
    now = datetime(2027, 1, 1, 0, 20, tzinfo=timezone.utc).timestamp()
    r = TimestampReader(now, timezone.utc)
    dec31 = datetime(2026, 12, 31, 23, 50, tzinfo=timezone.utc).timestamp()
    assert r.traditional(b"Dec 31 23:50:00") == dec31
    assert (
        r.traditional(b"Jan  1 00:10:00")
        == datetime(2027, 1, 1, 0, 10, tzinfo=timezone.utc).timestamp()
    )
    lines = [
        "Dec 31 23:50:00 gw1 sm-mta[1]: 4AB: from=<a@b>, size=1, relay=[198.51.100.1]",
        "Jan  1 00:10:00 gw1 sm-mta[2]: 4AC: from=<a@b>, size=1, relay=[198.51.100.2]",
    ]
    c = SessionCounter(now - 3600, now, tz=timezone.utc)
    c.feed_lines(lines)
    assert c.counts == {"198.51.100.1": 1, "198.51.100.2": 1}


def test_feb_29_read_in_a_non_leap_year_is_last_year():
    now = datetime(2029, 3, 1, tzinfo=timezone.utc).timestamp()
    assert TimestampReader(now, timezone.utc).traditional(b"Feb 29 12:00:00") == (
        datetime(2028, 2, 29, 12, tzinfo=timezone.utc).timestamp()
    )


# -- garbage -------------------------------------------------------------------------------
GARBAGE = [
    b"",
    b"\x00\x00\x00\x00relay=\x00",
    b"\xff\xfe garbage relay= [",
    b"relay=",
    b"Nov 27 10:50:00 gw1 sm-mta[12]: 4AB: from=<a@b>, size=1, relay=host [198.51.",
    b"Nov 27 10:50:00 gw1 sm-mta[13]: 4AB: from=<a@b>, size=1, relay=host [not-an-ip]",
    b"Nov 27 10:50:00 gw1 sm-mta[14]: 4AB: from=<a@b>, size=1, rel",
    b"Nov 27 10:50:00 gw1 sm-mta[15]: 4AB: from=<a@b>, size=1",
    b"Zzz 27 10:50:00 gw1 sm-mta[16]: 4AB: from=<a@b>, relay=[198.51.100.16]",
    b"Nov 99 10:50:00 gw1 sm-mta[17]: 4AB: from=<a@b>, relay=[198.51.100.17]",
    b"2026-13-45T99:00:00Z gw1 sm-mta[18]: 4AB: from=<a@b>, relay=[198.51.100.18]",
    b"Nov 27 10:50:00 gw1 sm-mta[19 4AB: from=<a@b>, relay=[198.51.100.19]",
    b"Nov 27 10:50:00 gw1 sm-mta[20]: 4AB: [198.51.100.20 did not issue MAIL during connection",
    b"Nov 27 10:50:00 gw1 sm-mta[21]: lost input channel from nowhere",
    b"Nov 27 10:50:00",
    b"2026",
]


def test_garbage_and_truncated_lines_are_skipped_never_fatal():
    good = session(T, 1, "198.51.100.1")
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    c.feed(b"\n".join([*GARBAGE, *(g.encode() for g in good), b"\x00" * 50]))
    assert c.counts == {"198.51.100.1": 1}
    # 11 garbage lines contain relay= or a client phrase; the others are not even parsed
    assert c.stats.skipped == 11
    assert c.stats.lines == len(GARBAGE) + len(good) + 1


@pytest.mark.parametrize(
    "tail",
    [b"relay=", b"relay=host", b"relay=host ", b"relay=host [", b"relay=[", b"relay=[1.2.3.4"],
)
def test_line_truncated_at_the_end_of_the_buffer(tail):
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    c.feed(b"Nov 27 10:50:00 gw1 sm-mta[12]: 4AB: from=<a@b>, size=1, " + tail)
    assert c.counts == {}
    assert c.stats.skipped == 1


@pytest.mark.parametrize("data", [b"]: from=relay=", b"x]: from=relay=[", b"1]: from=relay=[1]"])
def test_tiny_garbage_at_the_end_of_the_buffer(data):
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    c.feed(data)
    assert c.counts == {} and c.stats.skipped == 1


def test_parse_ip():
    assert parse_ip(b"IPv6:2001:DB8:0::1") == "2001:db8::1"
    assert parse_ip("ipv6:::ffff:192.0.2.1") == "192.0.2.1"
    assert parse_ip(b"192.0.2.300") is None
    assert parse_ip(b"\xff") is None


# -- files ---------------------------------------------------------------------------------
def _write(path, lines, mtime=NOW, gz=False):
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_rotated_and_gzip_logs_are_read_oldest_first(tmp_path):
    log = tmp_path / "maillog"
    # one session split over a rotation: counted once because the files are read in order
    _write(tmp_path / "maillog.2.gz", session(NOW - 3000, 10, "198.51.100.2"), NOW - 2900, True)
    _write(tmp_path / "maillog.1", session(NOW - 2000, 11, "198.51.100.1")[:2], NOW - 1900)
    _write(log, session(NOW - 1990, 11, "198.51.100.1")[2:] + session(NOW - 10, 12, "2001:db8::7"))
    _write(tmp_path / "maillog.3.gz", session(NOW - 9000, 13, "198.51.100.3"), NOW - 8000, True)
    (tmp_path / "maillog.old").write_text("not a rotation\n")
    (tmp_path / "maillogx.1").write_text("not a rotation\n")
    assert [p.name for p in rotated_files(log)] == [
        "maillog.3.gz",
        "maillog.2.gz",
        "maillog.1",
        "maillog",
    ]
    c = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc)
    assert c.counts == {"198.51.100.2": 1, "198.51.100.1": 1, "2001:db8::7": 1}
    # maillog.3.gz was last written before the window: not even opened
    assert [os.path.basename(f) for f in c.stats.files] == ["maillog.2.gz", "maillog.1", "maillog"]
    assert c.stats.errors == []


def test_dateext_rotations_and_corrupt_gzip(tmp_path):
    log = tmp_path / "maillog"
    _write(tmp_path / "maillog-20261126.gz", session(NOW - 3000, 10, "198.51.100.2"), gz=True)
    (tmp_path / "maillog-20261125.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    os.utime(tmp_path / "maillog-20261125.gz", (NOW, NOW))
    _write(log, session(NOW - 10, 12, "198.51.100.1"))
    assert [p.name for p in rotated_files(log)] == [
        "maillog-20261125.gz",
        "maillog-20261126.gz",
        "maillog",
    ]
    c = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc)
    assert c.counts == {"198.51.100.2": 1, "198.51.100.1": 1}
    assert len(c.stats.errors) == 1 and "maillog-20261125.gz" in c.stats.errors[0]


def test_missing_log_is_not_an_error(tmp_path):
    c = scan_logs([tmp_path / "nothing"], NOW - 3600, NOW, tz=timezone.utc)
    assert c.counts == {} and c.stats.errors == []


def test_chunking_does_not_change_counts(tmp_path):
    lines = []
    for i in range(300):
        lines += session(NOW - 3000 + i, 500 + i, f"198.51.100.{i % 7}", messages=i % 3 + 1)
    lines.append(f"{trad(T)} gw1 sm-mta[9]: 4AB: from=<a@b>, size=1, relay=[198.51.100.99]")
    path = tmp_path / "maillog"
    path.write_bytes("\n".join(lines).encode())  # last line without newline
    whole = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    whole.feed(path.read_bytes())
    small = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    chunks = list(read_chunks(path, chunk_size=1000))
    assert len(chunks) > 50
    assert all(ch.endswith(b"\n") for ch in chunks[:-1])
    for ch in chunks:
        small.feed(ch)
    assert small.counts == whole.counts
    assert sum(whole.counts.values()) == 301
    assert small.stats.lines == whole.stats.lines == len(lines)


def test_overlong_line_without_newline_is_dropped(tmp_path):
    path = tmp_path / "maillog"
    good = "\n".join(session(T, 1, "198.51.100.1")) + "\n"
    path.write_bytes(b"x" * 5000 + b"\n" + good.encode() + b"relay=" * 3000)
    chunks = list(read_chunks(path, chunk_size=1024, max_line=4096))
    c = SessionCounter(NOW - 3600, NOW, tz=timezone.utc)
    for ch in chunks:
        c.feed(ch)
    assert c.counts == {"198.51.100.1": 1}


def test_seek_to_the_window_reads_less_and_counts_the_same(tmp_path):
    # 6 hours of log, ~4 MB, a garbage line now and then; the window is the last hour
    lines = []
    n = 6000
    for i in range(n):
        ts = NOW - 6 * 3600 + i * (6 * 3600 / n)
        lines += session(ts, 2000 + i, f"198.51.{i % 3}.{i % 11}", messages=2)
        if i % 500 == 0:
            lines.append("\x00garbage relay=[ without a date")
    log = tmp_path / "maillog"
    _write(log, lines)
    assert log.stat().st_size > 4 << 20
    full = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc, seek=False)
    fast = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc)
    assert fast.counts == full.counts
    assert sum(fast.counts.values()) == 1000 - 1  # the session at exactly NOW - 3600 is out
    assert fast.stats.seeked > 2 << 20
    assert fast.stats.bytes + fast.stats.seeked < log.stat().st_size + 1000
    assert full.stats.seeked == 0


def test_seek_never_skips_when_timestamps_are_unreadable(tmp_path):
    log = tmp_path / "maillog"
    _write(log, ["no timestamp here relay=[192.0.2.1] " + "x" * 200] * 20000)
    c = scan_logs([log], NOW - 3600, NOW, tz=timezone.utc)
    assert c.stats.seeked == 0 and c.stats.skipped == 20000
