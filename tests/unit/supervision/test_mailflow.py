"""``passerelle check mailflow``: the queue id in sendmail's reply, the outcome in its log
lines (sendmail 8.17 formats), the verdict, following a log that grows or is rotated, and one
SMTP transaction against a small scripted server."""

from __future__ import annotations

import socket
import threading

import pytest

from passerelle.cli import main
from passerelle.supervision import mailflow
from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN
from passerelle.supervision.mailflow import (
    LogFollower,
    Outcome,
    ProbeError,
    check_mailflow,
    delivery_outcome,
    queue_id_from_reply,
    send_probe,
    verdict,
)

QID = "5B1JU1ab005001"
TS = "2026-12-01T19:30:01.123456+00:00 gw1 sm-mta[5001]: "
SENT = (
    f"{TS}{QID}: to=<alice@static-a.test>, delay=00:00:01, xdelay=00:00:00, mailer=esmtp, "
    "pri=30678, relay=mailstore1. [10.89.77.51], dsn=2.0.0, "
    "stat=Sent (5B1JU1cd004001 Message accepted for delivery)"
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
FROM = (
    f"{TS}{QID}: from=<>, size=612, class=0, nrcpts=1, msgid=<x@gw1>, proto=ESMTP, "
    "daemon=MTA, relay=localhost [127.0.0.1]"
)
OTHER = SENT.replace(QID, "5B1JU1zz009999")


@pytest.mark.parametrize(
    ("reply", "qid"),
    [
        (f"2.0.0 {QID} Message accepted for delivery", QID),
        (f"{QID} Message accepted for delivery", QID),
        ("2.0.0 Ok: queued as 4Xyz", None),  # not sendmail's wording
        ("", None),
    ],
)
def test_queue_id_from_reply(reply, qid):
    assert queue_id_from_reply(reply) == qid


def test_outcome_sent_names_the_relay_and_ignores_other_messages():
    out = delivery_outcome([FROM, OTHER, SENT], QID)
    assert out == Outcome(
        "sent", "Sent (5B1JU1cd004001 Message accepted for delivery)", "mailstore1. [10.89.77.51]"
    )


def test_remote_queue_id_in_stat_is_not_this_message():
    # OTHER's stat names a remote id; only "<qid>: to=" counts
    assert delivery_outcome([OTHER], "5B1JU1cd004001") is None


def test_outcome_deferred_then_sent_is_sent():
    assert delivery_outcome([DEFERRED], QID).kind == "deferred"
    assert delivery_outcome([DEFERRED, SENT], QID).kind == "sent"


def test_outcome_bounced_and_nothing_yet():
    assert delivery_outcome([BOUNCED], QID) == Outcome(
        "bounced", "User unknown", "mailstore1. [10.89.77.51]"
    )
    assert delivery_outcome([FROM], QID) is None


def test_outcome_without_dsn_reads_stat():
    line = f"{TS}{QID}: to=<a@b.test>, mailer=local, stat=Sent"
    assert delivery_outcome([line], QID).kind == "sent"


def test_verdicts():
    ok = verdict(QID, "alice@static-a.test", delivery_outcome([SENT], QID), 2.34)
    assert ok.state == OK
    assert ok.line("MAILFLOW").startswith(
        f"MAILFLOW OK - {QID} to alice@static-a.test delivered via mailstore1. [10.89.77.51]"
    )
    assert verdict(QID, "x", delivery_outcome([DEFERRED], QID), 120).state == CRITICAL
    bounced = verdict(QID, "x", delivery_outcome([BOUNCED], QID), 1)
    assert bounced.state == CRITICAL and "bounced: User unknown" in bounced.text
    lost = verdict(QID, "x", None, 120)
    assert lost.state == CRITICAL and "nothing logged" in lost.text


def test_log_follower_reads_only_new_whole_lines_and_survives_rotation(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(SENT + "\n")  # before the probe: never read
    f = LogFollower([log, tmp_path / "absent.log"])
    assert f.new_lines() == []
    with log.open("a") as fh:
        fh.write(FROM + "\n" + DEFERRED[:40])  # the last line is still being written
    assert f.new_lines() == [FROM]
    with log.open("a") as fh:
        fh.write(DEFERRED[40:] + "\n")
    assert f.new_lines() == [DEFERRED]
    log.write_text(BOUNCED + "\n")  # rotated: a new, shorter file
    assert f.new_lines() == [BOUNCED]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _run(tmp_path, lines_after_send, timeout=10.0):
    """check_mailflow with a fake SMTP send; each sleep appends the next line to the log."""
    log = tmp_path / "mail.log"
    log.write_text(OTHER + "\n")
    clock = Clock()
    pending = list(lines_after_send)
    sent = []

    def send(server, port, sender, rcpt, msg, t):
        sent.append((server, port, sender, rcpt, msg["Subject"]))
        return QID

    def sleep(s):
        clock.t += s
        if pending:
            with log.open("a") as fh:
                fh.write(pending.pop(0) + "\n")

    res = check_mailflow(
        "alice@static-a.test", logs=[log], timeout=timeout, clock=clock, sleep=sleep, send=send
    )
    return res, sent, clock.t


def test_check_waits_for_the_delivery(tmp_path):
    res, sent, waited = _run(tmp_path, [FROM, DEFERRED, SENT])
    assert res.state == OK, res.text
    assert waited == 3.0
    assert sent[0][:4] == ("127.0.0.1", 25, "", "alice@static-a.test")
    assert sent[0][4].startswith(mailflow.SUBJECT)


def test_check_bounced_stops_at_once(tmp_path):
    res, _, waited = _run(tmp_path, [BOUNCED, SENT])
    assert res.state == CRITICAL and waited == 1.0


def test_check_times_out_when_nothing_is_logged(tmp_path):
    res, _, waited = _run(tmp_path, [FROM], timeout=5)
    assert res.state == CRITICAL and waited == 5.0
    assert "nothing logged" in res.text


def test_check_deferred_until_the_timeout_is_critical(tmp_path):
    res, _, waited = _run(tmp_path, [DEFERRED], timeout=4)
    assert res.state == CRITICAL and "deferred: Deferred: Connection refused" in res.text
    assert waited == 4.0


def test_check_without_a_log_is_unknown(tmp_path):
    res = check_mailflow("a@b.test", logs=[tmp_path / "none.log"], send=lambda *a: QID)
    assert res.state == UNKNOWN


def _smtp_server(replies):
    """A one-connection SMTP server answering from ``replies`` (command prefix -> reply): its
    port, the commands it saw and the raw lines of the message (DATA)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    seen = []
    data_lines = []

    def serve():
        conn, _ = srv.accept()
        f = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        in_data = False
        for raw in f:
            line = raw.decode().rstrip("\r\n")
            if in_data:
                data_lines.append(raw)
                if line == ".":
                    in_data = False
                    conn.sendall(replies["."].encode() + b"\r\n")
                continue
            seen.append(line)
            verb = line.split(" ")[0].split(":")[0].upper()
            if verb == "DATA":
                conn.sendall(b"354 go\r\n")
                in_data = True
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(replies.get(verb, "250 ok").encode() + b"\r\n")
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], seen, data_lines


def test_send_probe_returns_sendmails_queue_id():
    port, seen, _ = _smtp_server({".": f"250 2.0.0 {QID} Message accepted for delivery"})
    msg = mailflow.probe_message("", "alice@static-a.test", "gw1.test", "tag1", 0.0)
    assert send_probe("127.0.0.1", port, "", "alice@static-a.test", msg, 5) == QID
    said = [s.upper() for s in seen]
    assert "MAIL FROM:<>" in said and "RCPT TO:<ALICE@STATIC-A.TEST>" in said


def test_send_probe_ends_every_line_with_crlf():
    # sendmail 8.17 (Debian 12's since the SMTP smuggling fix) refuses a bare LF in DATA:
    # "421 4.5.0 Bare linefeed (LF) not allowed".
    port, _, lines = _smtp_server({".": f"250 2.0.0 {QID} Message accepted for delivery"})
    msg = mailflow.probe_message("", "alice@static-a.test", "gw1.test", "tag3", 0.0)
    send_probe("127.0.0.1", port, "", "alice@static-a.test", msg, 5)
    assert len(lines) > 5
    assert all(raw.endswith(b"\r\n") and b"\n" not in raw[:-2] for raw in lines), lines


def test_send_probe_refused_rcpt_is_an_error():
    port, _, _ = _smtp_server({"RCPT": "550 5.7.1 Relaying denied", ".": "250 x"})
    msg = mailflow.probe_message("", "x@unmanaged.test", "gw1.test", "tag2", 0.0)
    with pytest.raises(ProbeError, match=r"RCPT refused: 550 5\.7\.1 Relaying denied"):
        send_probe("127.0.0.1", port, "", "x@unmanaged.test", msg, 5)


def test_send_probe_to_a_closed_port_is_an_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    msg = mailflow.probe_message("", "a@b.test", "gw1.test", "tag3", 0.0)
    with pytest.raises(ProbeError, match=r"SMTP to 127\.0\.0\.1"):
        send_probe("127.0.0.1", port, "", "a@b.test", msg, 2)


def test_cli_prints_one_nagios_line(tmp_path, capsys):
    rc = main(["check", "mailflow", "--to", "a@b.test", "--log", str(tmp_path / "none.log")])
    assert rc == UNKNOWN
    assert capsys.readouterr().out.startswith("MAILFLOW UNKNOWN - no mail log to follow")
