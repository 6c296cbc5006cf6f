"""LDAP routing (issue 7): real slapd on ldap1, sendmail's ldap_routing on the gateway.

ldap-a.test is LDAP-routed (inventory/lab): ana's entry names mailstore1, ben's names
mailstore2 and rewrites him to benm. Both users exist on both mailstores, so delivery to the
right one proves the entry was used. Mail is sent from outside's main address (not
greylisted). sendmail asks the directory through passerelle-route.service (a socket map with
a cache: an entry 300 s, no entry 60 s); tests that need the directory itself restart it
first, which empties the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labsmtp import (
    PREFIX,
    mailbox_has,
    message,
    podman_exec,
    smtp,
    wait_for_mail,
    wait_ldap_answers,
    wait_unix_socket,
)

GATEWAY = "gw1"
SENDER = "dave@internet.test"


def _send(rcpt: str):
    tag, text = message(SENDER, rcpt)
    return tag, smtp("outside", GATEWAY, SENDER, [rcpt], data=text)


def _route(address: str) -> dict:
    return json.loads(podman_exec(GATEWAY, "passerelle", "route", address, "--json"))


def _queue_ids() -> str:
    return podman_exec(GATEWAY, "mailq", check=False)


def _wait_active(host: str, unit: str) -> None:
    for _ in range(30):
        if podman_exec(host, "systemctl", "is-active", unit, check=False).strip() == "active":
            return
        time.sleep(1)
    raise AssertionError(f"{unit} not active on {host}")


def _fresh_cache() -> None:
    """Restart the socket map daemon: its cache starts empty."""
    podman_exec(GATEWAY, "systemctl", "restart", "passerelle-route")
    _wait_listening()


def _wait_listening() -> None:
    """Wait until the socket map daemon accepts connections on its socket.

    The unit is Type=notify ("active" once the socket listens), but after a crash systemd
    restarts it after RestartSec: in between the old socket file is still there and a lookup
    is a temporary failure, so the probe connects rather than looks for the file.
    """
    _wait_active(GATEWAY, "passerelle-route")
    wait_unix_socket(GATEWAY, "/run/passerelle/route.sock", timeout=30)


def _stop_slapd() -> None:
    # slapd runs under the role's native unit: stop waits until it has exited.
    podman_exec("ldap1", "systemctl", "stop", "slapd")
    assert podman_exec("ldap1", "pgrep", "-x", "slapd", check=False).strip() == ""


def _start_slapd() -> None:
    """Start slapd and leave the directory as the tests found it: answering searches."""
    podman_exec("ldap1", "systemctl", "start", "slapd")
    _wait_active("ldap1", "slapd")
    wait_ldap_answers("ldap1")


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
    assert reply[1].startswith("5.1.1 "), d.transcript
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
    # sendmail no longer binds itself (the socket map daemon does): no password for it.
    assert "passerelle-ldap.secret" not in podman_exec(GATEWAY, "ls", "/etc/mail")
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


def test_sendmail_asks_the_socket_map_daemon():
    assert podman_exec(GATEWAY, "systemctl", "is-active", "passerelle-route").strip() == "active"
    assert podman_exec(GATEWAY, "systemctl", "is-enabled", "passerelle-route").strip() == "enabled"
    cf = podman_exec(GATEWAY, "cat", "/etc/mail/sendmail.cf")
    assert "Kldapmh socket -T<TMPF> unix:/run/passerelle/route.sock" in cf
    assert "Kldapmra socket -T<TMPF> unix:/run/passerelle/route.sock" in cf
    assert '$#error $@ 5.1.1 $: "550 User unknown"' in cf
    assert "confLDAP_DEFAULT_SPEC" not in cf and "ldap -1" not in cf
    sock = podman_exec(GATEWAY, "stat", "-c", "%U:%G %a %F", "/run/passerelle/route.sock")
    assert sock.strip() == "passerelle:passerelle 660 socket", sock
    # The daemon answers the protocol itself (as sendmail asks: one netstring per lookup).
    probe = (
        "import socket; s = socket.socket(socket.AF_UNIX); "
        "s.connect('/run/passerelle/route.sock'); "
        "[s.sendall(b'%d:%s,' % (len(q), q)) for q in "
        "(b'ldapmh ben@ldap-a.test', b'ldapmra ben@ldap-a.test', b'ldapmh nobody@ldap-a.test')]; "
        "import time; time.sleep(1); print(s.recv(4096).decode())"
    )
    out = podman_exec(GATEWAY, "python3", "-c", probe).strip()
    assert out == "15:OK [mailstore2],19:OK benm@ldap-a.test,9:NOTFOUND ,", out


def test_cached_answers_need_no_directory_within_their_ttl():
    _fresh_cache()
    tag1, d1 = _send("ana@ldap-a.test")
    assert d1.last[1] == 250, d1.transcript
    _, d2 = _send("nobody-cached@ldap-a.test")
    assert d2.reply("rcpt")[0] == 550, d2.transcript
    _stop_slapd()
    try:
        # Same recipients again, within their TTLs (60 s for the unknown one): answered from
        # the cache, no search.
        _, d4 = _send("nobody-cached@ldap-a.test")
        assert d4.reply("rcpt")[0] == 550, d4.transcript
        tag2, d3 = _send("ana@ldap-a.test")
        assert d3.reply("rcpt")[0] == 250 and d3.last[1] == 250, d3.transcript
        wait_for_mail("mailstore1", "ana", tag1)
        # Delivered at once (not queued for lack of a directory answer).
        wait_for_mail("mailstore1", "ana", tag2, timeout=60)
        # Another user is not in the cache: the directory is needed, so queued.
        tag3, d5 = _send("ben@ldap-a.test")
        assert d5.reply("rcpt")[0] == 250 and d5.last[1] == 250, d5.transcript
        time.sleep(3)
        assert not mailbox_has("mailstore2", "benm", tag3)
    finally:
        _start_slapd()
    podman_exec(GATEWAY, "sendmail", "-q")
    wait_for_mail("mailstore2", "benm", tag3)
    assert not mailbox_has("outside", "dave", tag3)


def test_socket_map_daemon_down_queues_never_bounces():
    podman_exec(GATEWAY, "systemctl", "stop", "passerelle-route")
    try:
        tag, d = _send("ana@ldap-a.test")
        # sendmail cannot open the map: a temporary failure, the recipient is queued.
        assert d.reply("rcpt")[0] == 250, d.transcript
        assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
        time.sleep(3)
        podman_exec(GATEWAY, "sendmail", "-q")  # a queue run while the daemon is down
        time.sleep(3)
        assert "ana@ldap-a.test" in _queue_ids()
        assert not mailbox_has("mailstore1", "ana", tag)
        assert not mailbox_has("mailstore2", "ana", tag)
        assert not mailbox_has("outside", "dave", tag)  # not bounced
    finally:
        podman_exec(GATEWAY, "systemctl", "start", "passerelle-route")
    _wait_listening()
    # Without restarting sendmail, new sessions use the daemon again...
    _, d2 = _send("nobody-here@ldap-a.test")
    assert d2.reply("rcpt")[0] == 550, d2.transcript
    # ...and the next queue run delivers what was queued.
    podman_exec(GATEWAY, "sendmail", "-q")
    wait_for_mail("mailstore1", "ana", tag)
    assert not mailbox_has("outside", "dave", tag)


def test_socket_map_daemon_restarted_after_a_crash():
    before = int(
        podman_exec(GATEWAY, "systemctl", "show", "-p", "MainPID", "--value", "passerelle-route")
    )
    podman_exec(GATEWAY, "kill", "-KILL", str(before))
    for _ in range(30):
        time.sleep(1)
        now = podman_exec(
            GATEWAY, "systemctl", "show", "-p", "MainPID", "--value", "passerelle-route"
        ).strip()
        if now not in ("0", str(before)):
            break
    _wait_listening()
    tag, d = _send("ana@ldap-a.test")
    assert d.last[1] == 250, d.transcript
    wait_for_mail("mailstore1", "ana", tag)


def test_directory_down_defers_then_delivers():
    _fresh_cache()  # ana must not be answered from the cache
    _stop_slapd()
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
        _start_slapd()
    podman_exec(GATEWAY, "sendmail", "-q")
    mbox = wait_for_mail("mailstore1", "ana", tag)
    assert tag in mbox
    assert not mailbox_has("mailstore2", "ana", tag)
    assert not mailbox_has("outside", "dave", tag)
