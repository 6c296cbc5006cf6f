"""The MTA side of the milter protocol for the protocol tests: one client for every milter.

Built on ``miltertest``'s ``MilterConnection``; it plays each SMTP step the way sendmail does
after the option negotiation: a step the milter asked not to receive (``SMFIP_NO*``) is not
sent, a step it marked no-reply (``SMFIP_NR_*``) is sent without waiting for an answer (the
reply is then taken as continue), every other step waits for the milter's reply, which is
returned. Bodies are framed as raw bytes (miltertest's codec only takes ``str``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from miltertest import MilterConnection
from miltertest import constants as C

CONTINUE = (C.SMFIR_CONTINUE, {})

# Every "skip this step" bit and every "no reply for this step" bit of the negotiation: a
# milter's flags masked with these say exactly which steps it skips and which it never answers.
SKIP_BITS = (
    C.SMFIP_NOCONNECT
    | C.SMFIP_NOHELO
    | C.SMFIP_NOMAIL
    | C.SMFIP_NORCPT
    | C.SMFIP_NOBODY
    | C.SMFIP_NOHDRS
    | C.SMFIP_NOEOH
    | C.SMFIP_NOUNKNOWN
    | C.SMFIP_NODATA
)
NO_REPLY_BITS = (
    C.SMFIP_NR_CONN
    | C.SMFIP_NR_HELO
    | C.SMFIP_NR_MAIL
    | C.SMFIP_NR_RCPT
    | C.SMFIP_NR_DATA
    | C.SMFIP_NR_UNKN
    | C.SMFIP_NR_EOH
    | C.SMFIP_NR_BODY
    | C.SMFIP_NR_HDR
)
Reply = tuple[str, dict]


class MilterClient:
    """One SMTP connection through a milter listening on the unix socket ``path``."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
            self.conn = MilterConnection(self.sock)
            self.actions, self.protocol = self.conn.optneg_mta()
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- one step, as sendmail sends it --------------------------------------------------------
    def step(self, no: int, nr: int, cmd: str, **kw: object) -> Reply:
        if self.protocol & no:
            return CONTINUE
        if self.protocol & nr:
            self.conn._send(cmd, **kw)
            return CONTINUE
        return self.conn.send_ar(cmd, **kw)

    def macro(self, cmd: str, **macros: str) -> None:
        self.conn.send_macro(cmd, **macros)

    def connect(
        self, hostname: str, address: str, port: int = 25000, family: str | None = None
    ) -> Reply:
        if family is None:
            family = C.SMFIA_INET6 if ":" in address else C.SMFIA_INET
        return self.step(
            C.SMFIP_NOCONNECT,
            C.SMFIP_NR_CONN,
            C.SMFIC_CONNECT,
            hostname=hostname,
            family=family,
            port=port,
            address=address,
        )

    def helo(self, name: str) -> Reply:
        return self.step(C.SMFIP_NOHELO, C.SMFIP_NR_HELO, C.SMFIC_HELO, helo=name)

    def mail(self, sender: str) -> Reply:
        """``sender`` as on the wire (``<a@b>``)."""
        return self.step(C.SMFIP_NOMAIL, C.SMFIP_NR_MAIL, C.SMFIC_MAIL, args=[sender])

    def rcpt(self, rcpt: str) -> Reply:
        return self.step(C.SMFIP_NORCPT, C.SMFIP_NR_RCPT, C.SMFIC_RCPT, args=[rcpt])

    def data(self) -> Reply:
        return self.step(C.SMFIP_NODATA, C.SMFIP_NR_DATA, C.SMFIC_DATA)

    def header(self, name: str, value: str) -> Reply:
        return self.step(C.SMFIP_NOHDRS, C.SMFIP_NR_HDR, C.SMFIC_HEADER, name=name, value=value)

    def eoh(self) -> Reply:
        return self.step(C.SMFIP_NOEOH, C.SMFIP_NR_EOH, C.SMFIC_EOH)

    def body(self, body: bytes) -> list[Reply]:
        if self.protocol & C.SMFIP_NOBODY:
            return []
        out = []
        for start in range(0, len(body), C.MILTER_CHUNK_SIZE):
            chunk = body[start : start + C.MILTER_CHUNK_SIZE]
            self.sock.sendall(struct.pack("!I", len(chunk) + 1) + C.SMFIC_BODY.encode() + chunk)
            out.append(CONTINUE if self.protocol & C.SMFIP_NR_BODY else self.conn.recv())
        return out

    def eom(self, queue_id: str | None = None) -> list[Reply]:
        """The end of the message: every modification, then the final reply (last)."""
        if queue_id is not None:
            self.macro(C.SMFIC_BODYEOB, i=queue_id)
        return self.conn.send_eom()

    def close(self) -> None:
        try:
            self.conn._send(C.SMFIC_QUIT)
        except OSError:
            pass
        finally:
            self.sock.close()

    # -- a whole transaction ----------------------------------------------------------------------
    def message(
        self, headers: Iterable[tuple[str, str]], body: bytes, queue_id: str | None = None
    ) -> list[Reply]:
        """DATA, the headers, the body and the end of message; every step before EOM must be
        answered with continue."""
        for r in (self.data(), *(self.header(n, v) for n, v in headers), self.eoh()):
            assert r[0] == C.SMFIR_CONTINUE, r
        for r in self.body(body):
            assert r[0] == C.SMFIR_CONTINUE, r
        return self.eom(queue_id)
