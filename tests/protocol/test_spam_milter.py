"""The spam milter over its socket (miltertest as the MTA) against a real spamd."""

# ruff: noqa: F811  (pytest fixtures imported from spam_fixtures)

from __future__ import annotations

import pytest
from milterclient import NO_REPLY_BITS, SKIP_BITS, MilterClient
from miltertest import constants as c
from spam_fixtures import (  # noqa: F401  (fixtures)
    CLEAN_BODY,
    MilterResult,
    clean_headers,
    free_port,
    gtube_body,
    send_message,
    spam_milter,
    spamd,
    start_milter,
    start_spamd,
)

import hostile_headers
from passerelle.spam.marking import HeaderEdit, apply_edits

TAG = "[MESSAGE MARQUE SPAM]"


def final_headers(headers, result: MilterResult) -> list[tuple[str, str]]:
    edits = []
    for cmd, d in result.actions:
        if cmd == c.SMFIR_ADDHEADER:
            edits.append(HeaderEdit("add", d["name"], d["value"]))
        elif cmd == c.SMFIR_CHGHEADER:
            edits.append(HeaderEdit("change", d["name"], d["value"], d["index"]))
        else:
            raise AssertionError(f"unexpected action {cmd} {d}")
    return apply_edits(headers, edits)


def get(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


def test_gtube_is_tagged_high(spam_milter):
    headers = clean_headers("Cheap watches")
    res = send_message(spam_milter.socket, headers, gtube_body())
    assert res.reply == c.SMFIR_ACCEPT
    out = final_headers(headers, res)
    assert get(out, "Subject") == [f"{TAG} Cheap watches"]
    assert get(out, "X-status") == ["HIGH"]
    assert float(get(out, "X-Spam-Score")[0]) > 5
    status = get(out, "X-Spam-Status")[0]
    assert status.startswith("Yes, score=")
    assert "required=5.0" in status
    assert "GTUBE" in status
    assert get(out, "X-Spam-Checker") == ["gw-test"]


def test_clean_message_is_not_marked(spam_milter):
    headers = clean_headers()
    res = send_message(spam_milter.socket, headers, CLEAN_BODY)
    assert res.reply == c.SMFIR_ACCEPT
    out = final_headers(headers, res)
    assert get(out, "Subject") == ["Minutes of the project meeting"]
    assert get(out, "X-status") == []
    status = get(out, "X-Spam-Status")[0]
    assert status.startswith("No, score=")
    assert float(get(out, "X-Spam-Score")[0]) <= 3
    assert not any(cmd == c.SMFIR_CHGHEADER and d["name"] == "Subject" for cmd, d in res.actions)
    # spamd saw the hop the milter synthesised from the session (client, HELO, queue id):
    # without it SpamAssassin fires NO_RECEIVED / NO_RELAYS and knows nothing of the client.
    assert "NO_RECEIVED" not in status and "NO_RELAYS" not in status, status
    assert not any(d.get("name") == "Received" for _cmd, d in res.actions)


def test_outside_headers_are_removed_before_ours(spam_milter):
    headers = [
        *clean_headers(),
        ("X-Spam-Status", "No, score=-100"),
        ("X-status", "LOW"),
        ("x-spam-status", "No, forged again"),
        ("X-Spam-Flag", "NO"),
        ("X-STATUS", "none"),
        ("X-Spam-Score", "-50"),
    ]
    res = send_message(spam_milter.socket, headers, gtube_body())
    out = final_headers(headers, res)
    assert get(out, "X-status") == ["HIGH"]
    assert len(get(out, "X-Spam-Status")) == 1
    assert get(out, "X-Spam-Status")[0].startswith("Yes")
    assert get(out, "X-Spam-Flag") == []
    assert len(get(out, "X-Spam-Score")) == 1
    # deletions of repeated names go from the last occurrence to the first
    deletions = [(i, n.lower()) for i, n, v in res.changes() if v == ""]
    assert deletions.index((2, "x-spam-status")) < deletions.index((1, "x-spam-status"))
    assert deletions.index((2, "x-status")) < deletions.index((1, "x-status"))
    assert len(deletions) == 6


def test_message_passing_twice_is_tagged_once(spam_milter):
    headers = [*clean_headers(f"{TAG} Cheap watches"), ("X-status", "HIGH")]
    res = send_message(spam_milter.socket, headers, gtube_body())
    out = final_headers(headers, res)
    assert get(out, "Subject") == [f"{TAG} Cheap watches"]
    assert get(out, "X-status") == ["HIGH"]


def test_missing_subject_gets_the_tag(spam_milter):
    headers = [h for h in clean_headers() if h[0] != "Subject"]
    res = send_message(spam_milter.socket, headers, gtube_body())
    out = final_headers(headers, res)
    assert get(out, "Subject") == [TAG]


@pytest.mark.parametrize(
    ("case", "headers", "body"),
    [pytest.param(c, h, b, id=c) for c, h, b in hostile_headers.oversized_spam(2000)],
)
def test_oversize_spam_is_scanned_on_its_first_max_size_bytes(spamd, tmp_path, case, headers, body):
    m = start_milter(tmp_path, [spamd.address], "max_size = 2000\n")
    try:
        sent = [*headers, ("X-Spam-Status", "No, forged"), ("X-Spam-Partial", "no")]
        res = send_message(m.socket, sent, body)
    finally:
        m.stop()
    assert res.reply == c.SMFIR_ACCEPT
    out = final_headers(sent, res)
    assert get(out, "X-status") == ["HIGH"]
    assert get(out, "Subject") == [f"{TAG} Cheap watches"]
    status = get(out, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("Yes, score=") and "GTUBE" in status[0]
    partial = get(out, "X-Spam-Partial")
    assert len(partial) == 1 and partial[0].startswith("first "), partial
    assert f"of {len(body) + sum(len(n) + len(v) + 4 for n, v in sent) + 2} bytes" in partial[0]
    assert partial[0].endswith("scanned (max_size 2000)")


def test_failover_to_second_spamd(spamd, tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    m = start_milter(tmp_path, [dead, f"unix:{tmp_path}/nothing.sock", spamd.address])
    try:
        headers = clean_headers()
        res = send_message(m.socket, headers, gtube_body())
    finally:
        m.stop()
    assert get(final_headers(headers, res), "X-status") == ["HIGH"]


def test_spamd_killed_accept_policy(tmp_path):
    own = start_spamd(tmp_path / "spamd")
    m = start_milter(tmp_path / "milter", [own.address])
    try:
        headers = clean_headers()
        first = send_message(m.socket, headers, gtube_body())
        assert get(final_headers(headers, first), "X-status") == ["HIGH"]
        own.stop()
        second = send_message(m.socket, headers, gtube_body())
    finally:
        m.stop()
        own.stop()
    assert second.reply == c.SMFIR_ACCEPT
    out = final_headers(headers, second)
    assert get(out, "X-Spam-Status") == ["not scanned (spamd unavailable)"]
    assert get(out, "X-status") == []
    assert get(out, "Subject") == ["Minutes of the project meeting"]
    assert "spamd unavailable" in m.log.read_text()


def test_spamd_down_tempfail_policy(tmp_path):
    m = start_milter(tmp_path, [f"127.0.0.1:{free_port()}"], 'on_error = "tempfail"\n')
    try:
        res = send_message(m.socket, clean_headers(), gtube_body())
    finally:
        m.stop()
    assert res.reply == c.SMFIR_REPLYCODE
    assert res.reply_data["smtpcode"] == "451"
    assert res.actions == []


def test_negotiates_only_the_steps_it_uses(spam_milter):
    """Exactly these steps are skipped and these are sent without a reply: re-enabling a
    step, or asking again for a reply per header line, fails here."""
    with MilterClient(spam_milter.socket, timeout=10) as client:
        flags = client.protocol
    # it needs the client, HELO, headers and body; never a recipient, DATA or end of headers
    assert flags & SKIP_BITS == (
        c.SMFIP_NORCPT | c.SMFIP_NODATA | c.SMFIP_NOEOH | c.SMFIP_NOUNKNOWN
    ), hex(flags)
    # only end of message is answered
    assert flags & NO_REPLY_BITS == (
        c.SMFIP_NR_CONN | c.SMFIP_NR_HELO | c.SMFIP_NR_MAIL | c.SMFIP_NR_HDR | c.SMFIP_NR_BODY
    ), hex(flags)


# -- a failing no-reply callback: end of message tempfails, the connection goes on ---------------
FAULT = "passerelle-test-fault"  # see faultymilter.py


def test_failing_noreply_callback_tempfails_at_eom_then_next_message_passes(spamd, tmp_path):
    m = start_milter(tmp_path, [spamd.address], fault="header,body")
    try:
        with MilterClient(m.socket, 60) as conn:
            conn.macro(c.SMFIC_CONNECT, j="mx.example.com")
            assert conn.connect("mail.sender.example", "192.0.2.10", family="4")[0] == (
                c.SMFIR_CONTINUE
            )
            assert conn.helo("mail.sender.example")[0] == c.SMFIR_CONTINUE
            for hdrs, body in (
                ([*clean_headers(), (f"X-{FAULT}", "1")], CLEAN_BODY),  # a header
                (clean_headers(), CLEAN_BODY + FAULT.encode() + b"\r\n"),  # a body chunk
            ):
                assert conn.mail("<sender@example.org>")[0] == c.SMFIR_CONTINUE
                assert conn.rcpt("<user@example.com>")[0] == c.SMFIR_CONTINUE
                res = conn.message(hdrs, body, "4AB12CD")
                assert res[-1][0] == c.SMFIR_REPLYCODE, res
                assert res[-1][1]["smtpcode"] == "451", res
                assert res[-1][1]["text"].startswith("4.3.0 "), res
                # the next message of the same connection is scanned as usual
                assert conn.mail("<sender@example.org>")[0] == c.SMFIR_CONTINUE
                assert conn.rcpt("<user@example.com>")[0] == c.SMFIR_CONTINUE
                res = conn.message(clean_headers(), CLEAN_BODY, "4AB12CE")
                assert res[-1][0] == c.SMFIR_ACCEPT, res
                assert any(d.get("name") == "X-Spam-Status" for _, d in res[:-1]), res
        assert m.proc.poll() is None
    finally:
        m.stop()
