"""Learning from the forwarded-mail mailboxes: who may teach, what is learned, nothing lost."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile_headers
from passerelle.spam.learnbox import (
    LockBusy,
    client_ip,
    forwarded_messages,
    is_trusted,
    learn_mailbox,
    parse_networks,
    take_mailbox,
)

NETS = parse_networks(["10.89.78.0/26", "2001:db8:1::/48"])


def forward(client: str, inner: str | None = "Subject: cheap pills\n\nbuy now\n", n: int = 0):
    """One forward as the gateway stored it: its own Received on top, the user's below."""
    own = (
        f"from ws.example ({client}) by gw1.example with ESMTP id Q{n}; "
        "Fri, 27 Nov 2026 10:00:00 +0000"
    )
    head = (
        f"Received: {own}\n"
        "Received: from [192.0.2.99] (evil [192.0.2.99]) by ws.example; Fri, 27 Nov 2026\n"
        f"From: alice@static-a.test\nTo: spam@learn.test\nSubject: Fwd {n}\n"
        f"Message-ID: <fwd{n}@static-a.test>\n"
    )
    if inner is None:
        return head + "Content-Type: text/plain\n\nforwarded inline: buy now\n"
    return head + (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nhere is one more\n"
        "--b\nContent-Type: message/rfc822\n\n" + inner + "\n--b--\n"
    )


def mbox(path: Path, messages: list[str]) -> None:
    with path.open("a") as f:
        for m in messages:
            f.write("From MAILER-DAEMON Fri Nov 27 10:00:00 2026\n" + m.rstrip("\n") + "\n\n")


def test_client_ip_is_from_the_topmost_received_only():
    assert (
        client_ip(email.message_from_string(forward("ws.example [10.89.78.51]"))) == "10.89.78.51"
    )
    assert client_ip(email.message_from_string(forward("[IPv6:2001:db8:1::5]"))) == "2001:db8:1::5"
    # No address in our own Received: nothing below it is believed.
    assert client_ip(email.message_from_string(forward("ws.example"))) is None
    assert client_ip(email.message_from_string("Subject: x\n\nbody\n")) is None


@pytest.mark.parametrize(
    ("received", "expected"),
    [pytest.param(r, ip, id=case) for case, r, ip in hostile_headers.hostile_helo_received()],
)
def test_client_ip_is_the_address_sendmail_recorded_not_the_helo(received, expected):
    """The HELO (``$s``) is the client's word, even when it looks like an address or like
    sendmail's own ``(name [ip])``; only the parenthesised ``$_`` right before ``by`` counts,
    and a line where that cannot be told apart gives no address at all."""
    msg = email.message_from_string(f"Received: {received}\nSubject: x\n\nbody\n")
    assert client_ip(msg) == expected


def test_client_ip_of_a_folded_received_line():
    msg = email.message_from_string(
        "Received: from [10.89.78.9] (evil.example\n\t[203.0.113.9])\n"
        "\tby gw1.example.org (8.17.1.9/8.17.1.9) with ESMTP id Q1;\n"
        "\tTue, 1 Dec 2026 10:00:00 +0000\nSubject: x\n\nbody\n"
    )
    assert client_ip(msg) == "203.0.113.9"


def test_hostile_helo_cannot_teach_bayes(tmp_path):
    """An outside client saying ``EHLO [10.89.78.51]`` (a trusted address) is dropped."""
    box = tmp_path / "passerelle-learn-spam"
    hostile = forward("[10.89.78.51]", n=1).replace(
        "from ws.example ([10.89.78.51])", "from [10.89.78.51] (evil.example [203.0.113.9])"
    )
    assert "from [10.89.78.51] (evil.example [203.0.113.9]) by gw1" in hostile
    forged_hop = forward("[10.89.78.51]", n=2).replace(
        "from ws.example ([10.89.78.51])",
        "from x ([10.89.78.51]) by gw1.example (evil.example [203.0.113.9])",
    )
    mbox(box, [hostile, forged_hop, forward("ws [10.89.78.51]", n=3)])
    seen = []
    r = learn_mailbox("spam", box, NETS, lambda kind, msgs: seen.extend(msgs) or True)
    assert (r.messages, r.learned, r.untrusted) == (3, 1, 2)


def test_trusted_networks():
    assert is_trusted("10.89.78.51", NETS)
    assert not is_trusted("10.89.78.250", NETS)
    assert is_trusted("2001:db8:1::5", NETS)
    assert not is_trusted(None, NETS) and not is_trusted("garbage", NETS)
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8'"):
        parse_networks(["10.0.0.300/8"])


def test_forwarded_messages_prefers_attachments():
    att = forwarded_messages(email.message_from_string(forward("[10.89.78.51]")))
    assert len(att) == 1 and att[0].startswith(b"Subject: cheap pills") and b"buy now" in att[0]
    inline = forwarded_messages(email.message_from_string(forward("[10.89.78.51]", None)))
    assert len(inline) == 1 and b"forwarded inline" in inline[0]


def test_learn_mailbox_learns_trusted_drops_untrusted_and_removes_the_box(tmp_path):
    box = tmp_path / "passerelle-learn-spam"
    mbox(box, [forward("ws [10.89.78.51]", n=1), forward("outside [10.89.78.250]", n=2)])
    seen = []
    r = learn_mailbox("spam", box, NETS, lambda kind, msgs: seen.append((kind, msgs)) or True)
    assert (r.messages, r.learned, r.untrusted, r.failed) == (2, 1, 1, False)
    assert seen[0][0] == "spam" and len(seen[0][1]) == 1 and b"cheap pills" in seen[0][1][0]
    assert not box.exists() and not (tmp_path / "passerelle-learn-spam.learning").exists()


def test_sa_learn_failure_keeps_everything_for_the_next_run(tmp_path):
    box = tmp_path / "box"
    mbox(box, [forward("[10.89.78.51]", n=1)])
    r = learn_mailbox("ham", box, NETS, lambda kind, msgs: False)
    assert r.failed and r.learned == 0
    taken = tmp_path / "box.learning"
    assert taken.exists()
    # New mail arrives meanwhile; the next run learns both.
    mbox(box, [forward("[10.89.78.52]", n=2)])
    seen = []
    r = learn_mailbox("ham", box, NETS, lambda kind, msgs: seen.extend(msgs) or True)
    assert (r.messages, r.learned, r.failed) == (2, 2, False)
    assert not taken.exists() and not box.exists()


def test_empty_or_missing_box_does_nothing(tmp_path):
    calls = []
    r = learn_mailbox("spam", tmp_path / "none", NETS, lambda k, m: calls.append(k) or True)
    assert r.messages == 0 and calls == []
    (tmp_path / "empty").write_bytes(b"")
    assert take_mailbox(tmp_path / "empty") is None


def test_a_held_lock_is_waited_for_then_reported(tmp_path):
    box = tmp_path / "box"
    mbox(box, [forward("[10.89.78.51]")])
    (tmp_path / "box.lock").write_text("")
    t = [0.0]

    def clock():
        return t[0]

    def sleep(s):
        t[0] += s

    with pytest.raises(LockBusy, match=r"box\.lock"):
        take_mailbox(box, lock_wait=1.0, clock=clock, sleep=sleep)
    assert box.exists()  # untouched


def test_learn_mailbox_cli_runs_sa_learn_on_a_batch(tmp_path):
    box = tmp_path / "spambox"
    mbox(box, [forward("[10.89.78.51]", n=1)])
    fake = tmp_path / "sa-learn"
    log = tmp_path / "calls"
    fake.write_text(
        f'#!/bin/sh\necho "$1 $(ls "$2" | wc -l) $(cat "$2"/* | grep -c "cheap pills")" >> {log}\n'
    )
    fake.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "src"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "passerelle.cli",
            "spam",
            "learn-mailbox",
            "--spam",
            str(box),
            "--trusted",
            "10.89.78.0/26",
            "--sa-learn",
            str(fake),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "1 messages learned, 0 from untrusted clients dropped; done" in out.stdout
    assert log.read_text().split() == ["--spam", "1", "1"]
