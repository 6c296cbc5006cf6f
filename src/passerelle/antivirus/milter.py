"""The content milter: one object per SMTP connection, the message spooled to a temp file.

Protocol steps (negotiated from the callbacks defined here, see ``passerelle.milterrun``):
connect (the client), MAIL, RCPT (the envelope), each header (collected for the scan, our own
header names counted to strip forged copies), end of headers and each body chunk are sent
without waiting for a reply; only end of message is answered; HELO, DATA and unknown commands
are not sent.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import Milter

from passerelle import decisionlog
from passerelle.antivirus.config import AntivirusConfig
from passerelle.antivirus.engine import (
    ACCEPT,
    DISCARD,
    OWNED_HEADERS,
    REJECT,
    Engine,
    Envelope,
    Verdict,
)

log = logging.getLogger("passerelle.antivirus")
SPOOL_MEMORY = 1024 * 1024
_OWNED = {h.lower() for h in OWNED_HEADERS}
REPLBODY_CHUNK = 65535


def _addr(a: str) -> str:
    a = a.strip()
    return a[1:-1] if a.startswith("<") and a.endswith(">") else a


class AntivirusMilter(Milter.Base):
    """One instance per SMTP connection (libmilter thread), bound with
    ``milterrun.bind(AntivirusMilter, engine, "antivirus")``."""

    # headers added, forged copies of ours deleted, bodies replaced (strip rules)
    ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.client_ip = ""
        self.client_host = ""
        self._reset()

    def _reset(self) -> None:
        self.env = Envelope(client_ip=self.client_ip, client_host=self.client_host)
        self.headers: list[tuple[str, str]] = []
        # Copies of the headers this milter owns sent by the client: (name, occurrence).
        self.forged: list[tuple[str, int]] = []
        self._counts: dict[str, int] = {}
        self.spool: Any = None
        self.size = 0
        self.in_body = False

    def _close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    # -- callbacks ------------------------------------------------------------------------
    @Milter.noreply
    def connect(self, IPname: str, family: int, hostaddr: Any) -> int:
        self.client_host = IPname or ""
        if isinstance(hostaddr, tuple) and hostaddr:
            self.client_ip = str(hostaddr[0])
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *args: str) -> int:
        self._close_spool()
        self._reset()
        self.env.sender = _addr(mailfrom)
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *args: str) -> int:
        self.env.recipients.append(_addr(to))
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        low = name.lower()
        if low in _OWNED:
            self._counts[low] = self._counts.get(low, 0) + 1
            self.forged.append((name, self._counts[low]))
        line = f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
        self.spool.write(line)
        self.size += len(line)
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        self.spool.write(b"\r\n")
        self.size += 2
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.spool.write(chunk)
        self.size += len(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.env.queue_id = self.getsymval("i") or ""
        v = self.engine.process(self.env, self.headers, self.spool, self.size)
        log.info(
            "%s",
            decisionlog.antivirus_line(
                self.env.queue_id,
                self.env.sender,
                len(self.env.recipients),
                self.size,
                self.client_host,
                self.client_ip,
                v.log,
                v.action,
            ),
        )
        self._close_spool()
        if v.action == ACCEPT:
            self._own_headers(v)
            if v.body is not None:
                for i in range(0, len(v.body), REPLBODY_CHUNK):
                    self.replacebody(v.body[i : i + REPLBODY_CHUNK])
            return Milter.ACCEPT
        if v.action == DISCARD:
            return Milter.DISCARD
        self.setreply(v.code, v.xcode, v.text)
        return Milter.REJECT if v.action == REJECT else Milter.TEMPFAIL

    def _own_headers(self, v: Verdict) -> None:
        """Delete the client's copies of our headers (last occurrence first, so the
        indexes counted in ``header`` stay valid), then add ours."""
        for name, index in reversed(self.forged):
            self.chgheader(name, index, "")
        for name, value in v.headers:
            self.addheader(name, value)

    def abort(self) -> int:
        self._close_spool()
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        self._close_spool()
        return Milter.CONTINUE


def serve(cfg: AntivirusConfig) -> None:
    from passerelle.milterrun import bind, run_milter

    engine = Engine(cfg)
    run_milter(
        "antivirus", bind(AntivirusMilter, engine, "antivirus"), cfg.socket, cfg.milter_timeout
    )
