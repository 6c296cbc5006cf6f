"""Mail from the internet through the gateways to the right mailstore; no open relay;
the manual blacklist; the outbound relay's client and sender checks."""

import pytest
from labsmtp import (
    LAB_DOMAIN,
    NET,
    mailbox_has,
    message,
    needs,
    podman_exec,
    present,
    smtp,
    wait_for_mail,
)

GW1 = f"gw1.{LAB_DOMAIN}"


@pytest.mark.parametrize(
    ("gateway", "rcpt", "store", "other"),
    [
        pytest.param(*case, marks=needs(case[0], case[2]))
        for case in [
            ("gw1", "alice@static-a.test", "mailstore1", "mailstore2"),
            ("gw2", "bob@static-b.test", "mailstore2", "mailstore1"),
            ("gw1", "Carol@STATIC-B.TEST", "mailstore2", "mailstore1"),
        ]
    ],
)
def test_managed_domain_reaches_its_mailstore(gateway, rcpt, store, other):
    tag, text = message("dave@internet.test", rcpt)
    d = smtp("outside", gateway, "dave@internet.test", [rcpt], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    user = rcpt.split("@")[0].lower()
    mbox = wait_for_mail(store, user, tag)
    assert f"by {gateway}.{LAB_DOMAIN}" in mbox  # went through the gateway
    if present(other):  # a fleet without the other mailstore cannot misroute there
        assert not mailbox_has(other, user, tag)


@pytest.mark.parametrize("store", present("mailstore1", "mailstore2"))
def test_mailstore_mailboxes_exist_before_any_mail(store):
    """mail.local makes a missing mailbox as root, then gives it to its user: a second first
    delivery in that instant found it root's and bounced (5.0.0 "wrong ownership"). The role
    makes every user's mailbox beforehand (postmaster-lab gets no mail in these tests)."""
    for user in ("alice", "bob", "carol", "postmaster-lab"):
        out = podman_exec(store, "stat", "-c", "%U %G %a", f"/var/mail/{user}")
        assert out.split() == [user, user, "600"], (store, user, out)


def test_unknown_user_on_a_managed_domain_is_refused_by_the_backend():
    # The gateway accepts (it does not know the users of static domains), the mailstore
    # refuses at RCPT and the gateway bounces: the bounce goes back to the sender.
    tag, text = message("dave@internet.test", "nobody-here@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["nobody-here@static-a.test"], data=text)
    assert d.last[1] == 250, d.transcript
    bounce = wait_for_mail("outside", "dave", tag, timeout=120)
    assert "User unknown" in bounce or "5.1.1" in bounce


RELAY_TRICKS = [
    "user@unmanaged.test",
    "user@UNMANAGED.TEST",
    "user@unmanaged.test.",
    f"user%unmanaged.test@{GW1}",
    f'"user@unmanaged.test"@{GW1}',
    f"<@{GW1}:user@unmanaged.test>",
    f"unmanaged.test!user@{GW1}",
    f"user@unmanaged.test@{GW1}",
    f"user@[{NET}.250]",
    "user@sub.static-a.test",
    "user@static-a.test.unmanaged.test",
    f'"user%unmanaged.test"@{GW1}',
    f"user%unmanaged.test@[{NET}.11]",
    "<user@unmanaged.test>",
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_no_open_relay(rcpt):
    d = smtp("outside", "gw1", "dave@internet.test", [rcpt])
    reply = d.reply("rcpt")
    assert reply is not None, d.transcript
    assert 500 <= reply[0] < 600, f"{rcpt} was not refused:\n{d.transcript}"


@pytest.mark.parametrize(
    ("source", "mail_from", "expected"),
    [
        (f"{NET}.240", "dave@internet.test", "Access denied"),
        (f"{NET}.233", "dave@internet.test", "Your network is blacklisted here"),
        (f"{NET}.250", "bad@spammer.test", "Mail from spammer.test refused"),
    ],
    ids=["ip", "network", "sender-domain"],
)
def test_blacklist(source, mail_from, expected):
    tag, text = message(mail_from, "alice@static-a.test")
    d = smtp("outside", "gw1", mail_from, ["alice@static-a.test"], data=text, source=source)
    codes = [c for _, c, _ in d.steps]
    assert any(500 <= c < 600 for c in codes), d.transcript
    assert expected in d.transcript, d.transcript
    assert not mailbox_has("mailstore1", "alice", tag)


def test_smtpx_refuses_a_client_outside_its_networks():
    _tag, text = message("alice@static-a.test", "dave@internet.test")
    d = smtp("outside", "smtpx1", "alice@static-a.test", ["dave@internet.test"], data=text)
    assert any(500 <= c < 600 for _, c, _ in d.steps), d.transcript
    assert "not open to your network" in d.transcript, d.transcript


def test_smtpx_relays_for_an_allowed_client():
    tag, text = message("alice@static-a.test", "dave@internet.test")
    d = smtp("gw1", "smtpx1", "alice@static-a.test", ["dave@internet.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    mbox = wait_for_mail("outside", "dave", tag)
    assert f"by smtpx1.{LAB_DOMAIN}" in mbox


def test_smtpx_refuses_a_sender_domain_not_allowed():
    d = smtp("gw1", "smtpx1", "someone@not-ours.test", ["dave@internet.test"])
    reply = d.reply("mail")
    assert reply is not None and reply[0] == 553, d.transcript
    assert "Sender domain not allowed" in reply[1]
