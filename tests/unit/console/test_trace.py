"""Message trace: sendmail and milter lines read by the existing parsers (maillog,
decisionlog), the gateway's shipping of the new part of its mail log (offset, rotation,
bound per pass, hostile lines), the trace table on SQLite and MariaDB, the grouping of a
message's path, and the /trace page."""

from __future__ import annotations

import os
import sqlite3

import pytest

from passerelle.console import trace_ship
from passerelle.console.trace import (
    TraceEvent,
    TraceQueryError,
    TraceStore,
    parse_query,
)
from passerelle.console.trace_ship import ShipState, load_state, read_new, save_state, ship
from passerelle.maillog import TimestampReader, parse_sendmail
from plugins import load

Client = load("tests/unit/console/webclient.py").Client

T0 = 1_764_633_600.0  # 2025-12-02T00:00:00Z
QID = "5B1JU1ab005001"
NEXT = "5B1JU1cd004001"
TS = "2025-12-02T00:00:01.123456+00:00 gw1 sm-mta[5001]: "
TSM = "2025-12-02T00:00:01.200000+00:00 gw1 "
FROM = (
    f"{TS}{QID}: from=<Dave@Internet.test>, size=612, class=0, nrcpts=1, "
    "msgid=<tag1@internet.test>, bodytype=8BITMIME, proto=ESMTP, daemon=MTA, "
    "relay=outside.lab [10.89.78.250]"
)
SENT = (
    f"{TS}{QID}: to=<alice@static-a.test>, delay=00:00:01, xdelay=00:00:00, mailer=esmtp, "
    "pri=30678, relay=mailstore1. [10.89.77.51], dsn=2.0.0, "
    f"stat=Sent ({NEXT} Message accepted for delivery)"
)
DEFERRED = (
    f"{TS}{QID}: to=<alice@static-a.test>, delay=00:00:05, xdelay=00:00:05, mailer=esmtp, "
    "pri=120678, relay=mailstore1. [10.89.77.51], dsn=4.0.0, "
    "stat=Deferred: Connection refused by mailstore1."
)
BOUNCED = (
    f"{TS}{QID}: to=<nobody@static-a.test>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, "
    "pri=30678, relay=mailstore1. [10.89.77.51], dsn=5.1.1, stat=User unknown"
)
GREYLIST = (
    f"{TSM}passerelle-greylist[812]: accepted client=10.89.78.250 group=10.89.78.250/32 "
    "reason=client"
)
GREYLISTED = (
    f"{TSM}passerelle-greylist[812]: greylisted client=10.89.78.250 group=10.89.78.250/32 "
    "from=<dave@internet.test> to=<alice@static-a.test> reason=new"
)
SPAM = (
    f"{TSM}passerelle-spam[813]: {QID}: client=outside.lab[10.89.78.250] score=1.2 "
    "required=5 tier=none tests=BAYES_00,HTML_MESSAGE spamd=127.0.0.1:783 time=0.41s"
)
AV = (
    f"{TSM}passerelle-antivirus[814]: {QID}: from=<dave@internet.test> rcpts=1 size=612 "
    "client=outside.lab [10.89.78.250] clean (clean, clamd 127.0.0.1:3310) -> accept"
)


def times() -> TimestampReader:
    return TimestampReader(T0 + 3600)


# -- the sendmail lines, read by maillog ------------------------------------------------------
def test_reception_line_gives_sender_message_id_and_client():
    s = parse_sendmail(FROM.encode(), times())
    assert (s.kind, s.host, s.queue_id) == ("from", "gw1", QID)
    assert s.sender == "Dave@Internet.test"
    assert s.message_id == "tag1@internet.test"
    assert s.relay == "outside.lab [10.89.78.250]"
    assert s.ts == pytest.approx(T0 + 1.123456)


@pytest.mark.parametrize(
    ("line", "kind", "dsn", "status"),
    [
        (SENT, "sent", "2.0.0", f"Sent ({NEXT} Message accepted for delivery)"),
        (DEFERRED, "deferred", "4.0.0", "Deferred: Connection refused by mailstore1."),
        (BOUNCED, "bounced", "5.1.1", "User unknown"),
    ],
)
def test_delivery_lines(line, kind, dsn, status):
    s = parse_sendmail(line.encode(), times())
    assert (s.kind, s.dsn, s.status, s.mailer) == (kind, dsn, status, "esmtp")
    assert s.relay == "mailstore1. [10.89.77.51]"
    assert s.recipients[0].endswith("@static-a.test")
    assert s.next_queue_id == (NEXT if kind == "sent" else "")


def test_lines_that_are_not_about_a_message_are_none():
    for line in (
        f"{TS}starting daemon (8.17.1): SMTP+queueing@00:10:00",
        f"{TSM}passerelle-spam[813]: spamd 127.0.0.1:783, max_size 1",
        "garbage",
    ):
        assert parse_sendmail(line.encode(), times()) is None


def test_milter_refusal_and_rcpt_refusal():
    m = parse_sendmail(f"{TS}{QID}: Milter: data, reject=550 5.7.1 Virus found".encode(), times())
    assert (m.kind, m.queue_id) == ("milter", QID) and "550 5.7.1" in m.detail
    r = parse_sendmail(
        (
            f"{TS}NOQUEUE: ruleset=check_rcpt, arg1=<nobody@static-a.test>, "
            "relay=outside.lab [10.89.78.250], reject=550 5.1.1 <nobody@static-a.test>... "
            "User unknown"
        ).encode(),
        times(),
    )
    assert (r.kind, r.queue_id, r.recipients) == ("reject", "", ("nobody@static-a.test",))


# -- events: sendmail and the milters' decisions -----------------------------------------------
def test_events_of_every_kind_of_line():
    lines = [x.encode() + b"\n" for x in (GREYLIST, FROM, AV, SPAM, SENT)]
    events, skipped = trace_ship.events_of(lines, "gw1", times())
    assert skipped == 0
    kinds = [e.kind for e in events]
    assert kinds == ["greylist", "from", "antivirus", "spam", "sent"]
    gl, fr, av, sp, se = events
    assert (gl.relay, gl.status, gl.detail) == ("10.89.78.250", "accepted", "reason=client")
    assert (fr.sender, fr.message_id, fr.queue_id) == (
        "dave@internet.test",
        "tag1@internet.test",
        QID,
    )
    assert (av.queue_id, av.status) == (QID, "clean")
    assert (sp.queue_id, sp.status) == (QID, "none") and "score=1.2" in sp.detail
    assert (se.recipient, se.next_queue_id, se.relay) == (
        "alice@static-a.test",
        NEXT,
        "mailstore1. [10.89.77.51]",
    )
    assert all(e.gateway == "gw1" for e in events)


def test_hostile_lines_are_skipped_or_cut_never_raise():
    huge_sender = "x" * 5000
    lines = [
        f"{TS}{QID}: from=<{huge_sender}@a>, size=1, class=0, nrcpts=1, msgid=<"
        + "m" * 3000
        + ">, proto=ESMTP, daemon=MTA, relay=h [192.0.2.9]",
        f"{TS}{QID}: to=<\x00\x01\xff>, delay=00:00:01, mailer=esmtp, stat=Sent",
        f'{TS}{QID}: from=<"relay=[198.51.100.7], size="@x>, size=1',  # no relay: unreadable
        f"{TS}{QID}: to=<a@b>",  # no stat: unreadable
        "\xff\xfe binary \x00 garbage",
    ]
    raw = [x.encode("utf-8", "surrogateescape") + b"\n" for x in lines]
    raw.append(b"\xff\xfe\x00" * 100 + b"\n")
    events, skipped = trace_ship.events_of(raw, "gw1", times())
    assert skipped == 2
    assert len(events) == 2
    big, ctl = events
    assert len(big.sender) <= TraceEvent.LIMITS["sender"]
    assert len(big.message_id) <= TraceEvent.LIMITS["message_id"]
    assert "\x00" not in ctl.recipient and "\x01" not in ctl.recipient


# -- reading the new part of the log --------------------------------------------------------------
def write_log(path, *lines: str, mode: str = "a") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


def test_offset_is_kept_and_only_new_lines_are_read(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM, SENT)
    lines, st, stats = read_new(str(log), ShipState(), 1 << 20, 4096)
    assert len(lines) == 2 and st.offset == log.stat().st_size and not stats.more
    again, st2, _ = read_new(str(log), st, 1 << 20, 4096)
    assert again == [] and st2.offset == st.offset
    write_log(log, SPAM)
    new, _st3, _ = read_new(str(log), st2, 1 << 20, 4096)
    assert [x.rstrip(b"\n") for x in new] == [SPAM.encode()]


def test_a_partial_last_line_waits_for_its_end(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM)
    with open(log, "a") as fh:
        fh.write(SENT[:40])
    lines, st, _ = read_new(str(log), ShipState(), 1 << 20, 4096)
    assert len(lines) == 1
    with open(log, "a") as fh:
        fh.write(SENT[40:] + "\n")
    lines, _st, _ = read_new(str(log), st, 1 << 20, 4096)
    assert [x.rstrip(b"\n") for x in lines] == [SENT.encode()]


def test_rotation_by_rename_finishes_the_old_file_then_starts_the_new(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM)
    _l, st, _ = read_new(str(log), ShipState(), 1 << 20, 4096)
    write_log(log, SENT)  # written before the rotation, not yet read
    os.rename(log, tmp_path / "mail.log.1")
    write_log(log, SPAM, mode="w")
    lines, st2, stats = read_new(str(log), st, 1 << 20, 4096)
    assert [x.rstrip(b"\n") for x in lines] == [SENT.encode(), SPAM.encode()]
    assert stats.rotated and st2.inode == log.stat().st_ino


def test_truncated_file_is_read_from_its_start(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM, SENT, SPAM)
    _l, st, _ = read_new(str(log), ShipState(), 1 << 20, 4096)
    write_log(log, AV, mode="w")  # copytruncate: same inode, shorter than the offset
    lines, _st, stats = read_new(str(log), st, 1 << 20, 4096)
    assert [x.rstrip(b"\n") for x in lines] == [AV.encode()] and stats.rotated


def test_a_pass_reads_a_bounded_amount_the_rest_next_pass(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, *[FROM] * 100)
    size = log.stat().st_size
    bound = size // 3
    lines, st, stats = read_new(str(log), ShipState(), bound, 4096)
    assert 0 < len(lines) < 100 and st.offset <= bound and stats.more
    total = len(lines)
    while stats.more:
        lines, st, stats = read_new(str(log), st, bound, 4096)
        total += len(lines)
    assert total == 100 and st.offset == size


def test_an_over_long_line_is_skipped_and_counted(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM, "y" * 10_000, SENT)
    lines, st, stats = read_new(str(log), ShipState(), 4096, 1024)
    got = [x.rstrip(b"\n") for x in lines]
    while stats.more:
        more, st, stats = read_new(str(log), st, 4096, 1024)
        got += [x.rstrip(b"\n") for x in more]
    assert got == [FROM.encode(), SENT.encode()]


def test_state_file_round_trip_and_a_bad_one_starts_over(tmp_path):
    path = tmp_path / "state" / "trace.json"
    save_state(str(path), ShipState(12, 345, False))
    assert load_state(str(path)) == ShipState(12, 345, False)
    path.write_text("{not json")
    assert load_state(str(path)) == ShipState()


# -- storage on both dialects ---------------------------------------------------------------------


def lines_of(*lines: str) -> list[bytes]:
    return [x.encode("utf-8", "surrogateescape") + b"\n" for x in lines]


def store_with(conn, *lines: str, gateway: str = "gw1") -> TraceStore:
    s = TraceStore(conn)
    s.migrate()
    events, _skipped = trace_ship.events_of(lines_of(*lines), gateway, times())
    s.add(events)
    return s


def test_store_search_by_each_key_and_group_the_path(conn):
    s = TraceStore(conn)
    assert s.migrate() == (0, 1)
    assert s.migrate() == (1, 1)
    store_with(conn, GREYLIST, FROM, AV, SPAM, SENT)
    for q in (
        {"message_id": "<tag1@internet.test>"},
        {"message_id": "tag1@internet.test"},
        {"queue_id": QID},
        {"sender": "DAVE@internet.test"},
        {"recipient": "alice@static-a.test"},
    ):
        (m,) = s.search(parse_query(q))
        assert [e.kind for e in m.steps] == ["greylist", "from", "antivirus", "spam", "sent"], q
        assert m.message_id == "tag1@internet.test"
        assert m.queue_ids == [("gw1", QID)]
    assert s.search(parse_query({"sender": "nobody@x"})) == []


def test_hostile_values_are_cut_to_the_columns(conn):
    evil = (
        f"{TS}{QID}: from=<"
        + "é" * 2000
        + "@a>, size=1, class=0, nrcpts=1, msgid=<"
        + "\U0001f600" * 900
        + ">, proto=ESMTP, daemon=MTA, relay=h [192.0.2.9]"
    )
    s = store_with(conn, evil, SENT)
    (m,) = s.search(parse_query({"queue_id": QID}))
    assert m.steps[0].sender.startswith("é") and len(m.steps[0].sender) <= 255


def test_the_same_message_on_two_gateways_and_its_relay_hop_are_one_path(conn):
    s = store_with(conn, FROM, SENT)
    # gw2 logged the same Message-ID under its own queue id (a second copy)
    store_with(conn, FROM.replace(QID, "5B1JU1zz009999").replace("gw1", "gw2"), gateway="gw2")
    # the next hop (another synced host) logged the queue id named in stat=Sent (...)
    hop = (
        f"{TS.replace('gw1', 'smtpx')}{NEXT}: from=<dave@internet.test>, size=700, class=0, "
        "nrcpts=1, msgid=<other@x>, proto=ESMTP, daemon=MTA, relay=gw1 [10.89.77.11]"
    )
    store_with(conn, hop, gateway="smtpx")
    (m,) = s.search(parse_query({"message_id": "tag1@internet.test"}))
    assert sorted(m.queue_ids) == [("gw1", QID), ("gw2", "5B1JU1zz009999"), ("smtpx", NEXT)]


def test_greylisted_attempts_before_the_message_are_in_its_path(conn):
    early = GREYLISTED.replace("00:00:01.200000", "00:00:00.500000")
    s = store_with(conn, early, FROM, SENT)
    (m,) = s.search(parse_query({"queue_id": QID}))
    assert [e.kind for e in m.steps] == ["greylist", "from", "sent"]
    assert m.steps[0].status == "greylisted"


def test_purge_removes_old_events(conn):
    s = store_with(conn, FROM, SENT)
    assert s.purge(T0 + 10) == 2
    assert s.search(parse_query({"queue_id": QID})) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "at least one"),
        ({"sender": "   "}, "at least one"),
        ({"sender": "a" * 400}, "too long"),
        ({"queue_id": "bad id!"}, "queue id"),
    ],
)
def test_bad_queries_are_refused_with_a_message(query, message):
    with pytest.raises(TraceQueryError) as err:
        parse_query(query)
    assert message in str(err.value)


# -- the gateway's step ---------------------------------------------------------------------------
def test_ship_reads_parses_stores_and_keeps_its_offset(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM, SENT, "z" * 100_000, SPAM)
    c = sqlite3.connect(str(tmp_path / "c.db"), isolation_level=None)
    state = str(tmp_path / "trace.json")
    st = ship(c, "gw1", str(log), state, T0 + 60, max_bytes=1 << 20)
    assert (st.events, st.skipped) == (3, 1)
    st = ship(c, "gw1", str(log), state, T0 + 120, max_bytes=1 << 20)
    assert st.events == 0
    c.close()


def test_the_console_purges_old_events_at_most_every_ten_minutes(tmp_path):
    from passerelle.console.trace import Purger

    c = sqlite3.connect(str(tmp_path / "c.db"), isolation_level=None)
    store_with(c, FROM, SENT)
    purge = Purger(3600)
    assert purge(c, T0 + 1800) == 0  # not old enough
    assert purge(c, T0 + 7000) == 2
    store_with(c, SPAM)
    assert purge(c, T0 + 7100) == 0  # too soon after the last purge
    assert purge(c, T0 + 7700) == 1
    c.close()


def test_a_failed_purge_does_not_fail_the_page(tmp_path, caplog):
    from passerelle.console.trace import Purger

    c = sqlite3.connect(str(tmp_path / "c.db"), isolation_level=None)  # no table
    assert Purger(86400)(c, T0) == 0
    assert "purge failed" in caplog.text
    c.close()


def test_ship_without_a_log_reads_nothing_and_writes_no_state(tmp_path):
    c = sqlite3.connect(str(tmp_path / "c.db"), isolation_level=None)
    st = ship(c, "gw1", str(tmp_path / "none.log"), str(tmp_path / "s.json"), T0)
    assert st.events == 0 and st.missing and not (tmp_path / "s.json").exists()
    c.close()


# -- the page ---------------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path):
    from passerelle.console.auth import Accounts, hash_password
    from passerelle.console.web import make_app

    path = str(tmp_path / "console.sqlite")

    def connect():
        return sqlite3.connect(path, isolation_level=None, timeout=10.0)

    accts = Accounts.from_inventory(
        [
            {"name": "alice", "role": "admin", "password_hash": hash_password("pw-a", 10_000)},
            {"name": "victor", "role": "viewer", "password_hash": hash_password("pw-v", 10_000)},
        ]
    )
    app = make_app(connect, accts, b"s" * 40, lambda: T0 + 600)
    c = connect()
    store_with(c, GREYLIST, FROM, AV, SPAM, SENT)
    c.close()
    return app


def login(app, name: str, password: str):
    c = Client(app)
    form = c.request("GET", "/login")
    import re

    token = re.search(r'name="token" value="([^"]*)"', form.text).group(1)
    r = c.request("POST", "/login", form={"token": token, "name": name, "password": password})
    assert r.status == 303, r.text
    return c


@pytest.mark.parametrize("who", [("alice", "pw-a"), ("victor", "pw-v")])
def test_trace_page_shows_the_path(web, who):
    c = login(web, *who)
    r = c.request("GET", "/trace", query={"message_id": "<tag1@internet.test>"})
    assert r.status == 200, r.text
    t = r.text
    assert 'href="/trace"' in t  # in the nav
    for text in (QID, "tag1@internet.test", "10.89.78.250", "greylist", "reason=client"):
        assert text in t, text
    assert "clean" in t and "score=1.2" in t and "mailstore1. [10.89.77.51]" in t
    assert "Sent (" in t
    # time order
    assert t.index("greylist") < t.index("antivirus") < t.index("score=1.2") < t.index("Sent (")


def test_trace_page_without_a_query_shows_the_form(web):
    c = login(web, "alice", "pw-a")
    r = c.request("GET", "/trace")
    assert r.status == 200 and 'name="message_id"' in r.text and 'role="alert"' not in r.text


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ({"sender": "a" * 1000}, "too long"),
        ({"sender": "", "recipient": ""}, "at least one"),
        ({"queue_id": "<script>"}, "queue id"),
    ],
)
def test_trace_page_bad_input_is_a_clear_message(web, query, text):
    c = login(web, "victor", "pw-v")
    r = c.request("GET", "/trace", query=query)
    assert r.status == 400 and text in r.text
    assert "<script>" not in r.text


def test_trace_page_nothing_found(web):
    c = login(web, "alice", "pw-a")
    r = c.request("GET", "/trace", query={"recipient": "nobody@static-a.test"})
    assert r.status == 200 and "No message" in r.text


def test_a_line_longer_than_what_is_left_of_the_bound_waits_for_the_next_pass(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log, FROM)
    _l, st, _ = read_new(str(log), ShipState(), 1 << 20, 4096)
    write_log(log, SENT)
    os.rename(log, tmp_path / "mail.log.1")
    write_log(log, SPAM, mode="w")
    # the old file's rest leaves less than SPAM's length of this pass's bound
    lines, st, stats = read_new(str(log), st, len(SENT) + 10, 4096)
    assert [x.rstrip(b"\n") for x in lines] == [SENT.encode()] and stats.skipped == 0
    lines, st, stats = read_new(str(log), st, 1 << 20, 4096)
    assert [x.rstrip(b"\n") for x in lines] == [SPAM.encode()] and stats.skipped == 0


# -- gateway-sync's configuration and pass --------------------------------------------------------
def sync_config(tmp_path, extra: str = "") -> str:
    (tmp_path / "antivirus.toml").write_text("[antivirus]\n")
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway_sync]\ndatabase = "sqlite:///{tmp_path}/console.sqlite"\ngateway = "gw1"\n'
        f'quarantine_dir = "{tmp_path}/quarantine"\n'
        f'antivirus_config = "{tmp_path}/antivirus.toml"\n'
        f'runtime_rules = "{tmp_path}/rules.json"\nruntime_rules_group = ""\n{extra}'
    )
    return str(path)


def test_sync_config_trace_keys_and_their_defaults(tmp_path):
    from passerelle.console.gateway_sync import load_config

    cfg = load_config(sync_config(tmp_path))
    assert (cfg.mail_log, cfg.trace_state) == (
        "/var/log/mail.log",
        "/var/lib/passerelle/console-trace.json",
    )
    cfg = load_config(
        sync_config(tmp_path, 'mail_log = "/var/log/maillog"\ntrace_state = "/var/lib/x/t.json"\n')
    )
    assert (cfg.mail_log, cfg.trace_state) == ("/var/log/maillog", "/var/lib/x/t.json")


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('mail_log = "mail.log"', "mail_log"),
        ('trace_retention = "7d"', "trace_retention"),  # the console's key, not the gateway's
        ('trace_state = "state/"', "trace_state"),
    ],
)
def test_sync_config_bad_trace_keys_are_named(tmp_path, extra, key):
    from passerelle.config import ConfigError
    from passerelle.console.gateway_sync import load_config

    with pytest.raises(ConfigError) as err:
        load_config(sync_config(tmp_path, extra + "\n"))
    assert key in str(err.value)


def test_gateway_sync_pass_ships_the_mail_log(tmp_path, capsys):
    import time

    from passerelle.cli import main

    log = tmp_path / "mail.log"
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())  # within the retention
    write_log(
        log, *(x.replace("2025-12-02T00:00:01", now) for x in (GREYLIST, FROM, AV, SPAM, SENT))
    )
    state = tmp_path / "state" / "trace.json"
    path = sync_config(tmp_path, f'mail_log = "{log}"\ntrace_state = "{state}"\n')
    assert main(["console", "gateway-sync", "--config", path]) == 0
    assert "trace 5 events" in capsys.readouterr().out
    assert state.exists()
    c = sqlite3.connect(str(tmp_path / "console.sqlite"), isolation_level=None)
    try:
        (m,) = TraceStore(c).search(parse_query({"queue_id": QID}))
        assert len(m.steps) == 5
    finally:
        c.close()


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 7 * 86400), ("36h", 36 * 3600), ("5m", None)]
)
def test_console_config_trace_retention(tmp_path, value, seconds):
    from passerelle.config import ConfigError
    from passerelle.console.auth import hash_password
    from passerelle.console.server import load_config

    secret = tmp_path / "console.secret"
    secret.write_bytes(b"k" * 40 + b"\n")
    secret.chmod(0o640)
    accounts = tmp_path / "accounts.toml"
    h = hash_password("pw", 10_000)
    accounts.write_text(f'[[account]]\nname = "alice"\nrole = "admin"\npassword_hash = "{h}"\n')
    path = tmp_path / "console.toml"
    path.write_text(
        f'[console]\ndatabase = "sqlite:///{tmp_path}/c.sqlite"\n'
        f'accounts_file = "{accounts}"\nsecret_file = "{secret}"\n'
        + (f'trace_retention = "{value}"\n' if value else "")
    )
    if seconds is None:
        with pytest.raises(ConfigError, match=r"console\.trace_retention"):
            load_config(str(path))
    else:
        assert load_config(str(path)).trace_retention == seconds


def test_pages_purge_old_trace_events(web):
    web.now = lambda: T0 + 8 * 86400  # more than a week later
    c = login(web, "alice", "pw-a")
    c.request("GET", "/quarantine")
    r = c.request("GET", "/trace", query={"queue_id": QID})
    assert r.status == 200 and "No message" in r.text


def test_a_refused_address_quoting_a_comma_is_read_whole():
    r = parse_sendmail(
        (
            f'{TS}{QID}: ruleset=check_rcpt, arg1=<"x, relay=[198.51.100.7]"@victim.test>, '
            "relay=outside.lab [10.89.78.250], reject=550 5.7.1 Relaying denied"
        ).encode(),
        times(),
    )
    assert r.recipients == ('"x, relay=[198.51.100.7]"@victim.test',)


def test_a_client_cannot_make_a_reception_look_like_a_milter_line():
    line = FROM.replace("<Dave@Internet.test>", "<x passerelle-greylist[1]: y@internet.test>")
    events, skipped = trace_ship.events_of(lines_of(line), "gw1", times())
    assert skipped == 0 and [e.kind for e in events] == ["from"]
    assert events[0].sender == "x passerelle-greylist[1]: y@internet.test"
