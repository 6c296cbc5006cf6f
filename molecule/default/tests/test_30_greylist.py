"""Greylisting on the gateways (issue 4): real sendmail, the greylist milter and MariaDB.

The lab's delays are short (inventory/lab/group_vars/all/greylist.yml). The tests send from
outside's extra address .245, which is not whitelisted (outside's main address .250 and the
fleet are, so that the other tests are not delayed); each test uses a new sender, hence new
triplets.
"""

from __future__ import annotations

import time
import uuid

import pytest
import testinfra
import tomllib
from labsmtp import (
    NET,
    PREFIX,
    mailbox_has,
    message,
    needs,
    podman_exec,
    present,
    smtp,
    wait_for_mail,
)

SOURCE = f"{NET}.245"
GATEWAYS = present("gw1", "gw2")
CONFIG = "/etc/passerelle/greylist.toml"
SOCKET = "/run/passerelle/greylist.sock"


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


@pytest.fixture(scope="module")
def min_delay() -> int:
    cfg = tomllib.loads(podman_exec("gw1", "cat", CONFIG))
    delay = _duration(cfg["greylist"]["min_delay"])
    assert delay <= 120, "the lab's min_delay should be short (inventory/lab)"
    return delay


def _sender() -> str:
    return f"greylist-{uuid.uuid4().hex[:10]}@internet.test"


def _headers_of(mbox: str, tag: str) -> str:
    """Header block of the message of the mbox that carries tag."""
    for msg in ("\n" + mbox).split("\nFrom ")[1:]:
        if tag in msg:
            return msg.split("\n\n", 1)[0]
    raise AssertionError(f"{tag} not in the mailbox")


def _send(gateway: str, sender: str, rcpt: str, tag_text: tuple[str, str]):
    _tag, text = tag_text
    return smtp("outside", gateway, sender, [rcpt], data=text, source=SOURCE)


def _assert_greylisted(d) -> None:
    reply = d.reply("rcpt")
    assert reply is not None, d.transcript
    assert reply[0] == 451 and "4.7.1" in reply[1], d.transcript
    assert "greylisted" in reply[1].lower(), d.transcript
    assert d.reply("eom") is None, d.transcript


def _assert_accepted(d) -> None:
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_milter_running_and_socket_present(gateway):
    host = testinfra.get_host(f"podman://{PREFIX}{gateway}")
    svc = host.service("passerelle-greylist")
    assert svc.is_running and svc.is_enabled
    assert host.file(SOCKET).is_socket
    assert host.service("passerelle-greylist-purge.timer").is_enabled
    assert host.run(f"/usr/local/bin/passerelle greylist check-config {CONFIG}").rc == 0
    # sendmail knows the milter: first in the list, no F= flag (a dead milter lets mail pass).
    cf = host.file("/etc/mail/sendmail.cf").content_string
    assert f"Xgreylist, S=unix:{SOCKET}, F=," in cf
    # ...and reaches it (sendmail logs "Milter (greylist): ... error" when it cannot).
    log = host.run("journalctl -t sm-mta --no-pager -q | grep -i 'milter (greylist)' || true")
    assert "error" not in log.stdout.lower(), log.stdout


def test_mariadb_running_on_db1():
    host = testinfra.get_host(f"podman://{PREFIX}db1")
    assert host.service("mariadb").is_running
    assert host.socket(f"tcp://{NET}.31:3306").is_listening


def test_first_attempt_refused_then_retry_accepted_with_x_delayed(min_delay):
    sender, rcpt = _sender(), "alice@static-a.test"
    mail = message(sender, rcpt)
    first = time.monotonic()
    _assert_greylisted(_send("gw1", sender, rcpt, mail))
    # A retry before the delay is refused again.
    _assert_greylisted(_send("gw1", sender, rcpt, mail))
    time.sleep(max(0.0, first + min_delay + 2 - time.monotonic()))
    d = _send("gw1", sender, rcpt, mail)
    _assert_accepted(d)
    headers = _headers_of(wait_for_mail("mailstore1", "alice", mail[0]), mail[0])
    assert "X-Delayed:" in headers, headers
    assert "by gw1.lab.passerelle.test" in headers.split("X-Delayed:", 1)[1].split("\n")[0]


@needs("gw2", "mailstore2")
def test_triplet_seen_on_gw1_passes_on_gw2(min_delay):
    sender, rcpt = _sender(), "bob@static-b.test"
    mail = message(sender, rcpt)
    first = time.monotonic()
    _assert_greylisted(_send("gw1", sender, rcpt, mail))
    time.sleep(max(0.0, first + min_delay + 2 - time.monotonic()))
    d = _send("gw2", sender, rcpt, mail)
    _assert_accepted(d)
    headers = _headers_of(wait_for_mail("mailstore2", "bob", mail[0]), mail[0])
    delayed = headers.split("X-Delayed:", 1)[1].split("\n")[0] if "X-Delayed:" in headers else ""
    assert "by gw2.lab.passerelle.test" in delayed, headers


def _mariadb(action: str) -> None:
    podman_exec("db1", "systemctl", action, "mariadb")


def test_store_down_mail_flows_under_accept_policy():
    tags = []
    _mariadb("stop")
    try:
        for gateway, rcpt, store in [
            case
            for case in [
                ("gw1", "alice@static-a.test", "mailstore1"),
                ("gw2", "bob@static-b.test", "mailstore2"),
                ("gw1", "carol@static-b.test", "mailstore2"),
            ]
            if present(case[0], case[2]) == [case[0], case[2]]
        ]:
            sender = _sender()
            mail = message(sender, rcpt)
            started = time.monotonic()
            d = _send(gateway, sender, rcpt, mail)
            _assert_accepted(d)
            assert time.monotonic() - started < 30, "a decision must not wait for the store"
            tags.append((store, rcpt.split("@")[0], mail[0]))
        # Nothing is lost: every message arrives, marked as not greylisted.
        for store, user, tag in tags:
            headers = _headers_of(wait_for_mail(store, user, tag), tag)
            assert "X-Greylist: skipped" in headers, headers
            assert "X-Delayed" not in headers
    finally:
        _mariadb("start")
    # The lab is left as found: once the store is back, greylisting is on again.
    deadline = time.monotonic() + 60
    while True:
        sender = _sender()
        d = _send("gw1", sender, "alice@static-a.test", message(sender, "alice@static-a.test"))
        reply = d.reply("rcpt")
        if reply and reply[0] == 451:
            break
        assert time.monotonic() < deadline, f"greylisting did not come back:\n{d.transcript}"
        time.sleep(3)
    assert not mailbox_has("mailstore1", "alice", sender)
