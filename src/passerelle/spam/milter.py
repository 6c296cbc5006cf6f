"""The pymilter milter: collect the message, ask the Scanner at end of message, apply edits.

The only module of the spam area that imports pymilter (``Milter``).

Protocol steps (negotiated from the callbacks defined here, see ``passerelle.milterrun``):
connect, HELO, MAIL, each header and each body chunk are sent without waiting for a reply;
only end of message is answered; RCPT, DATA, end of headers and unknown commands are not sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import Milter

from passerelle import decisionlog
from passerelle.logsetup import setup_logging
from passerelle.milterheaders import apply
from passerelle.milterrun import bind, run_milter
from passerelle.spam.config import SpamConfig
from passerelle.spam.marking import Header, received_header
from passerelle.spam.scanner import Scanner

log = logging.getLogger("passerelle.spam")


class SpamMilter(Milter.Base):
    """One instance per SMTP connection (libmilter thread)."""

    ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.max_size = scanner.config.max_size
        self.client = "?"
        self.client_name = ""
        self.client_ip = ""
        self.helo_name = ""
        self.mail_from: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.headers: list[Header] = []
        self._body = bytearray()
        self.size = 0
        self.queue_id = ""

    @Milter.noreply
    def connect(self, hostname: str, family: Any, hostaddr: Any) -> int:
        ip = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else hostaddr
        self.client = f"{hostname}[{ip}]"
        self.client_name, self.client_ip = hostname or "", str(ip or "")
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, heloname: str) -> int:
        self.helo_name = heloname or ""
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        self.mail_from = mailfrom or ""
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        self.size += len(name) + len(value.encode("utf-8", "surrogateescape")) + 4
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        # Kept: at most max_size + 1 bytes (a bigger message is scanned on its first
        # max_size bytes, headers included, see Scanner.scan).
        self.size += len(chunk)
        room = self.max_size + 1 - len(self._body)
        if room > 0:
            self._body += chunk[:room]
        return Milter.CONTINUE

    def eom(self) -> int:
        self.queue_id = self.getsymval("i") or "?"
        received = received_header(
            self.helo_name,
            self.client_name,
            self.client_ip,
            self.getsymval("j") or self.scanner.config.hostname,
            self.queue_id,
            time.time(),
            self.mail_from,
        )
        outcome = self.scanner.scan(self.headers, bytes(self._body), self.size + 2, received)
        log.info("%s", decisionlog.spam_line(self.queue_id, self.client, outcome.summary))
        if outcome.action == "tempfail":
            self.setreply("451", "4.7.1", "Content scanner unavailable, try again later")
            self._reset()
            return Milter.TEMPFAIL
        apply(self, outcome.edits)
        self._reset()
        return Milter.ACCEPT

    def abort(self) -> int:
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        return Milter.CONTINUE


def serve(config: SpamConfig) -> None:
    setup_logging("spam", config.log_level)
    scanner = Scanner.from_config(config)
    log.info(
        "spamd %s, max_size %d, on_error %s, ocr %s",
        ",".join(config.spamd),
        config.max_size,
        config.on_error,
        "on" if config.ocr.enabled else "off",
    )
    run_milter("spam", bind(SpamMilter, scanner, "spam"), config.socket, config.milter_timeout)
