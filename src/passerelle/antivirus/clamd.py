"""A small clamd client: ``zINSTREAM`` over TCP or a unix socket, failover, bounded waits."""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 64 * 1024

CLEAN = "clean"
INFECTED = "infected"
TOO_LARGE = "too_large"
ERROR = "error"
# clamd stopped at one of its own scan limits (MaxScanSize, MaxFileSize, MaxRecursion,
# MaxFiles...) and said so (AlertExceedsMax): the content was not fully scanned.
LIMITS = "limits"
_LIMITS_PREFIX = "Heuristics.Limits.Exceeded"


@dataclass(frozen=True)
class ScanResult:
    status: str  # clean | infected | too_large | limits | error
    signature: str = ""
    detail: str = ""
    host: str = ""
    elapsed: float = 0.0

    @property
    def infected(self) -> bool:
        return self.status == INFECTED


@dataclass(frozen=True)
class SignatureVersion:
    engine: str
    version: int | None
    date: str

    @property
    def key(self) -> str:
        """What identifies the signature set (changes when freshclam loads new signatures)."""
        return f"{self.version}/{self.date}" if self.version is not None else self.engine


class ClamdUnavailable(OSError):
    """No clamd answered."""


_FOUND = re.compile(r"^(?:stream: )?(?P<sig>.+) FOUND$")


def parse_reply(text: str) -> tuple[str, str]:
    """Map a clamd INSTREAM reply to (status, signature or detail)."""
    t = text.strip("\0\r\n ")
    rest = t[8:] if t.startswith("stream: ") else t
    if rest == "OK":
        return CLEAN, ""
    if "size limit exceeded" in t:
        return TOO_LARGE, t
    if t.endswith(" ERROR") or t.endswith("ERROR"):
        return ERROR, t
    m = _FOUND.match(t)
    if m:
        if m.group("sig").startswith(_LIMITS_PREFIX):
            return LIMITS, m.group("sig")
        return INFECTED, m.group("sig")
    return ERROR, f"unexpected reply: {t[:200]!r}"


def parse_version(text: str) -> SignatureVersion:
    """``ClamAV 1.0.5/27100/Mon Nov 20 08:30:00 2023`` -> engine, db version, db date."""
    t = text.strip("\0\r\n ")
    parts = t.split("/", 2)
    version: int | None = None
    if len(parts) >= 2 and parts[1].strip().isdigit():
        version = int(parts[1])
    return SignatureVersion(parts[0], version, parts[2] if len(parts) == 3 else "")


def _connect(spec: str, connect_timeout: float) -> socket.socket:
    if spec.startswith("unix:") or spec.startswith("/"):
        path = spec[5:] if spec.startswith("unix:") else spec
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(connect_timeout)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        return s
    if spec.startswith("tcp:"):
        spec = spec[4:]
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    return socket.create_connection((host, int(port)), timeout=connect_timeout)


def _read_reply(s: socket.socket, deadline: float, limit: int = 4096) -> str:
    buf = b""
    while b"\0" not in buf and len(buf) < limit:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        data = s.recv(4096)
        if not data:
            break
        buf += data
    return buf.split(b"\0", 1)[0].decode("utf-8", "replace")


class ClamdClient:
    """Talks to one or more clamd (tried in order; the next one when one fails)."""

    def __init__(
        self,
        endpoints: Iterable[str],
        connect_timeout: float = 2.0,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = list(endpoints)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.clock = clock

    def _scan_one(self, spec: str, data: BinaryIO) -> ScanResult:
        start = self.clock()
        s = _connect(spec, self.connect_timeout)
        deadline = time.monotonic() + self.timeout
        with s:
            early: str | None = None
            try:
                s.settimeout(self.timeout)
                s.sendall(b"zINSTREAM\0")
                while True:
                    chunk = data.read(CHUNK)
                    if not chunk:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("clamd scan timed out")
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    s.sendall(struct.pack("!L", len(chunk)) + chunk)
                s.sendall(b"\0\0\0\0")
            except (BrokenPipeError, ConnectionResetError):
                # clamd closes the stream early (size limit): its reply is still readable.
                early = ""
            reply = _read_reply(s, deadline)
            if early is not None and not reply:
                raise ConnectionResetError("clamd closed the connection")
        status, info = parse_reply(reply)
        elapsed = self.clock() - start
        if status == INFECTED:
            return ScanResult(status, signature=info, host=spec, elapsed=elapsed)
        return ScanResult(status, detail=info, host=spec, elapsed=elapsed)

    def scan(self, data: BinaryIO | bytes) -> ScanResult:
        """Scan a stream; on failure of every clamd the result has status ``error``."""
        if isinstance(data, (bytes, bytearray)):
            import io

            data = io.BytesIO(data)
        start_pos = data.tell()
        errors: list[str] = []
        for spec in self.endpoints:
            data.seek(start_pos)
            try:
                res = self._scan_one(spec, data)
            except (OSError, ValueError) as exc:
                errors.append(f"{spec}: {exc.__class__.__name__}: {exc}")
                continue
            if res.status == ERROR:
                errors.append(f"{spec}: {res.detail}")
                continue
            return res
        return ScanResult(ERROR, detail="; ".join(errors) or "no clamd configured")

    def _command(self, spec: str, command: bytes) -> str:
        s = _connect(spec, self.connect_timeout)
        with s:
            s.settimeout(self.timeout)
            s.sendall(b"z" + command + b"\0")
            return _read_reply(s, time.monotonic() + self.timeout)

    def version(self) -> SignatureVersion:
        """Signature version of the first clamd that answers ``VERSION``."""
        errors: list[str] = []
        for spec in self.endpoints:
            try:
                return parse_version(self._command(spec, b"VERSION"))
            except OSError as exc:
                errors.append(f"{spec}: {exc}")
        raise ClamdUnavailable("; ".join(errors) or "no clamd configured")

    def ping(self) -> bool:
        for spec in self.endpoints:
            try:
                if self._command(spec, b"PING") == "PONG":
                    return True
            except OSError:
                continue
        return False
