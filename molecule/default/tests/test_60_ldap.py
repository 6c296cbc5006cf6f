"""LDAP routing (issue 7): real slapd on ldap1, sendmail's ldap_routing on the gateway.

ldap-a.test is LDAP-routed (inventory/lab): ana's entry names mailstore1, ben's names
mailstore2 and rewrites him to benm. Both users exist on both mailstores, so delivery to the
right one proves the entry was used. Mail is sent from outside's main address (not
greylisted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labsmtp import PREFIX, mailbox_has, message, podman_exec, smtp, wait_for_mail

GATEWAY = "gw1"
SENDER = "dave@internet.test"


def _send(rcpt: str):
    tag, text = message(SENDER, rcpt)
    return tag, smtp("outside", GATEWAY, SENDER, [rcpt], data=text)


def _route(address: str) -> dict:
    return json.loads(podman_exec(GATEWAY, "passerelle", "route", address, "--json"))


def _queue_ids() -> str:
    return podman_exec(GATEWAY, "mailq", check=False)


@pytest.mark.parametrize(
    ("rcpt", "user", "store", "other"),
    [
        ("ana@ldap-a.test", "ana", "mailstore1", "mailstore2"),
        ("ben@ldap-a.test", "benm", "mailstore2", "mailstore1"),
        ("Ana@LDAP-A.test", "ana", "mailstore1", "mailstore2"),
    ],
)
def test_ldap_user_lands_on_the_mailstore_its_entry_names(rcpt, user, store, other):
    tag, d = _send(rcpt)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    mbox = wait_for_mail(store, user, tag)
    assert f"by {GATEWAY}." in mbox
    assert not mailbox_has(other, user, tag)


def test_unknown_ldap_user_is_refused_at_rcpt():
    tag, d = _send("nobody-here@ldap-a.test")
    reply = d.reply("rcpt")
    assert reply is not None and reply[0] == 550, d.transcript
    assert "User unknown" in reply[1], d.transcript
    assert d.reply("data") is None  # no message accepted, so no bounce later
    time.sleep(3)
    assert not mailbox_has("outside", "dave", tag)


def test_passerelle_route_on_the_gateway():
    static = _route("alice@static-a.test")
    assert (static["kind"], static["mailer"], static["host"]) == ("static", "esmtp", "[mailstore1]")
    ana = _route("ana@ldap-a.test")
    assert (ana["kind"], ana["host"], ana["recipient"]) == (
        "ldap",
        "[mailstore1]",
        "ana@ldap-a.test",
    )
    assert ana["entry"]["dn"] == "uid=ana,ou=people,dc=lab,dc=passerelle,dc=test"
    ben = _route("ben@ldap-a.test")
    assert (ben["host"], ben["recipient"]) == ("[mailstore2]", "benm@ldap-a.test")
    unknown = _route("nobody-here@ldap-a.test")
    assert unknown["kind"] == "unknown-user" and unknown["rcpt_reply"].startswith("550 ")
    other = _route("x@unmanaged.test")
    assert other["kind"] == "unmanaged" and other["rcpt_reply"].startswith("550 5.7.1")
    text = podman_exec(GATEWAY, "passerelle", "route", "ben@ldap-a.test")
    assert "entry uid=ben,ou=people" in text and "benm@ldap-a.test" in text


def test_passerelle_route_from_the_controller_through_gateway():
    exe = Path(sys.executable).parent / "passerelle"
    res = subprocess.run(
        [
            str(exe),
            "route",
            "ana@ldap-a.test",
            "--gateway",
            GATEWAY,
            "--connect",
            f"podman exec {PREFIX}{{host}}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["host"] == "[mailstore1]"


def test_bind_password_files_and_directory_access():
    assert (
        podman_exec(GATEWAY, "stat", "-c", "%U:%G %a", "/etc/mail/passerelle-ldap.secret").strip()
        == "root:root 600"
    )
    assert (
        podman_exec(GATEWAY, "stat", "-c", "%U:%G %a", "/etc/passerelle/ldap.secret").strip()
        == "root:passerelle 640"
    )
    # Without the gateways' account, the directory shows nothing of the people branch.
    probe = (
        "import ldap; c = ldap.initialize('ldap://ldap1'); c.simple_bind_s('', ''); "
        "print(len(c.search_s('ou=people,dc=lab,dc=passerelle,dc=test', ldap.SCOPE_SUBTREE, "
        "'(mailLocalAddress=ana@ldap-a.test)')))"
    )
    out = podman_exec(GATEWAY, "python3", "-c", probe, check=False)
    assert out.strip() in ("0", ""), out


def test_directory_down_defers_then_delivers():
    # Debian's slapd unit (from its init script) may leave slapd running on stop: kill it all.
    podman_exec("ldap1", "systemctl", "stop", "slapd", check=False)
    podman_exec("ldap1", "systemctl", "kill", "--kill-whom=all", "slapd", check=False)
    try:
        tag, d = _send("ana@ldap-a.test")
        # Accepted (fail-open at RCPT) and queued: never a 5xx because the directory is down.
        assert d.reply("rcpt")[0] == 250, d.transcript
        assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
        # Static domains do not need the directory.
        stag, sd = _send("alice@static-a.test")
        assert sd.last[1] == 250, sd.transcript
        wait_for_mail("mailstore1", "alice", stag)
        deferred = _route("ana@ldap-a.test")
        assert deferred["kind"] == "deferred", deferred
        time.sleep(5)
        assert not mailbox_has("mailstore1", "ana", tag)
        assert "ana@ldap-a.test" in _queue_ids()
        podman_exec(GATEWAY, "sendmail", "-q")  # a queue run while slapd is still down
        assert not mailbox_has("mailstore1", "ana", tag)
        assert not mailbox_has("outside", "dave", tag)  # not bounced
    finally:
        podman_exec("ldap1", "systemctl", "start", "slapd")
    for _ in range(30):
        if podman_exec("ldap1", "systemctl", "is-active", "slapd", check=False).strip() == "active":
            break
        time.sleep(1)
    podman_exec(GATEWAY, "sendmail", "-q")
    mbox = wait_for_mail("mailstore1", "ana", tag)
    assert tag in mbox
    assert not mailbox_has("mailstore2", "ana", tag)
    assert not mailbox_has("outside", "dave", tag)
