"""The spam milter's callbacks (milter context stubbed): the Received line spamd is shown
carries the session's client and MAIL FROM, which SpamAssassin's SPF check reads."""

from __future__ import annotations

import socket
from dataclasses import replace

from passerelle.spam.config import SpamConfig
from passerelle.spam.marking import ScanResult
from passerelle.spam.milter import SpamMilter
from passerelle.spam.scanner import Scanner


class FakeClient:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def check(self, message: bytes) -> tuple[ScanResult, str]:
        self.messages.append(message)
        return ScanResult(1.0, 5.0, False, ()), "127.0.0.1:783"


def _session(mail_from: str) -> bytes:
    client = FakeClient()
    milter = SpamMilter(Scanner(replace(SpamConfig(hostname="gw1")), client))
    milter._protocol = 0  # no NOREPLY negotiated: the callbacks' own return codes
    milter.getsymval = lambda name: {"i": "5AR1", "j": "gw1.lab"}.get(name)  # type: ignore[method-assign]
    milter.addheader = milter.chgheader = lambda *a, **k: None  # type: ignore[method-assign]
    milter.connect("[192.0.2.7]", socket.AF_INET, ("192.0.2.7", 2525))
    milter.hello("client.example.test")
    milter.envfrom(mail_from, "SIZE=10")
    milter.header("Subject", "Hi")
    milter.body(b"hello\r\n")
    milter.eom()
    assert len(client.messages) == 1
    return client.messages[0].split(b"\r\n", 1)[0]


def test_spamd_sees_the_envelope_sender_in_the_received_line():
    line = _session("<dave@internet.test>")
    assert line.startswith(
        b"Received: from client.example.test ([192.0.2.7]) by gw1.lab with ESMTP id 5AR1 "
        b"(envelope-from <dave@internet.test>); "
    ), line


def test_the_null_sender_is_written_empty():
    assert b"(envelope-from <>); " in _session("<>")


def test_each_message_of_a_session_has_its_own_sender():
    client = FakeClient()
    milter = SpamMilter(Scanner(replace(SpamConfig(hostname="gw1")), client))
    milter._protocol = 0
    milter.getsymval = lambda name: None  # type: ignore[method-assign]
    milter.addheader = milter.chgheader = lambda *a, **k: None  # type: ignore[method-assign]
    milter.connect("[192.0.2.7]", socket.AF_INET, ("192.0.2.7", 2525))
    milter.hello("client.example.test")
    for sender in ("<a@one.test>", "<b@two.test>"):
        milter.envfrom(sender)
        milter.header("Subject", "Hi")
        milter.eom()
    assert b"(envelope-from <a@one.test>)" in client.messages[0]
    assert b"(envelope-from <b@two.test>)" in client.messages[1]
