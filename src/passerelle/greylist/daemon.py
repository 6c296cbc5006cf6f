"""The greylist milter: one ``GreylistMilter`` (a ``Milter.Base``) per SMTP connection, decisions
at RCPT. With the SQLite store ``passerelle.milterloop`` serves it (one thread, no libmilter);
with the MariaDB store libmilter does (a thread per connection: a decision may wait on the
network).

Per recipient: a greylisted recipient gets ``451 4.7.1`` while the others of the same message
go on. The header (``X-Delayed`` or ``X-Greylist: skipped``) is added at end of message, after
every copy of those two the client sent has been removed (delayed or not): the milter asks for
the headers without a reply to each (``@noreply``) and only counts its own names; it never
asks for the body.

Protocol steps (negotiated from the callbacks defined here, see ``passerelle.milterrun``):
connect, MAIL and header are sent without waiting for a reply; RCPT and end of message are
answered; HELO, DATA, end of headers, body and unknown commands are not sent at all.
Most greylisted sessions end after one RCPT: the connection object is small and everything
about the client is worked out once, at connect.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import Milter

from passerelle.greylist.config import GreylistConfig
from passerelle.greylist.engine import OWNED_HEADERS, Client, Greylister
from passerelle.greylist.store import open_store
from passerelle.logsetup import setup_logging
from passerelle.milterheaders import HeaderEdit, OwnedHeaders, apply
from passerelle.milterloop import MilterLoop
from passerelle.milterrun import bind, run_milter

log = logging.getLogger("passerelle.greylist")


def _macro(m: Milter.Base, name: str) -> str | None:
    try:
        v = m.getsymval(name)
    except Exception:
        return None
    return v or None


class GreylistMilter(Milter.Base):
    ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS

    # The connection's state starts as these class attributes: a connection object is made
    # per SMTP connection and most live for one RCPT, so only what changes is set on it.
    client: Client | None = None
    auto: bool | None = None
    owned: OwnedHeaders | None = None  # made at the first header
    sender = ""
    exemption: str | None = None
    delay: float | None = None
    skipped = False

    def __init__(self, engine: Greylister) -> None:
        self.engine = engine

    def _reset(self) -> None:
        self.sender = ""
        self.exemption = None
        self.delay = None
        self.skipped = False
        if self.owned is not None:
            self.owned.reset()

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        if family in (socket.AF_INET, socket.AF_INET6) and hostaddr:
            ip = str(hostaddr[0])
        else:
            ip = _macro(self, "{client_addr}") or str(hostname)
        verified = (_macro(self, "{client_resolve}") or "").upper() == "OK"
        self.client = self.engine.client(ip, hostname, verified)
        self.auto = None
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        if self.client is None:  # MTA without connect information
            self.client = self.engine.client(_macro(self, "{client_addr}") or "unknown")
        self.sender = mailfrom
        auth = _macro(self, "{auth_authen}")
        self.exemption = self.engine.message_exemption(self.client, mailfrom, auth)
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        assert self.client is not None
        v = self.engine.check(self.client, self.sender, to, self.exemption, self.auto)
        if v.auto is not None:
            self.auto = v.auto
        if v.accept:
            if v.delay is not None:
                self.delay = max(self.delay or 0.0, v.delay)
            if v.skipped:
                self.skipped = True
            return Milter.CONTINUE
        code, xcode, text = v.reply or ("451", "4.7.1", "greylisted, retry later")
        self.setreply(code, xcode, text)
        return Milter.TEMPFAIL

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        if self.owned is None:
            self.owned = OwnedHeaders(OWNED_HEADERS)
        self.owned.see(name)
        return Milter.CONTINUE

    def eom(self) -> int:
        edits = self.owned.deletions() if self.owned is not None else []
        if self.delay is not None:
            edits.append(HeaderEdit("add", *self.engine.delayed_header(self.delay)))
        elif self.skipped:
            edits.append(HeaderEdit("add", *self.engine.skipped_header()))
        apply(self, edits)
        self._reset()
        return Milter.ACCEPT

    def abort(self) -> int:
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        return Milter.CONTINUE


def serve(cfg: GreylistConfig) -> None:
    """Run the milter until stopped (SIGTERM/SIGINT)."""
    setup_logging("greylist", cfg.log_level)
    assert cfg.store_url is not None
    store = open_store(cfg.store_url, cfg.store_timeout, serial=True)
    try:
        before, after = store.migrate()
        if before != after:
            log.info("greylist store schema upgraded from %d to %d", before, after)
    except Exception as exc:
        log.error("greylist store unavailable at start (%s); policy %s", exc, cfg.on_store_error)
        store.discard()
    engine = Greylister(cfg, store)
    engine.start_background()
    binding = bind(GreylistMilter, engine, "greylist")
    try:
        if store.serial:
            # SQLite: every decision takes microseconds; one thread serves every connection
            # (passerelle.milterloop), without libmilter's thread per connection.
            MilterLoop("greylist", binding, cfg.socket, cfg.milter_timeout).serve()
        else:
            # MariaDB: a decision is a round trip that may wait store_timeout; libmilter's
            # threads let the other connections go on meanwhile.
            run_milter("greylist", binding, cfg.socket, cfg.milter_timeout)
    finally:
        engine.close()
