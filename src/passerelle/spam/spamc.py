"""A spamd client speaking the spamc protocol (``SYMBOLS SPAMC/1.5``).

Request::

    SYMBOLS SPAMC/1.5\\r\\n
    Content-length: N\\r\\n
    User: passerelle\\r\\n
    \\r\\n
    <message>

Response::

    SPAMD/1.1 0 EX_OK\\r\\n
    Content-length: 23\\r\\n
    Spam: True ; 1000.0 / 5.0\\r\\n
    \\r\\n
    GTUBE,MISSING_DATE

Several spamd addresses are tried in order (failover): a host that cannot be reached, times
out, or answers with an error or a malformed response is skipped. Each host gets at most
``connect_timeout`` to accept and ``timeout`` for the whole exchange, so the worst case for
one message is ``len(hosts) * (connect_timeout + timeout)``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from passerelle.spam.marking import ScanResult

log = logging.getLogger("passerelle.spam")

_STATUS = re.compile(rb"^SPAMD/(\d+)\.(\d+) +(-?\d+) +(.*)$")
_SPAM = re.compile(
    r"^\s*(True|False|Yes|No)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*$", re.I
)
_RULE = re.compile(r"^[A-Za-z0-9_.:-]+$")
MAX_RESPONSE = 1_000_000


class SpamdError(Exception):
    """spamd could not give a verdict (unreachable, slow, error or garbage)."""


class SpamdProtocolError(SpamdError):
    """spamd answered something this client cannot read."""


def build_request(message: bytes, user: str = "", command: str = "SYMBOLS") -> bytes:
    head = [f"{command} SPAMC/1.5", f"Content-length: {len(message)}"]
    if user:
        head.append(f"User: {user}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + message


def parse_response(data: bytes) -> ScanResult:
    """Read a complete SYMBOLS (or CHECK/REPORT) response; SpamdProtocolError if malformed."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    if not lines or not lines[0]:
        raise SpamdProtocolError("empty response")
    m = _STATUS.match(lines[0])
    if m is None:
        raise SpamdProtocolError(f"bad status line: {lines[0][:80]!r}")
    code = int(m.group(3))
    if code != 0:
        raise SpamdError(f"spamd error {code}: {m.group(4).decode('ascii', 'replace')[:200]}")
    if not sep:
        raise SpamdProtocolError("response headers not terminated")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.decode("ascii", "replace").partition(":")
        if not colon:
            raise SpamdProtocolError(f"bad response header: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    spam = headers.get("spam")
    if spam is None:
        raise SpamdProtocolError("no Spam: header in response")
    sm = _SPAM.match(spam)
    if sm is None:
        raise SpamdProtocolError(f"bad Spam: header: {spam[:80]!r}")
    clen = headers.get("content-length")
    if clen is not None:
        if not clen.isdigit():
            raise SpamdProtocolError(f"bad Content-length: {clen!r}")
        if len(body) < int(clen):
            raise SpamdProtocolError("response body truncated")
        body = body[: int(clen)]
    text = body.decode("ascii", "replace").strip()
    rules: tuple[str, ...] = ()
    if text and _RULE.match(text.split(",")[0].strip()):
        rules = tuple(r.strip() for r in text.split(",") if r.strip())
        if not all(_RULE.match(r) for r in rules):
            raise SpamdProtocolError(f"bad rule list: {text[:80]!r}")
    return ScanResult(
        score=float(sm.group(2)),
        threshold=float(sm.group(3)),
        is_spam=sm.group(1).lower() in ("true", "yes"),
        rules=rules,
    )


def _connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address[5:]
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        family, _t, _p, _c, sockaddr = infos[0]
        s = socket.socket(family, socket.SOCK_STREAM)
        target = sockaddr
    s.settimeout(timeout)
    try:
        s.connect(target)  # type: ignore[arg-type]
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class SpamdClient:
    """Ask a list of spamd hosts, in order, for a verdict."""

    hosts: Sequence[str]
    connect_timeout: float = 2.0
    timeout: float = 30.0
    user: str = ""
    clock: Callable[[], float] = time.monotonic
    connect: Callable[[str, float], socket.socket] = field(default=_connect)

    def check_one(self, address: str, message: bytes) -> ScanResult:
        try:
            sock = self.connect(address, self.connect_timeout)
        except OSError as exc:
            raise SpamdError(f"{address}: cannot connect: {exc}") from None
        deadline = self.clock() + self.timeout
        try:
            with sock:
                sock.settimeout(self.timeout)
                sock.sendall(build_request(message, self.user))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                chunks: list[bytes] = []
                total = 0
                while True:
                    left = deadline - self.clock()
                    if left <= 0:
                        raise SpamdError(f"{address}: no answer within {self.timeout:g}s")
                    sock.settimeout(left)
                    data = sock.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
                    total += len(data)
                    if total > MAX_RESPONSE:
                        raise SpamdProtocolError(f"{address}: response too large")
        except (TimeoutError, socket.timeout):  # the same class from Python 3.10; not on 3.9
            raise SpamdError(f"{address}: no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise SpamdError(f"{address}: {exc}") from None
        try:
            return parse_response(b"".join(chunks))
        except SpamdError as exc:
            raise type(exc)(f"{address}: {exc}") from None

    def check(self, message: bytes) -> tuple[ScanResult, str]:
        """Verdict and the address that gave it; SpamdError when every host failed."""
        errors: list[str] = []
        for address in self.hosts:
            try:
                return self.check_one(address, message), address
            except SpamdError as exc:
                log.warning("spamd %s", exc)
                errors.append(str(exc))
        raise SpamdError("; ".join(errors) or "no spamd configured")
